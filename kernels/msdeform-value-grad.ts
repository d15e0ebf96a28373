// The VJP of multi-scale deformable attention in `value` (kernels/msdeform.ts has the op's layout): each value
// element (n, s, m, d) sums attw · corner weight · g[n, q, m, d] over the sampling points whose bilinear
// footprint holds pixel s. WGSL has no float atomics, so it is a gather: exact and deterministic (the only
// atomics are integer atomicOr on workgroup bit masks, whose result is the same in any order).
//
// Variants (GradValueVariant):
// - `indexed` (the default): a chain of five kernels (six with split blocks) that first sorts the points by
//   where they land, so that a block of pixels reads only the points that can touch it: the work is linear in
//   the points.
// - `tiled`: one kernel; a workgroup per block of pixels walks every point of its level (quadratic).
// - `gather`: one invocation per value element walking every point of its level (the plain reference form).
// `tiled` and `gather` sum in increasing (q, p) order and agree bit for bit; `indexed` sums in a fixed order of
// its own (see below), so it is bitwise repeatable and equal to them within float rounding.
//
// The index (a stable counting sort, no atomics). A valid point of level l (H x W) has its footprint's corner
// (0, 0) at pixel a = h0·W + w0 ∈ [−W−1, H·W); its key is (a + W + 1) / TP, so keys are blocks of TP anchors.
// Per (n, m, l), the points are cut into chunks of WG in (q, p) order.
//   1. rank:   per chunk, each point's key and its rank among the chunk's points with that key (a loop over the
//              chunk's keys in workgroup memory); the chunk's column of the histogram hist[key][chunk].
//   2. scan:   exclusive prefix sums of hist, per block of BLK counts, and each block's total;
//   3. top:    one workgroup turns the block totals into exclusive prefix sums;
//   4. fill:   each point goes to entries[offset(key, chunk) + rank]: within a key, points stay in (q, p) order.
//   5. gather: one workgroup per block of TP pixels [t0, t1) (as `tiled`) reads the entries of keys t0/TP ..
//              (t1 + W)/TP (every point with a corner in the block, and a few more) in chunks, marks each
//              point in the bit masks of the block pixels it touches, and each element adds its pixel's points
//              in entry order: by key, then (q, p).
//   6. sum:    only where a level's blocks are split (below): adds each element's partial sums.
// Measured on lavapipe (docs/perf.md, session 7): 12x less time than `tiled` at Mask2Former's 73x73 level.
//
// Split blocks (kernels/msdeform-blocks.ts): on hardware a heavy block of a coarse level gets S workgroups, each
// summing a fixed slice of its entries into partial sums, and a sixth kernel adds them in slice order. Levels
// with S = 1 store d value from the gather as before, bit for bit.
// H200 (f32, 8 heads x 32 dims, 4 points, every pixel a query): at 64x64 + 32x32 + 16x16 the gather went from
// 0.78 ms to 0.24 ms + 0.014 ms (sum) with S = 1, 6, 20 (S = 1, 3, 10: 0.28 + 0.011; 2, 6, 20: 0.24 + 0.021); a
// 73x73 level stays whole: S = 2-4 took 0.10-0.11 ms + 0.012-0.016 ms (sum) against 0.12 ms.
import type { Node } from '../compiler/ir/graph.js';
import { numel } from '../compiler/ir/graph.js';
import { attrNum, type MsDeformGeometry } from '../compiler/ir/rules/shape.js';
import type { Kernel, KernelChain, Target } from '../compiler/codegen/types.js';
import {
  ENTRY_PARAMS,
  GRAD_DECLS,
  LOCATE_HELPERS,
  POINT_HELPERS,
  WORKGROUP_INDEX,
  geomConsts,
  indent,
  levelSelect,
  loopBound,
  msdeformAttnPointGradKernel,
  msGeom,
  nodeBindings,
  perElementKernel,
  perLevel,
  requireFloat,
  rolledPrelude,
  spreadWorkgroups,
  touch,
  u32Lit,
} from './msdeform.js';
import { PARTIALS, gradValueSplits, levelAt, maskWords, pixelBlocks, splitPlan, splitSumKernel, storage, type PixelBlocks, type SplitPlan } from './msdeform-blocks.js';

/** How d value is computed: `indexed` (the default), or the one-kernel `tiled` and plain `gather` forms. */
export type GradValueVariant = 'indexed' | 'tiled' | 'gather';

