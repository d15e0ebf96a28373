// The reduction and row kernels (kernels/reduce.ts, kernels/row.ts) on Dawn against the float64 CPU
// reference: sum and max over random dim sets (negative dims, keepdim, empty dim lists), both variants (one
// invocation per output, one workgroup per output for reduced sizes > 256), NaN propagation; softmax and
// log_softmax along any dim and layernorm, short rows (one invocation per row) and long ones (one workgroup per
// row), large-magnitude inputs (stability), the hardware-style tree reductions and a target with tight limits.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { GPU_RULES } from '../../kernels/index.js';
import { fcParams, hardwareLike, shapeArb, tightTarget } from './core-util.js';
import { checkAgainstReference, randomTensor, withDevice } from './harness.js';

/** A shape and a subset of its dims, each written positive or negative. */
const dimsArb = shapeArb(1, 4, 7).chain((shape) =>
  fc
    .tuple(fc.subarray([...shape.keys()]), fc.array(fc.boolean(), { minLength: shape.length, maxLength: shape.length }), fc.boolean())
    .map(([dims, neg, keepdim]) => ({ shape, dims: dims.map((d) => (neg[d] ? d - shape.length : d)), keepdim })),
);

/** The kernel of sum over the last dim of [20, 300] for `target` (code only, nothing runs). */
function rowSumKernel(target: Target): Kernel {
  const b = new Builder();
  const node = b.graph.node(b.add('sum', [b.input('x', [20, 300])], { dims: [-1] }));
  const rule = GPU_RULES.sum;
  if (rule.kind !== 'kernel') throw new Error('sum has no kernel');
  return rule.gen(node, node.inputs.map((i) => b.graph.node(i)), target);
}

/**
 * laneCount's rule (kernels/reduce.ts) for rows of 300 on a hardware target limited to 64 invocations: one
 * subgroup per row where its lanes hold the row in registers (16 values each), else the limit's 64 lanes.
 */
function expectedRowLanes(target: Target): number {
  const sg = target.features.includes('subgroups') ? target.subgroupMinSize : undefined;
  return sg !== undefined && sg < 64 && Math.ceil(300 / sg) <= 16 ? sg : 64;
}

