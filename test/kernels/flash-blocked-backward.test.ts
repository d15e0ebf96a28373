// The register-blocked f32 flash backward (kernels/flash-blocked-backward.ts, Target.tuning.flashBlockedGrad):
// chosen for dq and the dk+dv pair on the H200 target within its workgroup memory, declined with a mask, and on
// this adapter (its Target marked as hardware, so the hardware code runs) dq, dk and dv of attention's autodiff
// rule match the float64 reference on ragged shapes and every swept tile size, bitwise the same on a second run.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GRAD_RULES } from '../../compiler/autodiff/rules.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { blockedGradTiles } from '../../kernels/flash-blocked-backward.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { hardwareLike } from './core-util.js';
import { compare, randomTensor, sharedDevice } from './harness.js';
import { GRAD_TOL } from './attention-cases.js';

const blockedGrad = (t: Target): Target => ({ ...t, tuning: { flashBlockedGrad: true } });
const H200 = blockedGrad(TARGETS['nvidia-h200']);
const H200_SHARED = H200.limits.maxComputeWorkgroupStorageSize;
const BLOCKED = ['attention_grad_q_blocked_f32', 'attention_grad_kv_blocked_f32'];

/** Bytes of workgroup memory a kernel's WGSL declares. */
function declaredShared(k: Kernel): number {
  let bytes = 0;
  for (const m of k.wgsl.matchAll(/var<workgroup>\s+\w+\s*:\s*array<(f32|vec4f),\s*(\d+)>/g)) bytes += (m[1] === 'f32' ? 4 : 16) * Number(m[2]);
  return bytes;
}

/** dq, dk, dv of attention(q, k, v [, mask]) for the cotangent g, by attention's autodiff rule, as outputs. */
function gradGraph(B: number, H: number, sq: number, sk: number, d: number, dv: number, mask = false): Builder {
  const b = new Builder();
  const [q, k, v, g] = [
    ['q', sq, d],
    ['k', sk, d],
    ['v', sk, dv],
    ['g', sq, dv],
  ].map(([name, s, c]) => b.input(name as string, [B, H, s as number, c as number]));
  const m = mask ? [b.input('m', [1, 1, sq, sk])] : [];
  const node = b.graph.node(b.add('attention', [q, k, v, ...m]));
  const grads = GRAD_RULES.attention({ b, node, g, needs: node.inputs.map(() => true) });
  ['dq', 'dk', 'dv'].forEach((name, i) => b.output(name, grads[i]!));
  return b;
}

const gradKernels = (ks: readonly Kernel[]) => ks.filter((k) => k.name.startsWith('attention_grad')).map((k) => k.name);

describe('blocked flash backward on the nvidia-h200 target', () => {
  for (const [d, sweep] of [
    [88, 48],
    [112, 32],
    [128, 16],
  ]) {
    test(`head dim ${d}: dq and dk+dv chosen, ${sweep} rows per swept tile, workgroup memory within 48 KiB`, () => {
      const ks = compileGpu(gradGraph(1, 16, 2304, 2304, d, d).graph, H200).schedule.kernels.filter((k) => k.name.startsWith('attention_grad'));
      assert.deepEqual(ks.map((k) => k.name), BLOCKED);
      for (const [k, kind] of [
        [ks[0], 'q'],
        [ks[1], 'kv'],
      ] as const) {
        const tiles = blockedGradTiles(kind, d, d, H200_SHARED);
        assert.equal(tiles?.sweep, sweep, `${k.name}: swept rows`);
        assert.equal(declaredShared(k), tiles?.bytes, `${k.name}: declared bytes`);
        assert.ok(declaredShared(k) <= H200_SHARED, `${k.name}: ${declaredShared(k)} bytes`);
      }
      assert.equal(ks[1].bindings.length, 8, 'q, k, v, g, lse, δ, dk, dv');
    });
  }

  test('declines with a mask, without the flag, and on software adapters: the existing kernels', () => {
    const existing = ['attention_grad_q_flash_f32', 'attention_grad_kv_flash_f32'];
    assert.deepEqual(gradKernels(compileGpu(gradGraph(1, 2, 40, 40, 88, 88, true).graph, H200).schedule.kernels).slice(0, 2), existing);
    assert.deepEqual(gradKernels(compileGpu(gradGraph(1, 2, 40, 40, 88, 88).graph, TARGETS['nvidia-h200']).schedule.kernels), existing);
    assert.deepEqual(gradKernels(compileGpu(gradGraph(1, 2, 40, 40, 88, 88).graph, blockedGrad(TARGETS.lavapipe)).schedule.kernels), existing);
  });

  test('the f16 EVA-G row reads its operands as vec4<f16>', () => {
    const row = benchRows('full').find((r) => r.name === 'attention_vjp_f16_evag_detection')!;
    const ks = compileGpu(rowGraph(row).graph, H200).schedule.kernels.filter((k) => k.name.startsWith('attention_grad'));
    assert.deepEqual(ks.map((k) => k.name), BLOCKED.map((n) => `${n}_f16io`));
    for (const k of ks) for (const i of [0, 1, 2, 3]) assert.match(k.wgsl, new RegExp(`@binding\\(${i}\\) var<storage, read> in_${i}: array<vec4<f16>>;`), k.name);
  });

  test('no tiles where even 16 swept rows do not fit (the caller falls back)', () => {
    assert.equal(blockedGradTiles('q', 256, 256, H200_SHARED), undefined);
    assert.equal(blockedGradTiles('kv', 160, 160, H200_SHARED), undefined);
    assert.equal(blockedGradTiles('kv', 144, 144, H200_SHARED)?.sweep, 16);
  });
});

