// Module checks: signatures (parameters, inputs, outputs, specialisations) and name resolution inside
// module bodies: every name, op, module, parameter path and argument must exist.
import type { Arg, CallExpr, Expr, ModuleDecl, Path, Segment, Stmt, TypeExpr } from '../ast.js';
import { closest, didYouMean } from '../frontend/diagnostics.js';
import { isOpName, OPS, type OpSignature } from '../ops/catalog.js';
import type { Symbol } from './scope.js';
import { checkUnits, syntaxErrorWithin, unparen, visitExpr, type Ctx } from './values.js';
import { Scopes } from '../util/scopes.js';

export const DTYPES = ['f32', 'f16', 'bf16', 'i32', 'i64', 'u8', 'bool'];
export const SCALAR_TYPES = ['int', 'float', 'bool', 'str'];
export const PARAM_INITS: Readonly<Record<string, readonly string[]>> = {
  zeros: [], ones: [], constant: ['value'], normal: ['std', 'mean'], trunc_normal: ['std', 'a', 'b'],
  uniform: ['low', 'high'], kaiming_uniform: ['a'], xavier_uniform: ['gain'],
};

export interface ModuleSig {
  readonly name: string;
  /** Shape parameters in order; `hasDefault` includes values bound by a specialisation. */
  readonly params: readonly { name: string; hasDefault: boolean }[];
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** The module with the body (the end of a specialisation chain). */
  readonly base: ModuleDecl;
}

type ModuleSym = Extract<Symbol, { kind: 'module' }>;

/** Resolves a module symbol to its signature; specialisations inherit and bind their base's parameters. */
export function moduleSignature(sym: ModuleSym, scopeOf: (s: ModuleSym) => Map<string, Symbol>, seen: Set<ModuleDecl> = new Set()): ModuleSig | undefined {
  const m = sym.node;
  if (m.body) {
    const inputs: string[] = [];
    const outputs: string[] = [];
    walkStmts(m.body, (s) => {
      if (s.kind === 'input') inputs.push(s.name);
      if (s.kind === 'output') outputs.push(s.name);
    });
    return { name: m.name, params: m.params.map((p) => ({ name: p.name, hasDefault: p.default !== undefined })), inputs, outputs, base: m };
  }
  if (!m.alias || seen.has(m)) return undefined;
  seen.add(m);
  const call = unparen(m.alias);
  const callee = call.kind === 'call' ? unparen(call.callee) : call;
  if (callee.kind !== 'name') return undefined;
  const target = scopeOf(sym).get(callee.name);
  if (!target || target.kind !== 'module') return undefined;
  const base = moduleSignature(target, scopeOf, seen);
  if (!base) return undefined;
  const bound = new Set(call.kind === 'call' ? call.args.map((a) => a.name).filter((n): n is string => n !== undefined) : []);
  return { ...base, name: m.name, params: base.params.map((p) => ({ name: p.name, hasDefault: p.hasDefault || bound.has(p.name) })) };
}

export function walkStmts(stmts: readonly Stmt[], f: (s: Stmt) => void): void {
  for (const s of stmts) {
    f(s);
    if (s.kind === 'repeat') walkStmts(s.body, f);
    if (s.kind === 'if') {
      walkStmts(s.then, f);
      if (s.else) walkStmts(s.else, f);
    }
  }
}

/** A canonical text for an expression, used to compare parameter paths with `{expr}` segments. */
export function exprKey(e: Expr): string {
  const u = unparen(e);
  switch (u.kind) {
    case 'number': return u.unit ? `${u.value} ${u.unit}` : String(u.value);
    case 'name': return u.name;
    case 'string': return JSON.stringify(u.raw);
    case 'bool': return String(u.value);
    case 'unary': return `(${u.op} ${exprKey(u.operand)})`;
    case 'binary': return `(${exprKey(u.left)} ${u.op} ${exprKey(u.right)})`;
    case 'member': return `${exprKey(u.object)}.${segmentKey(u.segment)}`;
    case 'list': return `[${u.items.map(exprKey).join(', ')}]`;
    case 'range': return `${exprKey(u.from)}${u.exclusive ? '..<' : '..'}${exprKey(u.to)}`;
    default: return `<${u.kind}>`;
  }
}

