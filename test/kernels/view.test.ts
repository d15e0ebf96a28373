// Views (kernels/view.ts): which nodes a view inlines and which it reads from storage, WGSL that depends on the
// tree and not on where it sits in the graph, and on Dawn, bit for bit against the CPU reference, a kernel that
// writes every element of a view: random trees of permute, pad (crops, all-padding), slice (steps, clamped
// ends), reshape (-1), expand, concat (empty parts, a shared leaf read twice) and full over 1-3 inputs, with
// some view nodes left as leaves; LoRA's block-structured Bᵀ; and the same kernel with f16 storage.
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import fc from 'fast-check';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { Graph, numel, type Shape } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { printGraph } from '../../compiler/ir/print.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { flatKernel, u32Lit } from '../../kernels/elementwise.js';
import { halfStorageKernel } from '../../kernels/half-storage.js';
import { planView, viewCode, viewInputs, VIEW_OPS, type ViewPlan } from '../../kernels/view.js';
import { fromF16, toF16 } from '../../runtime/gpu/half.js';
import { openDevice } from '../../runtime/gpu/device.js';
import { makeRng, type Rng } from '../ir/util.js';
import { fcParams } from './core-util.js';
import { assertBitwise, randomTensor, runKernel, withDevice, type GpuContext } from './harness.js';

const all = (): boolean => true;

// ---------------------------------------------------------------------------------------------- test kernels

const bindingOf = (plan: ViewPlan) => (leaf: number) => `in_${plan.leaves.indexOf(leaf)}`;

/** A kernel whose out_0 holds every element of the view's root (row-major), reading its leaves as in_0, in_1, …. */
function viewKernel(graph: Graph, plan: ViewPlan, target: Target): Kernel {
  const root = graph.node(plan.root);
  const code = viewCode(graph, plan, 'view_', bindingOf(plan));
  const r = root.shape.length;
  const lines = ['    var rem = i;'];
  for (let d = r - 1; d >= 0; d--) {
    lines.push(d > 0 ? `    let o${d} = rem % ${u32Lit(root.shape[d])};` : `    let o${d} = rem;`);
    if (d > 0) lines.push(`    rem = rem / ${u32Lit(root.shape[d])};`);
  }
  lines.push(`    out_0[i] = ${code.call(root.shape.map((_, d) => `o${d}`))};`);
  const node = { ...root, inputs: plan.leaves };
  return flatKernel(node, plan.leaves.map((l) => graph.node(l)), target, 'view_test_f32', lines.join('\n'), { helpers: code.helpers });
}

/** The graph's nodes with outputs `n<id>` for the given nodes. */
function withOutputs(graph: Graph, nodes: readonly number[]): Graph {
  const g = new Graph();
  g.nodes.push(...graph.nodes);
  g.inputs.push(...graph.inputs);
  g.params.push(...graph.params);
  g.outputs.push(...nodes.map((node) => ({ name: `n${node}`, node })));
  return g;
}

/** The reference values of the view's root and of its leaves (rounded to f32), from `interpret`. */
function referenceOf(graph: Graph, plan: ViewPlan, inputs: ReadonlyMap<string, RefTensor>): { root: Float32Array; leaves: Float32Array[] } {
  const values = interpret(withOutputs(graph, [plan.root, ...plan.leaves]), inputs);
  const value = (n: number) => Float32Array.from(values.get(`n${n}`)!.data);
  return { root: value(plan.root), leaves: plan.leaves.map(value) };
}

function randomInputs(graph: Graph, seed: number, round: (x: Float32Array) => Float32Array = (x) => x): Map<string, RefTensor> {
  return new Map(graph.inputs.map((e, k) => [e.name, { shape: [...graph.node(e.node).shape], data: Float64Array.from(round(randomTensor(graph.node(e.node).shape, seed + k).data)) }]));
}

/** Runs the view kernel on the device and asserts its output equal bit for bit to the reference. */
async function checkView(gpu: GpuContext, graph: Graph, plan: ViewPlan, seed: number, label: string): Promise<Kernel> {
  const ref = referenceOf(graph, plan, randomInputs(graph, seed));
  const kernel = viewKernel(graph, plan, gpu.target);
  const out = await runKernel(gpu.device, kernel, ref.leaves, numel(graph.node(plan.root).shape));
  assertBitwise(out, ref.root, `${label}\n${kernel.wgsl}`);
  return kernel;
}

// ---------------------------------------------------------------------------------------------- random trees

