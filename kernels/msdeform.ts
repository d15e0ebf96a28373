// WGSL kernels for multi-scale deformable attention (Deformable-DETR's MSDeformAttn, the Mask2Former pixel
// decoder's op): the forward and the VJPs in the sampling locations and weights, f32, no atomics.
//
// Layout (compiler/ir/rules/reference-vision.ts): value [N, S, M, Dh] with S = Σ_l H_l·W_l (levels baked in
// as constants, level l's rows start at level_start_index[l]), sampling_locations [N, Lq, M, L, P, 2] as
// (x, y) in [0, 1], attention_weights [N, Lq, M, L, P], output [N, Lq, M·Dh]. A point samples its level
// bilinearly at (x·W − 0.5, y·H − 0.5) with zero padding (grid_sample, align_corners=False); a point
// contributes only when −1 < h_im < H and −1 < w_im < W (exactly the CUDA op's rule, and the reference's).
//
// Kernels: the forward, one invocation per output element; d sampling_locations and d attention_weights,
// per sampling point reducing over Dh (on hardware with several invocations per point: pointLanes; on an H200
// 0.155 -> 0.031 ms at Mask2Former's 73x73 level, 0.37 -> 0.08 ms at 64x64 + 32x32 + 16x16). d value, a
// gather through an index of the points by pixel (several kernels, no atomics), is in
// kernels/msdeform-value-grad.ts.
//
// This file also holds the small codegen helpers the vision kernels share (kernels/vision.ts imports them;
// the dependency goes one way only).
import type { Node } from '../compiler/ir/graph.js';
import { isFloat, numel } from '../compiler/ir/graph.js';
import { attrNum, msDeformGeometry, type MsDeformGeometry } from '../compiler/ir/rules/shape.js';
import type { Kernel, Target } from '../compiler/codegen/types.js';
import { u32Lit } from './elementwise.js';

export { u32Lit };

// ---------------------------------------------------------------------------------------------- shared helpers

/** A 1-D workgroup size that every limit of the target allows, at most `want`. */
export function linearWorkgroup(target: Target, want = 256): number {
  const max = Math.min(want, target.limits.maxComputeInvocationsPerWorkgroup, target.limits.maxComputeWorkgroupSizeX);
  let size = 1;
  while (size * 2 <= max) size *= 2;
  return size;
}

/**
 * Spreads `count` workgroups over up to three dispatch dimensions, each within maxComputeWorkgroupsPerDimension.
 * Kernels recover the linear workgroup index with WORKGROUP_INDEX and skip indices >= count.
 */
export function spreadWorkgroups(count: number, target: Target): [number, number, number] {
  const max = target.limits.maxComputeWorkgroupsPerDimension;
  if (count <= 0) return [0, 0, 0];
  const x = Math.min(count, max);
  const y = Math.min(Math.ceil(count / x), max);
  const z = Math.ceil(count / (x * y));
  if (z > max) throw new Error(`${count} workgroups do not fit in a ${max}^3 dispatch`);
  return [x, y, z];
}

/** WGSL: `wid`, the linear workgroup index of a dispatch made by spreadWorkgroups. */
export const WORKGROUP_INDEX = 'let wid = wg.x + nwg.x * (wg.y + nwg.y * wg.z);';

/**
 * Loop bounds. Mesa's lavapipe (and other software adapters) fully unroll loops whose trip count is a
 * compile-time constant, and LLVM then takes seconds per shader; on those targets a bound is multiplied by
 * `rt_one` (1 at run time, opaque to the compiler: every dispatch has num_workgroups.x >= 1). Hardware
 * targets keep constant bounds so their compilers may unroll. `main` starts with rolledPrelude(target).
 */
export function loopBound(target: Target): (bound: string) => string {
  return target.isFallbackAdapter ? (b) => `${b} * rt_one` : (b) => b;
}

