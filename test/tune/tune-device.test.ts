// Tuning profiles on the device (lavapipe in CI): openDevice applies a profile's choices and toggles; `visft tune`
// measures and writes one that doctor, bench and run then use; bad input is a one-line error.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { openDevice } from '../../runtime/gpu/device.js';
import { TUNE_GROUPS } from '../../runtime/tune/knobs.js';
import { profileAdapter, readProfile, TUNING_FORMAT, TUNING_VERSION, writeProfile, type TuningProfile } from '../../runtime/tune/profile.js';

const bin = fileURLToPath(new URL('../../../bin/visft.js', import.meta.url));
const visft = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 600_000, env: { ...process.env, VISFT_TUNING: 'none' } });
const dir = mkdtempSync(join(tmpdir(), 'visft-tune-device-'));
const geomean = (xs: number[]): number => Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);

test("openDevice applies a profile measured on this adapter: its tuning in the Target, its toggles on the device", async () => {
  const probe = await openDevice({ tuning: 'none' });
  const adapter = profileAdapter(probe.info, probe.backend);
  await probe.destroy();
  assert.equal(probe.tuningProfile, undefined);
  const file = join(dir, 'made.json');
  const made: TuningProfile = {
    format: TUNING_FORMAT,
    version: TUNING_VERSION,
    adapter,
    created: new Date().toISOString(),
    command: 'test',
    visft: '0',
    webgpu: '0',
    toggles: ['disable_robustness'],
    tuning: { msdeformValueGrad: 'tiled' },
    evidence: [],
    adopted: ['msdeform value gradient: one tiled kernel'],
  };
  writeProfile(file, made);
  const gpu = await openDevice({ tuning: file });
  try {
    assert.equal(gpu.tuningProfile?.file, file);
    assert.deepEqual(gpu.target.tuning, { msdeformValueGrad: 'tiled' });
    assert.ok(gpu.toggles.includes('disable_robustness') && gpu.toggles.includes('allow_unsafe_apis'), gpu.toggles.join());
    const row = benchRows('tiny').find((r) => r.name === 'msdeform_vjp_m2f_pixel')!;
    const kernels = compileGpu(rowGraph(row).graph, gpu.target).schedule.kernels.map((k) => k.name);
    assert.ok(kernels.includes('msdeform_attn_grad_value_tiled_f32'), kernels.join(' '));
  } finally {
    await gpu.destroy();
  }
  // `visft compile --target ... --tuning FILE` generates what that GPU runs under the profile; the bundle says so.
  const op = ['compile', '--op', 'msdeform_attn', '--vjp', '--shape', 'value=1x26x2x4', 'sampling_locations=1x26x2x2x2x2', 'attention_weights=1x26x2x2x2', '--attr', 'levels=[4x5,2x3]', '--target', 'nvidia-h200', '--emit', 'kernels'];
  const plain = visft(...op);
  const tuned = visft(...op, '--tuning', file);
  assert.equal(plain.status, 0, plain.stderr);
  assert.equal(tuned.status, 0, tuned.stderr);
  assert.doesNotMatch(plain.stdout, /msdeform_attn_grad_value_tiled_f32/);
  assert.match(tuned.stdout, /msdeform_attn_grad_value_tiled_f32/);
  // The bench under it also times the default kernels in the same bursts, and says what the profile gains.
  const bench = visft('bench', '--rows', 'msdeform_vjp_m2f_pixel', '--tuning', file, '--repeat', '2', '--json');
  assert.equal(bench.status, 0, bench.stderr);
  const [row] = (JSON.parse(bench.stdout) as { rows: { status: string; ours: { kernels: string[]; ms: number }; untuned?: { ms: number; kernels: string[]; relDiff: number }; vsUntuned?: number }[] }).rows;
  assert.equal(row.status, 'ok');
  assert.ok(row.ours.kernels.includes('msdeform_attn_grad_value_tiled_f32') && row.untuned && !row.untuned.kernels.includes('msdeform_attn_grad_value_tiled_f32'), JSON.stringify(row.untuned));
  assert.ok(row.untuned.relDiff <= 1e-5, `${row.untuned.relDiff}`);
  assert.ok(Math.abs(row.vsUntuned! - row.untuned.ms / row.ours.ms) < 1e-12);
  // A profile of another adapter, given by name, is refused with both names.
  writeProfile(join(dir, 'other.json'), { ...made, adapter: { ...adapter, description: 'NVIDIA H200' } });
  await assert.rejects(openDevice({ tuning: join(dir, 'other.json') }), /other\.json was measured on NVIDIA H200 \(vulkan\); this adapter is /);
});

