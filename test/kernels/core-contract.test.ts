// The contract of the core-op kernel generators, checked without running them: every core op has a GPU rule;
// each generated kernel is deterministic (same node, same text), named, binds its inputs (read) then its
// output (read_write) as `in_i` / `out_0`, has entry point `main`, respects the Target's limits, and passes
// Dawn's WGSL validation for the portable target, a hardware-style target (tree reductions, unrolled loops)
// and a target with tight limits. Pipelines are created but never dispatched: lavapipe compiles lazily, so
// the hardware-style variants are validated here at little cost (the runs are in the other files).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Builder } from '../../compiler/ir/builder.js';
import { PORTABLE_TARGET, type Kernel, type Target } from '../../compiler/codegen/types.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import type { IrOp } from '../../compiler/ir/ops.js';
import { VISION_OPS } from '../../compiler/ir/rules/families.js';
import { IR_OP_NAMES } from '../../compiler/ir/ops.js';
import { attentionKernel } from '../../kernels/attention.js';
import { GPU_RULES } from '../../kernels/index.js';
import { matmulKernel } from '../../kernels/matmul.js';
import { hardwareLike, tightTarget } from './core-util.js';
import { checkKernelShape, pipelineFor, withDevice } from './harness.js';

interface Sample {
  readonly label: string;
  readonly op: IrOp;
  readonly ins: readonly (readonly number[])[];
  readonly attrs?: Attrs;
  readonly gen?: (node: Parameters<typeof matmulKernel>[0], inputs: Parameters<typeof matmulKernel>[1], target: Target) => Kernel;
}