/** The chain for msdeform_attn_grad: the value gradient's kernels (wrt 0), or one point kernel (wrt 1, 2). */
export function msdeformAttnGradChain(node: Node, inputs: readonly Node[], target: Target, variant: GradValueVariant = 'indexed'): KernelChain {
  requireFloat(node, inputs);
  if (attrNum(node.attrs, 'wrt') !== 0) return { kernels: [msdeformAttnPointGradKernel(node, inputs, target)], scratch: [] };
  const blocks = pixelBlocks(msGeom(node, inputs), target);
  if (!blocks || variant === 'gather') return { kernels: [gradValueGather(node, inputs, target)], scratch: [] };
  if (variant === 'tiled') return { kernels: [gradValueTiled(node, inputs, target, blocks)], scratch: [] };
  return indexedChain(node, inputs, target, blocks);
}

// ---------------------------------------------------------------------------------------------- plain gather

/**
 * d value, the plain gather: one invocation per value element (n, s, m, d). Pixel s lies on one level l at
 * (y, x); only level-l points can touch it, so the invocation walks every query q and point p of that level in
 * increasing order, recomputes the point's footprint and, when (y, x) is one of its four corners, adds
 * attw · corner weight · g[n, q, m, d]. O(Lq·P) per element.
 */
function gradValueGather(node: Node, inputs: readonly Node[], target: Target): Kernel {
  const k = msGeom(node, inputs);
  const B = loopBound(target);
  const levelOf = levelAt(k.starts, 's');
  const body = `${touch(['value'])}
let d = i % DH;
let m = (i / DH) % M;
let s = (i / (DH * M)) % S;
let n = i / (DH * M * S);
let l = ${levelOf};
${levelSelect(k, 'l')}
let y = i32((s - lvl_start) / lvl_w);
let x = i32((s - lvl_start) % lvl_w);
var acc = 0.0;
for (var q = 0u; q < ${B('LQ')}; q++) {
  let row = (n * LQ + q) * M + m;
  let gq = g[row * DH + d];
  for (var p = 0u; p < ${B('P')}; p++) {
    let pt = (row * L + l) * P + p;
    let f = locate(pt, lvl_h, lvl_w);
    if (!f.valid) { continue; }
    var wy = 0.0;
    if (y == f.h0) { wy = 1.0 - f.lh; } else if (y == f.h0 + 1) { wy = f.lh; } else { continue; }
    var wx = 0.0;
    if (x == f.w0) { wx = 1.0 - f.lw; } else if (x == f.w0 + 1) { wx = f.lw; } else { continue; }
    acc += attw[pt] * (wy * wx) * gq;
  }
}
out[i] = acc;`;
  return perElementKernel('msdeform_attn_grad_value_gather_f32', node, target, numel(node.shape), GRAD_DECLS, `${geomConsts(k)}\n${POINT_HELPERS}`, body);
}

// ---------------------------------------------------------------------------------------------- block gathers

/** Where a block gather takes its points: every point of the level, or a range of the index's entries. */
type PointSource = 'all' | 'indexed';

/**
 * WGSL of a block gather: one workgroup per block of TP pixels of one level, for one (n, m) and all Dh channels
 * (invocation-owned (pixel, d) elements, E per invocation). The workgroup walks its points in chunks of WG:
 * 1. each invocation computes one point's footprint and keeps its four corner weights a·w_c (0 for a corner
 *    outside the map) and its corner (0, 0)'s pixel in workgroup memory, in the slot of its place in the chunk;
 *    for each corner inside the block it sets the point's bit in that pixel's mask (atomicOr: the mask is the
 *    same whatever the order);
 * 2. each owned element walks its pixel's mask bits in increasing order (the chunk's order) and adds
 *    weight · g[n, q, m, d] for exactly the points that touch it.
 * Work per element: its contributions plus TP·⌈WG/32⌉ mask words per chunk; two barriers per chunk.
 */
