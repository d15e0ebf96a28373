// The canonical layout of a .visft file (`visft fmt`). The printer works from the AST, so layout never depends on
// how the input was spaced; comments come from the lexer's `comments` group and are put back by position:
//
// - a comment after code on the same line stays at the end of that line (`x = 1  // c` prints as `x = 1 // c`);
// - a comment on its own line(s) stays on its own line before the next statement, entry or item, at its
//   indentation, or before the closing `}` when nothing follows it in the block;
// - a comment right after a block's `{` stays at the end of the header line (`if c { // c`);
// - a comment inside an expression or a header (`f(a, // c` newline `b)`) has no place in the printed line: it
//   moves onto its own line just before the statement, entry or item that contains it.
//
// Every comment is printed exactly once (checked: a placement bug throws instead of dropping one), and the
// placement of a comment in the output is again the same placement, so formatting is idempotent.
//
// Parentheses: the printer prints a `paren` node as `( ... )` and adds parentheses nowhere else, except where an
// AST that did not come from the parser needs them to parse back (`binary(*, binary(+, a, b), c)` prints as
// `(a + b) * c`), and in the two spots where the token grammar needs them (see `postfixObject` and
// `beforeColonOrBrace`). An AST from the parser never needs them, so formatting never changes the AST.
import type { IToken } from 'chevrotain';
import { visftLexer } from '../../grammar/tokens.js';
import type * as A from '../ast.js';
import type { Parsed } from './parse.js';

export interface FormatOptions {
  /** Lines longer than this are wrapped where a list, call, index or parameter list allows it. */
  readonly width?: number;
}

export const DEFAULT_WIDTH = 110;
const IND = '  ';

/** The whole file in canonical layout, with every comment kept. The file must have parsed without errors. */
export function formatSource(parsed: Parsed, options: FormatOptions = {}): string {
  return new Printer(options.width ?? DEFAULT_WIDTH, parsed.file.text, parsed.comments).file(parsed.ast);
}

/** The same printer without comments or a source text (blank lines only between top-level items). */
export function printAst(ast: A.FileAst, options: FormatOptions = {}): string {
  return new Printer(options.width ?? DEFAULT_WIDTH, undefined, []).file(ast);
}

// ---------------------------------------------------------------- documents (a small Wadler/Prettier printer)

type Doc = string | readonly Doc[] | Group | Indent | Line | IfBreak;
interface Group {
  readonly k: 'group';
  readonly doc: Doc;
}
interface Indent {
  readonly k: 'indent';
  readonly doc: Doc;
}
/** A space (or nothing, when `soft`) in a flat group; a line break in a broken one. */
interface Line {
  readonly k: 'line';
  readonly soft: boolean;
}
interface IfBreak {
  readonly k: 'ifBreak';
  readonly broken: Doc;
  readonly flat: Doc;
}

const group = (doc: Doc): Group => ({ k: 'group', doc });
const indent = (doc: Doc): Indent => ({ k: 'indent', doc });
const line: Line = { k: 'line', soft: false };
const softline: Line = { k: 'line', soft: true };
const ifBreak = (broken: Doc, flat: Doc): IfBreak => ({ k: 'ifBreak', broken, flat });

function join(docs: readonly Doc[], sep: Doc): Doc[] {
  const out: Doc[] = [];
  docs.forEach((d, i) => {
    if (i > 0) out.push(sep);
    out.push(d);
  });
  return out;
}

/** `[a, b]` on one line, or one item per line with a comma after the last where the grammar allows one. */
function bracketed(open: string, items: readonly Doc[], close: string, trailingComma: boolean): Doc {
  if (items.length === 0) return open + close;
  return group([open, indent([softline, join(items, [',', line])]), trailingComma ? ifBreak(',', '') : '', softline, close]);
}

const FLAT = 0;
const BREAK = 1;
type Cmd = readonly [indent: number, mode: number, doc: Doc];

