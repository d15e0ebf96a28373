// The subgroup-matrix (tensor core) matmul variant, `matmul_sgmat_f16`: for products whose operands are exact f16
// values (autocast's roundings, f16 inputs and parameters; compiler/codegen/half.ts isExactHalf) on a Target with an
// f16 x f16 -> f32 subgroup-matrix config. Products of f16 numbers are exact in f32 and the sums are f32, so it
// computes what the f32 kernels compute, in another summation order.
//
// Work split: a workgroup computes a BM x BN output tile with WM x WN subgroups, each FM x FN fragments of the
// config's m x n (f32 result matrices held by the subgroup). Per k step of BK, every invocation stages its share
// of the A [BM, BK] and B [BK, BN] tiles as f16 in workgroup memory (reads through transposes and views as the
// other variants do, zeros outside the matrices), then each subgroup loads fragments from there and multiplies.
// On hardware the next step's elements are loaded into registers before this step's products (Staging
// 'prefetch' in kernels/matmul.ts): staging, not the products, bounds the kernel (ablations in docs/perf.md).
// Rows of the staged tiles are padded (PAD halves) against bank conflicts. At the end each subgroup stores one
// result fragment at a time into its own m x n f32 scratch, and its lanes apply the epilogue (MatmulOutput, and a
// second product summed in f32 like the naive variant's) element by element with bounds checks: any M, N, K.
// On software adapters the loops stay rolled (unboundedLoop): LLVM otherwise unrolled a small unbatched product's
// staging loops for over a minute. Tile sizes: measured on the H200 for 256-token products (sgmatTiles).
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { dispatchGroups, u32Lit, unboundedLoop } from './elementwise.js';
import { assemble, batchOffsets, defaultStaging, ONE_SLOT, rangeSteps, splitSteps, stagedKLoop, stageTiles, storeBlock, tileOrigin, vectorBindings, vectorLoads, type MatmulDims, type MatmulOutput, type Staging, type TileDims, type TileSlots } from './matmul.js';
import { NO_SGMAT_CONFIG, nativeSgmat, sgmatIds, sgmatLanes, sgmatOps, sgmatShape, sgmatSpelling, type SgmatOps, type SgmatShape } from './sgmat.js';

/** How a sgmat kernel tiles its output. */
export interface SgmatTiles {
  /** Subgroups along M and N. */
  readonly wm: number;
  readonly wn: number;
  /** Fragments per subgroup along M and N. */
  readonly fm: number;
  readonly fn: number;
  /** K per staged step (a multiple of the config's k). */
  readonly bk: number;
  /** How invocations stage the tiles (kernels/matmul.ts); default defaultStaging(target). */
  readonly staging?: Staging;
  /**
   * 2: K split between two halves of the workgroup, each with its own WM x WN subgroups and tiles (steps h, h + 2,
   * ...), summed in the epilogue (half 0's sum + half 1's): twice the subgroups in flight for outputs with fewer
   * tiles than the GPU has multiprocessors. Default 1: on the H200 it took 1.8–2.1x the time (session 9).
   */
  readonly ksplit?: 1 | 2;
}

/** f16 elements of padding per staged tile row. */
const PAD = 8;

/**
 * The tiles for a problem: 128x128 for large outputs, else 64x64 (two fragments per subgroup each way), staged 64
 * deep natively (on the H200, 7-19% faster than 32 for 256-token products; the emulation's result slots leave
 * software adapters no room for it). Measured with scripts/tune-sgmat.mjs (docs/perf.md): larger tiles lost there.
 */
export function sgmatTiles(shape: SgmatShape, d: { readonly m: number; readonly n: number }, native = false): SgmatTiles {
  const big = d.m >= 512 && d.n >= 512;
  return big ? { wm: 2, wn: 4, fm: 64 / shape.m, fn: 32 / shape.n, bk: Math.max(32, shape.k) } : { wm: 2, wn: 2, fm: 32 / shape.m, fn: 32 / shape.n, bk: Math.max(native ? 64 : 32, shape.k) };
}

interface Layout {
  readonly shape: SgmatShape;
  readonly tiles: SgmatTiles;
  readonly bm: number;
  readonly bn: number;
  readonly lanes: number;
  readonly invocations: number;
  readonly bytes: number;
}

