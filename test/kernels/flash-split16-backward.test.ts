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
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import { flashSplitGradUnfit } from '../../kernels/flash-split16.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { probeKernels } from '../../runtime/gpu/tensor-core-probe.js';
import { makeRng } from '../ir/util.js';
import { assertGradsWithin, statsAndBounds } from './attention-grad-bounds.js';
import { DIRECT_CONFIGS, sgmatDevice, withConfigs } from './sgmat-targets.js';

const H200 = TARGETS['nvidia-h200'];
const u = 2 ** -24;
const split = (t: Target, more: Target['tuning'] = {}): Target => ({ ...t, tuning: { ...t.tuning, ...more, f32AttentionGradTensorCores: true } });
const bhsd = (b: number, h: number, s: number, d: number) => [b, h, s, d];

/** attention_grad wrt each of `wrts` (outputs d0, d1, d2) of f32 q, k, v, g, lse, δ [, mask]. */
function gradGraph(qs: number[], ks: number[], dv: number, wrts: readonly number[], attrs: Attrs = {}, mask?: number[]) {
  const b = new Builder();
  const [B, H, Sq] = qs;
  const rows = [b.input('q', qs), b.input('k', ks), b.input('v', bhsd(B, H, ks[2], dv)), b.input('g', bhsd(B, H, Sq, dv))];
  const stats = [b.input('lse', [B, H, Sq]), b.input('delta', [B, H, Sq])];
  const grads = wrts.map((wrt) => b.add('attention_grad', [...rows, ...stats, ...(mask ? [b.input('mask', mask)] : [])], { ...attrs, wrt }));
  grads.forEach((x, i) => b.output(`d${wrts[i]}`, x));
  return { graph: b.graph, grads };
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

  test('the tensor-core probe compiles the dk+dv chain when the tuning asks for it', () => {
    const names = probeKernels(split(H200)).map((k) => k.name);
    assert.deepEqual(names.filter((n) => /split16/.test(n)), ['split16_rows_f32', 'split16_rows_f32', 'split16_rows_f32', 'split16_rows_f32', 'attention_grad_kv_flash_split16_f32']);
    assert.doesNotMatch(probeKernels(H200).map((k) => k.name).join(' '), /split16/);
  });
});

/** The split exponent of a row whose largest magnitude is m (kernels/matmul-split16.ts splitKernel). */
function splitExponent(m: number): number {
  if (m === 0) return 126;
  let e = Math.floor(Math.log2(m));
  if (2 ** e > m) e--;
  if (2 ** (e + 1) <= m) e++;
  return Math.min(126, Math.max(-126, 14 - (e + 1)));
}

/** Each row's split exponent of rows of `d` values. */
const rowExponents = (x: Float32Array, d: number) =>
  Int32Array.from({ length: x.length / d }, (_, r) => splitExponent(x.subarray(r * d, (r + 1) * d).reduce((a, v) => Math.max(a, Math.abs(v)), 0)));

