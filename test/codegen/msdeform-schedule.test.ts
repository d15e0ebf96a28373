// MSDeformAttn's backward as the schedule runs it (f32): the value gradient's chain with its scratch values
// placed by the memory plan among the other temporaries, and the locations' and weights' gradients in one
// sibling kernel. Against the float64 reference, and the sibling kernel bit for bit against the two kernels it
// replaces (on a software adapter; within rounding on hardware).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { Builder } from '../../compiler/ir/builder.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng, randomTensor } from '../ir/util.js';
import { assertSchedulesAgree } from '../kernels/harness.js';

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

/** The forward and its VJP in all three inputs; `exp` of the output feeds another kernel so temporaries interleave. */
function backwardGraph(n: number, lq: number, m: number, dh: number, p: number, levels: number[][]) {
  const S = levels.reduce((t, [h, w]) => t + h * w, 0);
  const L = levels.length;
  const b = new Builder();
  const value = b.input('value', [n, S, m, dh]);
  const loc = b.input('sampling_locations', [n, lq, m, L, p, 2]);
  const attw = b.input('attention_weights', [n, lq, m, L, p]);
  const y = b.add('msdeform_attn', [value, loc, attw], { levels });
  b.output('y', b.add('exp', [y]));
  const r = vjp(b.graph, [value, loc, attw]);
  ['value', 'sampling_locations', 'attention_weights'].forEach((name, i) => r.builder.output(`d:${name}`, r.grads.get([value, loc, attw][i])!));
  return r.builder.graph;
}

const geometry = fc.record({
  n: fc.integer({ min: 1, max: 2 }),
  lq: fc.integer({ min: 1, max: 40 }),
  m: fc.integer({ min: 1, max: 2 }),
  dh: fc.integer({ min: 1, max: 6 }),
  p: fc.integer({ min: 1, max: 3 }),
  levels: fc.array(fc.tuple(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 9 })), { minLength: 1, maxLength: 3 }),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
});

test('MSDeformAttn backward through the schedule: chain and sibling kernels match the reference and the unfused kernels', async () => {
  await fc.assert(
    fc.asyncProperty(geometry, async (c) => {
      const graph = backwardGraph(c.n, c.lq, c.m, c.dh, c.p, c.levels);
      const rng = makeRng(c.seed);
      const ranges: Record<string, [number, number]> = { value: [-1, 1], sampling_locations: [-0.2, 1.2], attention_weights: [0, 1], 'd:y': [-1, 1] };
      const inputs = new Map<string, RefTensor>(graph.inputs.map((i) => [i.name, randomTensor(graph.node(i.node).shape, rng, ...ranges[i.name])]));
      const what = `N ${c.n} Lq ${c.lq} M ${c.m} Dh ${c.dh} P ${c.p} levels ${JSON.stringify(c.levels)}`;
      const program = await assertSchedulesAgree(gpu, graph, { inputs }, {}, { siblings: false }, what, { terms: c.dh * 4 });
      const names = program.schedule.kernels.map((k) => k.name);
      assert.ok(names.includes('msdeform_attn_grad_points_f32') && !names.some((k) => /grad_(locations|weights)/.test(k)), `${what}: ${names.join(', ')}`);
      assert.ok(names.includes('msdeform_attn_grad_value_indexed_f32'), `${what}: ${names.join(', ')}`);
      assert.ok(program.schedule.values.some((v) => v.name?.startsWith('histogram for %')), `${what}: scratch values are named`);
      const got = await runGpu(gpu, graph, program, inputs, new Map());
      const want = interpret(graph, inputs);
      for (const [name, w] of want) {
        const g = got.get(name)!;
        let scale = 1e-6;
        for (const v of w.data) scale = Math.max(scale, Math.abs(v));
        w.data.forEach((v, i) => assert.ok(Math.abs(g.data[i] - v) <= 1e-5 * scale + 1e-5 * Math.abs(v), `${what}: ${name}[${i}]: ${g.data[i]} vs ${v} (scale ${scale})`));
      }
    }),
    { numRuns: Number(process.env.VISFT_KERNEL_RUNS ?? 6) },
  );
});
