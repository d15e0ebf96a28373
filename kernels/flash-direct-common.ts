// What the tensor-core flash kernels that load their fragments straight from f16 storage share
// (kernels/flash-direct.ts, the forward; kernels/flash-direct-backward.ts, dq and dk+dv): one subgroup per workgroup
// owns 16 rows of one (batch, head) and sweeps the other side's rows in tiles of `keys` (16, 32 or 64); products
// of a left operand held in registers with the swept rows read in place (column-major for a transposed operand) go
// to an f32 scratch, where the lanes' elementwise step reads them; accumulators stay in result fragments and go out
// through the scratch at the end.
// Ragged edges: an owned tile past its length reads the last 16 rows and writes only its own; a swept tile past its
// length reads the last `keys` rows and counts only those not seen before (jc + j >= j0). So both lengths must be at
// least 16 and `keys`.
import { isExactHalf } from '../compiler/codegen/half.js';
import type { Target } from '../compiler/codegen/types.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { rowLayout, type FlashReads } from './flash-common.js';
import { dispatchGroups, flatGroupExpr, u32Lit, unboundedLoop } from './elementwise.js';
import { PAD16, PAD32 } from './flash-sgmat-common.js';
import { nativeSgmat, sgmatConfig, sgmatIds, sgmatLanes, type SgmatOps } from './sgmat.js';

/** Rows a workgroup owns (one subgroup, the configs' m). */
export const DIRECT_ROWS = 16;

/** Swept rows per tile the kernels take (Target.tuning.flashDirectKeys; default 16). */
export type DirectKeys = 16 | 32 | 64;

/** The swept rows per tile on `target` for a sweep of `len` rows: the tuning's, or 16 where `len` is shorter. */
export function directKeys(target: Target, len: number): DirectKeys {
  const keys = target.tuning?.flashDirectKeys ?? 16;
  return len >= keys ? keys : 16;
}

/** Scratch row strides: f32 (16-byte aligned rows off one bank) and f16 for `cols` columns. */
export const scratchStride32 = (cols: number): number => cols + PAD32;
export const scratchStride16 = (cols: number): number => cols + PAD16;

