// MSDeformAttn's value gradient (kernels/msdeform-value-grad.ts) works on blocks of TP pixels of a level: their
// layout, and the split of heavy blocks across workgroups with the kernel that adds their partial sums.
//
// Split blocks. Every level of a (n, m) has the same Lq·P points, so a block of a coarse level holds many more
// of them than one of a fine level: at Mask2Former's 64x64 + 32x32 + 16x16, a 16x16 block reads ~10000 entries
// (a 64x64 one ~1000), and its few workgroups (32 for 8 heads) ran long after the rest were done. So a heavy
// block (gradValueSplits, from the shapes) gets S workgroups, each summing a fixed, contiguous slice of the
// block's entries into a row of partial sums (scratch), and splitSumKernel adds an element's S partials in slice
// order (no atomics: bitwise repeatable).
import type { Node } from '../compiler/ir/graph.js';
import type { MsDeformGeometry } from '../compiler/ir/rules/shape.js';
import type { Kernel, Target } from '../compiler/codegen/types.js';
import { ENTRY_PARAMS, WORKGROUP_INDEX, geomConsts, linearWorkgroup, loopBound, perLevel, rolledPrelude, spreadWorkgroups, u32Lit } from './msdeform.js';

/** The scratch placeholder of the split levels' partial sums. */
export const PARTIALS = -6;

/** WGSL: a storage binding of u32 (or f32) words. */
export const storage = (binding: number, name: string, access: 'read' | 'read_write', type: 'u32' | 'f32' = 'u32') =>
  `@group(0) @binding(${binding}) var<storage, ${access}> ${name}: array<${type}>;`;

/** Words of a pixel's mask: one bit per point of a chunk of WG. */
export const maskWords = (wg: number): number => Math.ceil(wg / 32);

// ---------------------------------------------------------------------------------------------- pixel blocks

/** Blocks of TP consecutive pixels of one level, for one (n, m) and all Dh channels: E elements per invocation. */
export interface PixelBlocks {
  readonly wg: number;
  readonly tp: number;
  readonly e: number;
  /** Each level's first block, counted per (n, m), and each level's number of blocks. */
  readonly levelStarts: readonly number[];
  readonly levelBlocks: readonly number[];
  readonly perNm: number;
}

/** The block layout, or undefined where it does not fit (Dh > 8·WG, or too little workgroup memory): the plain gather. */
export function pixelBlocks(k: MsDeformGeometry, target: Target): PixelBlocks | undefined {
  const wg = linearWorkgroup(target);
  // Pixels per block: 64, or fewer when Dh is so large that an invocation would own more than 8 elements.
  const tp = Math.max(1, Math.min(64, Math.floor((wg * 8) / k.dh)));
  const e = Math.ceil((tp * k.dh) / wg);
  // Workgroup memory: per point slot q, s00 and four weights (24 bytes), per pixel a mask, the index range.
  if (e > 8 || wg * 24 + tp * maskWords(wg) * 4 + 8 > target.limits.maxComputeWorkgroupStorageSize) return undefined;
  const levelBlocks = k.levels.map(([h, w]) => Math.ceil((h * w) / tp));
  const levelStarts = prefixSums(levelBlocks);
  return { wg, tp, e, levelStarts, levelBlocks, perNm: levelBlocks.reduce((a, c) => a + c, 0) };
}

// ---------------------------------------------------------------------------------------------- split blocks

/** The most workgroups per block (Target.tuning.msdeformSplits may ask for up to this many). */
export const MAX_VALUE_SPLITS = 64;

/** By default a block expecting more than SPLIT_FROM_CHUNKS chunks of WG entries is split into slices of about SLICE_CHUNKS. */
export const SPLIT_FROM_CHUNKS = 4;
export const SLICE_CHUNKS = 2;

/**
 * The index entries a block of TP pixels of an h x w level reads, expected from the shapes: its keys cover
 * ⌊(TP + W) / TP⌋ + 1 blocks of TP anchors out of H·W + W + 1, and Lq·P points per (n, m, l) spread over them.
 */
export function expectedBlockEntries(k: MsDeformGeometry, tp: number, [h, w]: readonly [number, number]): number {
  const anchors = (Math.floor((tp + w) / tp) + 1) * tp;
  return k.lq * k.p * Math.min(1, anchors / (h * w + w + 1));
}

/**
 * Workgroups per block of each level for the `indexed` gather (1: the block's one workgroup writes d value).
 * Target.tuning.msdeformSplits when set; else 1 on software adapters (CPU threads gain nothing from more
 * workgroups); on hardware, a level whose blocks expect more than SPLIT_FROM_CHUNKS·WG entries gets
 * ⌈entries / (SLICE_CHUNKS·WG)⌉ (at most MAX_VALUE_SPLITS), others 1. At WG 256: Mask2Former's 73x73 and 64x64
 * levels (≈760 and ≈990 entries per block) stay whole, 32x32 (≈2600) gets 6 and 16x16 (≈10100) 20, the best
 * of the splits timed on an H200 (kernels/msdeform-value-grad.ts's header).
 */
export function gradValueSplits(k: MsDeformGeometry, target: Target): number[] {
  const forced = target.tuning?.msdeformSplits;
  if (forced !== undefined) return forcedSplits(forced, k.levels.length);
  const b = pixelBlocks(k, target);
  if (!b || target.isFallbackAdapter) return k.levels.map(() => 1);
  return k.levels.map((level) => {
    const entries = expectedBlockEntries(k, b.tp, level);
    return entries <= SPLIT_FROM_CHUNKS * b.wg ? 1 : Math.min(MAX_VALUE_SPLITS, Math.ceil(entries / (SLICE_CHUNKS * b.wg)));
  });
}

