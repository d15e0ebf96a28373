// Compiling an entry: a backbone or head declaration (or a bare module) of a checked pipeline, lowered for
// given input shapes, with the stage's LoRA applied and, for --vjp, the gradients of the stage's
// trainable parameters. Frozen parameters get no backward work (autodiff prunes them).
import type { Decl, Expr } from '../ast.js';
import type { CheckResult } from '../check/index.js';
import type { Symbol } from '../check/scope.js';
import { unparen } from '../check/values.js';
import { interpolate } from '../frontend/literals.js';
import type { LoadedFile } from '../frontend/load.js';
import { vjp } from '../autodiff/vjp.js';
import type { DType, Graph } from '../ir/graph.js';
import { evalShape, type ShapeValue } from '../resolve/elaborate.js';
import { matchSelector, type LoraTarget, type ResolvedPipeline } from '../resolve/pipeline.js';
import { Diagnostics } from '../frontend/diagnostics.js';
import { applyLora, type LoraParams } from './lora.js';
import { Lowering, type ParamMeta } from './lower.js';
import { LowerError } from './ops.js';
import { checkSeedShapes, splitSeedShapes } from './seed-shapes.js';
import { optimize, runPass } from '../passes/index.js';
import { autocastPass } from '../passes/autocast.js';
import { attentionPass } from '../passes/attention.js';
import { assertVerified } from '../ir/verify.js';

type ModuleSym = Extract<Symbol, { kind: 'module' }>;

export interface EntryOptions {
  readonly entry: string;
  readonly stage?: string;
  readonly vjp?: boolean;
  /** Input shapes by name (`image` → [1, 3, 56, 56]). */
  readonly shapes: ReadonlyMap<string, readonly number[]>;
  readonly training?: boolean;
  /** Run the optimisation passes (default true). */
  readonly optimize?: boolean;
  /** Mixed precision as a training step of that precision applies it (compiler/passes/autocast.ts). */
  readonly autocast?: 'f16' | 'bf16';
}

export interface WeightsSpec {
  readonly path?: string;
  readonly strip_prefix?: string;
  readonly drop: string[];
  readonly allow_missing: string[];
}

export interface CompiledEntry {
  readonly graph: Graph;
  readonly entry: string;
  readonly stage?: string;
  readonly params: (ParamMeta & { trainable: boolean; lora?: LoraParams })[];
  readonly lora: LoraParams[];
  readonly weights?: WeightsSpec;
}

