// Reduction epilogues (compiler/codegen/fuse.ts planFusion's `reduce`, kernels/reduce.ts reduceEpilogueKernel):
// the elementwise ops after a sum or max (layernorm's backward scales its sums by 1/n) run on each result in the
// reduction's kernel, which stores their root instead of the sum. With a prologue too, a whole
// `rsqrt(sum((x − m)·(x − m))·(1/n) + eps)` is one kernel. On the device, fused equals unfused (bit for bit on a
// software adapter), for the sequential (short) and tree (long) variants, broadcast externals and kept dims.
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

type Case = { what: string; graph: Graph; kernel: RegExp; nodes: number };

/** Graphs whose every value but the inputs is computed by one reduction kernel with an epilogue. */
function cases(len: number): Case[] {
  // mean + bias: sum(x)·(1/len) + b, b broadcast over the rows.
  const mean = new Builder();
  mean.output('y', mean.add('add', [mean.scale(mean.add('sum', [mean.input('x', [3, len])], { dims: [-1], keepdim: false }), 1 / len), mean.input('b', [3])]));
  // The variance's inverse square root, with a prologue: rsqrt(sum((x − m)·(x − m))·(1/len) + 1e-6), dims 0 and 2 kept.
  const rstd = new Builder();
  const c = rstd.add('sub', [rstd.input('x', [len, 4, 2]), rstd.input('m', [1, 4, 1])]);
  const v = rstd.add('sum', [rstd.mul(c, c)], { dims: [0, 2], keepdim: true });
  rstd.output('y', rstd.add('rsqrt', [rstd.add('add', [rstd.scale(v, 1 / len), rstd.full(1e-6, [], 'f32')])]));
  // exp(max(x)·2): a max's epilogue.
  const mx = new Builder();
  mx.output('y', mx.add('exp', [mx.scale(mx.add('max', [mx.input('x', [2, len])], { dims: [1], keepdim: false }), 2)]));
  return [
    { what: `sum(x)·(1/${len}) + b`, graph: mean.graph, kernel: /^reduce_sum_\w+_f32\+mul_add$/, nodes: 3 },
    { what: `rsqrt(sum((x − m)²)·(1/${len}) + eps) over dims 0 and 2`, graph: rstd.graph, kernel: /^reduce_sum_\w+_f32\+sub_mul\+mul_add_rsqrt$/, nodes: 6 },
    { what: `exp(max(x)·2) over ${len}`, graph: mx.graph, kernel: /^reduce_max_\w+_f32\+mul_exp$/, nodes: 3 },
  ];
}

test('one kernel per reduction and the elementwise ops after it; not when the sum is read elsewhere or is an output', () => {
  for (const c of cases(40)) {
    const s = schedule(c.graph, PORTABLE_TARGET, GPU_RULES);
    assert.equal(s.kernels.length, 1, `${c.what}: ${s.kernels.map((k) => k.name).join(', ')}`);
    assert.match(s.kernels[0].name, c.kernel, c.what);
    assert.equal(s.kernels[0].nodes.filter((n) => c.graph.node(n).op !== 'full').length, c.nodes, `${c.what}: the nodes it computes`);
    assert.equal(s.kernels[0].bindings.at(-1)!.value, c.graph.outputs[0].node, `${c.what}: it writes the root`);
  }
  // The sum read twice, or an output itself: stored by its own kernel.
  for (const shared of [true, false]) {
    const b = new Builder();
    const s = b.add('sum', [b.input('x', [2, 8])], { dims: [1], keepdim: false });
    b.output('y', b.scale(s, 0.5));
    if (shared) b.output('z', b.add('exp', [s]));
    else b.output('s', s);
    const names = schedule(b.graph, PORTABLE_TARGET, GPU_RULES).kernels.map((k) => k.name);
    assert.ok(names.includes('reduce_sum_seq_f32'), `${shared ? 'read twice' : 'an output'}: ${names.join(', ')}`);
  }
  // Off with epilogues off.
  const [c] = cases(40);
  assert.equal(schedule(c.graph, PORTABLE_TARGET, GPU_RULES, { epilogues: false }).kernels.length, 2);
});

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

test('on the device: fused equals unfused (reduced sizes 7 and 300: the sequential and tree variants)', async () => {
  const rng = makeRng(21);
  for (const len of [7, 300]) {
    for (const c of cases(len)) {
      const inputs = new Map(c.graph.inputs.map((e) => [e.name, randomTensor(c.graph.node(e.node).shape, rng, -3, 3)] as const)) as Map<string, RefTensor>;
      // rsqrt and exp may round differently from one shader to another on hardware (test/kernels/harness.ts).
      const fused = await assertSchedulesAgree(gpu, c.graph, { inputs }, {}, { fuse: false }, c.what, { terms: len });
      assert.match(fused.schedule.kernels[0].name, len === 7 ? /_seq_/ : /_tree_/, c.what);
      assert.match(fused.schedule.kernels[0].name, c.kernel, c.what);
    }
  }
});
