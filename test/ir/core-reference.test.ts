// The CPU reference of the core ops against hand-computed and known (PyTorch / high-precision) values, and
// a few properties (softmax rows sum to 1, layernorm rows have mean 0 and variance 1, batched matmul equals
// the loop over its batch).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { castValue, dropoutKeeps, erf, erfc } from '../../compiler/ir/rules/reference-core.js';
import { assertClose, coords, evalGraph, evalOp, makeRng, randomTensor, shapeArb, tensor } from './util.js';

const t = tensor;
const vals = (x: { data: Float64Array }) => [...x.data];

describe('leaves and unary ops', () => {
  test('full fills its value', () => {
    const b = evalGraph((bb) => bb.full(2.5, [2, 3]), []);
    assert.deepEqual(b.shape, [2, 3]);
    assert.deepEqual(vals(b), [2.5, 2.5, 2.5, 2.5, 2.5, 2.5]);
  });

  test('erf matches high-precision values to about 1 ulp', () => {
    const known: [number, number][] = [
      [0, 0],
      [0.1, 0.1124629160182849],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [1.5, 0.9661051464753108],
      [2, 0.9953222650189527],
      [3, 0.9999779095030014],
      [-0.5, -0.5204998778130465],
      [6, 1],
    ];
    for (const [x, v] of known) assert.ok(Math.abs(erf(x) - v) <= 2.3e-16, `erf(${x}) = ${erf(x)}, expected ${v}`);
    assert.ok(Math.abs(erfc(3) / 2.209049699858544e-5 - 1) < 1e-14, `erfc(3) = ${erfc(3)}`);
    assert.ok(Math.abs(erfc(5) / 1.5374597944280349e-12 - 1) < 1e-14, `erfc(5) = ${erfc(5)}`);
    assert.ok(Math.abs(erfc(-2) - 1.9953222650189528) < 3e-16);
    assertClose(evalOp('erf', [t([3], [0.5, -1, 0])]), [0.5204998778130465, -0.8427007929497149, 0], { rtol: 0, atol: 3e-16 });
  });

  test('erf is odd, increasing and continuous at the method boundaries', () => {
    for (const x of [1, 2]) {
      const below = erf(x - 1e-12);
      const above = erf(x + 1e-12);
      assert.ok(below < above && above - below < 1e-11, `erf jumps at ${x}`);
      assert.equal(erf(-x), -erf(x));
      const cb = erfc(x - 1e-12);
      const ca = erfc(x + 1e-12);
      assert.ok(cb > ca && cb - ca < 1e-11, `erfc jumps at ${x}`);
    }
  });

  test('gelu uses the exact erf form', () => {
    const y = evalOp('gelu', [t([6], [1, -1, 2, 0, -4, 10])]);
    assertClose(y, [0.8413447460685429, -0.15865525393145707, 1.9544997361036416, 0, -1.266849673324797e-4, 10], { rtol: 1e-14, atol: 1e-300 });
    // Far in the tail, erfc keeps relative accuracy (1 + erf would cancel to 0).
    assertClose(evalOp('gelu', [t([2], [-10, -20])]), [-7.619853024160526e-23, -5.507248237212467e-88], { rtol: 1e-13, atol: 0 });
  });

  test('elementwise functions', () => {
    const x = t([3], [0.5, 1, 2]);
    assertClose(evalOp('neg', [x]), [-0.5, -1, -2]);
    assertClose(evalOp('exp', [x]), [Math.exp(0.5), Math.E, Math.exp(2)]);
    assertClose(evalOp('log', [x]), [Math.log(0.5), 0, Math.LN2]);
    assertClose(evalOp('sqrt', [x]), [Math.SQRT1_2, 1, Math.SQRT2]);
    assertClose(evalOp('rsqrt', [x]), [Math.SQRT2, 1, Math.SQRT1_2]);
    assertClose(evalOp('tanh', [x]), [0.46211715726000974, 0.7615941559557649, 0.9640275800758169]);
    assertClose(evalOp('sigmoid', [t([5], [1, 0, -1, 800, -800])]), [0.7310585786300049, 0.5, 0.2689414213699951, 1, 0], { atol: 1e-300 });
    assert.deepEqual(vals(evalOp('relu', [t([4], [-1, 0, 2, -0.5])])), [0, 0, 2, 0]);
    assert.deepEqual(vals(evalOp('step', [t([4], [-1, 0, 2, 1e-300])])), [0, 0, 1, 1]);
    assertClose(evalOp('pow', [x], { exponent: 2 }), [0.25, 1, 4]);
    assertClose(evalOp('pow', [x], { exponent: -0.5 }), [Math.SQRT2, 1, Math.SQRT1_2]);
    assert.deepEqual(vals(evalOp('pow', [x], { exponent: 0 })), [1, 1, 1]);
  });
});

