// Diagnostics: stable codes (listed in docs/diagnostics.md, checked by a test), a collector, and the
// `path:line:col: error VFnnnn: message` rendering with the source line and a caret.
import type { Span } from '../ast.js';
import type { SourceFile } from './source.js';

export type Severity = 'error' | 'warning';

/** Every code the front end can emit, with the one-line meaning documented for users. */
export const CODES = {
  VF0001: 'internal error (a bug in visft: please report it)',
  // lexing and parsing
  VF1001: 'unexpected character',
  VF1002: 'unterminated string',
  VF1003: 'unterminated block comment',
  VF1004: 'syntax error',
  VF1005: 'file is not UTF-8 text',
  VF1006: 'invalid number',
  VF1007: 'invalid escape or interpolation in a string',
  VF1008: 'file too large',
  VF1009: 'nesting too deep',
  // files, imports and names
  VF2001: 'imported file not found or unreadable',
  VF2002: 'import cycle',
  VF2003: 'unknown stdlib module',
  VF2004: 'duplicate declaration',
  VF2005: 'unknown name',
  VF2006: 'unknown declaration kind',
  VF2007: 'environment variable not set',
  VF2008: 'file not found or unreadable',
  // declarations
  VF3001: 'unknown property',
  VF3002: 'missing property',
  VF3003: 'wrong type of value',
  VF3004: 'reference to the wrong kind of declaration',
  VF3005: 'duplicate property',
  VF3006: 'value out of range',
  VF3007: 'task probabilities do not sum to 1',
  VF3008: 'stage ordering cycle',
  VF3009: 'unknown choice',
  VF3010: 'export or checkpoint beyond the stage',
  VF3011: 'task not part of the stage',
  VF3012: 'both trained and frozen',
  VF3013: 'unknown unit',
  VF3014: 'malformed declaration',
  VF3015: 'nothing trains in the stage',
  VF3016: 'selector matches no parameter',
  VF3017: 'part or row range does not fit the parameter',
  // modules
  VF4001: 'unknown op or module',
  VF4002: 'unknown argument',
  VF4003: 'missing argument',
  VF4004: 'too many arguments',
  VF4005: 'duplicate name in a module',
  VF4006: 'assignment to an undeclared name',
  VF4007: 'unknown type',
  VF4008: 'malformed module specialisation',
  VF4009: 'recursive module',
  VF4010: '`as` needs a module call',
  VF4011: 'module has no output',
  VF4012: 'shape expression cannot be evaluated',
  VF4013: 'misplaced expression',
} as const;

export type Code = keyof typeof CODES;

export interface Diagnostic {
  readonly code: Code;
  readonly severity: Severity;
  readonly message: string;
  readonly file: SourceFile;
  readonly span: Span;
  /** Extra lines after the snippet (`note: ...`). */
  readonly notes?: readonly string[];
}

export class Diagnostics {
  readonly list: Diagnostic[] = [];

  error(code: Code, file: SourceFile, span: Span, message: string, notes?: string[]): void {
    this.list.push({ code, severity: 'error', message, file, span, notes });
  }

  warning(code: Code, file: SourceFile, span: Span, message: string, notes?: string[]): void {
    this.list.push({ code, severity: 'warning', message, file, span, notes });
  }

  get errorCount(): number {
    return this.sorted().filter((d) => d.severity === 'error').length;
  }

  /** Ordered by file, then position; identical duplicates (same code and place) dropped. */
  sorted(): Diagnostic[] {
    const seen = new Set<string>();
    return this.list
      .slice()
      .sort((a, b) => (a.file.path < b.file.path ? -1 : a.file.path > b.file.path ? 1 : a.span.start - b.span.start || a.code.localeCompare(b.code)))
      .filter((d) => {
        const key = `${d.file.path}:${d.span.start}:${d.code}:${d.message}`;
        if (seen.has(key)) return false;
        seen.add(key);
        return true;
      });
  }
}

/** Renders one diagnostic as `path:line:col: severity CODE: message`, the line, and a caret under the span. */
export function renderDiagnostic(d: Diagnostic): string {
  const { line, col } = d.file.position(d.span.start);
  const head = `${d.file.path}:${line}:${col}: ${d.severity} ${d.code}: ${d.message}`;
  const gutter = String(line).length;
  // A file that could not be read (missing, too large, not text) has no source to show.
  if (d.file.text === '') return [head, ...(d.notes ?? []).map((note) => ` ${' '.repeat(gutter)} = ${note}`)].join('\n');
  const text = d.file.lineText(line);
  const from = col - 1;
  // A long line is shown as a window of at most SHOWN displayed columns around the caret, cut ends marked with '…'.
  const [winStart, winEnd] = excerptWindow(text, from);
  const shown = (winStart > 0 ? '…' : '') + printable(text.slice(winStart, winEnd)) + (winEnd < text.length ? '…' : '');
  // The caret covers the span on its first line (at least one column).
  const width = Math.max(1, printable(text.slice(from, from + Math.min(d.span.end - d.span.start, winEnd - from))).length);
  const pad = (winStart > 0 ? ' ' : '') + printable(text.slice(winStart, from)).replace(/[^\t]/g, ' ');
  const lines = [head, ` ${line} | ${shown}`, ` ${' '.repeat(gutter)} | ${pad}${'^'.repeat(width)}`];
  for (const note of d.notes ?? []) lines.push(` ${' '.repeat(gutter)} = ${note}`);
  return lines.join('\n');
}

/** Displayed columns of a long line's excerpt (a control character displays as four: `\xNN`). */
export const SHOWN = 160;

/**
 * The [start, end) of `text` to show around column `from`: up to half of SHOWN displayed columns before it, the rest
 * after it, and what the line's end leaves unused back before it. Counted in displayed columns, so a binary file's
 * line of control characters stays as short as any other.
 */
export function excerptWindow(text: string, from: number): [number, number] {
  const cols = (i: number): number => printable(text[i]).length;
  let start = Math.min(from, text.length);
  let end = start;
  let used = 0;
  while (start > 0 && used + cols(start - 1) <= SHOWN / 2) used += cols(--start);
  while (end < text.length && used + cols(end) <= SHOWN) used += cols(end++);
  while (start > 0 && used + cols(start - 1) <= SHOWN) used += cols(--start);
  // Never cut a surrogate pair in two (its halves would each display as a replacement character).
  if (start > 0 && start < from && isLowSurrogate(text, start)) start++;
  if (end < text.length && end > from + 1 && isLowSurrogate(text, end)) end--;
  return [start, end];
}

const isLowSurrogate = (text: string, i: number): boolean => (text.charCodeAt(i) & 0xfc00) === 0xdc00;

/** Control characters would garble a terminal: show them as `\xNN`. */
function printable(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Edit distance counting an adjacent swap as one edit (optimal string alignment), for "did you mean". */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The closest candidate within a distance that grows with the word's length, or undefined. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const limit = word.length <= 2 ? 0 : Math.max(1, Math.floor(word.length / 3));
  if (word.length > 200) return undefined; // a pasted blob is not a typo
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance || (d === bestDistance && best !== undefined && c < best)) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= limit ? best : undefined;
}

/** `; did you mean 'x'?` or the empty string. */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const c = closest(word, candidates);
  return c !== undefined && c !== word ? `; did you mean '${c}'?` : '';
}
