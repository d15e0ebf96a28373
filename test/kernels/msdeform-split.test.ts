// The `indexed` value gradient of msdeform_attn with heavy pixel blocks split over several workgroups
// (kernels/msdeform-value-grad.ts, Target.tuning.msdeformSplits): against the float64 CPU reference, bitwise
// repeatable, a level left whole equal bit for bit to the unsplit chain's, and the default rule on a hardware target.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Builder } from '../../compiler/ir/builder.js';
import type { Target } from '../../compiler/codegen/types.js';
import { gradValueSplits } from '../../kernels/msdeform-blocks.js';
import { VISION_GPU_RULES } from '../../kernels/vision.js';
import { msGeometry, type MsCase } from '../ir/msdeform-geometry.js';
import { checkAgainstReference, randomTensor, withDevice, type GpuContext } from './harness.js';

const NUM_RUNS = Number(process.env.VISFT_KERNEL_RUNS ?? 6);
const CHAIN = ['msdeform_attn_grad_value_rank', 'msdeform_attn_grad_value_scan', 'msdeform_attn_grad_value_scan_blocks', 'msdeform_attn_grad_value_fill', 'msdeform_attn_grad_value_indexed_f32'];
const SPLIT_CHAIN = [...CHAIN, 'msdeform_attn_grad_value_sum_f32'];

function tensors(c: MsCase) {
  const s = c.levels.reduce((t, [h, w]) => t + h * w, 0);
  const L = c.levels.length;
  return [
    randomTensor([c.n, s, c.m, c.dh], c.seed),
    randomTensor([c.n, c.lq, c.m, L, c.p, 2], c.seed + 1, -0.3, 1.3), // some points outside the map
    randomTensor([c.n, c.lq, c.m, L, c.p], c.seed + 2, 0, 1),
    randomTensor([c.n, c.lq, c.m * c.dh], c.seed + 3),
  ];
}

const bits = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
const withSplits = (target: Target, msdeformSplits: number | number[]): Target => ({ ...target, tuning: { ...target.tuning, msdeformSplits } });
/** 16-invocation workgroups: chunks of 16 points, so a small case spans many chunks and slices. */
const smallGroups = (target: Target): Target => ({ ...target, name: 'small', limits: { ...target.limits, maxComputeInvocationsPerWorkgroup: 16, maxComputeWorkgroupSizeX: 16 } });

/** d value for case `c` on `target`, checked against the reference; the kernels that ran. */
async function valueGrad(gpu: GpuContext, c: MsCase, target: Target) {
  const label = `N ${c.n} Lq ${c.lq} M ${c.m} Dh ${c.dh} P ${c.p} levels ${JSON.stringify(c.levels)} splits ${JSON.stringify(target.tuning?.msdeformSplits)}`;
  const build = (b: Builder, [v, l, a, g]: number[]) => b.add('msdeform_attn_grad', [v, l, a, g], { levels: c.levels, wrt: 0 });
  return checkAgainstReference(gpu, build, tensors(c), { rules: VISION_GPU_RULES, target, rtol: 1e-4, atol: 1e-5, label });
}

/** The value rows of level `l` (all n, pixels, heads, channels) of a d value. */
function levelRows(c: MsCase, x: Float32Array, l: number): Float32Array {
  const s = c.levels.reduce((t, [h, w]) => t + h * w, 0);
  const start = c.levels.slice(0, l).reduce((t, [h, w]) => t + h * w, 0);
  const [h, w] = c.levels[l];
  const row = c.m * c.dh;
  const out: number[] = [];
  for (let n = 0; n < c.n; n++) out.push(...x.subarray((n * s + start) * row, (n * s + start + h * w) * row));
  return Float32Array.from(out);
}

