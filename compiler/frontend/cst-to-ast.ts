// The CST visitor: turns chevrotain's concrete syntax tree into the AST, with spans. Parts the parser
// recovered from are missing in the CST; they become `error` expressions or are dropped, and the parse
// error already reported says why, so later stages never see half-built nodes as valid.
import type { CstNode, IToken } from 'chevrotain';
import type * as C from '../../grammar/cst.js';
import { visftParser } from '../../grammar/parser.js';
import type * as A from '../ast.js';
import { parseStringBody, parseNumber } from './literals.js';

type Report = (span: A.Span, code: 'VF1006' | 'VF1007' | 'VF1009', message: string) => void;

const NO_SPAN: A.Span = { start: 0, end: 0 };

function tokSpan(t: IToken | undefined): A.Span {
  if (!t || !Number.isFinite(t.startOffset)) return NO_SPAN;
  return { start: t.startOffset, end: (t.endOffset ?? t.startOffset) + 1 };
}

function nodeSpan(n: CstNode | undefined): A.Span {
  const loc = n?.location;
  if (!loc || !Number.isFinite(loc.startOffset)) return NO_SPAN;
  return { start: loc.startOffset, end: (Number.isFinite(loc.endOffset) ? (loc.endOffset as number) : loc.startOffset) + 1 };
}

function join(a: A.Span, b: A.Span): A.Span {
  if (a === NO_SPAN) return b;
  if (b === NO_SPAN) return a;
  return { start: Math.min(a.start, b.start), end: Math.max(a.end, b.end) };
}

/** A real token (not one inserted by error recovery), or undefined. */
function real(tokens: IToken[] | undefined, i = 0): IToken | undefined {
  const t = tokens?.[i];
  return t && !t.isInsertedInRecovery && Number.isFinite(t.startOffset) ? t : undefined;
}

function startOf(x: IToken | CstNode): number {
  return 'image' in x ? x.startOffset : (x.location?.startOffset ?? 0);
}

/** Children of several kinds in source order (chevrotain groups children by name). */
function ordered<T extends IToken | CstNode>(...groups: (T[] | undefined)[]): T[] {
  return groups.flatMap((g) => g ?? []).sort((a, b) => startOf(a) - startOf(b));
}

const BaseVisitor = visftParser().getBaseCstVisitorConstructor();

/** The AST builder. Methods are named after grammar rules (checked by `validateVisitor` in tests). */
export class AstBuilder extends BaseVisitor {
  private depth = 0;

  constructor(private readonly report: Report) {
    super();
    this.validateVisitor();
  }

  override visit(node: CstNode | CstNode[], param?: unknown): any {
    // Deeply nested input (thousands of parentheses) must become a diagnostic, not a stack overflow.
    if (++this.depth > 2500) {
      this.depth--;
      const n = Array.isArray(node) ? node[0] : node;
      this.report(nodeSpan(n), 'VF1009', 'expression nested too deeply');
      return { kind: 'error', span: nodeSpan(n) } satisfies A.ErrorExpr;
    }
    try {
      return super.visit(node, param);
    } finally {
      this.depth--;
    }
  }

  file(c: C.FileCstChildren): A.FileAst {
    const items = ordered<CstNode>(c.importDecl, c.moduleDecl, c.declaration)
      .map((n) => this.visit(n) as A.TopLevel | undefined)
      .filter((x): x is A.TopLevel => x !== undefined);
    return { items, span: items.length ? join(items[0].span, items[items.length - 1].span) : NO_SPAN };
  }

  importDecl(c: C.ImportDeclCstChildren, _p: unknown, node?: CstNode): A.ImportDecl | undefined {
    const str = real(c.StringLiteral);
    if (str) {
      const parts = parseStringBody(str.image.slice(1, -1), str.startOffset + 1, this.report);
      const target = parts.map((p) => (p.kind === 'text' ? p.text : `\${${p.name}}`)).join('');
      return { kind: 'import', target, isStd: false, targetSpan: tokSpan(str), span: join(tokSpan(real(c.Import)), tokSpan(str)) };
    }
    const dotted = c.dottedName?.[0];
    if (!dotted) return undefined;
    const ids = dotted.children.Identifier.filter((t) => !t.isInsertedInRecovery);
    if (ids.length === 0) return undefined;
    const target = ids.map((t) => t.image).join('.');
    const targetSpan = nodeSpan(dotted);
    return { kind: 'import', target, isStd: ids[0].image === 'std', targetSpan, span: join(tokSpan(real(c.Import)), targetSpan) };
  }

