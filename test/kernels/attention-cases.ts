// What the f32 attention kernel tests share: the tolerances against the float64 reference (forward outputs and lse;
// gradients, which carry one more product), the dimensions a random case draws, and attention with its cotangents as
// the autodiff rule builds them.
import { GRAD_RULES } from '../../compiler/autodiff/rules.js';
import type { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';

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

/**
 * attention(q, k, v, [mask]) and its cotangents (given g, the output's) as the autodiff rule builds them: each input's
 * where `needs` says so (default: every input's), else undefined.
 */
export function attentionWithGrads(b: Builder, [q, k, v, g, mask]: readonly number[], attrs: Attrs = {}, needs?: readonly boolean[]): { y: number; grads: readonly (number | undefined)[] } {
  const y = b.add('attention', mask === undefined ? [q, k, v] : [q, k, v, mask], attrs);
  const node = b.graph.node(y);
  return { y, grads: GRAD_RULES.attention({ b, node, g, needs: needs ?? node.inputs.map(() => true) }) };
}
