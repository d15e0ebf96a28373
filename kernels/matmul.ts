// WGSL kernel generators for batched matmul, a [..., M, K] @ b [..., K, N] -> [batch..., M, N], with NumPy
// broadcasting over the batch dims (baked-in strides; a broadcast operand is re-read, never copied).
//
// Variants, chosen per shape and Target (matmulVariant):
// - `matmul_tiled_f32`: a 64x64 output tile per workgroup, 4x4 outputs per invocation, K staged in workgroup
//   memory 16 deep (kernels/matmul-tiled.ts, with bigger blocks behind Target.tuning.tiledTiles).
// - `matmul_sgmat_f16`: where both operands are exact f16 values and the Target has f16 subgroup matrices
//   (tensor cores): in place of the tiled variant (kernels/matmul-sgmat.ts).
// - `matmul_splitk_f32`: small outputs (batch·M·N < 4096) with long K (>= 512): one workgroup per output
//   element, invocation t sums k = t, t + WG, … in order, then a fixed tree in workgroup memory. No atomics.
// - `matmul_blocked_f32`: software adapters, in place of the tiled variant: 4x4 outputs per invocation from
//   registers, no workgroup memory and no barriers (kernels/matmul-blocked.ts).
// - `matmul_naive_f32`: one invocation per output element, sequential over K (problems under 2M
//   multiply-adds, which are launch-bound, or M or N below 16 where a 64x64 tile would be mostly empty).
// A shared right operand (a projection x [..., M, K] @ W [K, N]) folds the batch dims into M.
// Transposed reads: an operand that is a permute of the last two dims only the matmul reads (compiler/codegen/
// fuse.ts plans it) is not copied; the kernel binds the permute's input and indexes it transposed (b [..., K, N]
// from storage [..., N, K], as `linear` reads W [out, in]; a [..., M, K] from [..., K, M]). The tile loads read
// along the stored rows, the tiles hold the same values, so every variant sums in the same order as on the
// permute's copy (bit for bit). Names gain `_at` / `_bt`. A transposed a never folds its batch into M (its
// rows are not contiguous across the batch).
// Every variant sums in a fixed order, so results are bitwise repeatable on one device. Each writes an output
// element through a MatmulOutput: a plain store, or a fused elementwise epilogue (kernels/matmul-epilogue.ts)
// evaluated on the same f32 accumulator. The naive, blocked and tiled variants can also sum a second product of the same
// output shape in a second accumulator (SecondProduct: LoRA's u·Bblkᵀ beside x·Wᵀ), operands read through views;
// the epilogue gets both accumulators.
// K split across workgroups (kernels/matmul-split-across.ts): the tiled and sgmat variants also compute partial
// products of K ranges (MatmulOutput.kRange) into scratch, which a second kernel sums in a fixed order.
import type { Kernel, KernelGen, Target } from '../compiler/codegen/types.js';
import { isExactHalf } from '../compiler/codegen/half.js';
import { numel, type Graph, type Node } from '../compiler/ir/graph.js';
import { attrInts, normDim } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, declareVec4, dispatchGroups, flatKernel, groupIndexCode, kernelRule, makeKernel, offsetCode, u32Lit, unboundedLoop } from './elementwise.js';
import { blockedMatmul } from './matmul-blocked.js';
import { TILE, tiledFits, tiledGrid, tiledMatmul } from './matmul-tiled.js';
import { sgmatGrid, sgmatUnfit, type SgmatTiles } from './matmul-sgmat.js';
import { sgmatKernel } from './matmul-sgmat-direct.js';
import { treeReduceCode, treeWorkgroup } from './reduce.js';

export type MatmulVariant = 'tiled' | 'sgmat' | 'splitk' | 'naive' | 'blocked';

export const SMALL_OUTPUT = 4096;
export const SPLITK_MIN_K = 512;
/** Below this many multiply-adds a problem is launch-bound: one invocation per output is as fast and never idle. */
export const SMALL_WORK = 1 << 21;

export interface MatmulDims {
  readonly m: number;
  readonly k: number;
  readonly n: number;
  readonly batchShape: number[];
  readonly batch: number;
  /** Per-batch offsets of a and b (elements), broadcast over the batch dims. */
  readonly aStrides: number[];
  readonly bStrides: number[];
  /** a is read from storage [..., K, M], b from [..., N, K]. */
  readonly transA: boolean;
  readonly transB: boolean;
  /** Operands read through views: WGSL for a[row, t] and b[t, col] of batch `bi`. */
  readonly viewA?: (row: string, t: string) => string;
  readonly viewB?: (t: string, col: string) => string;
}

/** An operand read through a view with one leaf (kernels/view.ts), which is bound in the operand's place. */
export interface OperandView {
  readonly leaf: Node;
  /** The IR nodes the view computes in place. */
  readonly inlined: readonly number[];
  readonly helpers: string;
  call(coords: readonly string[]): string;
  /** The same reads with the leaf bound as `binding` (a kernel of its own: kernels/matmul-split16.ts). */
  rebound(binding: string): { readonly helpers: string; call(coords: readonly string[]): string };
}
export type OperandViews = readonly [OperandView | undefined, OperandView | undefined];