function blockGatherWgsl(name: string, k: MsDeformGeometry, target: Target, b: PixelBlocks, source: PointSource, decls: string, extra: string, split?: SplitPlan): string {
  const { wg, tp, e } = b;
  const B = loopBound(target);
  const words = maskWords(wg);
  const perNm = split?.workPerNm ?? b.perNm;
  const workgroups = k.n * k.m * perNm;
  const elemSetup: string[] = [];
  const elemAdd: string[] = [];
  const elemStore: string[] = [];
  const partialStore: string[] = [];
  for (let r = 0; r < e; r++) {
    elemSetup.push(`let e${r} = li + ${u32Lit(r * wg)};
let px${r} = t0 + e${r} / DH;
let d${r} = e${r} % DH;
let own${r} = e${r} < TP * DH && px${r} < t1;
var acc${r} = 0.0;`);
    elemAdd.push(`if (own${r}) { acc${r} = add_hits(acc${r}, px${r} - t0, i32(px${r}), d${r}, n, m); }`);
    elemStore.push(`if (own${r}) { out[value_row(n, lvl_start + px${r}, m) + d${r}] = acc${r}; }`);
    partialStore.push(`if (own${r}) { partial[row + e${r}] = acc${r}; }`);
  }
  // A split level's workgroup stores its slice's sums in its row of partials; the sum kernel adds the rows.
  const store = split
    ? `if (splits == 1u) {
${indent(elemStore.join('\n'), 2)}
} else {
  let row = ((n * M + m) * ROWS_PER_NM + ${perLevel(split.rowStarts)} + v) * (TP * DH);
${indent(partialStore.join('\n'), 2)}
}`
    : elemStore.join('\n');
  // The workgroup's block (and slice): blocks of each level in turn, per (n, m); a split level's S slices of a block side by side.
  const [u, starts] = split ? ['u', split.workStarts] : ['tile', b.levelStarts];
  const locate = `let ${u} = wid % TILES_PER_NM;
let m = (wid / TILES_PER_NM) % M;
let n = wid / (TILES_PER_NM * M);
let l = ${levelAt(starts, u)};
${levelSelect(k, 'l')}
lvl_w_i = i32(lvl_w);
${
  split
    ? `let v = u - ${perLevel(starts)};
let splits = ${perLevel(split.splits)};
let slice_ix = v % splits;
let t0 = (v / splits) * TP;`
    : `let t0 = (tile - ${perLevel(starts)}) * TP;`
}`;
  // The slice of a split block: whole chunks of WG entries, in entry order (S = 1: all of the block's entries).
  const range = split
    ? `let hi = min(offset(kb + (k_hi + 1u) * C), ENTRIES);
    let lo = min(offset(kb + k_lo * C), hi);
    let per = ((hi - lo + splits - 1u) / splits + WG - 1u) / WG * WG;
    range_lo = min(lo + slice_ix * per, hi);
    range_hi = min(range_lo + per, hi);`
    : `range_hi = min(offset(kb + (k_hi + 1u) * C), ENTRIES);
    range_lo = min(offset(kb + k_lo * C), range_hi);`;
  // The points: j runs over the level's points in (q, p) order, or over entries [entry_lo, entry_hi) of the index.
  const walk =
    source === 'all'
      ? { before: '', loop: `for (var c0 = 0u; c0 < ${B('NPTS')}; c0 += WG)`, point: 'let j = c0 + li;\n    if (j < NPTS) {' }
      : {
          before: `// this block's keys: anchors (a + W + 1) in [t0, t1 + W]
  if (li == 0u) {
    let kb = key_base(n, m, l);
    let k_lo = t0 / TP;
    let k_hi = min((t1 + lvl_w) / TP, level_keys(l) - 1u);
    // (clamped to the index's size: a damaged index must not make the loop run away)
    ${range}
  }
  let entry_lo = workgroupUniformLoad(&range_lo);
  let entry_hi = workgroupUniformLoad(&range_hi);
  `,
          loop: 'for (var c0 = entry_lo; c0 < entry_hi; c0 += WG)',
          point: 'var j = 0u;\n    if (c0 + li < entry_hi) {\n      j = entries[c0 + li];',
        };
  return `// ${name}: d value by blocks of ${tp} pixels x ${k.dh} channels (${e} per invocation), per chunk of ${wg}
// points (${source === 'all' ? 'every point of the level' : 'the points the index lists for the block'}) a mask of the points touching each pixel; ${workgroups} workgroups
${decls}

${geomConsts(k)}
const WG = ${u32Lit(wg)};
const TP = ${u32Lit(tp)};
const TILES = ${u32Lit(workgroups)};
const TILES_PER_NM = ${u32Lit(perNm)};${split ? `\nconst ROWS_PER_NM = ${u32Lit(split.rowsPerNm)};` : ''}
const NPTS = ${u32Lit(k.lq * k.p)};
const WORDS = ${u32Lit(words)}; // mask words per pixel
${extra}${LOCATE_HELPERS}
var<workgroup> hit_q: array<u32, ${wg}>;
var<workgroup> hit_s: array<i32, ${wg}>;
var<workgroup> hit_w: array<vec4f, ${wg}>;
var<workgroup> mask: array<atomic<u32>, ${tp * words}>;
var<workgroup> range_lo: u32;
var<workgroup> range_hi: u32;

var<private> lvl_w_i: i32;

// The weight of the pixel at offset delta from a hit's corner (0, 0) (level-relative indices): the
// corners are at 0, 1, W, W + 1.
fn hit_weight(delta: i32, hw: vec4f) -> f32 {
  return select(0.0, hw.x, delta == 0) + select(0.0, hw.y, delta == 1) + select(0.0, hw.z, delta == lvl_w_i) + select(0.0, hw.w, delta == lvl_w_i + 1);
}

// acc plus the chunk's contributions to channel d of block pixel lp (level pixel px), in the chunk's order.
fn add_hits(acc_in: f32, lp: u32, px: i32, d: u32, n: u32, m: u32) -> f32 {
  var acc = acc_in;
  for (var w = 0u; w < WORDS; w++) {
    var bits = atomicLoad(&mask[lp * WORDS + w]);
    while (bits != 0u) {
      let t = w * 32u + countTrailingZeros(bits);
      bits &= bits - 1u;
      acc += hit_weight(px - hit_s[t], hit_w[t]) * g[((n * LQ + hit_q[t]) * M + m) * DH + d];
    }
  }
  return acc;
}

// Marks point slot t in the mask of level pixel c when c lies in the block [t0, t1).
fn mark(c: i32, t0: u32, t1: u32, t: u32) {
  if (c >= i32(t0) && c < i32(t1)) { atomicOr(&mask[(u32(c) - t0) * WORDS + t / 32u], 1u << (t % 32u)); }
}

@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${rolledPrelude(target)}${WORKGROUP_INDEX}
  if (wid >= TILES) { return; }
${indent(locate, 2)}
  let t1 = min(t0 + TP, lvl_h * lvl_w);
${indent(elemSetup.join('\n'), 2)}
  ${walk.before}${walk.loop} {
    for (var i = li; i < TP * WORDS; i += WG) { atomicStore(&mask[i], 0u); }
    workgroupBarrier();
    // 1. this invocation's point: footprint, corner weights, its bit in the masks of the block pixels it touches
    ${walk.point}
      let q = j / P;
      let pt = (((n * LQ + q) * M + m) * L + l) * P + j % P;
      let f = locate(pt, lvl_h, lvl_w);
      if (f.valid) {
        let a = attw[pt];
        let y0 = f.h0 >= 0;
        let y1 = f.h0 + 1 < i32(lvl_h);
        let x0 = f.w0 >= 0;
        let x1 = f.w0 + 1 < i32(lvl_w);
        let s00 = f.h0 * i32(lvl_w) + f.w0;
        hit_q[li] = q;
        hit_s[li] = s00;
        hit_w[li] = vec4f(
          select(0.0, a * ((1.0 - f.lh) * (1.0 - f.lw)), y0 && x0),
          select(0.0, a * ((1.0 - f.lh) * f.lw), y0 && x1),
          select(0.0, a * (f.lh * (1.0 - f.lw)), y1 && x0),
          select(0.0, a * (f.lh * f.lw), y1 && x1));
        if (y0 && x0) { mark(s00, t0, t1, li); }
        if (y0 && x1) { mark(s00 + 1, t0, t1, li); }
        if (y1 && x0) { mark(s00 + lvl_w_i, t0, t1, li); }
        if (y1 && x1) { mark(s00 + lvl_w_i + 1, t0, t1, li); }
      }
    }
    workgroupBarrier();
    // 2. every owned element adds the points that touch its pixel, in order
${indent(elemAdd.join('\n'), 4)}
    workgroupBarrier();
  }
${indent(store, 2)}
}
`;
}

