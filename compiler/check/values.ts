// Checking property values against the schema's value types, and the small constant evaluator the
// checks share (numbers, `32 * 8`, `2k updates`).
import type { Expr, StringLit } from '../ast.js';
import { didYouMean, type Diagnostics } from '../frontend/diagnostics.js';
import type { SourceFile } from '../frontend/source.js';
import type { DeclKind, ValueType } from './schema.js';
import type { Scope } from './scope.js';
import { scalarBinary, scalarUnary } from '../util/scalar.js';

export interface Ctx {
  readonly file: SourceFile;
  readonly scope: Scope;
  readonly diags: Diagnostics;
  readonly env: NodeJS.ProcessEnv;
}

export const UPDATE_UNITS = ['updates', 'update'];

export function unparen(e: Expr): Expr {
  while (e.kind === 'paren') e = e.expr;
  return e;
}

/** The value of a constant arithmetic expression (no units), or undefined. */
export function constNumber(e: Expr): number | undefined {
  e = unparen(e);
  switch (e.kind) {
    case 'number':
      return e.unit === undefined ? e.value : undefined;
    case 'unary': {
      const v = scalarUnary(e.op, constNumber(e.operand));
      return typeof v === 'number' ? v : undefined;
    }
    case 'binary': {
      const v = scalarBinary(e.op, constNumber(e.left), constNumber(e.right));
      return typeof v === 'number' ? v : undefined;
    }
    default:
      return undefined;
  }
}

/** A duration in updates: `2k updates` or a plain count. Reports a bad unit; undefined when not one. */
export function durationValue(e: Expr, ctx?: Ctx): number | undefined {
  const u = unparen(e);
  if (u.kind === 'number' && u.unit !== undefined) {
    if (!UPDATE_UNITS.includes(u.unit)) {
      ctx?.diags.error('VF3013', ctx.file, u.span, `unknown unit '${u.unit}': durations are counted in updates${didYouMean(u.unit, UPDATE_UNITS)}`);
      return undefined;
    }
    return u.value;
  }
  return constNumber(u);
}

/** Walks an expression and reports number units anywhere inside it that are not `updates`. */
export function checkUnits(e: Expr, ctx: Ctx): void {
  visitExpr(e, (x) => {
    if (x.kind === 'number' && x.unit !== undefined) durationValue(x, ctx);
    if (x.kind === 'string') checkEnv(x, ctx);
  });
}

export function visitExpr(e: Expr, f: (x: Expr) => void): void {
  f(e);
  switch (e.kind) {
    case 'list': e.items.forEach((i) => visitExpr(i, f)); break;
    case 'range': visitExpr(e.from, f); visitExpr(e.to, f); break;
    case 'unary': visitExpr(e.operand, f); break;
    case 'binary': visitExpr(e.left, f); visitExpr(e.right, f); break;
    case 'call': visitExpr(e.callee, f); e.args.forEach((a) => visitExpr(a.value, f)); break;
    case 'member':
      visitExpr(e.object, f);
      if (e.segment.kind === 'interp') visitExpr(e.segment.expr, f);
      break;
    case 'index':
      visitExpr(e.object, f);
      for (const it of e.items) {
        if (it.kind === 'at') visitExpr(it.expr, f);
        else {
          if (it.from) visitExpr(it.from, f);
          if (it.to) visitExpr(it.to, f);
        }
      }
      break;
    case 'as': visitExpr(e.expr, f); break;
    case 'paren': visitExpr(e.expr, f); break;
    default: break;
  }
}

/** Unset environment variables without a default: a warning now, an error when a run needs the value. */
export function checkEnv(s: StringLit, ctx: Ctx): void {
  for (const p of s.parts) {
    if (p.kind !== 'env' || p.fallback !== undefined) continue;
    const v = ctx.env[p.name];
    if (v === undefined || v === '') {
      ctx.diags.warning('VF2007', ctx.file, { start: p.offset, end: p.offset + p.name.length + 3 }, `environment variable ${p.name} is not set (write \${${p.name}:-default} to give a default)`);
    }
  }
}

const DESCRIBE: Record<string, string> = {
  number: 'a number', string: 'a string', bool: 'true or false', name: 'a name', list: 'a list', range: 'a range',
  unary: 'an expression', binary: 'an expression', call: 'a call', member: 'a path', index: 'an indexed path', as: 'an `as` expression', error: 'an error',
};

