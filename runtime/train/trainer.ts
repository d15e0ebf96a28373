// `visft train`: runs a pipeline's stages in order. A per-task stage runs each task on its own (stage 1: each head on
// the frozen backbone); a joint stage draws one task per update with the stage's probabilities (stage 2: only the
// LoRA trains). Every random choice (task, batch, dropout salt) is a function of (seed, update), and a checkpoint
// holds everything else (weights, optimizer moments, loss scale, batches drawn per task), so a run resumed from any
// checkpoint ends bit for bit where an uninterrupted run ends on the same device.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { CheckResult } from '../../compiler/check/index.js';
import type { LoadedFile } from '../../compiler/frontend/load.js';
import { hash32 } from '../../compiler/ir/rules/reference-core.js';
import type { StagePlan, TaskPlan } from '../../compiler/train/plan.js';
import { compileStep, LOSS_SEED_INPUT, SALT_INPUT, untrainableLoss, type StepGraph } from '../../compiler/train/step-graph.js';
import type { GpuDevice } from '../gpu/device.js';
import type { HostTensor } from '../weights/index.js';
import { listCheckpoints, loadLatestCheckpoint, saveCheckpoint, type Checkpoint } from './checkpoint.js';
import { clipGradNorm, clipGradValue, allFinite } from './clip.js';
import { openTaskData, unreadableData, type TaskData } from './data.js';
import { writeExport } from './export.js';
import { LossScaler } from './loss-scale.js';
import { MetricsLog } from './metrics.js';
import { Optimizer } from './optim.js';
import { initialValues, runDirOf } from './params.js';
import type { Progress } from './progress.js';
import { learningRate } from './schedule.js';
import { cpuStepRunner, gpuStepRunner, type StepRunner } from './step.js';
import { writeLossCurve } from './svg.js';

export class TrainError extends Error {}
/** SIGINT: the run saved a checkpoint and stopped. */
export class TrainInterrupted extends Error {}

export interface TrainOptions {
  readonly checked: CheckResult;
  readonly root: LoadedFile;
  readonly stages: readonly StagePlan[];
  /** The stages to run now (names), in plan order. */
  readonly run: readonly string[];
  readonly out: string;
  /** Overrides every dataset's root folder. */
  readonly data?: string;
  readonly resume: boolean;
  readonly maxUpdates?: number;
  readonly seed: number;
  readonly backend: 'gpu' | 'cpu';
  readonly gpu?: GpuDevice;
  readonly progress: (label: string) => Progress;
  readonly log: (line: string) => void;
  /** Set by the SIGINT handler; checked after every update. */
  readonly interrupted: () => boolean;
}

const MAX_SKIPS = { none: 5, fixed: 5, dynamic: 50 } as const;

/** The hash of every source file of the pipeline, to refuse resuming a run of a pipeline that changed since. */
export function pipelineFiles(checked: CheckResult): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of checked.program.files.values()) if (f) out[f.file.path] = createHash('sha256').update(f.file.text).digest('hex');
  return out;
}

/** Everything this build cannot train, reported before any run starts (no half-trained stage 1). */
export function checkTrainable(stages: readonly StagePlan[], run: readonly string[]): void {
  const problems = stages.filter((s) => run.includes(s.name)).flatMap((s) => s.tasks.flatMap((t) => [untrainableLoss(t), unreadableData(t)].filter((p): p is string => p !== undefined)));
  if (problems.length) throw new TrainError(`cannot train this pipeline yet:\n  ${[...new Set(problems)].join('\n  ')}`);
}

export async function train(opts: TrainOptions): Promise<void> {
  checkTrainable(opts.stages, opts.run);
  const created = outermostMissing(opts.out);
  mkdirSync(opts.out, { recursive: true });
  try {
    const metrics = new MetricsLog(join(opts.out, 'metrics.jsonl'));
    for (const stage of opts.stages.filter((s) => opts.run.includes(s.name))) {
      const runs = stage.runs === 'per_task' ? stage.tasks.map((t) => [t]) : [stage.tasks];
      for (const tasks of runs) await trainRun(opts, stage, tasks, metrics);
      const rows = MetricsLog.read(join(opts.out, 'metrics.jsonl')).filter((r) => r.stage === stage.name && r.skipped !== true);
      writeLossCurve(
        join(opts.out, stage.name, 'loss.svg'),
        stage.tasks.map((t) => ({ name: t.name, points: rows.filter((r) => r.task === t.name).map((r) => [Number(r.update), Number(r.loss)] as [number, number]) })),
        { title: `${stage.name}: training loss` },
      );
    }
  } catch (e) {
    // A run that failed before writing anything (its data missing, say) leaves no empty --out behind.
    if (created) removeIfNoFiles(created);
    throw e;
  }
}

