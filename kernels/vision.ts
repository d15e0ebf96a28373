// WGSL kernels for the vision family (compiler/ir/rules/families.ts VISION_OPS), f32, one kernel per IR node,
// deterministic (no atomics; every sum runs in an order fixed by the shape alone), any size (workgroups are
// spread over the dispatch dimensions). The float64 CPU reference they match is
// compiler/ir/rules/reference-vision.ts.
//
// - conv2d and its two adjoints are implicit GEMMs run by one tiled kernel (tiles of A and B staged in
//   workgroup memory, a 4x4 register tile per invocation); the operands are never materialised (im2col is
//   done by the tile loaders). Shapes where the GEMM is degenerate use a direct kernel instead: depthwise /
//   few-channel convolution (one invocation per output element), strided grad_input (a gather that visits
//   only the kernel taps that hit the input element) and grad_weight with few weights and a long reduction
//   (one workgroup per weight element with a fixed-order tree reduction).
// - resize and adaptive_avg_pool2d are separable resamplings: each output index along an axis reads a
//   contiguous, clamped window of input indices (its taps). The forward gathers its taps; the grad is a
//   gather too: along each axis the outputs whose window holds an input index form a contiguous range
//   (window ends are monotone in the output index), found by binary search, and the input element sums
//   over that range in increasing order.
// - msdeform_attn and its VJPs are in kernels/msdeform.ts.
// - On software adapters (lavapipe) loops keep runtime bounds so the JIT does not unroll them (loopBound).
import type { GpuRule, Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { numel } from '../compiler/ir/graph.js';
import type { VisionOp } from '../compiler/ir/rules/families.js';
import { conv2dGeometry, type Conv2dGeometry } from '../compiler/ir/rules/shape.js';
import {
  bindingDecls,
  ENTRY_PARAMS,
  indent,
  linearWorkgroup,
  loopBound,
  msdeformAttnKernel,
  nodeBindings,
  perElementKernel,
  requireFloat,
  rolledPrelude,
  spreadWorkgroups,
  u32Lit,
  WORKGROUP_INDEX,
} from './msdeform.js';
import { msdeformAttnGradChain } from './msdeform-value-grad.js';

// ---------------------------------------------------------------------------------------------- conv geometry

type ConvGeom = Conv2dGeometry;

function convConsts(k: ConvGeom): string {
  const c = (name: string, v: number) => `const ${name} = ${u32Lit(v)};`;
  return [
    c('N', k.n), c('C', k.c), c('H', k.h), c('W', k.w), c('O', k.o), c('KH', k.kh), c('KW', k.kw), c('OH', k.oh), c('OW', k.ow),
    c('CG', k.cg), c('OG', k.og), c('SH', k.sh), c('SW', k.sw), c('DH', k.dh), c('DW', k.dw),
    `const PH = ${k.ph}i;`, `const PW = ${k.pw}i;`,
  ].join('\n');
}

/** WGSL: x[n, c, iy, ix] (iy, ix are i32), 0 in the padding. */
const X_PADDED = /* wgsl */ `
fn x_at(n: u32, c: u32, iy: i32, ix: i32) -> f32 {
  if (iy < 0 || ix < 0 || iy >= i32(H) || ix >= i32(W)) { return 0.0; }
  return x[((n * C + c) * H + u32(iy)) * W + u32(ix)];
}
`;

/**
 * WGSL: g[n, o, oy, ox] for the output position that reads input row/column (iy, ix) through kernel tap
 * (ky, kx), 0 when none does (the tap lands between strides, or outside the output).
 */
const G_THROUGH_TAP = /* wgsl */ `
fn g_through(n: u32, o: u32, iy: u32, ix: u32, ky: u32, kx: u32) -> f32 {
  let ty = i32(iy) + PH - i32(ky * DH);
  let tx = i32(ix) + PW - i32(kx * DW);
  if (ty < 0 || tx < 0) { return 0.0; }
  if (u32(ty) % SH != 0u || u32(tx) % SW != 0u) { return 0.0; }
  let oy = u32(ty) / SH;
  let ox = u32(tx) / SW;
  if (oy >= OH || ox >= OW) { return 0.0; }
  return gy[((n * O + o) * OH + oy) * OW + ox];
}
`;

// ---------------------------------------------------------------------------------------------- tiled implicit GEMM

interface GemmSpec {
  readonly name: string;
  /** C[g] (M x Ncols) = A[g] (M x K) · B[g] (K x Ncols), for g < G. */
  readonly m: number;
  readonly ncols: number;
  readonly k: number;
  readonly g: number;
  readonly decls: string;
  readonly consts: string;
  /**
   * WGSL functions `load_a(g, m, k) -> f32` and `load_b(g, k, col) -> f32` (called in bounds only), and
   * `c_row(g, m) -> u32` + `c_col(col) -> u32`: C[g][m][col] lives at out[c_row + c_col]; plus helpers.
   */
  readonly functions: string;
  readonly comment: string;
  /** The output binding's name. */
  readonly out: string;
}

interface GemmTiling {
  /** Invocations per side of the square workgroup; each computes a 4x4 block, strided by T. */
  readonly t: number;
  readonly tk: number;
}

/** The largest square tiling the target allows (16x16 invocations on every WebGPU adapter). */
function gemmTiling(target: Target): GemmTiling {
  const L = target.limits;
  for (const t of [16, 8, 4]) {
    const tk = 16;
    const storage = 2 * tk * 4 * t * 4;
    if (t * t <= L.maxComputeInvocationsPerWorkgroup && t <= L.maxComputeWorkgroupSizeX && t <= L.maxComputeWorkgroupSizeY && storage <= L.maxComputeWorkgroupStorageSize) return { t, tk };
  }
  throw new Error(`target ${target.name}: workgroup limits too small for the tiled GEMM`);
}

/**
 * One workgroup computes a TM x TN tile of C (TM = TN = 4T) for one group g; the K loop stages a TK x TM
 * slice of A and a TK x TN slice of B in workgroup memory, and invocation (tx, ty) accumulates rows
 * ty + T·i and columns tx + T·j (i, j < 4) in registers, over k in increasing order (deterministic).
 */
function gemmKernel(spec: GemmSpec, node: Node, target: Target): Kernel {
  const { t, tk } = gemmTiling(target);
  const tm = 4 * t;
  const tn = 4 * t;
  const wg = t * t;
  const tilesM = Math.ceil(spec.m / tm);
  const tilesN = Math.ceil(spec.ncols / tn);
  const tiles = tilesM * tilesN * spec.g;
  const loadsA = (tk * tm) / wg;
  const loadsB = (tk * tn) / wg;
  const accDecl = Array.from({ length: 16 }, (_, i) => `var acc${i} = 0.0;`).join(' ');
  const fmaLines: string[] = [];
  for (let i = 0; i < 4; i++) fmaLines.push(`let a${i} = tile_a[kk * TM + ty + ${i}u * T];`);
  for (let j = 0; j < 4; j++) fmaLines.push(`let b${j} = tile_b[kk * TN + tx + ${j}u * T];`);
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) fmaLines.push(`acc${i * 4 + j} += a${i} * b${j};`);
  const B = loopBound(target);
  // Output offsets: one per row and one per column of the 4x4 block, then 16 guarded stores.
  const stores: string[] = [];
  for (let i = 0; i < 4; i++) stores.push(`let row${i} = c_row(g, min(m0 + ty + ${i}u * T, GM - 1u));`);
  for (let j = 0; j < 4; j++) stores.push(`let col${j} = c_col(min(c0 + tx + ${j}u * T, GN - 1u));`);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) {
      stores.push(`if (m0 + ty + ${i}u * T < GM && c0 + tx + ${j}u * T < GN) { ${spec.out}[row${i} + col${j}] = acc${i * 4 + j}; }`);
    }
  }
  const wgsl = `// ${spec.name}: ${spec.comment}
// Implicit GEMM C[g] (${spec.m} x ${spec.ncols}) = A (${spec.m} x ${spec.k}) · B (${spec.k} x ${spec.ncols}) for ${spec.g} group(s);
// ${tm}x${tn} tiles, K step ${tk}, ${t}x${t} invocations with a 4x4 register tile each.
${spec.decls}

${spec.consts}
const GM = ${u32Lit(spec.m)};
const GN = ${u32Lit(spec.ncols)};
const GK = ${u32Lit(spec.k)};
const T = ${u32Lit(t)};
const TM = ${u32Lit(tm)};
const TN = ${u32Lit(tn)};
const TK = ${u32Lit(tk)};
const TILES_M = ${u32Lit(tilesM)};
const TILES_N = ${u32Lit(tilesN)};
const TILES = ${u32Lit(tiles)};
${spec.functions}
var<workgroup> tile_a: array<f32, ${tk * tm}>; // [k][m]
var<workgroup> tile_b: array<f32, ${tk * tn}>; // [k][col]

@compute @workgroup_size(${t}, ${t}, 1)
fn main(${ENTRY_PARAMS}) {
  ${rolledPrelude(target)}${WORKGROUP_INDEX}
  if (wid >= TILES) { return; }
  let tile_n = wid % TILES_N;
  let tile_m = (wid / TILES_N) % TILES_M;
  let g = wid / (TILES_N * TILES_M);
  let m0 = tile_m * TM;
  let c0 = tile_n * TN;
  let tx = li % T;
  let ty = li / T;
  ${accDecl}
  for (var k0 = 0u; k0 < ${B('GK')}; k0 += TK) {
    for (var r = 0u; r < ${B(u32Lit(loadsA))}; r++) {
      let e = li + r * ${u32Lit(wg)};
      let mm = e / TK;
      let kk = e % TK;
      var v = 0.0;
      if (m0 + mm < GM && k0 + kk < GK) { v = load_a(g, m0 + mm, k0 + kk); }
      tile_a[kk * TM + mm] = v;
    }
    for (var r = 0u; r < ${B(u32Lit(loadsB))}; r++) {
      let e = li + r * ${u32Lit(wg)};
      let kk = e / TN;
      let cc = e % TN;
      var v = 0.0;
      if (k0 + kk < GK && c0 + cc < GN) { v = load_b(g, k0 + kk, c0 + cc); }
      tile_b[kk * TN + cc] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${B('TK')}; kk++) {
${indent(fmaLines.join('\n'), 6)}
    }
    workgroupBarrier();
  }
${indent(stores.join('\n'), 2)}
}
`;
  return { name: spec.name, wgsl, workgroupSize: [t, t, 1], dispatch: spreadWorkgroups(tiles, target), bindings: nodeBindings(node), nodes: [node.id] };
}

