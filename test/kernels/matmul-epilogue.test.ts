// Matmul kernels with a fused elementwise epilogue (kernels/matmul-epilogue.ts) on Dawn (lavapipe in CI):
// every variant (naive, split-K, 64x64 tiled; forced) with a bias, bias + GELU, a residual, a scale, inputs
// broadcast along rows, columns and batch, and a chain with five inputs (8 bindings, the portable limit).
// The fused kernel must equal, bit for bit, the matmul kernel followed by the fused elementwise kernel (the
// same `let`s on the same f32 accumulator) and the fully unfused kernels, and match the float64 CPU
// reference. Then random graphs (test/codegen/matmul-graphs.ts) through the whole schedule, memory plan and
// executor: with epilogues = without = unfused, bitwise, and = the reference.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { planFusion, type FusionGroup } from '../../compiler/codegen/fuse.js';
import type { ScheduleOptions } from '../../compiler/codegen/schedule.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { fusedKernel } from '../../kernels/fused.js';
import { GPU_RULES } from '../../kernels/index.js';
import { matmulEpilogueKernel } from '../../kernels/matmul-epilogue.js';
import { matmulKernel, type MatmulVariant } from '../../kernels/matmul.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { buildEpilogueGraph, chainMismatch, epilogueCaseArb, scheduledVariant } from '../codegen/matmul-graphs.js';
import { bitwiseDifference, feeds } from '../passes/graphs.js';
import { fcParams } from './core-util.js';
import { assertBitwise, compare, randomTensor, runGraph, runKernel, scheduledProgram, type RuleTable } from './harness.js';

let gpu: GpuDevice;
/** The device's target with the portable binding limit, so chains meet the limit of 8. */
let target: Target;
before(async () => {
  gpu = await openDevice();
  target = { ...gpu.target, limits: { ...gpu.target.limits, maxStorageBuffersPerShaderStage: 8 } };
});
after(async () => {
  await gpu?.destroy();
});


type Chain = (b: Builder, mm: number, x: number, ins: (shape: number[]) => number) => number;

/** x [...batch, M, K] @ w [...wBatch, K, N], then the chain; every other tensor is a graph input. */
function build(batch: number[], wBatch: number[], m: number, k: number, n: number, chain: Chain) {
  const b = new Builder();
  const x = b.input('x0', [...batch, m, k]);
  const w = b.input('x1', [...wBatch, k, n]);
  const mm = b.add('matmul', [x, w]);
  let count = 2;
  const y = chain(b, mm, x, (shape) => b.input(`x${count++}`, shape));
  b.output('y', y);
  return { graph: b.graph, mm, y };
}

/** The fusion plan's one group, which must hold the matmul and every elementwise node. */
function theGroup(graph: Graph, mm: number): FusionGroup {
  const live = graph.live();
  const groups = planFusion(graph, live, new Set(graph.outputs.map((o) => o.node)), target.limits.maxStorageBuffersPerShaderStage - 1);
  assert.equal(groups.length, 1, `groups: ${JSON.stringify(groups)}`);
  assert.equal(groups[0].matmul, mm);
  const elementwise = graph.nodes.filter((n) => live.has(n.id) && !['input', 'full', 'matmul'].includes(n.op)).map((n) => n.id);
  assert.deepEqual(groups[0].members, elementwise);
  return groups[0];
}

const CHAINS: Record<string, { chain: Chain; square?: boolean }> = {
  bias: { chain: (b, mm, _x, ins) => b.add('add', [mm, ins([-1])]) },
  bias_gelu: { chain: (b, mm, _x, ins) => b.add('gelu', [b.add('add', [mm, ins([-1])])]) },
  // x + (x @ w + bias): K = N, the residual is the matmul's own left operand.
  residual: { chain: (b, mm, x, ins) => b.add('add', [x, b.add('add', [mm, ins([-1])])]), square: true },
  scale: { chain: (b, mm) => b.scale(mm, 0.125) },
  // A column [M, 1], a row broadcast over the batch [B, 1, N] and a one-element tensor.
  broadcast: { chain: (b, mm, _x, ins) => b.add('sub', [b.add('maximum', [b.add('mul', [mm, ins([-2, 1])]), ins([-3, 1, -1])]), ins([1])]) },
  // Five inputs besides x and w: 8 bindings with the output, and every unary op the epilogue inlines.
  many: {
    chain: (b, mm, _x, ins) => {
      let v = b.add('tanh', [b.add('add', [mm, ins([-1])])]);
      v = b.add('sigmoid', [b.add('mul', [ins([-2, 1]), v])]);
      v = b.add('relu', [b.add('sub', [v, ins([-3, -2, -1])])]);
      v = b.add('erf', [b.add('add', [v, ins([-3, 1, 1])])]);
      return b.add('neg', [b.add('mul', [v, ins([1, -1])])]);
    },
  },
};

