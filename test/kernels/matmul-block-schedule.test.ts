// The tiled f32 matmul's bigger register blocks (Target.tuning.tiledTiles, kernels/matmul.ts) through whole
// schedules for hardware, on lavapipe: a fused epilogue (bias, GELU, a residual), a second product (LoRA), K split
// across workgroups (a partial-products kernel with K ranges, then the sum kernel), operands read through views, and
// random epilogue graphs with transposed reads. Every output equals the default 4x4 schedule's bit for bit here (the
// same K ranges, forced through matmulSplits: the default rule reads the tile count; on hardware, within the
// epilogues' compiler rounding: assertKernelsAgree) and the float64 reference within f32 tolerance.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import type { Staging } from '../../kernels/matmul.js';
import type { TiledTiles } from '../../kernels/matmul-tiled.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { buildEpilogueGraph, chainMismatch, transposedCaseArb } from '../codegen/matmul-graphs.js';
import { feeds } from '../passes/graphs.js';
import { fcParams, hardwareLike } from './core-util.js';
import { assertKernelsAgree, sharedDevice } from './harness.js';
import { linearGraph } from './matmul-products.js';

const B64: TiledTiles = { tm: 64, tn: 64, rows: 8, cols: 8 };
const B128x64: TiledTiles = { tm: 128, tn: 64, rows: 8, cols: 4 };
const B128: TiledTiles = { tm: 128, tn: 128, rows: 8, cols: 8 };


/** Head merge then a projection (x [B,H,T,D] → [B,T,H·D] @ Wᵀ + bias): a read through a view, b transposed. */
function headMerge(t: number, d: number, e: number): Graph {
  const b = new Builder();
  const rows = b.add('reshape', [b.add('permute', [b.input('x', [2, 3, t, d])], { dims: [0, 2, 1, 3] })], { shape: [2, t, 3 * d] });
  b.output('y', b.add('add', [b.add('matmul', [rows, b.add('permute', [b.param('w', [e, 3 * d])], { dims: [1, 0] })]), b.param('bias', [e])]));
  return b.graph;
}

/** A batched product of a slice and a permute: both operands through views. */
function sliceTimesPermute(t: number, d: number, e: number): Graph {
  const b = new Builder();
  const a = b.add('slice', [b.input('a', [2, t + 3, d])], { dim: 1, start: 2, end: t + 2 });
  b.output('y', b.add('matmul', [a, b.add('permute', [b.input('b', [e, 2, d])], { dims: [1, 2, 0] })]));
  return b.graph;
}

describe('on the device', () => {
  const device = sharedDevice();

  /**
   * `graph` scheduled for hardware under `tuning` with and without `tiles`: the block schedule runs kernels matching
   * `expect` and no default tiled kernel, its outputs are the default's (assertKernelsAgree: bit for bit on lavapipe)
   * and the reference's within f32.
   */
  async function blockAgrees(graph: Graph, k: number, tiles: TiledTiles, tuning: Target['tuning'], expect: readonly RegExp[], seed: number): Promise<void> {
    const base = hardwareLike({ ...device().target, tuning: { matmulSplits: 1, ...tuning } });
    const block = compileGpu(graph, { ...base, tuning: { ...base.tuning, tiledTiles: tiles } });
    const names = block.schedule.kernels.map((x) => x.name);
    for (const e of expect) assert.ok(names.some((n) => e.test(n)), `${e}: ${names.join(', ')}`);
    assert.ok(!names.some((n) => /^matmul_tiled_f32(?!_b)/.test(n)), `the default tiles are gone: ${names.join(', ')}`);
    const f = feeds(graph, seed, false);
    const got = await runGpu(device(), graph, block, f.inputs, f.params);
    const want = await runGpu(device(), graph, compileGpu(graph, base), f.inputs, f.params);
    for (const [name, x] of want) {
      const y = got.get(name);
      assert.ok(y, `output ${name} is missing`);
      assertKernelsAgree(device().target, y.data, x.data, `${names.join(', ')}: ${name}`, k);
    }
    const m = chainMismatch(graph, f, got, k);
    assert.equal(m, undefined, `${names.join(', ')}: ${m}`);
  }

  test('an epilogue (bias, GELU, a residual): 8x8 blocks of 64x64 (K split in 2) and 128x128 = the 4x4 schedule', async () => {
    const g = linearGraph(64, 250, 70, false);
    await blockAgrees(g, 250, B64, { tiledKSplit: 2 }, [/^matmul_tiled_f32_b8x8_64x64_k2_bt\+add_gelu_add$/], 1);
    await blockAgrees(g, 250, B128, {}, [/^matmul_tiled_f32_b8x8_128x128_bt\+add_gelu_add$/], 2);
  });

  test('a second product (LoRA) in the kernel, with unrolled and looped staging', async () => {
    const g = linearGraph(64, 250, 70, true);
    await blockAgrees(g, 250, B64, { tiledStaging: 'unrolled' }, [/^matmul_tiled_f32_b8x8_64x64_bt\+mm\+/], 3);
    await blockAgrees(g, 250, B128x64, { tiledStaging: 'loop' }, [/^matmul_tiled_f32_b8x4_128x64_bt\+mm\+/], 4);
  });

  test('K split across workgroups: the partial products in blocks, then the sum kernel and its epilogue', async () => {
    const g = linearGraph(64, 250, 70, false);
    await blockAgrees(g, 250, B64, { matmulSplits: 3 }, [/^matmul_tiled_f32_b8x8_64x64_ks3_bt$/, /^matmul_ksum3_f32\+add_gelu_add$/], 5);
    await blockAgrees(g, 250, B128x64, { matmulSplits: 2, tiledKSplit: 2 }, [/^matmul_tiled_f32_b8x4_128x64_k2_ks2_bt$/, /^matmul_ksum2_f32\+add_gelu_add$/], 6);
  });

  test('operands through views: a head merge, a slice and a permute', async () => {
    await blockAgrees(headMerge(70, 40, 130), 120, B64, {}, [/^matmul_tiled_f32_b8x8_64x64_av_bt\+add$/], 7);
    await blockAgrees(sliceTimesPermute(90, 80, 150), 80, B128x64, {}, [/^matmul_tiled_f32_b8x4_128x64_av_bv$/], 8);
  });

  test('random epilogue graphs with transposed reads: every block and staging = the 4x4 schedule', async () => {
    await fc.assert(
      fc.asyncProperty(
        transposedCaseArb(['tiled'], 3),
        fc.integer({ min: 1, max: 1e6 }),
        fc.constantFrom(B64, B128x64, B128),
        fc.constantFrom<Staging>('loop', 'unrolled', 'prefetch'),
        fc.constantFrom(1, 3),
        async (c, seed, tiles, how, splits) => {
          const { graph } = buildEpilogueGraph(c);
          await blockAgrees(graph, c.k, tiles, { tiledStaging: how, matmulSplits: splits }, [new RegExp(`^matmul_tiled_f32_b${tiles.rows}x${tiles.cols}_${tiles.tm}x${tiles.tn}`)], seed);
        },
      ),
      fcParams(3, 4242),
    );
  });
});
