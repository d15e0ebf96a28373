// Views: a consumer kernel reads a tree of movement ops in place, as index arithmetic, instead of launching a
// kernel per op first (as tinygrad's views do). A matmul, say, reads `permute(concat([pad(B), full(0), pad(B)]))`
// straight from B's buffer.
//
// planView picks the tree: from the node the consumer reads, it descends through the view ops the caller
// lets it inline; every other node is a leaf, read from its storage binding with a row-major flat index.
// viewCode writes one WGSL function per inlined node (a `full` is just its literal), each taking the node's
// coordinates (u32) and returning the element (f32):
// - permute, expand, slice: the input's coordinates are a per-dim map of the output's (expand: 0 on broadcast
//   dims, slice: c·step + start);
// - reshape: storage is row-major, so a reshape of a leaf reads it at the output's flat index, and a reshape of
//   a reshape reads the inner one's input. Otherwise dims are matched in groups of equal size (a split, a merge,
//   size-1 dims added or dropped); within a group the flat offset is recomputed and split again;
// - pad and concat: comparisons pick the branch before anything is subtracted, so an in-range element never
//   computes a wrapped index (negative pads crop: an addition).
// Parts of the tree that no element of the root reaches are left out (empty concat parts, the input of a pad
// that only shifts values out of range, everything under an empty root): they are neither read nor bound.
//
// Function names are the prefix and a number in first-visit order of the tree (never a node id), so the same
// tree anywhere in a graph gives the same WGSL. Reads keep the form `<binding>[<index>]`, which
// kernels/half-storage.ts rewrites for f16 storage.
import { numel, type Graph, type Node, type Shape } from '../compiler/ir/graph.js';
import { attrInts, attrNum, attrPairs, normDim } from '../compiler/ir/rules/shape.js';
import { f32Lit, stridesOf, u32Lit } from './elementwise.js';

/** Ops a view reads through (evaluated as index arithmetic, no kernel): permute, pad, concat, slice, reshape, expand, and full (a constant, any shape). */
export const VIEW_OPS: ReadonlySet<string> = new Set(['permute', 'pad', 'concat', 'slice', 'reshape', 'expand', 'full']);

export interface ViewPlan {
  /** The node the consumer reads. */
  readonly root: number;
  /** View-op nodes evaluated inside the view (ascending ids). */
  readonly inlined: readonly number[];
  /** Nodes read from storage, in first-use order (deduplicated: one binding per distinct node). */
  readonly leaves: readonly number[];
}

/**
 * The inputs of view node `node` that some element of it reads, in input order: none when it has no elements;
 * a concat's non-empty parts; a pad's input unless every element is padding.
 */
export function viewInputs(node: Node, graph: Graph): number[] {
  if (numel(node.shape) === 0) return [];
  switch (node.op) {
    case 'full':
      return [];
    case 'concat': {
      const d = normDim(attrNum(node.attrs, 'dim'), node.shape.length);
      return node.inputs.filter((i) => graph.node(i).shape[d] > 0);
    }
    case 'pad': {
      const x = graph.node(node.inputs[0]);
      const pads = attrPairs(node.attrs, 'pads');
      // Along each dim, x's elements land on [before, before + size) and the output is [0, out size).
      const overlaps = pads.every(([before], d) => Math.max(before, 0) < Math.min(before + x.shape[d], node.shape[d]));
      return overlaps ? [x.id] : [];
    }
    default:
      return [node.inputs[0]];
  }
}

/** Descends from `id` through VIEW_OPS nodes for which `inline(node)` is true (a `full` is always inlined: it reads nothing); every other node is a leaf. `id` itself may be a leaf (then the view is a plain read). */
export function planView(graph: Graph, id: number, inline: (id: number) => boolean): ViewPlan {
  const inlined = new Set<number>();
  const leaves: number[] = [];
  const seen = new Set<number>();
  const visit = (n: number): void => {
    if (seen.has(n)) return;
    seen.add(n);
    const node = graph.node(n);
    if (node.op !== 'full' && !(VIEW_OPS.has(node.op) && inline(n))) {
      leaves.push(n);
      return;
    }
    inlined.add(n);
    for (const i of viewInputs(node, graph)) visit(i);
  };
  // An empty root has no element to read: nothing is inlined or bound.
  if (numel(graph.node(id).shape) > 0) visit(id);
  return { root: id, inlined: [...inlined].sort((a, b) => a - b), leaves };
}

// ---------------------------------------------------------------------------------------------- index expressions

const isAtom = (e: string): boolean => /^(?:[A-Za-z_]\w*|\d+u)$/.test(e);

/** `e · k` with the trivial cases folded. */
function times(e: string, k: number): string {
  if (k === 1) return e;
  return `${isAtom(e) ? e : `(${e})`} * ${u32Lit(k)}`;
}

