// The tensor-core matmul that loads its fragments straight from f16 operands in storage (Target.tuning.sgmatDirect,
// kernels/matmul-sgmat-direct.ts). lavapipe has no subgroup matrices: as in matmul-sgmat.test.ts, a Target listing
// configs without the feature gets the emulated spelling, which reads the operands' storage in place as the native
// loads do, so the kernel's indexing (fragments moved back inside ragged edges, column-major loads of transposed
// operands, batches, K ranges) and epilogues run for real. The emulated products sum k in order, as the staged and
// naive kernels do: results must match the staged kernel's bit for bit, and the float64 reference. Natively the
// same tests run on the device's tensor cores (values within f32 tolerance).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng, randomTensor } from '../ir/util.js';
import { matmulMismatch } from './harness.js';
import { autocastLinear, deviceSgmatTarget, productGraph, sgmatDevice, type Config } from './sgmat-targets.js';

const H200 = TARGETS['nvidia-h200'];
const direct = (t: Target, tuning: Target['tuning'] = {}): Target => ({ ...t, tuning: { ...tuning, sgmatDirect: true } });
const names = (g: Graph, t: Target) => compileGpu(g, t).schedule.kernels.map((k) => k.name);

/** round(x) @ round(w) (w transposed when `transB`), batched as given: exact f16 operands, as autocast makes them. */
const product = (ba: number[], m: number, k: number, n: number, transB: boolean, bb: number[] = []) => productGraph(ba, m, k, n, transB, { bb, round: true });