/** Which operands the kernel reads transposed through their permute (absorbed: its input is bound instead). */
export type MatmulReads = readonly [boolean, boolean];
export const DIRECT_READS: MatmulReads = [false, false];

/** Whether a node is a permute that swaps exactly the last two dims (identity elsewhere): a transposed view. */
export function isLastTwoSwap(n: Node): boolean {
  if (n.op !== 'permute' || n.shape.length < 2) return false;
  const r = n.shape.length;
  let dims: number[];
  try {
    dims = attrInts(n.attrs, 'dims').map((d) => normDim(d, r));
  } catch {
    return false;
  }
  return dims.length === r && dims.every((d, i) => d === (i === r - 2 ? r - 1 : i === r - 1 ? r - 2 : i));
}

/** The suffix naming a kernel's transposed reads. */
export const readsSuffix = (d: MatmulDims): string => `${d.transA ? '_at' : d.viewA ? '_av' : ''}${d.transB ? '_bt' : d.viewB ? '_bv' : ''}`;

export function matmulDims(node: Node, inputs: readonly Node[], reads: MatmulReads = DIRECT_READS): MatmulDims {
  const [a, b] = inputs;
  const [transA, transB] = reads;
  const [m, k] = a.shape.slice(-2);
  const n = b.shape[b.shape.length - 1];
  const batchShape = node.shape.slice(0, -2);
  // x [..., M, K] @ W [K, N] (a projection): b is shared by every batch and a is contiguous, so the batch dims
  // fold into M — one [batch·M, K] @ [K, N] product with full tiles instead of many thin ones.
  const contiguousA = a.shape.length - 2 === batchShape.length && a.shape.slice(0, -2).every((s, i) => s === batchShape[i]);
  if (batchShape.length > 0 && b.shape.slice(0, -2).every((s) => s === 1) && contiguousA && !transA) {
    return { m: numel(batchShape) * m, k, n, batchShape: [], batch: 1, aStrides: [], bStrides: [], transA, transB };
  }
  return {
    m,
    k,
    n,
    batchShape,
    batch: numel(batchShape),
    aStrides: broadcastStrides(a.shape.slice(0, -2), batchShape).map((s) => s * m * k),
    bStrides: broadcastStrides(b.shape.slice(0, -2), batchShape).map((s) => s * k * n),
    transA,
    transB,
  };
}

/** A product's problem size as its kernel sees it: batch dims over a shared right operand fold into M. */
export function productDims(node: Node, inputs: readonly Node[]): { readonly m: number; readonly k: number; readonly n: number; readonly batch: number } {
  const { m, k, n, batch } = matmulDims(node, inputs);
  return { m, k, n, batch };
}

/**
 * The variant the generator picks for this node and target. `halfOperands`: both operands hold exact f16 values
 * (graphMatmulVariant knows), so the subgroup-matrix variant computes the same products where the Target has it.
 */
export function matmulVariant(node: Node, inputs: readonly Node[], target: Target, halfOperands = false): MatmulVariant {
  const d = matmulDims(node, inputs);
  const outs = d.batch * d.m * d.n;
  if (outs < SMALL_OUTPUT) return d.k >= SPLITK_MIN_K ? 'splitk' : 'naive';
  if (outs * d.k < SMALL_WORK || d.m < 16 || d.n < 16) return 'naive';
  if (halfOperands && sgmatUnfit(target, d) === undefined) return 'sgmat';
  const maxD = target.limits.maxComputeWorkgroupsPerDimension;
  if (!tiledFits(target) || Math.ceil(d.n / TILE) > maxD || Math.ceil(d.m / TILE) * d.batch > maxD * maxD) return 'naive';
  // A CPU pays for workgroup memory and barriers per invocation and caches the operands anyway (docs/perf.md).
  return target.isFallbackAdapter ? 'blocked' : 'tiled';
}

/** matmulVariant for a graph's matmul node: with its operands' exactness as f16 values. */
export function graphMatmulVariant(graph: Graph, node: Node, target: Target): MatmulVariant {
  return matmulVariant(node, node.inputs.map((i) => graph.node(i)), target, node.inputs.every((i) => isExactHalf(graph, i)));
}

/** How a matmul kernel writes its outputs: the node written, extra read bindings and the store code. */
export interface MatmulOutput {
  /** Appended to the variant's kernel name (`+add_gelu`); empty for the plain store. */
  readonly suffix: string;
  /** The node the kernel stands for: its inputs are the bindings (a, b, then `extra`), its id the output. */
  readonly node: Node;
  /** Nodes read after a and b (bindings in_2, in_3, ...). */
  readonly extra: readonly Node[];
  /** Library functions the store code calls. */
  readonly lib: readonly string[];
  /** Module-scope WGSL (functions) the store code calls. */
  readonly helpers?: string;
  /** The IR nodes the kernel computes (the last is written). */
  readonly nodes: readonly number[];
  /** A second product the kernel sums beside its own, in a second accumulator (kernels/matmul-epilogue.ts). */
  readonly second?: SecondProduct;
  /**
   * Partial products (tiled and sgmat variants, no second product): the kernel runs its workgroups once per K
   * range, and those of range s sum k in [s·len, (s + 1)·len) and store at the output index + s·(batch·M·N).
   */
  readonly kRange?: KRange;
  /**
   * WGSL statements storing the f32 `value` (an expression) for the flat output index `index` (an expression);
   * `second` is the second product's accumulator for the same element, when there is one.
   */
  store(value: string, index: string, second?: string): string[];
}

