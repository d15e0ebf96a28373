// The GPU side of a bundle: the Target a kernel is generated for, and the kernel graph (WGSL kernels over
// buffers holding IR values) that the memory plan places and the runtime executes in order.
import type { FlashCaps } from '../../kernels/flash-common.js';
import type { DirectKeys } from '../../kernels/flash-direct-common.js';
import type { FlashSgmatTiles } from '../../kernels/flash-sgmat.js';
import type { SgmatTiles } from '../../kernels/matmul-sgmat.js';
import type { Staging } from '../../kernels/matmul.js';
import type { TiledTiles } from '../../kernels/matmul-tiled.js';
import type { GradValueVariant } from '../../kernels/msdeform-value-grad.js';
import type { Node } from '../ir/graph.js';

/** What codegen may rely on, read from the adapter (runtime/gpu/target.ts) or a named default. */
export interface Target {
  readonly name: string;
  readonly isFallbackAdapter: boolean;
  /** WebGPU features (`shader-f16`, `subgroups`, `timestamp-query`, ...). */
  readonly features: readonly string[];
  readonly subgroupMinSize: number;
  readonly subgroupMaxSize: number;
  /** Subgroup-matrix (tensor core) shapes the adapter reports; empty when none. */
  readonly subgroupMatrixConfigs: readonly { componentType: string; resultComponentType: string; M: number; N: number; K: number }[];
  /**
   * How the subgroup-matrix builtins spell a layout: 'template' (`subgroupMatrixLoad<T, row_major>(p, offset,
   * stride)`, current Dawn; the default) or 'argument' (a bool argument, the first Chrome releases). The device probe
   * (runtime/gpu/tensor-core-probe.ts) picks the one the driver's Dawn accepts.
   */
  readonly subgroupMatrixSpelling?: 'template' | 'argument';
  /** Invocations per emulated subgroup (kernels/sgmat.ts; default 4): tests set it to run a native lane count's code paths. */
  readonly emulatedLanes?: number;
  /**
   * Choices forced for every kernel of a kind, by a tuning run (scripts/tune-sgmat.mjs) or a test; absent normally.
   * `tensorCoreAttention` turns on the subgroup-matrix flash kernels, which are off by default (kernels/attention.ts).
   * `matmulSplits` splits K across that many sets of workgroups in every tiled and sgmat matmul of the schedule (1:
   * never; kernels/matmul-split-across.ts, which otherwise decides per shape).
   */
  readonly tuning?: {
    readonly sgmatTiles?: SgmatTiles;
    /**
     * The tensor-core matmul loads its fragments straight from the f16 operands in storage (no staging through
     * workgroup memory, no barriers in its K loop; kernels/matmul-sgmat-direct.ts) where it can. Unmeasured.
     */
    readonly sgmatDirect?: boolean;
    /**
     * f32 matmuls on the f16 tensor cores at f32 accuracy: operands split into f16 pairs, three products per step
     * (kernels/matmul-split16.ts), where the target has subgroup matrices. Unmeasured.
     */
    readonly f32TensorCores?: boolean;
    readonly flashSgmatTiles?: FlashSgmatTiles;
    readonly tiledStaging?: Staging;
    readonly tiledKSplit?: 1 | 2;
    /**
     * The tiled f32 matmul's output tile and each invocation's block (kernels/matmul-tiled.ts TiledTiles; default 64x64
     * of 4x4): 8x8 blocks load fewer staged vec4s per FMA; the sums are the default's bit for bit. On the H200 8x4
     * blocks of 64x64 won (0.85–1.01x the time; its shipped profile), 8x8 lost on EVA-G shapes (docs/perf.md).
     */
    readonly tiledTiles?: TiledTiles;
    /**
     * false: staged matmul operands and the f32 flash kernels' rows load one element at a time instead of vec4s
     * (kernels/matmul.ts vectorLoads, kernels/flash-common.ts withVectorReads).
     */
    readonly vectorLoads?: boolean;
    readonly tensorCoreAttention?: boolean;
    /**
     * The tensor-core flash forward that loads q, k and v's fragments from their f16 storage (kernels/flash-direct.ts)
     * where it applies (no mask, no views, head dims multiples of 8). Unmeasured.
     */
    readonly flashDirect?: boolean;
    /**
     * The tensor-core flash backward (dq, and dk with dv) that loads q, k, v and g's fragments from their f16 storage
     * (kernels/flash-direct-backward.ts) where it applies (no mask, no views, head dims multiples of 8). Unmeasured.
     */
    readonly flashDirectGrad?: boolean;
    /**
     * f32 attention forwards on the f16 tensor cores at f32 accuracy: q, k, v split into f16 pairs, three products
     * per step (kernels/flash-split16.ts), where the target has subgroup matrices. Unmeasured.
     */
    readonly f32AttentionTensorCores?: boolean;
    /**
     * f32 attention backwards (dq, dk with dv) on the f16 tensor cores at f32 accuracy: q, k, v, g split by rows into
     * f16 pairs, dS and P split under a-priori bounds (kernels/flash-split16.ts). Unmeasured.
     */
    readonly f32AttentionGradTensorCores?: boolean;
    /** Swept rows per tile of the direct flash kernels (kernels/flash-direct-common.ts; default 16). */
    readonly flashDirectKeys?: DirectKeys;
    readonly matmulSplits?: number;
    /**
     * Output tiles from which a matmul fills the GPU without splitting K (about its multiprocessor count; default
     * kernels/matmul-split-across.ts SPLIT_TILES, an H100/H200's): the default K ranges aim at twice as many workgroups.
     */
    readonly splitTiles?: number;
    /**
     * Workgroups that fill the GPU: an f32 flash kernel (the forward, dq, dk and dv) with fewer splits its swept side
     * (keys; queries for dk and dv) into chunks, one grid of workgroups each, combined by a second kernel
     * (kernels/flash-sweep-split.ts), so that its grids reach this many. Unset: never split. Unmeasured.
     */
    readonly flashSweepSplit?: number;
    /**
     * The split lanes of an f32 flash kernel's row share its exponentials (kernels/flash-common.ts laneValuesCode):
     * each lane computes 1/split of them and takes the rest by subgroup shuffles, the same bits. Unmeasured.
     */
    readonly flashShareExp?: boolean;
    /** Caps on the f32 flash kernels' tiles (kernels/flash-common.ts chooseRowTiles), under a caller's own. */
    readonly flashCaps?: FlashCaps;
    /** Caps on the f32 flash gradient kernels' tiles in place of flashCaps (which they follow when this is unset). */
    readonly flashGradCaps?: FlashCaps;
    /** The register-blocked f32 flash forward (kernels/flash-blocked.ts) where it applies (no mask, subgroups). H200: 1.08–1.43x the time. */
    readonly flashBlocked?: boolean;
    /** The register-blocked f32 flash dq and dk+dv kernels (kernels/flash-blocked-backward.ts) where they apply (no mask). H200: 1.4–1.5x the time. */
    readonly flashBlockedGrad?: boolean;
    /** How MSDeformAttn's value gradient runs (kernels/msdeform-value-grad.ts; default `indexed`). */
    readonly msdeformValueGrad?: GradValueVariant;
    /**
     * Workgroups per pixel block of the `indexed` value gradient, each summing a slice of the block's points (1:
     * never split): one number for every level, or one per level (kernels/msdeform-value-grad.ts gradValueSplits).
     */
    readonly msdeformSplits?: number | readonly number[];
  };
  readonly limits: {
    readonly maxStorageBufferBindingSize: number;
    readonly maxBufferSize: number;
    readonly minStorageBufferOffsetAlignment: number;
    readonly maxComputeWorkgroupStorageSize: number;
    readonly maxComputeInvocationsPerWorkgroup: number;
    readonly maxComputeWorkgroupSizeX: number;
    readonly maxComputeWorkgroupSizeY: number;
    readonly maxComputeWorkgroupSizeZ: number;
    readonly maxComputeWorkgroupsPerDimension: number;
    readonly maxStorageBuffersPerShaderStage: number;
  };
}

