// temp: time cold pipeline compiles
import { Builder } from '../compiler/ir/builder.js';
import { GPU_RULES } from '../kernels/index.js';
import { withDevice, runKernel } from '../test/kernels/harness.js';
import { numel } from '../compiler/ir/graph.js';
const cases: [string, (b: Builder) => number][] = [
  ['matmul tiled', (b) => b.add('matmul', [b.input('a', [70, 33]), b.input('b', [33, 90])])],
  ['attention', (b) => b.add('attention', [b.input('q', [2, 2, 5, 8]), b.input('k', [2, 2, 6, 8]), b.input('v', [2, 2, 6, 3])])],
  ['softmax wg', (b) => b.add('softmax', [b.input('x', [3, 40])], { dim: 1 })],
  ['log_softmax wg', (b) => b.add('log_softmax', [b.input('x', [3, 40])], { dim: 1 })],
  ['layernorm wg', (b) => b.add('layernorm', [b.input('x', [3, 40])], { eps: 1e-5 })],
  ['sum tree', (b) => b.add('sum', [b.input('x', [3, 700])], { dims: [1] })],
  ['sum seq', (b) => b.add('sum', [b.input('x', [3, 7])], { dims: [1] })],
  ['gelu', (b) => b.add('gelu', [b.input('x', [3, 7])])],
  ['add', (b) => b.add('add', [b.input('x', [3, 7]), b.input('y', [7])])],
];
await withDevice(async (gpu) => {
  for (const [name, f] of cases) {
    const b = new Builder();
    const y = f(b);
    const node = b.graph.node(y);
    const rule = GPU_RULES[node.op];
    if (rule.kind !== 'kernel') continue;
    const k = rule.gen(node, node.inputs.map((i) => b.graph.node(i)), gpu.target);
    const c0 = process.cpuUsage(); const t0 = performance.now();
    await runKernel(gpu.device, k, node.inputs.map((i) => new Float32Array(numel(b.graph.node(i).shape))), numel(node.shape));
    console.log(name.padEnd(16), k.name.padEnd(24), (performance.now() - t0).toFixed(0), 'ms', 'cpu', (((c) => (c.user + c.system) / 1000)(process.cpuUsage(c0))).toFixed(0), k.wgsl.length, 'chars');
  }
});
