// fast-check arbitraries for whole .visft ASTs, for the formatter's round-trip properties. Spans are dummies
// ({start: 0, end: 0}); compare with `stripSpans`. The trees are not checked (unknown names, wrong kinds), only
// syntactically valid: names avoid the keywords, and numbers and strings are well-formed literals whose `value` /
// `parts` are what the parser computes. Precedence is not respected on purpose: `binary(*,
// binary(+, a, b), c)` is generated and the printer has to add the parentheses; `paren` nodes are generated too,
// anywhere (redundant ones included).
import fc from 'fast-check';
import type * as A from '../../compiler/ast.js';
import { parseNumber } from '../../compiler/frontend/literals.js';
import { KEYWORD_WORDS } from '../../grammar/tokens.js';

const S: A.Span = { start: 0, end: 0 };

const notKeyword = (w: string): boolean => !KEYWORD_WORDS.includes(w);

/** Identifiers: common words, words that start with a keyword (`inputs`, `notx`), and random ones. */
export const name: fc.Arbitrary<string> = fc
  .oneof(
    fc.constantFrom('x', 'y', 'h', 'B', 'N', 'width', 'heads', 'blocks', 'qkv', 'weight', 'eps', 'norm1', '_t', 'inputs', 'in_', 'notx', 'order', 'asx', 'iff', 'updates'),
    fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,5}$/),
  )
  .filter(notKeyword);

// ---------------------------------------------------------------- literals

const numberText = fc
  .tuple(
    fc.stringMatching(/^\d{1,4}$/),
    fc.option(fc.stringMatching(/^\.\d{1,3}$/), { nil: '' }),
    fc.option(fc.stringMatching(/^[eE][+-]?\d{1,2}$/), { nil: '' }),
    fc.constantFrom('', '', '', 'k', 'M'),
  )
  .map((parts) => parts.join(''));

export const numberLit: fc.Arbitrary<A.NumberLit> = fc
  .record({ text: numberText, unit: fc.option(fc.oneof(fc.constantFrom('updates', 'update', 'epochs'), name), { nil: undefined, freq: 4 }) })
  .map(({ text, unit }) => ({ kind: 'number', text, value: parseNumber(text), unit, span: S }));

type Piece = { raw: string; text: string } | { raw: string; env: string; fallback?: string };

const piece: fc.Arbitrary<Piece> = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9 ._/:{}#@-]{1,6}$/).map((t) => ({ raw: t, text: t })),
  fc.constantFrom<[string, string]>(['\\"', '"'], ['\\\\', '\\'], ['\\n', '\n'], ['\\t', '\t'], ['\\$', '$'], ['//', '//'], ['/*', '/*']).map(([raw, text]) => ({ raw, text })),
  fc
    .tuple(fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,5}$/), fc.option(fc.stringMatching(/^[a-z0-9/._ -]{0,6}$/), { nil: undefined }))
    .map(([env, fallback]) => ({ raw: fallback === undefined ? `\${${env}}` : `\${${env}:-${fallback}}`, env, fallback })),
);

/** A string literal from pieces: plain text, escapes, `${NAME}` and `${NAME:-default}`; `parts` merge adjacent text. */
export const stringLit: fc.Arbitrary<A.StringLit> = fc.array(piece, { maxLength: 4 }).map((pieces) => {
  const parts: A.StringPart[] = [];
  let text = '';
  for (const p of pieces) {
    if ('text' in p) {
      text += p.text;
      continue;
    }
    if (text) parts.push({ kind: 'text', text });
    text = '';
    parts.push(p.fallback === undefined ? { kind: 'env', name: p.env, offset: 0 } : { kind: 'env', name: p.env, fallback: p.fallback, offset: 0 });
  }
  if (text) parts.push({ kind: 'text', text });
  return { kind: 'string', raw: pieces.map((p) => p.raw).join(''), parts, span: S };
});

const boolLit: fc.Arbitrary<A.Expr> = fc.boolean().map((value) => ({ kind: 'bool', value, span: S }));
const nameRef: fc.Arbitrary<A.NameRef> = name.map((n) => ({ kind: 'name', name: n, span: S }));

const BINARY_OPS: A.BinaryOp[] = ['+', '-', '*', '/', '%', '==', '!=', '<', '<=', '>', '>=', 'and', 'or'];

// ---------------------------------------------------------------- the recursive part

type Tree = {
  expr: A.Expr;
  segment: A.Segment;
  path: A.Path;
  type: A.TypeExpr;
  stmt: A.Stmt;
  ifStmt: A.IfStmt;
  entry: A.Entry;
  block: A.Block;
};

