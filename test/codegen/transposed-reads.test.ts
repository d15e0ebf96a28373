// Transposed reads in the schedule, without a device: a permute of the last two dims that only a matmul reads
// (and that is no output) is absorbed by the matmul kernel, which binds the permute's input; any other permute
// keeps its copy. eva_tiny's `linear` layers read W [out, in] without a permute kernel, forward and VJP.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { planTransposedReads } from '../../compiler/codegen/fuse.js';
import { schedule, type Schedule, type ScheduleOptions } from '../../compiler/codegen/schedule.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { checkFiles } from '../../compiler/check/index.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { compileEntry } from '../../compiler/lower/entry.js';
import { GPU_RULES } from '../../kernels/index.js';
import { buildEpilogueGraph, transposedCaseArb } from './matmul-graphs.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const sched = (g: Graph, opts: ScheduleOptions = {}) => schedule(g, PORTABLE_TARGET, GPU_RULES, opts);
const outputsOf = (g: Graph) => new Set(g.outputs.map((o) => o.node));

test('planTransposedReads: only last-two-dims permutes that just the matmul reads and that are no outputs', () => {
  const b = new Builder();
  const x = b.input('x', [2, 3, 4]);
  const w = b.param('w', [5, 4]);
  const wt = b.add('permute', [w], { dims: [1, 0] }); // linear: x @ Wᵀ
  const lin = b.add('matmul', [x, wt]);
  const k = b.input('k', [2, 6, 4]);
  const kt = b.add('permute', [k], { dims: [0, -1, -2] }); // negative dims are the same swap
  const scores = b.add('matmul', [x, kt]);
  const g = b.input('g', [2, 3, 5]);
  const gt = b.add('permute', [g], { dims: [0, 2, 1] }); // gᵀ @ x: the left operand
  const dw = b.add('matmul', [gt, x]);
  const heads = b.add('permute', [b.input('h', [3, 2, 4])], { dims: [1, 0, 2] }); // not the last two dims
  const mixed = b.add('matmul', [heads, b.add('permute', [b.input('v', [5, 4])], { dims: [1, 0] })]);
  const shared = b.add('permute', [b.param('u', [5, 4])], { dims: [1, 0] }); // read twice
  const twice = b.add('matmul', [x, shared]);
  const out = b.add('permute', [b.param('o', [5, 4])], { dims: [1, 0] }); // an output
  const asOutput = b.add('matmul', [x, out]);
  const sq = b.add('permute', [b.input('s', [4, 4])], { dims: [1, 0] }); // both operands: one reader
  const both = b.add('matmul', [sq, sq]);
  for (const [i, v] of [lin, scores, dw, mixed, twice, asOutput, both, b.add('neg', [shared])].entries()) b.output(`y${i}`, v);
  b.output('ot', out);
  const plan = planTransposedReads(b.graph, b.graph.live(), outputsOf(b.graph));
  assert.deepEqual(
    [...plan].sort((p, q) => p[0] - q[0]),
    [
      [lin, [false, true]],
      [scores, [false, true]],
      [dw, [true, false]],
      [mixed, [false, true]],
      [both, [true, true]],
    ],
  );
  // The schedule: one permute kernel per permute kept (heads, shared, out), none for the others. (With views,
  // the heads permute, which only its matmul reads, is read in place too: test/codegen/view-reads.test.ts.)
  const s = sched(b.graph, { views: false });
  const permuteKernels = s.kernels.filter((kk) => kk.name === 'permute_f32').map((kk) => kk.nodes[0]);
  assert.deepEqual(permuteKernels.sort((p, q) => p - q), [heads, shared, out]);
  const bothKernel = s.kernels.find((kk) => kk.nodes.includes(both))!;
  assert.equal(bothKernel.name, 'matmul_naive_f32_at_bt');
  assert.deepEqual(bothKernel.bindings.map((bb) => bb.value), [b.graph.node(sq).inputs[0], b.graph.node(sq).inputs[0], both]);
  // Off with the option and without fusion: every permute is copied.
  for (const opts of [{ transposedReads: false, views: false }, { fuse: false }]) assert.equal(sched(b.graph, opts).kernels.filter((kk) => kk.name === 'permute_f32').length, 8);
});

