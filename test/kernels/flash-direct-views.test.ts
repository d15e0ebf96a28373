// The tensor-core flash kernels from storage (kernels/flash-direct.ts, kernels/flash-direct-backward.ts) reading their
// row operands in place through affine views (kernels/view-affine.ts), as a ViT's attention has them: q, k and v
// split into heads from one fused projection [B, S, 3·H·D], the output's cotangent g from [B, S, H·D]; the rows lie
// at the projection's row stride. Compiled and run as the schedule runs them (the projection stored as f16) against
// the float64 reference, emulated on lavapipe, natively on a GPU with subgroup matrices; and where a view's rows do
// not start on 16 bytes, the other kernels.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { E32, statsAndBounds, U16 } from './attention-grad-bounds.js';
import { assertWithin, randomTensor } from './harness.js';
import { DIRECT_CONFIGS, sgmatDevice, withConfigs } from './sgmat-targets.js';

const H200 = TARGETS['nvidia-h200'];
const DIRECT = { flashDirect: true, flashDirectGrad: true } as const;

/**
 * y = attention(q, k, v) with its lse, and attention_grad wrt q, k, v (given lse and δ), where q, k, v are heads of
 * round(x) [B, S, lead + 3·H·D] (from column `lead`) and g of round(gx) [B, S, H·D].
 */
function viewGraph(B: number, H: number, S: number, D: number, lead = 0): Graph {
  const b = new Builder();
  const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
  const x = round(b.input('x', [B, S, lead + 3 * H * D]));
  // As a ViT block splits its projection: a slice of columns, heads apart, heads before tokens.
  const heads = (i: number) => b.add('slice', [x], { dim: 2, start: lead + i * H * D, end: lead + (i + 1) * H * D });
  const [q, k, v] = [0, 1, 2].map((i) => b.add('permute', [b.add('reshape', [heads(i)], { shape: [B, S, H, D] })], { dims: [0, 2, 1, 3] }));
  const g = b.add('permute', [b.add('reshape', [round(b.input('gx', [B, S, H * D]))], { shape: [B, S, H, D] })], { dims: [0, 2, 1, 3] });
  b.output('y', b.add('attention', [q, k, v]));
  b.output('lse', b.add('attention_lse', [q, k]));
  const stats = [b.input('lse_in', [B, H, S]), b.input('delta', [B, H, S])];
  [0, 1, 2].forEach((wrt) => b.output(`d${wrt}`, b.add('attention_grad', [q, k, v, g, ...stats], { wrt })));
  return b.graph;
}

const attentionKernels = (g: Graph, t: Target) =>
  compileGpu(g, t)
    .schedule.kernels.filter((k) => k.name.startsWith('attention'))
    .map((k) => k.name);