const SAMPLES: Sample[] = [
  { label: 'full', op: 'full', ins: [], attrs: { value: 1.5, shape: [3, 4], dtype: 'f32' } },
  ...(['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'sigmoid', 'relu', 'gelu', 'erf', 'step'] as const).map((op) => ({ label: op, op, ins: [[5, 7]] })),
  { label: 'pow 2.5', op: 'pow', ins: [[9]], attrs: { exponent: 2.5 } },
  { label: 'pow 100', op: 'pow', ins: [[9]], attrs: { exponent: 100 } },
  { label: 'cast f16', op: 'cast', ins: [[9]], attrs: { dtype: 'f16' } },
  { label: 'cast bf16', op: 'cast', ins: [[9]], attrs: { dtype: 'bf16' } },
  { label: 'dropout', op: 'dropout', ins: [[9]], attrs: { p: 0.25, seed: 3 } },
  ...(['add', 'sub', 'mul', 'div', 'maximum', 'eq'] as const).map((op) => ({ label: op, op, ins: [[2, 1, 5], [3, 1]] })),
  { label: 'sum seq', op: 'sum', ins: [[4, 5, 6]], attrs: { dims: [0, 2], keepdim: true } },
  { label: 'max tree', op: 'max', ins: [[4, 500]], attrs: { dims: [-1] } },
  { label: 'softmax thread', op: 'softmax', ins: [[4, 5, 6]], attrs: { dim: 1 } },
  { label: 'softmax wg', op: 'softmax', ins: [[4, 500]], attrs: { dim: -1 } },
  { label: 'log_softmax wg', op: 'log_softmax', ins: [[40, 3]], attrs: { dim: 0 } },
  { label: 'layernorm wg', op: 'layernorm', ins: [[4, 100]], attrs: { eps: 1e-5 } },
  { label: 'matmul tiled', op: 'matmul', ins: [[2, 70, 33], [33, 90]], gen: (n, i, t) => matmulKernel(n, i, t, 'tiled') },
  { label: 'matmul splitk', op: 'matmul', ins: [[3, 300], [300, 2]], gen: (n, i, t) => matmulKernel(n, i, t, 'splitk') },
  { label: 'matmul naive', op: 'matmul', ins: [[3, 30], [2, 30, 2]], gen: (n, i, t) => matmulKernel(n, i, t, 'naive') },
  { label: 'matmul blocked', op: 'matmul', ins: [[2, 7, 33], [33, 9]], gen: (n, i, t) => matmulKernel(n, i, t, 'blocked') },
  { label: 'matmul auto', op: 'matmul', ins: [[100, 30], [30, 100]] },
  { label: 'permute', op: 'permute', ins: [[2, 3, 4]], attrs: { dims: [2, 0, 1] } },
  { label: 'slice', op: 'slice', ins: [[2, 9]], attrs: { dim: 1, start: 1, end: 8, step: 3 } },
  { label: 'concat', op: 'concat', ins: [[2, 3], [2, 0], [2, 1]], attrs: { dim: -1 } },
  { label: 'pad', op: 'pad', ins: [[3, 4]], attrs: { pads: [[1, -1], [0, 2]], value: -1 } },
  { label: 'expand', op: 'expand', ins: [[3, 1]], attrs: { shape: [2, 3, 4] } },
  { label: 'gather', op: 'gather', ins: [[3, 4], [3, 6]], attrs: { dim: 1 } },
  { label: 'scatter_add', op: 'scatter_add', ins: [[3, 6], [3, 6]], attrs: { dim: 1, shape: [4, 5] } },
  { label: 'attention', op: 'attention', ins: [[1, 2, 3, 8], [1, 2, 5, 8], [1, 2, 5, 4]] },
  { label: 'attention mask chunked', op: 'attention', ins: [[1, 2, 3, 8], [1, 2, 50, 8], [1, 2, 50, 70], [3, 50]], gen: (n, i, t) => attentionKernel(n, i, t, 16) },
  { label: 'empty output', op: 'add', ins: [[0, 3], [3]] },
];

function build(s: Sample) {
  const b = new Builder();
  const ins = s.ins.map((shape, i) => b.input(`x${i}`, shape));
  const y = s.op === 'full' ? b.add('full', [], s.attrs) : b.add(s.op, ins, s.attrs ?? {});
  const node = b.graph.node(y);
  return { node, inputs: node.inputs.map((i) => b.graph.node(i)) };
}

function generate(s: Sample, target: Target): Kernel {
  const { node, inputs } = build(s);
  if (s.gen) return s.gen(node, inputs, target);
  const rule = GPU_RULES[s.op];
  if (rule.kind !== 'kernel') throw new Error(`${s.op} has no kernel`);
  return rule.gen(node, inputs, target);
}

await withDevice(async (gpu) => {
  const targets: Target[] = [PORTABLE_TARGET, gpu.target, hardwareLike(gpu.target), tightTarget(gpu.target)];

  await describe('core kernel contract', async () => {
    test('every op has a GPU rule: leaves, an alias for reshape, a chain for MSDeformAttn\'s gradient, kernels otherwise', () => {
      const want = (op: string) => (op === 'input' || op === 'param' ? 'leaf' : op === 'reshape' ? 'alias' : op === 'msdeform_attn_grad' ? 'chain' : 'kernel');
      for (const op of IR_OP_NAMES) {
        const rule = GPU_RULES[op];
        assert.ok(rule, op);
        assert.equal(rule.kind, want(op), op);
      }
      assert.ok(VISION_OPS.every((op) => GPU_RULES[op].kind === want(op)));
    });

    for (const s of SAMPLES) {
      await test(`${s.label}: deterministic, within limits, valid WGSL on every target`, async () => {
        for (const target of targets) {
          if (s.label === 'matmul tiled' && target.name === 'tight') {
            assert.throws(() => generate(s, target), /needs 256 invocations/);
            continue;
          }
          const k = generate(s, target);
          assert.equal(generate(s, target).wgsl, k.wgsl, `${s.label} on ${target.name}: two generations differ`);
          const { node } = build(s);
          checkKernelShape(k, node, target);
          assert.match(k.name, /^[a-z0-9_]+$/);
          assert.deepEqual(k.nodes, [node.id]);
          // Inputs are f32 arrays, read one value or (matmul operands, attention rows) one vec4 at a time.
          node.inputs.forEach((_, i) => assert.match(k.wgsl, new RegExp(`@group\\(0\\) @binding\\(${i}\\) var<storage, read> in_${i}: array<(f32|vec4<f32>)>;`), `${k.name}: binding ${i}`));
          assert.ok(k.wgsl.includes(`@group(0) @binding(${node.inputs.length}) var<storage, read_write> out_0: array<f32>;`), `${k.name}: output binding`);
          // Workgroup memory declared within the limit.
          let shared = 0;
          for (const m of k.wgsl.matchAll(/var<workgroup>\s+\w+\s*:\s*array<f32,\s*(\d+)>/g)) shared += 4 * Number(m[1]);
          assert.ok(shared <= target.limits.maxComputeWorkgroupStorageSize, `${k.name} on ${target.name}: ${shared} bytes of workgroup memory`);
          await pipelineFor(gpu.device, k);
        }
      });
    }
  });
});