/** A random movement tree over 1-3 inputs (every node at most 2k elements, the root non-empty). */
function randomTree(seed: number): { graph: Graph; root: number; rng: Rng } {
  const rng = makeRng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)];
  const b = new Builder();
  const leaves = Array.from({ length: int(1, 3) }, (_, k) => b.input(`x${k}`, Array.from({ length: int(1, 3) }, () => int(1, 5))));
  const values = [0, 1.5, -2.25, 7];
  const negDim = (d: number, r: number) => (rng() < 0.5 ? d - r : d);

  /** A random shape of `n` elements: its prime factors spread over 1-4 dims. */
  const shapeOf = (n: number): number[] => {
    const dims = Array.from({ length: int(1, 4) }, () => 1);
    for (let m = n, p = 2; m > 1; ) {
      if (m % p === 0) {
        dims[int(0, dims.length - 1)] *= p;
        m /= p;
      } else p++;
    }
    return dims;
  };
  /** A part of `shape` with `len` along dim d, made from leaf `l` (flattened, padded or cropped, viewed). */
  const fitted = (l: number, shape: Shape, d: number, len: number): number => {
    const target = shape.map((s, i) => (i === d ? len : s));
    const n = numel(b.shape(l));
    const flat = b.add('reshape', [l], { shape: [-1] });
    return b.add('reshape', [b.add('pad', [flat], { pads: [[0, numel(target) - n]], value: pick(values) })], { shape: target });
  };

  const ops: Record<string, (x: number) => number> = {
    permute: (x) => {
      const r = b.shape(x).length;
      const dims = [...Array(r).keys()].sort(() => rng() - 0.5).map((d) => negDim(d, r));
      return b.add('permute', [x], { dims });
    },
    pad: (x) => {
      const s = b.shape(x);
      const pads = s.map((n) => {
        if (rng() < 0.2) return [n + 1, -(n + 1)]; // all padding along this dim
        const p = [int(-2, 3), int(-2, 3)];
        return n + p[0] + p[1] >= 1 ? p : [0, 0];
      });
      return b.add('pad', [x], rng() < 0.3 ? { pads } : { pads, value: pick(values) });
    },
    slice: (x) => {
      const s = b.shape(x);
      const d = int(0, s.length - 1);
      const start = int(0, s[d] - 1);
      return b.add('slice', [x], { dim: negDim(d, s.length), start, end: int(start + 1, s[d] + 2), step: int(1, 3) });
    },
    reshape: (x) => {
      const shape: number[] = shapeOf(numel(b.shape(x)));
      if (rng() < 0.5) shape[int(0, shape.length - 1)] = -1;
      return b.add('reshape', [x], { shape });
    },
    expand: (x) => {
      const s = [...b.shape(x)];
      s.splice(int(0, s.length), 0, 1);
      const ones = b.add('reshape', [x], { shape: s });
      const shape = s.map((n) => (n === 1 ? int(1, 3) : n));
      return b.add('expand', [ones], { shape: rng() < 0.3 ? [2, ...shape] : shape });
    },
    concat: (x) => {
      const s = b.shape(x);
      const d = int(0, s.length - 1);
      const parts = [x];
      for (let k = int(1, 3); k > 0; k--) {
        const kind = int(0, 5);
        if (kind <= 1) parts.push(b.full(pick(values), s.map((n, i) => (i === d ? int(0, 3) : n))));
        else if (kind === 2) {
          const start = int(0, s[d]);
          parts.push(b.add('slice', [x], { dim: d, start, end: int(start, s[d]) })); // may be empty
        } else if (kind === 3) parts.push(b.add('pad', [x], { pads: s.map((n, i) => (i === d ? [int(-n, 2), 0] : [0, 0])) })); // may be empty
        else if (kind === 4) parts.push(fitted(pick(leaves), s, d, int(0, 3)));
        else parts.push(x); // the same node twice
      }
      parts.sort(() => rng() - 0.5);
      return b.add('concat', parts, { dim: negDim(d, s.length) });
    },
  };
  const grow = (depth: number): number => {
    if (depth === 0 || rng() < 0.15) return pick(leaves);
    const x = grow(depth - 1);
    const y = ops[pick(Object.keys(ops))](x);
    const n = numel(b.shape(y));
    return n >= 1 && n <= 2000 ? y : x;
  };
  let root = grow(int(2, 5));
  if (leaves.includes(root)) root = ops.concat(root);
  return { graph: b.graph, root, rng };
}

