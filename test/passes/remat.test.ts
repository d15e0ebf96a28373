// Gradient checkpointing (compiler/passes/remat.ts): the rematerialised graph computes the same outputs bit for
// bit (float64 interpreter, dropout masks included), verifies, and reads no in-segment activation after the
// forward pass; the memory plan's peak drops on a deep stack and on eva_tiny's stage-2 step. Properties over
// random graphs (graphs.ts) with random segment assignments.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { checkFiles } from '../../compiler/check/index.js';
import { compileGpu, type GpuProgram } from '../../compiler/codegen/gpu.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { isFloat, type Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { printGraph } from '../../compiler/ir/print.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { assertVerified } from '../../compiler/ir/verify.js';
import { formatBytes } from '../../compiler/plan/memory.js';
import { optimize, structuralKey } from '../../compiler/passes/index.js';
import { backwardStart, blockSegments, rematerialize, rematPlan, RematError } from '../../compiler/passes/remat.js';
import { trainPlan } from '../../compiler/train/plan.js';
import { compileStep } from '../../compiler/train/step-graph.js';
import { REPO_ROOT } from '../golden/harness.js';
import { makeRng, randomTensor } from '../ir/util.js';
import { bitwiseDifference, buildGraph, feeds, graphCaseArb, run } from './graphs.js';
import { captionFeeds } from '../train/caption-feeds.js';

type Feeds = { inputs: Map<string, RefTensor>; params: Map<string, RefTensor> };

/**
 * `depth` pre-norm MLP blocks on x [T, D]: x + dropout(fc2(dropout(gelu(fc1(layernorm(x)·γ))))), params
 * `blocks.i.*`, then a head and a scalar loss; extended by the VJP of every parameter.
 */
function blockStack(depth: number, T: number, D: number, H: number): { graph: Graph; forwardCount: number } {
  const b = new Builder();
  let x = b.input('x', [T, D]);
  const salt = b.input('dropout_salt', [1]);
  const params: number[] = [];
  const param = (path: string, shape: number[]) => {
    const id = b.param(path, shape);
    params.push(id);
    return id;
  };
  for (let i = 0; i < depth; i++) {
    const normed = b.mul(b.add('layernorm', [x], { eps: 1e-6 }), param(`blocks.${i}.norm.weight`, [D]));
    const pre = b.add2(b.add('matmul', [normed, param(`blocks.${i}.fc1.weight`, [D, H])]), param(`blocks.${i}.fc1.bias`, [H]));
    const h = b.add('dropout', [b.add('gelu', [pre]), salt], { p: 0.25, seed: 2 * i + 1 });
    const y = b.add('dropout', [b.add('matmul', [h, param(`blocks.${i}.fc2.weight`, [H, D])]), salt], { p: 0.25, seed: 2 * i + 2 });
    x = b.add2(x, y);
  }
  const logits = b.add('matmul', [x, param('head.weight', [D, 3])]);
  b.output('loss', b.add('sum', [b.mul(logits, logits)], { dims: [0, 1], keepdim: false }));
  const forwardCount = b.graph.nodes.length;
  const r = vjp(b.graph, params);
  for (const p of params) r.builder.output(`d:${String(b.graph.node(p).attrs.path)}`, r.grads.get(p)!);
  return { graph: r.builder.graph, forwardCount };
}

function stackFeeds(g: Graph, seed: number, salt: number): Feeds {
  const rng = makeRng(seed);
  const value = (name: string, shape: readonly number[]): RefTensor =>
    name === 'dropout_salt' ? { shape: [1], data: Float64Array.of(salt) } : name === 'd:loss' ? { shape: [], data: Float64Array.of(1) } : randomTensor(shape, rng, -1, 1);
  const make = (table: Graph['inputs']) => new Map(table.map((e) => [e.name, value(e.name, g.node(e.node).shape)]));
  return { inputs: make(g.inputs), params: make(g.params) };
}

function assertSameValues(before: Graph, after: Graph, f: Feeds, what: string): void {
  const diff = bitwiseDifference(interpret(before, f.inputs, f.params), interpret(after, f.inputs, f.params));
  assert.equal(diff, undefined, `${what}: ${diff}`);
}

/**
 * What checkpointing promises: forward nodes keep their ids, the tables their names, the outputs their nodes
 * (forward ones) and types; every value the plan recomputes is read by no backward node of the result; exactly
 * one copy per recomputed node is added, and no leaf is copied.
 */