/**
 * K ranges of `len` (a multiple of the variant's K step, matmulGrid) that `splits` sets of workgroups sum apart
 * (kernels/matmul-split-across.ts): the last may reach past K (its loads there are zeros).
 */
export interface KRange {
  readonly splits: number;
  readonly len: number;
}

/**
 * The workgroup grid of the tiled and sgmat variants: `rows` (M tiles × batch, over dispatch y and z), `cols` (N
 * tiles, dispatch x), and the K step of their loop, a K range's unit (with a K split inside the workgroup: both
 * halves' steps). The tiled variant's tiles follow Target.tuning.tiledTiles.
 */
export function matmulGrid(node: Node, inputs: readonly Node[], target: Target, variant: 'tiled' | 'sgmat', reads: MatmulReads = DIRECT_READS, tiles?: SgmatTiles): { readonly rows: number; readonly cols: number; readonly kStep: number } {
  const d = matmulDims(node, inputs, reads);
  const g = variant === 'sgmat' ? sgmatGrid(target, d, tiles) : tiledGrid(target);
  return { rows: Math.ceil(d.m / g.bm) * d.batch, cols: Math.ceil(d.n / g.bn), kStep: g.kStep };
}

/**
 * WGSL locating a workgroup's output tile from its flat index `g` over tilesM × batch (× K ranges): the batch `bi`
 * and first row `m0` (the one-kernel variant's lines as they were), with K ranges also `sb` (range × batch) and
 * the range's first k `kb`. `outBatch` is the output's batch index for `oc` (a range's partials follow the
 * previous range's).
 */
export function tileOrigin(d: MatmulDims, tilesM: number, rows: number, range?: KRange): { readonly lets: string; readonly outBatch: string } {
  const m0 = `  let m0 = (g % ${u32Lit(tilesM)}) * ${u32Lit(rows)};`;
  if (!range) return { lets: `  let bi = g / ${u32Lit(tilesM)};\n${m0}`, outBatch: 'bi' };
  const [bi, kb] = d.batch === 1 ? ['0u', 'sb'] : [`sb % ${u32Lit(d.batch)}`, `(sb / ${u32Lit(d.batch)})`];
  return {
    lets: `  let sb = g / ${u32Lit(tilesM)};
  let bi = ${bi};
  let kb = ${kb} * ${u32Lit(range.len)};
${m0}`,
    outBatch: 'sb',
  };
}

/** The operands' staging for a K range: step k0 of the loop loads k0 + kb (the range's first k, tileOrigin). */
export function rangeSteps(s: TileStaging, range?: KRange): TileStaging {
  return range ? { ...s, load: (k0) => s.load(`kb + ${k0}`) } : s;
}

/**
 * The operands of a second product [M, K2] @ [K2, N] with the kernel's M and N (one batch): WGSL expressions for
 * a[row, t] and b[t, col], read in place (kernels/view.ts).
 */
export interface SecondProduct {
  readonly k: number;
  a(row: string, t: string): string;
  b(t: string, col: string): string;
}

/** The plain store: the product itself. */
export function plainOutput(node: Node): MatmulOutput {
  return { suffix: '', node, extra: [], lib: [], nodes: [node.id], store: (value, index) => [`out_0[${index}] = ${value};`] };
}

/**
 * Store statements as a block opened on the current line (`{ stmt }` for one statement); several statements
 * get lines of their own at `indent` + 2, in a scope where their names cannot clash with the kernel's.
 */
export function storeBlock(lines: readonly string[], indent: string): string {
  if (lines.length === 1) return `{ ${lines[0]} }`;
  return `{\n${lines.map((l) => `${indent}  ${l}`).join('\n')}\n${indent}}`;
}

/** Assembles a variant's kernel for its output: the bindings of `out.node`, the name with its suffix. */
export function assemble(out: MatmulOutput, inputs: readonly Node[], target: Target, name: string, parts: { body: string; workgroupSize: [number, number, number]; dispatch: readonly [number, number, number] }): Kernel {
  const body = out.helpers ? `${out.helpers}\n\n${parts.body}` : parts.body;
  const k = makeKernel(out.node, [...inputs, ...out.extra], target, { ...parts, body, name: `${name}${out.suffix}`.slice(0, 96), lib: out.lib });
  return { ...k, nodes: [...out.nodes] };
}

/**
 * The output and operands a kernel binds when it reads some operands transposed: the permute's input (its
 * storage) instead of the permute, which becomes one of the nodes the kernel computes.
 */
