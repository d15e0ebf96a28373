// Algebraic simplification: a table of local rules, each exact in float64 as the reference interpreter
// computes, for every input value: NaN, ±Infinity and the sign of zero included. A rule that replaces a
// node by one of its inputs applies only when that input already has the node's shape and dtype (no
// broadcast or dtype change is lost).
//
// Rules that are left out, or guarded, because they would change some result:
// - x·0 → 0: NaN·0 and ∞·0 are NaN, and (-x)·0 is -0.
// - x + 0 → x: (-0) + (+0) = +0, so it changes the sign of a zero (visible through 1/x). It applies only
//   when x cannot be -0 (NEVER_NEG_ZERO below); x + (-0) → x is exact for every x and always applies.
//   The same holds for x - (-0), and for a sum over size-1 dims (the interpreter computes 0 + x).
// - cast to the same dtype → x: exact for f32 only. The reference keeps f16/bf16/integer values in float64
//   without rounding after each op, so cast(f16 → f16) may round; cast(cast(x, d), d) → cast(x, d) is exact
//   for every dtype.
// - x - x → 0 and x / x → 1: wrong for NaN and ±Infinity (and x / x for 0).
import type { Shape } from '../ir/graph.js';
import { attrInts, attrNum, attrPairs, normDim } from '../ir/rules/shape.js';
import type { Candidate, Pass, RewriteCtx, Rule } from './engine.js';

const sameShape = (a: Shape, b: Shape): boolean => a.length === b.length && a.every((s, i) => s === b[i]);

/** Whether node `id` can stand for `n`: same shape and dtype. */
const fits = (ctx: RewriteCtx, id: number, n: Candidate): boolean => {
  const m = ctx.node(id);
  return m.dtype === n.dtype && sameShape(m.shape, n.shape);
};

/** The value of a `full` constant, or undefined. */
const constant = (ctx: RewriteCtx, id: number): number | undefined => {
  const m = ctx.node(id);
  return m.op === 'full' && typeof m.attrs.value === 'number' ? m.attrs.value : undefined;
};
const isPlusZero = (v: number | undefined): boolean => v !== undefined && Object.is(v, 0);
const isMinusZero = (v: number | undefined): boolean => v !== undefined && Object.is(v, -0);

/**
 * Ops whose result is never -0 in the reference: exp, sigmoid, softmax are >= +0; relu is max(x, +0) and
 * JavaScript's max orders +0 above -0; step and eq give 0 or 1; rsqrt is 1/√x (±∞, NaN, > 0 or +0); sum
 * and matmul accumulate from +0, and a + b is -0 only when both are -0; maximum returns one of its inputs.
 */
const NEVER_NEG_ZERO: Readonly<Record<string, (ctx: RewriteCtx, id: number, depth: number) => boolean>> = {
  exp: () => true,
  sigmoid: () => true,
  softmax: () => true,
  relu: () => true,
  step: () => true,
  eq: () => true,
  rsqrt: () => true,
  sum: () => true,
  matmul: () => true,
  full: (ctx, id) => !isMinusZero(constant(ctx, id)),
  cast: (ctx, id) => ctx.node(id).dtype === 'bool',
  add: (ctx, id, depth) => ctx.node(id).inputs.some((i) => neverNegZero(ctx, i, depth + 1)),
  maximum: (ctx, id, depth) => ctx.node(id).inputs.every((i) => neverNegZero(ctx, i, depth + 1)),
};

function neverNegZero(ctx: RewriteCtx, id: number, depth = 0): boolean {
  const rule = NEVER_NEG_ZERO[ctx.node(id).op];
  return depth < 8 && rule !== undefined && rule(ctx, id, depth);
}

/** x + 0 = x when the zero is -0 (always) or +0 (when x cannot be -0). */
const isAdditiveIdentityFor = (ctx: RewriteCtx, zero: number, x: number): boolean => {
  const v = constant(ctx, zero);
  return isMinusZero(v) || (isPlusZero(v) && neverNegZero(ctx, x));
};

/** For a binary op with inputs [a, b]: the other input when one side is `pred`, if it fits the node. */
function other(ctx: RewriteCtx, n: Candidate, pred: (side: number, x: number) => boolean, sides: readonly (0 | 1)[] = [0, 1]): number | undefined {
  for (const s of sides) {
    const side = n.inputs[s];
    const x = n.inputs[1 - s];
    if (pred(side, x) && fits(ctx, x, n)) return x;
  }
  return undefined;
}

const only =
  (op: string, rule: Rule): Rule =>
  (n, ctx) =>
    n.op === op ? rule(n, ctx) : undefined;

const inputOp = (ctx: RewriteCtx, n: Candidate, op: string) => {
  const m = ctx.node(n.inputs[0]);
  return m.op === op ? m : undefined;
};

