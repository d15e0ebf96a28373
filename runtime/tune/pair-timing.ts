// Timing one configuration of a bench row against another on the same GPU: each compiled with its own tuning
// (Target.tuning) on a device opened with its own Dawn toggles, timed in alternating bursts so that both see the
// same clock. A GPU's clock moves under a sweep (an H200's between 345 and 1980 MHz, 2026-11-27: the gaps while
// the next variant compiles let it fall), so a time is only comparable with one taken in the same window, and
// the ratio is what ranks. Shared by `visft tune` and scripts/tune-sgmat.mjs.
import { compileGpu } from '../../compiler/codegen/gpu.js';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { hasTimestamps, TimedProgram } from '../bench/ours.js';
import type { RowSpec } from '../bench/row-types.js';
import { rowGraph, rowInputData } from '../bench/rows.js';
import type { GpuDevice } from '../gpu/device.js';
import { fromF16, toF16 } from '../gpu/half.js';

/** A row's program compiled and uploaded, ready to time. */
export interface TimedVariant {
  readonly timed: TimedProgram;
  /** Kernel names in schedule order. */
  readonly kernels: readonly string[];
  readonly outIds: readonly number[];
}

/**
 * The row's program for `device` under `tuning` (replacing the device's own), its inputs uploaded (rounded to f16
 * and back, so f32 and f16 programs see the same values). `edit` rewrites kernels' WGSL (ablations).
 */
export async function timedVariant(device: GpuDevice, row: RowSpec, tuning: Target['tuning'] | undefined, edit?: (k: Kernel) => Kernel): Promise<TimedVariant> {
  const data = rowInputData(row).map((d) => fromF16(toF16(d)));
  const { graph, inputs, outputs } = rowGraph(row);
  const { tuning: _own, ...target } = device.target;
  let program = compileGpu(graph, { ...target, ...(tuning && Object.keys(tuning).length ? { tuning } : {}) });
  const kernels = program.schedule.kernels.map((k) => k.name);
  if (edit) program = { ...program, schedule: { ...program.schedule, kernels: program.schedule.kernels.map(edit) } };
  const outIds = outputs.map((name) => {
    const id = program.schedule.outputs.get(name);
    if (id === undefined) throw new Error(`row ${row.name}: the program has no output '${name}'`);
    return id;
  });
  const timed = await TimedProgram.create(device, program, new Map(inputs.map((id, i) => [id, data[i]])));
  return { timed, kernels, outIds };
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export interface PairTiming {
  /** Medians (ms per pass) of the variant and the baseline. */
  readonly ms: number;
  readonly baseMs: number;
}

/**
 * `variant` against `baseline`: `warmMs` of alternating warm-up, then `bursts` alternating bursts of `passes`
 * passes each (GPU timestamps where the device has them, else the wall clock per burst).
 */
export async function timePair(variant: TimedProgram, baseline: TimedProgram, o: { warmMs?: number; bursts?: number; passes?: number } = {}): Promise<PairTiming> {
  const { warmMs = 300, bursts = 8, passes = 4 } = o;
  const t0 = performance.now();
  while (performance.now() - t0 < warmMs) {
    await variant.warm(passes);
    await baseline.warm(passes);
  }
  const stamps = hasTimestamps(variant.device) && hasTimestamps(baseline.device);
  const burst = async (p: TimedProgram): Promise<number[]> => (stamps ? p.timestamped(passes) : [(await p.wall(passes)) / passes]);
  const ours: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < bursts; i++) {
    ours.push(...(await burst(variant)));
    base.push(...(await burst(baseline)));
  }
  return { ms: median(ours), baseMs: median(base) };
}

/**
 * The largest |out − reference| of any output relative to that output's largest magnitude (NaN: Infinity): each
 * output on its own scale, so a wrong small gradient is not hidden by a large one beside it.
 */
export function relDiff(out: readonly Float32Array[], reference: readonly Float32Array[]): number {
  let rel = 0;
  for (const [k, o] of out.entries()) {
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < o.length; i++) {
      const d = Math.abs(o[i] - reference[k][i]);
      worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
      scale = Math.max(scale, Math.abs(reference[k][i]));
    }
    rel = Math.max(rel, worst / (scale || 1));
  }
  return rel;
}
