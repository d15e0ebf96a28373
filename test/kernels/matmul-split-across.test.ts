// K split across workgroups (kernels/matmul-split-across.ts) on Dawn (lavapipe here): the partial-products kernel
// (tiled and emulated sgmat variants with K ranges) and the sum kernel against the float64 reference, with K not a
// multiple of the ranges' steps, 1 to 4 ranges, batched and folded products; one range stores the one kernel's
// bits; repeated runs give the same bits; through the schedule with Target.tuning.matmulSplits, an epilogue
// (bias, GELU, a residual) and a second product (LoRA) agree with the one-kernel schedule; the default rule picks
// no chain on software adapters and small shapes, and EVA's fc2 rows split on an H200.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import { PORTABLE_TARGET, type Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Graph, type Node } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { GPU_RULES } from '../../kernels/index.js';
import { matmulKernel, type MatmulReads } from '../../kernels/matmul.js';
import { defaultMatmulSplits, kRanges, matmulChain, matmulSplits, MAX_SPLITS, PARTIALS, splitAcrossChain } from '../../kernels/matmul-split-across.js';
import type { SgmatTiles } from '../../kernels/matmul-sgmat.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng, randomTensor as randomRef } from '../ir/util.js';
import { assertBitwise, matmulMismatch, randomTensor, type RuleTable, runChain, runGraph, runKernel, sharedDevice } from './harness.js';
import { hardwareLike } from './core-util.js';
import { emulatedConfigs } from './sgmat-targets.js';
import { linearGraph } from './matmul-products.js';

const H200 = TARGETS['nvidia-h200'];

/** a [...ba, M, K] @ b [...bb, K, N]; a transposed operand is stored swapped and permuted back. */
function product(ba: number[], bb: number[], m: number, k: number, n: number, reads: MatmulReads = [false, false]) {
  const b = new Builder();
  const swap = (r: number) => [...Array(r).keys()].map((d) => (d === r - 2 ? r - 1 : d === r - 1 ? r - 2 : d));
  const operand = (name: string, shape: number[], trans: boolean) => {
    if (!trans) return b.input(name, shape);
    const stored = [...shape.slice(0, -2), shape[shape.length - 1], shape[shape.length - 2]];
    return b.add('permute', [b.input(name, stored)], { dims: swap(shape.length) });
  };
  const mm = b.add('matmul', [operand('a', [...ba, m, k], reads[0]), operand('b', [...bb, k, n], reads[1])]);
  b.output('y', mm);
  return { graph: b.graph, node: b.graph.node(mm) };
}
const inputsOf = (g: Graph, n: Node) => n.inputs.map((i) => g.node(i));
const refOf = (g: Graph, values: readonly Float32Array[]) => interpret(g, new Map(g.inputs.map((e, i) => [e.name, { shape: [...g.node(e.node).shape], data: Float64Array.from(values[i]) }])));
const asRef = (shape: readonly number[], data: Float32Array): ReadonlyMap<string, RefTensor> => new Map([['y', { shape: [...shape], data: Float64Array.from(data) }]]);

test('K ranges: whole steps, none empty, covering K; bad counts are refused with the tuning key', () => {
  for (let k = 0; k <= 300; k += 7) {
    for (const step of [16, 32, 64]) {
      for (let splits = 1; splits <= 6; splits++) {
        const r = kRanges(k, splits, step);
        assert.equal(r.len % step, 0, `k ${k} splits ${splits} step ${step}`);
        assert.ok(r.splits >= 1 && r.splits <= splits);
        assert.ok(r.splits * r.len >= k, 'the ranges cover K');
        assert.ok(k === 0 ? r.splits === 1 : (r.splits - 1) * r.len < k, 'the last range is not empty');
      }
    }
  }
  assert.deepEqual(kRanges(100, 3, 16), { splits: 3, len: 48 });
  assert.deepEqual(kRanges(40, 4, 16), { splits: 3, len: 16 }, 'fewer ranges than asked for when K has few steps');
  for (const bad of [0, 1.5, MAX_SPLITS + 1]) assert.throws(() => kRanges(100, bad, 16), /Target\.tuning\.matmulSplits/);
});

