// The subgroup-matrix flash-attention backward (kernels/flash-sgmat-backward.ts) against the float64 CPU
// reference of attention_grad (compiler/ir/interpret.ts). lavapipe has no subgroup matrices, so its Target gets
// configs without the feature and the kernels run the emulated spelling: staging (transposed and not, padded
// head dims, ragged tiles), P and dS, masks, both tile orders (concurrent and sequential staging) and the
// accumulators' way out run for real. On a GPU with tensor cores (nativeSgmat) the same cases run natively.
//
// The error bound per output element is derived from the kernel's arithmetic in ./attention-grad-bounds.ts.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Attrs } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import {
  flashSgmatBackwardApplies,
  flashSgmatBackwardBytes,
  flashSgmatBackwardKernel,
  flashSgmatBackwardTiles,
  flashSgmatBackwardUnfit,
  type FlashSgmatBackwardTiles,
  type FlashSgmatGrad,
} from '../../kernels/flash-sgmat-backward.js';
import { FlashTileError, type FlashOperand, type FlashReads } from '../../kernels/flash-common.js';
import { nativeSgmat, SUBGROUP_MATRIX_FEATURE } from '../../kernels/sgmat.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { assertWithin, randomTensor, runKernelOutputs } from './harness.js';
import { deviceSgmatTarget, EMULATED, NVIDIA, type Config } from './sgmat-targets.js';
import { E32, statsAndBounds, type Problem } from './attention-grad-bounds.js';

const bhsd = (b: number, h: number, s: number, d: number) => [b, h, s, d];
const shapesOf = (s: number, d: number) => ({ q: bhsd(8, 16, s, d), k: bhsd(8, 16, s, d), v: bhsd(8, 16, s, d) });
const GRADS: FlashSgmatGrad[] = ['q', 'k', 'v', 'kv'];

test('tiles: head dims 24, 64, 88, 112 fit both targets for dq, dk, dv and dk+dv; D 88 and 112 natively', () => {
  assert.deepEqual(flashSgmatBackwardTiles(NVIDIA, shapesOf(324, 88), 'q'), { subgroups: 4, sweep: 32, sequential: false });
  assert.equal(flashSgmatBackwardBytes(NVIDIA, shapesOf(324, 88), 'q'), 46080);
  assert.deepEqual(flashSgmatBackwardTiles(NVIDIA, shapesOf(324, 88), 'kv'), { subgroups: 4, sweep: 32, sequential: true });
  assert.equal(flashSgmatBackwardBytes(NVIDIA, shapesOf(324, 88), 'kv'), 45312);
  assert.deepEqual(flashSgmatBackwardTiles(NVIDIA, shapesOf(324, 112), 'q'), { subgroups: 4, sweep: 16, sequential: false });
  assert.deepEqual(flashSgmatBackwardTiles(NVIDIA, shapesOf(324, 112), 'kv'), { subgroups: 4, sweep: 16, sequential: false });
  assert.equal(flashSgmatBackwardBytes(NVIDIA, shapesOf(324, 112), 'kv'), 41088);
  for (const target of [NVIDIA, EMULATED]) {
    for (const d of [24, 64, 88, 112]) {
      for (const s of [1, 37, 324]) {
        for (const which of GRADS) {
          const tiles = flashSgmatBackwardTiles(target, shapesOf(s, d), which);
          assert.notEqual(typeof tiles, 'string', `${target.name} d ${d} s ${s} d${which}: ${String(tiles)}`);
          assert.ok(flashSgmatBackwardBytes(target, shapesOf(s, d), which) <= target.limits.maxComputeWorkgroupStorageSize);
          const t = tiles as FlashSgmatBackwardTiles;
          assert.ok(t.subgroups * 16 < s + 16 || t.subgroups === 1, `${target.name} d ${d} s ${s}: ${t.subgroups} subgroups`);
        }
      }
    }
  }
});

