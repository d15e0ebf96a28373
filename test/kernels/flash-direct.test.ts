// The tensor-core flash forward that loads q, k and v's fragments from storage (Target.tuning.flashDirect,
// kernels/flash-direct.ts). lavapipe has no subgroup matrices: a Target listing the 16x8x8 and 16x8x16 configs
// without the feature gets the emulated spelling, which reads q, k (column-major) and v in place as the native
// loads do, so the two passes, the ragged row and key tiles, the rounded weights and the lse run for real; natively
// (a GPU listing both configs) the same cases run on tensor cores.
//
// Tolerance, as for the staged tensor-core kernel (flash-sgmat.test.ts): the one coarse error is P rounded to f16
// with l summing the rounded weights, |out − ref| ≤ 2u/(1 − u)·max|v| + 1e-5·max|v| with u = 2^-10; lse within
// u/(1 − u) + 1e-5·(1 + |lse|).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { flashDirectUnfit } from '../../kernels/flash-direct.js';
import { sgmatConfig } from '../../kernels/sgmat.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { assertWithin, randomTensor } from './harness.js';
import { attentionGraph, DIRECT_CONFIGS, sgmatDevice, withConfigs } from './sgmat-targets.js';

const U16 = 2 ** -10;
const H200 = TARGETS['nvidia-h200'];

/** attention(round(q), round(k), round(v)) and its lse sibling: exact f16 operands, as autocast makes them. */
const roundedAttention = (qs: number[], ks: number[], vs: number[], attrs: Attrs = {}, mask?: number[], withLse = true) => attentionGraph(qs, ks, vs, { attrs, mask, withLse, round: true });

