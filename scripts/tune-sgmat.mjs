// Tile sweeps and ablations of the matmul and flash kernels on a GPU with subgroup matrices: one short run
// that times each variant of matmul_sgmat_f16, matmul_tiled_f32 (its staging) and attention_flash_sgmat_f16 on bench rows, so the
// defaults in kernels/matmul-sgmat.ts and kernels/flash-sgmat.ts can be chosen from measurements (docs/perf.md).
// An exploratory sweep (every tile shape, ablations that break outputs on purpose): `visft tune` is the tool that
// decides, from a few of these options, and writes the profile later runs apply (runtime/tune/).
//   node scripts/tune-sgmat.mjs [--rows matmul_f16_evag_qkv,...] [--variants scalar,...] [--json FILE] [--size full|quick|tiny] [--emulate]
// (after `npx tsc`). --emulate lists a 16x16x16 config on a device without subgroup matrices, so the emulated
// kernels run (a check of this script on lavapipe at --size tiny; its times mean nothing).
// Variants: vec4 or scalar operand loads, the tiled f32 kernel's register blocks (block8x8-64x64, ...), MSDeformAttn's value gradient (indexed, tiled), f32 flash attention's tiles (and ablations: no staging,
// no exp), the default program on a second device with Dawn toggles (robustness off, no workgroup-memory zeroing, the Vulkan memory model), tile shapes forced through Target.tuning, K split across 1-4 sets of workgroups on the fc2 rows
// (Target.tuning.matmulSplits; 1 is the one kernel, the default picks by shape: kernels/matmul-split-across.ts), and ablations that leave a stage out ('no-mma': the
// products skipped; 'no-stage': the tiles not staged), whose times say where a kernel's time goes (their
// outputs are wrong by design and not checked). Every other variant's output is compared with the default's.
// Timing: each variant against the row's default in alternating bursts of 4 passes (8 of each, GPU timestamps),
// after 300 ms of alternating warm-up; the medians and their ratio (vsDefault) are printed. The ratio ranks
// variants: the H200's clock moved between 345 and 1980 MHz through one sweep. Without subgroup matrices only
// the f32 rows run.
import { writeFileSync } from 'node:fs';
import { openDevice } from '../dist/runtime/gpu/device.js';
import { benchRows } from '../dist/runtime/bench/rows.js';
import { relDiff, rowCase, timedVariant as variantOn, timePair } from '../dist/runtime/tune/pair-timing.js';
import { sgmatShape } from '../dist/kernels/sgmat.js';

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const ROWS = (opt('--rows') ?? 'matmul_f16_evag_qkv,matmul_f16_evag_fc2,matmul_f16_evae_fc2,matmul_f32_evag_qkv,matmul_f32_evag_fc2,matmul_f32_evae_fc2,msdeform_vjp_m2f_pixel,msdeform_vjp_m2f_3lvl,attention_fwd_evag_detection,attention_vjp_evag_detection,attention_fwd_f16_evag_detection').split(',');

