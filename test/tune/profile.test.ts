// Tuning profiles without a GPU: the file format and its errors, which profile applies to which adapter, the
// tuner's merge of options, and `visft run`'s choice between a bundle's kernels and ones tuned for the device.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { bundleProgramFor, makeBundle, parseBundle, serializeBundle } from '../../compiler/bundle.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import { canonicalJson } from '../../compiler/util/canonical-json.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { TUNE_GROUPS, TUNE_ROWS } from '../../runtime/tune/knobs.js';
import { findProfile, parseProfile, profileFileName, readProfile, SHIPPED_PROFILE_DIR, TUNING_FORMAT, TUNING_VERSION, TuningProfileError, writeProfile, type ProfileAdapter, type TuningProfile } from '../../runtime/tune/profile.js';
import { validateTuning } from '../../runtime/tune/tuning-schema.js';
import { bestOption, mergeConfig, timeUntilLost, wins } from '../../runtime/tune/tune.js';
import { Builder } from '../../compiler/ir/builder.js';

const H200: ProfileAdapter = { vendor: 'nvidia', architecture: 'hopper', device: '0x2335', description: 'NVIDIA H200', backend: 'vulkan' };
const LAVAPIPE: ProfileAdapter = { vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: 'llvmpipe: Mesa 25', backend: 'vulkan' };

function profile(adapter: ProfileAdapter, over: Partial<TuningProfile> = {}): TuningProfile {
  return {
    format: TUNING_FORMAT,
    version: TUNING_VERSION,
    adapter,
    created: '2026-11-28T00:00:00.000Z',
    command: 'visft tune',
    visft: '0.1.0',
    webgpu: '0.6.2',
    toggles: ['disable_robustness'],
    tuning: { flashBlocked: true, tiledTiles: { tm: 128, tn: 64, rows: 8, cols: 8 } },
    evidence: [{ group: 'f32 flash attention forward', option: 'register-blocked forward', row: 'attention_fwd_evag_detection', ratio: 0.8, relDiff: 1e-7 }],
    adopted: ['f32 flash attention forward: register-blocked forward (x0.800, then x0.810)'],
    ...over,
  };
}

const tmp = (): string => mkdtempSync(join(tmpdir(), 'visft-tune-'));

test('a profile written is read back as it was, in bytes that do not depend on key order', () => {
  const dir = tmp();
  const file = join(dir, 'nested', profileFileName(H200));
  writeProfile(file, profile(H200));
  assert.deepEqual(readProfile(file), profile(H200));
  const reverse = (x: unknown): unknown =>
    Array.isArray(x) ? x.map(reverse) : x && typeof x === 'object' ? Object.fromEntries(Object.entries(x).reverse().map(([k, v]) => [k, reverse(v)])) : x;
  const shuffled = reverse(profile(H200)) as TuningProfile;
  assert.notEqual(JSON.stringify(shuffled), JSON.stringify(profile(H200)));
  const again = join(dir, 'again.json');
  writeProfile(again, shuffled);
  assert.equal(readFileSync(again, 'utf8'), readFileSync(file, 'utf8'));
  // Device and description: two GPUs on one driver (the description Dawn reports on NVIDIA) get two files.
  assert.equal(profileFileName(H200), '0x2335-nvidia-h200-vulkan.json');
  const lent = { vendor: 'nvidia', architecture: '', device: 'nvidia-h200', description: 'NVIDIA: 580.159.04 580.159.4.0', backend: 'vulkan' };
  assert.equal(profileFileName(lent), 'nvidia-h200-nvidia-580-159-04-580-159-4-0-vulkan.json');
  assert.notEqual(profileFileName({ ...lent, device: 'nvidia-h100' }), profileFileName(lent));
  assert.equal(profileFileName(LAVAPIPE), 'llvmpipe-mesa-25-vulkan.json');
});

