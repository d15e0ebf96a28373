// The matmul and attention kernels (kernels/matmul.ts, kernels/attention.ts) on Dawn against the float64 CPU
// reference: every matmul variant (64x64 tiled, split-K, naive) forced on random shapes with M, N, K = 1 and
// sizes that are not multiples of the tiles, batch broadcasting (missing and size-1 batch dims on either
// side), the per-shape choice, hardware-style code (unrolled k loop, tree reduction); attention with and
// without a broadcast mask, several key chunks (online-softmax rescaling), scale, and bitwise repeatability.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Builder } from '../../compiler/ir/builder.js';
import type { Kernel } from '../../compiler/codegen/types.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import { attentionKernel } from '../../kernels/attention.js';
import { matmulKernel, matmulVariant, type MatmulVariant } from '../../kernels/matmul.js';
import { fcParams, hardwareLike, tightTarget } from './core-util.js';
import { checkAgainstReference, randomTensor, runKernel, withDevice, type GpuContext, type RuleTable } from './harness.js';

/** Rules whose matmul is a forced variant. */
const forcing = (variant: MatmulVariant): RuleTable => ({
  matmul: { kind: 'kernel', gen: (n, i, t) => matmulKernel(n, i, t, variant) },
});

/** A batch shape pair that broadcasts: dims dropped or set to 1 on either side. */
const batchArb = fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }).chain((batch) =>
  fc.tuple(fc.constant(batch), fc.integer({ min: 0, max: batch.length }), fc.integer({ min: 0, max: batch.length }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: batch.length, maxLength: batch.length })).map(([bt, da, db, ones]) => ({
    a: bt.map((s, i) => (ones[i] === 1 ? 1 : s)).slice(da),
    b: bt.map((s, i) => (ones[i] === 2 ? 1 : s)).slice(db),
  })),
);

const dimArb = fc.oneof(fc.constantFrom(1, 2, 15, 16, 17, 63, 64, 65), fc.integer({ min: 1, max: 80 }));

async function checkMatmul(gpu: GpuContext, variant: MatmulVariant | undefined, ba: number[], bb: number[], m: number, k: number, n: number, seed: number, target = gpu.target) {
  const a = randomTensor([...ba, m, k], seed);
  const b = randomTensor([...bb, k, n], seed + 1);
  return checkAgainstReference(gpu, (bd, [x, y]) => bd.add('matmul', [x, y]), [a, b], {
    rules: variant ? forcing(variant) : undefined,
    target,
    // f32 dot products of length K: error grows with K·ε·Σ|a||b|.
    atol: 2e-6 * Math.max(1, Math.sqrt(k)),
    rtol: 2e-5,
    label: `${variant ?? 'auto'} [${ba}] ${m}x${k} @ [${bb}] ${k}x${n}`,
  });
}