export function rolledPrelude(target: Target): string {
  return target.isFallbackAdapter ? 'let rt_one = min(nwg.x, 1u); // keeps loops rolled on software adapters (loopBound)\n  ' : '';
}

/** The builtins every generated entry point takes. */
export const ENTRY_PARAMS =
  '@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) li: u32';

/** Storage declarations: inputs (read) in order, then the output (read_write). */
export function bindingDecls(inputNames: readonly string[], outputName: string): string {
  const lines = inputNames.map((n, i) => `@group(0) @binding(${i}) var<storage, read> ${n}: array<f32>;`);
  lines.push(`@group(0) @binding(${inputNames.length}) var<storage, read_write> ${outputName}: array<f32>;`);
  return lines.join('\n');
}

/** The bindings of a one-node kernel: its inputs in order (read), then its output (read_write). */
export function nodeBindings(node: Node): Kernel['bindings'] {
  return [...node.inputs.map((value) => ({ value, access: 'read' as const })), { value: node.id, access: 'read_write' as const }];
}

/**
 * The vision kernels compute in f32 on float values of any width: f16 values are stored as f16 where the target
 * allows (kernels/half-storage.ts widens the loads and narrows the stores), bf16 values are held in f32.
 */
export function requireFloat(node: Node, inputs: readonly Node[]): void {
  for (const n of [node, ...inputs]) {
    if (!isFloat(n.dtype)) throw new Error(`${node.op} (%${node.id}): the kernels take float values, %${n.id} is ${n.dtype}`);
  }
}

/**
 * A kernel with one invocation per output element: `body` computes element `i` (a u32 `let`, always
 * < total) and writes it. Handles any element count by spreading workgroups over the dispatch dimensions.
 */
export function perElementKernel(
  name: string,
  node: Node,
  target: Target,
  total: number,
  decls: string,
  helpers: string,
  body: string,
): Kernel {
  const wg = linearWorkgroup(target);
  const groups = Math.ceil(total / wg);
  const wgsl = `// ${name}: one invocation per output element (${total} elements)
${decls}

const TOTAL = ${u32Lit(total)};
${helpers}
@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${rolledPrelude(target)}${WORKGROUP_INDEX}
  let i = wid * ${u32Lit(wg)} + li;
  if (i >= TOTAL) { return; }
${indent(body.trim(), 2)}
}
`;
  return { name, wgsl, workgroupSize: [wg, 1, 1], dispatch: spreadWorkgroups(groups, target), bindings: nodeBindings(node), nodes: [node.id] };
}

export function indent(text: string, n: number): string {
  const pad = ' '.repeat(n);
  return text
    .split('\n')
    .map((l) => (l.length ? pad + l : l))
    .join('\n');
}

// ---------------------------------------------------------------------------------------------- geometry

type MsGeom = MsDeformGeometry;

/** The geometry of a msdeform node or its gradient (inputs value, locations, weights, ...). */
export const msGeom = (node: Node, inputs: readonly Node[]): MsGeom => msDeformGeometry(inputs[0].shape, inputs[1].shape, inputs[2].shape, node.attrs);

export function geomConsts(k: MsGeom): string {
  return [
    `const N = ${u32Lit(k.n)};`,
    `const S = ${u32Lit(k.s)};`,
    `const M = ${u32Lit(k.m)};`,
    `const DH = ${u32Lit(k.dh)};`,
    `const LQ = ${u32Lit(k.lq)};`,
    `const L = ${u32Lit(k.levels.length)};`,
    `const P = ${u32Lit(k.p)};`,
  ].join('\n');
}

/**
 * WGSL helpers (LOCATE_HELPERS): `locate(pt, h, w)` computes a sampling point's bilinear footprint on an h x w level (valid
 * only when the point lands within one pixel of the map), and `value_row(n, s, m)` the offset of value's
 * (n, s, m, 0). Corner c of the footprint is (h0 + (c >> 1), w0 + (c & 1)), corner weights in the reference's
 * order (1-lh)(1-lw), (1-lh)lw, lh(1-lw), lh·lw.
 */