export function segmentKey(s: Segment): string {
  switch (s.kind) {
    case 'field': return s.name;
    case 'index': return String(s.value);
    case 'interp': return `{${exprKey(s.expr)}}`;
    case 'wild': return s.deep ? '**' : '*';
  }
}

export function pathKey(p: Path): string {
  return [p.head, ...p.segments.map(segmentKey)].join('.');
}

type VarKind = 'shape' | 'tensor' | 'loop' | 'symbol';

/** Lexical scopes of a module body: what each name is. */
class Vars extends Scopes<VarKind> {}

/** Checks one module declaration (a body or a specialisation) in its file's scope. */
export function checkModule(m: ModuleDecl, ctx: Ctx, signatureOf: (name: string) => ModuleSig | undefined): void {
  const seenParams = new Set<string>();
  for (const p of m.params) {
    if (seenParams.has(p.name)) ctx.diags.error('VF4005', ctx.file, p.nameSpan, `module parameter '${p.name}' is declared twice`);
    seenParams.add(p.name);
    checkType(p.type, ctx, 'scalar');
    if (p.default) checkUnits(p.default, ctx);
  }
  if (m.alias) return checkSpecialisation(m, ctx, signatureOf);
  const body = m.body ?? [];
  const paramPaths: string[] = [];
  walkStmts(body, (s) => {
    if (s.kind === 'param') paramPaths.push(pathKey(s.path));
  });
  const cycle = recursionFrom(m, signatureOf);
  if (cycle) ctx.diags.error('VF4009', ctx.file, m.nameSpan, `module '${m.name}' instantiates itself: ${cycle.join(' → ')}`);
  const checker = new BodyChecker(ctx, signatureOf, paramPaths);
  for (const p of m.params) checker.vars.define(p.name, 'shape');
  checker.stmts(body);
  if (!body.some(function hasOutput(s: Stmt): boolean {
    return s.kind === 'output' || (s.kind === 'if' && (s.then.some(hasOutput) || (s.else ?? []).some(hasOutput)));
  }) && !syntaxErrorWithin(m.span, ctx)) {
    ctx.diags.error('VF4011', ctx.file, m.nameSpan, `module '${m.name}' declares no output`);
  }
}

/** The names of modules called in a body (directly, at any depth of expressions). */
function calledModules(body: readonly Stmt[], signatureOf: (name: string) => ModuleSig | undefined): string[] {
  const out: string[] = [];
  const visit = (e: Expr) =>
    visitExpr(e, (x) => {
      const callee = x.kind === 'call' ? unparen(x.callee) : undefined;
      if (callee?.kind === 'name' && !isOpName(callee.name) && signatureOf(callee.name)) out.push(callee.name);
    });
  walkStmts(body, (s) => {
    if (s.kind === 'let' || s.kind === 'assign') visit(s.value);
    else if (s.kind === 'output' && s.value) visit(s.value);
  });
  return out;
}

/** A chain of module calls leading from `m` back to itself, or undefined. */
function recursionFrom(m: ModuleDecl, signatureOf: (name: string) => ModuleSig | undefined): string[] | undefined {
  const seen = new Set<ModuleDecl>();
  const search = (body: readonly Stmt[], trail: string[]): string[] | undefined => {
    for (const name of calledModules(body, signatureOf)) {
      const base = signatureOf(name)!.base;
      if (base === m) return [...trail, name];
      if (seen.has(base)) continue;
      seen.add(base);
      const found = search(base.body ?? [], [...trail, name]);
      if (found) return found;
    }
    return undefined;
  };
  return search(m.body ?? [], [m.name]);
}