// ---------------------------------------------------------------------------------------------- conv2d

export type ConvVariant = 'gemm' | 'direct';

/** Tiles of 64 rows waste most of the work when a group has few output channels (depthwise): go direct. */
const GEMM_MIN_ROWS = 16;

/** conv2d(x, w): y[n, o, oy, ox] = Σ_{ci, ky, kx} x[n, g·CG + ci, oy·S − P + ky·D, ...] · w[o, ci, ky, kx]. */
export function conv2dKernel(node: Node, inputs: readonly Node[], target: Target, variant?: ConvVariant): Kernel {
  requireFloat(node, inputs);
  const k = conv2dGeometry(inputs[0].shape, inputs[1].shape, node.shape, node.attrs, 'conv2d');
  const decls = bindingDecls(['x', 'w'], 'y');
  const v = variant ?? (k.og >= GEMM_MIN_ROWS ? 'gemm' : 'direct');
  const B = loopBound(target);
  if (v === 'direct') {
    const body = `let ox = i % OW;
let oy = (i / OW) % OH;
let o = (i / (OW * OH)) % O;
let n = i / (OW * OH * O);
let c0 = (o / OG) * CG;
var acc = 0.0;
for (var ci = 0u; ci < ${B('CG')}; ci++) {
  for (var ky = 0u; ky < ${B('KH')}; ky++) {
    let iy = i32(oy * SH + ky * DH) - PH;
    for (var kx = 0u; kx < ${B('KW')}; kx++) {
      let ix = i32(ox * SW + kx * DW) - PW;
      acc += x_at(n, c0 + ci, iy, ix) * w[((o * CG + ci) * KH + ky) * KW + kx];
    }
  }
}
y[i] = acc;`;
    return perElementKernel('conv2d_direct_f32', node, target, numel(node.shape), decls, `${convConsts(k)}\n${X_PADDED}`, body);
  }
  // A = w[g·OG + m, :] (rows of CG·KH·KW), B = im2col(x) (columns are (n, oy, ox)), C = y.
  const functions = `${X_PADDED}
fn load_a(g: u32, m: u32, k: u32) -> f32 {
  return w[(g * OG + m) * (CG * KH * KW) + k];
}

fn load_b(g: u32, k: u32, col: u32) -> f32 {
  let kx = k % KW;
  let ky = (k / KW) % KH;
  let ci = k / (KW * KH);
  let ox = col % OW;
  let oy = (col / OW) % OH;
  let n = col / (OW * OH);
  return x_at(n, g * CG + ci, i32(oy * SH + ky * DH) - PH, i32(ox * SW + kx * DW) - PW);
}

fn c_row(g: u32, m: u32) -> u32 {
  return (g * OG + m) * (OH * OW);
}

fn c_col(col: u32) -> u32 {
  let n = col / (OW * OH);
  return n * (O * OH * OW) + col % (OH * OW);
}
`;
  return gemmKernel(
    { name: 'conv2d_igemm_f32', m: k.og, ncols: k.n * k.oh * k.ow, k: k.cg * k.kh * k.kw, g: k.groups, decls, consts: convConsts(k), functions, comment: 'weights x im2col(x), per group', out: 'y' },
    node,
    target,
  );
}

