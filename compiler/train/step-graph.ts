// One training step of one task as a single graph: the backbone (with the stage's LoRA) on the image batch, the
// task's head on the backbone output it is bound to, the task's loss, and the gradients of the loss with
// respect to the stage's trainable parameters only (frozen parts get no backward work). Inputs: the data batch
// (`image` and the head's data inputs, plus what the loss needs), `dropout_salt` (a new integer per update, so
// dropout masks change while the graph stays fixed) and `d:loss` (the loss scale: 1 in fp32). Outputs: `loss`
// and `d:<param>` per trainable parameter.
import { lowPrecisionParams } from './frozen-precision.js';
import type { CheckResult } from '../check/index.js';
import type { Symbol } from '../check/scope.js';
import { unparen } from '../check/values.js';
import type { LoadedFile } from '../frontend/load.js';
import { vjp } from '../autodiff/vjp.js';
import type { Builder } from '../ir/builder.js';
import type { DType, Graph } from '../ir/graph.js';
import { assertVerified } from '../ir/verify.js';
import { evalShape, type ShapeValue } from '../resolve/elaborate.js';
import { declInstance, moduleInputs } from '../lower/entry.js';
import { applyLora, type LoraParams } from '../lower/lora.js';
import { Lowering } from '../lower/lower.js';
import { LowerError } from '../lower/ops.js';
import { optimize, runPass } from '../passes/index.js';
import { attentionPass } from '../passes/attention.js';
import { autocastPass } from '../passes/autocast.js';
import { backwardStart, blockSegments, rematerialize } from '../passes/remat.js';
import type { StagePlan, TaskPlan } from './plan.js';

type ModuleSym = Extract<Symbol, { kind: 'module' }>;

export interface StepParam {
  /** The graph's name: backbone paths as in its checkpoints, head paths prefixed `<head>.`. */
  readonly name: string;
  readonly shape: readonly number[];
  readonly trainable: boolean;
  /** The dtype values are held at (a frozen fp16 backbone's weights: f16); the runners round to it. */
  readonly dtype: DType;
  /** Which declaration owns it (a backbone, head or lora name). */
  readonly part: string;
  readonly init?: string;
  readonly lora?: LoraParams;
}

export interface StepGraph {
  readonly graph: Graph;
  readonly task: TaskPlan;
  readonly params: StepParam[];
  /** Data inputs by name with shapes (those the graph still reads after optimisation). */
  readonly inputs: Map<string, number[]>;
  readonly lora: LoraParams[];
}

export const SALT_INPUT = 'dropout_salt';
export const LOSS_SEED_INPUT = 'd:loss';

/** Why a task cannot be trained by this build (its loss has no lowering yet), or undefined. */
export function untrainableLoss(task: TaskPlan): string | undefined {
  return LOSSES[task.loss.kind] ? undefined : `task '${task.name}': the loss '${task.loss.kind}' cannot be trained yet (trainable losses: ${Object.keys(LOSSES).join(', ')})`;
}

