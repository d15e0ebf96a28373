// Static elaboration of a module instance: evaluates shape parameters, unrolls `repeat`, picks `if`
// branches and follows module calls (with `as` prefixes) to list every parameter with its full checkpoint
// path and concrete shape. Tensor computations are not evaluated here; that is the compiler's lowering.
import type { Expr, ModuleDecl, Path, Stmt } from '../ast.js';
import type { Diagnostics } from '../frontend/diagnostics.js';
import type { SourceFile } from '../frontend/source.js';
import type { Scope, Symbol } from '../check/scope.js';
import { unparen, visitExpr } from '../check/values.js';
import { scalarBinary, scalarUnary } from '../util/scalar.js';

export type ShapeValue = number | boolean | string;

export interface ParamInfo {
  /** Full checkpoint path: `blocks.3.attn.qkv.weight`. */
  readonly path: string;
  readonly shape: readonly number[];
  readonly dtype: string;
  /** Named equal row slices of a fused parameter (`[q, k, v]`). */
  readonly parts?: readonly string[];
}

type ModuleSym = Extract<Symbol, { kind: 'module' }>;

export interface ElabCtx {
  readonly diags: Diagnostics;
  readonly scopeOf: (sym: ModuleSym) => Scope;
}

class ElabError extends Error {
  constructor(readonly file: SourceFile, readonly at: Expr | Path, message: string) {
    super(message);
  }
}

/** Evaluates an expression over shape values; undefined when it depends on tensors or shape symbols. */
export function evalShape(e: Expr, env: Map<string, ShapeValue | undefined>): ShapeValue | ShapeValue[] | undefined {
  const u = unparen(e);
  switch (u.kind) {
    case 'number': return u.value;
    case 'bool': return u.value;
    case 'string': return u.parts.map((p) => (p.kind === 'text' ? p.text : '')).join('');
    case 'name': return env.get(u.name);
    case 'list': {
      const items = u.items.map((i) => evalShape(i, env));
      return items.every((i) => i !== undefined && !Array.isArray(i)) ? (items as ShapeValue[]) : undefined;
    }
    case 'range': {
      const a = evalShape(u.from, env);
      const b = evalShape(u.to, env);
      if (typeof a !== 'number' || typeof b !== 'number') return undefined;
      const out: number[] = [];
      for (let i = a; u.exclusive ? i < b : i <= b; i++) out.push(i);
      return out;
    }
    case 'unary':
      return scalarUnary(u.op, evalShape(u.operand, env));
    case 'binary':
      return scalarBinary(u.op, evalShape(u.left, env), evalShape(u.right, env));
    default:
      return undefined;
  }
}

/**
 * Lists the parameters of `sym` instantiated with `args` (already evaluated), under `prefix`.
 * Errors (a shape that does not evaluate, a recursive module) are reported and elaboration goes on.
 */
export function elaborateModule(sym: ModuleSym, args: Map<string, ShapeValue>, ctx: ElabCtx, prefix = '', stack: ModuleDecl[] = []): ParamInfo[] {
  const out: ParamInfo[] = [];
  try {
    new Elaborator(ctx, out).instance(sym, args, prefix, stack);
  } catch (e) {
    if (!(e instanceof ElabError)) throw e;
    ctx.diags.error('VF4012', e.file, e.at.span, e.message);
  }
  return out;
}

class Elaborator {
  constructor(
    private readonly ctx: ElabCtx,
    private readonly out: ParamInfo[],
  ) {}

  instance(sym: ModuleSym, args: Map<string, ShapeValue>, prefix: string, stack: ModuleDecl[]): void {
    const m = sym.node;
    const file = sym.file.file;
    if (stack.includes(m)) throw new ElabError(file, m.alias ?? { kind: 'name', name: m.name, span: m.nameSpan }, `module '${m.name}' instantiates itself`);
    const scope = this.ctx.scopeOf(sym);
    if (m.alias) {
      // A specialisation: its bound arguments, overridden by the caller's.
      const call = unparen(m.alias);
      const callee = call.kind === 'call' ? unparen(call.callee) : call;
      const target = callee.kind === 'name' ? scope.get(callee.name) : undefined;
      if (!target || target.kind !== 'module') return;
      const merged = new Map<string, ShapeValue>();
      for (const a of call.kind === 'call' ? call.args : []) {
        if (!a.name) continue;
        const v = evalShape(a.value, new Map());
        if (v !== undefined && !Array.isArray(v)) merged.set(a.name, v);
      }
      for (const [k, v] of args) merged.set(k, v);
      return this.instance(target, merged, prefix, [...stack, m]);
    }
    const env = new Map<string, ShapeValue | undefined>();
    for (const p of m.params) {
      if (args.has(p.name)) env.set(p.name, args.get(p.name));
      else if (p.default) {
        const v = evalShape(p.default, env);
        env.set(p.name, Array.isArray(v) ? undefined : v);
      } else throw new ElabError(file, { kind: 'name', name: p.name, span: p.nameSpan }, `module '${m.name}' needs a value for '${p.name}'`);
    }
    this.stmts(m.body ?? [], env, { sym, scope, prefix, stack: [...stack, m] });
  }