describe('the direct kernel as generated for the H200', () => {
  test('the bench rows: fragments loaded from the f16 operands in storage, no staging, no barrier in the K loop', () => {
    for (const name of ['matmul_f16_evag_qkv', 'matmul_f16_evae_fc2']) {
      const row = benchRows('full').find((r) => r.name === name)!;
      const { schedule } = compileGpu(rowGraph(row).graph, direct(H200));
      const k = schedule.kernels.find((x) => x.name.startsWith('matmul_sgmat'))!;
      assert.match(k.name, /^matmul_sgmat_direct_f16/, name);
      assert.match(k.wgsl, /@binding\(0\) var<storage, read> in_0: array<f16>;/);
      assert.match(k.wgsl, /@binding\(1\) var<storage, read> in_1: array<f16>;/);
      assert.match(k.wgsl, /subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>\(&in_0, /);
      assert.doesNotMatch(k.wgsl, /tile_a|tile_b/, 'nothing staged');
      const loop = k.wgsl.slice(k.wgsl.indexOf('var k = '), k.wgsl.indexOf('subgroupMatrixStore'));
      assert.doesNotMatch(loop, /workgroupBarrier/, 'no barrier before the epilogue');
      assert.ok(schedule.kernels.every((x) => x.halfOnly === undefined), 'a finished schedule has no halfOnly mark');
    }
    // Without the tuning, the staged kernel (its default is unchanged).
    const row = benchRows('full').find((r) => r.name === 'matmul_f16_evag_qkv')!;
    assert.match(names(rowGraph(row).graph, H200).join(' '), /^matmul_sgmat_f16/);
  });

  test('a transposed operand is loaded column-major in place; the K ranges of a few-tile product', () => {
    const g = product([], 256, 6144, 1408, true);
    const k = compileGpu(g, direct(H200)).schedule.kernels.find((x) => x.name.startsWith('matmul_sgmat'))!;
    assert.match(k.name, /^matmul_sgmat_direct_f16_ks\d+_bt/);
    assert.match(k.wgsl, /subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>\(&in_1, ob \+ cb_0 \* 6144u \+ k, 6144u\)/);
    assert.match(k.wgsl, /let ke = min\(kb \+ \d+u, 6144u\);/);
  });

  test('the staged kernel where the direct one cannot run: K off the fragment, an operand stored as f32', () => {
    const offK = names(product([], 64, 456, 72, false), direct(H200)).join(' ');
    assert.match(offK, /matmul_sgmat_f16/, `K 456: ${offK}`);
    assert.doesNotMatch(offK, /direct/);
    // The rounded operand is also an output: outputs are stored as f32, so the staged kernel reads it.
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const a = round(b.input('a', [96, 448]));
    b.output('y', b.add('matmul', [a, round(b.param('w', [448, 72]))]));
    b.output('a16', a);
    const { schedule } = compileGpu(b.graph, direct(H200));
    const mm = schedule.kernels.find((x) => x.name.startsWith('matmul_sgmat'))!;
    assert.match(mm.name, /^matmul_sgmat_f16/, 'the fallback');
    assert.ok(schedule.kernels.every((x) => x.halfOnly === undefined));
  });
});

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  const device = sgmatDevice();

  /** Runs `g` with the direct kernel and with the staged one; both against the float64 reference. */
  async function check(g: Graph, config: Config, tuning: Target['tuning'], k: number, label: string, expectDirect = true) {
    const [gpu, native] = [device.gpu(), device.native()];
    const { target } = deviceSgmatTarget(gpu.target, native, config);
    const [withDirect, staged] = [direct(target, tuning), { ...target, tuning }];
    const programs = [withDirect, staged].map((t) => compileGpu(g, t));
    const kernelNames = programs[0].schedule.kernels.map((x) => x.name).join(', ');
    assert.equal(/matmul_sgmat_direct_f16/.test(kernelNames), expectDirect, `${label}: ${kernelNames}`);
    assert.doesNotMatch(programs[1].schedule.kernels.map((x) => x.name).join(' '), /direct/);
    const rng = makeRng(k + label.length);
    const inputs = new Map(g.inputs.map((e) => [e.name, randomTensor(g.node(e.node).shape, rng, -1, 1)] as const));
    const params = new Map(g.params.map((e) => [e.name, randomTensor(g.node(e.node).shape, rng, -1, 1)] as const));
    const [a, b] = [await runGpu(gpu, g, programs[0], inputs, params), await runGpu(gpu, g, programs[1], inputs, params)];
    const ref = interpret(g, inputs, params);
    for (const [name, want] of ref) {
      const got = a.get(name)!;
      if (!native) assert.deepEqual(Array.from(got.data, (x) => x + 0), Array.from(b.get(name)!.data, (x) => x + 0), `${label}: ${name}, the staged kernel's bits`);
      assert.equal(matmulMismatch(new Map([[name, want]]), new Map([[name, got]]), k), undefined, `${label}: ${name}`);
    }
  }

  // Few cases, each just past the size that takes tiles (4096 outputs, 2^21 multiply-adds): lavapipe compiles
  // each emulated kernel for seconds.
  test('ragged M and N (fragments moved back inside), a shared transposed weight over a batch', async () => {
    await check(product([2], 45, 336, 70, true), { M: 16, N: 16, K: 16 }, { sgmatTiles: { wm: 2, wn: 2, fm: 1, fn: 1, bk: 32 } }, 336, '2x45x336 @ (70x336)ᵀ');
  });

  test('batched operands, both read in place row-major, 16x8 fragments, K one step past the unrolled loop', async () => {
    await check(product([2], 33, 464, 72, false, [2]), { M: 16, N: 8, K: 16 }, { sgmatTiles: { wm: 2, wn: 1, fm: 1, fn: 2, bk: 32 } }, 464, '[2] 33x464 @ [2] 464x72');
  });

  test('K split across workgroups (ranges), and a GELU epilogue with a bias', async () => {
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const mm = b.add('matmul', [round(b.input('x', [64, 464])), b.transposeLast(round(b.param('w', [72, 464])))]);
    b.output('y', b.add('gelu', [b.add('add', [mm, b.param('bias', [72])])]));
    await check(b.graph, { M: 16, N: 16, K: 16 }, { sgmatTiles: { wm: 2, wn: 1, fm: 1, fn: 1, bk: 16 }, matmulSplits: 3 }, 464, 'x @ wᵀ + bias, gelu, 3 K ranges');
  });

  test("LoRA's second product and GELU in the epilogue, a bias on another product (a ViT block's projections)", async () => {
    await check(autocastLinear(48, 320, 72, 4), { M: 16, N: 16, K: 16 }, {}, 320, 'x @ wᵀ + (x @ aᵀ · s) @ bᵀ + bias, gelu');
  });

  test('an output smaller than one fragment takes the staged kernel', async () => {
    await check(product([], 400, 448, 12, false), { M: 16, N: 16, K: 16 }, { sgmatTiles: { wm: 1, wn: 1, fm: 1, fn: 1, bk: 16 } }, 448, '400x448 @ 448x12', false);
  });
});
