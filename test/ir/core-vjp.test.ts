// What finite differences cannot check: frozen values get no backward work, the conventions at kinks and
// ties (PyTorch's), cotangent dtypes, and inputs that take no gradient.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { Builder } from '../../compiler/ir/builder.js';
import { assertClose, makeRng, randomTensor, tensor, vjpValues } from './util.js';

const vals = (x: { data: Float64Array }) => [...x.data];

describe('frozen values cost nothing', () => {
  test('x → matmul W1 (frozen) → matmul W2 (trainable): the backward graph only computes dW2', () => {
    const b = new Builder();
    const x = b.input('x', [4, 3]);
    const w1 = b.param('w1', [3, 5]);
    const w2 = b.param('w2', [5, 2]);
    const h = b.add('matmul', [x, w1]);
    const y = b.add('matmul', [h, w2]);
    b.output('y', y);
    const before = b.graph.nodes.length;
    const { grads, cotangents } = vjp(b.graph, [w2]);
    const backward = b.graph.nodes.slice(before);
    const dy = cotangents.get('y')!;
    // d:y, hᵀ and hᵀ·d:y: nothing else.
    assert.deepEqual(backward.map((n) => n.op), ['input', 'permute', 'matmul']);
    const dw2 = b.graph.node(grads.get(w2)!);
    assert.equal(dw2.op, 'matmul');
    assert.deepEqual(dw2.shape, [5, 2]);
    assert.deepEqual(dw2.inputs[1], dy);
    for (const n of backward) {
      assert.ok(!n.inputs.includes(w1) && !n.inputs.includes(w2) && !n.inputs.includes(x), `%${n.id} ${n.op} reads a weight or x`);
      assert.ok(!(n.op === 'matmul' && n.shape.join() === '3,5'), 'a matmul produces W1-shaped values');
      assert.ok(!(n.shape.join() === '4,5' && n.inputs.includes(dy)), 'the cotangent of h is computed');
    }
  });

  test('a frozen side of a binary op builds no node', () => {
    const b = new Builder();
    const x = b.input('x', [3]);
    const w = b.param('w', [2, 3]);
    b.output('y', b.add('mul', [x, w]));
    const before = b.graph.nodes.length;
    vjp(b.graph, [w]);
    // d:y, d:y·x (no unbroadcast: same shape as w), and nothing for x.
    assert.deepEqual(b.graph.nodes.slice(before).map((n) => n.op), ['input', 'mul']);
  });

  test('attention with only v trainable does not build dq or dk', () => {
    const b = new Builder();
    const q = b.input('q', [1, 1, 2, 2]);
    const v = b.param('v', [1, 1, 2, 2]);
    b.output('y', b.add('attention', [q, q, v]));
    const before = b.graph.nodes.length;
    vjp(b.graph, [v]);
    const added = b.graph.nodes.slice(before);
    const ops = added.map((n) => n.op);
    // Flash backward: one attention_grad for v (wrt 2), nothing for q or k, and no scores matrix.
    assert.deepEqual(added.filter((n) => n.op === 'attention_grad').map((n) => n.attrs.wrt), [2], ops.join(' '));
    assert.equal(ops.filter((o) => o === 'matmul' || o === 'softmax').length, 0, ops.join(' '));
  });

  test('a graph without outputs gives zero gradients (and terminates)', () => {
    const b = new Builder();
    const x = b.input('x', [2]);
    b.add('exp', [x]);
    const { grads } = vjp(b.graph, [x]);
    assert.equal(b.graph.node(grads.get(x)!).op, 'full');
  });

  test('an input that reaches no output gets a zero gradient and no work', () => {
    const b = new Builder();
    const x = b.input('x', [2]);
    const unused = b.param('u', [3]);
    b.add('exp', [unused]);
    b.output('y', b.add('exp', [x]));
    const { grads } = vjp(b.graph, [unused]);
    const g = b.graph.node(grads.get(unused)!);
    assert.equal(g.op, 'full');
    assert.equal(g.attrs.value, 0);
  });
});

