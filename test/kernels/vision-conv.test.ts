// conv2d and its two adjoints on the GPU (kernels/vision.ts) against the float64 CPU reference: every kernel
// variant (tiled implicit GEMM, direct, tree reduction) on random geometry (strides that do not divide the
// size, padding, dilation, groups, odd sizes), a small patch embedding, targets with tight limits (small
// workgroups, dispatch spread over y and z), and bitwise repeatability.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import { conv2dShape } from '../../compiler/ir/rules/shape.js';
import type { GpuRule, Target } from '../../compiler/codegen/types.js';
import {
  conv2dGradInputKernel,
  conv2dGradWeightKernel,
  conv2dKernel,
  VISION_GPU_RULES,
  type ConvGradWeightVariant,
  type ConvVariant,
} from '../../kernels/vision.js';
import { checkAgainstReference, randomTensor, withDevice, type GpuContext, type RuleTable } from './harness.js';

const NUM_RUNS = Number(process.env.VISFT_KERNEL_RUNS ?? 5);

interface ConvCase {
  readonly n: number;
  readonly groups: number;
  readonly cg: number;
  readonly og: number;
  readonly h: number;
  readonly w: number;
  readonly kh: number;
  readonly kw: number;
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly seed: number;
}

const attrsOf = (c: ConvCase): Attrs => ({ stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups });
const xShape = (c: ConvCase) => [c.n, c.groups * c.cg, c.h, c.w];
const wShape = (c: ConvCase) => [c.groups * c.og, c.cg, c.kh, c.kw];

