// The subgroup-matrix matmul variant (kernels/matmul-sgmat.ts, kernels/sgmat.ts). lavapipe has no subgroup
// matrices, so these tests give its Target subgroup-matrix configs without the feature: the kernels then spell
// the builtins as emulation functions (each invocation holds whole matrices and sums k in order with fma) and
// everything else — tiling, staging through f16 workgroup tiles, transposed and view reads, bounds, batches,
// fragment epilogues, second products — runs for real. On exact f16 operands the emulated product sums exactly
// as the naive and tiled kernels do, so results must match them bit for bit (up to the sign of a zero sum) and
// the float64 reference within f32 tolerance. The native spelling is checked as text (the builtins, the
// directives); it runs only on a GPU with tensor cores (NVIDIA through Dawn, see docs/perf.md).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { schedule } from '../../compiler/codegen/schedule.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { planMemory } from '../../compiler/plan/memory.js';
import { GPU_RULES } from '../../kernels/index.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import { graphMatmulVariant, matmulKernel, type MatmulReads } from '../../kernels/matmul.js';
import { sgmatTiles, sgmatUnfit, type SgmatTiles } from '../../kernels/matmul-sgmat.js';
import { nativeSgmat, sgmatOps, sgmatShape, sgmatSpelling, SUBGROUP_MATRIX_FEATURE } from '../../kernels/sgmat.js';
import { tensorCoreProblem } from '../../runtime/gpu/tensor-core-probe.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng, randomTensor as randomRef } from '../ir/util.js';
import { assertBitwise, matmulMismatch, randomTensor, runKernel } from './harness.js';
import { autocastLinear, deviceSgmatTarget, withConfigs, type Config } from './sgmat-targets.js';

/** Equal, or both zero (a sum of zero products may be +0 one way and -0 the other), or both NaN. */
function assertSame(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const [a, e] = [actual[i], expected[i]];
    if (a !== e && !(Number.isNaN(a) && Number.isNaN(e))) assert.fail(`${what}: element ${i} is ${a}, expected ${e}`);
  }
}

const halfTensor = (shape: readonly number[], seed: number) => {
  const t = randomTensor(shape, seed);
  return { ...t, data: t.data.map(roundF16) };
};

test('config choice: 16x16x16 f16->f32 first, else the largest f16->f32; none without shader-f16', () => {
  const base = { features: ['shader-f16'], subgroupMatrixConfigs: [] } as unknown as Target;
  const cfg = (componentType: string, resultComponentType: string, M: number, N: number, K: number) => ({ componentType, resultComponentType, M, N, K });
  assert.deepEqual(sgmatShape({ ...base, subgroupMatrixConfigs: [cfg('f16', 'f32', 16, 8, 16), cfg('f16', 'f32', 16, 16, 16), cfg('f16', 'f16', 16, 16, 16)] }), { m: 16, n: 16, k: 16 });
  assert.deepEqual(sgmatShape({ ...base, subgroupMatrixConfigs: [cfg('f16', 'f32', 16, 8, 8), cfg('f16', 'f32', 16, 8, 16), cfg('i8', 'i32', 32, 32, 32)] }), { m: 16, n: 8, k: 16 });
  assert.equal(sgmatShape({ ...base, subgroupMatrixConfigs: [cfg('f16', 'f16', 16, 16, 16), cfg('i8', 'i32', 16, 16, 16)] }), undefined);
  assert.equal(sgmatShape({ ...base, features: [], subgroupMatrixConfigs: [cfg('f16', 'f32', 16, 16, 16)] }), undefined);
});

