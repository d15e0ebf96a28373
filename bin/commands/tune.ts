// `visft tune [BUNDLE...] [--rows NAME,...] [--groups NAME,...] [--seconds N] [--from auto|FILE] [--out FILE] [--json] [--list]`: times the kernels'
// equivalent forms on this adapter (runtime/tune) and writes the tuning profile that later runs on it apply.
// Exit 0 when a profile was written (also when the defaults won: the profile then records that), 1 on GPU errors,
// 2 for usage errors.
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { bundleCase, type TuneCase } from '../../runtime/tune/pair-timing.js';
import { BENCH_ROW_NAMES, benchRows } from '../../runtime/bench/rows.js';
import { TUNE_GROUPS, TUNE_ROWS } from '../../runtime/tune/knobs.js';
import { profileFileName, userProfileDir, writeProfile } from '../../runtime/tune/profile.js';
import { readBundleArg } from './bundle-args.js';
import { fileErrorLine, gpuErrorExit, UsageError } from './errors.js';

export interface TuneCliOptions {
  json?: boolean;
  list?: boolean;
  rows?: string;
  groups?: string;
  seconds?: string;
  size?: string;
  out?: string;
  from?: string;
  adapter?: string;
}

const list = (s: string | undefined): string[] | undefined => (s === undefined ? undefined : s.split(',').map((x) => x.trim()).filter(Boolean));

/** The groups and their options, in the order tried, and the default rows (`visft tune --list`). */
function listGroups(json: boolean | undefined): number {
  if (json) {
    process.stdout.write(JSON.stringify({ groups: TUNE_GROUPS.map((g) => ({ name: g.name, options: g.options, rows: TUNE_ROWS.filter((r) => g.rows(rowSpec(r))) })), rows: TUNE_ROWS }, null, 2) + '\n');
    return 0;
  }
  const w = (s: string) => process.stdout.write(s + '\n');
  for (const g of TUNE_GROUPS) {
    w(`${g.name} (on ${TUNE_ROWS.filter((r) => g.rows(rowSpec(r))).join(', ')})`);
    for (const o of g.options) w(`  ${o.name}: ${[o.toggles?.length ? `dawn toggles ${o.toggles.join(', ')}` : '', o.tuning ? `tuning ${JSON.stringify(o.tuning)}` : ''].filter(Boolean).join('; ')}`);
  }
  return 0;
}

const rowSpec = (name: string) => benchRows('tiny').find((r) => r.name === name)!;

/** The bundles' graphs with seeded data; unreadable or malformed files are usage errors naming the file. */
function bundleCases(files: readonly string[]): TuneCase[] {
  return files.map((file) => bundleCase(file, readBundleArg(file).graph));
}

export async function runTuneCommand(bundles: readonly string[], opts: TuneCliOptions): Promise<number> {
  if (opts.list) return listGroups(opts.json);
  const cases = bundleCases(bundles);
  // Names or prefixes, as `visft bench --rows` takes them.
  const asked = list(opts.rows);
  const unknownRows = asked?.filter((r) => !BENCH_ROW_NAMES.some((n) => n.startsWith(r))) ?? [];
  if (unknownRows.length) throw new UsageError(`--rows: no bench row matches ${unknownRows.map((r) => `'${r}'`).join(', ')}; rows are: ${BENCH_ROW_NAMES.join(', ')}`);
  const rows = asked && BENCH_ROW_NAMES.filter((n) => asked.some((r) => n.startsWith(r)));
  const groups = list(opts.groups);
  const names = TUNE_GROUPS.map((g) => g.name);
  const unknownGroups = groups?.filter((g) => !names.includes(g)) ?? [];
  if (unknownGroups.length) throw new UsageError(`--groups: no group is called ${unknownGroups.map((g) => `'${g}'`).join(', ')}; groups are: ${names.map((n) => `'${n}'`).join(', ')}`);
  const seconds = opts.seconds === undefined ? undefined : Number(opts.seconds);
  if (seconds !== undefined && !(Number.isFinite(seconds) && seconds > 0 && seconds <= 86_400)) throw new UsageError(`--seconds takes a number of seconds from 1 to 86400, not '${opts.seconds}'`);
  if (opts.size !== undefined && !['full', 'quick', 'tiny'].includes(opts.size)) throw new UsageError(`--size takes full, quick or tiny, not '${opts.size}'`);

  const command = ['visft tune', ...bundles, opts.rows && `--rows ${opts.rows}`, opts.groups && `--groups '${opts.groups}'`, opts.seconds && `--seconds ${opts.seconds}`, opts.size && `--size ${opts.size}`, opts.from && `--from ${opts.from}`, opts.adapter && `--adapter '${opts.adapter}'`].filter(Boolean).join(' ');
  const { runTune } = await import('../../runtime/tune/tune.js');
  let result;
  try {
    result = await runTune({
      command,
      ...(rows ? { rows } : {}),
      ...(cases.length ? { cases } : {}),
      ...(groups ? { groups } : {}),
      ...(seconds !== undefined ? { seconds } : {}),
      ...(opts.size ? { size: opts.size as 'full' | 'quick' | 'tiny' } : {}),
      ...(opts.from ? { from: opts.from } : {}),
      ...(opts.adapter ? { adapter: opts.adapter } : {}),
      progress: (line) => process.stderr.write(`tune: ${line}\n`),
    });
  } catch (e) {
    return gpuErrorExit(e);
  }
  const { profile, notes, cut } = result;
  const out = opts.out ?? join(userProfileDir(), profileFileName(profile.adapter));
  // A profile already there (an earlier measurement) is kept beside it, under a name the lookup skips.
  const kept = existsSync(out) ? `${out}.bak` : undefined;
  try {
    if (kept) copyFileSync(out, kept);
    writeProfile(out, profile);
  } catch (e) {
    throw new UsageError(fileErrorLine(e) ?? `cannot write ${out}: ${(e as Error).message}`);
  }
  if (opts.json) {
    process.stdout.write(JSON.stringify({ file: out, ...(kept ? { previous: kept } : {}), cut, notes, profile }, null, 2) + '\n');
    return 0;
  }
  const w = (s: string) => process.stdout.write(s + '\n');
  w(`tuning profile: ${out}${kept ? ` (the one it replaces is kept as ${kept})` : ''}`);
  w(`adapter: ${profile.adapter.description || profile.adapter.device} (${profile.adapter.backend || 'default backend'})`);
  if (!profile.adopted.length) w('adopted: nothing (the defaults won, or nothing won by more than the noise)');
  else w(['adopted:', ...profile.adopted.map((a) => `  ${a}`)].join('\n'));
  if (profile.toggles.length) w(`dawn toggles: ${profile.toggles.join(', ')}`);
  if (cut) w('the time limit (--seconds) cut the search: the groups after it were not tried');
  for (const n of notes) w(`note: ${n}`);
  w('later runs on this adapter apply it (VISFT_TUNING=none or --tuning none to run without)');
  return 0;
}