await withDevice(async (gpu) => {
  await describe('msdeform_attn value gradient, split blocks', async () => {
    await test('two small levels crowded by 40 queries, split 3 and 4 ways: = the reference, repeatable, a sum kernel', async () => {
      const c: MsCase = { n: 2, lq: 40, m: 2, dh: 5, p: 4, levels: [[3, 3], [2, 5]], seed: 3 };
      const target = withSplits(gpu.target, [3, 4]);
      const r = await valueGrad(gpu, c, target);
      assert.deepEqual(r.kernels.map((k) => k.name), SPLIT_CHAIN);
      assert.deepEqual(bits((await valueGrad(gpu, c, target)).gpu), bits(r.gpu));
    });

    await test('one split level beside a whole one: the whole level is bitwise the unsplit chain\'s', async () => {
      const c: MsCase = { n: 1, lq: 40, m: 2, dh: 3, p: 3, levels: [[3, 3], [2, 5]], seed: 7 };
      const whole = await valueGrad(gpu, c, withSplits(gpu.target, 1));
      assert.deepEqual(whole.kernels.map((k) => k.name), CHAIN);
      const mixed = await valueGrad(gpu, c, withSplits(gpu.target, [1, 5]));
      assert.deepEqual(mixed.kernels.map((k) => k.name), SPLIT_CHAIN);
      assert.deepEqual(bits(levelRows(c, mixed.gpu, 0)), bits(levelRows(c, whole.gpu, 0)));
      // The default on a software adapter is the unsplit chain itself.
      assert.deepEqual(bits((await valueGrad(gpu, c, { ...gpu.target, tuning: {} })).gpu), bits(whole.gpu));
    });

    await test('a block of many entries: slices of several chunks each, and more slices than chunks (empty ones)', async () => {
      // 300 queries x 4 points on a 5x7 map, chunks of 16: one block reads ~1200 entries in ~75 chunks.
      const c: MsCase = { n: 1, lq: 300, m: 1, dh: 5, p: 4, levels: [[5, 7]], seed: 11 };
      const small = smallGroups(gpu.target);
      const whole = await valueGrad(gpu, c, withSplits(small, 1));
      for (const s of [6, 64]) {
        const r = await valueGrad(gpu, c, withSplits(small, s));
        assert.deepEqual(r.kernels.map((k) => k.name), SPLIT_CHAIN);
        assert.deepEqual(bits((await valueGrad(gpu, c, withSplits(small, s))).gpu), bits(r.gpu), `${s} slices: repeatable`);
        assert.notDeepEqual(bits(r.gpu), bits(whole.gpu), `${s} slices sum in another order than one`);
      }
    });

    await test('the default rule on a hardware target splits a crowded level and leaves a sparse one whole', async () => {
      const hardware: Target = { ...gpu.target, name: 'hardware', isFallbackAdapter: false, tuning: {} };
      // 1200 points per level: a 20x20 block reads about a third of them, a 2x2 block all.
      const c: MsCase = { n: 1, lq: 300, m: 1, dh: 4, p: 4, levels: [[20, 20], [2, 2]], seed: 13 };
      const splits = gradValueSplits({ ...c, s: 404, starts: [0, 400] }, hardware);
      assert.equal(splits[0], 1);
      assert.ok(splits[1] > 1, `splits ${splits}`);
      const r = await valueGrad(gpu, c, hardware);
      assert.deepEqual(r.kernels.map((k) => k.name), SPLIT_CHAIN);
    });

    await test('random geometry and splits (16-invocation workgroups): = the reference, repeatable', async () => {
      const small = smallGroups(gpu.target);
      const cases = fc.tuple(
        msGeometry({ lq: [5, 60], m: [1, 2], dh: [1, 9], p: [1, 4], side: 9, levels: 3 }),
        fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 3, maxLength: 3 }),
      );
      await fc.assert(
        fc.asyncProperty(cases, async ([c, s]) => {
          const target = withSplits(small, s.slice(0, c.levels.length));
          const r = await valueGrad(gpu, c, target);
          assert.deepEqual(bits((await valueGrad(gpu, c, target)).gpu), bits(r.gpu));
        }),
        { numRuns: Math.max(2, Math.ceil(NUM_RUNS / 2)) },
      );
    });
  });
});
