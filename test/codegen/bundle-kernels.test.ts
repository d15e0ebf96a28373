// Which kernels `visft run` uses for a bundle (compiler/bundle.ts bundleProgramFor): a portable bundle's are
// scheduled for the device, a named target's run as they are where the device satisfies it, and `--kernels bundle`
// on a device that lacks what they need is a clear error naming what is missing. No GPU needed: devices are Targets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BundleError, bundleProgramFor, makeBundle, parseBundle, serializeBundle } from '../../compiler/bundle.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS, targetShortfalls } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import type { ScheduleOptions } from '../../compiler/codegen/schedule.js';
import { compileOp } from '../../compiler/lower/op-entry.js';

const attention = compileOp('attention', new Map([['q', [1, 2, 11, 24]], ['k', [1, 2, 13, 24]], ['v', [1, 2, 13, 24]]]), [], true);
const bundleFor = (target: string, opts: ScheduleOptions = {}) => parseBundle(serializeBundle(makeBundle(attention, { file: 'op:attention', sha256: '' }, compileGpu(attention.graph, TARGETS[target], opts))), 'a.visftx');
/** A device as the runtime reads it: an adapter's display name, otherwise what the named target says. */
const device = (target: string, extra: Partial<Target> = {}): Target => ({ ...TARGETS[target], name: 'some adapter', ...extra });
const names = (t: Target) => compileGpu(attention.graph, t).schedule.kernels.map((k) => k.wgsl);

test('a portable bundle is scheduled for the device under auto and device, and runs as it is under bundle', () => {
  const { bundle, graph } = bundleFor('portable');
  const lavapipe = device('lavapipe');
  for (const choice of ['auto', 'device'] as const) {
    const got = bundleProgramFor(bundle, graph, 'a.visftx', lavapipe, choice);
    assert.match(got.rescheduled ?? '', choice === 'auto' ? /the bundle's are for 'portable'/ : /--kernels device/);
    assert.deepEqual(got.program.schedule.kernels.map((k) => k.wgsl), names(lavapipe));
  }
  const own = bundleProgramFor(bundle, graph, 'a.visftx', lavapipe, 'bundle');
  assert.equal(own.rescheduled, undefined);
  assert.deepEqual(own.program.schedule.kernels, bundle.gpu!.kernels);
  // The memory plan is the device's: lavapipe's 16-byte offsets, not WebGPU's 256.
  assert.equal(own.program.plan.alignment, 16);
});

test("a named target's bundle runs as it is on a device that satisfies it, and is rescheduled on one that does not", () => {
  const { bundle, graph } = bundleFor('nvidia-h100');
  const h200 = bundleProgramFor(bundle, graph, 'a.visftx', device('nvidia-h200'), 'auto');
  assert.equal(h200.rescheduled, undefined);
  assert.deepEqual(h200.program.schedule.kernels, bundle.gpu!.kernels);
  const soft = bundleProgramFor(bundle, graph, 'a.visftx', device('lavapipe'), 'auto');
  assert.match(soft.rescheduled ?? '', /the bundle's are for 'nvidia-h100', and this adapter lacks feature subgroups-f16.*subgroup size 32-32 \(it has 8-8\)/);
  assert.deepEqual(soft.program.schedule.kernels.map((k) => k.wgsl), names(device('lavapipe')));
  assert.throws(
    () => bundleProgramFor(bundle, graph, 'a.visftx', device('lavapipe'), 'bundle'),
    (e: unknown) => e instanceof BundleError && /a\.visftx was compiled for 'nvidia-h100'; this adapter \(some adapter\) lacks feature subgroups-f16, .*maxComputeWorkgroupStorageSize 49152 \(it has 32768\).*--kernels device/.test(e.message),
  );
});

test('a bundle compiled with --no-fuse is rescheduled unfused', () => {
  const { bundle, graph } = bundleFor('portable', { fuse: false });
  assert.equal(bundle.gpu!.fused, false);
  assert.equal(bundleFor('portable').bundle.gpu!.fused, undefined, 'a fused bundle keeps its old bytes');
  const lavapipe = device('lavapipe');
  const got = bundleProgramFor(bundle, graph, 'a.visftx', lavapipe, 'auto');
  assert.equal(got.program.schedule.kernels.length, compileGpu(attention.graph, lavapipe, { fuse: false }).schedule.kernels.length);
  assert.ok(got.program.schedule.kernels.length > compileGpu(attention.graph, lavapipe).schedule.kernels.length);
});

test('targetShortfalls: features, subgroup sizes, matrix configs and spelling, and limits in the right direction', () => {
  const h100 = TARGETS['nvidia-h100'];
  assert.deepEqual(targetShortfalls(h100, h100), []);
  assert.deepEqual(targetShortfalls(TARGETS.lavapipe, TARGETS.portable), [], 'every adapter satisfies the portable target');
  const smaller = { ...h100, limits: { ...h100.limits, minStorageBufferOffsetAlignment: 64, maxComputeInvocationsPerWorkgroup: 256 } };
  assert.deepEqual(targetShortfalls(smaller, h100), ['maxComputeInvocationsPerWorkgroup 1024 (it has 256)'], 'a smaller offset alignment is no shortfall');
  assert.deepEqual(targetShortfalls({ ...h100, subgroupMatrixConfigs: h100.subgroupMatrixConfigs.slice(2) }, h100), ['subgroup matrix f16->f16 16x16x16', 'subgroup matrix f16->f32 16x16x16']);
  assert.deepEqual(targetShortfalls({ ...h100, subgroupMatrixSpelling: 'argument' }, h100), ["subgroup-matrix spelling 'template' (it takes 'argument')"]);
  assert.deepEqual(targetShortfalls({ ...h100, limits: { ...h100.limits, minStorageBufferOffsetAlignment: 512 } }, h100), ['minStorageBufferOffsetAlignment 256 (it has 512)']);
});
