// The one rewrite engine every pass runs on (tinygrad's graph_rewrite): a pass is a named table of rules,
// and `rewrite` rebuilds the graph node by node through a Builder, in order. For each node, with its inputs
// already rewritten, the rules are tried in table order; the first that returns a node id replaces the node
// (an existing node, or the root of a small subgraph it built with `ctx.add`, whose nodes are rewritten by
// the same rules as they are added). No rule matching keeps the node. Sweeps repeat until one fires no rule.
//
// Invariants the engine enforces: a replacement has the node's exact shape and dtype (so outputs keep their
// types); `input` and `param` leaves are copied as they are, never offered to rules, and never dropped; the
// inputs, params and outputs tables keep their names and order.
import { Builder } from '../ir/builder.js';
import { Graph, type Attrs, type DType, type Node, type Shape } from '../ir/graph.js';
import type { IrOp } from '../ir/ops.js';
import { formatAttrValue, formatType } from '../ir/print.js';
import { SHAPE_RULES } from '../ir/rules/shape.js';

/** A node about to be added to the new graph: its inputs are ids there. */
export interface Candidate {
  readonly op: IrOp;
  readonly inputs: readonly number[];
  readonly attrs: Attrs;
  readonly shape: Shape;
  readonly dtype: DType;
}

/** What a rule sees of the graph being built. */
export interface RewriteCtx {
  /** A node of the new graph. */
  node(id: number): Node;
  /** Adds a node to the new graph (type from the shape rules; rewritten by the same rules); returns its id. */
  add(op: IrOp, inputs: readonly number[], attrs?: Attrs): number;
  full(value: number, shape: Shape, dtype: DType): number;
  /** A node structurally identical to `c` (same op, inputs and attributes) already in the new graph. */
  find(c: Candidate): number | undefined;
}

/** Returns the id of a node (in the new graph) to use instead of `n`, or undefined when it does not apply. */
export type Rule = (n: Candidate, ctx: RewriteCtx) => number | undefined;
export type RuleTable = Readonly<Record<string, Rule>>;

export interface Pass {
  readonly name: string;
  readonly doc: string;
  readonly rules: RuleTable;
  /** Also drop nodes no output depends on (input and param nodes are kept). */
  readonly dropDead?: boolean;
}

export interface RewriteOptions {
  readonly dropDead?: boolean;
  /** Counts firings per rule name (added to what is there). */
  readonly stats?: Map<string, number>;
  /** Sweeps before giving up on a fixed point (a rule table that never settles is a bug): default 32. */
  readonly maxSweeps?: number;
}

export class RewriteError extends Error {}

/** Nested rule applications allowed while building one replacement. */
const MAX_DEPTH = 64;

const sameType = (a: { shape: Shape; dtype: DType }, b: { shape: Shape; dtype: DType }): boolean =>
  a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((s, i) => s === b.shape[i]);

/** The structural key of a node: op, inputs and attributes (sorted, numbers exact: -0 and NaN distinct). */
export function structuralKey(c: Pick<Candidate, 'op' | 'inputs' | 'attrs'>): string {
  const attrs = Object.keys(c.attrs)
    .filter((k) => c.attrs[k] !== undefined)
    .sort()
    .map((k) => `${k}=${formatAttrValue(c.attrs[k])}`);
  return `${c.op}(${c.inputs.join(',')}){${attrs.join(';')}}`;
}

class Sweep implements RewriteCtx {
  readonly b = new Builder();
  private readonly index = new Map<string, number>();
  private depth = 0;
  fired = 0;

  constructor(
    private readonly rules: readonly (readonly [string, Rule])[],
    private readonly stats: Map<string, number> | undefined,
  ) {}

  node(id: number): Node {
    return this.b.graph.node(id);
  }

  add(op: IrOp, inputs: readonly number[], attrs: Attrs = {}): number {
    const t = SHAPE_RULES[op](inputs.map((i) => this.node(i)), attrs);
    return this.emit({ op, inputs, attrs, shape: t.shape, dtype: t.dtype });
  }

  full(value: number, shape: Shape, dtype: DType): number {
    return this.add('full', [], { value, shape: [...shape], dtype });
  }

  find(c: Candidate): number | undefined {
    return this.index.get(structuralKey(c));
  }

