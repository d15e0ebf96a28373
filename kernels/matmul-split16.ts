// f32 matmuls on the f16 tensor cores at f32 accuracy (Target.tuning.f32TensorCores; CUTLASS's 3xTF32 with f16):
// `matmul_split16_f32`. No FMA kernel of ours reaches 0.9x cuBLAS FP32 on the H200 (0.57–0.74x), and Dawn's subgroup
// matrices multiply f16 at 485–587 TFLOP/s from storage (docs/perf.md): three f16 products per f32 one leave a
// third of that, several times cuBLAS FP32's 37–51. Unmeasured on NVIDIA: offered to `visft tune`.
//
// A chain of three kernels:
// - `split16_{rows,cols}_f32`, once per operand: a power-of-two scale 2^s per output row of a (per output column of
//   b) brings the largest magnitude there just below 2^14, then x·2^s = hi + lo with hi its top 11 significant bits
//   (exact in f16; the library's f16_hi) and lo = f16(x·2^s − hi), both in the operand's own layout, into one f16 scratch: hi, then lo,
//   then the exponents s (small integers, exact in f16). One binding then feeds every fragment load, as the
//   emulated spelling needs.
//   Where the scale runs along the operand's rows (its contiguous dim) a workgroup takes a row; across its rows,
//   32 adjacent columns (loads coalesced across them), several invocations down each.
// - the direct tensor-core kernel (kernels/matmul-sgmat-direct.ts) on the pairs: per fragment step
//   hi·hi' + hi·lo' + lo·hi' accumulated in f32, each output element then times 2^-(s_row + s_col) before the
//   epilogue (bias, GELU, residual, a fused LoRA product summed in f32: the f32 kernels' own). Outputs of too few
//   tiles to fill the GPU split K into ranges as the other tensor-core products do (kernels/matmul-split-across.ts):
//   partials, then matmul_ksum (which sums the LoRA product).
// Accuracy: hi·hi', hi·lo' and lo·hi' are exact in f32; the dropped lo·lo' and lo's own rounding are about 2^-21 of
// each term, and lo keeps absolute precision down to 2^-24 below the row's largest magnitude (f16's subnormals),
// so the error is f32's normwise bound (about K·2^-24·Σ|a||b|) within a small factor: scales keep gradients of 1e-6
// from losing their bits to f16's range. Not bit for bit the f32 kernels (another summation, other roundings):
// test/kernels/matmul-split16.test.ts bounds it against the float64 reference.
// A row or column holding inf or NaN keeps no scale (exponent 0) and its lo parts are NaN, so the outputs it touches
// are NaN where the f32 kernels may give ±inf.
import type { KernelChain, Scratch, Target } from '../compiler/codegen/types.js';
import { numel, type Node } from '../compiler/ir/graph.js';
import { dispatchGroups, f32Lit, flatGroupExpr, makeKernel, u32Lit, unboundedLoop } from './elementwise.js';
import { bindStorage, matmulDims, matmulGrid, plainOutput, type MatmulOutput, type MatmulReads, type OperandView, type OperandViews } from './matmul.js';
import { kRanges, matmulSplits, PARTIALS, sumKernel } from './matmul-split-across.js';
import { sgmatChoice, sgmatTiles } from './matmul-sgmat.js';
import { sgmatDirectMatmul, strideUnaligned } from './matmul-sgmat-direct.js';
import { treeWorkgroup } from './reduce.js';
import { NO_SGMAT_CONFIG, nativeSgmat, sgmatShape } from './sgmat.js';

/** Scratch placeholders of the chain: a's and b's split (PARTIALS, -1, holds K ranges' partial products). */
const SPLIT_A = -2;
const SPLIT_B = -3;

/** The largest magnitude's exponent after scaling: below 2^14, so f16 (max 65504) holds hi with room to round. */
export const TOP = 14;

/**
 * The exponent of a row or column of zeros: the largest there is, so a minimum over exponents (the split attention
 * backward's a-priori bounds, kernels/flash-direct-backward.ts splitScales) skips it; 2^-126 stays a normal f32, and
 * zero times it is zero.
 */
export const ZERO_EXPONENT = 126;

/** Why the product cannot run split on the tensor cores here, or undefined when it can. */
export function split16Unfit(node: Node, inputs: readonly Node[], target: Target, out: MatmulOutput, reads: MatmulReads, views: OperandViews): string | undefined {
  if (!target.tuning?.f32TensorCores) return 'not asked for (Target.tuning.f32TensorCores)';
  const shape = sgmatShape(target);
  if (!shape) return NO_SGMAT_CONFIG;
  if ((views[0] && reads[0]) || (views[1] && reads[1])) return 'an operand is read both transposed and through a view';
  const d = matmulDims(node, inputs, reads);
  if (d.k % shape.k !== 0) return `K (${d.k}) is not a multiple of the fragment's ${shape.k}`;
  if (d.m < shape.m || d.n < shape.n) return `the output (${d.m}x${d.n}) is smaller than one fragment`;
  return strideUnaligned(d);
}