export function bindStorage(out: MatmulOutput, inputs: readonly Node[], reads: MatmulReads): { out: MatmulOutput; inputs: Node[] } {
  if (!reads[0] && !reads[1]) return { out, inputs: [...inputs] };
  const bound = inputs.map((n, i) => (reads[i] ? transposedSource(n) : n));
  const permutes = [...new Set(inputs.filter((_, i) => reads[i]).map((n) => n.id))];
  const node: Node = { ...out.node, inputs: [...bound.map((n) => n.id), ...out.node.inputs.slice(2)] };
  return { out: { ...out, node, nodes: [...permutes, ...out.nodes] }, inputs: bound };
}

/** The output and operands a kernel binds when it reads operands through views: each view's leaf in its place. */
function bindViews(out: MatmulOutput, inputs: readonly Node[], views: OperandViews): { out: MatmulOutput; inputs: Node[] } {
  if (!views[0] && !views[1]) return { out, inputs: [...inputs] };
  const bound = inputs.map((n, i) => views[i]?.leaf ?? n);
  const inlined = [...new Set(views.flatMap((v) => v?.inlined ?? []))];
  const helpers = [out.helpers, ...views.map((v) => v?.helpers)].filter(Boolean).join('\n\n');
  const node: Node = { ...out.node, inputs: [...bound.map((n) => n.id), ...out.node.inputs.slice(2)] };
  return { out: { ...out, node, helpers, nodes: [...inlined, ...out.nodes] }, inputs: bound };
}

/** The permute's input as the storage a transposed read binds (its shape: the permute's, last two dims swapped). */
function transposedSource(p: Node): Node {
  if (!isLastTwoSwap(p)) throw new Error(`internal: matmul operand %${p.id} (${p.op}) is read transposed but is not a permute of the last two dims`);
  const r = p.shape.length;
  return { ...p, id: p.inputs[0], op: 'input', inputs: [], attrs: {}, shape: [...p.shape.slice(0, -2), p.shape[r - 1], p.shape[r - 2]] };
}

/** WGSL declaring `oa`, `ob` (the batch's offsets into a and b) from the batch index `bi`. */
export function batchOffsets(d: MatmulDims, indent: string): string {
  return offsetCode(d.batchShape, [d.aStrides, d.bStrides], ['oa', 'ob'], 'bi', indent);
}

/**
 * WGSL for the start of output (row, col)'s dot product (`ar`, `bc`, from the batch offsets) and its k-th terms
 * (a[row, t], b[t, col]) in either layout.
 */
function dotOperands(d: MatmulDims, t: string, indent: string): { setup: string; a: string; b: string } {
  const setup = [d.transA ? 'let ar = oa + row;' : `let ar = oa + row * ${u32Lit(d.k)};`, d.transB ? `let bc = ob + col * ${u32Lit(d.k)};` : 'let bc = ob + col;'];
  return {
    setup: setup.map((l) => indent + l).join('\n'),
    a: d.viewA ? d.viewA('row', t) : d.transA ? `in_0[ar + ${t} * ${u32Lit(d.m)}]` : `in_0[ar + ${t}]`,
    b: d.viewB ? d.viewB(t, 'col') : d.transB ? `in_1[bc + ${t}]` : `in_1[bc + ${t} * ${u32Lit(d.n)}]`,
  };
}

/**
 * The coordinates of an operand element for a view: the batch's (`bi` over the output's batch dims, aligned
 * right, size-1 dims read at 0), or the rows folded into M (`row` over a's leading dims), then the last two.
 */
function operandCoords(d: MatmulDims, shape: readonly number[], r: string, c: string, isA: boolean): string[] {
  const lead = shape.slice(0, -2);
  if (d.batchShape.length === 0) return isA ? [...rowCoords(shape.slice(0, -1), r), c] : [...lead.map(() => '0u'), r, c];
  const coords: string[] = [];
  // bi is row-major over the batch dims: the last varies fastest.
  let inner = 1;
  const all = [...d.batchShape].reverse().map((n) => {
    const e = `((bi / ${u32Lit(inner)}) % ${u32Lit(n)})`;
    inner *= n;
    return e;
  });
  all.reverse();
  lead.forEach((n, i) => coords.push(n === 1 ? '0u' : all[i + d.batchShape.length - lead.length]));
  return [...coords, r, c];
}

/** WGSL coordinates of flat row `row` over `dims` (leading dims of a row-major operand, folded into M). */
export function rowCoords(dims: readonly number[], row: string): string[] {
  if (dims.length <= 1) return dims.length ? [row] : [];
  const coords: string[] = [];
  let inner = 1;
  for (let d = dims.length - 1; d >= 0; d--) {
    coords.unshift(d === 0 ? `((${row}) / ${u32Lit(inner)})` : `(((${row}) / ${u32Lit(inner)}) % ${u32Lit(dims[d])})`);
    inner *= dims[d];
  }
  return coords;
}

