// Tuning profiles: what `visft tune` measured on one adapter, kept as JSON so that every later run on that adapter
// compiles its kernels with the winning choices (Target.tuning) and opens the device with the winning Dawn
// toggles. A profile names the adapter it was measured on and applies to that adapter only. They are looked up
// in the user's own folder (written by `visft tune`), then in the profiles shipped with visft (measured on lent
// machines); VISFT_TUNING=FILE picks one, VISFT_TUNING=none turns them off (the test suite runs so).
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Target } from '../../compiler/codegen/types.js';
import { canonicalJson } from '../../compiler/util/canonical-json.js';
import { writeFileAtomic } from '../weights/io.js';
import { validateTuning } from './tuning-schema.js';

export const TUNING_FORMAT = 'visft-tuning';
export const TUNING_VERSION = 1;

export type Tuning = NonNullable<Target['tuning']>;

/**
 * Dawn toggles a profile may turn on. Each was checked against the whole test suite and the oracle fuzz on lavapipe
 * with our kernels (they bound their own indices and write workgroup tiles before reading them): docs/perf.md.
 */
export const PROFILE_TOGGLES = ['disable_robustness', 'disable_workgroup_init', 'use_vulkan_memory_model'] as const;

/** The adapter a profile was measured on (runtime/gpu/device.ts AdapterDescription's identity fields, and the backend). */
export interface ProfileAdapter {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly backend: string;
}

/** One measured comparison: an option against the configuration adopted before it, on one bench row. */
export interface TuningEvidence {
  readonly group: string;
  readonly option: string;
  readonly row: string;
  /** The option's median time over the baseline's, timed in alternating bursts (< 1: the option is faster). */
  readonly ratio: number;
  /** The largest difference of its outputs from the baseline's, relative to the baseline's largest magnitude. */
  readonly relDiff: number;
}

export interface TuningProfile {
  readonly format: typeof TUNING_FORMAT;
  readonly version: number;
  readonly adapter: ProfileAdapter;
  /** When and how it was measured: an ISO date, `visft tune ...`, visft's and the webgpu package's versions. */
  readonly created: string;
  readonly command: string;
  readonly visft: string;
  readonly webgpu: string;
  /** Dawn toggles the device opens with, on top of visft's. */
  readonly toggles: readonly string[];
  readonly tuning: Tuning;
  /** Why: every comparison made, adopted or not. */
  readonly evidence: readonly TuningEvidence[];
  /** Options adopted, in order, as `group: option`. */
  readonly adopted: readonly string[];
}

/** A profile that applies, and the file it came from. */
export interface LoadedProfile {
  readonly file: string;
  readonly profile: TuningProfile;
}

/** What reports say of an applied profile: its file, when it was measured, what it adopted. */
export const profileSummary = (l: LoadedProfile): { readonly file: string; readonly created: string; readonly adopted: readonly string[] } => ({
  file: l.file,
  created: l.profile.created,
  adopted: l.profile.adopted,
});

/** The identity a profile names, of an opened adapter (its description, runtime/gpu/device.ts) and backend. */
export const profileAdapter = (info: Omit<ProfileAdapter, 'backend'>, backend: string | undefined): ProfileAdapter => ({
  vendor: info.vendor,
  architecture: info.architecture,
  device: info.device,
  description: info.description,
  backend: backend ?? '',
});

/** One line for logs and reports: `FILE (measured 2026-11-28; f32 flash attention forward: ...)`. */
export function describeProfile(p: { readonly file: string; readonly created: string; readonly adopted: readonly string[] }): string {
  return `${p.file} (measured ${p.created.slice(0, 10)}; ${p.adopted.length ? p.adopted.join('; ') : 'the defaults won'})`;
}

export class TuningProfileError extends Error {
  override name = 'TuningProfileError';
}

/** The user's folder: $VISFT_TUNING_DIR, else $XDG_CACHE_HOME/visft/tuning, else ~/.cache/visft/tuning. */
export function userProfileDir(): string {
  if (process.env.VISFT_TUNING_DIR) return process.env.VISFT_TUNING_DIR;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'visft', 'tuning');
}

/** Profiles shipped with visft, measured on lent machines (docs/perf.md says which and when). */
export const SHIPPED_PROFILE_DIR = fileURLToPath(new URL('../../../runtime/tune/profiles/', import.meta.url));

/** Where openDevice looks, in order: the user's folder first (their own measurements win), then the shipped ones. */
export const profileDirs = (): string[] => [userProfileDir(), SHIPPED_PROFILE_DIR];

/**
 * A file name for an adapter's profile: its device and driver description (two GPUs on one driver share the
 * description), then the backend: `nvidia-h200-nvidia-580-159-04-580-159-4-0-vulkan.json`.
 */
