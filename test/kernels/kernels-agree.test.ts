// assertKernelsAgree (harness.ts): two different kernels computing the same sums agree bit for bit on a software
// adapter, and on hardware within HARDWARE_ULPS_PER_ROOT_TERM ulps of the output's scale per √terms. Both branches
// on the CPU: the device runs here are all on lavapipe, so the hardware branch would otherwise go untested.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TARGETS } from '../../compiler/codegen/targets.js';
import { assertKernelsAgree, HARDWARE_ULPS_PER_ROOT_TERM } from './harness.js';

const software = TARGETS.lavapipe;
const hardware = TARGETS['nvidia-h200'];
const f32 = (xs: number[]) => Float32Array.from(xs);
/** The next f32 above x (x > 0). */
const nextUp = (x: number) => {
  const b = new Float32Array([x]);
  new Uint32Array(b.buffer)[0]++;
  return b[0];
};

test('a software adapter: bit for bit, so one ulp or the sign of a zero fails; NaNs match any NaN', () => {
  const x = f32([0.75, -2, 0, NaN]);
  assert.equal(assertKernelsAgree(software, x, f32([0.75, -2, 0, NaN]), 'same', 100), 0);
  assert.throws(() => assertKernelsAgree(software, f32([nextUp(0.75), -2, 0, 1]), f32([0.75, -2, 0, 1]), 'one ulp', 100), /one ulp.*element 0.*bit for bit/);
  assert.throws(() => assertKernelsAgree(software, f32([-0]), f32([0]), 'signed zero', 100), /bit for bit/);
});

test('hardware: within the bound relative to the largest value, not beyond; infinities and NaN exactly', () => {
  const terms = 64;
  const expected = f32([4, -1, 0.001, -Infinity]);
  // The bound: 4 ulps of 1 · √64 · 4 (the largest finite |value|).
  const bound = HARDWARE_ULPS_PER_ROOT_TERM * 2 ** -23 * Math.sqrt(terms) * 4;
  const within = f32([4 + bound / 2, -1, 0.001 - bound * 0.9, -Infinity]);
  const worst = assertKernelsAgree(hardware, within, expected, 'within', terms);
  assert.ok(worst > 0.85 && worst <= 1, String(worst));
  // Small values get the scale's bound (their sums' rounding is relative to the terms, not to the result).
  assert.throws(() => assertKernelsAgree(hardware, f32([4, -1, 0.001 + 2 * bound, -Infinity]), expected, 'over', terms), /over: element 2 .* over 4 ulps of the scale per √64 terms/);
  assert.throws(() => assertKernelsAgree(hardware, f32([4, -1, 0.001, Infinity]), expected, 'inf', terms), /inf: element 3 is Infinity, expected -Infinity/);
  assert.throws(() => assertKernelsAgree(hardware, f32([NaN]), f32([1]), 'nan', terms), /nan: element 0 is NaN/);
  assert.equal(assertKernelsAgree(hardware, f32([NaN, 0]), f32([NaN, -0]), 'nan and zeros', terms), 0);
  // More terms, a wider bound.
  assert.throws(() => assertKernelsAgree(hardware, f32([1 + 8 * 2 ** -23]), f32([1]), 'k=1', 1));
  assertKernelsAgree(hardware, f32([1 + 8 * 2 ** -23]), f32([1]), 'k=4', 4);
});

test('bad arguments: a length mismatch or fewer than one term', () => {
  assert.throws(() => assertKernelsAgree(hardware, f32([1, 2]), f32([1]), 'lengths', 4), /lengths: length/);
  assert.throws(() => assertKernelsAgree(hardware, f32([1]), f32([1]), 'terms', 0), /terms must be at least 1, got 0/);
});
