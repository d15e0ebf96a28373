// The training plan of a checked pipeline: each stage's tasks, optimizer, schedule, clipping, precision,
// checkpointing, initialisation and exports, with every default made explicit. `visft train` runs this plan;
// `visft train --plan` prints it.
import type { CallExpr, Decl, Expr, NestedBlock, Property } from '../ast.js';
import { stageTasks } from '../check/declarations.js';
import type { CheckResult } from '../check/index.js';
import type { Scope } from '../check/scope.js';
import { constNumber, durationValue, unparen } from '../check/values.js';
import type { LoadedFile } from '../frontend/load.js';
import { interpolate } from '../frontend/literals.js';
import { LowerError } from '../lower/ops.js';

export interface DatasetPlan {
  readonly name: string;
  readonly format: string;
  /** Keyword arguments of the format call (`name`, `captions_per_image`, ...). */
  readonly args: Readonly<Record<string, number | string>>;
  readonly root: string;
  readonly split: string;
  readonly mean: [number, number, number];
  readonly std: [number, number, number];
}

export interface TaskPlan {
  readonly name: string;
  readonly head: string;
  /** The backbone output the head reads (`features` of `eva.features`). */
  readonly backbone: string;
  readonly backboneOutput: string;
  /** The backbone's `precision`: its frozen weights are stored (and read) at this precision. */
  readonly backbonePrecision: 'fp32' | 'fp16' | 'bf16';
  readonly dataset: DatasetPlan;
  readonly loss: { readonly kind: string; readonly args: Readonly<Record<string, number>> };
  readonly batch: number;
  readonly lr: number;
  readonly updates: number;
  readonly warmup: number;
  readonly checkpoint: number;
  /** Probability of drawing this task per update in a joint stage. */
  readonly weight: number;
}

export interface ExportPlan {
  readonly what: string;
  readonly at: number[];
  readonly path: string;
  readonly format: 'visft' | 'loralib';
}

export interface StagePlan {
  readonly name: string;
  readonly index: number;
  readonly after: string[];
  readonly runs: 'per_task' | 'joint';
  /** The backbone, head and lora names the stage trains and freezes. */
  readonly trainNames: string[];
  readonly freezeNames: string[];
  readonly tasks: TaskPlan[];
  readonly optimizer: { kind: 'adamw' | 'adam' | 'sgd'; betas: [number, number]; eps: number; weightDecay: number; momentum: number; nesterov: boolean };
  readonly schedule: { kind: 'warmup_cosine' | 'warmup_linear' | 'constant'; final: number };
  /** Updates of a joint stage (per-task runs take each task's own count). */
  readonly updates: number;
  readonly clip: { kind: 'global_norm' | 'value' | 'none'; max: number };
  readonly precision: 'fp32' | 'fp16' | 'bf16';
  readonly lossScale: { kind: 'dynamic' | 'fixed' | 'none'; init: number; growthInterval: number };
  readonly gradientCheckpointing: boolean;
  readonly seed: number;
  /** HEAD/LORA name → the stage and task whose final checkpoint provides its weights. */
  readonly init: { part: string; stage: string; task: string }[];
  readonly exports: ExportPlan[];
}

export interface TrainPlan {
  readonly stages: StagePlan[];
}

const props = (d: { block?: { entries: readonly (Property | NestedBlock)[] } }): Map<string, Expr> =>
  new Map((d.block?.entries ?? []).filter((e): e is Property => e.kind === 'property').map((e) => [e.key, e.value]));
const nested = (d: Decl | NestedBlock, key: string): NestedBlock[] => (d.block?.entries ?? []).filter((e): e is NestedBlock => e.kind === 'nested' && e.key === key);
const nameOf = (e: Expr | undefined): string | undefined => {
  const u = e && unparen(e);
  return u?.kind === 'name' ? u.name : undefined;
};
const items = (e: Expr | undefined): Expr[] => {
  if (!e) return [];
  const u = unparen(e);
  return u.kind === 'list' ? [...u.items] : [u];
};

function callOf(e: Expr | undefined): { name: string; args: Map<string, Expr> } | undefined {
  if (!e) return undefined;
  const u = unparen(e);
  if (u.kind === 'name') return { name: u.name, args: new Map() };
  if (u.kind !== 'call') return undefined;
  const c = u as CallExpr;
  const callee = nameOf(c.callee);
  return callee === undefined ? undefined : { name: callee, args: new Map(c.args.filter((a) => a.name).map((a) => [a.name!, a.value])) };
}

const bool = (e: Expr | undefined): boolean => {
  const u = e && unparen(e);
  return u?.kind === 'bool' && u.value;
};

/** A constant number, or undefined when absent or not constant. */
const numberOf = (e: Expr | undefined): number | undefined => (e ? constNumber(e) : undefined);

const numList = (e: Expr | undefined): number[] => items(e).map((x) => constNumber(x) ?? NaN);

