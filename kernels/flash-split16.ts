// f32 attention on the f16 tensor cores at f32 accuracy, as the f32 matmuls split (kernels/matmul-split16.ts): the
// forward `attention_flash{,_lse}_split16_f32` (Target.tuning.f32AttentionTensorCores) and the backward
// `attention_grad_{q,k,v,kv}_flash_split16_f32` (Target.tuning.f32AttentionGradTensorCores). On the H200 the f32
// flash forward ran at 9.8–18.8 TFLOP/s, 1.13–2.41x tfjs, forward+backward at 0.78–1.65x (docs/perf.md, session 13);
// the goals are 2x on every row. Unmeasured on NVIDIA: offered to `visft tune`.
//
// The backward: q, k, v and g split per row (no column splits: the right operands' row scales fold into dS and P,
// kernels/flash-direct-backward.ts splitScales), then the direct tensor-core backward on the pairs: S and dP with
// three products per fragment, each element times its rows' factors; dS and P scaled under a-priori bounds and
// split in workgroup memory, dS·a and P·b with three products. The dq and the dk+dv chains split q, k, v and g each
// (four splits twice: a chain's scratch is its own).
//
// A chain: q and k split per row (each query's and key's largest magnitude just below 2^14), v per column of each
// (batch, head), each into one f16 scratch (hi, lo, exponents: kernels/matmul-split16.ts splitKernel); then the
// direct tensor-core forward (kernels/flash-direct.ts) on the pairs: S = q·kᵀ as qh·kh + qh·kl + ql·kh, each score
// times 2^-(its query's + key's exponents); the softmax in f32 as before; P scaled by 2^14 and split in workgroup
// memory, P·v as ph·vh + ph·vl + pl·vh; the output times 2^-14, v's column exponent, and / l. l sums the f32 weights.
// Error: each term within about 2^-19 of itself, so the scores within (D·2^-24 + 2^-19)·scale·Σ|q||k| and the output
// within a few 2^-20 of max|v| beyond what that moves the weights: f32's accuracy, not the f32 kernels' bits
// (test/kernels/flash-split16.test.ts). No mask, head dims multiples of 8, at least 16 queries and keys; the f16
// operands of autocast take the f16 kernels instead. Operands read through views (a ViT's heads split from its fused
// projection, q pre-scaled: kernels/attention.ts) are read so by the splits, which store them plain for the rest.
import type { Kernel, KernelChain, Target } from '../compiler/codegen/types.js';
import { isExactHalf } from '../compiler/codegen/half.js';
import { numel, type Graph, type Node } from '../compiler/ir/graph.js';
import { attentionGeometry, directReads } from './flash-common.js';
import { DIRECT_ROWS, type SplitCounts } from './flash-direct-common.js';
import { flashDirectForwardKernel } from './flash-direct.js';
import { directGradLoads, flashDirectBackwardKernel } from './flash-direct-backward.js';
import { gradOf } from './flash-sgmat-backward.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { halfDecl, splitKernel, type SplitSource } from './matmul-split16.js';
import { sgmatConfig } from './sgmat.js';

/** The scratch placeholder of the split of input `slot` (q, k, v, g: -1 … -4). */
const splitRef = (slot: number): number => -1 - slot;

/** Why the f32 attention forward `node` (with its attention_lse `sibling`) cannot run split on `target`, or undefined. */
export function flashSplitUnfit(graph: Graph, node: Node, target: Target, sibling?: Node): string | undefined {
  if (!target.tuning?.f32AttentionTensorCores) return 'not asked for (Target.tuning.f32AttentionTensorCores)';
  if (node.op !== 'attention') return `${node.op} is not attention`;
  if (sibling && sibling.op !== 'attention_lse') return `its sibling is ${sibling.op}`;
  if (node.inputs.length !== 3) return 'a mask';
  return rowsUnfit(graph, node, target, 3);
}

/**
 * What both directions need of the node's first `rows` inputs (q, k, v and, backward, g) on `target`: the direct
 * kernels' configs, f32 values (the f16 kernels take exact f16 ones), head dims multiples of 8, 16 rows or more.
 */
