// Fused kernels reading movement ops in place (compiler/codegen/fuse.ts, planViewReads; kernels/fused.ts,
// externalReads): a permute, slice, pad, concat or expand feeding an elementwise group, a matmul or row
// epilogue, or a lone elementwise node (then a group of one) runs inside that kernel. On the device, random
// graphs give the same bits with and without views; eva_tiny's forward loses its bias concats, q's slice and
// permute and the fills of inlined constants.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { checkFiles } from '../../compiler/check/index.js';
import { schedule } from '../../compiler/codegen/schedule.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { compileEntry } from '../../compiler/lower/entry.js';
import { optimize } from '../../compiler/passes/index.js';
import { planMemory } from '../../compiler/plan/memory.js';
import { GPU_RULES } from '../../kernels/index.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { buildGraph, feeds, graphCaseArb } from '../passes/graphs.js';
import { hardwareLike } from '../kernels/core-util.js';
import { assertBitwise, assertSchedulesAgree, scheduledProgram } from '../kernels/harness.js';
import { runGpu } from '../../runtime/run-gpu.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** Every read binding is written by an earlier kernel (or is an input or parameter); the plan accepts it. */
function assertWellOrdered(g: Graph, what: string): void {
  const s = schedule(g, PORTABLE_TARGET, GPU_RULES);
  const ready = new Set<number>([...g.inputs, ...g.params].map((x) => x.node));
  for (const k of s.kernels) {
    for (const b of k.bindings) if (b.access === 'read') assert.ok(ready.has(b.value), `${what}: ${k.name} reads %${b.value} before it is written`);
    for (const b of k.bindings) if (b.access === 'read_write') ready.add(b.value);
  }
  planMemory({ values: s.values, schedule: s.kernels, aliases: s.aliases }, PORTABLE_TARGET);
}

test('eva_tiny stage 2: views remove the movement kernels before fused kernels and epilogues', () => {
  const checked = checkFiles([root + 'pipelines/eva_tiny.visft']);
  for (const vjp of [false, true]) {
    const g = compileEntry(checked, checked.roots[0], { entry: 'eva', stage: 'stage2', vjp, shapes: new Map([['image', [2, 3, 56, 56]]]) }).graph;
    const on = schedule(g, PORTABLE_TARGET, GPU_RULES);
    const off = schedule(g, PORTABLE_TARGET, GPU_RULES, { views: false });
    const movement = (s: typeof on) => s.kernels.filter((k) => /^(permute|slice|concat_\d+|pad|fill|expand)_f32/.test(k.name)).length;
    assert.ok(movement(on) < movement(off), `${vjp ? 'VJP' : 'forward'}: ${movement(on)} movement kernels with views, ${movement(off)} without`);
    assert.ok(on.kernels.length < off.kernels.length);
    if (!vjp) {
      // The qkv bias concat(q_bias, 0, v_bias) is read by the projection's epilogue, q's slice and permute by its scaling.
      assert.equal(on.kernels.filter((k) => k.name.startsWith('concat_')).length, 0);
      // q's scaling now runs in the attention kernel (attention views); without them, in q's view of the projection.
      assert.equal(schedule(g, PORTABLE_TARGET, GPU_RULES, { attentionViews: false }).kernels.filter((k) => k.name === 'fused_mul_f32').length, 2);
    }
    assertWellOrdered(g, vjp ? 'eva_tiny VJP' : 'eva_tiny forward');
  }
});

test('a shared movement op is computed once, and a view whose leaves exceed the bindings is not taken', () => {
  // p = permute(x) read by two kernels: it keeps its kernel; each reader binds p.
  const b = new Builder();
  const x = b.input('x', [3, 4]);
  const p = b.add('permute', [x], { dims: [1, 0] });
  b.output('y', b.add('exp', [p]));
  b.output('z', b.add('neg', [b.add('sqrt', [p])]));
  const s = schedule(b.graph, PORTABLE_TARGET, GPU_RULES);
  assert.deepEqual(s.kernels.map((k) => k.name), ['permute_f32', 'ew_exp_f32', 'fused_sqrt_neg_f32']);
  // Nine inputs concatenated and added: more leaves than a kernel may bind, so the concat keeps its kernels.
  const c = new Builder();
  const parts = Array.from({ length: 9 }, (_, i) => c.input(`x${i}`, [2, 3]));
  c.output('y', c.add('add', [c.add('concat', parts.slice(0, 4), { dim: 0 }), c.add('concat', parts.slice(4, 8), { dim: 0 })]));
  const names = schedule(c.graph, PORTABLE_TARGET, GPU_RULES).kernels.map((k) => k.name);
  assert.ok(names.some((n) => n.startsWith('concat_')), names.join(', '));
  assertWellOrdered(c.graph, 'nine-input concat');
});