test('every malformed profile is an error that names the file and the field', () => {
  const good = profile(H200) as unknown as Record<string, unknown>;
  const cases: [string, unknown, RegExp][] = [
    ['not JSON', '{', /x\.json: not JSON/],
    ['another format', { ...good, format: 'visft-bundle' }, /x\.json: not a tuning profile \(format is "visft-bundle"/],
    ['a later version', { ...good, version: 2 }, /x\.json: tuning profile version 2; this visft reads version 1/],
    ['no adapter', { ...good, adapter: undefined }, /x\.json: adapter: missing/],
    ['an adapter field of the wrong type', { ...good, adapter: { ...H200, backend: 3 } }, /x\.json: adapter\.backend: expected a string/],
    ['a toggle a profile may not set', { ...good, toggles: ['disable_robustness', 'skip_validation'] }, /x\.json: toggles: 'skip_validation' is not one a profile may turn on/],
    ['an unknown tuning key', { ...good, tuning: { fastMode: true } }, /x\.json: tuning\.fastMode: not a known field/],
    ['a bad nested value', { ...good, tuning: { flashCaps: { split: 3 } } }, /x\.json: tuning\.flashCaps\.split: expected one of 1, 2, 4, 8, 16, 32/],
    ['a missing nested field', { ...good, tuning: { tiledTiles: { tm: 64, tn: 64, rows: 8 } } }, /x\.json: tuning\.tiledTiles\.cols: missing/],
    ['bad evidence', { ...good, evidence: [{ group: 'g' }] }, /x\.json: evidence\[0\]: expected/],
  ];
  for (const [what, value, message] of cases) {
    assert.throws(() => parseProfile(typeof value === 'string' ? value : JSON.stringify(value), 'x.json'), (e: Error) => e instanceof TuningProfileError && message.test(e.message), what);
  }
  assert.throws(() => readProfile('/no/such/profile.json'), /cannot read the tuning profile \/no\/such\/profile\.json: ENOENT/);
});

test('the tuning schema accepts what every tuner option sets, and rejects any one field made wrong', () => {
  for (const g of TUNE_GROUPS) for (const o of g.options) if (o.tuning) assert.equal(validateTuning(o.tuning), undefined, `${g.name} | ${o.name}`);
  const valid = fc.record(
    {
      flashBlocked: fc.boolean(),
      vectorLoads: fc.boolean(),
      matmulSplits: fc.integer({ min: 1, max: 64 }),
      flashCaps: fc.record({ split: fc.constantFrom(1, 2, 4), sweep: fc.integer({ min: 1, max: 64 }), unroll: fc.boolean() }, { requiredKeys: [] }),
      msdeformSplits: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 4 })),
      tiledTiles: fc.record({ tm: fc.constantFrom(64, 128), tn: fc.constantFrom(64, 128), rows: fc.constantFrom(4, 8), cols: fc.constantFrom(4, 8) }),
    },
    { requiredKeys: [] },
  );
  fc.assert(
    fc.property(valid, fc.constantFrom(0, -1, 1.5, 'x', null, 3000), (t, bad) => {
      assert.equal(validateTuning(t), undefined, JSON.stringify(t));
      const keys = Object.keys(t);
      if (!keys.length) return;
      const key = keys[0];
      const broken = { ...t, [key]: key === 'flashCaps' ? { split: bad } : key === 'tiledTiles' ? { ...(t.tiledTiles ?? {}), tm: bad } : bad };
      const problem = validateTuning(broken);
      assert.ok(problem?.startsWith(`.${key}`), `${JSON.stringify(broken)}: ${problem}`);
    }),
    { numRuns: 200 },
  );
});

test('the profile that applies is the first measured on this very adapter; none, or a file for another adapter, as asked', () => {
  const user = tmp();
  const shipped = tmp();
  writeProfile(join(shipped, 'a-other.json'), profile(LAVAPIPE, { tuning: { vectorLoads: false } }));
  writeProfile(join(shipped, 'b-h200.json'), profile(H200, { tuning: { flashBlocked: true } }));
  assert.equal(findProfile(H200, 'auto', [user, shipped])?.file, join(shipped, 'b-h200.json'));
  // The user's own measurement comes first.
  writeProfile(join(user, 'mine.json'), profile(H200, { tuning: { flashBlockedGrad: true } }));
  assert.deepEqual(findProfile(H200, 'auto', [user, shipped])?.profile.tuning, { flashBlockedGrad: true });
  // Another backend or another driver's description is another adapter.
  assert.equal(findProfile({ ...H200, backend: 'd3d12' }, 'auto', [user, shipped]), undefined);
  assert.equal(findProfile({ ...H200, description: 'NVIDIA H100 80GB HBM3' }, 'auto', [user, shipped]), undefined);
  assert.equal(findProfile(H200, 'none', [user, shipped]), undefined);
  assert.equal(findProfile(H200, 'auto', [join(user, 'missing-folder')]), undefined);
  assert.throws(() => findProfile(H200, join(shipped, 'a-other.json')), /a-other\.json was measured on llvmpipe: Mesa 25 \(vulkan\); this adapter is NVIDIA H200 \(vulkan\)/);
  // A broken file in a searched folder stops the run with its name, rather than silently changing speed.
  mkdirSync(join(user, 'sub'), { recursive: true });
  writeFileSync(join(user, 'broken.json'), '{"format":"visft-tuning"');
  assert.throws(() => findProfile(H200, 'auto', [user, shipped]), /broken\.json: not JSON .*VISFT_TUNING=none/);
});