test('the default rule: none on software adapters or from 128 tiles; else workgroups nearest 256, up to 4 ranges of at least 8 steps', () => {
  assert.equal(defaultMatmulSplits(TARGETS.lavapipe, 1, 1000), 1);
  assert.equal(defaultMatmulSplits({ ...H200, isFallbackAdapter: true }, 1, 1000), 1);
  assert.equal(defaultMatmulSplits(H200, 128, 1000), 1);
  assert.equal(defaultMatmulSplits(H200, 88, 384), 3, "EVA-G's fc2: 88 tiles (264 workgroups; 0.69x the time of 2 ranges on the H200)");
  assert.equal(defaultMatmulSplits(H200, 112, 960), 2, "EVA-E's fc2: 112 tiles (224 workgroups; 3 ranges took 1.04x)");
  assert.equal(defaultMatmulSplits(H200, 127, 960), 2);
  assert.equal(defaultMatmulSplits(H200, 60, 960), 4, 'at most 4');
  assert.equal(defaultMatmulSplits(H200, 40, 384), 4);
  assert.equal(defaultMatmulSplits(H200, 4, 24), 3, 'three ranges of 8 steps');
  assert.equal(defaultMatmulSplits(H200, 4, 15), 1, 'two ranges would be under 8 steps');
  assert.equal(defaultMatmulSplits(PORTABLE_TARGET, 1, 8), 1);
  // A tuning profile's fill for a GPU of fewer multiprocessors: EVA-G's fc2 fills a 64-tile GPU without a split.
  const small = { ...H200, tuning: { splitTiles: 64 } };
  assert.equal(defaultMatmulSplits(small, 88, 384), 1);
  assert.equal(defaultMatmulSplits(small, 40, 384), 3, 'workgroups nearest 128');
  assert.equal(defaultMatmulSplits({ ...H200, tuning: { splitTiles: 192 } }, 112, 960), 3, 'workgroups nearest 384');
});

