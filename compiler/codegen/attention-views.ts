// Attention kernels read their row operands in place: q, k, v (and the backward's g) are usually slices of one
// fused qkv projection, split into heads by a reshape and a permute, and q is pre-scaled by a constant. Without
// this, each is a slice, permute (and scaling) kernel and a copy in memory before every attention kernel; with
// it, the flash kernels (kernels/flash-forward.ts, kernels/flash-backward.ts) bind the qkv buffer and index
// through the movement ops (kernels/view.ts), applying the scaling as each q element is loaded.
//
// An operand is read in place when it is a movement tree (a view: kernels/view.ts's VIEW_OPS), optionally under
// a prologue of elementwise nodes whose other inputs are scalar constants (`q * scale`, autocast's rounding), and
// - every reader is an attention-family node that reads it in one of ATTENTION_VIEW_RULES' slots (the forward,
//   attention_lse, attention_grad of a VJP graph all read q, k, v: each reads the same view), whose flash tiles
//   fit the target (no fallback kernel, which reads flat);
// - no node of the tree or prologue is a graph output, or computed by another kernel; a node under the operand
//   is inlined only when nothing but inlined nodes reads it (so no other read ever binds it);
// - it saves a kernel (a prologue, or a movement op other than a reshape, which shares its input's buffer);
// - every kernel that reads it still fits the target's storage bindings (plans are dropped until they all do).
// Bit for bit the unfused path: the view reads the same stored values, and the prologue computes the value its
// own kernel would store (kernels/attention.ts, attentionReads) before the kernel's own arithmetic.
//
// Casts get their own treatment, because a flash kernel reads each swept element once per tile of the other side
// (144 times per element at EVA-G detection), and what a view reads it reads element by element:
// - a prologue that rounds to f16 or bf16 is not read in place: its own (fused) kernel rounds each element once
//   and stores the result (as f16 where the target allows), which the flash kernels then read from its binding,
//   instead of running the branchy software rounding (kernels/elementwise.ts, cast_f16) at every read (autocast's
//   f16 VJP at EVA-G detection on the H200: 48.2 -> 16.7 ms; fp16 training's q = round(permute(qkv)·scale) too);
// - where the view is flat (the operand's values are one leaf's, in its row-major order: no movement but
//   reshapes), a prologue of casts that keep every value (to f32; to f16 of exact f16 values, half.ts) is read as
//   its leaf, straight from the binding: as vec4s, vec4<f16> ones where the leaf is stored as f16;
// - where the view is an affine map of its one leaf (kernels/view-affine.ts: heads split from a fused projection) and
//   the prologue keeps every value, the plan records the map (AttentionOperandPlan.affine): the tensor-core flash
//   kernels from storage load the operand's rows at their stride from the leaf's binding.
import { numel, type Graph, type Node } from '../ir/graph.js';
import { attrNum } from '../ir/rules/shape.js';
import { epilogueProducer, isInlineElementwise, isScalarConst, type FusionGroup } from './fuse.js';
import { isExactHalf } from './half.js';
import type { Target } from './types.js';
import type { AttentionOperandPlan, AttentionOperandPlans } from '../../kernels/attention.js';
import { flashBackwardTiles } from '../../kernels/flash-backward.js';
import { FlashTileError } from '../../kernels/flash-common.js';
import { flashForwardTiles } from '../../kernels/flash-forward.js';
import { planView, VIEW_OPS, type ViewPlan } from '../../kernels/view.js';
import { affineView } from '../../kernels/view-affine.js';

/** Attention-family ops and the input slots (row operands, [B, H, S, D]) their flash kernels read through views. */
export const ATTENTION_VIEW_RULES: { readonly [op: string]: { readonly slots: readonly number[]; readonly applies?: (n: Node) => boolean } } = {
  attention: { slots: [0, 1, 2] }, // q, k, v
  attention_lse: { slots: [0, 1] }, // q, k
  // q, k, v, g; the logits' gradient (wrt 3) has a flat kernel of its own.
  attention_grad: { slots: [0, 1, 2, 3], applies: (n) => attrNum(n.attrs, 'wrt') !== 3 },
};