export const LOCATE_HELPERS = /* wgsl */ `
struct Footprint {
  valid: bool,
  h0: i32,
  w0: i32,
  lh: f32,
  lw: f32,
}

fn locate(pt: u32, h: u32, w: u32) -> Footprint {
  let h_im = loc[2u * pt + 1u] * f32(h) - 0.5;
  let w_im = loc[2u * pt] * f32(w) - 0.5;
  var f: Footprint;
  f.valid = h_im > -1.0 && w_im > -1.0 && h_im < f32(h) && w_im < f32(w);
  if (!f.valid) { return f; }
  let h0 = floor(h_im);
  let w0 = floor(w_im);
  f.h0 = i32(h0);
  f.w0 = i32(w0);
  f.lh = h_im - h0;
  f.lw = w_im - w0;
  return f;
}

fn value_row(n: u32, s: u32, m: u32) -> u32 {
  return ((n * S + s) * M + m) * DH;
}
`;

/** WGSL: `corner(...)`, a value element of a footprint corner (the kernel binds `value`). */
const CORNER_HELPER = /* wgsl */ `
// value[n, start + y·w + x, m, d], or 0 outside the h x w level.
fn corner(n: u32, m: u32, d: u32, start: u32, h: u32, w: u32, y: i32, x: i32) -> f32 {
  if (y < 0 || x < 0 || y >= i32(h) || x >= i32(w)) { return 0.0; }
  return value[value_row(n, start + u32(y) * w + u32(x), m) + d];
}
`;

/** The footprint helpers and `corner`, for kernels that bind `value`. */
export const POINT_HELPERS = LOCATE_HELPERS + CORNER_HELPER;

/** WGSL: `let lvl_h`, `lvl_w`, `lvl_start` for the runtime level index `l` (levels baked in). */
export function levelSelect(k: MsGeom, l: string): string {
  return [
    `let lvl_h = ${perLevel(k.levels.map(([h]) => h), l)};`,
    `let lvl_w = ${perLevel(k.levels.map(([, w]) => w), l)};`,
    `let lvl_start = ${perLevel(k.starts, l)};`,
  ].join('\n');
}

/** WGSL: the value of per-level constants for the runtime level index `l` (a chain of `select`s). */
export function perLevel(values: readonly number[], l = 'l'): string {
  return values.slice(1).reduce((acc, v, i) => `select(${acc}, ${u32Lit(v)}, ${l} == ${u32Lit(i + 1)})`, u32Lit(values[0]));
}

/** Declares every input binding; `_ = &x` keeps an input the formula does not read in the pipeline layout. */
export function touch(names: readonly string[]): string {
  return names.map((n) => `_ = &${n};`).join('\n');
}

// ---------------------------------------------------------------------------------------------- forward

/**
 * Forward: one invocation per output element (n, q, m, d). It walks the (level, point) pairs in the
 * reference's order (levels unrolled with their sizes as constants), bilinearly samples channel d of the
 * four corners and accumulates weight · sample. Neighbouring invocations differ in d, so the value reads
 * of one corner are contiguous.
 */
