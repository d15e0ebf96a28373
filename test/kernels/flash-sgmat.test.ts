// The subgroup-matrix flash-attention forward (kernels/flash-sgmat.ts). lavapipe has no subgroup matrices, so
// its Target gets configs without the feature: the kernel then spells the builtins as emulation functions and
// everything else — staging q, kᵀ and v as f16 with padded head dims, ragged query and key tiles, the online
// softmax (split over the workgroup's invocations, 1, 2 or 4 per row here), P rounded to f16, O's rescaling
// through the scratch (only rows whose max moved are multiplied), masks, the lse sibling, view reads — runs for real.
// On a GPU with tensor cores (nativeSgmat) the same cases run natively.
//
// Tolerance: S = q·kᵀ sums exact f16 products in f32 and the softmax is f32, so the one coarse error is P rounded
// to f16 before P·V, with l summing the rounded weights: out = Σ p̃_j v_j / Σ p̃_j, p̃_j = p_j (1 + δ_j). Then
// w̃_j / w_j = (1 + δ_j) / (1 + δ̄) with δ̄ a weighted mean of the δ, so |out − ref| ≤ 2u/(1 − u) · max|v|. WGSL
// lets f32 → f16 round either way: u = 2^-10 (one f16 ulp on [0.5, 1)), plus 1e-5·max|v| for the f32 sums. lse =
// m + ln l: |Δ| ≤ u/(1 − u) + 1e-5·(1 + |lse|). (Observed errors are several times below the bounds.)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Attrs } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { flashSgmatApplies, flashSgmatBytes, flashSgmatForwardKernel, flashSgmatTiles, flashSgmatUnfit, type FlashSgmatTiles } from '../../kernels/flash-sgmat.js';
import { nativeSgmat, SUBGROUP_MATRIX_FEATURE } from '../../kernels/sgmat.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { assertStepNear, assertWithin, randomTensor, runKernelOutputs } from './harness.js';
import { deviceSgmatTarget, EMULATED, NVIDIA, type Config } from './sgmat-targets.js';
import { join } from 'node:path';
import { checkFiles } from '../../compiler/check/index.js';
import { schedule } from '../../compiler/codegen/schedule.js';
import { planMemory } from '../../compiler/plan/memory.js';
import { trainPlan } from '../../compiler/train/plan.js';
import { compileStep } from '../../compiler/train/step-graph.js';
import { GPU_RULES } from '../../kernels/index.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { REPO_ROOT } from '../golden/harness.js';
import { makeRng } from '../ir/util.js';
import { captionFeeds } from '../train/caption-feeds.js';

type Tensor = { shape: number[]; data: Float32Array };

const U16 = 2 ** -10;

const bhsd = (b: number, h: number, s: number, d: number) => [b, h, s, d];
const shapesOf = (s: number, d: number, dv = d) => ({ q: bhsd(8, 16, s, d), k: bhsd(8, 16, s, d), v: bhsd(8, 16, s, dv) });

test('tiles: 4 subgroups of 16 rows natively at 48 KiB (D 88: 64-key tiles, kᵀ and v sharing; D 112: 32-key tiles apart)', () => {
  assert.deepEqual(flashSgmatTiles(NVIDIA, shapesOf(324, 88)), { subgroups: 4, keys: 64, sharedKv: true });
  assert.equal(flashSgmatBytes(NVIDIA, shapesOf(324, 88)), 46336);
  assert.deepEqual(flashSgmatTiles(NVIDIA, shapesOf(324, 112)), { subgroups: 4, keys: 32, sharedKv: false });
  assert.equal(flashSgmatBytes(NVIDIA, shapesOf(324, 112)), 43008);
  // Every head dim fits both targets, within their limits; fewer subgroups and keys than short sequences need.
  for (const target of [NVIDIA, EMULATED]) {
    for (const d of [1, 24, 40, 64, 88, 112, 128]) {
      for (const s of [1, 37, 324]) {
        const tiles = flashSgmatTiles(target, shapesOf(s, d));
        assert.notEqual(typeof tiles, 'string', `${target.name} d ${d} s ${s}: ${String(tiles)}`);
        const t = tiles as FlashSgmatTiles;
        assert.ok(flashSgmatBytes(target, shapesOf(s, d)) <= target.limits.maxComputeWorkgroupStorageSize);
        assert.ok(t.subgroups * 16 < s + 16 || t.subgroups === 1, `${target.name} d ${d} s ${s}: ${t.subgroups} subgroups`);
        assert.ok(t.keys < s + 16 || t.keys === 16, `${target.name} d ${d} s ${s}: ${t.keys} keys`);
      }
    }
  }
});

