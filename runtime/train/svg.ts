// Loss curves as a self-contained SVG (no scripts, no external fonts or styles): axes with ticks and labels, per
// series a faint polyline of the raw points and a strong path of their EMA, a legend. Long runs are decimated to
// the min and max of each pixel column, so spikes stay visible and the file stays small.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../weights/io.js';

export interface LossSeries {
  name: string;
  /** [update, loss]; non-finite points (skipped updates) and, on a log axis, points <= 0 are left out. */
  points: [number, number][];
}

export interface LossCurveOptions {
  title?: string;
  logY?: boolean;
}

const W = 800;
const H = 450;
const PLOT = { left: 72, right: W - 24, top: 44, bottom: H - 52 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export function lossCurveSvg(series: LossSeries[], opts: LossCurveOptions = {}): string {
  const logY = opts.logY === true;
  const ty = (y: number) => (logY ? Math.log10(y) : y);
  const clean = series.map((s) => ({
    name: s.name,
    points: s.points
      .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0))
      .map(([x, y]) => [x, ty(y)] as [number, number])
      .sort((a, b) => a[0] - b[0]),
  }));
  const xs = clean.flatMap((s) => s.points.map((p) => p[0]));
  const ys = clean.flatMap((s) => s.points.map((p) => p[1]));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  if (opts.title) out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${escapeXml(opts.title)}</text>`);
  out.push(`<text x="${(PLOT.left + PLOT.right) / 2}" y="${H - 12}" text-anchor="middle">update</text>`);
  const midY = (PLOT.top + PLOT.bottom) / 2;
  out.push(`<text x="16" y="${midY}" text-anchor="middle" transform="rotate(-90 16 ${midY})">${logY ? 'loss (log scale)' : 'loss'}</text>`);
  out.push(`<rect x="${PLOT.left}" y="${PLOT.top}" width="${PLOT.right - PLOT.left}" height="${PLOT.bottom - PLOT.top}" fill="none" stroke="#444444"/>`);
  if (xs.length === 0) {
    out.push(`<text x="${(PLOT.left + PLOT.right) / 2}" y="${(PLOT.top + PLOT.bottom) / 2}" text-anchor="middle" fill="#888888">no data</text>`);
  }
  const xAxis = linearAxis(xs);
  const yAxis = logY ? logAxis(ys) : linearAxis(ys);
  const px = (x: number) => PLOT.left + ((x - xAxis.min) / (xAxis.max - xAxis.min)) * (PLOT.right - PLOT.left);
  const py = (y: number) => PLOT.bottom - ((y - yAxis.min) / (yAxis.max - yAxis.min)) * (PLOT.bottom - PLOT.top);
  if (xs.length > 0) {
    for (const t of xAxis.ticks) {
      const x = fmt(px(t.value));
      out.push(`<line x1="${x}" y1="${PLOT.top}" x2="${x}" y2="${PLOT.bottom}" stroke="#e4e4e4"/>`);
      out.push(`<line x1="${x}" y1="${PLOT.bottom}" x2="${x}" y2="${PLOT.bottom + 5}" stroke="#444444"/>`);
      out.push(`<text x="${x}" y="${PLOT.bottom + 18}" text-anchor="middle">${escapeXml(t.label)}</text>`);
    }
    for (const t of yAxis.ticks) {
      const y = fmt(py(t.value));
      out.push(`<line x1="${PLOT.left}" y1="${y}" x2="${PLOT.right}" y2="${y}" stroke="#e4e4e4"/>`);
      out.push(`<line x1="${PLOT.left - 5}" y1="${y}" x2="${PLOT.left}" y2="${y}" stroke="#444444"/>`);
      out.push(`<text x="${PLOT.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(t.label)}</text>`);
    }
  }
  const columns = PLOT.right - PLOT.left;
  clean.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const raw = decimate(s.points, xAxis, columns);
    const smooth = decimate(ema(s.points), xAxis, columns);
    out.push(`<g>`);
    out.push(`<polyline fill="none" stroke="${color}" stroke-opacity="0.25" stroke-width="1" points="${raw.map(([x, y]) => `${fmt(px(x))},${fmt(py(y))}`).join(' ')}"/>`);
    const d = smooth.map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${fmt(px(x))} ${fmt(py(y))}`).join(' ');
    out.push(`<path fill="none" stroke="${color}" stroke-width="2" d="${d}"/>`);
    out.push(`</g>`);
  });
  if (clean.length > 0) {
    const lx = PLOT.right - 10;
    const width = 40 + 7 * Math.max(...clean.map((s) => s.name.length));
    out.push(`<rect x="${lx - width}" y="${PLOT.top + 8}" width="${width}" height="${clean.length * 18 + 8}" fill="#ffffff" fill-opacity="0.85" stroke="#cccccc"/>`);
    clean.forEach((s, i) => {
      const y = PLOT.top + 24 + i * 18;
      out.push(`<line x1="${lx - width + 8}" y1="${y - 4}" x2="${lx - width + 28}" y2="${y - 4}" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"/>`);
      out.push(`<text x="${lx - width + 34}" y="${y}">${escapeXml(s.name)}</text>`);
    });
  }
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}