test('`visft tune` writes a profile whose adoptions its evidence supports, and doctor and bench apply it', () => {
  const out = join(dir, 'tuned.json');
  const r = visft('tune', '--rows', 'msdeform_vjp_m2f_pixel', '--groups', 'msdeform value gradient', '--size', 'tiny', '--seconds', '300', '--out', out, '--json');
  assert.equal(r.status, 0, r.stderr);
  const result = JSON.parse(r.stdout) as { file: string; cut: boolean; profile: TuningProfile };
  assert.equal(result.file, out);
  const profile = readProfile(out);
  assert.deepEqual(profile, result.profile);
  assert.match(profile.command, /^visft tune --rows msdeform_vjp_m2f_pixel --groups 'msdeform value gradient'/);
  assert.ok(profile.evidence.length > 0, 'at least one option changed the row and was timed');
  for (const e of profile.evidence) {
    assert.equal(e.row, 'msdeform_vjp_m2f_pixel');
    assert.equal(e.group, 'msdeform value gradient');
    assert.ok(e.ratio > 0 && e.relDiff <= 1e-4, JSON.stringify(e));
  }
  for (const a of profile.adopted) {
    const option = a.replace(/^msdeform value gradient: /, '').replace(/ \(x.*$/, '');
    assert.ok(geomean(profile.evidence.filter((e) => e.option === option).map((e) => e.ratio)) <= 0.97, a);
  }
  assert.equal(profile.adopted.length > 0, Object.keys(profile.tuning).length > 0);
  assert.deepEqual(profile.toggles, []);

  const doctor = visft('doctor', '--tuning', out, '--json');
  assert.equal(doctor.status, 0, doctor.stderr);
  assert.equal((JSON.parse(doctor.stdout) as { tuning?: { file: string } }).tuning?.file, out);
  const bench = visft('bench', '--rows', 'msdeform_vjp_m2f_pixel', '--tuning', out, '--repeat', '2', '--json');
  assert.equal(bench.status, 0, bench.stderr);
  const report = JSON.parse(bench.stdout) as { device: { tuning?: { file: string } }; rows: { status: string }[] };
  assert.equal(report.device.tuning?.file, out);
  assert.deepEqual(report.rows.map((x) => x.status), ['ok']);
});

test('`visft tune --groups` tries the groups in the order it names them (a short lease times the most wanted first)', () => {
  // Two groups in the reverse of the knobs' order, on a row neither times: each leaves notes (does not apply here,
  // or, with tensor cores, changes no tuned row), in the order they were tried.
  const [first, second] = ['f16 attention on tensor cores', 'f16 matmul tensor-core tiles'];
  const r = visft('tune', '--rows', 'msdeform_vjp_m2f_pixel', '--groups', `${first},${second}`, '--size', 'tiny', '--out', join(dir, 'order.json'), '--json');
  assert.equal(r.status, 0, r.stderr);
  const names = TUNE_GROUPS.map((g) => g.name);
  assert.ok(names.indexOf(second) < names.indexOf(first), 'the knobs list them the other way round');
  const notes = (JSON.parse(r.stdout) as { notes: string[] }).notes;
  const at = (group: string) => notes.findIndex((n) => n.startsWith(`${group}:`) || n.startsWith(`${group} |`));
  assert.ok(at(first) >= 0 && at(second) > at(first), notes.join('\n'));
});

test('`visft tune BUNDLE` times on a compiled program (your model and shapes) instead of the bench rows', () => {
  const bundle = join(dir, 'ms.visftx');
  const c = visft('compile', '--op', 'msdeform_attn', '--vjp', '--shape', 'value=1x30x2x4', 'sampling_locations=1x30x2x2x2x2', 'attention_weights=1x30x2x2x2', '--attr', 'levels=[4x5,2x5]', '-o', bundle);
  assert.equal(c.status, 0, c.stderr);
  const out = join(dir, 'bundle-tuned.json');
  writeFileSync(out, 'an earlier profile');
  const r = visft('tune', bundle, '--groups', 'msdeform value gradient', '--out', out, '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { previous?: string }).previous, `${out}.bak`);
  assert.equal(readFileSync(`${out}.bak`, 'utf8'), 'an earlier profile', 'the profile it replaced is kept');
  const profile = readProfile(out);
  assert.ok(profile.command.startsWith(`visft tune ${bundle} `), profile.command);
  assert.ok(profile.evidence.length > 0);
  for (const e of profile.evidence) assert.equal(e.row, bundle, 'only the bundle is timed');
});

test('`visft tune --from` starts from a profile: groups not tried keep its choices, a group tried improves on them or keeps them', async () => {
  const probe = await openDevice({ tuning: 'none' });
  const adapter = profileAdapter(probe.info, probe.backend);
  await probe.destroy();
  const from = join(dir, 'from.json');
  // A choice no tuner option makes (the gather form of MSDeformAttn's value gradient), as an earlier visft might have.
  const earlier = { group: 'msdeform value gradient', option: 'gather', row: 'msdeform_vjp_m2f_pixel', ratio: 0.9, relDiff: 0 };
  const adoptedBefore = 'msdeform value gradient: gather (x0.900, then x0.900)';
  writeProfile(from, { format: TUNING_FORMAT, version: TUNING_VERSION, adapter, created: new Date().toISOString(), command: 'earlier', visft: '0', webgpu: '0', toggles: [], tuning: { msdeformValueGrad: 'gather' }, evidence: [earlier], adopted: [adoptedBefore] });
  const tune = (out: string, ...args: string[]) => {
    const r = visft('tune', '--rows', 'msdeform_vjp_m2f_pixel', '--size', 'tiny', '--seconds', '300', '--out', out, '--json', ...args);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { notes: string[]; profile: TuningProfile };
  };
  // A group not tried keeps the profile's choice, adoption and evidence.
  const kept = tune(join(dir, 'kept.json'), '--groups', 'f32 flash attention forward', '--from', from);
  assert.deepEqual(kept.profile.tuning, { msdeformValueGrad: 'gather' });
  assert.deepEqual(kept.profile.adopted, [adoptedBefore]);
  assert.deepEqual(kept.profile.evidence[0], earlier);
  assert.match(kept.profile.command, /--from .*from\.json/);
  // The group tried: its options are timed against the profile's choice, their outputs checked against the
  // default program's; a new adoption replaces the group's old one.
  const again = tune(join(dir, 'again.json'), '--groups', 'msdeform value gradient', '--from', from);
  const timed = again.profile.evidence.slice(1);
  assert.deepEqual(again.profile.evidence[0], earlier);
  assert.ok(timed.some((e) => e.option === 'one tiled kernel'), JSON.stringify(timed));
  for (const e of timed) assert.ok(e.relDiff <= 1e-4, JSON.stringify(e));
  const tiled = again.profile.tuning.msdeformValueGrad === 'tiled';
  assert.deepEqual(again.profile.adopted.length, 1);
  assert.match(again.profile.adopted[0], tiled ? /^msdeform value gradient: one tiled kernel \(x/ : /^msdeform value gradient: gather /);
  assert.equal(again.profile.tuning.msdeformValueGrad, tiled ? 'tiled' : 'gather');
  // auto with no profile for this adapter: the defaults, said so; a file of another adapter: a one-line error.
  const args = ['tune', '--rows', 'msdeform_vjp_m2f_pixel', '--size', 'tiny', '--groups', 'f32 flash attention forward', '--out', join(dir, 'none.json'), '--json', '--from', 'auto'];
  const none = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 600_000, env: { ...process.env, VISFT_TUNING: 'none', VISFT_TUNING_DIR: mkdtempSync(join(tmpdir(), 'visft-no-profiles-')) } });
  assert.equal(none.status, 0, none.stderr);
  assert.ok((JSON.parse(none.stdout) as { notes: string[] }).notes.some((n) => /--from auto: no profile applies to this adapter/.test(n)));
  writeProfile(join(dir, 'foreign.json'), { ...readProfile(from), adapter: { ...adapter, description: 'NVIDIA H200' } });
  const foreign = visft('tune', '--rows', 'msdeform_vjp_m2f_pixel', '--size', 'tiny', '--from', join(dir, 'foreign.json'));
  assert.equal(foreign.status, 2, foreign.stderr);
  assert.match(foreign.stderr, /foreign\.json was measured on NVIDIA H200 \(vulkan\); this adapter is /);
  assert.doesNotMatch(foreign.stderr, /\n\s+at /);
});

test('`visft tune --list` names every group, its options and its rows, without a device', () => {
  const r = visft('tune', '--list', '--json');
  assert.equal(r.status, 0, r.stderr);
  const listed = JSON.parse(r.stdout) as { groups: { name: string; options: { name: string }[]; rows: string[] }[]; rows: string[] };
  assert.deepEqual(listed.groups.map((g) => g.name), TUNE_GROUPS.map((g) => g.name));
  for (const [i, g] of listed.groups.entries()) {
    assert.deepEqual(g.options.map((o) => o.name), TUNE_GROUPS[i].options.map((o) => o.name));
    assert.ok(g.rows.length > 0 && g.rows.every((row) => listed.rows.includes(row)), g.name);
  }
});

test('bad tune arguments and broken profiles are one-line errors', () => {
  const cases: [string[], RegExp][] = [
    [['tune', '--rows', 'matmul_f64_evag_qkv'], /--rows: no bench row matches 'matmul_f64_evag_qkv'; rows are: matmul_f32_evag_qkv/],
    [['tune', '--groups', 'faster please'], /--groups: no group is called 'faster please'; groups are: 'dawn robustness'/],
    [['tune', '--seconds', '0'], /--seconds takes a number of seconds from 1 to 86400, not '0'/],
    [['tune', '--size', 'huge'], /--size takes full, quick or tiny, not 'huge'/],
  ];
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, JSON.stringify({ format: TUNING_FORMAT, version: TUNING_VERSION }));
  cases.push([['bench', '--rows', 'gelu_evag', '--tuning', broken], /broken\.json: adapter: missing/]);
  cases.push([['tune', join(dir, 'no-such.visftx')], /cannot read .*no-such\.visftx: no such file/]);
  cases.push([['tune', broken], /broken\.json is not a visft bundle/]);
  for (const [args, message] of cases) {
    const r = visft(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});
