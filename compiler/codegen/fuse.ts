// Elementwise fusion: a chain (a tree) of elementwise nodes with one shape, whose intermediate values have no
// other consumer, becomes one kernel; the intermediates never reach memory. Inputs from outside the group
// are read with broadcasting into the group's shape, and scalar constants (`full` of one element) are
// inlined as literals.
//
// Matmul epilogues: when one of a group's external inputs is a matmul result of the group's shape that nothing
// else reads (and that is no graph output), the group is computed by the matmul's kernel, on its f32
// accumulator, instead of storing the product and reading it back (kernels/matmul-epilogue.ts). A single
// elementwise node after a matmul (`linear`: matmul + bias) is such a group too.
//
// Transposed reads: a matmul operand that is a permute of the last two dims (W [out, in] in `linear`, kᵀ,
// gradients gᵀ·x), read by nothing else and no graph output, is never copied: the matmul kernel binds the
// permute's input and indexes it transposed (kernels/matmul.ts).
import { numel, type Graph, type Node } from '../ir/graph.js';
import { inlineExpr } from '../../kernels/elementwise.js';
import { groupExternals } from '../../kernels/fused.js';
import { isLastTwoSwap, matmulVariant, productDims, type MatmulReads } from '../../kernels/matmul.js';
import { planView, VIEW_OPS, type ViewPlan } from '../../kernels/view.js';
import { attrNum, normDim } from '../ir/rules/shape.js';
import { ROW_THREAD_MAX, rowProductShape } from '../../kernels/row.js';
import type { Target } from './types.js';

export interface FusionGroup {
  /** The node whose value the group writes. */
  readonly root: number;
  /** Every elementwise node computed by the kernel, in topological order, ending with the root. */
  readonly members: number[];
  /** The matmul whose kernel computes the group as its epilogue (its value never reaches memory). */
  readonly matmul?: number;
  /** Or the row op (layernorm, softmax, log_softmax) whose kernel computes the group as its epilogue. */
  readonly row?: number;
  /** Or the reduction (sum, max) whose kernel computes the group as its epilogue (kernels/reduce.ts). */
  readonly reduce?: number;
}

/** The op whose kernel computes a group as its epilogue (matmul, row op or reduction), if any. */
export const epilogueProducer = (g: FusionGroup): number | undefined => g.matmul ?? g.row ?? g.reduce;

/** Row ops whose kernels take an elementwise epilogue (kernels/row.ts). */
export const ROW_EPILOGUE_OPS: ReadonlySet<string> = new Set(['layernorm', 'softmax', 'log_softmax']);

/** Reductions whose kernels take an elementwise epilogue (layernorm's backward: `sum(..)·(1/n)`). */
export const REDUCE_EPILOGUE_OPS: ReadonlySet<string> = new Set(['sum', 'max']);

/** Whether the fused-kernel generator can express the op inline. */
export function isInlineElementwise(n: Node): boolean {
  return inlineExpr(n, n.inputs.map((_, k) => `a${k}`)) !== undefined;
}

export const isScalarConst = (n: Node): boolean => n.op === 'full' && numel(n.shape) === 1;

/**
 * Groups to fuse (roots in topological order): two or more elementwise nodes, or any with a matmul epilogue.
 * `live` holds the nodes that are computed; `outputs` are graph outputs (never absorbed: their value must
 * reach memory). `maxInputs` bounds the read bindings of one kernel: the group's external inputs, where an
 * absorbed matmul counts as its two operands. `epilogues: false` leaves every matmul a kernel of its own.
 */
