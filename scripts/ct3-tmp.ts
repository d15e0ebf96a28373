import { Builder } from '../compiler/ir/builder.js';
import { GPU_RULES } from '../kernels/index.js';
import { withDevice, runKernel } from '../test/kernels/harness.js';
import { numel } from '../compiler/ir/graph.js';
const b = new Builder();
const y = b.add('attention', [b.input('q', [2, 2, 5, 8]), b.input('k', [2, 2, 6, 8]), b.input('v', [2, 2, 6, 3])]);
const node = b.graph.node(y);
const rule = GPU_RULES.attention as any;
await withDevice(async (gpu) => {
  const k0 = rule.gen(node, node.inputs.map((i: number) => b.graph.node(i)), gpu.target);
  if (process.argv[2]) { console.log(k0.wgsl); return; }
  const variants: [string, (s: string) => string][] = [
    ['base', (s) => s],
    ['builtin exp', (s) => s.replaceAll('exp_f32(', 'exp(')],
    ['no barriers', (s) => s.replaceAll('workgroupBarrier();', '')],
    ['no fold', (s) => s.replace(/for \(var s = 1u; s < 64u; s\+\+\) \{ folded = [^\n]*\n/g, '')],
  ];
  for (const [name, f] of variants) {
    const k = { ...k0, wgsl: f(k0.wgsl) + `\n// ${name}` };
    const c0 = process.cpuUsage();
    await runKernel(gpu.device, k, node.inputs.map((i: number) => new Float32Array(numel(b.graph.node(i).shape))), numel(node.shape));
    const c1 = process.cpuUsage(c0); console.log(name, ((c1.user + c1.system) / 1000).toFixed(0));
  }
});
