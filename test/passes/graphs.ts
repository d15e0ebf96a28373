// Random graphs for the pass tests, as flat recipe lists (style.md): each recipe is a kind and a few
// numbers; its operands are picked by index modulo the current node count, counted back from the newest
// node (so small numbers make chains: neg∘neg, reshape∘reshape, permute∘permute). A recipe adapts to the
// shapes it finds (a broadcast-compatible partner, a constant shaped from its operand, a dim taken modulo
// the rank), so most recipes build; one whose shape rule still throws is skipped. Results above 512
// elements are skipped too, to keep interpretation fast.
import fc from 'fast-check';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Attrs, type DType, type Graph, type Shape } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { IrOp } from '../../compiler/ir/ops.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { broadcastShapes, ShapeError } from '../../compiler/ir/rules/shape.js';
import { makeRng, type Rng } from '../ir/util.js';

export interface Recipe {
  readonly kind: number;
  readonly a: number;
  readonly b: number;
  readonly s: number;
  readonly t: number;
}

export interface GraphCase {
  readonly inputs: readonly number[];
  readonly params: readonly number[];
  /** Bit k set: input k (k > 0) is f16 (fed float64 values that f16 cannot hold, as the interpreter allows). */
  readonly half: number;
  readonly recipes: readonly Recipe[];
  readonly outputs: readonly number[];
  /** Seed of the values fed to inputs and params. */
  readonly seed: number;
}

/** Leaf shapes, chosen so that many pairs broadcast and matmul together. */
const LEAF_SHAPES: readonly Shape[] = [[2, 3], [3], [2, 1, 3], [3, 2], [1, 3], [2, 3, 2], [4], [3, 3], [2, 2, 3], []];
// Identities (0, -0, 1) are common; 0.1 and 1/3 make sums whose rounding depends on the order of additions.
const CONSTS = [0, -0, 1, -1, 2, 0.5, 3, -2.5, 0.1, 1 / 3];
const MAX_ELEMS = 512;

export const recipeArb: fc.Arbitrary<Recipe> = fc.record({
  kind: fc.nat({ max: 63 }),
  a: fc.nat({ max: 7 }),
  b: fc.nat({ max: 15 }),
  s: fc.nat({ max: 1023 }),
  t: fc.nat({ max: 1023 }),
});

export const graphCaseArb = (maxRecipes = 24): fc.Arbitrary<GraphCase> =>
  fc.record({
    inputs: fc.array(fc.nat({ max: LEAF_SHAPES.length - 1 }), { minLength: 1, maxLength: 3 }),
    params: fc.array(fc.nat({ max: LEAF_SHAPES.length - 1 }), { maxLength: 2 }),
    half: fc.nat({ max: 7 }),
    recipes: fc.array(recipeArb, { minLength: 1, maxLength: maxRecipes }),
    outputs: fc.array(fc.nat({ max: 31 }), { maxLength: 2 }),
    seed: fc.nat(),
  });

const UNARY: readonly ((t: number, dtype: DType) => [IrOp, Attrs])[] = [
  () => ['neg', {}],
  () => ['exp', {}],
  () => ['log', {}],
  () => ['sqrt', {}],
  () => ['rsqrt', {}],
  () => ['tanh', {}],
  () => ['sigmoid', {}],
  () => ['relu', {}],
  () => ['gelu', {}],
  () => ['erf', {}],
  () => ['step', {}],
  () => ['neg', {}],
  (t) => ['pow', { exponent: [1, 2, 0.5, -1, 3][t % 5] }],
  (t) => ['cast', { dtype: (['f32', 'f16', 'bf16', 'bool', 'f32'] as DType[])[t % 5] }],
  // A cast to the operand's own dtype (not the identity for f16 / bf16 values computed in float64).
  (_t, dtype) => ['cast', { dtype }],
  (t) => ['dropout', { p: [0, 0.25, 0.5][t % 3], seed: (t >> 2) % 3 }],
];
const BINARY: readonly IrOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'eq', 'add', 'mul'];

type Kind = (b: Builder, r: Recipe, pick: (k: number) => number) => number | undefined;

const shapeOf = (b: Builder, id: number): Shape => b.graph.node(id).shape;
const broadcasts = (x: Shape, y: Shape): boolean => {
  try {
    broadcastShapes(x, y);
    return true;
  } catch {
    return false;
  }
};

