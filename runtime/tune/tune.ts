// `visft tune`: measures which of the kernels' equivalent forms (runtime/tune/knobs.ts) are fastest on this
// adapter and writes a tuning profile (runtime/tune/profile.ts) that every later run on it applies. Greedy, group
// by group: each option is timed against the configuration adopted so far, in alternating bursts on the rows it
// changes (runtime/tune/pair-timing.ts), and out as soon as one row is slower beyond noise; the best is adopted when
// it is faster overall by a margin, slower on no row beyond noise, its outputs match the default program's, and a
// second timing confirms it.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { compileGpu, type GpuProgram } from '../../compiler/codegen/gpu.js';
import { canonicalJson } from '../../compiler/util/canonical-json.js';
import { unavailableReason } from '../bench/bench.js';
import { benchRows, type BenchSize } from '../bench/rows.js';
import { openDevice, type GpuDevice } from '../gpu/device.js';
import { errorMessage } from '../gpu/errors.js';
import { TUNE_GROUPS, TUNE_ROWS, type TuneGroup, type TuneOption } from './knobs.js';
import { programKey, relDiff, rowCase, timedVariant, timePair, withTuning, type TimedVariant, type TuneCase } from './pair-timing.js';
import { findProfile, profileAdapter, TUNING_FORMAT, TUNING_VERSION, type TuningEvidence, type TuningProfile, type Tuning } from './profile.js';

export interface TuneOptions {
  readonly size?: BenchSize;
  /** Bench row names to time on (default TUNE_ROWS, unless `cases` are given). */
  readonly rows?: readonly string[];
  /** Programs to time on besides (or, without `rows`, instead of) bench rows: a bundle's graph (pair-timing.ts bundleCase). */
  readonly cases?: readonly TuneCase[];
  /** Group names to try, in this order (default all that apply to the device, in TUNE_GROUPS' order). */
  readonly groups?: readonly string[];
  /**
   * Start from a profile's choices instead of the defaults: 'auto' (the one that applies to this adapter, if any)
   * or a file (for this adapter). Groups not tried keep its choices; a group tried can only improve on them.
   */
  readonly from?: string;
  /** Stop starting new timings after this long (what was adopted by then is kept). */
  readonly seconds?: number;
  readonly adapter?: string;
  readonly backend?: string;
  /** Adopt an option when its geometric-mean time ratio is at most this (default 0.97), and no row's above `worst`. */
  readonly threshold?: number;
  readonly worst?: number;
  /** Alternating-burst timing (pair-timing.ts timePair); tests shrink it. */
  readonly timing?: { readonly warmMs?: number; readonly bursts?: number; readonly passes?: number };
  readonly command: string;
  readonly progress?: (line: string) => void;
}

export interface TuneResult {
  readonly profile: TuningProfile;
  /** Groups and options not timed, and why (`f16 matmul tensor-core tiles: no tensor cores`). */
  readonly notes: readonly string[];
  /** The time limit cut the search. */
  readonly cut: boolean;
}

/** Outputs may differ from the default program's by this much (relative to each output's largest value): summation order. */
const MAX_REL_DIFF: Readonly<Record<'f32' | 'f16', number>> = { f32: 1e-4, f16: 2e-2 };

interface Config {
  readonly toggles: readonly string[];
  readonly tuning: Tuning;
}

const geomean = (xs: readonly number[]): number => Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);