/** Lays a document out from column `ind.length`; returns its lines (the first starts with `ind`). */
function render(doc: Doc, ind: string, width: number): string[] {
  const lines: string[] = [];
  let cur = ind;
  const stack: Cmd[] = [[ind.length, BREAK, doc]];
  while (stack.length > 0) {
    const [i, mode, d] = stack.pop() as Cmd;
    if (typeof d === 'string') cur += d;
    else if (isDocArray(d)) for (let j = d.length - 1; j >= 0; j--) stack.push([i, mode, d[j]]);
    else if (d.k === 'indent') stack.push([i + IND.length, mode, d.doc]);
    else if (d.k === 'group') stack.push([i, mode === FLAT || fits([i, FLAT, d.doc], stack, width - cur.length) ? FLAT : BREAK, d.doc]);
    else if (d.k === 'ifBreak') stack.push([i, mode, mode === BREAK ? d.broken : d.flat]);
    else if (mode === FLAT) cur += d.soft ? '' : ' ';
    else {
      lines.push(cur.trimEnd());
      cur = ' '.repeat(i);
    }
  }
  lines.push(cur);
  return lines;
}

function isDocArray(d: Doc): d is readonly Doc[] {
  return Array.isArray(d);
}

/** Whether `next` fits flat in `room` columns, together with what follows it up to the next possible break. */
function fits(next: Cmd, rest: readonly Cmd[], room: number): boolean {
  const cmds: Cmd[] = [next];
  let r = rest.length - 1;
  while (room >= 0) {
    if (cmds.length === 0) {
      if (r < 0) return true;
      cmds.push(rest[r--]);
      continue;
    }
    const [i, mode, d] = cmds.pop() as Cmd;
    if (typeof d === 'string') room -= d.length;
    else if (isDocArray(d)) for (let j = d.length - 1; j >= 0; j--) cmds.push([i, mode, d[j]]);
    else if (d.k === 'indent' || d.k === 'group') cmds.push([i, mode, d.doc]);
    else if (d.k === 'ifBreak') cmds.push([i, mode, mode === BREAK ? d.broken : d.flat]);
    else if (mode === FLAT) room -= d.soft ? 0 : 1;
    else return true;
  }
  return false;
}

// ---------------------------------------------------------------- expressions

/** Binding strength of what an expression prints as (higher binds tighter), following grammar/parser.ts. */
function prec(e: A.Expr): number {
  switch (e.kind) {
    case 'as':
      return 0;
    case 'range':
      return 1;
    case 'binary':
      return BINARY_PREC[e.op];
    case 'unary':
      return e.op === 'not' ? 4 : 8;
    case 'member':
    case 'call':
    case 'index':
      return 9;
    default:
      return 10;
  }
}

const BINARY_PREC: Record<A.BinaryOp, number> = {
  or: 2,
  and: 3,
  '==': 5, '!=': 5, '<': 5, '<=': 5, '>': 5, '>=': 5,
  '+': 6, '-': 6,
  '*': 7, '/': 7, '%': 7,
};

/** Least precedence each operand needs to print without parentheses (`or`..`%` are left-associative; comparisons do not chain). */
function operandPrec(op: A.BinaryOp): [left: number, right: number] {
  const p = BINARY_PREC[op];
  return p === 5 ? [6, 6] : [p, p + 1];
}

/**
 * Whether the printed expression ends in a number with a unit (`2k updates`). The parser only reads a word after a
 * number as its unit when no `:` or `{` follows it (so `batch: 8` + `updates: 1` on one line stays two entries),
 * so such an expression needs parentheses before `:` (a slice) or `{` (a block).
 */
function endsWithUnit(e: A.Expr): boolean {
  switch (e.kind) {
    case 'number':
      return e.unit !== undefined;
    case 'binary':
      return prec(e.right) >= operandPrec(e.op)[1] && endsWithUnit(e.right);
    case 'unary':
      return prec(e.operand) >= (e.op === 'not' ? 4 : 8) && endsWithUnit(e.operand);
    case 'range':
      return prec(e.to) >= 2 && endsWithUnit(e.to);
    default:
      return false;
  }
}

/** Whether the expression is a bare integer (`3`): `3.0` would be a number, so `.0` after it needs `(3).0`. */
function isInteger(e: A.Expr): boolean {
  return e.kind === 'number' && e.unit === undefined && /^\d+$/.test(e.text);
}