export function planFusion(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, maxInputs: number, opts: { readonly epilogues?: boolean } = {}): FusionGroup[] {
  const epilogues = opts.epilogues ?? true;
  const consumers = new Map<number, number>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) consumers.set(i, (consumers.get(i) ?? 0) + 1);
  const absorbed = new Set<number>();
  const groups: FusionGroup[] = [];
  for (let id = graph.nodes.length - 1; id >= 0; id--) {
    const root = graph.node(id);
    if (!live.has(id) || absorbed.has(id) || !isInlineElementwise(root)) continue;
    const members = new Set<number>([id]);
    // Every input of a member that is not itself a member is an external (a binding) until absorbed, so the
    // count checked before absorbing a node is exact.
    const externals = new Set<number>();
    const shape = root.shape.join();
    const isExternal = (x: number) => !members.has(x) && (!isScalarConst(graph.node(x)) || outputs.has(x));
    // A matmul or row op the group may absorb: only the group reads it, and it has the group's shape (not broadcast).
    const epilogueOf = (x: number) => {
      const m = graph.node(x);
      return epilogues && (m.op === 'matmul' || ROW_EPILOGUE_OPS.has(m.op) || REDUCE_EPILOGUE_OPS.has(m.op)) && !outputs.has(x) && consumers.get(x) === 1 && m.shape.join() === shape && numel(m.shape) > 0;
    };
    // Read bindings: the externals, plus one for a matmul that brings two operands instead of its product.
    const bindings = (ext: ReadonlySet<number>) => ext.size + ([...ext].some((x) => epilogueOf(x) && graph.node(x).op === 'matmul') ? 1 : 0);
    const addInputs = (n: Node) => {
      for (const x of n.inputs) if (isExternal(x)) externals.add(x);
    };
    const grow = (n: Node) => {
      for (const i of new Set(n.inputs)) {
        if (!externals.has(i)) continue;
        const m = graph.node(i);
        const fusable = isInlineElementwise(m) && !outputs.has(i) && consumers.get(i) === 1 && m.shape.join() === shape && !absorbed.has(i);
        if (!fusable) continue;
        const next = new Set(externals);
        next.delete(i);
        for (const x of m.inputs) if (isExternal(x)) next.add(x);
        if (bindings(next) <= maxInputs) {
          members.add(i);
          externals.delete(i);
          addInputs(m);
          grow(m);
        }
      }
    };
    addInputs(root);
    grow(root);
    // Of several candidates the newest (any one would do; this is deterministic). A root alone can exceed the
    // bound only on a target with very few bindings: then no epilogue.
    const producer = bindings(externals) <= maxInputs ? [...externals].filter(epilogueOf).sort((a, b) => b - a)[0] : undefined;
    if (members.size < 2 && producer === undefined) continue;
    const ordered = [...members].sort((a, b) => a - b);
    for (const m of ordered) if (m !== id) absorbed.add(m);
    if (producer === undefined) groups.push({ root: id, members: ordered });
    else {
      const op = graph.node(producer).op;
      groups.push(op === 'matmul' ? { root: id, members: ordered, matmul: producer } : REDUCE_EPILOGUE_OPS.has(op) ? { root: id, members: ordered, reduce: producer } : { root: id, members: ordered, row: producer });
    }
  }
  return groups.reverse();
}

/**
 * Matmuls (by id) that read an operand transposed, and which: each such operand is a permute of the last two
 * dims that only that matmul reads (as one or both operands), is no graph output and has elements.
 */
export function planTransposedReads(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>): Map<number, MatmulReads> {
  const readers = new Map<number, Set<number>>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of n.inputs) readers.set(i, (readers.get(i) ?? new Set()).add(n.id));
  const plan = new Map<number, MatmulReads>();
  for (const mm of graph.nodes) {
    if (mm.op !== 'matmul' || !live.has(mm.id) || numel(mm.shape) === 0) continue;
    const transposed = (x: number) => {
      const p = graph.node(x);
      return isLastTwoSwap(p) && live.has(x) && !outputs.has(x) && readers.get(x)?.size === 1 && numel(p.shape) > 0;
    };
    const reads: MatmulReads = [transposed(mm.inputs[0]), transposed(mm.inputs[1])];
    if (reads[0] || reads[1]) plan.set(mm.id, reads);
  }
  return plan;
}

/**
 * Nodes whose kernel also computes a sibling's value (node id → sibling id), where one sweep gives both:
 * - an attention and the attention_lse of the same q, k, mask and scale after it (the backward's, which would
 *   otherwise sweep q·kᵀ once more); of several such attention nodes (a recomputed forward), the last before it;
 * - attention_grad wrt 1 (dk) and wrt 2 (dv) of the same inputs: one sweep of the queries computes P and dS once;
 * - msdeform_attn_grad wrt 1 (locations) and wrt 2 (weights) of the same inputs: one read of the corners.
 */