/** The newest node, counting back from pick(start), that satisfies `ok`; undefined when none does. */
function findPartner(b: Builder, start: number, ok: (id: number) => boolean): number | undefined {
  const n = b.graph.nodes.length;
  for (let k = 0; k < n; k++) {
    const id = (start - k + n) % n;
    if (ok(id)) return id;
  }
  return undefined;
}

/** A permutation of `rank` dims drawn from seed `s`. */
export function permutation(rank: number, s: number): number[] {
  const dims = [...Array(rank).keys()];
  const rng = makeRng(s);
  for (let i = rank - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [dims[i], dims[j]] = [dims[j], dims[i]];
  }
  return dims;
}

/** A shape that broadcasts to `shape`: leading dims dropped, some dims set to 1 (bits of `mask`). */
function broadcastableFrom(shape: Shape, drop: number, mask: number): number[] {
  return shape.slice(Math.min(drop, shape.length)).map((s, i) => ((mask >> i) & 1 ? 1 : s));
}

const KINDS: Readonly<Record<string, Kind>> = {
  unary: (b, r, pick) => {
    const x = pick(r.a);
    const [op, attrs] = UNARY[r.s % UNARY.length](r.t, b.graph.node(x).dtype);
    return b.add(op, [x], attrs);
  },
  binary: (b, r, pick) => {
    const x = pick(r.a);
    const y = findPartner(b, pick(r.b), (id) => broadcasts(shapeOf(b, id), shapeOf(b, x))) ?? x;
    return b.add(BINARY[r.s % BINARY.length], r.t & 1 ? [y, x] : [x, y]);
  },
  // x op c or c op x, with a constant that broadcasts to x (identities 0, -0 and 1 are common).
  constant: (b, r, pick) => {
    const x = pick(r.a);
    const c = b.full(CONSTS[r.t % CONSTS.length], broadcastableFrom(shapeOf(b, x), (r.t >> 3) % 3, r.t >> 5));
    return b.add(BINARY[r.s % BINARY.length], (r.s >> 3) & 1 ? [c, x] : [x, c]);
  },
  // x combined with an identity element of the op, on either side where the op commutes.
  identity: (b, r, pick) => {
    const x = pick(r.a);
    const forms: readonly [IrOp, number, boolean][] = [
      ['add', 0, false], ['add', -0, false], ['add', 0, true], ['sub', 0, false], ['sub', -0, false],
      ['mul', 1, false], ['mul', 1, true], ['div', 1, false],
    ];
    const [op, value, first] = forms[r.s % forms.length];
    if ((r.s >> 3) % 4 === 0) return b.add('pow', [x], { exponent: 1 });
    const c = b.full(value, (r.t & 1) === 0 ? [] : broadcastableFrom(shapeOf(b, x), 0, r.t >> 1), b.graph.node(x).dtype);
    return b.add(op, first ? [c, x] : [x, c]);
  },
  reduce: (b, r, pick) => {
    const x = pick(r.a);
    const rank = shapeOf(b, x).length;
    const dims = [...Array(rank).keys()].filter((d) => (r.s >> (1 + d)) & 1).map((d) => ((r.t >> 1) & 1 ? d - rank : d));
    return b.add(r.s & 1 ? 'max' : 'sum', [x], { dims, keepdim: (r.t & 1) === 1 });
  },
  row: (b, r, pick) => {
    const x = pick(r.a);
    const rank = shapeOf(b, x).length;
    const op = (['softmax', 'log_softmax', 'layernorm'] as const)[r.s % 3];
    if (op === 'layernorm') return b.add(op, [x], { eps: 1e-5 });
    return b.add(op, [x], { dim: rank ? (r.t % rank) - ((r.t >> 4) & 1 ? rank : 0) : 0 });
  },
  matmul: (b, r, pick) => {
    let x = pick(r.a);
    if (shapeOf(b, x).length < 2) x = b.add('reshape', [x], { shape: [1, -1] });
    const xs = shapeOf(b, x);
    const y = findPartner(b, pick(r.b), (id) => {
      const ys = shapeOf(b, id);
      return ys.length >= 2 && ys[ys.length - 2] === xs[xs.length - 1] && broadcasts(xs.slice(0, -2), ys.slice(0, -2));
    });
    return b.add('matmul', [x, y ?? b.transposeLast(x)]);
  },
  reshape: (b, r, pick) => {
    const x = pick(r.a);
    const xs = shapeOf(b, x);
    const mode = r.s % 4;
    if (mode === 0) return b.add('reshape', [x], { shape: [-1] });
    if (mode === 1) {
      const at = r.t % (xs.length + 1);
      return b.add('reshape', [x], { shape: [...xs.slice(0, at), 1, ...xs.slice(at)] });
    }
    if (mode === 2) return b.add('reshape', [x], { shape: [...xs] });
    return b.add('reshape', [x], { shape: xs.length >= 2 ? [xs[0] * xs[1], ...xs.slice(2)] : [...xs, 1] });
  },
  permute: (b, r, pick) => {
    const x = pick(r.a);
    const node = b.graph.node(x);
    // Sometimes undo a permute, so permute∘permute composes to the identity.
    if (node.op === 'permute' && r.s & 1) {
      const p = (node.attrs.dims as number[]).map((d) => (d < 0 ? d + node.shape.length : d));
      const inv = p.map((_, i) => p.indexOf(i));
      return b.add('permute', [x], { dims: inv });
    }
    return b.add('permute', [x], { dims: permutation(node.shape.length, r.t) });
  },
  slice: (b, r, pick) => {
    const x = pick(r.a);
    const xs = shapeOf(b, x);
    const dim = r.s % Math.max(xs.length, 1);
    const n = xs[dim] ?? 1;
    if ((r.s >> 4) & 1) return b.add('slice', [x], { dim, start: 0, end: n + (r.t % 3) });
    const start = r.t % n;
    return b.add('slice', [x], { dim, start, end: start + 1 + ((r.t >> 4) % (n - start)), step: 1 + ((r.t >> 8) & 1) });
  },
  concat: (b, r, pick) => {
    const x = pick(r.a);
    const xs = shapeOf(b, x);
    const dim = r.t % Math.max(xs.length, 1);
    const mode = r.s % 3;
    if (mode === 0) return b.add('concat', [x], { dim });
    const y =
      mode === 1
        ? findPartner(b, pick(r.b), (id) => {
            const ys = shapeOf(b, id);
            return ys.length === xs.length && ys.every((s, i) => i === dim || s === xs[i]);
          })
        : x;
    return b.add('concat', [x, y ?? x], { dim });
  },
  pad: (b, r, pick) => {
    const x = pick(r.a);
    const xs = shapeOf(b, x);
    const zero = (r.t & 3) === 0;
    const pads = xs.map((_, i) => (zero ? [0, 0] : [(r.s >> (2 * i)) & 1, (r.s >> (2 * i + 1)) & 1]));
    return b.add('pad', [x], { pads, value: [0, 1, -1][(r.t >> 2) % 3] });
  },
  expand: (b, r, pick) => {
    const x = pick(r.a);
    const xs = shapeOf(b, x);
    const grown = xs.map((s, i) => (s === 1 && (r.s >> i) & 1 ? 2 + ((r.t >> i) & 1) : s));
    return b.add('expand', [x], { shape: r.t & 8 ? [2, ...grown] : grown });
  },
  full: (b, r, pick) => {
    const x = pick(r.a);
    return b.full(CONSTS[r.t % CONSTS.length], r.s & 1 ? [] : shapeOf(b, x));
  },
  // A second copy of an existing node (same op, inputs and attributes): work for CSE.
  dup: (b, r, pick) => {
    const n = b.graph.node(pick(r.a));
    if (n.op === 'input' || n.op === 'param') return undefined;
    return b.add(n.op, n.inputs, n.attrs);
  },
  // A copy that differs in one attribute (a dropout's seed, the sign of a constant), shown next to the
  // original: CSE must keep them apart.
  nearDup: (b, r, pick) => {
    const n = b.graph.node(pick(r.a));
    let variant: number;
    if (n.op === 'dropout') variant = b.add('dropout', n.inputs, { ...n.attrs, seed: Number(n.attrs.seed ?? 0) + 1 + (r.t % 3) });
    else if (n.op === 'full') variant = b.full(-Number(n.attrs.value), n.shape, n.dtype);
    else variant = b.add('dropout', [n.id], { p: 0.5, seed: r.t % 2 });
    return n.shape.length ? b.add('concat', [n.id, variant], { dim: 0 }) : b.add('div', [b.full(1, []), b.add('sub', [n.id, variant])]);
  },
};