/** Why the direct kernels cannot take these row operands on `target` (beyond their own checks), or undefined. */
export function directOperandsUnfit(graph: Graph, target: Target, rows: readonly Node[], dims: readonly number[], lens: readonly number[]): string | undefined {
  if (!sgmatConfig(target, 16, 8, 8) || !sgmatConfig(target, 16, 8, 16)) return 'the target lists no f16 x f16 -> f32 16x8x8 and 16x8x16 subgroup-matrix configs';
  if (!rows.every((x) => isExactHalf(graph, x.id))) return `${rows.length === 3 ? 'q, k or v' : 'q, k, v or g'} is not exactly f16`;
  if (dims.some((d) => d % 8)) return `head dims ${dims.join(' and ')} are not multiples of 8`;
  if (lens.some((s) => s < DIRECT_ROWS)) return `fewer than ${DIRECT_ROWS} queries or keys`;
  return undefined;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** A row operand as the direct kernels load it: rows at `stride` from `base`, the (batch, head)'s first element. */
export interface DirectOperand {
  readonly binding: string;
  /** Its index among the kernel's bindings (it must be stored as f16: Kernel.halfOnly). */
  readonly index: number;
  /** WGSL of the (batch, head) `bh`'s element [0, 0]. */
  readonly base: string;
  readonly stride: number;
}

/**
 * The row operands in `slots` as the direct kernels load them (H heads per batch), or why one cannot be: its view
 * is no affine map of one binding, its elements along a row are not adjacent, or its rows do not start on 16 bytes
 * (8 f16s; subgroup-matrix loads from storage want aligned rows).
 */
export function directOperands(reads: FlashReads, inputs: readonly Node[], slots: readonly number[], H: number): DirectOperand[] | string {
  const U = u32Lit;
  const ops: DirectOperand[] = [];
  for (const slot of slots) {
    const l = rowLayout(reads, inputs, slot);
    if (!l) return `input ${slot} is read through a view that is no affine map of one binding`;
    const [sb, sh, ss, sd] = l.strides;
    if (sd !== 1) return `input ${slot}'s rows are not contiguous (element stride ${sd})`;
    if (ss < inputs[slot].shape[3]) return `input ${slot}'s rows overlap (row stride ${ss})`;
    if ([l.offset, sb, sh, ss].some((x) => x % 8)) return `input ${slot}'s rows do not start on 16 bytes (offset ${l.offset}, strides ${l.strides.join(', ')})`;
    const terms = sb === H * sh ? [sh ? `bh * ${U(sh)}` : ''] : [sb ? `(bh / ${U(H)}) * ${U(sb)}` : '', sh ? `(bh % ${U(H)}) * ${U(sh)}` : ''];
    const base = [...terms, l.offset ? U(l.offset) : ''].filter(Boolean).join(' + ') || '0u';
    ops.push({ binding: l.binding, index: l.index, base, stride: ss });
  }
  return ops;
}

/** The binding indices of the row operands in `slots` (check directOperands first): those the schedule must store as f16. */
export function directBindings(reads: FlashReads, inputs: readonly Node[], slots: readonly number[]): number[] {
  const ops = directOperands(reads, inputs, slots, inputs[0].shape[1]);
  if (typeof ops === 'string') throw new Error(`internal: ${ops}`);
  return ops.map((o) => o.index);
}

/**
 * Statements: `name_c` (c < keys/8) = left · rightᵀ for the tile's keys, on the 16x8x8 config: `left(t)` names the
 * t-th 16x8 left fragment (t < width/8, in registers); the right fragments are rows jc + 8c … of operand `src`
 * (from `base`), loaded column-major; then stored into the f32 scratch `scratch` (stride `stride`).
 */
export function productToScratch(ops: SgmatOps, name: string, left: (t: number) => string, src: DirectOperand, base: string, width: number, keys: number, scratch: string, stride: number, lo?: SplitParts<(t: number) => string>): string[] {
  const U = u32Lit;
  const frags = keys / 8;
  const right = (t: number, c: number, at = '') => ops.loadRight(src.binding, `${at}${base} + (jc + ${U(8 * c)}) * ${U(src.stride)} + ${U(8 * t)}`, U(src.stride), true);
  const mma = (l: string, r: string, c: number) => `${name}_${c} = ${ops.multiplyAccumulate(l, r, `${name}_${c}`)};`;
  return [
    ...range(frags).map((c) => `var ${name}_${c} = ${ops.zero(U(c))};`),
    ...range(width / 8).flatMap((t) =>
      range(frags).flatMap((c) => (lo ? [mma(left(t), right(t, c), c), mma(left(t), right(t, c, `${U(lo.right)} + `), c), mma(lo.left(t), right(t, c), c)] : [mma(left(t), right(t, c), c)])),
    ),
    ...range(frags).map((c) => ops.store(scratch, U(8 * c), `${name}_${c}`, U(stride))),
  ];
}

/**
 * Statements: `acc_j` (j < width/8) += left · rows, on the 16x8x16 config: the left fragments are the tile's 16 x keys
 * f16 scratch `left` (stride `stride`), 16 columns at a time; the right ones rows jc + 16t … of operand `src` (from
 * `base`), row-major.
 */
export function accumulateRows(ops: SgmatOps, acc: string, left: string, stride: number, src: DirectOperand, base: string, width: number, keys: number, lo?: SplitParts<number>): string[] {
  const U = u32Lit;
  const right = (t: number, j: number, at = '') => ops.loadRight(src.binding, `${at}${base} + ${t ? `(jc + ${U(16 * t)})` : 'jc'} * ${U(src.stride)} + ${U(8 * j)}`, U(src.stride));
  const mma = (l: string, r: string, j: number) => `  ${acc}_${j} = ${ops.multiplyAccumulate(l, r, `${acc}_${j}`)};`;
  return range(keys / 16).flatMap((t) => [
    '{',
    `  let ${acc}_l = ${ops.loadLeft(left, U(16 * t), U(stride))};`,
    ...(lo ? [`  let ${acc}_ll = ${ops.loadLeft(left, U(lo.left + 16 * t), U(stride))};`] : []),
    ...range(width / 8).flatMap((j) => (lo ? [mma(`${acc}_l`, right(t, j), j), mma(`${acc}_l`, right(t, j, `${U(lo.right)} + `), j), mma(`${acc}_ll`, right(t, j), j)] : [mma(`${acc}_l`, right(t, j), j)])),
    '}',
  ]);
}

/**
 * Row operands as f32 values split into f16 pairs (kernels/flash-split16.ts), by input slot (q, k, v, g): each
 * operand's binding holds its hi part, its lo part from the element count given here, then its power-of-two
 * exponents (per row; v's per column of each (batch, head) in the forward).
 */
export type SplitCounts = readonly number[];

/**
 * Where the lo parts of f32 operands split into f16 pairs lie (kernels/matmul-split16.ts): `left`, the left
 * operand's (a fragment name per step, or an element offset into the scratch), `right`, the right operand's offset
 * into its binding. Products become hi·hi' + hi·lo' + lo·hi'.
 */
export interface SplitParts<L> {
  readonly left: L;
  readonly right: number;
}

/** WGSL: the sweep over `len` rows in tiles of `keys`; `jc` is the tile's first row read, `j0` the first counted. */
export function sweepLoop(target: Target, len: number, keys: number, body: string): string {
  return `  for (var j0 = 0u; j0 < ${unboundedLoop(len, target)}; j0 += ${u32Lit(keys)}) {
    // The tile's rows: the last ${keys} where it would pass ${len}; those before j0 were counted already.
    let jc = min(j0, ${u32Lit(len - keys)});
${body}
  }`;
}

/**
 * WGSL: the kernel's entry, one subgroup per workgroup, `groups` workgroups over `dispatch` (directDispatch): `bh` (batch, head), `r0` (the owned tile's first row) and `ra` (the first row it reads: the last
 * 16 where the tile would pass `len`) in scope for `body`, with `lane` and `lanes`.
 */
export function directMain(target: Target, comment: string, groups: number, dispatch: readonly [number, number, number], len: number, body: string): string {
  const U = u32Lit;
  const lanes = sgmatLanes(target);
  const ids = sgmatIds(nativeSgmat(target), lanes);
  const tiles = Math.ceil(len / DIRECT_ROWS);
  return `// ${comment}
@compute @workgroup_size(${lanes}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${ids.params}) {
  let grp = ${flatGroupExpr(dispatch)};
  if (grp >= ${U(groups)}) { return; }
${ids.code}  let bh = grp / ${U(tiles)};
  let r0 = (grp % ${U(tiles)}) * ${U(DIRECT_ROWS)};
  let ra = min(r0, ${U(len - DIRECT_ROWS)});
${body}
}`;
}

/**
 * WGSL: the result fragments `acc_j` (j < frags) out to `out` (rows of `width` for this (batch, head) of `len` rows,
 * from row ra + r where ra + r >= r0), through the f32 scratch `scratch` (`cols` columns, stride `stride`) as many
 * fragments at a time as fit; `value(x, col)` maps the scratch's element `x` of column `col` (e.g. ·scale, / l).
 */
export function fragmentsOut(ops: SgmatOps, acc: string, frags: number, scratch: string, cols: number, stride: number, out: string, len: number, width: number, value: (x: string, col: string) => string): string {
  const U = u32Lit;
  const per = cols / 8;
  return range(Math.ceil(frags / per))
    .map((c) => {
      const js = range(Math.min(per, frags - per * c)).map((x) => per * c + x);
      return `  workgroupBarrier();
${js.map((j) => `  ${ops.store(scratch, U(8 * (j - per * c)), `${acc}_${j}`, U(stride))}`).join('\n')}
  workgroupBarrier();
  for (var r = lane; r < ${U(DIRECT_ROWS)}; r += lanes) {
    if (ra + r >= r0) {
      for (var e = 0u; e < ${U(8 * js.length)}; e++) { ${out}[(bh * ${U(len)} + ra + r) * ${U(width)} + ${U(8 * per * c)} + e] = ${value(`${scratch}[r * ${U(stride)} + e]`, `${U(8 * per * c)} + e`)}; }
    }
  }`;
    })
    .join('\n');
}

/** Workgroups for `bh` (batch, head) pairs of `len` owned rows: their count and dispatch. */
export function directDispatch(target: Target, bh: number, len: number): { readonly groups: number; readonly dispatch: [number, number, number] } {
  const groups = bh * Math.ceil(len / DIRECT_ROWS);
  return { groups, dispatch: dispatchGroups(groups, target) };
}
