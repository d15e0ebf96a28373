// Host tensors: exact f16/bf16 codecs (checked exhaustively and against an independent nearest-value oracle),
// conversions, and strided-view materialisation.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  bf16BitsToNumber,
  castTensor,
  f16BitsToNumber,
  f32Bits,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32FromBits,
  fromNumbers,
  makeTensor,
  materializeView,
  numberToBf16Bits,
  numberToF16Bits,
  numel,
  tensorBytes,
  toFloat32,
  toFloat64,
  zeros,
  DTYPES,
  type DType,
} from '../../runtime/weights/tensor.js';

const RUNS = Number(process.env.VISFT_WEIGHTS_RUNS ?? 300);

/** Every finite non-negative value of a 16-bit float format, ascending, with its bit pattern. */
function finiteTable(decode: (h: number) => number): { values: number[]; bits: number[] } {
  const pairs: [number, number][] = [];
  for (let h = 0; h < 0x8000; h++) {
    const v = decode(h);
    if (Number.isFinite(v)) pairs.push([v, h]);
  }
  pairs.sort((a, b) => a[0] - b[0]);
  return { values: pairs.map((p) => p[0]), bits: pairs.map((p) => p[1]) };
}

/**
 * Oracle: the nearest representable value to x (ties to the even bit pattern); beyond max + half an ulp, inf.
 * Written independently of the bit-twiddling encoder.
 */