/** Shapes per variant: the folded projection and a batched product with broadcasting, off the tile edges. */
// The sgmat variant needs exact f16 operands and an f16 target: test/kernels/matmul-sgmat.test.ts.
const SHAPES: Record<Exclude<MatmulVariant, 'sgmat'>, [number[], number[], number, number, number][]> = {
  naive: [[[2], [], 7, 9, 11], [[2], [2], 5, 6, 3]],
  splitk: [[[2], [], 3, 70, 5], [[2], [1], 4, 33, 4]],
  tiled: [[[2], [], 40, 20, 70], [[2], [2], 17, 19, 66]],
  blocked: [[[2], [], 9, 20, 7], [[2], [2], 6, 19, 5]],
};

/** -1, -2, -3 in an input shape stand for N, M and the leading batch dim. */
const resolve = (shape: number[], batch: number[], m: number, n: number) => shape.map((d) => (d === -1 ? n : d === -2 ? m : d === -3 ? (batch[0] ?? 1) : d));

describe('matmul epilogues, each variant', () => {
  for (const variant of ['naive', 'splitk', 'tiled', 'blocked'] as const) {
    for (const [name, { chain, square }] of Object.entries(CHAINS)) {
      test(`${variant}: ${name}`, async () => {
        for (const [batch, wBatch, m, k0, n] of SHAPES[variant]) {
          const k = square ? n : k0;
          const built = build(batch, wBatch, m, k, n, (b, mm, x, ins) => chain(b, mm, x, (s) => ins(resolve(s, batch, m, n))));
          const { graph, mm, y } = built;
          const group = theGroup(graph, mm);
          const label = `${variant} ${name} [${batch}] ${m}x${k} @ [${wBatch}] ${k}x${n}`;
          const inputs = graph.inputs.map((inp, i) => randomTensor(graph.node(inp.node).shape, 1000 * i + m + k + n).data);
          const value = new Map(graph.inputs.map((inp, i) => [inp.node, inputs[i]]));

          const fused = matmulEpilogueKernel(graph, group, target, variant);
          assert.equal(fused.name, `matmul_${variant}_f32+${group.members.map((id) => graph.node(id).op).join('_')}`);
          assert.ok(fused.bindings.length <= 8, `${label}: ${fused.bindings.length} bindings`);
          assert.deepEqual(fused.nodes, [mm, ...group.members]);
          const got = await runKernel(gpu.device, fused, fused.bindings.slice(0, -1).map((b) => value.get(b.value)!), numel(graph.node(y).shape));

          // The matmul kernel, then the elementwise group as its own fused kernel reading the product.
          const mmNode = graph.node(mm);
          const product = await runKernel(gpu.device, matmulKernel(mmNode, mmNode.inputs.map((i) => graph.node(i)), target, variant), mmNode.inputs.map((i) => value.get(i)!), numel(mmNode.shape));
          value.set(mm, product);
          const ew = fusedKernel(graph, { root: group.root, members: group.members }, target);
          const twoKernels = await runKernel(gpu.device, ew, ew.bindings.slice(0, -1).map((b) => value.get(b.value)!), numel(graph.node(y).shape));
          assertBitwise(got, twoKernels, `${label}: fused vs matmul + elementwise kernel`);

          // One kernel per node (the matmul forced to the same variant).
          const rules: RuleTable = { ...GPU_RULES, matmul: { kind: 'kernel', gen: (nd, ins, t) => matmulKernel(nd, ins, t, variant) } };
          const unfused = await runGraph({ device: gpu.device, adapter: gpu.adapter, target }, graph, y, inputs, { rules, target });
          assertBitwise(got, unfused.value, `${label}: fused vs unfused`);

          const ref = interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: [...graph.node(inp.node).shape], data: Float64Array.from(inputs[i]) }]))).get('y')!;
          compare(got, ref.data, graph.node(y).shape, { atol: 3e-6 * Math.sqrt(k), rtol: 2e-5, label }, [fused]);
        }
      });
    }
  }
});

const program = (graph: Graph, opts: ScheduleOptions) => scheduledProgram(graph, target, opts);

test('random matmul chains through the executor: with epilogues = without = unfused, bitwise, and = the CPU reference', async () => {
  await fc.assert(
    fc.asyncProperty(epilogueCaseArb(['naive', 'splitk', 'tiled'], 7), fc.integer({ min: 1, max: 1e6 }), async (c, seed) => {
      const { graph, matmul } = buildEpilogueGraph(c);
      const f = feeds(graph, seed, false);
      const fused = program(graph, {});
      const mmKernel = fused.schedule.kernels.find((k) => k.nodes.includes(matmul))!;
      assert.match(mmKernel.name, new RegExp(`^matmul_${scheduledVariant(c.variant, target)}_f32`));
      const got = await runGpu(gpu, graph, fused, f.inputs, f.params);
      const m = chainMismatch(graph, f, got, c.k);
      assert.equal(m, undefined, `${mmKernel.name}: ${m}`);
      for (const opts of [{ epilogues: false }, { fuse: false }]) {
        const other = await runGpu(gpu, graph, program(graph, opts), f.inputs, f.params);
        const d = bitwiseDifference(other, got);
        assert.equal(d, undefined, `${mmKernel.name} vs ${JSON.stringify(opts)}: ${d}`);
      }
    }),
    fcParams(12, 4401),
  );
});