function layout(target: Target, shape: SgmatShape, t: SgmatTiles): Layout {
  const bm = t.wm * t.fm * shape.m;
  const bn = t.wn * t.fn * shape.n;
  const lanes = sgmatLanes(target);
  const halves = t.ksplit ?? 1;
  const invocations = halves * t.wm * t.wn * lanes;
  // The staged tiles (per half), the per-subgroup scratch, and (emulated) the result slots.
  const slots = nativeSgmat(target) ? 0 : halves * t.wm * t.wn * t.fm * t.fn;
  const bytes = halves * 2 * (bm * (t.bk + PAD) + t.bk * (bn + PAD)) + 4 * (halves * t.wm * t.wn + slots) * shape.m * shape.n;
  return { shape, tiles: t, bm, bn, lanes, invocations, bytes };
}

/** The tiles a kernel uses: forced ones, else the Target's tuning, else sgmatTiles'. */
const chosenTiles = (target: Target, shape: SgmatShape, d: { readonly m: number; readonly n: number }, tiles?: SgmatTiles): SgmatTiles => tiles ?? target.tuning?.sgmatTiles ?? sgmatTiles(shape, d, nativeSgmat(target));

/** A kernel's output tile (bm x bn) and the K its loop takes per step (both halves' with a K split). */
export function sgmatGrid(target: Target, d: { readonly m: number; readonly n: number }, tiles?: SgmatTiles): { readonly bm: number; readonly bn: number; readonly kStep: number } {
  const shape = sgmatShape(target);
  if (!shape) throw new Error(`internal: matmul_sgmat_f16: ${NO_SGMAT_CONFIG}`);
  const t = chosenTiles(target, shape, d, tiles);
  return { bm: t.wm * t.fm * shape.m, bn: t.wn * t.fn * shape.n, kStep: t.bk * (t.ksplit ?? 1) };
}

/** Why the variant cannot run this problem on `target`, or undefined when it can. */
export function sgmatUnfit(target: Target, d: { readonly m: number; readonly n: number; readonly batch: number }, tiles?: SgmatTiles): string | undefined {
  const shape = sgmatShape(target);
  if (!shape) return NO_SGMAT_CONFIG;
  const t = chosenTiles(target, shape, d, tiles);
  if (![t.fm, t.fn, t.bk / shape.k].every((x) => Number.isInteger(x) && x >= 1)) return `tiles ${JSON.stringify(t)} do not divide into ${shape.m}x${shape.n}x${shape.k} fragments`;
  const L = target.limits;
  const l = layout(target, shape, t);
  if (l.invocations > L.maxComputeInvocationsPerWorkgroup || l.invocations > L.maxComputeWorkgroupSizeX) return `${l.invocations} invocations per workgroup exceed the target's limits`;
  if (l.bytes > L.maxComputeWorkgroupStorageSize) return `${l.bytes} bytes of workgroup memory exceed the target's ${L.maxComputeWorkgroupStorageSize}`;
  const maxD = L.maxComputeWorkgroupsPerDimension;
  if (Math.ceil(d.n / l.bn) > maxD || Math.ceil(d.m / l.bm) * d.batch > maxD * maxD) return 'the tiles exceed the dispatch limits';
  return undefined;
}

/**
 * Where fragment (i, j) lies: its first row and column, and a condition on an element's (row, col) that it keeps
 * (besides lying inside the output). Default: the staged kernel's tile, every element.
 */
export interface FragmentOrigin {
  row(i: number): string;
  col(j: number): string;
  keep?(i: number, j: number): string;
}

/** The subgroups' and fragments' tile positions (`m0`, `n0`, `sm`, `sn` in scope). */
const tileFragments = (shape: SgmatShape): FragmentOrigin => ({ row: (i) => `m0 + sm + ${u32Lit(i * shape.m)}`, col: (j) => `n0 + sn + ${u32Lit(j * shape.n)}` });

/** The subgroup scratch, K split and epilogue sizes a kernel's fragment epilogues need. */
export interface EpilogueLayout {
  readonly shape: SgmatShape;
  readonly tiles: SgmatTiles;
}

/**
 * WGSL: the epilogue of fragment (i, j): store it to the subgroup's scratch, then each lane finishes its elements.
 * `valueOf` maps the product's element (`row`, `col` in scope) before the output's epilogue.
 */
