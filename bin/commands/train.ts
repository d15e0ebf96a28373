// `visft train FILE [--stage NAME|all] [--data DIR] --out DIR [--resume] [--max-updates N] [--seed N] [--backend gpu|cpu]`
// Runs the pipeline's stages; `--plan` prints the resolved training plan and stops. Ctrl-C saves a checkpoint
// and exits 130; every failure is one message and leaves what was saved intact.
import { checkFiles } from '../../compiler/check/index.js';
import { LocatedLowerError } from '../../compiler/lower/lower.js';
import { LowerError } from '../../compiler/lower/ops.js';
import { ShapeError } from '../../compiler/ir/rules/shape.js';
import { trainPlan } from '../../compiler/train/plan.js';
import { PlanError } from '../../compiler/plan/memory.js';
import { openDevice } from '../../runtime/gpu/device.js';
import { describeProfile, profileSummary } from '../../runtime/tune/profile.js';
import { GpuError } from '../../runtime/gpu/errors.js';
import { DataError } from '../../runtime/data/caption.js';
import { CheckpointError } from '../../runtime/train/checkpoint.js';
import { TrainDataError } from '../../runtime/train/data.js';
import { InitError } from '../../runtime/train/init.js';
import { OptimizerStateError } from '../../runtime/train/optim.js';
import { ParamSourceError } from '../../runtime/train/params.js';
import { createProgress } from '../../runtime/train/progress.js';
import { checkTrainable, train, TrainError, TrainInterrupted } from '../../runtime/train/trainer.js';
import { WeightsFormatError, WeightMismatchError, UnsafePickleError, PickleError, ZipError } from '../../runtime/weights/index.js';
import { fileErrorLine, UsageError } from './errors.js';
import { tuningSetArg, tuningSetLine } from './tuning-set.js';
import { printDiagnostics, summary } from './report.js';

export interface TrainCliOptions {
  stage: string;
  data?: string;
  out?: string;
  resume?: boolean;
  maxUpdates?: string;
  seed?: string;
  backend: string;
  adapter?: string;
  /** auto, none, or a tuning profile file. */
  tuning?: string;
  /** Kernel choices over the tuning profile's, as JSON (`--set`). */
  set?: string;
  plan?: boolean;
  tasks?: string;
}

const KNOWN_ERRORS = [LowerError, LocatedLowerError, ShapeError, PlanError, GpuError, DataError, CheckpointError, TrainDataError, InitError, OptimizerStateError, ParamSourceError, TrainError, WeightsFormatError, WeightMismatchError, UnsafePickleError, PickleError, ZipError];

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new UsageError(`${name} takes a whole number >= ${min}, got '${v}'`);
  return Number(v);
}

export async function runTrain(file: string, opts: TrainCliOptions): Promise<number> {
  if (opts.backend !== 'gpu' && opts.backend !== 'cpu') throw new UsageError(`--backend is gpu or cpu, not '${opts.backend}'`);
  const maxUpdates = int('--max-updates', opts.maxUpdates, 1);
  const seedOpt = int('--seed', opts.seed, 0);
  const tuningSet = tuningSetArg(opts.set, opts.backend);
  const checked = checkFiles([file]);
  if (checked.program.diags.errorCount || !checked.roots[0]) {
    printDiagnostics(checked.program.diags);
    process.stderr.write(summary(checked.program.diags, `cannot train ${file}`) + '\n');
    return 1;
  }
  const root = checked.roots[0];
  let gpu: Awaited<ReturnType<typeof openDevice>> | undefined;
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130); // a second Ctrl-C: the checkpoint being written stays atomic
    interrupted = true;
    process.stderr.write('\nvisft: interrupted; saving a checkpoint after this update (Ctrl-C again to quit now)\n');
  };
  try {
    const plan = trainPlan(checked, root);
    const names = plan.stages.map((s) => s.name);
    if (opts.stage !== 'all' && !names.includes(opts.stage)) throw new UsageError(`no stage '${opts.stage}' in ${file} (stages: ${names.join(', ')}, or all)`);
    let run = opts.stage === 'all' ? names : [opts.stage];
    if (opts.tasks !== undefined) {
      // Train only these tasks: each stage keeps its listed tasks (joint stages renormalise their mix).
      const wanted = opts.tasks.split(',').map((t) => t.trim()).filter(Boolean);
      const known = new Set(plan.stages.flatMap((s) => s.tasks.map((t) => t.name)));
      const unknown = wanted.filter((t) => !known.has(t));
      if (unknown.length || !wanted.length) throw new UsageError(`--tasks: no task ${unknown.join(', ') || '(empty list)'} in ${file} (tasks: ${[...known].join(', ')})`);
      for (const s of plan.stages) s.tasks.splice(0, s.tasks.length, ...s.tasks.filter((t) => wanted.includes(t.name)));
      const empty = run.filter((n) => plan.stages.find((s) => s.name === n)!.tasks.length === 0);
      if (empty.length) process.stderr.write(`visft: --tasks leaves ${empty.join(', ')} with no task; skipping ${empty.length > 1 ? 'them' : 'it'}\n`);
      run = run.filter((n) => !empty.includes(n));
    }
    if (opts.plan) {
      process.stdout.write(JSON.stringify({ stages: plan.stages.filter((s) => run.includes(s.name)) }, null, 2) + '\n');
      return 0;
    }
    if (!opts.out) throw new UsageError('train needs --out DIR (where checkpoints, metrics and exports go)');
    checkTrainable(plan.stages, run);
    if (opts.backend === 'gpu') gpu = await openDevice({ adapter: opts.adapter, tuning: opts.tuning, tuningSet });
    if (gpu?.tuningProfile) process.stderr.write(`visft: tuning profile ${describeProfile(profileSummary(gpu.tuningProfile))}\n`);
    if (gpu && tuningSet) process.stderr.write(`visft: ${tuningSetLine(tuningSet, !!gpu.tuningProfile)}\n`);
    process.on('SIGINT', onSigint);
    await train({
      checked,
      root,
      stages: plan.stages,
      run,
      out: opts.out,
      data: opts.data,
      resume: opts.resume === true,
      maxUpdates,
      seed: seedOpt ?? 0,
      backend: opts.backend,
      gpu,
      progress: (label) => createProgress(label),
      log: (line) => process.stderr.write(line + '\n'),
      interrupted: () => interrupted,
    });
    process.stderr.write(`visft: trained ${run.join(', ')}; checkpoints and metrics.jsonl in ${opts.out}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    if (e instanceof TrainInterrupted) {
      process.stderr.write(`visft: ${e.message}\n`);
      return 130;
    }
    if (e instanceof LocatedLowerError) {
      process.stderr.write(`${e.where()}: error: ${e.message}\n`);
      return 1;
    }
    const known = KNOWN_ERRORS.some((c) => e instanceof c);
    const fileError = fileErrorLine(e);
    if (known || fileError) {
      process.stderr.write(`visft: ${known ? (e as Error).message : fileError}\n`);
      return 1;
    }
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
    await gpu?.destroy();
  }
}