describe('cast', () => {
  test('integer dtypes truncate toward zero, bool is x != 0, f32 keeps the value', () => {
    const x = t([6], [1.7, -1.7, 2.5, -0.2, 0, 3]);
    assert.deepEqual(vals(evalOp('cast', [x], { dtype: 'i64' })), [1, -1, 2, -0, 0, 3]);
    assert.deepEqual(vals(evalOp('cast', [x], { dtype: 'i32' })), [1, -1, 2, -0, 0, 3]);
    assert.deepEqual(vals(evalOp('cast', [x], { dtype: 'bool' })), [1, 1, 1, 1, 0, 1]);
    assert.deepEqual(vals(evalOp('cast', [t([1], [0.1])], { dtype: 'f32' })), [0.1]);
    assert.equal(evalOp('cast', [x], { dtype: 'f16' }).shape.length, 1);
  });

  test('f16 rounds to nearest even, with subnormals and overflow', () => {
    const cases: [number, number][] = [
      [0.1, 0.0999755859375],
      [1 + 2 ** -11, 1], // tie → even
      [1 + 3 * 2 ** -11, 1 + 2 ** -9], // tie → even (up)
      [1 + 2 ** -11 + 2 ** -20, 1 + 2 ** -10],
      [65504, 65504],
      [65519, 65504],
      [65520, Infinity],
      [-65520, -Infinity],
      [2 ** -24, 2 ** -24], // smallest subnormal
      [3e-8, 2 ** -24],
      [1e-8, 0],
      [2 ** -14 + 2 ** -25, 2 ** -14], // tie at the normal boundary → even
      [NaN, NaN],
    ];
    for (const [x, y] of cases) assert.ok(Object.is(castValue(x, 'f16'), y), `f16(${x}) = ${castValue(x, 'f16')}, expected ${y}`);
  });

  test('bf16 rounds to nearest even', () => {
    const cases: [number, number][] = [
      [0.1, 0.10009765625],
      [1 / 3, 0.333984375],
      [1 + 2 ** -8, 1], // tie → even
      [1 + 3 * 2 ** -8, 1 + 2 ** -6],
      [3.3895313892515355e38, 3.3895313892515355e38],
      [3.4e38, Infinity],
      [-2.5, -2.5],
    ];
    for (const [x, y] of cases) assert.ok(Object.is(castValue(x, 'bf16'), y), `bf16(${x}) = ${castValue(x, 'bf16')}, expected ${y}`);
  });
});

describe('dropout', () => {
  const n = 20000;
  const x = tensor([n], (i) => 1 + (i % 7));

  test('p = 0 is the identity', () => {
    assert.deepEqual(vals(evalOp('dropout', [x], { p: 0, seed: 3 })), vals(x));
  });

  test('keeps about 1 - p of the elements, scaled by 1/(1-p), deterministically per seed', () => {
    for (const p of [0.1, 0.5, 0.9]) {
      const y = evalOp('dropout', [x], { p, seed: 42 });
      let kept = 0;
      y.data.forEach((v, i) => {
        if (v !== 0) {
          kept++;
          assert.ok(Math.abs(v - x.data[i] / (1 - p)) < 1e-12);
        }
      });
      const frac = kept / n;
      assert.ok(Math.abs(frac - (1 - p)) < 0.02, `p ${p}: kept ${frac}`);
      assert.deepEqual(vals(evalOp('dropout', [x], { p, seed: 42 })), vals(y), 'same seed, same mask');
      assert.notDeepEqual(vals(evalOp('dropout', [x], { p, seed: 43 })), vals(y), 'another seed, another mask');
    }
  });

  test('the mask depends on the element index and seed only', () => {
    const y = evalOp('dropout', [tensor([4, 5], () => 1)], { p: 0.5, seed: 7 });
    y.data.forEach((v, i) => assert.equal(v !== 0, dropoutKeeps(7, i, 0.5)));
  });
});