/**
 * The chain: a's split, b's split, the product (check split16Unfit first). An operand read through a view (`views`)
 * is read so by its split, which stores it plain for the product.
 */
export function split16Chain(node: Node, inputs: readonly Node[], target: Target, out: MatmulOutput, reads: MatmulReads, views: OperandViews = [undefined, undefined]): KernelChain {
  const d = matmulDims(node, inputs, reads);
  const bound = bindStorage(out, inputs, reads);
  const [a, b] = bound.inputs;
  // a's scales run along its rows (one per output row): its storage's rows unless read transposed; b's the other way.
  const sa = splitKernel(node, a, d.transA ? 'cols' : 'rows', SPLIT_A, target, viewSource(a, views[0]));
  const sb = splitKernel(node, b, d.transB ? 'rows' : 'cols', SPLIT_B, target, viewSource(b, views[1]));
  // The tensor-core kernels' default tiles, not Target.tuning.sgmatTiles (chosen for the f16 products by their rows).
  const { shape, tiles } = sgmatChoice(target, d, sgmatTiles(sgmatShape(target)!, d, nativeSgmat(target)));
  const split = { aLo: numel(a.shape), bLo: numel(b.shape), aScales: 2 * numel(a.shape), bScales: 2 * numel(b.shape) };
  // The product reads the splits in the operands' places, declared as the f16 arrays they are.
  const product = (o: MatmulOutput) => {
    const k = sgmatDirectMatmul({ ...o, node: { ...o.node, inputs: [SPLIT_A, SPLIT_B, ...o.node.inputs.slice(2)] } }, [sa.node, sb.node], target, d, '', shape, { ...tiles, ksplit: 1 }, split);
    return { ...k, wgsl: halfDecl(halfDecl(k.wgsl, 0, 'read'), 1, 'read') };
  };
  const splits = [sa, sb];
  // Outputs of too few tiles to fill the GPU: K in ranges into partials, then their sum and the epilogue, as the
  // tensor-core kernel's own chain does (kernels/matmul-split-across.ts); each range's partials are scaled back.
  const ranges = matmulSplits(node, inputs, target, 'sgmat', reads, false, tiles);
  if (ranges > 1) {
    const range = kRanges(d.k, ranges, matmulGrid(node, inputs, target, 'sgmat', reads, tiles).kStep);
    const outs = numel(node.shape);
    const partNode: Node = { ...node, id: PARTIALS, shape: [range.splits, ...node.shape] };
    // Bound as the one-product kernel is: transposed operands' permutes are computed in place here too.
    const partials = product(bindStorage({ ...plainOutput(partNode), nodes: [node.id], kRange: range }, inputs, reads).out);
    const scratch: Scratch = { ref: PARTIALS, words: range.splits * outs, name: 'partials' };
    return { kernels: [...splits.map((x) => x.kernel), partials, sumKernel(out, partNode, range.splits, outs, target)], scratch: [...splits.map((x) => x.scratch), scratch] };
  }
  return { kernels: [...splits.map((x) => x.kernel), product(bound.out)], scratch: splits.map((x) => x.scratch) };
}

/** How a split reads operand `x` through `view` (its leaf bound alone), or undefined without one. */
function viewSource(x: Node, view: OperandView | undefined): SplitSource | undefined {
  if (!view) return undefined;
  const code = view.rebound('in_0');
  const lead = x.shape.slice(0, -2);
  // Matrix `mat`'s coordinates along the leading dims, row-major.
  const batch = (mat: string) => lead.map((_, i) => `((${mat}) / ${u32Lit(numel(lead.slice(i + 1)))}) % ${u32Lit(lead[i])}`);
  return { bindings: [view.leaf], element: (mat, r, c) => code.call([...batch(mat), r, c]), helpers: code.helpers, lib: [], inlined: view.inlined };
}

/** `wgsl` with binding `i` declared array<f16> instead of array<f32> (`enable f16;` is the kernel's). */
export function halfDecl(wgsl: string, i: number, access: 'read' | 'read_write'): string {
  const name = access === 'read' ? `in_${i}` : 'out_0';
  const from = `@group(0) @binding(${i}) var<storage, ${access}> ${name}: array<f32>;`;
  if (!wgsl.includes(from)) throw new Error(`internal: a split16 kernel does not declare binding ${i} as makeKernel does`);
  return wgsl.replace(from, from.replace('array<f32>', 'array<f16>'));
}

/**
 * Where a split reads `x`'s elements when it is no stored value of its own but a view computed in place (a ViT's q, k
 * and v: heads of one projection, kernels/attention.ts attentionReads): the bound leaves, in binding order, and the
 * WGSL of element [mat, r, c] of x seen as [..., R, C].
 */
