// Resolving a checked pipeline: backbone and head parameters, LoRA targets (selectors matched against
// parameter paths, parts turned into row ranges), and each stage's trainable and frozen sets.
// A selector that matches nothing, or a part that does not exist, is an error with a suggestion.
import type { Decl, Expr, Property } from '../ast.js';
import { closest, didYouMean, type Diagnostics } from '../frontend/diagnostics.js';
import type { LoadedFile } from '../frontend/load.js';
import type { SourceFile } from '../frontend/source.js';
import { segmentKey } from '../check/modules.js';
import { stageTasks } from '../check/declarations.js';
import type { Scope, Symbol } from '../check/scope.js';
import { constNumber, unparen } from '../check/values.js';
import { elaborateModule, evalShape, type ParamInfo, type ShapeValue } from './elaborate.js';

export interface LoraTarget {
  readonly param: string;
  /** Selected output rows, as [start, end) ranges. */
  readonly rows: [number, number][];
  /** All output rows of the parameter (the projection's width). */
  readonly param_rows: number;
  readonly rank: number;
  readonly alpha: number;
  /** Sizes of lora_A ([rank * ranges, in]) and lora_B ([rows, rank]), as loralib's MergedLinear. */
  readonly lora_A: [number, number];
  readonly lora_B: [number, number];
}

export interface ResolvedPipeline {
  readonly backbones: { name: string; module: string; params: number; tensors: ParamInfo[] }[];
  readonly heads: { name: string; module: string; backbone: string; params: number; tensors: ParamInfo[] }[];
  readonly lora: { name: string; backbone: string; params: number; targets: LoraTarget[] }[];
  readonly stages: { name: string; after: string[]; tasks: string[]; trainable: string[]; trainable_params: number; frozen_params: number }[];
}

type ModuleSym = Extract<Symbol, { kind: 'module' }>;

const count = (ts: readonly ParamInfo[]) => ts.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);

function prop(d: Decl, key: string): Property | undefined {
  return d.block?.entries.find((e): e is Property => e.kind === 'property' && e.key === key);
}

function items(e: Expr | undefined): Expr[] {
  if (!e) return [];
  const u = unparen(e);
  return u.kind === 'list' ? [...u.items] : [u];
}

