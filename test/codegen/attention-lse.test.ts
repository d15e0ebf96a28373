// The forward attention kernel writes the backward's row logsumexp (compiler/codegen/fuse.ts planSiblingOutputs):
// in a VJP graph no kernel sweeps q·kᵀ just for attention_lse, and through the whole schedule and the executor
// the outputs still match PyTorch float64 (test/fixtures/ops/attention.json).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { planSiblingOutputs } from '../../compiler/codegen/fuse.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { compileOp } from '../../compiler/lower/op-entry.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { fixtureGraph, fixtures } from '../kernels/attention-fixtures.js';
import { assertKernelsAgree, compare } from '../kernels/harness.js';

test('compile --op attention --vjp: one forward kernel writes the output and the lse, no lse kernel of its own', () => {
  const shapes = new Map(['q', 'k', 'v'].map((n) => [n, [1, 2, 40, 24]]));
  const { graph } = compileOp('attention', shapes, [], true);
  const p = compileGpu(graph, PORTABLE_TARGET);
  const names = p.schedule.kernels.map((k) => k.name);
  assert.ok(!names.includes('attention_lse_flash_f32'), names.join(' '));
  const fwd = p.schedule.kernels.filter((k) => k.name === 'attention_flash_lse_f32');
  assert.equal(fwd.length, 1);
  const lse = graph.nodes.find((n) => n.op === 'attention_lse')!;
  assert.deepEqual(fwd[0].bindings.filter((b) => b.access === 'read_write').map((b) => b.value), [graph.nodes.find((n) => n.op === 'attention')!.id, lse.id]);
  assert.match(fwd[0].wgsl, /var<storage, read_write> out_1: array<f32>;/);
  // dk and dv: one kernel, two outputs.
  const kv = p.schedule.kernels.filter((k) => k.name.startsWith('attention_grad_kv'));
  assert.equal(kv.length, 1);
  assert.ok(!names.some((n) => /attention_grad_[kv]_flash/.test(n)), names.join(' '));
  const grads = graph.nodes.filter((n) => n.op === 'attention_grad');
  assert.deepEqual(kv[0].bindings.filter((b) => b.access === 'read_write').map((b) => b.value), [1, 2].map((w) => grads.find((n) => n.attrs.wrt === w)!.id));
  // Without sibling outputs (or unfused), each has its kernel.
  for (const opts of [{ fuse: false }, { siblings: false }]) {
    const own = compileGpu(graph, PORTABLE_TARGET, opts).schedule.kernels.map((k) => k.name);
    for (const name of ['attention_lse_flash_f32', 'attention_grad_k_flash_f32', 'attention_grad_v_flash_f32']) assert.ok(own.includes(name), `${JSON.stringify(opts)}: ${name}`);
  }
});

test('only an lse of the same q, k, mask and scale pairs, with the last attention before it', () => {
  const b = new Builder();
  const [q, k, v, k2] = ['q', 'k', 'v', 'k2'].map((s) => b.input(s, [1, 1, 3, 4]));
  const a1 = b.add('attention', [q, k, v]);
  const a2 = b.add('attention', [q, k, v]); // a recomputed copy
  const other = b.add('attention', [q, k2, v]);
  const scaled = b.add('attention', [q, k, v], { scale: 0.25 }); // the default here is 1/√4 = 0.5
  const l = b.add('attention_lse', [q, k]);
  const lScaled = b.add('attention_lse', [q, k], { scale: 0.25 });
  const lDefault = b.add('attention_lse', [q, k], { scale: 0.5 }); // the default written out: a2's too, but a2 is taken
  const lOther = b.add('attention_lse', [k2, k]);
  for (const [i, n] of [a1, a2, other, scaled, l, lScaled, lDefault, lOther].entries()) b.output(`o${i}`, n);
  assert.deepEqual([...planSiblingOutputs(b.graph, b.graph.live())].sort((x, y) => x[0] - y[0]), [
    [a2, l],
    [scaled, lScaled],
  ]);
});

describe('through the schedule and the executor, against PyTorch float64', () => {
  let gpu: GpuDevice;
  before(async () => {
    gpu = await openDevice();
  });
  after(async () => {
    await gpu?.destroy();
  });

  for (const fx of fixtures) {
    test(`${fx.name}: output and gradients`, async () => {
      const { graph, names } = fixtureGraph(fx);
      const program = compileGpu(graph, gpu.target);
      assert.ok(program.schedule.kernels.some((k) => k.name.startsWith('attention_flash_lse')));
      const tensor = (t: { shape: number[]; data: number[] }): RefTensor => ({ shape: t.shape, data: Float64Array.from(t.data) });
      const inputs = new Map(graph.inputs.map((i) => [i.name, tensor(i.name === 'd:y' ? fx.d_output : fx.inputs[i.name])] as const));
      const out = await runGpu(gpu, graph, program, inputs, new Map());
      const want = [['y', fx.output] as const, ...names.map((n) => [`d:${n}`, fx.grads[n]] as const)];
      // The program whose lse, dk and dv have kernels of their own computes the same sums in the same order (same
      // tiles where Dv <= D): bit for bit on a software adapter, within assertKernelsAgree's bound on hardware.
      // Its longest sums: scores over D, dO·v over Dv, then over the keys or the queries.
      const own = await runGpu(gpu, graph, compileGpu(graph, gpu.target, { siblings: false }), inputs, new Map());
      const [sq, d] = fx.inputs.q.shape.slice(2);
      const [sk, dv] = [fx.inputs.k.shape[2], fx.inputs.v.shape[3]];
      const sameTiles = dv <= d;
      for (const [name] of want) {
        if (sameTiles || name === 'd:v' || name === 'd:k') assertKernelsAgree(gpu.target, out.get(name)!.data, own.get(name)!.data, `${fx.name} ${name}`, d + dv + Math.max(sq, sk));
      }
      for (const [name, t] of want) {
        const tol = name === 'y' ? { rtol: 1e-4, atol: 1e-5 } : { rtol: 1e-3, atol: 1e-4 };
        compare(Float32Array.from(out.get(name)!.data), t.data, t.shape, { ...tol, label: `${fx.name} ${name}` }, program.schedule.kernels);
      }
    });
  }
});
