// The movement kernels (kernels/movement.ts) on Dawn against the float64 CPU reference, bit-exact: permute,
// slice (steps, negative dims, empty results), concat (variadic, empty parts), pad (negative pads crop),
// expand, gather and scatter_add (deterministic: repeated indices sum in the reference's order), reshape as
// an alias (no kernel), and the binding limit of concat.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Builder } from '../../compiler/ir/builder.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { GPU_RULES } from '../../kernels/index.js';
import { fcParams, shapeArb } from './core-util.js';
import { checkAgainstReference, randomIndex, randomTensor, withDevice } from './harness.js';

const exact = { exact: true } as const;

await withDevice(async (gpu) => {
  await describe('movement', async () => {
    await test('permute: random permutations', async () => {
      const arb = shapeArb(1, 5, 5).chain((shape) => fc.tuple(fc.constant(shape), fc.shuffledSubarray([...shape.keys()], { minLength: shape.length, maxLength: shape.length }), fc.integer()));
      await fc.assert(
        fc.asyncProperty(arb, async ([shape, dims, seed]) => {
          await checkAgainstReference(gpu, (b, [x]) => b.add('permute', [x], { dims: dims.map((d, i) => (i % 2 ? d - shape.length : d)) }), [randomTensor(shape, seed)], { ...exact, label: `[${shape}] ${dims}` });
        }),
        fcParams(6, 701),
      );
    });
    await test('slice: random ranges and steps', async () => {
      const arb = shapeArb(1, 4, 7).chain((shape) =>
        fc.tuple(fc.constant(shape), fc.nat(shape.length - 1), fc.nat(8), fc.nat(9), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.integer()),
      );
      await fc.assert(
        fc.asyncProperty(arb, async ([shape, d, s0, e0, step, neg, seed]) => {
          const n = shape[d];
          const start = Math.min(s0, n);
          const end = Math.max(start, Math.min(e0, n + 2));
          await checkAgainstReference(gpu, (b, [x]) => b.add('slice', [x], { dim: neg ? d - shape.length : d, start, end, step }), [randomTensor(shape, seed)], { ...exact, label: `[${shape}] dim ${d} ${start}:${end}:${step}` });
        }),
        fcParams(6, 702),
      );
    });
    await test('concat: variadic along any dim, empty parts', async () => {
      await checkAgainstReference(gpu, (b, xs) => b.add('concat', xs, { dim: 1 }), [randomTensor([3, 2, 5], 1), randomTensor([3, 4, 5], 2), randomTensor([3, 0, 5], 3), randomTensor([3, 1, 5], 4)], exact);
      await checkAgainstReference(gpu, (b, xs) => b.add('concat', xs, { dim: -1 }), [randomTensor([2, 3], 5), randomTensor([2, 7], 6)], exact);
      await checkAgainstReference(gpu, (b, xs) => b.add('concat', xs, { dim: 0 }), [randomTensor([1], 7), randomTensor([4], 8), randomTensor([2], 9)], exact);
    });
    await test('concat: more inputs than storage bindings is a clear error', () => {
      const b = new Builder();
      const xs = Array.from({ length: 8 }, (_, i) => b.input(`x${i}`, [2]));
      const y = b.add('concat', xs, { dim: 0 });
      const rule = GPU_RULES.concat;
      assert.equal(rule.kind, 'kernel');
      if (rule.kind === 'kernel') assert.throws(() => rule.gen(b.graph.node(y), xs.map((i) => b.graph.node(i)), PORTABLE_TARGET), /maxStorageBuffersPerShaderStage/);
    });
    await test('pad: random pads, negative pads crop', async () => {
      const arb = shapeArb(1, 4, 6).chain((shape) =>
        fc.tuple(fc.constant(shape), fc.array(fc.tuple(fc.integer({ min: -2, max: 3 }), fc.integer({ min: -2, max: 3 })), { minLength: shape.length, maxLength: shape.length }), fc.double({ min: -5, max: 5, noNaN: true }), fc.integer()),
      );
      await fc.assert(
        fc.asyncProperty(arb, async ([shape, pads0, value, seed]) => {
          // Keep every output dim >= 0.
          const pads = pads0.map(([a, c], i) => (shape[i] + a + c < 0 ? [0, 0] : [a, c]));
          await checkAgainstReference(gpu, (b, [x]) => b.add('pad', [x], { pads, value }), [randomTensor(shape, seed)], { ...exact, label: `[${shape}] ${JSON.stringify(pads)}` });
        }),
        fcParams(6, 703),
      );
    });
    await test('expand: broadcast to a larger shape', async () => {
      await checkAgainstReference(gpu, (b, [x]) => b.add('expand', [x], { shape: [2, 3, 5] }), [randomTensor([3, 1], 1)], exact);
      await checkAgainstReference(gpu, (b, [x]) => b.add('expand', [x], { shape: [4, 1, 6] }), [randomTensor([1, 1, 6], 2)], exact);
      await checkAgainstReference(gpu, (b, [x]) => b.add('expand', [x], { shape: [3, 2] }), [randomTensor([], 3)], exact);
    });
    await test('gather: random indices along any dim', async () => {
      const arb = shapeArb(1, 4, 6).chain((shape) => fc.tuple(fc.constant(shape), fc.nat(shape.length - 1), fc.integer({ min: 1, max: 8 }), fc.integer()));
      await fc.assert(
        fc.asyncProperty(arb, async ([shape, d, len, seed]) => {
          const ishape = shape.map((s, i) => (i === d ? len : s));
          await checkAgainstReference(gpu, (b, [x, i]) => b.add('gather', [x, i], { dim: d - (seed % 2 ? shape.length : 0) }), [randomTensor(shape, seed), randomIndex(ishape, shape[d], seed + 1)], { ...exact, label: `[${shape}] dim ${d}` });
        }),
        fcParams(5, 704),
      );
    });
    await test('scatter_add: repeated indices sum in order; index smaller than the output', async () => {
      const arb = shapeArb(1, 3, 6).chain((shape) =>
        fc.tuple(fc.constant(shape), fc.nat(shape.length - 1), fc.integer({ min: 1, max: 9 }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: shape.length, maxLength: shape.length }), fc.integer()),
      );
      await fc.assert(
        fc.asyncProperty(arb, async ([shape, d, len, shrink, seed]) => {
          // index / g: `len` along dim, at most the output's size elsewhere.
          const ishape = shape.map((s, i) => (i === d ? len : Math.max(1, s - shrink[i])));
          await checkAgainstReference(gpu, (b, [g, i]) => b.add('scatter_add', [g, i], { dim: d, shape }), [randomTensor(ishape, seed), randomIndex(ishape, shape[d], seed + 1)], { label: `[${shape}] dim ${d} index [${ishape}]` });
        }),
        fcParams(6, 705),
      );
    });
    await test('reshape is an alias of its input', async () => {
      assert.deepEqual(GPU_RULES.reshape, { kind: 'alias' });
      const r = await checkAgainstReference(gpu, (b, [x]) => b.add('permute', [b.add('reshape', [x], { shape: [4, -1] })], { dims: [1, 0] }), [randomTensor([2, 2, 3], 4)], exact);
      assert.equal(r.kernels.length, 1);
    });
  });
});
