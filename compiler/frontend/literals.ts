// Literal values: numbers with scale suffixes and strings with escapes and `${ENV}` interpolation.
import type { Span, StringPart } from '../ast.js';

const SCALE: Record<string, number> = { k: 1e3, M: 1e6 };

/** `100k` → 100000, `1.5k` → 1500, `4e-4` → 0.0004. Rounds away float noise from the scale (1.1k = 1100). */
export function parseNumber(text: string): number {
  const suffix = text[text.length - 1];
  const scale = SCALE[suffix];
  if (scale === undefined) return Number(text);
  const v = Number(text.slice(0, -1)) * scale;
  const rounded = Math.round(v);
  return Math.abs(v - rounded) < 1e-9 * Math.max(1, Math.abs(v)) ? rounded : v;
}

const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', n: '\n', t: '\t', $: '$' };

type Report = (span: Span, code: 'VF1007', message: string) => void;

/**
 * Splits a string body (between the quotes, starting at `offset` in the file) into text and environment
 * references, reporting bad escapes and malformed `${...}` where they are.
 */
export function parseStringBody(raw: string, offset: number, report: Report): StringPart[] {
  const parts: StringPart[] = [];
  let text = '';
  const flush = () => {
    if (text) parts.push({ kind: 'text', text });
    text = '';
  };
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i];
    if (ch === '\\') {
      const next = raw[i + 1];
      const esc = next === undefined ? undefined : ESCAPES[next];
      if (esc === undefined) report({ start: offset + i, end: offset + i + 2 }, 'VF1007', `unknown escape '\\${next ?? ''}' (use \\" \\\\ \\n \\t or \\$)`);
      else text += esc;
      i++;
    } else if (ch === '$' && raw[i + 1] === '{') {
      const close = raw.indexOf('}', i + 2);
      const body = close < 0 ? '' : raw.slice(i + 2, close);
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s.exec(body);
      if (close < 0 || !m) {
        const end = close < 0 ? raw.length : close + 1;
        report({ start: offset + i, end: offset + end }, 'VF1007', close < 0 ? "'${' is never closed with '}'" : `'\${${body}}' is not an environment variable reference (write \${NAME} or \${NAME:-default})`);
        i = end - 1;
        continue;
      }
      flush();
      parts.push(m[2] === undefined ? { kind: 'env', name: m[1], offset: offset + i } : { kind: 'env', name: m[1], fallback: m[2], offset: offset + i });
      i = close;
    } else {
      text += ch;
    }
  }
  flush();
  return parts;
}

/** The string's value with the environment substituted; `missing` collects unset names without defaults. */
export function interpolate(parts: readonly StringPart[], env: NodeJS.ProcessEnv, missing?: string[]): string {
  return parts
    .map((p) => {
      if (p.kind === 'text') return p.text;
      const v = env[p.name];
      if (v !== undefined && v !== '') return v;
      if (p.fallback !== undefined) return p.fallback;
      missing?.push(p.name);
      return '';
    })
    .join('');
}
