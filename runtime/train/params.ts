// Where a run's parameter values come from, in order: the run's own checkpoint (resume), the stage's `init`
// block (a part's weights from another stage's finished run), the part's `weights { path }` file, and otherwise
// the declared init (seeded per parameter name; a frozen backbone without weights is random, identically in every
// stage, and the run says so).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Decl } from '../../compiler/ast.js';
import type { CheckResult } from '../../compiler/check/index.js';
import type { LoadedFile } from '../../compiler/frontend/load.js';
import { weightsSpec } from '../../compiler/lower/entry.js';
import type { StepParam } from '../../compiler/train/step-graph.js';
import type { StagePlan } from '../../compiler/train/plan.js';
import { applyKeyRules, loadStateDict, matchWeights, readSafetensors, toFloat64, type HostTensor, type KeyRule } from '../weights/index.js';
import { loadLatestCheckpoint } from './checkpoint.js';
import { initParam } from './init.js';

export class ParamSourceError extends Error {}

export interface ParamValues {
  readonly values: Map<string, Float32Array>;
  /** One line per part saying where its values came from. */
  readonly notes: string[];
}

/** The run directory of a stage's task: `<out>/<stage>/<task>` for per-task stages, `<out>/<stage>/joint` otherwise. */
export function runDirOf(out: string, stage: StagePlan, task?: string): string {
  return join(out, stage.name, stage.runs === 'per_task' ? task ?? stage.tasks[0].name : 'joint');
}

const f32 = (t: HostTensor): Float32Array => (t.dtype === 'f32' ? (t.data as Float32Array) : Float32Array.from(toFloat64(t)));

export function initialValues(params: readonly StepParam[], opts: { checked: CheckResult; root: LoadedFile; stage: StagePlan; stages: readonly StagePlan[]; out: string; seed: number; env?: NodeJS.ProcessEnv }): ParamValues {
  const values = new Map<string, Float32Array>();
  const notes: string[] = [];
  const parts = [...new Set(params.map((p) => p.part))];
  for (const part of parts) {
    const mine = params.filter((p) => p.part === part);
    const from = opts.stage.init.find((i) => i.part === part);
    if (from) {
      const src = opts.stages.find((s) => s.name === from.stage);
      if (!src) throw new ParamSourceError(`stage '${opts.stage.name}' initialises '${part}' from stage '${from.stage}', which this pipeline does not have`);
      const dir = runDirOf(opts.out, src, from.task || undefined);
      const ck = existsSync(dir) ? loadLatestCheckpoint(dir) : undefined;
      if (!ck) throw new ParamSourceError(`stage '${opts.stage.name}' initialises '${part}' from ${from.stage}.${from.task}, but ${dir} has no checkpoint: train stage '${from.stage}' first`);
      if (ck.state.done !== true) throw new ParamSourceError(`stage '${opts.stage.name}' initialises '${part}' from ${dir}, whose run has not finished (update ${ck.update}): resume it first (visft train ... --stage ${from.stage} --resume)`);
      for (const p of mine) {
        const t = ck.weights.get(p.name);
        if (!t) throw new ParamSourceError(`${ck.dir}/weights.safetensors has no '${p.name}' for '${part}'`);
        if (t.shape.join() !== p.shape.join()) throw new ParamSourceError(`${ck.dir}/weights.safetensors: '${p.name}' is [${t.shape.join(', ')}], the model needs [${p.shape.join(', ')}]`);
        values.set(p.name, Float32Array.from(f32(t)));
      }
      notes.push(`${part}: from ${ck.dir}`);
      continue;
    }
    const file = weightsFile(opts.checked, opts.root, part, opts.env ?? process.env);
    const loadable = mine.filter((p) => !p.lora);
    if (file && loadable.length) {
      const loaded = loadPartWeights(file.path, file.rules, loadable, file.allowMissing, part);
      for (const [k, v] of loaded) values.set(k, v);
      notes.push(`${part}: ${loaded.size} tensors from ${file.path}`);
    }
    const rest = mine.filter((p) => !values.has(p.name));
    for (const p of rest) values.set(p.name, initParam(p.name, p.shape, p.init, opts.seed));
    if (rest.length && !(file && loadable.length)) notes.push(`${part}: ${rest.every((p) => p.lora) ? 'LoRA init (A kaiming-uniform, B zeros)' : `initialised from scratch (seed ${opts.seed})${rest.some((p) => !p.trainable) ? ', and frozen: give it weights { path } for a pretrained start' : ''}`}`);
  }
  return { values, notes };
}

/** A part's `weights { path, strip_prefix, drop, allow_missing }`, with the environment substituted. */
function weightsFile(checked: CheckResult, root: LoadedFile, part: string, env: NodeJS.ProcessEnv): { path: string; rules: KeyRule[]; allowMissing: string[] } | undefined {
  const sym = checked.scopes.get(root)?.get(part);
  const spec = sym && (sym.kind === 'backbone' || sym.kind === 'head') ? weightsSpec(sym.node as Decl, env) : undefined;
  if (!spec?.path) return undefined;
  const rules: KeyRule[] = [];
  if (spec.drop.length) rules.push({ op: 'drop', patterns: spec.drop });
  if (spec.strip_prefix) rules.push({ op: 'strip_prefix', prefix: spec.strip_prefix });
  return { path: spec.path, rules, allowMissing: spec.allow_missing };
}

function loadPartWeights(file: string, rules: KeyRule[], params: readonly StepParam[], allowMissing: string[], part: string): Map<string, Float32Array> {
  if (!existsSync(file)) throw new ParamSourceError(`the weights of '${part}' are not at ${file} (set the path in its weights block or the environment variable it names)`);
  const loaded = file.endsWith('.safetensors') ? readSafetensors(file).tensors : loadStateDict(file);
  // Head parameters are named `<head>.<path>` in the step graph and `<path>` in the head's own files.
  const prefix = params.some((p) => p.name.startsWith(`${part}.`)) ? `${part}.` : '';
  const expected = params.map((p) => ({ path: p.name.slice(prefix.length), shape: [...p.shape] }));
  const m = matchWeights(expected, applyKeyRules(loaded, rules), { allowMissing, file });
  if (!m.ok) throw new ParamSourceError(m.error.message);
  return new Map([...m.tensors].map(([k, t]) => [prefix + k, Float32Array.from(f32(t))]));
}
