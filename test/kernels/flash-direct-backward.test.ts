// The tensor-core flash backward that loads q, k, v and g's fragments from f16 storage (Target.tuning.flashDirectGrad,
// kernels/flash-direct-backward.ts), compiled and run as the schedule runs it: the rounded operands stored as f16,
// lse and δ given. lavapipe has no subgroup matrices: a Target listing the 16x8x8 and 16x8x16 configs without the
// feature gets the emulated spelling, which reads the operands' storage in place (k, v, q, g column-major for the
// transposed products) as the native loads do, so the ragged owned and swept tiles, P and dS, lse and δ per row or
// per column, the pairing of dk with dv and the way out run for real; natively the same cases run on tensor cores.
// The bound is the staged tensor-core backward's (./attention-grad-bounds.ts): the two kernels share their arithmetic.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs, Graph } from '../../compiler/ir/graph.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { flashDirectBackwardUnfit } from '../../kernels/flash-direct-backward.js';
import { sgmatConfig } from '../../kernels/sgmat.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { probeKernels } from '../../runtime/gpu/tensor-core-probe.js';
import { assertGradsWithin, statsAndBounds } from './attention-grad-bounds.js';
import { randomTensor } from './harness.js';
import { DIRECT_CONFIGS, sgmatDevice, withConfigs } from './sgmat-targets.js';

const H200 = TARGETS['nvidia-h200'];
const bhsd = (b: number, h: number, s: number, d: number) => [b, h, s, d];

/**
 * attention_grad wrt each of `wrts` (0 dq, 1 dk, 2 dv; outputs d0, d1, d2) of round(q), round(k), round(v), round(g),
 * lse, δ, [mask]: exact f16 row operands, as autocast makes them. `gOut`: round(g) is also an output (stored as f32).
 */
function gradGraph(qs: number[], ks: number[], dv: number, wrts: readonly number[], attrs: Attrs = {}, opts: { mask?: number[]; gOut?: boolean } = {}) {
  const b = new Builder();
  const [B, H, Sq] = qs;
  const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
  const rows = [b.input('q', qs), b.input('k', ks), b.input('v', bhsd(B, H, ks[2], dv)), b.input('g', bhsd(B, H, Sq, dv))].map(round);
  const stats = [b.input('lse', [B, H, Sq]), b.input('delta', [B, H, Sq])];
  const mask = opts.mask ? [b.input('mask', opts.mask)] : [];
  const grads = wrts.map((wrt) => b.add('attention_grad', [...rows, ...stats, ...mask], { ...attrs, wrt }));
  grads.forEach((x, i) => b.output(`d${wrts[i]}`, x));
  if (opts.gOut) b.output('g16', rows[3]);
  return { graph: b.graph, grads };
}

const kernelNames = (g: Graph, t: Target) => compileGpu(g, t).schedule.kernels.map((k) => k.name);

