// Vec4 loads of matmul operands (kernels/matmul.ts vectorOperands, vectorLoads): with unrolled or prefetched
// staging (hardware's default), an operand whose contiguous dim and batch offsets are multiples of 4 is read one
// vec4 at a time and declared `array<vec4<f32>>` (`array<vec4<f16>>` where it is stored as f16). The loads change,
// not the sums: the kernels equal the scalar-load ones bit for bit, and the float64 reference — tiled and
// subgroup-matrix (emulated on lavapipe), plain and transposed reads, batches, tile edges, K splits.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { matmulKernel, vectorOperands, type MatmulReads } from '../../kernels/matmul.js';
import { nativeSgmat } from '../../kernels/sgmat.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { hardwareLike } from './core-util.js';
import { assertBitwise, matmulMismatch, randomTensor, runKernel, scheduledProgram, sharedDevice } from './harness.js';
import { deviceSgmatTarget } from './sgmat-targets.js';
import { product } from './matmul-products.js';


const declared = (wgsl: string): boolean[] => [0, 1].map((i) => new RegExp(`in_${i}: array<vec4<f(32|16)>>`).test(wgsl));

test('which operands load vec4s: the contiguous dim, the batch offsets and the tile along it in whole vec4s; no views or second products', () => {
  const t = { tm: 64, tn: 64, tk: 16 };
  const dims = (m: number, k: number, n: number, transA = false, transB = false, aStrides: number[] = [], bStrides: number[] = []) => ({ m, k, n, batchShape: [], batch: 1, aStrides, bStrides, transA, transB });
  assert.deepEqual(vectorOperands(dims(70, 36, 66), t), [true, false], 'K % 4 for a, N % 4 for b');
  assert.deepEqual(vectorOperands(dims(70, 36, 64, true, true), t), [false, true], 'transposed: M for a, K for b');
  assert.deepEqual(vectorOperands(dims(64, 36, 64, false, false, [6], [0]), t), [false, true], 'a batch offset not a multiple of 4');
  assert.deepEqual(vectorOperands(dims(64, 36, 64), { tm: 64, tn: 64, tk: 2 }), [false, true], 'a tile of 2 along K');
  assert.deepEqual(vectorOperands({ ...dims(64, 36, 64), viewA: (r: string, c: string) => `f(${r}, ${c})` }, t), [false, true], 'a view');
  assert.deepEqual(vectorOperands(dims(64, 36, 64), t, { k: 8, a: () => '0.0', b: () => '0.0' }), [false, false], 'a second product');
});