/** The bounds of the header, per element of dq, dk and dv. */
function splitBounds(p: { B: number; H: number; Sq: number; Sk: number; D: number; Dv: number; scale: number; q: Float32Array; k: Float32Array; v: Float32Array; g: Float32Array }, lse: Float32Array, delta: Float32Array) {
  const { B, H, Sq, Sk, D, Dv, scale, q, k, v, g } = p;
  const [sq, sk, sv, sg] = [rowExponents(q, D), rowExponents(k, D), rowExponents(v, Dv), rowExponents(g, Dv)];
  const L = Math.ceil(Math.log2(2 * Dv));
  const clamp = (e: number) => Math.min(126, Math.max(-126, e));
  const min = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i)).reduce((a, x) => Math.min(a, x), Infinity);
  const tol = { dq: new Float64Array(B * H * Sq * D), dk: new Float64Array(B * H * Sk * D), dv: new Float64Array(B * H * Sk * Dv) };
  const abs = Math.abs;
  for (let bh = 0; bh < B * H; bh++) {
    const [minK, minV] = [min(Sk, (j) => sk[bh * Sk + j]), min(Sk, (j) => sv[bh * Sk + j])];
    const eK = clamp(minV + min(Sq, (i) => sq[bh * Sq + i] + sg[bh * Sq + i]) - 14 - L);
    const eP = clamp(min(Sq, (i) => sg[bh * Sq + i]) + 14);
    for (let i = 0; i < Sq; i++) {
      const row = bh * Sq + i;
      const eQ = clamp(sg[row] + minK + minV - 14 - L);
      for (let j = 0; j < Sk; j++) {
        const col = bh * Sk + j;
        let [s, sAbs, dP, dPAbs, sFloor, dPFloor] = [0, 0, 0, 0, 0, 0];
        for (let t = 0; t < D; t++) {
          const [a, b] = [q[row * D + t], k[col * D + t]];
          s += a * b;
          sAbs += abs(a * b);
          sFloor += abs(a) * 2 ** -sk[col] + abs(b) * 2 ** -sq[row];
        }
        for (let c = 0; c < Dv; c++) {
          const [a, b] = [g[row * Dv + c], v[col * Dv + c]];
          dP += a * b;
          dPAbs += abs(a * b);
          dPFloor += abs(a) * 2 ** -sv[col] + abs(b) * 2 ** -sg[row];
        }
        s *= scale;
        const P = Math.exp(s - lse[row]);
        const dS = P * (dP - delta[row]);
        const rho = scale * ((3 * D * u + 2 ** -19) * sAbs + u * sFloor) + (4 * abs(s) + abs(s - lse[row]) + 4) * u;
        const dDP = (3 * Dv * u + 2 ** -19) * dPAbs + u * dPFloor + 2 * u * abs(dP);
        const dDS = P * (dDP + rho * abs(dP - delta[row])) + 2 * u * abs(dS);
        for (let t = 0; t < D; t++) {
          const [kv, qv] = [abs(k[col * D + t]), abs(q[row * D + t])];
          tol.dq[row * D + t] += scale * (kv * (dDS + (2 ** -19 + 3 * Sk * u) * abs(dS)) + u * (abs(dS) * 2 ** -sk[col] + kv * 2 ** (sk[col] - eQ)));
          tol.dk[col * D + t] += scale * (qv * (dDS + (2 ** -19 + 3 * Sq * u) * abs(dS)) + u * (abs(dS) * 2 ** -sq[row] + qv * 2 ** (sq[row] - eK)));
        }
        for (let c = 0; c < Dv; c++) {
          const gv = abs(g[row * Dv + c]);
          tol.dv[col * Dv + c] += gv * P * (rho + 2 ** -19 + 3 * Sq * u) + u * (P * 2 ** -sg[row] + gv * 2 ** (sg[row] - eP));
        }
      }
    }
  }
  return tol;
}

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();
  const target = (keys?: 32 | 64, lanes?: number): Target => {
    const t = device.native() ? device.gpu().target : { ...withConfigs(device.gpu().target, DIRECT_CONFIGS, 'direct'), ...(lanes ? { emulatedLanes: lanes } : {}) };
    return split(t, keys ? { flashDirectKeys: keys } : {});
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
      const rng = makeRng(Sq * 7 + Sk + D);
      // Rows with magnitudes of their own (10^±spread), scaled by `mag`; the zero rows: g's row 3, v's row 5.
      const rows = (n: number, d: number, spread: number, mag = 1, zero = -1) => {
        const data = new Float32Array(B * H * n * d);
        for (let r = 0; r < B * H * n; r++) {
          const m = r === zero ? 0 : mag * 10 ** ((2 * rng() - 1) * spread);
          for (let c = 0; c < d; c++) data[r * d + c] = (2 * rng() - 1) * m;
        }
        return data;
      };
      const [q, k, v, g] = [rows(Sq, D, 2), rows(Sk, D, 1), rows(Sk, Dv, 0.5, 1, zeroRows ? 5 : -1), rows(Sq, Dv, 1, gMag, zeroRows ? 3 : -1)];
      const s = scale ?? 1 / Math.sqrt(D);
      const problem = { B, H, Sq, Sk, D, Dv, scale: s, q, k, v, g };
      const { lse, delta } = statsAndBounds(problem);
      const tol = splitBounds(problem, lse, delta);
      await assertGradsWithin(device.gpu(), graph, program, { q, k, v, g, lse, delta }, [tol.dq, tol.dk, tol.dv], wrts, what, 1);
    });
  }
});