/** Builds the step graph of `task` in `stage`, for a batch of `task.batch` examples. */
export function compileStep(checked: CheckResult, root: LoadedFile, stage: StagePlan, task: TaskPlan, opts: { optimize?: boolean } = {}): StepGraph {
  const scope = checked.scopes.get(root);
  const resolved = checked.resolved.get(root);
  if (!scope || !resolved) throw new LowerError('the pipeline has errors; run `visft check` first');
  const scopeOf = (s: ModuleSym) => checked.scopes.get(s.file) ?? scope;
  const symOf = (name: string, kind: string) => {
    const s = scope.get(name);
    if (!s || s.kind !== kind) throw new LowerError(`no ${kind} named '${name}'`);
    return s as Extract<Symbol, { kind: 'backbone' | 'head' }>;
  };
  const bb = declInstance(checked, scope, symOf(task.backbone, 'backbone'), task.backbone);
  const hd = declInstance(checked, scope, symOf(task.head, 'head'), task.head);
  const B = task.batch;

  const lowering = new Lowering({ scopeOf, training: true, dropoutSalt: SALT_INPUT });
  const b = lowering.b;
  const bbInputs = moduleInputs(bb.module, scopeOf);
  if (bbInputs.length !== 1) throw new LowerError(`backbone '${task.backbone}' must take one image input, not ${bbInputs.map((i) => i.name).join(', ')}`);
  const side = moduleArg(bb.module, bb.args, 'img_size', scopeOf);
  if (typeof side !== 'number') throw new LowerError(`backbone '${task.backbone}' has no img_size: the training image size is unknown`);
  const image = b.input('image', [B, 3, side, side]);
  const bbOut = lowering.instance(bb.module, bb.args, new Map([[bbInputs[0].name, { kind: 'tensor' as const, id: image }]]), '');
  const features = bbOut.get(task.backboneOutput);
  if (!features || features.kind !== 'tensor') throw new LowerError(`backbone '${task.backbone}' has no output '${task.backboneOutput}' (outputs: ${[...bbOut.keys()].join(', ')})`);

  const loss = LOSSES[task.loss.kind];
  if (!loss) throw new LowerError(untrainableLoss(task)!);
  const data = loss.data(task, B);
  const headInputs = moduleInputs(hd.module, scopeOf);
  const given = new Map<string, { kind: 'tensor'; id: number }>();
  for (const [k, i] of headInputs.entries()) {
    if (k === 0) given.set(i.name, { kind: 'tensor', id: features.id });
    else {
      const shape = data.get(i.name);
      if (!shape) throw new LowerError(`head '${task.head}' needs input '${i.name}', which the ${task.dataset.format} data of task '${task.name}' does not provide (it gives ${[...data.keys()].join(', ')})`);
      given.set(i.name, { kind: 'tensor', id: b.input(i.name, shape) });
    }
  }
  const outs = lowering.instance(hd.module, hd.args, given, `${task.head}.`);
  const tensor = (name: string) => {
    const v = outs.get(name);
    if (!v || v.kind !== 'tensor') throw new LowerError(`${task.loss.kind} needs the head output '${name}', which head '${task.head}' does not have (outputs: ${[...outs.keys()].join(', ')})`);
    return v.id;
  };
  const dataInput = (name: string) => b.graph.inputs.find((i) => i.name === name)?.node ?? b.input(name, data.get(name)!);
  b.output('loss', loss.build(b, tensor, dataInput, task.loss.args));

  // The stage's LoRA on this backbone, then what trains.
  let graph = b.graph;
  const loraDecls = resolved.lora.filter((l) => l.backbone === task.backbone && stage.trainNames.concat(stage.freezeNames).includes(l.name));
  let lora: LoraParams[] = [];
  if (loraDecls.length) ({ graph, lora } = applyLora(graph, loraDecls.flatMap((l) => l.targets)));
  const partOf = (name: string): string => {
    const l = lora.find((x) => x.a === name || x.b === name);
    if (l) return loraDecls.find((d) => d.targets.some((t) => t.param === l.target))!.name;
    return name.startsWith(`${task.head}.`) ? task.head : task.backbone;
  };
  const trainable = new Set(graph.params.filter((p) => stage.trainNames.includes(partOf(p.name))).map((p) => p.name));
  if (trainable.size === 0) throw new LowerError(`stage '${stage.name}' trains nothing of task '${task.name}' (train: ${stage.trainNames.join(', ')})`);

  if (task.backbonePrecision !== 'fp32') {
    const frozen = new Set(graph.params.filter((p) => !trainable.has(p.name) && partOf(p.name) === task.backbone).map((p) => p.name));
    if (frozen.size) graph = lowPrecisionParams(graph, frozen, task.backbonePrecision === 'bf16' ? 'bf16' : 'f16');
  }
  graph = runPass(graph, attentionPass);
  if (stage.precision !== 'fp32') graph = runPass(graph, autocastPass(stage.precision === 'bf16' ? 'bf16' : 'f16'));
  const r = vjp(graph, graph.params.filter((p) => trainable.has(p.name)).map((p) => p.node));
  for (const p of graph.params) if (trainable.has(p.name)) r.builder.output(`d:${p.name}`, r.grads.get(p.node)!);
  graph = r.builder.graph;
  assertVerified(graph, 'training step');
  if (opts.optimize !== false) graph = optimize(graph);
  // Gradient checkpointing last: CSE would merge the recomputed copies back into the originals.
  if (stage.gradientCheckpointing) {
    const start = backwardStart(graph);
    graph = rematerialize(graph, start, blockSegments(graph, start));
    assertVerified(graph, 'gradient checkpointing');
  }
  const meta = new Map(lowering.params);
  const params = graph.params.map((p): StepParam => {
    const l = lora.find((x) => x.a === p.name || x.b === p.name);
    return {
      name: p.name,
      shape: graph.node(p.node).shape,
      trainable: trainable.has(p.name),
      dtype: graph.node(p.node).dtype,
      part: partOf(p.name),
      init: meta.get(p.name)?.init ?? (l ? (l.a === p.name ? 'kaiming_uniform(a: sqrt(5))' : 'zeros') : undefined),
      lora: l,
    };
  });
  const inputs = new Map(graph.inputs.map((i) => [i.name, [...graph.node(i.node).shape]]));
  return { graph, task, params, inputs, lora };
}