/**
 * conv2d_grad_input(g, w): dx[n, c, iy, ix] = Σ over the (o, ky, kx) of c's group whose output position
 * (oy, ox) reads (iy, ix), of g[n, o, oy, ox] · w[o, c, ky, kx]. A gather: exact and atomic-free.
 */
export function conv2dGradInputKernel(node: Node, inputs: readonly Node[], target: Target, variant?: ConvVariant): Kernel {
  requireFloat(node, inputs);
  const k = conv2dGeometry(node.shape, inputs[1].shape, inputs[0].shape, node.attrs, 'conv2d_grad_input');
  const decls = bindingDecls(['gy', 'w'], 'dx');
  // With stride > 1 most (o, ky, kx) columns of the GEMM miss a given input element; the direct gather
  // skips the taps that miss before touching memory.
  const v = variant ?? (k.sh === 1 && k.sw === 1 && k.cg >= GEMM_MIN_ROWS ? 'gemm' : 'direct');
  const B = loopBound(target);
  if (v === 'direct') {
    const body = `let ix = i % W;
let iy = (i / W) % H;
let c = (i / (W * H)) % C;
let n = i / (W * H * C);
let grp = c / CG;
let cl = c % CG;
var acc = 0.0;
for (var ky = 0u; ky < ${B('KH')}; ky++) {
  let ty = i32(iy) + PH - i32(ky * DH);
  if (ty < 0 || u32(ty) % SH != 0u || u32(ty) / SH >= OH) { continue; }
  let oy = u32(ty) / SH;
  for (var kx = 0u; kx < ${B('KW')}; kx++) {
    let tx = i32(ix) + PW - i32(kx * DW);
    if (tx < 0 || u32(tx) % SW != 0u || u32(tx) / SW >= OW) { continue; }
    let ox = u32(tx) / SW;
    for (var ol = 0u; ol < ${B('OG')}; ol++) {
      let o = grp * OG + ol;
      acc += gy[((n * O + o) * OH + oy) * OW + ox] * w[((o * CG + cl) * KH + ky) * KW + kx];
    }
  }
}
dx[i] = acc;`;
    return perElementKernel('conv2d_grad_input_gather_f32', node, target, numel(node.shape), decls, convConsts(k), body);
  }
  // A = wᵀ per group (rows c, columns (o, ky, kx)), B = g seen through the taps (columns (n, iy, ix)), C = dx.
  const functions = `${G_THROUGH_TAP}
fn load_a(g: u32, m: u32, k: u32) -> f32 {
  let kx = k % KW;
  let ky = (k / KW) % KH;
  let o = g * OG + k / (KW * KH);
  return w[((o * CG + m) * KH + ky) * KW + kx];
}

fn load_b(g: u32, k: u32, col: u32) -> f32 {
  let kx = k % KW;
  let ky = (k / KW) % KH;
  let o = g * OG + k / (KW * KH);
  let ix = col % W;
  let iy = (col / W) % H;
  let n = col / (W * H);
  return g_through(n, o, iy, ix, ky, kx);
}

fn c_row(g: u32, m: u32) -> u32 {
  return (g * CG + m) * (H * W);
}

fn c_col(col: u32) -> u32 {
  let n = col / (W * H);
  return n * (C * H * W) + col % (H * W);
}
`;
  return gemmKernel(
    { name: 'conv2d_grad_input_igemm_f32', m: k.cg, ncols: k.n * k.h * k.w, k: k.og * k.kh * k.kw, g: k.groups, decls, consts: convConsts(k), functions, comment: 'transposed weights x g through the kernel taps, per group', out: 'dx' },
    node,
    target,
  );
}

