// resize (bicubic, bilinear; align_corners=False) and adaptive_avg_pool2d in the CPU reference: worked
// examples, the adjoint identities with their grad ops, constants preserved, and finite differences of all
// four gradient rules over random sizes up and down (non-integer factors, non-divisible bins).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { Attrs } from '../../compiler/ir/graph.js';
import { REFERENCE } from '../../compiler/ir/rules/reference.js';
import { assertClose, evalOp, finiteDifferenceCheck, makeRng, randomTensor, tensor } from './util.js';

const NUM_RUNS = Number(process.env.VISFT_VISION_RUNS ?? 25);
const MODES = ['bicubic', 'bilinear'] as const;

interface ResampleCase {
  /** Leading dims, then the input's last two. */
  readonly lead: number[];
  readonly inSize: [number, number];
  readonly outSize: [number, number];
  readonly mode: (typeof MODES)[number];
  readonly seed: number;
}

const side = fc.integer({ min: 1, max: 9 });
const resampleCase: fc.Arbitrary<ResampleCase> = fc.record({
  lead: fc.array(fc.integer({ min: 1, max: 2 }), { maxLength: 2 }),
  inSize: fc.tuple(side, side),
  outSize: fc.tuple(side, side),
  mode: fc.constantFrom(...MODES),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
});

const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
const out = (shape: number[]) => ({ shape, dtype: 'f32' as const });

/** The forward op and its grad op, as (attrs of the forward, attrs of the grad). */
const OPS = {
  resize: (c: ResampleCase): [Attrs, Attrs] => [{ mode: c.mode, size: c.outSize }, { mode: c.mode, in_size: c.inSize }],
  adaptive_avg_pool2d: (c: ResampleCase): [Attrs, Attrs] => [{ size: c.outSize }, { in_size: c.inSize }],
} as const;

test('resize bilinear: a worked example (edge clamping at both ends)', () => {
  // 1x2 → 1x4: source x = 0.5·(i + 0.5) - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (past the last pixel).
  assertClose(evalOp('resize', [tensor([1, 2], [0, 4])], { mode: 'bilinear', size: [1, 4] }), [0, 1, 3, 4]);
});

test('resize bicubic: a worked example against Keys’ kernel with A = -0.75', () => {
  // 1x4 → 1x2: sources at 0.5 and 2.5, t = 0.5: weights [-0.09375, 0.59375, 0.59375, -0.09375]; taps clamped.
  const [wo, wi] = [-0.09375, 0.59375];
  const x = [1, 2, 4, 8];
  assertClose(evalOp('resize', [tensor([1, 4], x)], { mode: 'bicubic', size: [1, 2] }), [
    wo * x[0] + wi * x[0] + wi * x[1] + wo * x[2],
    wo * x[1] + wi * x[2] + wi * x[3] + wo * x[3],
  ]);
});

test('adaptive_avg_pool2d: a worked example with overlapping bins', () => {
  // 5 → 3: bins [0, 2), [1, 4), [3, 5).
  assertClose(evalOp('adaptive_avg_pool2d', [tensor([1, 5], [1, 2, 3, 4, 5])], { size: [1, 3] }), [1.5, 3, 4.5]);
});

test('resize to the same size is the identity, in both modes', () => {
  const x = randomTensor([2, 3, 5], makeRng(7));
  for (const mode of MODES) assertClose(evalOp('resize', [x], { mode, size: [3, 5] }), x, { rtol: 0, atol: 0, label: mode });
});

for (const op of ['resize', 'adaptive_avg_pool2d'] as const) {
  const grad = op === 'resize' ? 'resize_grad' : 'adaptive_avg_pool2d_grad';

  test(`${op}: constants stay constant (the weights of every output sum to 1)`, () => {
    fc.assert(
      fc.property(resampleCase, (c) => {
        const [fa] = OPS[op](c);
        const x = tensor([...c.lead, ...c.inSize], () => 3.25);
        const y = evalOp(op, [x], fa);
        assertClose(y, new Float64Array(y.data.length).fill(3.25), { rtol: 1e-14, atol: 0 });
      }),
      { numRuns: 100 },
    );
  });

  test(`${op} and ${grad} are adjoint: <A x, y> = <x, Aᵀ y>`, () => {
    fc.assert(
      fc.property(resampleCase, (c) => {
        const [fa, ga] = OPS[op](c);
        const rng = makeRng(c.seed);
        const x = randomTensor([...c.lead, ...c.inSize], rng);
        const y = randomTensor([...c.lead, ...c.outSize], rng);
        const a = dot(REFERENCE[op]([x], fa, out(y.shape as number[])).data, y.data);
        const b = dot(x.data, REFERENCE[grad]([y], ga, out(x.shape as number[])).data);
        assert.ok(Math.abs(a - b) <= 1e-12 * (1 + Math.abs(a)), `${a} vs ${b} for ${JSON.stringify(c)}`);
      }),
      { numRuns: 200 },
    );
  });

  test(`${op}: gradient matches finite differences`, () => {
    fc.assert(
      fc.property(resampleCase, (c) => {
        const [fa] = OPS[op](c);
        finiteDifferenceCheck((b, [x]) => b.add(op, [x], fa), [[...c.lead, ...c.inSize]], { seed: c.seed });
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test(`${grad}: gradient matches finite differences`, () => {
    fc.assert(
      fc.property(resampleCase, (c) => {
        const [, ga] = OPS[op](c);
        finiteDifferenceCheck((b, [g]) => b.add(grad, [g], ga), [[...c.lead, ...c.outSize]], { seed: c.seed });
      }),
      { numRuns: NUM_RUNS },
    );
  });
}

test('resize: gradients at the EVA position-embedding case 16x16 → 6x5 and at 3x4 → 7x9', () => {
  for (const mode of MODES) {
    for (const [from, to] of [[[16, 16], [6, 5]], [[3, 4], [7, 9]]]) {
      finiteDifferenceCheck((b, [x]) => b.add('resize', [x], { mode, size: to }), [[2, ...from]], { label: `${mode} ${from} → ${to}` });
    }
  }
});

test('adaptive_avg_pool2d: gradients at 7x9 → 4x4 and 14x13 → 3x5', () => {
  for (const [from, to] of [[[7, 9], [4, 4]], [[14, 13], [3, 5]]]) {
    finiteDifferenceCheck((b, [x]) => b.add('adaptive_avg_pool2d', [x], { size: to }), [[1, 2, ...from]], { label: `${from} → ${to}` });
  }
});