test('unfit: no config, no shader-f16, head dims whose tiles do not fit, forced tiles that do not divide', () => {
  assert.match(flashSgmatUnfit({ ...NVIDIA, subgroupMatrixConfigs: [] }, shapesOf(64, 88)) ?? '', /no f16 x f16 -> f32/);
  assert.match(flashSgmatUnfit({ ...NVIDIA, features: ['subgroups', SUBGROUP_MATRIX_FEATURE] }, shapesOf(64, 88)) ?? '', /shader-f16/);
  assert.match(flashSgmatUnfit(NVIDIA, shapesOf(64, 1024)) ?? '', /no tiles fit .*workgroup memory/);
  assert.match(flashSgmatUnfit(NVIDIA, shapesOf(64, 88), { subgroups: 4, keys: 24, sharedKv: false }) ?? '', /not a multiple/);
  assert.match(flashSgmatUnfit(NVIDIA, shapesOf(64, 88), { subgroups: 4, keys: 64, sharedKv: false }) ?? '', /59648 bytes/);
  assert.equal(flashSgmatUnfit(NVIDIA, shapesOf(64, 88)), undefined);
});

test('applies to attention whose q, k, v are exact f16 values, on a target with a config', () => {
  const b = new Builder();
  const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
  const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, [1, 2, 40, 88]));
  const half = b.add('attention', [round(q), round(k), round(v)]);
  const mixed = b.add('attention', [round(q), k, round(v)]);
  b.output('y', b.add('add', [half, mixed]));
  const g = b.graph;
  assert.equal(flashSgmatApplies(g, g.node(half), NVIDIA), true);
  assert.equal(flashSgmatApplies(g, g.node(mixed), NVIDIA), false, 'k is f32');
  assert.equal(flashSgmatApplies(g, g.node(half), { ...NVIDIA, subgroupMatrixConfigs: [] }), false, 'no config');
});

/** attention(q, k, v, [mask]) and its attention_lse sibling. */
function attentionGraph(qs: number[], ks: number[], vs: number[], maskShape: number[] | undefined, attrs: Attrs) {
  const b = new Builder();
  const [q, k, v] = [b.input('q', qs), b.input('k', ks), b.input('v', vs)];
  const mask = maskShape ? b.input('mask', maskShape) : undefined;
  const y = b.add('attention', mask === undefined ? [q, k, v] : [q, k, v, mask], attrs);
  const lse = b.add('attention_lse', mask === undefined ? [q, k] : [q, k, mask], attrs);
  b.output('y', y);
  b.output('lse', lse);
  return { graph: b.graph, y, lse };
}

