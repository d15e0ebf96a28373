// The f32 attention backward on the f16 tensor cores at f32 accuracy (Target.tuning.f32AttentionGradTensorCores,
// kernels/flash-split16.ts and kernels/flash-direct-backward.ts): q, k, v and g split by rows into scaled f16 pairs,
// S and dP from three products each, dS and P scaled under a-priori bounds and split again, dS·a and P·b from three
// products. lavapipe has no subgroup matrices: a Target listing the 16x8x8 and 16x8x16 configs without the feature
// gets the emulated spelling, so the splits, the row factors, the bounds' minima and every scaling run for real;
// natively the same cases run on tensor cores.
//
// Bound (u = 2^-24), from the kernels' arithmetic. A split operand x̃ = x·2^s (|x̃| < 2^14) is hi + lo within
// 2^-21|x̃| + 2^-24 (lo's rounding; f16's subnormals), so a product term hi·hi' + hi·lo' + lo·hi' of two split values
// is within 2^-19|x̃||ỹ| + 2^-24(|x̃| + |ỹ|) of x̃ỹ (lo·lo' dropped: 2^-20); unscaled, 2^-19|x||y| + 2^-24(|x|2^-s_y +
// |y|2^-s_x). The f32 sums add n·u·Σ|terms| over their n = 3·(terms) products. So:
//   ΔS_ij = (3D·u + 2^-19)·Σ|q_i||k_j| + u·Σ_d(|q_id|2^-s_kj + |k_jd|2^-s_qi); P's relative error
//   ρ = scale·ΔS + (4|s| + |s − lse| + 4)·u; ΔdP likewise with g, v (and 2u|dP| for its two factors);
//   ΔdS = P·(ΔdP + ρ|dP − δ|) + 2u|dS|.
//   dq_it ≤ scale·Σ_j [|k_jt|(ΔdS_ij + (2^-19 + 3Sk·u)|dS_ij|) + u(|dS_ij|2^-s_kj + |k_jt|2^(s_kj − E_i))] + 2u|dq_it|,
//   with E_i dq's scale exponent for row i (kernels/flash-direct-backward.ts splitScales: what dS's split is relative
//   to); dk likewise over queries with q and dk's E; dv_jc ≤ Σ_i [|g_ic|P_ij(ρ_ij + 2^-19 + 3Sq·u) + u(P_ij2^-s_gi +
//   |g_ic|2^(s_gi − E_p))] + 2u|dv_jc|.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkFiles } from '../../compiler/check/index.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import { flashSplitGradUnfit } from '../../kernels/flash-split16.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { probeKernels } from '../../runtime/gpu/tensor-core-probe.js';
import { trainPlan } from '../../compiler/train/plan.js';
import { compileStep } from '../../compiler/train/step-graph.js';
import { REPO_ROOT } from '../golden/harness.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng } from '../ir/util.js';
import { captionFeeds } from '../train/caption-feeds.js';
import { fcParams } from './core-util.js';
import { assertStepNear, assertWithin } from './harness.js';
import { assertGradsWithin, statsAndBounds } from './attention-grad-bounds.js';
import { DIRECT_CONFIGS, sgmatDevice, withConfigs } from './sgmat-targets.js';
import { splitForwardBounds, splitGradBounds } from './split16-bounds.js';

const H200 = TARGETS['nvidia-h200'];
const split = (t: Target, more: Target['tuning'] = {}): Target => ({ ...t, tuning: { ...t.tuning, ...more, f32AttentionGradTensorCores: true } });
const bhsd = (b: number, h: number, s: number, d: number) => [b, h, s, d];

/**
 * attention_grad wrt each of `wrts` (outputs d0, d1, d2) of f32 q, k, v, g, lse, δ [, mask]; `forward`: also the
 * attention (output y) and its lse (output lse_out).
 */