function naive(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims): Kernel {
  const second = out.second;
  const store = out.store('acc', 'i', second ? 'acc2' : undefined);
  const dot = dotOperands(d, 't', '    ');
  const body = `    let col = i % ${u32Lit(d.n)};
    let row = (i / ${u32Lit(d.n)}) % ${u32Lit(d.m)};
    let bi = i / ${u32Lit(d.m * d.n)};
${batchOffsets(d, '    ')}
${dot.setup}
    var acc = 0.0f;
    for (var t = 0u; t < ${unboundedLoop(d.k, target)}; t++) {
      acc = fma(${dot.a}, ${dot.b}, acc);
    }${second ? `
    var acc2 = 0.0f;
    for (var t = 0u; t < ${unboundedLoop(second.k, target)}; t++) {
      acc2 = fma(${second.a('row', 't')}, ${second.b('t', 'col')}, acc2);
    }` : ''}
    ${store.length === 1 ? store[0] : storeBlock(store, '    ')}`;
  const k = flatKernel(out.node, [...inputs, ...out.extra], target, `matmul_naive_f32${readsSuffix(d)}${out.suffix}`.slice(0, 96), body, { lib: out.lib, helpers: out.helpers });
  return { ...k, nodes: [...out.nodes] };
}

function splitK(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims): Kernel {
  const wg = treeWorkgroup(target, 64);
  const outs = d.batch * d.m * d.n;
  const dispatch = dispatchGroups(outs, target);
  const dot = dotOperands(d, 't', '    ');
  const main = `var<workgroup> part: array<f32, ${wg}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('i', outs, dispatch)}
    let col = i % ${u32Lit(d.n)};
    let row = (i / ${u32Lit(d.n)}) % ${u32Lit(d.m)};
    let bi = i / ${u32Lit(d.m * d.n)};
${batchOffsets(d, '    ')}
${dot.setup}
    var acc = 0.0f;
    for (var t = lid; t < ${u32Lit(d.k)}; t += ${u32Lit(wg)}) {
      acc = fma(${dot.a}, ${dot.b}, acc);
    }
    part[lid] = acc;
${treeReduceCode('part', wg, (a, b) => `${a} + ${b}`, target)}
    if (lid == 0u) ${storeBlock(out.store('part[0]', 'i'), '    ')}
}`;
  return assemble(out, inputs, target, `matmul_splitk_f32${readsSuffix(d)}`, { body: main, workgroupSize: [wg, 1, 1], dispatch });
}

/** A k step's tiles: A is [tm, tk] of the output's rows, B [tk, tn] of its columns. */
export interface TileDims {
  readonly tm: number;
  readonly tn: number;
  readonly tk: number;
}

/**
 * Element `l` of a k step's A tile ([tm, tk]: row `ar`, column `ac`) or B tile ([tk, tn]: `br`, `bc`), `sfx`
 * appended to every name: the lets that place it, when it lies inside the matrix, and its load. Consecutive
 * invocations read consecutive addresses of the stored layout.
 */
export interface OperandElement {
  readonly lets: readonly string[];
  readonly inside: string;
  readonly load: string;
}

export function operandElement(d: MatmulDims, t: TileDims, which: 'a' | 'b', l: string, sfx = '', second?: SecondProduct): OperandElement {
  const [M, N, TM, TN, TKl] = [u32Lit(d.m), u32Lit(d.n), u32Lit(t.tm), u32Lit(t.tn), u32Lit(t.tk)];
  const K = u32Lit(second ? second.k : d.k);
  if (which === 'a') {
    const [r, c] = [`ar${sfx}`, `ac${sfx}`];
    const view = second ? second.a : d.viewA;
    const inside = `m0 + ${r} < ${M} && k0 + ${c} < ${K}`;
    if (view) return { lets: [`let ${r} = ${l} / ${TKl};`, `let ${c} = ${l} % ${TKl};`], inside, load: view(`m0 + ${r}`, `k0 + ${c}`) };
    if (d.transA) return { lets: [`let ${r} = ${l} % ${TM};`, `let ${c} = ${l} / ${TM};`], inside, load: `in_0[oa + (k0 + ${c}) * ${M} + m0 + ${r}]` };
    return { lets: [`let ${r} = ${l} / ${TKl};`, `let ${c} = ${l} % ${TKl};`], inside, load: `in_0[oa + (m0 + ${r}) * ${K} + k0 + ${c}]` };
  }
  const [r, c] = [`br${sfx}`, `bc${sfx}`];
  const view = second ? second.b : d.viewB;
  const inside = `k0 + ${r} < ${K} && n0 + ${c} < ${N}`;
  if (view) return { lets: [`let ${r} = ${l} / ${TN};`, `let ${c} = ${l} % ${TN};`], inside, load: view(`k0 + ${r}`, `n0 + ${c}`) };
  if (d.transB) return { lets: [`let ${c} = ${l} / ${TKl};`, `let ${r} = ${l} % ${TKl};`], inside, load: `in_1[ob + (n0 + ${c}) * ${K} + k0 + ${r}]` };
  return { lets: [`let ${r} = ${l} / ${TN};`, `let ${c} = ${l} % ${TN};`], inside, load: `in_1[ob + (k0 + ${r}) * ${N} + n0 + ${c}]` };
}