test('the native spelling: Dawn builtins with the types of the proposal, the directives, row-major strides, in both layout spellings', () => {
  const ops = sgmatOps({ m: 16, n: 8, k: 16 }, 'template', 4);
  assert.match(ops.directives, /^enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic\(off, chromium\.subgroup_matrix_uniformity\);$/);
  // left<T, K, M>: M rows x K columns; right<T, N, K>; result<T, N, M>. Current Dawn: the layout as a template argument.
  assert.equal(ops.loadLeft('tile_a', 'o', '40u'), 'subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&tile_a, o, 40u)');
  assert.equal(ops.loadRight('tile_b', 'o', '72u'), 'subgroupMatrixLoad<subgroup_matrix_right<f16, 8, 16>, row_major>(&tile_b, o, 72u)');
  assert.equal(ops.loadResult('tile_c', 'o', '8u', '0u'), 'subgroupMatrixLoad<subgroup_matrix_result<f32, 8, 16>, row_major>(&tile_c, o, 8u)');
  assert.equal(ops.zero('0u'), 'subgroup_matrix_result<f32, 8, 16>()');
  assert.equal(ops.multiplyAccumulate('a', 'b', 'c'), 'subgroupMatrixMultiplyAccumulate(a, b, c)');
  assert.equal(ops.store('tile_c', 'o', 'c', '8u'), 'subgroupMatrixStore<row_major>(&tile_c, o, c, 8u);');
  // The first releases' spelling (a bool: column-major or not), which ran on the H200 with a deprecation warning.
  const old = sgmatOps({ m: 16, n: 8, k: 16 }, 'argument', 4);
  assert.equal(old.directives, ops.directives);
  assert.equal(old.loadLeft('tile_a', 'o', '40u'), 'subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&tile_a, o, false, 40u)');
  assert.equal(old.store('tile_c', 'o', 'c', '8u'), 'subgroupMatrixStore(&tile_c, o, c, false, 8u);');
  assert.equal(sgmatSpelling(TARGETS['nvidia-h100']), 'template');
  assert.equal(sgmatSpelling({ ...TARGETS['nvidia-h100'], subgroupMatrixSpelling: 'argument' }), 'argument');
  assert.equal(sgmatSpelling({ ...TARGETS['nvidia-h100'], features: ['shader-f16'] }), 'emulated');
  assert.equal(ops.helpers(), '');
});

test('visft compile --target plans for a GPU not at hand; an unknown target is a usage error', () => {
  const bin = fileURLToPath(new URL('../../../bin/visft.js', import.meta.url));
  const compile = (target: string) => spawnSync(process.execPath, [bin, 'compile', '--op', 'attention', '--shape', 'q=1x2x40x88', 'k=1x2x40x88', 'v=1x2x40x88', '--vjp', '--target', target, '--emit', 'kernels'], { encoding: 'utf8', timeout: 120_000 });
  const h100 = compile('nvidia-h100');
  assert.equal(h100.status, 0, h100.stderr);
  assert.match(h100.stdout, /^# \d+ kernels for target 'nvidia-h100'/);
  // Its flash tiles split rows over the H100's 32-lane subgroups: the kernels differ from the portable target's.
  assert.notEqual(h100.stdout.replace(/nvidia-h100/g, ''), compile('portable').stdout.replace(/portable/g, ''));
  const bad = compile('tpu');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--target takes portable, lavapipe, nvidia-h100, nvidia-h200; got 'tpu'/);
});

