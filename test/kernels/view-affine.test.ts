// Affine views (kernels/view-affine.ts): a view of one leaf is found to be an affine map of the leaf's storage only
// when its elements' positions in the leaf are one (checked by brute force on the reference interpreter's values of
// a leaf holding its own flat indices), and then the map is that one; it is found whenever every view along the
// chain is affine. Random chains of permutes, slices with steps, reshapes (splits, merges, size-1 dims) and
// broadcasts, with pads, which are never affine here.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Shape } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { stridesOf } from '../../kernels/elementwise.js';
import { affineView, reshapeStrides } from '../../kernels/view-affine.js';
import { planView } from '../../kernels/view.js';
import { makeRng } from '../ir/util.js';
import { fcParams } from './core-util.js';

/** The leaf positions of the root's elements (row-major), from the reference interpreter. */
function positions(b: Builder, leaf: number, root: number): number[] {
  const g = b.graph;
  g.outputs.push({ name: 'root', node: root });
  const n = numel(g.node(leaf).shape);
  const values = interpret(g, new Map([[g.inputs.find((i) => i.node === leaf)!.name, { shape: [...g.node(leaf).shape], data: Float64Array.from({ length: n }, (_, i) => i) }]]));
  g.outputs.pop();
  return Array.from(values.get('root')!.data);
}

/** The affine map the positions follow, found by brute force, or undefined when they follow none. */
function bruteAffine(shape: Shape, pos: readonly number[]): { offset: number; strides: number[] } | undefined {
  if (pos.length === 0) return undefined;
  const st = stridesOf(shape);
  const offset = pos[0];
  const strides = shape.map((s, d) => (s > 1 ? pos[st[d]] - offset : 0));
  const ok = pos.every((p, i) => p === offset + shape.reduce((a, _, d) => a + Math.floor(i / st[d]) % shape[d] * strides[d], 0));
  return ok ? { offset, strides } : undefined;
}

/** A random chain of view ops over input x (`steps`: each op's node, in order); `ops` names them (a pad is never affine here). */
function randomChain(seed: number): { b: Builder; leaf: number; root: number; ops: string[]; steps: number[] } {
  const rng = makeRng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
  const b = new Builder();
  const leaf = b.input('x', Array.from({ length: int(1, 4) }, () => int(1, 4)));
  let x = leaf;
  const ops: string[] = [];
  const steps: number[] = [];
  for (let k = int(1, 5); k > 0; k--) {
    const s = b.shape(x);
    const r = s.length;
    const choice = int(0, 9);
    if (choice <= 2) {
      x = b.add('permute', [x], { dims: [...Array(r).keys()].sort(() => rng() - 0.5) });
      ops.push('permute');
    } else if (choice <= 4) {
      const d = int(0, r - 1);
      const start = int(0, s[d] - 1);
      x = b.add('slice', [x], { dim: d, start, end: int(start + 1, s[d]), step: int(1, 2) });
      ops.push('slice');
    } else if (choice <= 7) {
      // A split or merge of adjacent dims, or a random refactoring of the element count.
      const n = numel(s);
      let shape: number[];
      if (choice === 5 && r > 1) {
        const d = int(0, r - 2);
        shape = [...s.slice(0, d), s[d] * s[d + 1], ...s.slice(d + 2)];
      } else if (choice === 6) {
        shape = [...s, 1];
        shape.splice(int(0, r), 0, 1);
        shape.pop();
      } else {
        shape = [n];
        for (let p = 2; shape[0] > 1 && shape.length < 4; ) {
          if (shape[0] % p === 0 && rng() < 0.6) {
            shape[0] /= p;
            shape.push(p);
          } else if (p < shape[0]) p++;
          else break;
        }
      }
      x = b.add('reshape', [x], { shape });
      ops.push('reshape');
    } else if (choice === 8) {
      const shape = s.map((n) => (n === 1 ? int(1, 3) : n));
      x = b.add('expand', [x], { shape: rng() < 0.5 ? [int(2, 3), ...shape] : shape });
      ops.push('expand');
    } else {
      x = b.add('pad', [x], { pads: s.map(() => [int(0, 1), int(0, 1)]) });
      ops.push('pad');
    }
    steps.push(x);
  }
  return { b, leaf, root: x, ops, steps };
}