function rowsUnfit(graph: Graph, node: Node, target: Target, rows: number): string | undefined {
  if (!sgmatConfig(target, 16, 8, 8) || !sgmatConfig(target, 16, 8, 16)) return 'the target lists no f16 x f16 -> f32 16x8x8 and 16x8x16 subgroup-matrix configs';
  const ops = node.inputs.slice(0, rows).map((i) => graph.node(i));
  if (ops.every((x) => isExactHalf(graph, x.id))) return `${rows === 3 ? 'q, k and v are' : 'q, k, v and g are'} f16 values (the f16 kernels take them)`;
  const g = attentionGeometry(node, ops[0], ops[1], ops[2], undefined);
  if (g.D % 8 || g.Dv % 8) return `head dims ${g.D} and ${g.Dv} are not multiples of 8`;
  if (g.Sq < DIRECT_ROWS || g.Sk < DIRECT_ROWS) return `fewer than ${DIRECT_ROWS} queries or keys`;
  return undefined;
}

/** Where the split of input `slot` reads it (kernels/attention.ts splitAttentionChain: a view), when not from its binding. */
export type SplitSources = (slot: number) => SplitSource | undefined;

/**
 * The chain: q's, k's and v's splits, then the forward on them (check flashSplitUnfit first). With `sources`, the
 * splits read q, k and v through views; the forward reads the splits.
 */
export function flashSplitChain(graph: Graph, node: Node, target: Target, sibling?: Node, sources?: SplitSources): KernelChain {
  const inputs = node.inputs.map((i) => graph.node(i));
  // q and k split per row, v per column of each (batch, head).
  const forward = flashDirectForwardKernel(node, inputs.slice(0, 3), target, sibling, directReads(node), splitCounts(inputs, 3));
  return splitChain(node, inputs, target, [0, 1, 2], (slot) => (slot === 2 ? 'cols' : 'rows'), forward, sources);
}

/**
 * Why the f32 attention_grad `node` (with `sibling`, its wrt-2 pair) cannot run split on `target`, or undefined;
 * `viewed`: its row operands are read through views (kernels/attention.ts).
 */
export function flashSplitGradUnfit(graph: Graph, node: Node, target: Target, sibling?: Node, viewed = false): string | undefined {
  if (!target.tuning?.f32AttentionGradTensorCores) return 'not asked for (Target.tuning.f32AttentionGradTensorCores)';
  if (node.op !== 'attention_grad') return `${node.op} is not attention_grad`;
  const which = gradOf(node, sibling);
  if (!which) return sibling ? `wrt ${attrNum(node.attrs, 'wrt')} does not pair with ${sibling.op} %${sibling.id}` : "the mask's gradient";
  // dv alone splits k, q and g, but its kernel still binds v, which a view leaves unstored.
  if (viewed && which === 'v') return 'dv alone, with v read through a view';
  if (node.inputs.length !== 6) return 'a mask';
  return rowsUnfit(graph, node, target, 4);
}

/**
 * The chain: the row splits of the operands the kernel loads, then the backward on them (check flashSplitGradUnfit
 * first). With `sources`, the splits read the operands through views; the backward reads the splits.
 */
export function flashSplitGradChain(graph: Graph, node: Node, target: Target, sibling?: Node, sources?: SplitSources): KernelChain {
  const inputs = node.inputs.map((i) => graph.node(i));
  const kernel = flashDirectBackwardKernel(node, inputs, target, sibling, directReads(node), splitCounts(inputs, 4));
  return splitChain(node, inputs, target, directGradLoads(gradOf(node, sibling)!), () => 'rows', kernel, sources);
}

/** The element counts of the first `n` inputs: where each split's lo part starts. */
const splitCounts = (inputs: readonly Node[], n: number): SplitCounts => inputs.slice(0, n).map((x) => numel(x.shape));

/**
 * The splits of the inputs `slots` (along `along(slot)`), then `kernel` binding them in those inputs' places, as the
 * f16 arrays they are.
 */
function splitChain(node: Node, inputs: readonly Node[], target: Target, slots: readonly number[], along: (slot: number) => 'rows' | 'cols', kernel: Kernel, sources?: SplitSources): KernelChain {
  const splits = slots.map((slot) => splitKernel(node, inputs[slot], along(slot), splitRef(slot), target, sources?.(slot)));
  const bindings = kernel.bindings.map((b, i) => (slots.includes(i) ? { ...b, value: splitRef(i) } : b));
  const wgsl = slots.reduce((w, i) => halfDecl(w, i, 'read'), kernel.wgsl);
  return { kernels: [...splits.map((x) => x.kernel), { ...kernel, bindings, wgsl }], scratch: splits.map((x) => x.scratch) };
}