  private stmts(list: readonly Stmt[], env: Map<string, ShapeValue | undefined>, at: Frame): void {
    for (const s of list) this.stmt(s, env, at);
  }

  private stmt(s: Stmt, env: Map<string, ShapeValue | undefined>, at: Frame): void {
    const file = at.sym.file.file;
    switch (s.kind) {
      case 'input':
        env.set(s.name, undefined);
        return;
      case 'param': {
        const path = at.prefix + this.path(s.path, env, file);
        const shape = (s.type.dims ?? []).map((d) => {
          const v = evalShape(d, env);
          if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
            throw new ElabError(file, d, `the shape of parameter '${path}' must be a whole number known before running, but this ${v === undefined ? 'depends on inputs or unknown values' : `is ${JSON.stringify(v)}`}`);
          }
          return v;
        });
        const partsEntry = s.block?.entries.find((e) => e.kind === 'property' && e.key === 'parts');
        const partsExpr = partsEntry?.kind === 'property' ? unparen(partsEntry.value) : undefined;
        const parts = partsExpr?.kind === 'list' ? partsExpr.items.map((i) => unparen(i)).filter((i) => i.kind === 'name').map((i) => (i as { name: string }).name) : undefined;
        if (parts && shape.length > 0 && shape[0] % parts.length !== 0) {
          throw new ElabError(file, s.path, `parameter '${path}' has ${shape[0]} rows, which do not split into ${parts.length} equal parts`);
        }
        this.out.push({ path, shape, dtype: s.type.name ?? 'f32', parts });
        return;
      }
      case 'let':
      case 'assign': {
        this.calls(s.value, env, at);
        const v = evalShape(s.value, env);
        env.set(s.name, Array.isArray(v) ? undefined : v);
        return;
      }
      case 'output':
        if (s.value) this.calls(s.value, env, at);
        return;
      case 'repeat': {
        const range = evalShape(s.range, env);
        // A range over input sizes (a caption's length) is unrolled when the shapes are known; its body
        // still declares the same parameters on every step, so one pass with the index unknown lists them.
        for (const i of Array.isArray(range) ? range : [undefined]) {
          const inner = new Map(env);
          inner.set(s.variable, i);
          this.stmts(s.body, inner, at);
          // Rebinding an outer name inside the body carries over (loop-carried values).
          for (const [k, v] of inner) if (env.has(k) && k !== s.variable) env.set(k, v);
        }
        return;
      }
      case 'if': {
        const cond = evalShape(s.cond, env);
        if (typeof cond !== 'boolean') throw new ElabError(file, s.cond, 'an `if` condition must be true or false before running (shape parameters only)');
        const inner = new Map(env);
        this.stmts(cond ? s.then : (s.else ?? []), inner, at);
        for (const [k, v] of inner) if (env.has(k)) env.set(k, v);
        return;
      }
    }
  }

  /** Follows module calls inside an expression: each instance's parameters go under its `as` path. */
  private calls(e: Expr, env: Map<string, ShapeValue | undefined>, at: Frame): void {
    const prefixed = new Map<Expr, string>();
    visitExpr(e, (x) => {
      if (x.kind === 'as') prefixed.set(unparen(x.expr), this.path(x.path, env, at.sym.file.file) + '.');
    });
    visitExpr(e, (x) => {
      if (x.kind !== 'call') return;
      const callee = unparen(x.callee);
      const target = callee.kind === 'name' ? at.scope.get(callee.name) : undefined;
      if (!target || target.kind !== 'module') return;
      const args = new Map<string, ShapeValue>();
      for (const a of x.args) {
        if (!a.name) continue;
        const v = evalShape(a.value, env);
        if (v !== undefined && !Array.isArray(v)) args.set(a.name, v);
      }
      this.instance(target, args, at.prefix + (prefixed.get(x) ?? ''), at.stack);
    });
  }

  private path(p: Path, env: Map<string, ShapeValue | undefined>, file: SourceFile): string {
    const parts = [p.head];
    for (const s of p.segments) {
      if (s.kind === 'field') parts.push(s.name);
      else if (s.kind === 'index') parts.push(String(s.value));
      else if (s.kind === 'interp') {
        const v = evalShape(s.expr, env);
        if (v === undefined || Array.isArray(v)) throw new ElabError(file, p, `segment {…} of this path must be known before running`);
        parts.push(String(v));
      } else throw new ElabError(file, p, 'a parameter path cannot contain wildcards');
    }
    return parts.join('.');
  }
}

interface Frame {
  readonly sym: ModuleSym;
  readonly scope: Scope;
  readonly prefix: string;
  readonly stack: ModuleDecl[];
}