function gradGraph(qs: number[], ks: number[], dv: number, wrts: readonly number[], attrs: Attrs = {}, mask?: number[], forward = false) {
  const b = new Builder();
  const [B, H, Sq] = qs;
  const rows = [b.input('q', qs), b.input('k', ks), b.input('v', bhsd(B, H, ks[2], dv)), b.input('g', bhsd(B, H, Sq, dv))];
  const stats = [b.input('lse', [B, H, Sq]), b.input('delta', [B, H, Sq])];
  if (forward) {
    b.output('y', b.add('attention', rows.slice(0, 3), attrs));
    b.output('lse_out', b.add('attention_lse', rows.slice(0, 2), attrs));
  }
  const grads = wrts.map((wrt) => b.add('attention_grad', [...rows, ...stats, ...(mask ? [b.input('mask', mask)] : [])], { ...attrs, wrt }));
  grads.forEach((x, i) => b.output(`d${wrts[i]}`, x));
  return { graph: b.graph, grads };
}

/** eva_tiny's stage-2 (LoRA) training step in f32. */
function evaTinyStep() {
  const checked = checkFiles([join(REPO_ROOT, 'pipelines', 'eva_tiny.visft')]);
  const stage = trainPlan(checked, checked.roots[0]).stages.find((x) => x.name === 'stage2')!;
  return compileStep(checked, checked.roots[0], stage, stage.tasks[0]).graph;
}

