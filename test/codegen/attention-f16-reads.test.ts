// The flash kernels read f16 operands as f16 rows (compiler/codegen/attention-views.ts, kernels/attention.ts):
// - an operand whose view is flat and whose prologue only casts without changing a value (an f16 input read as
//   f32) is read straight from its leaf's binding, four values at a time: array<vec4<f16>> under f16 storage;
// - autocast's rounding of a flat operand (the bench's f16 rows: f32 inputs rounded to f16) runs once, in a
//   fused cast kernel that stores f16, instead of at every read of the flash kernels (each swept element is read
//   once per tile of the other side, and cast_f16 is a branchy software rounding);
// - autocast's rounding over a real view (fp16 training's q = round(permute(qkv)·scale)) runs in its own kernel
//   too; real views (permutes, slices of a packed projection) with no rounding are read through their functions
//   as before.
// On the device (lavapipe, scheduled as for hardware): the forward, lse and the three gradients give the bits of
// the kernels that read the same operands through views with cast prologues (the path before), and agree with
// the CPU reference.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planAttentionViews } from '../../compiler/codegen/attention-views.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Graph, type Node } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { castValue, roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { compileOp } from '../../compiler/lower/op-entry.js';
import { attentionReads, type AttentionOperandPlans } from '../../kernels/attention.js';
import { flashBackwardKernel } from '../../kernels/flash-backward.js';
import { withVectorReads, type FlashReads } from '../../kernels/flash-common.js';
import { flashForwardKernel } from '../../kernels/flash-forward.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { hardwareLike } from '../kernels/core-util.js';
import { assertKernelsAgree, assertWithin, runKernelOutputs, scheduledProgram, sharedDevice } from '../kernels/harness.js';
import { makeRng } from '../ir/util.js';

const H200 = TARGETS['nvidia-h200'];
const flashKernels = (ks: readonly Kernel[]) => ks.filter((k) => /^attention_(flash|grad)/.test(k.name));

/** The binding declarations of a kernel's WGSL, by binding index. */
const declarations = (k: Kernel): string[] => k.bindings.map((_, i) => new RegExp(`@binding\\(${i}\\) var<storage, \\w+> \\w+: ([^;]+);`).exec(k.wgsl)?.[1] ?? '?');