describe('as generated for the H200', () => {
  test("q, k, v and g through views: the direct kernels bind the projections and load rows at their stride", () => {
    const { schedule } = compileGpu(viewGraph(1, 16, 256, 88), { ...H200, tuning: DIRECT });
    const names = schedule.kernels.filter((k) => k.name.startsWith('attention')).map((k) => k.name);
    assert.deepEqual(names.map((n) => n.replace(/(direct_f16)(_[qkvg]v)*(_f16io)?$/, '$1')), ['attention_flash_lse_direct_f16', 'attention_grad_q_flash_direct_f16', 'attention_grad_kv_flash_direct_f16']);
    assert.ok(names.every((n) => /_qv_kv_vv/.test(n)), names.join(' '));
    const kv = schedule.kernels.find((k) => k.name.startsWith('attention_grad_kv'))!;
    // x = k: head h's rows start at column 1408 + 88·h of a 4224-wide row; q (a, swept) at 88·h; g (b) at 88·h of 1408.
    assert.match(kv.wgsl, /let xb = \(bh % 16u\) \* 88u \+ 1408u \+ ra \* 4224u;/);
    assert.match(kv.wgsl, /let ab = \(bh % 16u\) \* 88u;/);
    assert.match(kv.wgsl, /subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 8>, col_major>\(&in_0, ab \+ \(jc \+ 8u\) \* 4224u \+ 80u, 4224u\)/);
    assert.match(kv.wgsl, /ay_10 = subgroupMatrixMultiplyAccumulate\(ay_l, subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 16>, row_major>\(&in_1, bb \+ jc \* 1408u \+ 80u, 1408u\), ay_10\);/);
    assert.match(kv.wgsl, /@binding\(0\) var<storage, read> in_0: array<f16>;/);
    assert.doesNotMatch(kv.wgsl, /fn [qkvg]v\d/, 'no view functions');
  });

  test('a view whose rows do not start on 16 bytes, or whose rows overlap (one key broadcast), takes the other kernels', () => {
    const names = attentionKernels(viewGraph(1, 2, 40, 16, 4), { ...H200, tuning: DIRECT });
    assert.ok(names.length > 0 && names.every((n) => !/direct/.test(n)), names.join(' '));
    assert.ok(attentionKernels(viewGraph(1, 2, 40, 16, 8), { ...H200, tuning: DIRECT }).every((n) => /direct/.test(n)));
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const [q, k1, v] = [b.input('q', [1, 2, 40, 16]), b.input('k', [1, 2, 1, 16]), b.input('v', [1, 2, 40, 16])].map(round);
    b.output('y', b.add('attention', [q, b.add('expand', [k1], { shape: [1, 2, 40, 16] }), v]));
    const broadcast = attentionKernels(b.graph, { ...H200, tuning: DIRECT });
    assert.ok(broadcast.length === 1 && !/direct/.test(broadcast[0]) && /_kv/.test(broadcast[0]), broadcast.join(' '));
  });
});

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();

  test('two heads of 16, 37 tokens (ragged tiles), batch 2: forward, lse, dq, dk and dv', async () => {
    const [B, H, S, D] = [2, 2, 37, 16];
    const t = device.native() ? device.gpu().target : withConfigs(device.gpu().target, DIRECT_CONFIGS, 'direct');
    const graph = viewGraph(B, H, S, D);
    const program = compileGpu(graph, { ...t, tuning: { ...t.tuning, ...DIRECT } });
    const names = program.schedule.kernels.filter((k) => k.name.startsWith('attention')).map((k) => k.name);
    assert.ok(names.length === 3 && names.every((n) => /direct.*_qv_kv_vv/.test(n)), names.join(' '));
    const x = Float32Array.from(randomTensor([B, S, 3 * H * D], 11).data, roundF16);
    const gx = Float32Array.from(randomTensor([B, S, H * D], 12).data, roundF16);
    // The operands in [B, H, S, D] order, for the bounds.
    const heads = (src: Float32Array, width: number, at: number) =>
      Float32Array.from({ length: B * H * S * D }, (_, i) => {
        const [b, h, s, d] = [Math.floor(i / (H * S * D)), Math.floor(i / (S * D)) % H, Math.floor(i / D) % S, i % D];
        return src[(b * S + s) * width + at + h * D + d];
      });
    const [q, k, v, g] = [heads(x, 3 * H * D, 0), heads(x, 3 * H * D, H * D), heads(x, 3 * H * D, 2 * H * D), heads(gx, H * D, 0)];
    const scale = 1 / Math.sqrt(D);
    const { lse, delta, tol } = statsAndBounds({ B, H, Sq: S, Sk: S, D, Dv: D, scale, q, k, v, g });
    const values: Record<string, Float32Array> = { x, gx, lse_in: lse, delta };
    const inputs = new Map(graph.inputs.map((i) => [i.name, { shape: [...graph.node(i.node).shape], data: Float64Array.from(values[i.name]) }] as const));
    const got = await runGpu(device.gpu(), graph, program, inputs, new Map());
    const ref = interpret(graph, inputs);
    const out = (name: string) => Float32Array.from(got.get(name)!.data);
    const vMax = v.reduce((a, e) => Math.max(a, Math.abs(e)), 0);
    assertWithin(out('y'), ref.get('y')!.data, () => ((2 * U16) / (1 - U16) + 1e-5) * vMax, 'y');
    const r = ref.get('lse')!.data;
    assertWithin(out('lse'), r, (i) => U16 / (1 - U16) + 1e-5 * (1 + Math.abs(r[i])), 'lse');
    [tol.dq, tol.dk, tol.dv].forEach((bound, wrt) => {
      const want = ref.get(`d${wrt}`)!.data;
      const worst = assertWithin(out(`d${wrt}`), want, (j) => bound[j] + 2 * E32 * Math.abs(want[j]) + 1e-30, `d${wrt}`);
      assert.ok(worst > 0 && worst < 0.5, `d${wrt}: largest error ${worst} of the bound`);
    });
  });
});