// ---------------------------------------------------------------- comments

interface Comment {
  readonly text: string;
  readonly start: number;
  readonly end: number;
}

/** A `{ ... }` region of the source: a block, a module body, a `repeat` body, a branch of an `if`. */
interface Region {
  readonly open: number;
  readonly close: number;
}

type Key = object;

interface Unit {
  /** The source range the unit stands for, to see whether the user left a blank line before it. */
  readonly start: number;
  readonly end: number;
  readonly lines: string[];
  /** For top-level units: the index of the item the unit belongs to (its leading comments included). */
  readonly item?: number;
}

// ---------------------------------------------------------------- the printer

class Printer {
  private readonly comments: Comment[];
  private readonly tokens: IToken[];
  private readonly leading = new Map<Key, Comment[]>();
  private readonly trailing = new Map<Key, Comment[]>();
  private readonly dangling = new Map<Key, Comment[]>();
  private readonly header = new Map<Key, Comment[]>();
  private readonly regions = new Map<number, Region>();
  private lineStarts: number[] = [];
  private printed = 0;

  constructor(
    private readonly width: number,
    private readonly text: string | undefined,
    comments: readonly IToken[],
  ) {
    this.comments = comments
      .map((t) => ({ text: t.image.startsWith('//') ? t.image.trimEnd() : t.image, start: t.startOffset, end: t.startOffset + t.image.length }))
      .sort((a, b) => a.start - b.start);
    this.tokens = text !== undefined && this.comments.length > 0 ? visftLexer().tokenize(text).tokens : [];
    if (text !== undefined) {
      this.lineStarts = [0];
      for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.lineStarts.push(i + 1);
    }
  }

  file(ast: A.FileAst): string {
    for (const c of this.comments) this.placeInFile(ast, c);
    for (const list of [this.leading, this.trailing, this.dangling, this.header].flatMap((m) => [...m.values()])) list.sort((a, b) => a.start - b.start);

    const units: Unit[] = [];
    ast.items.forEach((item, i) => units.push(...this.childUnits(item, item.span, '', () => this.item(item), i)));
    for (const c of this.take(this.dangling, ast)) units.push(this.commentUnit(c, '', undefined, ast.items.length));
    const lines: string[] = [];
    units.forEach((u, i) => {
      if (i > 0) {
        const prev = units[i - 1];
        const newItem = u.item !== prev.item && (u.item as number) < ast.items.length;
        const imports = newItem && ast.items[(u.item as number) - 1]?.kind === 'import' && ast.items[u.item as number].kind === 'import';
        if ((newItem && !imports) || this.blankBetween(prev, u)) lines.push('');
      }
      lines.push(...u.lines);
    });
    if (this.printed !== this.comments.length) {
      throw new Error(`formatter bug: ${this.comments.length - this.printed} comment(s) were not placed`);
    }
    return lines.length ? lines.join('\n') + '\n' : '';
  }

  // ------------------------------------------------------------ placing comments

  private add(map: Map<Key, Comment[]>, key: Key, c: Comment): void {
    const list = map.get(key);
    if (list) list.push(c);
    else map.set(key, [c]);
  }

  private take(map: Map<Key, Comment[]>, key: Key): Comment[] {
    const list = map.get(key) ?? [];
    map.delete(key);
    this.printed += list.length;
    return list;
  }

  private has(map: Map<Key, Comment[]>, key: Key): boolean {
    return (map.get(key)?.length ?? 0) > 0;
  }

  private lineOf(offset: number): number {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** The `{ ... }` that starts at the first `{` token at or after `from`. */
  private region(from: number): Region {
    let r = this.regions.get(from);
    if (!r) this.regions.set(from, (r = this.findRegion(from)));
    return r;
  }

  private findRegion(from: number): Region {
    let lo = 0;
    let hi = this.tokens.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.tokens[mid].startOffset < from) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    while (i < this.tokens.length && this.tokens[i].image !== '{') i++;
    const open = i < this.tokens.length ? this.tokens[i].startOffset : Infinity;
    let depth = 0;
    for (; i < this.tokens.length; i++) {
      const t = this.tokens[i].image;
      if (t === '{') depth++;
      else if (t === '}' && --depth === 0) return { open, close: this.tokens[i].startOffset };
    }
    return { open, close: Infinity };
  }

