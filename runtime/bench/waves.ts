// How many workgroups of one kernel a GPU runs at once, read from the kernel's time over grids of growing size:
// where a grid needs ceil(G / slots) waves of `slots` resident workgroups, the time climbs in steps of one wave
// (t ≈ base + wave·ceil(G / slots)). WebGPU reports neither the multiprocessor count nor a kernel's registers, so
// this is how a lent GPU says whether a kernel's grid leaves a last wave nearly empty (docs/perf.md: the f32 flash
// kernels' 288 workgroups at EVA-G detection) and what fill the sweep split and the K split should aim at.
// scripts/waves.mjs times the grids; fitWaves reads the steps.

export interface WavePoint {
  /** Workgroups in the grid. */
  readonly groups: number;
  /** The kernel's time (ms). */
  readonly ms: number;
}

export interface WaveFit {
  /** Resident workgroups that fit the times best (one wave). */
  readonly slots: number;
  /** ms per wave and the constant part, of t = baseMs + waveMs·ceil(G / slots). */
  readonly waveMs: number;
  readonly baseMs: number;
  /** Root-mean-square error of that fit, and of the straight line t = a + b·G (no waves) for comparison. */
  readonly rms: number;
  readonly lineRms: number;
}

/** Least squares of y = a + b·x; the constant fit where every x is the same. */
function line(xs: readonly number[], ys: readonly number[]): { a: number; b: number; rms: number } {
  const n = xs.length;
  const mx = xs.reduce((s, x) => s + x, 0) / n;
  const my = ys.reduce((s, y) => s + y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (xs[i] - mx) ** 2;
    sxy += (xs[i] - mx) * (ys[i] - my);
  }
  const b = sxx > 0 ? sxy / sxx : 0;
  const a = my - b * mx;
  const rms = Math.sqrt(ys.reduce((s, y, i) => s + (y - a - b * xs[i]) ** 2, 0) / n);
  return { a, b, rms };
}

/**
 * The resident workgroups (1 up to the largest grid) whose waves fit `points` best by least squares, with the straight
 * line's error beside it. Ties go to the larger count (fewer, longer waves explain the same steps). At least three
 * points.
 */
export function fitWaves(points: readonly WavePoint[]): WaveFit {
  if (points.length < 3) throw new Error(`fitWaves: ${points.length} points; at least 3 are needed`);
  const gs = points.map((p) => p.groups);
  const ys = points.map((p) => p.ms);
  const lineRms = line(gs, ys).rms;
  let best: WaveFit | undefined;
  for (let slots = 1; slots <= Math.max(...gs); slots++) {
    const fit = line(
      gs.map((g) => Math.ceil(g / slots)),
      ys,
    );
    if (!best || fit.rms <= best.rms) best = { slots, waveMs: fit.b, baseMs: fit.a, rms: fit.rms, lineRms };
  }
  return best!;
}