/**
 * WGSL loading element `l` of a k step's A tile (declaring `ar`, `ac` and its value `va`) and of its B tile (`br`,
 * `bc`, `vb`): zeros outside the matrices.
 */
export function operandLoads(d: MatmulDims, t: TileDims, second?: SecondProduct): { a: string[]; b: string[] } {
  const lines = (e: OperandElement, v: string) => [...e.lets, `var ${v} = 0.0f;`, `if (${e.inside}) { ${v} = ${e.load}; }`];
  return { a: lines(operandElement(d, t, 'a', 'l', '', second), 'va'), b: lines(operandElement(d, t, 'b', 'l', '', second), 'vb') };
}

/**
 * Which operands a staged kernel loads four elements at a time from global memory (one vec4 load instead of four
 * scalar ones): an operand read from its storage (no view, no second product) whose contiguous dim (K for a, N
 * for b; M or K when read transposed) and batch offsets are multiples of 4, so each vec4 is aligned and lies
 * wholly inside or wholly outside the matrix, and whose tile is whole vec4s along that dim.
 */
export function vectorOperands(d: MatmulDims, t: TileDims, second?: SecondProduct): MatmulReads {
  if (second) return [false, false];
  const quads = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  const a = !d.viewA && (d.transA ? quads(d.m, t.tm) : quads(d.k, t.tk)) && quads(...d.aStrides);
  const b = !d.viewB && (d.transB ? quads(d.k, t.tk) : quads(d.n, t.tn)) && quads(...d.bStrides);
  return [a, b];
}

/**
 * Vec4 `l` of a k step's A or B tile (vectorOperands): the lets placing its first element (`ar`/`ac` or `br`/`bc`,
 * with `sfx`), whether it lies inside the matrix, its vec4 load, and which place name its components step along.
 */
export function operandVector(d: MatmulDims, t: TileDims, which: 'a' | 'b', l: string, sfx: string): OperandElement & { readonly along: string } {
  const [M, N, K] = [u32Lit(d.m), u32Lit(d.n), u32Lit(d.k)];
  const per = (x: number) => u32Lit(x / 4);
  if (which === 'a') {
    const [r, c] = [`ar${sfx}`, `ac${sfx}`];
    const inside = `m0 + ${r} < ${M} && k0 + ${c} < ${K}`;
    if (d.transA) return { lets: [`let ${r} = (${l} % ${per(t.tm)}) * 4u;`, `let ${c} = ${l} / ${per(t.tm)};`], inside, load: `in_0[(oa + (k0 + ${c}) * ${M} + m0 + ${r}) / 4u]`, along: r };
    return { lets: [`let ${r} = ${l} / ${per(t.tk)};`, `let ${c} = (${l} % ${per(t.tk)}) * 4u;`], inside, load: `in_0[(oa + (m0 + ${r}) * ${K} + k0 + ${c}) / 4u]`, along: c };
  }
  const [r, c] = [`br${sfx}`, `bc${sfx}`];
  const inside = `k0 + ${r} < ${K} && n0 + ${c} < ${N}`;
  if (d.transB) return { lets: [`let ${c} = ${l} / ${per(t.tk)};`, `let ${r} = (${l} % ${per(t.tk)}) * 4u;`], inside, load: `in_1[(ob + (n0 + ${c}) * ${K} + k0 + ${r}) / 4u]`, along: r };
  return { lets: [`let ${r} = ${l} / ${per(t.tn)};`, `let ${c} = (${l} % ${per(t.tn)}) * 4u;`], inside, load: `in_1[(ob + (k0 + ${r}) * ${N} + n0 + ${c}) / 4u]`, along: c };
}

/** The kernel's WGSL with the operands loaded as vec4s (`vec`) declared so. */
export const vectorBindings = (wgsl: string, vec: MatmulReads): string => declareVec4(wgsl, ['in_0', 'in_1'].filter((_, i) => vec[i]));

/**
 * How a tiled kernel's invocations stage a k step's tiles: 'loop' (a loop of guarded loads, each stored at once),
 * 'unrolled' (every load first, branchless, then the stores: the loads overlap instead of waiting on each other),
 * 'prefetch' (unrolled, the next step's loads issued before this step's products, into registers).
 */
export type Staging = 'loop' | 'unrolled' | 'prefetch';

/** Whether `target` is a software adapter (lavapipe's, or the named compile target for it): CPU threads, slow shader compiles. */
export const softwareTarget = (target: Target): boolean => target.isFallbackAdapter || target.name === 'lavapipe';

/** 'loop' on software adapters (LLVM compiles unrolled staging slowly), else 'prefetch'. */
export const defaultStaging = (target: Target): Staging => (softwareTarget(target) ? 'loop' : 'prefetch');

/** WGSL staging a k step's tiles: declarations before the k loop, the loads of step `k`, and the stores. */
export interface TileStaging {
  readonly before: string;
  load(k: string): string;
  readonly store: string;
}

