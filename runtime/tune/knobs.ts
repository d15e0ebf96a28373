// What `visft tune` tries, group by group in this order: each option is a Target.tuning (or Dawn toggles) that
// generates a different but equivalent program, timed against the configuration adopted so far on the bench rows
// it changes. The options are the ones the kernels were written to offer (docs/perf.md says what each is for);
// options that change nothing on a device (e.g. the tiled f32 matmul's blocks where the software adapter takes the
// blocked kernel) are skipped there.
import type { Target } from '../../compiler/codegen/types.js';
import { sgmatShape } from '../../kernels/sgmat.js';
import type { RowSpec } from '../bench/row-types.js';

type Tuning = NonNullable<Target['tuning']>;

export interface TuneOption {
  readonly name: string;
  /** Merged over the tuning adopted so far (a key set here replaces the adopted one's). */
  readonly tuning?: Tuning;
  /** Dawn toggles added to the adopted ones (the device is opened again with them). */
  readonly toggles?: readonly string[];
}

export interface TuneGroup {
  readonly name: string;
  /** The rows it is timed on (of those being tuned; rows whose program an option leaves unchanged are skipped). */
  readonly rows: (row: RowSpec) => boolean;
  /** Whether the group means anything on this device. */
  readonly applies: (target: Target) => boolean;
  readonly options: readonly TuneOption[];
}

const always = (): boolean => true;
const tensorCores = (t: Target): boolean => !!sgmatShape(t);
const isMatmul = (dtype: 'f32' | 'f16') => (r: RowSpec) => r.op === 'matmul' && r.dtype === dtype;
const isAttention = (dtype: 'f32' | 'f16') => (r: RowSpec) => r.op === 'attention' && r.dtype === dtype;
/** Flash tile options, each [rows per invocation, lanes per row, invocations per workgroup] with 16-key tiles. */
function flashTileOptions(prefix: string, key: 'flashCaps' | 'flashGradCaps', shapes: readonly (readonly [number, number, number])[]): TuneOption[] {
  const rows = (n: number) => (n === 1 ? '1 row' : `${n} rows`);
  const lanes = (n: number) => (n === 1 ? '1 lane' : `${n} lanes`);
  return shapes.map(([r, split, workgroup]) => ({
    name: `${prefix}${rows(r)} per invocation, ${lanes(split)} per row${workgroup === 64 * split ? '' : `, ${workgroup} invocations`}`,
    tuning: { [key]: { split, workgroup, sweep: 16, rows: r } },
  }));
}

