// WGSL kernel generators for batched matmul, a [..., M, K] @ b [..., K, N] -> [batch..., M, N], with NumPy
// broadcasting over the batch dims (baked-in strides; a broadcast operand is re-read, never copied).
//
// Variants, chosen per shape and Target (matmulVariant):
// - `matmul_tiled_f32`: 64x64 output tile per workgroup of 16x16 invocations, 4x4 outputs per invocation
//   (rows ty + 16·i, cols tx + 16·j), K in tiles of 16 staged in workgroup memory (8 KiB), bounds-checked
//   loads (zeros outside) and stores, so any M, N, K. Workgroups: x over N tiles, (y, z) over M tiles × batch.
// - `matmul_splitk_f32`: small outputs (batch·M·N < 4096) with long K (>= 512): one workgroup per output
//   element, invocation t sums k = t, t + WG, … in order, then a fixed tree in workgroup memory. No atomics.
// - `matmul_naive_f32`: one invocation per output element, sequential over K (problems under 2M
//   multiply-adds, which are launch-bound, or M or N below 16 where a 64x64 tile would be mostly empty).
// A shared right operand (a projection x [..., M, K] @ W [K, N]) folds the batch dims into M.
// Every variant sums in a fixed order, so results are bitwise repeatable on one device. Each writes an output
// element through a MatmulOutput: a plain store, or a fused elementwise epilogue (kernels/matmul-epilogue.ts)
// evaluated on the same f32 accumulator.
import type { Kernel, KernelGen, Target } from '../compiler/codegen/types.js';
import { numel, type Node } from '../compiler/ir/graph.js';
import { broadcastStrides, dispatchGroups, flatKernel, groupIndexCode, kernelRule, loopBound, makeKernel, offsetCode, u32Lit } from './elementwise.js';
import { treeReduceCode, treeWorkgroup } from './reduce.js';

export type MatmulVariant = 'tiled' | 'splitk' | 'naive';

const TILE = 64;
const TK = 16;
const THREADS = 16; // per dim: 16x16 invocations, 4x4 outputs each
const PER = TILE / THREADS;

export const SMALL_OUTPUT = 4096;
export const SPLITK_MIN_K = 512;
/** Below this many multiply-adds a problem is launch-bound: one invocation per output is as fast and never idle. */
export const SMALL_WORK = 1 << 21;

interface MatmulDims {
  readonly m: number;
  readonly k: number;
  readonly n: number;
  readonly batchShape: number[];
  readonly batch: number;
  /** Per-batch offsets of a and b (elements), broadcast over the batch dims. */
  readonly aStrides: number[];
  readonly bStrides: number[];
}

function dims(node: Node, inputs: readonly Node[]): MatmulDims {
  const [a, b] = inputs;
  const [m, k] = a.shape.slice(-2);
  const n = b.shape[b.shape.length - 1];
  const batchShape = node.shape.slice(0, -2);
  // x [..., M, K] @ W [K, N] (a projection): b is shared by every batch and a is contiguous, so the batch dims
  // fold into M — one [batch·M, K] @ [K, N] product with full tiles instead of many thin ones.
  const contiguousA = a.shape.length - 2 === batchShape.length && a.shape.slice(0, -2).every((s, i) => s === batchShape[i]);
  if (batchShape.length > 0 && b.shape.slice(0, -2).every((s) => s === 1) && contiguousA) {
    return { m: numel(batchShape) * m, k, n, batchShape: [], batch: 1, aStrides: [], bStrides: [] };
  }
  return {
    m,
    k,
    n,
    batchShape,
    batch: numel(batchShape),
    aStrides: broadcastStrides(a.shape.slice(0, -2), batchShape).map((s) => s * m * k),
    bStrides: broadcastStrides(b.shape.slice(0, -2), batchShape).map((s) => s * k * n),
  };
}

function tiledFits(target: Target): boolean {
  const L = target.limits;
  return (
    L.maxComputeInvocationsPerWorkgroup >= THREADS * THREADS &&
    L.maxComputeWorkgroupSizeX >= THREADS &&
    L.maxComputeWorkgroupSizeY >= THREADS &&
    L.maxComputeWorkgroupStorageSize >= 2 * TILE * TK * 4
  );
}

/** The variant the generator picks for this node and target. */
export function matmulVariant(node: Node, inputs: readonly Node[], target: Target): MatmulVariant {
  const d = dims(node, inputs);
  const outs = d.batch * d.m * d.n;
  if (outs < SMALL_OUTPUT) return d.k >= SPLITK_MIN_K ? 'splitk' : 'naive';
  if (outs * d.k < SMALL_WORK) return 'naive';
  const maxD = target.limits.maxComputeWorkgroupsPerDimension;
  if (d.m < 16 || d.n < 16 || !tiledFits(target) || Math.ceil(d.n / TILE) > maxD || Math.ceil(d.m / TILE) * d.batch > maxD * maxD) return 'naive';
  return 'tiled';
}