test('the native spelling: the builtins, subgroup ids, a workgroup of 32-wide subgroups, result loads', () => {
  const { graph, y } = attentionGraph(bhsd(1, 2, 100, 88), bhsd(1, 2, 100, 88), bhsd(1, 2, 100, 88), undefined, {});
  const node = graph.node(y);
  const k = flashSgmatForwardKernel(node, node.inputs.map((i) => graph.node(i)), NVIDIA);
  assert.equal(k.name, 'attention_flash_sgmat_f16');
  assert.match(k.wgsl, /^enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic\(off, chromium\.subgroup_matrix_uniformity\);/);
  assert.match(k.wgsl, /@builtin\(subgroup_id\) sg: u32, @builtin\(subgroup_invocation_id\) lane: u32, @builtin\(subgroup_size\) lanes: u32/);
  assert.equal(k.workgroupSize[0] % 32, 0);
  assert.deepEqual(k.workgroupSize, [4 * 32, 1, 1]);
  // Q·Kᵀ from q's register fragments, P·V from P, O rescaled through the scratch (a result load).
  assert.match(k.wgsl, /var q_5: subgroup_matrix_left<f16, 16, 16>;/);
  assert.match(k.wgsl, /s_3 = subgroupMatrixMultiplyAccumulate\(q_5, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>\(&tile_kv, \d+u, 72u\), s_3\);/);
  assert.match(k.wgsl, /o_5 = subgroupMatrixLoad<subgroup_matrix_result<f32, 16, 16>, row_major>\(&tile_s, sm \* 68u \+ 16u, 68u\);/);
  assert.match(k.wgsl, /o_5 = subgroupMatrixMultiplyAccumulate\(p_3, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>\(&tile_kv, \d+u, 104u\), o_5\);/);
  assert.doesNotMatch(k.wgsl, /sg[so]_|unbounded\(/);
  // The softmax on all 128 invocations, 2 per row (every 2nd key each), their maxima and sums combined in order.
  assert.match(k.wgsl, /for \(var x = lid; x < 128u; x \+= 128u\) \{\n\s*let r = x \/ 2u;\n\s*let part = x % 2u;/);
  assert.match(k.wgsl, /for \(var j = part; j < 64u; j \+= 2u\)/);
  assert.match(k.wgsl, /row_l\[r\] = row_l\[r\] \* row_a\[r\] \+ part_l\[r \* 2u \+ 0u\] \+ part_l\[r \* 2u \+ 1u\];/);
  // O's round trip after the first tile, with no atomics or flags (they gave wrong rows natively on the H200).
  assert.match(k.wgsl, /if \(j0 > 0u\) \{\n\s*if \(computes\) \{\n\s*subgroupMatrixStore/);
  assert.doesNotMatch(k.wgsl, /atomic|workgroupUniformLoad/);
  assert.doesNotMatch(k.wgsl, /subgroup(Add|Max|Shuffle|Broadcast)/);
});



interface Case {
  readonly what: string;
  readonly config: Config;
  readonly b: number;
  readonly h: number;
  readonly sq: number;
  readonly sk: number;
  readonly d: number;
  readonly dv: number;
  readonly mask?: number[];
  readonly scale?: number;
  readonly tiles?: FlashSgmatTiles;
  /** Also write the sibling attention_lse. */
  readonly lse?: boolean;
  /** q stored [B, Sq, H, D] and read through a view function. */
  readonly qView?: boolean;
  /**
   * Scores monotone along the keys (q·kᵀ = sign(row)·ramp(key)): row i's scores rise with the keys (its max moves
   * every tile: O's rows multiplied) when sign(i) > 0, fall (α = 1 after the first tile: rows left as they are)
   * when < 0.
   */
  readonly monotone?: (row: number) => 1 | -1;
  /** Also check a second run is bitwise the first. */
  readonly repeat?: boolean;
}

// Each case compiles one emulated kernel on lavapipe (seconds each): few, varied cases.
const CASES: Case[] = [
  { what: 'head dim 88, 37 rows and keys (ragged tiles), two heads, with lse', config: { M: 16, N: 16, K: 16 }, b: 1, h: 2, sq: 37, sk: 37, d: 88, dv: 88, lse: true },
  {
    what: 'head dim 24, 100 rows and keys, batch 2, a full mask with -inf entries and a row masked entirely, scale 0.3',
    config: { M: 16, N: 8, K: 16 },
    b: 2,
    h: 1,
    sq: 100,
    sk: 100,
    d: 24,
    dv: 24,
    mask: [2, 1, 100, 100],
    scale: 0.3,
  },
  { what: 'head dim 64, one query row, 45 keys masked per key, v of 40 columns, q through a view', config: { M: 16, N: 16, K: 16 }, b: 1, h: 3, sq: 1, sk: 45, d: 64, dv: 40, mask: [45], qView: true },
  { what: 'head dim 112, 20 rows, 45 keys, one subgroup per workgroup, kᵀ and v sharing an array', config: { M: 16, N: 16, K: 16 }, b: 1, h: 2, sq: 20, sk: 45, d: 112, dv: 112 },
  {
    what: '2-row subgroups: 2 invocations per row in the softmax (3 subgroups, 24-key tiles), keys masked, with lse, bitwise repeatable',
    config: { M: 2, N: 8, K: 8 },
    b: 1,
    h: 2,
    sq: 13,
    sk: 100,
    d: 24,
    dv: 16,
    mask: [100],
    tiles: { subgroups: 3, keys: 24, sharedKv: false },
    lse: true,
    repeat: true,
  },
  { what: '1-row subgroups: 4 invocations per row (keys 0, 4, 8, ... each), 6 rows, 30 keys, scale 2', config: { M: 1, N: 8, K: 8 }, b: 1, h: 1, sq: 6, sk: 30, d: 8, dv: 8, scale: 2 },
  {
    what: 'scores falling along the keys: no max moves after the first tile, so no row of O is multiplied',
    config: { M: 16, N: 16, K: 16 },
    b: 1,
    h: 1,
    sq: 40,
    sk: 70,
    d: 24,
    dv: 24,
    monotone: () => -1,
  },
  {
    what: 'scores rising for some rows: by 16-row block rising, falling, or alternating per row (some rows of O multiplied, some left)',
    config: { M: 16, N: 16, K: 16 },
    b: 1,
    h: 1,
    sq: 100,
    sk: 70,
    d: 24,
    dv: 24,
    monotone: (i) => ([1, -1, i % 2 ? 1 : -1] as const)[Math.floor(i / 16) % 3],
  },
];

/** q and k whose scores are `monotone(row)` · ramp(key): q's first dim ±1, the rest 0; k's first dim a ramp. */
function monotoneQk(c: Case, q: Tensor, k: Tensor): void {
  for (let bh = 0; bh < c.b * c.h; bh++) {
    for (let i = 0; i < c.sq; i++) for (let d = 0; d < c.d; d++) q.data[(bh * c.sq + i) * c.d + d] = d === 0 ? c.monotone!(i) : 0;
    for (let j = 0; j < c.sk; j++) k.data[(bh * c.sk + j) * c.d] = roundF16((4 * j) / c.sk);
  }
}

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
  const sgTarget = (config: Config, tiles?: FlashSgmatTiles): { target: Target; tiles?: FlashSgmatTiles } => {
    const { target, forced } = deviceSgmatTarget(gpu.target, native, config);
    return forced ? { target, tiles } : { target };
  };

  for (const c of CASES) {
    test(c.what, async () => {
      const { target, tiles } = sgTarget(c.config, c.tiles);
      const attrs: Attrs = c.scale === undefined ? {} : { scale: c.scale };
      const { graph, y, lse } = attentionGraph(bhsd(c.b, c.h, c.sq, c.d), bhsd(c.b, c.h, c.sk, c.d), bhsd(c.b, c.h, c.sk, c.dv), c.mask, attrs);
      const seed = c.sq * 7 + c.sk + c.d;
      const half = (t: Tensor) => ({ ...t, data: t.data.map(roundF16) });
      const values: Tensor[] = [
        half(randomTensor(bhsd(c.b, c.h, c.sq, c.d), seed)),
        half(randomTensor(bhsd(c.b, c.h, c.sk, c.d), seed + 1)),
        half(randomTensor(bhsd(c.b, c.h, c.sk, c.dv), seed + 2)),
      ];
      if (c.monotone) monotoneQk(c, values[0], values[1]);
      if (c.mask) {
        const m = randomTensor(c.mask, seed + 3, -3, 1);
        // -inf entries; in a full mask one row of the first (batch, head) masked entirely (the reference's NaN).
        for (let i = 0; i < m.data.length; i++) if (i % 5 === 2) m.data[i] = -Infinity;
        if (c.mask.length === 4) m.data.fill(-Infinity, 3 * c.sk, 4 * c.sk);
        values.push(m);
      }
      const node = graph.node(y);
      const inputs = node.inputs.map((i) => graph.node(i));
      // q stored [B, Sq, H, D], read through a view function of (b, h, row, col).
      const bound = values.map((v) => v.data);
      let reads;
      if (c.qView) {
        const [B, H, S, D] = values[0].shape;
        const stored = new Float32Array(bound[0].length);
        for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let s = 0; s < S; s++) for (let d = 0; d < D; d++) stored[((b * S + s) * H + h) * D + d] = bound[0][((b * H + h) * S + s) * D + d];
        bound[0] = stored;
        const slots = node.inputs.map((_, i) => `in_${i}`) as (string | ((coords: readonly string[]) => string))[];
        slots[0] = ([b, h, row, col]) => `in_0[((${b} * ${S}u + ${row}) * ${H}u + ${h}) * ${D}u + ${col}]`;
        reads = { slots, helpers: '', lib: [], inlined: [], suffix: '_qv' };
      }
      const kernel = flashSgmatForwardKernel(node, inputs, target, { tiles, lse: c.lse ? graph.node(lse) : undefined, reads });
      assert.match(kernel.name, c.lse ? /^attention_flash_lse_sgmat_f16/ : /^attention_flash_sgmat_f16/);
      assert.equal(/subgroupMatrix/.test(kernel.wgsl), native, 'builtins only on a target with the feature');
      const sizes = [numel(node.shape), ...(c.lse ? [numel(graph.node(lse).shape)] : [])];
      const [out, lseOut] = await runKernelOutputs(gpu.device, kernel, bound, sizes);
      if (c.repeat) {
        const again = await runKernelOutputs(gpu.device, kernel, bound, sizes);
        assert.deepEqual(new Uint32Array(again[0].buffer), new Uint32Array(out.buffer), `${c.what}: a second run differs`);
        if (c.lse) assert.deepEqual(new Uint32Array(again[1].buffer), new Uint32Array(lseOut.buffer), `${c.what}: lse differs`);
      }
      const ref = interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: values[i].shape, data: Float64Array.from(values[i].data) }])));
      const vMax = values[2].data.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
      const worst = assertWithin(out, ref.get('y')!.data, () => ((2 * U16) / (1 - U16) + 1e-5) * vMax, `${c.what}: out`);
      if (c.lse) {
        const r = ref.get('lse')!.data;
        assertWithin(lseOut, r, (i) => U16 / (1 - U16) + 1e-5 * (1 + Math.abs(r[i])), `${c.what}: lse`);
      }
      // Not vacuous: the f16 rounding of P shows, but far below the bound.
      assert.ok(worst > 0 && worst < 0.5, `${c.what}: largest error ${worst} of the bound`);
    });
  }

  test('through the schedule: an fp16 LoRA training step of eva_tiny runs its attention (with lse) and its backward on subgroup matrices', async () => {
    const checked = checkFiles([join(REPO_ROOT, 'pipelines', 'eva_tiny.visft')]);
    const plan = trainPlan(checked, checked.roots[0]);
    const stage = { ...plan.stages.find((x) => x.name === 'stage2')!, precision: 'fp16' as const };
    const step = compileStep(checked, checked.roots[0], stage, stage.tasks[0]).graph;
    const { target: sgmat } = sgTarget({ M: 16, N: 16, K: 16 });
    const target = { ...sgmat, tuning: { tensorCoreAttention: true } };
    const program = (t: Target) => {
      const sch = schedule(step, t, GPU_RULES);
      return { target: t, schedule: sch, plan: planMemory({ values: sch.values, schedule: sch.kernels, aliases: sch.aliases }, t) };
    };
    const sg = program(target);
    const names = sg.schedule.kernels.map((k) => k.name);
    const flash = names.filter((n) => /^attention_flash(_lse)?_sgmat_f16/.test(n));
    const attention = names.filter((n) => n.startsWith('attention_flash'));
    assert.ok(flash.length >= 2, `attention kernels: ${attention.join(', ')}`);
    assert.ok(flash.every((n) => n.includes('_lse') && /_kv_vv/.test(n) && !/_qv/.test(n)), `each forward with its lse sibling, k and v read through views (q rounded by a kernel of its own): ${flash.join(', ')}`);
    // The backward too (kernels/flash-sgmat-backward.ts): dq, and dk with dv, per block.
    const grads = names.filter((n) => /^attention_grad_\w+_flash_sgmat_f16/.test(n));
    assert.deepEqual([...new Set(grads.map((n) => /^attention_grad_(\w+?)_flash/.exec(n)![1]))].sort(), ['kv', 'q'], `backward kernels: ${grads.join(', ')}`);
    assert.ok(program({ ...gpu.target, subgroupMatrixConfigs: [] }).schedule.kernels.every((k) => !k.name.includes('sgmat')));
    // Off by default: slower than the f32-accumulating flash kernels on the H200 (kernels/attention.ts).
    assert.ok(program(sgmat).schedule.kernels.every((k) => !/^attention.*sgmat/.test(k.name)));
    const { inputs, params } = captionFeeds(step, makeRng(9), { lossScale: 1024 });
    const out = await runGpu(gpu, step, sg, inputs, params);
    // The interpreter rounds where autocast does and keeps P (and dS) in float64: their f16 rounding is the difference.
    assertStepNear(out, interpret(step, inputs, params), 2e-3, 2e-2);
  });
});