describe('on the device (emulated subgroup matrices; native on a GPU that has them)', () => {
  let gpu: GpuDevice;
  let base: Target;
  let native = false;
  before(async () => {
    gpu = await openDevice();
    base = gpu.target;
    native = nativeSgmat(base);
  });

  /** Emulated: the config asked for. Native: it if the device lists it, else the device's own (tiles then default). */
  const sgTarget = (config: Config, tiles?: SgmatTiles): { target: Target; tiles?: SgmatTiles } => {
    const { target, forced } = deviceSgmatTarget(base, native, config);
    return forced ? { target, tiles } : { target };
  };

  /** Emulated: bit for bit (sums in k order as the naive and tiled kernels do). Native: tensor cores sum in their own order. */
  const agree = (actual: ArrayLike<number>, expected: ArrayLike<number>, k: number, what: string) => {
    if (!native) return assertSame(actual, expected, what);
    const shape = [actual.length];
    const miss = matmulMismatch(new Map([['y', { shape, data: Float64Array.from(expected) }]]), new Map([['y', { shape, data: Float64Array.from(actual) }]]), k);
    assert.equal(miss, undefined, what);
  };
  after(async () => {
    await gpu?.destroy();
  });

  const swapLast = (r: number) => [...Array(r).keys()].map((d) => (d === r - 2 ? r - 1 : d === r - 1 ? r - 2 : d));
  const stored = (shape: number[], trans: boolean) => (trans ? [...shape.slice(0, -2), shape[shape.length - 1], shape[shape.length - 2]] : shape);

  /** a [...ba, M, K] @ b [...bb, K, N], transposed operands stored swapped and permuted back. */
  function product(ba: number[], bb: number[], m: number, k: number, n: number, reads: MatmulReads) {
    const b = new Builder();
    const operand = (name: string, shape: number[], trans: boolean) => {
      const s = b.input(name, stored(shape, trans));
      return trans ? b.add('permute', [s], { dims: swapLast(shape.length) }) : s;
    };
    const mm = b.add('matmul', [operand('a', [...ba, m, k], reads[0]), operand('b', [...bb, k, n], reads[1])]);
    b.output('y', mm);
    return { graph: b.graph, mm };
  }

  // Each config with each layout once (lavapipe compiles every emulated kernel for seconds, longer the more
  // fragments it unrolls: few, varied cases, some with fewer fragments than the default tiles).
  const CASES: [Config, number[], number[], number, number, number, MatmulReads, SgmatTiles?][] = [
    [{ M: 16, N: 16, K: 16 }, [2], [], 40, 70, 36, [false, false]], // a shared b: the batch folds into M (80 rows)
    [{ M: 16, N: 16, K: 16 }, [2], [2], 17, 19, 66, [true, true]], // batched, K below one staged step
    [{ M: 16, N: 8, K: 16 }, [2, 1], [3], 65, 45, 63, [false, true], { wm: 2, wn: 2, fm: 2, fn: 4, bk: 16 }], // broadcast batch dims, edges off every tile
    [{ M: 16, N: 8, K: 16 }, [2], [], 33, 50, 20, [true, false], { wm: 2, wn: 2, fm: 2, fn: 4, bk: 16 }],
    [{ M: 8, N: 8, K: 8 }, [], [], 70, 41, 75, [false, true], { wm: 2, wn: 2, fm: 2, fn: 2, bk: 16 }],
    // The unrolled stagings (hardware's default; every element's load unrolled, so small tiles keep LLVM quick):
    // K not a multiple of the step (the prefetch past the end reads zeros), both operands transposed or not.
    [{ M: 8, N: 8, K: 8 }, [2], [], 37, 21, 30, [false, true], { wm: 2, wn: 2, fm: 2, fn: 2, bk: 8, staging: 'prefetch' }],
    [{ M: 8, N: 8, K: 8 }, [], [2], 29, 18, 35, [true, false], { wm: 2, wn: 2, fm: 2, fn: 2, bk: 8, staging: 'unrolled' }],
    // K split between two halves of the workgroup (another summation order: the reference's values, not the
    // naive kernel's bits): with K an odd number of steps, so half 1's last step stages zeros.
    [{ M: 8, N: 8, K: 8 }, [2], [], 37, 43, 30, [false, true], { wm: 2, wn: 2, fm: 2, fn: 2, bk: 8, staging: 'prefetch', ksplit: 2 }],
    [{ M: 8, N: 8, K: 8 }, [], [], 20, 24, 19, [true, false], { wm: 2, wn: 2, fm: 2, fn: 2, bk: 8, staging: 'loop', ksplit: 2 }],
  ];

  for (const [config, ba, bb, m, k, n, reads, tiles] of CASES) {
    const label = `${config.M}x${config.N}x${config.K}: [${ba}] ${m}x${k} @ [${bb}] ${k}x${n}, transposed reads ${reads}, staging ${tiles?.staging ?? 'default'}${tiles?.ksplit === 2 ? ', K split in 2' : ''}`;
    test(`${label}: ${tiles?.ksplit === 2 ? 'repeatable bits' : "the naive kernel's bits"}, the reference's values`, async () => {
      const { target, tiles: forced } = sgTarget(config, tiles);
      const { graph, mm } = product(ba, bb, m, k, n, reads);
      const node = graph.node(mm);
      const inputs = node.inputs.map((i) => graph.node(i));
      const values = graph.inputs.map((inp, i) => halfTensor(graph.node(inp.node).shape, 31 * i + m + k + n).data);
      const sg = matmulKernel(node, inputs, target, 'sgmat', undefined, reads, undefined, forced);
      assert.match(sg.name, /^matmul_sgmat_f16/);
      assert.equal(/subgroupMatrix/.test(sg.wgsl), native, 'builtins only on a target with the feature');
      const naive = matmulKernel(node, inputs, target, 'naive', undefined, reads);
      const got = await runKernel(gpu.device, sg, values, numel(node.shape));
      if (forced?.ksplit === 2) {
        assert.match(sg.name, /^matmul_sgmat_f16_k2/);
        assertBitwise(await runKernel(gpu.device, sg, values, numel(node.shape)), got, `${label}: run twice`);
      } else agree(got, await runKernel(gpu.device, naive, values, numel(node.shape)), k, label);
      const ref = interpret(graph, new Map(graph.inputs.map((inp, i) => [inp.name, { shape: graph.node(inp.node).shape, data: Float64Array.from(values[i]) }]))).get('y')!;
      assert.equal(matmulMismatch(new Map([['y', ref]]), new Map([['y', { shape: ref.shape, data: Float64Array.from(got) }]]), k), undefined, label);
    });
  }

  test('the layout of large outputs (2x4 subgroups of 4x2 fragments), forced on a small product with 8x8x8 matrices', async () => {
    const big = sgmatTiles({ m: 16, n: 16, k: 16 }, { m: 520, n: 513 });
    assert.deepEqual(big, { wm: 2, wn: 4, fm: 4, fn: 2, bk: 32 }, '128x128 output tiles on 16x16 matrices');
    // The same subgroup and fragment grid on 8x8x8 matrices (64x64 tiles): the emulated result slots fit lavapipe.
    const { target, tiles } = sgTarget({ M: 8, N: 8, K: 8 }, { ...big, bk: 8 });
    const { graph, mm } = product([], [], 140, 40, 133, [false, true]);
    const node = graph.node(mm);
    const inputs = node.inputs.map((i) => graph.node(i));
    const values = graph.inputs.map((inp, i) => halfTensor(graph.node(inp.node).shape, 7 + i).data);
    const sg = matmulKernel(node, inputs, target, 'sgmat', undefined, [false, true], undefined, tiles);
    if (!native) {
      assert.equal(sg.workgroupSize[0], 8 * 4, 'eight emulated subgroups of four');
      assert.deepEqual(sg.dispatch.slice(0, 2), [3, 3]);
    }
    const naive = matmulKernel(node, inputs, target, 'naive', undefined, [false, true]);
    agree(await runKernel(gpu.device, sg, values, numel(node.shape)), await runKernel(gpu.device, naive, values, numel(node.shape)), 40, '140x40 @ 40x133');
  });

  test('the variant is chosen only for exact f16 operands, on a target with a config, for tiled-sized products', () => {
    const target = withConfigs(base, [{ M: 16, N: 16, K: 16 }], 'sgmat');
    const b = new Builder();
    const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
    const x = b.input('x', [96, 320]);
    const w = b.param('w', [72, 320]);
    const half = b.add('matmul', [round(x), b.transposeLast(round(w))]);
    const mixed = b.add('matmul', [x, b.transposeLast(round(w))]);
    const small = b.add('matmul', [round(b.input('s', [8, 320])), b.transposeLast(round(w))]);
    b.output('y', b.add('add', [half, mixed]));
    b.output('z', small);
    const g = b.graph;
    assert.equal(graphMatmulVariant(g, g.node(half), target), 'sgmat');
    const none = { ...base, subgroupMatrixConfigs: [] };
    // The f32 variant of tiled-sized products: 4x4 register blocks on software adapters, 64x64 tiles on hardware.
    const f32 = base.isFallbackAdapter ? 'blocked' : 'tiled';
    assert.equal(graphMatmulVariant(g, g.node(half), none), f32, 'no config: the f32 kernel');
    assert.equal(graphMatmulVariant(g, g.node(mixed), target), f32, 'an f32 operand');
    assert.equal(graphMatmulVariant(g, g.node(small), target), 'naive', 'too small for tiles');
    assert.match(sgmatUnfit({ ...target, limits: { ...target.limits, maxComputeWorkgroupStorageSize: 8192 } }, { m: 96, n: 72, batch: 1 }) ?? '', /workgroup memory/);
    assert.match(sgmatUnfit(none, { m: 96, n: 72, batch: 1 }) ?? '', /no f16 x f16 -> f32/);
  });

  test('through the schedule: epilogues and a second product on sgmat kernels, equal to the f32 tiles bit for bit', async () => {
    const g = autocastLinear(48, 320, 72, 4);
    const { target } = sgTarget({ M: 16, N: 16, K: 16 });
    const program = (t: Target) => {
      const s = schedule(g, t, GPU_RULES);
      return { target: t, schedule: s, plan: planMemory({ values: s.values, schedule: s.kernels, aliases: s.aliases }, t) };
    };
    const [sg, plain] = [program(target), program({ ...base, subgroupMatrixConfigs: [] })];
    const names = sg.schedule.kernels.map((k) => k.name);
    assert.ok(names.filter((n) => n.startsWith('matmul_sgmat_f16')).length >= 2, names.join(', '));
    assert.ok(names.some((n) => /^matmul_sgmat_f16_bt\+mm\+add_add_gelu/.test(n)), `the LoRA branch's product and the GELU epilogue on a sgmat kernel: ${names.join(', ')}`);
    assert.ok(plain.schedule.kernels.every((k) => !k.name.includes('sgmat')));
    const rng = makeRng(5);
    const inputs = new Map(g.inputs.map((e) => [e.name, randomRef(g.node(e.node).shape, rng, -1, 1)] as const));
    const params = new Map(g.params.map((e) => [e.name, randomRef(g.node(e.node).shape, rng, -0.2, 0.2)] as const));
    const a = await runGpu(gpu, g, sg, inputs, params);
    const b = await runGpu(gpu, g, plain, inputs, params);
    for (const [name, v] of b) agree(a.get(name)!.data, v.data, 320, name);
    const ref = interpret(g, inputs, params);
    assert.equal(matmulMismatch(new Map([['p', ref.get('p')!]]), new Map([['p', a.get('p')!]]), 320), undefined);
  });

  test("tensorCoreProblem: the device's own target passes (nothing to check without native subgroup matrices); a rejected native kernel turns them off", async (t) => {
    assert.equal(await tensorCoreProblem(gpu.device, base), undefined);
    assert.equal(gpu.tensorCoresOff, undefined, 'the probe at openDevice found nothing to turn off');
    const f16Listed = (c: Config) => base.subgroupMatrixConfigs.some((l) => l.componentType === 'f16' && l.resultComponentType === 'f32' && l.M === c.M && l.N === c.N && l.K === c.K);
    if (!native) {
      assert.equal(await tensorCoreProblem(gpu.device, withConfigs(base, [{ M: 16, N: 16, K: 16 }], 'emulated')), undefined);
      // This device lacks the feature: the native kernels cannot compile here, as they would not on a driver that rejects them.
      const claimed = withConfigs({ ...base, features: [...base.features, SUBGROUP_MATRIX_FEATURE] }, [{ M: 16, N: 16, K: 16 }], 'claimed');
      assert.match((await tensorCoreProblem(gpu.device, claimed)) ?? '', /^matmul_sgmat_f16 did not compile: .*chromium_experimental_subgroup_matrix/);
      return;
    }
    // Natively (the device's own configs passed above): a config the device does not list: Dawn rejects the shader (its ValidateSubgroupMatrixConfiguration), as a
    // driver that cannot run the kernels would, and the probe says which kernel and why.
    const unlisted = [{ M: 8, N: 8, K: 8 }, { M: 16, N: 16, K: 16 }, { M: 16, N: 8, K: 16 }, { M: 32, N: 32, K: 32 }].find((c) => !f16Listed(c));
    if (!unlisted) {
      t.diagnostic(`${base.name} lists every f16 -> f32 config the generators were tried with: no kernel it must reject`);
      return;
    }
    const claimed = withConfigs(base, [unlisted], `claimed ${unlisted.M}x${unlisted.N}x${unlisted.K}`);
    assert.match((await tensorCoreProblem(gpu.device, claimed)) ?? '', /^matmul_sgmat_f16 did not compile: .*[Ss]ubgroup matrix .*not supported by the device/);
  });

  test('a real subgroup-matrix target gets the native spelling', () => {
    const native = TARGETS['nvidia-h100'];
    const { graph, mm } = product([2], [], 64, 64, 64, [false, true]);
    const node = graph.node(mm);
    const k = matmulKernel(node, node.inputs.map((i) => graph.node(i)), native, 'sgmat', undefined, [false, true]);
    assert.match(k.wgsl, /^enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;/);
    assert.match(k.wgsl, /@builtin\(subgroup_id\) sg: u32/);
    assert.deepEqual(k.workgroupSize, [4 * 32, 1, 1], 'x is a multiple of the largest subgroup size');
    assert.match(k.wgsl, /subgroupMatrixMultiplyAccumulate\(a_1, b_1, acc_1_1\)/);
    assert.doesNotMatch(k.wgsl, /sgm_/);
  });
});
