// Host tensors: a dtype, a shape and a typed array holding the elements in row-major (C) order.
//
// Storage per dtype (always little-endian, which is what every supported host is; see assertLittleEndianHost):
//   f32 Float32Array, f64 Float64Array, i32 Int32Array, i64 BigInt64Array, u8 Uint8Array,
//   bool Uint8Array (0 or 1), f16 and bf16 Uint16Array holding the raw IEEE bit patterns.
// f16 and bf16 decode exactly (every f16/bf16 value is an f32 value). Encoding rounds to nearest, ties to even,
// from the f32 value (so a JS number is first rounded to f32, which is what torch does for a float tensor).

import { endianness } from 'node:os';

export type DType = 'f32' | 'f16' | 'bf16' | 'f64' | 'i64' | 'i32' | 'u8' | 'bool';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'f64', 'i64', 'i32', 'u8', 'bool'];

export type TensorData = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

export interface HostTensor {
  readonly dtype: DType;
  readonly shape: number[];
  /** numel(shape) elements, row-major, no offset/strides: views are materialised on load. */
  readonly data: TensorData;
}

const ITEM_SIZE: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, f64: 8, i64: 8, i32: 4, u8: 1, bool: 1 };

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(ITEM_SIZE, x);
}

export function itemSize(dtype: DType): number {
  return ITEM_SIZE[dtype];
}

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'f16' || dtype === 'bf16' || dtype === 'f64';
}

/** Product of the dims; [] (a scalar) has one element. Throws on a dim that is not a non-negative safe integer. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`invalid tensor shape ${shapeString(shape)}: dims must be non-negative integers`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new Error(`invalid tensor shape ${shapeString(shape)}: too many elements`);
  return n;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function describeTensor(t: HostTensor): string {
  return `${t.dtype}${shapeString(t.shape)}`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

let hostChecked = false;
/** Typed arrays use the host byte order; the file formats are little-endian. */
export function assertLittleEndianHost(): void {
  if (hostChecked) return;
  if (endianness() !== 'LE') throw new Error('visft weights I/O needs a little-endian host');
  hostChecked = true;
}

function expectedArrayName(dtype: DType): string {
  switch (dtype) {
    case 'f32': return 'Float32Array';
    case 'f64': return 'Float64Array';
    case 'f16':
    case 'bf16': return 'Uint16Array';
    case 'i64': return 'BigInt64Array';
    case 'i32': return 'Int32Array';
    case 'u8':
    case 'bool': return 'Uint8Array';
  }
}

function arrayMatches(dtype: DType, data: TensorData): boolean {
  switch (dtype) {
    case 'f32': return data instanceof Float32Array;
    case 'f64': return data instanceof Float64Array;
    case 'f16':
    case 'bf16': return data instanceof Uint16Array;
    case 'i64': return data instanceof BigInt64Array;
    case 'i32': return data instanceof Int32Array;
    case 'u8':
    case 'bool': return data instanceof Uint8Array;
  }
}

/** Builds a tensor, checking that the array type fits the dtype and its length is numel(shape). */
export function makeTensor(dtype: DType, shape: readonly number[], data: TensorData): HostTensor {
  if (!isDType(dtype)) throw new Error(`unknown dtype ${String(dtype)}`);
  const n = numel(shape);
  if (!arrayMatches(dtype, data)) {
    throw new Error(`a ${dtype} tensor needs a ${expectedArrayName(dtype)}, got ${data.constructor.name}`);
  }
  if (data.length !== n) throw new Error(`a tensor of shape ${shapeString(shape)} needs ${n} elements, got ${data.length}`);
  return { dtype, shape: [...shape], data };
}

function allocate(dtype: DType, n: number): TensorData {
  switch (dtype) {
    case 'f32': return new Float32Array(n);
    case 'f64': return new Float64Array(n);
    case 'f16':
    case 'bf16': return new Uint16Array(n);
    case 'i64': return new BigInt64Array(n);
    case 'i32': return new Int32Array(n);
    case 'u8':
    case 'bool': return new Uint8Array(n);
  }
}