export function planSiblingOutputs(graph: Graph, live: ReadonlySet<number>): Map<number, number> {
  // The scale as the kernels use it: given, or 1/√D.
  const scale = (n: Node) => Math.fround(attrNum(n.attrs, 'scale', 1 / Math.sqrt(graph.node(n.inputs[0]).shape[3])));
  const lseKey = (q: number, k: number, mask: number | undefined, n: Node) => `${q},${k},${mask ?? ''},${scale(n)}`;
  const gradKey = (n: Node) => `${n.inputs.join(',')},${scale(n)}`;
  const latest = new Map<string, number>();
  const dks = new Map<string, number>();
  const pointKey = (n: Node) => `${n.inputs.join(',')},${JSON.stringify(n.attrs.levels)}`;
  const locGrads = new Map<string, number>();
  const pairs = new Map<number, number>();
  for (const n of graph.nodes) {
    if (!live.has(n.id)) continue;
    if (n.op === 'attention') latest.set(lseKey(n.inputs[0], n.inputs[1], n.inputs[3], n), n.id);
    if (n.op === 'attention_lse') {
      const a = latest.get(lseKey(n.inputs[0], n.inputs[1], n.inputs[2], n));
      if (a !== undefined && !pairs.has(a)) pairs.set(a, n.id);
    }
    if (n.op === 'attention_grad' && attrNum(n.attrs, 'wrt') === 1) dks.set(gradKey(n), n.id);
    if (n.op === 'attention_grad' && attrNum(n.attrs, 'wrt') === 2) {
      const k = dks.get(gradKey(n));
      if (k !== undefined && !pairs.has(k)) pairs.set(k, n.id);
    }
    // MSDeformAttn's gradients in the locations and the weights read the same corners: one kernel.
    if (n.op === 'msdeform_attn_grad' && attrNum(n.attrs, 'wrt') === 1) locGrads.set(pointKey(n), n.id);
    if (n.op === 'msdeform_attn_grad' && attrNum(n.attrs, 'wrt') === 2) {
      const l = locGrads.get(pointKey(n));
      if (l !== undefined && !pairs.has(l)) pairs.set(l, n.id);
    }
  }
  return pairs;
}

/**
 * Reductions that compute their input's elementwise tree themselves (reduction id → the tree as a group): the
 * input is a plain fusion group's root, or one inline elementwise node, that only the reduction reads and that
 * is no graph output; its external inputs fit `maxInputs` bindings. `sum(g·out)` is then one kernel.
 */
export function planReducePrologues(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, groups: readonly FusionGroup[], maxInputs: number): Map<number, FusionGroup> {
  const consumers = new Map<number, number>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) consumers.set(i, (consumers.get(i) ?? 0) + 1);
  const groupOf = new Map(groups.map((g) => [g.root, g] as const));
  const epilogueGroupOf = new Map(groups.filter((g) => g.reduce !== undefined).map((g) => [g.reduce!, g] as const));
  const inGroup = new Set(groups.flatMap((g) => g.members));
  const plan = new Map<number, FusionGroup>();
  for (const n of graph.nodes) {
    if (!live.has(n.id) || (n.op !== 'sum' && n.op !== 'max')) continue;
    const x = graph.node(n.inputs[0]);
    if (outputs.has(x.id) || consumers.get(x.id) !== 1 || numel(x.shape) === 0) continue;
    const group = groupOf.get(x.id) ?? (isInlineElementwise(x) && !inGroup.has(x.id) ? { root: x.id, members: [x.id] } : undefined);
    if (!group || epilogueProducer(group) !== undefined) continue;
    const members = new Set(group.members);
    const externals = new Set(group.members.flatMap((m) => graph.node(m).inputs).filter((i) => !members.has(i) && !isScalarConst(graph.node(i))));
    // A reduction with an epilogue binds the epilogue's externals too.
    const epilogue = epilogueGroupOf.get(n.id);
    if (externals.size + (epilogue ? groupExternals(graph, epilogue, n.id).length : 0) <= maxInputs) plan.set(n.id, group);
  }
  return plan;
}