/** How a matmul kernel writes its outputs: the node written, extra read bindings and the store code. */
export interface MatmulOutput {
  /** Appended to the variant's kernel name (`+add_gelu`); empty for the plain store. */
  readonly suffix: string;
  /** The node the kernel stands for: its inputs are the bindings (a, b, then `extra`), its id the output. */
  readonly node: Node;
  /** Nodes read after a and b (bindings in_2, in_3, ...). */
  readonly extra: readonly Node[];
  /** Library functions the store code calls. */
  readonly lib: readonly string[];
  /** Module-scope WGSL (functions) the store code calls. */
  readonly helpers?: string;
  /** The IR nodes the kernel computes (the last is written). */
  readonly nodes: readonly number[];
  /** WGSL statements storing the f32 `value` (an expression) for the flat output index `index` (an expression). */
  store(value: string, index: string): string[];
}

/** The plain store: the product itself. */
export function plainOutput(node: Node): MatmulOutput {
  return { suffix: '', node, extra: [], lib: [], nodes: [node.id], store: (value, index) => [`out_0[${index}] = ${value};`] };
}

/**
 * Store statements as a block opened on the current line (`{ stmt }` for one statement); several statements
 * get lines of their own at `indent` + 2, in a scope where their names cannot clash with the kernel's.
 */
function storeBlock(lines: readonly string[], indent: string): string {
  if (lines.length === 1) return `{ ${lines[0]} }`;
  return `{\n${lines.map((l) => `${indent}  ${l}`).join('\n')}\n${indent}}`;
}

/** Assembles a variant's kernel for its output: the bindings of `out.node`, the name with its suffix. */
function assemble(out: MatmulOutput, inputs: readonly Node[], target: Target, name: string, parts: { body: string; workgroupSize: [number, number, number]; dispatch: readonly [number, number, number] }): Kernel {
  const body = out.helpers ? `${out.helpers}\n\n${parts.body}` : parts.body;
  const k = makeKernel(out.node, [...inputs, ...out.extra], target, { ...parts, body, name: `${name}${out.suffix}`.slice(0, 96), lib: out.lib });
  return { ...k, nodes: [...out.nodes] };
}

/** WGSL declaring `oa`, `ob` (the batch's offsets into a and b) from the batch index `bi`. */
function batchOffsets(d: MatmulDims, indent: string): string {
  return offsetCode(d.batchShape, [d.aStrides, d.bStrides], ['oa', 'ob'], 'bi', indent);
}

function naive(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims): Kernel {
  const store = out.store('acc', 'i');
  const body = `    let col = i % ${u32Lit(d.n)};
    let row = (i / ${u32Lit(d.n)}) % ${u32Lit(d.m)};
    let bi = i / ${u32Lit(d.m * d.n)};
${batchOffsets(d, '    ')}
    let ar = oa + row * ${u32Lit(d.k)};
    let bc = ob + col;
    var acc = 0.0f;
    for (var t = 0u; t < ${loopBound(d.k, target)}; t++) {
      acc = fma(in_0[ar + t], in_1[bc + t * ${u32Lit(d.n)}], acc);
    }
    ${store.length === 1 ? store[0] : storeBlock(store, '    ')}`;
  const k = flatKernel(out.node, [...inputs, ...out.extra], target, `matmul_naive_f32${out.suffix}`.slice(0, 96), body, { lib: out.lib, helpers: out.helpers });
  return { ...k, nodes: [...out.nodes] };
}

function splitK(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims): Kernel {
  const wg = treeWorkgroup(target, 64);
  const outs = d.batch * d.m * d.n;
  const dispatch = dispatchGroups(outs, target);
  const main = `var<workgroup> part: array<f32, ${wg}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('i', outs, dispatch)}
    let col = i % ${u32Lit(d.n)};
    let row = (i / ${u32Lit(d.n)}) % ${u32Lit(d.m)};
    let bi = i / ${u32Lit(d.m * d.n)};
${batchOffsets(d, '    ')}
    let ar = oa + row * ${u32Lit(d.k)};
    let bc = ob + col;
    var acc = 0.0f;
    for (var t = lid; t < ${u32Lit(d.k)}; t += ${u32Lit(wg)}) {
      acc = fma(in_0[ar + t], in_1[bc + t * ${u32Lit(d.n)}], acc);
    }
    part[lid] = acc;
${treeReduceCode('part', wg, (a, b) => `${a} + ${b}`, target)}
    if (lid == 0u) ${storeBlock(out.store('part[0]', 'i'), '    ')}
}`;
  return assemble(out, inputs, target, 'matmul_splitk_f32', { body: main, workgroupSize: [wg, 1, 1], dispatch });
}

