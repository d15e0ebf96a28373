// msdeform_attn and its VJPs (value, sampling_locations, attention_weights) on the GPU (kernels/msdeform.ts)
// against the float64 CPU reference: random geometry (1-2 levels, odd level sizes, Dh not a multiple of 4,
// sampling points outside [0, 1]), points exactly on and just inside the "within one pixel of the map"
// boundary, tight dispatch limits, and the atomic-free value gradient being bitwise repeatable.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Builder } from '../../compiler/ir/builder.js';
import type { Target } from '../../compiler/codegen/types.js';
import { msdeformAttnGradChain, type GradValueVariant } from '../../kernels/msdeform-value-grad.js';
import { VISION_GPU_RULES } from '../../kernels/vision.js';
import { msGeometry, type MsCase } from '../ir/msdeform-geometry.js';
import { checkAgainstReference, makeRng, randomTensor, withDevice, type GpuContext, type RuleTable } from './harness.js';

const NUM_RUNS = Number(process.env.VISFT_KERNEL_RUNS ?? 6);
const rules = VISION_GPU_RULES;
/** The rules with d value computed by `variant` (the default is `indexed`). */
const valueVariant = (variant: GradValueVariant): RuleTable => ({ ...VISION_GPU_RULES, msdeform_attn_grad: { kind: 'chain', gen: (n, i, t) => msdeformAttnGradChain(n, i, t, variant) } });
const tiled = valueVariant('tiled');
const plainGather = valueVariant('gather');
/** The indexed value gradient's chain, in order. */
const INDEXED = ['msdeform_attn_grad_value_rank', 'msdeform_attn_grad_value_scan', 'msdeform_attn_grad_value_scan_blocks', 'msdeform_attn_grad_value_fill', 'msdeform_attn_grad_value_indexed_f32'];

const shapes = (c: MsCase) => {
  const s = c.levels.reduce((t, [h, w]) => t + h * w, 0);
  const L = c.levels.length;
  return { value: [c.n, s, c.m, c.dh], loc: [c.n, c.lq, c.m, L, c.p, 2], attw: [c.n, c.lq, c.m, L, c.p], out: [c.n, c.lq, c.m * c.dh] };
};

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

const msCase: fc.Arbitrary<MsCase> = msGeometry({ lq: [1, 7], m: [1, 3], dh: [1, 7], p: [1, 4], side: 7, levels: 2 }).filter((c) => Object.values(shapes(c)).every((s) => size(s) < 5000));

/** Random locations in [-0.3, 1.3): many points fall outside the map, some within one pixel of it. */
const locations = (c: MsCase) => randomTensor(shapes(c).loc, c.seed + 1, -0.3, 1.3);

interface Tensors {
  value: { shape: number[]; data: Float32Array };
  loc: { shape: number[]; data: Float32Array };
  attw: { shape: number[]; data: Float32Array };
  g: { shape: number[]; data: Float32Array };
}

function tensors(c: MsCase): Tensors {
  const s = shapes(c);
  return {
    value: randomTensor(s.value, c.seed),
    loc: locations(c),
    attw: randomTensor(s.attw, c.seed + 2, 0, 1),
    g: randomTensor(s.out, c.seed + 3),
  };
}

async function checkAll(gpu: GpuContext, c: MsCase, t: Tensors, target?: Target): Promise<string[]> {
  const levels = c.levels;
  const label = `N ${c.n} Lq ${c.lq} M ${c.m} Dh ${c.dh} P ${c.p} levels ${JSON.stringify(levels)}`;
  const opts = { rules, label, rtol: 2e-5, ...(target ? { target } : {}) };
  const names: string[] = [];
  const fwd = await checkAgainstReference(gpu, (b: Builder, [v, l, a]) => b.add('msdeform_attn', [v, l, a], { levels }), [t.value, t.loc, t.attw], opts);
  names.push(...fwd.kernels.map((k) => k.name));
  for (const [wrt, table] of [[0, rules], [0, tiled], [0, plainGather], [1, rules], [2, rules]] as const) {
    const r = await checkAgainstReference(
      gpu,
      (b: Builder, [v, l, a, g]) => b.add('msdeform_attn_grad', [v, l, a, g], { levels, wrt }),
      [t.value, t.loc, t.attw, t.g],
      { ...opts, rules: table, label: `${label} wrt ${wrt}` },
    );
    names.push(...r.kernels.map((k) => k.name));
  }
  return names;
}