describe('the direct flash backward as generated for the H200', () => {
  test('the f16 bench row: dq and dk+dv from f16 storage, kᵀ and vᵀ (qᵀ and gᵀ) loaded column-major, two barriers per tile', () => {
    const row = benchRows('full').find((r) => r.name === 'attention_vjp_f16_evag_detection')!;
    const { schedule } = compileGpu(rowGraph(row).graph, { ...H200, tuning: { flashDirectGrad: true } });
    const names = schedule.kernels.map((k) => k.name);
    assert.ok(names.some((n) => n.startsWith('attention_flash_lse_f32')), `the forward is unchanged: ${names.join(' ')}`);
    const dq = schedule.kernels.find((k) => k.name.startsWith('attention_grad_q'))!;
    const kv = schedule.kernels.find((k) => k.name.startsWith('attention_grad_kv'))!;
    assert.match(dq.name, /^attention_grad_q_flash_direct_f16/);
    assert.match(kv.name, /^attention_grad_kv_flash_direct_f16/);
    for (const k of [dq, kv]) {
      for (const i of [0, 1, 2, 3]) assert.match(k.wgsl, new RegExp(`@binding\\(${i}\\) var<storage, read> in_${i}: array<f16>;`), `${k.name}: binding ${i}`);
      assert.deepEqual(k.workgroupSize, [32, 1, 1]);
      const start = k.wgsl.indexOf('for (var j0');
      const loop = k.wgsl.slice(start, k.wgsl.indexOf('\n  workgroupBarrier();', start));
      assert.equal(loop.match(/workgroupBarrier\(\)/g)?.length, 2, `${k.name}: two barriers per tile`);
      assert.doesNotMatch(k.wgsl, /tile_[ab]|tile_h/, `${k.name}: nothing staged`);
    }
    // dq: q's and g's left fragments in registers, kᵀ and vᵀ in place, dq += dS·k with k's rows row-major.
    assert.match(dq.wgsl, /let x_10 = subgroupMatrixLoad<subgroup_matrix_left<f16, 8, 16>, row_major>\(&in_0, xb \+ 80u, 88u\);/);
    assert.match(dq.wgsl, /let y_10 = subgroupMatrixLoad<subgroup_matrix_left<f16, 8, 16>, row_major>\(&in_3, yb \+ 80u, 88u\);/);
    assert.match(dq.wgsl, /subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 8>, col_major>\(&in_1, ab \+ \(jc \+ 8u\) \* 88u \+ 80u, 88u\)/);
    assert.match(dq.wgsl, /subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 8>, col_major>\(&in_2, bb \+ \(jc \+ 8u\) \* 88u \+ 80u, 88u\)/);
    assert.match(dq.wgsl, /ax_10 = subgroupMatrixMultiplyAccumulate\(ax_l, subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 16>, row_major>\(&in_1, ab \+ jc \* 88u \+ 80u, 88u\), ax_10\);/);
    // dk+dv: k's and v's fragments own the rows; qᵀ and gᵀ in place; dk += dSᵀ·q, dv += Pᵀ·g; lse and δ per column.
    assert.match(kv.wgsl, /let x_0 = subgroupMatrixLoad<subgroup_matrix_left<f16, 8, 16>, row_major>\(&in_1, xb \+ 0u, 88u\);/);
    assert.match(kv.wgsl, /subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 8>, col_major>\(&in_0, ab \+ \(jc \+ 8u\) \* 88u \+ 80u, 88u\)/);
    assert.match(kv.wgsl, /ay_10 = subgroupMatrixMultiplyAccumulate\(ay_l, subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 16>, row_major>\(&in_3, bb \+ jc \* 88u \+ 80u, 88u\), ay_10\);/);
    assert.match(kv.wgsl, /t_lse\[c\] = in_4\[bh \* 2304u \+ jc \+ c\];/);
    assert.match(kv.wgsl, /out_1\[/);
    assert.ok(schedule.kernels.every((x) => x.halfOnly === undefined));
    // With 64 keys per tile: four 16-key left fragments per accumulation, the name says so.
    const k64 = compileGpu(rowGraph(row).graph, { ...H200, tuning: { flashDirect: true, flashDirectGrad: true, flashDirectKeys: 64 } }).schedule.kernels.map((k) => k.name);
    for (const prefix of ['attention_flash_lse_direct_f16_k64', 'attention_grad_q_flash_direct_f16_k64', 'attention_grad_kv_flash_direct_f16_k64']) {
      assert.ok(k64.some((n) => n.startsWith(prefix)), `${prefix}: ${k64.join(' ')}`);
    }
    // Without the tuning, the f32 flash kernels (the default is unchanged).
    assert.doesNotMatch(kernelNames(rowGraph(row).graph, H200).join(' '), /direct/);
  });

  test('where it does not apply: a mask, the mask gradient, head dims off 8, fewer than 16 rows, f32 operands; g stored as f32', () => {
    const t = { ...H200, tuning: { flashDirectGrad: true } };
    const why = (x: ReturnType<typeof gradGraph>, i = 0) => flashDirectBackwardUnfit(x.graph, x.graph.node(x.grads[i]), t);
    const s = (n: number, d: number) => bhsd(1, 2, n, d);
    assert.equal(why(gradGraph(s(40, 88), s(40, 88), 88, [0, 1, 2])), undefined);
    assert.equal(why(gradGraph(s(40, 88), s(40, 88), 88, [0, 1, 2]), 2), undefined);
    assert.match(why(gradGraph(s(40, 88), s(40, 88), 88, [0], {}, { mask: [40] })) ?? '', /mask/);
    assert.match(why(gradGraph(s(40, 88), s(40, 88), 88, [3], {}, { mask: [40] })) ?? '', /mask's gradient/);
    assert.match(why(gradGraph(s(40, 20), s(40, 20), 88, [0])) ?? '', /not multiples of 8/);
    assert.match(why(gradGraph(s(40, 88), s(12, 88), 88, [1])) ?? '', /fewer than 16/);
    const pair = gradGraph(s(40, 88), s(40, 88), 88, [0, 2]);
    assert.match(flashDirectBackwardUnfit(pair.graph, pair.graph.node(pair.grads[0]), t, pair.graph.node(pair.grads[1])) ?? '', /does not pair/);
    const b = new Builder();
    const ins = ['q', 'k', 'v', 'g'].map((n) => b.input(n, s(40, 88)));
    const dq = b.add('attention_grad', [...ins, b.input('lse', [1, 2, 40]), b.input('delta', [1, 2, 40])], { wrt: 0 });
    b.output('dq', dq);
    assert.match(flashDirectBackwardUnfit(b.graph, b.graph.node(dq), t) ?? '', /not exactly f16/);
    assert.match(flashDirectBackwardUnfit(b.graph, b.graph.node(dq), { ...t, subgroupMatrixConfigs: t.subgroupMatrixConfigs.filter((c) => c.K !== 8) }) ?? '', /16x8x8/);
    // round(g) also an output: stored as f32, so the fallbacks (the f32 flash kernels) run.
    const names = kernelNames(gradGraph(s(40, 88), s(40, 88), 88, [0, 1, 2], {}, { gOut: true }).graph, t);
    assert.ok(names.some((n) => n.startsWith('attention_grad_q_flash_f32')) && !names.some((n) => /direct/.test(n)), names.join(' '));
  });
});

test('the tensor-core probe compiles the kernels from storage (flash; f32 products split) at device open when the tuning uses them', () => {
  const names = (tuning: Target['tuning']) => probeKernels({ ...H200, tuning }).map((k) => k.name);
  assert.doesNotMatch(names({}).join(' '), /direct/);
  const both = probeKernels({ ...H200, tuning: { flashDirect: true, flashDirectGrad: true } }).filter((k) => /flash.*direct/.test(k.name));
  assert.deepEqual(
    both.map((k) => k.name),
    ['attention_flash_direct_f16_f16io', 'attention_grad_kv_flash_direct_f16_f16io'],
  );
  both.forEach((k, i) => {
    for (let b = 0; b < 3 + i; b++) assert.match(k.wgsl, new RegExp(`@binding\\(${b}\\) var<storage, read> in_${b}: array<f16>;`), `${k.name}: binding ${b}`);
  });
  // Under f32TensorCores, the f32 product's chain too.
  assert.deepEqual(names({ f32TensorCores: true }).filter((n) => /split16/.test(n)), ['split16_rows_f32', 'split16_cols_f32', 'matmul_split16_f32']);
  assert.deepEqual(names({ f32AttentionTensorCores: true }).filter((n) => /split16/.test(n)), ['split16_rows_f32', 'split16_rows_f32', 'split16_cols_f32', 'attention_flash_split16_f32']);
  // Not where the target lacks the 16x8x8 config (the schedule would not use them there either).
  assert.doesNotMatch(probeKernels({ ...H200, subgroupMatrixConfigs: H200.subgroupMatrixConfigs.filter((c) => c.K !== 8), tuning: { flashDirect: true, flashDirectGrad: true } }).map((k) => k.name).join(' '), /direct/);
});

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();
  // Emulated with `lanes` invocations per subgroup where given (NVIDIA's 32).
  const target = (keys?: 16 | 32 | 64, lanes?: number): Target => {
    const t = device.native() ? device.gpu().target : { ...withConfigs(device.gpu().target, DIRECT_CONFIGS, 'direct'), ...(lanes ? { emulatedLanes: lanes } : {}) };
    return { ...t, tuning: { ...t.tuning, flashDirectGrad: true, ...(keys ? { flashDirectKeys: keys } : {}) } };
  };

  // [what, B, H, Sq, Sk, D, Dv, scale, wrts, keys per tile, the kernels expected, emulated lanes]; few cases:
  // lavapipe compiles each emulated kernel for seconds.
  const CASES: [string, number, number, number, number, number, number, number | undefined, number[], 16 | 32 | 64 | undefined, string[], number?][] = [
    ['head dim 40, 37 queries, 45 keys (ragged owned and swept tiles), two heads: dq and dk+dv', 1, 2, 37, 45, 40, 40, undefined, [0, 1, 2], undefined, ['q', 'kv']],
    ['head dim 24, v of 16 columns, batch 2, scale 0.3, keys in tiles of 32, 32 lanes: dq and dv alone', 2, 1, 20, 70, 24, 16, 0.3, [0, 2], 32, ['q', 'v'], 32],
    ['head dim 16, 70 queries, 17 keys, queries in tiles of 64: dk alone', 1, 1, 70, 17, 16, 16, undefined, [1], 64, ['k']],
  ];
  for (const [what, B, H, Sq, Sk, D, Dv, scale, wrts, keys, kernels, lanes] of CASES) {
    test(what, async () => {
      const t = target(keys, lanes);
      if (device.native()) assert.ok(DIRECT_CONFIGS.every((c) => sgmatConfig(t, c.M, c.N, c.K)), 'the GPU lists 16x8x8 and 16x8x16');
      const attrs: Attrs = scale === undefined ? {} : { scale };
      const { graph } = gradGraph(bhsd(B, H, Sq, D), bhsd(B, H, Sk, D), Dv, wrts, attrs);
      const program = compileGpu(graph, t);
      const names = program.schedule.kernels.map((k) => k.name);
      for (const which of kernels) assert.ok(names.some((n) => n.startsWith(`attention_grad_${which}_flash_direct_f16`)), `d${which}: ${names.join(' ')}`);
      assert.equal(
        program.schedule.kernels.filter((k) => /direct/.test(k.name)).every((k) => /subgroupMatrix/.test(k.wgsl) === device.native()),
        true,
        'builtins only on a target with the feature',
      );
      const seed = Sq * 7 + Sk + D;
      const half = (shape: number[], s: number) => Float32Array.from(randomTensor(shape, s).data, roundF16);
      const [q, k, v, g] = [half(bhsd(B, H, Sq, D), seed), half(bhsd(B, H, Sk, D), seed + 1), half(bhsd(B, H, Sk, Dv), seed + 2), half(bhsd(B, H, Sq, Dv), seed + 3)];
      const s = scale ?? 1 / Math.sqrt(D);
      const { lse, delta, tol } = statsAndBounds({ B, H, Sq, Sk, D, Dv, scale: s, q, k, v, g });
      // Not vacuous: the f16 rounding of P and dS shows, but below half the bound.
      await assertGradsWithin(device.gpu(), graph, program, { q, k, v, g, lse, delta }, [tol.dq, tol.dk, tol.dv], wrts, what, 0.5);
    });
  }
});