describe('the direct flash forward as generated for the H200', () => {
  test('the f16 bench rows: q and k fragments on 16x8x8, P·v on 16x8x16, from f16 storage; one subgroup; two passes', () => {
    const row = benchRows('full').find((r) => r.name === 'attention_fwd_f16_evag_detection')!;
    const { schedule } = compileGpu(rowGraph(row).graph, { ...H200, tuning: { flashDirect: true } });
    const k = schedule.kernels.find((x) => x.name.startsWith('attention_flash'))!;
    assert.match(k.name, /^attention_flash_direct_f16/);
    for (const i of [0, 1, 2]) assert.match(k.wgsl, new RegExp(`@binding\\(${i}\\) var<storage, read> in_${i}: array<f16>;`));
    assert.match(k.wgsl, /let q_10 = subgroupMatrixLoad<subgroup_matrix_left<f16, 8, 16>, row_major>\(&in_0, qb \+ 80u, 88u\);/);
    assert.match(k.wgsl, /subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 8>, col_major>\(&in_1, kb \+ \(jc \+ 8u\) \* 88u \+ 80u, 88u\)/);
    assert.match(k.wgsl, /o_10 = subgroupMatrixMultiplyAccumulate\(o_l, subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 16>, row_major>\(&in_2, vb \+ jc \* 88u \+ 80u, 88u\), o_10\);/);
    assert.deepEqual(k.workgroupSize, [32, 1, 1]);
    assert.equal(k.wgsl.match(/for \(var j0 = 0u;/g)?.length, 2, 'two passes over the keys');
    assert.ok(schedule.kernels.every((x) => x.halfOnly === undefined));
    // Without the tuning, the f32 flash kernel (the default is unchanged).
    assert.doesNotMatch(compileGpu(rowGraph(row).graph, H200).schedule.kernels.map((x) => x.name).join(' '), /direct/);
  });

  test('where it does not apply: a mask, head dims off 8, fewer than 16 rows, f32 operands, a config missing; q stored as f32', () => {
    const t = { ...H200, tuning: { flashDirect: true } };
    const why = (g: ReturnType<typeof roundedAttention>) => flashDirectUnfit(g.graph, g.graph.node(g.y), t, g.graph.node(g.lse));
    const s = (n: number, d: number) => [1, 2, n, d];
    assert.equal(why(roundedAttention(s(40, 88), s(40, 88), s(40, 88))), undefined);
    assert.match(why(roundedAttention(s(40, 88), s(40, 88), s(40, 88), {}, [40])) ?? '', /mask/);
    assert.match(why(roundedAttention(s(40, 20), s(40, 20), s(40, 88))) ?? '', /not multiples of 8/);
    assert.match(why(roundedAttention(s(9, 88), s(40, 88), s(40, 88))) ?? '', /fewer than 16/);
    const b = new Builder();
    const y = b.add('attention', [b.input('q', s(40, 88)), b.input('k', s(40, 88)), b.input('v', s(40, 88))]);
    b.output('y', y);
    assert.match(flashDirectUnfit(b.graph, b.graph.node(y), t) ?? '', /not exactly f16/);
    const g = roundedAttention(s(40, 88), s(40, 88), s(40, 88));
    assert.match(flashDirectUnfit(g.graph, g.graph.node(g.y), { ...t, subgroupMatrixConfigs: t.subgroupMatrixConfigs.filter((c) => c.K !== 8) }) ?? '', /16x8x8/);
    // The rounded q also an output: stored as f32, so the fallback (the f32 flash kernel) runs.
    const c = new Builder();
    const round = (id: number) => c.add('cast', [c.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const q = round(c.input('q', s(40, 88)));
    c.output('y', c.add('attention', [q, round(c.input('k', s(40, 88))), round(c.input('v', s(40, 88)))]));
    c.output('q16', q);
    const names = compileGpu(c.graph, t).schedule.kernels.map((k) => k.name);
    assert.ok(names.some((n) => n.startsWith('attention_flash_f32')) && !names.some((n) => /direct/.test(n)), names.join(' '));
  });
});

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();
  // Emulated with `lanes` invocations per subgroup where given (NVIDIA's 32: two lanes share each row's statistics).
  const target = (lanes?: number): Target => (device.native() ? device.gpu().target : { ...withConfigs(device.gpu().target, DIRECT_CONFIGS, 'direct'), ...(lanes ? { emulatedLanes: lanes } : {}) });

  // [what, B, H, Sq, Sk, D, Dv, scale, lse, scores rising along the keys, keys per tile, emulated lanes]; few cases:
  // lavapipe compiles each emulated kernel for seconds.
  const CASES: [string, number, number, number, number, number, number, number | undefined, boolean, boolean, (16 | 32 | 64)?, number?][] = [
    ['head dim 40, 37 rows and keys (ragged row and key tiles), two heads, with lse', 1, 2, 37, 37, 40, 40, undefined, true, false],
    ['head dim 24, v of 16 columns, 16 rows, 70 keys in tiles of 32, batch 2, scale 0.3', 2, 1, 16, 70, 24, 16, 0.3, false, false, 32],
    ['scores rising along the keys (every tile raises the max: the first pass must see them all), with lse, 32 lanes', 1, 1, 20, 50, 8, 24, undefined, true, true, 16, 32],
    ['keys in tiles of 64, the last one ragged (70 keys), with lse, 32 lanes', 1, 1, 18, 70, 16, 16, undefined, true, false, 64, 32],
  ];
  for (const [what, B, H, Sq, Sk, D, Dv, scale, withLse, rising, keys, lanes] of CASES) {
    test(what, async () => {
      const t = target(lanes);
      if (device.native()) assert.ok(DIRECT_CONFIGS.every((c) => sgmatConfig(t, c.M, c.N, c.K)), 'the GPU lists 16x8x8 and 16x8x16');
      const attrs: Attrs = scale === undefined ? {} : { scale };
      const { graph, y, lse } = roundedAttention([B, H, Sq, D], [B, H, Sk, D], [B, H, Sk, Dv], attrs, undefined, withLse);
      assert.equal(flashDirectUnfit(graph, graph.node(y), t, withLse ? graph.node(lse) : undefined), undefined);
      const seed = Sq * 7 + Sk + D;
      const values = [randomTensor([B, H, Sq, D], seed), randomTensor([B, H, Sk, D], seed + 1), randomTensor([B, H, Sk, Dv], seed + 2)].map((x) => ({ ...x, data: x.data.map(roundF16) }));
      if (rising) {
        for (let i = 0; i < values[0].data.length; i++) values[0].data[i] = i % D === 0 ? 1 : 0;
        for (let i = 0; i < values[1].data.length; i++) values[1].data[i] = i % D === 0 ? roundF16((8 * Math.floor(i / D)) / Sk) : 0;
      }
      // Compiled and run as the schedule runs it: the rounded values stored as f16 for the kernel's fragment loads.
      const program = compileGpu(graph, { ...t, tuning: { ...t.tuning, flashDirect: true, ...(keys ? { flashDirectKeys: keys } : {}) } });
      const kernel = program.schedule.kernels.find((k) => k.name.startsWith('attention_flash'))!;
      assert.match(kernel.name, new RegExp(`^attention_flash${withLse ? '_lse' : ''}_direct_f16${keys && keys > 16 ? `_k${keys}` : ''}_f16io`));
      if (!device.native() && lanes) assert.match(kernel.wgsl, new RegExp(`@workgroup_size\\(${lanes}, 1, 1\\)`));
      assert.equal(/subgroupMatrix/.test(kernel.wgsl), device.native(), 'builtins only on a target with the feature');
      const inputs = new Map(graph.inputs.map((inp, i) => [inp.name, { shape: values[i].shape, data: Float64Array.from(values[i].data) }] as const));
      const got = await runGpu(device.gpu(), graph, program, inputs, new Map());
      const out = Float32Array.from(got.get('y')!.data);
      const ref = interpret(graph, inputs);
      const vMax = values[2].data.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
      const worst = assertWithin(out, ref.get('y')!.data, () => ((2 * U16) / (1 - U16) + 1e-5) * vMax, `${what}: out`);
      if (withLse) {
        const r = ref.get('lse')!.data;
        assertWithin(Float32Array.from(got.get('lse')!.data), r, (i) => U16 / (1 - U16) + 1e-5 * (1 + Math.abs(r[i])), `${what}: lse`);
      }
      assert.ok(worst < 0.5, `${what}: largest error ${worst} of the bound`);
    });
  }
});
