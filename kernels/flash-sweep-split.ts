// The f32 flash kernels with their swept side split across workgroups (flash-decoding's split), for attentions whose
// grid of row tiles is too small to fill the GPU evenly: EVA-G detection is 16 heads x 18 tiles of 128 rows = 288
// workgroups, about 2.2 per multiprocessor of an H200, so a second wave runs nearly empty. Each is a chain of two
// kernels: the flash kernel with one grid per chunk of the swept side, each workgroup sweeping its chunk's tiles as
// the one kernel sweeps them all and storing partial results into scratch, then a kernel with one invocation per
// output element that combines the chunks in a fixed order (chunk 0, 1, ...; no atomics: bitwise repeatable).
// - The forward (attention, with its attention_lse sibling or alone, or attention_lse alone) sweeps the keys; a chunk
//   stores each row's state (kernels/flash-forward.ts partLayout): the output unnormalised, its running max m and sum l.
//   `attention_keysum` merges them: M = max m_c, w_c = e^{m_c − M} (0 where m_c = −inf: a chunk with every key masked),
//   out = Σ w_c·acc_c / Σ w_c·l_c, lse = M + ln Σ w_c·l_c; a row masked entirely gives 0/0 = NaN and lse = −inf, as
//   the one kernel does.
// - dq sweeps the keys, dk and dv (apart or in one kernel) the queries; their outputs are sums over the swept side, so a
//   chunk stores its partial sums and `attention_grad_sum` adds them.
// Off unless Target.tuning.flashSweepSplit says how many workgroups fill the GPU (WebGPU reports no multiprocessor
// count; `visft tune` measures it). It splits the row-per-invocation kernels; where a tuning also asks for the
// register-blocked ones (flashBlocked, flashBlockedGrad), the split kernels run instead. Unmeasured on NVIDIA.
import type { Kernel, KernelChain, Scratch, Target } from '../compiler/codegen/types.js';
import { numel, type Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { combineCode } from './reduce.js';
import { f32Lit, flatKernel, u32Lit } from './elementwise.js';
import { flashBackwardKernel, flashBackwardTiles } from './flash-backward.js';
import { directReads, FlashTileError, withSecondOutput, type FlashReads, type FlashTiles, type SweepChunks } from './flash-common.js';
import { flashForwardKernel, flashForwardTiles, partLayout } from './flash-forward.js';

/** The scratch placeholder of the partial results. */
export const PARTS: Scratch['ref'] = -1;
/** The ops whose f32 flash kernels split. */
export const FLASH_OPS: readonly string[] = ['attention', 'attention_lse', 'attention_grad'];
/** The fewest tiles a chunk keeps: fewer, and each workgroup's row loads and partial stores dominate its sweep. */
export const SWEEP_CHUNK_MIN_TILES = 4;
/** The most chunks (the combining kernel reads every chunk's partials for each output element). */
export const MAX_SWEEP_CHUNKS = 16;

/**
 * The chunks of the swept side for a kernel of `groups` workgroups sweeping `S` rows in tiles of `sweep`: enough that
 * the chunks' grids reach `fill` workgroups, each at least SWEEP_CHUNK_MIN_TILES tiles, at most MAX_SWEEP_CHUNKS;
 * undefined for one chunk (the one kernel).
 */
export function sweepChunks(fill: number, groups: number, S: number, sweep: number): SweepChunks | undefined {
  const tiles = Math.ceil(S / sweep);
  const want = Math.min(Math.ceil(fill / Math.max(1, groups)), Math.floor(tiles / SWEEP_CHUNK_MIN_TILES), MAX_SWEEP_CHUNKS);
  if (want < 2) return undefined;
  const len = Math.ceil(tiles / want) * sweep;
  const count = Math.ceil(S / len);
  return count > 1 ? { count, len } : undefined;
}

/**
 * The chain of an f32 flash kernel with its swept side split, where Target.tuning.flashSweepSplit asks for it and the
 * chunks fit the target; undefined otherwise (the schedule then runs the one kernel). `node`: an attention (with its
 * attention_lse `sibling`, or none), a lone attention_lse, or an attention_grad of wrt 0, 1 or 2 (wrt 1 with its wrt-2
 * `sibling`: dk and dv in one kernel). `reads`: q, k, v (and g) through views. The caller has ruled out the tensor-core
 * kernels.
 */
export function sweepSplitChain(node: Node, inputs: readonly Node[], target: Target, sibling?: Node, reads: FlashReads = directReads(node)): KernelChain | undefined {
  const fill = target.tuning?.flashSweepSplit;
  // Nothing to split where a value is empty (the one kernel handles those).
  if (fill === undefined || numel(node.shape) === 0 || (sibling && numel(sibling.shape) === 0)) return undefined;
  const plan = chunkPlan(node, inputs, target, fill, sibling);
  if (!plan) return undefined;
  const L = target.limits;
  if (4 * plan.words > Math.min(L.maxStorageBufferBindingSize, L.maxBufferSize) || plan.groups > L.maxComputeWorkgroupsPerDimension ** 2) return undefined;
  const kernel =
    node.op === 'attention_grad' ? flashBackwardKernel(node, inputs, target, {}, sibling, reads, plan.chunks) : flashForwardKernel(node, inputs, target, {}, undefined, reads, plan.chunks);
  const last = kernel.bindings.length - 1;
  const partials = { ...kernel, bindings: kernel.bindings.map((b, i) => (i === last ? { ...b, value: PARTS } : b)) };
  const scratch: Scratch = { ref: PARTS, words: plan.words, name: 'sweep chunks' };
  return { kernels: [partials, plan.combine()], scratch: [scratch] };
}

interface ChunkPlan {
  readonly chunks: SweepChunks;
  /** Workgroups of the partial kernel. */
  readonly groups: number;
  /** Scratch words. */
  readonly words: number;
  readonly combine: () => Kernel;
}

/** How `node`'s kernel splits under `fill`, or undefined (one chunk, no such kernel, or its tiles do not fit). */
function chunkPlan(node: Node, inputs: readonly Node[], target: Target, fill: number, sibling?: Node): ChunkPlan | undefined {
  if (!FLASH_OPS.includes(node.op)) return undefined;
  const [q, k] = inputs;
  const [B, H, Sq] = q.shape;
  const Sk = k.shape[2];
  const Dv = node.op === 'attention_lse' ? 0 : inputs[2].shape[3];
  const tiled = (tiles: () => FlashTiles) => {
    try {
      return tiles();
    } catch (e) {
      if (e instanceof FlashTileError) return undefined; // the row kernel's head dims
      throw e;
    }
  };
  const split = (tiles: FlashTiles | undefined, owned: number, swept: number) => {
    if (!tiles) return undefined;
    const groups = B * H * Math.ceil(owned / tiles.own);
    const chunks = sweepChunks(fill, groups, swept, tiles.sweep);
    return chunks && { chunks, groups: groups * chunks.count };
  };
  if (node.op === 'attention' || node.op === 'attention_lse') {
    if (sibling && (node.op === 'attention_lse' || sibling.op !== 'attention_lse')) return undefined;
    const s = split(tiled(() => flashForwardTiles(node, inputs, target)), Sq, Sk);
    if (!s) return undefined;
    const rows = B * H * Sq;
    return { ...s, words: partLayout(s.chunks.count, rows, Dv).words, combine: () => keySumKernel(node, sibling, s.chunks.count, rows, Dv, target) };
  }
  const wrt = attrNum(node.attrs, 'wrt');
  const kv = sibling !== undefined;
  if (wrt === 3 || (kv && (wrt !== 1 || sibling.op !== 'attention_grad' || attrNum(sibling.attrs, 'wrt') !== 2))) return undefined;
  const s = split(
    tiled(() => flashBackwardTiles(node, inputs, target, {}, kv)),
    wrt === 0 ? Sq : Sk,
    wrt === 0 ? Sk : Sq,
  );
  if (!s) return undefined;
  const outs = [node, ...(sibling ? [sibling] : [])];
  const words = s.chunks.count * outs.reduce((n, o) => n + numel(o.shape), 0);
  return { ...s, words, combine: () => gradSumKernel(outs, s.chunks.count, target) };
}

/**
 * `attention_keysum<C>_f32`: merges the chunks' partial states (binding `part`) into `node`'s value (out_0) and, for an
 * attention with an lse sibling, the sibling's (out_1, written by each row's column-0 invocation).
 */
export function keySumKernel(node: Node, lse: Node | undefined, chunks: number, rows: number, Dv: number, target: Target): Kernel {
  const U = u32Lit;
  const part = partLayout(chunks, rows, Dv);
  const each = (f: (c: number) => string) => Array.from({ length: chunks }, (_, c) => f(c));
  const row = Dv > 0 ? 'row' : 'i';
  const lines = [
    ...(Dv > 0 ? [`let row = i / ${U(Dv)};`, `let col = i % ${U(Dv)};`] : []),
    `var mx = part[${part.m('0u', row)}];`,
    ...each((c) => `mx = ${combineCode('max', 'mx', `part[${part.m(U(c), row)}]`)};`).slice(1),
    'var l = 0.0f;',
    ...(Dv > 0 ? ['var acc = 0.0f;'] : []),
    ...each((c) =>
      [
        `{ let m = part[${part.m(U(c), row)}]; let w = select(exp_f32(m - mx), 0.0f, m == ${f32Lit(-Infinity)});`,
        `  l = fma(w, part[${part.l(U(c), row)}], l);${Dv > 0 ? ` acc = fma(w, part[(${part.acc(U(c), row)}) * ${U(Dv)} + col], acc);` : ''} }`,
      ].join('\n'),
    ),
    ...(Dv > 0 ? ['out_0[i] = acc / l;', ...(lse ? ['if (col == 0u) { out_1[row] = mx + log_f32(l); }'] : [])] : ['out_0[i] = mx + log_f32(l);']),
  ];
  const name = `attention${Dv > 0 ? '' : '_lse'}_keysum${chunks}_f32`;
  const k = partsKernel(node, part.words, name, lines, rows * Math.max(1, Dv), target, ['is_nan', 'exp_f32', 'log_f32']);
  return lse ? withSecondOutput(k, lse, target) : k;
}

/**
 * `attention_grad_sum<C>_f32`: adds the chunks' partial sums (binding `part`: [C, first output], then [C, second]) into
 * `outs` (out_0, and out_1 for dk with dv), chunk 0 first.
 */
export function gradSumKernel(outs: readonly Node[], chunks: number, target: Target): Kernel {
  const U = u32Lit;
  const sizes = outs.map((o) => numel(o.shape));
  const sum = (base: number, n: number, at: string) => Array.from({ length: chunks }, (_, c) => `part[${U(base + c * n)} + ${at}]`).join(' + ');
  const lines =
    sizes.length === 1
      ? [`out_0[i] = ${sum(0, sizes[0], 'i')};`]
      : [`if (i < ${U(sizes[0])}) {`, `  out_0[i] = ${sum(0, sizes[0], 'i')};`, '} else {', `  out_1[i - ${U(sizes[0])}] = ${sum(chunks * sizes[0], sizes[1], `i - ${U(sizes[0])}`)};`, '}'];
  const k = partsKernel(outs[0], chunks * sizes.reduce((a, b) => a + b, 0), `attention_grad_sum${chunks}_f32`, lines, sizes.reduce((a, b) => a + b, 0), target, []);
  return outs.length > 1 ? withSecondOutput(k, outs[1], target) : k;
}

/** A flat kernel of `n` invocations computing `node` from the scratch of `words` partials, bound as `part`. */
function partsKernel(node: Node, words: number, name: string, lines: readonly string[], n: number, target: Target, lib: readonly string[]): Kernel {
  const partNode: Node = { ...node, id: PARTS, inputs: [], shape: [words] };
  const body = lines.map((l) => l.split('\n').map((x) => `    ${x}`).join('\n')).join('\n');
  const k = flatKernel({ ...node, inputs: [PARTS] }, [partNode], target, name, body, { lib, n });
  const generic = '@group(0) @binding(0) var<storage, read> in_0: array<f32>;';
  if (!k.wgsl.includes(generic)) throw new Error(`internal: ${name} does not declare its bindings as makeKernel does`);
  return { ...k, wgsl: k.wgsl.replace(generic, '@group(0) @binding(0) var<storage, read> part: array<f32>;') };
}
