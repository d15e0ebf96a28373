// What the f32 attention kernel tests share: the tolerances against the float64 reference (forward outputs and lse;
// gradients, which carry one more product) and the dimensions a random case draws.

/** Forward outputs and lse of the f32 flash kernels against float64 (harness compare: relative, absolute). */
export const FORWARD_TOL = { rtol: 1e-4, atol: 1e-5 };
/** Gradients of the f32 flash kernels against float64. */
export const GRAD_TOL = { rtol: 1e-3, atol: 1e-4 };

/** A random attention case's dimensions: q [b, h, sq, d], k [b, h, sk, d], v [b, h, sk, dv]. */
export interface AttentionCaseDims {
  b: number;
  h: number;
  sq: number;
  sk: number;
  d: number;
  dv: number;
}