const mm = (wm, wn, fm, fn, bk, staging = 'prefetch', ksplit = 1) => ({ sgmatTiles: { wm, wn, fm, fn, bk, staging, ksplit } });
const SGMAT_VARIANTS = {
  '64x64 4sg bk32 loop': mm(2, 2, 2, 2, 32, 'loop'),
  '64x64 4sg bk32 unrolled': mm(2, 2, 2, 2, 32, 'unrolled'),
  '64x64 4sg bk32 prefetch': mm(2, 2, 2, 2, 32),
  '64x64 4sg bk64 prefetch': mm(2, 2, 2, 2, 64),
  '32x64 2sg bk32 prefetch': mm(1, 2, 2, 2, 32),
  '128x64 4sg bk32 prefetch': mm(2, 2, 4, 2, 32),
  '128x128 8sg bk32 prefetch': mm(2, 4, 4, 2, 32),
  // 8 result fragments per subgroup (the default holds 4) with the default's 64-deep steps: twice the products per
  // fragment loaded, half the workgroups.
  '128x64 4sg bk64 prefetch': mm(2, 2, 4, 2, 64),
  '64x128 4sg bk64 prefetch': mm(2, 2, 2, 4, 64),
  '64x64 4sg bk32 prefetch, K split in 2': mm(2, 2, 2, 2, 32, 'prefetch', 2),
  '64x64 4sg bk64 prefetch, K split in 2': mm(2, 2, 2, 2, 64, 'prefetch', 2),
  // Operands loaded one element at a time instead of vec4s (the default since session 7, unmeasured before).
  'default tiles, scalar loads': { vectorLoads: false },
};
const TILED_VARIANTS = {
  loop: { tiledStaging: 'loop' },
  unrolled: { tiledStaging: 'unrolled' },
  prefetch: { tiledStaging: 'prefetch' },
  'unrolled, K split in 2': { tiledStaging: 'unrolled', tiledKSplit: 2 },
  'prefetch, K split in 2': { tiledStaging: 'prefetch', tiledKSplit: 2 },
  'prefetch, scalar loads': { tiledStaging: 'prefetch', vectorLoads: false },
  // Bigger register blocks (Target.tuning.tiledTiles, kernels/matmul-tiled.ts): rows x cols outputs per invocation in a
  // tm x tn tile, default staging; the same sums as the default's 4x4 of 64x64. On the fc2 rows the default K split
  // counts the block's (fewer) tiles. `--variants block` runs them all.
  'block8x8-64x64': { tiledTiles: { tm: 64, tn: 64, rows: 8, cols: 8 } },
  'block8x8-128x64': { tiledTiles: { tm: 128, tn: 64, rows: 8, cols: 8 } },
  'block8x8-64x128': { tiledTiles: { tm: 64, tn: 128, rows: 8, cols: 8 } },
  'block8x8-128x128': { tiledTiles: { tm: 128, tn: 128, rows: 8, cols: 8 } },
  'block8x4-128x64': { tiledTiles: { tm: 128, tn: 64, rows: 8, cols: 4 } },
  'block8x8-128x128-ksplit2': { tiledTiles: { tm: 128, tn: 128, rows: 8, cols: 8 }, tiledKSplit: 2 },
  // 128x128 tiles leave EVA-G's qkv 66 workgroups, which the default rule splits in 4 K ranges: the one kernel too.
  'block8x8-128x128-onekernel': { tiledTiles: { tm: 128, tn: 128, rows: 8, cols: 8 }, matmulSplits: 1 },
};
// K split across workgroups, for the products with fewer output tiles than the GPU has multiprocessors (the fc2 rows).
const SPLIT_VARIANTS = Object.fromEntries([1, 2, 3, 4].map((splits) => [`K across ${splits}${splits === 1 ? ' (one kernel)' : ''}`, { matmulSplits: splits }]));
// MSDeformAttn's value gradient: the default `indexed` chain against the one-kernel `tiled` it replaced.
// Heavy blocks split across workgroups by default on hardware (gradValueSplits); 'unsplit' keeps one per block.
const MSDEFORM_VARIANTS = { 'value grad tiled (one kernel)': { msdeformValueGrad: 'tiled' }, 'value-grad-unsplit': { msdeformSplits: 1 } };
// f32 flash attention: tiles through Target.tuning.flashCaps (kernels/flash-common.ts chooseRowTiles): invocations
// per query row (split), per workgroup, keys per staged tile (sweep), rows per invocation.
const F32_FLASH_VARIANTS = {};
for (const split of [1, 2, 4]) for (const workgroup of [64, 128, 256]) for (const sweep of [16, 32]) F32_FLASH_VARIANTS[`f32 split ${split} wg ${workgroup} keys ${sweep}`] = { flashCaps: { split, workgroup, sweep, rows: 1 } };
for (const split of [2, 4]) for (const sweep of [16, 32]) F32_FLASH_VARIANTS[`f32 split ${split} wg 128 keys ${sweep} 2 rows`] = { flashCaps: { split, workgroup: 128, sweep, rows: 2 } };
F32_FLASH_VARIANTS['f32 scalar loads'] = { vectorLoads: false };
// Lane loops written out (flashCaps.unroll): private row arrays indexed by constants whether or not the driver
// unrolls; alone, and with the two-row tiles whose arrays are twice as long.
F32_FLASH_VARIANTS['f32 unroll'] = { flashCaps: { unroll: true } };
for (const split of [2, 4]) F32_FLASH_VARIANTS[`f32 unroll split ${split} wg 128 keys 16 2 rows`] = { flashCaps: { split, workgroup: 128, sweep: 16, rows: 2, unroll: true } };
// Register-blocked forward (kernels/flash-blocked.ts): 4x4 score blocks and 4-row x 8-column output blocks per invocation.
F32_FLASH_VARIANTS['f32 blocked'] = { flashBlocked: true };
// Register-blocked dq and dk+dv (kernels/flash-blocked-backward.ts), alone and with the blocked forward.
F32_FLASH_VARIANTS['f32 blocked grad'] = { flashBlockedGrad: true };
F32_FLASH_VARIANTS['f32 blocked both'] = { flashBlocked: true, flashBlockedGrad: true };
// The row's default program on a second device opened with Dawn toggles (every row): `disable_robustness` drops the
// index clamps Dawn's shader transform puts on every array access (ONNX Runtime's and Skia's native WebGPU turn it
// off for their own shaders); `disable_workgroup_init` drops the zeroing of workgroup memory WGSL asks for at the
// start of every workgroup (our kernels write their tiles before reading them); `use_vulkan_memory_model` is what
// Dawn's subgroup-matrix tests run with on Vulkan.
const DEVICE_VARIANTS = {
  'robustness off': ['disable_robustness'],
  'robustness off, no workgroup init': ['disable_robustness', 'disable_workgroup_init'],
  'vulkan memory model': ['use_vulkan_memory_model'],
};
// Attention: 'default' is the f32-accumulating flash kernel (tensor-core attention is off by default).
const FLASH_VARIANTS = { 'tensor cores': { tensorCoreAttention: true } };
for (const subgroups of [2, 4, 8]) for (const keys of [32, 64, 128]) for (const sharedKv of [true, false]) FLASH_VARIANTS[`tensor cores ${subgroups}sg ${keys}keys ${sharedKv ? 'shared' : 'apart'}`] = { tensorCoreAttention: true, flashSgmatTiles: { subgroups, keys, sharedKv } };