function str(e: Expr | undefined, env: NodeJS.ProcessEnv): string | undefined {
  const u = e && unparen(e);
  return u?.kind === 'string' ? interpolate(u.parts, env) : undefined;
}

/** The plan of the root file of a checked pipeline (no errors). */
export function trainPlan(checked: CheckResult, root: LoadedFile, env: NodeJS.ProcessEnv = process.env): TrainPlan {
  const scope = checked.scopes.get(root);
  if (!scope || !checked.resolved.get(root)) throw new LowerError('the pipeline has errors; run `visft check` first');
  const decl = (name: string, kind: string): Decl => {
    const s = scope.get(name);
    if (!s || s.kind !== kind) throw new LowerError(`no ${kind} named '${name}'`);
    return (s as { node: Decl }).node;
  };
  const stageDecls = root.ast.items.filter((i): i is Decl => i.kind === 'decl' && i.declKind === 'stage');
  const stages = stageDecls.map((d, index) => stagePlan(d, index, scope, decl, env));
  return { stages: order(stages) };
}

/** Stages in an order that respects `after` (a stable topological sort; the checker rejected cycles). */
function order(stages: StagePlan[]): StagePlan[] {
  const done = new Set<string>();
  const out: StagePlan[] = [];
  while (out.length < stages.length) {
    const next = stages.find((s) => !done.has(s.name) && s.after.every((a) => done.has(a)));
    if (!next) throw new LowerError(`stages depend on each other in a cycle: ${stages.filter((s) => !done.has(s.name)).map((s) => s.name).join(', ')}`);
    done.add(next.name);
    out.push(next);
  }
  return out.map((s, index) => ({ ...s, index }));
}