/** d value, `tiled`: the block gather over every point of the level; sums in (q, p) order like the plain gather. */
function gradValueTiled(node: Node, inputs: readonly Node[], target: Target, b: PixelBlocks): Kernel {
  const k = msGeom(node, inputs);
  const name = 'msdeform_attn_grad_value_tiled_f32';
  // `value` is bound (the node's inputs in order) but not read.
  const wgsl = blockGatherWgsl(name, k, target, b, 'all', GRAD_DECLS, '').replace('  let tile = wid', `  ${touch(['value'])}\n  let tile = wid`);
  return { name, wgsl, workgroupSize: [b.wg, 1, 1], dispatch: spreadWorkgroups(k.n * k.m * b.perNm, target), bindings: nodeBindings(node), nodes: [node.id] };
}

// ---------------------------------------------------------------------------------------------- the index

/** The index's sizes (see the header): keys per level, chunks, histogram and scan layout. */
interface IndexLayout {
  readonly chunks: number;
  /** Keys per level: anchors 0 .. H·W + W in blocks of TP. */
  readonly keys: readonly number[];
  /** Each level's first key, counted per (n, m). */
  readonly keyStarts: readonly number[];
  /** hist entries per (n, m): chunks · Σ keys. */
  readonly histPerNm: number;
  /** hist entries in all: N · M · histPerNm; the scan covers one more (the end of the last key). */
  readonly hist: number;
  /** Counts per scan block (4 per invocation) and the number of blocks. */
  readonly blk: number;
  readonly blocks: number;
  /** Points per (n, m, l) group, padded to whole chunks. */
  readonly padded: number;
  readonly rankBits: number;
}