export function describe(e: Expr): string {
  const u = unparen(e);
  if (u.kind === 'number' && u.unit) return `a duration ('${u.text} ${u.unit}')`;
  if (u.kind === 'bool') return `'${u.value}'`;
  return DESCRIBE[u.kind] ?? u.kind;
}

function expectedText(t: ValueType): string {
  switch (t.t) {
    case 'number': return t.integer ? 'a whole number' : 'a number';
    case 'duration': return 'a number of updates (`2k updates`)';
    case 'string': return 'a string';
    case 'bool': return 'true or false';
    case 'enum': return `one of ${t.values.join(', ')}`;
    case 'ref': return `the name of a ${t.kinds.join(' or ')}`;
    case 'call': return `one of ${Object.keys(t.functions).map((f) => f + '(...)').join(', ')}`;
    case 'selector': return 'a name or a parameter selector';
    case 'list': return `a list of ${expectedText(t.of)}`;
    case 'oneOrList': return `${expectedText(t.of)} or a list of them`;
  }
}

/** Checks one value against a type; returns false when it reported an error. */
export function checkValue(e: Expr, type: ValueType, ctx: Ctx): boolean {
  const u = unparen(e);
  if (u.kind === 'error') return false; // the syntax error was reported
  const wrong = (): false => {
    ctx.diags.error('VF3003', ctx.file, u.span, `expected ${expectedText(type)}, found ${describe(u)}`);
    return false;
  };
  switch (type.t) {
    case 'number': {
      if (u.kind === 'number' && u.unit) return wrong();
      const v = constNumber(u);
      if (v === undefined) return wrong();
      const low = type.min !== undefined && (type.exclusiveMin ? v <= type.min : v < type.min);
      const high = type.max !== undefined && v > type.max;
      if (low || high || (type.integer && !Number.isInteger(v))) {
        const range = [type.min !== undefined ? (type.exclusiveMin ? `> ${type.min}` : `>= ${type.min}`) : '', type.max !== undefined ? `<= ${type.max}` : ''].filter(Boolean).join(' and ');
        ctx.diags.error('VF3006', ctx.file, u.span, `${v} is out of range: expected ${type.integer ? 'a whole number' : 'a number'}${range ? ' ' + range : ''}`);
        return false;
      }
      return true;
    }
    case 'duration': {
      if (u.kind === 'number' && u.unit !== undefined && !UPDATE_UNITS.includes(u.unit)) return durationValue(u, ctx) !== undefined;
      const v = durationValue(u, ctx);
      if (v === undefined) return wrong();
      if (!Number.isInteger(v) || v <= 0) {
        ctx.diags.error('VF3006', ctx.file, u.span, `a duration must be a positive whole number of updates, not ${v}`);
        return false;
      }
      return true;
    }
    case 'string':
      if (u.kind !== 'string') return wrong();
      checkEnv(u, ctx);
      return true;
    case 'bool':
      return u.kind === 'bool' ? true : wrong();
    case 'enum':
      if (u.kind === 'string' && type.values.includes(u.raw)) return true;
      if (u.kind !== 'name') return wrong();
      if (type.values.includes(u.name)) return true;
      ctx.diags.error('VF3009', ctx.file, u.span, `'${u.name}' is not one of ${type.values.join(', ')}${didYouMean(u.name, type.values)}`);
      return false;
    case 'ref':
      return checkRef(u, type.kinds, ctx);
    case 'call':
      return checkCall(u, type.functions, ctx);
    case 'selector':
      return checkSelector(u, ctx);
    case 'list':
      if (u.kind !== 'list') return wrong();
      return u.items.map((i) => checkValue(i, type.of, ctx)).every(Boolean);
    case 'oneOrList':
      if (u.kind === 'list') return u.items.map((i) => checkValue(i, type.of, ctx)).every(Boolean);
      return checkValue(u, type.of, ctx);
  }
}

