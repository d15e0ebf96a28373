import { Builder } from '../compiler/ir/builder.js';
import { GPU_RULES } from '../kernels/index.js';
import { withDevice, runKernel } from '../test/kernels/harness.js';
import { numel } from '../compiler/ir/graph.js';
const b = new Builder();
const y = b.add('matmul', [b.input('a', [70, 33]), b.input('b', [33, 90])]);
const node = b.graph.node(y);
const rule = GPU_RULES.matmul as any;
await withDevice(async (gpu) => {
  const k0 = rule.gen(node, node.inputs.map((i: number) => b.graph.node(i)), gpu.target);
  const variants: [string, (s: string) => string][] = [
    ['base', (s) => s],
    ['roll-kk', (s) => s.replace('for (var kk = 0u; kk < 16u; kk++) {', 'for (var kk = 0u; kk < 16u + (arrayLength(&out_0) >> 31u); kk++) {')],
    ['roll-all', (s) => s.replace('for (var kk = 0u; kk < 16u; kk++) {', 'for (var kk = 0u; kk < 16u + (arrayLength(&out_0) >> 31u); kk++) {').replaceAll('i < 4u', 'i < 4u + (arrayLength(&out_0) >> 31u)').replaceAll('j < 4u', 'j < 4u + (arrayLength(&out_0) >> 31u)')],
    ['nofma', (s) => s.replace(/acc\[i \* 4u \+ j\] = fma\(av\[i\], bv\[j\], acc\[i \* 4u \+ j\]\);/, 'acc[i * 4u + j] += av[i] * bv[j];')],
    ['K-unroll-off', (s) => s.replace('for (var kk = 0u; kk < 16u; kk++) {', 'for (var kk = 0u; kk < min(16u, arrayLength(&in_0)); kk++) {')],
  ];
  for (const [name, f] of variants) {
    const k = { ...k0, wgsl: f(k0.wgsl) + `\n// ${name}` };
    const c0 = process.cpuUsage(); const t0 = performance.now();
    await runKernel(gpu.device, k, node.inputs.map((i: number) => new Float32Array(numel(b.graph.node(i).shape))), numel(node.shape));
    const c1 = process.cpuUsage(c0); console.log(name, (performance.now() - t0).toFixed(0), "cpu", ((c1.user + c1.system) / 1000).toFixed(0));
  }
});
