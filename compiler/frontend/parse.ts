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
    diags.error('VF1005', at0, { start: 0, end: 0 }, 'file is not valid UTF-8 text (is it a binary file?)');
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
  } catch (e) {
    // chevrotain recurses per nesting level: absurd nesting exhausts the stack.
    if (e instanceof RangeError) {
      diags.error('VF1009', file, { start: 0, end: 0 }, 'input is nested too deeply to parse');
      return { file, ast: EMPTY, comments: [] };
    }
    throw e;
  }
  for (const e of out.lexErrors) reportLexError(file, e, diags);
  // One syntax error per line: what recovery reports after the first on a line is mostly its echo.
  const seenLines = new Set<number>();
  for (const e of out.parseErrors) {
    const d = describeParseError(file, e);
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
    diags.error('VF1009', file, { start: 0, end: 0 }, 'input is nested too deeply to parse');
  }
  return { file, ast, comments: out.comments };
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

/** What the rule at the top of the parser's stack was reading, for messages. */
const RULE_CONTEXT: Record<string, string> = {
  file: 'at top level, expected `import`, `module` or a declaration such as `stage NAME { ... }`',
  statement: 'in a module body, expected `input`, `param`, `let`, `output`, `repeat`, `if` or `NAME = ...`',
  entry: 'in a block, expected `key: value` or `key NAME { ... }`',
  primary: 'expected a value (number, string, name, list or `(...)`)',
  typeExpr: 'expected a type such as `f32[B, N, 96]`, `[width]` or `int`',
  segment: 'expected a path segment (name, index, `*`, `**` or `{expr}`) after `.`',
  declaration: 'a declaration is `KIND NAME (= VALUE)? (on TARGET)? { ... }`',
};

function describeParseError(file: SourceFile, e: IRecognitionException): { span: Span; message: string } {
  const tok = e.token;
  const prev = (e as { previousToken?: IToken }).previousToken;
  const atEof = !tok || tok.tokenType?.name === 'EOF' || !Number.isFinite(tok.startOffset);
  // Recovery-inserted and EOF tokens have no position: attach the error just after the previous token.
  const span: Span = atEof
    ? prev && Number.isFinite(prev.endOffset)
      ? { start: (prev.endOffset as number) + 1, end: (prev.endOffset as number) + 2 }
      : { start: file.text.length, end: file.text.length }
    : { start: tok.startOffset, end: (tok.endOffset ?? tok.startOffset) + 1 };
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