const tree = fc.letrec<Tree>((tie) => {
  const expr = tie('expr');
  const small = <T>(arb: fc.Arbitrary<T>, maxLength = 3, minLength = 0) => fc.array(arb, { minLength, maxLength, depthIdentifier: 'expr' });
  const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
  const stmts = fc.array(tie('stmt'), { maxLength: 3, depthIdentifier: 'stmt' });
  const arg: fc.Arbitrary<A.Arg> = fc.record({ name: opt(name), value: expr }).map(({ name: n, value }) => ({ name: n, nameSpan: n === undefined ? undefined : S, value, span: S }));
  const indexItem: fc.Arbitrary<A.IndexItem> = fc.oneof(
    expr.map((e) => ({ kind: 'at' as const, expr: e, span: S })),
    fc.record({ from: opt(expr), to: opt(expr) }).map(({ from, to }) => ({ kind: 'slice' as const, from, to, span: S })),
  );
  // Postfix chains as the language uses them (`blocks.0.attn.qkv.weight[q, v]`, `f(x).y`), on names, plain
  // integers (`3.0` is a number, so `(3).0` needs its parentheses) and any other expression.
  type Postfix = { seg: A.Segment } | { args: A.Arg[] } | { items: A.IndexItem[] };
  const postfix: fc.Arbitrary<Postfix> = fc.oneof(
    { weight: 3, arbitrary: tie('segment').map((seg) => ({ seg })) },
    { weight: 1, arbitrary: small(arg).map((args) => ({ args })) },
    { weight: 1, arbitrary: small(indexItem, 2, 1).map((items) => ({ items })) },
  );
  const intLit = fc.nat({ max: 99 }).map((v): A.Expr => ({ kind: 'number', text: String(v), value: v, span: S }));
  const chain = fc
    .record({ base: fc.oneof({ weight: 3, arbitrary: nameRef }, { weight: 1, arbitrary: intLit }, { weight: 1, arbitrary: expr }), ops: small(postfix, 4, 1) })
    .map(({ base, ops }) =>
      ops.reduce<A.Expr>((object, op) => {
        if ('seg' in op) return { kind: 'member', object, segment: op.seg, span: S };
        if ('args' in op) return { kind: 'call', callee: object, args: op.args, span: S };
        return { kind: 'index', object, items: op.items, span: S };
      }, base),
    );
  return {
    expr: fc.oneof(
      { maxDepth: 4, depthIdentifier: 'expr', depthSize: 'small' },
      fc.oneof(numberLit, stringLit, boolLit, nameRef),
      small(expr).map((items): A.Expr => ({ kind: 'list', items, span: S })),
      fc.record({ from: expr, to: expr, exclusive: fc.boolean() }).map((r): A.Expr => ({ kind: 'range', ...r, span: S })),
      fc.record({ op: fc.constantFrom<A.UnaryOp>('-', 'not'), operand: expr }).map((r): A.Expr => ({ kind: 'unary', ...r, span: S })),
      fc.record({ op: fc.constantFrom(...BINARY_OPS), left: expr, right: expr }).map((r): A.Expr => ({ kind: 'binary', ...r, span: S })),
      fc.record({ callee: fc.oneof({ weight: 3, arbitrary: nameRef }, { weight: 1, arbitrary: expr }), args: small(arg) }).map((r): A.Expr => ({ kind: 'call', ...r, span: S })),
      fc.record({ object: fc.oneof({ weight: 3, arbitrary: nameRef }, { weight: 1, arbitrary: expr }), segment: tie('segment') }).map((r): A.Expr => ({ kind: 'member', ...r, span: S })),
      fc.record({ object: expr, items: small(indexItem, 3, 1) }).map((r): A.Expr => ({ kind: 'index', ...r, span: S })),
      fc.record({ expr, path: tie('path') }).map((r): A.Expr => ({ kind: 'as', ...r, span: S })),
      expr.map((e): A.Expr => ({ kind: 'paren', expr: e, span: S })),
      chain,
    ),
    segment: fc.oneof(
      name.map((n): A.Segment => ({ kind: 'field', name: n, span: S })),
      fc.nat({ max: 40 }).map((value): A.Segment => ({ kind: 'index', value, span: S })),
      expr.map((e): A.Segment => ({ kind: 'interp', expr: e, span: S })),
      fc.boolean().map((deep): A.Segment => ({ kind: 'wild', deep, span: S })),
    ),
    path: fc.record({ head: name, segments: small(tie('segment')) }).map(({ head, segments }) => ({ head, segments, span: S })),
    type: fc.oneof(
      fc.constantFrom('int', 'float', 'bool', 'str').map((n): A.TypeExpr => ({ name: n, nameSpan: S, span: S })),
      fc.record({ name: opt(fc.constantFrom('f32', 'f16', 'bf16', 'i64', 'u8', 'bool')), dims: small(expr, 4) }).map(
        ({ name: n, dims }): A.TypeExpr => ({ name: n, nameSpan: n === undefined ? undefined : S, dims, span: S }),
      ),
    ),
    stmt: fc.oneof(
      { maxDepth: 3, depthIdentifier: 'stmt', depthSize: 'small' },
      fc.record({ name, type: tie('type') }).map((r): A.Stmt => ({ kind: 'input', ...r, nameSpan: S, span: S })),
      fc.record({ path: tie('path'), type: tie('type'), block: opt(tie('block')) }).map((r): A.Stmt => ({ kind: 'param', ...r, span: S })),
      fc.record({ name, value: expr }).map((r): A.Stmt => ({ kind: 'let', ...r, nameSpan: S, span: S })),
      fc.record({ name, value: expr }).map((r): A.Stmt => ({ kind: 'assign', ...r, nameSpan: S, span: S })),
      fc.record({ name, type: opt(tie('type')), value: opt(expr) }).map((r): A.Stmt => ({ kind: 'output', ...r, nameSpan: S, span: S })),
      fc.record({ variable: name, range: expr, body: stmts }).map((r): A.Stmt => ({ kind: 'repeat', ...r, variableSpan: S, span: S })),
      tie('ifStmt'),
    ),
    ifStmt: fc
      .record({ cond: expr, then: stmts, else: opt(fc.oneof(stmts, tie('ifStmt').map((s) => [s]))) })
      .map((r): A.IfStmt => ({ kind: 'if', ...r, span: S })),
    entry: fc.oneof(
      { maxDepth: 3, depthIdentifier: 'entry', depthSize: 'small' },
      fc.record({ key: name, value: expr }).map((r): A.Entry => ({ kind: 'property', ...r, keySpan: S, span: S })),
      fc
        .record({ key: name, label: opt(fc.oneof(name, fc.stringMatching(/^[a-z0-9 ._-]{0,8}$/).map((s) => `"${s}"`))), block: tie('block') })
        .map((r): A.Entry => ({ kind: 'nested', ...r, keySpan: S, labelSpan: r.label === undefined ? undefined : S, span: S })),
    ),
    block: fc.array(tie('entry'), { maxLength: 3, depthIdentifier: 'entry' }).map((entries): A.Block => ({ entries, span: S })),
  };
});

