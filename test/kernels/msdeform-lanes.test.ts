// MSDeformAttn's backward as a hardware target schedules it, on this device: the point kernels with several
// invocations per point (kernels/msdeform.ts pointLanes) and the value gradient with its default splits
// (kernels/msdeform-value-grad.ts gradValueSplits). Against the float64 reference; the sibling kernel (both point
// gradients) bit for bit against the two kernels it replaces; every output bitwise repeatable.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng, randomTensor } from '../ir/util.js';
import { msGeometry, type MsCase } from '../ir/msdeform-geometry.js';
import { assertWithin, scheduledProgram } from './harness.js';

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

/** The forward's VJP in value, locations and weights. */
function backwardGraph(c: MsCase) {
  const S = c.levels.reduce((t, [h, w]) => t + h * w, 0);
  const L = c.levels.length;
  const b = new Builder();
  const value = b.input('value', [c.n, S, c.m, c.dh]);
  const loc = b.input('sampling_locations', [c.n, c.lq, c.m, L, c.p, 2]);
  const attw = b.input('attention_weights', [c.n, c.lq, c.m, L, c.p]);
  b.output('y', b.add('msdeform_attn', [value, loc, attw], { levels: c.levels }));
  const r = vjp(b.graph, [value, loc, attw]);
  ['value', 'sampling_locations', 'attention_weights'].forEach((name, i) => r.builder.output(`d:${name}`, r.grads.get([value, loc, attw][i])!));
  return r.builder.graph;
}

const bits = (x: ArrayLike<number>) => Buffer.from(Float32Array.from(x).buffer);

// Dh up to 20: 8 lanes with channels left over; queries enough that some levels' blocks split by default.
const geometry = msGeometry({ lq: [1, 300], m: [1, 2], dh: [1, 20], p: [1, 4], side: 6, levels: 3 });

/** Runs case `c` through the hardware schedule and checks it; the schedule's kernel names. */
async function check(c: MsCase): Promise<string[]> {
  const hardware: Target = { ...gpu.target, name: 'hardware', isFallbackAdapter: false };
  const graph = backwardGraph(c);
  const rng = makeRng(c.seed);
  const ranges: Record<string, [number, number]> = { value: [-1, 1], sampling_locations: [-0.2, 1.2], attention_weights: [0, 1], 'd:y': [-1, 1] };
  const inputs = new Map<string, RefTensor>(graph.inputs.map((i) => [i.name, randomTensor(graph.node(i.node).shape, rng, ...ranges[i.name])]));
  const what = `N ${c.n} Lq ${c.lq} M ${c.m} Dh ${c.dh} P ${c.p} levels ${JSON.stringify(c.levels)}`;
  const sibling = scheduledProgram(graph, hardware, {});
  const names = sibling.schedule.kernels.map((k) => k.name);
  assert.ok(names.includes('msdeform_attn_grad_points_f32'), `${what}: ${names.join(', ')}`);
  const got = await runGpu(gpu, graph, sibling, inputs, new Map());
  const again = await runGpu(gpu, graph, sibling, inputs, new Map());
  const separate = await runGpu(gpu, graph, scheduledProgram(graph, hardware, { siblings: false }), inputs, new Map());
  const want = interpret(graph, inputs);
  for (const [name, w] of want) {
    const g = got.get(name)!.data;
    assert.deepEqual(bits(again.get(name)!.data), bits(g), `${what}: ${name} repeatable`);
    if (name !== 'y' && name !== 'd:value') assert.deepEqual(bits(separate.get(name)!.data), bits(g), `${what}: ${name}, sibling vs separate kernels`);
    const scale = w.data.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
    assertWithin(Float32Array.from(g), w.data, (i) => 1e-5 * scale + 1e-5 * Math.abs(w.data[i]), `${what}: ${name}`);
  }
  return names;
}

test('hardware schedule (lanes per point, default splits): = the reference, sibling = separate kernels bitwise, repeatable', async () => {
  await fc.assert(
    fc.asyncProperty(geometry, async (c) => void (await check(c))),
    { numRuns: Number(process.env.VISFT_KERNEL_RUNS ?? 6) },
  );
});

test('hardware schedule of a crowded level: its blocks split by default (1200 points on 5x6 pixels), 8 lanes per point', async () => {
  const names = await check({ n: 1, lq: 300, m: 2, dh: 11, p: 4, levels: [[5, 6]], seed: 19 });
  assert.ok(names.includes('msdeform_attn_grad_value_sum_f32'), names.join(', '));
});