const identityDims = (dims: readonly number[]) => dims.every((d, i) => d === i);

/** Replaces a reduction over size-1 dims (nothing is combined) by a reshape of its input. */
const unitReduce: Rule = (n, ctx) => {
  const x = ctx.node(n.inputs[0]);
  const dims = attrInts(n.attrs, 'dims').map((d) => normDim(d, x.shape.length));
  if (!dims.every((d) => x.shape[d] === 1)) return undefined;
  return ctx.add('reshape', [x.id], { shape: [...n.shape] });
};

export const SIMPLIFY_RULES: Readonly<Record<string, Rule>> = {
  // ---- arithmetic identities
  'x + 0 → x': only('add', (n, ctx) => other(ctx, n, (z, x) => isAdditiveIdentityFor(ctx, z, x))),
  // x - (+0) = x for every x (-0 - 0 = -0); x - (-0) = x + 0.
  'x - 0 → x': only('sub', (n, ctx) => other(ctx, n, (z, x) => isPlusZero(constant(ctx, z)) || (isMinusZero(constant(ctx, z)) && neverNegZero(ctx, x)), [1])),
  'x · 1 → x': only('mul', (n, ctx) => other(ctx, n, (c) => constant(ctx, c) === 1)),
  'x / 1 → x': only('div', (n, ctx) => other(ctx, n, (c) => constant(ctx, c) === 1, [1])),
  'x ^ 1 → x': only('pow', (n) => (attrNum(n.attrs, 'exponent') === 1 ? n.inputs[0] : undefined)),
  'neg(neg(x)) → x': only('neg', (n, ctx) => inputOp(ctx, n, 'neg')?.inputs[0]),
  'dropout(p = 0) → x': only('dropout', (n) => (attrNum(n.attrs, 'p') === 0 ? n.inputs[0] : undefined)),
  'cast f32 → f32 is x': only('cast', (n, ctx) => (n.dtype === 'f32' && ctx.node(n.inputs[0]).dtype === 'f32' ? n.inputs[0] : undefined)),
  'cast(cast(x, d), d) → cast(x, d)': only('cast', (n, ctx) => (inputOp(ctx, n, 'cast')?.dtype === n.dtype ? n.inputs[0] : undefined)),
  // ---- reductions over nothing
  'sum over size-1 dims → reshape': only('sum', (n, ctx) => (neverNegZero(ctx, n.inputs[0]) ? unitReduce(n, ctx) : undefined)),
  'max over size-1 dims → reshape': only('max', unitReduce),
  // ---- movement
  'reshape to the same shape → x': only('reshape', (n, ctx) => (sameShape(ctx.node(n.inputs[0]).shape, n.shape) ? n.inputs[0] : undefined)),
  'reshape(reshape(x)) → reshape(x)': only('reshape', (n, ctx) => {
    const inner = inputOp(ctx, n, 'reshape');
    return inner && ctx.add('reshape', [inner.inputs[0]], { shape: [...n.shape] });
  }),
  'identity permute → x': only('permute', (n) => {
    const rank = n.shape.length;
    return identityDims(attrInts(n.attrs, 'dims').map((d) => normDim(d, rank))) ? n.inputs[0] : undefined;
  }),
  'permute(permute(x)) → permute(x)': only('permute', (n, ctx) => {
    const inner = inputOp(ctx, n, 'permute');
    if (!inner) return undefined;
    const rank = n.shape.length;
    const p = attrInts(inner.attrs, 'dims').map((d) => normDim(d, rank));
    const q = attrInts(n.attrs, 'dims').map((d) => normDim(d, rank));
    return ctx.add('permute', [inner.inputs[0]], { dims: q.map((d) => p[d]) });
  }),
  'identity slice → x': only('slice', (n, ctx) => (attrNum(n.attrs, 'start', 0) === 0 && fits(ctx, n.inputs[0], n) ? n.inputs[0] : undefined)),
  'expand to the same shape → x': only('expand', (n, ctx) => (fits(ctx, n.inputs[0], n) ? n.inputs[0] : undefined)),
  'expand(expand(x)) → expand(x)': only('expand', (n, ctx) => {
    const inner = inputOp(ctx, n, 'expand');
    return inner && ctx.add('expand', [inner.inputs[0]], { shape: [...n.shape] });
  }),
  'pad by zero → x': only('pad', (n) => (attrPairs(n.attrs, 'pads').every(([a, b]) => a === 0 && b === 0) ? n.inputs[0] : undefined)),
  'concat of one → x': only('concat', (n) => (n.inputs.length === 1 ? n.inputs[0] : undefined)),
};

export const simplify: Pass = {
  name: 'simplify',
  doc: 'algebraic identities that are exact in float64 (NaN, ±Infinity and -0 included)',
  rules: SIMPLIFY_RULES,
};