export type ConvGradWeightVariant = 'gemm' | 'reduce';

/**
 * conv2d_grad_weight(x, g): dw[o, ci, ky, kx] = Σ_{n, oy, ox} g[n, o, oy, ox] · x[n, g·CG + ci, iy, ix], the
 * sum over (n, oy, ox) in a fixed order: sequentially in increasing order (GEMM) or strided per invocation
 * and then a fixed tree (reduce).
 */
export function conv2dGradWeightKernel(node: Node, inputs: readonly Node[], target: Target, variant?: ConvGradWeightVariant): Kernel {
  requireFloat(node, inputs);
  const k = conv2dGeometry(inputs[0].shape, node.shape, inputs[1].shape, node.attrs, 'conv2d_grad_weight');
  const decls = bindingDecls(['x', 'gy'], 'dw');
  const cols = k.cg * k.kh * k.kw;
  const v = variant ?? (k.og >= GEMM_MIN_ROWS && cols >= GEMM_MIN_ROWS ? 'gemm' : 'reduce');
  if (v === 'reduce') {
    // One workgroup per weight element: invocation t sums positions t, t + WG, ... in increasing order,
    // then a fixed binary tree over the invocations' partial sums.
    const wg = linearWorkgroup(target);
    const weights = numel(node.shape);
    const tree: string[] = [];
    for (let s = wg / 2; s >= 1; s /= 2) tree.push(`workgroupBarrier();\nif (li < ${u32Lit(s)}) { partial[li] += partial[li + ${u32Lit(s)}]; }`);
    const wgsl = `// conv2d_grad_weight_reduce_f32: one workgroup per weight element (${weights}), each summing ${k.n * k.oh * k.ow} positions
${decls}

${convConsts(k)}
const WEIGHTS = ${u32Lit(weights)};
const POSITIONS = ${u32Lit(k.n * k.oh * k.ow)};
const WG = ${u32Lit(wg)};
${X_PADDED}
var<workgroup> partial: array<f32, ${wg}>;

@compute @workgroup_size(${wg})
fn main(${ENTRY_PARAMS}) {
  ${WORKGROUP_INDEX}
  if (wid >= WEIGHTS) { return; }
  let kx = wid % KW;
  let ky = (wid / KW) % KH;
  let ci = (wid / (KW * KH)) % CG;
  let o = wid / (KW * KH * CG);
  let c = (o / OG) * CG + ci;
  var acc = 0.0;
  for (var pos = li; pos < POSITIONS; pos += WG) {
    let ox = pos % OW;
    let oy = (pos / OW) % OH;
    let n = pos / (OW * OH);
    acc += gy[((n * O + o) * OH + oy) * OW + ox] * x_at(n, c, i32(oy * SH + ky * DH) - PH, i32(ox * SW + kx * DW) - PW);
  }
  partial[li] = acc;
${indent(tree.join('\n'), 2)}
  if (li == 0u) { dw[wid] = partial[0]; }
}
`;
    return { name: 'conv2d_grad_weight_reduce_f32', wgsl, workgroupSize: [wg, 1, 1], dispatch: spreadWorkgroups(weights, target), bindings: nodeBindings(node), nodes: [node.id] };
  }
  // A = g per group (rows o, columns (n, oy, ox)), B = im2col(x)ᵀ (rows (n, oy, ox), columns (ci, ky, kx)), C = dw.
  const functions = `${X_PADDED}
fn load_a(g: u32, m: u32, k: u32) -> f32 {
  let ox = k % OW;
  let oy = (k / OW) % OH;
  let n = k / (OW * OH);
  return gy[((n * O + g * OG + m) * OH + oy) * OW + ox];
}

fn load_b(g: u32, k: u32, col: u32) -> f32 {
  let kx = col % KW;
  let ky = (col / KW) % KH;
  let ci = col / (KW * KH);
  let ox = k % OW;
  let oy = (k / OW) % OH;
  let n = k / (OW * OH);
  return x_at(n, g * CG + ci, i32(oy * SH + ky * DH) - PH, i32(ox * SW + kx * DW) - PW);
}

fn c_row(g: u32, m: u32) -> u32 {
  return (g * OG + m) * (CG * KH * KW);
}

fn c_col(col: u32) -> u32 {
  return col;
}
`;
  return gemmKernel(
    { name: 'conv2d_grad_weight_igemm_f32', m: k.og, ncols: cols, k: k.n * k.oh * k.ow, g: k.groups, decls, consts: convConsts(k), functions, comment: 'g x im2col(x)ᵀ, per group, summed over (n, oy, ox) in order', out: 'dw' },
    node,
    target,
  );
}

