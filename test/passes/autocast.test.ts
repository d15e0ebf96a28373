// Autocast (compiler/passes/autocast.ts) and a frozen backbone's precision (compiler/train/frozen-precision.ts):
// where the roundings go, that the values are AMP's (operands and result rounded, products in float64 here),
// and that half parameters are not rounded again.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { printGraph } from '../../compiler/ir/print.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { assertVerified } from '../../compiler/ir/verify.js';
import { autocastPass } from '../../compiler/passes/autocast.js';
import { runPass } from '../../compiler/passes/engine.js';
import { lowPrecisionParams } from '../../compiler/train/frozen-precision.js';
import { makeRng, tensor } from '../ir/util.js';

const F16 = autocastPass('f16');

/** y = x·Wᵀ as `linear` lowers it, plus a second product reading the first. */
function linearGraph(m: number, k: number, n: number): Graph {
  const b = new Builder();
  const x = b.input('x', [m, k]);
  const w = b.param('w', [n, k]);
  const y = b.add('matmul', [x, b.transposeLast(w)]);
  const z = b.add('matmul', [y, b.param('v', [n, 3])]);
  b.output('z', z);
  return b.graph;
}

const count = (g: Graph, op: string, dtype?: string) => g.nodes.filter((n) => n.op === op && (dtype === undefined || n.dtype === dtype) && g.live().has(n.id)).length;

test('operands and results are rounded once each; a transposed weight is rounded below its permute', () => {
  const g = runPass(linearGraph(4, 5, 6), F16);
  assertVerified(g, 'autocast');
  // x, w, v, y (rounded once, read by the second product as is) and z: five roundings.
  assert.equal(count(g, 'cast', 'f16'), 5, printGraph(g));
  for (const mm of g.nodes.filter((n) => n.op === 'matmul' && g.live().has(n.id))) {
    const b = g.node(mm.inputs[1]);
    if (b.op === 'permute') assert.equal(g.node(b.inputs[0]).op, 'cast', 'Wᵀ is permute(round(W)): the matmul reads the rounded W transposed in place');
  }
  assert.equal(printGraph(runPass(g, F16)), printGraph(g), 'the pass is idempotent');
});

test("values are AMP's: f16 operands, float64 products, an f16 result", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 5 }), fc.integer(), (m, k, n, seed) => {
      const rng = makeRng(seed);
      const x = tensor([m, k], () => (rng() - 0.5) * 8);
      const w = tensor([n, k], () => (rng() - 0.5) * 8);
      const v = tensor([n, 3], () => rng() - 0.5);
      const g = runPass(linearGraph(m, k, n), F16);
      const got = interpret(g, new Map([['x', x]]), new Map([['w', w], ['v', v]])).get('z')!.data;
      const r = (a: ArrayLike<number>) => Array.from(a, roundF16);
      const [xr, wr, vr] = [r(x.data), r(w.data), r(v.data)];
      const y = Array.from({ length: m * n }, (_, i) => roundF16([...Array(k).keys()].reduce((s, t) => s + xr[Math.floor(i / n) * k + t] * wr[(i % n) * k + t], 0)));
      const z = Array.from({ length: m * 3 }, (_, i) => roundF16([...Array(n).keys()].reduce((s, t) => s + y[Math.floor(i / 3) * n + t] * vr[t * 3 + (i % 3)], 0)));
      z.forEach((e, i) => assert.ok(Math.abs(got[i] - e) <= 1e-12 * Math.max(1, Math.abs(e)), `z[${i}] ${got[i]} vs ${e}`));
    }),
    { numRuns: 40 },
  );
});

test('the mask of attention stays f32', () => {
  const b = new Builder();
  const [q, k, v] = ['q', 'k', 'v'].map((s) => b.input(s, [1, 2, 3, 4]));
  const mask = b.input('mask', [1, 1, 3, 3]);
  b.output('o', b.add('attention', [q, k, v, mask], { scale: 0.5 }));
  const g = runPass(b.graph, F16);
  const att = g.nodes.find((n) => n.op === 'attention' && g.live().has(n.id))!;
  assert.equal(att.inputs[3], g.inputs.find((i) => i.name === 'mask')!.node);
  att.inputs.slice(0, 3).forEach((i) => assert.equal(g.node(i).op, 'cast'));
});

test('a frozen fp16 weight: an f16 parameter read through a cast, never rounded again by autocast', () => {
  const half = lowPrecisionParams(linearGraph(2, 3, 4), new Set(['w']), 'f16');
  assertVerified(half, 'low precision params');
  const w = half.params.find((p) => p.name === 'w')!;
  assert.equal(half.node(w.node).dtype, 'f16');
  assert.equal(half.node(half.params.find((p) => p.name === 'v')!.node).dtype, 'f32', 'other parameters keep their dtype');
  assert.deepEqual(half.params.map((p) => p.name), ['w', 'v']);
  const g = runPass(half, F16);
  // The weight's only cast to f16 is the parameter itself: x, v, y and z are rounded, w is not.
  assert.equal(count(g, 'cast', 'f16'), 4, printGraph(g));
  // On f16-rounded weights the values equal the f32 graph's (a rounding of a half value changes nothing).
  const rng = makeRng(3);
  const feeds = { x: tensor([2, 3], () => rng() - 0.5), w: tensor([4, 3], () => roundF16(rng() - 0.5)), v: tensor([4, 3], () => rng() - 0.5) };
  const run = (gr: Graph) => interpret(gr, new Map([['x', feeds.x]]), new Map([['w', feeds.w], ['v', feeds.v]])).get('z')!.data;
  assert.deepEqual(run(g), run(runPass(linearGraph(2, 3, 4), F16)));
});