function nearestBits(x: number, table: { values: number[]; bits: number[] }, infBits: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  const { values, bits } = table;
  const max = values[values.length - 1];
  const ulpAtMax = max - values[values.length - 2];
  if (a >= max + ulpAtMax / 2) {
    if (a === max + ulpAtMax / 2 && (bits[bits.length - 1] & 1) === 0) return sign | bits[bits.length - 1];
    return sign | infBits;
  }
  let lo = 0;
  let hi = values.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (values[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - values[lo];
  const dh = values[hi] - a;
  let pick: number;
  if (dl < dh) pick = lo;
  else if (dh < dl) pick = hi;
  else pick = (bits[lo] & 1) === 0 ? lo : hi;
  return sign | bits[pick];
}

const f16Table = finiteTable(f16BitsToNumber);
const bf16Table = finiteTable(bf16BitsToNumber);

test('f16: every bit pattern decodes and re-encodes to itself (NaNs stay NaN)', () => {
  for (let h = 0; h < 65536; h++) {
    const v = f16BitsToNumber(h);
    const back = numberToF16Bits(v);
    if (Number.isNaN(v)) assert.ok(Number.isNaN(f16BitsToNumber(back)), `NaN 0x${h.toString(16)}`);
    else assert.equal(back, h, `0x${h.toString(16)} = ${v}`);
    // decoding is exact: the value is an f32
    if (!Number.isNaN(v)) assert.equal(Math.fround(v), v);
  }
});

test('bf16: every bit pattern decodes and re-encodes to itself (NaNs stay NaN)', () => {
  for (let h = 0; h < 65536; h++) {
    const v = bf16BitsToNumber(h);
    const back = numberToBf16Bits(v);
    if (Number.isNaN(v)) assert.ok(Number.isNaN(bf16BitsToNumber(back)));
    else assert.equal(back, h, `0x${h.toString(16)} = ${v}`);
  }
});

test('f16 and bf16 decode known values exactly (subnormals, limits, inf, nan, signed zero)', () => {
  assert.equal(f16BitsToNumber(0x0001), 2 ** -24);
  assert.equal(f16BitsToNumber(0x03ff), 1023 * 2 ** -24);
  assert.equal(f16BitsToNumber(0x0400), 2 ** -14);
  assert.equal(f16BitsToNumber(0x3c00), 1);
  assert.equal(f16BitsToNumber(0x3555), 0.333251953125);
  assert.equal(f16BitsToNumber(0x7bff), 65504);
  assert.equal(f16BitsToNumber(0xfbff), -65504);
  assert.equal(f16BitsToNumber(0x7c00), Infinity);
  assert.equal(f16BitsToNumber(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16BitsToNumber(0x7e00)));
  assert.ok(Object.is(f16BitsToNumber(0x8000), -0));
  assert.equal(bf16BitsToNumber(0x3f80), 1);
  assert.equal(bf16BitsToNumber(0x0001), 2 ** -133);
  assert.equal(bf16BitsToNumber(0x7f7f), 3.3895313892515355e38);
  assert.equal(bf16BitsToNumber(0x7f80), Infinity);
  assert.ok(Number.isNaN(bf16BitsToNumber(0x7fc0)));
});

test('f16 encoding rounds to nearest even: hand-picked ties, subnormals, overflow', () => {
  assert.equal(numberToF16Bits(2 ** -24), 0x0001);
  assert.equal(numberToF16Bits(2 ** -25), 0x0000, 'half the smallest subnormal ties to even (zero)');
  assert.equal(numberToF16Bits(2 ** -25 * 1.0000001), 0x0001, 'just above the tie rounds up');
  assert.equal(numberToF16Bits(3 * 2 ** -25), 0x0002, '1.5 ulp ties to even (2)');
  assert.equal(numberToF16Bits(-(2 ** -26)), 0x8000, 'tiny negatives keep the sign');
  assert.equal(numberToF16Bits(1 + 2 ** -11), 0x3c00, 'tie between 1 and 1+2^-10 goes to 1');
  assert.equal(numberToF16Bits(1 + 3 * 2 ** -11), 0x3c02, 'tie between 1+2^-10 and 1+2^-9 goes to the even one');
  assert.equal(numberToF16Bits(65504), 0x7bff);
  assert.equal(numberToF16Bits(65519.99), 0x7bff);
  assert.equal(numberToF16Bits(65520), 0x7c00, 'max + half ulp ties to even: infinity');
  assert.equal(numberToF16Bits(1e9), 0x7c00);
  assert.equal(numberToF16Bits(-1e9), 0xfc00);
  assert.equal(numberToF16Bits(2 ** -14 - 2 ** -25), 0x0400, 'rounds up across the subnormal/normal boundary');
  assert.ok(Number.isNaN(f16BitsToNumber(numberToF16Bits(NaN))));
  assert.equal(numberToF16Bits(Infinity), 0x7c00);
  assert.equal(numberToF16Bits(-0), 0x8000);
  // f32 NaN payloads stay NaN, not infinity, even when the kept payload bits are zero
  assert.ok(Number.isNaN(f16BitsToNumber(f32BitsToF16Bits(0x7f800001))));
});

test('bf16 encoding rounds to nearest even: ties, overflow, NaN', () => {
  assert.equal(numberToBf16Bits(1 + 2 ** -8), 0x3f80, 'tie goes to even (1)');
  assert.equal(numberToBf16Bits(1 + 3 * 2 ** -8), 0x3f82, 'tie goes to even (1+2^-6)');
  assert.equal(numberToBf16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assert.equal(f32BitsToBf16Bits(0x7f7fffff), 0x7f80, 'f32 max rounds to inf');
  assert.ok(Number.isNaN(bf16BitsToNumber(f32BitsToBf16Bits(0x7f800001))), 'signalling NaN with a low payload stays NaN');
  assert.equal(numberToBf16Bits(2 ** -133), 0x0001, 'bf16 subnormal');
});

test('f16 encoding of any f32 is the nearest f16 (oracle: search over all f16 values)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
      const x = f32FromBits(bits);
      const got = f32BitsToF16Bits(bits);
      if (Number.isNaN(x)) return Number.isNaN(f16BitsToNumber(got));
      if (!Number.isFinite(x)) return got === (x > 0 ? 0x7c00 : 0xfc00);
      return got === nearestBits(x, f16Table, 0x7c00);
    }),
    { numRuns: RUNS * 20 },
  );
  // and values near the f16 range where rounding is interesting
  fc.assert(
    fc.property(fc.float({ min: -70000, max: 70000, noNaN: true }), (x) => numberToF16Bits(x) === nearestBits(Math.fround(x), f16Table, 0x7c00)),
    { numRuns: RUNS * 20 },
  );
  fc.assert(
    fc.property(fc.float({ min: Math.fround(-(2 ** -13)), max: Math.fround(2 ** -13), noNaN: true }), (x) => numberToF16Bits(x) === nearestBits(x, f16Table, 0x7c00)),
    { numRuns: RUNS * 20 },
  );
});

test('bf16 encoding of any f32 is the nearest bf16 (oracle: search over all bf16 values)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
      const x = f32FromBits(bits);
      const got = f32BitsToBf16Bits(bits);
      if (Number.isNaN(x)) return Number.isNaN(bf16BitsToNumber(got));
      if (!Number.isFinite(x)) return got === (x > 0 ? 0x7f80 : 0xff80);
      return got === nearestBits(x, bf16Table, 0x7f80);
    }),
    { numRuns: RUNS * 20 },
  );
});