// ---------------------------------------------------------------------------------------------- separable resampling

type AxisMode = 'bicubic' | 'bilinear' | 'adaptive';

/**
 * WGSL for one axis (prefix `ax`) from `inSize` to `outSize`: `ax_taps(i)` gives output i's window (first
 * unclamped index, tap count, weights); `ax_index(t, k)` the clamped input index of tap k; `ax_weight(t, k)`
 * its weight; `ax_lo(i)` / `ax_hi(i)` the window's clamped ends (monotone non-decreasing in i);
 * `ax_weight_of(i, j)` the total weight of input j in output i (clamped taps can repeat an index);
 * `ax_first(j)` / `ax_last(j)` the range of outputs whose window holds j (empty when first > last).
 * PyTorch's formulas (area_pixel_compute_source_index, Keys' cubic A = −0.75) with the source coordinate
 * split into floor and fraction in exact integer arithmetic (src_num), the weights then in f32.
 */
function axisWgsl(ax: string, mode: AxisMode, inSize: number, outSize: number): string {
  const IN = u32Lit(inSize);
  const OUT = u32Lit(outSize);
  let taps: string;
  let weight: string;
  if (mode === 'bicubic') {
    taps = `fn ${ax}_taps(i: u32) -> Taps {
  let num = src_num(i, ${IN}, ${OUT});
  let den = i32(2u * ${OUT});
  let fl = select(num / den, -1i, num < 0); // floor(src); num > -den
  let t = f32(num - fl * den) / f32(den);
  return Taps(fl - 1, 4u, vec4f(cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2((1.0 - t) + 1.0)));
}`;
    weight = `t.w[k]`;
  } else if (mode === 'bilinear') {
    taps = `fn ${ax}_taps(i: u32) -> Taps {
  let num = max(src_num(i, ${IN}, ${OUT}), 0i); // src clamped at 0
  let den = i32(2u * ${OUT});
  let i0 = min(num / den, ${inSize - 1}i);
  let lambda = clamp(f32(num - i0 * den) / f32(den), 0.0, 1.0);
  return Taps(i0, 2u, vec4f(1.0 - lambda, lambda, 0.0, 0.0));
}`;
    weight = `t.w[k]`;
  } else {
    taps = `fn ${ax}_taps(i: u32) -> Taps {
  let lo = (i * ${IN}) / ${OUT};
  let hi = ((i + 1u) * ${IN} + ${OUT} - 1u) / ${OUT};
  return Taps(i32(lo), hi - lo, vec4f(1.0 / f32(hi - lo), 0.0, 0.0, 0.0));
}`;
    weight = `t.w.x`;
  }
  return `
// axis ${ax}: ${inSize} -> ${outSize} (${mode})
${taps}

fn ${ax}_index(t: Taps, k: u32) -> u32 {
  return u32(clamp(t.first + i32(k), 0i, ${inSize - 1}i));
}

fn ${ax}_weight(t: Taps, k: u32) -> f32 {
  return ${weight};
}

fn ${ax}_lo(i: u32) -> u32 {
  return ${ax}_index(${ax}_taps(i), 0u);
}

fn ${ax}_hi(i: u32) -> u32 {
  let t = ${ax}_taps(i);
  return ${ax}_index(t, t.count - 1u);
}

fn ${ax}_weight_of(i: u32, j: u32) -> f32 {
  let t = ${ax}_taps(i);
  var s = 0.0;
  for (var k = 0u; k < t.count; k++) {
    if (${ax}_index(t, k) == j) { s += ${ax}_weight(t, k); }
  }
  return s;
}

// The first output whose window ends at or after j (${OUT} when none).
fn ${ax}_first(j: u32) -> u32 {
  var lo = 0u;
  var hi = ${OUT};
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (${ax}_hi(mid) >= j) { hi = mid; } else { lo = mid + 1u; }
  }
  return lo;
}

// One past the last output whose window starts at or before j.
fn ${ax}_end(j: u32) -> u32 {
  var lo = 0u;
  var hi = ${OUT};
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (${ax}_lo(mid) > j) { hi = mid; } else { lo = mid + 1u; }
  }
  return lo;
}
`;
}