/** WebGPU's guaranteed limits: a target every adapter satisfies (the default for `visft compile`). */
export const PORTABLE_TARGET: Target = {
  name: 'portable',
  isFallbackAdapter: false,
  features: [],
  subgroupMinSize: 4,
  subgroupMaxSize: 128,
  subgroupMatrixConfigs: [],
  limits: {
    maxStorageBufferBindingSize: 134217728,
    maxBufferSize: 268435456,
    minStorageBufferOffsetAlignment: 256,
    maxComputeWorkgroupStorageSize: 16384,
    maxComputeInvocationsPerWorkgroup: 256,
    maxComputeWorkgroupSizeX: 256,
    maxComputeWorkgroupSizeY: 256,
    maxComputeWorkgroupSizeZ: 64,
    maxComputeWorkgroupsPerDimension: 65535,
    maxStorageBuffersPerShaderStage: 8,
  },
};

/** One compute kernel: WGSL with entry point `main`, storage bindings in @group(0) @binding(i) order. */
export interface Kernel {
  /** Stable, descriptive: `matmul_tiled_f32`, `fused_ew_3`. Names the kernel in errors and profiles. */
  readonly name: string;
  readonly wgsl: string;
  readonly workgroupSize: readonly [number, number, number];
  readonly dispatch: readonly [number, number, number];
  /** The IR values bound, in binding order: inputs (read) then the output(s) (read_write). */
  readonly bindings: readonly { readonly value: number; readonly access: 'read' | 'read_write' }[];
  /** The IR nodes this kernel computes; the last writes its output, others are fused in. */
  readonly nodes: readonly number[];
  /**
   * Bindings this kernel reads only as f16 storage (the tensor-core matmul that loads fragments straight from its
   * operands, kernels/matmul-sgmat-direct.ts), with the kernel to run instead where the schedule stores one of
   * them as f32 (compiler/codegen/half.ts). The schedule resolves it; no finished schedule has it.
   */
  readonly halfOnly?: { readonly bindings: readonly number[]; readonly fallback: Kernel };
}