function packageVersion(spec: string): string {
  try {
    const file = spec === 'visft' ? new URL('../../../package.json', import.meta.url) : createRequire(import.meta.url).resolve(`${spec}/package.json`);
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export async function runTune(o: TuneOptions): Promise<TuneResult> {
  const say = o.progress ?? (() => undefined);
  const threshold = o.threshold ?? 0.97;
  const worst = o.worst ?? 1.05;
  const deadline = performance.now() + (o.seconds ?? 600) * 1000;
  const base = await openDevice({ profiling: true, tuning: 'none', ...(o.adapter ? { adapter: o.adapter } : {}), ...(o.backend ? { backend: o.backend } : {}) });
  const devices = new Map<string, GpuDevice>([[base.toggles.join(','), base]]);
  const adapter = profileAdapter(base.info, base.backend);
  const notes: string[] = [];
  const evidence: TuningEvidence[] = [];
  const adopted: string[] = [];
  let cut = false;
  const baseline = new Map<string, TimedVariant>();
  const reference = new Map<string, Float32Array[]>();
  try {
    const start = o.from ? findProfile(adapter, o.from) : undefined;
    if (o.from === 'auto' && !start) notes.push('--from auto: no profile applies to this adapter; started from the defaults');
    // As `visft bench` chooses: model sizes on hardware, shrunk ones on a software adapter.
    const size = o.size ?? (base.target.isFallbackAdapter ? 'quick' : 'full');
    const cases: TuneCase[] = [...(o.cases ?? [])];
    if (!o.cases || o.rows) {
      const wanted = o.rows ?? TUNE_ROWS;
      for (const row of benchRows(size).filter((r) => wanted.includes(r.name))) {
        const why = unavailableReason(row, base.target);
        if (why) notes.push(`${row.name}: ${why}`);
        else cases.push(rowCase(row));
      }
    }
    const deviceFor = async (toggles: readonly string[]): Promise<GpuDevice> => {
      const all = [...new Set([...base.toggles, ...toggles])];
      const key = all.join(',');
      if (!devices.has(key)) devices.set(key, await openDevice({ profiling: true, tuning: 'none', toggles, adapter: o.adapter ?? (base.info.description || undefined), ...(o.backend ? { backend: o.backend } : {}) }));
      return devices.get(key)!;
    };
    // Each case's program under a configuration, compiled once: the change test and the timing both need it (a
    // model's graph takes seconds). Cleared after every group.
    const programs = new Map<string, GpuProgram>();
    const programOf = (c: TuneCase, tuning: Tuning): GpuProgram => {
      const key = `${c.name}\n${canonicalJson(tuning)}`;
      return programs.get(key) ?? programs.set(key, compileGpu(c.graph, withTuning(base.target, tuning))).get(key)!;
    };
    let current: Config = start ? { toggles: [...start.profile.toggles], tuning: start.profile.tuning } : { toggles: [], tuning: {} };
    // Every option is checked against the default program's outputs; from a profile, so is the profile's program.
    const defaultOutputs = async (c: TuneCase): Promise<void> => {
      const d = await timedVariant(base, c, {}, undefined, programOf(c, {}));
      try {
        reference.set(c.name, await d.timed.outputs(d.outIds));
      } finally {
        d.timed.destroy();
      }
    };
    const baselineFor = async (c: TuneCase): Promise<TimedVariant> => {
      let b = baseline.get(c.name);
      if (!b) {
        b = await timedVariant(await deviceFor(current.toggles), c, current.tuning, undefined, programOf(c, current.tuning));
        baseline.set(c.name, b);
        if (!reference.has(c.name)) reference.set(c.name, await b.timed.outputs(b.outIds));
      }
      return b;
    };
    const dropBaselines = (): void => {
      for (const b of baseline.values()) b.timed.destroy();
      baseline.clear();
    };
    // The default program's outputs, before anything is adopted: every option is checked against them.
    for (const c of [...cases]) {
      let why: string | undefined;
      try {
        if (start) await defaultOutputs(c);
        const b = await baselineFor(c);
        if (reference.get(c.name)!.some((out) => out.some((x) => !Number.isFinite(x)))) why = 'its default outputs are not all finite on this data';
        const diff = start ? relDiff(await b.timed.outputs(b.outIds), reference.get(c.name)!) : 0;
        if (diff > MAX_REL_DIFF[c.dtype]) why = `the starting profile's program differs from the default one by ${diff.toExponential(1)} (relative)`;
      } catch (e) {
        why = `its default program failed (${errorMessage(e).split('\n')[0]})`;
      }
      if (why) {
        notes.push(`${c.name}: left out: ${why}`);
        cases.splice(cases.indexOf(c), 1);
      }
    }
    if (!cases.length) notes.push('nothing to time: no row or bundle is left');

    /**
     * Ratios of `cfg` against the current configuration on `changed` rows, up to the first row slower than `worst`
     * (timeUntilLost); undefined when cut by the deadline.
     */
    const measure = async (cfg: Config, changed: readonly TuneCase[], group: string, option: string, record: boolean): Promise<number[] | undefined> => {
      const ratios = await timeUntilLost(changed, worst, async (c) => {
        if (performance.now() > deadline) return undefined;
        const v = await timedVariant(await deviceFor(cfg.toggles), c, cfg.tuning, undefined, programOf(c, cfg.tuning));
        try {
          const { ms, baseMs } = await timePair(v.timed, (await baselineFor(c)).timed, o.timing);
          const diff = relDiff(await v.timed.outputs(v.outIds), reference.get(c.name)!);
          if (diff > MAX_REL_DIFF[c.dtype]) throw new Error(`its outputs differ from the default program's by ${diff.toExponential(1)} (relative) on ${c.name}`);
          if (record) evidence.push({ group, option, row: c.name, ratio: ms / baseMs, relDiff: diff });
          say(`${group} | ${option} | ${c.name}: x${(ms / baseMs).toFixed(3)} (${ms.toFixed(4)} ms against ${baseMs.toFixed(4)} ms), diff ${diff.toExponential(1)}`);
          return ms / baseMs;
        } finally {
          v.timed.destroy();
        }
      });
      if (ratios && ratios.length < changed.length) say(`${group} | ${option}: out, slower than x${worst} on ${changed[ratios.length - 1].name} (${changed.length - ratios.length} more row(s) not timed)`);
      return ratios;
    };

    // In the order --groups names them (a short lease times the most wanted first), else the knobs' order.
    const groups = o.groups ? [...new Set(o.groups)].flatMap((name) => TUNE_GROUPS.filter((g) => g.name === name)) : TUNE_GROUPS;
    for (const group of groups) {
      programs.clear();
      if (cut) break;
      if (!group.applies(base.target)) {
        notes.push(`${group.name}: does not apply to this device`);
        continue;
      }
      const candidates: { option: TuneOption; cfg: Config; changed: TuneCase[]; ratios: readonly number[] }[] = [];
      // A bench row is timed by the groups that choose it; a bundle by every group (the change test decides).
      const mine = cases.filter((c) => !c.row || group.rows(c.row));
      for (const option of group.options) {
        const cfg = mergeConfig(current, option);
        let changed: TuneCase[];
        try {
          changed = mine.filter((c) => option.toggles?.length || programKey(programOf(c, cfg.tuning).schedule.kernels) !== programKey(programOf(c, current.tuning).schedule.kernels));
        } catch (e) {
          notes.push(`${group.name} | ${option.name}: does not compile here (${errorMessage(e).split('\n')[0]})`);
          continue;
        }
        if (!changed.length) {
          notes.push(`${group.name} | ${option.name}: changes no tuned row's program on this device`);
          continue;
        }
        let ratios: number[] | undefined;
        try {
          ratios = await measure(cfg, changed, group.name, option.name, true);
        } catch (e) {
          notes.push(`${group.name} | ${option.name}: rejected: ${errorMessage(e).split('\n')[0]}`);
          continue;
        }
        if (!ratios) {
          cut = true;
          break;
        }
        candidates.push({ option, cfg, changed, ratios });
      }
      const best = cut ? undefined : bestOption(candidates, threshold, worst);
      if (!best) continue;
      // A second timing against the same baseline: one lucky window adopts nothing.
      const again = await measure(best.cfg, best.changed, group.name, `${best.option.name} (confirming)`, false).catch(() => undefined);
      if (!again) {
        cut = performance.now() > deadline;
        continue;
      }
      if (!wins(again, threshold, worst)) {
        say(`${group.name}: ${best.option.name} not confirmed (x${geomean(again).toFixed(3)} the second time)`);
        continue;
      }
      current = best.cfg;
      adopted.push(`${group.name}: ${best.option.name} (x${best.score.toFixed(3)}, then x${geomean(again).toFixed(3)})`);
      say(`adopted ${group.name}: ${best.option.name}`);
      dropBaselines();
    }
    // From a profile: its adoptions stand except in the groups that adopted something new; its evidence is kept.
    const adoptedGroups = new Set(adopted.map((a) => a.slice(0, a.indexOf(': '))));
    const kept = start ? start.profile.adopted.filter((a) => !adoptedGroups.has(a.slice(0, a.indexOf(': ')))) : [];
    const profile: TuningProfile = {
      format: TUNING_FORMAT,
      version: TUNING_VERSION,
      adapter,
      created: new Date().toISOString(),
      command: o.command,
      visft: packageVersion('visft'),
      webgpu: packageVersion('webgpu'),
      toggles: [...current.toggles],
      tuning: current.tuning,
      evidence: [...(start?.profile.evidence ?? []), ...evidence],
      adopted: [...kept, ...adopted],
    };
    return { profile, notes, cut };
  } finally {
    for (const b of baseline.values()) b.timed.destroy();
    for (const d of devices.values()) await d.destroy();
  }
}

/**
 * Times `rows` in order, each giving its ratio (option over baseline; undefined: out of time, and so is the result),
 * and stops after the first ratio above `worst`: `wins` needs every row within it, so the rows left cannot change
 * the decision, and a lease's minutes go to options that can still win.
 */
export async function timeUntilLost<T>(rows: readonly T[], worst: number, time: (row: T) => Promise<number | undefined>): Promise<number[] | undefined> {
  const ratios: number[] = [];
  for (const row of rows) {
    const ratio = await time(row);
    if (ratio === undefined) return undefined;
    ratios.push(ratio);
    if (ratio > worst) break;
  }
  return ratios;
}

/** Whether time ratios (option over baseline, one per row) make a win: faster overall by the threshold, and slower on no row than `worst`. */
export function wins(ratios: readonly number[], threshold: number, worst: number): boolean {
  return ratios.length > 0 && geomean(ratios) <= threshold && Math.max(...ratios) <= worst;
}

/** Of a group's timed options, the one to confirm: the lowest geometric mean among those that win (undefined if none). */
export function bestOption<T extends { readonly ratios: readonly number[] }>(timed: readonly T[], threshold: number, worst: number): (T & { readonly score: number }) | undefined {
  return timed
    .filter((t) => wins(t.ratios, threshold, worst))
    .map((t) => ({ ...t, score: geomean(t.ratios) }))
    .sort((a, b) => a.score - b.score)[0];
}

/** The adopted configuration with one option on top: its tuning keys replace the adopted ones', its toggles add. */
export function mergeConfig(current: Config, option: TuneOption): Config {
  return {
    toggles: [...new Set([...current.toggles, ...(option.toggles ?? [])])],
    tuning: { ...current.tuning, ...(option.tuning ?? {}) },
  };
}

export type { TuneGroup };