await withDevice(async (gpu) => {
  await describe('msdeform_attn kernels', async () => {
    await test('forward and the three gradients match the reference on random geometry', async () => {
      await fc.assert(
        fc.asyncProperty(msCase, async (c) => {
          const names = await checkAll(gpu, c, tensors(c));
          assert.deepEqual(names, [
            'msdeform_attn_f32',
            ...INDEXED,
            'msdeform_attn_grad_value_tiled_f32',
            'msdeform_attn_grad_value_gather_f32',
            'msdeform_attn_grad_locations_f32',
            'msdeform_attn_grad_weights_f32',
          ]);
        }),
        { numRuns: NUM_RUNS },
      );
    });

    await test('points on the boundary of "within one pixel of the map" follow the reference (outside: no contribution, no gradient)', async () => {
      // Power-of-two level sizes and dyadic locations: x·W − 0.5 is exact in f32 and f64, so the strict
      // comparisons (−1 < w_im < W) decide the same way on both sides. Per level, coordinates hit
      // −1 (excluded), −0.75, −0.5, 0, W − 1, W − 0.5 (included) and W (excluded).
      const c: MsCase = { n: 1, lq: 7, m: 2, dh: 3, p: 4, levels: [[4, 8], [2, 2]], seed: 17 };
      const t = tensors(c);
      const rng = makeRng(5);
      const L = c.levels.length;
      for (let i = 0; i < t.loc.data.length; i++) {
        const level = Math.floor(i / (2 * c.p)) % L;
        const sz = c.levels[level][1 - (i % 2)];
        const coords = [-1, -0.75, -0.5, 0, sz - 1, sz - 0.5, sz, 0.25, sz - 0.75];
        const coord = coords[Math.floor(rng() * coords.length)];
        t.loc.data[i] = (coord + 0.5) / sz;
      }
      await checkAll(gpu, c, t);
    });

    await test('tight limits: 64-invocation workgroups and at most 4 workgroups per dimension', async () => {
      const tight: Target = { ...gpu.target, name: 'tight', limits: { ...gpu.target.limits, maxComputeInvocationsPerWorkgroup: 64, maxComputeWorkgroupsPerDimension: 4 } };
      const c: MsCase = { n: 2, lq: 5, m: 3, dh: 5, p: 3, levels: [[3, 5], [2, 1]], seed: 23 };
      await checkAll(gpu, c, tensors(c), tight);
    });

    await test('kernels for a hardware target (constant loop bounds) match too', async () => {
      const hardware: Target = { ...gpu.target, name: 'hardware', isFallbackAdapter: false };
      const c: MsCase = { n: 1, lq: 3, m: 2, dh: 3, p: 2, levels: [[3, 3], [1, 2]], seed: 29 };
      await checkAll(gpu, c, tensors(c), hardware);
    });

    /** d value by each variant for case `c` (tensors `t`), each checked against the reference. */
    const valueGrads = async (c: MsCase, t: Tensors, target?: Target) => {
      const run = (table: RuleTable) =>
        checkAgainstReference(gpu, (b: Builder, [v, l, a, g]) => b.add('msdeform_attn_grad', [v, l, a, g], { levels: c.levels, wrt: 0 }), [t.value, t.loc, t.attw, t.g], {
          rules: table,
          rtol: 1e-4,
          atol: 1e-5,
          ...(target ? { target } : {}),
        });
      return { indexed: await run(rules), again: await run(rules), tiled: await run(tiled), gather: await run(plainGather) };
    };
    const bits = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

    await test('the value gradient is bitwise repeatable; many hits per block span several chunks', async () => {
      // 300 queries x 4 points crowd a 5x7 map: blocks see hundreds of hits across 5 chunks of 256 points.
      const c: MsCase = { n: 1, lq: 300, m: 1, dh: 5, p: 4, levels: [[5, 7]], seed: 31 };
      const r = await valueGrads(c, tensors(c));
      assert.deepEqual(r.indexed.kernels.map((k) => k.name), INDEXED);
      assert.deepEqual(bits(r.indexed.gpu), bits(r.again.gpu));
      // tiled and the plain gather sum in the same (q, p) order.
      assert.deepEqual(bits(r.tiled.gpu), bits(r.gather.gpu));
    });

    await test('the index with small workgroups: many chunks, scan blocks and rounds of the block scan', async () => {
      // 16-invocation workgroups: chunks of 16 points, scan blocks of 64 counts; 2 x 2 x 75 chunks x 17 keys
      // = 5100 counts in 80 blocks, so the one-workgroup block scan takes two rounds of 64.
      const small: Target = { ...gpu.target, name: 'small', limits: { ...gpu.target.limits, maxComputeInvocationsPerWorkgroup: 16, maxComputeWorkgroupSizeX: 16 } };
      const c: MsCase = { n: 2, lq: 300, m: 2, dh: 5, p: 4, levels: [[20, 20]], seed: 37 };
      const r = await valueGrads(c, tensors(c), small);
      const scan = r.indexed.kernels.find((k) => k.name === 'msdeform_attn_grad_value_scan')!;
      assert.ok(scan.dispatch[0] * scan.dispatch[1] * scan.dispatch[2] > 64, 'more scan blocks than one round of the block scan covers');
      assert.deepEqual(bits(r.indexed.gpu), bits(r.again.gpu));
    });

    await test('the index on random geometry with many chunks (16-invocation workgroups): = the reference, repeatable', async () => {
      const small: Target = { ...gpu.target, name: 'small', limits: { ...gpu.target.limits, maxComputeInvocationsPerWorkgroup: 16, maxComputeWorkgroupSizeX: 16 } };
      const many = msGeometry({ lq: [5, 60], m: [1, 2], dh: [1, 9], p: [1, 4], side: 9, levels: 3 });
      await fc.assert(
        fc.asyncProperty(many, async (c) => {
          const r = await valueGrads(c, tensors(c), small);
          assert.deepEqual(bits(r.indexed.gpu), bits(r.again.gpu));
        }),
        { numRuns: Math.max(2, Math.ceil(NUM_RUNS / 2)) },
      );
    });

    await test('the index sorts a crowded coarse level and a sparse fine one (two levels, points outside)', async () => {
      const c: MsCase = { n: 1, lq: 90, m: 2, dh: 7, p: 3, levels: [[9, 13], [2, 3]], seed: 41 };
      await valueGrads(c, tensors(c));
    });
  });
});
