// The text form of a bench report: a header (date, device, sizes, timing, peer), one table row per bench row,
// and what each side ran.
import { describeProfile } from '../tune/profile.js';
import type { BenchReport, BenchRow } from './bench.js';

const ms = (v: number): string => (v >= 100 ? v.toFixed(1) : v >= 1 ? v.toFixed(3) : v.toPrecision(3));
const rate = (v: number, unit: string): string => `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${unit}`;
const shortProgram = (p: string): string => p.replace(/Program$/, '');

/** A peer's program list; a long one (a composition of many small ops) as counts, most frequent first. */
function programsText(programs: readonly string[]): string {
  const names = programs.map(shortProgram);
  if (names.length <= 16) return names.join(' + ');
  const counts = new Map<string, number>();
  for (const n of names) counts.set(n, (counts.get(n) ?? 0) + 1);
  const parts = [...counts].sort((a, b) => b[1] - a[1]).map(([n, c]) => (c > 1 ? `${n} x${c}` : n));
  return `${names.length} programs: ${parts.join(', ')}`;
}

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
  const check = r.check ? 'ok' : r.peerSkipped ? 'no peer (below)' : 'unchecked';
  return [r.name, r.shape, ms(r.ours.ms), rate(r.ours.rate, r.rateUnit), peerMs, ratio, `${r.repeat ?? ''}`, check];
}

export function formatReport(rep: BenchReport): string {
  const d = rep.device;
  const lines: string[] = [];
  lines.push(`visft bench, ${rep.date}`);
  lines.push(`command: ${rep.command}`);
  lines.push(`device: ${d.name}${d.description && d.description !== d.name ? ` (${d.description})` : ''}, backend ${d.backend}, ${d.isFallbackAdapter ? 'FALLBACK (software) adapter: ratios on it are not speed claims' : 'hardware adapter'}`);
  if (d.toggles) lines.push(`dawn toggles: ${d.toggles.join(', ')} (shader robustness ${d.toggles.includes('disable_robustness') ? 'off' : 'on'})`);
  lines.push(`tuning profile: ${d.tuning ? describeProfile(d.tuning) : d.set ? 'none' : 'none (the default kernels)'}`);
  if (d.set) lines.push(`kernel choices set${d.tuning ? ' over the profile' : ''}: ${JSON.stringify(d.set)}`);
  const ownShapes = rep.rows.some((r) => r.op === 'attention' || r.op === 'msdeform_attn');
  lines.push(`sizes: ${rep.sizes.size}, ${rep.sizes.tokens} tokens${ownShapes ? ' in the ViT-token rows (attention and MSDeformAttn rows: the shapes below)' : ''} (${rep.sizes.reason})`);
  const method = rep.timing.method === 'gpu-timestamps' ? 'GPU timestamps (timestamp-query, unquantised)' : 'wall clock (no timestamp-query)';
  const r = rep.timing.repeat;
  const n = typeof r === 'number' ? `${r}` : `n (${r.min} to ${r.max} per row: about ${r.targetMs} ms of work on the slower side)`;
  lines.push(`timing: ${method}, median of ${n} iterations after ${rep.timing.warmup} warm-up`);
  lines.push('name' in rep.peer ? `peer: ${rep.peer.name} ${rep.peer.version} on the same GPUDevice` : `peer: not available (${rep.peer.unavailable})`);
  lines.push('');

  const ok = rep.rows.filter((r) => r.status === 'ok' && r.ours);
  const others = rep.rows.filter((r) => !(r.status === 'ok' && r.ours));
  const header = ['row', 'shape', 'ours ms', 'ours rate', 'peer ms', 'ratio', 'n', 'check'];
  lines.push(...table([header, ...ok.map(cells)], ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'l']));
  if (others.length) lines.push(...table(others.map(cells), ['l', 'l', 'l']));
  lines.push('');
  lines.push('ratio = peer ms / ours ms: > 1 means visft is faster. check: results (every output) agree within f32 tolerance before timing.');
  const tuned = ok.filter((r) => r.untuned && r.vsUntuned !== undefined);
  if (tuned.length) {
    lines.push(`${d.set ? 'these choices' : 'tuning profile'} against the default kernels (same device, same bursts; > 1: ${d.set ? 'they are' : 'the profile is'} faster):`);
    lines.push(...table(tuned.map((r) => [`  ${r.name}`, `default ${ms(r.untuned!.ms)} ms`, `profile ${ms(r.ours!.ms)} ms`, `${r.vsUntuned!.toFixed(2)}x`, `outputs within ${r.untuned!.relDiff.toExponential(1)}`]), ['l', 'r', 'r', 'r', 'l']));
  }
  const skipped = rep.rows.filter((r) => r.peerSkipped);
  if (skipped.length) {
    lines.push('peer skipped:');
    for (const r of skipped) lines.push(`  ${r.name}: ${r.peerSkipped}`);
  }

  // What each side runs, once per distinct (op, kernels) combination.
  const seen = new Map<string, string[]>();
  for (const r of ok) {
    const key = `ours ${r.ours!.kernels.join(' + ')}; peer ${r.peer ? programsText(r.peer.kernels) || '?' : '-'}`;
    seen.set(key, [...(seen.get(key) ?? []), r.name]);
  }
  if (seen.size) {
    lines.push('kernels:');
    for (const [k, names] of seen) lines.push(`  ${names.join(', ')}: ${k}`);
  }
  const computes = new Map<string, string>();
  for (const r of rep.rows) {
    const key = `${r.op}${r.pass === 'forward+backward' ? ' forward+backward' : ''}${r.dtype === 'f32' ? '' : ` ${r.dtype}`}`;
    if (!computes.has(key)) computes.set(key, r.peerComputes);
  }
  lines.push('peer computes:');
  for (const [op, c] of computes) lines.push(`  ${op}: ${c}`);
  return lines.join('\n') + '\n';
}
