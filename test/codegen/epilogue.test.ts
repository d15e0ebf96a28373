// Matmul epilogue fusion in the schedule, without a device: `linear` (matmul + bias) and `x + proj(y)` are one
// kernel; a product that something else reads, that is an output, or that the chain broadcasts keeps its own
// kernel; a chain near the binding limit stays within maxStorageBuffersPerShaderStage; eva_tiny has one kernel
// fewer per linear layer; the kernels and bundles are the same on every compile.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { schedule, type Schedule, type ScheduleOptions } from '../../compiler/codegen/schedule.js';
import { PORTABLE_TARGET, type Target } from '../../compiler/codegen/types.js';
import { checkFiles } from '../../compiler/check/index.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { compileEntry } from '../../compiler/lower/entry.js';
import { GPU_RULES } from '../../kernels/index.js';
import { buildEpilogueGraph, epilogueCaseArb, scheduledVariant } from './matmul-graphs.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const withBindings = (n: number): Target => ({ ...PORTABLE_TARGET, name: `portable (${n} bindings)`, limits: { ...PORTABLE_TARGET.limits, maxStorageBuffersPerShaderStage: n } });
const sched = (g: Graph, opts: ScheduleOptions = {}, target: Target = PORTABLE_TARGET): Schedule => schedule(g, target, GPU_RULES, opts);

/** x [2, 5, 8] @ w [8, 6] and the chain `then` adds after it (the chain's last node is the output y). */
function projection(then: (b: Builder, mm: number, x: number) => number, k = 8): { graph: Graph; mm: number } {
  const b = new Builder();
  const x = b.input('x', [2, 5, k]);
  const mm = b.add('matmul', [x, b.param('w', [k, 6])]);
  b.output('y', then(b, mm, x));
  return { graph: b.graph, mm };
}

test('linear (matmul + bias), bias + GELU and a residual add are one kernel each', () => {
  const linear = projection((b, mm) => b.add('add', [mm, b.param('bias', [6])]));
  const ks = sched(linear.graph).kernels;
  assert.equal(ks.length, 1);
  assert.equal(ks[0].name, 'matmul_naive_f32+add');
  assert.deepEqual(ks[0].nodes, [2, 4]);
  // Bindings: x, w, the bias, then the output (the add).
  assert.deepEqual(ks[0].bindings.map((b) => `${b.access}:${b.value}`), ['read:0', 'read:1', 'read:3', 'read_write:4']);

  const mlp = projection((b, mm) => b.add('gelu', [b.add('add', [mm, b.param('bias', [6])])]));
  assert.deepEqual(sched(mlp.graph).kernels.map((k) => k.name), ['matmul_naive_f32+add_gelu']);

  // x + proj(x): the residual is the matmul's own left operand, bound twice (both read-only).
  const residual = projection((b, mm, x) => b.add('add', [x, b.add('add', [mm, b.param('bias', [6])])]), 6);
  const r = sched(residual.graph).kernels;
  assert.deepEqual(r.map((k) => k.name), ['matmul_naive_f32+add_add']);
  assert.deepEqual(r[0].bindings.map((b) => b.value), [0, 1, 3, 0, 5]);

  // A scale by an inlined constant: no fill kernel, no binding.
  const scaled = projection((b, mm) => b.scale(mm, 0.125));
  const s = sched(scaled.graph).kernels;
  assert.deepEqual(s.map((k) => k.name), ['matmul_naive_f32+mul']);
  assert.equal(s[0].bindings.length, 3);
  assert.match(s[0].wgsl, /let v0 = mm \* kept\(0\.125f\);/);
});

test('a product read elsewhere, output, or broadcast by the chain keeps its own kernel', () => {
  const cases: [string, (b: Builder, mm: number) => number][] = [
    ['read twice', (b, mm) => b.add('add', [b.add('relu', [mm]), b.add('matmul', [mm, b.param('v', [6, 6])])])],
    ['broadcast', (b, mm) => b.add('add', [mm, b.param('r', [3, 2, 5, 6])])],
  ];
  for (const [what, then] of cases) {
    const { graph, mm } = projection(then);
    const k = sched(graph).kernels.find((x) => x.nodes.includes(mm))!;
    assert.deepEqual(k.nodes, [mm], what);
    assert.equal(k.name, 'matmul_naive_f32', what);
  }
  const out = projection((b, mm) => {
    b.output('product', mm);
    return b.add('relu', [mm]);
  });
  assert.deepEqual(sched(out.graph).kernels.map((k) => k.name), ['matmul_naive_f32', 'ew_relu_f32']);
  // Epilogues off (and fusion off): the old kernels.
  const linear = projection((b, mm) => b.add('add', [mm, b.param('bias', [6])]));
  assert.deepEqual(sched(linear.graph, { epilogues: false }).kernels.map((k) => k.name), ['matmul_naive_f32', 'ew_add_bcast_f32']);
  assert.equal(sched(linear.graph, { fuse: false }).kernels.length, 2);
});