describe('binary ops broadcast like NumPy', () => {
  const a = t([2, 1], [1, 2]);
  const b = t([3], [10, 20, 30]);
  test('add, sub, mul, div', () => {
    const y = evalOp('add', [a, b]);
    assert.deepEqual(y.shape, [2, 3]);
    assert.deepEqual(vals(y), [11, 21, 31, 12, 22, 32]);
    assert.deepEqual(vals(evalOp('sub', [a, b])), [-9, -19, -29, -8, -18, -28]);
    assert.deepEqual(vals(evalOp('mul', [a, b])), [10, 20, 30, 20, 40, 60]);
    assertClose(evalOp('div', [b, a]), [10, 20, 30, 5, 10, 15]);
    assert.deepEqual(vals(evalOp('mul', [t([], [3]), t([2], [1, 2])])), [3, 6]);
  });
  test('maximum propagates NaN; eq', () => {
    assert.deepEqual(vals(evalOp('maximum', [t([3], [1, 5, NaN]), t([3], [2, 3, 0])])), [2, 5, NaN]);
    assert.deepEqual(vals(evalOp('eq', [t([2, 2], [1, 2, 3, 4]), t([2], [1, 4])])), [1, 0, 0, 1]);
  });
});

describe('reductions and row ops', () => {
  const x = t([2, 3], [1, 2, 3, 4, 5, 6]);
  test('sum and max over dims, keepdim, negative dims', () => {
    assert.deepEqual(vals(evalOp('sum', [x], { dims: [0], keepdim: false })), [5, 7, 9]);
    assert.deepEqual(evalOp('sum', [x], { dims: [-1], keepdim: true }).shape, [2, 1]);
    assert.deepEqual(vals(evalOp('sum', [x], { dims: [-1], keepdim: true })), [6, 15]);
    assert.deepEqual(vals(evalOp('sum', [x], { dims: [0, 1], keepdim: false })), [21]);
    assert.deepEqual(vals(evalOp('max', [x], { dims: [1], keepdim: false })), [3, 6]);
    assert.deepEqual(vals(evalOp('max', [t([2, 2], [-5, -7, NaN, 1])], { dims: [1], keepdim: false })), [-5, NaN]);
    const y = evalOp('max', [t([2, 2, 2], [1, 8, 3, 4, 5, 6, 7, 2])], { dims: [0, 2], keepdim: true });
    assert.deepEqual(y.shape, [1, 2, 1]);
    assert.deepEqual(vals(y), [8, 7]);
  });

  test('softmax and log_softmax: known values, stable for large inputs', () => {
    assertClose(evalOp('softmax', [t([3], [1, 2, 3])], { dim: -1 }), [0.09003057317038046, 0.24472847105479767, 0.6652409557748219], { rtol: 1e-15 });
    assertClose(evalOp('log_softmax', [t([3], [1, 2, 3])], { dim: 0 }), [-2.4076059644443806, -1.4076059644443804, -0.4076059644443803], { rtol: 1e-15 });
    assertClose(evalOp('softmax', [t([2], [1000, 1001])], { dim: 0 }), [0.2689414213699951, 0.7310585786300049], { rtol: 1e-15 });
    assertClose(evalOp('log_softmax', [t([2], [-1000, 0])], { dim: 0 }), [-1000, 0], { rtol: 1e-15 });
    // Along dim 0 of [2, 2]: columns.
    assertClose(evalOp('softmax', [t([2, 2], [0, 5, 0, 5])], { dim: 0 }), [0.5, 0.5, 0.5, 0.5]);
  });

  test('softmax rows sum to 1 and log_softmax = log(softmax)', () => {
    fc.assert(
      fc.property(shapeArb(1, 3, 5), fc.nat(), fc.integer({ min: 1, max: 1e6 }), (shape, raw, seed) => {
        const dim = raw % shape.length;
        const x = randomTensor(shape, makeRng(seed), -20, 20);
        const y = evalOp('softmax', [x], { dim });
        const sums = evalOp('sum', [y], { dims: [dim], keepdim: false });
        assertClose(sums, tensor(sums.shape, () => 1), { rtol: 1e-14, atol: 1e-14, label: 'row sums' });
        const ls = evalOp('log_softmax', [x], { dim });
        assertClose(tensor(ls.shape, (i) => Math.exp(ls.data[i])), y, { rtol: 1e-12, atol: 1e-300 });
      }),
      { numRuns: 40 },
    );
  });

  test('layernorm rows have mean 0 and (biased) variance 1 with eps 0; eps enters the variance', () => {
    fc.assert(
      fc.property(shapeArb(1, 3, 5).filter((s) => s[s.length - 1] >= 2), fc.integer({ min: 1, max: 1e6 }), (shape, seed) => {
        const x = randomTensor(shape, makeRng(seed), -3, 5);
        const y = evalOp('layernorm', [x], { eps: 0 });
        const n = shape[shape.length - 1];
        const mean = evalOp('sum', [y], { dims: [-1], keepdim: false });
        assertClose(mean, tensor(mean.shape, () => 0), { atol: 1e-13, label: 'mean' });
        const sq = evalOp('sum', [tensor(y.shape, (i) => y.data[i] ** 2)], { dims: [-1], keepdim: false });
        assertClose(sq, tensor(sq.shape, () => n), { rtol: 1e-13, label: 'variance' });
      }),
      { numRuns: 40 },
    );
    // [1, 3]: mean 2, biased variance 1 → (x - 2)/√(1 + eps)
    assertClose(evalOp('layernorm', [t([2], [1, 3])], { eps: 0.25 }), [-1 / Math.sqrt(1.25), 1 / Math.sqrt(1.25)]);
  });
});

