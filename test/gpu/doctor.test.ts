// `visft doctor` through openDevice: adapter, Target, Dawn's adapter list and the test dispatch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { doctorReport } from '../../bin/commands/doctor.js';

test('doctorReport opens the adapter as visft does, reports its Target, and verifies a dispatch', async () => {
  const r = await doctorReport();
  assert.equal(r.ok, true, r.error);
  assert.equal(r.verified, true);
  assert.ok(r.adapter && r.adapter.name.length > 0);
  assert.ok(r.target);
  assert.equal(r.target.isFallbackAdapter, r.adapter.isFallbackAdapter);
  assert.ok(r.target.limits.maxStorageBufferBindingSize > 0);
  assert.ok(Array.isArray(r.adapters) && r.adapters.length >= 1, 'Dawn lists at least the adapter in use');
  assert.ok(r.toggles?.includes('allow_unsafe_apis') && r.toggles.includes('vulkan_enable_f16_on_nvidia'), 'the toggles visft opens devices with');
});

test('doctorReport with an adapter that does not exist says what is available', async () => {
  const r = await doctorReport({ adapter: 'no-such-gpu-anywhere' });
  assert.equal(r.ok, false);
  assert.match(r.error ?? '', /no WebGPU adapter matches 'no-such-gpu-anywhere'; available: /);
  assert.ok(r.hint);
});
