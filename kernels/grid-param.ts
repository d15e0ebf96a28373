// One small whole number per kernel carried by the dispatch instead of the WGSL, so that kernels which differ
// only in it share one shader: a slice's start, a pad's offset, a dropout seed. Unrolled loops make many such
// kernels (the caption decoder's per-step slices and pads, the LSTM's gate chunks, a dropout seed per node), and
// on a software adapter every distinct shader costs a compile of ~50-100 ms (Mesa lavapipe), which dominated a
// short training run.
//
// The dispatch's z size is the number + 1; the shader reads `num_workgroups.z - 1`. The workgroups of every z
// layer share the elements in one grid-stride loop, so a result never depends on the layout. Where there are
// fewer workgroups' worth of elements than z layers, the extra workgroups find nothing to do; each costs a few
// microseconds on lavapipe, so software adapters carry numbers up to 16 only, and larger ones stay baked in.
import type { Target } from '../compiler/codegen/types.js';

/** The largest number a dispatch carries for `target`. */
export function gridParamMax(target: Target): number {
  return Math.min(target.isFallbackAdapter ? 16 : 1024, target.limits.maxComputeWorkgroupsPerDimension - 1);
}

/**
 * The dispatch [x, 1, param + 1] covering `n` elements in workgroups of `wg` invocations, or undefined when
 * `param` cannot travel this way (not a whole number in [0, gridParamMax]). x is capped so that the loop's
 * stride stays below 2³¹ (the grid-stride loop covers what the groups do not).
 */
export function gridDispatch(n: number, param: number, wg: number, target: Target): [number, number, number] | undefined {
  if (!Number.isInteger(param) || param < 0 || param > gridParamMax(target)) return undefined;
  const z = param + 1;
  const needed = Math.ceil(n / wg);
  const x = Math.max(1, Math.min(Math.ceil(needed / z), target.limits.maxComputeWorkgroupsPerDimension, Math.floor((2 ** 31 - 1) / (z * wg))));
  return [x, 1, z];
}

/**
 * `fn main` of a kernel from gridDispatch: `body` (statements that see `i: u32`, the flat output index, and
 * `k: u32`, the dispatch's number) runs once for each i below n. `what` says in a comment what k is.
 */
export function gridMain(wg: number, n: number, what: string, body: string): string {
  return `@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  // k (${what}) is carried by the dispatch, not the shader: its z size is k + 1.
  let k = nwg.z - 1u;
  let stride = nwg.x * nwg.z * ${wg}u;
  for (var i = (wid.z * nwg.x + wid.x) * ${wg}u + lid; i < ${n}u; i += stride) {
${body}
  }
}`;
}