/** The row-major flat index of `coords` in `shape`; size-1 dims are skipped (their coordinate is 0). */
function flatIndex(shape: Shape, coords: readonly string[]): string {
  const st = stridesOf(shape);
  const terms = coords.flatMap((c, d) => (shape[d] === 1 ? [] : [times(c, st[d])]));
  return terms.length ? terms.join(' + ') : '0u';
}

const plus = (e: string, k: number): string => (k === 0 ? e : `${e} + ${u32Lit(k)}`);
const minus = (e: string, k: number): string => (k === 0 ? e : `${e} - ${u32Lit(k)}`);

/**
 * Dims of `out` and `inp` (same element count, > 0) in consecutive groups of equal size: a reshape maps each
 * group of output dims onto its group of input dims alone.
 */
export function reshapeGroups(out: Shape, inp: Shape): { out: number[]; inp: number[] }[] {
  const groups: { out: number[]; inp: number[] }[] = [];
  let i = 0;
  let j = 0;
  while (i < out.length || j < inp.length) {
    const g = { out: [] as number[], inp: [] as number[] };
    let po = 1;
    let pi = 1;
    do {
      if (i < out.length && (po <= pi || j >= inp.length)) {
        po *= out[i];
        g.out.push(i++);
      } else {
        pi *= inp[j];
        g.inp.push(j++);
      }
    } while (po !== pi);
    groups.push(g);
  }
  return groups;
}

// ---------------------------------------------------------------------------------------------- code

/** WGSL module-scope functions evaluating element (c0, …, c{r-1}) of the root's value (r = its rank; rank 0 takes no coordinates) as f32, and the call expression. Leaf k is read with a row-major flat index from the binding named `binding(leaf)` (e.g. `in_3`). Function names start with `prefix` and are numbered by position in the tree, never by node id, so the same tree at another place in the graph gives identical WGSL. */
export function viewCode(graph: Graph, plan: ViewPlan, prefix: string, binding: (leaf: number) => string): { readonly helpers: string; call(coords: readonly string[]): string } {
  const inlined = new Set(plan.inlined);
  const leaves = new Set(plan.leaves);
  const names = new Map<number, string>();
  const ctx: Ctx = {
    graph,
    // A reshape of an inlined reshape is a reshape of the inner one's input (row-major either way).
    source: (id) => {
      let x = graph.node(id).inputs[0];
      while (inlined.has(x) && graph.node(x).op === 'reshape') x = graph.node(x).inputs[0];
      return graph.node(x);
    },
    readFlat: (n, flat) => (leaves.has(n) ? `${binding(n)}[${flat}]` : undefined),
    read: (n, coords) => {
      const node = graph.node(n);
      if (leaves.has(n)) return `${binding(n)}[${flatIndex(node.shape, coords)}]`;
      if (!inlined.has(n)) throw new Error(`internal: view of %${plan.root}: %${n} ${node.op} is neither inlined nor a leaf of the plan`);
      if (node.op === 'full') return f32Lit(attrNum(node.attrs, 'value'));
      return `${names.get(n)!}(${coords.join(', ')})`;
    },
  };
  const order: number[] = [];
  const number = (n: number): void => {
    const node = graph.node(n);
    if (names.has(n) || !inlined.has(n) || node.op === 'full') return;
    names.set(n, `${prefix}${names.size}`);
    order.push(n);
    for (const i of node.op === 'reshape' ? [ctx.source(n).id] : viewInputs(node, graph)) number(i);
  };
  number(plan.root);

  const fns = order.map((n) => {
    const node = graph.node(n);
    const cs = node.shape.map((_, d) => `c${d}`);
    const params = cs.map((c) => `${c}: u32`).join(', ');
    return `fn ${names.get(n)!}(${params}) -> f32 {\n${bodyOf(node, cs, ctx)}\n}`;
  });

  const root = graph.node(plan.root);
  return {
    helpers: fns.join('\n\n'),
    call(coords) {
      if (coords.length !== root.shape.length) throw new Error(`internal: view of %${plan.root} [${root.shape.join(', ')}] called with ${coords.length} coordinates`);
      // An empty root has no element; a consumer never evaluates this.
      if (numel(root.shape) === 0) return '0.0f';
      return ctx.read(plan.root, coords);
    },
  };
}

interface Ctx {
  readonly graph: Graph;
  /** The node a reshape reads (through inlined reshapes). */
  source(reshape: number): Node;
  /** The expression of element `coords` of node n (a leaf, an inlined node or a full). */
  read(n: number, coords: readonly string[]): string;
  /** The read of a leaf at a flat index; undefined for a node that is not a leaf. */
  readFlat(n: number, flat: string): string | undefined;
}

