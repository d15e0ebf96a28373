// Gradient checkpointing (activation recomputation) as a graph transformation. A training graph keeps every
// forward activation that the backward reads alive from the forward pass until the backward pass reaches it.
// With checkpointing, the forward nodes are grouped into segments (one per transformer block); the backward
// reads a copy of each segment's activations, recomputed from the segment's boundary values just before the
// backward first needs the segment. The originals then die inside the forward pass, and at any time of the
// backward only one segment's activations are live (plus the boundaries, which are kept).
//
// Run it as the last graph pass (after `optimize`): a copy has the same op, inputs and attributes as its
// original, so CSE would merge every copy back. `backwardStart` finds where the backward begins in an optimised
// graph (the passes keep node order, and the VJP's first backward node is its first cotangent input).
import { Builder } from '../ir/builder.js';
import type { Graph, Node } from '../ir/graph.js';

export class RematError extends Error {
  override name = 'RematError';
}

const isLeaf = (n: Node): boolean => n.op === 'input' || n.op === 'param' || n.op === 'full';

export interface RematSegment {
  readonly name: string;
  /** The forward nodes to recompute, in order: those the backward reads and their in-segment ancestors. */
  readonly nodes: readonly number[];
  /** The backward node the copies are placed right before (the first one that reads a recomputed value). */
  readonly before: number;
}

export interface RematPlan {
  /** Segments with something to recompute, in the order their copies are placed. */
  readonly segments: readonly RematSegment[];
  /** Forward values of segments that are kept (read by the forward outside their segment, or outputs). */
  readonly kept: ReadonlySet<number>;
}

function checkForwardCount(graph: Graph, forwardCount: number): void {
  if (!Number.isInteger(forwardCount) || forwardCount < 0 || forwardCount > graph.nodes.length) {
    throw new RematError(`rematerialize: forwardCount ${forwardCount} is not a node count of this graph (it has ${graph.nodes.length} nodes)`);
  }
}

/**
 * What `rematerialize` recomputes. A segment's value is kept (never recomputed) when it is a graph output or a
 * forward node outside the segment reads it (the segment's outputs: the boundary values of later segments);
 * leaves are never recomputed. Every other segment value the backward reads is recomputed, with its
 * in-segment ancestors that are not kept.
 */
export function rematPlan(graph: Graph, forwardCount: number, segmentOf: (id: number) => string | undefined): RematPlan {
  checkForwardCount(graph, forwardCount);
  const seg: (string | undefined)[] = [];
  for (let id = 0; id < forwardCount; id++) seg.push(isLeaf(graph.node(id)) ? undefined : segmentOf(id));
  const kept = new Set<number>(graph.outputs.map((o) => o.node).filter((id) => id < forwardCount && seg[id] !== undefined));
  for (let id = 0; id < forwardCount; id++) {
    for (const i of graph.node(id).inputs) if (seg[i] !== undefined && seg[i] !== seg[id]) kept.add(i);
  }
  const recomputed = (i: number): boolean => i < forwardCount && seg[i] !== undefined && !kept.has(i);

  const marked = new Set<number>();
  const before = new Map<string, number>();
  const mark = (root: number) => {
    const stack = [root];
    while (stack.length) {
      const id = stack.pop()!;
      if (marked.has(id)) continue;
      marked.add(id);
      // A recomputed node's inputs are either in its segment or kept (a read across segments keeps the value).
      for (const i of graph.node(id).inputs) if (recomputed(i)) stack.push(i);
    }
  };
  for (let id = forwardCount; id < graph.nodes.length; id++) {
    for (const i of graph.node(id).inputs) {
      if (!recomputed(i)) continue;
      mark(i);
      if (!before.has(seg[i]!)) before.set(seg[i]!, id);
    }
  }
  const nodes = new Map<string, number[]>();
  for (const id of [...marked].sort((a, b) => a - b)) {
    const list = nodes.get(seg[id]!);
    if (list) list.push(id);
    else nodes.set(seg[id]!, [id]);
  }
  const segments = [...nodes].map(([name, ids]) => ({ name, nodes: ids, before: before.get(name)! }));
  segments.sort((a, b) => a.before - b.before || a.nodes[0] - b.nodes[0]);
  return { segments, kept };
}

