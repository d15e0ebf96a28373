// Helpers for the core-op kernel tests: fast-check arbitraries for small shapes and broadcasting, run
// counts, and Targets that steer the generators onto their other code paths.
import fc from 'fast-check';
import type { Target } from '../../compiler/codegen/types.js';
import { numel } from '../../compiler/ir/graph.js';

/** fast-check runs for a property: `n`, scaled by VISFT_KERNEL_RUNS_SCALE (default 1). lavapipe compiles every new shape. */
export function runs(n: number): number {
  const scale = Number(process.env.VISFT_KERNEL_RUNS_SCALE ?? 1);
  return Math.max(1, Math.round(n * scale));
}

/** A fixed seed per property unless FC_SEED is set, so a CI failure reproduces. */
export function fcParams(n: number, seed: number): fc.Parameters<unknown> {
  const env = process.env.FC_SEED;
  return { numRuns: runs(n), seed: env !== undefined ? Number(env) : seed, endOnFailure: true };
}

/** A shape of rank [minRank, maxRank] with dims in [1, maxDim] and fewer than `maxElems` elements. */
export function shapeArb(minRank = 0, maxRank = 4, maxDim = 7, maxElems = 2000): fc.Arbitrary<number[]> {
  return fc.array(fc.integer({ min: 1, max: maxDim }), { minLength: minRank, maxLength: maxRank }).filter((s) => numel(s) < maxElems);
}

/** Two shapes that broadcast to an output shape (NumPy): leading dims dropped, some dims set to 1. */
export function broadcastPairArb(maxRank = 4, maxDim = 6): fc.Arbitrary<[number[], number[]]> {
  return shapeArb(0, maxRank, maxDim, 1500).chain((out) =>
    fc
      .tuple(
        fc.integer({ min: 0, max: out.length }),
        fc.integer({ min: 0, max: out.length }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: out.length, maxLength: out.length }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: out.length, maxLength: out.length }),
      )
      .map(([da, db, ma, mb]) => {
        // 0: keep, 1: size 1 in a, 2: size 1 in b (never both, so the output keeps its size)
        const a = out.map((s, i) => (ma[i] === 1 ? 1 : s)).slice(da);
        const b = out.map((s, i) => (mb[i] === 2 && ma[i] !== 1 ? 1 : s)).slice(db);
        return [a, b] as [number[], number[]];
      }),
  );
}

/** The device's target as a hardware adapter would be described: tree reductions and unrolled loops. */
export function hardwareLike(t: Target): Target {
  return { ...t, name: `${t.name} (as hardware)`, isFallbackAdapter: false };
}

/**
 * A target with tiny limits (below WebGPU's guaranteed ones, to exercise the generators' limit handling): 64
 * invocations, 4 KiB of workgroup memory, at most 3 workgroups per dispatch dimension.
 */
export function tightTarget(t: Target): Target {
  return {
    ...t,
    name: 'tight',
    limits: {
      ...t.limits,
      maxComputeInvocationsPerWorkgroup: 64,
      maxComputeWorkgroupSizeX: 64,
      maxComputeWorkgroupSizeY: 64,
      maxComputeWorkgroupSizeZ: 64,
      maxComputeWorkgroupStorageSize: 4096,
      maxComputeWorkgroupsPerDimension: 3,
    },
  };
}
