// Shared by the GPU tests against PyTorch fixtures: one device for the file, and comparison scaled by the
// expected tensor's largest value.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';

/** Opens a device before the file's tests and destroys it after; returns its getter. */
export function sharedDevice(): () => GpuDevice {
  let gpu: GpuDevice | undefined;
  before(async () => {
    gpu = await openDevice();
  });
  after(async () => {
    await gpu?.destroy();
  });
  return () => {
    if (!gpu) throw new Error('the device is not open yet');
    return gpu;
  };
}

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