/** A shape argument of a module instance: given, from a specialisation (`= eva_vit(img_size: 56)`), or the default. */
function moduleArg(m: ModuleSym, args: ReadonlyMap<string, ShapeValue>, name: string, scopeOf: (s: ModuleSym) => Map<string, Symbol>): ShapeValue | undefined {
  if (args.has(name)) return args.get(name) as ShapeValue;
  for (let i = 0; i < 32; i++) {
    const own = m.node.params.find((p) => p.name === name);
    if (m.node.alias) {
      const a = unparen(m.node.alias);
      const given = a.kind === 'call' ? a.args.find((x) => x.name === name) : undefined;
      if (given) return evalShape(given.value, new Map()) as ShapeValue;
      const c = a.kind === 'call' ? unparen(a.callee) : a;
      const next = c.kind === 'name' ? scopeOf(m).get(c.name) : undefined;
      if (!next || next.kind !== 'module') return undefined;
      m = next;
      continue;
    }
    return own?.default ? (evalShape(own.default, new Map()) as ShapeValue) : undefined;
  }
  return undefined;
}

// ------------------------------------------------------------------------------------------------ losses

interface TrainLoss {
  /** The data tensors (beyond `image`) a batch of this task provides, by name, with shapes. */
  data(task: TaskPlan, batch: number): Map<string, number[]>;
  build(b: Builder, headOutput: (name: string) => number, dataInput: (name: string) => number, args: Readonly<Record<string, number>>): number;
}

const LOSSES: Readonly<Record<string, TrainLoss>> = {
  // The original (Show-Attend-Tell): cross-entropy over the packed decode steps (t < caplen - 1) plus
  // alpha_c · mean over images and pixels of (1 - Σ_t α_t)² with α summed over the decoded steps only.
  caption_loss: {
    data: (task, B) => {
      const L = Number(task.dataset.args.max_len ?? 52);
      return new Map([
        ['captions', [B, L]],
        ['caplens', [B]],
        ['targets', [B, L - 1]],
        ['mask', [B, L - 1]],
      ]);
    },
    build: (b, out, data, args) => {
      const scores = out('scores');
      const alphas = out('alphas');
      const [B, T, V] = b.shape(scores);
      const P = b.shape(alphas)[2];
      const targets = data('targets');
      const mask = data('mask');
      const all = (x: number) => b.add('sum', [x], { dims: [...b.shape(x).keys()], keepdim: false });
      const logp = b.add('log_softmax', [scores], { dim: -1 });
      const picked = b.add('reshape', [b.add('gather', [logp, b.add('reshape', [targets], { shape: [B, T, 1] })], { dim: 2 })], { shape: [B, T] });
      const ce = b.add('div', [all(b.mul(b.add('neg', [picked]), mask)), all(mask)]);
      const attended = b.add('sum', [b.mul(alphas, b.add('reshape', [mask], { shape: [B, T, 1] }))], { dims: [1], keepdim: false });
      const miss = b.add('sub', [b.full(1, []), attended]);
      const reg = b.scale(all(b.mul(miss, miss)), 1 / (B * P));
      void V;
      return b.add2(ce, b.scale(reg, args.alpha_c ?? 1));
    },
  },
};
