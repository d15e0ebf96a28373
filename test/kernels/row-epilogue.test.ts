// Row-op epilogues (compiler/codegen/fuse.ts, kernels/row.ts): an elementwise group after a layernorm, softmax or
// log_softmax that only it reads runs in the row kernel. On the device, bit for bit the unfused kernels, for
// short rows (one invocation per row) and long ones (a workgroup per row), with broadcast and full-shape inputs.
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

/** layernorm + affine, softmax · scale + residual, log_softmax along a middle dim + bias, at a row length. */
function cases(len: number): Case[] {
  const ln = new Builder();
  const x = ln.input('x', [3, 5, len]);
  ln.output('y', ln.add('add', [ln.add('mul', [ln.add('layernorm', [x], { eps: 1e-5 }), ln.param('gamma', [len])]), ln.param('beta', [len])]));
  const sm = new Builder();
  const s = sm.input('s', [4, len]);
  sm.output('y', sm.add('add', [sm.scale(sm.add('softmax', [s], { dim: -1 }), 0.125), sm.input('r', [4, len])]));
  const ls = new Builder();
  const l = ls.input('l', [2, len, 3]);
  ls.output('y', ls.add('add', [ls.add('log_softmax', [l], { dim: 1 }), ls.param('bias', [len, 1])]));
  return [
    { what: `layernorm + affine, rows of ${len}`, graph: ln.graph, kernel: /^layernorm_row_\w+_f32\+mul_add$/ },
    { what: `softmax · 0.125 + residual, rows of ${len}`, graph: sm.graph, kernel: /^softmax_row_\w+_f32\+mul_add$/ },
    { what: `log_softmax along dim 1 + bias, rows of ${len}`, graph: ls.graph, kernel: /^log_softmax_row_\w+_f32\+add$/ },
  ];
}

test('one kernel per row op and its epilogue; off with epilogues: false; not when the row value is read elsewhere', () => {
  for (const c of cases(40)) {
    const s = schedule(c.graph, PORTABLE_TARGET, GPU_RULES);
    assert.equal(s.kernels.length, 1, `${c.what}: ${s.kernels.map((k) => k.name).join(', ')}`);
    assert.match(s.kernels[0].name, c.kernel, c.what);
    assert.ok(schedule(c.graph, PORTABLE_TARGET, GPU_RULES, { epilogues: false }).kernels.length > 1);
  }
  const b = new Builder();
  const n = b.add('layernorm', [b.input('x', [2, 8])], { eps: 1e-5 });
  b.output('y', b.add('mul', [n, b.param('g', [8])]));
  b.output('n', n);
  assert.deepEqual(schedule(b.graph, PORTABLE_TARGET, GPU_RULES).kernels.map((k) => k.name), ['layernorm_row_thread_f32', 'ew_mul_bcast_f32']);
});

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

test('on the device: fused equals unfused bit for bit (rows of 7 and 300)', async () => {
  const rng = makeRng(42);
  for (const len of [7, 300]) {
    for (const c of cases(len)) {
      const feed = (named: readonly { name: string; node: number }[]) => new Map(named.map((e) => [e.name, randomTensor(c.graph.node(e.node).shape, rng, -3, 3)] as const)) as Map<string, RefTensor>;
      const inputs = feed(c.graph.inputs);
      const params = feed(c.graph.params);
      const fused = await assertSchedulesAgree(gpu, c.graph, { inputs, params }, {}, { epilogues: false }, c.what);
      assert.match(fused.schedule.kernels[0].name, c.kernel, c.what);
    }
  }
});