test("the tuner's options replace the adopted tuning key by key and add toggles", () => {
  const adopted = { toggles: ['disable_robustness'], tuning: { flashBlocked: true, flashCaps: { unroll: true } } };
  assert.deepEqual(mergeConfig(adopted, { name: 'x', tuning: { flashCaps: { sweep: 32 } } }), { toggles: ['disable_robustness'], tuning: { flashBlocked: true, flashCaps: { sweep: 32 } } });
  assert.deepEqual(mergeConfig(adopted, { name: 'y', toggles: ['disable_robustness', 'disable_workgroup_init'] }).toggles, ['disable_robustness', 'disable_workgroup_init']);
  // Every default row exists, and every group has rows among them.
  const names = benchRows('tiny').map((r) => r.name);
  for (const r of TUNE_ROWS) assert.ok(names.includes(r), r);
  for (const g of TUNE_GROUPS) assert.ok(benchRows('tiny').some((r) => TUNE_ROWS.includes(r.name) && g.rows(r)), g.name);
});

test("`visft run` takes a bundle's own kernels only when they were generated with the device's tuning", () => {
  const b = new Builder();
  const x = b.input('x', [2, 64, 8], 'f32');
  const w = b.input('w', [8, 8], 'f32');
  b.output('y', b.add('matmul', [x, w], {}));
  const entry = { entry: 'mm', graph: b.graph, params: [] } as unknown as Parameters<typeof makeBundle>[0];
  const untuned = TARGETS['nvidia-h200'];
  const tuned = { ...untuned, tuning: { tiledTiles: { tm: 128, tn: 64, rows: 8, cols: 8 } } as const };
  const { bundle, graph } = parseBundle(serializeBundle(makeBundle(entry, { file: 'mm.visft', sha256: '' }, compileGpu(b.graph, untuned))), 'mm.visftx');
  assert.equal(bundle.gpu?.tuning, undefined);
  assert.equal(bundleProgramFor(bundle, graph, 'mm.visftx', untuned, 'auto').rescheduled, undefined);
  assert.match(bundleProgramFor(bundle, graph, 'mm.visftx', tuned, 'auto').rescheduled ?? '', /generated without this adapter's tuning profile/);
  const own = parseBundle(serializeBundle(makeBundle(entry, { file: 'mm.visft', sha256: '' }, compileGpu(b.graph, tuned))), 'mm.visftx');
  assert.deepEqual(own.bundle.gpu?.tuning, tuned.tuning);
  assert.match(bundleProgramFor(own.bundle, own.graph, 'mm.visftx', untuned, 'auto').rescheduled ?? '', /generated with tuning choices, and no tuning profile applies/);
  // Key order does not matter; the same choices do.
  const reordered = { ...untuned, tuning: { tiledTiles: { cols: 8, rows: 8, tn: 64, tm: 128 } } as const };
  assert.equal(bundleProgramFor(own.bundle, own.graph, 'mm.visftx', reordered, 'auto').rescheduled, undefined);
  assert.equal(canonicalJson(tuned.tuning), canonicalJson(reordered.tuning));
});

test('the tuner adopts the fastest option that wins overall by the threshold and loses on no row beyond noise', () => {
  // Faster overall, but 8% slower on one row: not a win.
  assert.equal(wins([0.8, 0.8, 1.08], 0.97, 1.05), false);
  assert.equal(wins([0.9, 0.95, 1.04], 0.97, 1.05), true);
  assert.equal(wins([0.98, 0.99], 0.97, 1.05), false, 'within noise');
  assert.equal(wins([], 0.97, 1.05), false, 'nothing timed');
  const timed = [
    { name: 'a', ratios: [0.7, 1.2] }, // the lowest mean, but one row much slower
    { name: 'b', ratios: [0.9, 0.92] },
    { name: 'c', ratios: [0.85, 0.95] },
    { name: 'd', ratios: [1.0, 0.99] },
  ];
  assert.equal(bestOption(timed, 0.97, 1.05)?.name, 'c');
  assert.equal(bestOption(timed.slice(3), 0.97, 1.05), undefined);
  fc.assert(
    fc.property(fc.array(fc.array(fc.double({ min: 0.3, max: 2, noNaN: true }), { minLength: 1, maxLength: 5 }), { maxLength: 6 }), (sets) => {
      const best = bestOption(sets.map((ratios, i) => ({ i, ratios })), 0.97, 1.05);
      const winners = sets.filter((r) => wins(r, 0.97, 1.05));
      assert.equal(best === undefined, winners.length === 0);
      if (best) for (const r of winners) assert.ok(best.score <= Math.exp(r.reduce((a, x) => a + Math.log(x), 0) / r.length) + 1e-12);
    }),
  );
});

test('the tuner stops timing an option at its first row slower than noise, and decides as if it had timed them all', async () => {
  const calls: number[] = [];
  const time = async (r: number) => (calls.push(r), r);
  assert.deepEqual(await timeUntilLost([0.9, 1.2, 0.5, 0.7], 1.05, time), [0.9, 1.2]);
  assert.deepEqual(calls, [0.9, 1.2], 'the rows after the loss are not timed');
  assert.deepEqual(await timeUntilLost([0.9, 1.05, 0.5], 1.05, time), [0.9, 1.05, 0.5], 'at the limit is not a loss');
  assert.equal(await timeUntilLost([0.9, 0.8], 1.05, async (r) => (r < 0.85 ? undefined : r)), undefined, 'out of time');
  const ratio = fc.double({ min: 0.3, max: 2, noNaN: true });
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(ratio, { minLength: 1, maxLength: 5 }), { maxLength: 6 }), async (sets) => {
      const cut = await Promise.all(sets.map((rows) => timeUntilLost(rows, 1.05, async (r) => r)));
      for (const [i, rows] of sets.entries()) {
        const got = cut[i]!;
        assert.deepEqual(got, rows.slice(0, got.length), 'a prefix of the rows');
        assert.ok(got.length === rows.length || got[got.length - 1] > 1.05, 'cut only after a loss');
        assert.equal(wins(got, 0.97, 1.05), wins(rows, 0.97, 1.05));
      }
      const pick = (lists: readonly (readonly number[])[]) => bestOption(lists.map((ratios, i) => ({ i, ratios })), 0.97, 1.05)?.i;
      assert.equal(pick(cut as number[][]), pick(sets));
    }),
  );
});