/** What a plan exercises: its inlined ops, crops, steps, empty concat parts, all-padding pads, kept and shared leaves. */
function featuresOf(graph: Graph, plan: ViewPlan): Set<string> {
  const got = new Set<string>();
  const uses = new Map<number, number>();
  for (const id of plan.inlined) {
    const n = graph.node(id);
    got.add(n.op);
    const live = viewInputs(n, graph);
    for (const i of live) uses.set(i, (uses.get(i) ?? 0) + 1);
    if (n.op === 'pad' && (n.attrs.pads as number[][]).some(([a, c]) => a < 0 || c < 0)) got.add('crop');
    if (n.op === 'pad' && live.length === 0) got.add('all padding');
    if (n.op === 'slice' && Number(n.attrs.step) > 1) got.add('step');
    if (n.op === 'concat' && live.length < n.inputs.length) got.add('empty part');
  }
  if (plan.leaves.some((l) => graph.node(l).op !== 'input')) got.add('kept leaf');
  if (plan.leaves.some((l) => (uses.get(l) ?? 0) > 1)) got.add('shared leaf');
  if (plan.leaves.length > 1) got.add('several leaves');
  return got;
}

const FEATURES = [...VIEW_OPS, 'crop', 'all padding', 'step', 'empty part', 'kept leaf', 'shared leaf', 'several leaves'];

/** A random tree and its plan; every other seed keeps up to two view nodes as leaves (read from their own buffers). */
function randomPlan(seed: number): { graph: Graph; plan: ViewPlan; keep: Set<number> } {
  const { graph, root, rng } = randomTree(seed);
  const keep = new Set(seed % 2 ? graph.nodes.filter((n) => VIEW_OPS.has(n.op) && n.id !== root && rng() < 0.2).slice(0, 2).map((n) => n.id) : []);
  return { graph, plan: planView(graph, root, (id) => !keep.has(id)), keep };
}

/** permute(concat([slice(crop), full, fitted x1, empty, all padding, expand(kept), x0ᵀ, x0ᵀ], -1)) over x0, x1, x2. */
function everyFeature(): { graph: Graph; plan: ViewPlan } {
  const b = new Builder();
  const x0 = b.input('x0', [3, 4]);
  const x1 = b.input('x1', [2, 5]);
  const x2 = b.input('x2', [6]);
  const cropped = b.add('pad', [x0], { pads: [[-1, 2], [1, -1]], value: 1.5 }); // [4, 4]
  const stepped = b.add('slice', [cropped], { dim: -1, start: 1, end: 9, step: 2 }); // [4, 2]
  const fitted = b.add('reshape', [b.add('pad', [b.add('reshape', [x1], { shape: [-1] })], { pads: [[0, -2]] })], { shape: [4, -1] }); // [4, 2]
  const empty = b.add('slice', [stepped], { dim: 1, start: 1, end: 1 });
  const allPadding = b.add('pad', [x0], { pads: [[1, 0], [5, -5]], value: -2.25 }); // [4, 4], x0 out of range
  const kept = b.add('reshape', [x2], { shape: [6] });
  const expanded = b.add('expand', [kept], { shape: [4, 6] }); // a leading dim
  const x0T = b.add('permute', [x0], { dims: [-1, 0] });
  const parts = [stepped, b.full(7, [4, 1]), fitted, empty, allPadding, expanded, x0T, x0T];
  const root = b.add('permute', [b.add('concat', parts, { dim: -1 })], { dims: [1, 0] });
  return { graph: b.graph, plan: planView(b.graph, root, (id) => id !== kept) };
}

// ---------------------------------------------------------------------------------------------- LoRA's Bblkᵀ

/** Bblkᵀ as compiler/lower/lora.ts builds it for q, v of qkv (rows [0, 4) and [8, 12) of 12, rank 2). */
function loraBlockT(b: Builder, bParam: number): { pads: number[]; zeros: number; concat: number; root: number } {
  const p0 = b.add('pad', [bParam], { pads: [[0, -4], [0, 2]], value: 0 });
  const zeros = b.full(0, [4, 4]);
  const p1 = b.add('pad', [bParam], { pads: [[-4, 0], [2, 0]], value: 0 });
  const concat = b.add('concat', [p0, zeros, p1], { dim: 0 });
  return { pads: [p0, p1], zeros, concat, root: b.add('permute', [concat], { dims: [1, 0] }) };
}

// ---------------------------------------------------------------------------------------------- planView