export interface SplitSource {
  readonly bindings: readonly Node[];
  readonly element: (mat: string, r: string, c: string) => string;
  /** Module-scope WGSL the element reads call, its library functions, and the IR nodes it computes. */
  readonly helpers: string;
  readonly lib: readonly string[];
  readonly inlined: readonly number[];
}

/**
 * The kernel splitting `x` (stored [..., R, C], or read as `source` says) with one scale per row (`rows`: along its
 * contiguous dim) or per column (`cols`) of each matrix, into scratch `ref`: hi (numel f16), lo (numel), then the
 * exponents (one per row or column of each matrix, in order).
 */
export function splitKernel(mm: Node, x: Node, along: 'rows' | 'cols', ref: number, target: Target, source?: SplitSource) {
  const U = u32Lit;
  const [R, C] = x.shape.slice(-2);
  const mats = numel(x.shape.slice(0, -2));
  const n = numel(x.shape);
  const count = mats * (along === 'rows' ? R : C);
  const scratch: Scratch = { ref, words: Math.ceil((2 * n + count) / 2), name: 'split16' };
  const node: Node = { ...mm, id: ref, inputs: source ? source.bindings.map((b) => b.id) : [x.id], shape: [2 * n + count] };
  // The exponent s for a largest magnitude m: m·2^s just below 2^TOP; 0 for a non-finite m; ZERO_EXPONENT for a
  // zero m (any scale is exact there, and bounds taken as minima over exponents must not see it).
  const exponent = (m: string) =>
    `select(select(0, ${ZERO_EXPONENT}, ${m} == 0.0f), clamp(${TOP} - frexp(${m}).exp, -126, 126), ${m} > 0.0f && ${m} <= ${f32Lit(3.4028234663852886e38)})`;
  // hi: v's top 11 significant bits, lo: the exact rest, rounded to f16.
  const put = (at: string) => [`let v = ${read} * f;`, 'let hi = f16_hi(v);', `out_0[${at}] = f16(hi);`, `out_0[${U(n)} + ${at}] = f16(v - hi);`];
  // A workgroup takes CB scale indices (rows: 1; columns: 32 adjacent ones, loads coalesced across them) with RG
  // invocations each along the elements they scale, whose partial maxima it combines in a fixed order.
  const wg = treeWorkgroup(target, along === 'rows' ? 64 : 256);
  const CB = along === 'rows' ? 1 : Math.min(32, wg);
  const RG = wg / CB;
  const [len, step] = along === 'rows' ? [C, 1] : [R, C];
  const blocks = Math.ceil(count / CB);
  const dispatch = dispatchGroups(blocks, target);
  // The first element an index scales (indices past the last read the last one; their results are not written).
  const first = along === 'rows' ? `i * ${U(C)}` : `(i / ${U(C)}) * ${U(R * C)} + i % ${U(C)}`;
  const at = `base + t * ${U(step)}`;
  // Element t of index i: stored at `at`, or the source's element [mat, r, c].
  const read = !source ? `in_0[${at}]` : along === 'rows' ? source.element(`i / ${U(R)}`, `i % ${U(R)}`, 't') : source.element(`i / ${U(C)}`, 't', `i % ${U(C)}`);
  const body = `var<workgroup> part: array<f32, ${wg}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let blk = ${flatGroupExpr(dispatch)};
  if (blk >= ${U(blocks)}) { return; }
  let idx = blk * ${U(CB)} + lid % ${U(CB)};
  let t0 = lid / ${U(CB)};
  let i = min(idx, ${U(count - 1)});
  let base = ${first};
  var m = 0.0f;
  for (var t = t0; t < ${unboundedLoop(len, target)}; t += ${U(RG)}) { m = max(m, abs(${read})); }
  part[lid] = m;
  workgroupBarrier();
  var cm = part[lid % ${U(CB)}];
  for (var p = 1u; p < ${U(RG)}; p++) { cm = max(cm, part[p * ${U(CB)} + lid % ${U(CB)}]); }
  let sc = ${exponent('cm')};
  let f = pow2(sc);
  if (idx < ${U(count)}) {
    for (var t = t0; t < ${unboundedLoop(len, target)}; t += ${U(RG)}) {
${put(at)
  .map((l) => `      ${l}`)
  .join('\n')}
    }
    if (t0 == 0u) { out_0[${U(2 * n)} + idx] = f16(f32(sc)); }
  }
}`;
  const inputs = source ? source.bindings : [x];
  const kernel = makeKernel(node, inputs, target, {
    name: `split16_${along}_f32`,
    body: source?.helpers ? `${source.helpers}\n\n${body}` : body,
    workgroupSize: [wg, 1, 1],
    dispatch,
    lib: ['pow2', 'f16_hi', ...(source?.lib ?? [])],
  });
  // It serves the product: named for it in dumps, as a K split's partials are (and computes a source's views).
  return { kernel: { ...kernel, wgsl: `enable f16;\n${halfDecl(kernel.wgsl, inputs.length, 'read_write')}`, nodes: [...(source?.inlined ?? []), mm.id] }, scratch, node };
}
