// `visft resolve FILE [--json]`: what a pipeline resolves to — backbone and head parameter counts, LoRA
// targets with their row ranges, and each stage's trainable and frozen parameter counts.
import { checkFiles } from '../../compiler/check/index.js';
import type { ResolvedPipeline } from '../../compiler/resolve/pipeline.js';
import { printDiagnostics, summary } from './report.js';

export function runResolve(file: string, opts: { json?: boolean }): number {
  const { program, roots, resolved } = checkFiles([file]);
  printDiagnostics(program.diags);
  const r = roots[0] ? resolved.get(roots[0]) : undefined;
  if (program.diags.errorCount || !r) {
    process.stderr.write(summary(program.diags, `cannot resolve ${file}`) + '\n');
    return 1;
  }
  process.stdout.write(opts.json ? JSON.stringify(toJson(r), null, 2) + '\n' : table(r));
  return 0;
}

function toJson(r: ResolvedPipeline): object {
  return {
    backbones: r.backbones.map((b) => ({ name: b.name, module: b.module, params: b.params, tensors: b.tensors.length })),
    heads: r.heads.map((h) => ({ name: h.name, module: h.module, backbone: h.backbone, params: h.params })),
    lora: r.lora.map((l) => ({ name: l.name, backbone: l.backbone, params: l.params, targets: l.targets })),
    stages: r.stages,
  };
}

const n = (x: number) => x.toLocaleString('en-US');

function table(r: ResolvedPipeline): string {
  const lines: string[] = [];
  const row = (cells: string[], widths: number[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const section = (title: string, head: string[], rows: string[][]) => {
    if (!rows.length) return;
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
    lines.push(title, row(head, widths), ...rows.map((x) => row(x, widths)), '');
  };
  section('backbones', ['name', 'module', 'tensors', 'params'], r.backbones.map((b) => [b.name, b.module, n(b.tensors.length), n(b.params)]));
  section('heads', ['name', 'module', 'on', 'params'], r.heads.map((h) => [h.name, h.module, h.backbone, n(h.params)]));
  for (const l of r.lora) {
    section(`lora ${l.name} on ${l.backbone}: ${n(l.params)} params`, ['param', 'rows', 'rank', 'alpha', 'lora_A', 'lora_B'],
      groupIndexed(l.targets.map((t) => [t.param, t.rows.map(([a, b]) => `${a}:${b}`).join(','), String(t.rank), String(t.alpha), t.lora_A.join('x'), t.lora_B.join('x')])));
  }
  section('stages', ['name', 'after', 'tasks', 'trains', 'trainable', 'frozen'], r.stages.map((s) => [s.name, s.after.join(',') || '-', s.tasks.join(',') || '-', s.trainable.join(','), n(s.trainable_params), n(s.frozen_params)]));
  return lines.join('\n');
}

/** Folds rows that differ only in one path index into one (`blocks.{0..39}.attn.qkv.weight`), for reading. */
function groupIndexed(rows: string[][]): string[][] {
  const out: { key: string; first: number; last: number; row: string[] }[] = [];
  for (const row of rows) {
    const m = /^(.*?)\.(\d+)\.(.*)$/.exec(row[0]);
    const key = m ? `${m[1]}.{}.${m[3]}|${row.slice(1).join('|')}` : row.join('|');
    const i = m ? Number(m[2]) : NaN;
    const prev = out[out.length - 1];
    if (prev && m && prev.key === key && prev.last + 1 === i) prev.last = i;
    else out.push({ key, first: i, last: i, row });
  }
  return out.map(({ first, last, row }) => (first === last || Number.isNaN(first) ? row : [row[0].replace(/\.\d+\./, `.{${first}..${last}}.`), ...row.slice(1)]));
}