  moduleDecl(c: C.ModuleDeclCstChildren): A.ModuleDecl | undefined {
    const name = real(c.Identifier);
    if (!name) return undefined;
    const base = { kind: 'module' as const, name: name.image, nameSpan: tokSpan(name) };
    if (c.Equals) {
      const alias = c.expression ? (this.visit(c.expression) as A.Expr) : errorAt(tokSpan(real(c.Equals)));
      return { ...base, params: [], alias, span: join(tokSpan(real(c.Module)), alias.span) };
    }
    const params = c.moduleParams ? (this.visit(c.moduleParams) as A.ModuleParam[]) : [];
    const body = c.stmtBlock ? (this.visit(c.stmtBlock) as A.Stmt[]) : [];
    return { ...base, params, body, span: join(tokSpan(real(c.Module)), nodeSpan(c.stmtBlock?.[0])) };
  }

  moduleParams(c: C.ModuleParamsCstChildren): A.ModuleParam[] {
    return (c.moduleParam ?? []).map((n) => this.visit(n) as A.ModuleParam | undefined).filter((p): p is A.ModuleParam => p !== undefined);
  }

  moduleParam(c: C.ModuleParamCstChildren, _p: unknown): A.ModuleParam | undefined {
    const name = real(c.Identifier);
    if (!name || !c.typeExpr) return undefined;
    const type = this.visit(c.typeExpr) as A.TypeExpr;
    const def = c.expression ? (this.visit(c.expression) as A.Expr) : undefined;
    return { name: name.image, nameSpan: tokSpan(name), type, default: def, span: join(tokSpan(name), def?.span ?? type.span) };
  }

  dottedName(): undefined {
    return undefined; // read directly by importDecl
  }

  declaration(c: C.DeclarationCstChildren): A.Decl | undefined {
    const kind = real(c.declKind);
    const name = real(c.name);
    if (!kind || !name) return undefined;
    const value = c.value ? (this.visit(c.value) as A.Expr) : undefined;
    const on = c.on ? (this.visit(c.on) as A.Expr) : c.On ? errorAt(tokSpan(real(c.On))) : undefined;
    const block = c.block ? (this.visit(c.block) as A.Block) : undefined;
    const end = block?.span ?? on?.span ?? value?.span ?? tokSpan(name);
    return { kind: 'decl', declKind: kind.image, declKindSpan: tokSpan(kind), name: name.image, nameSpan: tokSpan(name), value, on, block, span: join(tokSpan(kind), end) };
  }

  block(c: C.BlockCstChildren, _p: unknown): A.Block {
    const entries = (c.entry ?? []).map((n) => this.visit(n) as A.Entry | undefined).filter((e): e is A.Entry => e !== undefined);
    return { entries, span: join(tokSpan(real(c.LBrace)), tokSpan(real(c.RBrace))) };
  }

  entry(c: C.EntryCstChildren): A.Entry | undefined {
    const key = real(c.key);
    if (!key) return undefined;
    if (c.Colon) {
      const value = c.expression ? (this.visit(c.expression) as A.Expr) : errorAt(tokSpan(real(c.Colon)));
      return { kind: 'property', key: key.image, keySpan: tokSpan(key), value, span: join(tokSpan(key), value.span) };
    }
    if (!c.block) return undefined;
    const block = this.visit(c.block) as A.Block;
    const labelTok = real(c.label);
    const label = labelTok?.image;
    return { kind: 'nested', key: key.image, keySpan: tokSpan(key), label, labelSpan: labelTok ? tokSpan(labelTok) : undefined, block, span: join(tokSpan(key), block.span) };
  }

  stmtBlock(c: C.StmtBlockCstChildren): A.Stmt[] {
    return (c.statement ?? []).map((n) => this.visit(n) as A.Stmt | undefined).filter((s): s is A.Stmt => s !== undefined);
  }

  statement(c: C.StatementCstChildren): A.Stmt | undefined {
    const inner = c.inputStmt ?? c.paramStmt ?? c.letStmt ?? c.outputStmt ?? c.repeatStmt ?? c.ifStmt ?? c.assignStmt;
    return inner ? (this.visit(inner) as A.Stmt | undefined) : undefined;
  }

