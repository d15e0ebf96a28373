// Shared by the GPU tests against PyTorch fixtures: comparison scaled by the expected tensor's largest value.
import assert from 'node:assert/strict';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';

/** Asserts |actual − expected| <= rtol · max|expected| everywhere (and the same shape). */
export function assertCloseScaled(actual: RefTensor | undefined, expected: RefTensor, rtol: number, what: string): void {
  assert.ok(actual, `${what}: missing`);
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  let scale = 0;
  for (const v of expected.data) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < expected.data.length; i++) worst = Math.max(worst, Math.abs(actual.data[i] - expected.data[i]) / scale);
  assert.ok(worst <= rtol, `${what}: max error ${worst.toExponential(2)} of the largest value, allowed ${rtol}`);
}
