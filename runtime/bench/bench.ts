// `visft bench`: each row's op compiled by visft for the device's Target and timed next to the same op in
// tfjs-webgpu on the same GPUDevice, in the same process. Speed is a ratio against that peer (peer ms / ours
// ms), never an absolute claim; on a software adapter sizes shrink and the numbers say nothing about GPUs.
//
// Per row: build the one-op IR graph and compileGpu it; run it once through the Executor (the path `visft
// run` takes) and the peer once, and check that every output agrees within the row's f32 tolerance (a
// peer that fails on a row, e.g. out of memory for the composed attention's [S, S] scores, is skipped for that
// row with its reason, and ours is still timed, unchecked); only then time both
// (warm-up first: every process compiles its shaders anew). Ours is timed by TimedProgram (same kernels and
// plan; its output must equal the Executor's bit for bit), the peer by tf.time(); both by GPU timestamps where
// the device has timestamp-query (one iteration of ours, then one of the peer's, `repeat` times, so both
// see the same load; the median counts), else by the wall clock over `repeat` back-to-back iterations.
import { compileGpu, outputIds } from '../../compiler/codegen/gpu.js';
import type { Target } from '../../compiler/codegen/types.js';
import { openDevice, type GpuDevice } from '../gpu/device.js';
import { errorMessage } from '../gpu/errors.js';
import { Executor } from '../gpu/executor.js';
import { fromF16, toF16 } from '../gpu/half.js';
import { hasTimestamps, TimedProgram } from './ours.js';
import { peerCall, type PeerCall } from './peer-ops.js';
import { BENCH_SIZES, benchRows, rowGraph, rowInputData, selectRows, type BenchOp, type BenchPass, type BenchSize, type RowSpec, type Tolerance } from './rows.js';
import { attachTfjs, type Tensor, type TfjsPeer } from './tfjs.js';
import { profileSummary } from '../tune/profile.js';
import { untunedProgram, type UntunedProgram } from './untuned.js';

export interface BenchOptions {
  /** Shrunk sizes (`quick`); the default on a fallback (software) adapter. */
  readonly quick?: boolean;
  /** A size outright (`full` forces real sizes on a software adapter; tests use `tiny`). */
  readonly size?: BenchSize;
  /** Row names or prefixes (all rows when empty). */
  readonly rows?: readonly string[];
  readonly adapter?: string;
  readonly backend?: string;
  /** The tuning profile: auto (default), none, or a file (openDevice). */
  readonly tuning?: string;
  /** Kernel choices over the profile's (openDevice tuningSet; `visft bench --set`). */
  readonly tuningSet?: Target['tuning'];
  /** Timed iterations per side; by default chosen per row from the warm-up (see REPEAT_POLICY). */
  readonly repeat?: number;
  /** Untimed iterations first (default 3; 1 on a fallback adapter). */
  readonly warmup?: number;
  /** The command line to record in the report. */
  readonly command?: string;
  /** Progress lines (one per row), e.g. to stderr. */
  readonly progress?: (line: string) => void;
}

export interface SideResult {
  /** The time the ratio uses: median GPU ms where timestamps exist, else wall ms per iteration. */
  readonly ms: number;
  readonly gpuMs?: { readonly median: number; readonly min: number };
  /** Wall clock per iteration over back-to-back iterations (includes CPU-side encoding). */
  readonly wallMs: number;
  /** GFLOP/s (matmul) or GB/s (one read and one write of every element) at `ms`. */
  readonly rate: number;
  /** Kernels (ours) or tfjs programs (peer) one iteration runs, in order. */
  readonly kernels: string[];
  /** Ours, rows of several kernels with timestamps: each kernel's median GPU ms in a pass of its own. */
  readonly perKernel?: readonly { readonly name: string; readonly ms: number }[];
}

export interface CheckResult {
  readonly passed: boolean;
  readonly maxAbsDiff: number;
  /** max |ours − peer| / (atol·scale + rtol·|peer|): at most 1 passes. */
  readonly worst: number;
  readonly tolerance: string;
  /** The output with the worst agreement (rows with several outputs). */
  readonly worstOutput?: string;
}