/**
 * Unrolled staging: each of the `T` invocations (numbered `lid`) loads its elements of both tiles into registers
 * (`va_q`, `vb_q`) without branches (an element outside the matrices reads what WGSL's bounds rules give and
 * becomes zero), then `putA`/`putB` store them (given the element's suffix; `ar_q`, `ac_q`, `br_q`, `bc_q` in
 * scope). Places are recomputed at the stores: cheap, and fewer live registers.
 */
export function unrolledStaging(d: MatmulDims, dims: TileDims, T: number, putA: (sfx: string) => string, putB: (sfx: string) => string, lid = 'lid', second?: SecondProduct, vec: MatmulReads = [false, false]): TileStaging {
  const parts = (which: 'a' | 'b', count: number, put: (sfx: string) => string, vector: boolean) => {
    const v = which === 'a' ? 'va' : 'vb';
    if (vector) return vectorParts(which, count / 4, put, v);
    const n = Math.ceil(count / T);
    const load: string[] = [];
    const store: string[] = [];
    for (let q = 0; q < n; q++) {
      const l = `(${lid} + ${u32Lit(q * T)})`;
      const e = operandElement(d, dims, which, l, `_${q}`, second);
      load.push(`{ ${e.lets.join(' ')} ${v}_${q} = select(0.0f, ${e.load}, ${e.inside}); }`);
      const guard = (q + 1) * T > count ? `if (${l} < ${u32Lit(count)}) ` : '';
      store.push(`{ ${e.lets.join(' ')} ${guard}{ ${put(`_${q}`)} } }`);
    }
    return { decl: Array.from({ length: n }, (_, q) => `  var ${v}_${q} = 0.0f;`).join('\n'), load, store };
  };
  // Vec4 loads: each into a vec4 register, then its four elements put one by one (names `_q_e`).
  const vectorParts = (which: 'a' | 'b', vecs: number, put: (sfx: string) => string, v: string) => {
    const n = Math.ceil(vecs / T);
    const load: string[] = [];
    const store: string[] = [];
    for (let q = 0; q < n; q++) {
      const l = `(${lid} + ${u32Lit(q * T)})`;
      const e = operandVector(d, dims, which, l, `_${q}`);
      load.push(`{ ${e.lets.join(' ')} ${v}_${q} = select(vec4<f32>(0.0f), ${e.load}, ${e.inside}); }`);
      const [r, c] = which === 'a' ? [`ar_${q}`, `ac_${q}`] : [`br_${q}`, `bc_${q}`];
      const comps = [0, 1, 2, 3].map((i) => {
        const at = (name: string) => `let ${name}_${i} = ${name}${name === e.along && i ? ` + ${u32Lit(i)}` : ''};`;
        return `{ ${at(r)} ${at(c)} let ${v}_${q}_${i} = ${v}_${q}[${i}]; ${put(`_${q}_${i}`)} }`;
      });
      const guard = (q + 1) * T > vecs ? `if (${l} < ${u32Lit(vecs)}) ` : '';
      store.push(`{ ${e.lets.join(' ')} ${guard}{ ${comps.join(' ')} } }`);
    }
    return { decl: Array.from({ length: n }, (_, q) => `  var ${v}_${q} = vec4<f32>(0.0f);`).join('\n'), load, store };
  };
  const a = parts('a', dims.tm * dims.tk, putA, vec[0]);
  const b = parts('b', dims.tk * dims.tn, putB, vec[1]);
  return {
    before: `${a.decl}\n${b.decl}`,
    load: (k) => `    {\n      let k0 = ${k};\n${[...a.load, ...b.load].map((x) => `      ${x}`).join('\n')}\n    }`,
    store: [...a.store, ...b.store].map((x) => `    ${x}`).join('\n'),
  };
}

/**
 * WGSL: a staged kernel's loop over K in steps of `step`: stage the step (or store what the last step prefetched),
 * barrier, prefetch the next step, `compute`, barrier. `bound` is the loop's WGSL bound.
 */
export function stagedKLoop(how: Staging, s: TileStaging, bound: string, step: number, compute: string): string {
  const prefetch = how === 'prefetch';
  return `${s.before}${prefetch ? `\n${s.load('0u')}` : ''}
  for (var ks = 0u; ks < ${bound}; ks += ${u32Lit(step)}) {
${prefetch ? s.store : `${s.load('ks')}\n${s.store}`}
    workgroupBarrier();${prefetch ? `\n${s.load(`ks + ${u32Lit(step)}`)}` : ''}
${compute}
    workgroupBarrier();
  }`;
}

/**
 * Where invocations keep the tiles they stage: the offsets (WGSL ending in ` + `, '' for none) of their A and B
 * tiles in tile_a and tile_b, and the invocations' number among those that stage them (`lid`). Each half of a K
 * split has its own tiles.
 */
export interface TileSlots {
  readonly a: string;
  readonly b: string;
  readonly lid: string;
}
export const ONE_SLOT: TileSlots = { a: '', b: '', lid: 'lid' };

