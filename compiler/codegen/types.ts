// The GPU side of a bundle: the Target a kernel is generated for, and the kernel graph (WGSL kernels over
// buffers holding IR values) that the memory plan places and the runtime executes in order.
import type { FlashSgmatTiles } from '../../kernels/flash-sgmat.js';
import type { SgmatTiles } from '../../kernels/matmul-sgmat.js';
import type { Staging } from '../../kernels/matmul.js';
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
  /**
   * Choices forced for every kernel of a kind, by a tuning run (scripts/tune-sgmat.mjs) or a test; absent normally.
   * `tensorCoreAttention` turns on the subgroup-matrix flash kernels, which are off by default (kernels/attention.ts).
   */
  readonly tuning?: {
    readonly sgmatTiles?: SgmatTiles;
    readonly flashSgmatTiles?: FlashSgmatTiles;
    readonly tiledStaging?: Staging;
    readonly tiledKSplit?: 1 | 2;
    readonly tensorCoreAttention?: boolean;
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
}

/**
 * A kernel generator for one IR op (unfused): given the node and its input nodes, the WGSL and dispatch
 * that compute the node's value from its inputs' buffers. Values are contiguous row-major f32 arrays
 * (integers stored as f32, exact up to 2^24). Bindings: inputs in order (read), then the output (read_write).
 */
export type KernelGen = (node: Node, inputs: readonly Node[], target: Target) => Kernel;

/** How an op runs on the GPU: a generated kernel, an alias of its input's buffer (reshape), or no kernel (leaves). */
export type GpuRule = { readonly kind: 'kernel'; readonly gen: KernelGen } | { readonly kind: 'alias' } | { readonly kind: 'leaf' };
