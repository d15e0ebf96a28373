// conv2d and its adjoints in the CPU reference: a worked example, the adjoint identities, and finite
// differences of the gradient rules (first order for conv2d, and the rules of both grad ops, which make
// second order work), over random geometry: strides 1-3, padding 0-2, dilation 1-2, groups 1-2, odd sizes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { Attrs } from '../../compiler/ir/graph.js';
import { Builder } from '../../compiler/ir/builder.js';
import { conv2dShape } from '../../compiler/ir/rules/shape.js';
import { REFERENCE } from '../../compiler/ir/rules/reference.js';
import { assertClose, evalOp, finiteDifferenceCheck, makeRng, randomTensor, tensor } from './util.js';

const NUM_RUNS = Number(process.env.VISFT_VISION_RUNS ?? 25);

interface ConvCase {
  readonly x: number[];
  readonly w: number[];
  readonly y: number[];
  readonly attrs: Attrs;
  readonly seed: number;
}

/** Random conv geometry whose output is at least 1x1; sizes are whatever falls out (odd ones included). */
const convCase: fc.Arbitrary<ConvCase> = fc
  .record({
    n: fc.integer({ min: 1, max: 2 }),
    groups: fc.integer({ min: 1, max: 2 }),
    cg: fc.integer({ min: 1, max: 2 }),
    og: fc.integer({ min: 1, max: 2 }),
    k: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
    stride: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
    padding: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })),
    dilation: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
    extra: fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 4 })),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  })
  .map(({ n, groups, cg, og, k, stride, padding, dilation, extra, seed }) => {
    // The smallest input the kernel fits, plus `extra`: (size + 2p - d(k-1) - 1) >= extra >= 0.
    const size = [0, 1].map((i) => Math.max(1, dilation[i] * (k[i] - 1) + 1 - 2 * padding[i] + extra[i]));
    const x = [n, cg * groups, size[0], size[1]];
    const w = [og * groups, cg, k[0], k[1]];
    const attrs: Attrs = { stride, padding, dilation, groups };
    return { x, w, y: conv2dShape(x, w, attrs), attrs, seed };
  });

const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);

test('conv2d: a worked example with stride, padding, dilation and groups', () => {
  // x: one image, 2 channels of 3x3 (values 1..18); w: 2 output channels, groups 2, 2x2 kernels, dilation 2.
  const x = tensor([1, 2, 3, 3], (i) => i + 1);
  const w = tensor([2, 1, 2, 2], [1, 0, 0, -1, 0, 2, 1, 0]);
  const y = evalOp('conv2d', [x, w], { stride: [2, 2], padding: [1, 1], dilation: [2, 2], groups: 2 });
  // With p the zero-padded 5x5 maps, y0[oy][ox] = p0[2oy][2ox] - p0[2oy+2][2ox+2] and
  // y1[oy][ox] = 2·p1[2oy][2ox+2] + p1[2oy+2][2ox]; only p[2][2] (x[1][1]: 5 and 14) is ever nonzero.
  assert.deepEqual(y.shape, [1, 2, 2, 2]);
  assertClose(y, [-5, 0, 0, 5, 0, 14, 28, 0]);
});

test('conv2d: forward, grad_input and grad_weight are adjoint (<C_w x, g> = <x, C_wᵀ g> = <w, dW(x, g)>)', () => {
  fc.assert(
    fc.property(convCase, ({ x, w, y, attrs, seed }) => {
      const rng = makeRng(seed);
      const [xt, wt, gt] = [x, w, y].map((s) => randomTensor(s, rng));
      const yv = REFERENCE.conv2d([xt, wt], attrs, { shape: y, dtype: 'f32' });
      const dx = REFERENCE.conv2d_grad_input([gt, wt], { ...attrs, input_shape: x }, { shape: x, dtype: 'f32' });
      const dw = REFERENCE.conv2d_grad_weight([xt, gt], { ...attrs, weight_shape: w }, { shape: w, dtype: 'f32' });
      const a = dot(yv.data, gt.data);
      const b = dot(xt.data, dx.data);
      const c = dot(wt.data, dw.data);
      const scale = 1 + Math.abs(a);
      assert.ok(Math.abs(a - b) <= 1e-12 * scale && Math.abs(a - c) <= 1e-12 * scale, `${a} ${b} ${c} for ${JSON.stringify({ x, w, attrs })}`);
    }),
    { numRuns: 200 },
  );
});

test('conv2d: gradients in x and w match finite differences', () => {
  fc.assert(
    fc.property(convCase, ({ x, w, attrs, seed }) => {
      finiteDifferenceCheck((b, [xi, wi]) => b.add('conv2d', [xi, wi], attrs), [x, w], { seed });
    }),
    { numRuns: NUM_RUNS },
  );
});

test('conv2d_grad_input: gradients in g and w match finite differences (second order of conv2d)', () => {
  fc.assert(
    fc.property(convCase, ({ x, w, y, attrs, seed }) => {
      finiteDifferenceCheck((b, [gi, wi]) => b.add('conv2d_grad_input', [gi, wi], { ...attrs, input_shape: x }), [y, w], { seed });
    }),
    { numRuns: NUM_RUNS },
  );
});

test('conv2d_grad_weight: gradients in x and g match finite differences (second order of conv2d)', () => {
  fc.assert(
    fc.property(convCase, ({ x, w, y, attrs, seed }) => {
      finiteDifferenceCheck((b, [xi, gi]) => b.add('conv2d_grad_weight', [xi, gi], { ...attrs, weight_shape: w }), [x, y], { seed });
    }),
    { numRuns: NUM_RUNS },
  );
});

test('conv2d: a trailing row the stride skips gets zero gradient', () => {
  // H = 6, k = 2, stride 3: outputs read rows {0,1} and {3,4}; rows 2 and 5 are never read.
  const attrs = { stride: [3, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
  const g = tensor([1, 1, 2, 1], [1, 1]);
  const w = tensor([1, 1, 2, 1], [1, 1]);
  const dx = evalOp('conv2d_grad_input', [g, w], { ...attrs, input_shape: [1, 1, 6, 1] });
  assertClose(dx, [1, 1, 0, 1, 1, 0]);
});

test('conv2d grad ops reject a cotangent that does not fit their geometry (shape rule and reference)', () => {
  const attrs = { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
  const b = new Builder();
  const g = b.input('g', [1, 1, 3, 3]);
  const w = b.input('w', [1, 1, 2, 2]);
  const x = b.input('x', [1, 1, 5, 5]);
  assert.throws(() => b.add('conv2d_grad_input', [g, w], { ...attrs, input_shape: [1, 1, 5, 5] }), /conv2d_grad_input: g \[1, 1, 3, 3\] is not the output \[1, 1, 4, 4\]/);
  assert.throws(() => b.add('conv2d_grad_weight', [x, g], { ...attrs, weight_shape: [1, 1, 2, 2] }), /conv2d_grad_weight: g \[1, 1, 3, 3\] is not the output \[1, 1, 4, 4\]/);
  const rng = makeRng(3);
  const [gt, wt] = [randomTensor([1, 1, 3, 3], rng), randomTensor([1, 1, 2, 2], rng)];
  assert.throws(
    () => REFERENCE.conv2d_grad_input([gt, wt], { ...attrs, input_shape: [1, 1, 5, 5] }, { shape: [1, 1, 5, 5], dtype: 'f32' }),
    /conv2d_grad_input: output \[1, 1, 3, 3\] does not match conv2d of \[1, 1, 5, 5\]/,
  );
});