describe('blocked flash backward on this adapter, as hardware', () => {
  const opened = sharedDevice();
  // The cases' tiles assume lavapipe's 32 KiB of workgroup memory unless they set their own (NVIDIA's 48 KiB
  // would pick other tiles; the target may always offer less than the device has).
  const LAVAPIPE_SHARED = 32768;

  // Head dim 88 (EVA-G; 16 swept rows within lavapipe's 32 KiB) and 13 with dv 20 (tails inside the last vec4, an
  // odd count of v vec4s) at 48 swept rows (EVA-G's on the H200; a smaller workgroup memory limit picks it); Sq,
  // Sk off the tiles, B·H > 1. Few and small: lavapipe compiles hardware code slowly (these kernels 1-2 s each at
  // head dim 88, 5-10 s at 13, whose short loops LLVM unrolls). The forward is the blocked one too (the 'f32
  // blocked both' tuning variant): lavapipe took a minute over the row-per-invocation forward's hardware code at
  // head dim 88.
  const cases = [
    { B: 1, H: 2, sq: 45, sk: 70, d: 88, dv: 88, sweep: 16 },
    { B: 2, H: 1, sq: 33, sk: 50, d: 13, dv: 20, sweep: 48, shared: 20000 },
    { B: 1, H: 3, sq: 70, sk: 3, d: 88, dv: 88, sweep: 16 },
    { B: 2, H: 1, sq: 1, sk: 5, d: 88, dv: 88, sweep: 16 },
  ];

  test('dq, dk and dv match the float64 reference; bitwise repeatable', async () => {
    for (const [n, c] of cases.entries()) {
      const hw = hardwareLike(opened().target);
      const limits = { ...hw.limits, maxComputeWorkgroupStorageSize: c.shared ?? LAVAPIPE_SHARED };
      const target: Target = { ...hw, limits, tuning: { flashBlocked: true, flashBlockedGrad: true } };
      for (const kind of ['q', 'kv'] as const) assert.equal(blockedGradTiles(kind, c.d, c.dv, limits.maxComputeWorkgroupStorageSize)?.sweep, c.sweep);
      const label = `B ${c.B} H ${c.H} sq ${c.sq} sk ${c.sk} d ${c.d} dv ${c.dv}`;
      const { graph } = gradGraph(c.B, c.H, c.sq, c.sk, c.d, c.dv);
      const program = compileGpu(graph, target);
      assert.deepEqual(gradKernels(program.schedule.kernels), BLOCKED, label);
      const inputs = new Map<string, RefTensor>(
        graph.inputs.map((inp, j) => {
          const t = randomTensor(graph.node(inp.node).shape, 500 + 10 * n + j);
          return [inp.name, { shape: t.shape, data: Float64Array.from(Float32Array.from(t.data)) }];
        }),
      );
      const ref = interpret(graph, inputs);
      const got = await runGpu(opened(), graph, program, inputs, new Map());
      for (const name of ['dq', 'dk', 'dv']) {
        const want = ref.get(name)!;
        compare(Float32Array.from(got.get(name)!.data), want.data, want.shape, { ...GRAD_TOL, label: `${label} ${name}` }, program.schedule.kernels);
      }
      if (n === 0) {
        const again = await runGpu(opened(), graph, program, inputs, new Map());
        for (const name of ['dq', 'dk', 'dv']) assert.deepEqual(new Uint32Array(Float32Array.from(again.get(name)!.data).buffer), new Uint32Array(Float32Array.from(got.get(name)!.data).buffer), `${label} ${name}: bitwise`);
      }
    }
  });
});