// Ablations by text: the products replaced by their accumulators; the staging loops run zero times.
const ABLATIONS = {
  'no-mma': (w) => w.replace(/subgroupMatrixMultiplyAccumulate\(([^,()]+), (subgroupMatrixLoad<[^;]*?\)|[^,()]+), ([^,()]+)\)/g, '$3'),
  'no-stage': (w) => w.replace(/for \(var q = 0u; q < (\d+u|unbounded\([^)]*\)); q\+\+\)/g, 'for (var q = 0u; q < 0u; q++)'),
};
// The f32 flash kernels': the k/v (and q, g) tiles not staged; exp replaced by the identity.
const FLASH_ABLATIONS = {
  'no-stage': (w) => w.replace(/for \(var x = lid; x < ([^;]+); x \+= (\d+u)\)/g, 'for (var x = lid; x < 0u; x += $2)'),
  'no-exp': (w) => w.replace(/fn exp_flash\(x: f32\) -> f32 \{[\s\S]*?\n\}/, 'fn exp_flash(x: f32) -> f32 { return x; }'),
};

/** A device per toggle set (opened on first use; `gpu` itself for none). */
const devices = new Map();
async function deviceWith(toggles) {
  if (!toggles) return gpu;
  const key = toggles.join(',');
  if (!devices.has(key)) devices.set(key, await openDevice({ profiling: true, tuning: 'none', toggles }));
  return devices.get(key);
}

/** The row's program under `tuning` (and `ablation`), its inputs uploaded; on a device with extra `toggles`, if any. */
async function timedVariant(gpu, row, tuning, ablation, toggles) {
  const edit = ablation ? (ABLATIONS[ablation] ?? FLASH_ABLATIONS[ablation.replace(/^flash /, '')]) : undefined;
  return variantOn(await deviceWith(toggles), rowCase(row), tuning, edit && ((k) => (/^(matmul|attention)/.test(k.name) ? { ...k, wgsl: edit(k.wgsl) } : k)));
}

