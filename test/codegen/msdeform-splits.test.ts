// How MSDeformAttn's backward is cut up for a target, without a GPU: the value gradient's workgroups per pixel
// block (gradValueSplits, Target.tuning.msdeformSplits) and the chain it gives, and the point kernels' lanes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { PORTABLE_TARGET, type Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { MsDeformGeometry } from '../../compiler/ir/rules/shape.js';
import { expectedBlockEntries, gradValueSplits, MAX_VALUE_SPLITS, SLICE_CHUNKS, SPLIT_FROM_CHUNKS } from '../../kernels/msdeform-blocks.js';
import { msdeformAttnGradChain } from '../../kernels/msdeform-value-grad.js';
import { MAX_POINT_LANES, msdeformAttnPointGradKernel, pointLanes } from '../../kernels/msdeform.js';
import { msGeometry, type MsCase } from '../ir/msdeform-geometry.js';

const hardware: Target = { ...PORTABLE_TARGET, name: 'hardware' };
const software: Target = { ...PORTABLE_TARGET, name: 'software', isFallbackAdapter: true };
const withSplits = (msdeformSplits: number | number[]): Target => ({ ...hardware, tuning: { msdeformSplits } });

function geometry(c: Omit<MsCase, 'seed'>): MsDeformGeometry {
  const sizes = c.levels.map(([h, w]) => h * w);
  return { ...c, s: sizes.reduce((a, b) => a + b, 0), starts: sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0)) };
}

/** Mask2Former's pixel decoder: every pixel a query, 8 heads of 32, 4 points (the bench rows). */
const m2f = (levels: [number, number][]) => geometry({ n: 1, lq: levels.reduce((a, [h, w]) => a + h * w, 0), m: 8, dh: 32, p: 4, levels });

/** The value gradient's chain (wrt 0) and the point kernel (wrt 1) of geometry `k` on `target`. */
function kernelsFor(k: MsDeformGeometry, target: Target) {
  const L = k.levels.length;
  const b = new Builder();
  const v = b.input('value', [k.n, k.s, k.m, k.dh]);
  const loc = b.input('loc', [k.n, k.lq, k.m, L, k.p, 2]);
  const a = b.input('attw', [k.n, k.lq, k.m, L, k.p]);
  const g = b.input('g', [k.n, k.lq, k.m * k.dh]);
  const grad = (wrt: number) => b.graph.node(b.add('msdeform_attn_grad', [v, loc, a, g], { levels: k.levels, wrt }));
  const value = grad(0);
  const inputs = value.inputs.map((i) => b.graph.node(i));
  return { chain: msdeformAttnGradChain(value, inputs, target), points: msdeformAttnPointGradKernel(grad(1), inputs, target) };
}

const workgroups = (d: readonly number[]) => d[0] * d[1] * d[2];

test('the default splits at Mask2Former\'s shapes: 73x73 and 64x64 whole, 32x32 in 6, 16x16 in 20', () => {
  assert.deepEqual(gradValueSplits(m2f([[73, 73]]), hardware), [1]);
  assert.deepEqual(gradValueSplits(m2f([[64, 64], [32, 32], [16, 16]]), hardware), [1, 6, 20]);
  // Software adapters never split by default.
  assert.deepEqual(gradValueSplits(m2f([[64, 64], [32, 32], [16, 16]]), software), [1, 1, 1]);
});

test('the default rule: whole up to SPLIT_FROM_CHUNKS chunks of expected entries, then slices of at most SLICE_CHUNKS', () => {
  fc.assert(
    fc.property(msGeometry({ lq: [1, 3000], m: [1, 2], dh: [1, 64], p: [1, 8], side: 80, levels: 4 }), (c) => {
      const k = geometry(c);
      const tp = Math.min(64, Math.floor((256 * 8) / k.dh)); // the block size at PORTABLE_TARGET's 256 invocations
      gradValueSplits(k, hardware).forEach((s, l) => {
        const entries = expectedBlockEntries(k, tp, k.levels[l]);
        if (s === 1) assert.ok(entries <= SPLIT_FROM_CHUNKS * 256, `level ${l}: ${entries} entries, whole`);
        else {
          assert.ok(entries > SPLIT_FROM_CHUNKS * 256 && s <= MAX_VALUE_SPLITS, `level ${l}: ${entries} entries in ${s}`);
          assert.ok(s === MAX_VALUE_SPLITS || entries / s <= SLICE_CHUNKS * 256, `level ${l}: slices of ${entries / s}`);
          assert.ok(entries / (s - 1) > SLICE_CHUNKS * 256, `level ${l}: ${s - 1} slices would do`);
        }
      });
    }),
  );
});