describe('as generated for the H200', () => {
  test('the f32 forward+backward row: q, k, v and g split per row for dq and for dk+dv, three products per fragment', () => {
    const row = benchRows('full').find((r) => r.name === 'attention_vjp_evag_detection')!;
    const { schedule } = compileGpu(rowGraph(row).graph, split(H200));
    const names = schedule.kernels.map((k) => k.name);
    const four = ['split16_rows_f32', 'split16_rows_f32', 'split16_rows_f32', 'split16_rows_f32'];
    assert.deepEqual(names.slice(2), [...four, 'attention_grad_q_flash_split16_f32', ...four, 'attention_grad_kv_flash_split16_f32'], names.join(' '));
    assert.match(names[0], /^attention_flash_lse_f32/, 'the forward is its own tuning');
    const [dq, kv] = [schedule.kernels[6], schedule.kernels[11]];
    for (const k of [dq, kv]) {
      for (const i of [0, 1, 2, 3]) assert.match(k.wgsl, new RegExp(`@binding\\(${i}\\) var<storage, read> in_${i}: array<f16>;`), `${k.name}: binding ${i}`);
      assert.match(k.wgsl, /@binding\(4\) var<storage, read> in_4: array<f32>;/);
    }
    // D 88, 16 keys per tile: S and dP 11 x 2 fragments x 3 products each; dS·k (and Pᵀ·g) 11 x 3.
    const mmas = (wgsl: string) => wgsl.slice(wgsl.indexOf('for (var j0')).match(/subgroupMatrixMultiplyAccumulate/g)?.length;
    assert.equal(mmas(dq.wgsl), 66 + 66 + 33);
    assert.equal(mmas(kv.wgsl), 66 + 66 + 33 + 33);
    // dq: a scale per query row from g's exponent and the keys' minima (2Dv = 176 <= 2^8: 14 + 8 = 22).
    assert.match(dq.wgsl, /let e = clamp\(i32\(f32\(in_3\[6488064u \+ bh \* 2304u \+ ra \+ r\]\)\) \+ m_a \+ m_b - 22, -126, 126\);/);
    assert.match(dq.wgsl, /let w = p \* \(tile_dp\[r \* 20u \+ c\] \* row_fy\[r\] \* t_fb\[c\] - row_del\[r\]\) \* t_fa\[c\] \* row_ex\[r\];/);
    assert.match(dq.wgsl, /tile_ds\[384u \+ r \* 24u \+ c\] = f16\(w - wh\);/);
    assert.match(dq.wgsl, / \* 0\.10660035908222198f \* row_ux\[r\];/);
    // dk+dv: one dS scale per (batch, head), P scaled by g's smallest factor.
    assert.match(kv.wgsl, /m_ab = min\(m_ab, i32\(f32\(in_0\[6488064u \+ bh \* 2304u \+ j\]\)\) \+ i32\(f32\(in_3\[6488064u \+ bh \* 2304u \+ j\]\)\)\);/);
    assert.match(kv.wgsl, /let e_ds = clamp\(m_y \+ m_ab - 22, -126, 126\);/);
    assert.match(kv.wgsl, /let e_p = clamp\(m_b \+ 14, -126, 126\);/);
    assert.match(kv.wgsl, /let x = p \* t_fb\[c\] \* p_scale;/);
    // Without the tuning: the f32 flash kernels.
    assert.doesNotMatch(compileGpu(rowGraph(row).graph, H200).schedule.kernels.map((k) => k.name).join(' '), /split16/);
  });

  test('where it does not apply: not asked, a mask, f16 operands, head dims off 8, fewer than 16 rows, no 16x8x8 config', () => {
    const s = (n: number, d: number) => bhsd(1, 2, n, d);
    const why = (x: ReturnType<typeof gradGraph>, t = split(H200), i = 0) => flashSplitGradUnfit(x.graph, x.graph.node(x.grads[i]), t);
    assert.equal(why(gradGraph(s(40, 16), s(40, 16), 16, [0])), undefined);
    assert.equal(why(gradGraph(s(40, 16), s(40, 16), 16, [2])), undefined);
    assert.match(why(gradGraph(s(40, 16), s(40, 16), 16, [0]), H200) ?? '', /not asked for/);
    assert.match(why(gradGraph(s(40, 16), s(40, 16), 16, [0], {}, [40])) ?? '', /mask/);
    assert.match(why(gradGraph(s(40, 16), s(40, 16), 16, [3], {}, [40])) ?? '', /mask's gradient/);
    assert.match(why(gradGraph(s(40, 12), s(40, 12), 16, [1])) ?? '', /not multiples of 8/);
    assert.match(why(gradGraph(s(40, 16), s(12, 16), 16, [1])) ?? '', /fewer than 16/);
    assert.match(why(gradGraph(s(40, 16), s(40, 16), 16, [0]), split({ ...H200, subgroupMatrixConfigs: H200.subgroupMatrixConfigs.filter((c) => c.K !== 8) })) ?? '', /16x8x8/);
    const pair = gradGraph(s(40, 16), s(40, 16), 16, [0, 2]);
    assert.match(flashSplitGradUnfit(pair.graph, pair.graph.node(pair.grads[0]), split(H200), pair.graph.node(pair.grads[1])) ?? '', /does not pair/);
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const rows = ['q', 'k', 'v', 'g'].map((n) => round(b.input(n, s(40, 16))));
    const dq = b.add('attention_grad', [...rows, b.input('lse', [1, 2, 40]), b.input('delta', [1, 2, 40])], { wrt: 0 });
    b.output('dq', dq);
    assert.match(flashSplitGradUnfit(b.graph, b.graph.node(dq), split(H200)) ?? '', /f16 values/);
  });

  test("eva_tiny's f32 LoRA training step: every attention kernel split, the splits reading the heads of the qkv projection in place", () => {
    const step = evaTinyStep();
    const kernels = compileGpu(step, split(H200, { f32AttentionTensorCores: true })).schedule.kernels;
    const attention = kernels.filter((k) => k.name.startsWith('attention'));
    assert.ok(attention.length >= 6, attention.map((k) => k.name).join(' '));
    assert.ok(attention.every((k) => /_split16_f32$/.test(k.name)), attention.map((k) => k.name).join(' '));
    // q's split computes q's slice, reshape, permute and scaling in place, binding the projection alone.
    const ops = (k: (typeof kernels)[number]) => k.nodes.map((n) => step.node(n).op).filter((op) => !op.startsWith('attention'));
    const viewed = kernels.filter((k) => k.name.startsWith('split16') && ops(k).length > 0);
    assert.ok(viewed.length >= 12, `${viewed.length} splits read views`);
    assert.ok(viewed.every((k) => k.bindings.length === 2 && ops(k).every((op) => ['slice', 'reshape', 'permute', 'mul'].includes(op))));
  });

  test('the tensor-core probe compiles the dk+dv chain when the tuning asks for it', () => {
    const names = probeKernels(split(H200)).map((k) => k.name);
    assert.deepEqual(names.filter((n) => /split16/.test(n)), ['split16_rows_f32', 'split16_rows_f32', 'split16_rows_f32', 'split16_rows_f32', 'attention_grad_kv_flash_split16_f32']);
    assert.doesNotMatch(probeKernels(H200).map((k) => k.name).join(' '), /split16/);
  });
});

/**
 * Operands of `mats` matrices of n rows of d, each row with a magnitude of its own (10^±spread, times `mag`), or zero
 * where `zero` says.
 */
const operandRows = (rng: () => number, mats: number) => (n: number, d: number, spread: number, mag = 1, zero: (row: number) => boolean = () => false) => {
  const data = new Float32Array(mats * n * d);
  for (let r = 0; r < mats * n; r++) {
    const m = zero(r) ? 0 : mag * 10 ** ((2 * rng() - 1) * spread);
    for (let c = 0; c < d; c++) data[r * d + c] = (2 * rng() - 1) * m;
  }
  return data;
};

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();
  const target = (keys?: 32 | 64, lanes?: number, more: Target['tuning'] = {}): Target => {
    const t = device.native() ? device.gpu().target : { ...withConfigs(device.gpu().target, DIRECT_CONFIGS, 'direct'), ...(lanes ? { emulatedLanes: lanes } : {}) };
    return split(t, { ...more, ...(keys ? { flashDirectKeys: keys } : {}) });
  };

  // [what, B, H, Sq, Sk, D, Dv, scale, wrts, kernels expected, keys per tile, emulated lanes, g's magnitude, zero rows];
  // small head dims: lavapipe compiles each emulated kernel for seconds per product.
  const CASES: [string, number, number, number, number, number, number, number | undefined, number[], string[], (32 | 64)?, number?, number?, boolean?][] = [
    ['head dim 16, 37 queries, 45 keys (ragged tiles), two heads, rows 10^±2 apart, g of 1e-6 with a zero row: dq and dk+dv', 1, 2, 37, 45, 16, 16, undefined, [0, 1, 2], ['q', 'kv'], undefined, undefined, 1e-6, true],
    ['head dim 16, v of 8 columns, batch 2, 20 queries, 70 keys in tiles of 32, scale 0.3, 32 lanes: dq and dv alone', 2, 1, 20, 70, 16, 8, 0.3, [0, 2], ['q', 'v'], 32, 32],
    ['head dim 8, 40 queries, 17 keys, g of 1e3: dk alone', 1, 1, 40, 17, 8, 8, undefined, [1], ['k'], undefined, undefined, 1e3],
  ];
  for (const [what, B, H, Sq, Sk, D, Dv, scale, wrts, kernels, keys, lanes, gMag, zeroRows] of CASES) {
    test(what, async () => {
      const { graph } = gradGraph(bhsd(B, H, Sq, D), bhsd(B, H, Sk, D), Dv, wrts, scale === undefined ? {} : { scale });
      const program = compileGpu(graph, target(keys, lanes));
      const names = program.schedule.kernels.map((k) => k.name);
      for (const which of kernels) assert.ok(names.some((n) => n.startsWith(`attention_grad_${which}_flash_split16_f32`)), `d${which}: ${names.join(' ')}`);
      const rows = operandRows(makeRng(Sq * 7 + Sk + D), B * H);
      // The zero rows: g's row 3, v's row 5.
      const [q, k, v, g] = [rows(Sq, D, 2), rows(Sk, D, 1), rows(Sk, Dv, 0.5, 1, (r) => zeroRows === true && r === 5), rows(Sq, Dv, 1, gMag, (r) => zeroRows === true && r === 3)];
      const s = scale ?? 1 / Math.sqrt(D);
      const problem = { B, H, Sq, Sk, D, Dv, scale: s, q, k, v, g };
      const { lse, delta } = statsAndBounds(problem);
      const tol = splitGradBounds(problem, lse, delta);
      await assertGradsWithin(device.gpu(), graph, program, { q, k, v, g, lse, delta }, [tol.dq, tol.dk, tol.dv], wrts, what, 1);
    });
  }

  test('random geometry, tiles, lanes, gradients, magnitudes and zero rows (fast-check): the forward, its lse and the gradients within their bounds', async () => {
    const spec = fc.record({
      B: fc.integer({ min: 1, max: 2 }),
      H: fc.integer({ min: 1, max: 3 }),
      Sq: fc.integer({ min: 16, max: 70 }),
      Sk: fc.integer({ min: 16, max: 70 }),
      D: fc.constantFrom(8, 16, 24),
      Dv: fc.constantFrom(8, 16),
      keys: fc.constantFrom<16 | 32 | 64>(16, 32, 64),
      lanes: fc.constantFrom(4, 32),
      wrts: fc.constantFrom([0, 1, 2], [0], [1], [2], [1, 2], [0, 2]),
      gExp: fc.integer({ min: -6, max: 3 }),
      seed: fc.integer({ min: 0, max: 1e6 }),
    });
    await fc.assert(
      fc.asyncProperty(spec, async ({ B, H, Sq, Sk, D, Dv, keys, lanes, wrts, gExp, seed }) => {
        const { graph } = gradGraph(bhsd(B, H, Sq, D), bhsd(B, H, Sk, D), Dv, wrts, {}, undefined, true);
        const program = compileGpu(graph, target(keys === 16 ? undefined : keys, lanes, { f32AttentionTensorCores: true }));
        const names = program.schedule.kernels.filter((k) => k.name.startsWith('attention')).map((k) => k.name);
        assert.ok(names.every((n) => /_split16_f32(_k\d+)?$/.test(n)), names.join(' '));
        const rng = makeRng(seed);
        const rows = operandRows(rng, B * H);
        // One row in ten zero, in every operand.
        const zero = () => rng() < 0.1;
        const [q, k, v, g] = [rows(Sq, D, 1.5, 1, zero), rows(Sk, D, 1, 1, zero), rows(Sk, Dv, 0.5, 1, zero), rows(Sq, Dv, 1, 10 ** gExp, zero)];
        const problem = { B, H, Sq, Sk, D, Dv, scale: 1 / Math.sqrt(D), q, k, v, g };
        const { lse, delta } = statsAndBounds(problem);
        const tol = splitGradBounds(problem, lse, delta);
        const what = JSON.stringify({ B, H, Sq, Sk, D, Dv, keys, lanes, wrts, gExp });
        const { got, ref } = await assertGradsWithin(device.gpu(), graph, program, { q, k, v, g, lse, delta }, [tol.dq, tol.dk, tol.dv], wrts, what, 1);
        const fwd = splitForwardBounds(problem);
        assertWithin(Float32Array.from(got.get('y')!.data), ref.get('y')!.data, fwd.out, `${what}: out`);
        const r = ref.get('lse_out')!.data;
        assertWithin(Float32Array.from(got.get('lse_out')!.data), r, (i) => fwd.lse(i, r[i]), `${what}: lse`);
      }),
      fcParams(2, 15),
    );
  });

  test("eva_tiny's f32 LoRA training step with its attention split onto the tensor cores: the loss and every gradient as the interpreter's", async () => {
    const step = evaTinyStep();
    const program = compileGpu(step, target(undefined, undefined, { f32AttentionTensorCores: true }));
    const attention = program.schedule.kernels.filter((k) => k.name.startsWith('attention')).map((k) => k.name);
    assert.ok(attention.length >= 6 && attention.every((n) => /_split16_f32$/.test(n)), attention.join(' '));
    const { inputs, params } = captionFeeds(step, makeRng(15));
    const out = await runGpu(device.gpu(), step, program, inputs, params);
    // f32 accuracy: the split products are within f32's normwise bound by a small factor (observed: 5e-7 of the
    // largest value).
    assertStepNear(out, interpret(step, inputs, params), 1e-5, 1e-5);
  });

  test('through views, as a ViT reads them: q·0.25, k and v heads of one projection, g heads of its gradient; batch 2, 37 tokens', async () => {
    const [B, H, S, D] = [2, 2, 37, 16];
    const b = new Builder();
    const x = b.input('x', [B, S, 3 * H * D]);
    const heads = (i: number) => b.add('permute', [b.add('reshape', [b.add('slice', [x], { dim: 2, start: i * H * D, end: (i + 1) * H * D })], { shape: [B, S, H, D] })], { dims: [0, 2, 1, 3] });
    const q = b.add('mul', [heads(0), b.add('full', [], { shape: [], value: 0.25 })]);
    const [k, v] = [heads(1), heads(2)];
    const g = b.add('permute', [b.add('reshape', [b.input('gx', [B, S, H * D])], { shape: [B, S, H, D] })], { dims: [0, 2, 1, 3] });
    b.output('y', b.add('attention', [q, k, v]));
    b.output('lse', b.add('attention_lse', [q, k]));
    const stats = [b.input('lse_in', [B, H, S]), b.input('delta', [B, H, S])];
    [0, 1, 2].forEach((wrt) => b.output(`d${wrt}`, b.add('attention_grad', [q, k, v, g, ...stats], { wrt })));
    const program = compileGpu(b.graph, target(undefined, undefined, { f32AttentionTensorCores: true }));
    const names = program.schedule.kernels.map((kk) => kk.name);
    assert.deepEqual(
      names.filter((n) => n.startsWith('attention')),
      ['attention_flash_lse_split16_f32', 'attention_grad_q_flash_split16_f32', 'attention_grad_kv_flash_split16_f32'],
      names.join(' '),
    );
    // The splits read the views: each binds the projection (or g's), and nothing else copies a head out.
    const splits = program.schedule.kernels.filter((kk) => kk.name.startsWith('split16'));
    assert.equal(splits.length, 11);
    assert.ok(splits.every((kk) => kk.bindings.length === 2), 'one leaf and the split each');
    assert.equal(names.filter((n) => /permute|copy|slice/.test(n)).length, 0, names.join(' '));
    const rng = makeRng(91);
    const xs = Float32Array.from({ length: B * S * 3 * H * D }, () => 2 * rng() - 1);
    const gxs = Float32Array.from({ length: B * S * H * D }, () => 1e-3 * (2 * rng() - 1));
    // The operands as the kernels see them, [B, H, S, D]: head h of part i, q times 0.25 (exact).
    const operand = (src: Float32Array, width: number, start: number, times = 1) =>
      Float32Array.from({ length: B * H * S * D }, (_, e) => {
        const [bb, h, s, d] = [Math.floor(e / (H * S * D)), Math.floor(e / (S * D)) % H, Math.floor(e / D) % S, e % D];
        return src[(bb * S + s) * width + start + h * D + d] * times;
      });
    const [qv, kv, vv, gv] = [operand(xs, 3 * H * D, 0, 0.25), operand(xs, 3 * H * D, H * D), operand(xs, 3 * H * D, 2 * H * D), operand(gxs, H * D, 0)];
    const problem = { B, H, Sq: S, Sk: S, D, Dv: D, scale: 1 / Math.sqrt(D), q: qv, k: kv, v: vv, g: gv };
    const { lse, delta } = statsAndBounds(problem);
    const tol = splitGradBounds(problem, lse, delta);
    const values = { x: xs, gx: gxs, lse_in: lse, delta };
    const { got, ref } = await assertGradsWithin(device.gpu(), b.graph, program, values, [tol.dq, tol.dk, tol.dv], [0, 1, 2], 'views', 1);
    const fwd = splitForwardBounds(problem);
    const worst = assertWithin(Float32Array.from(got.get('y')!.data), ref.get('y')!.data, fwd.out, 'views: out');
    assert.ok(worst > 0 && worst < 1, `views: out: largest error ${worst} of the bound`);
    const r = ref.get('lse')!.data;
    assertWithin(Float32Array.from(got.get('lse')!.data), r, (i) => fwd.lse(i, r[i]), 'views: lse');
  });
});
