// MSDeformAttn in f16 (the original runs it under fp16): f16 value, locations and weights stored as f16 on a
// shader-f16 device, computed in f32, the output and gradients stored as f16. Against the float64 reference on
// the same f16 inputs, within f16 rounding of the results.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { Builder } from '../../compiler/ir/builder.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng, randomTensor } from '../ir/util.js';

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

/** The f16 forward and its VJP in all three inputs (2 levels 4x5 and 2x3, 2 heads of 8, 3 points, 6 queries). */
function f16Graph() {
  const levels = [
    [4, 5],
    [2, 3],
  ];
  const [N, M, Dh, L, P, Lq] = [1, 2, 8, 2, 3, 6];
  const S = levels.reduce((n, [h, w]) => n + h * w, 0);
  const b = new Builder();
  const value = b.input('value', [N, S, M, Dh], 'f16');
  const loc = b.input('sampling_locations', [N, Lq, M, L, P, 2], 'f16');
  const attw = b.input('attention_weights', [N, Lq, M, L, P], 'f16');
  const y = b.add('msdeform_attn', [value, loc, attw], { levels });
  assert.equal(b.graph.node(y).dtype, 'f16');
  b.output('y', y);
  const r = vjp(b.graph, [value, loc, attw]);
  ['value', 'sampling_locations', 'attention_weights'].forEach((n, i) => r.builder.output(`d:${n}`, r.grads.get([value, loc, attw][i])!));
  return r.builder.graph;
}

/** Runs the program against the reference on the same f16 inputs, within f16 rounding of the results. */
async function checkF16(graph: ReturnType<typeof f16Graph>, program: ReturnType<typeof compileGpu>) {
  const rng = makeRng(9);
  const f16 = (tensor: RefTensor): RefTensor => ({ ...tensor, data: tensor.data.map(roundF16) });
  const ranges: Record<string, [number, number]> = { value: [-2, 2], sampling_locations: [-0.1, 1.1], attention_weights: [0, 1], 'd:y': [-1, 1] };
  const inputs = new Map(graph.inputs.map((i) => [i.name, f16(randomTensor(graph.node(i.node).shape, rng, ...ranges[i.name]))] as const));
  const got = await runGpu(gpu, graph, program, inputs, new Map());
  const want = interpret(graph, inputs);
  for (const [name, w] of want) {
    const g = got.get(name)!;
    let scale = 1e-6;
    for (const v of w.data) scale = Math.max(scale, Math.abs(v));
    // Each stored result is one f16 rounding (2⁻¹¹ relative) of an f32 sum; allow twice that of the largest.
    w.data.forEach((v, i) => assert.ok(Math.abs(g.data[i] - v) <= 2 ** -10 * Math.max(Math.abs(v), 0.05 * scale) + 1e-6 * scale, `${name}[${i}]: ${g.data[i]} vs ${v} (scale ${scale})`));
  }
}

test('f16 MSDeformAttn forward and gradients: f16 storage, f32 arithmetic', async (t) => {
  if (!gpu.target.features.includes('shader-f16')) return t.skip(`the adapter ${gpu.target.name} has no shader-f16`);
  const graph = f16Graph();
  const program = compileGpu(graph, gpu.target);
  // Every kernel that reads or writes a float value does so as f16; the value gradient's index kernels (scan,
  // fill) bind only their u32 scratch.
  assert.deepEqual(
    program.schedule.kernels.map((k) => k.name),
    [
      'msdeform_attn_f32_f16io',
      'msdeform_attn_grad_value_rank_f16io',
      'msdeform_attn_grad_value_scan',
      'msdeform_attn_grad_value_scan_blocks',
      'msdeform_attn_grad_value_fill',
      'msdeform_attn_grad_value_indexed_f32_f16io',
      'msdeform_attn_grad_points_f32_f16io',
    ],
  );
  assert.ok(program.schedule.values.filter((v) => v.dtype === 'f16').length >= 8);
  await checkF16(graph, program);
});

test('f16 value gradient with split blocks: f32 partial sums, the sum kernel stores f16', async (t) => {
  if (!gpu.target.features.includes('shader-f16')) return t.skip(`the adapter ${gpu.target.name} has no shader-f16`);
  const graph = f16Graph();
  const program = compileGpu(graph, { ...gpu.target, tuning: { msdeformSplits: [2, 3] } });
  const names = program.schedule.kernels.map((k) => k.name);
  assert.ok(names.includes('msdeform_attn_grad_value_indexed_f32_f16io') && names.includes('msdeform_attn_grad_value_sum_f32_f16io'), names.join(', '));
  const partials = program.schedule.values.find((v) => v.name?.startsWith('partial sums for %'));
  assert.equal(partials?.dtype, 'f32');
  await checkF16(graph, program);
});