/**
 * A k step's A [tm, tk] and B [tk, tn] tiles staged by `T` invocations numbered `slots.lid`, as `how` says: the
 * guarded loop (per tile, elements T apart, each loaded, zero outside, and put at once; loop bounds from `bound`) or
 * unrolledStaging. `putA`/`putB` store an element given its names' suffix ('' in the loop).
 */
export function stageTiles(how: Staging, d: MatmulDims, dims: TileDims, T: number, slots: TileSlots, putA: (sfx: string) => string, putB: (sfx: string) => string, bound: (n: number) => string, second?: SecondProduct, vec: MatmulReads = [false, false]): TileStaging {
  if (how !== 'loop') return unrolledStaging(d, dims, T, putA, putB, slots.lid, second, vec);
  const loads = operandLoads(d, dims, second);
  const stage = (count: number, lines: string[], put: string) => {
    const body = [...lines, put].map((x) => `        ${x}`).join('\n');
    return `    for (var q = 0u; q < ${bound(Math.ceil(count / T))}; q++) {
      let l = ${slots.lid} + q * ${u32Lit(T)};
${count % T ? `      if (l < ${u32Lit(count)}) {\n${body}\n      }` : body}
    }`;
  };
  return { before: '', load: (k) => `    let k0 = ${k};`, store: `${stage(dims.tm * dims.tk, loads.a, putA(''))}\n${stage(dims.tk * dims.tn, loads.b, putB(''))}` };
}

/**
 * A K split into `split` halves taking steps of `step` in turn: half `h` (a WGSL u32) loads `h` steps past the
 * loop's step, and the loop's bound (`k` rounded up) gives every half the same number of steps, so the loop and
 * its barriers stay uniform; past K the halves stage zeros.
 */
export function splitSteps(s: TileStaging, k: number, split: number, step: number, h: string): { readonly staging: TileStaging; readonly k: number } {
  if (split === 1) return { staging: s, k };
  return { staging: { ...s, load: (k0) => s.load(`${k0} + ${h} * ${u32Lit(step)}`) }, k: Math.ceil(k / (split * step)) * split * step };
}

/**
 * The operands a kernel staged `how` loads as vec4s: vectorOperands' for unrolled and prefetched staging unless
 * Target.tuning.vectorLoads is false (the guarded loop, the software adapters' default, stays scalar).
 */
export function vectorLoads(target: Target, how: Staging, d: MatmulDims, t: TileDims, second?: SecondProduct): MatmulReads {
  return how === 'loop' || target.tuning?.vectorLoads === false ? [false, false] : vectorOperands(d, t, second);
}

/**
 * The matmul kernel of a given variant (tests force each one); the rule picks matmulVariant's. `out` is how
 * it stores each element (default: the product itself). `reads` marks operands that are permutes of the last
 * two dims to read transposed from the permute's input (the variant is still the one of the permuted shapes,
 * so the summation order is the permute + matmul path's). `sgmatTiles` forces the sgmat variant's tiles.
 */
export function matmulKernel(
  node: Node,
  inputs: readonly Node[],
  target: Target,
  variant: MatmulVariant = matmulVariant(node, inputs, target),
  out: MatmulOutput = plainOutput(node),
  reads: MatmulReads = DIRECT_READS,
  views: OperandViews = [undefined, undefined],
  sgmatTiles?: SgmatTiles,
): Kernel {
  if ((views[0] && reads[0]) || (views[1] && reads[1])) throw new Error(`internal: matmul %${node.id}: an operand is read both transposed and through a view`);
  const plain = matmulDims(node, inputs, reads);
  const [va, vb] = views;
  const d: MatmulDims = {
    ...plain,
    ...(va ? { viewA: (row: string, t: string) => va.call(operandCoords(plain, inputs[0].shape, row, t, true)) } : {}),
    ...(vb ? { viewB: (t: string, col: string) => vb.call(operandCoords(plain, inputs[1].shape, t, col, false)) } : {}),
  };
  if (out.second && (d.batch !== 1 || variant === 'splitk')) throw new Error(`internal: matmul %${node.id}: a second product needs one batch and the naive or tiled variant`);
  if (out.kRange && (out.second || (variant !== 'tiled' && variant !== 'sgmat'))) throw new Error(`internal: matmul %${node.id}: K ranges need the tiled or sgmat variant and no second product`);
  const viewed = bindViews(out, inputs, views);
  const bound = bindStorage(viewed.out, viewed.inputs, reads);
  switch (variant) {
    case 'tiled':
      return tiledMatmul(bound.out, bound.inputs, target, d, node.id);
    case 'sgmat':
      return sgmatKernel(bound.out, bound.inputs, target, d, readsSuffix(d), sgmatTiles);
    case 'splitk':
      return splitK(bound.out, bound.inputs, target, d);
    case 'naive':
      return naive(bound.out, bound.inputs, target, d);
    case 'blocked':
      return blockedMatmul(bound.out, bound.inputs, target, d);
  }
}

const matmulGen: KernelGen = (node, inputs, target) => matmulKernel(node, inputs, target);

export const MATMUL_GPU_RULES = {
  matmul: kernelRule(matmulGen),
};
