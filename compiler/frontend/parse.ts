// Source text → AST plus diagnostics for everything lexical and syntactic. Never throws: binary input,
// huge files and pathological nesting all end as diagnostics.
import type { IRecognitionException, IToken } from 'chevrotain';
import { parseText } from '../../grammar/parser.js';
import { KEYWORD_WORDS } from '../../grammar/tokens.js';
import type { FileAst, Span } from '../ast.js';
import { AstBuilder } from './cst-to-ast.js';
import { closest, Diagnostics } from './diagnostics.js';
import { SourceFile } from './source.js';

/** Larger sources are refused: no real pipeline is anywhere near this, and parsing stays fast. */
export const MAX_SOURCE_BYTES = 4 * 1024 * 1024;

export interface Parsed {
  readonly file: SourceFile;
  readonly ast: FileAst;
  readonly comments: readonly IToken[];
}

const EMPTY: FileAst = { items: [], span: { start: 0, end: 0 } };

/** Decodes bytes as UTF-8, or reports why the file is not text. */
export function decodeSource(path: string, bytes: Uint8Array, diags: Diagnostics): SourceFile | undefined {
  const at0 = new SourceFile(path, '');
  if (bytes.length > MAX_SOURCE_BYTES) {
    diags.error('VF1008', at0, { start: 0, end: 0 }, `file is ${bytes.length} bytes; .visft files are limited to ${MAX_SOURCE_BYTES} bytes`);
    return undefined;
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    // Point at the first bad byte, showing its line with replacement characters.
    const bad = firstInvalidUtf8(bytes);
    const lossy = new SourceFile(path, new TextDecoder('utf-8').decode(bytes));
    const at = bad < bytes.length ? new TextDecoder('utf-8').decode(bytes.subarray(0, bad)).length : 0;
    const byte = bad < bytes.length ? ` (byte 0x${bytes[bad].toString(16).padStart(2, '0')} at offset ${bad})` : '';
    diags.error('VF1005', lossy, { start: at, end: at + 1 }, `file is not valid UTF-8 text${byte}; is it a binary file?`);
    return undefined;
  }
  const nul = text.indexOf('\0');
  if (nul >= 0) {
    const file = new SourceFile(path, text);
    diags.error('VF1005', file, { start: nul, end: nul + 1 }, 'file contains a NUL character (is it a binary file?)');
    return undefined;
  }
  return new SourceFile(path, text);
}

export function parseSource(file: SourceFile, diags: Diagnostics): Parsed {
  let out;
  try {
    out = parseText(file.text);
    // An unclosed block comment or string would make the rest of the file (or line) read as code and bury
    // the real error under echoes: report it, blank it out and parse again.
    const repaired = repairUnclosed(file, out, diags);
    if (repaired !== file.text) out = parseText(repaired);
  } catch (e) {
    // chevrotain recurses per nesting level: absurd nesting exhausts the stack.
    if (e instanceof RangeError) {
      const at = nestingHotspot(file.text);
      diags.error('VF1009', file, { start: at.offset, end: at.offset + 1 }, `input is nested too deeply to parse (${at.what})`);
      return { file, ast: EMPTY, comments: [] };
    }
    throw e;
  }
  for (const e of out.lexErrors) reportLexError(file, e, diags);
  // One syntax error per line: what recovery reports after the first on a line is mostly its echo.
  const seenLines = new Set<number>();
  for (const e of out.parseErrors) {
    const d = describeParseError(file, e);
    const typo = misspeltKeyword(file, out.tokens, d.span.start);
    if (typo) Object.assign(d, typo);
    const line = file.position(d.span.start).line;
    if (seenLines.has(line)) continue;
    seenLines.add(line);
    diags.error('VF1004', file, d.span, d.message);
  }
  let ast = EMPTY;
  try {
    ast = new AstBuilder((span, code, message) => diags.error(code, file, span, message)).visit(out.cst) as FileAst;
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    const at = nestingHotspot(file.text);
    diags.error('VF1009', file, { start: at.offset, end: at.offset + 1 }, `input is nested too deeply to parse (${at.what})`);
    ast = EMPTY;
  }
  return { file, ast: limitDepth(ast, file, diags), comments: out.comments };
}

/** Deeper ASTs are refused: the checks recurse over expressions, and `a + b + c ...` nests one level per term. */
export const MAX_AST_DEPTH = 500;

/**
 * Drops each top-level item whose AST is deeper than MAX_AST_DEPTH (long operator or `.` chains build such
 * trees without any brackets), reporting where the limit was crossed. Iterative, so any depth is safe here.
 */