function assertRemat(before: Graph, after: Graph, forwardCount: number, segmentOf: (id: number) => string | undefined): void {
  assertVerified(after, 'rematerialize');
  const plan = rematPlan(before, forwardCount, segmentOf);
  const copied = plan.segments.reduce((n, s) => n + s.nodes.length, 0);
  assert.equal(after.nodes.length, before.nodes.length + copied, 'one copy per recomputed node');
  for (let id = 0; id < forwardCount; id++) assert.equal(describeNode(after, id), describeNode(before, id), `forward node %${id} changed`);
  const leaves = (g: Graph) => g.nodes.filter((n) => n.op === 'input' || n.op === 'param' || n.op === 'full').length;
  assert.equal(leaves(after), leaves(before), 'a leaf was copied');
  const names = (g: Graph, t: 'inputs' | 'params' | 'outputs') => g[t].map((e) => `${e.name}:${g.node(e.node).dtype}[${g.node(e.node).shape.join(',')}]`).join(' ');
  for (const t of ['inputs', 'params', 'outputs'] as const) assert.equal(names(after, t), names(before, t), `the ${t} table changed`);
  before.outputs.forEach((o, k) => o.node < forwardCount && assert.equal(after.outputs[k].node, o.node, `forward output ${o.name} moved`));
  const recomputed = new Set(plan.segments.flatMap((s) => s.nodes));
  for (const n of after.nodes.slice(forwardCount)) {
    for (const i of n.inputs) assert.ok(!recomputed.has(i), `backward node %${n.id} ${n.op} still reads the original %${i} (segment ${segmentOf(i)})`);
  }
  // Each segment's copies, in forward order, sit right before the first backward node that reads one.
  let shift = 0;
  plan.segments.forEach((s, k) => {
    s.nodes.forEach((id, j) => {
      assert.equal(segmentOf(id), s.name);
      const c = after.node(s.before + shift + j);
      assert.equal(`${c.op} ${JSON.stringify(c.attrs)}`, `${before.node(id).op} ${JSON.stringify(before.node(id).attrs)}`, `copy of %${id} (${s.name})`);
    });
    shift += s.nodes.length;
    if (plan.segments[k + 1]?.before !== s.before) assert.equal(after.node(s.before + shift).op, before.node(s.before).op, `${s.name}: copies not right before %${s.before}`);
  });
}

/** A node's op, inputs, attributes and type, for comparing it across graphs. */
const describeNode = (g: Graph, id: number): string => `${structuralKey(g.node(id))} : ${g.node(id).dtype}[${g.node(id).shape.join(',')}]`;

const peakOf = (p: GpuProgram) => p.plan.peakBytes;