export function fragmentEpilogue(out: MatmulOutput, d: MatmulDims, l: EpilogueLayout, ops: ReturnType<typeof sgmatOps>, i: number, j: number, target: Target, at: FragmentOrigin = tileFragments(l.shape), valueOf: (v: string) => string = (v) => v): string {
  const { m: fm, n: fn } = l.shape;
  const F = u32Lit(fm * fn);
  const [M, N] = [u32Lit(d.m), u32Lit(d.n)];
  const second = out.second;
  // K split: half 0's subgroups add half 1's sums (the subgroup WM x WN past theirs) to their own.
  const P = l.tiles.wm * l.tiles.wn;
  const value = valueOf((l.tiles.ksplit ?? 1) === 1 ? `tile_c[sg * ${F} + e]` : `(tile_c[sg * ${F} + e] + tile_c[(sg + ${u32Lit(P)}) * ${F} + e])`);
  const store = out.store(value, `oc + row * ${N} + col`, second ? 'acc2' : undefined);
  const sum2 = second
    ? `
          var acc2 = 0.0f;
          for (var t = 0u; t < ${unboundedLoop(second.k, target)}; t++) {
            acc2 = fma(${second.a('row', 't')}, ${second.b('t', 'col')}, acc2);
          }`
    : '';
  return `  if (computes) { ${ops.store('tile_c', `sg * ${F}`, `acc_${i}_${j}`, u32Lit(fn))} }
  workgroupBarrier();
  if (sg < ${u32Lit(P)}) {
    for (var e = lane; e < ${F}; e += lanes) {
      let row = ${at.row(i)} + e / ${u32Lit(fn)};
      let col = ${at.col(j)} + e % ${u32Lit(fn)};
      if (${at.keep ? `${at.keep(i, j)} && ` : ''}row < ${M} && col < ${N}) {${sum2}
        ${storeBlock(store, '        ')}
      }
    }
  }
  workgroupBarrier();`;
}

/** A subgroup's fragments (i, j) of its FM x FN, row by row. */
export function fragmentsOf(t: SgmatTiles): [number, number][] {
  const frags: [number, number][] = [];
  for (let i = 0; i < t.fm; i++) for (let j = 0; j < t.fn; j++) frags.push([i, j]);
  return frags;
}

/** WGSL statements of one k step: the left fragments a_i, the right b_j, then acc_i_j += a_i · b_j for each fragment. */
export function fragmentProducts(t: SgmatTiles, ops: SgmatOps, left: (i: number) => string, right: (j: number) => string): string[] {
  return [
    ...Array.from({ length: t.fm }, (_, i) => `let a_${i} = ${left(i)};`),
    ...Array.from({ length: t.fn }, (_, j) => `let b_${j} = ${right(j)};`),
    ...fragmentsOf(t).map(([i, j]) => `acc_${i}_${j} = ${ops.multiplyAccumulate(`a_${i}`, `b_${j}`, `acc_${i}_${j}`)};`),
  ];
}

/**
 * WGSL opening a sgmat kernel's entry point of T invocations: the workgroup's flat index g over dispatch y, z (past
 * G: return), the subgroup ids, the tile origin (m0, bi, …), n0, the batch's operand offsets and the output's `oc`.
 */
export function sgmatKernelHead(T: number, ids: { readonly params: string; readonly code: string }, origin: { readonly lets: string; readonly outBatch: string }, grid: { readonly gy: number; readonly groups: number; readonly bn: number }, d: MatmulDims): string {
  return `@compute @workgroup_size(${T}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${ids.params}) {
  let g = wid.z * ${u32Lit(grid.gy)} + wid.y;
  if (g >= ${u32Lit(grid.groups)}) { return; }
${ids.code}${origin.lets}
  let n0 = wid.x * ${u32Lit(grid.bn)};
${batchOffsets(d, '  ')}
  let oc = ${origin.outBatch} * ${u32Lit(d.m * d.n)};`;
}

/** The tiles and config a sgmat kernel of this problem uses (callers check sgmatUnfit first). */
export function sgmatChoice(target: Target, d: MatmulDims, tiles?: SgmatTiles): { readonly shape: SgmatShape; readonly tiles: SgmatTiles } {
  const shape = sgmatShape(target);
  const why = sgmatUnfit(target, d, tiles);
  if (!shape || why) throw new Error(`internal: matmul_sgmat_f16: ${why}`);
  return { shape, tiles: chosenTiles(target, shape, d, tiles) };
}