function checkSpecialisation(m: ModuleDecl, ctx: Ctx, signatureOf: (name: string) => ModuleSig | undefined): void {
  const call = unparen(m.alias!);
  const callee = call.kind === 'call' ? unparen(call.callee) : call;
  if (callee.kind !== 'name') {
    ctx.diags.error('VF4008', ctx.file, call.span, 'a specialisation is `module NAME = OTHER_MODULE(param: value, ...)`');
    return;
  }
  const sym = ctx.scope.get(callee.name);
  if (!sym || sym.kind !== 'module') {
    const modules = [...ctx.scope].filter(([, s]) => s.kind === 'module').map(([n]) => n);
    ctx.diags.error(sym ? 'VF4008' : 'VF4001', ctx.file, callee.span, sym ? `'${callee.name}' is a ${sym.kind}, not a module` : `no module named '${callee.name}'${didYouMean(callee.name, modules)}`);
    return;
  }
  const sig = signatureOf(callee.name);
  if (!sig) {
    ctx.diags.error('VF4009', ctx.file, callee.span, `module '${m.name}' specialises itself through '${callee.name}'`);
    return;
  }
  if (call.kind !== 'call') return;
  for (const a of call.args) {
    checkUnits(a.value, ctx);
    if (a.name === undefined) {
      ctx.diags.error('VF4008', ctx.file, a.span, 'a specialisation binds parameters by name (`width: 1408`)');
      continue;
    }
    const names = sig.params.map((p) => p.name);
    if (!names.includes(a.name)) ctx.diags.error('VF4002', ctx.file, a.nameSpan ?? a.span, `module '${sig.name}' has no parameter '${a.name}'${didYouMean(a.name, names)}`);
  }
}

/** Checks a module call's arguments against a signature (used for instances in declarations too). */
export function checkModuleArgs(call: CallExpr | undefined, sig: ModuleSig, ctx: Ctx, opts: { allowInputs: boolean }): void {
  const args: readonly Arg[] = call?.args ?? [];
  const given = new Set<string>();
  let positional = 0;
  for (const a of args) {
    if (a.name === undefined) {
      if (!opts.allowInputs) ctx.diags.error('VF4004', ctx.file, a.span, `module '${sig.name}' is configured by name here (\`param: value\`)`);
      else if (positional >= sig.inputs.length) ctx.diags.error('VF4004', ctx.file, a.span, `module '${sig.name}' takes ${sig.inputs.length} input${sig.inputs.length === 1 ? '' : 's'} (${sig.inputs.join(', ') || 'none'})`);
      positional++;
      continue;
    }
    const names = [...sig.params.map((p) => p.name), ...(opts.allowInputs ? sig.inputs : [])];
    if (given.has(a.name)) ctx.diags.error('VF4002', ctx.file, a.nameSpan ?? a.span, `argument '${a.name}' is given twice`);
    else if (!names.includes(a.name)) ctx.diags.error('VF4002', ctx.file, a.nameSpan ?? a.span, `module '${sig.name}' has no parameter '${a.name}'${didYouMean(a.name, names)}`);
    given.add(a.name);
  }
  // A parameter whose misspelling was given already has its "did you mean": not missing as well.
  const allNames = [...sig.params.map((p) => p.name), ...(opts.allowInputs ? sig.inputs : [])];
  const misspelt = new Set([...given].filter((n) => !allNames.includes(n)).map((n) => closest(n, allNames)));
  const missing = sig.params.filter((p) => !p.hasDefault && !given.has(p.name) && !misspelt.has(p.name)).map((p) => p.name);
  if (missing.length) {
    const span = call?.span;
    if (span) ctx.diags.error('VF4003', ctx.file, span, `module '${sig.name}' needs ${missing.map((n) => `'${n}'`).join(', ')}`);
  }
}

function checkType(t: TypeExpr, ctx: Ctx, want: 'scalar' | 'tensor'): void {
  if (t.name === undefined) return;
  const allowed = t.dims !== undefined ? DTYPES : [...new Set(want === 'scalar' ? [...SCALAR_TYPES, ...DTYPES] : [...DTYPES, ...SCALAR_TYPES])];
  if (!allowed.includes(t.name)) {
    ctx.diags.error('VF4007', ctx.file, t.nameSpan ?? t.span, `unknown ${t.dims ? 'dtype' : 'type'} '${t.name}' (${allowed.join(', ')})${didYouMean(t.name, allowed)}`);
  }
}

