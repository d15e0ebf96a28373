// The kernel schedule, without a device: every value a kernel reads is written earlier (or is an input or
// parameter), each value is written once, fusion never changes which values reach memory as outputs, and
// compiling twice gives the same kernels.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { test } from 'node:test';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { optimize } from '../../compiler/passes/index.js';
import { buildGraph, graphCaseArb } from '../passes/graphs.js';

test('kernels read only values written before them, and write each value once', () => {
  fc.assert(
    fc.property(graphCaseArb(16), fc.boolean(), (c, fuse) => {
      const graph = optimize(buildGraph(c).graph);
      const { schedule } = compileGpu(graph, PORTABLE_TARGET, { fuse });
      const ready = new Set<number>([...graph.inputs, ...graph.params].map((x) => x.node));
      const written = new Set<number>();
      for (const k of schedule.kernels) {
        for (const b of k.bindings) if (b.access === 'read') assert.ok(ready.has(b.value), `${k.name} reads %${b.value} before it is written`);
        for (const b of k.bindings) {
          if (b.access !== 'read_write') continue;
          assert.ok(!written.has(b.value), `%${b.value} written twice`);
          assert.ok(!ready.has(b.value) || !graph.inputs.some((i) => i.node === b.value), `${k.name} overwrites an input`);
          written.add(b.value);
          ready.add(b.value);
        }
      }
      for (const [name, v] of schedule.outputs) assert.ok(written.has(v), `output ${name} is never written`);
    }),
    { numRuns: 200 },
  );
});

test('compiling twice gives identical kernels and plans', () => {
  fc.assert(
    fc.property(graphCaseArb(16), (c) => {
      const graph = optimize(buildGraph(c).graph);
      const a = compileGpu(graph, PORTABLE_TARGET);
      const b = compileGpu(graph, PORTABLE_TARGET);
      assert.equal(JSON.stringify(a.schedule.kernels), JSON.stringify(b.schedule.kernels));
      assert.equal(a.plan.peakBytes, b.plan.peakBytes);
      assert.deepEqual([...a.plan.placement], [...b.plan.placement]);
    }),
    { numRuns: 100 },
  );
});

test('fusion keeps fewer kernels and the same outputs', () => {
  fc.assert(
    fc.property(graphCaseArb(16), (c) => {
      const graph = optimize(buildGraph(c).graph);
      const fused = compileGpu(graph, PORTABLE_TARGET);
      const unfused = compileGpu(graph, PORTABLE_TARGET, { fuse: false });
      assert.ok(fused.schedule.kernels.length <= unfused.schedule.kernels.length);
      assert.deepEqual([...fused.schedule.outputs.keys()], [...unfused.schedule.outputs.keys()]);
    }),
    { numRuns: 100 },
  );
});
