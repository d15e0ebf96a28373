// Lowering: evaluates a module instance over concrete input shapes into the IR. Shape values are computed
// here (symbols bound from the inputs, `repeat` unrolled, `if` decided); tensor expressions become nodes.
// Parameters keep their checkpoint paths (`blocks.3.attn.qkv.weight`).
import type { Expr, ModuleDecl, Path, Stmt, TypeExpr } from '../ast.js';
import type { Scope, Symbol } from '../check/scope.js';
import { unparen } from '../check/values.js';
import type { SourceFile } from '../frontend/source.js';
import { Builder } from '../ir/builder.js';
import type { DType } from '../ir/graph.js';
import { ShapeError } from '../ir/rules/shape.js';
import { isOpName, OPS, type OpSignature } from '../ops/catalog.js';
import { LOWER, LowerError, type ShapeValue, type Value } from './ops.js';
import { scalarBinary, scalarUnary } from '../util/scalar.js';
import { Scopes } from '../util/scopes.js';

type ModuleSym = Extract<Symbol, { kind: 'module' }>;

export interface ParamMeta {
  readonly path: string;
  readonly node: number;
  readonly init?: string;
  readonly parts?: readonly string[];
}

export interface LowerOptions {
  readonly scopeOf: (sym: ModuleSym) => Scope;
  readonly training?: boolean;
  /** Give dropout a per-update salt: a scalar input of this name (created on first use). */
  readonly dropoutSalt?: string;
}

/** A lowering error located in the source, for `path:line:col` messages. */
export class LocatedLowerError extends Error {
  constructor(readonly file: SourceFile, readonly at: { start: number; end: number }, message: string) {
    super(message);
  }
  where(): string {
    const { line, col } = this.file.position(this.at.start);
    return `${this.file.path}:${line}:${col}`;
  }
}

const T = (id: number): Value => ({ kind: 'tensor', id });
const S = (v: ShapeValue): Value => ({ kind: 'shape', v });

export class Lowering {
  readonly b = new Builder();
  readonly params = new Map<string, ParamMeta>();
  private seedCounter = 0;
  private readonly stack: ModuleDecl[] = [];

  private salt: number | undefined;

  constructor(private readonly opts: LowerOptions) {}

  private saltInput(): number {
    return (this.salt ??= this.b.input(this.opts.dropoutSalt!, [1], 'f32'));
  }

  /**
   * Instantiates `sym` with shape arguments `args` and tensor inputs `inputs`; returns its outputs by name.
   * Parameters are created under `prefix`.
   */
  instance(sym: ModuleSym, args: ReadonlyMap<string, ShapeValue>, inputs: ReadonlyMap<string, Value>, prefix: string): Map<string, Value> {
    const m = sym.node;
    const file = sym.file.file;
    const scope = this.opts.scopeOf(sym);
    if (this.stack.includes(m)) throw new LocatedLowerError(file, m.nameSpan, `module '${m.name}' instantiates itself`);
    if (m.alias) {
      const call = unparen(m.alias);
      const callee = call.kind === 'call' ? unparen(call.callee) : call;
      const target = callee.kind === 'name' ? scope.get(callee.name) : undefined;
      if (!target || target.kind !== 'module') throw new LocatedLowerError(file, m.alias.span, `'${m.name}' does not specialise a module`);
      const merged = new Map<string, ShapeValue>();
      const env = new Env();
      for (const a of call.kind === 'call' ? call.args : []) {
        if (a.name) merged.set(a.name, this.shapeOf(this.expr(a.value, env, { sym, scope, prefix }), file, a.value));
      }
      for (const [k, v] of args) merged.set(k, v);
      this.stack.push(m);
      try {
        return this.instance(target, merged, inputs, prefix);
      } finally {
        this.stack.pop();
      }
    }
    const env = new Env();
    const frame: Frame = { sym, scope, prefix };
    for (const p of m.params) {
      if (args.has(p.name)) env.set(p.name, S(args.get(p.name)!));
      else if (p.default) env.set(p.name, this.expr(p.default, env, frame));
      else throw new LocatedLowerError(file, p.nameSpan, `module '${m.name}' needs a value for '${p.name}'`);
    }
    const outputs = new Map<string, Value>();
    this.stack.push(m);
    try {
      this.stmts(m.body ?? [], env, frame, inputs, outputs);
    } finally {
      this.stack.pop();
    }
    return outputs;
  }

  private stmts(list: readonly Stmt[], env: Env, f: Frame, inputs: ReadonlyMap<string, Value>, outputs: Map<string, Value>): void {
    for (const s of list) this.stmt(s, env, f, inputs, outputs);
  }

