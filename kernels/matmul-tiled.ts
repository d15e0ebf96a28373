// The tiled f32 matmul, `matmul_tiled_f32` (kernels/matmul.ts chooses it on hardware for products of at least
// 2M multiply-adds with M and N of 16 or more): a 64x64 output tile per workgroup of 16x16 invocations, 4x4
// outputs per invocation (rows 4·ty + i, cols 4·tx + j: one vec4 of each tile per k and four vec4 accumulators),
// K in tiles of 16 staged in workgroup memory as vec4 rows (8.25 KiB: A's rows padded), bounds-checked loads
// (zeros outside) and stores, so any M, N, K; staged by a guarded loop or unrolled and prefetched (Staging),
// optionally with K split between two halves of the workgroup. Workgroups: x over N tiles, (y, z) over M tiles ×
// batch. It takes every operand layout, view, batch, epilogue and second product of kernels/matmul.ts, and K
// ranges (kernels/matmul-split-across.ts).
// Target.tuning.tiledTiles (TiledTiles) gives each invocation a bigger block, 8x8 (or 8x4, 4x8) of a 64x64,
// 128x64, 64x128 or 128x128 tile (names gain `_b8x8_64x64`): per k the 4x4 block loads 2 vec4s from workgroup
// memory for 16 FMAs, which bounds it (H200, docs/perf.md session 9: 18-26 TFLOP/s on EVA shapes against cuBLAS
// FP32's 38-47, 33.6 with the staging ablated); an 8x8 block loads 4 for 64, as cuBLAS-class SGEMM does. An
// invocation's rows and columns are vec4s a tile-width/2 apart, so consecutive invocations read consecutive
// vec4s. The same steps, halves and per-output fma order: bit for bit the default's. Not the default: on the H200
// 8x4 blocks of 64x64 won (0.85–1.01x the time) and 8x8 lost on EVA-G shapes (docs/perf.md, session 13), so the
// choice is `visft tune`'s, per GPU (its shipped H200 profile takes the 8x4 blocks). TiledTiles.tk: 32-deep steps.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { dispatchGroups, loopBound, u32Lit, unboundedLoop } from './elementwise.js';
import {
  assemble,
  batchOffsets,
  defaultStaging,
  ONE_SLOT,
  rangeSteps,
  readsSuffix,
  splitSteps,
  stagedKLoop,
  stageTiles,
  storeBlock,
  tileOrigin,
  vectorBindings,
  vectorLoads,
  type MatmulDims,
  type MatmulOutput,
  type MatmulReads,
  type SecondProduct,
  type Staging,
  type TileSlots,
  type TileStaging,
} from './matmul.js';

/** The default output tile's side (matmulVariant checks the dispatch limits with it) and k step. */
export const TILE = 64;
const TK = 16;

/**
 * The tiled kernel's output tile (tm x tn, one workgroup's) and the block of it each invocation owns (rows x cols,
 * made of 4x4 groups): Target.tuning.tiledTiles. The default, 64x64 of 4x4 (16x16 invocations), loads one vec4 of
 * each staged tile per k for 16 FMAs; an 8x8 block loads two of each for 64 (cuBLAS-class SGEMM), at the cost of
 * registers (64 accumulators) and fewer invocations per tile.
 */
export interface TiledTiles {
  readonly tm: 64 | 128;
  readonly tn: 64 | 128;
  readonly rows: 4 | 8;
  readonly cols: 4 | 8;
  /**
   * K per staged step (default 16): 32 halves the barriers per K (a pair per step; on the H200 barriers with staged
   * loads bounded the tensor-core kernel, scripts/sgmat-ceiling.mjs) for twice the workgroup memory. Same sums.
   */
  readonly tk?: 16 | 32;
}

/**
 * A tiled kernel's layout: tx x ty invocations (x over columns), each block gm x gn groups of 4x4 outputs, A's
 * staged k rows of aRow vec4s, and the workgroup memory of one K half's tiles.
 */
interface TiledLayout extends TiledTiles {
  readonly tk: 16 | 32;
  readonly tx: number;
  readonly ty: number;
  readonly gm: number;
  readonly gn: number;
  /**
   * vec4s per k row of the staged A tile: one past tm/4. A row-major A is staged with 16 consecutive invocations
   * on 16 k rows of one column; unpadded, their stores fell tm·4 bytes apart, all in one workgroup-memory bank.
   */
  readonly aRow: number;
  readonly invocations: number;
  readonly bytes: number;
}

function tiledLayout(t: TiledTiles): TiledLayout {
  const [tx, ty, aRow] = [t.tn / t.cols, t.tm / t.rows, t.tm / 4 + 1];
  const tk = t.tk ?? TK;
  return { tm: t.tm, tn: t.tn, rows: t.rows, cols: t.cols, tk, tx, ty, gm: t.rows / 4, gn: t.cols / 4, aRow, invocations: tx * ty, bytes: (aRow + t.tn / 4) * tk * 16 };
}