export const TUNE_GROUPS: readonly TuneGroup[] = [
  {
    // First, since every later timing runs under it: Dawn's shader robustness clamps every array index and
    // predicates every subgroup-matrix load (docs/perf.md, "Where visft loses").
    name: 'dawn robustness',
    rows: always,
    applies: always,
    options: [
      { name: 'robustness off', toggles: ['disable_robustness'] },
      { name: 'robustness off, no workgroup zeroing', toggles: ['disable_robustness', 'disable_workgroup_init'] },
    ],
  },
  {
    name: 'f32 matmul register blocks',
    rows: isMatmul('f32'),
    applies: always,
    options: [
      { name: '8x8 blocks, 64x64 tiles', tuning: { tiledTiles: { tm: 64, tn: 64, rows: 8, cols: 8 } } },
      { name: '8x8 blocks, 128x64 tiles', tuning: { tiledTiles: { tm: 128, tn: 64, rows: 8, cols: 8 } } },
      { name: '8x8 blocks, 64x128 tiles', tuning: { tiledTiles: { tm: 64, tn: 128, rows: 8, cols: 8 } } },
      { name: '8x8 blocks, 128x128 tiles', tuning: { tiledTiles: { tm: 128, tn: 128, rows: 8, cols: 8 } } },
      { name: '8x4 blocks, 128x64 tiles', tuning: { tiledTiles: { tm: 128, tn: 64, rows: 8, cols: 4 } } },
      { name: '8x4 blocks, 64x64 tiles', tuning: { tiledTiles: { tm: 64, tn: 64, rows: 8, cols: 4 } } },
      { name: '4x8 blocks, 64x128 tiles', tuning: { tiledTiles: { tm: 64, tn: 128, rows: 4, cols: 8 } } },
      { name: '8x4 blocks, 128x128 tiles', tuning: { tiledTiles: { tm: 128, tn: 128, rows: 8, cols: 4 } } },
      // 32-deep K steps: half the barriers (barriers with staged loads bounded the tensor-core kernel, session 13).
      { name: '4x4 blocks, 64x64 tiles, 32 deep', tuning: { tiledTiles: { tm: 64, tn: 64, rows: 4, cols: 4, tk: 32 } } },
      { name: '8x4 blocks, 64x64 tiles, 32 deep', tuning: { tiledTiles: { tm: 64, tn: 64, rows: 8, cols: 4, tk: 32 } } },
      { name: '8x4 blocks, 128x64 tiles, 32 deep', tuning: { tiledTiles: { tm: 128, tn: 64, rows: 8, cols: 4, tk: 32 } } },
      { name: '8x8 blocks, 128x128 tiles, 32 deep', tuning: { tiledTiles: { tm: 128, tn: 128, rows: 8, cols: 8, tk: 32 } } },
    ],
  },
  {
    // f32 products on the f16 tensor cores at f32 accuracy (kernels/matmul-split16.ts): each operand split into a
    // scaled f16 pair, three products per step. No FMA kernel reached 0.9x cuBLAS FP32 on the H200 (session 13).
    name: 'f32 matmul on tensor cores',
    rows: isMatmul('f32'),
    applies: tensorCores,
    options: [
      // Its tiles are the tensor-core kernels' defaults, never the f16 group's sgmatTiles (no choice here changes
      // a program that this group does not time).
      { name: 'split into f16 pairs, fragments from storage', tuning: { f32TensorCores: true } },
    ],
  },
  {
    // How many output tiles fill this GPU (WebGPU reports no multiprocessor count; the default is an H200's 132):
    // the few-tile products (fc2) split K across workgroups to reach about twice as many.
    name: 'matmul K split target',
    rows: (r) => r.op === 'matmul' && /_fc2$/.test(r.name),
    applies: always,
    options: [
      { name: '64 tiles fill the GPU', tuning: { splitTiles: 64 } },
      { name: '96 tiles fill the GPU', tuning: { splitTiles: 96 } },
      { name: '192 tiles fill the GPU', tuning: { splitTiles: 192 } },
    ],
  },
  {
    name: 'f16 matmul tensor-core tiles',
    rows: isMatmul('f16'),
    applies: tensorCores,
    options: [
      { name: '128x64, 4 subgroups, 64 deep', tuning: { sgmatTiles: { wm: 2, wn: 2, fm: 4, fn: 2, bk: 64 } } },
      { name: '64x128, 4 subgroups, 64 deep', tuning: { sgmatTiles: { wm: 2, wn: 2, fm: 2, fn: 4, bk: 64 } } },
      { name: '128x128, 8 subgroups, 32 deep', tuning: { sgmatTiles: { wm: 2, wn: 4, fm: 4, fn: 2, bk: 32 } } },
      { name: '64x64, 4 subgroups, 32 deep', tuning: { sgmatTiles: { wm: 2, wn: 2, fm: 2, fn: 2, bk: 32 } } },
    ],
  },
  {
    // Fragments loaded straight from the operands (kernels/matmul-sgmat-direct.ts): on the H200 the staging (a
    // barrier and fragment loads from workgroup memory), not the tensor cores, bounded the staged kernel
    // (scripts/sgmat-ceiling.mjs, session 13). A group apart from the staged tiles (all slower on the H200 in session
    // 13), so a short lease times these alone.
    name: 'f16 matmul from storage',
    rows: isMatmul('f16'),
    applies: tensorCores,
    options: [
      { name: 'fragments from storage, no staging', tuning: { sgmatDirect: true } },
      { name: 'fragments from storage, 128x128, 4x4 fragments per subgroup', tuning: { sgmatDirect: true, sgmatTiles: { wm: 2, wn: 2, fm: 4, fn: 4, bk: 32 } } },
      { name: 'fragments from storage, 128x64', tuning: { sgmatDirect: true, sgmatTiles: { wm: 2, wn: 2, fm: 4, fn: 2, bk: 64 } } },
      { name: 'fragments from storage, 64x64, one subgroup', tuning: { sgmatDirect: true, sgmatTiles: { wm: 1, wn: 1, fm: 4, fn: 4, bk: 64 } } },
    ],
  },
  {
    // The flash kernels' tiles (flashCaps: every f32 flash kernel, the gradients' too unless flashGradCaps is set).
    // On the H200 (session 13) two rows per invocation, two lanes each, took 0.55–0.73x the time; the options
    // around it say which way further.
    name: 'f32 flash attention forward',
    rows: isAttention('f32'),
    applies: always,
    options: [
      { name: 'register-blocked forward', tuning: { flashBlocked: true } },
      { name: 'lane loops unrolled', tuning: { flashCaps: { unroll: true } } },
      ...flashTileOptions('', 'flashCaps', [
        [2, 2, 128],
        [4, 2, 128],
        [2, 4, 256],
        [2, 2, 256],
        [2, 2, 64],
        [2, 1, 64],
      ]),
      { name: '32 keys per tile', tuning: { flashCaps: { sweep: 32 } } },
    ],
  },
  {
    // The adopted flash tiles hold a fixed number of lanes per row: on the H200 two rows of head dim 88 on two lanes
    // are 208 private floats, but two of EVA-E's 112 are 256, past NVIDIA's 255 registers, so they spill. Lanes chosen
    // for a budget of 208 floats instead (flashCaps.registers): 88 keeps two, 112 takes four; the gradient kernels keep
    // the H200 profile's tiles (their own group decides them). Only the rows whose kernels change are timed.
    name: 'f32 flash attention lanes by head dim',
    rows: (r) => r.op === 'attention',
    applies: always,
    options: [
      {
        name: '2 rows per invocation, lanes for 208 floats, 128 invocations',
        tuning: { flashCaps: { rows: 2, workgroup: 128, sweep: 16, registers: 208 }, flashGradCaps: { rows: 2, split: 2, workgroup: 128, sweep: 16 } },
      },
      {
        name: '2 rows per invocation, lanes for 208 floats, 256 invocations',
        tuning: { flashCaps: { rows: 2, workgroup: 256, sweep: 16, registers: 208 }, flashGradCaps: { rows: 2, split: 2, workgroup: 128, sweep: 16 } },
      },
    ],
  },
  {
    // The f32 flash kernels' swept side (keys; queries for dk and dv) split across workgroups where their grids of row
    // tiles are small (kernels/flash-sweep-split.ts): on the H200, 288 workgroups at EVA-G detection under the adopted
    // tiles, a second wave nearly empty if two fit a multiprocessor. Each option says how many workgroups fill the GPU
    // (132 multiprocessors: 4, 8 or 16 each). The f16 rows run the same kernels on f16 reads.
    name: 'f32 flash attention sweep split',
    rows: (r) => r.op === 'attention',
    applies: always,
    options: [528, 1056, 2112].map((fill) => ({ name: `swept side split until ${fill} workgroups`, tuning: { flashSweepSplit: fill } })),
  },
  {
    // The lanes of a split row share its exponentials (kernels/flash-common.ts laneValuesCode): each computes 1/split of
    // a tile's (about 30 operations each, a quarter of the forward's instructions at head dim 88 on two lanes) and
    // takes the rest by subgroup shuffles; the outputs are the same bits.
    name: 'f32 flash attention shared exponentials',
    rows: (r) => r.op === 'attention',
    applies: always,
    options: [{ name: 'lanes share the exponentials', tuning: { flashShareExp: true } }],
  },
  {
    // f32 attention on the f16 tensor cores at f32 accuracy: q, k, v (and g) split into f16 pairs
    // (kernels/flash-split16.ts); a group of its own, so a short lease can time it without the tile sweeps.
    name: 'f32 attention on tensor cores',
    rows: isAttention('f32'),
    applies: tensorCores,
    options: [
      { name: 'forward on tensor cores, q, k, v split into f16 pairs', tuning: { f32AttentionTensorCores: true } },
      { name: 'backward on tensor cores, q, k, v, g split into f16 pairs', tuning: { f32AttentionGradTensorCores: true } },
      { name: 'forward and backward on tensor cores', tuning: { f32AttentionTensorCores: true, f32AttentionGradTensorCores: true } },
    ],
  },
  {
    name: 'f32 flash attention backward',
    rows: (r) => isAttention('f32')(r) && r.pass === 'forward+backward',
    applies: always,
    options: [
      { name: 'register-blocked dq and dk+dv', tuning: { flashBlockedGrad: true } },
      // The gradient kernels hold more per row (k, v and two accumulators for dk+dv) than the forward: their own tiles.
      ...flashTileOptions('gradient: ', 'flashGradCaps', [
        [1, 2, 64],
        [1, 4, 128],
        [2, 4, 256],
        [4, 2, 128],
        [2, 2, 256],
      ]),
    ],
  },
  {
    name: 'f16 attention on tensor cores',
    rows: isAttention('f16'),
    applies: tensorCores,
    options: [
      { name: 'tensor-core flash kernels', tuning: { tensorCoreAttention: true } },
      // Fewer subgroups per workgroup: the barriers around its staging and softmax synchronise fewer of them (the
      // default's 4 subgroups with 64 keys apart do not fit 48 KiB at head dim 88: session 13).
      { name: 'tensor-core flash kernels, 1 subgroup, 64 keys', tuning: { tensorCoreAttention: true, flashSgmatTiles: { subgroups: 1, keys: 64, sharedKv: false } } },
      { name: 'tensor-core flash kernels, 1 subgroup, 32 keys', tuning: { tensorCoreAttention: true, flashSgmatTiles: { subgroups: 1, keys: 32, sharedKv: false } } },
      { name: 'tensor-core flash kernels, 2 subgroups, 64 keys, kᵀ and v sharing', tuning: { tensorCoreAttention: true, flashSgmatTiles: { subgroups: 2, keys: 64, sharedKv: true } } },
      // The forward from q, k and v in storage, two passes, one subgroup (kernels/flash-direct.ts); the backward as before.
      { name: 'tensor-core flash forward from storage', tuning: { flashDirect: true } },
      // dq and dk+dv from q, k, v and g in storage (kernels/flash-direct-backward.ts); the forward as before.
      { name: 'tensor-core flash backward from storage', tuning: { flashDirectGrad: true } },
      { name: 'tensor-core flash forward and backward from storage', tuning: { flashDirect: true, flashDirectGrad: true } },
      // Longer key tiles: more products between each pair of barriers.
      { name: 'tensor-core flash from storage, 32 keys per tile', tuning: { flashDirect: true, flashDirectGrad: true, flashDirectKeys: 32 } },
      { name: 'tensor-core flash from storage, 64 keys per tile', tuning: { flashDirect: true, flashDirectGrad: true, flashDirectKeys: 64 } },
    ],
  },
  {
    name: 'msdeform value gradient',
    rows: (r) => r.op === 'msdeform_attn' && r.pass === 'forward+backward',
    applies: always,
    options: [
      { name: 'blocks unsplit', tuning: { msdeformSplits: 1 } },
      { name: 'one tiled kernel', tuning: { msdeformValueGrad: 'tiled' } },
    ],
  },
];

/**
 * Rows timed by default: one of each kind and model, at sizes whose passes take milliseconds on an H200 (the
 * segmentation attention rows take 12–150 ms a pass, too long to time every option against).
 */
export const TUNE_ROWS: readonly string[] = [
  'matmul_f32_evag_qkv',
  'matmul_f32_evag_fc2',
  'matmul_f32_evae_fc1',
  'matmul_f32_evae_fc2',
  'matmul_f16_evag_qkv',
  'matmul_f16_evag_fc2',
  'matmul_f16_evae_fc1',
  'attention_fwd_evag_detection',
  'attention_fwd_evae_caption',
  'attention_vjp_evag_caption',
  'attention_vjp_evag_detection',
  'attention_fwd_f16_evag_detection',
  'attention_vjp_f16_evag_caption',
  'attention_vjp_f16_evag_detection',
  'msdeform_vjp_m2f_pixel',
  'msdeform_vjp_m2f_3lvl',
];