export function compileEntry(checked: CheckResult, root: LoadedFile, opts: EntryOptions): CompiledEntry {
  const scope = checked.scopes.get(root);
  const resolved = checked.resolved.get(root);
  if (!scope || !resolved) throw new LowerError('the pipeline has errors; run `visft check` first');
  const scopeOf = (s: ModuleSym) => checked.scopes.get(s.file) ?? scope;
  const sym = scope.get(opts.entry);
  if (!sym) {
    const names = [...scope].filter(([, s]) => s.kind === 'backbone' || s.kind === 'head' || s.kind === 'module').map(([n]) => n);
    throw new LowerError(`no backbone, head or module named '${opts.entry}' (entries: ${names.join(', ')})`);
  }
  // The module to instantiate, its shape arguments, and the declaration (for weights and stages).
  let module: ModuleSym;
  let args = new Map<string, ShapeValue>();
  let decl: Decl | undefined;
  if (sym.kind === 'module') module = sym;
  else if (sym.kind === 'backbone' || sym.kind === 'head') {
    decl = sym.node;
    ({ module, args } = declInstance(checked, scope, sym, opts.entry));
  } else throw new LowerError(`'${opts.entry}' is a ${sym.kind}; an entry is a backbone, a head or a module`);

  const lowering = new Lowering({ scopeOf, training: opts.training });
  const b = lowering.b;
  const inputs = moduleInputs(module, scopeOf);
  const given = new Map<string, { kind: 'tensor'; id: number }>();
  const { inputs: shapes, seeds } = splitSeedShapes(opts.shapes, opts.vjp === true);
  const missing = inputs.filter((i) => !shapes.has(i.name));
  if (missing.length) throw new LowerError(`give the input shapes with --shape: ${missing.map((i) => `${i.name}=${i.example}`).join(' ')}`);
  for (const extra of shapes.keys()) if (!inputs.some((i) => i.name === extra)) throw new LowerError(`'${opts.entry}' has no input '${extra}' (inputs: ${inputs.map((i) => i.name).join(', ')})`);
  for (const i of inputs) given.set(i.name, { kind: 'tensor', id: b.input(i.name, shapes.get(i.name)!, i.dtype) });
  const outs = lowering.instance(module, args, given, '');
  for (const [name, v] of outs) {
    if (v.kind !== 'tensor') throw new LowerError(`output '${name}' is not a tensor`);
    b.output(name, v.id);
  }

  // The stage: LoRA it names on this backbone, and what trains.
  const stage = opts.stage === undefined ? undefined : resolved.stages.find((s) => s.name === opts.stage);
  if (opts.stage !== undefined && !stage) throw new LowerError(`no stage '${opts.stage}' (stages: ${resolved.stages.map((s) => s.name).join(', ') || 'none'})`);
  const stageDecl = stage ? (scope.get(stage.name)?.node as Decl | undefined) : undefined;
  const named = (key: string) => {
    const e = stageDecl?.block?.entries.find((x) => x.kind === 'property' && x.key === key);
    if (!e || e.kind !== 'property') return [];
    const u = unparen(e.value);
    return u.kind === 'list' ? u.items : [u];
  };
  const loras = decl ? resolved.lora.filter((l) => l.backbone === decl!.name && [...named('train'), ...named('freeze')].some((x) => unparen(x).kind === 'name' && (unparen(x) as { name: string }).name === l.name)) : [];
  let graph = b.graph;
  let loraParams: LoraParams[] = [];
  if (loras.length) {
    const applied = applyLora(graph, loras.flatMap((l) => l.targets as LoraTarget[]));
    graph = applied.graph;
    loraParams = applied.lora;
  }
  const trainable = trainableParams(graph, opts, stage, named('train'), resolved, decl, loraParams, root);

  // Attention written out as ops becomes the attention op (flash kernels) before its gradient is taken.
  graph = runPass(graph, attentionPass);
  if (opts.autocast) graph = runPass(graph, autocastPass(opts.autocast));
  if (opts.vjp) {
    checkSeedShapes(seeds, graph);
    const wrt = graph.params.filter((p) => trainable.has(p.name));
    const r = vjp(graph, wrt.map((p) => p.node));
    for (const p of wrt) r.builder.output(`d:${p.name}`, r.grads.get(p.node)!);
    graph = r.builder.graph;
  }
  assertVerified(graph, 'lowering');
  if (opts.optimize !== false) graph = optimize(graph, { afterPass: (name, g) => assertVerified(g, name) });
  const meta = new Map(lowering.params);
  const params = graph.params.map((p) => {
    const m = meta.get(p.name);
    const lora = loraParams.find((l) => l.a === p.name || l.b === p.name);
    return { path: p.name, node: p.node, init: m?.init ?? (lora ? (lora.a === p.name ? 'kaiming_uniform(a: sqrt(5))' : 'zeros') : undefined), parts: m?.parts, trainable: trainable.has(p.name), lora };
  });
  return { graph, entry: opts.entry, stage: opts.stage, params, lora: loraParams, weights: decl ? weightsSpec(decl) : undefined };
}

/** The module a backbone or head declaration instantiates, and its constant shape arguments. */
export function declInstance(checked: CheckResult, scope: Map<string, Symbol>, sym: { readonly node: Decl; readonly file: LoadedFile }, name: string): { module: ModuleSym; args: Map<string, ShapeValue> } {
  const decl = sym.node;
  const v = decl.value ? unparen(decl.value) : undefined;
  const callee = v?.kind === 'call' ? unparen(v.callee) : v;
  const m = callee?.kind === 'name' ? (checked.scopes.get(sym.file) ?? scope).get(callee.name) : undefined;
  if (!m || m.kind !== 'module') throw new LowerError(`'${name}' is not an instance of a module`);
  const args = new Map<string, ShapeValue>();
  for (const a of v?.kind === 'call' ? v.args : []) {
    const x = a.name ? evalShape(a.value, new Map()) : undefined;
    if (a.name && x !== undefined && !Array.isArray(x)) args.set(a.name, x);
  }
  return { module: m, args };
}

