// Checkpoint store: exact round trips, rotation, verification with fallback on every kind of damage, and a real
// SIGKILL test against a child process that saves in a loop.
import { makeRng } from '../ir/util.js';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import fc from 'fast-check';
import {
  CheckpointError,
  listCheckpoints,
  loadCheckpoint,
  loadLatestCheckpoint,
  saveCheckpoint,
  type Checkpoint,
  type CheckpointContent,
} from '../../runtime/train/checkpoint.js';
import { fromNumbers, tensorFromBytes, tensorsIdentical, type HostTensor } from '../../runtime/weights/tensor.js';
import { checkpointContent, KILL_TEST_KEEP } from './ckpt-writer.js';

const root = mkdtempSync(join(tmpdir(), 'visft-ckpt-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshRunDir = () => join(root, `stage1`, `run${dirCount++}`);

/** Small content whose tensors and state depend on `update`. */
function smallContent(update: number): CheckpointContent {
  return {
    weights: new Map([['w', fromNumbers('f32', [2, 3], [update, 1, 2, 3, 4, 5])]]),
    optimizer: new Map([['w.exp_avg', fromNumbers('f32', [2, 3], [0, update, 0, 0, 0, 0])]]),
    state: { update, note: `u${update}` },
  };
}

function assertTensorsEqual(got: Map<string, HostTensor>, want: Map<string, HostTensor>, what: string): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${what}: tensor names`);
  for (const [name, t] of want) assert.ok(tensorsIdentical(got.get(name)!, t), `${what}: tensor ${name} differs`);
}

function assertMatches(ck: Checkpoint, want: CheckpointContent, what = ck.dir): void {
  assertTensorsEqual(ck.weights, want.weights, `${what} weights`);
  assertTensorsEqual(ck.optimizer, want.optimizer, `${what} optimizer`);
  assert.deepEqual(ck.state, want.state, `${what} state`);
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

test('save/load round trip is bit-exact and writes the documented layout', () => {
  const runDir = freshRunDir();
  // Every f32 bit pattern class: NaNs with payloads, -0, infinities, subnormals.
  const bits = new Uint32Array([0x7fc00001, 0xffbfffff, 0x80000000, 0x7f800000, 0xff800000, 0x00000001, 0x3f800000, 0x12345678]);
  const content: CheckpointContent = {
    weights: new Map<string, HostTensor>([
      ['blocks.0.attn.qkv.lora_A', tensorFromBytes('f32', [2, 4], new Uint8Array(bits.buffer))],
      ['__proto__', fromNumbers('f32', [3], [1, 2, 3])],
      ['scalar', fromNumbers('f32', [], [0.5])],
    ]),
    optimizer: new Map([['blocks.0.attn.qkv.lora_A.exp_avg', fromNumbers('f32', [2, 4], [1e-30, -2, 3, 4, 5, 6, 7, 8])]]),
    state: { update: 7, lr: 0.1 + 0.2, nested: { list: [1, 'two', null, true, { deep: -1.5e-300 }] }, 'ü名': 'ok', __proto__x: 1 },
  };
  Object.defineProperty(content.state, '__proto__', { value: { odd: 'key' }, enumerable: true, configurable: true, writable: true });
  const dir = saveCheckpoint(runDir, 7, content);
  assert.equal(dir, join(runDir, 'ckpt-00000007'));
  assert.deepEqual(readdirSync(dir).sort(), ['optimizer.safetensors', 'state.json', 'weights.safetensors']);
  assert.equal(readFileSync(join(runDir, 'latest'), 'utf8'), 'ckpt-00000007\n');
  const stateJson = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
  assert.equal(stateJson.format, 'visft-checkpoint');
  assert.equal(stateJson.version, 1);
  for (const f of ['weights.safetensors', 'optimizer.safetensors']) {
    assert.deepEqual(stateJson.files[f], { bytes: readFileSync(join(dir, f)).byteLength, sha256: sha256(join(dir, f)) });
  }
  const warnings: string[] = [];
  const latest = loadLatestCheckpoint(runDir, (w) => warnings.push(w));
  assert.ok(latest);
  assert.equal(latest.update, 7);
  assert.equal(latest.dir, dir);
  assertMatches(latest, content);
  assert.ok(Object.prototype.hasOwnProperty.call(latest.state, '__proto__'));
  assertMatches(loadCheckpoint(dir), content);
  assert.deepEqual(warnings, []);
  assert.deepEqual(listCheckpoints(runDir), [{ dir, update: 7 }]);
});

test('any JSON state round-trips (property)', () => {
  const runDir = freshRunDir();
  let update = 0;
  fc.assert(
    fc.property(fc.dictionary(fc.string().filter((k) => !['format', 'version', 'files', 'update'].includes(k)), fc.jsonValue(), { maxKeys: 5 }), (state) => {
      update++;
      saveCheckpoint(runDir, update, { weights: new Map(), optimizer: new Map(), state });
      const ck = loadLatestCheckpoint(runDir);
      assert.equal(ck?.update, update);
      // What JSON gives back (it cannot tell -0 from 0).
      assert.deepEqual(ck.state, JSON.parse(JSON.stringify(state)));
    }),
    { numRuns: 40 },
  );
});

test('bad updates, reserved keys and state JSON cannot hold are rejected before anything is written', () => {
  const runDir = freshRunDir();
  const base = smallContent(1);
  assert.throws(() => saveCheckpoint(runDir, -1, base), (e) => e instanceof CheckpointError && /non-negative integer/.test(e.message));
  assert.throws(() => saveCheckpoint(runDir, 1.5, base), CheckpointError);
  assert.throws(() => saveCheckpoint(runDir, 1, base, { keep: 0 }), /keep must be/);
  assert.throws(() => saveCheckpoint(runDir, 1, { ...base, state: { files: {} } }), /state key "files" is reserved/);
  assert.throws(() => saveCheckpoint(runDir, 1, { ...base, state: { metrics: { loss: NaN } } }), /state\.metrics\.loss is NaN/);
  assert.throws(() => saveCheckpoint(runDir, 1, { ...base, state: { rng: [1n] } }), /state\.rng\[0\] is a bigint/);
  assert.throws(() => saveCheckpoint(runDir, 1, { ...base, state: { when: new Date() } }), /state\.when is a Date object/);
  assert.throws(() => saveCheckpoint(runDir, 1, { ...base, state: { x: undefined } }), /state\.x is undefined/);
  assert.equal(existsSync(runDir), false);
});

test('a failed write leaves no temp dir and the previous checkpoint in place', () => {
  const runDir = freshRunDir();
  saveCheckpoint(runDir, 1, smallContent(1));
  const broken = { dtype: 'f32', shape: [4], data: new Float32Array(2) } as HostTensor; // data too short for its shape
  assert.throws(() => saveCheckpoint(runDir, 2, { ...smallContent(2), weights: new Map([['w', broken]]) }), /does not match/);
  assert.deepEqual(readdirSync(runDir).sort(), ['ckpt-00000001', 'latest']);
  assertMatches(loadLatestCheckpoint(runDir)!, smallContent(1));
});

test('rotation keeps the newest `keep` plus protected updates, deleting only after the new one is in place', () => {
  const runDir = freshRunDir();
  for (let u = 1; u <= 6; u++) saveCheckpoint(runDir, u * 100, smallContent(u * 100), { keep: 2, protect: [200] });
  assert.deepEqual(listCheckpoints(runDir).map((c) => c.update), [200, 500, 600]);
  assert.deepEqual(readdirSync(runDir).sort(), ['ckpt-00000200', 'ckpt-00000500', 'ckpt-00000600', 'latest']);
  for (const c of listCheckpoints(runDir)) assertMatches(loadCheckpoint(c.dir), smallContent(c.update));

  const other = freshRunDir();
  for (let u = 1; u <= 5; u++) saveCheckpoint(other, u, smallContent(u));
  assert.deepEqual(listCheckpoints(other).map((c) => c.update), [3, 4, 5], 'default keep is 3');
});

test('re-saving an update replaces it; saving an earlier update drops the abandoned newer ones', () => {
  const runDir = freshRunDir();
  for (let u = 1; u <= 4; u++) saveCheckpoint(runDir, u, smallContent(u));
  const replaced = { ...smallContent(4), state: { update: 4, note: 'second try' } };
  saveCheckpoint(runDir, 4, replaced);
  assertMatches(loadLatestCheckpoint(runDir)!, replaced);
  // Resumed from update 2 (say 3 and 4 were judged bad) and saved 3 again: 4 is from the abandoned timeline.
  saveCheckpoint(runDir, 3, smallContent(3));
  assert.deepEqual(listCheckpoints(runDir).map((c) => c.update), [2, 3]);
  assert.equal(loadLatestCheckpoint(runDir)?.update, 3);
  assert.deepEqual(readdirSync(runDir).filter((n) => n.startsWith('.')), []);
});

/** A run dir with checkpoints 1..3 (keep 3). */
function threeCheckpoints(): string {
  const runDir = freshRunDir();
  for (let u = 1; u <= 3; u++) saveCheckpoint(runDir, u, smallContent(u));
  return runDir;
}

function loadWithWarnings(runDir: string): { ck: Checkpoint | undefined; warnings: string[] } {
  const warnings: string[] = [];
  const ck = loadLatestCheckpoint(runDir, (w) => warnings.push(w));
  return { ck, warnings };
}

test('a flipped byte is caught by sha256: fallback to the previous checkpoint, loadCheckpoint names the file', () => {
  const runDir = threeCheckpoints();
  const file = join(runDir, 'ckpt-00000003', 'weights.safetensors');
  const bytes = readFileSync(file);
  bytes[bytes.length - 3] ^= 0x01; // inside the tensor data, so the file still parses
  writeFileSync(file, bytes);
  const { ck, warnings } = loadWithWarnings(runDir);
  assert.equal(ck?.update, 2);
  assertMatches(ck, smallContent(2));
  assert.ok(warnings.some((w) => w.includes(file) && /sha256/.test(w)), warnings.join('\n'));
  assert.throws(() => loadCheckpoint(join(runDir, 'ckpt-00000003')), (e) => e instanceof CheckpointError && e.message.startsWith(file) && /sha256 .* does not match/.test(e.message));
});

test('a truncated file is caught by its size', () => {
  const runDir = threeCheckpoints();
  const file = join(runDir, 'ckpt-00000003', 'optimizer.safetensors');
  truncateSync(file, 20);
  const { ck, warnings } = loadWithWarnings(runDir);
  assert.equal(ck?.update, 2);
  assert.ok(warnings.some((w) => w.includes(file) && /20 bytes but state\.json records \d+/.test(w)), warnings.join('\n'));
  assert.throws(() => loadCheckpoint(join(runDir, 'ckpt-00000003')), (e) => e instanceof CheckpointError && e.message.includes(file));
  assert.deepEqual(listCheckpoints(runDir).map((c) => c.update), [1, 2], 'listCheckpoints leaves out incomplete ones');
});

test('a missing latest falls back to the newest complete checkpoint, with a warning', () => {
  const runDir = threeCheckpoints();
  unlinkSync(join(runDir, 'latest'));
  const { ck, warnings } = loadWithWarnings(runDir);
  assert.equal(ck?.update, 3);
  assertMatches(ck, smallContent(3));
  assert.ok(warnings.some((w) => /latest is missing/.test(w)), warnings.join('\n'));
});

test('latest naming a missing dir, or holding garbage, falls back with a warning', () => {
  const runDir = threeCheckpoints();
  writeFileSync(join(runDir, 'latest'), 'ckpt-00000099\n');
  let r = loadWithWarnings(runDir);
  assert.equal(r.ck?.update, 3);
  assert.ok(r.warnings.some((w) => /names ckpt-00000099, which does not exist/.test(w)), r.warnings.join('\n'));

  writeFileSync(join(runDir, 'latest'), '\u0000\u0000garbage');
  r = loadWithWarnings(runDir);
  assert.equal(r.ck?.update, 3);
  assert.ok(r.warnings.some((w) => /latest is corrupt/.test(w)), r.warnings.join('\n'));
});

test('damaged state.json or a missing tensor file: CheckpointError naming the file, fallback further back', () => {
  const runDir = threeCheckpoints();
  const state3 = join(runDir, 'ckpt-00000003', 'state.json');
  writeFileSync(state3, '{"format": "visft-checkpoint", "vers');
  assert.throws(() => loadCheckpoint(join(runDir, 'ckpt-00000003')), (e) => e instanceof CheckpointError && e.message.startsWith(`${state3}: not valid JSON`));
  const weights2 = join(runDir, 'ckpt-00000002', 'weights.safetensors');
  unlinkSync(weights2);
  assert.throws(() => loadCheckpoint(join(runDir, 'ckpt-00000002')), (e) => e instanceof CheckpointError && e.message === `${weights2}: missing`);
  const { ck, warnings } = loadWithWarnings(runDir);
  assert.equal(ck?.update, 1);
  assertMatches(ck, smallContent(1));
  assert.ok(warnings.some((w) => w.includes(state3)) && warnings.some((w) => w.includes(weights2)), warnings.join('\n'));

  writeFileSync(join(runDir, 'ckpt-00000001', 'state.json'), JSON.stringify({ format: 'visft-checkpoint', version: 2, files: {} }));
  const none = loadWithWarnings(runDir);
  assert.equal(none.ck, undefined, 'nothing verifies');
  assert.ok(none.warnings.some((w) => /unsupported "version" 2/.test(w)), none.warnings.join('\n'));
});

test('no run dir, or an empty one: undefined without warnings', () => {
  const runDir = freshRunDir();
  assert.deepEqual(loadWithWarnings(runDir), { ck: undefined, warnings: [] });
  mkdirSync(runDir, { recursive: true });
  assert.deepEqual(loadWithWarnings(runDir), { ck: undefined, warnings: [] });
  assert.deepEqual(listCheckpoints(runDir), []);
});

test('a complete checkpoint newer than latest (save killed before latest was replaced) is reported and ignored', () => {
  const runDir = threeCheckpoints();
  writeFileSync(join(runDir, 'latest'), 'ckpt-00000002\n');
  const { ck, warnings } = loadWithWarnings(runDir);
  assert.equal(ck?.update, 2);
  assert.ok(warnings.some((w) => /ignoring ckpt-00000003/.test(w)), warnings.join('\n'));
});

test('leftovers of a dead writer are cleaned; those of a live process are left alone', () => {
  const runDir = threeCheckpoints();
  const deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
  const livePid = process.ppid;
  const dead = [`.tmp-ckpt-00000004-${deadPid}-00aa11`, `.del-ckpt-00000001-${deadPid}-bb22cc`];
  for (const d of dead) {
    mkdirSync(join(runDir, d));
    writeFileSync(join(runDir, d, 'weights.safetensors'), 'partial');
  }
  writeFileSync(join(runDir, `.latest.${deadPid}.0123456789ab.tmp`), 'ckpt-000');
  const live = `.tmp-ckpt-00000004-${livePid}-dd33ee`;
  mkdirSync(join(runDir, live));
  const { ck } = loadWithWarnings(runDir);
  assert.equal(ck?.update, 3);
  assert.deepEqual(readdirSync(runDir).filter((n) => n.startsWith('.')), [live]);
});

// ---- the kill test ----

const WRITER = fileURLToPath(new URL('./ckpt-writer.js', import.meta.url));
const KILLS = Number(process.env.VISFT_KILL_ROUNDS ?? 10);

const mulberry32 = makeRng;

/** Runs the writer until it has saved once, then SIGKILLs it `delayMs` later; returns the updates it reported. */
function runAndKill(runDir: string, delayMs: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, runDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (timer === undefined && out.includes('\n')) timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      if (timer === undefined || signal !== 'SIGKILL') {
        reject(new Error(`writer ended with code ${code} signal ${signal} before being killed:\n${err}`));
        return;
      }
      resolve([...out.matchAll(/^saved (\d+)$/gm)].map((m) => Number(m[1])));
    });
  });
}

test('SIGKILL at random moments always leaves a complete checkpoint matching what was written', { timeout: 300_000 }, async () => {
  const seed = Number(process.env.VISFT_KILL_SEED ?? Date.now() % 1e9);
  const random = mulberry32(seed);
  const runDir = freshRunDir();
  let lastReported = 0;
  const seenLeftovers = new Set<string>();
  for (let round = 0; round < KILLS; round++) {
    const delay = Math.floor(random() * 400);
    const ctx = `seed ${seed}, round ${round}, kill ${delay} ms after the first save`;
    const reported = await runAndKill(runDir, delay);
    assert.ok(reported.length > 0 && reported[0] === lastReported + 1, `${ctx}: writer resumed at ${reported[0]}, expected ${lastReported + 1}`);
    lastReported = reported[reported.length - 1];
    for (const n of readdirSync(runDir)) if (n.startsWith('.')) seenLeftovers.add(n.split(/[-.]/)[1]);

    const ck = loadLatestCheckpoint(runDir);
    assert.ok(ck, `${ctx}: no checkpoint`);
    // Saved and reported, or saved with `latest` written but killed before the report.
    assert.ok(ck.update === lastReported || ck.update === lastReported + 1, `${ctx}: loaded ${ck.update}, last reported ${lastReported}`);
    assertMatches(ck, checkpointContent(ck.update), ctx);
    assert.deepEqual(readdirSync(runDir).filter((n) => n.startsWith('.')), [], `${ctx}: leftovers not cleaned`);
    const all = listCheckpoints(runDir);
    assert.ok(all.length >= 1 && all.length <= KILL_TEST_KEEP + 1, `${ctx}: ${all.length} checkpoints kept`);
    for (const c of all) assertMatches(loadCheckpoint(c.dir), checkpointContent(c.update), `${ctx}: ${c.dir}`);
    lastReported = ck.update;
  }
  // Not an assertion on timing, just what the kills hit: printed so a run that never caught a writer mid-save shows.
  console.log(`kill test (seed ${seed}): ${lastReported} checkpoints written, kills left behind: ${[...seenLeftovers].sort().join(', ') || 'nothing'}`);
});