test('random graphs: the schedule with views reads only values written before', () => {
  fc.assert(
    fc.property(graphCaseArb(10), (c) => {
      assertWellOrdered(optimize(buildGraph(c).graph), JSON.stringify(c).slice(0, 200));
    }),
    { numRuns: 200, seed: 77 },
  );
});

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

test('on the device: random graphs give the same bits with and without views', async () => {
  let viewed = 0;
  await fc.assert(
    fc.asyncProperty(graphCaseArb(10), fc.integer({ min: 1, max: 1e6 }), async (c, seed) => {
      const graph = optimize(buildGraph(c).graph);
      const with_ = schedule(graph, gpu.target, GPU_RULES).kernels.length;
      if (with_ < schedule(graph, gpu.target, GPU_RULES, { views: false }).kernels.length) viewed++;
      await assertSchedulesAgree(gpu, graph, feeds(graph, seed, false), {}, { views: false }, 'random graph');
    }),
    { numRuns: 25, seed: 78 },
  );
  assert.ok(viewed > 0, 'no random graph read a view');
});

/** Head merge then a projection (`x [B,H,T,D] → [B,T,H·D] @ Wᵀ + bias`), and a batched product of a slice. */
function operandCases(t: number, d: number, e: number): { what: string; graph: Graph }[] {
  const merge = new Builder();
  const x = merge.input('x', [2, 3, t, d]);
  const rows = merge.add('reshape', [merge.add('permute', [x], { dims: [0, 2, 1, 3] })], { shape: [2, t, 3 * d] });
  merge.output('y', merge.add('add', [merge.add('matmul', [rows, merge.add('permute', [merge.param('w', [e, 3 * d])], { dims: [1, 0] })]), merge.param('bias', [e])]));
  const batched = new Builder();
  const a = batched.add('slice', [batched.input('a', [2, t + 3, d])], { dim: 1, start: 2, end: t + 2 });
  const bb = batched.add('permute', [batched.input('b', [e, 2, d])], { dims: [1, 2, 0] });
  batched.output('y', batched.add('matmul', [a, bb]));
  return [
    { what: `head merge + projection (T ${t}, D ${d}, E ${e})`, graph: merge.graph },
    { what: `batched slice @ permute (T ${t}, D ${d}, E ${e})`, graph: batched.graph },
  ];
}

test('on the device: matmul operands through views equal the copies bit for bit, naive, blocked and tiled', async () => {
  let tiled = 0;
  for (const [t, d, e] of [[7, 5, 9], [70, 40, 130]]) {
    for (const c of operandCases(t, d, e)) {
      const f = feeds(c.graph, t, false);
      const program = await assertSchedulesAgree(gpu, c.graph, f, {}, { views: false }, c.what);
      const names = program.schedule.kernels.map((k) => k.name);
      assert.equal(names.length, 1, `${c.what}: ${names.join(', ')}`);
      assert.match(names[0], /^matmul_(naive|blocked|tiled)_f32_av_b[tv]/, c.what);
      // The tiled kernel through views too, scheduled as for hardware: every variant sums k in order, so the
      // outputs are the device schedule's bit for bit.
      const hardware = scheduledProgram(c.graph, hardwareLike(gpu.target), {});
      const tiledNames = hardware.schedule.kernels.map((k) => k.name);
      assert.match(tiledNames[0], /^matmul_(naive|tiled)_f32_av_b[tv]/, `${c.what} (hardware): ${tiledNames.join(', ')}`);
      if (tiledNames[0].startsWith('matmul_tiled')) tiled++;
      const [a, b] = [await runGpu(gpu, c.graph, program, f.inputs, f.params), await runGpu(gpu, c.graph, hardware, f.inputs, f.params)];
      assertBitwise(Float32Array.from(b.get('y')!.data), Float32Array.from(a.get('y')!.data), `${c.what}: hardware's kernels vs the device's`);
    }
  }
  assert.ok(tiled > 0, 'no case ran the tiled kernel through views');
});
