// The register-blocked flash kernels (Target.tuning.flashBlocked, flashBlockedGrad) reading q, k, v and the
// backward's g in place through views, as a backbone's attention reads them: heads sliced out of a fused qkv
// projection, reshaped and permuted, q scaled. On the H200 target the schedule picks the blocked kernels with
// their view suffixes; on this adapter (as hardware) the forward, the lse and the gradient of x match the
// float64 reference.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { hardwareLike } from './core-util.js';
import { compare, randomTensor, sharedDevice } from './harness.js';

const blocked = (t: Target): Target => ({ ...t, tuning: { flashBlocked: true, flashBlockedGrad: true } });

/** y = attention(q·D^-½, k, v) with q, k, v the heads of x [B, S, 3·H·D], and d:x for the cotangent d:y. */
function qkvAttention(B: number, S: number, H: number, D: number): Graph {
  const b = new Builder();
  const x = b.input('x', [B, S, 3 * H * D]);
  const heads = (i: number) => b.add('permute', [b.add('reshape', [b.add('slice', [x], { dim: 2, start: i * H * D, end: (i + 1) * H * D, step: 1 })], { shape: [B, S, H, D] })], { dims: [0, 2, 1, 3] });
  const q = b.add('mul', [heads(0), b.full(D ** -0.5, [1])]);
  b.output('y', b.add('attention', [q, heads(1), heads(2)], { scale: 1 }));
  const r = vjp(b.graph, [x]);
  r.builder.output('d:x', r.grads.get(x)!);
  return r.builder.graph;
}

const blockedNames = (g: Graph, t: Target) => compileGpu(g, t).schedule.kernels.map((k) => k.name).filter((n) => n.startsWith('attention'));

test('on the H200 target the blocked kernels read q, k, v and g through views', () => {
  const names = blockedNames(qkvAttention(1, 64, 2, 88), blocked(TARGETS['nvidia-h200']));
  assert.ok(names.length >= 3 && names.every((n) => n.includes('blocked') && /_qv_kv_vv/.test(n)), names.join(', '));
});

const gpu = sharedDevice();

test('through views on this adapter (as hardware): y and d:x match the float64 reference', async () => {
  // One small case at EVA-G's head dim: lavapipe compiles hardware code (every loop unrolled) slowly, 24 took it
  // 38 s, 88 about 5.
  for (const [B, S, H, D, seed] of [[2, 19, 2, 88, 3]]) {
    const graph = qkvAttention(B, S, H, D);
    const target = blocked(hardwareLike(gpu().target));
    const program = compileGpu(graph, target);
    const names = program.schedule.kernels.map((k) => k.name).filter((n) => n.startsWith('attention'));
    assert.ok(names.length >= 3 && names.every((n) => n.includes('blocked')), names.join(', '));
    const inputs = new Map<string, RefTensor>(
      graph.inputs.map((i, k) => {
        const t = randomTensor(graph.node(i.node).shape, seed + k);
        return [i.name, { shape: t.shape, data: Float64Array.from(t.data) }];
      }),
    );
    const want = interpret(graph, inputs);
    const got = await runGpu(gpu(), graph, program, inputs, new Map());
    for (const [name, tol] of [['y', { rtol: 1e-4, atol: 1e-5 }], ['d:x', { rtol: 1e-3, atol: 1e-4 }]] as const) {
      const w = want.get(name)!;
      compare(Float32Array.from(got.get(name)!.data), w.data, w.shape, { ...tol, label: `${name} [${B},${S},${H},${D}]` }, program.schedule.kernels);
    }
  }
});