  inputStmt(c: C.InputStmtCstChildren): A.InputStmt | undefined {
    const name = real(c.Identifier);
    if (!name || !c.typeExpr) return undefined;
    const type = this.visit(c.typeExpr) as A.TypeExpr;
    return { kind: 'input', name: name.image, nameSpan: tokSpan(name), type, span: join(tokSpan(real(c.Input)), type.span) };
  }

  paramStmt(c: C.ParamStmtCstChildren): A.ParamStmt | undefined {
    if (!c.path || !c.typeExpr) return undefined;
    const path = this.visit(c.path) as A.Path | undefined;
    if (!path) return undefined;
    const type = this.visit(c.typeExpr) as A.TypeExpr;
    const block = c.block ? (this.visit(c.block) as A.Block) : undefined;
    return { kind: 'param', path, type, block, span: join(tokSpan(real(c.Param)), block?.span ?? type.span) };
  }

  letStmt(c: C.LetStmtCstChildren): A.LetStmt | undefined {
    const name = real(c.Identifier);
    if (!name) return undefined;
    const value = c.expression ? (this.visit(c.expression) as A.Expr) : errorAt(tokSpan(name));
    return { kind: 'let', name: name.image, nameSpan: tokSpan(name), value, span: join(tokSpan(real(c.Let)), value.span) };
  }

  assignStmt(c: C.AssignStmtCstChildren): A.AssignStmt | undefined {
    const name = real(c.Identifier);
    if (!name) return undefined;
    const value = c.expression ? (this.visit(c.expression) as A.Expr) : errorAt(tokSpan(name));
    return { kind: 'assign', name: name.image, nameSpan: tokSpan(name), value, span: join(tokSpan(name), value.span) };
  }

  outputStmt(c: C.OutputStmtCstChildren): A.OutputStmt | undefined {
    const name = real(c.Identifier);
    if (!name) return undefined;
    const type = c.typeExpr ? (this.visit(c.typeExpr) as A.TypeExpr) : undefined;
    const value = c.expression ? (this.visit(c.expression) as A.Expr) : c.Equals ? errorAt(tokSpan(real(c.Equals))) : undefined;
    return { kind: 'output', name: name.image, nameSpan: tokSpan(name), type, value, span: join(tokSpan(real(c.Output)), value?.span ?? type?.span ?? tokSpan(name)) };
  }

  repeatStmt(c: C.RepeatStmtCstChildren): A.RepeatStmt | undefined {
    const variable = real(c.Identifier);
    if (!variable) return undefined;
    const range = c.expression ? (this.visit(c.expression) as A.Expr) : errorAt(tokSpan(variable));
    const body = c.stmtBlock ? (this.visit(c.stmtBlock) as A.Stmt[]) : [];
    return { kind: 'repeat', variable: variable.image, variableSpan: tokSpan(variable), range, body, span: join(tokSpan(real(c.Repeat)), nodeSpan(c.stmtBlock?.[0])) };
  }

  ifStmt(c: C.IfStmtCstChildren): A.IfStmt {
    const cond = c.expression ? (this.visit(c.expression) as A.Expr) : errorAt(tokSpan(real(c.If)));
    const then = c.then ? (this.visit(c.then) as A.Stmt[]) : [];
    let els: A.Stmt[] | undefined;
    if (c.elseIf) els = [this.visit(c.elseIf) as A.IfStmt];
    else if (c.else) els = this.visit(c.else) as A.Stmt[];
    const last = c.elseIf?.[0] ?? c.else?.[0] ?? c.then?.[0];
    return { kind: 'if', cond, then, else: els, span: join(tokSpan(real(c.If)), nodeSpan(last)) };
  }

  typeExpr(c: C.TypeExprCstChildren, _p: unknown): A.TypeExpr {
    const name = real(c.Identifier);
    const dims = c.dims ? (this.visit(c.dims) as A.Expr[]) : undefined;
    const span = join(tokSpan(name), nodeSpan(c.dims?.[0]));
    return { name: name?.image, nameSpan: name ? tokSpan(name) : undefined, dims, span };
  }

  dims(c: C.DimsCstChildren): A.Expr[] {
    return (c.expression ?? []).map((n) => this.visit(n) as A.Expr);
  }

  path(c: C.PathCstChildren): A.Path | undefined {
    const head = real(c.Identifier);
    if (!head) return undefined;
    const segments = (c.segment ?? []).flatMap((n) => (this.visit(n) as A.Segment[] | undefined) ?? []);
    const last = segments.length ? segments[segments.length - 1].span : tokSpan(head);
    return { head: head.image, segments, span: join(tokSpan(head), last) };
  }