describe('planView', () => {
  test('inlines the view ops and full, reads a shared leaf once', () => {
    const b = new Builder();
    const B = b.param('lora_B', [8, 2]);
    const t = loraBlockT(b, B);
    const plan = planView(b.graph, t.root, all);
    assert.deepEqual(plan, { root: t.root, inlined: [t.pads[0], t.zeros, t.pads[1], t.concat, t.root], leaves: [B] });
    assert.ok(['permute', 'pad', 'concat', 'slice', 'reshape', 'expand', 'full'].every((op) => VIEW_OPS.has(op)));
  });
  test('a view op the caller keeps is a leaf; a full is inlined whatever the caller says', () => {
    const b = new Builder();
    const t = loraBlockT(b, b.param('lora_B', [8, 2]));
    assert.deepEqual(planView(b.graph, t.root, (id) => id !== t.concat), { root: t.root, inlined: [t.root], leaves: [t.concat] });
    const plan = planView(b.graph, t.concat, (id) => !t.pads.includes(id));
    assert.deepEqual(plan, { root: t.concat, inlined: [t.zeros, t.concat], leaves: t.pads });
  });
  test('a root that is no view op, or one the caller keeps, is a plain read', () => {
    const b = new Builder();
    const x = b.input('x', [3, 4]);
    const y = b.add('exp', [x]);
    const p = b.add('permute', [y], { dims: [1, 0] });
    assert.deepEqual(planView(b.graph, y, all), { root: y, inlined: [], leaves: [y] });
    assert.deepEqual(planView(b.graph, p, () => false), { root: p, inlined: [], leaves: [p] });
    assert.deepEqual(planView(b.graph, p, all), { root: p, inlined: [p], leaves: [y] });
  });
  test('leaves in first-use order, each once; parts no element reaches are neither inlined nor read', () => {
    const b = new Builder();
    const x0 = b.input('x0', [2, 3]);
    const x1 = b.input('x1', [2, 3]);
    const x2 = b.input('x2', [2, 3]);
    const empty = b.add('slice', [x2], { dim: 1, start: 1, end: 1 });
    const shifted = b.add('pad', [x2], { pads: [[0, 0], [3, -3]], value: 1 }); // all padding: x2 is never read
    const c = b.add('concat', [x1, empty, x0, shifted, x1], { dim: 1 });
    assert.deepEqual(planView(b.graph, c, all), { root: c, inlined: [shifted, c], leaves: [x1, x0] });
    const none = b.add('slice', [c], { dim: 0, start: 2, end: 2 });
    assert.deepEqual(planView(b.graph, none, all), { root: none, inlined: [], leaves: [] });
    assert.equal(viewCode(b.graph, planView(b.graph, none, all), 'v', () => 'in_0').call(['a', 'b']), '0.0f');
  });
});

test('the random trees exercise every feature', () => {
  const covered = new Set<string>();
  for (let seed = 0; seed < 200; seed++) {
    const { graph, plan } = randomPlan(seed * 7919);
    for (const f of featuresOf(graph, plan)) covered.add(f);
  }
  assert.deepEqual(FEATURES.filter((f) => !covered.has(f)), []);
});

describe('viewCode', () => {
  test('the same tree at two places in a graph gives the same WGSL', () => {
    const b = new Builder();
    const first = loraBlockT(b, b.param('q.lora_B', [8, 2]));
    b.add('exp', [b.input('x', [5])]);
    const second = loraBlockT(b, b.param('v.lora_B', [8, 2]));
    const code = (root: number) => {
      const plan = planView(b.graph, root, all);
      const c = viewCode(b.graph, plan, 'bview_', bindingOf(plan));
      return { helpers: c.helpers, call: c.call(['row', 'col + 1u']) };
    };
    assert.notEqual(first.root, second.root);
    assert.deepEqual(code(second.root), code(first.root));
    assert.match(code(first.root).call, /^bview_0\(row, col \+ 1u\)$/);
  });
  test('a plain read indexes the binding row-major; wrong coordinate counts are internal errors', () => {
    const b = new Builder();
    const x = b.input('x', [3, 1, 4]);
    const plan = planView(b.graph, x, all);
    const code = viewCode(b.graph, plan, 'v', () => 'in_2');
    assert.equal(code.helpers, '');
    assert.equal(code.call(['a', 'z', 'b + 1u']), 'in_2[a * 4u + b + 1u]');
    assert.throws(() => code.call(['a']), /called with 1 coordinates/);
    // A reshape (of reshapes) of a leaf reads it at its own flat index: storage is row-major.
    const r = b.add('reshape', [b.add('reshape', [x], { shape: [12] })], { shape: [2, 6] });
    const viewed = viewCode(b.graph, planView(b.graph, r, all), 'v', () => 'in_0');
    assert.equal(viewed.helpers, 'fn v0(c0: u32, c1: u32) -> f32 {\n  return in_0[c0 * 6u + c1];\n}');
  });
});

