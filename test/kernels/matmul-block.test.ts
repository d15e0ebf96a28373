// Bigger register blocks for the tiled f32 matmul (kernels/matmul.ts, Target.tuning.tiledTiles): 8x8 (or 8x4, 4x8)
// outputs per invocation in 64x64, 128x64, 64x128 or 128x128 tiles. Each output still sums k in the default
// kernel's order (fma per k, the same 16-deep steps, the same halves when K is split inside the workgroup), so on
// lavapipe every block equals the default 4x4 kernel bit for bit, and the float64 reference within f32 tolerance —
// for ragged M, N, K, transposed reads, batches (broadcast too), each staging with and without vec4 loads, and K
// split inside the workgroup. Without the option, or with the default's tiles, the kernels are the default's.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { numel } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { matmulGrid, matmulKernel, type MatmulReads, type Staging } from '../../kernels/matmul.js';
import { TiledTilesError, type TiledTiles } from '../../kernels/matmul-tiled.js';
import { fcParams } from './core-util.js';
import { assertBitwise, matmulMismatch, randomTensor, runKernel, sharedDevice } from './harness.js';
import { product } from './matmul-products.js';

const H200 = TARGETS['nvidia-h200'];
const B64: TiledTiles = { tm: 64, tn: 64, rows: 8, cols: 8 };
const B128x64: TiledTiles = { tm: 128, tn: 64, rows: 8, cols: 4 };
const B64x128: TiledTiles = { tm: 64, tn: 128, rows: 4, cols: 8 };
const B128: TiledTiles = { tm: 128, tn: 128, rows: 8, cols: 8 };


const withTuning = (t: Target, tuning: Target['tuning']): Target => ({ ...t, tuning: { ...t.tuning, ...tuning } });

test('tiledTiles: a bad value is refused with the key; the default tiles give the default kernel', () => {
  const { node, inputs } = product([], [], 70, 40, 66, [false, false]);
  for (const bad of [{ tm: 32, tn: 64, rows: 4, cols: 4 }, { tm: 64, tn: 64, rows: 2, cols: 4 }, { tm: 64, tn: 96, rows: 8, cols: 8 }, { tm: 64, tn: 64, rows: 8 }, { tm: 64, tn: 64, rows: 8, cols: 8, tk: 24 }]) {
    assert.throws(() => matmulKernel(node, inputs, withTuning(H200, { tiledTiles: bad as TiledTiles }), 'tiled'), (e: unknown) => e instanceof TiledTilesError && /Target\.tuning\.tiledTiles/.test(e.message), JSON.stringify(bad));
  }
  const plain = matmulKernel(node, inputs, H200, 'tiled');
  const forced = matmulKernel(node, inputs, withTuning(H200, { tiledTiles: { tm: 64, tn: 64, rows: 4, cols: 4 } }), 'tiled');
  assert.equal(forced.name, 'matmul_tiled_f32');
  assert.equal(forced.wgsl, plain.wgsl);
  assert.deepEqual(forced.workgroupSize, [16, 16, 1]);
});

