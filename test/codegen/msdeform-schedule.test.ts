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
import { assertSchedulesAgree, assertWithin } from '../kernels/harness.js';
import { msGeometry } from '../ir/msdeform-geometry.js';

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

const geometry = msGeometry({ lq: [1, 40], m: [1, 2], dh: [1, 6], p: [1, 3], side: 9, levels: 3 });

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
        const scale = w.data.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
        assertWithin(Float32Array.from(got.get(name)!.data), w.data, (i) => 1e-5 * scale + 1e-5 * Math.abs(w.data[i]), `${what}: ${name}`);
      }
    }),
    { numRuns: Number(process.env.VISFT_KERNEL_RUNS ?? 6) },
  );
});
