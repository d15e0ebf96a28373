// f32 matmuls on the f16 tensor cores at f32 accuracy (Target.tuning.f32TensorCores, kernels/matmul-split16.ts):
// each operand split into scaled f16 hi and lo parts, three products per step. lavapipe has no subgroup matrices: a
// Target listing a config without the feature gets the emulated spelling, which reads the split scratch in place as
// the native loads do, so the splits (scales per row and per column, rows and columns of either layout, batches),
// the three products and the scaling back run for real; natively the same cases run on tensor cores.
//
// Bound per output element (u = 2^-24): each operand element is hi + lo within 2^-21 of itself (hi its top 11 bits,
// |lo| ≤ 2^-10 of it, rounded to f16), and the dropped lo·lo' is within 2^-20, so each term a·b is within 2^-19·|a||b|;
// the f32 sums of K terms add K·u·Σ|a||b|: |out − ref| ≤ (K·u + 2^-19)·Σ_k|a_ik||b_kj| + u·|ref|. Rows and columns scaled by up to 10^±8 check that no value
// loses its bits to f16's range.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { plainOutput } from '../../kernels/matmul.js';
import { split16Unfit } from '../../kernels/matmul-split16.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng } from '../ir/util.js';
import { assertWithin } from './harness.js';
import { deviceSgmatTarget, productGraph, sgmatDevice } from './sgmat-targets.js';

const H200 = TARGETS['nvidia-h200'];
const split = (t: Target): Target => ({ ...t, tuning: { ...t.tuning, f32TensorCores: true } });
const names = (g: Graph, t: Target) => compileGpu(g, t).schedule.kernels.map((k) => k.name);

/** a @ b (b given transposed when `transB`), batched as given, then `epilogue`: f32 operands. */
const product = (ba: number[], m: number, k: number, n: number, transB: boolean, bb: number[] = [], epilogue?: (b: Builder, y: number) => number) => productGraph(ba, m, k, n, transB, { bb, epilogue });

