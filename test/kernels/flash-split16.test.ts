// The f32 attention forward on the f16 tensor cores at f32 accuracy (Target.tuning.f32AttentionTensorCores,
// kernels/flash-split16.ts): q, k and v split into scaled f16 pairs, three products per step, P split in workgroup
// memory. lavapipe has no subgroup matrices: a Target listing the 16x8x8 and 16x8x16 configs without the feature gets
// the emulated spelling, so the splits, the scaled scores, the split weights and the scaling back run for real;
// natively the same cases run on tensor cores.
//
// Bound (u = 2^-24), from the kernel's arithmetic: each product term is within 2^-19 of itself (hi/lo splits of
// 2^-21 each, lo·lo' dropped), so score s_ij is within ε_ij = (D·u + 2^-19)·scale·Σ_d|q_id||k_jd|, and with
// ε_i = max_j ε_ij the weights and their sum within about ε_i relative: |out_ic − ref| ≤ (2ε_i + 2^-18 + Sk·u)·max|v|
// (P and v split: 2^-19 per term; the f32 sums), |lse_i − ref| ≤ ε_i + Sk·u + u·|ref|.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { flashSplitUnfit } from '../../kernels/flash-split16.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng } from '../ir/util.js';
import { assertWithin } from './harness.js';
import { attentionGraph, DIRECT_CONFIGS, sgmatDevice, withConfigs } from './sgmat-targets.js';
import { splitForwardBounds } from './split16-bounds.js';

const H200 = TARGETS['nvidia-h200'];
const split = (t: Target, more: Target['tuning'] = {}): Target => ({ ...t, tuning: { ...t.tuning, ...more, f32AttentionTensorCores: true } });

/** attention(q, k, v) in f32, with its lse sibling when `withLse`, and an optional mask. */
const f32Attention = (qs: number[], ks: number[], vs: number[], attrs: Attrs = {}, withLse = true, mask?: number[]) => attentionGraph(qs, ks, vs, { attrs, withLse, mask });