function tiled(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims): Kernel {
  const id = out.nodes[0]; // the matmul
  if (!tiledFits(target)) {
    const L = target.limits;
    throw new Error(`matmul %${id}: the 64x64 tile needs 256 invocations and 8 KiB of workgroup memory; target '${target.name}' allows ${L.maxComputeInvocationsPerWorkgroup} and ${L.maxComputeWorkgroupStorageSize} bytes`);
  }
  const tilesN = Math.ceil(d.n / TILE);
  const tilesM = Math.ceil(d.m / TILE);
  const G = tilesM * d.batch;
  const [gy, gz, rest] = dispatchGroups(G, target);
  if (rest !== 1 || tilesN > target.limits.maxComputeWorkgroupsPerDimension) throw new Error(`matmul %${id}: ${tilesN}x${G} tiles exceed the dispatch limits of target '${target.name}'`);
  const M = u32Lit(d.m);
  const N = u32Lit(d.n);
  const K = u32Lit(d.k);
  const loads = (TILE * TK) / (THREADS * THREADS);
  const T = u32Lit(TILE);
  // Constant-bound loops: GPU compilers unroll them (loopBound keeps the k loop rolled on software adapters).
  const main = `var<workgroup> tile_a: array<f32, ${TILE * TK}>;
var<workgroup> tile_b: array<f32, ${TILE * TK}>;

@compute @workgroup_size(${THREADS}, ${THREADS}, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid3: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.z * ${u32Lit(gy)} + wid.y;
  if (g >= ${u32Lit(G)}) { return; }
  let bi = g / ${u32Lit(tilesM)};
  let m0 = (g % ${u32Lit(tilesM)}) * ${T};
  let n0 = wid.x * ${T};
  let tx = lid3.x;
  let ty = lid3.y;
${batchOffsets(d, '  ')}
  let oc = bi * ${u32Lit(d.m * d.n)};
  var acc: array<f32, ${PER * PER}>;
  var av: array<f32, ${PER}>;
  var bv: array<f32, ${PER}>;
  for (var k0 = 0u; k0 < ${K}; k0 += ${u32Lit(TK)}) {
    // A tile as [TK][TILE] (k-major), B tile as [TK][TILE]; zeros outside the matrices.
    for (var q = 0u; q < ${u32Lit(loads)}; q++) {
      let l = lid + q * ${u32Lit(THREADS * THREADS)};
      let ar = l / ${u32Lit(TK)};
      let ac = l % ${u32Lit(TK)};
      var va = 0.0f;
      if (m0 + ar < ${M} && k0 + ac < ${K}) { va = in_0[oa + (m0 + ar) * ${K} + k0 + ac]; }
      tile_a[ac * ${T} + ar] = va;
      let br = l / ${T};
      let bc = l % ${T};
      var vb = 0.0f;
      if (k0 + br < ${K} && n0 + bc < ${N}) { vb = in_1[ob + (k0 + br) * ${N} + n0 + bc]; }
      tile_b[br * ${T} + bc] = vb;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${loopBound(TK, target)}; kk++) {
      for (var i = 0u; i < ${u32Lit(PER)}; i++) {
        av[i] = tile_a[kk * ${T} + ty + i * ${u32Lit(THREADS)}];
        bv[i] = tile_b[kk * ${T} + tx + i * ${u32Lit(THREADS)}];
      }
      for (var i = 0u; i < ${u32Lit(PER)}; i++) {
        for (var j = 0u; j < ${u32Lit(PER)}; j++) {
          acc[i * ${u32Lit(PER)} + j] = fma(av[i], bv[j], acc[i * ${u32Lit(PER)} + j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < ${u32Lit(PER)}; i++) {
    for (var j = 0u; j < ${u32Lit(PER)}; j++) {
      let row = m0 + ty + i * ${u32Lit(THREADS)};
      let col = n0 + tx + j * ${u32Lit(THREADS)};
      if (row < ${M} && col < ${N}) ${storeBlock(out.store(`acc[i * ${u32Lit(PER)} + j]`, `oc + row * ${N} + col`), '      ')}
    }
  }
}`;
  return assemble(out, inputs, target, 'matmul_tiled_f32', { body: main, workgroupSize: [THREADS, THREADS, 1], dispatch: [tilesN, gy, gz] });
}

/**
 * The matmul kernel of a given variant (tests force each one); the rule picks matmulVariant's. `out` is how
 * it stores each element (default: the product itself).
 */
export function matmulKernel(node: Node, inputs: readonly Node[], target: Target, variant: MatmulVariant = matmulVariant(node, inputs, target), out: MatmulOutput = plainOutput(node)): Kernel {
  const d = dims(node, inputs);
  switch (variant) {
    case 'tiled':
      return tiled(out, inputs, target, d);
    case 'splitk':
      return splitK(out, inputs, target, d);
    case 'naive':
      return naive(out, inputs, target, d);
  }
}

const matmulGen: KernelGen = (node, inputs, target) => matmulKernel(node, inputs, target);

export const MATMUL_GPU_RULES = {
  matmul: kernelRule(matmulGen),
};
