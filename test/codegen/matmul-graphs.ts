// Random graphs for the matmul-epilogue tests: one matmul x @ w, sized so that a chosen variant of
// kernels/matmul.ts computes it (naive, split-K, 64x64 tiled), followed by an elementwise chain whose other
// operands are parameters of shapes that broadcast into the product's (a bias [N], a column [M, 1], a
// residual of the full shape), scalar constants, or x itself; sometimes the product or an intermediate has a
// second reader or is an output too, so that it cannot (or the chain only partly can) be fused. Either operand
// may be a permute of the last two dims (a transposed read, kernels/matmul.ts), sometimes also an output or read
// by another node, so that it must stay a copy.
import fc from 'fast-check';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import type { Graph, Shape } from '../../compiler/ir/graph.js';
import type { IrOp } from '../../compiler/ir/ops.js';
import { broadcastShapes } from '../../compiler/ir/rules/shape.js';
import type { MatmulVariant } from '../../kernels/matmul.js';
import { nodeValues } from '../passes/graphs.js';

export interface EpilogueStep {
  /** Unary (< UNARY.length) or binary op index. */
  readonly op: number;
  /** For binary ops: 0-2 a parameter, 3 a scalar constant, 4 the matmul's left operand x (if it broadcasts). */
  readonly operand: number;
  /** Bits choosing which dims of the parameter are 1, and how many leading dims it drops. */
  readonly mask: number;
  readonly drop: number;
  /** Bit 0: the chain value is the right operand; bit 1: the step's result is also an output. */
  readonly flags: number;
}

export interface EpilogueCase {
  readonly variant: MatmulVariant;
  readonly batch: readonly number[];
  /** Whether w has the batch dims too (otherwise it is shared: a projection, whose batch folds into M). */
  readonly batchedW: boolean;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  readonly steps: readonly EpilogueStep[];
  /** 0: only the chain reads the product; 1: it is an output too; 2: another node reads it. */
  readonly product: number;
  /**
   * Per operand: 0 stored as used; 1 stored transposed ([..., K, M] for x, [..., N, K] for w) and permuted back;
   * 2 as 1 with the permute also an output; 3 as 1 with the permute read by another node too.
   */
  readonly transA?: number;
  readonly transB?: number;
}

export const UNARY: readonly IrOp[] = ['gelu', 'relu', 'tanh', 'sigmoid', 'neg', 'erf'];
export const BINARY: readonly IrOp[] = ['add', 'mul', 'sub', 'maximum', 'add'];
const CONSTS = [0.5, -1, 2, 0.125, 0];

const stepArb: fc.Arbitrary<EpilogueStep> = fc.record({
  op: fc.nat({ max: UNARY.length + BINARY.length - 1 }),
  operand: fc.nat({ max: 4 }),
  mask: fc.nat({ max: 15 }),
  drop: fc.nat({ max: 3 }),
  flags: fc.nat({ max: 15 }),
});

/** Dims for a variant (matmulVariant's thresholds): naive is small, split-K has long K, tiled a 64x64+ output. */
function dimsArb(variant: MatmulVariant) {
  const batch = fc.array(fc.integer({ min: 1, max: 2 }), { maxLength: 2 });
  if (variant === 'naive') return fc.record({ batch, m: fc.integer({ min: 1, max: 9 }), k: fc.integer({ min: 1, max: 9 }), n: fc.integer({ min: 1, max: 9 }) });
  if (variant === 'splitk') return fc.record({ batch, m: fc.integer({ min: 1, max: 6 }), k: fc.integer({ min: 512, max: 560 }), n: fc.integer({ min: 1, max: 6 }) });
  // 64..80 rows in all (a batch of 2 folds into M), 64..72 columns, K = 512: at least 2^21 multiply-adds.
  return fc.oneof(
    fc.record({ batch: fc.constant([] as number[]), m: fc.integer({ min: 64, max: 80 }), k: fc.constant(512), n: fc.integer({ min: 64, max: 72 }) }),
    fc.record({ batch: fc.constant([2]), m: fc.integer({ min: 32, max: 40 }), k: fc.constant(512), n: fc.integer({ min: 64, max: 72 }) }),
  );
}