/** A name that must refer to a declaration of one of the kinds. */
export function checkRef(e: Expr, kinds: readonly string[], ctx: Ctx): boolean {
  const u = unparen(e);
  if (u.kind !== 'name') {
    ctx.diags.error('VF3003', ctx.file, u.span, `expected the name of a ${kinds.join(' or ')}, found ${describe(u)}`);
    return false;
  }
  const sym = ctx.scope.get(u.name);
  if (!sym) {
    const candidates = [...ctx.scope].filter(([, s]) => kinds.includes(s.kind)).map(([n]) => n);
    ctx.diags.error('VF2005', ctx.file, u.span, `no ${kinds.join(' or ')} named '${u.name}'${didYouMean(u.name, candidates)}`);
    return false;
  }
  if (!kinds.includes(sym.kind)) {
    ctx.diags.error('VF3004', ctx.file, u.span, `'${u.name}' is a ${sym.kind}, but a ${kinds.join(' or ')} is needed here`);
    return false;
  }
  return true;
}

/** `f(args)` or a bare `f`, with f one of the functions and keyword arguments among its parameters. */
export function checkCall(e: Expr, functions: Readonly<Record<string, readonly string[]>>, ctx: Ctx): boolean {
  const u = unparen(e);
  const callee = u.kind === 'call' ? unparen(u.callee) : u;
  const names = Object.keys(functions);
  if (callee.kind !== 'name') {
    ctx.diags.error('VF3003', ctx.file, u.span, `expected one of ${names.map((f) => f + '(...)').join(', ')}, found ${describe(u)}`);
    return false;
  }
  const params = functions[callee.name];
  if (!params) {
    ctx.diags.error('VF3009', ctx.file, callee.span, `unknown '${callee.name}': expected one of ${names.join(', ')}${didYouMean(callee.name, names)}`);
    return false;
  }
  if (u.kind !== 'call') return true;
  let ok = true;
  const seen = new Set<string>();
  u.args.forEach((a, i) => {
    checkUnits(a.value, ctx);
    if (a.name === undefined) {
      if (i >= params.length) {
        ctx.diags.error('VF4004', ctx.file, a.span, `${callee.name} takes at most ${params.length} argument${params.length === 1 ? '' : 's'} (${params.join(', ') || 'none'})`);
        ok = false;
      }
      return;
    }
    if (!params.includes(a.name)) {
      ctx.diags.error('VF4002', ctx.file, a.nameSpan ?? a.span, `${callee.name} has no argument '${a.name}' (it takes ${params.join(', ') || 'none'})${didYouMean(a.name, params)}`);
      ok = false;
    } else if (seen.has(a.name)) {
      ctx.diags.error('VF4002', ctx.file, a.nameSpan ?? a.span, `argument '${a.name}' is given twice`);
      ok = false;
    }
    seen.add(a.name);
  });
  return ok;
}

/**
 * A selector: a declaration name (`visft_lora`), or a parameter path pattern (`blocks.*.attn.qkv.weight[q, v]`).
 * Whether a path pattern matches anything is checked when the backbone is resolved.
 */
export function checkSelector(e: Expr, ctx: Ctx): boolean {
  const u = unparen(e);
  let base: Expr = u.kind === 'index' ? unparen(u.object) : u;
  while (base.kind === 'member') base = unparen(base.object);
  if (base.kind !== 'name') {
    ctx.diags.error('VF3003', ctx.file, u.span, `expected a name or a parameter selector such as blocks.*.attn.qkv.weight[q, v], found ${describe(u)}`);
    return false;
  }
  if (u.kind === 'index') {
    for (const it of u.items) {
      if (it.kind === 'at' && unparen(it.expr).kind !== 'name') {
        ctx.diags.error('VF3003', ctx.file, it.span, 'a selector takes named parts (`[q, v]`) or row ranges (`[0:1408]`)');
        return false;
      }
    }
  }
  return true;
}

/** Names of the given kinds in scope, for suggestions. */
export function namesOfKinds(scope: Scope, kinds: readonly (DeclKind | 'module')[]): string[] {
  return [...scope].filter(([, s]) => kinds.includes(s.kind)).map(([n]) => n);
}

/** Whether a lexical or syntax error lies inside the span: what the parser recovered there may be incomplete. */
export function syntaxErrorWithin(span: { start: number; end: number }, ctx: Ctx): boolean {
  return ctx.diags.list.some((d) => d.file === ctx.file && /^VF100[1-4]$/.test(d.code) && d.span.start >= span.start && d.span.start < span.end);
}
