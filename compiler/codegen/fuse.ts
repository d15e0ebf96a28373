// Elementwise fusion: a chain (a tree) of elementwise nodes with one shape, whose intermediate values have no
// other consumer, becomes one kernel; the intermediates never reach memory. Inputs from outside the group
// are read with broadcasting into the group's shape, and scalar constants (`full` of one element) are
// inlined as literals.
import type { Graph, Node } from '../ir/graph.js';
import { binaryExpr, unaryExpr } from '../../kernels/elementwise.js';

export interface FusionGroup {
  /** The node whose value the group writes. */
  readonly root: number;
  /** Every node computed by the kernel, in topological order, ending with the root. */
  readonly members: number[];
}

/** Whether the fused-kernel generator can express the op inline. */
export function isInlineElementwise(n: Node): boolean {
  return n.inputs.length === 1 ? unaryExpr(n.op, 'x') !== undefined : n.inputs.length === 2 && binaryExpr(n.op, 'a', 'b') !== undefined;
}

const isScalarConst = (n: Node) => n.op === 'full' && n.shape.reduce((a, b) => a * b, 1) === 1;

/**
 * Groups of two or more nodes to fuse (roots in topological order). `live` holds the nodes that are computed;
 * `outputs` are graph outputs (never absorbed: their value must reach memory). `maxInputs` bounds the
 * distinct external inputs (storage bindings) of one kernel.
 */
export function planFusion(graph: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>, maxInputs: number): FusionGroup[] {
  const consumers = new Map<number, number>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of new Set(n.inputs)) consumers.set(i, (consumers.get(i) ?? 0) + 1);
  const absorbed = new Set<number>();
  const groups: FusionGroup[] = [];
  for (let id = graph.nodes.length - 1; id >= 0; id--) {
    const root = graph.nodes[id];
    if (!live.has(id) || absorbed.has(id) || !isInlineElementwise(root)) continue;
    const members = new Set<number>([id]);
    // Every input of a member that is not itself a member is an external (a binding) until absorbed, so the
    // count checked before absorbing a node is exact.
    const externals = new Set<number>();
    const shape = root.shape.join();
    const addInputs = (n: Node) => {
      for (const x of n.inputs) if (!members.has(x) && (!isScalarConst(graph.node(x)) || outputs.has(x))) externals.add(x);
    };
    const grow = (n: Node) => {
      for (const i of new Set(n.inputs)) {
        if (!externals.has(i)) continue;
        const m = graph.node(i);
        const fusable = isInlineElementwise(m) && !outputs.has(i) && consumers.get(i) === 1 && m.shape.join() === shape && !absorbed.has(i);
        const extra = new Set(m.inputs.filter((x) => !members.has(x) && !externals.has(x) && (!isScalarConst(graph.node(x)) || outputs.has(x)))).size;
        if (fusable && externals.size - 1 + extra <= maxInputs) {
          members.add(i);
          externals.delete(i);
          addInputs(m);
          grow(m);
        }
      }
    };
    addInputs(root);
    grow(root);
    if (members.size < 2) continue;
    const ordered = [...members].sort((a, b) => a - b);
    for (const m of ordered) if (m !== id) absorbed.add(m);
    groups.push({ root: id, members: ordered });
  }
  return groups.reverse();
}