/**
 * A matmul whose epilogue group adds a second product of the same output shape (LoRA's `x·Wᵀ + u·Bblkᵀ`):
 * the kernel sums that product too, in a second accumulator, with its operands read in place (views through
 * pads, concats and transposes: kernels/view.ts). The product never reaches memory and has no kernel.
 */
export interface SecondProductPlan {
  /** The group's external holding the product (the matmul, or a reshape of it): computed, not read. */
  readonly external: number;
  /** The second matmul. */
  readonly matmul: number;
  readonly a: ViewPlan;
  readonly b: ViewPlan;
}

/** The distinct storage a second product binds: its operand views' leaves. */
export const secondProductLeaves = (p: SecondProductPlan): number[] => [...new Set([...p.a.leaves, ...p.b.leaves])];

/**
 * Second products (epilogue group root → plan): an external of a matmul group that is (a reshape of) a matmul
 * only the group reads, with the group matmul's rows and columns, both one batch, neither split-K (so each
 * accumulator sums in k order as its own kernel would: bit for bit), and every binding within `maxInputs`.
 */
export function planSecondProducts(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, groups: readonly FusionGroup[], maxInputs: number, target: Target): Map<number, SecondProductPlan> {
  const readers = new Map<number, number[]>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) readers.set(i, [...(readers.get(i) ?? []), n.id]);
  const onlyReader = (x: number, r: number) => live.has(x) && !outputs.has(x) && readers.get(x)?.length === 1 && readers.get(x)![0] === r;
  const problem = (mm: Node) => {
    const inputs = mm.inputs.map((i) => graph.node(i));
    return matmulVariant(mm, inputs, target) === 'splitk' ? undefined : productDims(mm, inputs);
  };
  const plans = new Map<number, SecondProductPlan>();
  for (const g of groups) {
    if (g.matmul === undefined) continue;
    const p = problem(graph.node(g.matmul));
    if (!p || p.batch !== 1) continue;
    const externals = groupExternals(graph, g, g.matmul);
    const members = new Set(g.members);
    const onlyGroup = (x: number) => live.has(x) && !outputs.has(x) && (readers.get(x) ?? []).every((r) => members.has(r));
    for (const e of externals) {
      const ext = graph.node(e);
      const q = ext.op === 'reshape' && onlyGroup(e) ? ext.inputs[0] : e;
      const mm = graph.node(q);
      if (mm.op !== 'matmul' || !(q === e ? onlyGroup(q) : onlyReader(q, e)) || numel(mm.shape) === 0) continue;
      const d = problem(mm);
      if (!d || d.batch !== 1 || d.m !== p.m || d.n !== p.n) continue;
      // A view op is read in place when every reader is the second matmul or a view op already read in place,
      // and a's view does not bind it.
      const inPlace = new Set<number>([q]);
      let bound: readonly number[] = [];
      const inline = (id: number) => {
        const ok = live.has(id) && !outputs.has(id) && !bound.includes(id) && (readers.get(id) ?? []).every((r) => inPlace.has(r));
        if (ok) inPlace.add(id);
        return ok;
      };
      const a = planView(graph, mm.inputs[0], inline);
      bound = a.leaves;
      const plan: SecondProductPlan = { external: e, matmul: q, a, b: planView(graph, mm.inputs[1], inline) };
      // Bindings: the group matmul's operands, the views' leaves, the group's other externals.
      if (2 + secondProductLeaves(plan).length + externals.length - 1 > maxInputs) continue;
      plans.set(g.root, plan);
      break;
    }
  }
  return plans;
}

/**
 * A matmul of the rows a row kernel writes (LoRA's `x·Aᵀ`, x a layernorm's output), computed by that kernel
 * after it stores each row, with its epilogue group if it has one.
 */
export interface RowProductPlan {
  readonly matmul: number;
  /** The matmul's epilogue group (LoRA's scale), written as the kernel's second output. */
  readonly group?: FusionGroup;
  /** The right operand, read in place. */
  readonly b: ViewPlan;
}

/** Widest product a row kernel computes: each invocation owns a few columns, each a dot product along the row. */
export const ROW_PRODUCT_MAX_N = 256;

