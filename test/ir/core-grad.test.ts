// Gradient rules of the core ops against central finite differences in float64, on random shapes (broadcasting,
// size-1 dims, negative dims) and random attributes. One property per op; a test checks that every core op
// with a derivative has one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { Builder } from '../../compiler/ir/builder.js';
import { numel, type Attrs, type Shape } from '../../compiler/ir/graph.js';
import { IR_OP_NAMES, type IrOp } from '../../compiler/ir/ops.js';
import { VISION_OPS, type CoreOp } from '../../compiler/ir/rules/families.js';
import { broadcastPairArb, finiteDifferenceCheck, randomAwayFromZero, randomIndex, shapeArb, type FdInput } from './util.js';

const NUM_RUNS = Number(process.env.VISFT_GRAD_RUNS ?? 40);

interface Case {
  readonly build: (b: Builder, xs: readonly number[]) => number;
  readonly inputs: readonly (Shape | FdInput)[];
}

const seedArb = fc.integer({ min: 1, max: 2 ** 31 - 1 });
/** A dim of a rank-r tensor, written positive or negative. */
const dimOf = (r: number, raw: number, neg: boolean) => (raw % r) - (neg ? r : 0);

const unary = (op: IrOp, attrs = {}, input: Partial<FdInput> = {}): fc.Arbitrary<Case> =>
  shapeArb(0, 3).map((shape) => ({ build: (b, [x]) => b.add(op, [x], attrs), inputs: [{ shape, ...input }] }));

const binary = (op: IrOp, second: Partial<FdInput> = {}): fc.Arbitrary<Case> =>
  broadcastPairArb(3, 3).map(([a, c]) => ({ build: (b, [x, y]) => b.add(op, [x, y]), inputs: [{ shape: a }, { shape: c, ...second }] }));

const reduction = (op: IrOp): fc.Arbitrary<Case> =>
  fc
    .record({ shape: shapeArb(1, 3), picks: fc.array(fc.nat(), { maxLength: 3 }), neg: fc.boolean(), keepdim: fc.boolean() })
    .map(({ shape, picks, neg, keepdim }) => {
      const dims = [...new Set(picks.map((p) => dimOf(shape.length, p, neg)))];
      return { build: (b, [x]) => b.add(op, [x], { dims, keepdim }), inputs: [shape] };
    });

const rowOp = (op: IrOp): fc.Arbitrary<Case> =>
  fc.record({ shape: shapeArb(1, 3, 4), raw: fc.nat(), neg: fc.boolean() }).map(({ shape, raw, neg }) => {
    const dim = dimOf(shape.length, raw, neg);
    return { build: (b, [x]) => b.add(op, [x], { dim }), inputs: [shape] };
  });

/** Matmul operands [...ba, m, k] and [...bb, k, n] with broadcasting batch dims. */
const matmulArb: fc.Arbitrary<Case> = fc
  .record({ batch: broadcastPairArb(2, 2), m: fc.integer({ min: 1, max: 3 }), k: fc.integer({ min: 1, max: 3 }), n: fc.integer({ min: 1, max: 3 }) })
  .map(({ batch: [ba, bb], m, k, n }) => ({ build: (b, [x, y]) => b.add('matmul', [x, y]), inputs: [[...ba, m, k], [...bb, k, n]] }));