describe('as generated for the H200', () => {
  test('the f32 bench rows: two splits and the product, three tensor-core products per fragment and step', () => {
    for (const name of ['matmul_f32_evag_qkv', 'matmul_f32_evae_fc2']) {
      const row = benchRows('full').find((r) => r.name === name)!;
      const { schedule } = compileGpu(rowGraph(row).graph, split(H200));
      const ks = schedule.kernels.map((k) => k.name);
      // fc2's 256x1408 output is too few tiles for the GPU: K in ranges, summed by a kernel of its own.
      const ranged = name.endsWith('fc2') ? ['matmul_split16_f32_ks2', 'matmul_ksum2_f32'] : ['matmul_split16_f32'];
      assert.deepEqual(ks.map((n) => n.replace(/_(rows|cols)_/, '_')), ['split16_f32', 'split16_f32', ...ranged], `${name}: ${ks.join(' ')}`);
      const mm = schedule.kernels[2];
      assert.match(mm.wgsl, /@binding\(0\) var<storage, read> in_0: array<f16>;\n@group\(0\) @binding\(1\) var<storage, read> in_1: array<f16>;/);
      const loop = mm.wgsl.slice(mm.wgsl.indexOf('var k = '), mm.wgsl.indexOf('subgroupMatrixStore'));
      const loads = loop.match(/subgroupMatrixLoad/g)?.length ?? 0;
      const products = loop.match(/subgroupMatrixMultiplyAccumulate/g)?.length ?? 0;
      assert.ok(loads > 0 && products > 0);
      // Per step FM + FN fragments, each twice (hi, lo), and FM·FN·3 products.
      assert.doesNotMatch(loop, /workgroupBarrier/, 'no barrier before the epilogue');
      assert.match(mm.wgsl, /\* pow2\(-i32\(f32\(in_0\[\d+u \+ oa \/ \d+u \+ row\]\)\)\) \* pow2\(-i32\(f32\(in_1\[\d+u \+ ob \/ \d+u \+ col\]\)\)\)/);
      for (const k of schedule.kernels.slice(0, 2)) assert.match(k.wgsl, /^enable f16;\n[^]*@binding\(1\) var<storage, read_write> out_0: array<f16>;/);
    }
    // x @ Wᵀ: a's scales along its rows (a workgroup each), W's along its rows too (it is read transposed).
    const qkv = compileGpu(rowGraph(benchRows('full').find((r) => r.name === 'matmul_f32_evag_qkv')!).graph, split(H200)).schedule.kernels.map((k) => k.name);
    assert.ok(qkv[0] === 'split16_rows_f32', qkv.join(' '));
    // Without the tuning: the f32 kernels, unchanged.
    const row = benchRows('full').find((r) => r.name === 'matmul_f32_evag_qkv')!;
    assert.doesNotMatch(names(rowGraph(row).graph, H200).join(' '), /split16/);
  });

  test('where it does not apply: K off the fragment, an output below one fragment, f16 operands (the f16 kernels)', () => {
    const why = (g: Graph, transB = false) => {
      const mm = g.nodes.find((x) => x.op === 'matmul')!;
      return split16Unfit(mm, mm.inputs.map((i) => g.node(i)), split(H200), plainOutput(mm), [false, transB], [undefined, undefined]);
    };
    assert.match(why(product([], 64, 1000, 64, false)) ?? '', /K \(1000\) is not a multiple of the fragment's 16/);
    assert.doesNotMatch(names(product([], 64, 1000, 64, false), split(H200)).join(' '), /split16/);
    assert.match(why(product([], 8, 4096, 96, false)) ?? '', /smaller than one fragment/);
    assert.equal(why(product([], 64, 1024, 64, false)), undefined);
    // Fragments must start on 16 bytes: b's rows 60 apart would not.
    assert.match(why(product([], 64, 1024, 60, false)) ?? '', /b's rows are 60 elements apart/);
    assert.equal(why(product([], 64, 1024, 60, true), true), undefined);
    assert.match(split16Unfit(product([], 64, 1024, 64, false).nodes[2], [], H200, plainOutput(product([], 64, 1024, 64, false).nodes[2]), [false, false], [undefined, undefined]) ?? '', /not asked for/);
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    b.output('y', b.add('matmul', [round(b.input('a', [64, 512])), round(b.param('w', [512, 128]))]));
    const f16 = names(b.graph, split(H200));
    assert.ok(f16.some((n) => n.startsWith('matmul_sgmat_f16')) && !f16.some((n) => /split16/.test(n)), f16.join(' '));
  });
});

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();

  /** Runs `g` split on the tensor cores against the float64 reference, operands' rows and columns scaled by 10^±`spread`. */
  async function check(g: Graph, spread: number, label: string, tuning: Target['tuning'] = {}) {
    const { target } = deviceSgmatTarget(device.gpu().target, device.native(), { M: 16, N: 16, K: 16 });
    const program = compileGpu(g, split({ ...target, tuning }));
    const ks = program.schedule.kernels.map((k) => k.name);
    assert.ok(ks.some((n) => n.startsWith('matmul_split16_f32')), `${label}: ${ks.join(' ')}`);
    if (tuning.matmulSplits) assert.ok(ks.some((n) => n.startsWith(`matmul_ksum${tuning.matmulSplits}_f32`)), `${label}: K ranges: ${ks.join(' ')}`);
    const rng = makeRng(label.length * 7 + spread);
    // Each leading index (a row of a, a row or column of w) gets a magnitude of its own: 10^u, u in [-spread, spread].
    const scaled = (shape: readonly number[], along: number): RefTensor => {
      const n = shape.reduce((a, s) => a * s, 1);
      const mags = Array.from({ length: shape[along] }, () => 10 ** ((2 * rng() - 1) * spread));
      const inner = shape.slice(along + 1).reduce((a, s) => a * s, 1);
      const data = Float64Array.from({ length: n }, (_, i) => Math.fround((2 * rng() - 1) * mags[Math.floor(i / inner) % shape[along]]));
      // A zero row, and zeros inside rows.
      for (let i = 0; i < n; i += 7) data[i] = 0;
      return { shape: [...shape], data };
    };
    const inputs = new Map(g.inputs.map((e) => [e.name, scaled(g.node(e.node).shape, g.node(e.node).shape.length - 2)] as const));
    const params = new Map(g.params.map((e) => [e.name, scaled(g.node(e.node).shape, g.node(e.node).shape.length - 1 - (rng() < 0.5 ? 1 : 0))] as const));
    const got = (await runGpu(device.gpu(), g, program, inputs, params)).get('y')!;
    const ref = interpret(g, inputs, params).get('y')!;
    // Σ|a||b| per output element: the reference graph on the magnitudes (epilogues other than a bias are not in these cases).
    const abs = (m: ReadonlyMap<string, RefTensor>) => new Map([...m].map(([k, v]) => [k, { shape: v.shape, data: v.data.map(Math.abs) }] as const));
    const mag = interpret(g, abs(inputs), abs(params)).get('y')!;
    const K = g.nodes.find((x) => x.op === 'matmul')!.inputs.map((i) => g.node(i).shape).map((s) => s[s.length - 1])[0];
    const u = 2 ** -24;
    const worst = assertWithin(Float32Array.from(got.data), ref.data, (i) => (K * u + 2 ** -19) * mag.data[i] + u * Math.abs(ref.data[i]) + 1e-37, label);
    assert.ok(worst > 0 && worst < 1, `${label}: largest error ${worst} of the bound`);
  }

  // Sizes just past the one that takes tiles (2^21 multiply-adds): lavapipe compiles each emulated kernel for seconds.
  test('x @ Wᵀ over a batch (folded into M), ragged M and N, rows and columns 10^±8 apart', async () => {
    await check(product([2], 45, 352, 70, true), 8, '2x45x352 @ (70x352)ᵀ');
  });

  test('x @ W with a bias, batched operands, W split along its columns', async () => {
    await check(
      product([2], 33, 512, 64, false, [2], (b, y) => b.add('add', [y, b.param('bias', [64])])),
      4,
      '[2] 33x512 @ [2] 512x64 + bias',
    );
  });

  test('K in 3 ranges (partials scaled back, summed with the bias in the sum kernel), W read transposed', async () => {
    await check(product([], 96, 768, 64, true, [], (b, y) => b.add('add', [y, b.param('bias', [64])])), 5, '96x768 @ (64x768)ᵀ + bias, 3 K ranges', { matmulSplits: 3 });
  });

  test("a read through a view (heads merged back, as an attention output's projection reads them), W read transposed", async () => {
    const b = new Builder();
    const o = b.input('o', [2, 4, 45, 64]);
    const a = b.add('reshape', [b.add('permute', [o], { dims: [0, 2, 1, 3] })], { shape: [2, 45, 256] });
    b.output('y', b.add('matmul', [a, b.transposeLast(b.param('w', [96, 256]))]));
    // The split of a reads o through the view, binding it alone: no permute kernel.
    const { schedule } = compileGpu(b.graph, split(H200));
    const sa = schedule.kernels.find((k) => k.name === 'split16_rows_f32' && k.bindings[0].value === o);
    assert.ok(sa && sa.nodes.some((n) => b.graph.node(n).op === 'permute'), schedule.kernels.map((k) => k.name).join(' '));
    assert.ok(!schedule.kernels.some((k) => /permute/.test(k.name)));
    await check(b.graph, 4, '(heads of [2,4,45,64] merged) @ (96x256)ᵀ');
  });

  test("LoRA's product fused into the epilogue (in f32 beside the split product), and again with K in 2 ranges", async () => {
    const b = new Builder();
    const x = b.input('x', [2, 45, 256]);
    const rows = b.add('reshape', [x], { shape: [-1, 256] });
    const u = b.add('mul', [b.add('matmul', [rows, b.transposeLast(b.param('lora_a', [4, 256]))]), b.add('full', [], { shape: [], value: 0.5 })]);
    const lora = b.add('reshape', [b.add('matmul', [u, b.transposeLast(b.param('lora_b', [96, 4]))])], { shape: [2, 45, 96] });
    b.output('y', b.add('add', [b.add('add', [b.add('matmul', [x, b.transposeLast(b.param('w', [96, 256]))]), lora]), b.param('bias', [96])]));
    const fused = (tuning: Target['tuning']) => compileGpu(b.graph, split({ ...H200, tuning })).schedule.kernels.map((k) => k.name);
    assert.ok(fused({}).some((n) => /^matmul_split16_f32\+mm\+/.test(n)), fused({}).join(' '));
    assert.ok(fused({ matmulSplits: 2 }).some((n) => /^matmul_ksum2_f32\+mm\+/.test(n)), fused({ matmulSplits: 2 }).join(' '));
    await check(b.graph, 3, 'x @ Wᵀ + LoRA (rank 4) + bias');
    await check(b.graph, 3, 'x @ Wᵀ + LoRA (rank 4) + bias, 2 K ranges', { matmulSplits: 2 });
  });

  test('aᵀ read in place (split along its columns), values 10^±6 apart', async () => {
    const b = new Builder();
    const a = b.transposeLast(b.input('a', [448, 80]));
    b.output('y', b.add('matmul', [a, b.param('w', [448, 64])]));
    await check(b.graph, 6, '(448x80)ᵀ @ 448x64');
  });
});