/**
 * Row products (the row kernel's stored value → plan): a matmul whose left operand is that value (or a reshape
 * of it to rows) with contiguous rows longer than ROW_THREAD_MAX, K the row length, at most ROW_PRODUCT_MAX_N
 * columns, one batch and not split-K (it then sums as its own kernel would), whose operand view and epilogue
 * read only values computed before the row kernel runs (`ready`), within the binding limit, with at least one
 * row fitting workgroup memory (kernels/row.ts, rowProductShape).
 * `rowKernels` maps each row kernel's stored value to its row op and epilogue group; `groups` are the matmul
 * epilogue groups; `taken` are matmuls other kernels compute.
 */
export function planRowProducts(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, rowKernels: ReadonlyMap<number, { readonly row: number; readonly group?: FusionGroup }>, groups: readonly FusionGroup[], taken: ReadonlySet<number>, ready: (id: number, before: number) => boolean, maxInputs: number, target: Target): Map<number, RowProductPlan> {
  const readers = new Map<number, number[]>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) readers.set(i, [...(readers.get(i) ?? []), n.id]);
  const groupOf = new Map(groups.filter((g) => g.matmul !== undefined).map((g) => [g.matmul!, g] as const));
  const plans = new Map<number, RowProductPlan>();
  const claimed = new Set<number>();
  for (const [value, { row, group: rowGroup }] of rowKernels) {
    const r = graph.node(row);
    const len = r.shape[r.shape.length - 1];
    if (r.op !== 'layernorm' && normDim(attrNum(r.attrs, 'dim', -1), r.shape.length) !== r.shape.length - 1) continue;
    if (len <= ROW_THREAD_MAX) continue;
    // The value itself, or a reshape of it to rows of the same length.
    const sources = [value, ...(readers.get(value) ?? []).filter((x) => graph.node(x).op === 'reshape' && graph.node(x).shape.at(-1) === len)];
    const candidates = sources.flatMap((s) => (readers.get(s) ?? []).filter((m) => graph.node(m).op === 'matmul' && graph.node(m).inputs[0] === s && graph.node(m).inputs[1] !== s));
    for (const q of candidates) {
      const mm = graph.node(q);
      const inputs = mm.inputs.map((i) => graph.node(i));
      if (taken.has(q) || claimed.has(q) || outputs.has(q) || !live.has(q) || matmulVariant(mm, inputs, target) === 'splitk') continue;
      const d = productDims(mm, inputs);
      if (d.batch !== 1 || d.k !== len || d.n > ROW_PRODUCT_MAX_N || numel(mm.shape) === 0 || !rowProductShape(r.shape, d.n, target)) continue;
      const group = groupOf.get(q);
      const inPlace = new Set<number>([q]);
      const inline = (id: number) => {
        const ok = live.has(id) && !outputs.has(id) && (readers.get(id) ?? []).every((x) => inPlace.has(x));
        if (ok) inPlace.add(id);
        return ok;
      };
      const b = planView(graph, mm.inputs[1], inline);
      const externals = group ? groupExternals(graph, group, q) : [];
      const reads = [...b.leaves, ...externals];
      if (!reads.every((x) => ready(x, value))) continue;
      // Bindings: the row kernel's (its op's inputs and its epilogue's externals), then the product's; two outputs.
      const own = r.inputs.length + (rowGroup ? groupExternals(graph, rowGroup, row).length : 0);
      if (own + reads.length + 1 > maxInputs) continue;
      plans.set(value, group ? { matmul: q, group, b } : { matmul: q, b });
      claimed.add(q);
      break;
    }
  }
  return plans;
}

/**
 * Externals of fused kernels read in place through views (group root → external → plan): an external that is
 * a movement op (permute, slice, pad, concat, expand, a reshape of one, a constant fill; kernels/view.ts) read
 * by nothing but the group (or by view ops it inlines), no graph output, whose leaves fit the kernel's bindings.
 * The movement kernels then do not run: the fused kernel indexes through them. `fixed(g)` is the number of
 * bindings a group's kernel has besides its externals (a matmul's operands, a row op's input); `skip` holds
 * externals the kernel does not read (a second product).
 */