export function zeros(dtype: DType, shape: readonly number[]): HostTensor {
  return makeTensor(dtype, shape, allocate(dtype, numel(shape)));
}

/** A typed array of the dtype's kind over `buffer` (which must be suitably aligned). */
function viewOf(dtype: DType, buffer: ArrayBufferLike, byteOffset: number, n: number): TensorData {
  switch (dtype) {
    case 'f32': return new Float32Array(buffer, byteOffset, n);
    case 'f64': return new Float64Array(buffer, byteOffset, n);
    case 'f16':
    case 'bf16': return new Uint16Array(buffer, byteOffset, n);
    case 'i64': return new BigInt64Array(buffer, byteOffset, n);
    case 'i32': return new Int32Array(buffer, byteOffset, n);
    case 'u8':
    case 'bool': return new Uint8Array(buffer, byteOffset, n);
  }
}

/**
 * A tensor over little-endian element bytes. With copy=false the bytes are used in place when they are aligned
 * for the dtype (the tensor then shares memory with `bytes`); otherwise they are copied.
 */
export function tensorFromBytes(dtype: DType, shape: readonly number[], bytes: Uint8Array, opts: { copy?: boolean } = {}): HostTensor {
  assertLittleEndianHost();
  const n = numel(shape);
  const size = itemSize(dtype);
  if (bytes.byteLength !== n * size) {
    throw new Error(`a ${dtype} tensor of shape ${shapeString(shape)} needs ${n * size} bytes, got ${bytes.byteLength}`);
  }
  if (opts.copy === false && bytes.byteOffset % size === 0) return makeTensor(dtype, shape, viewOf(dtype, bytes.buffer, bytes.byteOffset, n));
  const buf = new ArrayBuffer(n * size);
  new Uint8Array(buf).set(bytes);
  return makeTensor(dtype, shape, viewOf(dtype, buf, 0, n));
}

/** The element bytes (little-endian), sharing memory with the tensor. */
export function tensorBytes(t: HostTensor): Uint8Array {
  assertLittleEndianHost();
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

// ---- f16 / bf16 scalar codecs -------------------------------------------------------------------------------

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The bits of the f32 nearest to x (Math.fround). */
export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0];
}

export function f32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0];
}

/** f32 bit pattern -> f16 bit pattern, round to nearest even; overflow gives ±inf; NaN stays NaN (quiet). */
export function f32BitsToF16Bits(b: number): number {
  b >>>= 0;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // f16 subnormal (or zero): value = m24 * 2^(exp-150), in units of 2^-24 that is m24 >> (126 - exp).
    if (exp === 0) return sign; // f32 zero or subnormal: far below half the smallest f16 subnormal
    const shift = 14 - e; // >= 14
    if (shift > 24) return sign;
    const m = mant | 0x800000;
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q++;
    return sign | q; // q may carry into the exponent field: that is the smallest normal, correctly
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1)) q++; // may carry to 0x7c00: inf, correctly
  return sign | q;
}

/** f16 bit pattern -> its exact value. */
export function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** x rounded to f32, then to f16 (nearest, ties to even). */
export function numberToF16Bits(x: number): number {
  return f32BitsToF16Bits(f32Bits(x));
}

/** f32 bit pattern -> bf16 bit pattern, round to nearest even; NaN stays NaN (quiet, payload truncated). */
export function f32BitsToBf16Bits(b: number): number {
  b >>>= 0;
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff;
  const lsb = (b >>> 16) & 1;
  return ((b + 0x7fff + lsb) >>> 16) & 0xffff; // overflow of the largest finite values rounds to inf, correctly
}

export function bf16BitsToNumber(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

export function numberToBf16Bits(x: number): number {
  return f32BitsToBf16Bits(f32Bits(x));
}

let f16Table: Float32Array | undefined;
function f16DecodeTable(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    const bits = new Uint32Array(f16Table.buffer);
    for (let h = 0; h < 65536; h++) {
      const v = f16BitsToNumber(h);
      if (Number.isNaN(v)) {
        // keep sign and payload, as a widening conversion does
        bits[h] = ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13);
      } else f16Table[h] = v;
    }
  }
  return f16Table;
}