// ---------------------------------------------------------------------------------------------- on the device

await withDevice(async (gpu) => {
  await describe('views on the device, bit for bit against the reference', async () => {
    await test('random movement trees, some view nodes kept as leaves', async () => {
      await fc.assert(
        fc.asyncProperty(fc.integer(), async (seed) => {
          const { graph, plan, keep } = randomPlan(seed);
          await checkView(gpu, graph, plan, seed, `seed ${seed}, kept ${[...keep]}\n${printGraph(withOutputs(graph, [plan.root]))}`);
        }),
        fcParams(10, 1201),
      );
    });
    await test('one tree with every feature', async () => {
      const { graph, plan } = everyFeature();
      assert.deepEqual(FEATURES.filter((f) => !featuresOf(graph, plan).has(f)), []);
      await checkView(gpu, graph, plan, 3, `every feature\n${printGraph(withOutputs(graph, [plan.root]))}`);
    });
    await test('each op at its edges: rank-4 permutation cycles, leading expand dims, middle-dim steps, reshape of a view', async () => {
      const b = new Builder();
      const x = b.input('x', [2, 3, 4, 5]);
      const cycle = b.add('permute', [x], { dims: [1, -1, 0, 2] }); // [3, 5, 2, 4]
      const stepped = b.add('slice', [cycle], { dim: 1, start: 1, end: 99, step: 3 }); // [3, 2, 2, 4]
      const padded = b.add('pad', [stepped], { pads: [[1, -1], [0, 0], [-1, 2], [2, 1]], value: -1 }); // [3, 2, 3, 7]
      const merged = b.add('reshape', [padded], { shape: [3, 1, 6, 7, 1] });
      const split = b.add('reshape', [b.add('permute', [merged], { dims: [2, 1, 0, 4, 3] })], { shape: [2, 9, -1] }); // [2, 9, 7]
      const y = b.input('y', [3, 1]);
      const wide = b.add('expand', [y], { shape: [2, 1, 3, 7] });
      const joined = b.add('concat', [b.add('reshape', [wide], { shape: [2, 3, 7] }), split], { dim: 1 }); // [2, 12, 7]
      for (const root of [cycle, stepped, padded, split, wide, joined]) await checkView(gpu, b.graph, planView(b.graph, root, all), root, `edges %${root}`);
    });
    await test("LoRA's block-structured Bᵀ read in place from B", async () => {
      const b = new Builder();
      const B = b.input('lora_B', [8, 2]);
      const t = loraBlockT(b, B);
      const kernel = await checkView(gpu, b.graph, planView(b.graph, t.root, all), 5, 'Bblkᵀ');
      assert.equal(kernel.bindings.length, 2, 'B is bound once');
      // Rank 0 roots and size-1 dims: a scalar picked from a view.
      const s = b.add('reshape', [b.add('slice', [t.root], { dim: 1, start: 9, end: 10 })], { shape: [-1] });
      const scalar = b.add('reshape', [b.add('slice', [s], { dim: 0, start: 3, end: 4 })], { shape: [] });
      await checkView(gpu, b.graph, planView(b.graph, scalar, all), 6, 'scalar');
    });
  });
});

// f16 storage needs a device with shader-f16 (withDevice's has no features).
await test('f16 storage rewrites the reads in the view helpers and gives the same values', async (t: TestContext) => {
  const b = new Builder();
  const B = b.input('lora_B', [8, 2]);
  const { root } = loraBlockT(b, B);
  const plan = planView(b.graph, root, all);
  const ref = referenceOf(b.graph, plan, randomInputs(b.graph, 9, (x) => fromF16(toF16(x))));
  const gpu = await openDevice();
  try {
    const kernel = viewKernel(b.graph, plan, gpu.target);
    const half = halfStorageKernel(kernel, new Set([0]));
    assert.match(half.wgsl, /var<storage, read> in_0: array<f16>;/);
    assert.doesNotMatch(half.wgsl.replace(/f32\(in_0\[[^\]]*\]\)/g, ''), /in_0\[/, 'every read of in_0 is widened');
    if (!gpu.target.features.includes('shader-f16')) return t.skip(`the adapter ${gpu.target.name} has no shader-f16`);
    const bits = toF16(ref.leaves[0]);
    const packed = new Float32Array(Math.ceil(bits.length / 2));
    new Uint16Array(packed.buffer).set(bits);
    const out = await runKernel(gpu.device, half, [packed], numel(b.graph.node(root).shape));
    assertBitwise(out, ref.root, `f16 storage\n${half.wgsl}`);
  } finally {
    await gpu.destroy();
  }
});