  private blockRegion(b: A.Block): Region {
    return { open: b.span.start, close: b.span.end - 1 };
  }

  private placeInFile(ast: A.FileAst, c: Comment): void {
    const item = containing(ast.items, c);
    if (!item) return this.placeBetween(ast, ast.items, undefined, c);
    if (item.kind === 'module' && item.body) {
      const last = item.params.length ? item.params[item.params.length - 1].span.end : item.nameSpan.end;
      const r = this.region(last);
      if (within(c, r)) return this.placeInStmts(item.body, r, c);
    } else if (item.kind === 'decl' && item.block && within(c, this.blockRegion(item.block))) {
      return this.placeInBlock(item.block, c);
    }
    this.add(this.leading, item, c);
  }

  /** Between the children of a region: trailing the previous one, after the `{`, leading the next, or before `}`. */
  private placeBetween(key: Key, children: readonly { readonly span: A.Span }[], r: Region | undefined, c: Comment): void {
    // Children are in source order and do not overlap; the comment is in none of them.
    const i = firstEndingAfter(children, c.start);
    const prev = i > 0 ? children[i - 1] : undefined;
    const next = i < children.length ? children[i] : undefined;
    if (prev && this.lineOf(prev.span.end - 1) === this.lineOf(c.start)) this.add(this.trailing, prev, c);
    else if (!prev && r && this.lineOf(r.open) === this.lineOf(c.start)) this.add(this.header, key, c);
    else if (next) this.add(this.leading, next, c);
    else this.add(this.dangling, key, c);
  }

  private placeInStmts(stmts: readonly A.Stmt[], r: Region, c: Comment): void {
    const s = containing(stmts, c);
    if (!s) return this.placeBetween(stmts, stmts, r, c);
    if (s.kind === 'param' && s.block && within(c, this.blockRegion(s.block))) return this.placeInBlock(s.block, c);
    if (s.kind === 'repeat') {
      const body = this.region(s.range.span.end);
      if (within(c, body)) return this.placeInStmts(s.body, body, c);
    }
    if (s.kind === 'if') return this.placeInIf(s, c, () => this.add(this.leading, s, c));
    this.add(this.leading, s, c);
  }

  /** `onHead` places a comment in the `if cond` part (before the statement, or inside the branch before `else if`). */
  private placeInIf(s: A.IfStmt, c: Comment, onHead: () => void): void {
    const then = this.region(s.cond.span.end);
    if (within(c, then)) return this.placeInStmts(s.then, then, c);
    if (c.start < then.open) return onHead();
    if (s.else && isElseIf(s)) {
      const nested = s.else[0] as A.IfStmt;
      if (inside(c, nested)) return this.placeInIf(nested, c, () => this.add(this.dangling, s.then, c));
      // `else { if ... }` written with braces: what follows the inner `if` goes before the chain's last `}`.
      if (c.start >= nested.span.end) return this.add(this.dangling, lastBranch(nested), c);
    } else if (s.else) {
      const els = this.region(then.close + 1);
      if (within(c, els)) return this.placeInStmts(s.else, els, c);
    }
    // Between `}` and `else` or the `else`'s `{`: at the end of the `then` branch.
    this.add(this.dangling, s.then, c);
  }

  private placeInBlock(b: A.Block, c: Comment): void {
    const e = containing(b.entries, c);
    if (!e) return this.placeBetween(b, b.entries, this.blockRegion(b), c);
    if (e.kind === 'nested' && within(c, this.blockRegion(e.block))) return this.placeInBlock(e.block, c);
    this.add(this.leading, e, c);
  }

  // ------------------------------------------------------------ units and blank lines

  private commentUnit(c: Comment, ind: string, ownerStart: number | undefined, item?: number): Unit {
    // A comment moved out of its statement stands, for blank lines, where the statement starts.
    const moved = ownerStart !== undefined && c.start >= ownerStart;
    return { start: moved ? ownerStart : c.start, end: moved ? ownerStart : c.end, lines: [ind + c.text], item };
  }

