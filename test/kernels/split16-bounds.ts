// Error bounds of the f32 attention kernels on the f16 tensor cores (kernels/flash-split16.ts), from their arithmetic:
// the forward's (derived in ./flash-split16.test.ts) and the backward's (./flash-split16-backward.test.ts).

import { dotAbs, type Problem } from './attention-grad-bounds.js';

const u = 2 ** -24;

/** An attention problem's sizes, scale, q, k and v ([B, H, S, D] row-major). */
export type SplitProblem = Pick<Problem, 'B' | 'H' | 'Sq' | 'Sk' | 'D' | 'Dv' | 'scale'> & { readonly q: ArrayLike<number>; readonly k: ArrayLike<number>; readonly v: ArrayLike<number> };

/** The forward's bounds: of output element x (rows of Dv), and of lse_i given its reference value. */
export function splitForwardBounds(p: SplitProblem): { readonly out: (x: number) => number; readonly lse: (i: number, ref: number) => number } {
  const { B, H, Sq, Sk, D, Dv, scale, q, k, v } = p;
  let vMax = 0;
  for (let i = 0; i < v.length; i++) vMax = Math.max(vMax, Math.abs(v[i]));
  // ε_i: the largest score error bound of query row i.
  const eps = Float64Array.from({ length: B * H * Sq }, (_, i) => {
    const bh = Math.floor(i / Sq);
    let e = 0;
    for (let j = 0; j < Sk; j++) {
      let a = 0;
      for (let d = 0; d < D; d++) a += Math.abs(q[i * D + d] * k[(bh * Sk + j) * D + d]);
      e = Math.max(e, (D * u + 2 ** -19) * scale * a);
    }
    return e;
  });
  return {
    out: (x) => (2 * eps[Math.floor(x / Dv)] + 2 ** -18 + Sk * u) * vMax + 1e-30,
    lse: (i, ref) => eps[i] + Sk * u + u * Math.abs(ref) + 1e-30,
  };
}

/** The split exponent of a row whose largest magnitude is m (kernels/matmul-split16.ts splitKernel). */
function splitExponent(m: number): number {
  if (m === 0) return 126;
  let e = Math.floor(Math.log2(m));
  if (2 ** e > m) e--;
  if (2 ** (e + 1) <= m) e++;
  return Math.min(126, Math.max(-126, 14 - (e + 1)));
}

/** `f` of each row of `d` values of x. */
const perRow = (x: Float32Array, d: number, f: (row: Float32Array) => number) => Float64Array.from({ length: x.length / d }, (_, r) => f(x.subarray(r * d, (r + 1) * d)));

/** Each row's split exponent of rows of `d` values. */
const rowExponents = (x: Float32Array, d: number) => perRow(x, d, (row) => splitExponent(row.reduce((a, v) => Math.max(a, Math.abs(v)), 0)));

/** The bounds of the split backward (test/kernels/flash-split16-backward.test.ts derives them), per element of dq, dk and dv. */
export function splitGradBounds(p: Problem, lse: Float32Array, delta: Float32Array) {
  const { B, H, Sq, Sk, D, Dv, scale, q, k, v, g } = p;
  const [sq, sk, sv, sg] = [rowExponents(q, D), rowExponents(k, D), rowExponents(v, Dv), rowExponents(g, Dv)];
  // Each row's Σ|x|: the split floors of a product are u·(Σ|x|·2^-s_y + Σ|y|·2^-s_x).
  const l1 = (x: Float32Array, d: number) => perRow(x, d, (row) => row.reduce((a, e) => a + Math.abs(e), 0));
  const [nq, nk, nv, ng] = [l1(q, D), l1(k, D), l1(v, Dv), l1(g, Dv)];
  const L = Math.ceil(Math.log2(2 * Dv));
  const clamp = (e: number) => Math.min(126, Math.max(-126, e));
  const min = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i)).reduce((a, x) => Math.min(a, x), Infinity);
  const tol = { dq: new Float64Array(B * H * Sq * D), dk: new Float64Array(B * H * Sk * D), dv: new Float64Array(B * H * Sk * Dv) };
  const abs = Math.abs;
  for (let bh = 0; bh < B * H; bh++) {
    const [minK, minV] = [min(Sk, (j) => sk[bh * Sk + j]), min(Sk, (j) => sv[bh * Sk + j])];
    const eK = clamp(minV + min(Sq, (i) => sq[bh * Sq + i] + sg[bh * Sq + i]) - 14 - L);
    const eP = clamp(min(Sq, (i) => sg[bh * Sq + i]) + 14);
    for (let i = 0; i < Sq; i++) {
      const row = bh * Sq + i;
      const eQ = clamp(sg[row] + minK + minV - 14 - L);
      for (let j = 0; j < Sk; j++) {
        const col = bh * Sk + j;
        const [dot, sAbs] = dotAbs(q, row * D, k, col * D, D);
        const [dP, dPAbs] = dotAbs(g, row * Dv, v, col * Dv, Dv);
        const sFloor = nq[row] * 2 ** -sk[col] + nk[col] * 2 ** -sq[row];
        const dPFloor = ng[row] * 2 ** -sv[col] + nv[col] * 2 ** -sg[row];
        const s = dot * scale;
        const P = Math.exp(s - lse[row]);
        const dS = P * (dP - delta[row]);
        const rho = scale * ((3 * D * u + 2 ** -19) * sAbs + u * sFloor) + (4 * abs(s) + abs(s - lse[row]) + 4) * u;
        const dDP = (3 * Dv * u + 2 ** -19) * dPAbs + u * dPFloor + 2 * u * abs(dP);
        const dDS = P * (dDP + rho * abs(dP - delta[row])) + 2 * u * abs(dS);
        for (let t = 0; t < D; t++) {
          const [kv, qv] = [abs(k[col * D + t]), abs(q[row * D + t])];
          tol.dq[row * D + t] += scale * (kv * (dDS + (2 ** -19 + 3 * Sk * u) * abs(dS)) + u * (abs(dS) * 2 ** -sk[col] + kv * 2 ** (sk[col] - eQ)));
          tol.dk[col * D + t] += scale * (qv * (dDS + (2 ** -19 + 3 * Sq * u) * abs(dS)) + u * (abs(dS) * 2 ** -sq[row] + qv * 2 ** (sq[row] - eK)));
        }
        for (let c = 0; c < Dv; c++) {
          const gv = abs(g[row * Dv + c]);
          tol.dv[col * Dv + c] += gv * P * (rho + 2 ** -19 + 3 * Sq * u) + u * (P * 2 ** -sg[row] + gv * 2 ** (sg[row] - eP));
        }
      }
    }
  }
  return tol;
}