export function resolvePipeline(file: LoadedFile, scope: Scope, scopeOfFile: (f: LoadedFile) => Scope, diags: Diagnostics): ResolvedPipeline {
  const scopeOf = (s: ModuleSym) => scopeOfFile(s.file);
  const src = file.file;
  const decls = [...scope.values()].filter((s): s is Extract<Symbol, { node: Decl }> => s.kind !== 'module');
  const of = (kind: string) => decls.filter((s) => s.kind === kind).map((s) => s.node);
  // A declaration's module resolves in the scope of the file that declares it (imports are not transitive).
  const declaredIn = new Map(decls.map((s) => [s.node, s.file] as const));
  const instance = (d: Decl): { module: string; tensors: ParamInfo[] } | undefined => {
    const v = d.value ? unparen(d.value) : undefined;
    const callee = v?.kind === 'call' ? unparen(v.callee) : v;
    const home = declaredIn.get(d);
    const sym = callee?.kind === 'name' ? (home ? scopeOfFile(home) : scope).get(callee.name) : undefined;
    if (!sym || sym.kind !== 'module' || !callee || callee.kind !== 'name') return undefined;
    const args = new Map<string, ShapeValue>();
    for (const a of v?.kind === 'call' ? v.args : []) {
      const x = a.name ? evalShape(a.value, new Map()) : undefined;
      if (a.name && x !== undefined && !Array.isArray(x)) args.set(a.name, x);
    }
    return { module: callee.name, tensors: elaborateModule(sym, args, { diags, scopeOf }) };
  };

  const backbones = of('backbone').flatMap((d) => {
    const r = instance(d);
    return r ? [{ name: d.name, module: r.module, params: count(r.tensors), tensors: r.tensors }] : [];
  });
  const heads = of('head').flatMap((d) => {
    const r = instance(d);
    const on = d.on ? unparen(d.on) : undefined;
    const backbone = on?.kind === 'member' && unparen(on.object).kind === 'name' ? (unparen(on.object) as { name: string }).name : '';
    return r ? [{ name: d.name, module: r.module, backbone, params: count(r.tensors), tensors: r.tensors }] : [];
  });

  const lora = of('lora').flatMap((d) => {
    const on = d.on ? unparen(d.on) : undefined;
    const bb = backbones.find((b) => on?.kind === 'name' && b.name === on.name);
    if (!bb) return [];
    const rank = constNumber(prop(d, 'rank')?.value ?? { kind: 'error', span: d.nameSpan }) ?? 0;
    const alpha = constNumber(prop(d, 'alpha')?.value ?? { kind: 'number', text: '1', value: 1, span: d.nameSpan }) ?? 1;
    const targets: LoraTarget[] = [];
    for (const sel of items(prop(d, 'targets')?.value)) {
      const matched = matchSelector(sel, bb.tensors, src, diags, bb.name);
      for (const m of matched) {
        if (targets.some((t) => t.param === m.param.path)) continue;
        const rows = m.rows;
        const selectedRows = rows.reduce((n, [a, b]) => n + b - a, 0);
        const inFeatures = m.param.shape.slice(1).reduce((a, b) => a * b, 1);
        targets.push({ param: m.param.path, rows, param_rows: m.param.shape[0] ?? 1, rank, alpha, lora_A: [rank * rows.length, inFeatures], lora_B: [selectedRows, rank] });
      }
    }
    const params = targets.reduce((n, t) => n + t.lora_A[0] * t.lora_A[1] + t.lora_B[0] * t.lora_B[1], 0);
    return [{ name: d.name, backbone: bb.name, params, targets }];
  });

  const stages = of('stage').map((d) => {
    const tasks = stageTasks(d);
    const after = items(prop(d, 'after')?.value).map(unparen).filter((x) => x.kind === 'name').map((x) => (x as { name: string }).name);
    // The stage's model: the backbones and heads its tasks use, plus any LoRA it names.
    const taskHeads = new Set<string>();
    for (const t of tasks) {
      const task = scope.get(t);
      const head = task?.kind === 'task' ? task.node.block?.entries.find((e): e is Property => e.kind === 'property' && e.key === 'head') : undefined;
      const h = head ? unparen(head.value) : undefined;
      if (h?.kind === 'name') taskHeads.add(h.name);
    }
    const named = new Set([...items(prop(d, 'train')?.value), ...items(prop(d, 'freeze')?.value)].map(unparen).filter((x) => x.kind === 'name').map((x) => (x as { name: string }).name));
    const usedHeads = heads.filter((h) => taskHeads.has(h.name) || named.has(h.name));
    const usedBackbones = backbones.filter((b) => usedHeads.some((h) => h.backbone === b.name) || named.has(b.name));
    const usedLora = lora.filter((l) => named.has(l.name));
    const total = usedBackbones.reduce((n, b) => n + b.params, 0) + usedHeads.reduce((n, h) => n + h.params, 0) + usedLora.reduce((n, l) => n + l.params, 0);
    const trainable: string[] = [];
    let trainableParams = 0;
    for (const t of items(prop(d, 'train')?.value)) {
      const u = unparen(t);
      const name = u.kind === 'name' ? u.name : undefined;
      const l = lora.find((x) => x.name === name);
      const h = heads.find((x) => x.name === name);
      const b = backbones.find((x) => x.name === name);
      if (l) trainableParams += l.params;
      else if (h) trainableParams += h.params;
      else if (b) trainableParams += b.params;
      else {
        // A parameter selector on the stage's backbones (`blocks.{38..39}.**`): everything it matches trains.
        for (const bb of usedBackbones.length ? usedBackbones : backbones) {
          for (const m of matchSelector(t, bb.tensors, src, diags, bb.name)) trainableParams += m.param.shape.reduce((a, c) => a * c, 1);
        }
      }
      trainable.push(name ?? describeSelector(t));
    }
    return { name: d.name, after, tasks, trainable, trainable_params: trainableParams, frozen_params: Math.max(0, total - trainableParams) };
  });
  return { backbones, heads, lora, stages };
}