function indexLayout(k: MsDeformGeometry, b: PixelBlocks): IndexLayout {
  const chunks = Math.max(1, Math.ceil((k.lq * k.p) / b.wg));
  const keys = k.levels.map(([h, w]) => Math.floor((h * w + w) / b.tp) + 1);
  const keyStarts: number[] = [];
  let total = 0;
  for (const n of keys) (keyStarts.push(total), (total += n));
  const histPerNm = chunks * total;
  const hist = k.n * k.m * histPerNm;
  const blk = 4 * b.wg;
  return { chunks, keys, keyStarts, histPerNm, hist, blk, blocks: Math.ceil((hist + 1) / blk), padded: chunks * b.wg, rankBits: Math.log2(b.wg) };
}

/** Scratch placeholders of the indexed chain. */
const INFO = -1;
const HIST = -2;
const OFFSETS = -3;
const BLOCK_SUMS = -4;
const ENTRIES = -5;

/** WGSL: the index's constants and its lookups (`key_base`, `level_keys`, `offset`). */
function indexConsts(k: MsDeformGeometry, x: IndexLayout): string {
  return `const C = ${u32Lit(x.chunks)};
const HIST_PER_NM = ${u32Lit(x.histPerNm)};
const HIST = ${u32Lit(x.hist)};
const BLK = ${u32Lit(x.blk)};
const BLOCKS = ${u32Lit(x.blocks)};
const PADDED = ${u32Lit(x.padded)};
const RANK_BITS = ${u32Lit(x.rankBits)};
const NO_KEY = 0xffffffffu;
const ENTRIES = ${u32Lit(k.n * k.m * k.levels.length * k.lq * k.p)};
fn level_keys(l: u32) -> u32 { return ${perLevel(x.keys)}; }
// hist[(n, m, l, key, chunk)] sits at key_base(n, m, l) + key · C + chunk.
fn key_base(n: u32, m: u32, l: u32) -> u32 { return (n * M + m) * HIST_PER_NM + ${perLevel(x.keyStarts)} * C; }
`;
}

/** The offset lookup, for kernels that bind `offsets` and `block_sums`. */
const OFFSET_FN = `fn offset(i: u32) -> u32 { return offsets[i] + block_sums[i / BLK]; }
`;

/**
 * WGSL: the exclusive prefix sums of 4 counts per invocation, `src[first ..]` (0 from `end` on): `own[r]` within
 * the invocation's 4, `before` the sum of the invocations before it; `part[WG − 1]` is the workgroup's total.
 */
function scanFours(src: string, end: string, wg: number): string {
  return `var own = array<u32, 4>(0u, 0u, 0u, 0u);
var sum = 0u;
for (var r = 0u; r < 4u; r++) {
  own[r] = sum;
  if (first + r < ${end}) { sum += ${src}[first + r]; }
}
part[li] = sum;
workgroupBarrier();
${partScan(wg)}
let before = part[li] - sum;`;
}

/** The Hillis-Steele inclusive scan of `part` (WG u32s in workgroup memory), unrolled. */
function partScan(wg: number): string {
  const steps: string[] = [];
  for (let off = 1; off < wg; off *= 2) {
    steps.push(`{
  var v = 0u;
  if (li >= ${u32Lit(off)}) { v = part[li - ${u32Lit(off)}]; }
  workgroupBarrier();
  part[li] += v;
  workgroupBarrier();
}`);
  }
  return steps.join('\n');
}