/** Kernels (by name) of a schedule and the parameters that a permute kernel copies. */
function summary(g: Graph, s: Schedule) {
  const params = new Set(g.params.map((p) => p.node));
  const permutedParams = s.kernels.filter((k) => k.name === 'permute_f32' && params.has(k.bindings[0].value)).length;
  return { kernels: s.kernels.length, permutedParams, transposed: s.kernels.filter((k) => /^matmul_\w+_f32_(at|bt)/.test(k.name)).length };
}

for (const [what, opts] of [
  ['forward', { entry: 'eva' }],
  ['stage2 VJP', { entry: 'eva', stage: 'stage2', vjp: true }],
] as const) {
  test(`eva_tiny ${what}: linear layers read their weights transposed, no permute kernel copies a weight`, () => {
    const checked = checkFiles([root + 'pipelines/eva_tiny.visft']);
    assert.equal(checked.program.diags.errorCount, 0);
    const { graph } = compileEntry(checked, checked.roots[0], { ...opts, shapes: new Map([['image', [2, 3, 56, 56]]]) });
    // Row and second products and views read weights in place too (test/codegen/lora-fusion.test.ts,
    // view-reads.test.ts): off here.
    const before = summary(graph, sched(graph, { transposedReads: false, secondProducts: false, views: false }));
    const after = summary(graph, sched(graph, { secondProducts: false, views: false }));
    assert.equal(summary(graph, sched(graph)).permutedParams, 0, `${what}: weight permutes left with every fusion`);
    assert.ok(before.permutedParams >= 8, `${what}: ${before.permutedParams} weight permutes without transposed reads`);
    assert.equal(after.permutedParams, 0, `${what}: weight permutes left`);
    assert.ok(after.transposed >= before.permutedParams, `${what}: ${after.transposed} transposed matmuls`);
    assert.ok(after.kernels <= before.kernels - before.permutedParams, `${what}: ${after.kernels} kernels vs ${before.kernels}`);
  });
}

test('random transposed cases: kernels read only values written before them, outputs are written, permutes absorbed exactly when allowed', () => {
  fc.assert(
    fc.property(transposedCaseArb(), (c) => {
      const { graph, matmul } = buildEpilogueGraph(c);
      const s = sched(graph);
      const ready = new Set<number>([...graph.inputs, ...graph.params].map((x) => x.node));
      for (const k of s.kernels) {
        for (const b of k.bindings) if (b.access === 'read') assert.ok(ready.has(b.value), `${k.name} reads %${b.value} before it is written`);
        for (const b of k.bindings) if (b.access === 'read_write') ready.add(b.value);
      }
      for (const [name, v] of s.outputs) assert.ok(ready.has(v), `output ${name} is never written`);
      // A permute is absorbed exactly when the matmul is its only reader and it is no output (mode 1, unless
      // the chain also reads x).
      const mm = s.kernels.find((k) => k.nodes.includes(matmul))!;
      const permutes = graph.node(matmul).inputs.filter((i) => graph.node(i).op === 'permute');
      const onlyMatmul = (p: number) => !outputsOf(graph).has(p) && graph.nodes.every((n) => n.id === matmul || !n.inputs.includes(p));
      assert.deepEqual(permutes.filter((p) => mm.nodes.includes(p)), permutes.filter(onlyMatmul));
      if (c.transA === 2 || c.transA === 3) assert.ok(!mm.nodes.includes(permutes[0]));
      assert.equal(s.kernels.filter((k) => k.name === 'permute_f32').length, permutes.length - permutes.filter(onlyMatmul).length);
    }),
    { numRuns: 200 },
  );
});
