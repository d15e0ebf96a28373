// Gradient clipping with torch.nn.utils.clip_grad_norm_ / clip_grad_value_ semantics (torch 1.13, norm_type 2):
//   total = ||(||g_1||, ..., ||g_n||)||,  coef = min(1, max_norm * (1 / (total + 1e-6))),  g *= coef
// in f32 like torch, including the multiply by a coefficient of exactly 1 when nothing is clipped. The sums of
// squares run in f64 (torch accumulates in 8 or 16 f32 lanes, depending on the CPU), so totals agree with torch's
// to ~1e-7 relative; given torch's total, the clipped grads are bit-identical (test/train/optim.test.ts).

const f = Math.fround;

export class ClipError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClipError';
  }
}

function l2(values: Iterable<number>): number {
  let sum = 0;
  for (const v of values) sum += v * v;
  return f(Math.sqrt(sum));
}

/** Clips in place and returns the total norm before clipping (Infinity or NaN when a gradient is; then, as in
 *  torch, the gradients become NaN or 0 — check allFinite first). */
export function clipGradNorm(grads: ReadonlyMap<string, Float32Array>, maxNorm: number): number {
  checkMaxNorm(maxNorm);
  if (grads.size === 0) return 0;
  const total = globalGradNorm(grads);
  scaleToNorm(grads, total, maxNorm);
  return total;
}

/** The global L2 norm as clip_grad_norm_ computes it: the norm of the per-tensor norms, each rounded to f32. */
export function globalGradNorm(grads: ReadonlyMap<string, Float32Array>): number {
  return l2([...grads.values()].map((g) => l2(g)));
}

/** The second half of clipGradNorm, for a total norm computed elsewhere (e.g. on the GPU): scales the grads in
 *  place by min(1, maxNorm / (total + 1e-6)) and returns that coefficient. */
export function scaleToNorm(grads: ReadonlyMap<string, Float32Array>, totalNorm: number, maxNorm: number): number {
  checkMaxNorm(maxNorm);
  // max_norm / (total_norm + 1e-6) on a 0-dim f32 tensor is tensor.reciprocal() * max_norm in torch.
  const coef = f(f(1 / f(f(totalNorm) + f(1e-6))) * f(maxNorm));
  const clamped = coef > 1 ? 1 : coef; // torch.clamp(max=1.0) keeps NaN
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] = f(g[i] * clamped);
  return clamped;
}

function checkMaxNorm(maxNorm: number): void {
  if (!Number.isFinite(maxNorm) || maxNorm <= 0) throw new ClipError(`clip: max norm ${maxNorm} must be a finite number > 0`);
}

/** Clamps every gradient element into [-max, max] in place (NaN stays NaN). */
export function clipGradValue(grads: ReadonlyMap<string, Float32Array>, max: number): void {
  if (!(max >= 0) || max === Infinity) throw new ClipError(`clip: max value ${max} must be a finite number >= 0`);
  const hi = f(max), lo = -hi;
  for (const g of grads.values()) {
    for (let i = 0; i < g.length; i++) {
      if (g[i] > hi) g[i] = hi;
      else if (g[i] < lo) g[i] = lo;
    }
  }
}

/** True when no gradient element is Infinity or NaN. */
export function allFinite(grads: ReadonlyMap<string, Float32Array>): boolean {
  for (const g of grads.values()) {
    for (let i = 0; i < g.length; i++) if (!Number.isFinite(g[i])) return false;
  }
  return true;
}
