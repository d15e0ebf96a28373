// Numbers carried by the dispatch (kernels/grid-param.ts): slices, pads, crops and dropouts that differ only in
// a start, an offset or a seed share one WGSL text, and still match the float64 reference bit for bit, with
// the elements spread over several z layers, with more z layers than elements, and with a number too large to
// carry (baked into the WGSL instead). The demo's caption step: per-step kernels of one shape share a shader.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkFiles } from '../../compiler/check/index.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import type { IrOp } from '../../compiler/ir/ops.js';
import { dropoutKeeps, saltedSeed } from '../../compiler/ir/rules/reference-core.js';
import { trainPlan } from '../../compiler/train/plan.js';
import { compileStep } from '../../compiler/train/step-graph.js';
import { gridDispatch, gridParamMax } from '../../kernels/grid-param.js';
import { GPU_RULES } from '../../kernels/index.js';
import { fcParams, hardwareLike } from './core-util.js';
import { checkAgainstReference, randomTensor, withDevice } from './harness.js';

const exact = { exact: true } as const;

/** The kernel of one op on inputs of the given shapes. */
function kernelOf(op: IrOp, shapes: readonly (readonly number[])[], attrs: Attrs, target: Target): Kernel {
  const b = new Builder();
  const ins = shapes.map((s, i) => b.input(`x${i}`, s));
  const node = b.graph.node(b.add(op, ins, attrs));
  const rule = GPU_RULES[op];
  if (rule.kind !== 'kernel') throw new Error(`${op} has no kernel`);
  return rule.gen(node, node.inputs.map((i) => b.graph.node(i)), target);
}

/** Asserts that the kernels share one WGSL text and returns their dispatches' z sizes. */
function sharedText(kernels: readonly Kernel[], what: string): number[] {
  for (const k of kernels) assert.equal(k.wgsl, kernels[0].wgsl, `${what}: the WGSL differs`);
  return kernels.map((k) => k.dispatch[2]);
}

