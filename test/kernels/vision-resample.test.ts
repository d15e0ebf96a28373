// resize (bicubic, bilinear; align_corners=False) and adaptive_avg_pool2d with their gradients on the GPU
// (kernels/vision.ts) against the float64 CPU reference: random sizes up and down (incl. size 1 and odd
// sizes, leading dims of any rank), the pos_embed-style 16x16 <-> 6x5 cases, and the gradient as a gather
// (no atomics) being bitwise repeatable.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Builder } from '../../compiler/ir/builder.js';
import { VISION_GPU_RULES } from '../../kernels/vision.js';
import { checkAgainstReference, randomTensor, withDevice, type GpuContext } from './harness.js';

const NUM_RUNS = Number(process.env.VISFT_KERNEL_RUNS ?? 6);
const rules = VISION_GPU_RULES;

type Mode = 'bicubic' | 'bilinear' | 'pool';

interface ResampleCase {
  readonly mode: Mode;
  readonly lead: number[];
  readonly inSize: [number, number];
  readonly outSize: [number, number];
  readonly seed: number;
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

const hw = fc.tuple(fc.integer({ min: 1, max: 17 }), fc.integer({ min: 1, max: 17 }));

const resampleCase = (mode: Mode): fc.Arbitrary<ResampleCase> =>
  fc
    .record({
      mode: fc.constant(mode),
      lead: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
      inSize: hw,
      outSize: hw,
      seed: fc.integer({ min: 1, max: 1 << 30 }),
    })
    // adaptive pooling also grows (overlapping bins), as PyTorch's does
    .filter((c) => size([...c.lead, ...c.inSize]) < 2500 && size([...c.lead, ...c.outSize]) < 2500);

async function checkResample(gpu: GpuContext, c: ResampleCase): Promise<string[]> {
  const x = randomTensor([...c.lead, ...c.inSize], c.seed);
  const g = randomTensor([...c.lead, ...c.outSize], c.seed + 1);
  const label = `${c.mode} [${c.lead}] ${c.inSize} -> ${c.outSize}`;
  const fwd = (b: Builder, [xi]: number[]) =>
    c.mode === 'pool' ? b.add('adaptive_avg_pool2d', [xi], { size: c.outSize }) : b.add('resize', [xi], { mode: c.mode, size: c.outSize });
  const bwd = (b: Builder, [gi]: number[]) =>
    c.mode === 'pool' ? b.add('adaptive_avg_pool2d_grad', [gi], { in_size: c.inSize }) : b.add('resize_grad', [gi], { mode: c.mode, in_size: c.inSize });
  const r1 = await checkAgainstReference(gpu, fwd, [x], { rules, label });
  const r2 = await checkAgainstReference(gpu, bwd, [g], { rules, label });
  return [...r1.kernels, ...r2.kernels].map((k) => k.name);
}

await withDevice(async (gpu) => {
  await describe('resize and adaptive_avg_pool2d kernels', async () => {
    for (const mode of ['bicubic', 'bilinear', 'pool'] as const) {
      await test(`${mode}: forward and gradient match the reference on random sizes`, async () => {
        await fc.assert(
          fc.asyncProperty(resampleCase(mode), async (c) => {
            await checkResample(gpu, c);
          }),
          { numRuns: NUM_RUNS },
        );
      });
    }

    await test('16x16 -> 6x5 and 6x5 -> 16x16 in every mode (pos_embed-style), size 1 edges', async () => {
      const cases: ResampleCase[] = [];
      for (const mode of ['bicubic', 'bilinear', 'pool'] as const) {
        cases.push({ mode, lead: [2, 3], inSize: [16, 16], outSize: [6, 5], seed: 3 });
        cases.push({ mode, lead: [1], inSize: [6, 5], outSize: [16, 16], seed: 4 });
      }
      cases.push({ mode: 'bicubic', lead: [], inSize: [1, 7], outSize: [3, 1], seed: 5 });
      for (const c of cases) {
        const names = await checkResample(gpu, c);
        const m = c.mode === 'pool' ? 'adaptive_avg_pool2d' : `resize_${c.mode}`;
        assert.deepEqual(names, [`${m}_f32`, `${m}_grad_gather_f32`]);
      }
    });

    await test('a strong bilinear downscale leaves unsampled input pixels with a zero gradient', async () => {
      const c: ResampleCase = { mode: 'bilinear', lead: [], inSize: [12, 12], outSize: [2, 2], seed: 9 };
      const g = randomTensor([2, 2], 1);
      const r = await checkAgainstReference(gpu, (b: Builder, [gi]) => b.add('resize_grad', [gi], { mode: 'bilinear', in_size: c.inSize }), [g], { rules });
      assert.ok(r.gpu.some((v) => v === 0), 'some input pixels are not sampled at 12 -> 2');
    });

    await test('the gradient gather is bitwise repeatable', async () => {
      const g = randomTensor([3, 9, 7], 2);
      const run = () => checkAgainstReference(gpu, (b: Builder, [gi]) => b.add('resize_grad', [gi], { mode: 'bicubic', in_size: [4, 11] }), [g], { rules });
      const a = await run();
      const b = await run();
      assert.deepEqual(Buffer.from(a.gpu.buffer), Buffer.from(b.gpu.buffer));
    });
  });
});
