// `visft profile BUNDLE`: every kernel of the program as `visft run` schedules it on this adapter, timed on its own
// and summed by name, beside the whole program in one pass (lavapipe in CI: times are a CPU's, the accounting is
// what is checked). Bad input is a one-line error.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bundleProgramFor, parseBundle } from '../../compiler/bundle.js';
import { TimedProgram } from '../../runtime/bench/ours.js';
import { openDevice } from '../../runtime/gpu/device.js';

const bin = fileURLToPath(new URL('../../../bin/visft.js', import.meta.url));
const visft = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, VISFT_TUNING: 'none' } });
const dir = mkdtempSync(join(tmpdir(), 'visft-profile-'));

interface Profile {
  bundle: string;
  repeat: number;
  passMs: number;
  kernelsMs: number;
  kernels: number;
  byName: { name: string; count: number; ms: number; share: number }[];
  byKind: { name: string; count: number; ms: number; share: number }[];
  slowest: { index: number; name: string; ms: number }[];
}

test('a training step: every scheduled kernel timed once per run, summed by name, shares adding up; the slowest listed', async () => {
  const bundle = join(dir, 'step.visftx');
  const c = visft('compile', fileURLToPath(new URL('../../../pipelines/eva_tiny.visft', import.meta.url)), '--entry', 'eva', '--stage', 'stage2', '--vjp', '--shape', 'image=1x3x28x28', '-o', bundle);
  assert.equal(c.status, 0, c.stderr);
  const r = visft('profile', bundle, '--repeat', '2', '--top', '3', '--json');
  assert.equal(r.status, 0, r.stderr);
  const p = JSON.parse(r.stdout) as Profile;
  assert.equal(p.bundle, bundle);
  assert.equal(p.repeat, 2);
  // What `visft run` dispatches here: the same schedule, kernel for kernel.
  const gpu = await openDevice({ tuning: 'none' });
  const { bundle: b, graph } = parseBundle(readFileSync(bundle, 'utf8'), bundle);
  const scheduled = bundleProgramFor(b, graph, bundle, gpu.target, 'auto').program.schedule.kernels.filter((k) => k.dispatch.every((d) => d > 0));
  await gpu.destroy();
  assert.equal(p.kernels, scheduled.length);
  const counts = new Map<string, number>();
  for (const k of scheduled) counts.set(k.name, (counts.get(k.name) ?? 0) + 1);
  assert.deepEqual(new Map(p.byName.map((k) => [k.name, k.count])), counts);
  assert.ok(p.passMs > 0 && p.kernelsMs > 0);
  assert.ok(Math.abs(p.byName.reduce((a, k) => a + k.ms, 0) - p.kernelsMs) <= 1e-9 * p.kernelsMs);
  assert.ok(Math.abs(p.byName.reduce((a, k) => a + k.share, 0) - 1) < 1e-9);
  for (let i = 1; i < p.byName.length; i++) assert.ok(p.byName[i - 1].ms >= p.byName[i].ms, 'slowest first');
  // By kind: the names' first words, the same kernels and time.
  const kinds = new Map<string, number>();
  for (const k of scheduled) kinds.set(k.name.split(/[_+]/)[0], (kinds.get(k.name.split(/[_+]/)[0]) ?? 0) + 1);
  assert.deepEqual(new Map(p.byKind.map((k) => [k.name, k.count])), kinds);
  assert.ok(kinds.has('matmul') && kinds.has('attention'), [...kinds.keys()].join(' '));
  assert.ok(Math.abs(p.byKind.reduce((a, k) => a + k.ms, 0) - p.kernelsMs) <= 1e-9 * p.kernelsMs);
  assert.equal(p.slowest.length, 3);
  for (const k of p.slowest) assert.equal(scheduled[k.index].name, k.name);
  assert.ok(p.slowest[0].ms >= p.slowest[2].ms && p.slowest[0].ms <= p.byName[0].ms);
  // Kernel times are taken in submissions of a bounded number of passes (a model's step has thousands): any
  // chunking times every kernel once per run.
  const again = await openDevice({ tuning: 'none' });
  try {
    const program = bundleProgramFor(b, graph, bundle, again.target, 'auto').program;
    const timed = await TimedProgram.create(again, program, new Map());
    try {
      const chunked = await timed.kernelTimes(2, 7);
      assert.deepEqual(chunked.map((k) => k.name), scheduled.map((k) => k.name));
      assert.ok(chunked.every((k) => k.ms >= 0 && Number.isFinite(k.ms)));
    } finally {
      timed.destroy();
    }
  } finally {
    await again.destroy();
  }
  // The text form names the device, the totals and each kernel.
  const t = visft('profile', bundle, '--repeat', '1');
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /^device: .+\ntuning profile: none\n/);
  assert.match(t.stdout, new RegExp(`${p.kernels} kernels; one pass [0-9.]+ ms; each in a pass of its own [0-9.]+ ms in all`));
  for (const k of p.byName) assert.ok(t.stdout.includes(k.name), k.name);
});

test('bad profile arguments are one-line errors', () => {
  const notBundle = join(dir, 'not.visftx');
  writeFileSync(notBundle, '{"hello": 1}');
  const cases: [string[], RegExp][] = [
    [['profile', join(dir, 'missing.visftx')], /cannot read .*missing\.visftx: no such file/],
    [['profile', notBundle], /not\.visftx is not a visft bundle/],
    [['profile', notBundle, '--repeat', '0'], /--repeat takes a whole number from 1 to 100, not '0'/],
    [['profile', notBundle, '--kernels', 'some'], /--kernels is auto, bundle, device, not 'some'/],
    [['profile', notBundle, '--set', '{oops'], /--set takes kernel choices as JSON .* not '\{oops'/],
    [['profile', notBundle, '--set', '{"flashDirect": 1}'], /--set: tuning\.flashDirect: expected true or false/],
    [['profile', notBundle, '--set', '{"nope": true}'], /--set: tuning\.nope: not a known field/],
  ];
  for (const [args, message] of cases) {
    const r = visft(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('--set: kernel choices over the tuning profile (here none), in the device Target and named in the output', async () => {
  const gpu = await openDevice({ tuning: 'none', tuningSet: { flashCaps: { workgroup: 16 }, vectorLoads: false } });
  try {
    assert.deepEqual(gpu.target.tuning, { flashCaps: { workgroup: 16 }, vectorLoads: false });
  } finally {
    await gpu.destroy();
  }
  const bundle = join(dir, 'set.visftx');
  const c = visft('compile', fileURLToPath(new URL('../../../pipelines/eva_tiny.visft', import.meta.url)), '--entry', 'eva', '--shape', 'image=1x3x28x28', '-o', bundle);
  assert.equal(c.status, 0, c.stderr);
  const r = visft('profile', bundle, '--repeat', '1', '--json', '--set', '{"vectorLoads": false}');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as { device: { set: unknown } }).device.set, { vectorLoads: false });
  const t = visft('profile', bundle, '--repeat', '1', '--set', '{"vectorLoads": false}');
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /\ntuning profile: none\nkernel choices set: \{"vectorLoads":false\}\n/);
});