function indexedChain(node: Node, inputs: readonly Node[], target: Target, b: PixelBlocks): KernelChain {
  const k = msGeom(node, inputs);
  const x = indexLayout(k, b);
  const [, loc, attw, g] = node.inputs;
  const maxKey = Math.max(...x.keys);
  // Keys share a word with the rank: a level of 2^(32 − RANK_BITS)·TP pixels would not fit (no real map).
  if (maxKey >= 2 ** (32 - x.rankBits) || x.hist + 1 >= 2 ** 32) return { kernels: [gradValueTiled(node, inputs, target, b)], scratch: [] };
  const { wg } = b;
  const groups = k.n * k.m * k.levels.length;
  const header = `${geomConsts(k)}
const WG = ${u32Lit(wg)};
const TP = ${u32Lit(b.tp)};
const NPTS = ${u32Lit(k.lq * k.p)};
${indexConsts(k, x)}`;
  const base = (name: string, wgsl: string, dispatch: readonly [number, number, number], bindings: Kernel['bindings']): Kernel => ({
    name,
    wgsl,
    workgroupSize: [wg, 1, 1],
    dispatch,
    bindings,
    nodes: [node.id],
  });

  const rank = base(
    'msdeform_attn_grad_value_rank',
    `// msdeform_attn_grad_value_rank: each point's key and rank within its chunk of ${wg}; the chunk's histogram column
${storage(0, 'loc', 'read', 'f32')}
${storage(1, 'info', 'read_write')}
${storage(2, 'hist', 'read_write')}

${header}${LOCATE_HELPERS}
var<workgroup> keys: array<u32, ${wg}>;

@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${rolledPrelude(target)}${WORKGROUP_INDEX}
  if (wid >= ${u32Lit(groups * x.chunks)}) { return; }
  let c = wid % C;
  let grp = wid / C; // (n·M + m)·L + l
  let l = grp % L;
  let m = (grp / L) % M;
  let n = grp / (L * M);
${indent(levelSelect(k, 'l'), 2)}
  let j = c * WG + li;
  var key = NO_KEY;
  if (j < NPTS) {
    let pt = (((n * LQ + j / P) * M + m) * L + l) * P + j % P;
    let f = locate(pt, lvl_h, lvl_w);
    if (f.valid) { key = u32(f.h0 * i32(lvl_w) + f.w0 + i32(lvl_w) + 1) / TP; }
  }
  keys[li] = key;
  let column = key_base(n, m, l) + c;
  for (var kk = li; kk < level_keys(l); kk += WG) { hist[column + kk * C] = 0u; }
  storageBarrier();
  workgroupBarrier();
  var rank = 0u;
  var total = 0u;
  for (var i = 0u; i < WG; i++) {
    let same = keys[i] == key;
    total += select(0u, 1u, same);
    rank += select(0u, 1u, same && i < li);
  }
  if (key == NO_KEY) {
    info[grp * PADDED + j] = NO_KEY;
  } else {
    info[grp * PADDED + j] = (key << RANK_BITS) | rank;
    if (rank == 0u) { hist[column + key * C] = total; }
  }
}
`,
    spreadWorkgroups(groups * x.chunks, target),
    [
      { value: loc, access: 'read' },
      { value: INFO, access: 'read_write' },
      { value: HIST, access: 'read_write' },
    ],
  );

  const scan = base(
    'msdeform_attn_grad_value_scan',
    `// msdeform_attn_grad_value_scan: exclusive prefix sums of the histogram per block of ${x.blk}, and the blocks' totals
${storage(0, 'hist', 'read')}
${storage(1, 'offsets', 'read_write')}
${storage(2, 'block_sums', 'read_write')}

${header}
var<workgroup> part: array<u32, ${wg}>;

@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${WORKGROUP_INDEX}
  if (wid >= BLOCKS) { return; }
  let first = wid * BLK + li * 4u;
${indent(scanFours('hist', 'HIST', wg), 2)}
  for (var r = 0u; r < 4u; r++) {
    if (first + r <= HIST) { offsets[first + r] = before + own[r]; }
  }
  if (li == WG - 1u) { block_sums[wid] = part[li]; }
}
`,
    spreadWorkgroups(x.blocks, target),
    [
      { value: HIST, access: 'read' },
      { value: OFFSETS, access: 'read_write' },
      { value: BLOCK_SUMS, access: 'read_write' },
    ],
  );

  const top = base(
    'msdeform_attn_grad_value_scan_blocks',
    `// msdeform_attn_grad_value_scan_blocks: the ${x.blocks} block totals to exclusive prefix sums (one workgroup)
${storage(0, 'block_sums', 'read_write')}

${header}
var<workgroup> part: array<u32, ${wg}>;

@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  var carry = 0u;
  for (var r0 = 0u; r0 < BLOCKS; r0 += BLK) {
    let first = r0 + li * 4u;
${indent(scanFours('block_sums', 'BLOCKS', wg), 4)}
    for (var r = 0u; r < 4u; r++) {
      if (first + r < BLOCKS) { block_sums[first + r] = carry + before + own[r]; }
    }
    carry += part[WG - 1u];
    workgroupBarrier();
  }
}
`,
    [1, 1, 1],
    [{ value: BLOCK_SUMS, access: 'read_write' }],
  );

  const points = groups * x.padded;
  const fill = base(
    'msdeform_attn_grad_value_fill',
    `// msdeform_attn_grad_value_fill: every point with a key to entries[offset(key, chunk) + rank]
${storage(0, 'info', 'read')}
${storage(1, 'offsets', 'read')}
${storage(2, 'block_sums', 'read')}
${storage(3, 'entries', 'read_write')}

${header}${OFFSET_FN}
@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${WORKGROUP_INDEX}
  let i = wid * WG + li;
  if (i >= ${u32Lit(points)}) { return; }
  let packed = info[i];
  if (packed == NO_KEY) { return; }
  let grp = i / PADDED;
  let j = i % PADDED;
  let l = grp % L;
  let m = (grp / L) % M;
  let n = grp / (L * M);
  let key = packed >> RANK_BITS;
  let rank = packed & (WG - 1u);
  entries[offset(key_base(n, m, l) + key * C + j / WG) + rank] = j;
}
`,
    spreadWorkgroups(Math.ceil(points / wg), target),
    [
      { value: INFO, access: 'read' },
      { value: OFFSETS, access: 'read' },
      { value: BLOCK_SUMS, access: 'read' },
      { value: ENTRIES, access: 'read_write' },
    ],
  );

  const name = 'msdeform_attn_grad_value_indexed_f32';
  const split = splitPlan(k, b, gradValueSplits(k, target), target);
  const decls = [
    storage(0, 'loc', 'read', 'f32'),
    storage(1, 'attw', 'read', 'f32'),
    storage(2, 'g', 'read', 'f32'),
    storage(3, 'entries', 'read'),
    storage(4, 'offsets', 'read'),
    storage(5, 'block_sums', 'read'),
    storage(6, 'out', 'read_write', 'f32'),
    ...(split ? [storage(7, 'partial', 'read_write', 'f32')] : []),
  ].join('\n');
  const gather = base(
    name,
    blockGatherWgsl(name, k, target, b, 'indexed', decls, `${indexConsts(k, x)}${OFFSET_FN}`, split),
    spreadWorkgroups(k.n * k.m * (split?.workPerNm ?? b.perNm), target),
    [
      { value: loc, access: 'read' },
      { value: attw, access: 'read' },
      { value: g, access: 'read' },
      { value: ENTRIES, access: 'read' },
      { value: OFFSETS, access: 'read' },
      { value: BLOCK_SUMS, access: 'read' },
      { value: node.id, access: 'read_write' },
      ...(split ? [{ value: PARTIALS, access: 'read_write' as const }] : []),
    ],
  );

  const scratch = [
    { ref: INFO, words: points, name: 'point keys and ranks' },
    { ref: HIST, words: x.hist, name: 'histogram' },
    { ref: OFFSETS, words: x.hist + 1, name: 'offsets' },
    { ref: BLOCK_SUMS, words: x.blocks, name: 'block sums' },
    { ref: ENTRIES, words: groups * k.lq * k.p, name: 'entries' },
  ];
  if (!split) return { kernels: [rank, scan, top, fill, gather], scratch };
  return {
    kernels: [rank, scan, top, fill, gather, splitSumKernel(node, k, target, b, split)],
    scratch: [...scratch, { ref: PARTIALS, words: split.words, name: 'partial sums' }],
  };
}