export function profileFileName(a: ProfileAdapter): string {
  const names = a.device && a.description && !a.description.toLowerCase().includes(a.device.toLowerCase()) ? `${a.device}-${a.description}` : a.description || a.device || a.vendor || 'adapter';
  const slug = `${names}-${a.backend || 'default'}`
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return `${slug.slice(0, 80) || 'adapter'}.json`;
}

export const sameAdapter = (a: ProfileAdapter, b: ProfileAdapter): boolean =>
  a.vendor === b.vendor && a.architecture === b.architecture && a.device === b.device && a.description === b.description && a.backend === b.backend;

const describe = (a: ProfileAdapter): string => `${a.description || a.device || a.vendor || 'an unnamed adapter'} (${a.backend || 'default backend'})`;

/** Parses and checks a profile's text; errors name the file and the field. */
export function parseProfile(text: string, file: string): TuningProfile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new TuningProfileError(`${file}: not JSON (${(e as Error).message})`);
  }
  const bad = (what: string): never => {
    throw new TuningProfileError(`${file}: ${what}`);
  };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) bad('not a tuning profile (expected a JSON object)');
  const p = raw as Record<string, unknown>;
  if (p.format !== TUNING_FORMAT) bad(`not a tuning profile (format is ${JSON.stringify(p.format)}, expected "${TUNING_FORMAT}")`);
  if (p.version !== TUNING_VERSION) bad(`tuning profile version ${JSON.stringify(p.version)}; this visft reads version ${TUNING_VERSION}: run \`visft tune\` again`);
  const a = p.adapter as Record<string, unknown> | undefined;
  if (!a || typeof a !== 'object') bad('adapter: missing');
  for (const k of ['vendor', 'architecture', 'device', 'description', 'backend'] as const) if (typeof a![k] !== 'string') bad(`adapter.${k}: expected a string`);
  for (const k of ['created', 'command', 'visft', 'webgpu'] as const) if (typeof p[k] !== 'string') bad(`${k}: expected a string`);
  if (!Array.isArray(p.toggles) || p.toggles.some((t) => typeof t !== 'string')) bad('toggles: expected a list of strings');
  for (const t of p.toggles as string[]) {
    if (!(PROFILE_TOGGLES as readonly string[]).includes(t)) bad(`toggles: '${t}' is not one a profile may turn on (${PROFILE_TOGGLES.join(', ')})`);
  }
  const problem = validateTuning(p.tuning);
  if (problem) bad(`tuning${problem}`);
  if (!Array.isArray(p.evidence)) bad('evidence: expected a list');
  for (const [i, e] of (p.evidence as Record<string, unknown>[]).entries()) {
    if (!e || typeof e !== 'object' || typeof e.group !== 'string' || typeof e.option !== 'string' || typeof e.row !== 'string' || typeof e.ratio !== 'number' || typeof e.relDiff !== 'number') {
      bad(`evidence[${i}]: expected { group, option, row, ratio, relDiff }`);
    }
  }
  if (!Array.isArray(p.adopted) || p.adopted.some((t) => typeof t !== 'string')) bad('adopted: expected a list of strings');
  return p as unknown as TuningProfile;
}

export function readProfile(file: string): TuningProfile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new TuningProfileError(`cannot read the tuning profile ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseProfile(text, file);
}

/** Writes atomically (an earlier profile stays whole if this fails), creating the folder. */
export function writeProfile(file: string, profile: TuningProfile): void {
  mkdirSync(dirname(file), { recursive: true });
  const bytes = new TextEncoder().encode(canonicalJson(profile, 1) + '\n');
  writeFileAtomic(file, (sink) => sink.write(bytes));
}

/**
 * The profile for `adapter`: `choice` is 'none' (none), a file (it must be for this adapter), or 'auto' (the
 * first in profileDirs() whose adapter is this one; undefined when none is). Default: $VISFT_TUNING, else 'auto'.
 * A malformed file in a searched folder is an error (it would otherwise silently change speed), naming the file.
 */
export function findProfile(adapter: ProfileAdapter, choice: string = process.env.VISFT_TUNING || 'auto', dirs: readonly string[] = profileDirs()): LoadedProfile | undefined {
  if (choice === 'none') return undefined;
  if (choice !== 'auto') {
    const profile = readProfile(choice);
    if (!sameAdapter(profile.adapter, adapter)) {
      throw new TuningProfileError(`${choice} was measured on ${describe(profile.adapter)}; this adapter is ${describe(adapter)} (run \`visft tune\` here, or VISFT_TUNING=none)`);
    }
    return { file: choice, profile };
  }
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
      const file = join(dir, name);
      let profile: TuningProfile;
      try {
        profile = readProfile(file);
      } catch (e) {
        throw new TuningProfileError(`${(e as Error).message} (move it away, or set VISFT_TUNING=none to run without tuning profiles)`);
      }
      if (sameAdapter(profile.adapter, adapter)) return { file, profile };
    }
  }
  return undefined;
}
