// WGSL kernel generator for attention: softmax(q·kᵀ·scale [+ mask])·v over q [B, H, Sq, D], k [B, H, Sk, D],
// v [B, H, Sk, Dv], an optional mask broadcast to [B, H, Sq, Sk]; scale defaults to 1/√D.
//
// `attention_row_f32`: one workgroup per query row (dispatch spread over x, y, z). Keys are processed
// in chunks that fit workgroup memory, with the online-softmax rescaling between chunks (one chunk, i.e. the
// plain three-pass softmax, whenever Sk fits):
//   1. invocation t computes the scores s_j (dot over D in order, ·scale, + mask) for j = t, t + WG, … of the
//      chunk into workgroup memory; 2. a fixed tree gives the chunk max, the running max m is updated and the
//      running sum z and the accumulators rescaled by e^{m_old - m}; 3. p_j = e^{s_j - m}, a tree sums them;
//   4. invocation t owns output columns c = t, t + WG, … and adds Σ_j p_j·v[j, c] in key order.
// Finally out = acc / z. Every sum has a fixed order: bitwise repeatable.
//
// The GPU rules below use flash attention (kernels/flash-forward.ts, kernels/flash-backward.ts) for the
// forward, attention_lse and attention_grad; the row kernel remains the forward's fallback for head dims
// whose one-row tiles do not fit workgroup memory. Where the schedule plans it (compiler/codegen/attention-views.ts),
// the flash kernels read q, k, v and g in place through views (attentionReads, attentionViewKernels below).
import type { Kernel, KernelChain, KernelGen } from '../compiler/codegen/types.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, dispatchGroups, f32Lit, groupIndexCode, kernelRule, loopBound, makeKernel, stridesOf, u32Lit } from './elementwise.js';
import { flashBackwardKernel } from './flash-backward.js';
import { flashDirectForwardKernel, flashDirectUnfit } from './flash-direct.js';
import { directGradLoads, flashDirectBackwardKernel, flashDirectBackwardUnfit } from './flash-direct-backward.js';
import { directBindings } from './flash-direct-common.js';
import { directReads, FlashTileError, type FlashOperand, type FlashReads, type RowLayout } from './flash-common.js';
import { flashSgmatApplies, flashSgmatForwardKernel } from './flash-sgmat.js';
import { flashSgmatBackwardApplies, flashSgmatBackwardKernel, gradOf } from './flash-sgmat-backward.js';
import { flashForwardKernel } from './flash-forward.js';
import { FLASH_OPS, sweepSplitChain } from './flash-sweep-split.js';
import type { SplitSource } from './matmul-split16.js';
import { flashSplitChain, flashSplitGradChain, flashSplitGradUnfit, flashSplitUnfit } from './flash-split16.js';
import { KEPT_FN, memberCode } from './fused.js';
import { combineCode, treeReduceCode, treeWorkgroup } from './reduce.js';
import { viewCode, type ViewPlan } from './view.js';
import type { AffineView } from './view-affine.js';

/** Keys per chunk at most (the scores of one chunk live in workgroup memory). */
export const ATTENTION_CHUNK = 1024;

type Target = Parameters<KernelGen>[2];

