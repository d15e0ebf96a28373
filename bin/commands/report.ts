// Printing diagnostics for commands: the rendered form on stderr (or JSON on stdout) and a summary line.
import type { Diagnostics } from '../../compiler/frontend/diagnostics.js';
import { renderDiagnostic } from '../../compiler/frontend/diagnostics.js';

export function printDiagnostics(diags: Diagnostics, opts: { json?: boolean } = {}): void {
  const list = diags.sorted();
  if (opts.json) return;
  for (const d of list) process.stderr.write(renderDiagnostic(d) + '\n');
}

export function diagnosticsJson(diags: Diagnostics): object[] {
  return diags.sorted().map((d) => {
    const start = d.file.position(d.span.start);
    const end = d.file.position(d.span.end);
    return { file: d.file.path, line: start.line, col: start.col, endLine: end.line, endCol: end.col, severity: d.severity, code: d.code, message: d.message, notes: d.notes ?? [] };
  });
}

export function summary(diags: Diagnostics, what: string): string {
  const errors = diags.errorCount;
  const warnings = diags.list.length - errors;
  const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'}`;
  return `${what}: ${plural(errors, 'error')}, ${plural(warnings, 'warning')}`;
}