  private stmt(s: Stmt, env: Env, f: Frame, inputs: ReadonlyMap<string, Value>, outputs: Map<string, Value>): void {
    const file = f.sym.file.file;
    switch (s.kind) {
      case 'input': {
        const v = inputs.get(s.name);
        if (!v || v.kind !== 'tensor') throw new LocatedLowerError(file, s.nameSpan, `input '${s.name}' of module '${f.sym.node.name}' is not given`);
        this.bindType(s.type, this.b.shape(v.id), env, f, `input '${s.name}'`, s.nameSpan);
        env.set(s.name, v);
        return;
      }
      case 'param': {
        const path = f.prefix + this.path(s.path, env, f);
        const shape = (s.type.dims ?? []).map((d) => this.int(this.expr(d, env, f), file, d, `a dim of parameter '${path}'`));
        let node = this.params.get(path)?.node;
        if (node === undefined) {
          node = this.b.param(path, shape, (s.type.name as DType | undefined) ?? 'f32');
          const init = s.block?.entries.find((e) => e.kind === 'property' && e.key === 'init');
          const parts = s.block?.entries.find((e) => e.kind === 'property' && e.key === 'parts');
          const list = parts?.kind === 'property' ? unparen(parts.value) : undefined;
          const partNames = list?.kind === 'list' ? list.items.map((i) => { const n = unparen(i); return n.kind === 'name' ? n.name : ''; }) : undefined;
          this.params.set(path, { path, node, init: init?.kind === 'property' ? file.slice(init.value.span) : undefined, parts: partNames });
        }
        return;
      }
      case 'let':
        env.define(s.name, this.expr(s.value, env, f));
        return;
      case 'assign':
        env.set(s.name, this.expr(s.value, env, f));
        return;
      case 'output': {
        if (!s.value) throw new LocatedLowerError(file, s.nameSpan, `output '${s.name}' of module '${f.sym.node.name}' has no body yet, so it cannot be compiled`);
        const v = this.expr(s.value, env, f);
        if (s.type && v.kind === 'tensor') this.bindType(s.type, this.b.shape(v.id), env, f, `output '${s.name}'`, s.nameSpan);
        env.set(s.name, v);
        outputs.set(s.name, v);
        return;
      }
      case 'repeat': {
        const range = this.expr(s.range, env, f);
        if (range.kind !== 'shape' || !Array.isArray(range.v)) throw new LocatedLowerError(file, s.range.span, 'repeat needs a range known before running');
        for (const i of range.v) {
          env.push();
          env.set(s.variable, S(i));
          this.stmts(s.body, env, f, inputs, outputs);
          env.pop();
        }
        return;
      }
      case 'if': {
        const c = this.expr(s.cond, env, f);
        if (c.kind !== 'shape' || typeof c.v !== 'boolean') throw new LocatedLowerError(file, s.cond.span, 'an `if` condition must be true or false before running');
        env.push();
        this.stmts(c.v ? s.then : (s.else ?? []), env, f, inputs, outputs);
        env.pop();
        return;
      }
    }
  }

  /** Checks a declared type against a tensor shape, binding new shape symbols (B, H, W, ...). */
  private bindType(t: TypeExpr, shape: readonly number[], env: Env, f: Frame, what: string, span: { start: number; end: number }): void {
    const file = f.sym.file.file;
    const dims = t.dims ?? [];
    if (dims.length !== shape.length) throw new LocatedLowerError(file, span, `${what} has rank ${shape.length} ([${shape.join(', ')}]), but its type says ${dims.length} dims`);
    dims.forEach((d, i) => {
      const u = unparen(d);
      if (u.kind === 'name' && env.get(u.name) === undefined) {
        env.set(u.name, S(shape[i]));
        return;
      }
      const v = this.expr(d, env, f);
      if (v.kind !== 'shape' || v.v !== shape[i]) throw new LocatedLowerError(file, d.span, `${what}: dim ${i} is ${shape[i]}, but the type says ${v.kind === 'shape' ? JSON.stringify(v.v) : 'a tensor'}`);
    });
  }

  private path(p: Path, env: Env, f: Frame): string {
    const parts = [p.head];
    for (const s of p.segments) {
      if (s.kind === 'field') parts.push(s.name);
      else if (s.kind === 'index') parts.push(String(s.value));
      else if (s.kind === 'interp') parts.push(String(this.shapeOf(this.expr(s.expr, env, f), f.sym.file.file, s.expr)));
      else throw new LocatedLowerError(f.sym.file.file, s.span, 'a parameter path cannot contain wildcards');
    }
    return parts.join('.');
  }

  private shapeOf(v: Value, file: SourceFile, at: Expr): ShapeValue {
    if (v.kind !== 'shape') throw new LocatedLowerError(file, at.span, 'expected a value known before running (a shape value), found a tensor');
    return v.v;
  }

