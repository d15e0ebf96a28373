// Reverse-mode autodiff. Frozen values get no backward work at all: before walking backwards, only the
// nodes on a path from a requested value (a trainable parameter or input) to an output are kept, so a
// frozen backbone below LoRA costs nothing in the backward graph.
import { Builder } from '../ir/builder.js';
import type { Graph } from '../ir/graph.js';
import { GRAD_RULES } from './rules.js';

export interface VjpResult {
  /** The builder holding forward and backward nodes (the same graph, extended). */
  readonly builder: Builder;
  /** Cotangent input node per output name (`d:<output>`). */
  readonly cotangents: Map<string, number>;
  /** Gradient node per requested node id (a zero constant when the value does not reach any output). */
  readonly grads: Map<number, number>;
}

/** Extends `graph` in place with the VJP of its outputs with respect to the nodes `wrt`. */
export function vjp(graph: Graph, wrt: readonly number[]): VjpResult {
  const b = new Builder(graph);
  // Nodes that depend on something in wrt (forward reachability) ...
  const dependsOnWrt = new Set<number>(wrt);
  for (const n of graph.nodes) if (n.inputs.some((i) => dependsOnWrt.has(i))) dependsOnWrt.add(n.id);
  // ... and that some output depends on: only these carry cotangents.
  const live = graph.live();
  const active = (id: number) => dependsOnWrt.has(id) && live.has(id);

  // Nodes before this are the forward graph (a graph without outputs has no backward work).
  const forwardCount = graph.nodes.length;
  const cotangents = new Map<string, number>();
  const acc = new Map<number, number>();
  const addTo = (id: number, g: number) => {
    const prev = acc.get(id);
    acc.set(id, prev === undefined ? g : b.add('add', [prev, g]));
  };
  for (const o of [...graph.outputs]) {
    const n = graph.node(o.node);
    const d = b.input(`d:${o.name}`, n.shape, n.dtype);
    cotangents.set(o.name, d);
    if (active(o.node)) addTo(o.node, d);
  }
  for (let id = forwardCount - 1; id >= 0; id--) {
    const g = acc.get(id);
    if (g === undefined || !active(id)) continue;
    const node = graph.node(id);
    if (node.inputs.length === 0) continue;
    const grads = GRAD_RULES[node.op]({ b, node, g, needs: node.inputs.map(active) });
    node.inputs.forEach((input, k) => {
      const gi = grads[k];
      if (gi !== undefined && active(input)) addTo(input, gi);
    });
  }
  const grads = new Map<number, number>();
  for (const w of wrt) {
    const n = graph.node(w);
    grads.set(w, acc.get(w) ?? b.full(0, n.shape, n.dtype));
  }
  return { builder: b, cotangents, grads };
}