/** Kind by recipe.kind modulo this list (repeats weight it). */
const KIND_ORDER: readonly (keyof typeof KINDS)[] = [
  'unary', 'unary', 'binary', 'binary', 'constant', 'identity', 'identity', 'reduce', 'row', 'matmul', 'reshape',
  'permute', 'permute', 'slice', 'concat', 'pad', 'expand', 'full', 'dup', 'dup', 'dup', 'nearDup',
];

export interface BuiltCase {
  readonly graph: Graph;
  /** Recipes that built a node, and those skipped. */
  readonly built: number;
  readonly skipped: number;
}

export function buildGraph(c: GraphCase): BuiltCase {
  const b = new Builder();
  c.inputs.forEach((s, k) => b.input(`x${k}`, LEAF_SHAPES[s], k > 0 && (c.half >> k) & 1 ? 'f16' : 'f32'));
  c.params.forEach((s, k) => b.param(`p.${k}.weight`, LEAF_SHAPES[s]));
  let built = 0;
  let skipped = 0;
  for (const r of c.recipes) {
    const pick = (k: number) => b.graph.nodes.length - 1 - (k % b.graph.nodes.length);
    const count = b.graph.nodes.length;
    try {
      const id = KINDS[KIND_ORDER[r.kind % KIND_ORDER.length]](b, r, pick);
      if (id === undefined) skipped++;
      else if (numel(shapeOf(b, id)) > MAX_ELEMS) {
        b.graph.nodes.length = count; // drop it (and any helper nodes it added)
        skipped++;
      } else built++;
    } catch (e) {
      if (!(e instanceof ShapeError)) throw e;
      b.graph.nodes.length = count;
      skipped++;
    }
  }
  const last = b.graph.nodes.length - 1;
  b.output('y', last);
  c.outputs.forEach((o, k) => b.output(`y${k}`, last - (o % b.graph.nodes.length)));
  return { graph: b.graph, built, skipped };
}