// No tuning profile: every variant is timed against the defaults.
const gpu = await openDevice({ profiling: true, tuning: 'none' });
if (args.includes('--emulate') && !sgmatShape(gpu.target)) gpu.target = { ...gpu.target, subgroupMatrixConfigs: [{ componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 }] };
const results = [];
try {
  const tensorCores = !!sgmatShape(gpu.target);
  if (!tensorCores) console.error(`this device runs no subgroup-matrix kernels (${gpu.tensorCoresOff ?? 'the adapter lists no f16 x f16 -> f32 config'}): only the f32 rows`);
  {
    // In the order --rows gives them: a spent time limit cuts the last ones.
    const rows = benchRows(opt('--size') ?? 'full')
      .filter((r) => ROWS.includes(r.name) && (tensorCores || r.dtype === 'f32'))
      .sort((a, b) => ROWS.indexOf(a.name) - ROWS.indexOf(b.name));
    for (const row of rows) {
      const msdeform = row.op === 'msdeform_attn';
      const f32Attention = row.op === 'attention' && row.dtype === 'f32';
      const table = msdeform ? MSDEFORM_VARIANTS : f32Attention ? F32_FLASH_VARIANTS : { ...(row.op === 'attention' ? FLASH_VARIANTS : row.dtype === 'f16' ? SGMAT_VARIANTS : TILED_VARIANTS), ...(/_fc2$/.test(row.name) ? SPLIT_VARIANTS : {}) };
      // Ablations on the looped staging (the only one with a staging loop to empty) and on the default.
      const ablated = msdeform || f32Attention ? [] : row.op === 'attention' ? [[FLASH_VARIANTS['tensor cores'], 'tensor cores']] : [[row.dtype === 'f16' ? SGMAT_VARIANTS['64x64 4sg bk32 loop'] : TILED_VARIANTS.loop, 'loop'], [undefined, 'default']];
      const ablations = f32Attention ? Object.keys(FLASH_ABLATIONS).map((a) => [`default flash ${a}`, undefined, `flash ${a}`]) : ablated.flatMap(([t, n]) => Object.keys(ABLATIONS).map((a) => [`${n} ${a}`, t, a]));
      // --variants a,b: only the variants whose names contain one of these (the default always runs).
      const only = opt('--variants')?.split(',');
      const onDevices = Object.entries(DEVICE_VARIANTS).map(([n, toggles]) => [n, undefined, undefined, toggles]);
      // The tensor-core flash kernels lost to the f32 ones with robustness on (their fragment loads predicated).
      if (row.op === 'attention' && row.dtype === 'f16') onDevices.push(['tensor cores, robustness off', FLASH_VARIANTS['tensor cores'], undefined, DEVICE_VARIANTS['robustness off']]);
      const variants = [['default', undefined, undefined], ...Object.entries(table).map(([n, t]) => [n, t, undefined]), ...ablations, ...onDevices].filter(([n]) => n === 'default' || !only || only.some((o) => n.includes(o)));
      const base = await timedVariant(gpu, row, undefined, undefined);
      try {
        const reference = await base.timed.outputs(base.outIds);
        for (const [name, tuning, ablation, toggles] of variants) {
          const t0 = performance.now();
          let r;
          let v;
          try {
            v = name === 'default' ? base : await timedVariant(gpu, row, tuning, ablation, toggles);
            const { ms, baseMs } = await timePair(v.timed, base.timed);
            const diff = ablation || name === 'default' ? undefined : relDiff(await v.timed.outputs(v.outIds), reference);
            r = { row: row.name, variant: name, ms, baseMs, vsDefault: ms / baseMs, rate: row.work.amount / (ms * 1e-3) / 1e12, unit: row.work.unit === 'GFLOP/s' ? 'TFLOP/s' : 'TB/s', kernels: v.kernels.join(' '), relDiff: diff };
          } catch (e) {
            r = { row: row.name, variant: name, error: String(e?.message ?? e).split('\n')[0].slice(0, 200) };
          } finally {
            if (v && v !== base) v.timed.destroy();
          }
          r.wallS = (performance.now() - t0) / 1e3;
          results.push(r);
          console.log(r.error ? `${r.row.padEnd(34)} ${name.padEnd(26)} ${r.error}` : `${r.row.padEnd(34)} ${name.padEnd(26)} ${r.ms.toFixed(4).padStart(9)} ms (default ${r.baseMs.toFixed(4)} ms, x${r.vsDefault.toFixed(3)}) ${r.rate.toFixed(1).padStart(7)} ${r.unit}${r.relDiff === undefined ? '' : `  diff ${r.relDiff.toExponential(1)}`}  ${r.kernels}`);
        }
      } finally {
        base.timed.destroy();
      }
    }
  }
} finally {
  const json = opt('--json');
  if (json) writeFileSync(json, JSON.stringify({ date: new Date().toISOString(), device: gpu.info, target: { features: gpu.target.features, spelling: gpu.target.subgroupMatrixSpelling }, results }, null, 1));
  for (const d of devices.values()) await d.destroy();
  await gpu.destroy();
}