  /** Offers `c` to the rules; adds it when none applies. */
  emit(c: Candidate): number {
    if (++this.depth > MAX_DEPTH) throw new RewriteError(`rewrite rules recurse without end on ${c.op} : ${formatType(c)}`);
    try {
      for (const [name, rule] of this.rules) {
        const r = rule(c, this);
        if (r === undefined) continue;
        const got = this.node(r);
        if (!sameType(got, c)) throw new RewriteError(`rule '${name}' replaced ${c.op} : ${formatType(c)} by %${r} ${got.op} : ${formatType(got)}`);
        this.fired++;
        this.stats?.set(name, (this.stats.get(name) ?? 0) + 1);
        return r;
      }
      return this.push(c);
    } finally {
      this.depth--;
    }
  }

  /** Adds `c` as it is. */
  push(c: Candidate): number {
    const nodes = this.b.graph.nodes;
    const id = nodes.length;
    nodes.push({ id, op: c.op, inputs: [...c.inputs], attrs: c.attrs, shape: [...c.shape], dtype: c.dtype });
    if (c.op !== 'input' && c.op !== 'param') {
      const key = structuralKey(c);
      if (!this.index.has(key)) this.index.set(key, id);
    }
    return id;
  }
}

/** Output-reachable nodes plus every input and param node. */
function keptNodes(g: Graph): Set<number> {
  const keep = g.live();
  for (const n of g.nodes) if (n.op === 'input' || n.op === 'param') keep.add(n.id);
  return keep;
}

function sweep(g: Graph, rules: readonly (readonly [string, Rule])[], opts: RewriteOptions): { graph: Graph; fired: number } {
  const s = new Sweep(rules, opts.stats);
  const keep = opts.dropDead ? keptNodes(g) : undefined;
  const map = new Array<number>(g.nodes.length);
  for (const n of g.nodes) {
    if (keep && !keep.has(n.id)) continue;
    const c: Candidate = { op: n.op, inputs: n.inputs.map((i) => map[i]), attrs: n.attrs, shape: n.shape, dtype: n.dtype };
    map[n.id] = n.op === 'input' || n.op === 'param' ? s.push(c) : s.emit(c);
  }
  const out = s.b.graph;
  out.inputs.push(...g.inputs.map((e) => ({ name: e.name, node: map[e.node] })));
  out.params.push(...g.params.map((e) => ({ name: e.name, node: map[e.node] })));
  out.outputs.push(...g.outputs.map((e) => ({ name: e.name, node: map[e.node] })));
  return { graph: out, fired: s.fired };
}

/** Rewrites `graph` with `rules` to a fixed point; returns a new graph (the argument is not changed). */
export function rewrite(graph: Graph, rules: RuleTable, opts: RewriteOptions = {}): Graph {
  const table = Object.entries(rules);
  const max = opts.maxSweeps ?? 32;
  let g = graph;
  for (let i = 0; i < max; i++) {
    const r = sweep(g, table, opts);
    g = r.graph;
    if (r.fired === 0) return g;
  }
  throw new RewriteError(`rewrite did not reach a fixed point in ${max} sweeps (rules: ${table.map(([n]) => n).join(', ')})`);
}

export function runPass(graph: Graph, pass: Pass, stats?: Map<string, number>): Graph {
  return rewrite(graph, pass.rules, { dropDead: pass.dropDead, stats });
}

/** Whether two graphs are the same: nodes (op, inputs, attributes, type) and tables, in order. */
export function sameGraph(a: Graph, b: Graph): boolean {
  if (a.nodes.length !== b.nodes.length) return false;
  const sameTable = (x: Graph['inputs'], y: Graph['inputs']) => x.length === y.length && x.every((e, i) => e.name === y[i].name && e.node === y[i].node);
  if (!sameTable(a.inputs, b.inputs) || !sameTable(a.params, b.params) || !sameTable(a.outputs, b.outputs)) return false;
  return a.nodes.every((n, i) => {
    const m = b.nodes[i];
    return n.op === m.op && sameType(n, m) && n.inputs.length === m.inputs.length && n.inputs.every((x, k) => x === m.inputs[k]) && structuralKey(n) === structuralKey(m);
  });
}