await withDevice(async (gpu) => {
  await describe('sum and max', async () => {
    await test('random shapes and dim sets (one invocation per output)', async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom('sum' as const, 'max' as const), dimsArb, fc.integer(), async (op, { shape, dims, keepdim }, seed) => {
          await checkAgainstReference(gpu, (b, [x]) => b.add(op, [x], { dims, keepdim }), [randomTensor(shape, seed)], {
            label: `${op} [${shape}] dims ${dims} keepdim ${keepdim}`,
            exact: op === 'max',
          });
        }),
        fcParams(12, 301),
      );
    });
    await test('reduced sizes above 256: one workgroup per output element', async () => {
      const cases: [number[], number[], boolean][] = [
        [[3, 700], [-1], false],
        [[20, 5, 30], [0, 2], true],
        [[1000], [0], false],
        [[7, 300], [0, 1], true],
      ];
      for (const [shape, dims, keepdim] of cases) {
        for (const op of ['sum', 'max'] as const) {
          const r = await checkAgainstReference(gpu, (b, [x]) => b.add(op, [x], { dims, keepdim }), [randomTensor(shape, shape.length)], { exact: op === 'max', label: `${op} [${shape}]` });
          assert.equal(r.kernels[0].name, `reduce_${op}_tree_f32`);
        }
      }
    });
    await test('max propagates NaN and keeps -inf for all -inf; sums of an empty dim list copy', async () => {
      const x = randomTensor([4, 300], 5);
      x.data[17] = NaN;
      x.data[300 + 299] = NaN;
      for (let i = 600; i < 900; i++) x.data[i] = -Infinity;
      for (const dims of [[1], [0]]) {
        const r = await checkAgainstReference(gpu, (b, [a]) => b.add('max', [a], { dims }), [x], { exact: true });
        if (dims[0] === 1) assert.deepEqual([...r.gpu].map((v) => (Number.isNaN(v) ? 'nan' : v === -Infinity ? '-inf' : 'x')), ['nan', 'nan', '-inf', 'x']);
      }
      const small = randomTensor([3, 5], 6);
      small.data[7] = NaN;
      await checkAgainstReference(gpu, (b, [a]) => b.add('max', [a], { dims: [1] }), [small], { exact: true });
      await checkAgainstReference(gpu, (b, [a]) => b.add('sum', [a], { dims: [] }), [small], { exact: true });
    });
    await test('tree reductions of a hardware target and a tight target (64 invocations, 3 groups per dim)', async () => {
      await checkAgainstReference(gpu, (b, [x]) => b.add('sum', [x], { dims: [0, 2] }), [randomTensor([30, 5, 20], 8)], { target: hardwareLike(gpu.target) });
      await checkAgainstReference(gpu, (b, [x]) => b.add('max', [x], { dims: [1] }), [randomTensor([5, 400], 9)], { target: hardwareLike(gpu.target), exact: true });
      // A software adapter gives a slice one subgroup's width of lanes (kernels/reduce.ts, laneCount); hardware up to the limit.
      const r = await checkAgainstReference(gpu, (b, [x]) => b.add('sum', [x], { dims: [-1] }), [randomTensor([20, 300], 10)], { target: tightTarget(gpu.target) });
      assert.ok(r.kernels[0].workgroupSize[0] <= 64, `${r.kernels[0].workgroupSize}`);
      // Both sides of the rule on every device, from explicit subgroup sizes (lavapipe's 8, NVIDIA's 32, none)...
      const tightHw = hardwareLike(tightTarget(gpu.target));
      const subgroupsOf = (size: number | undefined): Target => {
        const features = tightHw.features.filter((f) => f !== 'subgroups');
        return size === undefined ? { ...tightHw, features } : { ...tightHw, features: [...features, 'subgroups'], subgroupMinSize: size, subgroupMaxSize: size };
      };
      for (const [size, lanes] of [[8, 64], [32, 32], [undefined, 64]] as const) {
        const target = subgroupsOf(size);
        assert.equal(expectedRowLanes(target), lanes, `subgroups of ${size}`);
        assert.deepEqual(rowSumKernel(target).workgroupSize, [lanes, 1, 1], `subgroups of ${size}`);
      }
      // ...and the device's own subgroup size, run against the reference.
      const h = await checkAgainstReference(gpu, (b, [x]) => b.add('sum', [x], { dims: [-1] }), [randomTensor([20, 300], 10)], { target: tightHw });
      assert.deepEqual(h.kernels[0].workgroupSize, [expectedRowLanes(tightHw), 1, 1], `${gpu.target.name}: subgroups of ${tightHw.subgroupMinSize}`);
      await checkAgainstReference(gpu, (b, [x]) => b.add('sum', [x], { dims: [1] }), [randomTensor([90, 7], 11)], { target: tightTarget(gpu.target) });
    });
  });

  await describe('softmax, log_softmax, layernorm', async () => {
    await test('along random dims, short and long rows', async () => {
      const arb = fc.tuple(shapeArb(0, 3, 5, 30), fc.integer({ min: 1, max: 90 }), fc.nat(), fc.boolean(), fc.integer());
      await fc.assert(
        fc.asyncProperty(fc.constantFrom('softmax' as const, 'log_softmax' as const), arb, async (op, [base, len, at, neg, seed]) => {
          // The row dim of length `len` inserted at position d (under 2700 elements).
          const d = at % (base.length + 1);
          const shape = [...base.slice(0, d), len, ...base.slice(d)];
          const dim = neg ? d - shape.length : d;
          await checkAgainstReference(gpu, (b, [x]) => b.add(op, [x], { dim }), [randomTensor(shape, seed, -4, 4)], { label: `${op} [${shape}] dim ${dim}` });
        }),
        fcParams(7, 401),
      );
    });
    await test('layernorm over the last dim, short and long rows', async () => {
      for (const [shape, eps] of [[[3, 7], 1e-5], [[2, 3, 77], 1e-6], [[5, 300], 1e-5], [[1], 0.1], [[4, 1000], 1e-5]] as [number[], number][]) {
        const x = randomTensor(shape, shape.length + shape[shape.length - 1], -3, 5);
        await checkAgainstReference(gpu, (b, [a]) => b.add('layernorm', [a], { eps }), [x], { label: `[${shape}]`, atol: 3e-6 });
      }
    });
    await test('stable for large logits and offsets (max subtracted, two-pass variance)', async () => {
      const x = randomTensor([4, 50], 12, -3, 3);
      for (let i = 0; i < x.data.length; i++) x.data[i] += i < 100 ? 1000 : -2000;
      for (const op of ['softmax', 'log_softmax'] as const) await checkAgainstReference(gpu, (b, [a]) => b.add(op, [a], { dim: -1 }), [x], { atol: 1e-5 });
      const y = randomTensor([3, 64], 13, -1, 1);
      for (let i = 0; i < y.data.length; i++) y.data[i] = 1000 + y.data[i];
      // The input is exact in f32 but ~1e-4 apart around 1000: relative error of the centred values ~1e-4·ε.
      await checkAgainstReference(gpu, (b, [a]) => b.add('layernorm', [a], { eps: 1e-5 }), [y], { atol: 2e-4, rtol: 1e-4 });
    });
    await test('-inf entries and NaN rows as the reference', async () => {
      const x = randomTensor([3, 40], 14);
      x.data[3] = -Infinity;
      x.data[45] = NaN;
      for (const op of ['softmax', 'log_softmax'] as const) await checkAgainstReference(gpu, (b, [a]) => b.add(op, [a], { dim: 1 }), [x]);
    });
    await test('hardware-style tree reductions and tight limits', async () => {
      await checkAgainstReference(gpu, (b, [a]) => b.add('log_softmax', [a], { dim: 0 }), [randomTensor([300, 5], 15)], { target: hardwareLike(gpu.target) });
      const r = await checkAgainstReference(gpu, (b, [a]) => b.add('layernorm', [a], { eps: 1e-5 }), [randomTensor([3, 500], 16)], { target: tightTarget(gpu.target), atol: 3e-6 });
      assert.ok(r.kernels[0].workgroupSize[0] <= 64, `${r.kernels[0].workgroupSize}`);
      const h = await checkAgainstReference(gpu, (b, [a]) => b.add('layernorm', [a], { eps: 1e-5 }), [randomTensor([3, 500], 16)], { target: hardwareLike(tightTarget(gpu.target)), atol: 3e-6 });
      assert.deepEqual(h.kernels[0].workgroupSize, [64, 1, 1]);
    });
  });
});