describe('conventions at kinks and ties (PyTorch)', () => {
  test('max splits the cotangent evenly among ties (amax)', () => {
    const [g] = vjpValues((b, [x]) => b.add('max', [x], { dims: [1], keepdim: false }), [tensor([2, 3], [1, 3, 3, 5, 5, 5])]);
    assertClose(g, [0, 0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]);
    const [g2] = vjpValues((b, [x]) => b.add('max', [x], { dims: [0, 1], keepdim: true }), [tensor([2, 2], [4, 1, 4, 2])], { dy: tensor([1, 1], [6]) });
    assertClose(g2, [3, 0, 3, 0]);
  });

  test('maximum gives each side half at ties', () => {
    const [ga, gb] = vjpValues((b, [x, y]) => b.add('maximum', [x, y]), [tensor([3], [1, 2, 3]), tensor([3], [2, 2, 1])]);
    assert.deepEqual(vals(ga), [0, 0.5, 1]);
    assert.deepEqual(vals(gb), [1, 0.5, 0]);
  });

  test('relu has derivative 0 at 0', () => {
    const [g] = vjpValues((b, [x]) => b.add('relu', [x]), [tensor([3], [-1, 0, 2])]);
    assert.deepEqual(vals(g), [0, 0, 1]);
  });

  test('dropout backward uses the forward mask', () => {
    const x = tensor([50], (i) => i + 1);
    const [g] = vjpValues((b, [t]) => b.add('dropout', [t], { p: 0.4, seed: 9 }), [x]);
    const y = vjpValues((b, [t]) => b.add('sum', [b.add('dropout', [t], { p: 0.4, seed: 9 })], { dims: [0], keepdim: false }), [x]);
    assert.deepEqual(vals(g), vals(y[0]));
    // the kept elements have derivative 1/(1-p), the others 0
    assert.ok(g.data.every((v) => v === 0 || Math.abs(v - 1 / 0.6) < 1e-15));
  });
});

describe('cotangent types and inputs without gradient', () => {
  test('cast sends the cotangent back in the source dtype; integer sources take none', () => {
    const b = new Builder();
    const x = b.input('x', [2], 'f32');
    const i = b.input('i', [2], 'i64');
    const y = b.add('add', [b.add('cast', [x], { dtype: 'f16' }), b.add('cast', [i], { dtype: 'f16' })]);
    b.output('y', y);
    const before = b.graph.nodes.length;
    const { grads } = vjp(b.graph, [x, i]);
    const gx = b.graph.node(grads.get(x)!);
    assert.equal(gx.op, 'cast');
    assert.equal(gx.dtype, 'f32');
    const gi = b.graph.node(grads.get(i)!);
    assert.ok(gi.id >= before && gi.op === 'full' && gi.attrs.value === 0, 'the integer input gets the zero constant');
  });

  test('eq, step, gather index and pow with exponent 0 contribute nothing', () => {
    const b = new Builder();
    const x = b.input('x', [3]);
    const idx = b.input('i', [2]);
    const terms = [b.add('eq', [x, x]), b.add('step', [x]), b.add('pow', [x], { exponent: 0 })].map((t) => b.add('sum', [t], { dims: [0], keepdim: false }));
    const gathered = b.add('sum', [b.add('gather', [x, idx], { dim: 0 })], { dims: [0], keepdim: false });
    b.output('y', terms.reduce((s, t) => b.add2(s, t), gathered));
    const { grads } = vjp(b.graph, [x, idx]);
    assert.equal(b.graph.node(grads.get(idx)!).op, 'full');
    const ops = b.graph.nodes.filter((n) => n.id > b.graph.inputs.find((i) => i.name === 'd:y')!.node).map((n) => n.op);
    assert.ok(!ops.includes('eq') && !ops.includes('step'), ops.join(' '));
    assert.ok(ops.includes('scatter_add'));
  });

  test('a trainable attention mask (e.g. a relative position bias) gets its gradient', () => {
    const rng = makeRng(3);
    const ins = [randomTensor([1, 2, 3, 2], rng), randomTensor([1, 2, 3, 2], rng), randomTensor([1, 2, 3, 2], rng), randomTensor([2, 3, 3], rng)];
    const [gm] = vjpValues((b, [q, k, v, m]) => b.add('attention', [q, k, v, m]), ins, { wrt: [3], dy: randomTensor([1, 2, 3, 2], rng) });
    assert.deepEqual(gm.shape, [2, 3, 3]);
    // each softmax row's logit gradients sum to 0
    for (let r = 0; r < 6; r++) assert.ok(Math.abs(gm.data[r * 3] + gm.data[r * 3 + 1] + gm.data[r * 3 + 2]) < 1e-14);
  });
});