function forcedSplits(forced: number | readonly number[], levels: number): number[] {
  const where = 'Target.tuning.msdeformSplits';
  if (typeof forced !== 'number' && forced.length !== levels) throw new Error(`${where}: ${forced.length} splits given for ${levels} levels`);
  const splits = typeof forced === 'number' ? Array.from({ length: levels }, () => forced) : [...forced];
  const bad = splits.find((s) => !Number.isInteger(s) || s < 1 || s > MAX_VALUE_SPLITS);
  if (bad !== undefined) throw new Error(`${where}: ${bad} workgroups per block asked for; it takes a whole number from 1 to ${MAX_VALUE_SPLITS}`);
  return splits;
}

/** Where the split gather's workgroups and partial sums go (levels with S = 1 keep one workgroup per block). */
export interface SplitPlan {
  readonly splits: readonly number[];
  /** Per (n, m): each level's first workgroup (blocks · S of them) and the count. */
  readonly workStarts: readonly number[];
  readonly workPerNm: number;
  /** Per (n, m): each split level's first row of TP·Dh partial sums (one per workgroup), and the count. */
  readonly rowStarts: readonly number[];
  readonly rowsPerNm: number;
  /** Words of the partial sums: N · M · rowsPerNm · TP · Dh. */
  readonly words: number;
}

/** The plan for `splits`, or undefined where no level splits or it does not fit the target (then: no split). */
export function splitPlan(k: MsDeformGeometry, b: PixelBlocks, splits: readonly number[], target: Target): SplitPlan | undefined {
  if (splits.every((s) => s === 1)) return undefined;
  const work = b.levelBlocks.map((blocks, l) => blocks * splits[l]);
  const rows = work.map((w, l) => (splits[l] > 1 ? w : 0));
  const workPerNm = work.reduce((a, c) => a + c, 0);
  const rowsPerNm = rows.reduce((a, c) => a + c, 0);
  const words = k.n * k.m * rowsPerNm * b.tp * k.dh;
  const L = target.limits;
  const fits = k.n * k.m * workPerNm <= L.maxComputeWorkgroupsPerDimension ** 3 && words < 2 ** 32 && 4 * words <= Math.min(L.maxStorageBufferBindingSize, L.maxBufferSize);
  return fits ? { splits, workStarts: prefixSums(work), workPerNm, rowStarts: prefixSums(rows), rowsPerNm, words } : undefined;
}

/** Exclusive prefix sums: each item's start. */
export const prefixSums = (counts: readonly number[]): number[] => counts.map((_, i) => counts.slice(0, i).reduce((a, c) => a + c, 0));

/** WGSL: the level of index `x` (a value row, a block) given each level's first: the last whose start is <= x. */
export const levelAt = (starts: readonly number[], x: string): string => starts.slice(1).reduce((acc, st) => `${acc} + select(0u, 1u, ${x} >= ${u32Lit(st)})`, '0u');

/**
 * d value of the split levels: one invocation per element (n, s, m, d) of their pixels, which adds the S partial
 * sums of its block's workgroups in slice order (a fixed order: bitwise repeatable) and stores the total.
 */
export function splitSumKernel(node: Node, k: MsDeformGeometry, target: Target, b: PixelBlocks, split: SplitPlan): Kernel {
  const B = loopBound(target);
  const levels = split.splits.flatMap((s, l) => (s > 1 ? [l] : []));
  const pixels = levels.map((l) => k.levels[l][0] * k.levels[l][1]);
  const total = k.n * pixels.reduce((a, c) => a + c, 0) * k.m * k.dh;
  const of = (values: readonly number[]) => perLevel(levels.map((l) => values[l]), 'j');
  const name = 'msdeform_attn_grad_value_sum_f32';
  const wgsl = `// ${name}: d value of the split levels (${levels.join(', ')}): per element, its block's partial sums in slice order
${storage(0, 'partial', 'read', 'f32')}
${storage(1, 'out', 'read_write', 'f32')}

${geomConsts(k)}
const TP = ${u32Lit(b.tp)};
const ROWS_PER_NM = ${u32Lit(split.rowsPerNm)};
const SS = ${u32Lit(pixels.reduce((a, c) => a + c, 0))}; // pixels of the split levels
const TOTAL = ${u32Lit(total)};

@compute @workgroup_size(${b.wg})
fn main(${ENTRY_PARAMS}) {
  ${rolledPrelude(target)}${WORKGROUP_INDEX}
  let i = wid * ${u32Lit(b.wg)} + li;
  if (i >= TOTAL) { return; }
  let d = i % DH;
  let m = (i / DH) % M;
  let s = (i / (DH * M)) % SS;
  let n = i / (DH * M * SS);
  let j = ${levelAt(prefixSums(pixels), 's')}; // the j-th split level
  let px = s - ${perLevel(prefixSums(pixels), 'j')};
  let splits = ${of(split.splits)};
  let row = (n * M + m) * ROWS_PER_NM + ${of(split.rowStarts)} + (px / TP) * splits;
  let at = (px % TP) * DH + d;
  var acc = 0.0;
  for (var r = 0u; r < ${B('splits')}; r++) { acc += partial[(row + r) * (TP * DH) + at]; }
  out[((n * S + ${of(k.starts)} + px) * M + m) * DH + d] = acc;
}
`;
  return {
    name,
    wgsl,
    workgroupSize: [b.wg, 1, 1],
    dispatch: spreadWorkgroups(Math.ceil(total / b.wg), target),
    bindings: [
      { value: PARTIALS, access: 'read' },
      { value: node.id, access: 'read_write' },
    ],
    nodes: [node.id],
  };
}
