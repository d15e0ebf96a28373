// Shared helpers for the IR tests: seeded random tensors, closeness with a useful failure message, one-op
// evaluation through the reference interpreter, and the finite-difference check of gradient rules.
//
// finiteDifferenceCheck builds a small graph with the Builder (inputs `x0`, `x1`, …, one output `y`), draws a
// random cotangent R, takes the VJP graph from `vjp` and compares each requested input's gradient with the
// central difference of L(x) = Σ R·y(x), all in float64.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { Builder } from '../../compiler/ir/builder.js';
import { Graph, numel, type Attrs, type DType, type Shape } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { IrOp } from '../../compiler/ir/ops.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';

// ---------------------------------------------------------------------------------------------- random

export type Rng = () => number;

/** A small seeded generator (mulberry32): uniform in [0, 1). */
export function makeRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function tensor(shape: Shape, data: ArrayLike<number> | ((i: number) => number)): RefTensor {
  const n = numel(shape);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = typeof data === 'function' ? data(i) : data[i];
  if (typeof data !== 'function' && data.length !== n) throw new Error(`tensor: ${data.length} values for shape [${shape.join(', ')}]`);
  return { shape: [...shape], data: out };
}

/** Uniform values in [lo, hi) (default [-2, 2)). */
export function randomTensor(shape: Shape, rng: Rng, lo = -2, hi = 2): RefTensor {
  return tensor(shape, () => lo + (hi - lo) * rng());
}

/** Uniform magnitudes in [lo, hi) with a random sign: values kept away from zero (denominators, kinks). */
export function randomAwayFromZero(shape: Shape, rng: Rng, lo = 0.5, hi = 2): RefTensor {
  return tensor(shape, () => (rng() < 0.5 ? -1 : 1) * (lo + (hi - lo) * rng()));
}

/** Whole numbers in [0, n) stored as floats (gather / scatter_add indices). */
export function randomIndex(shape: Shape, n: number, rng: Rng): RefTensor {
  return tensor(shape, () => Math.floor(rng() * n));
}

// ---------------------------------------------------------------------------------------------- shapes

/** Row-major strides. */
export function strides(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** The multi-index of flat position `i`. */
export function coords(shape: Shape, i: number): number[] {
  const c = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return c;
}

/** Shapes of rank in [minRank, maxRank] with dims in [1, maxDim] (size-1 dims included) and at most maxElems elements. */
export function shapeArb(minRank = 0, maxRank = 3, maxDim = 4, maxElems = 64): fc.Arbitrary<number[]> {
  return fc.array(fc.integer({ min: 1, max: maxDim }), { minLength: minRank, maxLength: maxRank }).filter((s) => numel(s) <= maxElems);
}

/**
 * Two shapes that broadcast together: `b` is a suffix of `a` (possibly shorter) with some dims set to 1, and
 * the pair is returned in either order.
 */
export function broadcastPairArb(maxRank = 3, maxDim = 4): fc.Arbitrary<[number[], number[]]> {
  return fc
    .record({
      full: fc.oneof({ arbitrary: shapeArb(1, maxRank, maxDim), weight: 9 }, { arbitrary: fc.constant<number[]>([]), weight: 1 }),
      drop: fc.nat({ max: maxRank }),
      ones: fc.array(fc.boolean(), { minLength: maxRank, maxLength: maxRank }),
      oneInA: fc.array(fc.boolean(), { minLength: maxRank, maxLength: maxRank }),
      swap: fc.boolean(),
    })
    .map(({ full, drop, ones, oneInA, swap }) => {
      const b = full.slice(Math.min(drop, full.length)).map((s, i) => (ones[i] ? 1 : s));
      // Also put some 1s in `a` where b keeps the full size (both sides broadcast).
      const lead = full.length - b.length;
      const a = full.map((s, i) => (i >= lead && b[i - lead] !== 1 && oneInA[i] && !ones[i] ? 1 : s));
      return swap ? [b, a] : [a, b];
    });
}

// ---------------------------------------------------------------------------------------------- closeness

export interface Tolerance {
  readonly rtol?: number;
  readonly atol?: number;
}

export interface Mismatch {
  readonly index: number;
  readonly actual: number;
  readonly expected: number;
  readonly excess: number;
}

/** The worst element where |actual - expected| > atol + rtol·max(|actual|, |expected|), or undefined. NaNs match NaNs. */
export function worstMismatch(actual: ArrayLike<number>, expected: ArrayLike<number>, { rtol = 1e-12, atol = 1e-12 }: Tolerance = {}): Mismatch | undefined {
  let worst: Mismatch | undefined;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(a) && Number.isNaN(e)) continue;
    if (a === e) continue; // infinities
    const diff = Math.abs(a - e);
    const tol = atol + rtol * Math.max(Math.abs(a), Math.abs(e));
    const excess = Number.isNaN(diff) ? Infinity : diff - tol;
    if (excess > 0 && (!worst || excess > worst.excess)) worst = { index: i, actual: a, expected: e, excess };
  }
  return worst;
}