/** The variant the schedule picks for a case sized for `variant` on `target`: software adapters block what hardware tiles. */
export const scheduledVariant = (variant: MatmulVariant, target: Target): MatmulVariant => (variant === 'tiled' && target.isFallbackAdapter ? 'blocked' : variant);

export const epilogueCaseArb = (variants: readonly MatmulVariant[] = ['naive', 'splitk', 'tiled'], maxSteps = 6): fc.Arbitrary<EpilogueCase> =>
  fc.constantFrom(...variants).chain((variant) =>
    fc.record({
      variant: fc.constant(variant),
      dims: dimsArb(variant),
      batchedW: variant === 'tiled' ? fc.constant(false) : fc.boolean(),
      steps: fc.array(stepArb, { minLength: 1, maxLength: maxSteps }),
      product: fc.constantFrom(0, 0, 0, 1, 2),
    }).map(({ variant, dims, batchedW, steps, product }) => ({ variant, ...dims, batchedW, steps, product })),
  );

/** Cases whose operands are transposed views (mostly only read by the matmul, so the permute is absorbed). */
export const transposedCaseArb = (variants: readonly MatmulVariant[] = ['naive', 'splitk', 'tiled'], maxSteps = 4): fc.Arbitrary<EpilogueCase> =>
  fc
    .tuple(epilogueCaseArb(variants, maxSteps), fc.constantFrom(0, 1, 1, 1, 2, 3), fc.constantFrom(0, 1, 1, 1, 2, 3))
    .filter(([, a, b]) => a + b > 0)
    .map(([c, transA, transB]) => ({ ...c, transA, transB }));

/** The last two dims swapped: the permute that turns a stored transposed operand into the matmul's. */
const swapLast = (rank: number): number[] => [...Array(rank).keys()].map((d) => (d === rank - 2 ? rank - 1 : d === rank - 1 ? rank - 2 : d));

const broadcasts = (x: Shape, y: Shape): boolean => {
  try {
    return broadcastShapes(x, y).join() === y.join();
  } catch {
    return false;
  }
};

export interface BuiltEpilogueCase {
  readonly graph: Graph;
  readonly matmul: number;
}

/** The graph of a case: input x, parameters w and e0, e1, ...; outputs y (the chain) and any extras. */
export function buildEpilogueGraph(c: EpilogueCase): BuiltEpilogueCase {
  const b = new Builder();
  // An operand stored transposed, permuted back: also an output (2) or also read by a `neg` (3).
  const operand = (stored: number, mode: number | undefined, name: string) => {
    if (!mode) return stored;
    const p = b.add('permute', [stored], { dims: swapLast(b.shape(stored).length) });
    if (mode === 2) b.output(`${name}_t`, p);
    if (mode === 3) b.output(`${name}_neg`, b.add('neg', [p]));
    return p;
  };
  const x = operand(b.input('x', c.transA ? [...c.batch, c.k, c.m] : [...c.batch, c.m, c.k]), c.transA, 'x');
  const wBatch = c.batchedW ? [...c.batch] : [];
  const w = operand(b.param('w', c.transB ? [...wBatch, c.n, c.k] : [...wBatch, c.k, c.n]), c.transB, 'w');
  const mm = b.add('matmul', [x, w]);
  const shape = b.shape(mm);
  if (c.product === 1) b.output('product', mm);
  if (c.product === 2) b.output('other', b.add('neg', [mm]));
  let cur = mm;
  let params = 0;
  c.steps.forEach((s, i) => {
    if (s.op < UNARY.length) cur = b.add(UNARY[s.op], [cur]);
    else {
      let other: number;
      if (s.operand === 3) other = b.full(CONSTS[s.mask % CONSTS.length], s.drop & 1 ? [1] : []);
      else if (s.operand === 4 && broadcasts(b.shape(x), shape)) other = x;
      else {
        const dims = shape.slice(Math.min(s.drop, shape.length - 1)).map((d, j) => ((s.mask >> j) & 1 ? 1 : d));
        other = b.param(`e${params++}`, dims);
      }
      cur = b.add(BINARY[s.op - UNARY.length], s.flags & 1 ? [other, cur] : [cur, other]);
    }
    if (s.flags & 2 && i < c.steps.length - 1) b.output(`step${i}`, cur);
  });
  b.output('y', cur);
  return { graph: b.graph, matmul: mm };
}