test('the default on whole schedules: EVA fc2 rows split on an H200 (f32 and tensor cores), not on lavapipe; small products never', () => {
  const fc2 = (tokens: number, hidden: number, dim: number, half: boolean) => {
    const b = new Builder();
    const round = (id: number) => (half ? b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' }) : id);
    const y = b.add('add', [b.add('matmul', [round(b.input('x', [tokens, hidden])), b.transposeLast(round(b.param('w', [dim, hidden])))]), b.param('bias', [dim])]);
    b.output('y', y);
    return b.graph;
  };
  const names = (g: Graph, t: Target) => compileGpu(g, t).schedule.kernels.map((k) => k.name).filter((n) => n.startsWith('matmul'));
  const evag = fc2(256, 6144, 1408, false);
  assert.deepEqual(names(evag, H200), ['matmul_tiled_f32_ks3_bt', 'matmul_ksum3_f32+add']);
  assert.deepEqual(names(evag, TARGETS.lavapipe), ['matmul_blocked_f32_bt+add'], 'software adapters block, never split');
  assert.deepEqual(names(evag, { ...H200, tuning: { matmulSplits: 1 } }), ['matmul_tiled_f32_bt+add'], 'tuning 1: the one kernel');
  assert.deepEqual(names(evag, { ...H200, tuning: { matmulSplits: 2 } }), ['matmul_tiled_f32_ks2_bt', 'matmul_ksum2_f32+add']);
  assert.deepEqual(names(fc2(256, 15360, 1792, false), H200), ['matmul_tiled_f32_ks2_bt', 'matmul_ksum2_f32+add'], "EVA-E's fc2: 112 tiles");
  assert.match(names(fc2(256, 6144, 1408, true), H200)[0], /^matmul_sgmat_f16_ks3/);
  assert.match(names(fc2(256, 15360, 1792, true), H200)[0], /^matmul_sgmat_f16_ks2/);
  // The scratch: a temporary of ranges x outputs f32 words, past the graph's values.
  const s = compileGpu(evag, H200).schedule;
  const scratch = s.values.filter((v) => v.id >= evag.nodes.length);
  assert.deepEqual(scratch.map((v) => [v.kind, v.dtype, v.bytes]), [['temp', 'f32', 3 * 256 * 1408 * 4]]);
  assert.equal(s.kernels[0].bindings.at(-1)!.value, scratch[0].id);
  // Small products: the naive kernel, or too few steps for two ranges of 8.
  for (const t of [PORTABLE_TARGET, H200]) {
    assert.deepEqual(names(fc2(64, 128, 64, false), t), ['matmul_naive_f32_bt+add'], t.name);
    assert.deepEqual(names(fc2(256, 192, 256, false), t), ['matmul_tiled_f32_bt+add'], t.name);
  }
  const { graph, node } = product([], [], 512, 512, 1024);
  assert.equal(matmulChain(node, inputsOf(graph, node), H200, 'tiled'), undefined, '128 tiles');
  assert.equal(matmulChain(node, inputsOf(graph, node), H200, 'naive'), undefined, 'only the tiled and sgmat variants');
  assert.equal(matmulSplits(node, inputsOf(graph, node), { ...H200, tuning: { matmulSplits: 4 } }, 'tiled'), 4);
  assert.equal(matmulSplits(node, inputsOf(graph, node), { ...H200, limits: { ...H200.limits, maxStorageBufferBindingSize: 2 ** 20 }, tuning: { matmulSplits: 4 } }, 'tiled'), 1, 'scratch over the binding limit');
});

describe('on the device', () => {
  const device = sharedDevice();

  test("the default picks no chain on a software adapter and a chain for the same shape on hardware, with this device's limits", () => {
    const { graph, node } = product([], [], 128, 2048, 128);
    assert.equal(matmulChain(node, inputsOf(graph, node), { ...device().target, isFallbackAdapter: true, name: 'software' }, 'tiled'), undefined);
    assert.equal(matmulChain(node, inputsOf(graph, node), { ...device().target, isFallbackAdapter: false, name: 'hardware' }, 'tiled')?.kernels.length, 2, 'the same shape as hardware');
  });

  // K not a multiple of a range (16-deep steps): 100 = 64 + 36, 48 + 48 + 4, 32 + 32 + 32 + 4.
  const CASES: [number[], number[], number, number, number, MatmulReads, Target['tuning']?][] = [
    [[2], [], 40, 100, 70, [false, false]], // a shared b: the batch folds into M
    [[2], [2], 17, 100, 66, [true, false]], // batched, a read transposed
    [[], [], 70, 75, 33, [false, true], { tiledStaging: 'prefetch', tiledKSplit: 2 }], // hardware's staging, and K split inside the workgroup too
  ];
  for (const [ba, bb, m, k, n, reads, tuning] of CASES) {
    const label = `[${ba}] ${m}x${k} @ [${bb}] ${k}x${n}, reads ${reads}${tuning ? `, ${JSON.stringify(tuning)}` : ''}`;
    test(`tiled: ${label}: 1-4 ranges = the reference, one range = the one kernel's bits, repeatable`, async () => {
      const target: Target = { ...device().target, tuning };
      const { graph, node } = product(ba, bb, m, k, n, reads);
      const inputs = inputsOf(graph, node);
      const values = graph.inputs.map((e, i) => randomTensor(graph.node(e.node).shape, 17 * i + m + k + n).data);
      // By input id: where an operand is read transposed, the chain binds the permute's input, a graph input.
      const byId = new Map(graph.inputs.map((e, i) => [e.node, values[i]]));
      const ref = refOf(graph, values);
      const one = await runKernel(device().device, matmulKernel(node, inputs, target, 'tiled', undefined, reads), values, numel(node.shape));
      for (let splits = 1; splits <= 4; splits++) {
        const chain = splitAcrossChain(node, inputs, target, 'tiled', splits, undefined, reads);
        assert.equal(chain.kernels.length, 2);
        assert.deepEqual(chain.scratch.map((s) => s.ref), [PARTIALS]);
        const run = () => runChain(device().device, { ...node, inputs: chain.kernels[0].bindings.slice(0, 2).map((b) => b.value) }, chain, byId, target);
        const got = await run();
        assert.equal(matmulMismatch(ref, asRef(node.shape, got), k), undefined, `${label}, ${splits} ranges`);
        if (splits === 1) assertBitwise(got, one, `${label}: one range vs the one kernel`);
        else assertBitwise(await run(), got, `${label}, ${splits} ranges: run twice`);
      }
    });
  }

  test("through the harness's rule table: a matmul rule of kind 'chain' against the reference", async () => {
    const rules: RuleTable = { ...GPU_RULES, matmul: { kind: 'chain', gen: (nd, ins, t) => splitAcrossChain(nd, ins, t, 'tiled', 3) } };
    const { graph, node } = product([3], [3], 33, 90, 40);
    const values = graph.inputs.map((e, i) => randomTensor(graph.node(e.node).shape, 5 + i).data);
    const got = await runGraph({ device: device().device, adapter: device().adapter, target: device().target }, graph, node.id, values, { rules });
    assert.deepEqual(got.kernels.map((k) => k.name), ['matmul_tiled_f32_ks3', 'matmul_ksum3_f32']);
    assert.equal(matmulMismatch(refOf(graph, values), asRef(node.shape, got.value), 90), undefined);
  });


  async function scheduleAgrees(g: Graph, k: number, base: Target, splits: number[], kernel: RegExp, sum: RegExp, seed: number): Promise<void> {
    const rng = makeRng(seed);
    const inputs = new Map(g.inputs.map((e) => [e.name, randomRef(g.node(e.node).shape, rng, -1, 1)] as const));
    const params = new Map(g.params.map((e) => [e.name, randomRef(g.node(e.node).shape, rng, -0.5, 0.5)] as const));
    const program = (t: Target) => compileGpu(g, t);
    const oneProgram = program({ ...base, tuning: { ...base.tuning, matmulSplits: 1 } });
    assert.ok(oneProgram.schedule.kernels.every((x) => !x.name.includes('ksum')));
    const one = await runGpu(device(), g, oneProgram, inputs, params);
    const ref = interpret(g, inputs, params);
    for (const s of splits) {
      const p = program({ ...base, tuning: { ...base.tuning, matmulSplits: s } });
      const names = p.schedule.kernels.map((x) => x.name);
      assert.ok(names.some((n) => kernel.test(n)) && names.some((n) => sum.test(n)), `${s} ranges: ${names.join(', ')}`);
      const got = await runGpu(device(), g, p, inputs, params);
      assert.equal(matmulMismatch(one, got, k), undefined, `${s} ranges vs one kernel`);
      assert.equal(matmulMismatch(ref, got, k), undefined, `${s} ranges vs the reference`);
      const again = await runGpu(device(), g, p, inputs, params);
      assertBitwise(Float32Array.from(again.get('y')!.data), Float32Array.from(got.get('y')!.data), `${s} ranges: run twice`);
    }
  }

  test('through the schedule: an epilogue (bias, GELU, a residual) with 2 to 4 ranges = the one kernel, within f32 tolerance', async () => {
    // 128 x 250 @ 250 x 70: the tiled kernel's size; 250 = 128 + 122, 96 + 96 + 58, 64 + 64 + 64 + 58.
    await scheduleAgrees(linearGraph(64, 250, 70, false), 250, hardwareLike(device().target), [2, 3, 4], /^matmul_tiled_f32_ks\d_bt$/, /^matmul_ksum\d_f32\+add_gelu_add$/, 3);
  });

  test('through the schedule: a second product (LoRA) summed in the sum kernel', async () => {
    await scheduleAgrees(linearGraph(64, 250, 70, true), 250, hardwareLike(device().target), [3], /^matmul_tiled_f32_ks3_bt$/, /^matmul_ksum3_f32\+mm\+/, 4);
    // By default (hardware) a kernel with a second product stays one kernel.
    const g = linearGraph(64, 250, 70, true);
    const names = compileGpu(g, hardwareLike(device().target)).schedule.kernels.map((x) => x.name);
    assert.ok(names.some((n) => /^matmul_tiled_f32_bt\+mm\+/.test(n)), names.join(', '));
  });

  // Tensor cores, emulated on any device (8x8x8 is no config NVIDIA lists): 8x8x8 fragments, 2x2 subgroups of
  // 2x2, 8 deep.
  const TILES: SgmatTiles = { wm: 2, wn: 2, fm: 2, fn: 2, bk: 8 };
  const sgTarget = (): Target => ({ ...emulatedConfigs(device().target, [{ M: 8, N: 8, K: 8 }], 'sgmat'), tuning: { sgmatTiles: TILES } });

  test('sgmat (emulated): 3 ranges of a K not a multiple of 8 = the reference; one range = the one kernel; with a K split inside the workgroup too', async () => {
    const target = sgTarget();
    const { graph, node } = product([2], [], 20, 45, 37);
    const inputs = inputsOf(graph, node);
    const values = graph.inputs.map((e, i) => randomTensor(graph.node(e.node).shape, 9 + i).data.map(roundF16));
    const byId = new Map(inputs.map((x, i) => [x.id, values[i]]));
    const ref = refOf(graph, values);
    const one = await runKernel(device().device, matmulKernel(node, inputs, target, 'sgmat'), values, numel(node.shape));
    for (const splits of [1, 3]) {
      const chain = splitAcrossChain(node, inputs, target, 'sgmat', splits);
      assert.match(chain.kernels[0].name, new RegExp(`^matmul_sgmat_f16_ks${splits}`));
      const got = await runChain(device().device, node, chain, byId, target);
      assert.equal(matmulMismatch(ref, asRef(node.shape, got), 45), undefined, `${splits} ranges`);
      if (splits === 1) assertBitwise(got, one, 'one range vs the one kernel');
      else assertBitwise(await runChain(device().device, node, chain, byId, target), got, 'run twice');
    }
    // With K also split inside the workgroup and hardware's prefetched staging: ranges of whole pairs of steps.
    const halves: Target = { ...target, tuning: { sgmatTiles: { ...TILES, ksplit: 2, staging: 'prefetch' } } };
    const chain = splitAcrossChain(node, inputs, halves, 'sgmat', 2);
    assert.match(chain.kernels[0].name, /^matmul_sgmat_f16_k2_ks2/);
    assert.equal(matmulMismatch(ref, asRef(node.shape, await runChain(device().device, node, chain, byId, halves)), 45), undefined, 'halves and 2 ranges');
  });

  test('sgmat (emulated) through the schedule: exact f16 operands, bias epilogue, 2 ranges = the one kernel', async () => {
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const y = b.add('add', [b.add('matmul', [round(b.input('x', [64, 200])), b.transposeLast(round(b.param('w', [170, 200])))]), b.param('bias', [170])]);
    b.output('y', y);
    await scheduleAgrees(b.graph, 200, sgTarget(), [2], /^matmul_sgmat_f16_ks2/, /^matmul_ksum2_f32\+add/, 6);
  });
});
