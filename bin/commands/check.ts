// `visft check FILES...`: every problem in the files and what they import.
import { checkFiles } from '../../compiler/check/index.js';
import { diagnosticsJson, printDiagnostics, summary } from './report.js';

export function runCheck(files: string[], opts: { json?: boolean }): number {
  const { program } = checkFiles(files);
  const diags = program.diags;
  if (opts.json) process.stdout.write(JSON.stringify({ ok: diags.errorCount === 0, diagnostics: diagnosticsJson(diags) }, null, 2) + '\n');
  else {
    printDiagnostics(diags);
    const n = Math.max(program.files.size, files.length);
    (diags.errorCount ? process.stderr : process.stdout).write(summary(diags, `checked ${n} file${n === 1 ? '' : 's'}`) + '\n');
  }
  return diags.errorCount ? 1 : 0;
}