class BodyChecker {
  readonly vars = new Vars();
  private readonly declaredParams = new Set<string>();

  constructor(
    private readonly ctx: Ctx,
    private readonly signatureOf: (name: string) => ModuleSig | undefined,
    private readonly paramPaths: readonly string[],
  ) {}

  private get paramHeads(): Set<string> {
    return new Set(this.paramPaths.map((p) => p.split('.')[0]));
  }

  stmts(list: readonly Stmt[]): void {
    for (const s of list) this.stmt(s);
  }

  private stmt(s: Stmt): void {
    const { ctx } = this;
    switch (s.kind) {
      case 'input':
        checkType(s.type, ctx, 'tensor');
        this.dims(s.type, true);
        this.declare(s.name, s.nameSpan, 'tensor');
        return;
      case 'param': {
        checkType(s.type, ctx, 'tensor');
        this.dims(s.type, false);
        for (const seg of s.path.segments) if (seg.kind === 'interp') this.expr(seg.expr);
        const key = pathKey(s.path);
        if (this.declaredParams.has(key)) ctx.diags.error('VF4005', ctx.file, s.path.span, `parameter '${key}' is declared twice`);
        this.declaredParams.add(key);
        for (const e of s.block?.entries ?? []) {
          if (e.kind !== 'property') {
            ctx.diags.error('VF3001', ctx.file, e.keySpan, `a parameter block takes 'init' and 'parts', not a nested block '${e.key}'`);
          } else if (e.key === 'init') {
            const v = unparen(e.value);
            const name = v.kind === 'call' ? unparen(v.callee) : v;
            const names = Object.keys(PARAM_INITS);
            if (name.kind !== 'name' || !names.includes(name.name)) {
              ctx.diags.error('VF3009', ctx.file, v.span, `unknown init (${names.join(', ')})${name.kind === 'name' ? didYouMean(name.name, names) : ''}`);
            }
          } else if (e.key === 'parts') {
            const v = unparen(e.value);
            if (v.kind !== 'list' || v.items.some((i) => unparen(i).kind !== 'name')) ctx.diags.error('VF3003', ctx.file, v.span, 'parts is a list of names, such as [q, k, v]');
          } else {
            ctx.diags.error('VF3001', ctx.file, e.keySpan, `unknown parameter property '${e.key}' (init, parts)${didYouMean(e.key, ['init', 'parts'])}`);
          }
        }
        return;
      }
      case 'let':
        this.expr(s.value);
        if (this.vars.inInnermost(s.name)) ctx.diags.error('VF4005', ctx.file, s.nameSpan, `'${s.name}' is already bound here: write \`${s.name} = ...\` to rebind it`);
        this.vars.define(s.name, 'tensor');
        return;
      case 'assign':
        this.expr(s.value);
        if (!this.vars.get(s.name)) {
          ctx.diags.error('VF4006', ctx.file, s.nameSpan, `'${s.name}' is not bound yet: write \`let ${s.name} = ...\`${didYouMean(s.name, this.vars.all().filter((n) => this.vars.get(n) !== 'loop' && this.vars.get(n) !== 'symbol'))}`);
          this.vars.define(s.name, 'tensor');
        } else if (this.vars.get(s.name) === 'loop' || this.vars.get(s.name) === 'symbol') {
          ctx.diags.error('VF4006', ctx.file, s.nameSpan, `'${s.name}' is a ${this.vars.get(s.name) === 'loop' ? 'loop variable' : 'shape symbol'} and cannot be rebound`);
        }
        return;
      case 'output':
        if (s.type) {
          checkType(s.type, ctx, 'tensor');
          this.dims(s.type, false);
        }
        if (s.value) this.expr(s.value);
        this.declare(s.name, s.nameSpan, 'tensor');
        return;
      case 'repeat':
        this.expr(s.range);
        if (unparen(s.range).kind !== 'range') ctx.diags.error('VF3003', ctx.file, s.range.span, 'repeat runs over a range such as 0..<depth');
        this.vars.push();
        this.vars.define(s.variable, 'loop');
        this.stmts(s.body);
        this.vars.pop();
        return;
      case 'if':
        this.expr(s.cond);
        this.vars.push();
        this.stmts(s.then);
        this.vars.pop();
        if (s.else) {
          this.vars.push();
          this.stmts(s.else);
          this.vars.pop();
        }
        return;
    }
  }