export interface AttentionViews {
  /** Attention-family node → how its kernel reads each input slot (siblings included, for their fallback kernels). */
  readonly plans: Map<number, AttentionOperandPlans>;
  /** Nodes the attention kernels compute in place (movement ops and prologues; constants excluded): no kernel. */
  readonly computed: number[];
  /** For the schedule's constants: readers that read these plans' inlined nodes (a prologue reads its scalar constants). */
  readonly inPlace: { readonly readers: number[]; readonly plans: ViewPlan[] }[];
}

const none = (): AttentionViews => ({ plans: new Map(), computed: [], inPlace: [] });

/** Whether `n`'s flash kernel, alone, fits the target (otherwise the op's fallback kernel reads its inputs flat). */
function flashFits(graph: Graph, n: Node, target: Target): boolean {
  const inputs = n.inputs.map((i) => graph.node(i));
  try {
    if (n.op === 'attention_grad') flashBackwardTiles(n, inputs, target);
    else flashForwardTiles(n, inputs, target);
    return true;
  } catch (e) {
    if (e instanceof FlashTileError) return false;
    throw e;
  }
}

/**
 * Plans the in-place reads. `taken` holds nodes other kernels compute (never inlined here); `siblings` the
 * pairs one kernel computes (planSiblingOutputs: the pair's kernel has two outputs); `groups` the fusion groups
 * (a prologue never splits one).
 */
export function planAttentionViews(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, taken: ReadonlySet<number>, siblings: ReadonlyMap<number, number>, groups: readonly FusionGroup[], target: Target, enabled = true): AttentionViews {
  if (!enabled) return none();
  const readers = new Map<number, number[]>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) readers.set(i, [...(readers.get(i) ?? []), n.id]);
  const readersOf = (id: number) => readers.get(id) ?? [];
  const slotsOf = (n: Node) => {
    const rule = ATTENTION_VIEW_RULES[n.op];
    return rule && (rule.applies?.(n) ?? true) ? rule.slots : undefined;
  };
  const eligible = new Set(graph.nodes.filter((n) => live.has(n.id) && slotsOf(n) && numel(n.shape) > 0 && flashFits(graph, n, target)).map((n) => n.id));
  const free = (id: number) => live.has(id) && !outputs.has(id) && !taken.has(id);
  const groupOf = new Map(groups.flatMap((g) => g.members.map((m) => [m, g] as const)));
  // A fusion group's members are taken by its root's kernel: a prologue may take them with the root.
  const freeForPrologue = (id: number) => free(id) || (live.has(id) && !outputs.has(id) && groupOf.has(id));

  // Every operand (by node) that some eligible node reads in a view slot: its plan, shared by all its readers.
  const operands = new Map<number, AttentionOperandPlan>();
  const candidates = [...new Set([...eligible].flatMap((a) => slotsOf(graph.node(a))!.map((s) => graph.node(a).inputs[s])))].sort((a, b) => a - b);
  for (const x of candidates) {
    const xn = graph.node(x);
    if (!free(x) || numel(xn.shape) === 0) continue;
    // Every reader reads it as a row operand of its own (b, h) only.
    const rowOperand = (r: number) => {
      const n = graph.node(r);
      const slots = slotsOf(n);
      const q = graph.node(n.inputs[0]).shape;
      return eligible.has(r) && n.inputs.every((i, s) => i !== x || slots!.includes(s)) && xn.shape[0] === q[0] && xn.shape[1] === q[1];
    };
    if (!readersOf(x).every(rowOperand)) continue;
    const prologue = prologueOf(graph, x, freeForPrologue, readersOf);
    // A prologue takes whole fusion groups (then computed here), never part of one.
    const members = new Set(prologue);
    const splits = (g: FusionGroup) => g.members.some((m) => !members.has(m)) || epilogueProducer(g) !== undefined;
    if (prologue.some((m) => groupOf.has(m) && splits(groupOf.get(m)!))) continue;
    const root = prologue.length ? singleInput(graph, graph.node(prologue[0]))! : x;
    // A node is inlined when only inlined nodes (and the prologue's first node) read it.
    const inPlace = new Set<number>(prologue.slice(0, 1));
    const inline = (id: number) => {
      const ok = free(id) && (id === x || readersOf(id).every((r) => inPlace.has(r)));
      if (ok) inPlace.add(id);
      return ok;
    };
    const view = VIEW_OPS.has(graph.node(root).op) && !isScalarConst(graph.node(root)) ? planView(graph, root, inline) : { root, inlined: [], leaves: [root] };
    const flat = view.leaves.length === 1 && view.inlined.every((id) => graph.node(id).op === 'reshape');
    // A rounding runs once, in a kernel of its own (see the top of this file).
    if (prologue.some((id) => roundsToHalf(graph, graph.node(id)))) continue;
    const saves = prologue.length > 0 || view.inlined.some((id) => graph.node(id).op !== 'reshape');
    const keeps = prologue.every((id) => keepsValues(graph, graph.node(id)));
    const direct = flat && keeps;
    const affine = keeps ? affineView(graph, view) : undefined;
    if (saves && (prologue.length > 0 || view.inlined.includes(x))) operands.set(x, { view, prologue, ...(direct ? { direct } : {}), ...(affine ? { affine } : {}) });
  }

  // Drop plans until every kernel reading them fits the bindings: the distinct storage it binds and its outputs.
  const planOf = (a: Node): AttentionOperandPlans => a.inputs.map((x, s) => (slotsOf(a)!.includes(s) ? operands.get(x) : undefined));
  const bindings = (a: Node) => new Set(a.inputs.flatMap((x, s) => planOf(a)[s]?.view.leaves ?? [x])).size + (siblings.has(a.id) ? 2 : 1);
  const limit = target.limits.maxStorageBuffersPerShaderStage;
  for (let changed = true; changed; ) {
    changed = false;
    for (const a of eligible) {
      const n = graph.node(a);
      if (!planOf(n).some(Boolean) || bindings(n) <= limit) continue;
      // Its last planned operand is read from a binding instead (plans are shared: every reader's count changes).
      const s = planOf(n).map(Boolean).lastIndexOf(true);
      operands.delete(n.inputs[s]);
      changed = true;
    }
  }

  const plans = new Map<number, AttentionOperandPlans>();
  for (const a of eligible) {
    const p = planOf(graph.node(a));
    if (p.some(Boolean)) plans.set(a, p);
  }
  const computed = new Set<number>();
  const inPlace: AttentionViews['inPlace'] = [];
  for (const [x, p] of operands) {
    for (const id of [...p.view.inlined, ...p.prologue]) if (graph.node(id).op !== 'full') computed.add(id);
    const constants = p.prologue.flatMap((m) => graph.node(m).inputs.filter((i) => isScalarConst(graph.node(i))));
    inPlace.push({ readers: [...readersOf(x), ...p.prologue], plans: [p.view, { root: x, inlined: [...new Set(constants)], leaves: [] }] });
  }
  return { plans, computed: [...computed].sort((a, b) => a - b), inPlace };
}