/** Largest |f'| of the chains' unary ops (and of moves): how far an error in their input moves their output. */
const SLOPE: Readonly<Record<string, number>> = { gelu: 1.13, erf: 1.13, tanh: 1, sigmoid: 0.25, relu: 1, neg: 1, permute: 1, reshape: 1, slice: 1, expand: 1 };
/** An op's own rounding, relative to its output's largest |value| (a few ulps of f32). */
const ROUND = 4 * 2 ** -23;

/**
 * matmulMismatch for these graphs, with each output's absolute error bound carried from the product through its chain:
 * the product's 2e-6·√k of its own largest |value|; a unary op's slope; a sum's terms' bounds added; a product's
 * bounds scaled by the other factor's largest |value|; each op's rounding. A saturating chain (tanh of tanh of a
 * product of scale 100) keeps the product's absolute error at an output scale of 1, where matmulMismatch's bound (of
 * the output's own scale) does not hold it: the larger of the two bounds counts, plus 2e-5 of the value.
 */
export function chainMismatch(graph: Graph, feeds: { inputs: ReadonlyMap<string, RefTensor>; params: ReadonlyMap<string, RefTensor> }, actual: ReadonlyMap<string, RefTensor>, k: number): string | undefined {
  // Every node's reference value, for its largest |value|.
  const all = nodeValues(graph, feeds);
  const scale = (id: number) => all.get(id)!.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const bound = new Map<number, number>();
  for (const n of graph.nodes) {
    const [a, b] = n.inputs.map((i) => bound.get(i)!);
    const own = ROUND * scale(n.id);
    let e: number;
    if (n.op === 'input' || n.op === 'param' || n.op === 'full') e = 0;
    else if (n.op === 'matmul') {
      // Its own sums, and its operands' errors (a second product reading a first, as LoRA's) over its K terms.
      const kk = graph.node(n.inputs[0]).shape.at(-1)!;
      e = 2e-6 * Math.sqrt(kk) * scale(n.id) + kk * (a * scale(n.inputs[1]) + b * scale(n.inputs[0]) + a * b);
    } else if (n.op in SLOPE) e = SLOPE[n.op] * a + own;
    else if (n.op === 'add' || n.op === 'sub') e = a + b + own;
    else if (n.op === 'maximum') e = Math.max(a, b);
    else if (n.op === 'mul') e = a * scale(n.inputs[1]) + b * scale(n.inputs[0]) + a * b + own;
    else throw new Error(`chainMismatch: no error bound for ${n.op}`);
    bound.set(n.id, e);
  }
  for (const o of graph.outputs) {
    const [want, got] = [all.get(o.node)!, actual.get(o.name)!];
    const tol = Math.max(bound.get(o.node)!, 2e-6 * Math.sqrt(k) * scale(o.node));
    for (let i = 0; i < want.data.length; i++) {
      if (!(Math.abs(want.data[i] - got.data[i]) <= tol + 2e-5 * Math.abs(want.data[i]))) return `${o.name}[${i}]: ${got.data[i]} vs ${want.data[i]} (bound ${tol})`;
    }
  }
  return undefined;
}