export function msdeformAttnKernel(node: Node, inputs: readonly Node[], target: Target): Kernel {
  requireFloat(node, inputs);
  const k = msGeom(node, inputs);
  const B = loopBound(target);
  const levelBlocks = k.levels
    .map(([h, w], l) => {
      return `// level ${l}: ${h} x ${w}, rows from ${k.starts[l]}
for (var p = 0u; p < ${B('P')}; p++) {
  let pt = pt_row + ${u32Lit(l)} * P + p;
  let f = locate(pt, ${u32Lit(h)}, ${u32Lit(w)});
  if (f.valid) {
    acc += attw[pt] * bilinear(n, m, d, ${u32Lit(k.starts[l])}, ${u32Lit(h)}, ${u32Lit(w)}, f);
  }
}`;
    })
    .join('\n');
  const helpers = `${geomConsts(k)}
${POINT_HELPERS}
// The bilinear sample of channel d at a footprint, corners summed in the reference's order.
fn bilinear(n: u32, m: u32, d: u32, start: u32, h: u32, w: u32, f: Footprint) -> f32 {
  var v = 0.0;
  v += (1.0 - f.lh) * (1.0 - f.lw) * corner(n, m, d, start, h, w, f.h0, f.w0);
  v += (1.0 - f.lh) * f.lw * corner(n, m, d, start, h, w, f.h0, f.w0 + 1);
  v += f.lh * (1.0 - f.lw) * corner(n, m, d, start, h, w, f.h0 + 1, f.w0);
  v += f.lh * f.lw * corner(n, m, d, start, h, w, f.h0 + 1, f.w0 + 1);
  return v;
}
`;
  const body = `let d = i % DH;
let row = i / DH; // (n·LQ + q)·M + m
let m = row % M;
let n = row / (M * LQ);
let pt_row = row * L * P;
var acc = 0.0;
${levelBlocks}
out[i] = acc;`;
  return perElementKernel(
    'msdeform_attn_f32',
    node,
    target,
    numel(node.shape),
    bindingDecls(['value', 'loc', 'attw'], 'out'),
    helpers,
    body,
  );
}

// ---------------------------------------------------------------------------------------------- backward

/**
 * The VJP in sampling_locations (wrt 1) or attention_weights (2); inputs value, locations, weights, g
 * ([N, Lq, M·Dh]). The VJP in value is a chain of kernels (kernels/msdeform-value-grad.ts).
 */
export function msdeformAttnPointGradKernel(node: Node, inputs: readonly Node[], target: Target): Kernel {
  requireFloat(node, inputs);
  const wrt = attrNum(node.attrs, 'wrt');
  if (wrt === 1) return gradLocations(node, inputs, target);
  if (wrt === 2) return gradWeights(node, inputs, target);
  throw new Error(`msdeform_attn_grad (%${node.id}): the point kernels take wrt 1 or 2, got ${wrt}`);
}

export const GRAD_DECLS = bindingDecls(['value', 'loc', 'attw', 'g'], 'out');

/** The most invocations per sampling point of the point-gradient kernels (pointLanes). */
export const MAX_POINT_LANES = 8;

/**
 * Invocations per sampling point of the point-gradient kernels: 1 on software adapters (one point per invocation,
 * no barrier), else the largest power of two up to min(Dh, MAX_POINT_LANES). One invocation per point was
 * latency-bound on an H200 (0.16 ms for Mask2Former's 73x73 level: 32 channels x 5 dependent loads each, and
 * neighbouring invocations' corners far apart); lanes split the channels, so neighbouring lanes read
 * neighbouring channels of one corner. H200, 73x73 at Dh 32: 2 lanes 0.076 ms, 4 0.037, 8 0.031, 16 0.041, 32 0.085.
 */
export function pointLanes(k: MsGeom, target: Target): number {
  if (target.isFallbackAdapter) return 1;
  let lanes = 1;
  while (lanes * 2 <= Math.min(k.dh, MAX_POINT_LANES, linearWorkgroup(target))) lanes *= 2;
  return lanes;
}

/** WGSL: a point's head (pt → l, row, m, n, the level, the footprint `f`, g's row). */
function pointHead(k: MsGeom): string {
  return `let l = (pt / P) % L;
let row = pt / (P * L); // (n·LQ + q)·M + m
let m = row % M;
let n = row / (M * LQ);
${levelSelect(k, 'l')}
let f = locate(pt, lvl_h, lvl_w);
let g_row = row * DH;`;
}

/**
 * Per point (n, q, m, l, p): the footprint, then the sums over channels d (`lanes` invocations per point, each
 * over every lanes-th channel), then the point's outputs.
 */