function stagePlan(d: Decl, index: number, scope: Scope, decl: (name: string, kind: string) => Decl, env: NodeJS.ProcessEnv): StagePlan {
  const p = props(d);
  const num = (k: string, dflt: number) => numberOf(p.get(k)) ?? dflt;
  const dur = (e: Expr | undefined, dflt: number) => (e ? durationValue(e) ?? dflt : dflt);
  const trainsShared = items(p.get('train')).some((t) => {
    const k = scope.get(nameOf(t) ?? '')?.kind;
    return k === 'lora' || k === 'backbone';
  });
  const runs = (nameOf(p.get('runs')) as 'per_task' | 'joint' | undefined) ?? (trainsShared ? 'joint' : 'per_task');
  const stageLr = numberOf(p.get('lr'));
  const opt = callOf(p.get('optimizer')) ?? { name: 'adamw', args: new Map<string, Expr>() };
  const betas = opt.args.has('betas') ? numList(opt.args.get('betas')) : [0.9, 0.999];
  const sched = callOf(p.get('schedule')) ?? { name: 'constant', args: new Map<string, Expr>() };
  const stageWarmup = dur(sched.args.get('warmup') ?? p.get('warmup'), 0);
  const stageUpdates = dur(p.get('updates'), 0);
  const stageCheckpoint = dur(p.get('checkpoint'), 0);
  const clip = callOf(p.get('clip'));
  const precision = (nameOf(p.get('precision')) as StagePlan['precision'] | undefined) ?? 'fp32';
  const ls = callOf(p.get('loss_scale'));
  const mix = nested(d, 'mix')[0];
  const mixOf = new Map((mix?.block.entries ?? []).filter((e): e is Property => e.kind === 'property').map((e) => [e.key, constNumber(e.value) ?? 0]));
  const taskNames = stageTasks(d);

  const tasks = taskNames.map((name): TaskPlan => {
    const t = decl(name, 'task');
    const tp = props(t);
    const over = props(nested(d, 'task').find((b) => b.label === name) ?? ({} as NestedBlock));
    const head = nameOf(tp.get('head'))!;
    const headDecl = decl(head, 'head');
    const on = headDecl.on ? unparen(headDecl.on) : undefined;
    if (!on || on.kind !== 'member' || nameOf(on.object) === undefined) throw new LowerError(`head '${head}' must be bound to a backbone output (\`on BACKBONE.OUTPUT\`)`);
    const seg = on.segment;
    const loss = callOf(tp.get('loss'));
    const batch = numberOf(over.get('batch') ?? tp.get('batch'));
    const lr = numberOf(over.get('lr')) ?? stageLr;
    if (batch === undefined) throw new LowerError(`task '${name}' has no batch size in stage '${d.name}' (give \`batch\` in the task or in the stage's \`task ${name} { }\` block)`);
    if (lr === undefined) throw new LowerError(`task '${name}' has no learning rate in stage '${d.name}' (give \`lr\` in the stage or its task block)`);
    const updates = dur(over.get('updates'), stageUpdates);
    if (!(updates > 0)) throw new LowerError(`stage '${d.name}' gives no number of updates for task '${name}'`);
    return {
      name,
      head,
      backbone: nameOf(on.object)!,
      backboneOutput: seg.kind === 'field' ? seg.name : '',
      backbonePrecision: (nameOf(props(decl(nameOf(on.object)!, 'backbone')).get('precision')) as TaskPlan['backbonePrecision'] | undefined) ?? 'fp32',
      dataset: datasetPlan(decl(nameOf(tp.get('dataset'))!, 'dataset'), env),
      loss: loss ? { kind: loss.name, args: Object.fromEntries([...loss.args].map(([k, v]) => [k, constNumber(v) ?? NaN])) } : { kind: 'default', args: {} },
      batch,
      lr,
      updates,
      warmup: dur(over.get('warmup'), stageWarmup),
      checkpoint: dur(over.get('checkpoint'), stageCheckpoint),
      weight: mixOf.get(name) ?? 1 / taskNames.length,
    };
  });

  const init = nested(d, 'init').flatMap((b) =>
    b.block.entries.filter((e): e is Property => e.kind === 'property').map((e) => {
      const v = unparen(e.value);
      const src = v.kind === 'member' && v.segment.kind === 'field' ? { stage: nameOf(v.object) ?? '', task: v.segment.name } : { stage: nameOf(v) ?? '', task: '' };
      return { part: e.key, ...src };
    }),
  );
  const exports = nested(d, 'export').map((b): ExportPlan => {
    const bp = props(b);
    return {
      what: b.label ?? '',
      at: items(bp.get('at')).map((x) => durationValue(x) ?? NaN),
      path: str(bp.get('path'), env) ?? `${b.label}_{update}.safetensors`,
      format: (nameOf(bp.get('format')) as 'visft' | 'loralib' | undefined) ?? 'visft',
    };
  });
  const names = (key: string) =>
    items(p.get(key)).map((x) => {
      const n = nameOf(x);
      if (n === undefined) throw new LowerError(`stage '${d.name}': \`${key}\` lists parameter selectors; \`visft train\` takes backbone, head and lora names here`);
      return n;
    });
  return {
    name: d.name,
    index,
    trainNames: names('train'),
    freezeNames: names('freeze'),
    after: items(p.get('after')).map((x) => nameOf(x) ?? ''),
    runs,
    tasks,
    optimizer: {
      kind: opt.name as 'adamw' | 'adam' | 'sgd',
      betas: [betas[0], betas[1]],
      eps: numberOf(opt.args.get('eps')) ?? 1e-8,
      weightDecay: numberOf(opt.args.get('weight_decay')) ?? (opt.name === 'adamw' ? 0.01 : 0),
      momentum: numberOf(opt.args.get('momentum')) ?? 0,
      nesterov: bool(opt.args.get('nesterov')),
    },
    schedule: { kind: sched.name as StagePlan['schedule']['kind'], final: numberOf(sched.args.get('final')) ?? 0 },
    updates: stageUpdates || Math.max(0, ...tasks.map((t) => t.updates)),
    clip: clip ? { kind: clip.name as 'global_norm' | 'value', max: numberOf(clip.args.get(clip.name === 'value' ? 'max' : 'max_norm')) ?? 1 } : { kind: 'none', max: 0 },
    precision,
    lossScale:
      precision !== 'fp16'
        ? { kind: 'none', init: 1, growthInterval: 2000 }
        : ls?.name === 'fixed'
          ? { kind: 'fixed', init: numberOf(ls.args.get('scale')) ?? 1, growthInterval: 2000 }
          : { kind: 'dynamic', init: numberOf(ls?.args.get('init')) ?? 65536, growthInterval: dur(ls?.args.get('growth_interval'), 2000) },
    gradientCheckpointing: bool(p.get('gradient_checkpointing')),
    seed: num('seed', 0),
    init,
    exports,
  };
}

function datasetPlan(d: Decl, env: NodeJS.ProcessEnv): DatasetPlan {
  const c = callOf(d.value);
  const p = props(d);
  const args: Record<string, number | string> = {};
  for (const [k, v] of c?.args ?? []) {
    const n = constNumber(v);
    const s = str(v, env);
    if (n !== undefined) args[k] = n;
    else if (s !== undefined) args[k] = s;
  }
  const norm = callOf(p.get('normalize'));
  const imagenet = { mean: [0.485, 0.456, 0.406] as [number, number, number], std: [0.229, 0.224, 0.225] as [number, number, number] };
  const triple = (e: Expr | undefined, dflt: [number, number, number]): [number, number, number] => {
    const v = numList(e);
    return v.length === 3 ? [v[0], v[1], v[2]] : dflt;
  };
  return {
    name: d.name,
    format: c?.name ?? '',
    args,
    root: str(p.get('root'), env) ?? '.',
    split: str(p.get('split'), env) ?? 'TRAIN',
    mean: norm?.name === 'mean_std' ? triple(norm.args.get('mean'), imagenet.mean) : imagenet.mean,
    std: norm?.name === 'mean_std' ? triple(norm.args.get('std'), imagenet.std) : imagenet.std,
  };
}