test('the chain follows the splits: S workgroups per block, partial sums and a sum kernel for the split levels only', () => {
  const cases = fc.tuple(
    msGeometry({ lq: [1, 300], m: [1, 3], dh: [1, 40], p: [1, 4], side: 40, levels: 4 }),
    fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 4, maxLength: 4 }),
  );
  fc.assert(
    fc.property(cases, ([c, s]) => {
      const k = geometry(c);
      const splits = s.slice(0, k.levels.length);
      const { chain } = kernelsFor(k, withSplits(splits));
      const tp = Math.min(64, Math.floor((256 * 8) / k.dh));
      const blocks = k.levels.map(([h, w]) => Math.ceil((h * w) / tp));
      const split = (l: number) => splits[l] > 1;
      const rows = blocks.reduce((a, b, l) => a + (split(l) ? b * splits[l] : 0), 0);
      assert.equal(workgroups(chain.kernels[4].dispatch), k.n * k.m * blocks.reduce((a, b, l) => a + b * splits[l], 0));
      assert.equal(chain.scratch.find((x) => x.name === 'partial sums')?.words, rows ? k.n * k.m * rows * tp * k.dh : undefined);
      assert.equal(chain.kernels.length, rows ? 6 : 5);
      if (rows) {
        const elements = k.n * k.m * k.dh * k.levels.reduce((a, [h, w], l) => a + (split(l) ? h * w : 0), 0);
        assert.equal(workgroups(chain.kernels[5].dispatch), Math.ceil(elements / 256));
      }
    }),
  );
});

test('the split chain: a sum kernel, partial sums for the split levels\' blocks, S workgroups per split block', () => {
  const k = m2f([[64, 64], [32, 32], [16, 16]]);
  const { chain } = kernelsFor(k, hardware);
  assert.deepEqual(
    chain.kernels.map((x) => x.name),
    ['msdeform_attn_grad_value_rank', 'msdeform_attn_grad_value_scan', 'msdeform_attn_grad_value_scan_blocks', 'msdeform_attn_grad_value_fill', 'msdeform_attn_grad_value_indexed_f32', 'msdeform_attn_grad_value_sum_f32'],
  );
  // Blocks of 64 pixels: 64, 16 and 4 per (n, m), in 1, 6 and 20 workgroups each; 8 heads.
  assert.equal(workgroups(chain.kernels[4].dispatch), 8 * (64 + 16 * 6 + 4 * 20));
  const partials = chain.scratch.find((s) => s.name === 'partial sums');
  assert.equal(partials?.words, 8 * (16 * 6 + 4 * 20) * 64 * 32);
  // The sum kernel: one invocation per value element of the split levels (32x32 and 16x16).
  assert.equal(workgroups(chain.kernels[5].dispatch), (8 * (32 * 32 + 16 * 16) * 32) / 256);
  // No split: the five-kernel chain and no partial sums.
  const whole = kernelsFor(k, withSplits(1)).chain;
  assert.equal(whole.kernels.length, 5);
  assert.ok(!whole.scratch.some((s) => s.name === 'partial sums'));
  assert.equal(workgroups(whole.kernels[4].dispatch), 8 * (64 + 16 + 4));
});

test('Target.tuning.msdeformSplits: one number for every level or one per level; bad values name the key', () => {
  const k = m2f([[8, 8], [4, 4]]);
  assert.deepEqual(gradValueSplits(k, withSplits(3)), [3, 3]);
  assert.deepEqual(gradValueSplits(k, withSplits([1, 5])), [1, 5]);
  assert.deepEqual(gradValueSplits(k, { ...software, tuning: { msdeformSplits: 2 } }), [2, 2]);
  assert.throws(() => gradValueSplits(k, withSplits([2])), /Target\.tuning\.msdeformSplits: 1 splits given for 2 levels/);
  for (const bad of [0, MAX_VALUE_SPLITS + 1, 1.5]) assert.throws(() => gradValueSplits(k, withSplits(bad)), /Target\.tuning\.msdeformSplits: .* a whole number from 1 to 64/);
});

test('the point kernels: up to MAX_POINT_LANES lanes per point on hardware, one on software adapters', () => {
  assert.equal(pointLanes(m2f([[8, 8]]), hardware), MAX_POINT_LANES);
  assert.equal(pointLanes(geometry({ n: 1, lq: 3, m: 1, dh: 3, p: 2, levels: [[2, 2]] }), hardware), 2);
  assert.equal(pointLanes(geometry({ n: 1, lq: 3, m: 1, dh: 1, p: 2, levels: [[2, 2]] }), hardware), 1);
  assert.equal(pointLanes(m2f([[8, 8]]), software), 1);
  // 8 lanes: 32 points per workgroup of 256.
  const k = m2f([[8, 8]]);
  const { points } = kernelsFor(k, hardware);
  assert.equal(workgroups(points.dispatch), Math.ceil((64 * 8 * 4) / 32));
  assert.match(points.wgsl, /const LANES = 8u;/);
  assert.doesNotMatch(kernelsFor(k, software).points.wgsl, /LANES/);
});