const DEFAULT_LAYOUT = tiledLayout({ tm: TILE, tn: TILE, rows: 4, cols: 4 });

/** A Target.tuning.tiledTiles the tiled kernel cannot take. */
export class TiledTilesError extends Error {}

/** The tiled kernels' layout: Target.tuning.tiledTiles when set (checked), else the default 64x64 of 4x4. */
function chosenLayout(target: Target): TiledLayout {
  const t = target.tuning?.tiledTiles;
  if (t === undefined) return DEFAULT_LAYOUT;
  const among = (x: unknown, xs: readonly number[]) => typeof x === 'number' && xs.includes(x);
  if (!among(t.tm, [64, 128]) || !among(t.tn, [64, 128]) || !among(t.rows, [4, 8]) || !among(t.cols, [4, 8]) || (t.tk !== undefined && !among(t.tk, [16, 32]))) {
    throw new TiledTilesError(`Target.tuning.tiledTiles ${JSON.stringify(t)}: tm and tn take 64 or 128, rows and cols 4 or 8, tk 16 or 32`);
  }
  const same = t.tm === DEFAULT_LAYOUT.tm && t.tn === DEFAULT_LAYOUT.tn && t.rows === DEFAULT_LAYOUT.rows && t.cols === DEFAULT_LAYOUT.cols && (t.tk ?? TK) === DEFAULT_LAYOUT.tk;
  return same ? DEFAULT_LAYOUT : tiledLayout(t);
}

/** Whether `target` runs a tiled kernel of layout `g` with K split `split` ways inside the workgroup. */
export function tiledFits(target: Target, g: TiledLayout = DEFAULT_LAYOUT, split = 1): boolean {
  const L = target.limits;
  return (
    L.maxComputeInvocationsPerWorkgroup >= split * g.invocations &&
    L.maxComputeWorkgroupSizeX >= g.tx &&
    L.maxComputeWorkgroupSizeY >= g.ty &&
    L.maxComputeWorkgroupSizeZ >= split &&
    L.maxComputeWorkgroupStorageSize >= split * g.bytes
  );
}

/**
 * The tiled variant's staging: vec4 tiles, element (k, x) component x % 4 of vec4 k·row + x / 4 (row: aRow for
 * A, tn/4 for B), staged by all the layout's invocations. The guarded loop stays rolled on software adapters when
 * loads go through views (their index functions are inlined: LLVM's compile time).
 */
function tileStaging(how: Staging, d: MatmulDims, g: TiledLayout, slots: TileSlots, target: Target, second?: SecondProduct, vec: MatmulReads = [false, false]): TileStaging {
  const [VA, V] = [u32Lit(g.aRow), u32Lit(g.tn / 4)];
  const viewed = !!(second || d.viewA || d.viewB);
  return stageTiles(
    how,
    d,
    { tm: g.tm, tn: g.tn, tk: g.tk },
    g.invocations,
    slots,
    (x) => `tile_a[${slots.a}ac${x} * ${VA} + ar${x} / 4u][ar${x} % 4u] = va${x};`,
    (x) => `tile_b[${slots.b}br${x} * ${V} + bc${x} / 4u][bc${x} % 4u] = vb${x};`,
    (n) => (viewed ? unboundedLoop(n, target) : u32Lit(n)),
    second,
    vec,
  );
}

/** `base` for the only one of `n`, else `base_q`. */
const nth = (base: string, q: number, n: number): string => (n === 1 ? base : `${base}_${q}`);

/**
 * WGSL: one product's sweep over K in steps of tk into the vec4 accumulators `acc`, its tiles staged by `staging`
 * (of K split `split` ways, halves reading their tiles at `slots`). Invocation (tx, ty) owns the rows of A's vec4s
 * q·ty_count + ty and the columns of B's vec4s q·tx_count + tx (q < gm, gn: with the default's one vec4 each, rows
 * ty·4 + i and columns tx·4 + j), so consecutive invocations read consecutive vec4s; accumulator i·gn + q holds
 * its block's row i, columns of B's vec4 q. Each output is fma(a_k, b_k, acc) in k order, whatever the block.
 * Constant-bound loops: GPU compilers unroll them (loopBound keeps the k loop rolled on software adapters).
 */