  segment(c: C.SegmentCstChildren, _p: unknown): A.Segment[] | undefined {
    const id = real(c.Identifier);
    if (id) return [{ kind: 'field', name: id.image, span: tokSpan(id) }];
    const num = real(c.NumberLiteral);
    if (num) {
      // The lexer reads digits right after a dot as an index, but after `. ` or a comment it sees `0.1`:
      // after a dot that can only be two indices.
      const two = /^(\d+)\.(\d+)$/.exec(num.image);
      if (two) {
        const at = num.startOffset;
        const split = at + two[1].length;
        return [
          { kind: 'index', value: Number.parseInt(two[1], 10), span: { start: at, end: split } },
          { kind: 'index', value: Number.parseInt(two[2], 10), span: { start: split + 1, end: at + num.image.length } },
        ];
      }
      if (!/^\d+$/.test(num.image)) this.report(tokSpan(num), 'VF1006', `a path index is written in plain digits (such as 3), not '${num.image}'`);
      return [{ kind: 'index', value: Number.parseInt(num.image, 10) || 0, span: tokSpan(num) }];
    }
    const deep = real(c.StarStar);
    const star = deep ?? real(c.Star);
    if (star) return [{ kind: 'wild', deep: deep !== undefined, span: tokSpan(star) }];
    if (c.expression) {
      const expr = this.visit(c.expression) as A.Expr;
      return [{ kind: 'interp', expr, span: join(tokSpan(real(c.LBrace)), join(expr.span, tokSpan(real(c.RBrace)))) }];
    }
    return undefined;
  }

  expression(c: C.ExpressionCstChildren): A.Expr {
    const inner = c.rangeExpr ? (this.visit(c.rangeExpr) as A.Expr) : errorAt(NO_SPAN);
    if (!c.As) return inner;
    const path = c.path ? (this.visit(c.path) as A.Path | undefined) : undefined;
    if (!path) return inner;
    return { kind: 'as', expr: inner, path, span: join(inner.span, path.span) };
  }

  rangeExpr(c: C.RangeExprCstChildren): A.Expr {
    const parts = (c.orExpr ?? []).map((n) => this.visit(n) as A.Expr);
    if (parts.length < 2) return parts[0] ?? errorAt(NO_SPAN);
    return { kind: 'range', from: parts[0], to: parts[1], exclusive: c.DotDotLess !== undefined, span: join(parts[0].span, parts[1].span) };
  }

  orExpr(c: C.OrExprCstChildren): A.Expr {
    return this.fold(c.andExpr, ordered(c.Or));
  }

  andExpr(c: C.AndExprCstChildren): A.Expr {
    return this.fold(c.notExpr, ordered(c.And));
  }

  notExpr(c: C.NotExprCstChildren, _p: unknown): A.Expr {
    if (c.compareExpr) return this.visit(c.compareExpr) as A.Expr;
    const operand = c.notExpr ? (this.visit(c.notExpr) as A.Expr) : errorAt(tokSpan(real(c.Not)));
    return { kind: 'unary', op: 'not', operand, span: join(tokSpan(real(c.Not)), operand.span) };
  }

  compareExpr(c: C.CompareExprCstChildren): A.Expr {
    return this.fold(c.addExpr, ordered(c.EqEq, c.NotEq, c.LessEq, c.GreaterEq, c.Less, c.Greater));
  }

  addExpr(c: C.AddExprCstChildren): A.Expr {
    return this.fold(c.mulExpr, ordered(c.Plus, c.Minus));
  }

  mulExpr(c: C.MulExprCstChildren): A.Expr {
    return this.fold(c.unaryExpr, ordered(c.Star, c.Slash, c.Percent));
  }

  /** Left-associative chain: operands and the operator tokens between them, in source order. */
  private fold(operands: CstNode[] | undefined, ops: IToken[]): A.Expr {
    const xs = (operands ?? []).map((n) => this.visit(n) as A.Expr);
    if (xs.length === 0) return errorAt(NO_SPAN);
    let acc = xs[0];
    for (let i = 1; i < xs.length; i++) {
      const op = (ops[i - 1]?.image ?? '+') as A.BinaryOp;
      acc = { kind: 'binary', op, left: acc, right: xs[i], span: join(acc.span, xs[i].span) };
    }
    return acc;
  }