/** The `matmul_sgmat_f16` kernel, staging its operands through workgroup memory (callers check sgmatUnfit first). */
export function sgmatMatmul(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims, suffix: string, tiles?: SgmatTiles): Kernel {
  const { shape, tiles: t } = sgmatChoice(target, d, tiles);
  const l = layout(target, shape, t);
  const H = t.ksplit ?? 1;
  const ops = sgmatOps(shape, sgmatSpelling(target), H * t.wm * t.wn * t.fm * t.fn);
  const { bm, bn, invocations: T } = l;
  const Th = T / H;
  const SA = t.bk + PAD;
  const SB = bn + PAD;
  const tilesN = Math.ceil(d.n / bn);
  const tilesM = Math.ceil(d.m / bm);
  // K ranges (MatmulOutput.kRange): the workgroups once per range.
  const range = out.kRange;
  const G = tilesM * d.batch * (range?.splits ?? 1);
  const [gy, gz] = dispatchGroups(G, target);
  const origin = tileOrigin(d, tilesM, bm, range);
  const dims: TileDims = { tm: bm, tn: bn, tk: t.bk };
  const staging = t.staging ?? defaultStaging(target);
  const vec = vectorLoads(target, staging, d, dims);
  // K split: invocations [h·Th, (h + 1)·Th) stage half h's tiles, for its steps (splitSteps).
  const slots: TileSlots = H === 1 ? ONE_SLOT : { lid: 'lh', a: `hs * ${u32Lit(bm * SA)} + `, b: `hs * ${u32Lit(t.bk * SB)} + ` };
  const staged = splitSteps(
    rangeSteps(
      stageTiles(
        staging,
        d,
        dims,
        Th,
        slots,
        (x) => `tile_a[${slots.a}ar${x} * ${u32Lit(SA)} + ac${x}] = f16(va${x});`,
        (x) => `tile_b[${slots.b}br${x} * ${u32Lit(SB)} + bc${x}] = f16(vb${x});`,
        (n) => unboundedLoop(n, target),
        undefined,
        vec,
      ),
      range,
    ),
    range?.len ?? d.k,
    H,
    t.bk,
    'hs',
  );
  // A computing subgroup's tiles: those of its half.
  const [fa, fb] = H === 1 ? ['', ''] : [`h * ${u32Lit(bm * SA)} + `, `h * ${u32Lit(t.bk * SB)} + `];
  const frags = fragmentsOf(t);
  const steps: string[] = [];
  for (let s = 0; s < t.bk / shape.k; s++) {
    const kk = s * shape.k;
    const step = fragmentProducts(
      t,
      ops,
      (i) => ops.loadLeft('tile_a', `${fa}(sm + ${u32Lit(i * shape.m)}) * ${u32Lit(SA)} + ${u32Lit(kk)}`, u32Lit(SA)),
      (j) => ops.loadRight('tile_b', `${fb}${u32Lit(kk * SB)} + sn + ${u32Lit(j * shape.n)}`, u32Lit(SB)),
    );
    steps.push('{', ...step.map((x) => `  ${x}`), '}');
  }
  // Native: the hardware's subgroup and lane; emulated: blocks of `lanes` invocations stand for subgroups.
  const ids = sgmatIds(ops.native, l.lanes);
  const main = `var<workgroup> tile_a: array<f16, ${H * bm * SA}>;
var<workgroup> tile_b: array<f16, ${H * t.bk * SB}>;
var<workgroup> tile_c: array<f32, ${H * t.wm * t.wn * shape.m * shape.n}>;

${sgmatKernelHead(T, ids, origin, { gy, groups: G, bn }, d)}
  // Subgroups past H x WM x WN (smaller runtime subgroups) only help stage the tiles.
  let computes = sg < ${u32Lit(H * t.wm * t.wn)};${H === 1 ? '' : `
  let h = sg / ${u32Lit(t.wm * t.wn)};
  let hs = lid / ${u32Lit(Th)};
  let lh = lid % ${u32Lit(Th)};`}
  let sm = ((sg % ${u32Lit(t.wm * t.wn)}) / ${u32Lit(t.wn)}) * ${u32Lit(t.fm * shape.m)};
  let sn = (sg % ${u32Lit(t.wn)}) * ${u32Lit(t.fn * shape.n)};
${frags.map(([i, j], f) => `  var acc_${i}_${j} = ${ops.zero(`sg * ${u32Lit(frags.length)} + ${u32Lit(f)}`)};`).join('\n')}
${stagedKLoop(staging, staged.staging, unboundedLoop(staged.k, target), H * t.bk, `    if (computes) {
${steps.map((s) => `      ${s}`).join('\n')}
    }`)}
${frags.map(([i, j]) => fragmentEpilogue(out, d, l, ops, i, j, target)).join('\n')}
}`;
  const helpers = ops.helpers();
  const kernel = assemble(out, inputs, target, `matmul_sgmat_f16${H === 1 ? '' : '_k2'}${range ? `_ks${range.splits}` : ''}${suffix}`, { body: helpers ? `${helpers}\n\n${main}` : main, workgroupSize: [T, 1, 1], dispatch: [tilesN, gy, gz] });
  return { ...kernel, wgsl: `${ops.directives}\n${vectorBindings(kernel.wgsl, vec)}` };
}