test('fromNumbers / toFloat32 / toFloat64 for every dtype', () => {
  const vals = [0, 1, -2, 3.5, 100, 255];
  const expect: Record<DType, number[]> = {
    f32: [0, 1, -2, 3.5, 100, 255],
    f64: [0, 1, -2, 3.5, 100, 255],
    f16: [0, 1, -2, 3.5, 100, 255],
    bf16: [0, 1, -2, 3.5, 100, 255],
    i64: [0, 1, -2, 3, 100, 255],
    i32: [0, 1, -2, 3, 100, 255],
    u8: [0, 1, 0, 3, 100, 255],
    bool: [0, 1, 1, 1, 1, 1],
  };
  for (const dtype of DTYPES) {
    const input = dtype === 'u8' ? vals.map((v) => Math.max(0, v)) : vals;
    const t = fromNumbers(dtype, [2, 3], input);
    assert.deepEqual([...toFloat32(t)], expect[dtype], dtype);
    assert.deepEqual([...toFloat64(t)], expect[dtype], dtype);
    assert.equal(tensorBytes(t).byteLength, 6 * { f32: 4, f64: 8, f16: 2, bf16: 2, i64: 8, i32: 4, u8: 1, bool: 1 }[dtype]);
  }
  assert.throws(() => fromNumbers('u8', [1], [256]), /out of range for u8/);
  assert.throws(() => fromNumbers('i32', [1], [NaN]), /cannot convert/);
  assert.throws(() => fromNumbers('f32', [2], [1]), /needs 2 values/);
  assert.throws(() => makeTensor('f32', [2], new Float64Array(2)), /needs a Float32Array/);
  assert.throws(() => numel([2, -1]), /non-negative/);
  assert.equal(numel([]), 1);
  assert.equal(numel([3, 0]), 0);
});

test('castTensor converts between every pair of dtypes on exactly representable values', () => {
  const vals = [0, 1, 2, 3, 7, 100];
  for (const from of DTYPES) {
    for (const to of DTYPES) {
      const t = fromNumbers(from, [6], vals);
      const c = castTensor(t, to);
      assert.equal(c.dtype, to);
      const want = from === 'bool' || to === 'bool' ? vals.map((v) => (v ? 1 : 0)) : vals;
      assert.deepEqual([...toFloat64(c)], want, `${from} -> ${to}`);
    }
  }
  const f = fromNumbers('f32', [2], [1 + 2 ** -11, 65520]);
  assert.deepEqual([...(castTensor(f, 'f16').data as Uint16Array)], [0x3c00, 0x7c00]);
});

/** Naive reference for a strided view: element-by-element index arithmetic. */
function naiveView(storage: Float32Array, offset: number, shape: number[], strides: number[]): number[] {
  const out: number[] = [];
  const n = shape.reduce((a, b) => a * b, 1);
  for (let i = 0; i < n; i++) {
    let rem = i;
    let idx = offset;
    for (let k = shape.length - 1; k >= 0; k--) {
      idx += (rem % shape[k]) * strides[k];
      rem = Math.floor(rem / shape[k]);
    }
    out.push(storage[idx]);
  }
  return out;
}

test('materializeView copies any in-bounds strided view exactly (property)', () => {
  const viewArb = fc
    .record({
      shape: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 0, maxLength: 4 }),
      strideSeeds: fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 4, maxLength: 4 }),
      offset: fc.integer({ min: 0, max: 10 }),
      slack: fc.integer({ min: 0, max: 5 }),
    })
    .map(({ shape, strideSeeds, offset, slack }) => {
      const strides = shape.map((_, k) => strideSeeds[k]);
      let maxIdx = offset;
      shape.forEach((d, k) => (maxIdx += (d - 1) * strides[k]));
      return { shape, strides, offset, storageNumel: maxIdx + 1 + slack };
    });
  fc.assert(
    fc.property(viewArb, ({ shape, strides, offset, storageNumel }) => {
      const storage = Float32Array.from({ length: storageNumel }, (_, i) => i * 1.5 - 7);
      const t = materializeView('f32', new Uint8Array(storage.buffer), storageNumel, offset, shape, strides);
      assert.deepEqual(t.shape, shape);
      assert.deepEqual([...(t.data as Float32Array)], naiveView(storage, offset, shape, strides));
      // the same view over 8-byte and 1-byte elements
      const s64 = Float64Array.from(storage);
      const t64 = materializeView('f64', new Uint8Array(s64.buffer), storageNumel, offset, shape, strides);
      assert.deepEqual([...(t64.data as Float64Array)], naiveView(storage, offset, shape, strides));
    }),
    { numRuns: RUNS },
  );
});

test('materializeView refuses views that reach outside their storage', () => {
  const st = new Uint8Array(16);
  assert.throws(() => materializeView('f32', st, 4, 1, [4], [1]), /reaches element 4 of a storage of 4 elements/);
  assert.throws(() => materializeView('f32', st, 4, 0, [2, 2], [3, 1]), /reaches element 4/);
  assert.throws(() => materializeView('f32', st, 4, 0, [2], [1, 1]), /does not fit shape/);
  assert.throws(() => materializeView('f32', st, 4, 0, [2], [-1]), /negative/);
  assert.throws(() => materializeView('f32', st, 8, 0, [8], [1]), /storage holds 16 bytes, 32 needed/);
  assert.deepEqual(zeros('f32', [0, 3]).shape, [0, 3]);
  assert.equal(materializeView('f32', st, 4, 9, [0, 3], [3, 1]).data.length, 0, 'empty views touch nothing');
});

test('f32Bits / f32FromBits are inverse on f32 values', () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true }), (x) => Object.is(f32FromBits(f32Bits(x)), x)),
    { numRuns: RUNS },
  );
});