  private declare(name: string, span: { start: number; end: number }, kind: VarKind): void {
    if (this.vars.inInnermost(name)) this.ctx.diags.error('VF4005', this.ctx.file, span, `'${name}' is already declared in this module`);
    this.vars.define(name, kind);
  }

  /** Names in dims must be bound; in an input's type, a new Capitalised name introduces a shape symbol. */
  private dims(t: TypeExpr, introduces: boolean): void {
    for (const d of t.dims ?? []) {
      const u = unparen(d);
      if (introduces && u.kind === 'name' && !this.vars.get(u.name) && /^[A-Z]/.test(u.name)) {
        this.vars.define(u.name, 'symbol');
        continue;
      }
      this.expr(d);
    }
  }

  private expr(e: Expr): void {
    const { ctx } = this;
    const u = unparen(e);
    switch (u.kind) {
      case 'name':
        if (this.vars.get(u.name) || this.paramPaths.includes(u.name)) return;
        if (this.paramHeads.has(u.name)) {
          ctx.diags.error('VF2005', ctx.file, u.span, `'${u.name}' is the start of parameter paths, not a parameter (${this.paramPaths.filter((p) => p.startsWith(u.name + '.')).slice(0, 3).join(', ')}, ...)`);
          return;
        }
        ctx.diags.error('VF2005', ctx.file, u.span, `unknown name '${u.name}'${didYouMean(u.name, [...this.vars.all(), ...this.paramPaths])}`);
        return;
      case 'member': {
        // A parameter path (`attn.qkv.weight`, `blocks.{i}.norm1.weight`) or a named result (`lstm_cell(...).h`).
        const chain: Segment[] = [];
        let base: Expr = u;
        while (base.kind === 'member') {
          chain.unshift(base.segment);
          base = unparen(base.object);
        }
        for (const seg of chain) if (seg.kind === 'interp') this.expr(seg.expr);
        if (base.kind === 'name' && !this.vars.get(base.name)) {
          const key = [base.name, ...chain.map(segmentKey)].join('.');
          if (!this.paramPaths.includes(key)) {
            ctx.diags.error('VF2005', ctx.file, u.span, `no parameter '${key}' in this module${didYouMean(key, this.paramPaths)}`);
          }
          return;
        }
        this.expr(base);
        if (base.kind === 'call') this.result(base, chain[0]);
        return;
      }
      case 'call':
        this.call(u);
        return;
      case 'as': {
        const inner = unparen(u.expr);
        const callee = inner.kind === 'call' ? unparen(inner.callee) : undefined;
        // (an unknown callee has its own error already)
        const unknown = callee?.kind === 'name' && !isOpName(callee.name) && !this.ctx.scope.has(callee.name);
        if (!unknown && (!callee || callee.kind !== 'name' || !this.signatureOf(callee.name))) {
          ctx.diags.error('VF4010', ctx.file, u.span, '`as PATH` puts a module instance\'s parameters under PATH: it needs a module call before it');
        }
        for (const seg of u.path.segments) if (seg.kind === 'interp') this.expr(seg.expr);
        this.expr(u.expr);
        return;
      }
      case 'number':
        if (u.unit) checkUnits(u, ctx);
        return;
      case 'list':
        u.items.forEach((i) => this.expr(i));
        return;
      case 'range':
        this.expr(u.from);
        this.expr(u.to);
        return;
      case 'unary':
        this.expr(u.operand);
        return;
      case 'binary':
        this.expr(u.left);
        this.expr(u.right);
        return;
      case 'index':
        this.expr(u.object);
        for (const it of u.items) {
          if (it.kind === 'at') this.expr(it.expr);
          else {
            if (it.from) this.expr(it.from);
            if (it.to) this.expr(it.to);
          }
        }
        return;
      case 'string':
      case 'bool':
      case 'error':
        return;
      default:
        return;
    }
  }