function limitDepth(ast: FileAst, file: SourceFile, diags: Diagnostics): FileAst {
  let dropped = false;
  const items = ast.items.filter((item) => {
    const stack: [unknown, number][] = [[item, 1]];
    while (stack.length) {
      const [node, depth] = stack.pop()!;
      if (Array.isArray(node)) {
        for (const child of node) stack.push([child, depth]);
        continue;
      }
      if (node === null || typeof node !== 'object' || !('span' in node)) continue;
      if (depth > MAX_AST_DEPTH) {
        const span = (node as { span: Span }).span;
        diags.error('VF1009', file, { start: span.start, end: Math.min(span.end, span.start + 1) }, `expression nested too deeply (more than ${MAX_AST_DEPTH} levels; split long chains of operators)`);
        dropped = true;
        return false;
      }
      for (const [key, child] of Object.entries(node)) if (key !== 'span' && typeof child === 'object') stack.push([child, depth + 1]);
    }
    return true;
  });
  return dropped ? { ...ast, items } : ast;
}

/**
 * Reports an unclosed block comment (the lexer reads a lone `/*` as '/' '*') and strings not closed on their
 * line; returns the text with the comment blanked to the end of the file and each such string turned into
 * `""` plus spaces (offsets unchanged), or the text itself when there is neither.
 */
function repairUnclosed(file: SourceFile, out: ReturnType<typeof parseText>, diags: Diagnostics): string {
  let text = file.text;
  const toks = out.tokens;
  let comment = text.length;
  for (let i = 0; i + 1 < toks.length; i++) {
    if (toks[i].image === '/' && toks[i + 1].image.startsWith('*') && toks[i + 1].startOffset === toks[i].startOffset + 1) {
      comment = toks[i].startOffset;
      break;
    }
  }
  for (const e of out.lexErrors) {
    if (e.offset >= comment || text[e.offset] !== '"') continue;
    diags.error('VF1002', file, { start: e.offset, end: e.offset + 1 }, 'string is not closed on this line (strings cannot span lines)');
    let end = text.indexOf('\n', e.offset);
    if (end < 0) end = text.length;
    if (text[end - 1] === '\r') end--;
    const n = end - e.offset;
    text = text.slice(0, e.offset) + (n >= 2 ? '""' + ' '.repeat(n - 2) : ' ') + text.slice(end);
  }
  if (comment < text.length) {
    diags.error('VF1003', file, { start: comment, end: comment + 2 }, "block comment is never closed with '*/' (everything after it is ignored)");
    text = text.slice(0, comment) + text.slice(comment).replace(/[^\r\n]/g, ' ');
  }
  return text;
}

/**
 * Where the parser most likely ran out of stack, for the VF1009 caret: the first opening bracket at the
 * greatest depth, or the start of the longest run of prefix operators (`not not not ...`, `- - - 1`).
 */
function nestingHotspot(text: string): { offset: number; what: string } {
  let depth = 0;
  let deepest = { offset: 0, depth: 0 };
  let run = { offset: 0, length: 0 };
  let longest = { offset: 0, length: 0 };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') continue;
    const prefix = c === '-' ? 1 : text.startsWith('not', i) && !/[A-Za-z0-9_]/.test(text[i + 3] ?? '') && !/[A-Za-z0-9_]/.test(text[i - 1] ?? '') ? 3 : 0;
    if (prefix) {
      if (run.length === 0) run = { offset: i, length: 0 };
      run.length++;
      if (run.length > longest.length) longest = { ...run };
      i += prefix - 1;
      continue;
    }
    run = { offset: 0, length: 0 };
    if (c === '"') {
      while (++i < text.length && text[i] !== '"' && text[i] !== '\n') if (text[i] === '\\') i++;
    } else if (c === '/' && text[i + 1] === '/') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '/' && text[i + 1] === '*') {
      const close = text.indexOf('*/', i + 2);
      i = close < 0 ? text.length : close + 1;
    } else if (c === '(' || c === '[' || c === '{') {
      if (++depth > deepest.depth) deepest = { offset: i, depth };
    } else if (c === ')' || c === ']' || c === '}') {
      depth = Math.max(0, depth - 1);
    }
  }
  return longest.length > deepest.depth
    ? { offset: longest.offset, what: `${longest.length} prefix operators in a row` }
    : { offset: deepest.offset, what: `${deepest.depth} levels of brackets` };
}