// ---- array conversions ---------------------------------------------------------------------------------------

/** The elements as f32 (exact for f16/bf16/u8/bool; nearest for f64 and for large integers). */
export function toFloat32(t: HostTensor): Float32Array {
  const d = t.data;
  const n = d.length;
  switch (t.dtype) {
    case 'f32': return new Float32Array(d as Float32Array);
    case 'f16': {
      const table = f16DecodeTable();
      const src = d as Uint16Array;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[src[i]];
      return out;
    }
    case 'bf16': {
      const src = d as Uint16Array;
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
      return out;
    }
    case 'i64': {
      const src = d as BigInt64Array;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
    case 'bool': {
      const src = d as Uint8Array;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] ? 1 : 0;
      return out;
    }
    default:
      return Float32Array.from(d as Float64Array | Int32Array | Uint8Array);
  }
}

/** The elements as f64 (exact for every dtype except i64 beyond ±2^53). */
export function toFloat64(t: HostTensor): Float64Array {
  const d = t.data;
  const n = d.length;
  switch (t.dtype) {
    case 'f64': return new Float64Array(d as Float64Array);
    case 'f16':
    case 'bf16':
      return Float64Array.from(toFloat32(t));
    case 'i64': {
      const src = d as BigInt64Array;
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
    case 'bool': {
      const src = d as Uint8Array;
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] ? 1 : 0;
      return out;
    }
    default:
      return Float64Array.from(d as Float32Array | Int32Array | Uint8Array);
  }
}

function intFromNumber(x: number, dtype: DType, min: number, max: number): number {
  if (!Number.isFinite(x)) throw new Error(`cannot convert ${x} to ${dtype}`);
  const v = Math.trunc(x);
  if (v < min || v > max) throw new Error(`${x} is out of range for ${dtype}`);
  return v;
}

/**
 * A tensor of `dtype` from numbers. Floats: f32 rounds to nearest; f16/bf16 round the f32 value to nearest even;
 * integers truncate toward zero (as torch casts) and must be in range; bool is x !== 0.
 */
export function fromNumbers(dtype: DType, shape: readonly number[], values: ArrayLike<number>): HostTensor {
  const n = numel(shape);
  if (values.length !== n) throw new Error(`a tensor of shape ${shapeString(shape)} needs ${n} values, got ${values.length}`);
  switch (dtype) {
    case 'f32': return makeTensor(dtype, shape, Float32Array.from(values));
    case 'f64': return makeTensor(dtype, shape, Float64Array.from(values));
    case 'f16':
    case 'bf16': {
      const f32 = Float32Array.from(values);
      const bits = new Uint32Array(f32.buffer);
      const out = new Uint16Array(n);
      const enc = dtype === 'f16' ? f32BitsToF16Bits : f32BitsToBf16Bits;
      for (let i = 0; i < n; i++) out[i] = enc(bits[i]);
      return makeTensor(dtype, shape, out);
    }
    case 'i64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt(intFromNumber(values[i], dtype, -(2 ** 63), 2 ** 63 - 1));
      return makeTensor(dtype, shape, out);
    }
    case 'i32': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = intFromNumber(values[i], dtype, -(2 ** 31), 2 ** 31 - 1);
      return makeTensor(dtype, shape, out);
    }
    case 'u8': {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = intFromNumber(values[i], dtype, 0, 255);
      return makeTensor(dtype, shape, out);
    }
    case 'bool': {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = values[i] !== 0 ? 1 : 0;
      return makeTensor(dtype, shape, out);
    }
  }
}

