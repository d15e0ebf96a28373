// Reduction prologues (compiler/codegen/fuse.ts planReducePrologues, kernels/reduce.ts): an elementwise tree that
// only a sum or max reads is computed inside the reduction's kernel. On the device, bit for bit the unfused
// kernels, for the sequential (short) and tree (long) variants, with broadcast inputs and inlined constants.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { schedule } from '../../compiler/codegen/schedule.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { GPU_RULES } from '../../kernels/index.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { makeRng, randomTensor } from '../ir/util.js';
import { assertSchedulesAgree } from './harness.js';

type Case = { what: string; graph: Graph; kernel: RegExp };

/** sum(g·out) over the last dim (attention's δ), sum((x − m)·s) over dims 0 and 2 with broadcasts, max(exp(x)·0.5). */
function cases(len: number): Case[] {
  const delta = new Builder();
  delta.output('y', delta.add('sum', [delta.mul(delta.input('g', [3, len]), delta.input('out', [3, len]))], { dims: [-1], keepdim: false }));
  const ln = new Builder();
  const x = ln.input('x', [len, 4, 3]);
  const centred = ln.add('sub', [x, ln.input('m', [1, 4, 1])]);
  ln.output('y', ln.add('sum', [ln.mul(centred, ln.input('s', [3]))], { dims: [0, 2], keepdim: true }));
  const mx = new Builder();
  mx.output('y', mx.add('max', [mx.scale(mx.add('exp', [mx.input('x', [2, len])]), 0.5)], { dims: [1], keepdim: false }));
  return [
    { what: `sum(g·out) over ${len}`, graph: delta.graph, kernel: /^reduce_sum_\w+_f32\+mul$/ },
    { what: `sum((x − m)·s) over dims 0 and 2 of [${len}, 4, 3]`, graph: ln.graph, kernel: /^reduce_sum_\w+_f32\+sub_mul$/ },
    { what: `max(exp(x)·0.5) over ${len}`, graph: mx.graph, kernel: /^reduce_max_\w+_f32\+exp_mul$/ },
  ];
}

test('one kernel per reduction and its elementwise input; not when the input is read elsewhere or is an output', () => {
  for (const c of cases(40)) {
    const s = schedule(c.graph, PORTABLE_TARGET, GPU_RULES);
    assert.equal(s.kernels.length, 1, `${c.what}: ${s.kernels.map((k) => k.name).join(', ')}`);
    assert.match(s.kernels[0].name, c.kernel, c.what);
  }
  const b = new Builder();
  const p = b.mul(b.input('a', [2, 8]), b.input('b', [2, 8]));
  b.output('y', b.add('sum', [p], { dims: [1], keepdim: false }));
  b.output('p', p);
  assert.deepEqual(schedule(b.graph, PORTABLE_TARGET, GPU_RULES).kernels.map((k) => k.name), ['ew_mul_f32', 'reduce_sum_seq_f32']);
});

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

test('on the device: fused equals unfused bit for bit (reduced sizes 7 and 300)', async () => {
  const rng = makeRng(8);
  for (const len of [7, 300]) {
    for (const c of cases(len)) {
      const inputs = new Map(c.graph.inputs.map((e) => [e.name, randomTensor(c.graph.node(e.node).shape, rng, -3, 3)] as const)) as Map<string, RefTensor>;
      const fused = await assertSchedulesAgree(gpu, c.graph, { inputs }, {}, { fuse: false }, c.what);
      assert.match(fused.schedule.kernels[0].name, c.kernel, c.what);
    }
  }
});