/** The byte offset of the first byte that is not part of a well-formed UTF-8 sequence (bytes.length if none). */
function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    const n = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
    if (n === 0 || i + n >= b.length) return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      if ((b[i + k] & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (b[i + k] & 0x3f);
    }
    if (cp < [0, 0x80, 0x800, 0x10000][n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return b.length;
}

function reportLexError(file: SourceFile, e: { offset: number; length: number; message: string }, diags: Diagnostics): void {
  const ch = file.text[e.offset];
  const span = { start: e.offset, end: e.offset + 1 };
  if (ch === '"') diags.error('VF1002', file, span, 'string is not closed on this line (strings cannot span lines)');
  else if (file.text.startsWith('/*', e.offset)) diags.error('VF1003', file, span, "block comment is never closed with '*/'");
  else {
    const cp = file.text.codePointAt(e.offset) ?? 0;
    const shown = cp < 32 || cp === 127 ? `\\x${cp.toString(16).padStart(2, '0')}` : String.fromCodePoint(cp);
    diags.error('VF1001', file, { start: e.offset, end: e.offset + (cp > 0xffff ? 2 : 1) }, `unexpected character '${shown}'`);
  }
}

const STATEMENT_KEYWORDS = ['import', 'module', 'input', 'param', 'let', 'output', 'repeat'];

/**
 * A line that starts `WORD NAME` with WORD a near miss of a keyword (`improt std.heads`, `lett a = x`) fails
 * to parse further on; the misspelt word is the problem, so the error goes there.
 */
function misspeltKeyword(file: SourceFile, tokens: readonly IToken[], at: number): { span: Span; message: string } | undefined {
  const lineStart = at - (file.position(at).col - 1);
  let lo = 0;
  let hi = tokens.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (tokens[mid].startOffset < lineStart) lo = mid + 1;
    else hi = mid;
  }
  const first = tokens[lo];
  const next = tokens[lo + 1];
  if (!first || first.startOffset > at || first.tokenType.name !== 'Identifier' || next?.tokenType.name !== 'Identifier') return undefined;
  const kw = closest(first.image, STATEMENT_KEYWORDS);
  if (!kw || kw === first.image) return undefined;
  return { span: { start: first.startOffset, end: first.startOffset + first.image.length }, message: `'${first.image}' is not a keyword; did you mean '${kw}'?` };
}

/** What the rule at the top of the parser's stack was reading, for messages. */
const RULE_CONTEXT: Record<string, string> = {
  file: 'at top level, expected `import`, `module` or a declaration such as `stage NAME { ... }`',
  statement: 'in a module body, expected `input`, `param`, `let`, `output`, `repeat`, `if` or `NAME = ...`',
  entry: 'in a block, expected `key: value` or `key NAME { ... }`',
  primary: 'expected a value (number, string, name, list or `(...)`)',
  typeExpr: 'expected a type such as `f32[B, N, 96]`, `[width]` or `int`',
  segment: 'expected a path segment (name, index, `*`, `**` or `{expr}`) after `.`',
  declaration: 'a declaration is `KIND NAME (= VALUE)? (on TARGET)? { ... }`',
  importDecl: 'an import is `import std.NAME` or `import "./file.visft"`',
  dottedName: 'an import is `import std.NAME` or `import "./file.visft"`',
};

function describeParseError(file: SourceFile, e: IRecognitionException): { span: Span; message: string } {
  const tok = e.token;
  const prev = (e as { previousToken?: IToken }).previousToken;
  const atEof = !tok || tok.tokenType?.name === 'EOF' || !Number.isFinite(tok.startOffset);
  // Recovery-inserted and EOF tokens have no position: attach the error just after the previous token.
  const len = file.text.length;
  const after = prev && Number.isFinite(prev.endOffset) ? Math.min((prev.endOffset as number) + 1, len) : len;
  const span: Span = atEof ? { start: after, end: Math.min(after + 1, len) } : { start: tok.startOffset, end: (tok.endOffset ?? tok.startOffset) + 1 };
  const found = atEof ? 'end of file' : `'${tok.image}'`;
  const rule = e.context?.ruleStack?.[e.context.ruleStack.length - 1] ?? '';
  let message: string;
  if (e.name === 'MismatchedTokenException') {
    const m = /-->\s*(.+?)\s*<--/.exec(e.message);
    message = m?.[1] === 'EOF' ? `unexpected ${found}: ${RULE_CONTEXT.file}` : `expected ${labelOf(m?.[1])} but found ${found}`;
  } else {
    message = `unexpected ${found}` + (RULE_CONTEXT[rule] ? `: ${RULE_CONTEXT[rule]}` : '');
  }
  if (!atEof && /^[A-Za-z_]/.test(tok.image) && !KEYWORD_WORDS.includes(tok.image)) {
    const kw = closest(tok.image, KEYWORD_WORDS);
    if (kw) message += `; did you mean '${kw}'?`;
  }
  return { span, message };
}

const TOKEN_LABELS: Record<string, string> = {
  RBrace: "'}'", LBrace: "'{'", RParen: "')'", LParen: "'('", RBracket: "']'", LBracket: "'['", Colon: "':'",
  Comma: "','", Equals: "'='", Identifier: 'a name', NumberLiteral: 'a number', StringLiteral: 'a string', Dot: "'.'", In: "'in'",
};

function labelOf(tokenName: string | undefined): string {
  if (!tokenName) return 'something else';
  if (tokenName.startsWith("'")) return tokenName;
  return TOKEN_LABELS[tokenName] ?? `a ${tokenName}`;
}