export function attentionKernel(node: Node, inputs: readonly Node[], target: Target, chunkCap = ATTENTION_CHUNK): Kernel {
  const [q, k, v, mask] = inputs;
  const [B, H, Sq, D] = q.shape;
  const Sk = k.shape[2];
  const Dv = v.shape[3];
  const scale = f32Lit(attrNum(node.attrs, 'scale', 1 / Math.sqrt(D)));
  const wg = treeWorkgroup(target, 64);
  // Workgroup memory: the chunk's scores plus the tree buffer.
  const storage = target.limits.maxComputeWorkgroupStorageSize;
  const chunk = Math.max(1, Math.min(chunkCap, Math.max(Sk, 1), Math.floor(storage / 4) - wg));
  const chunks = Math.ceil(Sk / chunk);
  const cols = Math.max(1, Math.ceil(Dv / wg));
  const rows = B * H * Sq;
  const dispatch = dispatchGroups(rows, target);
  const ms = mask ? broadcastStrides(mask.shape, [B, H, Sq, Sk]) : undefined;
  const maskRow = ms
    ? `    let mrow = ${[`b * ${u32Lit(ms[0])}`, `h * ${u32Lit(ms[1])}`, `qi * ${u32Lit(ms[2])}`].filter((_, i) => ms[i] !== 0).join(' + ') || '0u'};`
    : '';
  const maskAdd = ms ? ` + in_3[mrow + j * ${u32Lit(ms[3])}]` : '';
  const maxC = (a: string, b: string) => combineCode('max', a, b);
  const colLoops: string[] = [];
  const finals: string[] = [];
  const rescale: string[] = [];
  for (let c = 0; c < cols; c++) {
    const col = `lid + ${u32Lit(c * wg)}`;
    colLoops.push(`      {
        let col = ${col};
        if (col < ${u32Lit(Dv)}) {
          var s = acc[${c}];
          for (var jj = 0u; jj < clen; jj++) {
            s = fma(scores[jj], in_2[vb + (j0 + jj) * ${u32Lit(Dv)} + col], s);
          }
          acc[${c}] = s;
        }
      }`);
    rescale.push(`      acc[${c}] = acc[${c}] * alpha;`);
    finals.push(`    {
      let col = ${col};
      if (col < ${u32Lit(Dv)}) { out_0[orow + col] = acc[${c}] / z; }
    }`);
  }
  const main = `var<workgroup> scores: array<f32, ${chunk}>;
var<workgroup> red_buf: array<f32, ${wg}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('r', rows, dispatch)}
    let qi = r % ${u32Lit(Sq)};
    let bh = r / ${u32Lit(Sq)};
    let h = bh % ${u32Lit(H)};
    let b = bh / ${u32Lit(H)};
    let qb = r * ${u32Lit(D)};
    let kb = bh * ${u32Lit(Sk * D)};
    let vb = bh * ${u32Lit(Sk * Dv)};
    let orow = r * ${u32Lit(Dv)};
${maskRow}
    var m = ${f32Lit(-Infinity)};
    var z = 0.0f;
    var acc: array<f32, ${cols}>;
${chunks === 1 ? '    {\n      let j0 = 0u;' : `    for (var j0 = 0u; j0 < ${u32Lit(Sk)}; j0 += ${u32Lit(chunk)}) {`}
      let clen = min(${u32Lit(chunk)}, ${u32Lit(Sk)} - j0);
      var cm = ${f32Lit(-Infinity)};
      for (var jj = lid; jj < clen; jj += ${u32Lit(wg)}) {
        let j = j0 + jj;
        var s = 0.0f;
        for (var t = 0u; t < ${loopBound(D, target)}; t++) {
          s = fma(in_0[qb + t], in_1[kb + j * ${u32Lit(D)} + t], s);
        }
        let sc = s * ${scale}${maskAdd};
        scores[jj] = sc;
        cm = ${maxC('cm', 'sc')};
      }
      red_buf[lid] = cm;
${treeReduceCode('red_buf', wg, maxC, target, '      ')}
      let mn = ${maxC('m', 'red_buf[0]')};
      // e^{m_old - m_new}; 0 when nothing was seen yet (m_old = -inf).
      let alpha = select(exp_f32(m - mn), 0.0f, m == ${f32Lit(-Infinity)});
      workgroupBarrier();
      var ps = 0.0f;
      for (var jj = lid; jj < clen; jj += ${u32Lit(wg)}) {
        let p = exp_f32(scores[jj] - mn);
        scores[jj] = p;
        ps += p;
      }
      red_buf[lid] = ps;
${treeReduceCode('red_buf', wg, (a, b2) => `${a} + ${b2}`, target, '      ')}
      z = z * alpha + red_buf[0];
      m = mn;
${rescale.join('\n')}
${colLoops.join('\n')}
${chunks === 1 ? '' : '      workgroupBarrier();\n'}    }
${finals.join('\n')}
}`;
  return makeKernel(node, inputs, target, { name: 'attention_row_f32', body: main, workgroupSize: [wg, 1, 1], dispatch, lib: ['is_nan', 'exp_f32'] });
}

/** The forward: flash attention, or the row kernel when not even one-row tiles fit workgroup memory (huge head dims). */
function attentionForward(node: Node, inputs: readonly Node[], target: Target): Kernel {
  try {
    return flashForwardKernel(node, inputs, target);
  } catch (e) {
    if (e instanceof FlashTileError) return attentionKernel(node, inputs, target);
    throw e;
  }
}

export const ATTENTION_GPU_RULES = {
  attention: kernelRule(attentionForward),
  attention_lse: kernelRule((node, inputs, target) => flashForwardKernel(node, inputs, target)),
  attention_grad: kernelRule((node, inputs, target) => flashBackwardKernel(node, inputs, target)),
};

// ---------------------------------------------------------------------------------------------- inputs read through views

/**
 * How an attention-family kernel reads one row operand in place (compiler/codegen/attention-views.ts): a view of
 * a movement tree (kernels/view.ts), then the prologue: elementwise nodes with scalar constants (q's scaling),
 * each reading the one before (the first reads the view's root), the last being the operand itself.
 */
export interface AttentionOperandPlan {
  readonly view: ViewPlan;
  /** In topological order; empty when the view is the operand. */
  readonly prologue: readonly number[];
  /**
   * The operand's values are those of the view's one leaf, in its row-major order (the view only reshapes, the
   * prologue only casts that keep every value): the kernel reads the leaf's binding as it reads a plain input
   * (rows as vec4s, vec4<f16> ones when the leaf is stored as f16), computing the view and prologue nodes in place.
   */
  readonly direct?: boolean;
  /**
   * The operand is the view's one leaf under an affine map (kernels/view-affine.ts) and the prologue only casts
   * that keep every value: kernels that load blocks with strides (the tensor-core flash kernels from storage) read
   * the leaf's binding at these offsets.
   */
  readonly affine?: AffineView;
}

/** Per input slot of an attention, attention_lse or attention_grad node: read in place, or from its binding. */
export type AttentionOperandPlans = readonly (AttentionOperandPlan | undefined)[];

/** The row operands' letters, by input slot (attention_grad's g is the output's cotangent). */
const OPERAND_LETTERS = ['q', 'k', 'v', 'g'] as const;

/**
 * The reads of `node` with the planned slots through views: the bindings are the other inputs and the views'
 * leaves (each once, in slot order), each view a set of WGSL functions of (b, h, row, col), or, for a direct
 * plan, its leaf's binding, read as a plain input. A prologue runs in
 * a function of its own that returns `kept(value)`: the value the unfused path stores, so the kernel's own
 * arithmetic on it (·scale) starts from the same bits.
 */
export function attentionReads(graph: Graph, node: Node, plans: AttentionOperandPlans): FlashReads {
  const bound: number[] = [];
  node.inputs.forEach((x, s) => {
    for (const id of plans[s]?.view.leaves ?? [x]) if (!bound.includes(id)) bound.push(id);
  });
  const binding = (id: number) => `in_${bound.indexOf(id)}`;
  const helpers: string[] = [];
  const lib = new Set<string>();
  const inlined = new Set<number>();
  const viewed: string[] = [];
  const prologueOps: string[] = [];
  const slots = node.inputs.map((x, s): FlashOperand => {
    const plan = plans[s];
    if (!plan) return binding(x);
    if (plan.direct) {
      [...plan.view.inlined, ...plan.prologue].forEach((id) => inlined.add(id));
      return binding(plan.view.leaves[0]);
    }
    const letter = OPERAND_LETTERS[s];
    if (letter === undefined) throw new Error(`internal: ${node.op} %${node.id} reads input ${s} flat, not through a view`);
    viewed.push(`_${letter}v`);
    plan.view.inlined.forEach((id) => inlined.add(id));
    const code = viewCode(graph, plan.view, `${letter}v`, binding);
    if (code.helpers) helpers.push(code.helpers);
    if (plan.prologue.length === 0) return (coords) => code.call(coords);
    const root = plan.prologue[plan.prologue.length - 1];
    const members = memberCode(graph, { root, members: [...plan.prologue] }, () => 'x');
    members.lib.forEach((l) => lib.add(l));
    plan.prologue.forEach((id) => inlined.add(id));
    prologueOps.push(...members.ops);
    const cs = ['c0', 'c1', 'c2', 'c3'];
    helpers.push([`fn ${letter}_in(${cs.map((c) => `${c}: u32`).join(', ')}) -> f32 {`, `  let x = ${code.call(cs)};`, ...members.lines.map((l) => `  ${l}`), `  return kept(${members.value});`, '}'].join('\n'));
    return (coords) => `${letter}_in(${coords.join(', ')})`;
  });
  if (prologueOps.length) helpers.unshift(KEPT_FN);
  const layouts = node.inputs.map((x, s): RowLayout | undefined => {
    const plan = plans[s];
    const at = (id: number) => ({ binding: binding(id), index: bound.indexOf(id) });
    if (!plan) return { ...at(x), offset: 0, strides: stridesOf(graph.node(x).shape) };
    return plan.affine && { ...at(plan.affine.leaf), offset: plan.affine.offset, strides: plan.affine.strides };
  });
  return {
    layouts,
    slots,
    bindings: bound.map((id) => graph.node(id)),
    helpers: helpers.join('\n\n'),
    lib: [...lib],
    inlined: [...inlined].sort((a, b) => a - b),
    suffix: `${viewed.join('')}${prologueOps.length ? `+${prologueOps.join('_')}` : ''}`,
  };
}

/**
 * The subgroup-matrix (tensor core) kernel of an attention node (kernels/flash-sgmat.ts) or an attention_grad node
 * (kernels/flash-sgmat-backward.ts) whose q, k, v (and g) hold exact f16 values, on a Target with subgroup matrices
 * where its tiles fit; undefined otherwise. `sibling`: the attention_lse the forward also writes, or the dv the dk
 * kernel also computes.
 */
export function tensorCoreAttention(graph: Graph, node: Node, target: Target, sibling?: Node, reads?: FlashReads): Kernel | undefined {
  const staged = stagedTensorCoreAttention(graph, node, target, sibling, reads);
  // Target.tuning.flashDirect (forward) and flashDirectGrad (backward): the kernels that load q, k, v (and g)'s
  // fragments from their f16 storage (in place through affine views), with the kernel otherwise chosen as the
  // fallback where the schedule stores one of them as f32.
  const direct = directTensorCoreAttention(graph, node, target, sibling, reads ?? directReads(node));
  if (!direct) return staged;
  const inputs = node.inputs.map((i) => graph.node(i));
  let fallback: Kernel;
  try {
    fallback = staged ?? (node.op === 'attention_grad' ? flashBackwardKernel(node, inputs, target, {}, sibling, reads) : flashForwardKernel(node, inputs, target, {}, sibling, reads));
  } catch (e) {
    if (e instanceof FlashTileError) return staged; // the caller's own way (its kernels apart)
    throw e;
  }
  return { ...direct.kernel(inputs), halfOnly: { bindings: direct.half, fallback } };
}

/** The direct kernel of `node` where the tuning asks for it and it applies, with the bindings it reads as f16. */
function directTensorCoreAttention(graph: Graph, node: Node, target: Target, sibling: Node | undefined, reads: FlashReads): { readonly kernel: (inputs: readonly Node[]) => Kernel; readonly half: readonly number[] } | undefined {
  const inputs = node.inputs.map((i) => graph.node(i));
  const bindings = (slots: readonly number[]) => directBindings(reads, inputs, slots);
  if (node.op === 'attention' && target.tuning?.flashDirect && flashDirectUnfit(graph, node, target, sibling, reads) === undefined) {
    return { kernel: (ins) => flashDirectForwardKernel(node, ins, target, sibling, reads), half: bindings([0, 1, 2]) };
  }
  if (node.op === 'attention_grad' && target.tuning?.flashDirectGrad && flashDirectBackwardUnfit(graph, node, target, sibling, reads) === undefined) {
    return { kernel: (ins) => flashDirectBackwardKernel(node, ins, target, sibling, reads), half: bindings(directGradLoads(gradOf(node, sibling)!)) };
  }
  return undefined;
}

function stagedTensorCoreAttention(graph: Graph, node: Node, target: Target, sibling?: Node, reads?: FlashReads): Kernel | undefined {
  // Off unless asked for: on the H200 (2026-11-27, warm clocks) they ran 2-3x slower than the f32-accumulating
  // flash kernels on the same f16 values (forward 9.5 vs 3.2 ms at EVA-G detection), bound by their softmax and
  // rescaling steps, not by the products (docs/perf.md).
  if (!target.tuning?.tensorCoreAttention) return undefined;
  const inputs = () => node.inputs.map((i) => graph.node(i));
  if (node.op === 'attention') {
    if (!flashSgmatApplies(graph, node, target) || (sibling && sibling.op !== 'attention_lse')) return undefined;
    return flashSgmatForwardKernel(node, inputs(), target, { lse: sibling, reads });
  }
  if (node.op === 'attention_grad' && flashSgmatBackwardApplies(graph, node, target, sibling)) return flashSgmatBackwardKernel(node, inputs(), target, { sibling, reads });
  return undefined;
}

/**
 * The chain of an f32 attention or attention_grad node (with `sibling`) split onto the f16 tensor cores, where the
 * tuning asks for it and it applies (kernels/flash-split16.ts); undefined otherwise. With `plans` (its row operands
 * read through views) the splits read the views.
 */
function splitAttentionChain(graph: Graph, node: Node, sibling: Node | undefined, target: Target, plans?: AttentionOperandPlans): KernelChain | undefined {
  const sources = plans && ((slot: number) => splitSource(graph, node, slot, plans));
  if (node.op === 'attention' && flashSplitUnfit(graph, node, target, sibling) === undefined) return flashSplitChain(graph, node, target, sibling, sources);
  if (node.op === 'attention_grad' && flashSplitGradUnfit(graph, node, target, sibling, plans !== undefined) === undefined) return flashSplitGradChain(graph, node, target, sibling, sources);
  return undefined;
}

/**
 * The chain of an attention-family node where one applies: split onto the f16 tensor cores (splitAttentionChain), or
 * an f32 flash kernel with its swept side split across workgroups (kernels/flash-sweep-split.ts) where no tensor-core
 * kernel takes it; undefined for one kernel.
 */
export function attentionChain(graph: Graph, node: Node, sibling: Node | undefined, target: Target, plans?: AttentionOperandPlans): KernelChain | undefined {
  const split = splitAttentionChain(graph, node, sibling, target, plans);
  if (split || target.tuning?.flashSweepSplit === undefined || !FLASH_OPS.includes(node.op)) return split;
  const reads = plans ? attentionReads(graph, node, plans) : undefined;
  if (tensorCoreAttention(graph, node, target, sibling, reads)) return undefined;
  return sweepSplitChain(node, node.inputs.map((i) => graph.node(i)), target, sibling, reads);
}

/**
 * How the split of input `slot` of `node` reads it under `plans`: through its view alone (only its own leaves bound),
 * element [mat, r, c] of the [B, H, S, D] operand seen as [B·H, S, D]; a flat read, its binding row-major.
 */
function splitSource(graph: Graph, node: Node, slot: number, plans: AttentionOperandPlans): SplitSource {
  const x = graph.node(node.inputs[slot]);
  const [, H, R, C] = x.shape;
  const reads = attentionReads(graph, { ...node, inputs: [x.id] }, [plans[slot]]);
  const s = reads.slots[0];
  const U = u32Lit;
  const element = (mat: string, r: string, c: string) => (typeof s === 'string' ? `${s}[(${mat}) * ${U(R * C)} + (${r}) * ${U(C)} + ${c}]` : s([`(${mat}) / ${U(H)}`, `(${mat}) % ${U(H)}`, r, c]));
  return { bindings: reads.bindings ?? [x], element, helpers: reads.helpers, lib: reads.lib, inlined: reads.inlined };
}

/**
 * The kernels of an attention-family node whose row operands are read through views (`plans` by node id), with
 * its sibling's value when it has one (compiler/codegen/fuse.ts, planSiblingOutputs); when the pair's tiles do
 * not fit, each its own kernel, as the schedule does without views. The planner took only nodes whose own flash
 * tiles fit.
 */
export function attentionViewKernels(graph: Graph, node: Node, sibling: Node | undefined, plans: ReadonlyMap<number, AttentionOperandPlans>, target: Target): Kernel[] {
  const kernel = (n: Node, second?: Node) => {
    const inputs = n.inputs.map((i) => graph.node(i));
    const p = plans.get(n.id);
    const reads = p ? attentionReads(graph, n, p) : undefined;
    const tensorCores = tensorCoreAttention(graph, n, target, second, reads);
    if (tensorCores) return tensorCores;
    return n.op === 'attention_grad' ? flashBackwardKernel(n, inputs, target, {}, second, reads) : flashForwardKernel(n, inputs, target, {}, second, reads);
  };
  if (!sibling) return [kernel(node)];
  try {
    return [kernel(node, sibling)];
  } catch (e) {
    if (e instanceof FlashTileError) return [kernel(node), kernel(sibling)];
    throw e;
  }
}
