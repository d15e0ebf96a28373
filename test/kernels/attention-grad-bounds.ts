// lse, δ and per-element error bounds of attention_grad's dq, dk and dv for the tensor-core flash backward kernels
// (kernels/flash-sgmat-backward.ts, staged; kernels/flash-direct-backward.ts, from storage), which share their
// arithmetic: exact f16 products summed in f32, P and dS rounded to f16 before their products.
//
// Error bound, per output element (u = 2^-10: f32 → f16 may round either way):
//   S sums exact f16 products in f32: |ΔS| ≤ D·2^-24·Σ|q||k|, so P = e^{s − lse} has relative error
//   ρ = scale·|ΔS| + (|s − lse| + 4)·2^-24; dP: |ΔdP| ≤ Dv·2^-24·Σ|g||v|; dS = P·(dP − δ) in f32:
//   |ΔdS| ≤ P·(|ΔdP| + ρ·|dP − δ|) + 2^-23·|dS|. Then P and dS rounded to f16: u·|x| + 2^-25 (f16 subnormals).
//   The products sum n terms in f32, in any order: n·2^-24·Σ|terms|. So, with e_dS = u|dS| + 2^-25 + |ΔdS| + n·2^-24|dS|:
//   dq_it ≤ scale·Σ_j |k_jt|·e_dS_ij, dk_jt ≤ scale·Σ_i |q_it|·e_dS_ij, dv_jc ≤ Σ_i |g_ic|·(P_ij(u + ρ_ij +
//   n·2^-24) + 2^-25); the callers add 2^-23 of the value for the final scaling. (Observed errors stay well below.)

import assert from 'node:assert/strict';
import type { GpuProgram } from '../../compiler/codegen/gpu.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import type { AttentionGeometry } from '../../kernels/flash-common.js';
import { assertWithin } from './harness.js';

export const U16 = 2 ** -10;
export const E32 = 2 ** -24;

/** An attention problem: its geometry (the kernels' own), q, k, v, g ([B, H, S, D] row-major) and an optional mask. */
export interface Problem extends Omit<AttentionGeometry, 'maskStrides'> {
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly g: Float32Array;
  readonly mask?: { readonly shape: number[]; readonly data: Float32Array };
}

/** Σ x·y and Σ|x·y| over the n elements from x[xi] and y[yi]. */
export function dotAbs(x: ArrayLike<number>, xi: number, y: ArrayLike<number>, yi: number, n: number): [number, number] {
  let [dot, abs] = [0, 0];
  for (let t = 0; t < n; t++) {
    const p = x[xi + t] * y[yi + t];
    dot += p;
    abs += Math.abs(p);
  }
  return [dot, abs];
}

/** lse and δ = Σ g·out (float64, stored as f32), and the per-element bounds of dq, dk, dv derived in the header. */
export function statsAndBounds(p: Problem) {
  const { B, H, Sq, Sk, D, Dv, scale, q, k, v, g, mask } = p;
  const lse = new Float32Array(B * H * Sq);
  const delta = new Float32Array(B * H * Sq);
  const tol = { dq: new Float64Array(B * H * Sq * D), dk: new Float64Array(B * H * Sk * D), dv: new Float64Array(B * H * Sk * Dv) };
  const maskAt = (b: number, h: number, i: number, j: number): number => {
    if (!mask) return 0;
    const lead = 4 - mask.shape.length;
    let o = 0;
    let st = 1;
    for (let d = 3; d >= lead; d--) {
      const idx = [b, h, i, j][d];
      const size = mask.shape[d - lead];
      if (size !== 1) o += idx * st;
      st *= size;
    }
    return mask.data[o];
  };
  const s = new Float64Array(Sk);
  const sAbs = new Float64Array(Sk);
  for (let bh = 0; bh < B * H; bh++) {
    const [b, h] = [Math.floor(bh / H), bh % H];
    for (let i = 0; i < Sq; i++) {
      const row = bh * Sq + i;
      let m = -Infinity;
      for (let j = 0; j < Sk; j++) {
        const [dot, abs] = dotAbs(q, row * D, k, (bh * Sk + j) * D, D);
        s[j] = dot * scale + maskAt(b, h, i, j);
        sAbs[j] = abs;
        m = Math.max(m, s[j]);
      }
      let z = 0;
      for (let j = 0; j < Sk; j++) z += Math.exp(s[j] - m);
      lse[row] = Math.fround(m + Math.log(z));
      let del = 0;
      for (let c = 0; c < Dv; c++) {
        let o = 0;
        for (let j = 0; j < Sk; j++) o += (Math.exp(s[j] - m) / z) * v[(bh * Sk + j) * Dv + c];
        del += g[row * Dv + c] * o;
      }
      delta[row] = Math.fround(del);
      for (let j = 0; j < Sk; j++) {
        const P = Math.exp(s[j] - lse[row]);
        if (P === 0) continue;
        const [dP, dPAbs] = dotAbs(g, row * Dv, v, (bh * Sk + j) * Dv, Dv);
        const dS = P * (dP - delta[row]);
        const rho = scale * D * E32 * sAbs[j] + (Math.abs(s[j] - lse[row]) + 4) * E32;
        const eDS32 = P * (Dv * E32 * dPAbs + rho * Math.abs(dP - delta[row])) + 2 * E32 * Math.abs(dS);
        const eDSq = U16 * Math.abs(dS) + 2 ** -25 + eDS32 + Sk * E32 * Math.abs(dS);
        const eDSk = U16 * Math.abs(dS) + 2 ** -25 + eDS32 + Sq * E32 * Math.abs(dS);
        const eP = P * (U16 + rho + Sq * E32) + 2 ** -25;
        for (let t = 0; t < D; t++) {
          tol.dq[row * D + t] += scale * Math.abs(k[(bh * Sk + j) * D + t]) * eDSq;
          tol.dk[(bh * Sk + j) * D + t] += scale * Math.abs(q[row * D + t]) * eDSk;
        }
        for (let c = 0; c < Dv; c++) tol.dv[(bh * Sk + j) * Dv + c] += Math.abs(g[row * Dv + c]) * eP;
      }
    }
  }
  return { lse, delta, tol };
}

/**
 * Runs `program` (of `graph`: inputs named q, k, v, g, lse, delta) on `gpu` with `values` and asserts each output
 * d<wrt> within `bounds[wrt]` plus 2^-23 of the value (the final scaling), and not vacuously: its largest error is
 * above 0 and below `most` of the bound. Returns every output and its reference.
 */
export async function assertGradsWithin(gpu: GpuDevice, graph: Graph, program: GpuProgram, values: Readonly<Record<string, Float32Array>>, bounds: readonly Float64Array[], wrts: readonly number[], what: string, most: number) {
  const inputs = new Map(graph.inputs.map((inp) => [inp.name, { shape: [...graph.node(inp.node).shape], data: Float64Array.from(values[inp.name]) }] as const));
  const got = await runGpu(gpu, graph, program, inputs, new Map());
  const ref = interpret(graph, inputs);
  for (const wrt of wrts) {
    const want = ref.get(`d${wrt}`)!.data;
    const worst = assertWithin(Float32Array.from(got.get(`d${wrt}`)!.data), want, (j) => bounds[wrt][j] + 2 * E32 * Math.abs(want[j]) + 1e-30, `${what}: d${wrt}`);
    assert.ok(worst > 0 && worst < most, `${what}: d${wrt}: largest error ${worst} of the bound`);
  }
  // For the caller's other outputs.
  return { got, ref };
}
