// The attention pass: softmax(q·kᵀ·c [+ mask])·v written out as ops becomes the attention op, values unchanged,
// and its gradient then never builds an [.., Sq, Sk] tensor other than the mask.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { assertVerified } from '../../compiler/ir/verify.js';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { runPass } from '../../compiler/passes/index.js';
import { attentionPass } from '../../compiler/passes/attention.js';
import { makeRng, randomTensor } from '../ir/util.js';

interface Spec {
  rank: 3 | 4;
  B: number;
  H: number;
  Sq: number;
  Sk: number;
  D: number;
  Dv: number;
  form: 'mul' | 'rmul' | 'div' | 'none';
  mask: 'none' | 'full' | 'row';
  c: number;
}

const lead = (s: Spec) => (s.rank === 4 ? [s.B, s.H] : [s.B]);

/** The composed form, as a user would write it. */
function composed(s: Spec): Graph {
  const b = new Builder();
  const q = b.input('q', [...lead(s), s.Sq, s.D]);
  const k = b.input('k', [...lead(s), s.Sk, s.D]);
  const v = b.input('v', [...lead(s), s.Sk, s.Dv]);
  const r = s.rank;
  const kt = b.add('permute', [k], { dims: [...Array(r - 2).keys(), r - 1, r - 2] });
  const sc = b.add('matmul', [q, kt]);
  const c = b.full(s.c, []);
  let l = s.form === 'mul' ? b.mul(sc, c) : s.form === 'rmul' ? b.mul(c, sc) : s.form === 'div' ? b.add('div', [sc, c]) : sc;
  if (s.mask !== 'none') l = b.add2(l, b.input('mask', s.mask === 'full' ? [...lead(s), s.Sq, s.Sk] : [s.Sk]));
  b.output('out', b.add('matmul', [b.add('softmax', [l], { dim: -1 }), v]));
  return b.graph;
}

const specArb = fc.record({
  rank: fc.constantFrom(3 as const, 4 as const),
  B: fc.integer({ min: 1, max: 2 }),
  H: fc.integer({ min: 1, max: 3 }),
  Sq: fc.integer({ min: 1, max: 7 }),
  Sk: fc.integer({ min: 1, max: 9 }),
  D: fc.integer({ min: 1, max: 6 }),
  Dv: fc.integer({ min: 1, max: 5 }),
  form: fc.constantFrom('mul' as const, 'rmul' as const, 'div' as const, 'none' as const),
  mask: fc.constantFrom('none' as const, 'full' as const, 'row' as const),
  c: fc.double({ min: 0.1, max: 2, noNaN: true }),
});

function inputsFor(g: Graph, seed: number) {
  const rng = makeRng(seed);
  return new Map(g.inputs.map((i) => [i.name, randomTensor(g.node(i.node).shape, rng)]));
}

test('composed attention becomes one attention op with the same values (any scale form, mask, rank 3 or 4)', () => {
  fc.assert(
    fc.property(specArb, fc.integer({ min: 0, max: 1000 }), (s, seed) => {
      const g = composed(s);
      const r = runPass(g, attentionPass);
      assertVerified(r, 'attention');
      assert.equal(r.nodes.filter((n) => n.op === 'attention').length, 1);
      assert.equal(r.nodes.filter((n) => n.op === 'softmax' || n.op === 'matmul').length, 0);
      const ins = inputsFor(g, seed);
      const want = interpret(g, ins).get('out')!;
      const got = interpret(r, ins).get('out')!;
      assert.deepEqual(got.shape, want.shape);
      got.data.forEach((x, i) => assert.ok(Math.abs(x - want.data[i]) <= 1e-12 * (1 + Math.abs(want.data[i])), `${x} vs ${want.data[i]}`));
    }),
    { numRuns: 60 },
  );
});

test('after the rewrite, the gradient builds no [.., Sq, Sk] tensor except the mask', () => {
  const s: Spec = { rank: 4, B: 1, H: 2, Sq: 11, Sk: 13, D: 5, Dv: 3, form: 'mul', mask: 'none', c: 0.4 };
  const g = runPass(composed(s), attentionPass);
  const r = vjp(g, g.inputs.map((i) => i.node));
  const big = r.builder.graph.nodes.filter((n) => n.shape.slice(-2).join() === `${s.Sq},${s.Sk}`);
  assert.deepEqual(big.map((n) => n.op), []);
});

test('what is not attention stays as it is', () => {
  const b = new Builder();
  const q = b.input('q', [1, 2, 4, 3]);
  const k = b.input('k', [1, 2, 4, 3]);
  const v = b.input('v', [1, 2, 4, 3]);
  const kt = b.add('permute', [k], { dims: [0, 1, 3, 2] });
  // softmax over the query dim, and a k that is not transposed
  b.output('a', b.add('matmul', [b.add('softmax', [b.add('matmul', [q, kt])], { dim: 2 }), v]));
  b.output('b', b.add('matmul', [b.add('softmax', [b.add('matmul', [q, b.add('permute', [k], { dims: [1, 0, 3, 2] })])], { dim: -1 }), v]));
  const r = runPass(b.graph, attentionPass);
  assert.equal(r.nodes.filter((n) => n.op === 'attention').length, 0);
});
