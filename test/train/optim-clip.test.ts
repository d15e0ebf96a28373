// Gradient clipping: torch's total norms from the fixture runs, and properties of clip_grad_norm_/clip_grad_value_
// semantics (never increases the norm, leaves small gradients bit-identical, lands on max_norm when it clips).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ClipError, allFinite, clipGradNorm, clipGradValue, globalGradNorm, scaleToNorm } from '../../runtime/train/clip.js';
import { LossScaler } from '../../runtime/train/loss-scale.js';
import { readFixture, tensorMap } from './optim-fixtures.js';

const RUNS = Number(process.env.VISFT_TRAIN_RUNS ?? 100);

interface Step { grads?: string[]; scaledGrads?: string[]; scale?: number; totalNorm?: number }
const { cases } = readFixture<{ cases: { name: string; names: string[]; steps: Step[] }[] }>('optim.json');

test("global norms agree with torch's clip_grad_norm_ to 1e-6 relative", () => {
  let checked = 0;
  for (const c of cases) {
    c.steps.forEach((s, u) => {
      if (s.totalNorm === undefined) return;
      const grads = tensorMap(c.names, s.grads ?? s.scaledGrads!);
      if (s.scaledGrads) LossScaler.fixed(s.scale!).unscale(grads);
      const norm = globalGradNorm(grads);
      assert.ok(Math.abs(norm - s.totalNorm) <= 1e-6 * s.totalNorm, `${c.name} update ${u}: ${norm} vs torch ${s.totalNorm}`);
      assert.equal(norm, Math.fround(norm), 'the norm is an f32 value, like torch\'s');
      checked++;
    });
  }
  assert.ok(checked >= 100, `only ${checked} norms checked`);
});

const gradsArb = fc
  .array(fc.tuple(fc.integer({ min: 1, max: 40 }), fc.double({ min: 1e-3, max: 1e3, noNaN: true })), { minLength: 1, maxLength: 4 })
  .chain((specs) =>
    fc.tuple(...specs.map(([n, scale]) => fc.array(fc.float({ min: -1, max: 1, noNaN: true }), { minLength: n, maxLength: n }).map((xs) => Float32Array.from(xs, (x) => x * scale)))),
  )
  .map((arrays) => new Map(arrays.map((a, i) => [`g${i}`, a] as [string, Float32Array])));
const copy = (m: Map<string, Float32Array>) => new Map([...m].map(([k, v]) => [k, v.slice()]));

test('clipGradNorm returns the norm before clipping, never increases any gradient, and lands on max_norm', () => {
  fc.assert(
    fc.property(gradsArb, fc.double({ min: 1e-3, max: 100, noNaN: true }), (grads, maxNorm) => {
      const before = copy(grads);
      const total = clipGradNorm(grads, maxNorm);
      assert.equal(total, globalGradNorm(before));
      const after = globalGradNorm(grads);
      assert.ok(after <= total, `norm rose from ${total} to ${after}`);
      for (const [k, g] of grads) g.forEach((x, i) => assert.ok(Math.abs(x) <= Math.abs(before.get(k)![i])));
      if (total + 1e-6 <= maxNorm) {
        // under the threshold: the coefficient clamps to exactly 1 and the grads are untouched
        for (const [k, g] of grads) assert.deepEqual(g, before.get(k));
      } else if (total > 0) {
        const target = (maxNorm * total) / (total + 1e-6);
        assert.ok(Math.abs(after - target) <= 2e-6 * target, `clipped norm ${after}, expected ${target}`);
      }
    }),
    { numRuns: RUNS },
  );
});

test('scaleToNorm with the same total is exactly the second half of clipGradNorm', () => {
  fc.assert(
    fc.property(gradsArb, fc.double({ min: 1e-3, max: 100, noNaN: true }), (grads, maxNorm) => {
      const other = copy(grads);
      const total = clipGradNorm(grads, maxNorm);
      const coef = scaleToNorm(other, total, maxNorm);
      assert.ok(coef > 0 && coef <= 1);
      for (const [k, g] of grads) assert.deepEqual(other.get(k), g);
    }),
    { numRuns: RUNS },
  );
});

test('non-finite gradients: the norm says so and, as in torch, clipping spreads NaN and zeros', () => {
  const grads = new Map([['a', new Float32Array([1, Infinity, -2])], ['b', new Float32Array([3])]]);
  assert.equal(allFinite(grads), false);
  assert.equal(clipGradNorm(grads, 1), Infinity);
  assert.deepEqual([...grads.get('a')!], [0, NaN, -0]);
  assert.deepEqual([...grads.get('b')!], [0]);
  const nan = new Map([['a', new Float32Array([1, NaN])]]);
  assert.ok(Number.isNaN(clipGradNorm(nan, 1)));
  assert.ok(Number.isNaN(nan.get('a')![0]));
  assert.equal(clipGradNorm(new Map(), 1), 0);
  assert.equal(allFinite(new Map([['a', new Float32Array([1, -3e38])]])), true);
});

test('clipGradValue clamps into [-max, max], keeps NaN, and leaves small values alone', () => {
  fc.assert(
    fc.property(gradsArb, fc.double({ min: 0, max: 50, noNaN: true }), (grads, max) => {
      const before = copy(grads);
      clipGradValue(grads, max);
      const m = Math.fround(max);
      for (const [k, g] of grads) {
        g.forEach((x, i) => {
          const was = before.get(k)![i];
          assert.equal(x, Math.abs(was) <= m ? was : Math.sign(was) * m);
        });
      }
    }),
    { numRuns: RUNS },
  );
  const g = new Map([['a', new Float32Array([NaN, -Infinity, Infinity, 0.5])]]);
  clipGradValue(g, 1);
  assert.deepEqual([...g.get('a')!], [NaN, -1, 1, 0.5]);
});

test('bad clip thresholds are errors', () => {
  const g = new Map([['a', new Float32Array(2)]]);
  const err = (re: RegExp) => (e: Error) => e instanceof ClipError && re.test(e.message);
  assert.throws(() => clipGradNorm(g, 0), err(/clip: max norm 0 must be a finite number > 0/));
  assert.throws(() => clipGradNorm(g, NaN), err(/max norm NaN/));
  assert.throws(() => scaleToNorm(g, 1, -1), err(/max norm -1/));
  assert.throws(() => clipGradValue(g, -0.5), err(/clip: max value -0.5/));
  assert.throws(() => clipGradValue(g, Infinity), err(/max value Infinity/));
});
