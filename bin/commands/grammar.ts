// `visft grammar --html FILE | --json`: railroad diagrams that work offline (chevrotain's diagram scripts
// and CSS are inlined from node_modules) and the serialized grammar.
import { createSyntaxDiagramsCode } from 'chevrotain';
import { readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { VisftParser } from '../../grammar/parser.js';
import { serializedGrammarJson } from '../../grammar/snapshot.js';
import { writeFileAtomic } from './files.js';
import { UsageError } from './errors.js';

export function grammarHtml(): string {
  const diagrams = chevrotainDiagramsDir();
  const html = createSyntaxDiagramsCode(new VisftParser().getSerializedGastProductions(), { resourceBase: 'RESOURCE/', css: 'RESOURCE/diagrams.css' });
  const inline = (rel: string) => readFileSync(join(diagrams, rel), 'utf8').replace(/<\/script/gi, '<\\/script');
  return html
    .replace(/<link rel='stylesheet' href='RESOURCE\/diagrams\.css'>/, () => `<style>\n${readFileSync(join(diagrams, 'diagrams.css'), 'utf8')}\n</style>`)
    .replace(/<script src='RESOURCE\/([^']+)'><\/script>/g, (_m, rel: string) => `<script>\n${inline(rel)}\n</script>`)
    .replace('<head>', '<head>\n<meta charset="utf-8"><title>visft grammar</title>');
}

/** chevrotain's diagram scripts, found by walking up from its entry point (its package.json is not exported). */
function chevrotainDiagramsDir(): string {
  let dir = dirname(fileURLToPath(import.meta.resolve('chevrotain')));
  while (!existsSync(join(dir, 'diagrams', 'diagrams.css'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('chevrotain/diagrams not found in node_modules');
    dir = up;
  }
  return join(dir, 'diagrams');
}

export function runGrammar(opts: { html?: string; json?: boolean }): number {
  if (!opts.html && !opts.json) throw new UsageError('grammar needs --html FILE or --json');
  if (opts.json) process.stdout.write(serializedGrammarJson());
  if (opts.html) {
    try {
      writeFileAtomic(opts.html, grammarHtml());
    } catch (e) {
      process.stderr.write(`visft: cannot write ${opts.html}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
      return 1;
    }
    process.stdout.write(`wrote ${opts.html}\n`);
  }
  return 0;
}