describe('on the device', () => {
  const device = sharedDevice();

  // [batch of a, batch of b, M, K, N, transposed reads, the operands expected as vec4s]
  const CASES: [number[], number[], number, number, number, MatmulReads, [boolean, boolean]][] = [
    [[2], [], 70, 36, 68, [false, false], [true, true]], // the batch folds into M; tile edges in M, N and K
    [[], [], 68, 20, 132, [true, false], [true, true]], // a read transposed: contiguous along M
    [[3], [3], 28, 52, 24, [false, true], [true, true]], // batched, b transposed: contiguous along K
    [[], [], 40, 44, 66, [false, false], [true, false]], // N = 66: b stays scalar
  ];

  for (const [ba, bb, m, k, n, reads, expect] of CASES) {
    test(`tiled [${ba}] ${m}x${k} @ [${bb}] ${k}x${n}, transposed reads ${reads}: vec4 loads = scalar loads, bit for bit, = the reference`, async () => {
      const { graph, node, inputs } = product(ba, bb, m, k, n, reads);
      const values = graph.inputs.map((inp, i) => randomTensor(graph.node(inp.node).shape, 13 * i + m + k).data);
      const ref = interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: graph.node(inp.node).shape, data: Float64Array.from(values[i]) }]))).get('y')!;
      for (const tuning of [{ tiledStaging: 'unrolled' as const }, { tiledStaging: 'prefetch' as const }, { tiledStaging: 'prefetch' as const, tiledKSplit: 2 as const }]) {
        const what = `${JSON.stringify(tuning)}`;
        const vec = matmulKernel(node, inputs, { ...device().target, tuning }, 'tiled', undefined, reads);
        const scalar = matmulKernel(node, inputs, { ...device().target, tuning: { ...tuning, vectorLoads: false } }, 'tiled', undefined, reads);
        assert.deepEqual(declared(vec.wgsl), expect, `${what}: vec4 bindings`);
        assert.deepEqual(declared(scalar.wgsl), [false, false], `${what}: scalar bindings`);
        const got = await runKernel(device().device, vec, values, numel(node.shape));
        assertBitwise(got, await runKernel(device().device, scalar, values, numel(node.shape)), what);
        assert.equal(matmulMismatch(new Map([['y', ref]]), new Map([['y', { shape: ref.shape, data: Float64Array.from(got) }]]), k), undefined, what);
      }
      const loop = matmulKernel(node, inputs, { ...device().target, tuning: { tiledStaging: 'loop' } }, 'tiled', undefined, reads);
      assert.deepEqual(declared(loop.wgsl), [false, false], 'the guarded loop loads scalars');
    });
  }

  test('subgroup-matrix kernel (emulated here): vec4 loads of f16 tiles = scalar loads, bit for bit', async () => {
    const native = nativeSgmat(device().target);
    const { target, forced } = deviceSgmatTarget(device().target, native, { M: 8, N: 8, K: 8 });
    const tiles = forced ? { wm: 2, wn: 2, fm: 2, fn: 2, bk: 8, staging: 'prefetch' as const } : undefined;
    const { graph, node, inputs } = product([2], [], 36, 28, 44, [false, true]);
    const values = graph.inputs.map((inp, i) => randomTensor(graph.node(inp.node).shape, 5 + i).data.map(roundF16));
    const vec = matmulKernel(node, inputs, target, 'sgmat', undefined, [false, true], undefined, tiles);
    const scalar = matmulKernel(node, inputs, { ...target, tuning: { ...target.tuning, vectorLoads: false } }, 'sgmat', undefined, [false, true], undefined, tiles);
    if (forced) assert.deepEqual(declared(vec.wgsl), [true, true]);
    assertBitwise(await runKernel(device().device, vec, values, numel(node.shape)), await runKernel(device().device, scalar, values, numel(node.shape)), 'sgmat');
  });

  test('f16 storage: operands rounded to f16 are stored as f16 and loaded as vec4<f16> through the schedule', async (t) => {
    if (!device().target.features.includes('shader-f16')) return t.skip(`the adapter ${device().target.name} has no shader-f16`);
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    // Work enough for the tiled variant (outputs x K >= SMALL_WORK); N = 132 leaves a tile edge.
    const x = b.input('x', [2, 64, 128]);
    const w = b.input('w', [128, 132]);
    b.output('y', b.add('matmul', [round(x), round(w)]));
    const graph = b.graph;
    // Hardware-like, without subgroup matrices: the tiled kernel with prefetched staging reads the f16 operands.
    const target: Target = { ...hardwareLike(device().target), subgroupMatrixConfigs: [] };
    const inputs = new Map(graph.inputs.map((i, k) => [i.name, { shape: graph.node(i.node).shape, data: Float64Array.from(randomTensor(graph.node(i.node).shape, 40 + k).data) }]));
    const program = scheduledProgram(graph, target, {});
    const mm = program.schedule.kernels.find((k) => k.name.startsWith('matmul_tiled_f32'));
    assert.ok(mm, program.schedule.kernels.map((k) => k.name).join(', '));
    assert.match(mm.wgsl, /in_0: array<vec4<f16>>/);
    assert.match(mm.wgsl, /in_1: array<vec4<f16>>/);
    assert.match(mm.wgsl, /vec4<f32>\(in_0\[/, 'reads widened to vec4<f32>');
    const got = await runGpu(device(), graph, program, inputs, new Map());
    const scalar = await runGpu(device(), graph, scheduledProgram(graph, { ...target, tuning: { vectorLoads: false } }, {}), inputs, new Map());
    assertBitwise(Float32Array.from(got.get('y')!.data), Float32Array.from(scalar.get('y')!.data), 'f16 storage');
    const ref = interpret(graph, inputs);
    assert.equal(matmulMismatch(ref, got, 128), undefined);
  });
});