describe('rematerialize on a stack of blocks', () => {
  test('same outputs bit for bit, dropout masks included; no in-segment activation outlives the forward', () => {
    const { graph, forwardCount } = blockStack(4, 6, 5, 7);
    assertVerified(graph, 'vjp');
    const segmentOf = blockSegments(graph, forwardCount);
    const plan = rematPlan(graph, forwardCount, segmentOf);
    assert.deepEqual(plan.segments.map((s) => s.name), ['blocks.3', 'blocks.2', 'blocks.1', 'blocks.0'], 'segments in backward order');
    const after = rematerialize(graph, forwardCount, segmentOf);
    assertRemat(graph, after, forwardCount, segmentOf);
    // Each segment is recomputed right before its backward: after the previous segment's copies.
    for (let k = 1; k < plan.segments.length; k++) assert.ok(plan.segments[k].before > plan.segments[k - 1].before);
    for (const seed of [1, 2, 3]) assertSameValues(graph, after, stackFeeds(graph, seed, 40 + seed), `seed ${seed}`);
    // The dropout masks matter: another salt gives other gradients.
    const a = interpret(after, stackFeeds(graph, 1, 7).inputs, stackFeeds(graph, 1, 7).params);
    const b = interpret(after, stackFeeds(graph, 1, 8).inputs, stackFeeds(graph, 1, 8).params);
    assert.notEqual(bitwiseDifference(a, b), undefined, 'the salt changes nothing: dropout is not exercised');
  });

  test('blockSegments: the largest block index a node depends on; the head after the last block is in none', () => {
    const { graph, forwardCount } = blockStack(3, 2, 3, 4);
    const segmentOf = blockSegments(graph, forwardCount);
    const byPath = (path: string) => graph.params.find((p) => p.name === path)!.node;
    const firstReader = (param: number) => graph.nodes.find((n) => n.inputs.includes(param))!.id;
    assert.equal(segmentOf(firstReader(byPath('blocks.0.norm.weight'))), 'blocks.0');
    assert.equal(segmentOf(firstReader(byPath('blocks.2.fc2.weight'))), 'blocks.2');
    assert.equal(segmentOf(graph.inputs[0].node), undefined, 'an input depends on no block');
    assert.equal(segmentOf(firstReader(byPath('head.weight'))), undefined, 'the head is not checkpointed');
    assert.equal(segmentOf(forwardCount), undefined, 'backward nodes have no segment');
    // The first layernorm reads only the input; the second reads block 0's output.
    const norms = graph.nodes.filter((n) => n.op === 'layernorm' && n.id < forwardCount);
    assert.deepEqual(norms.map((n) => segmentOf(n.id)), [undefined, 'blocks.0', 'blocks.1']);
    const custom = blockSegments(graph, forwardCount, 'blocks.1');
    assert.equal(custom(firstReader(byPath('blocks.1.fc1.weight'))), undefined, "'blocks.1.fc1' is no '<prefix>.<i>.' path");
  });

  test('the memory plan peak drops on a deep stack; kernels grow by at most one forward', (t: TestContext) => {
    const { graph } = blockStack(12, 256, 64, 256);
    const opt = optimize(graph);
    const start = backwardStart(opt);
    const after = rematerialize(opt, start, blockSegments(opt, start));
    assertVerified(after, 'rematerialize');
    const plain = compileGpu(opt, PORTABLE_TARGET);
    const remat = compileGpu(after, PORTABLE_TARGET);
    const forwardKernels = plain.schedule.kernels.filter((k) => k.nodes.every((n) => n < start)).length;
    const extra = remat.schedule.kernels.length - plain.schedule.kernels.length;
    t.diagnostic(`12 blocks, T 256, D 64, H 256: peak ${formatBytes(peakOf(plain))} → ${formatBytes(peakOf(remat))} (live ${formatBytes(plain.plan.liveBytesPeak)} → ${formatBytes(remat.plan.liveBytesPeak)}); kernels ${plain.schedule.kernels.length} → ${remat.schedule.kernels.length} (forward: ${forwardKernels})`);
    assert.ok(peakOf(remat) < 0.6 * peakOf(plain), `peak ${peakOf(remat)} is not clearly below ${peakOf(plain)}`);
    assert.ok(remat.plan.liveBytesPeak < 0.6 * plain.plan.liveBytesPeak);
    assert.ok(extra >= 12, `${extra} extra kernels: not every block is recomputed`);
    assert.ok(extra <= forwardKernels, `${extra} extra kernels: more than one forward (${forwardKernels})`);
  });

  test('rematerialize runs after optimize: optimize would merge the copies back (CSE)', () => {
    const { graph } = blockStack(3, 4, 3, 5);
    const opt = optimize(graph);
    const start = backwardStart(opt);
    const after = rematerialize(opt, start, blockSegments(opt, start));
    assert.ok(after.nodes.length > opt.nodes.length);
    assert.equal(printGraph(optimize(after)), printGraph(opt), 'if this fails, CSE keeps copies apart now: update docs/compiler.md');
    // Nothing is left to recompute in a rematerialised graph: applying it again changes nothing.
    assert.equal(printGraph(rematerialize(after, start, blockSegments(after, start))), printGraph(after));
  });

  test('bad arguments are named', () => {
    const { graph, forwardCount } = blockStack(1, 2, 2, 2);
    assert.throws(() => rematerialize(graph, graph.nodes.length + 1, () => 's'), (e: unknown) => e instanceof RematError && /forwardCount \d+ is not a node count .*has \d+ nodes/.test(e.message));
    assert.throws(() => blockSegments(graph, -1), RematError);
    const forwardOnly = new Builder();
    forwardOnly.output('y', forwardOnly.add('neg', [forwardOnly.input('x', [2])]));
    assert.throws(() => backwardStart(forwardOnly.graph), /no cotangent input \(d:<output>\)/);
    assert.equal(backwardStart(graph), forwardCount);
  });
});