/**
 * A kernel generator for one IR op (unfused): given the node and its input nodes, the WGSL and dispatch
 * that compute the node's value from its inputs' buffers. Values are contiguous row-major f32 arrays
 * (integers stored as f32, exact up to 2^24). Bindings: inputs in order (read), then the output (read_write).
 */
export type KernelGen = (node: Node, inputs: readonly Node[], target: Target) => Kernel;

/**
 * Storage that the kernels of one chain pass between them (counts, offsets, an index, partial sums): `words`
 * 4-byte elements of any type (the WGSL declares it array<u32>, array<i32> or array<f32>), never read before one
 * of the chain's kernels writes it. Kernels bind it by `ref`, a negative placeholder (-1, -2, ...) that the
 * schedule replaces with a value id of its own; the memory plan places it like any temporary.
 */
export interface Scratch {
  readonly ref: number;
  readonly words: number;
  /** What it holds, for dumps and errors: `counts`, `offsets`. */
  readonly name: string;
}

/** Kernels that compute one node, run in order: the last writes the node's value, the others fill scratch values. */
export interface KernelChain {
  readonly kernels: readonly Kernel[];
  readonly scratch: readonly Scratch[];
}

/** A chain generator for one IR op: like KernelGen, for an op that needs several passes over global memory. */
export type ChainGen = (node: Node, inputs: readonly Node[], target: Target) => KernelChain;

/**
 * How an op runs on the GPU: a generated kernel, a chain of kernels through scratch values, an alias of its
 * input's buffer (reshape), or no kernel (leaves).
 */
export type GpuRule =
  | { readonly kind: 'kernel'; readonly gen: KernelGen }
  | { readonly kind: 'chain'; readonly gen: ChainGen }
  | { readonly kind: 'alias' }
  | { readonly kind: 'leaf' };