  private int(v: Value, file: SourceFile, at: Expr, what: string): number {
    if (v.kind !== 'shape' || typeof v.v !== 'number' || !Number.isInteger(v.v) || v.v < 0) throw new LocatedLowerError(file, at.span, `${what} must be a whole number, got ${v.kind === 'shape' ? JSON.stringify(v.v) : 'a tensor'}`);
    return v.v;
  }

  /** Evaluates an expression to a shape value, a tensor node or a record of named results. */
  expr(e: Expr, env: Env, f: Frame): Value {
    const file = f.sym.file.file;
    const u = unparen(e);
    try {
      switch (u.kind) {
        case 'number': return S(u.value);
        case 'bool': return S(u.value);
        case 'string': return S(u.parts.map((p) => (p.kind === 'text' ? p.text : '')).join(''));
        case 'list': return S(u.items.map((i) => this.shapeOf(this.expr(i, env, f), file, i)));
        case 'range': {
          const a = this.int(this.expr(u.from, env, f), file, u.from, 'a range bound');
          const bnd = this.int(this.expr(u.to, env, f), file, u.to, 'a range bound');
          const out: number[] = [];
          for (let i = a; u.exclusive ? i < bnd : i <= bnd; i++) out.push(i);
          return S(out);
        }
        case 'name': {
          const v = env.get(u.name);
          if (v) return v;
          const p = this.params.get(f.prefix + u.name);
          if (p) return T(p.node);
          throw new LocatedLowerError(file, u.span, `'${u.name}' has no value here`);
        }
        case 'member': return this.member(u, env, f);
        case 'unary': {
          const v = this.expr(u.operand, env, f);
          if (v.kind === 'tensor') {
            if (u.op !== '-') throw new LocatedLowerError(file, u.span, '`not` works on shape values only');
            return T(this.b.add('neg', [v.id]));
          }
          const r = scalarUnary(u.op, v.kind === 'shape' ? v.v : undefined);
          if (r !== undefined) return S(r);
          throw new LocatedLowerError(file, u.span, `cannot apply '${u.op}' to this value`);
        }
        case 'binary': return this.binary(u.op, this.expr(u.left, env, f), this.expr(u.right, env, f), file, u);
        case 'call': return this.call(u, env, f, '');
        case 'as': {
          const inner = unparen(u.expr);
          if (inner.kind !== 'call') throw new LocatedLowerError(file, u.span, '`as` needs a module call');
          return this.call(inner, env, f, this.path(u.path, env, f) + '.');
        }
        case 'index': throw new LocatedLowerError(file, u.span, 'indexing tensors is not supported yet: use slice(x, dim: ..., start: ..., end: ...)');
        default: throw new LocatedLowerError(file, u.span, 'this expression cannot be compiled');
      }
    } catch (err) {
      if (err instanceof ShapeError || err instanceof LowerError) throw new LocatedLowerError(file, u.span, err.message);
      throw err;
    }
  }

  private member(u: Extract<Expr, { kind: 'member' }>, env: Env, f: Frame): Value {
    const file = f.sym.file.file;
    // A parameter path (`attn.qkv.weight`, `blocks.{i}.norm1.weight`) or a named result (`state.h`).
    const segs: string[] = [];
    let base: Expr = u;
    while (base.kind === 'member') {
      const s = base.segment;
      if (s.kind === 'field') segs.unshift(s.name);
      else if (s.kind === 'index') segs.unshift(String(s.value));
      else if (s.kind === 'interp') segs.unshift(String(this.shapeOf(this.expr(s.expr, env, f), file, s.expr)));
      else throw new LocatedLowerError(file, s.span, 'wildcards are for selectors, not values');
      base = unparen(base.object);
    }
    if (base.kind === 'name' && !env.get(base.name)) {
      const path = f.prefix + [base.name, ...segs].join('.');
      const p = this.params.get(path);
      if (!p) throw new LocatedLowerError(file, u.span, `parameter '${path}' is used before its declaration`);
      return T(p.node);
    }
    let v = this.expr(base, env, f);
    for (const s of segs) {
      if (v.kind !== 'record' || !v.fields.has(s)) throw new LocatedLowerError(file, u.span, `no result '${s}' here`);
      v = v.fields.get(s)!;
    }
    return v;
  }

