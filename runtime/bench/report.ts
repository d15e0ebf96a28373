// The text form of a bench report: a header (date, device, sizes, timing, peer), one table row per bench row,
// and what each side ran.
import type { BenchReport, BenchRow } from './bench.js';

const ms = (v: number): string => (v >= 100 ? v.toFixed(1) : v >= 1 ? v.toFixed(3) : v.toPrecision(3));
const rate = (v: number, unit: string): string => `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${unit}`;
const shortProgram = (p: string): string => p.replace(/Program$/, '');

function table(rows: readonly string[][], align: readonly ('l' | 'r')[]): string[] {
  const widths = align.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) =>
    r
      .map((cell, c) => (align[c] === 'r' ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd(),
  );
}

function cells(r: BenchRow): string[] {
  if (r.status !== 'ok' || !r.ours) return [r.name, r.shape, r.status === 'unavailable' ? (r.reason ?? 'not available') : `${r.status.toUpperCase()}: ${r.reason ?? ''}`];
  const peerMs = r.peer ? ms(r.peer.ms) : '-';
  const ratio = r.ratio !== undefined ? `${r.ratio.toFixed(2)}x` : '-';
  return [r.name, r.shape, ms(r.ours.ms), rate(r.ours.rate, r.rateUnit), peerMs, ratio, `${r.repeat ?? ''}`, r.check ? 'ok' : 'unchecked'];
}

export function formatReport(rep: BenchReport): string {
  const d = rep.device;
  const lines: string[] = [];
  lines.push(`visft bench, ${rep.date}`);
  lines.push(`command: ${rep.command}`);
  lines.push(`device: ${d.name}${d.description && d.description !== d.name ? ` (${d.description})` : ''}, backend ${d.backend}, ${d.isFallbackAdapter ? 'FALLBACK (software) adapter: ratios on it are not speed claims' : 'hardware adapter'}`);
  lines.push(`sizes: ${rep.sizes.size}, ${rep.sizes.tokens} tokens (${rep.sizes.reason})`);
  const method = rep.timing.method === 'gpu-timestamps' ? 'GPU timestamps (timestamp-query, unquantised)' : 'wall clock (no timestamp-query)';
  const r = rep.timing.repeat;
  const n = typeof r === 'number' ? `${r}` : `n (${r.min} to ${r.max} per row: about ${r.targetMs} ms of work per side)`;
  lines.push(`timing: ${method}, median of ${n} iterations after ${rep.timing.warmup} warm-up`);
  lines.push('name' in rep.peer ? `peer: ${rep.peer.name} ${rep.peer.version} on the same GPUDevice` : `peer: not available (${rep.peer.unavailable})`);
  lines.push('');

  const ok = rep.rows.filter((r) => r.status === 'ok' && r.ours);
  const others = rep.rows.filter((r) => !(r.status === 'ok' && r.ours));
  const header = ['row', 'shape', 'ours ms', 'ours rate', 'peer ms', 'ratio', 'n', 'check'];
  lines.push(...table([header, ...ok.map(cells)], ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'l']));
  if (others.length) lines.push(...table(others.map(cells), ['l', 'l', 'l']));
  lines.push('');
  lines.push('ratio = peer ms / ours ms: > 1 means visft is faster. check: results agree within f32 tolerance before timing.');

  // What each side runs, once per distinct (op, kernels) combination.
  const seen = new Map<string, string[]>();
  for (const r of ok) {
    const key = `ours ${r.ours!.kernels.join(' + ')}; peer ${r.peer ? r.peer.kernels.map(shortProgram).join(' + ') || '?' : '-'}`;
    seen.set(key, [...(seen.get(key) ?? []), r.name]);
  }
  if (seen.size) {
    lines.push('kernels:');
    for (const [k, names] of seen) lines.push(`  ${names.join(', ')}: ${k}`);
  }
  const computes = new Map<string, string>();
  for (const r of rep.rows) {
    const key = r.dtype === 'f32' ? r.op : `${r.op} ${r.dtype}`;
    if (!computes.has(key)) computes.set(key, r.peerComputes);
  }
  lines.push('peer computes:');
  for (const [op, c] of computes) lines.push(`  ${op}: ${c}`);
  return lines.join('\n') + '\n';
}