await withDevice(async (gpu) => {
  await describe('matmul', async () => {
    for (const variant of ['naive', 'splitk', 'blocked'] as const) {
      await test(`${variant} on random shapes with batch broadcasting`, async () => {
        const small = fc.integer({ min: 1, max: 9 });
        await fc.assert(
          fc.asyncProperty(batchArb, variant === 'splitk' ? small : dimArb, variant === 'splitk' ? small : dimArb, variant === 'splitk' ? fc.integer({ min: 1, max: 600 }) : dimArb, fc.integer(), async ({ a, b }, m, n, k, seed) => {
            if ((m * k + k * n) * 9 > 60000) return;
            await checkMatmul(gpu, variant, a, b, m, k, n, seed);
          }),
          fcParams(5, variant === 'naive' ? 501 : variant === 'splitk' ? 502 : 503),
        );
      });
    }
    await test('tiled: edges of the 64x64 tile and 16-deep k tiles, M/N/K = 1, batch broadcast', async () => {
      const cases: [number[], number[], number, number, number][] = [
        [[], [], 65, 17, 63],
        [[2, 1], [3], 70, 1, 130],
        [[1], [], 1, 40, 1],
      ];
      for (const [ba, bb, m, k, n] of cases) {
        const r = await checkMatmul(gpu, 'tiled', ba, bb, m, k, n, m + n + k);
        assert.equal(r.kernels[0].name, 'matmul_tiled_f32');
      }
    });
    await test('the variant is chosen per shape', async () => {
      const operands = (a: number[], b: number[]) => {
        const bd = new Builder();
        const node = bd.graph.node(bd.add('matmul', [bd.input('a', a), bd.input('b', b)]));
        return [node, node.inputs.map((i) => bd.graph.node(i))] as const;
      };
      const pick = (a: number[], b: number[]) => matmulVariant(...operands(a, b), gpu.target);
      // Software adapters take 4x4 register blocks without workgroup memory where hardware takes 64x64 tiles.
      const tiles = gpu.target.isFallbackAdapter ? 'blocked' : 'tiled';
      assert.equal(matmulVariant(...operands([256, 64], [64, 256]), { ...gpu.target, isFallbackAdapter: !gpu.target.isFallbackAdapter }), tiles === 'tiled' ? 'blocked' : 'tiled');
      assert.equal(pick([3, 4], [4, 5]), 'naive');
      assert.equal(pick([8, 1000], [1000, 64]), 'splitk');
      assert.equal(pick([256, 64], [64, 256]), tiles);
      assert.equal(pick([4, 2000], [2000, 1408]), 'naive');
      // x [..., M, K] @ W [K, N] folds the batch into M: 600 x 64 @ 64 x 60 is big enough for tiles, and a
      // problem under 2M multiply-adds is launch-bound, so one invocation per output.
      assert.equal(pick([2, 3, 100, 64], [64, 60]), tiles);
      assert.equal(pick([8, 16, 96], [96, 96]), 'naive');
      await checkMatmul(gpu, undefined, [2], [], 40, 300, 30, 7);
    });
    await test('hardware-style code (tree split-K) and a tight target', async () => {
      await checkMatmul(gpu, 'splitk', [], [], 3, 500, 5, 9, hardwareLike(gpu.target));
      // Tight: the tile does not fit (4 KiB, 64 invocations): the generator falls back; dispatches stay <= 3.
      const r = await checkMatmul(gpu, undefined, [], [], 70, 20, 80, 10, tightTarget(gpu.target));
      assert.equal(r.kernels[0].name, 'matmul_naive_f32');
      await checkMatmul(gpu, 'splitk', [3], [3], 2, 300, 3, 11, tightTarget(gpu.target));
    });
  });

  await describe('attention', async () => {
    const shapes = fc.record({
      b: fc.integer({ min: 1, max: 2 }),
      h: fc.integer({ min: 1, max: 3 }),
      sq: fc.integer({ min: 1, max: 9 }),
      sk: fc.integer({ min: 1, max: 70 }),
      d: fc.integer({ min: 1, max: 20 }),
      dv: fc.integer({ min: 1, max: 70 }),
      mask: fc.constantFrom('none', 'full', 'keys', 'rows'),
      scale: fc.option(fc.double({ min: 0.05, max: 1, noNaN: true }), { nil: undefined }),
      seed: fc.integer(),
    });
    await test('random shapes, masks broadcast over batch / heads / queries, scale', async () => {
      await fc.assert(
        fc.asyncProperty(shapes, async ({ b, h, sq, sk, d, dv, mask, scale, seed }) => {
          const ins = [randomTensor([b, h, sq, d], seed), randomTensor([b, h, sk, d], seed + 1), randomTensor([b, h, sk, dv], seed + 2)];
          const maskShape = mask === 'full' ? [b, h, sq, sk] : mask === 'keys' ? [sk] : [1, sq, 1];
          if (mask !== 'none') ins.push(randomTensor(mask === 'rows' ? maskShape : maskShape, seed + 3, -3, 1));
          const attrs: Attrs = scale === undefined ? {} : { scale };
          await checkAgainstReference(gpu, (bd, xs) => bd.add('attention', xs, attrs), ins, { atol: 3e-6, label: `[${b},${h},${sq},${sk},${d}] dv ${dv} mask ${mask}` });
        }),
        fcParams(5, 601),
      );
    });
    await test('keys in several chunks (online softmax rescaling), -inf mask entries', async () => {
      const q = randomTensor([1, 2, 3, 8], 1, -3, 3);
      const k = randomTensor([1, 2, 45, 8], 2, -3, 3);
      const v = randomTensor([1, 2, 45, 70], 3);
      const m = randomTensor([3, 45], 4, -2, 0);
      m.data[5] = -Infinity;
      m.data[50] = -Infinity;
      const chunked: RuleTable = { attention: { kind: 'kernel', gen: (n, i, t) => attentionKernel(n, i, t, 16) } };
      await checkAgainstReference(gpu, (bd, xs) => bd.add('attention', xs), [q, k, v, m], { rules: chunked, atol: 3e-6 });
    });
  });

  await describe('repeatability', async () => {
    await test('the same node gives the same WGSL and bitwise the same output', async () => {
      const bd = new Builder();
      // The shape of the first tiled case above: the pipeline is compiled already.
      const x = bd.input('x0', [65, 17]);
      const y = bd.input('x1', [17, 63]);
      const z = bd.add('matmul', [x, y]);
      const node = bd.graph.node(z);
      const ins = node.inputs.map((i) => bd.graph.node(i));
      const k1: Kernel = matmulKernel(node, ins, gpu.target, 'tiled');
      const k2: Kernel = matmulKernel(node, ins, gpu.target, 'tiled');
      assert.equal(k1.wgsl, k2.wgsl);
      assert.equal(k1.name, 'matmul_tiled_f32');
      const a = randomTensor([65, 17], 1).data;
      const b = randomTensor([17, 63], 2).data;
      const o1 = await runKernel(gpu.device, k1, [a, b], 65 * 63);
      const o2 = await runKernel(gpu.device, k2, [a, b], 65 * 63);
      assert.deepEqual(new Uint32Array(o1.buffer), new Uint32Array(o2.buffer));
    });
  });
});