/** Converts to another dtype (a copy; float->float conversions round to nearest even). */
export function castTensor(t: HostTensor, dtype: DType): HostTensor {
  if (t.dtype === dtype) return makeTensor(dtype, t.shape, t.data.slice() as TensorData);
  if (t.dtype === 'i64' && (dtype === 'i32' || dtype === 'u8' || dtype === 'bool')) {
    const src = t.data as BigInt64Array;
    const vals = new Float64Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const v = src[i];
      if (dtype === 'bool') vals[i] = v !== 0n ? 1 : 0;
      else vals[i] = Number(v);
    }
    return fromNumbers(dtype, t.shape, vals);
  }
  if (dtype === 'i64' && t.dtype !== 'f16' && t.dtype !== 'bf16' && t.dtype !== 'f32' && t.dtype !== 'f64') {
    const src = t.data as Int32Array | Uint8Array;
    const out = new BigInt64Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = BigInt(src[i]);
    return makeTensor(dtype, t.shape, out);
  }
  // f16/bf16 targets go through f32 (exact from f16/bf16/u8/bool/i32-small; f64 double-rounds as torch does).
  if (dtype === 'f16' || dtype === 'bf16') return fromNumbers(dtype, t.shape, toFloat32(t));
  return fromNumbers(dtype, t.shape, toFloat64(t));
}

/** Bitwise equality of dtype, shape and element bytes. */
export function tensorsIdentical(a: HostTensor, b: HostTensor): boolean {
  if (a.dtype !== b.dtype || !sameShape(a.shape, b.shape)) return false;
  const x = tensorBytes(a);
  const y = tensorBytes(b);
  if (x.length !== y.length) return false;
  return Buffer.from(x.buffer, x.byteOffset, x.length).equals(Buffer.from(y.buffer, y.byteOffset, y.length));
}

/**
 * Materialises a strided view (torch semantics: element i of the view is at storage index
 * offset + Σ idx_k * stride_k) into a contiguous tensor. `storage` holds the storage's elements as bytes.
 * Throws if any addressed element falls outside the storage.
 */
export function materializeView(
  dtype: DType,
  storage: Uint8Array,
  storageNumel: number,
  offset: number,
  shape: readonly number[],
  strides: readonly number[],
): HostTensor {
  const n = numel(shape);
  if (strides.length !== shape.length) throw new Error(`stride ${shapeString(strides)} does not fit shape ${shapeString(shape)}`);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`invalid storage offset ${offset}`);
  for (const s of strides) if (!Number.isSafeInteger(s) || s < 0) throw new Error(`unsupported stride ${shapeString(strides)} (negative or not an integer)`);
  const size = itemSize(dtype);
  if (n === 0) return zeros(dtype, shape);
  let maxIndex = offset;
  for (let k = 0; k < shape.length; k++) maxIndex += (shape[k] - 1) * strides[k];
  if (maxIndex >= storageNumel) {
    throw new Error(`view (offset ${offset}, shape ${shapeString(shape)}, stride ${shapeString(strides)}) reaches element ${maxIndex} of a storage of ${storageNumel} elements`);
  }
  if (storage.byteLength < storageNumel * size) throw new Error(`storage holds ${storage.byteLength} bytes, ${storageNumel * size} needed`);
  const contiguous = contiguousStrides(shape);
  const isContiguous = shape.every((d, k) => d === 1 || strides[k] === contiguous[k]);
  if (isContiguous) {
    return tensorFromBytes(dtype, shape, storage.subarray(offset * size, (offset + n) * size));
  }
  const out = new Uint8Array(n * size);
  const rank = shape.length;
  // Walk the view in row-major order with an odometer over all dims but the last; copy the last dim by elements.
  const last = rank - 1;
  const innerLen = shape[last];
  const innerStride = strides[last];
  const idx = new Array<number>(rank).fill(0);
  let outPos = 0;
  let base = offset;
  const rows = n / innerLen;
  for (let r = 0; r < rows; r++) {
    if (innerStride === 1) {
      out.set(storage.subarray(base * size, (base + innerLen) * size), outPos);
      outPos += innerLen * size;
    } else {
      for (let j = 0; j < innerLen; j++) {
        const src = (base + j * innerStride) * size;
        for (let b = 0; b < size; b++) out[outPos++] = storage[src + b];
      }
    }
    for (let k = last - 1; k >= 0; k--) {
      idx[k]++;
      base += strides[k];
      if (idx[k] < shape[k]) break;
      base -= strides[k] * shape[k];
      idx[k] = 0;
    }
  }
  return tensorFromBytes(dtype, shape, out, { copy: false });
}
