// The AST of a .visft file: what the CST visitor builds, the checks read and the formatter prints.
// Every node carries the span of source it came from; `stripSpans` removes them for structural comparison.

export interface Span {
  /** 0-based offsets into the file's text; `end` is exclusive. */
  readonly start: number;
  readonly end: number;
}

interface NodeBase {
  readonly span: Span;
}

// ---------------------------------------------------------------- expressions

export type Expr =
  | NumberLit
  | StringLit
  | BoolLit
  | NameRef
  | ListExpr
  | RangeExpr
  | UnaryExpr
  | BinaryExpr
  | CallExpr
  | MemberExpr
  | IndexExpr
  | AsExpr
  | ParenExpr
  | ErrorExpr;

export interface NumberLit extends NodeBase {
  readonly kind: 'number';
  /** The literal as written (`100k`, `4e-4`), kept so the formatter never rewrites numbers. */
  readonly text: string;
  readonly value: number;
  /** `updates` in `2k updates`; the checker validates it. */
  readonly unit?: string;
}

/** A string with `${NAME}` / `${NAME:-default}` parts; `raw` is the text between the quotes. */
export interface StringLit extends NodeBase {
  readonly kind: 'string';
  readonly raw: string;
  readonly parts: readonly StringPart[];
}
export type StringPart =
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'env'; readonly name: string; readonly fallback?: string; readonly offset: number };

export interface BoolLit extends NodeBase {
  readonly kind: 'bool';
  readonly value: boolean;
}

export interface NameRef extends NodeBase {
  readonly kind: 'name';
  readonly name: string;
}

export interface ListExpr extends NodeBase {
  readonly kind: 'list';
  readonly items: readonly Expr[];
}

export interface RangeExpr extends NodeBase {
  readonly kind: 'range';
  readonly from: Expr;
  readonly to: Expr;
  /** `a..<b` */
  readonly exclusive: boolean;
}

export type UnaryOp = '-' | 'not';
export interface UnaryExpr extends NodeBase {
  readonly kind: 'unary';
  readonly op: UnaryOp;
  readonly operand: Expr;
}

export type BinaryOp = '+' | '-' | '*' | '/' | '%' | '==' | '!=' | '<' | '<=' | '>' | '>=' | 'and' | 'or';
export interface BinaryExpr extends NodeBase {
  readonly kind: 'binary';
  readonly op: BinaryOp;
  readonly left: Expr;
  readonly right: Expr;
}

export interface Arg extends NodeBase {
  /** Keyword arguments have a name (`eps: 1e-6`); positional ones do not. */
  readonly name?: string;
  readonly nameSpan?: Span;
  readonly value: Expr;
}

export interface CallExpr extends NodeBase {
  readonly kind: 'call';
  readonly callee: Expr;
  readonly args: readonly Arg[];
}

/** One segment after a dot: a name, an index, `{expr}`, `*` or `**`. */
export type Segment =
  | { readonly kind: 'field'; readonly name: string; readonly span: Span }
  | { readonly kind: 'index'; readonly value: number; readonly span: Span }
  | { readonly kind: 'interp'; readonly expr: Expr; readonly span: Span }
  | { readonly kind: 'wild'; readonly deep: boolean; readonly span: Span };

export interface MemberExpr extends NodeBase {
  readonly kind: 'member';
  readonly object: Expr;
  readonly segment: Segment;
}

/** `x[a, b]`, `qkv.weight[q, v]`, `x[0:1408]`: items are expressions or slices. */
export interface IndexExpr extends NodeBase {
  readonly kind: 'index';
  readonly object: Expr;
  readonly items: readonly IndexItem[];
}
export type IndexItem =
  | { readonly kind: 'at'; readonly expr: Expr; readonly span: Span }
  | { readonly kind: 'slice'; readonly from?: Expr; readonly to?: Expr; readonly span: Span };

/** `eva_block(x) as blocks.{i}`: the call's parameters live under the path. */
export interface AsExpr extends NodeBase {
  readonly kind: 'as';
  readonly expr: Expr;
  readonly path: Path;
}

export interface ParenExpr extends NodeBase {
  readonly kind: 'paren';
  readonly expr: Expr;
}

/** Stands where the parser recovered from a syntax error; never reaches later stages. */
export interface ErrorExpr extends NodeBase {
  readonly kind: 'error';
}

// ---------------------------------------------------------------- paths and types

