import { test } from 'node:test';
import assert from 'node:assert/strict';

import { describeProbe, probeWebGPU } from '../../runtime/device/probe.js';

// scripts/setup.sh installs a working adapter (Mesa lavapipe on machines without a GPU) before the tests run,
// so a missing adapter is a failure here, not a skip.
test('probeWebGPU finds a working adapter and verifies a compute dispatch', async () => {
  const r = await probeWebGPU();
  assert.equal(r.ok, true, `probe failed: ${r.error}`);
  assert.equal(r.error, undefined);
  assert.equal(r.verified, true);
  assert.ok(r.adapter, 'adapter info missing');
  assert.equal(typeof r.adapter.vendor, 'string');
  assert.equal(typeof r.adapter.architecture, 'string');
  assert.equal(typeof r.adapter.device, 'string');
  assert.equal(typeof r.adapter.description, 'string');
  assert.equal(typeof r.adapter.isFallbackAdapter, 'boolean');
  assert.ok(r.adapter.name.length > 0, 'adapter has no display name');
  assert.ok(
    [r.adapter.vendor, r.adapter.architecture, r.adapter.device, r.adapter.description].some((s) => s.length > 0),
    'adapter info has no name at all',
  );
  assert.ok(Array.isArray(r.features));
  assert.match(describeProbe(r), /^webgpu: ok \(/);
});

test('probeWebGPU reports an unknown backend as ok: false instead of throwing', async () => {
  const r = await probeWebGPU({ backend: 'no-such-backend' });
  assert.equal(r.ok, false);
  assert.equal(typeof r.error, 'string');
  assert.ok(r.error && r.error.length > 0);
  assert.match(describeProbe(r), /^webgpu: no working adapter: /);
});