export type RowStatus = 'ok' | 'mismatch' | 'unavailable' | 'error';

export interface BenchRow {
  readonly name: string;
  readonly what: string;
  readonly op: BenchOp;
  readonly pass: BenchPass;
  readonly dtype: 'f32' | 'f16';
  readonly shape: string;
  readonly status: RowStatus;
  /** Why a row is unavailable or failed. */
  readonly reason?: string;
  readonly rateUnit: 'GFLOP/s' | 'GB/s';
  readonly ours?: SideResult;
  readonly peer?: SideResult;
  /** What the peer computes. */
  readonly peerComputes: string;
  /** Why the peer was skipped on this row (it failed); ours is timed alone, unchecked. */
  readonly peerSkipped?: string;
  /** peer ms / ours ms: > 1 means visft is faster. */
  readonly ratio?: number;
  readonly check?: CheckResult;
  /** Timed iterations per side. */
  readonly repeat?: number;
  /** Under a tuning profile: the default kernels, timed in the same bursts (runtime/bench/untuned.ts). */
  readonly untuned?: { readonly ms: number; readonly kernels: readonly string[]; readonly relDiff: number };
  /** untuned ms / ours ms: > 1 means the profile's kernels are faster than the defaults. */
  readonly vsUntuned?: number;
}

/** Without --repeat: enough iterations for about `targetMs` of work on the slower side, within [min, max]. */
export interface RepeatPolicy {
  readonly targetMs: number;
  readonly min: number;
  readonly max: number;
}

export const REPEAT_POLICY: { readonly hardware: RepeatPolicy; readonly fallback: RepeatPolicy } = {
  hardware: { targetMs: 200, min: 20, max: 200 },
  fallback: { targetMs: 1000, min: 5, max: 50 },
};

export function repeatFor(policy: RepeatPolicy | number, estimateMs: number): number {
  if (typeof policy === 'number') return policy;
  return Math.min(policy.max, Math.max(policy.min, Math.ceil(policy.targetMs / Math.max(estimateMs, 1e-3))));
}

export interface BenchReport {
  readonly tool: 'visft bench';
  readonly date: string;
  readonly command: string;
  readonly device: {
    readonly name: string;
    readonly description: string;
    readonly vendor: string;
    readonly architecture: string;
    readonly backend: string;
    readonly isFallbackAdapter: boolean;
    readonly features: readonly string[];
    /** Dawn toggles the device was opened with (shader robustness is on unless disable_robustness is here). */
    readonly toggles?: readonly string[];
    /** The tuning profile the kernels were compiled with (runtime/tune/profile.ts): its file and what it adopted. */
    readonly tuning?: { readonly file: string; readonly created: string; readonly adopted: readonly string[] };
    /** Kernel choices set over the profile's (`--set`). */
    readonly set?: Target['tuning'];
  };
  readonly sizes: { readonly size: BenchSize; readonly tokens: number; readonly reason: string };
  readonly timing: { readonly method: 'gpu-timestamps' | 'wall-clock'; readonly statistic: 'median'; readonly warmup: number; readonly clockWarmupMs: number; readonly repeat: number | RepeatPolicy };
  readonly peer: { readonly name: string; readonly version: string; readonly sameDevice: true } | { readonly unavailable: string };
  readonly rows: BenchRow[];
  /** Every row ok or unavailable (no mismatch, no error). */
  readonly ok: boolean;
}

// ---------------------------------------------------------------------------------------------- checks

export function toleranceText(t: Tolerance): string {
  return `|ours - peer| <= ${t.atol}${t.scaled ? '·max|peer|' : ''} + ${t.rtol}·|peer|`;
}