const SPECIAL = [0, -0, -0, NaN, Infinity, -Infinity];

function feedTensor(shape: Shape, rng: Rng, special: boolean): RefTensor {
  const data = new Float64Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = special && rng() < 0.3 ? SPECIAL[Math.floor(rng() * SPECIAL.length)] : -2 + 4 * rng();
  return { shape: [...shape], data };
}

/** Values for every declared input and param of `g` (by name), seeded; `special` mixes in -0, 0, NaN and ±Infinity. */
export function feeds(g: Graph, seed: number, special: boolean): { inputs: Map<string, RefTensor>; params: Map<string, RefTensor> } {
  const rng = makeRng(seed);
  const make = (table: Graph['inputs']) => new Map(table.map((e) => [e.name, feedTensor(g.node(e.node).shape, rng, special)]));
  return { inputs: make(g.inputs), params: make(g.params) };
}

/** Interprets `g` on the given feeds; outputs by name. */
export function run(g: Graph, f: ReturnType<typeof feeds>): Map<string, RefTensor> {
  return interpret(g, f.inputs, f.params);
}

/** Every node's reference value, by node id (the graph's outputs are restored even if the interpreter throws). */
export function nodeValues(g: Graph, f: { inputs: ReadonlyMap<string, RefTensor>; params: ReadonlyMap<string, RefTensor> }): Map<number, RefTensor> {
  const named = g.nodes.map((n) => ({ name: `#${n.id}`, node: n.id }));
  g.outputs.push(...named);
  try {
    const all = interpret(g, f.inputs, f.params);
    return new Map(g.nodes.map((n) => [n.id, all.get(`#${n.id}`)!]));
  } finally {
    g.outputs.splice(g.outputs.length - named.length);
  }
}

/** The first element where two results differ bitwise (NaN equals NaN; 0 and -0 differ), as a message. */
export function bitwiseDifference(a: ReadonlyMap<string, RefTensor>, b: ReadonlyMap<string, RefTensor>): string | undefined {
  for (const [name, x] of a) {
    const y = b.get(name);
    if (!y) return `output ${name} is missing`;
    if (x.shape.join() !== y.shape.join()) return `output ${name}: shape [${y.shape.join(', ')}], expected [${x.shape.join(', ')}]`;
    for (let i = 0; i < x.data.length; i++) {
      const u = x.data[i];
      const v = y.data[i];
      if (!(Object.is(u, v) || (Number.isNaN(u) && Number.isNaN(v)))) return `output ${name}[${i}]: got ${Object.is(v, -0) ? '-0' : v}, expected ${Object.is(u, -0) ? '-0' : u}`;
    }
  }
  return undefined;
}