test("device-check.sh's tune steps name only groups and rows that exist (a typo would cost a lease its tuning)", () => {
  const script = readFileSync(new URL('../../../scripts/device-check.sh', import.meta.url), 'utf8');
  const groups = [...script.matchAll(/visft\.js tune [^\n]*--groups "([^"]+)"/g)].flatMap((m) => m[1].split(','));
  assert.ok(groups.length > 0, 'the script tunes some groups');
  // Variables ($TUNE_GROUPS) are the caller's, checked by `visft tune` itself.
  for (const g of groups.filter((x) => !x.startsWith('$'))) assert.ok(TUNE_GROUPS.some((x) => x.name === g), `no tune group '${g}'`);
  const names = benchRows('full').map((r) => r.name);
  for (const m of script.matchAll(/--rows ([\w,]+)/g)) for (const r of m[1].split(',')) assert.ok(names.some((n) => n.startsWith(r)), `no bench row '${r}'`);
});

test('shipped profiles: each parses, is named for its adapter, and changes the kernels of the bench rows it was measured on', () => {
  const files = readdirSync(SHIPPED_PROFILE_DIR).filter((f) => f.endsWith('.json'));
  for (const file of files) {
    const { adapter, tuning, adopted } = readProfile(join(SHIPPED_PROFILE_DIR, file));
    assert.equal(file, profileFileName(adapter), 'the name `visft tune` gives it');
    assert.equal(validateTuning(tuning), undefined, file);
    // Dawn names the lent GPUs as visft's targets are named (adapter.info.device 'nvidia-h200'): compile every
    // full-size bench row for that target with and without the profile; its choices must compile and matter.
    const target = TARGETS[adapter.device];
    if (!target || !adopted.length) continue;
    let changed = 0;
    for (const row of benchRows('full')) {
      const { graph } = rowGraph(row);
      const names = (t: typeof target) => compileGpu(graph, t).schedule.kernels.map((k) => k.wgsl);
      if (JSON.stringify(names({ ...target, tuning })) !== JSON.stringify(names(target))) changed++;
    }
    assert.ok(changed > 0, `${file}: its tuning changes no bench row's kernels for target ${adapter.device}`);
  }
});
