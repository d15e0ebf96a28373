// `visft parse FILE --emit tokens|cst|ast`: the front end's intermediate forms, as JSON, for debugging
// the grammar and for tools. Diagnostics are printed as by `check` (syntax only).
import type { CstElement, CstNode, IToken } from 'chevrotain';
import { readFileSync } from 'node:fs';
import { parseText } from '../../grammar/parser.js';
import { Diagnostics } from '../../compiler/frontend/diagnostics.js';
import { decodeSource, parseSource } from '../../compiler/frontend/parse.js';
import { SourceFile } from '../../compiler/frontend/source.js';
import { UsageError } from './errors.js';
import { printDiagnostics } from './report.js';

export const EMITS = ['tokens', 'cst', 'ast'] as const;

export function runParse(file: string, opts: { emit: string }): number {
  if (!(EMITS as readonly string[]).includes(opts.emit)) throw new UsageError(`--emit must be one of ${EMITS.join(', ')}`);
  const diags = new Diagnostics();
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    diags.error('VF2008', new SourceFile(file, ''), { start: 0, end: 0 }, `cannot read '${file}' (${(e as NodeJS.ErrnoException).code ?? e})`);
    printDiagnostics(diags);
    return 1;
  }
  const source = decodeSource(file, bytes, diags);
  if (source) {
    const parsed = parseSource(source, diags);
    const out = opts.emit === 'ast' ? parsed.ast : opts.emit === 'tokens' ? tokens(parseText(source.text).tokens, parsed.comments, source) : cst(parseText(source.text).cst);
    process.stdout.write(JSON.stringify(out, null, 1) + '\n');
  }
  printDiagnostics(diags);
  return diags.errorCount ? 1 : 0;
}

function tokens(list: IToken[], comments: readonly IToken[], file: SourceFile): object[] {
  return [...list, ...comments]
    .sort((a, b) => a.startOffset - b.startOffset)
    .map((t) => ({ type: t.tokenType.name, image: t.image, ...file.position(t.startOffset) }));
}

function cst(node: CstNode): object {
  const children: Record<string, unknown[]> = {};
  for (const [name, elems] of Object.entries(node.children)) {
    children[name] = (elems as CstElement[]).map((e) => ('image' in e ? { token: e.tokenType.name, image: e.image, offset: e.startOffset } : cst(e)));
  }
  return { rule: node.name, ...(node.recoveredNode ? { recovered: true } : {}), children };
}
