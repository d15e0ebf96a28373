// Timing one configuration of a program (a bench row, or a bundle's graph) against another on the same GPU: each compiled with its own tuning
// (Target.tuning) on a device opened with its own Dawn toggles, timed in alternating bursts so that both see the
// same clock. A GPU's clock moves under a sweep (an H200's between 345 and 1980 MHz, 2026-11-27: the gaps while
// the next variant compiles let it fall), so a time is only comparable with one taken in the same window, and
// the ratio is what ranks. Shared by `visft tune` and scripts/tune-sgmat.mjs.
import { compileGpu, outputIds, type GpuProgram } from '../../compiler/codegen/gpu.js';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { hasTimestamps, TimedProgram } from '../bench/ours.js';
import type { RowSpec } from '../bench/row-types.js';
import { rowGraph, rowInputData, seededUniform } from '../bench/rows.js';
import type { Graph } from '../../compiler/ir/graph.js';
import type { GpuDevice } from '../gpu/device.js';
import { fromF16, toF16 } from '../gpu/half.js';

/**
 * What is timed: a graph with data for every input and parameter, and the outputs compared between programs. A
 * bench row (rowCase) or a whole bundle (bundleCase: a model's forward or training step, as compiled).
 */
export interface TuneCase {
  readonly name: string;
  /** The outputs' tolerance class: f16 when any value of the graph is stored in f16. */
  readonly dtype: 'f32' | 'f16';
  readonly graph: Graph;
  /** Graph node id → values, for every input and parameter. */
  readonly data: ReadonlyMap<number, Float32Array>;
  readonly outputs: readonly string[];
  /** The bench row it is, if it is one (groups choose their rows by it). */
  readonly row?: RowSpec;
}

export function rowCase(row: RowSpec): TuneCase {
  const values = rowInputData(row).map((d) => fromF16(toF16(d)));
  const { graph, inputs, outputs } = rowGraph(row);
  return { name: row.name, dtype: row.dtype, graph, data: new Map(inputs.map((id, i) => [id, values[i]])), outputs, row };
}

/**
 * A bundle's graph with seeded data: inputs uniform in [-1, 1), parameters in [-0.02, 0.02) (the scale of ViT
 * initialisations, so that deep stacks stay finite), integer and boolean values 0 (a valid index anywhere). The
 * values repeat a seeded block of a prime length, each tensor from its own place in it: a billion parameters fill
 * in seconds, and every program compared gets the same bytes.
 */
export function bundleCase(name: string, graph: Graph): TuneCase {
  const next = seededUniform(name);
  const block = Float32Array.from({ length: 65521 }, () => 2 * next() - 1);
  const data = new Map<number, Float32Array>();
  const fill = (node: number, scale: number): void => {
    const n = graph.node(node);
    const out = new Float32Array(n.shape.reduce((a, b) => a * b, 1));
    if (n.dtype === 'f32' || n.dtype === 'f16' || n.dtype === 'bf16') {
      const start = Math.floor(next() * block.length);
      for (let i = 0, j = start; i < out.length; i++, j = j + 1 === block.length ? 0 : j + 1) out[i] = scale * block[j];
    }
    data.set(node, out);
  };
  for (const i of graph.inputs) fill(i.node, 1);
  for (const p of graph.params) fill(p.node, 0.02);
  const dtype = graph.nodes.some((n) => n.dtype === 'f16' || n.dtype === 'bf16') ? 'f16' : 'f32';
  return { name, dtype, graph, data, outputs: graph.outputs.map((o) => o.name) };
}

/** A case's program compiled and uploaded, ready to time. */
export interface TimedVariant {
  readonly timed: TimedProgram;
  /** Kernel names in schedule order. */
  readonly kernels: readonly string[];
  readonly outIds: readonly number[];
}

/**
 * The case's program for `device` under `tuning` (replacing the device's own): `compiled` when the caller has it
 * already, else compiled here; `edit` rewrites kernels' WGSL (ablations).
 */
export async function timedVariant(device: GpuDevice, c: TuneCase, tuning: Target['tuning'] | undefined, edit?: (k: Kernel) => Kernel, compiled?: GpuProgram): Promise<TimedVariant> {
  let program = compiled ?? compileGpu(c.graph, withTuning(device.target, tuning));
  const kernels = program.schedule.kernels.map((k) => k.name);
  if (edit) program = { ...program, schedule: { ...program.schedule, kernels: program.schedule.kernels.map(edit) } };
  const outIds = outputIds(program, c.outputs, `the program of ${c.name}`);
  const timed = await TimedProgram.create(device, program, new Map([...c.data].filter(([id]) => program.plan.placement.has(id))));
  return { timed, kernels, outIds };
}

/** What makes two programs the same program to time: every kernel's WGSL, dispatch and workgroup size, in order. */
export const programKey = (kernels: readonly Kernel[]): string => JSON.stringify(kernels.map((k) => [k.wgsl, k.dispatch, k.workgroupSize]));

/** `target` with `tuning` in place of its own (none when empty). */
export function withTuning(target: Target, tuning: Target['tuning'] | undefined): Target {
  const { tuning: _own, ...rest } = target;
  return tuning && Object.keys(tuning).length ? { ...rest, tuning } : rest;
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
