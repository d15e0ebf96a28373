// Running a bundle on the `cpu` backend (the float64 reference interpreter): weights in (safetensors or
// torch zip, with the pipeline's key rules, strictly matched), named inputs in, named outputs out.
import { interpret } from '../compiler/ir/interpret.js';
import type { RefTensor } from '../compiler/ir/rules/reference.js';
import type { Bundle } from '../compiler/bundle.js';
import type { Graph } from '../compiler/ir/graph.js';
import { applyKeyRules, loadStateDict, matchWeights, readSafetensors, toFloat64, type HostTensor, type KeyRule } from './weights/index.js';
import { fsErrorReason } from './weights/io.js';

export class RunInputError extends Error {}

/** `read()`, a file-system failure (no such file, a folder, no permission) said as what could not be read. */
function readOrFail<T>(what: string, file: string, read: () => T): T {
  try {
    return read();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!code) throw e;
    throw new RunInputError(`cannot read ${what} ${file}: ${fsErrorReason(code)}`);
  }
}

/** Loads one or more weight files (later files may add keys, never repeat them) and applies the bundle's key rules. */
export function loadWeights(files: readonly string[], bundle: Bundle): Map<string, RefTensor> {
  const merged = new Map<string, HostTensor>();
  for (const file of files) {
    const loaded = readOrFail('weights', file, () => (file.endsWith('.safetensors') ? readSafetensors(file).tensors : loadStateDict(file)));
    const rules: KeyRule[] = [];
    if (bundle.weights?.drop.length) rules.push({ op: 'drop', patterns: bundle.weights.drop });
    if (bundle.weights?.strip_prefix) rules.push({ op: 'strip_prefix', prefix: bundle.weights.strip_prefix });
    for (const [k, t] of applyKeyRules(loaded, rules)) {
      if (merged.has(k)) throw new RunInputError(`'${k}' is in more than one weights file (the second is ${file})`);
      merged.set(k, t);
    }
  }
  const expected = bundle.params.map((p) => ({ path: p.name, shape: p.shape }));
  const m = matchWeights(expected, merged, { allowMissing: bundle.weights?.allow_missing ?? [], file: files.join(' + ') });
  if (!m.ok) throw new RunInputError(m.error.message);
  const out = new Map<string, RefTensor>();
  for (const [k, t] of m.tensors) out.set(k, { shape: t.shape, data: toFloat64(t) });
  const missing = bundle.params.filter((p) => !out.has(p.name));
  if (missing.length) throw new RunInputError(`no values for ${missing.map((p) => p.name).join(', ')} (allowed missing, but the cpu backend does not initialise parameters yet)`);
  return out;
}

/** The bundle's inputs from a safetensors file; a tensor the bundle does not take goes to `warn` (a misspelt name, say). */
export function loadInputs(file: string, bundle: Bundle, warn: (message: string) => void = () => {}): Map<string, RefTensor> {
  const { tensors } = readOrFail('inputs', file, () => readSafetensors(file));
  const names = bundle.inputs.map((spec) => spec.name);
  const unused = [...tensors.keys()].filter((k) => !names.includes(k));
  if (unused.length) warn(`${file}: ${unused.map((k) => `'${k}'`).join(', ')} ${unused.length === 1 ? 'is not an input' : 'are not inputs'} of the bundle (its inputs: ${names.join(', ') || 'none'}); ignored`);
  const out = new Map<string, RefTensor>();
  const problems: string[] = [];
  for (const spec of bundle.inputs) {
    const t = tensors.get(spec.name);
    if (!t) problems.push(`missing input '${spec.name}' [${spec.shape.join(', ')}]`);
    else if (t.shape.join() !== spec.shape.join()) problems.push(`input '${spec.name}' has shape [${t.shape.join(', ')}], the bundle was compiled for [${spec.shape.join(', ')}]`);
    else out.set(spec.name, { shape: t.shape, data: toFloat64(t) });
  }
  if (problems.length) throw new RunInputError(`${file}: ${problems.join('; ')}`);
  return out;
}

export function runCpu(graph: Graph, inputs: ReadonlyMap<string, RefTensor>, params: ReadonlyMap<string, RefTensor>): Map<string, RefTensor> {
  return interpret(graph, inputs, params);
}