describe('affineView', () => {
  test('random chains: defined only where the positions are affine, and then equal to them; found wherever every step is affine', () => {
    let defined = 0;
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        const { b, leaf, root, ops, steps } = randomChain(seed);
        const plan = planView(b.graph, root, () => true);
        const got = affineView(b.graph, plan);
        const affineAt = (id: number) => bruteAffine(b.shape(id), positions(b, leaf, id));
        const want = affineAt(root);
        if (ops.includes('pad')) assert.equal(got, undefined, `seed ${seed}: a pad is not affine here`);
        else if (want === undefined) assert.equal(got, undefined, `seed ${seed}: ${ops.join(' ')}`);
        // The walk composes one step's map with the next, so a chain is found when each of its views is affine.
        // One whose middle is not (a reshape across a broadcast, sliced back into an affine view) need not be.
        else if (got === undefined) assert.ok(!steps.slice(0, -1).every((id) => affineAt(id) !== undefined), `seed ${seed}: every step affine, but not found: ${ops.join(' ')}`);
        else {
          assert.equal(got.leaf, leaf);
          assert.equal(got.offset, want.offset, `seed ${seed}: offset`);
          // Size-1 dims have no position to check: their strides are free (0 here).
          assert.deepEqual(got.strides.map((st, d) => (b.shape(root)[d] === 1 ? 0 : st)), want.strides, `seed ${seed}: ${ops.join(' ')}`);
          defined++;
        }
      }),
      fcParams(300, 7),
    );
    assert.ok(defined > 100, `the property saw ${defined} affine chains`);
  });

  test("attention's operands: heads split from a fused projection, a slice of qkv, a transposed cotangent", () => {
    const b = new Builder();
    const qkv = b.input('x', [2, 50, 3 * 4 * 8]);
    const split = b.add('reshape', [qkv], { shape: [2, 50, 3, 4, 8] });
    const k = b.add('slice', [b.add('permute', [split], { dims: [2, 0, 3, 1, 4] })], { dim: 0, start: 1, end: 2 });
    const kh = b.add('reshape', [k], { shape: [2, 4, 50, 8] });
    assert.deepEqual(affineView(b.graph, planView(b.graph, kh, () => true)), { leaf: qkv, offset: 32, strides: [50 * 96, 8, 96, 1] });
    // Merging its heads back is affine too (they lie side by side in qkv's rows)...
    const merged = b.add('reshape', [b.add('permute', [kh], { dims: [0, 2, 1, 3] })], { shape: [2, 50, 32] });
    assert.deepEqual(affineView(b.graph, planView(b.graph, merged, () => true)), { leaf: qkv, offset: 32, strides: [50 * 96, 96, 1] });
    // ...but not those of an attention output [B, H, S, D] (the output projection's input): a head's rows are apart.
    const out = b.input('o', [2, 4, 50, 8]);
    const heads = b.add('reshape', [b.add('permute', [out], { dims: [0, 2, 1, 3] })], { shape: [2, 50, 32] });
    assert.equal(affineView(b.graph, planView(b.graph, heads, () => true)), undefined);
    // The cotangent of such an output, split into heads again: affine.
    const g = b.input('g', [2, 50, 32]);
    const gh = b.add('permute', [b.add('reshape', [g], { shape: [2, 50, 4, 8] })], { dims: [0, 2, 1, 3] });
    assert.deepEqual(affineView(b.graph, planView(b.graph, gh, () => true)), { leaf: g, offset: 0, strides: [1600, 8, 32, 1] });
    // Two leaves (a concat) or a constant: not affine.
    const cat = b.add('concat', [qkv, qkv], { dim: 0 });
    assert.equal(affineView(b.graph, planView(b.graph, cat, () => true)), undefined);
  });

  test('reshapeStrides: splits and merges of adjacent dims, size-1 dims anywhere; a merge across a gap is none', () => {
    assert.deepEqual(reshapeStrides([4, 6], [6, 1], [2, 2, 3, 2]), [12, 6, 2, 1]);
    assert.deepEqual(reshapeStrides([2, 3, 4], [1, 8, 2], [2, 12]), [1, 2]);
    assert.deepEqual(reshapeStrides([3, 1, 4], [40, 7, 10], [1, 12, 1]), [0, 10, 0]);
    assert.equal(reshapeStrides([3, 4], [5, 1], [12]), undefined);
    assert.deepEqual(reshapeStrides([3, 4], [0, 1], [3, 2, 2]), [0, 2, 1]);
  });
});