  private binary(op: string, l: Value, r: Value, file: SourceFile, at: Expr): Value {
    if (l.kind === 'shape' && r.kind === 'shape') {
      const v = scalarBinary(op, l.v, r.v);
      if (v === undefined) throw new LocatedLowerError(file, at.span, `'${op}' does not apply to ${JSON.stringify(l.v)} and ${JSON.stringify(r.v)}`);
      return S(v);
    }
    const OPS_FOR: Record<string, 'add' | 'sub' | 'mul' | 'div'> = { '+': 'add', '-': 'sub', '*': 'mul', '/': 'div' };
    const irOp = OPS_FOR[op];
    if (!irOp) throw new LocatedLowerError(file, at.span, `'${op}' does not apply to tensors`);
    const asTensor = (v: Value): number => {
      if (v.kind === 'tensor') return v.id;
      if (v.kind === 'shape' && typeof v.v === 'number') return this.b.full(v.v, []);
      throw new LocatedLowerError(file, at.span, `'${op}' needs tensors or numbers`);
    };
    return T(this.b.add(irOp, [asTensor(l), asTensor(r)]));
  }

  private call(c: Extract<Expr, { kind: 'call' }>, env: Env, f: Frame, prefix: string): Value {
    const file = f.sym.file.file;
    const callee = unparen(c.callee);
    if (callee.kind !== 'name') throw new LocatedLowerError(file, callee.span, 'only ops and modules can be called');
    const args = c.args.map((a) => ({ name: a.name, value: this.expr(a.value, env, f), at: a.value }));
    if (isOpName(callee.name)) {
      const sig: OpSignature = OPS[callee.name];
      const variadic = sig.inputs.some((i) => i.startsWith('...'));
      const inputNames = sig.inputs.map((i) => i.replace(/^\.\.\.|\?$/g, ''));
      const tensors: (number | undefined)[] = variadic ? [] : inputNames.map(() => undefined);
      const attrs = new Map<string, ShapeValue>();
      let pos = 0;
      for (const a of args) {
        const slot = a.name === undefined ? (variadic ? -1 : pos++) : inputNames.indexOf(a.name);
        if (a.name !== undefined && slot < 0) {
          attrs.set(a.name, this.shapeOf(a.value, file, a.at));
          continue;
        }
        if (a.value.kind !== 'tensor') {
          // A number where a tensor goes (`maximum(x, 0)`) becomes a scalar constant.
          if (a.value.kind === 'shape' && typeof a.value.v === 'number') {
            const id = this.b.full(a.value.v, []);
            if (variadic) tensors.push(id);
            else tensors[slot] = id;
            continue;
          }
          throw new LocatedLowerError(file, a.at.span, `${callee.name}: expected a tensor here`);
        }
        if (variadic) tensors.push(a.value.id);
        else tensors[slot] = a.value.id;
      }
      return LOWER[callee.name]({ inputs: tensors, attr: (n) => attrs.get(n), b: this.b, training: this.opts.training === true, seed: () => ++this.seedCounter, salt: this.opts.dropoutSalt === undefined ? undefined : () => this.saltInput() });
    }
    const target = f.scope.get(callee.name);
    if (!target || target.kind !== 'module') throw new LocatedLowerError(file, callee.span, `'${callee.name}' is not an op or module`);
    // Module call: positional arguments are its inputs in order; keywords are shape parameters or inputs.
    const inputNames: string[] = [];
    let base = target.node;
    const seen = new Set<ModuleDecl>();
    let baseSym: ModuleSym = target;
    while (base.alias && !seen.has(base)) {
      seen.add(base);
      const ac = unparen(base.alias);
      const an = ac.kind === 'call' ? unparen(ac.callee) : ac;
      const next = an.kind === 'name' ? this.opts.scopeOf(baseSym).get(an.name) : undefined;
      if (!next || next.kind !== 'module') break;
      baseSym = next;
      base = next.node;
    }
    for (const s of base.body ?? []) if (s.kind === 'input') inputNames.push(s.name);
    const shapeArgs = new Map<string, ShapeValue>();
    const tensorArgs = new Map<string, Value>();
    let pos = 0;
    for (const a of args) {
      const name = a.name ?? inputNames[pos++];
      if (name === undefined) throw new LocatedLowerError(file, a.at.span, `module '${callee.name}' takes ${inputNames.length} inputs`);
      if (inputNames.includes(name)) tensorArgs.set(name, a.value);
      else shapeArgs.set(name, this.shapeOf(a.value, file, a.at));
    }
    const outs = this.instance(target, shapeArgs, tensorArgs, f.prefix + prefix);
    if (outs.size === 1) return [...outs.values()][0];
    return { kind: 'record', fields: outs };
  }

  seedCount(): number {
    return this.seedCounter;
  }
}

interface Frame {
  readonly sym: ModuleSym;
  readonly scope: Scope;
  readonly prefix: string;
}

/** Lexical environment of a module body: values by name. */
export class Env extends Scopes<Value> {}