  /** A child's leading comments, then the child with its trailing comments at the end of its last line. */
  private childUnits(key: Key, span: A.Span, ind: string, print: () => string[], item?: number): Unit[] {
    const units = this.take(this.leading, key).map((c) => this.commentUnit(c, ind, span.start, item));
    const lines = print();
    const tail = this.take(this.trailing, key);
    let end = span.end;
    if (tail.length) {
      lines[lines.length - 1] += ' ' + tail.map((c) => c.text).join(' ');
      end = Math.max(end, ...tail.map((c) => c.end));
    }
    units.push({ start: span.start, end, lines, item });
    return units;
  }

  private blankBetween(a: Unit, b: Unit): boolean {
    if (this.text === undefined || a.end > b.start) return false;
    // Only white space (and the commas that may separate block entries) between them.
    const gap = this.text.slice(a.end, b.start);
    return /^[ \t\r\n\f\uFEFF,]*$/.test(gap) && gap.split('\n').length > 2;
  }

  /** The lines inside `{ ... }` for a region's children and its comments before `}`. */
  private inner<T extends { readonly span: A.Span }>(key: Key, children: readonly T[], ind: string, print: (x: T, ind: string) => string[]): string[] {
    const units: Unit[] = [];
    for (const ch of children) units.push(...this.childUnits(ch, ch.span, ind, () => print(ch, ind)));
    for (const c of this.take(this.dangling, key)) units.push(this.commentUnit(c, ind, undefined));
    const lines: string[] = [];
    units.forEach((u, i) => {
      if (i > 0 && this.blankBetween(units[i - 1], u)) lines.push('');
      lines.push(...u.lines);
    });
    return lines;
  }

  /** `head {` + children + `}`, or `head {}` when there is nothing inside (no comments either). */
  private braced<T extends { readonly span: A.Span }>(head: Doc, key: Key, children: readonly T[], ind: string, print: (x: T, ind: string) => string[]): string[] {
    const hdr = this.take(this.header, key);
    const body = this.inner(key, children, ind + IND, print);
    if (hdr.length === 0 && body.length === 0) return this.doc([head, ' {}'], ind);
    const lines = this.doc([head, ' {'], ind);
    if (hdr.length) lines[lines.length - 1] += ' ' + hdr.map((c) => c.text).join(' ');
    return [...lines, ...body, ind + '}'];
  }

  private doc(d: Doc, ind: string): string[] {
    return render(d, ind, this.width);
  }

  // ------------------------------------------------------------ items, statements, entries

  private item(item: A.TopLevel): string[] {
    switch (item.kind) {
      case 'import':
        return ['import ' + this.importTarget(item)];
      case 'module': {
        if (item.alias) return this.doc(['module ', item.name, ' = ', this.expr(item.alias)], '');
        const params = bracketed('(', item.params.map((p) => this.moduleParam(p)), ')', true);
        return this.braced(['module ', item.name, params], item.body ?? [], item.body ?? [], '', (s, ind) => this.stmt(s, ind));
      }
      case 'decl': {
        const head: Doc[] = [item.declKind, ' ', item.name];
        if (item.value) head.push(' = ', item.on || !item.block ? this.expr(item.value) : this.beforeColonOrBrace(item.value));
        if (item.on) head.push(' on ', item.block ? this.beforeColonOrBrace(item.on) : this.expr(item.on));
        if (!item.block) return this.doc(head, '');
        return this.braced(head, item.block, item.block.entries, '', (e, ind) => this.entry(e, ind));
      }
    }
  }