/** The statements of the function evaluating `node` at coordinates `cs` (a non-empty view op other than full). */
function bodyOf(node: Node, cs: readonly string[], ctx: Ctx): string {
  const x = ctx.graph.node(node.inputs[0]);
  const ret = (n: number, coords: readonly string[]) => `  return ${ctx.read(n, coords)};`;
  switch (node.op) {
    case 'permute': {
      const dims = attrInts(node.attrs, 'dims').map((d) => normDim(d, x.shape.length));
      const coords = new Array<string>(dims.length);
      dims.forEach((d, k) => (coords[d] = cs[k]));
      return ret(x.id, coords);
    }
    case 'expand': {
      const lead = node.shape.length - x.shape.length;
      return ret(x.id, x.shape.map((s, d) => (s === 1 ? '0u' : cs[d + lead])));
    }
    case 'slice': {
      const dim = normDim(attrNum(node.attrs, 'dim'), x.shape.length);
      const start = attrNum(node.attrs, 'start', 0);
      const step = attrNum(node.attrs, 'step', 1);
      return ret(x.id, cs.map((c, d) => (d === dim ? plus(times(c, step), start) : c)));
    }
    case 'reshape':
      return reshapeBody(node, cs, ctx);
    case 'pad':
      return padBody(node, cs, ctx);
    case 'concat':
      return concatBody(node, cs, ctx);
    default:
      throw new Error(`internal: %${node.id} ${node.op} is not a view op`);
  }
}

function reshapeBody(node: Node, cs: readonly string[], ctx: Ctx): string {
  const x = ctx.source(node.id);
  // Storage is row-major: a leaf is read at the output's own flat index; a constant is its value.
  const flat = ctx.readFlat(x.id, flatIndex(node.shape, cs));
  if (flat !== undefined || x.op === 'full') return `  return ${flat ?? ctx.read(x.id, [])};`;
  const lines: string[] = [];
  const coords = x.shape.map(() => '0u');
  reshapeGroups(node.shape, x.shape).forEach((g, k) => {
    const outDims = g.out.filter((d) => node.shape[d] !== 1);
    const inDims = g.inp.filter((d) => x.shape[d] !== 1);
    if (inDims.length === 0) return;
    if (outDims.length === 1 && inDims.length === 1) {
      coords[inDims[0]] = cs[outDims[0]];
      return;
    }
    let f = cs[outDims[0]];
    if (outDims.length > 1) {
      f = `f${k}`;
      lines.push(`  let ${f} = ${flatIndex(g.out.map((d) => node.shape[d]), g.out.map((d) => cs[d]))};`);
    }
    const st = stridesOf(g.inp.map((d) => x.shape[d]));
    g.inp.forEach((d, m) => {
      if (x.shape[d] === 1) return;
      const q = st[m] === 1 ? f : `${f} / ${u32Lit(st[m])}`;
      // The group's first dim needs no wrap: the flat offset is below the group's size.
      coords[d] = d === inDims[0] ? q : `${isAtom(q) ? q : `(${q})`} % ${u32Lit(x.shape[d])}`;
    });
  });
  lines.push(`  return ${ctx.read(x.id, coords)};`);
  return lines.join('\n');
}

function padBody(node: Node, cs: readonly string[], ctx: Ctx): string {
  const graph = ctx.graph;
  const value = f32Lit(attrNum(node.attrs, 'value', 0));
  if (viewInputs(node, graph).length === 0) return `  return ${value};`;
  const x = graph.node(node.inputs[0]);
  const pads = attrPairs(node.attrs, 'pads');
  const conds: string[] = [];
  const coords = cs.map((c, d) => {
    const [before] = pads[d];
    const size = x.shape[d];
    // x's elements lie on [before, before + size), clipped to the output's [0, out size).
    if (before > 0) conds.push(`${c} >= ${u32Lit(before)}`);
    if (before + size < node.shape[d]) conds.push(`${c} < ${u32Lit(before + size)}`);
    return before >= 0 ? minus(c, before) : plus(c, -before);
  });
  const inside = `return ${ctx.read(x.id, coords)};`;
  return conds.length ? `  if (${conds.join(' && ')}) { ${inside} }\n  return ${value};` : `  ${inside}`;
}

function concatBody(node: Node, cs: readonly string[], ctx: Ctx): string {
  const graph = ctx.graph;
  const d = normDim(attrNum(node.attrs, 'dim'), node.shape.length);
  const lines: string[] = [];
  let at = 0;
  const parts = node.inputs.map((i) => graph.node(i));
  const last = parts.map((p) => p.shape[d] > 0).lastIndexOf(true);
  parts.forEach((p, k) => {
    const len = p.shape[d];
    if (len > 0) {
      const inside = `return ${ctx.read(p.id, cs.map((c, e) => (e === d ? minus(c, at) : c)))};`;
      lines.push(k === last ? `  ${inside}` : `  if (${cs[d]} < ${u32Lit(at + len)}) { ${inside} }`);
    }
    at += len;
  });
  return lines.join('\n');
}