describe('rematerialize on eva_tiny stage 2', () => {
  const load = () => {
    const checked = checkFiles([join(REPO_ROOT, 'pipelines', 'eva_tiny.visft')]);
    const plan = trainPlan(checked, checked.roots[0]);
    const stage = plan.stages.find((s) => s.name === 'stage2')!;
    return { checked, stage };
  };

  test('a frozen fp16 backbone (weights read through casts) still checkpoints every block, with the same values', () => {
    const { checked, stage } = load();
    const step = compileStep(checked, checked.roots[0], stage, { ...stage.tasks[0], backbonePrecision: 'fp16' }).graph;
    assert.ok(step.params.some((p) => step.node(p.node).dtype === 'f16'));
    const start = backwardStart(step);
    const segmentOf = blockSegments(step, start);
    assert.deepEqual(rematPlan(step, start, segmentOf).segments.map((s) => s.name), ['blocks.1', 'blocks.0']);
    const after = rematerialize(step, start, segmentOf);
    assertRemat(step, after, start, segmentOf);
    assertSameValues(step, after, captionFeeds(step, makeRng(5), { salt: 12345 }), 'fp16 backbone');
  });

  test('unoptimised and optimised step graphs: same loss and LoRA gradients bit for bit, lower peak', (t: TestContext) => {
    const { checked, stage } = load();
    assert.equal(stage.tasks.length, 1);
    const raw = compileStep(checked, checked.roots[0], stage, stage.tasks[0], { optimize: false }).graph;
    const opt = optimize(raw);
    const f = captionFeeds(raw, makeRng(7), { salt: 12345 });
    for (const [what, g] of [['unoptimised', raw], ['optimised', opt]] as const) {
      const start = backwardStart(g);
      const segmentOf = blockSegments(g, start);
      const plan = rematPlan(g, start, segmentOf);
      assert.deepEqual(plan.segments.map((s) => s.name), ['blocks.1', 'blocks.0'], `${what}: both blocks and nothing else are recomputed`);
      const after = rematerialize(g, start, segmentOf);
      assertRemat(g, after, start, segmentOf);
      assertSameValues(g, after, f, what);
    }
    const loss = interpret(opt, f.inputs, f.params).get('loss')!.data[0];
    assert.ok(Number.isFinite(loss) && loss > 0, `loss ${loss}`);
    // The step graph as training compiles it (optimised), with and without checkpointing.
    const step = compileStep(checked, checked.roots[0], stage, stage.tasks[0]).graph;
    assert.equal(printGraph(step), printGraph(opt));
    const start = backwardStart(step);
    const plain = compileGpu(step, PORTABLE_TARGET);
    const remat = compileGpu(rematerialize(step, start, blockSegments(step, start)), PORTABLE_TARGET);
    t.diagnostic(`eva_tiny stage2 (batch 4): peak ${formatBytes(peakOf(plain))} → ${formatBytes(peakOf(remat))} (live ${formatBytes(plain.plan.liveBytesPeak)} → ${formatBytes(remat.plan.liveBytesPeak)}); kernels ${plain.schedule.kernels.length} → ${remat.schedule.kernels.length}`);
    assert.ok(peakOf(remat) < 0.95 * peakOf(plain), `peak ${peakOf(remat)} is not below ${peakOf(plain)}`);
    assert.ok(remat.plan.liveBytesPeak < 0.9 * plain.plan.liveBytesPeak);
  });
});

describe('rematerialize on random graphs', () => {
  // Random segments: the forward nodes cut into labelled runs of ids (a label may come back; undefined: never
  // recomputed), or labels cycling node by node (most values then cross segments and are kept).
  const labelsArb = fc.array(fc.constantFrom(undefined, 's0', 's1', 's2', 's1'), { minLength: 1, maxLength: 4 });
  const segmentsArb = fc.record({ labels: labelsArb, cycle: fc.integer({ min: 0, max: 3 }).map((k) => k === 0) });

  test('any segment assignment: verifies, keeps every output bit for bit, reads no recomputed original', () => {
    let cases = 0;
    let recomputing = 0;
    fc.assert(
      fc.property(graphCaseArb(20), segmentsArb, fc.boolean(), (c, { labels, cycle }, optimized) => {
        const g = buildGraph(c).graph;
        const wrt = [...g.inputs, ...g.params].map((e) => e.node).filter((id) => isFloat(g.node(id).dtype));
        const res = vjp(g, wrt);
        wrt.forEach((id, k) => g.outputs.push({ name: `grad${k}`, node: res.grads.get(id)! }));
        const graph = optimized ? optimize(g) : g;
        const start = backwardStart(graph);
        const segmentOf = (id: number) => labels[cycle ? id % labels.length : Math.floor((id * labels.length) / start)];
        const after = rematerialize(graph, start, segmentOf);
        assertRemat(graph, after, start, segmentOf);
        cases++;
        if (after.nodes.length > graph.nodes.length) recomputing++;
        for (const special of [false, true]) {
          const f = feeds(graph, c.seed, special);
          const diff = bitwiseDifference(run(graph, f), run(after, f));
          if (diff) assert.fail(`rematerialize changed a value: ${diff}\nbefore:\n${printGraph(graph)}\nafter:\n${printGraph(after)}`);
        }
        assert.equal(printGraph(rematerialize(after, start, segmentOf)), printGraph(after), 'not idempotent');
      }),
      { numRuns: 300, includeErrorInReport: true },
    );
    // Most small random graphs have no backward read of a forward activation (linear ops, leaves, outputs).
    assert.ok(recomputing >= cases / 20, `only ${recomputing} of ${cases} cases recompute anything`);
  });
});