  private importTarget(item: A.ImportDecl): string {
    if (item.isStd) return item.target;
    // A relative import is a string; the source keeps its escapes and `${NAME:-default}` (the AST's target does not).
    const raw = this.text?.slice(item.targetSpan.start, item.targetSpan.end);
    if (raw !== undefined && /^"(?:[^"\\\n\r]|\\.)*"$/.test(raw)) return raw;
    if (raw !== undefined && /^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$/.test(raw) && raw === item.target) return raw;
    return '"' + item.target.replace(/[\\"]/g, (ch) => '\\' + ch).replace(/\n/g, '\\n').replace(/\t/g, '\\t') + '"';
  }

  private moduleParam(p: A.ModuleParam): Doc {
    const d: Doc[] = [p.name, ': ', this.type(p.type)];
    if (p.default) d.push(' = ', this.expr(p.default));
    return d;
  }

  private stmt(s: A.Stmt, ind: string): string[] {
    switch (s.kind) {
      case 'input':
        return this.doc(['input ', s.name, ': ', this.type(s.type)], ind);
      case 'param': {
        const head = ['param ', this.path(s.path), ': ', this.type(s.type)];
        return s.block ? this.blockEntry(head, s.block, ind) : this.doc(head, ind);
      }
      case 'let':
        return this.doc(['let ', s.name, ' = ', this.expr(s.value)], ind);
      case 'assign':
        return this.doc([s.name, ' = ', this.expr(s.value)], ind);
      case 'output': {
        const d: Doc[] = ['output ', s.name];
        if (s.type) d.push(': ', this.type(s.type));
        if (s.value) d.push(' = ', this.expr(s.value));
        return this.doc(d, ind);
      }
      case 'repeat':
        return this.braced(['repeat ', s.variable, ' in ', this.beforeColonOrBrace(s.range)], s.body, s.body, ind, (x, i) => this.stmt(x, i));
      case 'if':
        return this.ifStmt(s, ind, '');
    }
  }

  /** `if c {` ... `} else if d {` ... `} else {` ... `}`; `lead` is what precedes `if` on its line (`} else `). */
  private ifStmt(s: A.IfStmt, ind: string, lead: string): string[] {
    const out = this.braced([lead, 'if ', this.beforeColonOrBrace(s.cond)], s.then, s.then, ind, (x, i) => this.stmt(x, i));
    if (!s.else) return out;
    // The `then` branch ends in a `}` line, or is `if c {}` on one line; `else` continues that line.
    const closing = (out.pop() as string).slice(ind.length) + ' else ';
    if (isElseIf(s)) return [...out, ...this.ifStmt(s.else[0] as A.IfStmt, ind, closing)];
    return [...out, ...this.braced(closing.trimEnd(), s.else, s.else, ind, (x, i) => this.stmt(x, i))];
  }

  private entry(e: A.Entry, ind: string): string[] {
    if (e.kind === 'property') return this.doc([e.key, ': ', this.expr(e.value)], ind);
    return this.blockEntry(e.label !== undefined ? [e.key, ' ', e.label] : e.key, e.block, ind);
  }

  /**
   * A `param` or nested block: `head { key: value }` on one line when it has a single property, no comments and
   * fits; otherwise one entry per line.
   */
  private blockEntry(head: Doc, b: A.Block, ind: string): string[] {
    const only = b.entries.length === 1 ? b.entries[0] : undefined;
    if (only?.kind === 'property' && !this.has(this.header, b) && !this.has(this.dangling, b) && !this.has(this.leading, only) && !this.has(this.trailing, only)) {
      const lines = this.doc([head, ' { ', only.key, ': ', this.expr(only.value), ' }'], ind);
      if (lines.length === 1 && lines[0].length <= this.width) return lines;
    }
    return this.braced(head, b, b.entries, ind, (x, i) => this.entry(x, i));
  }

  // ------------------------------------------------------------ expressions, paths, types

  private expr(e: A.Expr, min = 0): Doc {
    const d = this.exprDoc(e);
    return prec(e) < min ? ['(', d, ')'] : d;
  }

  /** An expression followed by `:` or `{`, which must not end in a number with a unit (see `endsWithUnit`). */
  private beforeColonOrBrace(e: A.Expr): Doc {
    return endsWithUnit(e) ? ['(', this.exprDoc(e), ')'] : this.expr(e);
  }

  /** The object of `.segment`, `(args)` or `[items]` (`(3).0`: `3.0` is a number). */
  private postfixObject(e: A.Expr, beforeIndexSegment: boolean): Doc {
    return prec(e) < 9 || (beforeIndexSegment && isInteger(e)) ? ['(', this.exprDoc(e), ')'] : this.exprDoc(e);
  }

  private exprDoc(e: A.Expr): Doc {
    switch (e.kind) {
      case 'number':
        return e.unit !== undefined ? `${e.text} ${e.unit}` : e.text;
      case 'string':
        return `"${e.raw}"`;
      case 'bool':
        return e.value ? 'true' : 'false';
      case 'name':
        return e.name;
      case 'list':
        return bracketed('[', e.items.map((x) => this.expr(x)), ']', true);
      case 'range':
        return [this.expr(e.from, 2), e.exclusive ? '..<' : '..', this.expr(e.to, 2)];
      case 'unary':
        return e.op === 'not' ? ['not ', this.expr(e.operand, 4)] : ['-', this.expr(e.operand, 8)];
      case 'binary': {
        const [l, r] = operandPrec(e.op);
        return [this.expr(e.left, l), ' ', e.op, ' ', this.expr(e.right, r)];
      }
      case 'call':
        return [this.postfixObject(e.callee, false), bracketed('(', e.args.map((a) => this.arg(a)), ')', true)];
      case 'member':
        return [this.postfixObject(e.object, e.segment.kind === 'index'), '.', this.segment(e.segment)];
      case 'index':
        return [this.postfixObject(e.object, false), bracketed('[', e.items.map((i) => this.indexItem(i)), ']', false)];
      case 'as':
        return [this.expr(e.expr, 1), ' as ', this.path(e.path)];
      case 'paren':
        return ['(', this.expr(e.expr), ')'];
      case 'error':
        throw new Error('cannot format a file with syntax errors');
    }
  }

  private arg(a: A.Arg): Doc {
    return a.name !== undefined ? [a.name, ': ', this.expr(a.value)] : this.expr(a.value);
  }

  private indexItem(i: A.IndexItem): Doc {
    if (i.kind === 'at') return this.expr(i.expr);
    const d: Doc[] = [];
    if (i.from) d.push(this.beforeColonOrBrace(i.from));
    d.push(':');
    if (i.to) d.push(this.expr(i.to));
    return d;
  }

  private segment(s: A.Segment): Doc {
    switch (s.kind) {
      case 'field':
        return s.name;
      case 'index':
        return String(s.value);
      case 'interp':
        return ['{', this.expr(s.expr), '}'];
      case 'wild':
        return s.deep ? '**' : '*';
    }
  }

  private path(p: A.Path): Doc {
    return [p.head, ...p.segments.map((s) => ['.', this.segment(s)])];
  }

  private type(t: A.TypeExpr): Doc {
    return [t.name ?? '', t.dims ? bracketed('[', t.dims.map((d) => this.expr(d)), ']', false) : ''];
  }
}

/** The index of the first child (in source order) that ends after `offset`. */
function firstEndingAfter(children: readonly { readonly span: A.Span }[], offset: number): number {
  let lo = 0;
  let hi = children.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (children[mid].span.end <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The child whose span holds the comment's start, if any. */
function containing<T extends { readonly span: A.Span }>(children: readonly T[], c: Comment): T | undefined {
  const ch = children[firstEndingAfter(children, c.start)];
  return ch && inside(c, ch) ? ch : undefined;
}

function inside(c: Comment, x: { readonly span: A.Span } | A.Span): boolean {
  const span = 'span' in x ? x.span : x;
  return c.start >= span.start && c.start < span.end;
}

function within(c: Comment, r: Region): boolean {
  return c.start > r.open && c.start < r.close;
}

/** `else if`: an `else` whose only statement is an `if` (the AST does not tell `else { if ... }` apart). */
function isElseIf(s: A.IfStmt): boolean {
  return s.else !== undefined && s.else.length === 1 && s.else[0].kind === 'if';
}

/** The statements of the branch printed last in an `if` / `else if` chain. */
function lastBranch(s: A.IfStmt): readonly A.Stmt[] {
  if (isElseIf(s)) return lastBranch(s.else?.[0] as A.IfStmt);
  return s.else ?? s.then;
}
