// K split across workgroups, for matmuls whose outputs have too few tiles to fill the GPU (the fc2 rows: 256 tokens
// x 6144 -> 1408 is 88 workgroups of 64x64 for an H200's 132 multiprocessors). A chain of two kernels:
// 1. the tiled or sgmat variant's own kernel with K ranges (MatmulOutput.kRange): its workgroups run once per
//    range, each summing the k steps of its range as the one kernel sums all of K, and store the raw f32
//    accumulators into scratch [ranges, batch·M·N];
// 2. `matmul_ksum`: one invocation per output element adds the ranges' partials in a fixed order (range 0, 1, ...;
//    no atomics: bitwise repeatable) and stores through the MatmulOutput, so an epilogue sees the accumulator as the
//    one kernel's would; a second product (LoRA's u·Bblkᵀ) is summed there in k order, as the naive variant does.
// With one range the chain stores the one kernel's bits. The schedule uses a chain where matmulSplits says so.
import type { Kernel, KernelChain, Scratch, Target } from '../compiler/codegen/types.js';
import { numel, type Node } from '../compiler/ir/graph.js';
import { bindingDecls, flatKernel, u32Lit, unboundedLoop } from './elementwise.js';
import { DIRECT_READS, matmulGrid, matmulKernel, plainOutput, softwareTarget, storeBlock, type KRange, type MatmulOutput, type MatmulReads, type MatmulVariant, type OperandViews } from './matmul.js';
import type { SgmatTiles } from './matmul-sgmat.js';
import { split16Chain, split16Unfit } from './matmul-split16.js';

/** The scratch placeholder of the partial products. */
export const PARTIALS: Scratch['ref'] = -1;

/** The most K ranges Target.tuning.matmulSplits may ask for (the sum kernel adds them one statement each). */
export const MAX_SPLITS = 64;

/**
 * Output tiles from which a one-kernel product is taken to fill the GPU: about the multiprocessors of an H100/H200
 * (132). WebGPU reports no multiprocessor count, so other GPUs get theirs from a tuning profile
 * (Target.tuning.splitTiles, `visft tune`).
 */
export const SPLIT_TILES = 128;
/** The fewest k steps a range keeps: fewer, and the staging's prologue and the extra partials' traffic dominate. */
export const SPLIT_MIN_STEPS = 8;
/** The most ranges the default picks. */
export const SPLIT_MAX = 4;

/**
 * The default number of K ranges for a product whose one-kernel variant has `tiles` workgroups and `steps` k steps
 * each: 1 (one kernel) on software adapters (CPU threads gain nothing, and their kernels must not change) and from
 * SPLIT_TILES tiles (or the tuning's splitTiles); else the ranges that bring the workgroups nearest twice that
 * (about two per multiprocessor), at most SPLIT_MAX, each range at least SPLIT_MIN_STEPS steps. Measured on the H200 (scripts/tune-sgmat.mjs, 2026-11-27, each against
 * 2 ranges in the same window): EVA-G fc2 in f32 (88 tiles) 1.49x / 1 / 0.69x / 0.80x the time with 1 / 2 / 3 / 4
 * ranges (the rule: 3); EVA-E fc2 (112 tiles) f32 1.52x / 1 / 1.04x / 1.05x and tensor cores 1.97x / 1 / 1.31x /
 * 1.06x (the rule: 2).
 */
export function defaultMatmulSplits(target: Target, tiles: number, steps: number): number {
  const fill = target.tuning?.splitTiles ?? SPLIT_TILES;
  if (softwareTarget(target) || tiles >= fill) return 1;
  return Math.max(1, Math.min(SPLIT_MAX, Math.round((2 * fill) / tiles), Math.floor(steps / SPLIT_MIN_STEPS)));
}

/**
 * K cut into at most `splits` ranges of whole steps of `step`, none empty (a K of few steps gets fewer ranges); the
 * last may reach past K, where its loads read zeros.
 */
export function kRanges(k: number, splits: number, step: number): KRange {
  if (!Number.isInteger(splits) || splits < 1 || splits > MAX_SPLITS) throw new Error(`matmul K split: ${splits} ranges asked for; it takes a whole number from 1 to ${MAX_SPLITS} (Target.tuning.matmulSplits)`);
  const len = Math.max(1, Math.ceil(Math.ceil(k / splits) / step)) * step;
  return { splits: Math.max(1, Math.ceil(k / len)), len };
}

/**
 * How many K ranges a matmul runs in (1: the one kernel): Target.tuning.matmulSplits when set, else
 * defaultMatmulSplits, for the tiled and sgmat variants; 1 where the ranges' workgroups or scratch would not fit
 * the target, and by default where the kernel sums a second product (the sum kernel's is unstaged).
 */
export function matmulSplits(node: Node, inputs: readonly Node[], target: Target, variant: MatmulVariant, reads: MatmulReads = DIRECT_READS, second = false, tiles?: SgmatTiles): number {
  if (variant !== 'tiled' && variant !== 'sgmat') return 1;
  const forced = target.tuning?.matmulSplits;
  if (forced === undefined && second) return 1;
  const grid = matmulGrid(node, inputs, target, variant, reads, tiles);
  const k = inputs[0].shape[inputs[0].shape.length - 1];
  const want = forced ?? defaultMatmulSplits(target, grid.rows * grid.cols, Math.ceil(k / grid.kStep));
  const { splits } = kRanges(k, want, grid.kStep);
  const L = target.limits;
  const bytes = splits * numel(node.shape) * 4;
  const fits = grid.rows * splits <= L.maxComputeWorkgroupsPerDimension ** 2 && bytes <= Math.min(L.maxStorageBufferBindingSize, L.maxBufferSize);
  return fits ? splits : 1;
}