describe('as generated for the H200', () => {
  test('the f32 forward rows: three splits, then the forward with three products per score fragment and per P·v fragment', () => {
    const row = benchRows('full').find((r) => r.name === 'attention_fwd_evag_detection')!;
    const { schedule } = compileGpu(rowGraph(row).graph, split(H200));
    assert.deepEqual(
      schedule.kernels.map((k) => k.name),
      ['split16_rows_f32', 'split16_rows_f32', 'split16_cols_f32', 'attention_flash_split16_f32'],
    );
    const k = schedule.kernels[3];
    for (const i of [0, 1, 2]) assert.match(k.wgsl, new RegExp(`@binding\\(${i}\\) var<storage, read> in_${i}: array<f16>;`));
    // D 88: 11 q fragments of 16x8, two 8-key score fragments, three products each; P·v: 11 fragments, three each.
    const loop = k.wgsl.slice(k.wgsl.lastIndexOf('for (var j0'));
    assert.equal(loop.match(/subgroupMatrixMultiplyAccumulate/g)?.length, 11 * 2 * 3 + 11 * 3);
    assert.match(k.wgsl, /let ql_10 = subgroupMatrixLoad<subgroup_matrix_left<f16, 8, 16>, row_major>\(&in_0, 3244032u \+ qb \+ 80u, 88u\);/);
    // Each score times 2^-(its query's and key's exponents): the rows' factors staged once, the tile's keys' per tile.
    assert.match(k.wgsl, /row_sq\[r\] = pow2\(-i32\(f32\(in_0\[6488064u \+ bh \* 2304u \+ ra \+ r\]\)\)\);/);
    assert.match(k.wgsl, /tile_sk\[c\] = pow2\(-i32\(f32\(in_1\[6488064u \+ bh \* 2304u \+ jc \+ c\]\)\)\);/);
    assert.equal(k.wgsl.match(/let s = tile_s\[r \* 20u \+ j\] \* row_sq\[r\] \* tile_sk\[j\] \* /g)?.length, 2, 'both passes');
    assert.match(k.wgsl, /tile_p\[384u \+ r \* 24u \+ j\] = f16\(ps - ph\);/);
    // Without the tuning: the f32 flash kernel.
    assert.deepEqual(compileGpu(rowGraph(row).graph, H200).schedule.kernels.map((x) => x.name), ['attention_flash_f32']);
  });

  test('where it does not apply: not asked, a mask, f16 operands, head dims off 8, fewer than 16 keys', () => {
    const s = (n: number, d: number) => [1, 2, n, d];
    const why = (g: ReturnType<typeof f32Attention>, t = split(H200)) => flashSplitUnfit(g.graph, g.graph.node(g.y), t, g.graph.node(g.lse));
    assert.equal(why(f32Attention(s(40, 16), s(40, 16), s(40, 16))), undefined);
    assert.match(why(f32Attention(s(40, 16), s(40, 16), s(40, 16)), H200) ?? '', /not asked for/);
    assert.match(why(f32Attention(s(40, 16), s(40, 16), s(40, 16), {}, true, [40])) ?? '', /mask/);
    assert.match(why(f32Attention(s(40, 12), s(40, 12), s(40, 16))) ?? '', /not multiples of 8/);
    assert.match(why(f32Attention(s(40, 16), s(12, 16), s(12, 16))) ?? '', /fewer than 16/);
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const y = b.add('attention', ['q', 'k', 'v'].map((n) => round(b.input(n, s(40, 16)))));
    b.output('y', y);
    assert.match(flashSplitUnfit(b.graph, b.graph.node(y), split(H200)) ?? '', /f16 values/);
  });
});

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();
  const target = (more: Target['tuning'], lanes?: number): Target =>
    split(device.native() ? device.gpu().target : { ...withConfigs(device.gpu().target, DIRECT_CONFIGS, 'direct'), ...(lanes ? { emulatedLanes: lanes } : {}) }, more);

  // [what, B, H, Sq, Sk, D, Dv, scale, lse, magnitudes of q's and k's rows (10^±), keys per tile, emulated lanes];
  // small head dims: lavapipe compiles each emulated kernel for seconds per product.
  const CASES: [string, number, number, number, number, number, number, number | undefined, boolean, number, (32 | 64)?, number?][] = [
    ['head dim 16, 37 queries and keys (ragged tiles), two heads, with lse, rows 10^±2 apart', 1, 2, 37, 37, 16, 16, undefined, true, 2],
    ['head dim 16, v of 8 columns, 45 keys in tiles of 32, scale 0.3', 1, 1, 20, 45, 16, 8, 0.3, false, 1, 32],
  ];
  for (const [what, B, H, Sq, Sk, D, Dv, scale, withLse, spread, keys, lanes] of CASES) {
    test(what, async () => {
      const t = target(keys ? { flashDirectKeys: keys } : {}, lanes);
      const attrs: Attrs = scale === undefined ? {} : { scale };
      const { graph } = f32Attention([B, H, Sq, D], [B, H, Sk, D], [B, H, Sk, Dv], attrs, withLse);
      const program = compileGpu(graph, t);
      const names = program.schedule.kernels.map((k) => k.name);
      assert.match(names[names.length - 1], withLse ? /^attention_flash_lse_split16_f32/ : /^attention_flash_split16_f32/, names.join(' '));
      const rng = makeRng(Sq * 7 + Sk);
      // Rows (of q and k) with magnitudes of their own; v plain.
      const rows = (n: number, d: number, mag: number) => {
        const data = new Float64Array(B * H * n * d);
        for (let r = 0; r < B * H * n; r++) {
          const m = 10 ** ((2 * rng() - 1) * mag);
          for (let c = 0; c < d; c++) data[r * d + c] = Math.fround((2 * rng() - 1) * m);
        }
        return data;
      };
      const [q, k, v] = [rows(Sq, D, spread), rows(Sk, D, spread / 2), rows(Sk, Dv, 0)];
      const inputs = new Map([
        ['q', { shape: [B, H, Sq, D], data: q }],
        ['k', { shape: [B, H, Sk, D], data: k }],
        ['v', { shape: [B, H, Sk, Dv], data: v }],
      ]);
      const got = await runGpu(device.gpu(), graph, program, inputs, new Map());
      const ref = interpret(graph, inputs);
      const bound = splitForwardBounds({ B, H, Sq, Sk, D, Dv, scale: scale ?? 1 / Math.sqrt(D), q, k, v });
      const y = ref.get('y')!.data;
      const worst = assertWithin(Float32Array.from(got.get('y')!.data), y, bound.out, `${what}: out`);
      assert.ok(worst > 0 && worst < 1, `${what}: largest error ${worst} of the bound`);
      if (withLse) {
        const r = ref.get('lse')!.data;
        assertWithin(Float32Array.from(got.get('lse')!.data), r, (i) => bound.lse(i, r[i]), `${what}: lse`);
      }
    });
  }
});