/** Asserts that two tensors (or a tensor and plain values) have the same shape and close values. */
export function assertClose(actual: RefTensor, expected: RefTensor | ArrayLike<number>, tol: Tolerance & { label?: string } = {}): void {
  const label = tol.label ? `${tol.label}: ` : '';
  const exp = 'data' in expected ? expected.data : expected;
  if ('shape' in expected && 'data' in expected) {
    assert.deepEqual([...actual.shape], [...expected.shape], `${label}shape [${actual.shape.join(', ')}], expected [${expected.shape.join(', ')}]`);
  }
  assert.equal(actual.data.length, exp.length, `${label}${actual.data.length} values, expected ${exp.length}`);
  const w = worstMismatch(actual.data, exp, tol);
  if (w) {
    assert.fail(`${label}element ${w.index} (at [${coords(actual.shape, w.index).join(', ')}] of [${actual.shape.join(', ')}]): got ${w.actual}, expected ${w.expected} (diff ${Math.abs(w.actual - w.expected)})`);
  }
}

// ---------------------------------------------------------------------------------------------- evaluation

/** Evaluates one op on concrete inputs through the Builder (shape rules) and the reference interpreter. */
export function evalOp(op: IrOp, ins: readonly RefTensor[], attrs: Attrs = {}, dtypes: readonly DType[] = []): RefTensor {
  const b = new Builder();
  const ids = ins.map((t, k) => b.input(`x${k}`, t.shape, dtypes[k] ?? 'f32'));
  b.output('y', b.add(op, ids, attrs));
  return interpret(b.graph, new Map(ins.map((t, k) => [`x${k}`, t])), new Map()).get('y')!;
}

/** Evaluates a small graph built by `build` on concrete inputs. */
export function evalGraph(build: (b: Builder, xs: readonly number[]) => number, ins: readonly RefTensor[], dtypes: readonly DType[] = []): RefTensor {
  const b = new Builder();
  const ids = ins.map((t, k) => b.input(`x${k}`, t.shape, dtypes[k] ?? 'f32'));
  b.output('y', build(b, ids));
  return interpret(b.graph, new Map(ins.map((t, k) => [`x${k}`, t])), new Map()).get('y')!;
}

// ---------------------------------------------------------------------------------------------- finite differences

export interface FdInput {
  readonly shape: Shape;
  readonly dtype?: DType;
  /** A fixed value; otherwise `gen`'s, otherwise uniform in [lo, hi). */
  readonly value?: RefTensor;
  /** Draws the value from the check's seeded generator (integer indices, values away from kinks). */
  readonly gen?: (shape: Shape, rng: Rng) => RefTensor;
  readonly lo?: number;
  readonly hi?: number;
  /** Whether the input's gradient is requested and checked (default true). */
  readonly grad?: boolean;
}

export interface FdOptions extends Tolerance {
  /** Seed for the inputs and the cotangent (default 1). */
  readonly seed?: number;
  /** Central-difference step (default 1e-6). */
  readonly eps?: number;
  /** Prefix for failure messages (the op, attrs and shapes are added automatically). */
  readonly label?: string;
}

export interface FdReport {
  /** Gradients from the VJP graph, per checked input index. */
  readonly grads: Map<number, RefTensor>;
  /** The same from central differences. */
  readonly numeric: Map<number, RefTensor>;
  /** The graph holding forward and backward nodes. */
  readonly graph: Graph;
}

function describeGraph(g: Graph, count: number): string {
  const body = g.nodes.slice(0, count).filter((n) => n.op !== 'input');
  const ins = g.nodes.slice(0, count).filter((n) => n.op === 'input').map((n) => `[${n.shape.join(', ')}]`);
  const ops = body.map((n) => `${n.op}${Object.keys(n.attrs).length ? ' ' + JSON.stringify(n.attrs) : ''} -> [${n.shape.join(', ')}]`);
  return `${ops.join('; ')} on inputs ${ins.join(', ')}`;
}

/**
 * Checks the VJP of the graph `build` makes against central finite differences of L = Σ R·y in float64.
 * Tolerance |vjp - fd| <= atol + rtol·max(|vjp|, |fd|), defaults rtol 1e-6, atol 1e-8. Throws an assertion
 * error naming the ops, attrs, shapes, the input and its worst element.
 */
