// `visft fmt FILES... [--check|--write]`: canonical layout with comments kept. Files with syntax errors
// are reported and left untouched; --write replaces a file only when its text changes, atomically.
import { Diagnostics } from '../../compiler/frontend/diagnostics.js';
import { formatSource } from '../../compiler/frontend/format.js';
import { decodeSource, parseSource } from '../../compiler/frontend/parse.js';
import { SourceFile } from '../../compiler/frontend/source.js';
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from './files.js';
import { printDiagnostics } from './report.js';

export function runFmt(files: string[], opts: { check?: boolean; write?: boolean }): number {
  const diags = new Diagnostics();
  let status = 0;
  for (const path of files) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      diags.error('VF2008', new SourceFile(path, ''), { start: 0, end: 0 }, `cannot read '${path}' (${(e as NodeJS.ErrnoException).code ?? e})`);
      continue;
    }
    const before = diags.errorCount;
    const source = decodeSource(path, bytes, diags);
    if (!source) continue;
    const parsed = parseSource(source, diags);
    if (diags.errorCount > before) continue; // never format what did not parse cleanly
    const formatted = formatSource(parsed);
    const changed = formatted !== source.text;
    if (opts.check) {
      if (changed) {
        process.stdout.write(`${path}: not formatted (run visft fmt --write ${path})\n`);
        status = 1;
      }
    } else if (opts.write) {
      if (!changed) continue;
      try {
        writeFileAtomic(path, formatted);
        process.stdout.write(`formatted ${path}\n`);
      } catch (e) {
        process.stderr.write(`visft: cannot write ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
        status = 1;
      }
    } else {
      process.stdout.write(formatted);
    }
  }
  printDiagnostics(diags);
  return diags.errorCount ? 1 : status;
}