const CUBIC = /* wgsl */ `
struct Taps {
  first: i32,
  count: u32,
  w: vec4f,
}

// The source coordinate of output i, src = (i + 0.5)·in/out − 0.5 = num / (2·out), as the exact integer num:
// floor and fraction are split exactly, so taps and weights are the float64 reference's to f32 precision
// (PyTorch's f32 path rounds in/out first and is off by ~1e-6 relative).
fn src_num(i: u32, in_size: u32, out_size: u32) -> i32 {
  return i32(in_size * (2u * i + 1u)) - i32(out_size);
}

// Keys' cubic convolution, A = -0.75 (PyTorch's upsample_bicubic2d).
fn cubic1(x: f32) -> f32 {
  return ((-0.75 + 2.0) * x - (-0.75 + 3.0)) * x * x + 1.0;
}

fn cubic2(x: f32) -> f32 {
  return ((-0.75 * x - 5.0 * -0.75) * x + 8.0 * -0.75) * x - 4.0 * -0.75;
}
`;

function resampleModes(node: Node): AxisMode {
  if (node.op === 'adaptive_avg_pool2d' || node.op === 'adaptive_avg_pool2d_grad') return 'adaptive';
  const mode = node.attrs.mode;
  if (mode !== 'bicubic' && mode !== 'bilinear') throw new Error(`${node.op} (%${node.id}): mode must be bicubic or bilinear, got ${JSON.stringify(mode)}`);
  return mode;
}