/** Writes the SVG atomically, creating the folder. */
export function writeLossCurve(file: string, series: LossSeries[], opts: LossCurveOptions = {}): void {
  mkdirSync(dirname(file), { recursive: true });
  const bytes = new TextEncoder().encode(lossCurveSvg(series, opts));
  writeFileAtomic(file, (sink) => sink.write(bytes));
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] as string)
    // characters XML 1.0 forbids even escaped
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '\ufffd');
}

interface Axis {
  min: number;
  max: number;
  ticks: { value: number; label: string }[];
}

/** Bounds rounded out to a 1-2-5 step, about 5 ticks. */
function linearAxis(values: number[]): Axis {
  let [lo, hi] = values.length ? extent(values) : [0, 1];
  // A flat series (or one point): widen around it, also where 10% of it underflows, and where the span is so
  // small (subnormal) that a tick step would underflow to 0.
  if (!(hi - lo > Math.max(Math.abs(lo), Math.abs(hi)) * 1e-9 && hi - lo > 1e-280)) {
    const pad = Math.abs(lo) > 1e-100 ? Math.abs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep((hi - lo) / 5);
  const min = Math.floor(lo / step) * step;
  const max = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let k = 0; min + k * step <= max + step * 1e-9; k++) {
    const v = min + k * step;
    ticks.push({ value: v, label: formatNumber(v) });
  }
  return { min, max, ticks };
}

/** `values` are log10s: bounds are whole decades; 2 and 5 are ticked too when the range is short. */
function logAxis(values: number[]): Axis {
  const [lo, hi] = values.length ? extent(values) : [0, 1];
  const min = Math.floor(lo);
  let max = Math.ceil(hi);
  if (max === min) max = min + 1;
  const ticks = [];
  for (let d = min; d <= max; d++) {
    ticks.push({ value: d, label: formatNumber(10 ** d) });
    if (max - min <= 2 && d < max) for (const m of [2, 5]) ticks.push({ value: d + Math.log10(m), label: formatNumber(m * 10 ** d) });
  }
  return { min, max, ticks };
}

/** [min, max] without spreading (a long run has more points than a call can take arguments). */
function extent(values: number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

function formatNumber(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential().replace(/\.?0+e/, 'e').replace('e+', 'e');
  return String(Number(v.toPrecision(6)));
}

function fmt(v: number): string {
  return String(Math.round(v * 100) / 100);
}

/** Bias-corrected EMA (as TensorBoard's smoothing); the window grows with the run, ~n/10 points. */
function ema(points: [number, number][]): [number, number][] {
  const beta = 1 - Math.min(0.4, Math.max(0.01, 10 / Math.max(1, points.length)));
  let m = 0;
  let w = 0;
  return points.map(([x, y]) => {
    m = beta * m + (1 - beta) * y;
    w = beta * w + (1 - beta);
    return [x, m / w];
  });
}

/** At most a min and a max point per pixel column, in x order. */
function decimate(points: [number, number][], axis: Axis, columns: number): [number, number][] {
  if (points.length <= 2 * columns) return points;
  const out: [number, number][] = [];
  let col = -1;
  let lo: [number, number] | undefined;
  let hi: [number, number] | undefined;
  const flush = () => {
    if (!lo || !hi) return;
    if (lo === hi) out.push(lo);
    else if (lo[0] <= hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  };
  for (const p of points) {
    const c = Math.floor(((p[0] - axis.min) / (axis.max - axis.min)) * columns);
    if (c !== col) {
      flush();
      col = c;
      lo = hi = p;
    } else {
      if (p[1] < lo![1]) lo = p;
      if (p[1] > hi![1]) hi = p;
    }
  }
  flush();
  return out;
}