/** The module's inputs with their dtypes and an example shape for messages. */
export function moduleInputs(sym: ModuleSym, scopeOf: (s: ModuleSym) => Map<string, Symbol>): { name: string; dtype: DType; example: string }[] {
  let m = sym;
  for (let i = 0; i < 32 && m.node.alias; i++) {
    const a = unparen(m.node.alias);
    const c = a.kind === 'call' ? unparen(a.callee) : a;
    const next = c.kind === 'name' ? scopeOf(m).get(c.name) : undefined;
    if (!next || next.kind !== 'module') break;
    m = next;
  }
  return (m.node.body ?? []).flatMap((s) => (s.kind === 'input' ? [{ name: s.name, dtype: (s.type.name as DType | undefined) ?? 'f32', example: (s.type.dims ?? []).map((d) => (unparen(d).kind === 'name' ? (unparen(d) as { name: string }).name : m.file.file.slice(d.span))).join('x') }] : []));
}

function trainableParams(graph: Graph, opts: EntryOptions, stage: ResolvedPipeline['stages'][number] | undefined, train: readonly import('../ast.js').Expr[], resolved: ResolvedPipeline, decl: Decl | undefined, lora: LoraParams[], root: LoadedFile): Set<string> {
  const all = graph.params.map((p) => p.name);
  if (!stage) return new Set(all); // no stage: every parameter of the entry
  const out = new Set<string>();
  for (const t of train) {
    const u = unparen(t);
    const name = u.kind === 'name' ? u.name : undefined;
    if (name !== undefined && resolved.lora.some((l) => l.name === name)) {
      for (const l of lora) if (resolved.lora.find((x) => x.name === name)?.targets.some((x) => x.param === l.target)) (out.add(l.a), out.add(l.b));
    } else if (name !== undefined && decl && name === decl.name) all.forEach((p) => out.add(p));
    else if (name !== undefined && (resolved.heads.some((h) => h.name === name) || resolved.backbones.some((x) => x.name === name))) continue; // another model part
    else {
      const diags = new Diagnostics();
      const infos = graph.params.map((p) => ({ path: p.name, shape: graph.node(p.node).shape, dtype: graph.node(p.node).dtype }));
      for (const m of matchSelector(t, infos, root.file, diags, opts.entry)) out.add(m.param.path);
    }
  }
  return out;
}

/**
 * A declaration's `weights { }` block. Strings keep their `${NAME:-default}` parts (a bundle stays portable), or,
 * given `env`, have them substituted (for reading the file now).
 */
export function weightsSpec(decl: Decl, env?: NodeJS.ProcessEnv): WeightsSpec | undefined {
  const w = decl.block?.entries.find((e) => e.kind === 'nested' && e.key === 'weights');
  if (!w || w.kind !== 'nested') return undefined;
  const get = (k: string) => {
    const e = w.block.entries.find((x) => x.kind === 'property' && x.key === k);
    return e?.kind === 'property' ? unparen(e.value) : undefined;
  };
  const text = (v: Expr): string | undefined =>
    v.kind !== 'string' ? undefined : env ? interpolate(v.parts, env) : v.parts.map((p) => (p.kind === 'text' ? p.text : `\${${p.name}${p.fallback !== undefined ? ':-' + p.fallback : ''}}`)).join('');
  const str = (k: string) => {
    const v = get(k);
    return v ? text(v) : undefined;
  };
  const strs = (k: string) => {
    const v = get(k);
    const items = v?.kind === 'list' ? v.items.map(unparen) : [];
    return items.flatMap((i) => (i.kind !== 'string' ? [] : [env ? interpolate(i.parts, env) : i.raw]));
  };
  return { path: str('path'), strip_prefix: str('strip_prefix'), drop: strs('drop'), allow_missing: strs('allow_missing') };
}