test('a chain with many inputs stays within maxStorageBuffersPerShaderStage', () => {
  // mm + e0 + e1 + ... : the epilogue needs x, w, each e and the output.
  for (let j = 1; j <= 7; j++) {
    const { graph, mm } = projection((b, m) => {
      let cur = m;
      for (let i = 0; i < j; i++) cur = b.add('add', [cur, b.param(`e${i}`, i % 2 ? [5, 1] : [6])]);
      return cur;
    });
    const ks = sched(graph).kernels;
    for (const k of ks) assert.ok(k.bindings.length <= 8, `${j} adds: ${k.name} binds ${k.bindings.length}`);
    const withMm = ks.find((k) => k.nodes.includes(mm))!;
    assert.ok(withMm.name.startsWith('matmul_naive_f32+add'), `${j} adds: ${withMm.name}`);
    // Up to 5 extra inputs the whole chain is the epilogue (8 bindings at 5); beyond, the rest is a second kernel.
    assert.equal(ks.length, j <= 5 ? 1 : 2, `${j} adds: ${ks.map((k) => k.name)}`);
    if (j === 5) assert.equal(withMm.bindings.length, 8);
  }
  // A target with 3 bindings has no room for an epilogue with an input; 4 allows the bias.
  const linear = projection((b, mm) => b.add('add', [mm, b.param('bias', [6])]));
  assert.equal(sched(linear.graph, {}, withBindings(3)).kernels.length, 2);
  assert.deepEqual(sched(linear.graph, {}, withBindings(4)).kernels.map((k) => k.name), ['matmul_naive_f32+add']);
});

test('random matmul chains: bindings within the limit, values written before they are read, the same kernels twice', () => {
  fc.assert(
    fc.property(epilogueCaseArb(['naive', 'splitk', 'tiled'], 9), fc.integer({ min: 4, max: 9 }), (c, limit) => {
      const { graph, matmul } = buildEpilogueGraph(c);
      const target = withBindings(limit);
      const s = sched(graph, {}, target);
      const ready = new Set([...graph.inputs, ...graph.params].map((x) => x.node));
      for (const k of s.kernels) {
        assert.ok(k.bindings.length <= limit, `${k.name} binds ${k.bindings.length} of ${limit}`);
        for (const b of k.bindings) if (b.access === 'read') assert.ok(ready.has(b.value), `${k.name} reads %${b.value} before it is written`);
        for (const b of k.bindings) if (b.access === 'read_write') ready.add(b.value);
      }
      const mmKernel = s.kernels.find((k) => k.nodes.includes(matmul))!;
      assert.match(mmKernel.name, new RegExp(`^matmul_${scheduledVariant(c.variant, target)}_f32`));
      // Only a product that the chain alone reads is absorbed.
      if (c.product !== 0) assert.deepEqual(mmKernel.nodes, [matmul]);
      assert.ok(s.kernels.length <= sched(graph, { epilogues: false }, target).kernels.length);
      assert.equal(JSON.stringify(sched(graph, {}, target).kernels), JSON.stringify(s.kernels));
    }),
    { numRuns: 300 },
  );
});

function evaTiny(vjp: boolean) {
  const checked = checkFiles([root + 'pipelines/eva_tiny.visft']);
  const c = compileEntry(checked, checked.roots[0], { entry: 'eva', ...(vjp ? { stage: 'stage2', vjp: true } : {}), shapes: new Map([['image', [2, 3, 56, 56]]]) });
  return c.graph;
}

test('eva_tiny: every linear layer is one kernel, and every layernorm with its affine', () => {
  const graph = evaTiny(false);
  // Row products and views off: each matmul its own kernel reading W transposed (row products are on below).
  const fused = sched(graph, { secondProducts: false, views: false });
  const plain = sched(graph, { epilogues: false, views: false });
  const matmuls = graph.nodes.filter((n) => n.op === 'matmul').length;
  // 2 blocks x (qkv, proj, fc1, fc2), each followed by its bias add (and a residual add or GELU).
  assert.equal(matmuls, 8);
  // And every layernorm's affine runs in the layernorm kernel: 2 blocks x 2 norms + the final one.
  const normKernels = fused.kernels.filter((k) => /^layernorm_row_\w+_f32\+mul_add$/.test(k.name)).length;
  assert.equal(normKernels, 5);
  assert.equal(fused.kernels.length, plain.kernels.length - matmuls - normKernels);
  const mmKernels = fused.kernels.filter((k) => k.name.startsWith('matmul_'));
  assert.equal(mmKernels.length, matmuls);
  // Each reads its weight W [out, in] transposed (no permute kernel), then the epilogue.
  for (const k of mmKernels) assert.match(k.name, /^matmul_\w+_f32_bt\+add/);
  assert.deepEqual([...new Set(mmKernels.map((k) => k.name.split('+')[1]))].sort(), ['add', 'add_add', 'add_gelu']);
  // With row products, each fc1 (192 columns) runs in the kernel of the norm before it, with its bias and GELU.
  const all = sched(graph, { views: false });
  assert.equal(all.kernels.length, fused.kernels.length - 2);
  assert.equal(all.kernels.filter((k) => k.name === 'layernorm_rows_wg_f32+mul_add+mm+add_gelu').length, 2);
  // The gradient graph also loses kernels.
  const g = evaTiny(true);
  assert.ok(sched(g).kernels.length < sched(g, { epilogues: false }).kernels.length);
});

test('visft compile writes byte-identical bundles and kernel listings twice', () => {
  const bin = root + 'bin/visft.js';
  const dir = mkdtempSync(join(tmpdir(), 'visft-epilogue-'));
  try {
    const args = ['compile', root + 'pipelines/eva_tiny.visft', '--entry', 'eva', '--stage', 'stage2', '--vjp', '--shape', 'image=2x3x56x56'];
    const outs = [1, 2].map((i) => {
      const p = spawnSync(process.execPath, [bin, ...args, '-o', join(dir, `b${i}.visftx`)], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(p.status, 0, p.stderr);
      const listing = spawnSync(process.execPath, [bin, ...args, '--emit', 'kernels'], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(listing.status, 0, listing.stderr);
      return { bundle: readFileSync(join(dir, `b${i}.visftx`)), listing: listing.stdout };
    });
    assert.ok(outs[0].bundle.equals(outs[1].bundle), 'bundles differ');
    assert.equal(outs[0].listing, outs[1].listing);
    assert.match(outs[0].listing, /matmul_naive_f32_bt\+add_add /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