const CASES: { readonly [K in CoreOp]?: fc.Arbitrary<Case> } = {
  neg: unary('neg'),
  exp: unary('exp'),
  log: unary('log', {}, { lo: 0.5, hi: 2 }),
  sqrt: unary('sqrt', {}, { lo: 0.5, hi: 2 }),
  rsqrt: unary('rsqrt', {}, { lo: 0.5, hi: 2 }),
  tanh: unary('tanh'),
  sigmoid: unary('sigmoid'),
  relu: unary('relu', {}, { gen: (s, rng) => randomAwayFromZero(s, rng, 0.01, 2) }),
  gelu: unary('gelu', {}, { lo: -4, hi: 4 }),
  erf: unary('erf', {}, { lo: -3, hi: 3 }),
  pow: fc
    .record({ shape: shapeArb(0, 3), exponent: fc.constantFrom(0, 1, 2, 3, 0.5, -1, 1.5, -2.5) })
    .map(({ shape, exponent }) => ({ build: (b, [x]) => b.add('pow', [x], { exponent }), inputs: [{ shape, lo: 0.5, hi: 2 }] })),
  // f32 → f32 is the only cast that is differentiable in float64 (f16 and bf16 round); see core-reference.
  cast: unary('cast', { dtype: 'f32' }),
  dropout: fc
    .record({ shape: shapeArb(0, 3), p: fc.constantFrom(0, 0.1, 0.5, 0.9), seed: fc.nat() })
    .map(({ shape, p, seed }) => ({ build: (b, [x]) => b.add('dropout', [x], { p, seed }), inputs: [shape] })),

  add: binary('add'),
  sub: binary('sub'),
  mul: binary('mul'),
  div: binary('div', { gen: (s, rng) => randomAwayFromZero(s, rng) }),
  maximum: binary('maximum'),

  sum: reduction('sum'),
  max: reduction('max'),
  softmax: rowOp('softmax'),
  log_softmax: rowOp('log_softmax'),
  layernorm: fc
    .record({ shape: shapeArb(1, 3, 5), eps: fc.constantFrom(1e-5, 1e-3, 0.1) })
    .map(({ shape, eps }) => ({ build: (b, [x]) => b.add('layernorm', [x], { eps }), inputs: [shape] })),
  matmul: matmulArb,

  reshape: fc
    .record({ shape: shapeArb(0, 3), order: fc.infiniteStream(fc.nat()), merge: fc.boolean(), infer: fc.option(fc.nat()), ones: fc.nat({ max: 2 }) })
    .map(({ shape, order, merge, infer, ones }) => {
      // A shuffled shape, maybe with two dims merged, some 1s added and one dim written -1.
      const dims = [...shape];
      for (let i = dims.length - 1; i > 0; i--) {
        const j = order.next().value % (i + 1);
        [dims[i], dims[j]] = [dims[j], dims[i]];
      }
      if (merge && dims.length >= 2) dims.splice(0, 2, dims[0] * dims[1]);
      for (let i = 0; i < ones; i++) dims.push(1);
      if (infer !== null && dims.length) dims[infer % dims.length] = -1;
      return { build: (b, [x]) => b.add('reshape', [x], { shape: dims }), inputs: [shape] };
    }),
  permute: fc
    .record({ shape: shapeArb(1, 4, 3), order: fc.infiniteStream(fc.nat()), neg: fc.boolean() })
    .map(({ shape, order, neg }) => {
      const dims = [...shape.keys()];
      for (let i = dims.length - 1; i > 0; i--) {
        const j = order.next().value % (i + 1);
        [dims[i], dims[j]] = [dims[j], dims[i]];
      }
      const written = dims.map((d) => (neg ? d - shape.length : d));
      return { build: (b, [x]) => b.add('permute', [x], { dims: written }), inputs: [shape] };
    }),
  slice: fc
    .record({ shape: shapeArb(1, 3, 6), raw: fc.nat(), neg: fc.boolean(), a: fc.nat(), len: fc.nat(), step: fc.integer({ min: 1, max: 3 }) })
    .map(({ shape, raw, neg, a, len, step }) => {
      const dim = dimOf(shape.length, raw, neg);
      const n = shape[(dim + shape.length) % shape.length];
      const start = a % n;
      const end = start + 1 + (len % (n - start + 1)); // may pass the end by one (clamped)
      return { build: (b, [x]) => b.add('slice', [x], { dim, start, end, step }), inputs: [shape] };
    }),
  concat: fc
    .record({ shape: shapeArb(1, 3, 3), raw: fc.nat(), neg: fc.boolean(), sizes: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 3 }) })
    .map(({ shape, raw, neg, sizes }) => {
      const dim = dimOf(shape.length, raw, neg);
      const d = (dim + shape.length) % shape.length;
      const inputs = sizes.map((s) => shape.map((v, i) => (i === d ? s : v)));
      return { build: (b, xs) => b.add('concat', [...xs], { dim }), inputs };
    }),
  pad: fc
    .record({ shape: shapeArb(0, 3, 4), raw: fc.array(fc.tuple(fc.integer({ min: -2, max: 2 }), fc.integer({ min: -2, max: 2 })), { minLength: 3, maxLength: 3 }), value: fc.double({ min: -2, max: 2, noNaN: true }) })
    .map(({ shape, raw, value }) => {
      // Crops at most leave one element.
      const pads = shape.map((s, i) => {
        let [lo, hi] = raw[i];
        if (s + lo + hi < 1) [lo, hi] = [Math.max(lo, 1 - s), 0];
        return [lo, hi];
      });
      return { build: (b, [x]) => b.add('pad', [x], { pads, value }), inputs: [shape] };
    }),
  expand: fc
    .record({ full: shapeArb(0, 3, 3), drop: fc.nat({ max: 3 }), ones: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }) })
    .map(({ full, drop, ones }) => {
      const x = full.slice(Math.min(drop, full.length)).map((s, i) => (ones[i] ? 1 : s));
      return { build: (b, [t]) => b.add('expand', [t], { shape: full }), inputs: [x] };
    }),
  gather: fc
    .record({ shape: shapeArb(1, 3, 3), raw: fc.nat(), neg: fc.boolean(), m: fc.integer({ min: 1, max: 4 }) })
    .map(({ shape, raw, neg, m }) => {
      const dim = dimOf(shape.length, raw, neg);
      const d = (dim + shape.length) % shape.length;
      const ishape = shape.map((s, i) => (i === d ? m : s));
      const index: FdInput = { shape: ishape, grad: false, gen: (s, rng) => randomIndex(s, shape[d], rng) };
      return { build: (b, [x, i]) => b.add('gather', [x, i], { dim }), inputs: [shape, index] };
    }),
  scatter_add: fc
    .record({ shape: shapeArb(1, 3, 3), raw: fc.nat(), neg: fc.boolean(), m: fc.integer({ min: 1, max: 4 }) })
    .map(({ shape, raw, neg, m }) => {
      const dim = dimOf(shape.length, raw, neg);
      const d = (dim + shape.length) % shape.length;
      const gshape = shape.map((s, i) => (i === d ? m : s));
      const index: FdInput = { shape: gshape, grad: false, gen: (s, rng) => randomIndex(s, shape[d], rng) };
      return { build: (b, [g, i]) => b.add('scatter_add', [g, i], { dim, shape }), inputs: [gshape, index] };
    }),
  attention: fc
    .record({
      B: fc.integer({ min: 1, max: 2 }),
      H: fc.integer({ min: 1, max: 2 }),
      Sq: fc.integer({ min: 1, max: 3 }),
      Sk: fc.integer({ min: 1, max: 3 }),
      D: fc.integer({ min: 1, max: 3 }),
      Dv: fc.integer({ min: 1, max: 3 }),
      mask: fc.constantFrom('none', 'full', 'keys', 'square', 'heads'),
      scale: fc.option(fc.constantFrom(0.5, 1, 1.3)),
    })
    .map(({ B, H, Sq, Sk, D, Dv, mask, scale }) => {
      const inputs: Shape[] = [[B, H, Sq, D], [B, H, Sk, D], [B, H, Sk, Dv]];
      const maskShape = { none: null, full: [B, H, Sq, Sk], keys: [B, 1, 1, Sk], square: [Sq, Sk], heads: [1, H, Sq, 1] }[mask];
      if (maskShape) inputs.push(maskShape);
      const attrs: Attrs = scale === null ? {} : { scale };
      return { build: (b, xs) => b.add('attention', [...xs], attrs), inputs };
    }),
};