function sweep(acc: string, k: number, how: Staging, staging: TileStaging, target: Target, g: TiledLayout, slots: TileSlots = ONE_SLOT, split = 1): string {
  const V = u32Lit(g.tn / 4);
  const halves = splitSteps(staging, k, split, g.tk, 'h');
  const at = (q: number, count: number, id: string) => (q ? `${u32Lit(q * count)} + ${id}` : id);
  const lines: string[] = [];
  for (let q = 0; q < g.gm; q++) lines.push(`let ${nth('a4', q, g.gm)} = tile_a[${slots.a}kk * ${u32Lit(g.aRow)} + ${at(q, g.ty, 'ty')}];`);
  for (let q = 0; q < g.gn; q++) lines.push(`let ${nth('b4', q, g.gn)} = tile_b[${slots.b}kk * ${V} + ${at(q, g.tx, 'tx')}];`);
  for (let i = 0; i < g.rows; i++) {
    for (let q = 0; q < g.gn; q++) {
      const v = i * g.gn + q;
      lines.push(`${acc}[${v}] = fma(vec4<f32>(${nth('a4', Math.floor(i / 4), g.gm)}.${'xyzw'[i % 4]}), ${nth('b4', q, g.gn)}, ${acc}[${v}]);`);
    }
  }
  return stagedKLoop(how, halves.staging, u32Lit(halves.k), split * g.tk, `    for (var kk = 0u; kk < ${loopBound(g.tk, target)}; kk++) {
${lines.map((l) => `      ${l}`).join('\n')}
    }`);
}

/**
 * How many halves split K in a tiled kernel of layout `g`: Target.tuning.tiledKSplit (1 or 2; 2 needs twice the
 * invocations and workgroup memory, and no second product), else 1. Two halves give a workgroup twice the
 * invocations in flight, for outputs with fewer tiles than the GPU has multiprocessors (EVA-G's fc2 at 256 tokens:
 * 88 tiles). On the H200 it took 1.07–1.11x the time of one half (session 9); the K split across workgroups
 * (kernels/matmul-split-across.ts) is what fills the GPU.
 */
function tiledSplit(target: Target, g: TiledLayout, second: boolean): number {
  const want = target.tuning?.tiledKSplit ?? 1;
  return want === 2 && tiledFits(target, g, 2) && !second ? 2 : 1;
}

/** The tiled variant's grid of tiles and K step (matmulGrid) under the target's layout. */
export function tiledGrid(target: Target): { readonly bm: number; readonly bn: number; readonly kStep: number } {
  const g = chosenLayout(target);
  return { bm: g.tm, bn: g.tn, kStep: g.tk * tiledSplit(target, g, false) };
}

/**
 * WGSL: with K split in two halves, half 1 hands its accumulators to half 0 through the tiles (done with), and half
 * 0 adds them (its own steps first: a fixed order) and goes on to store; half 1 returns. Each invocation (`lh`, its
 * number in its half) passes as many vec4s per round as the tiles hold for it; a block bigger takes more rounds.
 */
function combineHalves(g: TiledLayout, split: number): string {
  if (split === 1) return '';
  const places = (tile: string, len: number) => {
    const per = Math.floor(len / g.invocations);
    return Array.from({ length: per }, (_, u) => `${tile}[lh * ${u32Lit(per)}${u ? ` + ${u32Lit(u)}` : ''}]`);
  };
  const slots = [...places('tile_a', split * g.aRow * g.tk), ...places('tile_b', (split * g.tn * g.tk) / 4)];
  if (slots.length === 0) throw new Error(`internal: matmul_tiled_f32: the ${g.tm}x${g.tn} tiles hold no accumulator of ${g.invocations} invocations`);
  const accs = g.rows * g.gn;
  let code = '';
  for (let first = 0; first < accs; first += slots.length) {
    const vs = Array.from({ length: Math.min(slots.length, accs - first) }, (_, u) => first + u);
    const add = vs.map((v, u) => `acc[${v}] = acc[${v}] + ${slots[u]};`);
    const last = first + slots.length >= accs;
    code += `
  if (h == 1u) {
${vs.map((v, u) => `    ${slots[u]} = acc[${v}];`).join('\n')}
  }
  workgroupBarrier();
${last ? `  if (h == 1u) { return; }\n${add.map((l) => `  ${l}`).join('\n')}` : `  if (h == 0u) {\n${add.map((l) => `    ${l}`).join('\n')}\n  }\n  workgroupBarrier();`}`;
  }
  return code;
}

/**
 * WGSL storing the invocation's block through `out` (bounds-checked). The default's 4x4 block loops over rows
 * and columns; a bigger block is unrolled over its accumulators (constant indices keep them in registers) and
 * loops over their four components.
 */