/**
 * The two-kernel chain computing `node` (a matmul) with K in `splits` ranges (kRanges: maybe fewer), stored
 * through `out` (default: the product itself). `reads`, `views` and `tiles` as for matmulKernel.
 */
export function splitAcrossChain(
  node: Node,
  inputs: readonly Node[],
  target: Target,
  variant: 'tiled' | 'sgmat',
  splits: number,
  out: MatmulOutput = plainOutput(node),
  reads: MatmulReads = DIRECT_READS,
  views: OperandViews = [undefined, undefined],
  tiles?: SgmatTiles,
): KernelChain {
  const grid = matmulGrid(node, inputs, target, variant, reads, tiles);
  const range = kRanges(inputs[0].shape[inputs[0].shape.length - 1], splits, grid.kStep);
  const outs = numel(node.shape);
  const scratch: Scratch = { ref: PARTIALS, words: range.splits * outs, name: 'partials' };
  const partNode: Node = { ...node, id: PARTIALS, shape: [range.splits, ...node.shape] };
  const partial: MatmulOutput = { ...plainOutput(partNode), nodes: [node.id], kRange: range };
  const partials = matmulKernel(node, inputs, target, variant, partial, reads, views, tiles);
  return { kernels: [partials, sumKernel(out, partNode, range.splits, outs, target)], scratch: [scratch] };
}

/**
 * The chain for a matmul where matmulSplits picks more than one range, else undefined (the schedule then runs the
 * one kernel).
 */
export function matmulChain(node: Node, inputs: readonly Node[], target: Target, variant: MatmulVariant, out: MatmulOutput = plainOutput(node), reads: MatmulReads = DIRECT_READS, views: OperandViews = [undefined, undefined]): KernelChain | undefined {
  if (numel(node.shape) === 0 || (variant !== 'tiled' && variant !== 'sgmat')) return undefined;
  const splits = matmulSplits(node, inputs, target, variant, reads, !!out.second);
  return splits > 1 ? splitAcrossChain(node, inputs, target, variant, splits, out, reads, views) : undefined;
}

/**
 * The kernels computing a matmul: an f32 product's split onto the tensor cores where the tuning asks for it
 * (kernels/matmul-split16.ts), matmulChain's where it splits K, else the one kernel (a chain without scratch).
 */
export function matmulKernels(node: Node, inputs: readonly Node[], target: Target, variant: MatmulVariant, out: MatmulOutput = plainOutput(node), reads: MatmulReads = DIRECT_READS, views: OperandViews = [undefined, undefined]): KernelChain {
  if ((variant === 'tiled' || variant === 'blocked') && split16Unfit(node, inputs, target, out, reads, views) === undefined) return split16Chain(node, inputs, target, out, reads, views);
  return matmulChain(node, inputs, target, variant, out, reads, views) ?? { kernels: [matmulKernel(node, inputs, target, variant, out, reads, views)], scratch: [] };
}

/**
 * `matmul_ksum<R>_f32`: output element i is part[i] + part[i + outs] + ... in range order, then `out`'s store.
 * Bindings: the partials (`part`), `out`'s extra nodes, the output. A MatmulOutput names its extras as a
 * two-operand kernel binds them (in_2, in_3, ...): they keep those names at bindings 1, 2, ...
 */
export function sumKernel(out: MatmulOutput, partNode: Node, ranges: number, outs: number, target: Target): Kernel {
  const extras = out.extra;
  const node: Node = { ...out.node, inputs: [PARTIALS, ...extras.map((e) => e.id)] };
  const second = out.second;
  const n = out.node.shape[out.node.shape.length - 1];
  const lines = ['var acc = part[i];', ...Array.from({ length: ranges - 1 }, (_, s) => `acc = acc + part[i + ${u32Lit((s + 1) * outs)}];`)];
  if (second) {
    // One batch (a second product's plan guarantees it): row and column of the folded [M, N] output.
    lines.push(`let row = i / ${u32Lit(n)};`, `let col = i % ${u32Lit(n)};`, 'var acc2 = 0.0f;');
    lines.push(`for (var t = 0u; t < ${unboundedLoop(second.k, target)}; t++) {`, `  acc2 = fma(${second.a('row', 't')}, ${second.b('t', 'col')}, acc2);`, '}');
  }
  const store = out.store('acc', 'i', second ? 'acc2' : undefined);
  lines.push(store.length === 1 ? store[0] : storeBlock(store, '    '));
  const k = flatKernel(node, [partNode, ...extras], target, `matmul_ksum${ranges}_f32${out.suffix}`.slice(0, 96), lines.map((l) => `    ${l}`).join('\n'), { lib: out.lib, helpers: out.helpers });
  const generic = bindingDecls(1 + extras.length);
  if (!k.wgsl.includes(generic)) throw new Error(`internal: ${k.name} does not declare its bindings as makeKernel does`);
  const named = [
    '@group(0) @binding(0) var<storage, read> part: array<f32>;',
    ...extras.map((_, j) => `@group(0) @binding(${j + 1}) var<storage, read> in_${j + 2}: array<f32>;`),
    `@group(0) @binding(${extras.length + 1}) var<storage, read_write> out_0: array<f32>;`,
  ].join('\n');
  return { ...k, wgsl: k.wgsl.replace(generic, named), nodes: [...out.nodes] };
}