/** Core ops whose derivative is zero or that have no inputs (leaves, comparisons, shape-only encodings). */
// attention_lse and attention_grad appear only in attention's backward; a second-order gradient is refused.
const NO_GRADIENT = new Set<IrOp>(['input', 'param', 'full', 'eq', 'step', 'sine_position', 'attention_lse', 'attention_grad']);

test('every core op with a derivative has a finite-difference property', () => {
  const core = IR_OP_NAMES.filter((op) => !(VISION_OPS as readonly IrOp[]).includes(op));
  const missing = core.filter((op) => !NO_GRADIENT.has(op) && !(op in CASES));
  assert.deepEqual(missing, []);
});

for (const [op, arb] of Object.entries(CASES)) {
  test(`${op}: vjp matches central finite differences`, () => {
    fc.assert(
      fc.property(arb!, seedArb, (c, seed) => {
        assert.ok(c.inputs.every((s) => numel('shape' in s ? (s as FdInput).shape : (s as Shape)) < 200));
        finiteDifferenceCheck(c.build, c.inputs, { seed, label: op });
      }),
      { numRuns: NUM_RUNS, includeErrorInReport: true },
    );
  });
}

test('a composite block (layernorm, affine, attention, gelu, residual) matches finite differences', () => {
  fc.assert(
    fc.property(seedArb, (seed) => {
      // x [1, 3, 4] → layernorm → ·γ + β → qkv via matmul W [4, 4] → attention (1 head) → gelu → + x → sum
      const build = (b: Builder, [x, gamma, beta, w, bias]: readonly number[]) => {
        const h = b.add2(b.mul(b.add('layernorm', [x], { eps: 1e-5 }), gamma), beta);
        const proj = b.add2(b.add('matmul', [h, w]), bias);
        const heads = b.add('reshape', [proj], { shape: [1, 1, 3, 4] });
        const att = b.add('attention', [heads, heads, heads, b.full(0, [3, 3])], { scale: 0.5 });
        const y = b.add('gelu', [b.add('reshape', [att], { shape: [1, 3, 4] })]);
        return b.add('sum', [b.add2(y, x)], { dims: [-1], keepdim: false });
      };
      finiteDifferenceCheck(build, [[1, 3, 4], [4], [4], [4, 4], [1, 1, 4]], { seed, label: 'block' });
    }),
    { numRuns: 10, includeErrorInReport: true },
  );
});