/** resize / adaptive_avg_pool2d: out[plane, r, c] = Σ_jv wv(r, jv) · Σ_jh wh(c, jh) · x[plane, jv, jh] (W first, as the reference). */
function resampleKernel(node: Node, inputs: readonly Node[], target: Target): Kernel {
  requireFloat(node, inputs);
  const mode = resampleModes(node);
  const xs = inputs[0].shape;
  const [ih, iw] = xs.slice(-2);
  const [oh, ow] = node.shape.slice(-2);
  const helpers = `const IH = ${u32Lit(ih)};
const IW = ${u32Lit(iw)};
const OH = ${u32Lit(oh)};
const OW = ${u32Lit(ow)};
${CUBIC}${axisWgsl('v', mode, ih, oh)}${axisWgsl('h', mode, iw, ow)}`;
  const body = `let c = i % OW;
let r = (i / OW) % OH;
let plane = i / (OW * OH);
let tv = v_taps(r);
let th = h_taps(c);
var acc = 0.0;
for (var kv = 0u; kv < tv.count; kv++) {
  let row = (plane * IH + v_index(tv, kv)) * IW;
  var s = 0.0;
  for (var kh = 0u; kh < th.count; kh++) {
    s += h_weight(th, kh) * x[row + h_index(th, kh)];
  }
  acc += v_weight(tv, kv) * s;
}
y[i] = acc;`;
  const name = mode === 'adaptive' ? 'adaptive_avg_pool2d_f32' : `resize_${mode}_f32`;
  return perElementKernel(name, node, target, numel(node.shape), bindingDecls(['x'], 'y'), helpers, body);
}

