// The register-blocked f32 flash forward (kernels/flash-blocked.ts, Target.tuning.flashBlocked): chosen on the
// H200 target within its workgroup memory, declined with a mask, and on this adapter (its Target marked as
// hardware, so the hardware code runs) attention, attention_lse and the pair one kernel writes match the float64
// reference on ragged shapes, every tile size the layout takes, bitwise the same on a second run.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { blockedTiles } from '../../kernels/flash-blocked.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { hardwareLike } from './core-util.js';
import { checkAgainstReference, compare, randomTensor, sharedDevice, type GpuContext } from './harness.js';

const TOL = { rtol: 1e-4, atol: 1e-5 };
const blocked = (t: Target): Target => ({ ...t, tuning: { flashBlocked: true } });
const H200 = blocked(TARGETS['nvidia-h200']);

/** Bytes of workgroup memory a kernel's WGSL declares. */
function declaredShared(k: Kernel): number {
  let bytes = 0;
  for (const m of k.wgsl.matchAll(/var<workgroup>\s+\w+\s*:\s*array<(f32|vec4f),\s*(\d+)>/g)) bytes += (m[1] === 'f32' ? 4 : 16) * Number(m[2]);
  return bytes;
}

/** attention(q, k, v) and attention_lse(q, k) of EVA-G-like shapes as outputs (one schedule pairs them). */
function pairGraph(B: number, H: number, sq: number, sk: number, d: number, dv: number, mask = false): Builder {
  const b = new Builder();
  const [q, k, v] = [
    ['q', sq, d],
    ['k', sk, d],
    ['v', sk, dv],
  ].map(([name, s, c]) => b.input(name as string, [B, H, s as number, c as number]));
  const m = mask ? [b.input('m', [1, 1, sq, sk])] : [];
  b.output('y', b.add('attention', [q, k, v, ...m]));
  b.output('lse', b.add('attention_lse', [q, k, ...m]));
  return b;
}

const attentionKernels = (ks: readonly Kernel[]) => ks.filter((k) => k.name.startsWith('attention')).map((k) => k.name);

describe('blocked flash forward on the nvidia-h200 target', () => {
  for (const [d, keys] of [
    [88, 64],
    [112, 48],
    [128, 48],
  ]) {
    test(`head dim ${d}: chosen for the pair, ${keys} keys per tile, workgroup memory within 48 KiB`, () => {
      const p = compileGpu(pairGraph(1, 16, 2304, 2304, d, d).graph, H200);
      const k = p.schedule.kernels.filter((x) => x.name.startsWith('attention'));
      assert.deepEqual(k.map((x) => x.name), ['attention_flash_lse_blocked_f32']);
      const bytes = declaredShared(k[0]);
      assert.ok(bytes <= H200.limits.maxComputeWorkgroupStorageSize, `${bytes} bytes`);
      assert.equal(bytes, blockedTiles(d, d, H200.limits.maxComputeWorkgroupStorageSize)?.bytes);
      assert.equal(blockedTiles(d, d, H200.limits.maxComputeWorkgroupStorageSize)?.keys, keys);
      assert.match(k[0].wgsl, /^enable subgroups;/);
    });
  }

  test('declines with a mask, without the flag, and on software adapters: the existing kernels', () => {
    assert.deepEqual(attentionKernels(compileGpu(pairGraph(1, 2, 40, 40, 88, 88, true).graph, H200).schedule.kernels), ['attention_flash_lse_f32']);
    assert.deepEqual(attentionKernels(compileGpu(pairGraph(1, 2, 40, 40, 88, 88).graph, TARGETS['nvidia-h200']).schedule.kernels), ['attention_flash_lse_f32']);
    assert.deepEqual(attentionKernels(compileGpu(pairGraph(1, 2, 40, 40, 88, 88).graph, blocked(TARGETS.lavapipe)).schedule.kernels), ['attention_flash_lse_f32']);
  });

  test('q read through a view is staged through it; f16-stored operands are read as vec4<f16>', () => {
    const b = new Builder();
    const q = b.add('permute', [b.input('x', [1, 64, 2, 88])], { dims: [0, 2, 1, 3] });
    b.output('y', b.add('attention', [q, b.input('k', [1, 2, 64, 88]), b.input('v', [1, 2, 64, 88])]));
    assert.deepEqual(attentionKernels(compileGpu(b.graph, H200).schedule.kernels), ['attention_flash_blocked_f32_qv']);
    const row = benchRows('full').find((r) => r.name === 'attention_vjp_f16_evag_detection')!;
    const fwd = compileGpu(rowGraph(row).graph, H200).schedule.kernels.find((k) => k.name.startsWith('attention_flash'))!;
    assert.equal(fwd.name, 'attention_flash_lse_blocked_f32_f16io');
    for (const i of [0, 1, 2]) assert.match(fwd.wgsl, new RegExp(`@binding\\(${i}\\) var<storage, read> in_${i}: array<vec4<f16>>;`));
  });

  test('no tiles where even 16 keys do not fit (the caller falls back)', () => {
    assert.equal(blockedTiles(256, 256, 49152), undefined);
    assert.equal(blockedTiles(128, 128, 49152)?.keys, 48);
  });
});

