// WGSL kernels for multi-scale deformable attention (Deformable-DETR's MSDeformAttn, the Mask2Former pixel
// decoder's op): the forward and the three VJPs, f32, one kernel per IR node, no atomics.
//
// Layout (compiler/ir/rules/reference-vision.ts): value [N, S, M, Dh] with S = Σ_l H_l·W_l (levels baked in
// as constants, level l's rows start at level_start_index[l]), sampling_locations [N, Lq, M, L, P, 2] as
// (x, y) in [0, 1], attention_weights [N, Lq, M, L, P], output [N, Lq, M·Dh]. A point samples its level
// bilinearly at (x·W − 0.5, y·H − 0.5) with zero padding (grid_sample, align_corners=False); a point
// contributes only when −1 < h_im < H and −1 < w_im < W (exactly the CUDA op's rule, and the reference's).
//
// Kernels: the forward, one invocation per output element; d sampling_locations and d attention_weights,
// one invocation per sampling point reducing over Dh; d value as a gather (each value element sums what
// the points that sample it contribute, in increasing (q, p) order: exact, deterministic, no atomics), by
// default tiled so that a workgroup filters the points once for a block of pixels.
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
const msGeom = (node: Node, inputs: readonly Node[]): MsGeom => msDeformGeometry(inputs[0].shape, inputs[1].shape, inputs[2].shape, node.attrs);

function geomConsts(k: MsGeom): string {
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
 * WGSL helpers: `locate(pt, h, w)` computes a sampling point's bilinear footprint on an h x w level (valid
 * only when the point lands within one pixel of the map), and `value_row(n, s, m)` the offset of value's
 * (n, s, m, 0). Corner c of the footprint is (h0 + (c >> 1), w0 + (c & 1)), corner weights in the reference's
 * order (1-lh)(1-lw), (1-lh)lw, lh(1-lw), lh·lw.
 */
const POINT_HELPERS = /* wgsl */ `
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

// value[n, start + y·w + x, m, d], or 0 outside the h x w level.
fn corner(n: u32, m: u32, d: u32, start: u32, h: u32, w: u32, y: i32, x: i32) -> f32 {
  if (y < 0 || x < 0 || y >= i32(h) || x >= i32(w)) { return 0.0; }
  return value[value_row(n, start + u32(y) * w + u32(x), m) + d];
}
`;

/** WGSL: `let lvl_h`, `lvl_w`, `lvl_start` for the runtime level index `l` (levels baked in). */
function levelSelect(k: MsGeom, l: string): string {
  const pick = (vals: readonly number[]) =>
    vals.slice(1).reduce((acc, v, i) => `select(${acc}, ${u32Lit(v)}, ${l} == ${u32Lit(i + 1)})`, u32Lit(vals[0]));
  return [
    `let lvl_h = ${pick(k.levels.map(([h]) => h))};`,
    `let lvl_w = ${pick(k.levels.map(([, w]) => w))};`,
    `let lvl_start = ${pick(k.starts)};`,
  ].join('\n');
}