/**
 * resize_grad / adaptive_avg_pool2d_grad, a gather: dx[plane, jv, jh] = Σ_c wh(c, jh) · Σ_r wv(r, jv) ·
 * g[plane, r, c] over the output ranges whose windows hold jv and jh, in increasing order. Input pixels no
 * window holds (a strong bilinear/bicubic downscale skips some) get 0.
 */
function resampleGradKernel(node: Node, inputs: readonly Node[], target: Target): Kernel {
  requireFloat(node, inputs);
  const mode = resampleModes(node);
  const [oh, ow] = inputs[0].shape.slice(-2);
  const [ih, iw] = node.shape.slice(-2);
  const helpers = `const IH = ${u32Lit(ih)};
const IW = ${u32Lit(iw)};
const OH = ${u32Lit(oh)};
const OW = ${u32Lit(ow)};
${CUBIC}${axisWgsl('v', mode, ih, oh)}${axisWgsl('h', mode, iw, ow)}`;
  const body = `let jh = i % IW;
let jv = (i / IW) % IH;
let plane = i / (IW * IH);
let r0 = v_first(jv);
let r1 = v_end(jv);
let c0 = h_first(jh);
let c1 = h_end(jh);
var acc = 0.0;
for (var c = c0; c < c1; c++) {
  var s = 0.0;
  for (var r = r0; r < r1; r++) {
    s += v_weight_of(r, jv) * g[(plane * OH + r) * OW + c];
  }
  acc += h_weight_of(c, jh) * s;
}
dx[i] = acc;`;
  const name = mode === 'adaptive' ? 'adaptive_avg_pool2d_grad_gather_f32' : `resize_${mode}_grad_gather_f32`;
  return perElementKernel(name, node, target, numel(node.shape), bindingDecls(['g'], 'dx'), helpers, body);
}

// ---------------------------------------------------------------------------------------------- the table

const kernel = (gen: (node: Node, inputs: readonly Node[], target: Target) => Kernel): GpuRule => ({ kind: 'kernel', gen });

export const VISION_GPU_RULES: { readonly [K in VisionOp]: GpuRule } = {
  conv2d: kernel((n, i, t) => conv2dKernel(n, i, t)),
  conv2d_grad_input: kernel((n, i, t) => conv2dGradInputKernel(n, i, t)),
  conv2d_grad_weight: kernel((n, i, t) => conv2dGradWeightKernel(n, i, t)),
  resize: kernel(resampleKernel),
  resize_grad: kernel(resampleGradKernel),
  adaptive_avg_pool2d: kernel(resampleKernel),
  adaptive_avg_pool2d_grad: kernel(resampleGradKernel),
  msdeform_attn: kernel(msdeformAttnKernel),
  msdeform_attn_grad: { kind: 'chain', gen: (n, i, t) => msdeformAttnGradChain(n, i, t, t.tuning?.msdeformValueGrad) },
};