test('names, workgroups and the grid follow the tiles; K steps 16 deep, or 32 as asked; a tile the target cannot hold is refused', () => {
  const { node, inputs } = product([3], [3], 130, 100, 200, [false, true]);
  const cases: [TiledTiles, string, number[], [number, number]][] = [
    [B64, 'matmul_tiled_f32_b8x8_64x64_bt', [8, 8, 1], [3 * 3, 4]],
    [B128x64, 'matmul_tiled_f32_b8x4_128x64_bt', [16, 16, 1], [2 * 3, 4]],
    [B64x128, 'matmul_tiled_f32_b4x8_64x128_bt', [16, 16, 1], [3 * 3, 2]],
    [B128, 'matmul_tiled_f32_b8x8_128x128_bt', [16, 16, 1], [2 * 3, 2]],
    [{ ...B128x64, tk: 32 }, 'matmul_tiled_f32_b8x4_128x64_d32_bt', [16, 16, 1], [2 * 3, 4]],
    [{ tm: 64, tn: 64, rows: 4, cols: 4, tk: 32 }, 'matmul_tiled_f32_b4x4_64x64_d32_bt', [16, 16, 1], [3 * 3, 4]],
  ];
  for (const [tiles, name, wg, [rows, cols]] of cases) {
    const t = withTuning(H200, { tiledTiles: tiles });
    const k = matmulKernel(node, inputs, t, 'tiled', undefined, [false, true]);
    assert.equal(k.name, name);
    assert.deepEqual(k.workgroupSize, wg, name);
    assert.equal(k.dispatch[0], cols, `${name}: N tiles`);
    assert.equal(k.dispatch[1] * k.dispatch[2], rows, `${name}: M tiles x batch`);
    const tk = tiles.tk ?? 16;
    assert.deepEqual(matmulGrid(node, inputs, t, 'tiled', [false, true]), { rows, cols, kStep: tk }, name);
    // Two halves where their tiles fit the H200's 48 KiB: all but 32-deep 128x64 tiles (2 x 24.5 KiB).
    const halves = /_k2/.test(matmulKernel(node, inputs, withTuning(t, { tiledKSplit: 2 }), 'tiled', undefined, [false, true]).name) ? 2 : 1;
    assert.equal(halves, tiles.tk === 32 && tiles.tm === 128 ? 1 : 2, name);
    assert.deepEqual(matmulGrid(node, inputs, withTuning(t, { tiledKSplit: 2 }), 'tiled', [false, true]), { rows, cols, kStep: halves * tk }, `${name}, K split in 2`);
    assert.match(k.wgsl, new RegExp(`for \\(var kk = 0u; kk < ${tk}u; kk\\+\\+\\)`), `${name}: ${tk}-deep steps`);
  }
  // 128x128 tiles: 16640 bytes of workgroup memory, over WebGPU's guaranteed 16384; split in two, over lavapipe's 32768.
  assert.throws(() => matmulKernel(node, inputs, withTuning(TARGETS.portable, { tiledTiles: B128 }), 'tiled'), /128x128 tile needs 256 invocations \(16x16\) and 16640 bytes/);
  const lavapipe = withTuning(TARGETS.lavapipe, { tiledTiles: B128, tiledKSplit: 2 });
  assert.equal(matmulKernel(node, inputs, lavapipe, 'tiled').name, 'matmul_tiled_f32_b8x8_128x128', 'no room for two halves: one');
  assert.equal(matmulGrid(node, inputs, lavapipe, 'tiled').kStep, 16);
  // On the H200 the halves fit; their 16 accumulators pass through the tiles in two rounds.
  const split = matmulKernel(node, inputs, withTuning(H200, { tiledTiles: B128, tiledKSplit: 2 }), 'tiled');
  assert.equal(split.name, 'matmul_tiled_f32_b8x8_128x128_k2');
  assert.equal(split.wgsl.match(/if \(h == 1u\) \{\n/g)?.length, 2, 'two rounds');
  // 8x4 blocks of 128x64 split on lavapipe (the device tests run it): 8 accumulators, 6 slots, two rounds.
  const tall = matmulKernel(node, inputs, withTuning(TARGETS.lavapipe, { tiledTiles: B128x64, tiledKSplit: 2 }), 'tiled');
  assert.equal(tall.name, 'matmul_tiled_f32_b8x4_128x64_k2');
  assert.equal(tall.wgsl.match(/if \(h == 1u\) \{\n/g)?.length, 2, 'two rounds');
});

test('each k step: the block loads gm + gn staged vec4s for rows x cols FMAs', () => {
  const { node, inputs } = product([], [], 130, 100, 200, [false, false]);
  const inner = (tiles: TiledTiles | undefined) => {
    const w = matmulKernel(node, inputs, tiles ? withTuning(H200, { tiledTiles: tiles }) : H200, 'tiled').wgsl;
    const body = w.slice(w.indexOf('for (var kk'), w.indexOf('}', w.indexOf('for (var kk')));
    return [(body.match(/= tile_[ab]\[/g) ?? []).length, (body.match(/fma\(/g) ?? []).length];
  };
  assert.deepEqual(inner(undefined), [2, 4], 'default: 2 vec4 loads per 4 vec4 FMAs (16 FMAs)');
  assert.deepEqual(inner(B64), [4, 16], '8x8: 4 per 16 vec4 FMAs (64 FMAs)');
  assert.deepEqual(inner(B128x64), [3, 8], '8x4: 3 per 8');
});

describe('on the device', () => {
  const device = sharedDevice();

  const reference = (graph: ReturnType<typeof product>['graph'], values: readonly Float32Array[]) =>
    interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: graph.node(inp.node).shape, data: Float64Array.from(values[i]) }]))).get('y')!;

  /**
   * Runs the block's kernel and the default's under `tuning`: equal bit for bit, and the reference within tolerance.
   * Where the block has no room for a K split that the default takes, it is compared with the default unsplit.
   */
  async function agree(p: ReturnType<typeof product>, reads: MatmulReads, values: Float32Array[], k: number, tiles: TiledTiles, tuning: Target['tuning'], what: string): Promise<void> {
    const base = withTuning(device().target, tuning);
    const block = matmulKernel(p.node, p.inputs, withTuning(base, { tiledTiles: tiles }), 'tiled', undefined, reads);
    const halves = /_k2/.test(block.name) ? {} : { tiledKSplit: 1 as const };
    const plain = matmulKernel(p.node, p.inputs, withTuning(base, halves), 'tiled', undefined, reads);
    assert.equal(/_k2/.test(plain.name), /_k2/.test(block.name), `${what}: ${block.name} vs ${plain.name}`);
    assert.match(block.name, new RegExp(`^matmul_tiled_f32_b${tiles.rows}x${tiles.cols}_${tiles.tm}x${tiles.tn}`), what);
    const got = await runKernel(device().device, block, values, numel(p.node.shape));
    assertBitwise(got, await runKernel(device().device, plain, values, numel(p.node.shape)), `${what}: ${block.name} vs ${plain.name}`);
    const ref = reference(p.graph, values);
    assert.equal(matmulMismatch(new Map([['y', ref]]), new Map([['y', { shape: ref.shape, data: Float64Array.from(got) }]]), k), undefined, what);
  }

  // [batch of a, batch of b, M, K, N, transposed reads, tiles, stagings (each also with K split in 2)]
  const CASES: [number[], number[], number, number, number, MatmulReads, TiledTiles, Staging[]][] = [
    [[2], [], 70, 45, 76, [false, false], B64, ['loop', 'unrolled', 'prefetch']], // the batch folds into M; vec4 loads of b
    [[2, 1], [3], 20, 36, 70, [false, true], B128x64, ['loop', 'prefetch']], // broadcast batches [2, 3]; b transposed, vec4 along K
    [[], [], 130, 33, 140, [true, true], B128, ['loop', 'prefetch']], // M and N past 128, K = 2 steps + 1; no room for a split
    [[3], [3], 17, 100, 66, [true, false], B64x128, ['loop', 'unrolled']], // batched, a transposed
    [[2], [], 70, 75, 76, [false, true], { ...B128x64, tk: 32 }, ['loop', 'prefetch']], // 32-deep steps: K = 2 steps + 11
  ];
  for (const [ba, bb, m, k, n, reads, tiles, stagings] of CASES) {
    const label = `[${ba}] ${m}x${k} @ [${bb}] ${k}x${n}, transposed reads ${reads}, ${tiles.rows}x${tiles.cols} blocks of ${tiles.tm}x${tiles.tn}`;
    test(`${label}: = the 4x4 kernel bit for bit (${stagings.join(', ')}, K split in 2), = the reference`, async () => {
      const p = product(ba, bb, m, k, n, reads);
      const values = p.graph.inputs.map((inp, i) => randomTensor(p.graph.node(inp.node).shape, 31 * i + m + k + n).data);
      for (const how of stagings) await agree(p, reads, values, k, tiles, { tiledStaging: how }, `${label}, ${how}`);
      await agree(p, reads, values, k, tiles, { tiledStaging: stagings[stagings.length - 1], tiledKSplit: 2 }, `${label}, K split in 2`);
    });
  }

  test('scalar operand loads with prefetched staging: = the 4x4 kernel bit for bit', async () => {
    const p = product([], [], 66, 40, 68, [false, false]);
    const values = p.graph.inputs.map((inp, i) => randomTensor(p.graph.node(inp.node).shape, 3 + i).data);
    await agree(p, [false, false], values, 40, B64, { tiledStaging: 'prefetch', vectorLoads: false }, 'scalar loads');
  });

  test('random shapes (ragged, transposed reads, batches): every block = the 4x4 kernel bit for bit', async () => {
    const tilesArb = fc.constantFrom<TiledTiles>(B64, B128x64, B64x128, B128, { ...B64, tk: 32 }, { ...B128x64, tk: 32 });
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 140 }),
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 1, max: 140 }),
        fc.constantFrom<number[]>([], [2]),
        fc.tuple(fc.boolean(), fc.boolean()),
        tilesArb,
        async (m, k, n, batch, reads, tiles) => {
          const p = product(batch, batch, m, k, n, reads);
          const values = p.graph.inputs.map((inp, i) => randomTensor(p.graph.node(inp.node).shape, 7 * i + m * k + n).data);
          await agree(p, reads, values, k, tiles, { tiledStaging: 'loop' }, `[${batch}] ${m}x${k}x${n}, reads ${reads}`);
        },
      ),
      fcParams(4, 8808),
    );
  });
});