  unaryExpr(c: C.UnaryExprCstChildren): A.Expr {
    if (c.postfixExpr) return this.visit(c.postfixExpr) as A.Expr;
    const operand = c.unaryExpr ? (this.visit(c.unaryExpr) as A.Expr) : errorAt(tokSpan(real(c.Minus)));
    return { kind: 'unary', op: '-', operand, span: join(tokSpan(real(c.Minus)), operand.span) };
  }

  postfixExpr(c: C.PostfixExprCstChildren): A.Expr {
    let acc = c.primary ? (this.visit(c.primary) as A.Expr) : errorAt(NO_SPAN);
    for (const n of ordered<CstNode>(c.segment, c.callArgs, c.indexArgs)) {
      if (n.name === 'segment') {
        for (const segment of (this.visit(n) as A.Segment[] | undefined) ?? []) acc = { kind: 'member', object: acc, segment, span: join(acc.span, segment.span) };
      } else if (n.name === 'callArgs') {
        acc = { kind: 'call', callee: acc, args: this.visit(n) as A.Arg[], span: join(acc.span, nodeSpan(n)) };
      } else {
        acc = { kind: 'index', object: acc, items: this.visit(n) as A.IndexItem[], span: join(acc.span, nodeSpan(n)) };
      }
    }
    return acc;
  }

  callArgs(c: C.CallArgsCstChildren): A.Arg[] {
    return (c.arg ?? []).map((n) => this.visit(n) as A.Arg);
  }

  arg(c: C.ArgCstChildren): A.Arg {
    const name = real(c.name);
    const value = c.expression ? (this.visit(c.expression) as A.Expr) : errorAt(tokSpan(name));
    return { name: name?.image, nameSpan: name ? tokSpan(name) : undefined, value, span: join(tokSpan(name), value.span) };
  }

  indexArgs(c: C.IndexArgsCstChildren): A.IndexItem[] {
    return (c.indexItem ?? []).map((n) => this.visit(n) as A.IndexItem);
  }

  indexItem(c: C.IndexItemCstChildren, _p: unknown, node?: CstNode): A.IndexItem {
    const from = c.from ? (this.visit(c.from) as A.Expr) : undefined;
    const to = c.to ? (this.visit(c.to) as A.Expr) : undefined;
    const span = join(join(from?.span ?? NO_SPAN, tokSpan(real(c.Colon))), to?.span ?? NO_SPAN);
    if (!c.Colon && from) return { kind: 'at', expr: from, span };
    return { kind: 'slice', from, to, span };
  }

  primary(c: C.PrimaryCstChildren): A.Expr {
    const num = real(c.NumberLiteral);
    if (num) {
      const span = tokSpan(num);
      const value = parseNumber(num.image);
      const unit = real(c.unit);
      if (!Number.isFinite(value)) {
        // Reported here; an error node keeps the checks from judging a made-up value.
        this.report(span, 'VF1006', `number '${num.image}' is out of range`);
        return errorAt(unit ? join(span, tokSpan(unit)) : span);
      }
      return { kind: 'number', text: num.image, value: Number.isFinite(value) ? value : 0, unit: unit?.image, span: unit ? join(span, tokSpan(unit)) : span };
    }
    const str = real(c.StringLiteral);
    if (str) {
      const raw = str.image.slice(1, -1);
      return { kind: 'string', raw, parts: parseStringBody(raw, str.startOffset + 1, this.report), span: tokSpan(str) };
    }
    const bool = real(c.True) ?? real(c.False);
    if (bool) return { kind: 'bool', value: bool.image === 'true', span: tokSpan(bool) };
    const id = real(c.Identifier);
    if (id) return { kind: 'name', name: id.image, span: tokSpan(id) };
    if (c.list) return this.visit(c.list) as A.Expr;
    if (c.expression) {
      const expr = this.visit(c.expression) as A.Expr;
      return { kind: 'paren', expr, span: join(tokSpan(real(c.LParen)), join(expr.span, tokSpan(real(c.RParen)))) };
    }
    return errorAt(NO_SPAN);
  }

  list(c: C.ListCstChildren): A.Expr {
    const items = (c.expression ?? []).map((n) => this.visit(n) as A.Expr);
    return { kind: 'list', items, span: join(tokSpan(real(c.LBracket)), tokSpan(real(c.RBracket))) };
  }
}

function errorAt(span: A.Span): A.ErrorExpr {
  return { kind: 'error', span };
}