/**
 * `graph` is a forward graph extended by autodiff (compiler/autodiff/vjp.ts): nodes [0, forwardCount) are the
 * forward pass, later nodes the backward pass. `segmentOf(id)` names the checkpoint segment of a forward node
 * (e.g. `blocks.3`) or undefined (never recomputed). Returns an equivalent graph in which every backward node
 * that read a recomputed forward value of a segment (see rematPlan) reads a copy instead, made just before the
 * first backward node of that segment needs it (one copy of the segment per graph). Forward nodes keep their
 * ids; the tables keep their names and order; outputs are the same values. The argument is not changed.
 */
export function rematerialize(graph: Graph, forwardCount: number, segmentOf: (id: number) => string | undefined): Graph {
  const plan = rematPlan(graph, forwardCount, segmentOf);
  const at = new Map<number, RematSegment[]>();
  for (const s of plan.segments) at.set(s.before, [...(at.get(s.before) ?? []), s]); // a few segments per site

  const b = new Builder();
  const map: number[] = [];
  const copy = new Map<number, number>();
  const remap = (i: number) => copy.get(i) ?? map[i];
  for (const n of graph.nodes) {
    for (const s of at.get(n.id) ?? []) {
      // In forward order, so a copy's in-segment inputs are copied before it; dropout keeps seed and salt.
      for (const id of s.nodes) {
        const m = graph.node(id);
        copy.set(id, b.add(m.op, m.inputs.map(remap), m.attrs));
      }
    }
    // Forward nodes read originals (no copy exists yet); backward nodes read the copies.
    map[n.id] = b.add(n.op, n.id < forwardCount ? n.inputs.map((i) => map[i]) : n.inputs.map(remap), n.attrs);
  }
  const out = b.graph;
  out.inputs.push(...graph.inputs.map((e) => ({ name: e.name, node: map[e.node] })));
  out.params.push(...graph.params.map((e) => ({ name: e.name, node: map[e.node] })));
  out.outputs.push(...graph.outputs.map((e) => ({ name: e.name, node: map[e.node] })));
  return out;
}

/**
 * Segments by parameter paths: a forward node belongs to `<prefix>.<i>` for the largest block index i of any
 * `<prefix>.<i>.*` parameter it depends on (transitively). Nodes depending on no such parameter, nodes past the
 * last read of a `<prefix>.*` parameter (the final norm, the head and the loss: as in the original, which
 * checkpoints each block and nothing else) and backward nodes: undefined.
 */
export function blockSegments(graph: Graph, forwardCount: number, prefix = 'blocks'): (id: number) => string | undefined {
  checkForwardCount(graph, forwardCount);
  const head = `${prefix}.`;
  const block = new Int32Array(forwardCount).fill(-1);
  const isBlockParam = new Uint8Array(forwardCount);
  for (let id = 0; id < forwardCount; id++) {
    const n = graph.node(id);
    if (n.op === 'param') {
      const path = String(n.attrs.path);
      const index = path.startsWith(head) ? /^(\d+)\./.exec(path.slice(head.length)) : null;
      if (index) (block[id] = Number(index[1])), (isBlockParam[id] = 1);
    } else {
      for (const i of n.inputs) block[id] = Math.max(block[id], block[i]);
      // A parameter read through a cast (a frozen fp16 weight, compiler/train/frozen-precision.ts) is the parameter.
      if (n.op === 'cast' && isBlockParam[n.inputs[0]]) isBlockParam[id] = 1;
    }
  }
  // Whether a node is, or feeds, a node that reads a block parameter: readers have larger ids, so one
  // backward sweep suffices.
  const feedsBlock = new Uint8Array(forwardCount);
  for (let id = forwardCount - 1; id >= 0; id--) {
    const ins = graph.node(id).inputs;
    if (ins.some((i) => isBlockParam[i])) feedsBlock[id] = 1;
    if (feedsBlock[id]) for (const i of ins) feedsBlock[i] = 1;
  }
  return (id) => (id >= 0 && id < forwardCount && block[id] >= 0 && feedsBlock[id] ? `${prefix}.${block[id]}` : undefined);
}

/**
 * Where the backward pass begins: the index of the first cotangent input (`d:<output>`, the first node vjp
 * adds). The passes keep node order and never drop inputs, so this also holds after `optimize`.
 */
export function backwardStart(graph: Graph): number {
  const d = graph.nodes.find((n) => n.op === 'input' && String(n.attrs.name).startsWith('d:'));
  if (!d) throw new RematError('rematerialize: the graph has no cotangent input (d:<output>), so it has no backward pass to recompute for');
  return d.id;
}