/** A dotted parameter path with optional `{expr}` / `*` segments: `blocks.{i}.attn.qkv.weight`. */
export interface Path extends NodeBase {
  readonly head: string;
  readonly segments: readonly Segment[];
}

export interface TypeExpr extends NodeBase {
  /** `f32`, `int`, ...; absent for `[dims]` (f32 by default). */
  readonly name?: string;
  readonly nameSpan?: Span;
  /** Present for tensor types. */
  readonly dims?: readonly Expr[];
}

// ---------------------------------------------------------------- module bodies

export type Stmt = InputStmt | ParamStmt | LetStmt | AssignStmt | OutputStmt | RepeatStmt | IfStmt;

export interface InputStmt extends NodeBase {
  readonly kind: 'input';
  readonly name: string;
  readonly nameSpan: Span;
  readonly type: TypeExpr;
}

export interface ParamStmt extends NodeBase {
  readonly kind: 'param';
  readonly path: Path;
  readonly type: TypeExpr;
  readonly block?: Block;
}

export interface LetStmt extends NodeBase {
  readonly kind: 'let';
  readonly name: string;
  readonly nameSpan: Span;
  readonly value: Expr;
}

export interface AssignStmt extends NodeBase {
  readonly kind: 'assign';
  readonly name: string;
  readonly nameSpan: Span;
  readonly value: Expr;
}

export interface OutputStmt extends NodeBase {
  readonly kind: 'output';
  readonly name: string;
  readonly nameSpan: Span;
  readonly type?: TypeExpr;
  readonly value?: Expr;
}

export interface RepeatStmt extends NodeBase {
  readonly kind: 'repeat';
  readonly variable: string;
  readonly variableSpan: Span;
  readonly range: Expr;
  readonly body: readonly Stmt[];
}

export interface IfStmt extends NodeBase {
  readonly kind: 'if';
  readonly cond: Expr;
  readonly then: readonly Stmt[];
  /** `else { ... }` or `else if ...` (a single nested IfStmt). */
  readonly else?: readonly Stmt[];
}

// ---------------------------------------------------------------- top level

export interface ModuleParam extends NodeBase {
  readonly name: string;
  readonly nameSpan: Span;
  readonly type: TypeExpr;
  readonly default?: Expr;
}

export interface ModuleDecl extends NodeBase {
  readonly kind: 'module';
  readonly name: string;
  readonly nameSpan: Span;
  readonly params: readonly ModuleParam[];
  /** A module with a body ... */
  readonly body?: readonly Stmt[];
  /** ... or a specialisation of another (`module eva_vit_g = eva_vit(width: 1408, ...)`). */
  readonly alias?: Expr;
}

export interface ImportDecl extends NodeBase {
  readonly kind: 'import';
  /** `std.eva_vit` as written, or the string's text for relative imports. */
  readonly target: string;
  readonly isStd: boolean;
  readonly targetSpan: Span;
}

/** `kind name (= value)? (on target)? { entries }` */
export interface Decl extends NodeBase {
  readonly kind: 'decl';
  readonly declKind: string;
  readonly declKindSpan: Span;
  readonly name: string;
  readonly nameSpan: Span;
  readonly value?: Expr;
  readonly on?: Expr;
  readonly block?: Block;
}

export interface Block extends NodeBase {
  readonly entries: readonly Entry[];
}

export type Entry = Property | NestedBlock;

export interface Property extends NodeBase {
  readonly kind: 'property';
  readonly key: string;
  readonly keySpan: Span;
  readonly value: Expr;
}

/** `task caption { ... }`, `weights { ... }`. */
export interface NestedBlock extends NodeBase {
  readonly kind: 'nested';
  readonly key: string;
  readonly keySpan: Span;
  readonly label?: string;
  readonly labelSpan?: Span;
  readonly block: Block;
}

export type TopLevel = ImportDecl | ModuleDecl | Decl;

export interface FileAst extends NodeBase {
  readonly items: readonly TopLevel[];
}

/** A deep copy without `span`/`*Span`/`offset` fields, for structural equality in tests. */
export function stripSpans<T>(node: T): unknown {
  if (Array.isArray(node)) return node.map(stripSpans);
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    if (k === 'span' || k.endsWith('Span') || k === 'offset' || v === undefined) continue;
    out[k] = stripSpans(v);
  }
  return out;
}