export function finiteDifferenceCheck(build: (b: Builder, xs: readonly number[]) => number, inputs: readonly (Shape | FdInput)[], opts: FdOptions = {}): FdReport {
  const { seed = 1, eps = 1e-6, rtol = 1e-6, atol = 1e-8 } = opts;
  const rng = makeRng(seed);
  const specs: FdInput[] = inputs.map((s) => ('shape' in s ? (s as FdInput) : { shape: s as Shape }));
  const values = specs.map((s) => s.value ?? s.gen?.(s.shape, rng) ?? randomTensor(s.shape, rng, s.lo ?? -2, s.hi ?? 2));
  const checked = specs.flatMap((s, k) => (s.grad === false ? [] : [k]));

  // Forward graph, for the finite differences.
  const fb = new Builder();
  const fids = specs.map((s, k) => fb.input(`x${k}`, s.shape, s.dtype ?? 'f32'));
  const fy = build(fb, fids);
  fb.output('y', fy);
  const label = `${opts.label ? opts.label + ': ' : ''}${describeGraph(fb.graph, fb.graph.nodes.length)}`;
  const yShape = fb.graph.node(fy).shape;
  const r = randomTensor(yShape, rng, -1, 1);
  const forward = (vals: readonly RefTensor[]) => interpret(fb.graph, new Map(vals.map((t, k) => [`x${k}`, t])), new Map()).get('y')!;

  // Backward graph.
  const bb = new Builder();
  const bids = specs.map((s, k) => bb.input(`x${k}`, s.shape, s.dtype ?? 'f32'));
  bb.output('y', build(bb, bids));
  const res = vjp(bb.graph, checked.map((k) => bids[k]));
  for (const k of checked) bb.output(`grad${k}`, res.grads.get(bids[k])!);
  const feed = new Map<string, RefTensor>(values.map((t, k) => [`x${k}`, t]));
  feed.set('d:y', r);
  const outs = interpret(bb.graph, feed, new Map());

  const grads = new Map<number, RefTensor>();
  const numeric = new Map<number, RefTensor>();
  for (const k of checked) {
    const got = outs.get(`grad${k}`)!;
    assert.deepEqual([...got.shape], [...specs[k].shape], `${label}: gradient of input ${k} has shape [${got.shape.join(', ')}], expected [${specs[k].shape.join(', ')}]`);
    const fd = new Float64Array(values[k].data.length);
    for (let j = 0; j < fd.length; j++) {
      const plus = values.map((t, i) => (i === k ? { shape: t.shape, data: Float64Array.from(t.data) } : t));
      const minus = values.map((t, i) => (i === k ? { shape: t.shape, data: Float64Array.from(t.data) } : t));
      plus[k].data[j] += eps;
      minus[k].data[j] -= eps;
      const yp = forward(plus).data;
      const ym = forward(minus).data;
      // Σ R·(y+ - y-): elements that did not move cancel exactly.
      let s = 0;
      for (let i = 0; i < yp.length; i++) s += r.data[i] * (yp[i] - ym[i]);
      fd[j] = s / (2 * eps);
    }
    const num: RefTensor = { shape: [...specs[k].shape], data: fd };
    grads.set(k, got);
    numeric.set(k, num);
    const w = worstMismatch(got.data, fd, { rtol, atol });
    if (w) {
      assert.fail(
        `gradient mismatch for ${label}\n  input ${k} of shape [${specs[k].shape.join(', ')}], element ${w.index} at [${coords(specs[k].shape, w.index).join(', ')}]: ` +
          `vjp ${w.actual}, finite difference ${w.expected} (diff ${Math.abs(w.actual - w.expected)}, rtol ${rtol}, atol ${atol}, eps ${eps}, seed ${seed})`,
      );
    }
  }
  return { grads, numeric, graph: bb.graph };
}

/**
 * The gradients of the graph `build` makes at concrete inputs, for cotangent `dy` (ones by default), through
 * `vjp` and the interpreter: one tensor per input index in `wrt` (default: all inputs).
 */
export function vjpValues(build: (b: Builder, xs: readonly number[]) => number, ins: readonly RefTensor[], opts: { dy?: RefTensor; wrt?: readonly number[]; dtypes?: readonly DType[] } = {}): RefTensor[] {
  const b = new Builder();
  const ids = ins.map((t, k) => b.input(`x${k}`, t.shape, opts.dtypes?.[k] ?? 'f32'));
  const y = build(b, ids);
  b.output('y', y);
  const wrt = opts.wrt ?? ins.map((_, k) => k);
  const res = vjp(b.graph, wrt.map((k) => ids[k]));
  wrt.forEach((k) => b.output(`grad${k}`, res.grads.get(ids[k])!));
  const feed = new Map<string, RefTensor>(ins.map((t, k) => [`x${k}`, t]));
  const yShape = b.graph.node(y).shape;
  feed.set('d:y', opts.dy ?? tensor(yShape, () => 1));
  const outs = interpret(b.graph, feed, new Map());
  return wrt.map((k) => outs.get(`grad${k}`)!);
}