/** Declares every input binding; `_ = &x` keeps an input the formula does not read in the pipeline layout. */
function touch(names: readonly string[]): string {
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
 * The VJP in value (wrt 0), sampling_locations (1) or attention_weights (2); inputs value, locations,
 * weights, g ([N, Lq, M·Dh]).
 */
export function msdeformAttnGradKernel(node: Node, inputs: readonly Node[], target: Target, valueVariant: GradValueVariant = 'tiled'): Kernel {
  requireFloat(node, inputs);
  const wrt = attrNum(node.attrs, 'wrt');
  if (wrt === 0) return valueVariant === 'tiled' ? gradValueTiled(node, inputs, target) : gradValue(node, inputs, target);
  if (wrt === 1) return gradLocations(node, inputs, target);
  if (wrt === 2) return gradWeights(node, inputs, target);
  throw new Error(`msdeform_attn_grad (%${node.id}): wrt must be 0, 1 or 2, got ${wrt}`);
}

/** How d value is computed: `tiled` (the default) or the plain per-element `gather` it refines. */
export type GradValueVariant = 'tiled' | 'gather';

const GRAD_DECLS = bindingDecls(['value', 'loc', 'attw', 'g'], 'out');

/**
 * d value, the plain gather (no atomics, bitwise deterministic): one invocation per value element (n, s, m, d).
 * Pixel s lies on one level l at (y, x); only level-l points can touch it, so the invocation walks every
 * query q and point p of that level in increasing order, recomputes the point's footprint and, when (y, x)
 * is one of its four corners, adds attw · corner weight · g[n, q, m, d]. O(Lq·P) per element.
 *
 * The work is dominated by footprints that miss the pixel: gradValueTiled below filters them once per
 * block of pixels instead of once per element, summing in the same order.
 */
function gradValue(node: Node, inputs: readonly Node[], target: Target): Kernel {
  const k = msGeom(node, inputs);
  const B = loopBound(target);
  // Level of value row s: the last level whose start is <= s.
  const levelOf = k.starts
    .slice(1)
    .reduce((acc, st) => `${acc} + select(0u, 1u, s >= ${u32Lit(st)})`, '0u');
  const body = `${touch(['value'])}
let d = i % DH;
let m = (i / DH) % M;
let s = (i / (DH * M)) % S;
let n = i / (DH * M * S);
let l = ${levelOf};
${levelSelect(k, 'l')}
let y = i32((s - lvl_start) / lvl_w);
let x = i32((s - lvl_start) % lvl_w);
var acc = 0.0;
for (var q = 0u; q < ${B('LQ')}; q++) {
  let row = (n * LQ + q) * M + m;
  let gq = g[row * DH + d];
  for (var p = 0u; p < ${B('P')}; p++) {
    let pt = (row * L + l) * P + p;
    let f = locate(pt, lvl_h, lvl_w);
    if (!f.valid) { continue; }
    var wy = 0.0;
    if (y == f.h0) { wy = 1.0 - f.lh; } else if (y == f.h0 + 1) { wy = f.lh; } else { continue; }
    var wx = 0.0;
    if (x == f.w0) { wx = 1.0 - f.lw; } else if (x == f.w0 + 1) { wx = f.lw; } else { continue; }
    acc += attw[pt] * (wy * wx) * gq;
  }
}
out[i] = acc;`;
  return perElementKernel(
    'msdeform_attn_grad_value_gather_f32',
    node,
    target,
    numel(node.shape),
    GRAD_DECLS,
    `${geomConsts(k)}\n${POINT_HELPERS}`,
    body,
  );
}

/** Per point (n, q, m, l, p): the footprint, then `body` (with `d` looping over channels) writes the point's output. */
function perPointKernel(name: string, node: Node, inputs: readonly Node[], target: Target, unused: readonly string[], body: string): Kernel {
  const k = msGeom(node, inputs);
  const points = k.n * k.lq * k.m * k.levels.length * k.p;
  const head = `${touch(unused)}
let pt = i;
let l = (pt / P) % L;
let row = pt / (P * L); // (n·LQ + q)·M + m
let m = row % M;
let n = row / (M * LQ);
${levelSelect(k, 'l')}
let f = locate(pt, lvl_h, lvl_w);
let g_row = row * DH;`;
  return perElementKernel(name, node, target, points, GRAD_DECLS, `${geomConsts(k)}\n${POINT_HELPERS}`, `${head}\n${body}`);
}

/** d sampling_locations: per point, the bilinear derivative in (x, y) contracted with g over Dh. */
function gradLocations(node: Node, inputs: readonly Node[], target: Target): Kernel {
  const B = loopBound(target);
  const body = `if (!f.valid) {
  out[2u * pt] = 0.0;
  out[2u * pt + 1u] = 0.0;
  return;
}
var dlw = 0.0;
var dlh = 0.0;
for (var d = 0u; d < ${B('DH')}; d++) {
  let v00 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0, f.w0);
  let v01 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0, f.w0 + 1);
  let v10 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0 + 1, f.w0);
  let v11 = corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0 + 1, f.w0 + 1);
  let gd = g[g_row + d];
  dlw += gd * ((1.0 - f.lh) * (v01 - v00) + f.lh * (v11 - v10));
  dlh += gd * ((1.0 - f.lw) * (v10 - v00) + f.lw * (v11 - v01));
}
let a = attw[pt];
out[2u * pt] = a * f32(lvl_w) * dlw;
out[2u * pt + 1u] = a * f32(lvl_h) * dlh;`;
  return perPointKernel('msdeform_attn_grad_locations_f32', node, inputs, target, [], body);
}

/** d attention_weights: per point, Σ_d g · bilinear sample. */
function gradWeights(node: Node, inputs: readonly Node[], target: Target): Kernel {
  const B = loopBound(target);
  const body = `if (!f.valid) {
  out[pt] = 0.0;
  return;
}
var acc = 0.0;
for (var d = 0u; d < ${B('DH')}; d++) {
  var v = 0.0;
  v += (1.0 - f.lh) * (1.0 - f.lw) * corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0, f.w0);
  v += (1.0 - f.lh) * f.lw * corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0, f.w0 + 1);
  v += f.lh * (1.0 - f.lw) * corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0 + 1, f.w0);
  v += f.lh * f.lw * corner(n, m, d, lvl_start, lvl_h, lvl_w, f.h0 + 1, f.w0 + 1);
  acc += g[g_row + d] * v;
}
out[pt] = acc;`;
  return perPointKernel('msdeform_attn_grad_weights_f32', node, inputs, target, ['attw'], body);
}

/**
 * d value, tiled gather (the default): one workgroup per block of TP consecutive pixels of one level, for
 * one (n, m) and all Dh channels (invocation-owned (pixel, d) elements, E per invocation). The workgroup
 * walks the level's Lq·P points in chunks of WG: each invocation computes one point's footprint, the hits
 * on the block (a valid corner inside it) are compacted into workgroup memory with a prefix sum over the
 * workgroup (Hillis-Steele, fixed), keeping increasing (q, p) order, together with their four corner
 * weights a·w_c (0 for a corner outside the map) and the corner (0, 0)'s pixel index; then every element
 * adds weight · g[n, q, m, d] for the hits whose footprint holds its pixel. Same sums in the same order as
 * the plain gather (increasing (q, p) per element), O(Lq·P / WG + hits) per invocation and chunk instead
 * of O(Lq·P) per element. No atomics.
 *
 * Further speed (not done): a precomputed inverted index (per pixel, its (q, p, corner) sources sorted by
 * (q, p), built with a counting sort: counts, an exclusive scan, a fill in source order) makes the work
 * exactly proportional to the contributions, but needs extra kernels and buffers, outside the
 * one-kernel-per-node contract; subgroup ballots would make the compaction cheaper where available.
 */
function gradValueTiled(node: Node, inputs: readonly Node[], target: Target): Kernel {
  const k = msGeom(node, inputs);
  const B = loopBound(target);
  const wg = linearWorkgroup(target);
  // Pixels per block: 64, or fewer when Dh is so large that an invocation would own more than 8 elements.
  const tp = Math.max(1, Math.min(64, Math.floor((wg * 8) / k.dh)));
  const e = Math.ceil((tp * k.dh) / wg);
  // Very wide heads (Dh > 8·WG) or a target with little workgroup memory: the plain gather.
  if (e > 8 || wg * 28 > target.limits.maxComputeWorkgroupStorageSize) return gradValue(node, inputs, target);
  const levelTiles = k.levels.map(([h, w]) => Math.ceil((h * w) / tp));
  const tileStarts: number[] = [];
  let tilesPerNm = 0;
  for (const t of levelTiles) {
    tileStarts.push(tilesPerNm);
    tilesPerNm += t;
  }
  const workgroups = k.n * k.m * tilesPerNm;
  const levelOfTile = tileStarts.slice(1).reduce((acc, st) => `${acc} + select(0u, 1u, tile >= ${u32Lit(st)})`, '0u');
  const tileStartOf = tileStarts.slice(1).reduce((acc, st, i) => `select(${acc}, ${u32Lit(st)}, l == ${u32Lit(i + 1)})`, u32Lit(tileStarts[0]));
  const elemSetup: string[] = [];
  const elemAdd: string[] = [];
  const elemStore: string[] = [];
  for (let r = 0; r < e; r++) {
    elemSetup.push(`let e${r} = li + ${u32Lit(r * wg)};
let px${r} = t0 + e${r} / DH;
let d${r} = e${r} % DH;
let own${r} = e${r} < TP * DH && px${r} < t1;
var acc${r} = 0.0;`);
    elemAdd.push(`if (own${r}) {
  let w = hit_weight(i32(px${r}) - hs, hw);
  if (w != 0.0) { acc${r} += w * g[g_row + d${r}]; }
}`);
    elemStore.push(`if (own${r}) { out[value_row(n, lvl_start + px${r}, m) + d${r}] = acc${r}; }`);
  }
  const scan: string[] = [];
  for (let off = 1; off < wg; off *= 2) {
    scan.push(`{
  var v = 0u;
  if (li >= ${u32Lit(off)}) { v = prefix[li - ${u32Lit(off)}]; }
  workgroupBarrier();
  prefix[li] += v;
  workgroupBarrier();
}`);
  }
  const wgsl = `// msdeform_attn_grad_value_tiled_f32: d value by blocks of ${tp} pixels x ${k.dh} channels (${e} per invocation),
// hits compacted in (q, p) order per chunk of ${wg} points; ${workgroups} workgroups
${GRAD_DECLS}

${geomConsts(k)}
const WG = ${u32Lit(wg)};
const TP = ${u32Lit(tp)};
const TILES = ${u32Lit(workgroups)};
const TILES_PER_NM = ${u32Lit(tilesPerNm)};
const NPTS = ${u32Lit(k.lq * k.p)};
${POINT_HELPERS}
var<workgroup> prefix: array<u32, ${wg}>;
var<workgroup> hit_q: array<u32, ${wg}>;
var<workgroup> hit_s: array<i32, ${wg}>;
var<workgroup> hit_w: array<vec4f, ${wg}>;

// The weight of the pixel at offset delta from a hit's corner (0, 0) (level-relative indices): the
// corners are at 0, 1, W, W + 1; a corner outside the map has weight 0 (its index may alias a pixel).
fn hit_weight(delta: i32, hw: vec4f) -> f32 {
  return select(0.0, hw.x, delta == 0) + select(0.0, hw.y, delta == 1) + select(0.0, hw.z, delta == lvl_w_i) + select(0.0, hw.w, delta == lvl_w_i + 1);
}

var<private> lvl_w_i: i32;

@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${rolledPrelude(target)}${WORKGROUP_INDEX}
  if (wid >= TILES) { return; }
  ${touch(['value'])}
  let tile = wid % TILES_PER_NM;
  let m = (wid / TILES_PER_NM) % M;
  let n = wid / (TILES_PER_NM * M);
  let l = ${levelOfTile};
${indent(levelSelect(k, 'l'), 2)}
  lvl_w_i = i32(lvl_w);
  let t0 = (tile - ${tileStartOf}) * TP;
  let t1 = min(t0 + TP, lvl_h * lvl_w);
${indent(elemSetup.join('\n'), 2)}
  for (var c0 = 0u; c0 < ${B('NPTS')}; c0 += WG) {
    // 1. this invocation's point: footprint, corner weights, whether it hits the block [t0, t1)
    let j = c0 + li;
    var hit = false;
    var q = 0u;
    var s00 = 0i;
    var w4 = vec4f(0.0);
    if (j < NPTS) {
      q = j / P;
      let pt = (((n * LQ + q) * M + m) * L + l) * P + j % P;
      let f = locate(pt, lvl_h, lvl_w);
      if (f.valid) {
        let a = attw[pt];
        let y0 = f.h0 >= 0;
        let y1 = f.h0 + 1 < i32(lvl_h);
        let x0 = f.w0 >= 0;
        let x1 = f.w0 + 1 < i32(lvl_w);
        w4 = vec4f(
          select(0.0, a * ((1.0 - f.lh) * (1.0 - f.lw)), y0 && x0),
          select(0.0, a * ((1.0 - f.lh) * f.lw), y0 && x1),
          select(0.0, a * (f.lh * (1.0 - f.lw)), y1 && x0),
          select(0.0, a * (f.lh * f.lw), y1 && x1));
        s00 = f.h0 * i32(lvl_w) + f.w0;
        let lo = i32(t0);
        let hi = i32(t1);
        let c00 = s00;
        let c01 = s00 + 1;
        let c10 = s00 + i32(lvl_w);
        let c11 = c10 + 1;
        hit = (y0 && x0 && c00 >= lo && c00 < hi) || (y0 && x1 && c01 >= lo && c01 < hi) ||
              (y1 && x0 && c10 >= lo && c10 < hi) || (y1 && x1 && c11 >= lo && c11 < hi);
      }
    }
    // 2. compaction: inclusive prefix sum of the hit flags, hits stored in (q, p) order
    prefix[li] = select(0u, 1u, hit);
    workgroupBarrier();
${indent(scan.join('\n'), 4)}
    if (hit) {
      let slot = prefix[li] - 1u;
      hit_q[slot] = q;
      hit_s[slot] = s00;
      hit_w[slot] = w4;
    }
    let count = prefix[WG - 1u];
    workgroupBarrier();
    // 3. every owned element adds the hits that cover its pixel, in order
    for (var t = 0u; t < count; t++) {
      let hs = hit_s[t];
      let hw = hit_w[t];
      let g_row = ((n * LQ + hit_q[t]) * M + m) * DH;
${indent(elemAdd.join('\n'), 6)}
    }
    workgroupBarrier();
  }
${indent(elemStore.join('\n'), 2)}
}
`;
  return { name: 'msdeform_attn_grad_value_tiled_f32', wgsl, workgroupSize: [wg, 1, 1], dispatch: spreadWorkgroups(workgroups, target), bindings: nodeBindings(node), nodes: [node.id] };
}