test('the bench row attention_vjp_f16_evag_detection on the H200: rounded once per operand, then q, k, v (and g) loaded as vec4<f16>', () => {
  const row = benchRows('full').find((r) => r.name === 'attention_vjp_f16_evag_detection')!;
  const { graph, inputs } = rowGraph(row);
  const p = compileGpu(graph, H200);
  const names = p.schedule.kernels.map((k) => k.name);
  // q, k, v: one rounding kernel each, which reads the f32 input and stores f16.
  const roundings = p.schedule.kernels.filter((k) => inputs.slice(0, 3).includes(k.bindings[0].value));
  assert.deepEqual(roundings.map((k) => k.name), Array(3).fill('fused_cast_f16_cast_f32_f32_f16io'), names.join(', '));
  const rounded = roundings.map((k) => k.bindings[1].value);
  for (const id of rounded) assert.equal(p.schedule.values.find((v) => v.id === id)?.dtype, 'f16', `%${id} is stored as f16`);
  const flash = flashKernels(p.schedule.kernels);
  assert.deepEqual(flash.map((k) => k.name), ['attention_flash_lse_f32_f16io', 'attention_grad_q_flash_f32_f16io', 'attention_grad_kv_flash_f32_f16io']);
  for (const k of flash) {
    // Bound: the rounded q, k, v, then (backward) g (rounded, f16 too), lse and δ (f32).
    assert.deepEqual(k.bindings.slice(0, 3).map((b) => b.value), rounded, k.name);
    const decl = declarations(k);
    const f16 = k.name.startsWith('attention_grad') ? 4 : 3;
    assert.deepEqual(decl.slice(0, f16), Array(f16).fill('array<vec4<f16>>'), `${k.name}: ${decl.join(', ')}`);
    assert.ok(decl.slice(f16).every((d) => d === 'array<f32>'), `${k.name}: ${decl.join(', ')}`);
    assert.doesNotMatch(k.wgsl, /fn cast_f16|fn [qkvg]_in\(/, `${k.name} rounds nothing and reads nothing through a view`);
  }
});

/** q, k, v, g as f16 inputs read as f32 (an f16 model's activations); attention, lse and the three gradients. */
function halfInputGraph(B: number, H: number, S: number, D: number): Graph {
  const b = new Builder();
  const wide = (name: string) => b.add('cast', [b.input(name, [B, H, S, D], 'f16')], { dtype: 'f32' });
  const [q, k, v, g] = ['q', 'k', 'v', 'g'].map(wide);
  b.output('out', b.add('attention', [q, k, v]));
  const lse = b.add('attention_lse', [q, k]);
  b.output('lse', lse);
  const delta = b.input('delta', [B, H, S]);
  for (const wrt of [0, 1, 2]) b.output(`d${'qkv'[wrt]}`, b.add('attention_grad', [q, k, v, g, lse, delta], { wrt }));
  return b.graph;
}

test('f16 inputs read as f32: the flash kernels bind the f16 inputs and load them as vec4<f16>; a permuted one keeps its view', () => {
  const graph = halfInputGraph(1, 2, 64, 88);
  const p = compileGpu(graph, H200);
  const leaves = ['q', 'k', 'v', 'g'].map((n) => graph.inputs.find((i) => i.name === n)!.node);
  const flash = flashKernels(p.schedule.kernels);
  assert.equal(flash.length, 3, p.schedule.kernels.map((k) => k.name).join(', '));
  for (const k of flash) {
    assert.doesNotMatch(k.name, /f32_[qkvg]v|\+/, k.name);
    const rows = k.name.startsWith('attention_grad') ? 4 : 3;
    assert.deepEqual(k.bindings.slice(0, rows).map((b) => b.value), leaves.slice(0, rows), k.name);
    assert.deepEqual(declarations(k).slice(0, rows), Array(rows).fill('array<vec4<f16>>'), k.name);
    // The casts are computed in place: no kernel of their own.
    const casts = k.nodes.filter((n) => graph.node(n).op === 'cast');
    assert.equal(casts.length, rows, `${k.name} computes the casts of what it reads`);
  }
  assert.equal(p.schedule.kernels.length, 3, 'nothing but the three flash kernels');

  // k read transposed from an f16 input: a real view, read element by element through its function.
  const b = new Builder();
  const q = b.add('cast', [b.input('q', [1, 2, 64, 88], 'f16')], { dtype: 'f32' });
  const kt = b.add('permute', [b.add('cast', [b.input('kt', [1, 2, 88, 64], 'f16')], { dtype: 'f32' })], { dims: [0, 1, 3, 2] });
  b.output('out', b.add('attention', [q, kt, q]));
  const viewed = flashKernels(compileGpu(b.graph, H200).schedule.kernels);
  assert.equal(viewed.length, 1);
  assert.match(viewed[0].name, /^attention_flash_f32_kv_f16io$/);
  assert.deepEqual(declarations(viewed[0]), ['array<vec4<f16>>', 'array<f16>', 'array<f32>']);
});

test("a rounding over a real view (fp16 training's q = round(permute(x)·scale)) runs once in its own kernel; k and v stay views", () => {
  const b = new Builder();
  const x = b.input('x', [1, 64, 2, 88]);
  const heads = (id: number) => b.add('permute', [id], { dims: [0, 2, 1, 3] });
  const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
  const q = round(b.add('mul', [heads(x), b.full(0.125, [])]));
  b.output('out', b.add('attention', [q, heads(x), heads(x)], { scale: 1 }));
  const p = compileGpu(b.graph, H200);
  const flash = flashKernels(p.schedule.kernels);
  assert.equal(flash.length, 1);
  assert.match(flash[0].name, /^attention_flash_f32_kv_vv_f16io$/, 'q bound, k and v through views');
  const rounding = p.schedule.kernels.find((k) => k.bindings.at(-1)!.value === flash[0].bindings[0].value)!;
  assert.match(rounding.name, /cast_f16.*_f16io$/, rounding.name);
  assert.equal(p.schedule.values.find((v) => v.id === flash[0].bindings[0].value)?.dtype, 'f16', 'the rounded q is stored as f16');
  assert.equal(declarations(flash[0])[0], 'array<vec4<f16>>');
});

test('withVectorReads: a binding the kernel also reads element by element keeps its scalar declaration', () => {
  const node = (shape: number[]): Node => ({ id: 0, op: 'input', inputs: [], shape, dtype: 'f32', attrs: {} });
  const inputs = [node([1, 1, 4, 8]), node([1, 1, 4, 8]), node([1, 1, 4, 8])];
  const base: FlashReads = { slots: ['in_0', 'in_1', 'in_2'], helpers: '', lib: [], inlined: [], suffix: '' };
  assert.deepEqual([...withVectorReads(base, inputs, [0, 1, 2]).vec4!], [0, 1, 2]);
  // in_0 is also read by k's view function; in_1 is also a flat slot (a mask, say).
  const shared: FlashReads = { ...base, slots: ['in_0', (c) => `kv_0(${c.join(', ')})`, 'in_1', 'in_1'], helpers: 'fn kv_0(a: u32, b: u32, c: u32, d: u32) -> f32 { return in_0[c * 8u + d]; }' };
  assert.deepEqual([...(withVectorReads(shared, [...inputs, node([1, 1, 4, 4])], [0, 1, 2]).vec4 ?? [])], []);
  // Head dims that are not whole vec4s stay scalar.
  assert.equal(withVectorReads(base, [node([1, 1, 4, 6]), node([1, 1, 4, 6]), node([1, 1, 4, 6])], [0, 1, 2]).vec4, undefined);
});

// ---------------------------------------------------------------------------------------------- on the device

const gpuOf = sharedDevice();

/** Seeded values in [-2, 2], f16 numbers when `half`. */
function tensor(shape: readonly number[], rng: () => number, half: boolean): RefTensor {
  const data = Float64Array.from({ length: numel(shape) }, () => (half ? roundF16 : Math.fround)(-2 + 4 * rng()));
  return { shape: [...shape], data } as RefTensor;
}

const f32 = (t: RefTensor): Float32Array => Float32Array.from(t.data);

/**
 * The path before: every row operand through its view function with the cast prologue in it (what the planner
 * gave for a flat operand before it read exact ones directly and left roundings to their own kernels).
 */
function prologuePlans(graph: Graph, node: Node): AttentionOperandPlans {
  const slots = node.op === 'attention_lse' ? 2 : node.op === 'attention' ? 3 : 4;
  return node.inputs.map((x, s) => {
    if (s >= slots || graph.node(x).op !== 'cast') return undefined;
    const prologue: number[] = [];
    let leaf = x;
    for (; graph.node(leaf).op === 'cast'; leaf = graph.node(leaf).inputs[0]) prologue.unshift(leaf);
    return { view: { root: leaf, inlined: [], leaves: [leaf] }, prologue };
  });
}

/**
 * Runs the forward (with lse) and the backward kernels of `graph`'s attention nodes built with the prologue
 * reads, on the values the schedule's run gave for every binding they read; returns their outputs by node id.
 */
async function prologueKernels(graph: Graph, target: Target, value: (id: number) => Float32Array): Promise<Map<number, Float32Array>> {
  const gpu = gpuOf();
  const of = (op: string, wrt?: number) => graph.nodes.find((n) => n.op === op && (wrt === undefined || n.attrs.wrt === wrt))!;
  const [fwd, lse, dq, dk, dv] = [of('attention'), of('attention_lse'), of('attention_grad', 0), of('attention_grad', 1), of('attention_grad', 2)];
  const inputs = (n: Node) => n.inputs.map((i) => graph.node(i));
  const out = new Map<number, Float32Array>();
  const run = async (k: Kernel, nodes: readonly Node[]) => {
    assert.match(k.name, /_qv_kv_vv(_gv)?\+cast/, `${k.name}: the prologue path`);
    const got = await runKernelOutputs(gpu.device, k, k.bindings.slice(0, -nodes.length).map((b) => value(b.value)), nodes.map((n) => numel(n.shape)));
    nodes.forEach((n, i) => out.set(n.id, got[i]));
  };
  const reads = (n: Node) => attentionReads(graph, n, prologuePlans(graph, n));
  await run(flashForwardKernel(fwd, inputs(fwd), target, {}, lse, reads(fwd)), [fwd, lse]);
  await run(flashBackwardKernel(dq, inputs(dq), target, {}, undefined, reads(dq)), [dq]);
  await run(flashBackwardKernel(dk, inputs(dk), target, {}, dv, reads(dk)), [dk, dv]);
  return out;
}

/**
 * `graph` with its attention-family nodes and the other values their kernels read (δ) as outputs too, named
 * `%<id>`; not the casts of their operands (an output is never read in place, nor stored as f16).
 */
function exposing(graph: Graph): Graph {
  const extra = new Set<number>();
  for (const n of graph.nodes) if (n.op.startsWith('attention')) [n.id, ...n.inputs].forEach((i) => extra.add(i));
  for (const id of extra) if (!graph.outputs.some((o) => o.node === id) && !['input', 'cast'].includes(graph.node(id).op)) graph.outputs.push({ name: `%${id}`, node: id });
  return graph;
}

/** Checks the schedule of `graph` on the device: f16 rows, the old path's bits, the CPU reference. */
async function checkSchedule(graph: Graph, feeds: Map<string, RefTensor>, what: string, reference: (name: string) => { data: ArrayLike<number> }): Promise<void> {
  const gpu = gpuOf();
  if (!gpu.target.features.includes('shader-f16')) assert.fail(`the test device ${gpu.target.name} has no shader-f16`);
  const target = hardwareLike(gpu.target);
  const program = scheduledProgram(graph, target, {});
  const flash = flashKernels(program.schedule.kernels);
  assert.equal(flash.length, 3, `${what}: ${program.schedule.kernels.map((k) => k.name).join(', ')}`);
  for (const k of flash) {
    const rows = k.name.startsWith('attention_grad') ? 4 : 3;
    assert.doesNotMatch(k.name, /f32_[qkvg]v|\+/, `${what}: ${k.name} reads no view`);
    assert.deepEqual(declarations(k).slice(0, rows), Array(rows).fill('array<vec4<f16>>'), `${what}: ${k.name}`);
  }
  const got = await runGpu(gpu, graph, program, feeds, new Map());
  // What each binding holds: an input's feed, a cast's value of its input (exact on the CPU), or an output.
  const value = (id: number): Float32Array => {
    const n = graph.node(id);
    const input = graph.inputs.find((i) => i.node === id);
    if (input) return f32(feeds.get(input.name)!);
    if (n.op === 'cast') return value(n.inputs[0]).map((x) => castValue(x, n.dtype));
    return f32(got.get(graph.outputs.find((o) => o.node === id)!.name)!);
  };
  // The path before, kernel by kernel on the same operands: the same sums of the same values.
  const before = await prologueKernels(graph, target, value);
  const S = graph.nodes.find((n) => n.op === 'attention')!.shape[2];
  for (const [id, v] of before) assertKernelsAgree(gpu.target, value(id), v, `${what}: %${id} ${graph.node(id).op} against the prologue path`, S);
  // And the CPU reference (float64): the f32 kernels' rounding, and one f16 ulp where autocast rounds the results.
  for (const o of graph.outputs) {
    const e = reference(o.name).data;
    const scale = Math.max(...Array.from(e, Math.abs));
    assertWithin(f32(got.get(o.name)!), e, (i) => 2 ** -10 * Math.abs(e[i]) + 2e-5 * scale, `${what}: ${o.name}`);
  }
}

test('on the device: f16 attention as the bench builds it (autocast before the VJP) gives the prologue path bits, and the reference', async () => {
  const shape = [2, 2, 13, 8];
  const graph = exposing(compileOp('attention', new Map(['q', 'k', 'v'].map((n) => [n, shape])), [], true, 'f16').graph);
  const rng = makeRng(5);
  const feeds = new Map(graph.inputs.map((i) => [i.name, tensor(graph.node(i.node).shape, rng, false)]));
  const ref = interpret(graph, feeds, new Map());
  await checkSchedule(graph, feeds, 'autocast VJP', (name) => ref.get(name)!);
});

test('on the device: f16 inputs read as f32 give the prologue path bits, and the reference', async () => {
  const graph = exposing(halfInputGraph(1, 2, 9, 8));
  const rng = makeRng(8);
  const feeds = new Map(graph.inputs.map((i) => [i.name, tensor(graph.node(i.node).shape, rng, graph.node(i.node).dtype === 'f16')]));
  const ref = interpret(graph, feeds, new Map());
  await checkSchedule(graph, feeds, 'f16 inputs', (name) => ref.get(name)!);
  // The plans behind it: direct reads of the f16 inputs, nothing through a view.
  const live = graph.live();
  for (const x of graph.inputs) live.add(x.node);
  const { plans } = planAttentionViews(graph, live, new Set(graph.outputs.map((o) => o.node)), new Set(), new Map(), [], hardwareLike(gpuOf().target));
  for (const [id, p] of plans) for (const s of p.slice(0, 4)) if (s) assert.ok(s.direct && s.view.leaves.length === 1 && graph.node(s.view.leaves[0]).op === 'input', `%${id}`);
});