/** The outermost folder on the way to `dir` that does not exist yet (what `mkdir -p dir` creates), if any. */
function outermostMissing(dir: string): string | undefined {
  let missing: string | undefined;
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) missing = d;
  return missing;
}

/** Removes `dir` if no file was written anywhere under it (only empty folders); anything else stays as it is. */
function removeIfNoFiles(dir: string): void {
  const onlyFolders = (d: string): boolean => readdirSync(d, { withFileTypes: true }).every((e) => e.isDirectory() && onlyFolders(join(d, e.name)));
  try {
    if (onlyFolders(dir)) rmSync(dir, { recursive: true });
  } catch {
    // Unreadable or changed under us: leave it.
  }
}

interface RunState {
  update: number;
  taskBatches: Record<string, number>;
  skips: number;
}

async function trainRun(opts: TrainOptions, stage: StagePlan, tasks: TaskPlan[], metrics: MetricsLog): Promise<void> {
  const runName = stage.runs === 'per_task' ? tasks[0].name : 'joint';
  const dir = runDirOf(opts.out, stage, tasks[0].name);
  const label = `${stage.name}/${runName}`;
  const planned = stage.runs === 'per_task' ? tasks[0].updates : stage.updates;
  const total = Math.min(planned, opts.maxUpdates ?? Infinity);
  const checkpointEvery = stage.runs === 'per_task' ? tasks[0].checkpoint : Math.min(...tasks.map((t) => t.checkpoint).filter((c) => c > 0), Infinity);
  // --max-updates lays the schedule over fewer updates: the warmup shrinks in proportion.
  const warmup = Math.round((tasks[0].warmup * total) / planned);
  if (warmup > total) throw new TrainError(`${label}: the warmup (${warmup} updates) is longer than the run (${total} updates)`);
  const files = pipelineFiles(opts.checked);

  let resumed: Checkpoint | undefined;
  if (existsSync(dir) && listCheckpoints(dir).length) {
    if (!opts.resume) throw new TrainError(`${dir} already has checkpoints: pass --resume to continue them, or choose another --out (nothing was changed)`);
    resumed = loadLatestCheckpoint(dir, (m) => opts.log(`warning: ${m}`));
  }
  if (resumed) checkSamePipeline(resumed, files, dir);
  const then = resumed?.state.tasks as string[] | undefined;
  if (resumed && then && then.join() !== tasks.map((t) => t.name).join()) throw new TrainError(`${dir} was trained with tasks ${then.join(', ')}, not ${tasks.map((t) => t.name).join(', ')}: resume with the same --tasks, or choose another --out`);
  if (resumed?.state.done === true && resumed.update >= total) {
    opts.log(`${label}: finished earlier (update ${resumed.update}); skipping`);
    return;
  }

  // Compile each task's step and open its data.
  const steps: StepGraph[] = tasks.map((t) => compileStep(opts.checked, opts.root, stage, t));
  const data: TaskData[] = [];
  const runners: StepRunner[] = [];
  try {
    for (const [i, t] of tasks.entries()) data.push(await openTaskData(t, steps[i].inputs.get('image')![2], mix(opts.seed, stage.seed), opts.data));
    checkVocab(steps, data);
    const params = mergeParams(steps);
    const init = initialValues(params, { checked: opts.checked, root: opts.root, stage, stages: opts.stages, out: opts.out, seed: opts.seed });
    const trainable = new Map(params.filter((p) => p.trainable).map((p) => [p.name, init.values.get(p.name)!]));
    const frozen = new Map(params.filter((p) => !p.trainable).map((p) => [p.name, init.values.get(p.name)!]));
    const optimizer = new Optimizer(stage.optimizer, trainable);
    const scaler = stage.lossScale.kind === 'dynamic' ? LossScaler.dynamic({ init: stage.lossScale.init, growthInterval: stage.lossScale.growthInterval }) : stage.lossScale.kind === 'fixed' ? LossScaler.fixed(stage.lossScale.init) : LossScaler.none();
    const state: RunState = { update: 0, taskBatches: Object.fromEntries(tasks.map((t) => [t.name, 0])), skips: 0 };
    if (resumed) {
      for (const [k, t] of resumed.weights) {
        const dst = trainable.get(k);
        if (!dst || dst.length !== t.data.length) throw new TrainError(`${resumed.dir}/weights.safetensors: '${k}' does not fit this run's trainable parameters`);
        dst.set(t.data as Float32Array);
      }
      optimizer.loadState(Number(resumed.state.optimizer_step), new Map([...resumed.optimizer].map(([k, t]) => [k, t.data as Float32Array])));
      scaler.load(resumed.state.loss_scale as { scale: number; growthTracker: number });
      state.update = resumed.update;
      Object.assign(state.taskBatches, resumed.state.task_batches as Record<string, number>);
      metrics.truncateAfter(stage.name, runName, resumed.update);
      opts.log(`${label}: resuming from ${resumed.dir}`);
    } else {
      metrics.truncateAfter(stage.name, runName, 0);
      for (const n of init.notes) opts.log(`${label}: ${n}`);
    }
    for (const s of steps) {
      const r = opts.backend === 'gpu' ? await gpuStepRunner(opts.gpu!, s) : cpuStepRunner(s);
      r.setFrozen(frozen);
      runners.push(r);
    }
    const storage = runners.map((r) => r.storage).join('; ');
    if (stage.precision !== 'fp32') {
      const half = stage.precision === 'bf16' ? 'bf16' : 'f16';
      opts.log(`${label}: ${stage.precision}: matmul, attention and conv operands and results rounded to ${half} (f32 accumulation), f32 master weights, loss scaling ${stage.lossScale.kind}; ${storage}`);
    }
    for (const bb of new Set(tasks.filter((t) => t.backbonePrecision !== 'fp32').map((t) => `${t.backbone}: frozen weights held at ${t.backbonePrecision} (its precision)`))) {
      opts.log(`${label}: ${bb}${stage.precision === 'fp32' ? `; ${storage}` : ''}`);
    }
    opts.log(`${label}: ${total} updates, ${[...trainable.values()].reduce((a, v) => a + v.length, 0).toLocaleString('en-US')} trainable parameters, ${tasks.map((t, i) => `${t.name} batch ${t.batch}${runners[i].kernels ? ` (${runners[i].kernels} kernels)` : ''}`).join(', ')}`);

    const save = (done: boolean) =>
      saveCheckpoint(
        dir,
        state.update,
        {
          weights: hostTensors(trainable, params),
          optimizer: new Map([...optimizer.stateTensors()].map(([k, v]) => [k, { dtype: 'f32', shape: [v.length], data: v } as HostTensor])),
          state: { stage: stage.name, stage_index: stage.index, run: runName, update: state.update, total, done, seed: opts.seed, optimizer_step: optimizer.stepCount, loss_scale: scaler.state(), task_batches: state.taskBatches, tasks: tasks.map((t) => t.name), pipeline: files },
        },
        { protect: stage.exports.flatMap((e) => e.at) },
      );

    const progress = opts.progress(label);
    const started = Date.now();
    const startUpdate = state.update;
    while (state.update < total) {
      const u = state.update;
      const ti = pickTask(tasks, mix(opts.seed, stage.seed), u);
      const task = tasks[ti];
      const inputs = data[ti].batch(state.taskBatches[task.name]);
      inputs.set(SALT_INPUT, Float32Array.of(hash32(mix(mix(opts.seed, stage.seed), u)) & 0xffffff));
      inputs.set(LOSS_SEED_INPUT, Float32Array.of(scaler.scale));
      const { loss, grads } = await runners[ti].run(inputs, trainable);
      const { foundInf } = scaler.unscale(grads);
      const lr = learningRate({ kind: stage.schedule.kind, peak: task.lr, warmup, total, final: stage.schedule.final }, u);
      let gradNorm = NaN;
      const bad = foundInf || !Number.isFinite(loss) || !allFinite(grads);
      if (bad) {
        state.skips++;
        if (state.skips > MAX_SKIPS[stage.lossScale.kind]) throw new TrainError(`${label}: the loss or its gradients were not finite for ${state.skips} updates in a row (last at update ${u + 1}, loss ${loss}); stopped. The last checkpoint in ${dir} is kept; lower the learning rate or check the data`);
        progress.log(`warning: update ${u + 1} skipped (${Number.isFinite(loss) ? 'gradients' : 'loss'} not finite${stage.lossScale.kind === 'dynamic' ? `, loss scale ${scaler.scale} → ${scaler.scale * 0.5}` : ''})`);
      } else {
        state.skips = 0;
        if (stage.clip.kind === 'global_norm') gradNorm = clipGradNorm(grads, stage.clip.max);
        else if (stage.clip.kind === 'value') clipGradValue(grads, stage.clip.max);
        optimizer.step(grads, lr);
      }
      scaler.update(bad);
      state.taskBatches[task.name]++;
      state.update++;
      const elapsed = (Date.now() - started) / 1000;
      const rate = (state.update - startUpdate) / Math.max(elapsed, 1e-9);
      metrics.append({ stage: stage.name, run: runName, task: task.name, update: state.update, loss, lr, grad_norm: gradNorm, loss_scale: scaler.scale, skipped: bad, time_s: Number(elapsed.toFixed(3)), updates_per_s: Number(rate.toFixed(3)) });
      progress.update({ done: state.update, total, loss: Number.isFinite(loss) ? loss : undefined, lr, rate, extra: tasks.length > 1 ? task.name : undefined });
      const finished = state.update === total;
      await new Promise((res) => setImmediate(res)); // let signal handlers run (the cpu backend never waits on I/O)
      for (const e of stage.exports) if (e.at.includes(state.update)) progress.log(`${label}: wrote ${writeExport(e, trainable, params, state.update)}`);
      if (finished || (checkpointEvery > 0 && state.update % checkpointEvery === 0) || opts.interrupted()) save(finished);
      if (!finished && opts.interrupted()) {
        progress.done(`${label}: interrupted at update ${state.update}`);
        throw new TrainInterrupted(`interrupted: checkpoint saved at update ${state.update} in ${dir}; continue with --resume`);
      }
    }
    progress.done(`${label}: done, ${state.update} updates in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    for (const r of runners) r.destroy();
    for (const d of data) d.close();
  }
}

/** Combines two seeds into one (order matters). */
function mix(a: number, b: number): number {
  return hash32((hash32(a >>> 0) ^ (b >>> 0)) >>> 0);
}

/** The task of update `u` in a joint run: a draw with the stage's probabilities from a stream keyed by u. */
function pickTask(tasks: readonly TaskPlan[], seed: number, u: number): number {
  if (tasks.length === 1) return 0;
  const sum = tasks.reduce((a, t) => a + t.weight, 0);
  let x = (hash32(mix(seed, u + 0x51ed27)) / 4294967296) * sum;
  for (const [i, t] of tasks.entries()) {
    if (x < t.weight) return i;
    x -= t.weight;
  }
  return tasks.length - 1;
}

/** Parameters of all of a run's task graphs by name (shared parts appear once and must agree in shape). */
function mergeParams(steps: readonly StepGraph[]) {
  const out = new Map<string, StepGraph['params'][number]>();
  for (const s of steps) {
    for (const p of s.params) {
      const prev = out.get(p.name);
      if (prev && prev.shape.join() !== p.shape.join()) throw new TrainError(`parameter '${p.name}' has shape [${prev.shape.join(', ')}] in one task and [${p.shape.join(', ')}] in task '${s.task.name}'`);
      if (!prev || p.trainable) out.set(p.name, p);
    }
  }
  return [...out.values()];
}

function hostTensors(values: ReadonlyMap<string, Float32Array>, params: readonly { name: string; shape: readonly number[] }[]): Map<string, HostTensor> {
  const shapes = new Map(params.map((p) => [p.name, [...p.shape]]));
  return new Map([...values].map(([k, v]) => [k, { dtype: 'f32', shape: shapes.get(k)!, data: v } as HostTensor]));
}

function checkVocab(steps: readonly StepGraph[], data: readonly TaskData[]): void {
  steps.forEach((s, i) => {
    const vocab = data[i].vocab;
    const emb = s.params.find((p) => p.name.endsWith('embedding.weight') && p.part === s.task.head);
    if (vocab !== undefined && emb && emb.shape[0] !== vocab) {
      throw new TrainError(`task '${s.task.name}': the word map of ${s.task.dataset.name} has ${vocab} entries but head '${s.task.head}' was declared with vocab ${emb.shape[0]}`);
    }
  });
}

function checkSamePipeline(ck: Checkpoint, files: Record<string, string>, dir: string): void {
  const then = (ck.state.pipeline ?? {}) as Record<string, string>;
  const changed = Object.keys({ ...then, ...files }).filter((f) => then[f] !== files[f]);
  if (changed.length) throw new TrainError(`the pipeline changed since the checkpoint in ${dir} was written (${changed.join(', ')}); resuming would mix two different runs. Restore the files, or start afresh with another --out`);
}
