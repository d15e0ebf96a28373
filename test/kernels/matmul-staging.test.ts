// How the tiled f32 matmul stages its tiles (kernels/matmul.ts, Staging): the guarded loop (software adapters'
// default), unrolled branchless loads, and loads prefetched one k step ahead (hardware's default). The three
// compute the same sums in the same order, so they agree bit for bit (on a software adapter; within rounding of
// the driver's compiler on hardware) and equal the float64 reference — for plain and transposed reads, batches,
// edges off every tile, and K not a multiple of the step (the prefetch past the end reads zeros). K split between
// two halves of a workgroup (Target.tuning.tiledKSplit) sums in another fixed order: equal to the reference, and
// repeatable bit for bit.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PORTABLE_TARGET, type Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { defaultStaging, matmulKernel, type MatmulReads, type Staging } from '../../kernels/matmul.js';
import fc from 'fast-check';
import { runGpu } from '../../runtime/run-gpu.js';
import { buildEpilogueGraph, chainMismatch, transposedCaseArb } from '../codegen/matmul-graphs.js';
import { feeds } from '../passes/graphs.js';
import { fcParams, hardwareLike } from './core-util.js';
import { assertBitwise, assertKernelsAgree, matmulMismatch, randomTensor, runKernel, scheduledProgram, sharedDevice } from './harness.js';

test('software adapters keep the guarded loop; hardware prefetches', () => {
  const base = { name: 'x', isFallbackAdapter: false } as Target;
  assert.equal(defaultStaging(base), 'prefetch');
  assert.equal(defaultStaging({ ...base, isFallbackAdapter: true }), 'loop');
  assert.equal(defaultStaging({ ...base, name: 'lavapipe' }), 'loop');
});

test('a K split needs 512 invocations and is only taken when asked', () => {
  const b = new Builder();
  const mm = b.add('matmul', [b.input('a', [70, 40]), b.input('w', [40, 66])]);
  const node = b.graph.node(mm);
  const inputs = node.inputs.map((i) => b.graph.node(i));
  const wide = { ...PORTABLE_TARGET, limits: { ...PORTABLE_TARGET.limits, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupStorageSize: 32768 } };
  const name = (t: Target) => matmulKernel(node, inputs, t, 'tiled').name;
  assert.equal(name(wide), 'matmul_tiled_f32');
  assert.equal(name({ ...wide, tuning: { tiledKSplit: 2 } }), 'matmul_tiled_f32_k2');
  assert.equal(name({ ...PORTABLE_TARGET, tuning: { tiledKSplit: 2 } }), 'matmul_tiled_f32', '256 invocations at most: no split');
});

describe('on the device', () => {
  const device = sharedDevice();

  const swapLast = (r: number) => [...Array(r).keys()].map((d) => (d === r - 2 ? r - 1 : d === r - 1 ? r - 2 : d));

  /** a [...ba, M, K] @ b [K, N], transposed operands stored swapped and permuted back. */
  function product(ba: number[], m: number, k: number, n: number, reads: MatmulReads) {
    const b = new Builder();
    const operand = (name: string, shape: number[], trans: boolean) => {
      const stored = trans ? [...shape.slice(0, -2), shape[shape.length - 1], shape[shape.length - 2]] : shape;
      const s = b.input(name, stored);
      return trans ? b.add('permute', [s], { dims: swapLast(shape.length) }) : s;
    };
    const mm = b.add('matmul', [operand('a', [...ba, m, k], reads[0]), operand('b', [k, n], reads[1])]);
    b.output('y', mm);
    return { graph: b.graph, mm };
  }

  const CASES: [number[], number, number, number, MatmulReads][] = [
    [[2], 70, 37, 66, [false, false]], // a shared b folds the batch into M; K = 2 steps + 5
    [[], 65, 16, 130, [true, false]], // K exactly one step
    [[3], 30, 50, 20, [false, true]],
  ];
  for (const [ba, m, k, n, reads] of CASES) {
    test(`[${ba}] ${m}x${k} @ ${k}x${n}, transposed reads ${reads}: every staging agrees and equals the reference`, async () => {
      const { graph, mm } = product(ba, m, k, n, reads);
      const node = graph.node(mm);
      const inputs = node.inputs.map((i) => graph.node(i));
      const values = graph.inputs.map((inp, i) => randomTensor(graph.node(inp.node).shape, 17 * i + m + k).data);
      const out = new Map<Staging, Float32Array>();
      for (const how of ['loop', 'unrolled', 'prefetch'] as const) {
        const kernel = matmulKernel(node, inputs, { ...device().target, tuning: { tiledStaging: how } }, 'tiled', undefined, reads);
        assert.equal(/var va_0/.test(kernel.wgsl), how !== 'loop', `${how}: registers only when unrolled`);
        out.set(how, await runKernel(device().device, kernel, values, numel(node.shape)));
      }
      for (const how of ['unrolled', 'prefetch'] as const) assertKernelsAgree(device().target, out.get(how)!, out.get('loop')!, `${how} vs loop`, k);
      const ref = interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: graph.node(inp.node).shape, data: Float64Array.from(values[i]) }]))).get('y')!;
      const matches = (got: Float32Array, what: string) => assert.equal(matmulMismatch(new Map([['y', ref]]), new Map([['y', { shape: ref.shape, data: Float64Array.from(got) }]]), k), undefined, what);
      matches(out.get('prefetch')!, 'prefetch');
      // K split between two halves of the workgroup, with either staging.
      for (const how of ['loop', 'prefetch'] as const) {
        const kernel = matmulKernel(node, inputs, { ...device().target, tuning: { tiledStaging: how, tiledKSplit: 2 } }, 'tiled', undefined, reads);
        assert.match(kernel.name, /^matmul_tiled_f32_k2/);
        assert.deepEqual(kernel.workgroupSize, [16, 16, 2]);
        const got = await runKernel(device().device, kernel, values, numel(node.shape));
        matches(got, `split, ${how}`);
        assertBitwise(await runKernel(device().device, kernel, values, numel(node.shape)), got, `split, ${how}, run twice`);
      }
    });
  }

  test('random epilogue graphs (transposed reads, views, biases, residuals) through the schedule for hardware: every staging and the K split = the CPU reference', async () => {
    await fc.assert(
      fc.asyncProperty(transposedCaseArb(['tiled'], 3), fc.integer({ min: 1, max: 1e6 }), fc.constantFrom<Staging>('unrolled', 'prefetch'), fc.constantFrom<1 | 2>(1, 2), async (c, seed, how, split) => {
        const { graph, matmul } = buildEpilogueGraph(c);
        const f = feeds(graph, seed, false);
        const program = scheduledProgram(graph, hardwareLike({ ...device().target, tuning: { tiledStaging: how, tiledKSplit: split } }), {});
        const mmKernel = program.schedule.kernels.find((k) => k.nodes.includes(matmul))!;
        assert.match(mmKernel.name, split === 2 ? /^matmul_tiled_f32_k2/ : /^matmul_tiled_f32(?!_k2)/);
        assert.match(mmKernel.wgsl, /var va_0/, 'unrolled staging');
        const m = chainMismatch(graph, f, await runGpu(device(), graph, program, f.inputs, f.params), c.k);
        assert.equal(m, undefined, `${mmKernel.name}: ${m}`);
      }),
      fcParams(4, 5151),
    );
  });
});