export function planViewReads(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, groups: readonly FusionGroup[], fixed: (g: FusionGroup) => number, skip: ReadonlySet<number>, maxInputs: number): Map<number, Map<number, ViewPlan>> {
  const readers = new Map<number, number[]>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) readers.set(i, [...(readers.get(i) ?? []), n.id]);
  const plans = new Map<number, Map<number, ViewPlan>>();
  for (const g of groups) {
    const externals = groupExternals(graph, g, epilogueProducer(g)).filter((e) => !skip.has(e));
    const views = new Map<number, ViewPlan>();
    const boundSet = () => new Set(externals.flatMap((e) => views.get(e)?.leaves ?? [e]));
    const bound = () => boundSet().size;
    // A node is inlined when only inlined nodes and members read it, and no other read binds it.
    const inPlace = new Set(g.members);
    const inline = (id: number) => {
      const ok = live.has(id) && !outputs.has(id) && !boundSet().has(id) && (readers.get(id) ?? []).every((r) => inPlace.has(r));
      if (ok) inPlace.add(id);
      return ok;
    };
    for (const e of externals) {
      if (!VIEW_OPS.has(graph.node(e).op) || isScalarConst(graph.node(e))) continue;
      views.set(e, { root: e, inlined: [], leaves: [] }); // e itself is not bound while its view is planned
      const plan = planView(graph, e, inline);
      views.set(e, plan);
      // Not a view after all (read elsewhere), or too many bindings: the ops it would inline are computed.
      if (!plan.inlined.includes(e) || !savesKernel(graph, plan) || fixed(g) + bound() > maxInputs) {
        views.delete(e);
        for (const id of plan.inlined) inPlace.delete(id);
      }
    }
    if (views.size) plans.set(g.root, views);
  }
  return plans;
}

/** Whether a view replaces a kernel: reshapes alone share their input's buffer anyway. */
const savesKernel = (graph: Graph, plan: ViewPlan): boolean => plan.inlined.some((id) => graph.node(id).op !== 'reshape');

/**
 * Matmul operands read in place through views (matmul → a's and b's plans): an operand that is a movement tree
 * (not a swap of the last two dims, which planTransposedReads covers) with a single leaf, read by nothing but
 * the matmul (or view ops it inlines) and no graph output; the leaf is bound in the operand's place. The
 * permute that merges attention heads back, for example, is then no kernel. `skip` holds matmuls other kernels
 * compute.
 */
export function planOperandViews(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, transposed: ReadonlyMap<number, MatmulReads>, skip: ReadonlySet<number>): Map<number, [ViewPlan | undefined, ViewPlan | undefined]> {
  const readers = new Map<number, number[]>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) readers.set(i, [...(readers.get(i) ?? []), n.id]);
  const plans = new Map<number, [ViewPlan | undefined, ViewPlan | undefined]>();
  for (const mm of graph.nodes) {
    if (mm.op !== 'matmul' || !live.has(mm.id) || skip.has(mm.id) || numel(mm.shape) === 0) continue;
    const inPlace = new Set([mm.id]);
    const views: [ViewPlan | undefined, ViewPlan | undefined] = [undefined, undefined];
    // What the kernel binds besides the view being planned: the plain operands and the accepted views' leaves.
    let current = -1;
    const bound = () => [...mm.inputs.filter((x, j) => x !== current && !views[j]), ...views.flatMap((v) => v?.leaves ?? [])];
    const inline = (id: number) => {
      const ok = live.has(id) && !outputs.has(id) && !bound().includes(id) && (readers.get(id) ?? []).every((r) => inPlace.has(r));
      if (ok) inPlace.add(id);
      return ok;
    };
    mm.inputs.forEach((x, i) => {
      const n = graph.node(x);
      if (i === 1 && mm.inputs[0] === x) {
        views[1] = transposed.get(mm.id)?.[1] ? undefined : views[0]; // x·x: both read the same way
        return;
      }
      if (transposed.get(mm.id)?.[i] || !VIEW_OPS.has(n.op) || isScalarConst(n)) return;
      current = x;
      const plan = planView(graph, x, inline);
      if (plan.inlined.includes(x) && plan.leaves.length === 1 && savesKernel(graph, plan)) views[i] = plan;
      else for (const id of plan.inlined) inPlace.delete(id);
    });
    if (views[0] || views[1]) plans.set(mm.id, views);
  }
  return plans;
}