describe('blocked flash forward on this adapter, as hardware', () => {
  const opened = sharedDevice();
  // The cases' tiles assume lavapipe's 32 KiB of workgroup memory unless they set their own: NVIDIA's 48 KiB
  // would pick other tiles (the target may always offer less than the device has).
  const LAVAPIPE_SHARED = 32768;

  // Head dims 88 (EVA-G; 32 keys per tile within lavapipe's 32 KiB), 61 (48 keys; tails inside the last vec4),
  // 13 with dv 132 (16 keys under a smaller workgroup memory limit; two output blocks per invocation); Sq, Sk
  // off the tiles, B·H > 1. 64 keys per tile: the pair below. Few and small: lavapipe compiles hardware
  // code (loops unrolled by LLVM) slowly, about 1 s per kernel at 16 keys and 10 s at 64.
  const cases = [
    { B: 1, H: 2, sq: 45, sk: 70, d: 88, dv: 88, keys: 32 },
    { B: 1, H: 2, sq: 33, sk: 50, d: 61, dv: 61, keys: 48 },
    { B: 2, H: 1, sq: 1, sk: 5, d: 13, dv: 132, keys: 16, shared: 16384 },
  ];

  test('attention and attention_lse match the float64 reference; bitwise repeatable', async () => {
    const dev: GpuContext = { device: opened().device, adapter: opened().adapter, target: opened().target };
    for (const [i, c] of cases.entries()) {
      const hw = hardwareLike(dev.target);
      const limits = { ...hw.limits, maxComputeWorkgroupStorageSize: c.shared ?? LAVAPIPE_SHARED };
      const target = blocked({ ...hw, limits });
      assert.equal(blockedTiles(c.d, c.dv, limits.maxComputeWorkgroupStorageSize)?.keys, c.keys);
      const ins = [
        [c.B, c.H, c.sq, c.d],
        [c.B, c.H, c.sk, c.d],
        [c.B, c.H, c.sk, c.dv],
      ].map((s, j) => randomTensor(s, 300 + 10 * i + j));
      const label = `B ${c.B} H ${c.H} sq ${c.sq} sk ${c.sk} d ${c.d} dv ${c.dv}`;
      const out = await checkAgainstReference(dev, (b, xs) => b.add('attention', xs), ins, { ...TOL, target, label });
      assert.deepEqual(out.kernels.map((k) => k.name), ['attention_flash_blocked_f32'], label);
      if (i === 0) {
        const again = await checkAgainstReference(dev, (b, xs) => b.add('attention', xs), ins, { ...TOL, target, label });
        assert.deepEqual(new Uint32Array(again.gpu.buffer), new Uint32Array(out.gpu.buffer), `${label}: bitwise`);
      }
      const lse = await checkAgainstReference(dev, (b, xs) => b.add('attention_lse', xs.slice(0, 2)), ins, { ...TOL, target, label: `lse ${label}` });
      assert.deepEqual(lse.kernels.map((k) => k.name), ['attention_lse_flash_blocked_f32'], label);
    }
  });

  test('at 64 keys per tile, one kernel writes the output and the lse, both matching the reference', async () => {
    const target = blocked(hardwareLike(opened().target));
    // 64 keys per tile (the layout EVA-G's head dim gets on the H200); head dim 8 (LLVM unrolls the score loop of
    // short rows: 15 s to compile at head dim 24), dv 20 (an odd count of vec4s: the padded column pair).
    const c = { B: 2, H: 1, sq: 45, sk: 70, d: 8, dv: 20 };
    assert.equal(blockedTiles(c.d, c.dv, target.limits.maxComputeWorkgroupStorageSize)?.keys, 64);
    const { graph } = pairGraph(c.B, c.H, c.sq, c.sk, c.d, c.dv);
    const program = compileGpu(graph, target);
    assert.deepEqual(attentionKernels(program.schedule.kernels), ['attention_flash_lse_blocked_f32']);
    const inputs = new Map<string, RefTensor>(
      graph.inputs.map((inp, j) => {
        const t = randomTensor(graph.node(inp.node).shape, 400 + j);
        return [inp.name, { shape: t.shape, data: Float64Array.from(t.data) }];
      }),
    );
    const ref = interpret(graph, inputs);
    const got = await runGpu(opened(), graph, program, inputs, new Map());
    for (const name of ['y', 'lse']) {
      const want = ref.get(name)!;
      compare(Float32Array.from(got.get(name)!.data), want.data, want.shape, { ...TOL, label: `pair ${name}` }, program.schedule.kernels);
    }
  });
});