/** Elementwise agreement of two f32 results within a row's tolerance (NaN or ±Inf only where the peer has the same). */
export function compareOutputs(ours: Float32Array, peer: Float32Array, t: Tolerance): CheckResult {
  const tolerance = toleranceText(t);
  if (ours.length !== peer.length) return { passed: false, maxAbsDiff: Infinity, worst: Infinity, tolerance };
  let scale = 0;
  if (t.scaled) for (const v of peer) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  const atol = t.atol * (t.scaled ? Math.max(scale, Number.MIN_VALUE) : 1);
  let maxAbsDiff = 0;
  let worst = 0;
  for (let i = 0; i < ours.length; i++) {
    const o = ours[i];
    const p = peer[i];
    if (!Number.isFinite(o) || !Number.isFinite(p)) {
      if (!Object.is(o, p)) return { passed: false, maxAbsDiff: NaN, worst: Infinity, tolerance };
      continue;
    }
    const d = Math.abs(o - p);
    maxAbsDiff = Math.max(maxAbsDiff, d);
    worst = Math.max(worst, d / (atol + t.rtol * Math.abs(p)));
  }
  return { passed: worst <= 1, maxAbsDiff, worst, tolerance };
}

/** compareOutputs over every output of a row (each scaled by its own max|peer|); the worst one counts. */
export function compareAll(ours: readonly Float32Array[], peer: readonly Float32Array[], names: readonly string[], t: Tolerance): CheckResult {
  if (ours.length !== peer.length) return { passed: false, maxAbsDiff: Infinity, worst: Infinity, tolerance: toleranceText(t), worstOutput: `${ours.length} outputs against ${peer.length}` };
  let worst: CheckResult | undefined;
  let worstOutput = '';
  let maxAbsDiff = 0;
  for (const [i, o] of ours.entries()) {
    const c = compareOutputs(o, peer[i], t);
    maxAbsDiff = Number.isNaN(c.maxAbsDiff) || Number.isNaN(maxAbsDiff) ? NaN : Math.max(maxAbsDiff, c.maxAbsDiff);
    if (!worst || !(c.worst <= worst.worst)) {
      worst = c;
      worstOutput = names[i];
    }
  }
  if (!worst) return { passed: true, maxAbsDiff: 0, worst: 0, tolerance: toleranceText(t) };
  return { ...worst, maxAbsDiff, ...(ours.length > 1 ? { worstOutput } : {}) };
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function side(gpu: readonly number[], wallMs: number, row: RowSpec, kernels: string[]): SideResult {
  const gpuMs = gpu.length ? { median: median(gpu), min: Math.min(...gpu) } : undefined;
  const ms = gpuMs ? gpuMs.median : wallMs;
  const rate = ms > 0 ? row.work.amount / (ms * 1e-3) / 1e9 : NaN;
  return { ms, ...(gpuMs ? { gpuMs } : {}), wallMs, rate, kernels };
}

// ---------------------------------------------------------------------------------------------- rows

/** Why a row cannot run on this target (f16 rows need shader-f16 and f16 kernels), or undefined. */
export function unavailableReason(row: RowSpec, target: Target): string | undefined {
  if (row.dtype !== 'f16') return undefined;
  if (!target.features.includes('shader-f16')) return 'not available: the device has no shader-f16';
  try {
    const p = compileGpu(rowGraph(row, 'f16').graph, target);
    if (!p.schedule.kernels.some((k) => /\benable f16;/.test(k.wgsl))) return 'not available: f32 kernels only';
  } catch (e) {
    return `not available: ${errorMessage(e)}`;
  }
  return undefined;
}

/** Wall ms of sustained work before each row is timed on a hardware adapter (warmClocks). */
const CLOCK_WARMUP_MS = 300;

/** Iterations per timed burst (each side, alternating). */
const BURST = 5;

interface RowContext {
  readonly gpu: GpuDevice;
  readonly peer: TfjsPeer | undefined;
  readonly warmup: number;
  readonly repeat: number | RepeatPolicy;
  readonly timestamps: boolean;
  /** Wall ms of back-to-back work before timing a row (0 on software adapters): see warmClocks. */
  readonly clockWarmupMs: number;
}

/**
 * Keeps the GPU busy with `timed`'s program, back to back, for `ms` of wall clock. An NVIDIA GPU stayed at its
 * idle clock (345 of 1980 MHz on the H200, 2026-11-27) through the bench's short bursts of work, and raised it
 * only under sustained load: without this, rows ran up to 5x slower than the same kernels a moment later.
 */
async function warmClocks(timed: TimedProgram, ms: number, estimateMs: number): Promise<void> {
  const t0 = performance.now();
  const chunk = Math.max(1, Math.min(200, Math.ceil(50 / Math.max(estimateMs, 1e-3))));
  while (performance.now() - t0 < ms) await timed.warm(chunk);
}

const rowBase = (row: RowSpec) => ({ name: row.name, what: row.what, op: row.op, pass: row.pass, dtype: row.dtype, shape: row.shapeText, rateUnit: row.work.unit, peerComputes: row.peer });

/** The peer's results for a row, or why it could not give them (the device stays usable). */
async function peerResults(ctx: RowContext, row: RowSpec, tensors: readonly Tensor[]): Promise<{ call: PeerCall; out: Float32Array[] } | { skipped: string }> {
  const peer = ctx.peer!;
  let call: PeerCall | undefined;
  try {
    call = peerCall(peer.tf, row, tensors);
    const out = await peer.result(call.run);
    checkUncaptured(ctx.gpu, 'tfjs');
    return { call, out };
  } catch (e) {
    call?.dispose();
    if (ctx.gpu.isLost) throw e;
    ctx.gpu.uncapturedErrors.splice(0);
    return { skipped: `tfjs failed on this row, so only ours ran (unchecked): ${errorMessage(e)}` };
  }
}

async function benchRow(ctx: RowContext, row: RowSpec): Promise<BenchRow> {
  const base = rowBase(row);
  const unavailable = unavailableReason(row, ctx.gpu.target);
  if (unavailable) return { ...base, status: 'unavailable', reason: unavailable };

  const { gpu } = ctx;
  let data = rowInputData(row);
  // f16 rows: both sides get the same f16-representable values.
  if (row.dtype === 'f16') data = data.map((d) => fromF16(toF16(d)));
  const { graph, inputs, outputs } = rowGraph(row);
  const program = compileGpu(graph, gpu.target);
  const outIds = outputIds(program, outputs, `the program of ${row.name}`);
  const inputMap = new Map(inputs.map((id, i) => [id, data[i]] as const));

  // Correctness first: ours through the Executor, the peer once.
  const exec = await Executor.create(gpu, program.schedule.kernels, program.plan);
  let oursOut: Float32Array[];
  try {
    const got = await exec.run(inputMap, new Map(), outIds);
    oursOut = outIds.map((id) => got.get(id)!);
  } finally {
    exec.destroy();
  }
  const tensors = ctx.peer ? row.inputs.map((inp, i) => ctx.peer!.tf.tensor(data[i], [...inp.shape], 'float32')) : [];
  let call: PeerCall | undefined;
  try {
    let check: CheckResult | undefined;
    let peerSkipped: string | undefined;
    if (ctx.peer) {
      const r = await peerResults(ctx, row, tensors);
      if ('skipped' in r) peerSkipped = r.skipped;
      else {
        call = r.call;
        check = compareAll(oursOut, r.out, outputs, row.tolerance);
        if (!check.passed) {
          const where = check.worstOutput ? ` (worst in ${check.worstOutput})` : '';
          return { ...base, status: 'mismatch', reason: `ours and the peer disagree${where}: max |diff| ${check.maxAbsDiff.toPrecision(3)}, ${check.worst.toPrecision(3)}x the tolerance (${check.tolerance})`, check };
        }
      }
    }
    const peer = call ? ctx.peer : undefined;
    const fn = call?.run;
    const skippedNote = peerSkipped ? { peerSkipped } : {};

    const timed = await TimedProgram.create(gpu, program, inputMap);
    let plain: UntunedProgram | undefined;
    try {
      plain = ctx.timestamps ? await untunedProgram(gpu, graph, program, inputMap, outputs, oursOut) : undefined;
      const again = await timed.outputs(outIds);
      if (again.some((a, k) => a.length !== oursOut[k].length || a.some((v, i) => !Object.is(v, oursOut[k][i])))) {
        throw new Error('the timed dispatches do not reproduce the Executor\'s output bit for bit');
      }
      // The slower side sets the count: about targetMs of work for it (tfjs's many-program rows can be far
      // slower than ours, and both sides run the same count).
      const warmup = Math.max(1, ctx.warmup);
      const oursEstimate = await timed.warm(warmup);
      const t0 = performance.now();
      if (peer && fn) await peer.warm(fn, warmup);
      const peerEstimate = peer && fn ? (performance.now() - t0) / warmup : 0;
      const repeat = repeatFor(ctx.repeat, Math.max(oursEstimate, peerEstimate));
      await warmClocks(timed, ctx.clockWarmupMs, oursEstimate);
      // GPU timestamps, alternating ours and the peer's so that both see the same machine (load, clocks), in
      // bursts of back-to-back iterations: one iteration at a time left an NVIDIA GPU idle between them, and
      // times of the same program then varied up to 5x within a run (H200, 2026-11-27).
      const oursGpu: number[] = [];
      const peerGpu: number[] = [];
      const plainGpu: number[] = [];
      let programs: string[] = [];
      if (ctx.timestamps) {
        for (let i = 0; i < repeat; i += BURST) {
          const n = Math.min(BURST, repeat - i);
          oursGpu.push(...(await timed.timestamped(n)));
          if (plain) plainGpu.push(...(await plain.timed.timestamped(n)));
          if (peer && fn) {
            const t = await peer.timestamped(fn, n);
            for (let j = 0; j < n; j++) peerGpu.push(t.ms);
            if (i === 0) programs = t.programs;
          }
        }
      }
      const perKernel = ctx.timestamps && timed.kernelNames.length > 1 ? await timed.kernelTimes(Math.min(repeat, 20)) : undefined;
      const ours = { ...side(oursGpu, await timed.wall(repeat), row, timed.kernelNames), ...(perKernel ? { perKernel } : {}) };
      const plainMs = plainGpu.length ? median(plainGpu) : undefined;
      const untuned = plain && plainMs !== undefined ? { untuned: { ms: plainMs, kernels: plain.kernels, relDiff: plain.relDiff }, vsUntuned: plainMs / ours.ms } : {};
      if (!peer || !fn) return { ...base, status: 'ok', ours, repeat, ...skippedNote, ...(check ? { check } : {}), ...untuned };
      const theirs = side(peerGpu, await peer.wall(fn, repeat), row, programs);
      checkUncaptured(gpu, 'tfjs');
      return { ...base, status: 'ok', ours, peer: theirs, ratio: theirs.ms / ours.ms, repeat, ...(check ? { check } : {}), ...untuned };
    } finally {
      timed.destroy();
      plain?.timed.destroy();
    }
  } finally {
    call?.dispose();
    for (const t of tensors) t.dispose();
  }
}

/** GPU errors nobody captured (tfjs uses no error scopes) belong to whoever ran last. */
function checkUncaptured(gpu: GpuDevice, who: string): void {
  if (gpu.uncapturedErrors.length) throw new Error(`GPU error(s) in ${who}: ${gpu.uncapturedErrors.splice(0).join('; ')}`);
}

// ---------------------------------------------------------------------------------------------- the bench

/** Runs the bench. Throws for a bad row filter (before opening the device) and when the device is lost. */
export async function runBench(opts: BenchOptions = {}): Promise<BenchReport> {
  const filters = opts.rows ?? [];
  selectRows(benchRows('tiny'), filters); // names are the same at every size: fail before opening the device
  if (opts.repeat !== undefined && (!Number.isInteger(opts.repeat) || opts.repeat < 1 || opts.repeat > 10_000)) throw new Error(`--repeat must be a whole number from 1 to 10000, not ${opts.repeat}`);

  const gpu = await openDevice({ profiling: true, ...(opts.adapter ? { adapter: opts.adapter } : {}), ...(opts.backend ? { backend: opts.backend } : {}), ...(opts.tuning ? { tuning: opts.tuning } : {}), ...(opts.tuningSet ? { tuningSet: opts.tuningSet } : {}) });
  let peer: TfjsPeer | undefined;
  try {
    const fallback = gpu.info.isFallbackAdapter;
    const size: BenchSize = opts.size ?? (opts.quick || fallback ? 'quick' : 'full');
    const reason = opts.size
      ? `${opts.size} sizes requested`
      : opts.quick
        ? '--quick'
        : fallback
          ? 'chosen automatically: the adapter is a fallback (software) adapter (--full to override)'
          : 'model sizes';
    const warmup = opts.warmup ?? (fallback ? 1 : 3);
    const repeat = opts.repeat ?? (fallback ? REPEAT_POLICY.fallback : REPEAT_POLICY.hardware);
    const timestamps = hasTimestamps(gpu);

    let peerInfo: BenchReport['peer'];
    try {
      peer = await attachTfjs(gpu);
      peerInfo = { name: peer.name, version: peer.version, sameDevice: true };
    } catch (e) {
      peerInfo = { unavailable: errorMessage(e) };
    }

    const rows: BenchRow[] = [];
    const clockWarmupMs = fallback ? 0 : CLOCK_WARMUP_MS;
    const ctx: RowContext = { gpu, peer, warmup, repeat, timestamps, clockWarmupMs };
    for (const row of selectRows(benchRows(size), filters)) {
      let r: BenchRow;
      try {
        r = await benchRow(ctx, row);
      } catch (e) {
        if (gpu.isLost) throw gpu.lostError(`running bench row ${row.name}`) ?? e;
        r = { ...rowBase(row), status: 'error', reason: errorMessage(e) };
      }
      rows.push(r);
      opts.progress?.(progressLine(r));
    }

    return {
      tool: 'visft bench',
      date: new Date().toISOString(),
      command: opts.command ?? 'visft bench',
      device: {
        name: gpu.info.name,
        description: gpu.info.description,
        vendor: gpu.info.vendor,
        architecture: gpu.info.architecture,
        backend: gpu.backend ?? 'default',
        isFallbackAdapter: fallback,
        features: gpu.target.features,
        toggles: gpu.toggles,
        ...(gpu.tuningProfile ? { tuning: profileSummary(gpu.tuningProfile) } : {}),
        ...(opts.tuningSet ? { set: opts.tuningSet } : {}),
      },
      sizes: { size, tokens: BENCH_SIZES[size].tokens, reason },
      timing: { method: timestamps ? 'gpu-timestamps' : 'wall-clock', statistic: 'median', warmup, clockWarmupMs, repeat },
      peer: peerInfo,
      rows,
      ok: rows.every((r) => r.status === 'ok' || r.status === 'unavailable'),
    };
  } finally {
    peer?.dispose();
    await gpu.destroy();
  }
}

function progressLine(r: BenchRow): string {
  if (r.status !== 'ok') return `${r.name}: ${r.status}${r.reason ? ` (${r.reason})` : ''}`;
  const ratio = r.ratio !== undefined ? `, ratio ${r.ratio.toFixed(2)}` : '';
  const skipped = r.peerSkipped ? ` (${r.peerSkipped})` : '';
  const untuned = r.untuned ? `, untuned ${r.untuned.ms.toPrecision(3)} ms (${r.vsUntuned!.toFixed(3)}x)` : '';
  return `${r.name}: ours ${r.ours!.ms.toPrecision(3)} ms${r.peer ? `, peer ${r.peer.ms.toPrecision(3)} ms` : ''}${ratio}${untuned}${skipped}`;
}
