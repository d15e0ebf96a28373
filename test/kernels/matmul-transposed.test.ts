// Matmul kernels that read an operand transposed (kernels/matmul.ts): a permute of the last two dims that only
// the matmul reads is not copied; the kernel binds the permute's input. Every variant (naive, split-K, 64x64
// tiled; forced) × (a transposed, b transposed, both) × batch broadcasting (a shared W that folds into M, batch
// dims missing or 1 on either side), plain and with an epilogue, on Dawn (lavapipe in CI): equal bit for bit to
// the permute kernel followed by the matmul kernel, and to the float64 CPU reference. Then random graphs
// (test/codegen/matmul-graphs.ts) through the schedule, memory plan and executor: transposed reads = copies =
// unfused, bitwise, and = the reference.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { planFusion } from '../../compiler/codegen/fuse.js';
import type { ScheduleOptions } from '../../compiler/codegen/schedule.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { GPU_RULES } from '../../kernels/index.js';
import { matmulEpilogueKernel } from '../../kernels/matmul-epilogue.js';
import { matmulKernel, type MatmulReads, type MatmulVariant } from '../../kernels/matmul.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { buildEpilogueGraph, chainMismatch, scheduledVariant, transposedCaseArb } from '../codegen/matmul-graphs.js';
import { bitwiseDifference, feeds } from '../passes/graphs.js';
import { fcParams } from './core-util.js';
import { assertBitwise, compare, randomTensor, runGraph, runKernel, scheduledProgram, type RuleTable } from './harness.js';

let gpu: GpuDevice;
let target: Target;
before(async () => {
  gpu = await openDevice();
  target = { ...gpu.target, limits: { ...gpu.target.limits, maxStorageBuffersPerShaderStage: 8 } };
});
after(async () => {
  await gpu?.destroy();
});


const swapLast = (rank: number) => [...Array(rank).keys()].map((d) => (d === rank - 2 ? rank - 1 : d === rank - 1 ? rank - 2 : d));
const stored = (shape: number[], trans: boolean) => (trans ? [...shape.slice(0, -2), shape[shape.length - 1], shape[shape.length - 2]] : shape);

/**
 * a [...ba, M, K] @ b [...bb, K, N] with the transposed operands stored swapped and permuted back; optionally
 * a bias [N] added (an epilogue). Inputs: the stored a, b (and the bias).
 */
function build(ba: number[], bb: number[], m: number, k: number, n: number, reads: MatmulReads, bias: boolean) {
  const b = new Builder();
  const operand = (name: string, shape: number[], trans: boolean) => {
    const s = b.input(name, stored(shape, trans));
    return { stored: s, used: trans ? b.add('permute', [s], { dims: swapLast(shape.length) }) : s };
  };
  const x = operand('a', [...ba, m, k], reads[0]);
  const w = operand('b', [...bb, k, n], reads[1]);
  const mm = b.add('matmul', [x.used, w.used]);
  const y = bias ? b.add('add', [mm, b.input('bias', [n])]) : mm;
  b.output('y', y);
  return { graph: b.graph, mm, y, storedIds: [x.stored, w.stored], permutes: [x, w].filter((o) => o.used !== o.stored).map((o) => o.used) };
}

// The sgmat variant needs exact f16 operands and an f16 target: test/kernels/matmul-sgmat.test.ts.
const SHAPES: Record<Exclude<MatmulVariant, 'sgmat'>, [number[], number[], number, number, number][]> = {
  // A shared b (folds into M unless a is transposed), batched both sides, and broadcast on both sides.
  naive: [[[2], [], 7, 9, 11], [[2], [2], 5, 6, 3], [[2, 1], [3], 4, 5, 6], [[], [2], 1, 3, 1]],
  splitk: [[[2], [], 3, 70, 5], [[2], [1], 4, 33, 4], [[1], [3], 2, 40, 3]],
  tiled: [[[2], [], 40, 20, 70], [[2], [2], 17, 19, 66], [[2, 1], [3], 65, 17, 63]],
  blocked: [[[2], [], 7, 9, 11], [[2], [2], 5, 6, 3], [[2, 1], [3], 4, 5, 6], [[], [2], 1, 3, 1]],
};

const MODES: Record<string, MatmulReads> = { at: [true, false], bt: [false, true], at_bt: [true, true] };