/**
 * Whether `n` is a cast whose kernel value is its input's, bit for bit: kernels hold every value as an f32, so a
 * cast to f32 is the identity there (kernels/elementwise.ts), and so is a cast to f16 of exact f16 values.
 */
export function keepsValues(graph: Graph, n: Node): boolean {
  return n.op === 'cast' && (n.dtype === 'f32' || (n.dtype === 'f16' && isExactHalf(graph, n.inputs[0])));
}

/** Whether `n` is a cast that rounds to f16 or bf16 (in software, with branches: kernels/elementwise.ts). */
export function roundsToHalf(graph: Graph, n: Node): boolean {
  return n.op === 'cast' && (n.dtype === 'f16' || n.dtype === 'bf16') && !keepsValues(graph, n);
}

/** The one input of an elementwise node that is not a scalar constant (it may be read twice), if it has one. */
function singleInput(graph: Graph, n: Node): number | undefined {
  const others = new Set(n.inputs.filter((i) => !isScalarConst(graph.node(i))));
  return others.size === 1 ? [...others][0] : undefined;
}

/**
 * The prologue under operand `x` (topological order, ending with x): from x down, inline elementwise nodes of
 * their input's shape whose other inputs are scalar constants, each read by nothing but the node above it.
 */
function prologueOf(graph: Graph, x: number, free: (id: number) => boolean, readersOf: (id: number) => readonly number[]): number[] {
  const chain: number[] = [];
  for (let id = x; ; ) {
    const n = graph.node(id);
    const input = singleInput(graph, n);
    const above = chain[0];
    const ok = free(id) && isInlineElementwise(n) && input !== undefined && graph.node(input).shape.join() === n.shape.join() && (above === undefined || readersOf(id).every((r) => r === above));
    if (!ok) return chain;
    chain.unshift(id);
    id = input;
  }
}