function storeTiles(out: MatmulOutput, d: MatmulDims, g: TiledLayout, second: boolean): string {
  const [M, N] = [u32Lit(d.m), u32Lit(d.n)];
  const store = (value: string, row: string, col: string, indent: string) =>
    `${indent}let row = ${row};
${indent}let col = ${col};
${indent}if (row < ${M} && col < ${N}) ${storeBlock(out.store(`acc${value}`, `oc + row * ${N} + col`, second ? `acc2${value}` : undefined), indent)}`;
  if (g === DEFAULT_LAYOUT) {
    return `  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
${store('[i][j]', 'm0 + ty * 4u + i', 'n0 + tx * 4u + j', '      ')}
    }
  }`;
  }
  const blocks: string[] = [];
  for (let i = 0; i < g.rows; i++) {
    for (let q = 0; q < g.gn; q++) {
      const plus = (x: number) => (x ? ` + ${u32Lit(x)}` : '');
      const row = `m0 + ty * 4u${plus(Math.floor(i / 4) * g.ty * 4 + (i % 4))}`;
      const col = `n0 + tx * 4u${plus(q * g.tx * 4)} + j`;
      blocks.push(`    {\n${store(`[${i * g.gn + q}][j]`, row, col, '      ')}\n    }`);
    }
  }
  return `  for (var j = 0u; j < 4u; j++) {\n${blocks.join('\n')}\n  }`;
}

/** The `matmul_tiled_f32` kernel of `d` under the target's layout (see the top of this file). */
export function tiledMatmul(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims, id: number): Kernel {
  const g = chosenLayout(target);
  if (!tiledFits(target, g)) {
    const L = target.limits;
    throw new Error(`matmul %${id}: the ${g.tm}x${g.tn} tile needs ${g.invocations} invocations (${g.tx}x${g.ty}) and ${g.bytes} bytes of workgroup memory; target '${target.name}' allows ${L.maxComputeInvocationsPerWorkgroup} and ${L.maxComputeWorkgroupStorageSize} bytes`);
  }
  const tilesN = Math.ceil(d.n / g.tn);
  const tilesM = Math.ceil(d.m / g.tm);
  const range = out.kRange;
  const G = tilesM * d.batch * (range?.splits ?? 1);
  const [gy, gz, rest] = dispatchGroups(G, target);
  if (rest !== 1 || tilesN > target.limits.maxComputeWorkgroupsPerDimension) throw new Error(`matmul %${id}: ${tilesN}x${G} tiles exceed the dispatch limits of target '${target.name}'`);
  const second = out.second;
  const staging = target.tuning?.tiledStaging ?? defaultStaging(target);
  const split = tiledSplit(target, g, !!second);
  const origin = tileOrigin(d, tilesM, g.tm, range);
  const vec = vectorLoads(target, staging, d, { tm: g.tm, tn: g.tn, tk: g.tk });
  // Split: invocation (tx, ty, h) stages and sums the steps of half h into its own tiles; half 1 then hands its
  // sums to half 0 (combineHalves).
  const slots: TileSlots = split === 1 ? ONE_SLOT : { a: `h * ${u32Lit(g.aRow * g.tk)} + `, b: `h * ${u32Lit((g.tn / 4) * g.tk)} + `, lid: 'lh' };
  const accs = g.rows * g.gn;
  const main = `var<workgroup> tile_a: array<vec4<f32>, ${split * g.aRow * g.tk}>;
var<workgroup> tile_b: array<vec4<f32>, ${(split * g.tn * g.tk) / 4}>;

@compute @workgroup_size(${g.tx}, ${g.ty}, ${split})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid3: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.z * ${u32Lit(gy)} + wid.y;
  if (g >= ${u32Lit(G)}) { return; }
${origin.lets}
  let n0 = wid.x * ${u32Lit(g.tn)};
  let tx = lid3.x;
  let ty = lid3.y;${split === 1 ? '' : `
  let h = lid3.z;
  let lh = lid % ${u32Lit(g.invocations)};`}
${batchOffsets(d, '  ')}
  let oc = ${origin.outBatch} * ${u32Lit(d.m * d.n)};
  var acc: array<vec4<f32>, ${accs}>;
${sweep('acc', range?.len ?? d.k, staging, rangeSteps(tileStaging(staging, d, g, slots, target, undefined, vec), range), target, g, slots, split)}${combineHalves(g, split)}${second ? `
  var acc2: array<vec4<f32>, ${accs}>;
${sweep('acc2', second.k, 'loop', tileStaging('loop', d, g, ONE_SLOT, target, second), target, g)}` : ''}
${storeTiles(out, d, g, !!second)}
}`;
  const block = g === DEFAULT_LAYOUT ? '' : `_b${g.rows}x${g.cols}_${g.tm}x${g.tn}${g.tk === TK ? '' : `_d${g.tk}`}`;
  const kernel = assemble(out, inputs, target, `matmul_tiled_f32${block}${split === 1 ? '' : '_k2'}${range ? `_ks${range.splits}` : ''}${readsSuffix(d)}`, { body: main, workgroupSize: [g.tx, g.ty, split], dispatch: [tilesN, gy, gz] });
  return { ...kernel, wgsl: vectorBindings(kernel.wgsl, vec) };
}