describe('transposed reads, each variant', () => {
  for (const variant of ['naive', 'splitk', 'tiled', 'blocked'] as const) {
    for (const [mode, reads] of Object.entries(MODES)) {
      test(`${variant}: ${mode}, plain and with a bias epilogue`, async () => {
        for (const [ba, bb, m, k, n] of SHAPES[variant]) {
          for (const bias of [false, true]) {
            const { graph, mm, y, storedIds, permutes } = build(ba, bb, m, k, n, reads, bias);
            const label = `${variant} ${mode}${bias ? '+bias' : ''} [${ba}] ${m}x${k} @ [${bb}] ${k}x${n}`;
            const inputs = graph.inputs.map((inp, i) => randomTensor(graph.node(inp.node).shape, 100 * i + m + 3 * k + 7 * n).data);
            const value = new Map(graph.inputs.map((inp, i) => [inp.node, inputs[i]]));
            const mmNode = graph.node(mm);
            const operands = mmNode.inputs.map((i) => graph.node(i));

            let kernel;
            if (bias) {
              const groups = planFusion(graph, graph.live(), new Set([y]), 7);
              assert.equal(groups.length, 1);
              kernel = matmulEpilogueKernel(graph, groups[0], target, variant, reads);
              assert.equal(kernel.name, `matmul_${variant}_f32_${mode}+add`);
            } else {
              kernel = matmulKernel(mmNode, operands, target, variant, undefined, reads);
              assert.equal(kernel.name, `matmul_${variant}_f32_${mode}`);
            }
            // The stored operands are bound, the permutes are computed by the kernel (nothing copies them).
            assert.deepEqual(kernel.bindings.slice(0, 2).map((b) => b.value), storedIds, `${label}: bindings`);
            assert.deepEqual(kernel.nodes, [...permutes, mm, ...(bias ? [y] : [])], `${label}: nodes`);
            const feed = kernel.bindings.slice(0, -1).map((b) => value.get(b.value)!);
            const got = await runKernel(gpu.device, kernel, feed, numel(graph.node(y).shape));
            if (variant === 'tiled' && bias) assertBitwise(await runKernel(gpu.device, kernel, feed, numel(graph.node(y).shape)), got, `${label}: repeat`);

            // One kernel per node: the permute copies, then the matmul (forced to the same variant) reads them.
            const rules: RuleTable = { ...GPU_RULES, matmul: { kind: 'kernel', gen: (nd, ins, t) => matmulKernel(nd, ins, t, variant) } };
            const copies = await runGraph({ device: gpu.device, adapter: gpu.adapter, target }, graph, y, inputs, { rules, target });
            assert.equal(copies.kernels.filter((kk) => kk.name === 'permute_f32').length, permutes.length);
            assertBitwise(got, copies.value, `${label}: transposed read vs permute + matmul`);

            const ref = interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: [...graph.node(inp.node).shape], data: Float64Array.from(inputs[i]) }]))).get('y')!;
            compare(got, ref.data, graph.node(y).shape, { atol: 3e-6 * Math.sqrt(k), rtol: 2e-5, label }, [kernel]);
          }
        }
      });
    }
  }
});

test('a transposed read of an operand that is not a permute of the last two dims is an internal error', () => {
  const b = new Builder();
  const x = b.input('x', [2, 3, 4]);
  const p = b.add('permute', [b.input('w', [4, 2, 5])], { dims: [1, 0, 2] });
  const mm = b.add('matmul', [x, p]);
  const node = b.graph.node(mm);
  assert.throws(() => matmulKernel(node, node.inputs.map((i) => b.graph.node(i)), target, 'naive', undefined, [false, true]), /%\d+ \(permute\) is read transposed but is not a permute of the last two dims/);
});

const program = (graph: Graph, opts: ScheduleOptions) => scheduledProgram(graph, target, opts);

test('random graphs with transposed operands through the executor: transposed reads = copies = unfused, bitwise, and = the CPU reference', async () => {
  await fc.assert(
    fc.asyncProperty(transposedCaseArb(['naive', 'splitk', 'tiled'], 4), fc.integer({ min: 1, max: 1e6 }), async (c, seed) => {
      const { graph, matmul } = buildEpilogueGraph(c);
      const f = feeds(graph, seed, false);
      // Views off: they would read the other movement ops in place too (test/codegen/view-reads.test.ts).
      const fused = program(graph, { views: false });
      const mmKernel = fused.schedule.kernels.find((k) => k.nodes.includes(matmul))!;
      // Absorbed exactly when only the matmul reads the permute (mode 1, unless a step of the chain reads x too); a
      // permute that is an output or has another reader keeps its copy.
      const readers = (id: number) => graph.nodes.filter((n) => n.inputs.includes(id)).length + graph.outputs.filter((o) => o.node === id).length;
      const [readsA, readsB] = graph.node(matmul).inputs.map((id) => graph.node(id).op === 'permute' && readers(id) === 1);
      const suffix = `${readsA ? '_at' : ''}${readsB ? '_bt' : ''}`;
      assert.match(mmKernel.name, new RegExp(`^matmul_${scheduledVariant(c.variant, target)}_f32${suffix}(\\+|$)`));
      const copies = program(graph, { transposedReads: false, views: false });
      const absorbed = Number(readsA) + Number(readsB);
      assert.equal(fused.schedule.kernels.length, copies.schedule.kernels.length - absorbed);
      const got = await runGpu(gpu, graph, fused, f.inputs, f.params);
      const m = chainMismatch(graph, f, got, c.k);
      assert.equal(m, undefined, `${mmKernel.name}: ${m}`);
      for (const [what, p] of [['copies', copies], ['unfused', program(graph, { fuse: false })]] as const) {
        const d = bitwiseDifference(await runGpu(gpu, graph, p, f.inputs, f.params), got);
        assert.equal(d, undefined, `${mmKernel.name} vs ${what}: ${d}`);
      }
    }),
    fcParams(12, 4402),
  );
});