  /** `call(...).name`: the name must be one of the op's results or the module's outputs. */
  private result(call: CallExpr, seg: Segment | undefined): void {
    const callee = unparen(call.callee);
    if (!seg || callee.kind !== 'name') return;
    const results = isOpName(callee.name) ? [...((OPS[callee.name] as OpSignature).results ?? [])] : [...(this.signatureOf(callee.name)?.outputs ?? [])];
    const name = seg.kind === 'field' ? seg.name : segmentKey(seg);
    if (!results.includes(name)) {
      this.ctx.diags.error('VF2005', this.ctx.file, seg.span, results.length ? `'${callee.name}' has no result '${name}' (${results.join(', ')})${didYouMean(name, results)}` : `'${callee.name}' has a single result`);
    }
  }

  private call(c: CallExpr): void {
    const { ctx } = this;
    const callee = unparen(c.callee);
    for (const a of c.args) this.expr(a.value);
    if (callee.kind !== 'name') {
      ctx.diags.error('VF4013', ctx.file, callee.span, 'only ops and modules can be called');
      return;
    }
    if (isOpName(callee.name)) return this.opArgs(c, callee.name, OPS[callee.name]);
    const sig = this.signatureOf(callee.name);
    if (sig) return checkModuleArgs(c, sig, ctx, { allowInputs: true });
    const sym = ctx.scope.get(callee.name);
    if (sym) {
      ctx.diags.error('VF4001', ctx.file, callee.span, `'${callee.name}' is a ${sym.kind}; only ops and modules can be called in a module`);
      return;
    }
    const modules = [...ctx.scope].filter(([, s]) => s.kind === 'module').map(([n]) => n);
    ctx.diags.error('VF4001', ctx.file, callee.span, `unknown op or module '${callee.name}'${didYouMean(callee.name, [...Object.keys(OPS), ...modules])}`);
  }

  private opArgs(c: CallExpr, name: string, op: OpSignature): void {
    const { ctx } = this;
    const variadic = op.inputs.some((i) => i.startsWith('...'));
    const inputs = op.inputs.map((i) => i.replace(/^\.\.\.|\?$/g, ''));
    const keywords = [...inputs, ...op.attrs];
    const given = new Set<string>();
    let positional = 0;
    for (const a of c.args) {
      if (a.name === undefined) {
        if (!variadic && positional >= inputs.length) {
          ctx.diags.error('VF4004', ctx.file, a.span, `${name} takes ${inputs.length} tensor input${inputs.length === 1 ? '' : 's'} (${inputs.join(', ') || 'none'}); attributes go by name (${op.attrs.join(', ') || 'none'})`);
        } else if (!variadic) given.add(inputs[positional]);
        positional++;
        continue;
      }
      if (!keywords.includes(a.name)) ctx.diags.error('VF4002', ctx.file, a.nameSpan ?? a.span, `${name} has no argument '${a.name}' (${keywords.join(', ') || 'none'})${didYouMean(a.name, keywords)}`);
      else if (given.has(a.name)) ctx.diags.error('VF4002', ctx.file, a.nameSpan ?? a.span, `argument '${a.name}' of ${name} is given twice`);
      given.add(a.name);
    }
    if (variadic) {
      if (positional === 0) ctx.diags.error('VF4003', ctx.file, c.span, `${name} needs at least one input`);
      return;
    }
    const missing = op.inputs.filter((i) => !i.endsWith('?')).filter((i) => !given.has(i));
    if (missing.length) ctx.diags.error('VF4003', ctx.file, c.span, `${name} needs ${missing.map((m) => `'${m}'`).join(', ')}`);
  }
}