describe('matmul', () => {
  test('hand-computed', () => {
    const y = evalOp('matmul', [t([2, 3], [1, 2, 3, 4, 5, 6]), t([3, 2], [7, 8, 9, 10, 11, 12])]);
    assert.deepEqual(y.shape, [2, 2]);
    assert.deepEqual(vals(y), [58, 64, 139, 154]);
  });

  test('batch dims broadcast: equals the product of each broadcast pair', () => {
    const rng = makeRng(5);
    const a = randomTensor([2, 1, 2, 3], rng);
    const b = randomTensor([3, 3, 2], rng);
    const y = evalOp('matmul', [a, b]);
    assert.deepEqual(y.shape, [2, 3, 2, 2]);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 3; j++) {
        const ai = t([2, 3], a.data.subarray(i * 6, i * 6 + 6));
        const bj = t([3, 2], b.data.subarray(j * 6, j * 6 + 6));
        const want = evalOp('matmul', [ai, bj]);
        assertClose(t([2, 2], y.data.subarray((i * 3 + j) * 4, (i * 3 + j) * 4 + 4)), want, { label: `batch ${i}, ${j}` });
      }
    }
  });
});

describe('movement ops', () => {
  const x = t([2, 3], [0, 1, 2, 3, 4, 5]);
  test('reshape keeps the order and infers -1', () => {
    const y = evalOp('reshape', [x], { shape: [3, -1] });
    assert.deepEqual(y.shape, [3, 2]);
    assert.deepEqual(vals(y), [0, 1, 2, 3, 4, 5]);
  });
  test('permute', () => {
    assert.deepEqual(vals(evalOp('permute', [x], { dims: [1, 0] })), [0, 3, 1, 4, 2, 5]);
    const z = randomTensor([2, 3, 4], makeRng(2));
    const y = evalOp('permute', [z], { dims: [2, -3, 1] });
    assert.deepEqual(y.shape, [4, 2, 3]);
    y.data.forEach((v, i) => {
      const [c, a, b] = coords(y.shape, i);
      assert.equal(v, z.data[a * 12 + b * 4 + c]);
    });
  });
  test('slice with start, end (clamped) and step', () => {
    const r = tensor([10], (i) => i);
    assert.deepEqual(vals(evalOp('slice', [r], { dim: 0, start: 1, end: 9, step: 3 })), [1, 4, 7]);
    assert.deepEqual(vals(evalOp('slice', [r], { dim: 0, start: 8, end: 100, step: 1 })), [8, 9]);
    assert.deepEqual(vals(evalOp('slice', [x], { dim: -1, start: 1, end: 3, step: 1 })), [1, 2, 4, 5]);
    assert.deepEqual(vals(evalOp('slice', [x], { dim: 0, start: 1, end: 2, step: 1 })), [3, 4, 5]);
  });
  test('concat along a dim, any number of inputs', () => {
    const y = evalOp('concat', [t([2, 1], [1, 2]), t([2, 2], [3, 4, 5, 6]), t([2, 1], [7, 8])], { dim: -1 });
    assert.deepEqual(y.shape, [2, 4]);
    assert.deepEqual(vals(y), [1, 3, 4, 7, 2, 5, 6, 8]);
    assert.deepEqual(vals(evalOp('concat', [x, x], { dim: 0 })), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
  });
  test('pad with a value; negative pads crop', () => {
    assert.deepEqual(vals(evalOp('pad', [t([4], [1, 2, 3, 4])], { pads: [[-1, 2]], value: 9 })), [2, 3, 4, 9, 9]);
    const y = evalOp('pad', [x], { pads: [[1, 0], [0, -2]], value: -1 });
    assert.deepEqual(y.shape, [3, 1]);
    assert.deepEqual(vals(y), [-1, 0, 3]);
    assert.deepEqual(vals(evalOp('pad', [x], { pads: [[0, 0], [1, 1]], value: 0 })), [0, 0, 1, 2, 0, 0, 3, 4, 5, 0]);
  });
  test('expand', () => {
    const y = evalOp('expand', [t([2, 1], [1, 2])], { shape: [2, 2, 3] });
    assert.deepEqual(y.shape, [2, 2, 3]);
    assert.deepEqual(vals(y), [1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2]);
  });
  test('gather (torch.gather semantics) and its errors', () => {
    const m = t([2, 2], [1, 2, 3, 4]);
    assert.deepEqual(vals(evalOp('gather', [m, t([2, 2], [0, 0, 1, 0])], { dim: 1 })), [1, 1, 4, 3]);
    assert.deepEqual(vals(evalOp('gather', [m, t([1, 2], [1, 0])], { dim: 0 })), [3, 2]);
    assert.throws(() => evalOp('gather', [m, t([2, 2], [0, 2, 1, 0])], { dim: 1 }), /gather: index 2 .*out of range/);
    assert.throws(() => evalOp('gather', [m, t([2, 2], [0, -1, 1, 0])], { dim: -1 }), /gather: index -1/);
  });
  test('scatter_add sums into zeros and is the adjoint of gather', () => {
    assert.deepEqual(vals(evalOp('scatter_add', [t([4], [1, 2, 3, 4]), t([4], [0, 1, 0, 2])], { dim: 0, shape: [3] })), [4, 2, 4]);
    assert.throws(() => evalOp('scatter_add', [t([1], [1]), t([1], [3])], { dim: 0, shape: [3] }), /scatter_add: index 3/);
    // ⟨gather(x, i), g⟩ = ⟨x, scatter_add(g, i)⟩
    const rng = makeRng(9);
    const xx = randomTensor([3, 4], rng);
    const idx = tensor([5, 4], () => Math.floor(rng() * 3));
    const g = randomTensor([5, 4], rng);
    const lhs = evalOp('gather', [xx, idx], { dim: 0 }).data.reduce((s, v, i) => s + v * g.data[i], 0);
    const rhs = evalOp('scatter_add', [g, idx], { dim: 0, shape: [3, 4] }).data.reduce((s, v, i) => s + v * xx.data[i], 0);
    assert.ok(Math.abs(lhs - rhs) < 1e-12);
  });
});

describe('attention', () => {
  test('equals softmax(q·kᵀ·scale + mask)·v built from matmul and softmax', () => {
    const rng = makeRng(11);
    const q = randomTensor([2, 2, 3, 4], rng);
    const k = randomTensor([2, 2, 5, 4], rng);
    const v = randomTensor([2, 2, 5, 3], rng);
    const mask = tensor([2, 1, 1, 5], (i) => (i % 5 === 4 ? -Infinity : 0.1 * i));
    for (const [attrs, scale] of [[{ scale: 0.7 }, 0.7], [{}, 0.5]] as const) {
      const got = evalOp('attention', [q, k, v, mask], attrs);
      const want = evalGraph((b, [qq, kk, vv, mm]) => {
        const logits = b.add2(b.scale(b.add('matmul', [qq, b.transposeLast(kk)]), scale), mm);
        return b.add('matmul', [b.add('softmax', [logits], { dim: -1 }), vv]);
      }, [q, k, v, mask]);
      assertClose(got, want, { rtol: 1e-13, atol: 1e-14 });
    }
  });
  test('one key: the output is v', () => {
    const rng = makeRng(12);
    const v = randomTensor([1, 2, 1, 3], rng);
    const got = evalOp('attention', [randomTensor([1, 2, 4, 2], rng), randomTensor([1, 2, 1, 2], rng), v]);
    got.data.forEach((x, i) => assert.ok(Math.abs(x - v.data[Math.floor(i / 12) * 3 + (i % 3)]) < 1e-15));
  });
});
