// Crash-safe checkpoint store.
//
//   <runDir>/ckpt-<update, 8 digits>/weights.safetensors   trainable params
//                                   /optimizer.safetensors optimizer moments
//                                   /state.json            caller's state + format, version, files {name: {bytes, sha256}}
//   <runDir>/latest                                         "ckpt-<update>\n": the newest complete checkpoint
//
// A checkpoint is written into a temp dir, fsynced, renamed into place in one step, and only then named by `latest`,
// so a killed writer leaves either the old or the new checkpoint, never a half-written one under a ckpt-* name.
// Loading checks every file's size and sha256 against state.json, so silent corruption is caught too.

import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { writeFileAtomic } from '../weights/io.js';
import { readSafetensors, writeSafetensors } from '../weights/safetensors.js';
import type { HostTensor } from '../weights/tensor.js';

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

export interface Checkpoint {
  dir: string;
  update: number;
  weights: Map<string, HostTensor>;
  optimizer: Map<string, HostTensor>;
  state: Record<string, unknown>;
}

export interface CheckpointContent {
  weights: Map<string, HostTensor>;
  optimizer: Map<string, HostTensor>;
  state: Record<string, unknown>;
}

export const CHECKPOINT_FORMAT = 'visft-checkpoint';
export const CHECKPOINT_VERSION = 1;
const WEIGHTS_FILE = 'weights.safetensors';
const OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_FILE = 'state.json';
const LATEST_FILE = 'latest';
/** Keys state.json uses for the store itself; callers may not use them. */
const RESERVED_KEYS = ['format', 'version', 'files'] as const;
const CKPT_NAME = /^ckpt-(\d{8,})$/;
/** Temp dirs of a writer (being filled / being deleted) and writeFileAtomic's temp `latest`; all carry the pid. */
const LEFTOVER_NAME = /^(?:\.tmp-ckpt-\d+-(\d+)-[0-9a-f]+|\.del-ckpt-\d+-(\d+)-[0-9a-f]+|\.latest\.(\d+)\.[0-9a-f]+\.tmp)$/;

export function checkpointDirName(update: number): string {
  return `ckpt-${String(update).padStart(8, '0')}`;
}