await withDevice(async (gpu) => {
  // The premise of these tests: a software adapter's target (numbers up to 16 carried, larger ones baked in;
  // kernels/grid-param.ts), whatever device runs them. A hardware device carries up to 1024, so its own target
  // would carry the "too large" start too. Kernels generated for it are valid WGSL on any device.
  const sw: Target = { ...gpu.target, name: `${gpu.target.name} (as a software adapter)`, isFallbackAdapter: true };
  const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

  await describe('numbers carried by the dispatch', async () => {
    test('gridDispatch: the number rides in z, x covers the elements, the loop stride stays below 2^31', () => {
      assert.equal(gridParamMax(sw), 16);
      assert.equal(gridParamMax(hardwareLike(sw)), 1024);
      for (const bad of [17, -1, 2.5, NaN]) assert.equal(gridDispatch(100, bad, 256, sw), undefined, String(bad));
      const maxD = sw.limits.maxComputeWorkgroupsPerDimension;
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 1024 }), fc.constantFrom(8, 64, 256), (n, param, wg) => {
          const d = gridDispatch(n, param, wg, hardwareLike(sw));
          assert.ok(d);
          const [x, y, z] = d;
          assert.equal(z, param + 1);
          assert.equal(y, 1);
          assert.ok(x >= 1 && x <= maxD);
          assert.ok(x * z * wg < 2 ** 31 || x === 1, `stride ${x * z * wg}`);
          // Enough invocations for one element each, unless x hit a cap (the grid-stride loop covers the rest).
          assert.ok(x * z * wg >= n || x === maxD || (x + 1) * z * wg > 2 ** 31 - 1);
        }),
        // A stride of exactly 2^31 (z·wg a power of two dividing it) once passed as "below": found at 4x the runs.
        { ...fcParams(200, 901), examples: [[2 ** 31 - 1, 1023, 256]] },
      );
    });

    await test('slices differing only in start share a shader and match the reference bit for bit', async () => {
      // Steps of an unrolled loop: start t along a dim of length 12, fewer elements than z layers.
      const steps = range(12).map((t) => kernelOf('slice', [[3, 12, 70]], { dim: 1, start: t, end: t + 1 }, sw));
      assert.deepEqual(sharedText(steps, 'step slices'), range(12, 1));
      for (const t of [0, 5, 11]) await checkAgainstReference(gpu, (b, [x]) => b.add('slice', [x], { dim: 1, start: t, end: t + 1 }), [randomTensor([3, 12, 70], t)], { ...exact, target: sw, label: `step ${t}` });
      // Chunks (q, k, v parts; an LSTM's gates): counted in chunks of the slice's length.
      const chunks = range(4).map((c) => kernelOf('slice', [[5, 384]], { dim: 1, start: 96 * c, end: 96 * (c + 1) }, sw));
      assert.deepEqual(sharedText(chunks, 'chunk slices'), [1, 2, 3, 4]);
      await checkAgainstReference(gpu, (b, [x]) => b.add('slice', [x], { dim: -1, start: 288, end: 384 }), [randomTensor([5, 384], 7)], { ...exact, target: sw });
      // Many elements over 3 z layers (a grid-stride loop across layers), with a step.
      await checkAgainstReference(gpu, (b, [x]) => b.add('slice', [x], { dim: 1, start: 2, end: 9, step: 3 }), [randomTensor([2, 9, 3000], 8)], { ...exact, target: sw });
      // A start too large to carry on a software adapter is baked in, and still right.
      const far = kernelOf('slice', [[2, 40]], { dim: 1, start: 17, end: 18 }, sw);
      assert.notEqual(far.wgsl, kernelOf('slice', [[2, 40]], { dim: 1, start: 16, end: 17 }, sw).wgsl);
      assert.equal(far.dispatch[2], 1);
      const baked = await checkAgainstReference(gpu, (b, [x]) => b.add('slice', [x], { dim: 1, start: 17, end: 18 }), [randomTensor([2, 40], 9)], { ...exact, target: sw });
      assert.equal(baked.kernels[0].wgsl, far.wgsl, 'the baked kernel is the one that ran');
      // The device's own target: carried there when the device is hardware (up to 1024), and still right.
      await checkAgainstReference(gpu, (b, [x]) => b.add('slice', [x], { dim: 1, start: 17, end: 18 }), [randomTensor([2, 40], 9)], exact);
    });

    await test('pads and crops along one dim share a shader per shape; pads along two dims stay baked', async () => {
      const pads = (t: number) => [[0, 0], [t, 10 - t], [0, 0]];
      const padded = range(11).map((t) => kernelOf('pad', [[4, 1, 7]], { pads: pads(t), value: 0 }, sw));
      assert.deepEqual(sharedText(padded, 'step pads'), range(11, 1));
      for (const t of [0, 3, 10]) await checkAgainstReference(gpu, (b, [x]) => b.add('pad', [x], { pads: pads(t), value: t === 3 ? -1.5 : 0 }), [randomTensor([4, 1, 7], t)], { ...exact, label: `pad ${t}` });
      // Crops (a step slice's adjoint written as a pad).
      const crops = (t: number) => [[0, 0], [-t, t - 10], [0, 0]];
      const cropped = range(11).map((t) => kernelOf('pad', [[4, 11, 7]], { pads: crops(t), value: 0 }, sw));
      assert.deepEqual(sharedText(cropped, 'step crops'), range(11, 1));
      await checkAgainstReference(gpu, (b, [x]) => b.add('pad', [x], { pads: crops(4), value: 0 }), [randomTensor([4, 11, 7], 4)], exact);
      // Chunk pads (the adjoint of chunk slices), many elements over z layers.
      const chunkPads = range(4).map((c) => kernelOf('pad', [[8, 32]], { pads: [[0, 0], [32 * c, 96 - 32 * c]], value: 0 }, sw));
      assert.deepEqual(sharedText(chunkPads, 'chunk pads'), [1, 2, 3, 4]);
      await checkAgainstReference(gpu, (b, [x]) => b.add('pad', [x], { pads: [[0, 0], [0, 0], [64, 32]], value: 0 }), [randomTensor([30, 11, 32], 5)], exact);
      // Two padded dims: the offsets stay in the WGSL.
      const two = (a: number) => kernelOf('pad', [[3, 4]], { pads: [[a, 0], [0, 1]], value: 0 }, sw);
      assert.notEqual(two(1).wgsl, two(2).wgsl);
      assert.equal(two(1).dispatch[2], 1);
    });

    await test('dropout seeds ride in the dispatch: one shader, masks as the reference, with and without a salt', async () => {
      const p = 0.3;
      const seeds = range(12, 1).map((seed) => kernelOf('dropout', [[9, 37]], { p, seed }, sw));
      assert.deepEqual(sharedText(seeds, 'dropout seeds'), range(12, 2));
      const salted = range(12, 1).map((seed) => kernelOf('dropout', [[9, 37], [1]], { p, seed }, sw));
      sharedText(salted, 'salted dropout seeds');
      const x = randomTensor([9, 37], 3, 0.5, 2);
      for (const seed of [1, 7, 17]) {
        const r = await checkAgainstReference(gpu, (b, [a]) => b.add('dropout', [a], { p, seed }), [x], { rtol: 2e-7 });
        r.gpu.forEach((v, i) => assert.equal(v !== 0, dropoutKeeps(seed, i, p), `seed ${seed}, element ${i}`));
        const salt = { shape: [1], data: Float32Array.of(777) };
        const s = await checkAgainstReference(gpu, (b, [a, q]) => b.add('dropout', [a, q], { p, seed }), [x, salt], { rtol: 2e-7 });
        s.gpu.forEach((v, i) => assert.equal(v !== 0, dropoutKeeps(saltedSeed(seed, 777), i, p), `seed ${seed} salted, element ${i}`));
      }
    });

    test("the demo's caption step: slices, pads and dropouts of one shape share one shader", () => {
      const checked = checkFiles(['pipelines/demo.visft'], { ...process.env, VISFT_DEMO_DATA: 'demo-data' });
      const root = checked.roots[0];
      assert.ok(root);
      const stage = trainPlan(checked, root).stages[0];
      const kernels = compileGpu(compileStep(checked, root, stage, stage.tasks[0]).graph, sw).schedule.kernels;
      const byShapes = new Map<string, Set<string>>();
      for (const k of kernels.filter((k) => /^(slice|pad|ew_dropout)_f32$/.test(k.name))) {
        const head = k.wgsl.slice(0, k.wgsl.indexOf('\n'));
        byShapes.set(head, (byShapes.get(head) ?? new Set()).add(k.wgsl));
      }
      assert.ok(byShapes.size > 5);
      for (const [head, texts] of byShapes) assert.equal(texts.size, 1, `${head}: ${texts.size} shaders`);
    });
  });
});