function perPointKernel(name: string, node: Node, inputs: readonly Node[], target: Target, unused: readonly string[], which: PointGrads, lanes = pointLanes(msGeom(node, inputs), target)): Kernel {
  const k = msGeom(node, inputs);
  const points = k.n * k.lq * k.m * k.levels.length * k.p;
  const helpers = `${geomConsts(k)}\n${POINT_HELPERS}`;
  if (lanes === 1) {
    const head = `${touch(unused)}\nlet pt = i;\n${pointHead(k)}`;
    return perElementKernel(name, node, target, points, GRAD_DECLS, helpers, `${head}\n${pointGradsBody(which, target)}`);
  }
  return lanedPointKernel(name, node, target, points, helpers, [touch(unused), pointHead(k)].filter(Boolean).join('\n'), which, lanes);
}

/** Which point gradients a kernel writes: d sampling_locations to `out`, d attention_weights to `out` or `out_w`. */
type PointGrads = 'locations' | 'weights' | 'both';

/** WGSL: one channel d's terms of the sums (dlw, dlh for the locations, acc for the weights). */
function channelTerms(which: PointGrads): string {
  const loc = which !== 'weights';
  const wts = which !== 'locations';
  return `let v00 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0, f.w0);
let v01 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0, f.w0 + 1);
let v10 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0 + 1, f.w0);
let v11 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0 + 1, f.w0 + 1);
let gd = g[g_row + d];${
    loc
      ? `
dlw += gd * ((1.0 - f.lh) * (v01 - v00) + f.lh * (v11 - v10));
dlh += gd * ((1.0 - f.lw) * (v10 - v00) + f.lw * (v11 - v01));`
      : ''
  }${
    wts
      ? `
var v = 0.0;
v += (1.0 - f.lh) * (1.0 - f.lw) * v00;
v += (1.0 - f.lh) * f.lw * v01;
v += f.lh * (1.0 - f.lw) * v10;
v += f.lh * f.lw * v11;
acc += gd * v;`
      : ''
  }`;
}

/** WGSL: a point's outputs: zeros when its footprint is not valid, else from the sums `dlw`, `dlh`, `acc`. */
function pointStores(which: PointGrads, sums: { readonly dlw: string; readonly dlh: string; readonly acc: string }): { readonly zero: string; readonly store: string } {
  const loc = which !== 'weights';
  const wts = which !== 'locations';
  const wOut = which === 'both' ? 'out_w' : 'out';
  const zero = [...(loc ? ['out[2u * pt] = 0.0;', 'out[2u * pt + 1u] = 0.0;'] : []), ...(wts ? [`${wOut}[pt] = 0.0;`] : [])];
  const store = [
    ...(loc ? ['let a = attw[pt];', `out[2u * pt] = a * f32(lvl_w) * ${sums.dlw};`, `out[2u * pt + 1u] = a * f32(lvl_h) * ${sums.dlh};`] : []),
    ...(wts ? [`${wOut}[pt] = ${sums.acc};`] : []),
  ];
  return { zero: zero.join('\n'), store: store.join('\n') };
}

/**
 * d sampling_locations (the bilinear derivative in (x, y) contracted with g over Dh, times attw·size) and/or
 * d attention_weights (Σ_d g · bilinear sample), per point. Both read the same four corners for every channel,
 * so when the graph wants both (autodiff's siblings) one kernel computes them in one sweep, with the same
 * arithmetic as each alone.
 */
function pointGradsBody(which: PointGrads, target: Target): string {
  const B = loopBound(target);
  const { zero, store } = pointStores(which, { dlw: 'dlw', dlh: 'dlh', acc: 'acc' });
  return `if (!f.valid) {
${indent(zero, 2)}
  return;
}
var dlw = 0.0;
var dlh = 0.0;
var acc = 0.0;
for (var d = 0u; d < ${B('DH')}; d++) {
${indent(channelTerms(which), 2)}
}
${store}`;
}