function describeSelector(e: Expr): string {
  const u = unparen(e);
  if (u.kind === 'name') return u.name;
  if (u.kind === 'member') return `${describeSelector(u.object)}.${segmentKey(u.segment)}`;
  if (u.kind === 'index') return `${describeSelector(u.object)}[…]`;
  return '?';
}

type SegmentMatcher = { kind: 'name'; name: string } | { kind: 'set'; values: Set<string> } | { kind: 'one' } | { kind: 'deep' };

/** Matches a selector (`blocks.*.attn.qkv.weight[q, v]`) against parameters; reports when nothing matches. */
export function matchSelector(sel: Expr, params: readonly ParamInfo[], file: SourceFile, diags: Diagnostics, owner: string): { param: ParamInfo; rows: [number, number][] }[] {
  const u = unparen(sel);
  const pathExpr = u.kind === 'index' ? unparen(u.object) : u;
  const segs: SegmentMatcher[] = [];
  let cur: Expr = pathExpr;
  while (cur.kind === 'member') {
    const s = cur.segment;
    if (s.kind === 'field') segs.unshift({ kind: 'name', name: s.name });
    else if (s.kind === 'index') segs.unshift({ kind: 'name', name: String(s.value) });
    else if (s.kind === 'wild') segs.unshift({ kind: s.deep ? 'deep' : 'one' });
    else {
      const v = evalShape(s.expr, new Map());
      const values = Array.isArray(v) ? v.map(String) : v !== undefined ? [String(v)] : [];
      segs.unshift({ kind: 'set', values: new Set(values) });
    }
    cur = unparen(cur.object);
  }
  if (cur.kind !== 'name') return [];
  segs.unshift({ kind: 'name', name: cur.name });
  const text = describeSelector(pathExpr);
  const matches = params.filter((p) => matchSegments(segs, p.path.split('.')));
  if (matches.length === 0) {
    const best = closest(text.replace(/\*\*?|\{[^}]*\}/g, '0'), params.map((p) => p.path));
    diags.error('VF3016', file, pathExpr.span, `selector '${text}' matches no parameter of '${owner}'${best ? `; the nearest parameter is '${best}'` : ''}`);
    return [];
  }
  if (u.kind !== 'index') return matches.map((param) => ({ param, rows: [[0, param.shape[0] ?? 1]] }));
  const out: { param: ParamInfo; rows: [number, number][] }[] = [];
  for (const param of matches) {
    const rowsTotal = param.shape[0] ?? 1;
    const rows: [number, number][] = [];
    for (const it of u.items) {
      if (it.kind === 'at') {
        const name = unparen(it.expr);
        if (name.kind !== 'name') continue;
        const parts = param.parts ?? [];
        const k = parts.indexOf(name.name);
        if (k < 0) {
          diags.error('VF3017', file, it.span, parts.length ? `'${param.path}' has no part '${name.name}' (its parts: ${parts.join(', ')})${didYouMean(name.name, parts)}` : `'${param.path}' declares no parts; select rows with [start:end]`);
          return [];
        }
        const size = rowsTotal / parts.length;
        rows.push([k * size, (k + 1) * size]);
      } else {
        const a = it.from ? evalShape(it.from, new Map()) : 0;
        const b = it.to ? evalShape(it.to, new Map()) : rowsTotal;
        if (typeof a !== 'number' || typeof b !== 'number' || !Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b > rowsTotal || a >= b) {
          diags.error('VF3017', file, it.span, `row range does not fit '${param.path}', which has ${rowsTotal} rows`);
          return [];
        }
        rows.push([a, b]);
      }
    }
    rows.sort((x, y) => x[0] - y[0]);
    out.push({ param, rows });
  }
  return out;
}

function matchSegments(segs: readonly SegmentMatcher[], path: readonly string[]): boolean {
  if (segs.length === 0) return path.length === 0;
  const [s, ...rest] = segs;
  if (s.kind === 'deep') {
    for (let i = 0; i <= path.length; i++) if (matchSegments(rest, path.slice(i))) return true;
    return false;
  }
  if (path.length === 0) return false;
  const ok = s.kind === 'one' || (s.kind === 'name' ? s.name === path[0] : s.values.has(path[0]));
  return ok && matchSegments(rest, path.slice(1));
}