/** Writes ckpt-<update> atomically, points `latest` at it, then rotates old checkpoints; returns its path. */
export function saveCheckpoint(
  runDir: string,
  update: number,
  content: CheckpointContent,
  opts: { keep?: number; protect?: readonly number[] } = {},
): string {
  if (!Number.isSafeInteger(update) || update < 0) throw new CheckpointError(`${runDir}: checkpoint update must be a non-negative integer, got ${update}`);
  const keep = opts.keep ?? 3;
  if (!Number.isSafeInteger(keep) || keep < 1) throw new CheckpointError(`${runDir}: keep must be an integer >= 1, got ${keep}`);
  for (const key of RESERVED_KEYS) {
    if (Object.prototype.hasOwnProperty.call(content.state, key)) throw new CheckpointError(`${runDir}: state key "${key}" is reserved by the checkpoint store`);
  }
  checkJsonValue(content.state, 'state', runDir);

  const name = checkpointDirName(update);
  mkdirSync(runDir, { recursive: true });
  const tmp = join(runDir, `.tmp-${name}-${process.pid}-${randomBytes(6).toString('hex')}`);
  mkdirSync(tmp);
  try {
    const files: Record<string, { bytes: number; sha256: string }> = {};
    for (const [file, tensors] of [[WEIGHTS_FILE, content.weights], [OPTIMIZER_FILE, content.optimizer]] as const) {
      const path = join(tmp, file);
      writeSafetensors(path, tensors);
      files[file] = { bytes: statSync(path).size, sha256: sha256File(path) };
    }
    const stateJson = { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, ...content.state, files };
    const text = new TextEncoder().encode(JSON.stringify(stateJson, null, 1) + '\n');
    writeFileAtomic(join(tmp, STATE_FILE), (sink) => sink.write(text));
    fsyncDir(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }

  const final = join(runDir, name);
  if (existsSync(final)) {
    // Re-saving an update (after resuming from an earlier checkpoint): move the old one aside first, since a
    // directory cannot be renamed over a non-empty one.
    const aside = join(runDir, `.del-${name}-${process.pid}-${randomBytes(6).toString('hex')}`);
    renameSync(final, aside);
    renameSync(tmp, final);
    rmSync(aside, { recursive: true, force: true });
  } else {
    renameSync(tmp, final);
  }
  fsyncDir(runDir);
  const latest = new TextEncoder().encode(`${name}\n`);
  writeFileAtomic(join(runDir, LATEST_FILE), (sink) => sink.write(latest));
  fsyncDir(runDir);
  rotate(runDir, update, keep, new Set(opts.protect ?? []));
  return final;
}

/**
 * Keeps the newest `keep` complete checkpoints up to `update` plus the protected ones. Checkpoints newer than the one
 * just saved belong to an abandoned timeline (the run resumed from an earlier one) and go too. Removal renames a dir
 * to a temp name first so that a kill never leaves a half-deleted ckpt-* dir; failures are left for the next load
 * to clean, since the new checkpoint is already safe.
 */
function rotate(runDir: string, update: number, keep: number, protect: ReadonlySet<number>): void {
  const all = scanCheckpointDirs(runDir);
  const kept = new Set<number>([update, ...protect]);
  const older = all.filter((c) => c.update <= update && isComplete(c.dir)).sort((a, b) => b.update - a.update);
  for (const c of older.slice(0, keep)) kept.add(c.update);
  for (const c of all) {
    if (kept.has(c.update)) continue;
    const aside = join(runDir, `.del-${basename(c.dir)}-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      renameSync(c.dir, aside);
      rmSync(aside, { recursive: true, force: true });
    } catch {
      // cleaned by the next loadLatestCheckpoint
    }
  }
}

/**
 * The checkpoint `latest` names, verified; when `latest` is missing, unreadable, or names a dir that is gone or fails
 * verification, the newest checkpoint that verifies (reported through `warn`). Undefined when none verifies.
 */
export function loadLatestCheckpoint(runDir: string, warn: (msg: string) => void = () => {}): Checkpoint | undefined {
  if (!existsSync(runDir)) return undefined;
  cleanLeftovers(runDir);
  const all = scanCheckpointDirs(runDir).sort((a, b) => b.update - a.update);
  const latestFile = join(runDir, LATEST_FILE);
  let named: string | undefined;
  if (!existsSync(latestFile)) {
    if (all.length > 0) warn(`${latestFile} is missing; looking for the newest complete checkpoint`);
  } else {
    const text = readFileSync(latestFile, 'utf8');
    const m = /^(ckpt-\d{8,})\n?$/.exec(text);
    if (!m) warn(`${latestFile} is corrupt (${JSON.stringify(text.slice(0, 40))}); looking for the newest complete checkpoint`);
    else named = m[1];
  }
  if (named !== undefined) {
    const dir = join(runDir, named);
    if (!existsSync(dir)) {
      warn(`${latestFile} names ${named}, which does not exist; looking for the newest complete checkpoint`);
    } else {
      try {
        const ck = loadCheckpoint(dir);
        const newer = all.filter((c) => c.update > ck.update).map((c) => basename(c.dir));
        if (newer.length > 0) warn(`ignoring ${newer.join(', ')} in ${runDir}: newer than ${named}, which ${latestFile} names (a save was interrupted before it finished)`);
        return ck;
      } catch (e) {
        if (!(e instanceof CheckpointError)) throw e;
        warn(`${e.message}; looking for the newest complete checkpoint`);
      }
    }
  }
  for (const c of all) {
    if (basename(c.dir) === named) continue;
    try {
      const ck = loadCheckpoint(c.dir);
      warn(`resuming from ${c.dir}`);
      return ck;
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      warn(`skipping ${e.message}`);
    }
  }
  return undefined;
}

/** Loads and verifies one checkpoint dir; a CheckpointError names the file that is missing or does not match. */
export function loadCheckpoint(dir: string): Checkpoint {
  const m = CKPT_NAME.exec(basename(dir));
  if (!m) throw new CheckpointError(`${dir}: not a checkpoint dir (expected a name like ckpt-00001000)`);
  const update = Number(m[1]);
  const { state, files } = readStateJson(dir);
  if (typeof state.update === 'number' && state.update !== update) {
    throw new CheckpointError(`${join(dir, STATE_FILE)}: records update ${state.update} but the dir is named for update ${update}`);
  }
  const tensors: Map<string, HostTensor>[] = [];
  for (const file of [WEIGHTS_FILE, OPTIMIZER_FILE]) {
    const path = join(dir, file);
    const want = files[file];
    if (!existsSync(path)) throw new CheckpointError(`${path}: missing`);
    const size = statSync(path).size;
    if (size !== want.bytes) throw new CheckpointError(`${path}: ${size} bytes but ${STATE_FILE} records ${want.bytes} (truncated or overwritten?)`);
    const sha = sha256File(path);
    if (sha !== want.sha256) throw new CheckpointError(`${path}: sha256 ${sha} does not match ${want.sha256} recorded in ${STATE_FILE} (corrupt)`);
    try {
      tensors.push(readSafetensors(path).tensors);
    } catch (e) {
      throw new CheckpointError((e as Error).message);
    }
  }
  return { dir, update, weights: tensors[0], optimizer: tensors[1], state };
}

/** The complete checkpoints of a run (state.json valid, files present with the recorded sizes), ascending. */
export function listCheckpoints(runDir: string): { dir: string; update: number }[] {
  return scanCheckpointDirs(runDir)
    .filter((c) => isComplete(c.dir))
    .sort((a, b) => a.update - b.update);
}

function scanCheckpointDirs(runDir: string): { dir: string; update: number }[] {
  if (!existsSync(runDir)) return [];
  const out: { dir: string; update: number }[] = [];
  for (const entry of readdirSync(runDir, { withFileTypes: true })) {
    const m = CKPT_NAME.exec(entry.name);
    if (m && entry.isDirectory()) out.push({ dir: join(runDir, entry.name), update: Number(m[1]) });
  }
  return out;
}

/** Cheap completeness check (no hashing): what a finished writer leaves. */
function isComplete(dir: string): boolean {
  try {
    const { files } = readStateJson(dir);
    return Object.entries(files).every(([file, { bytes }]) => statSync(join(dir, file)).size === bytes);
  } catch {
    return false;
  }
}

type FileRecord = { bytes: number; sha256: string };

function readStateJson(dir: string): { state: Record<string, unknown>; files: Record<string, FileRecord> } {
  const path = join(dir, STATE_FILE);
  if (!existsSync(path)) throw new CheckpointError(`${path}: missing (incomplete checkpoint)`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new CheckpointError(`${path}: not a JSON object`);
  const { format, version, files, ...state } = json as Record<string, unknown>;
  if (format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${path}: "format" is ${JSON.stringify(format)}, expected "${CHECKPOINT_FORMAT}"`);
  if (version !== CHECKPOINT_VERSION) throw new CheckpointError(`${path}: unsupported "version" ${JSON.stringify(version)} (this visft reads ${CHECKPOINT_VERSION})`);
  if (typeof files !== 'object' || files === null) throw new CheckpointError(`${path}: "files" is missing`);
  const records: Record<string, FileRecord> = {};
  for (const file of [WEIGHTS_FILE, OPTIMIZER_FILE]) {
    const r = (files as Record<string, unknown>)[file] as Record<string, unknown> | undefined;
    if (!r || !Number.isSafeInteger(r.bytes) || typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256)) {
      throw new CheckpointError(`${path}: "files"."${file}" needs "bytes" (an integer) and "sha256" (64 hex digits)`);
    }
    records[file] = { bytes: r.bytes as number, sha256: r.sha256 };
  }
  return { state, files: records };
}

/** Rejects what JSON would not give back unchanged (undefined, NaN, bigint, class instances, ...), naming the key. */
function checkJsonValue(v: unknown, where: string, runDir: string): void {
  const fail = (what: string): never => {
    throw new CheckpointError(`${runDir}: ${where} is ${what}, which state.json cannot store (use null, booleans, finite numbers, strings, arrays, plain objects)`);
  };
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) fail(String(v));
    return;
  }
  if (Array.isArray(v)) {
    v.forEach((x, i) => checkJsonValue(x, `${where}[${i}]`, runDir));
    return;
  }
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) fail(`a ${(v as object).constructor?.name ?? 'non-plain'} object`);
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) checkJsonValue(x, `${where}.${k}`, runDir);
    return;
  }
  fail(v === undefined ? 'undefined' : `a ${typeof v}`);
}

/** Removes temp dirs/files left by writers that are no longer running (a killed trainer). */
function cleanLeftovers(runDir: string): void {
  for (const name of readdirSync(runDir)) {
    const m = LEFTOVER_NAME.exec(name);
    if (!m) continue;
    const pid = Number(m[1] ?? m[2] ?? m[3]);
    if (pid !== process.pid && processAlive(pid)) continue;
    rmSync(join(runDir, name), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sha256File(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 22);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** Makes renames inside `dir` durable (Linux needs the directory itself fsynced); Windows cannot open directories. */
function fsyncDir(dir: string): void {
  if (process.platform === 'win32') return;
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