test('unfit: no config, no shader-f16, head dims whose tiles do not fit, forced tiles that do not divide or fit', () => {
  assert.match(flashSgmatBackwardUnfit({ ...NVIDIA, subgroupMatrixConfigs: [] }, shapesOf(64, 88), 'q') ?? '', /no f16 x f16 -> f32/);
  assert.match(flashSgmatBackwardUnfit({ ...NVIDIA, features: ['subgroups', SUBGROUP_MATRIX_FEATURE] }, shapesOf(64, 88), 'kv') ?? '', /shader-f16/);
  assert.match(flashSgmatBackwardUnfit(NVIDIA, shapesOf(64, 2048), 'kv') ?? '', /no tiles fit .*workgroup memory/);
  assert.match(flashSgmatBackwardUnfit(NVIDIA, shapesOf(64, 88), 'q', { subgroups: 4, sweep: 24, sequential: false }) ?? '', /not a multiple/);
  assert.match(flashSgmatBackwardUnfit(NVIDIA, shapesOf(64, 88), 'kv', { subgroups: 4, sweep: 64, sequential: false }) ?? '', /bytes of workgroup memory exceed the target's 49152/);
  assert.equal(flashSgmatBackwardUnfit(NVIDIA, shapesOf(64, 88), 'kv'), undefined);
  // The kernel itself refuses unfit tiles with FlashTileError (the schedule's fallback signal).
  const { graph, grads } = gradGraph(bhsd(1, 1, 20, 88), bhsd(1, 1, 20, 88), undefined, {});
  const node = graph.node(grads[0]);
  assert.throws(() => flashSgmatBackwardKernel(node, node.inputs.map((i) => graph.node(i)), NVIDIA, { tiles: { subgroups: 4, sweep: 64, sequential: false } }), FlashTileError);
});

test('applies to attention_grad (wrt 0, 1, 2) whose q, k, v and g are exact f16 values, on a target with a config', () => {
  const b = new Builder();
  const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
  const [q, k, v, g] = ['q', 'k', 'v', 'g'].map((n) => b.input(n, [1, 2, 40, 88]));
  const [lse, delta] = ['lse', 'delta'].map((n) => b.input(n, [1, 2, 40]));
  const half = [round(q), round(k), round(v), round(g)];
  const grads = [0, 1, 2, 3].map((wrt) => b.add('attention_grad', [...half, lse, delta], { wrt }));
  const mixed = b.add('attention_grad', [half[0], half[1], half[2], g, lse, delta], { wrt: 0 });
  grads.forEach((x, i) => b.output(`d${i}`, x));
  b.output('m', mixed);
  const gr = b.graph;
  for (const wrt of [0, 1, 2]) assert.equal(flashSgmatBackwardApplies(gr, gr.node(grads[wrt]), NVIDIA), true, `wrt ${wrt}`);
  assert.equal(flashSgmatBackwardApplies(gr, gr.node(grads[1]), NVIDIA, gr.node(grads[2])), true, 'dk with dv');
  assert.equal(flashSgmatBackwardApplies(gr, gr.node(grads[0]), NVIDIA, gr.node(grads[2])), false, 'dq cannot pair');
  assert.equal(flashSgmatBackwardApplies(gr, gr.node(grads[3]), NVIDIA), false, 'the logits');
  assert.equal(flashSgmatBackwardApplies(gr, gr.node(mixed), NVIDIA), false, 'g is f32');
  assert.equal(flashSgmatBackwardApplies(gr, gr.node(grads[0]), { ...NVIDIA, subgroupMatrixConfigs: [] }), false, 'no config');
});

/** attention_grad wrt 0, 1, 2 of inputs q, k, v, g, lse, delta, [mask]. */
function gradGraph(qs: number[], ks: number[], maskShape: number[] | undefined, attrs: Attrs, dv = qs[3]) {
  const b = new Builder();
  const [B, H, Sq] = qs;
  const ins = [b.input('q', qs), b.input('k', ks), b.input('v', bhsd(B, H, ks[2], dv)), b.input('g', bhsd(B, H, Sq, dv)), b.input('lse', [B, H, Sq]), b.input('delta', [B, H, Sq])];
  if (maskShape) ins.push(b.input('mask', maskShape));
  const grads = [0, 1, 2].map((wrt) => b.add('attention_grad', ins, { ...attrs, wrt }));
  grads.forEach((x, i) => b.output(`d${i}`, x));
  return { graph: b.graph, grads };
}

test('the native spelling: builtins, subgroup ids, 32-wide subgroups, accumulators as result fragments', () => {
  const { graph, grads } = gradGraph(bhsd(1, 2, 100, 88), bhsd(1, 2, 90, 88), undefined, {});
  const [dq, dk, dv] = grads.map((x) => graph.node(x));
  const kv = flashSgmatBackwardKernel(dk, dk.inputs.map((i) => graph.node(i)), NVIDIA, { sibling: dv });
  assert.match(kv.name, /^attention_grad_kv_flash_sgmat_f16/);
  assert.match(kv.wgsl, /^enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic\(off, chromium\.subgroup_matrix_uniformity\);/);
  assert.match(kv.wgsl, /@builtin\(subgroup_id\) sg: u32, @builtin\(subgroup_invocation_id\) lane: u32, @builtin\(subgroup_size\) lanes: u32/);
  assert.deepEqual(kv.workgroupSize, [4 * 32, 1, 1]);
  assert.equal(kv.bindings.length, 6 + 2, 'q, k, v, g, lse, δ; dk and dv');
  // k and v fragments in registers; dk and dv accumulate as result fragments (6 each at D 88).
  assert.match(kv.wgsl, /var x_5: subgroup_matrix_left<f16, 16, 16>;/);
  assert.match(kv.wgsl, /var y_5: subgroup_matrix_left<f16, 16, 16>;/);
  assert.match(kv.wgsl, /var ax_5 = subgroup_matrix_result<f32, 16, 16>\(\);/);
  assert.match(kv.wgsl, /var ay_5 = subgroup_matrix_result<f32, 16, 16>\(\);/);
  assert.match(kv.wgsl, /ax_5 = subgroupMatrixMultiplyAccumulate\(l_1, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>\(&tile_h, \d+u, 104u\), ax_5\);/);
  assert.match(kv.wgsl, /subgroupMatrixStore<row_major>\(&tile_s, sm \* 36u \+ 16u, s_1, 36u\);/);
  assert.match(kv.wgsl, /out_1\[/);
  assert.doesNotMatch(kv.wgsl, /sg[sa]_|unbounded\(/);
  const q = flashSgmatBackwardKernel(dq, dq.inputs.map((i) => graph.node(i)), NVIDIA);
  assert.match(q.name, /^attention_grad_q_flash_sgmat_f16/);
  assert.doesNotMatch(q.wgsl, /out_1/);
  // P and dS on every invocation: one loop over the tile's 64 x BC elements, 128 invocations apart (row x / BC,
  // column x % BC), not one invocation per row.
  for (const kernel of [q, kv]) {
    const loop = /for \(var x = lid; x < (\d+)u; x \+= 128u\) \{\n\s*let r = x \/ (\d+)u;\n\s*let c = x % \2u;\n\s*let ok = [^\n]*\n\s*var s = tile_s\[r \* \d+u \+ c\][^\n]*\n\s*let p = select\(0f, exp_flash\(/.exec(kernel.wgsl);
    assert.ok(loop, `${kernel.name}: P and dS in a loop over the tile's elements`);
    assert.equal(Number(loop[1]), 64 * Number(loop[2]), `${kernel.name}: all 64 rows of the tile`);
    assert.equal(kernel.wgsl.split('exp_flash(s').length, 2, `${kernel.name}: P computed in that loop only`);
  }
});




interface Case {
  readonly what: string;
  readonly config: Config;
  readonly b: number;
  readonly h: number;
  readonly sq: number;
  readonly sk: number;
  readonly d: number;
  readonly mask?: number[];
  readonly scale?: number;
  /** The kernels to run (each compiles on lavapipe: seconds). */
  readonly grads: readonly FlashSgmatGrad[];
  readonly tiles?: Partial<Record<FlashSgmatGrad, FlashSgmatBackwardTiles>>;
  /** q stored [B, Sq, H, D] and read through a view function. */
  readonly qView?: boolean;
}

const CASES: Case[] = [
  {
    what: 'head dim 24, 37 queries, 45 keys, batch 2, a full mask with -inf entries, scale 0.3, 16x8x16: dq, dk, dv alone and dk+dv',
    config: { M: 16, N: 8, K: 16 },
    b: 2,
    h: 1,
    sq: 37,
    sk: 45,
    d: 24,
    mask: [2, 1, 37, 45],
    scale: 0.3,
    grads: ['q', 'k', 'v', 'kv'],
  },
  {
    what: 'head dim 88, 20 queries, 33 keys, two heads, a per-key mask, q through a view: dq (concurrent staging) and dk+dv (sequential)',
    config: { M: 16, N: 16, K: 16 },
    b: 1,
    h: 2,
    sq: 20,
    sk: 33,
    d: 88,
    mask: [33],
    grads: ['q', 'kv'],
    tiles: { q: { subgroups: 1, sweep: 16, sequential: false }, kv: { subgroups: 1, sweep: 16, sequential: true } },
    qView: true,
  },
];

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  let gpu: GpuDevice;
  let native = false;
  before(async () => {
    gpu = await openDevice();
    native = nativeSgmat(gpu.target);
  });
  after(async () => {
    await gpu?.destroy();
  });

  /** Emulated: the config asked for. Native: it if the device lists it, else the device's own (tiles then default). */
  const sgTarget = (config: Config) => deviceSgmatTarget(gpu.target, native, config);

  for (const c of CASES) {
    test(c.what, async () => {
      const { target, forced } = sgTarget(c.config);
      const attrs: Attrs = c.scale === undefined ? {} : { scale: c.scale };
      const { graph, grads } = gradGraph(bhsd(c.b, c.h, c.sq, c.d), bhsd(c.b, c.h, c.sk, c.d), c.mask, attrs);
      const seed = c.sq * 7 + c.sk + c.d;
      const half = (shape: number[], s: number) => randomTensor(shape, s).data.map(roundF16);
      const [q, k, v, g] = [half(bhsd(c.b, c.h, c.sq, c.d), seed), half(bhsd(c.b, c.h, c.sk, c.d), seed + 1), half(bhsd(c.b, c.h, c.sk, c.d), seed + 2), half(bhsd(c.b, c.h, c.sq, c.d), seed + 3)];
      let mask: Problem['mask'];
      if (c.mask) {
        const m = randomTensor(c.mask, seed + 4, -3, 1);
        // -inf entries, none masking a row entirely (the reference's NaN rows are the forward test's).
        for (let i = 0; i < m.data.length; i++) if (i % 5 === 2) m.data[i] = -Infinity;
        mask = m;
      }
      const scale = c.scale ?? 1 / Math.sqrt(c.d);
      const { lse, delta, tol } = statsAndBounds({ B: c.b, H: c.h, Sq: c.sq, Sk: c.sk, D: c.d, Dv: c.d, scale, q, k, v, g, mask });
      const bound = [q, k, v, g, lse, delta, ...(mask ? [mask.data] : [])];
      const names = ['q', 'k', 'v', 'g', 'lse', 'delta', 'mask'];
      const ref = interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: [...graph.node(inp.node).shape], data: Float64Array.from(bound[names.indexOf(inp.name)]) }])));
      const [dqN, dkN, dvN] = grads.map((x) => graph.node(x));
      // q stored [B, Sq, H, D], read through a view function of (b, h, row, col).
      const bindings = [...bound];
      let reads: FlashReads | undefined;
      if (c.qView) {
        const [B, H, S, D] = [c.b, c.h, c.sq, c.d];
        const stored = new Float32Array(q.length);
        for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let s = 0; s < S; s++) for (let d = 0; d < D; d++) stored[((b * S + s) * H + h) * D + d] = q[((b * H + h) * S + s) * D + d];
        bindings[0] = stored;
        const slots: FlashOperand[] = dqN.inputs.map((_, i) => `in_${i}`);
        slots[0] = ([b, h, row, col]) => `in_0[((${b} * ${S}u + ${row}) * ${H}u + ${h}) * ${D}u + ${col}]`;
        reads = { slots, helpers: '', lib: [], inlined: [], suffix: '_qv' };
      }
      const checks: Record<'dq' | 'dk' | 'dv', { node: typeof dqN; ref: ArrayLike<number>; tol: Float64Array }> = {
        dq: { node: dqN, ref: ref.get('d0')!.data, tol: tol.dq },
        dk: { node: dkN, ref: ref.get('d1')!.data, tol: tol.dk },
        dv: { node: dvN, ref: ref.get('d2')!.data, tol: tol.dv },
      };
      for (const which of c.grads) {
        const outs: ('dq' | 'dk' | 'dv')[] = which === 'kv' ? ['dk', 'dv'] : [`d${which}` as 'dq' | 'dk' | 'dv'];
        const node = checks[outs[0]].node;
        const tiles = forced ? c.tiles?.[which] : undefined;
        const kernel = flashSgmatBackwardKernel(node, node.inputs.map((i) => graph.node(i)), target, { tiles, reads, sibling: which === 'kv' ? dvN : undefined });
        assert.match(kernel.name, new RegExp(`^attention_grad_${which}_flash_sgmat_f16`));
        if (c.qView) assert.match(kernel.wgsl, new RegExp(`in_0\\[\\(\\(b \\* ${c.sq}u \\+ `), 'q read through the view');
        assert.equal(/subgroupMatrix/.test(kernel.wgsl), native, 'builtins only on a target with the feature');
        const got = await runKernelOutputs(gpu.device, kernel, bindings, outs.map((o) => numel(checks[o].node.shape)));
        outs.forEach((o, i) => {
          const worst = assertWithin(got[i], checks[o].ref, (j) => checks[o].tol[j] + 2 * E32 * Math.abs(checks[o].ref[j]) + 1e-30, `${c.what}: ${o} (kernel d${which})`);
          // Not vacuous: the f16 rounding of P and dS shows, but below the bound.
          assert.ok(worst > 0 && worst < 0.5, `${c.what}: ${o} (kernel d${which}): largest error ${worst} of the bound`);
        });
      }
    });
  }
});