/**
 * The point kernel with `lanes` invocations per point (consecutive in the workgroup): lane t sums channels t,
 * t + lanes, ... in increasing order, then the point's first lane adds the lanes' sums in lane order (a fixed
 * order: bitwise repeatable) and stores. No early return: every invocation reaches the barrier.
 */
function lanedPointKernel(name: string, node: Node, target: Target, points: number, helpers: string, head: string, which: PointGrads, lanes: number): Kernel {
  const wg = linearWorkgroup(target);
  const per = wg / lanes;
  const B = loopBound(target);
  const { zero, store } = pointStores(which, { dlw: 'sum.x', dlh: 'sum.y', acc: 'sum.z' });
  const wgsl = `// ${name}: ${lanes} invocations per sampling point over its channels (${points} points)
${GRAD_DECLS}

const TOTAL = ${u32Lit(points)};
const LANES = ${u32Lit(lanes)};
${helpers}
var<workgroup> lane_sums: array<vec3f, ${wg}>;

@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${rolledPrelude(target)}${WORKGROUP_INDEX}
  let lane = li % LANES;
  let at = wid * ${u32Lit(per)} + li / LANES;
  // Past the last point: a copy of it that stores nothing, so that every invocation reaches the barrier.
  let pt = min(at, TOTAL - 1u);
${indent(head, 2)}
  var dlw = 0.0;
  var dlh = 0.0;
  var acc = 0.0;
  if (f.valid) {
    for (var d = lane; d < ${B('DH')}; d += LANES) {
${indent(channelTerms(which), 6)}
    }
  }
  lane_sums[li] = vec3f(dlw, dlh, acc);
  workgroupBarrier();
  if (lane != 0u || at >= TOTAL) { return; }
  if (!f.valid) {
${indent(zero, 4)}
    return;
  }
  var sum = lane_sums[li];
  for (var t = 1u; t < LANES; t++) { sum += lane_sums[li + t]; }
${indent(store, 2)}
}
`;
  return { name, wgsl, workgroupSize: [wg, 1, 1], dispatch: spreadWorkgroups(Math.ceil(points / per), target), bindings: nodeBindings(node), nodes: [node.id] };
}

/** d sampling_locations. */
function gradLocations(node: Node, inputs: readonly Node[], target: Target): Kernel {
  return perPointKernel('msdeform_attn_grad_locations_f32', node, inputs, target, [], 'locations');
}

/** d attention_weights. */
function gradWeights(node: Node, inputs: readonly Node[], target: Target): Kernel {
  return perPointKernel('msdeform_attn_grad_weights_f32', node, inputs, target, ['attw'], 'weights');
}

/**
 * d sampling_locations (`node`, wrt 1) and d attention_weights (`weights`, wrt 2, the same inputs) in one kernel:
 * bindings value, locations, weights, g, then both outputs.
 */
export function msdeformPointGradsKernel(node: Node, inputs: readonly Node[], weights: Node, target: Target, lanes?: number): Kernel {
  requireFloat(node, inputs);
  if (attrNum(node.attrs, 'wrt') !== 1 || weights.op !== 'msdeform_attn_grad' || attrNum(weights.attrs, 'wrt') !== 2 || weights.inputs.join() !== node.inputs.join()) {
    throw new Error(`internal: %${node.id} cannot also write %${weights.id}`);
  }
  const kernel = perPointKernel('msdeform_attn_grad_points_f32', node, inputs, target, [], 'both', lanes);
  const decl = `@group(0) @binding(4) var<storage, read_write> out: array<f32>;`;
  if (!kernel.wgsl.includes(decl)) throw new Error('internal: the point kernel does not declare out at binding 4');
  return {
    ...kernel,
    wgsl: kernel.wgsl.replace(decl, `${decl}\n@group(0) @binding(5) var<storage, read_write> out_w: array<f32>;`),
    bindings: [...kernel.bindings, { value: weights.id, access: 'read_write' }],
    nodes: [...kernel.nodes, weights.id],
  };
}