function yShape(c: ConvCase): number[] | undefined {
  try {
    return conv2dShape(xShape(c), wShape(c), attrsOf(c));
  } catch {
    return undefined;
  }
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

const pair = (min: number, max: number) => fc.tuple(fc.integer({ min, max }), fc.integer({ min, max }));

const convCase: fc.Arbitrary<ConvCase> = fc
  .record({
    n: fc.integer({ min: 1, max: 2 }),
    groups: fc.integer({ min: 1, max: 3 }),
    cg: fc.integer({ min: 1, max: 3 }),
    og: fc.integer({ min: 1, max: 20 }),
    h: fc.integer({ min: 1, max: 9 }),
    w: fc.integer({ min: 1, max: 9 }),
    kh: fc.integer({ min: 1, max: 3 }),
    kw: fc.integer({ min: 1, max: 3 }),
    stride: pair(1, 3),
    padding: pair(0, 2),
    dilation: pair(1, 2),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  })
  .filter((c) => {
    const y = yShape(c);
    return y !== undefined && size(xShape(c)) < 5000 && size(y) < 5000 && size(wShape(c)) < 5000;
  });

const describeCase = (c: ConvCase) =>
  `x [${xShape(c)}] w [${wShape(c)}] stride ${c.stride} padding ${c.padding} dilation ${c.dilation} groups ${c.groups}`;

function table(over: Partial<Record<'conv2d' | 'conv2d_grad_input' | 'conv2d_grad_weight', GpuRule>>): RuleTable {
  return { ...VISION_GPU_RULES, ...over };
}

const forward = (v: ConvVariant): RuleTable => table({ conv2d: { kind: 'kernel', gen: (n, i, t) => conv2dKernel(n, i, t, v) } });
const gradInput = (v: ConvVariant): RuleTable => table({ conv2d_grad_input: { kind: 'kernel', gen: (n, i, t) => conv2dGradInputKernel(n, i, t, v) } });
const gradWeight = (v: ConvGradWeightVariant): RuleTable => table({ conv2d_grad_weight: { kind: 'kernel', gen: (n, i, t) => conv2dGradWeightKernel(n, i, t, v) } });

/** Checks conv2d, conv2d_grad_input and conv2d_grad_weight of one case with the given rule tables. */
async function checkCase(gpu: GpuContext, c: ConvCase, rules: { fwd: RuleTable; gin: RuleTable; gw: RuleTable }, target?: Target): Promise<string[]> {
  const attrs = attrsOf(c);
  const y = yShape(c)!;
  const x = randomTensor(xShape(c), c.seed);
  const w = randomTensor(wShape(c), c.seed + 1);
  const g = randomTensor(y, c.seed + 2);
  const label = describeCase(c);
  const opts = (rules: RuleTable) => ({ rules, label, rtol: 2e-5, ...(target ? { target } : {}) });
  const names: string[] = [];
  const r1 = await checkAgainstReference(gpu, (b: Builder, [xi, wi]) => b.add('conv2d', [xi, wi], attrs), [x, w], opts(rules.fwd));
  const r2 = await checkAgainstReference(gpu, (b: Builder, [gi, wi]) => b.add('conv2d_grad_input', [gi, wi], { ...attrs, input_shape: xShape(c) }), [g, w], opts(rules.gin));
  const r3 = await checkAgainstReference(gpu, (b: Builder, [xi, gi]) => b.add('conv2d_grad_weight', [xi, gi], { ...attrs, weight_shape: wShape(c) }), [x, g], opts(rules.gw));
  for (const r of [r1, r2, r3]) names.push(...r.kernels.map((k) => k.name));
  return names;
}

await withDevice(async (gpu) => {
  await describe('conv2d kernels', async () => {
    await test('tiled implicit GEMM variants match the reference on random geometry', async () => {
      await fc.assert(
        fc.asyncProperty(convCase, async (c) => {
          const names = await checkCase(gpu, c, { fwd: forward('gemm'), gin: gradInput('gemm'), gw: gradWeight('gemm') });
          assert.deepEqual(names, ['conv2d_igemm_f32', 'conv2d_grad_input_igemm_f32', 'conv2d_grad_weight_igemm_f32']);
        }),
        { numRuns: NUM_RUNS },
      );
    });

    await test('direct, gather and tree-reduction variants match the reference on random geometry', async () => {
      await fc.assert(
        fc.asyncProperty(convCase, async (c) => {
          const names = await checkCase(gpu, c, { fwd: forward('direct'), gin: gradInput('direct'), gw: gradWeight('reduce') });
          assert.deepEqual(names, ['conv2d_direct_f32', 'conv2d_grad_input_gather_f32', 'conv2d_grad_weight_reduce_f32']);
        }),
        { numRuns: NUM_RUNS },
      );
    });

    await test('a patch embedding (kernel = stride, several K tiles) picks the GEMM and matches', async () => {
      const c: ConvCase = { n: 2, groups: 1, cg: 3, og: 40, h: 15, w: 13, kh: 7, kw: 7, stride: [7, 7], padding: [0, 0], dilation: [1, 1], seed: 7 };
      const d = VISION_GPU_RULES;
      const names = await checkCase(gpu, c, { fwd: d, gin: d, gw: d });
      // The default choice: GEMM forward and weight gradient, the tap-skipping gather for the strided input gradient.
      assert.deepEqual(names, ['conv2d_igemm_f32', 'conv2d_grad_input_gather_f32', 'conv2d_grad_weight_igemm_f32']);
    });

    await test('tight limits: 64-invocation workgroups and at most 8 workgroups per dimension', async () => {
      const tight: Target = {
        ...gpu.target,
        name: 'tight',
        limits: { ...gpu.target.limits, maxComputeInvocationsPerWorkgroup: 64, maxComputeWorkgroupsPerDimension: 8, maxComputeWorkgroupStorageSize: 4096 },
      };
      const c: ConvCase = { n: 2, groups: 2, cg: 3, og: 5, h: 9, w: 7, kh: 3, kw: 2, stride: [2, 1], padding: [1, 0], dilation: [1, 2], seed: 11 };
      await checkCase(gpu, c, { fwd: forward('gemm'), gin: gradInput('gemm'), gw: gradWeight('gemm') }, tight);
      await checkCase(gpu, c, { fwd: forward('direct'), gin: gradInput('direct'), gw: gradWeight('reduce') }, tight);
    });

    await test('direct kernels for a hardware target (constant loop bounds, unrolled by its compiler) match too', async () => {
      // Software adapters get loops kept rolled (kernels/msdeform.ts loopBound); this checks the other form.
      const hardware: Target = { ...gpu.target, name: 'hardware', isFallbackAdapter: false };
      const c: ConvCase = { n: 1, groups: 2, cg: 2, og: 3, h: 5, w: 4, kh: 2, kw: 2, stride: [2, 1], padding: [1, 0], dilation: [1, 1], seed: 13 };
      // The direct kernels only: a GEMM compiled with its K loop unrolled takes ~4 s on lavapipe, and its
      // hardware form differs from the tested one only in the loop bounds' `* rt_one`.
      await checkCase(gpu, c, { fwd: forward('direct'), gin: gradInput('direct'), gw: gradWeight('reduce') }, hardware);
    });

    await test('results are bitwise repeatable and the WGSL is byte-identical across generations', async () => {
      const c: ConvCase = { n: 1, groups: 1, cg: 4, og: 24, h: 11, w: 10, kh: 3, kw: 3, stride: [1, 1], padding: [1, 1], dilation: [1, 1], seed: 5 };
      const x = randomTensor(xShape(c), 1);
      const g = randomTensor(yShape(c)!, 2);
      const run = () =>
        checkAgainstReference(gpu, (b: Builder, [xi, gi]) => b.add('conv2d_grad_weight', [xi, gi], { ...attrsOf(c), weight_shape: wShape(c) }), [x, g], {
          rules: gradWeight('reduce'),
        });
      const a = await run();
      const b = await run();
      assert.deepEqual(Buffer.from(a.gpu.buffer), Buffer.from(b.gpu.buffer));
      assert.equal(a.kernels[0].wgsl, b.kernels[0].wgsl);
    });
  });
});