export const expr = tree.expr;
export const stmt = tree.stmt;
export const block = tree.block;

// ---------------------------------------------------------------- top level

const importDecl: fc.Arbitrary<A.ImportDecl> = fc.oneof(
  fc.array(name, { maxLength: 2 }).map((names) => ({ kind: 'import' as const, target: ['std', ...names].join('.'), isStd: true, targetSpan: S, span: S })),
  fc.stringMatching(/^[a-z0-9_./-]{1,12}$/).map((target) => ({ kind: 'import' as const, target, isStd: false, targetSpan: S, span: S })),
);

const moduleParam: fc.Arbitrary<A.ModuleParam> = fc
  .record({ name, type: tree.type, default: fc.option(tree.expr, { nil: undefined }) })
  .map((r) => ({ ...r, nameSpan: S, span: S }));

const moduleDecl: fc.Arbitrary<A.ModuleDecl> = fc.oneof(
  fc.record({ name, params: fc.array(moduleParam, { maxLength: 4 }), body: fc.array(tree.stmt, { maxLength: 5 }) }).map((r) => ({ kind: 'module' as const, ...r, nameSpan: S, span: S })),
  fc.record({ name, alias: tree.expr }).map((r) => ({ kind: 'module' as const, ...r, params: [], nameSpan: S, span: S })),
);

const decl: fc.Arbitrary<A.Decl> = fc
  .record({ declKind: name, name, value: fc.option(tree.expr, { nil: undefined }), on: fc.option(tree.expr, { nil: undefined }), block: fc.option(tree.block, { nil: undefined }) })
  .map((r) => ({ kind: 'decl' as const, ...r, declKindSpan: S, nameSpan: S, span: S }));

export const topLevel: fc.Arbitrary<A.TopLevel> = fc.oneof(importDecl, moduleDecl, decl);

export const fileAst: fc.Arbitrary<A.FileAst> = fc.array(topLevel, { maxLength: 5 }).map((items) => ({ items, span: S }));
