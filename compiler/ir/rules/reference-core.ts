// The CPU reference of the core ops, in float64 with PyTorch's semantics: one rule per op, written as plain
// loops over row-major data. Shapes were already checked by the shape rules, and `out` is the type they gave.
import type { Attrs, DType, Shape } from '../graph.js';
import type { CoreOp } from './families.js';
import { ATTENTION_REFERENCE } from './reference-attention.js';
import type { RefRule, RefTensor } from './reference-types.js';
import { attrInts, attrNum, attrPairs, normDim } from './shape.js';

// ---------------------------------------------------------------------------------------------- helpers

const size = (shape: Shape): number => shape.reduce((a, b) => a * b, 1);
const make = (shape: Shape, data: Float64Array): RefTensor => ({ shape: [...shape], data });

function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  for (let i = shape.length - 1, acc = 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Strides of `shape` read as `target` under NumPy broadcasting: 0 on broadcast (size-1 or missing) dims. */
function broadcastStrides(shape: Shape, target: Shape): number[] {
  const st = stridesOf(shape);
  const lead = target.length - shape.length;
  return target.map((_, i) => (i < lead || shape[i - lead] === 1 ? 0 : st[i - lead]));
}

/**
 * Walks every element of `shape` in row-major order, keeping one offset per stride vector: `visit(i, offsets)`
 * gets the flat output index and the offsets (the array is reused).
 */
function walk(shape: Shape, strides: readonly (readonly number[])[], visit: (i: number, offsets: number[]) => void): void {
  const n = size(shape);
  const r = shape.length;
  const idx = new Array<number>(r).fill(0);
  const off = strides.map(() => 0);
  for (let i = 0; i < n; i++) {
    visit(i, off);
    for (let d = r - 1; d >= 0; d--) {
      idx[d]++;
      for (let k = 0; k < strides.length; k++) off[k] += strides[k][d];
      if (idx[d] < shape[d]) break;
      for (let k = 0; k < strides.length; k++) off[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
}

/** Materialises a strided view of x (permute, expand, slice). */
function view(x: RefTensor, shape: Shape, strides: readonly number[], offset = 0): RefTensor {
  const data = new Float64Array(size(shape));
  walk(shape, [strides], (i, [o]) => {
    data[i] = x.data[offset + o];
  });
  return make(shape, data);
}

const unary =
  (f: (x: number) => number): RefRule =>
  ([x], _attrs, out) =>
    make(out.shape, x.data.map(f));

const binary =
  (f: (a: number, b: number) => number): RefRule =>
  ([a, b], _attrs, out) => {
    const data = new Float64Array(size(out.shape));
    walk(out.shape, [broadcastStrides(a.shape, out.shape), broadcastStrides(b.shape, out.shape)], (i, [ia, ib]) => {
      data[i] = f(a.data[ia], b.data[ib]);
    });
    return make(out.shape, data);
  };

/** Splits x around `dim` into (outer, len, inner), the layout row ops and concat work on. */
function around(shape: Shape, dim: number): [number, number, number] {
  return [size(shape.slice(0, dim)), shape[dim], size(shape.slice(dim + 1))];
}

function rowOp(x: RefTensor, attrs: Attrs, f: (row: Float64Array) => void): RefTensor {
  const d = normDim(attrNum(attrs, 'dim', -1), x.shape.length);
  const [outer, len, inner] = around(x.shape, d);
  const data = new Float64Array(x.data.length);
  const row = new Float64Array(len);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      for (let j = 0; j < len; j++) row[j] = x.data[base + j * inner];
      f(row);
      for (let j = 0; j < len; j++) data[base + j * inner] = row[j];
    }
  }
  return make(x.shape, data);
}

function reduce(x: RefTensor, attrs: Attrs, out: Shape, init: number, f: (acc: number, v: number) => number): RefTensor {
  const dims = new Set(attrInts(attrs, 'dims').map((d) => normDim(d, x.shape.length)));
  // The output's strides as seen from x: 0 along reduced dims (keepdim only changes the shape, not the layout).
  const kept = x.shape.map((s, i) => (dims.has(i) ? 1 : s));
  const st = stridesOf(kept).map((s, i) => (dims.has(i) ? 0 : s));
  const data = new Float64Array(size(out)).fill(init);
  walk(x.shape, [st], (i, [o]) => {
    data[o] = f(data[o], x.data[i]);
  });
  return make(out, data);
}

// ---------------------------------------------------------------------------------------------- special functions

const TWO_OVER_SQRT_PI = 1.1283791670955126;
const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 0.3989422804014327;

/** erfc(x) for x >= 1 by its continued fraction (modified Lentz): e^{-x²}/√π / (x + ½/(x + 1/(x + 3⁄2/(x + …)))). */
function erfcContinuedFraction(x: number): number {
  if (x > 27) return 0; // e^{-x²} underflows
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const a = n / 2;
    d = x + a * d;
    if (d === 0) d = tiny;
    c = x + a / c;
    if (c === 0) c = tiny;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  // e^{-x²} as e^{-xs²}·e^{-(x-xs)(x+xs)} with xs = x rounded to 1/16, so x² is not rounded (as in Cody's erfc).
  const xs = Math.round(x * 16) / 16;
  return (Math.exp(-xs * xs) * Math.exp(-(x - xs) * (x + xs))) / (Math.sqrt(Math.PI) * f);
}

/** erf(x) for |x| < 2 by its Maclaurin series (|x| < 1) or the positive series e^{-x²}·Σ 2ⁿx^{2n+1}/(2n+1)!! (no cancellation). */
function erfSeries(x: number): number {
  const x2 = x * x;
  if (Math.abs(x) < 1) {
    let term = x;
    let sum = x;
    for (let n = 1; n < 100; n++) {
      term *= -x2 / n;
      const next = sum + term / (2 * n + 1);
      if (next === sum) break;
      sum = next;
    }
    return TWO_OVER_SQRT_PI * sum;
  }
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (2 * x2) / (2 * n + 1);
    const next = sum + term;
    if (next === sum) break;
    sum = next;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
}

/** The error function, to about 1 ulp (2e-16) absolute. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return x;
  const a = Math.abs(x);
  if (a < 2) return erfSeries(x);
  const r = 1 - erfcContinuedFraction(a);
  return x < 0 ? -r : r;
}

/** The complementary error function 1 - erf(x), accurate in relative terms for large x too. */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return x;
  if (x >= 1) return erfcContinuedFraction(x);
  if (x <= -1) return 2 - erfcContinuedFraction(-x);
  return 1 - erfSeries(x);
}

/** The standard normal CDF Φ(x) = ½·erfc(-x/√2). */
export const normalCdf = (x: number): number => 0.5 * erfc(-x * SQRT1_2);
/** The standard normal density φ(x). */
export const normalPdf = (x: number): number => INV_SQRT_2PI * Math.exp(-0.5 * x * x);

// ---------------------------------------------------------------------------------------------- casts

/**
 * Rounds to a binary format with `mant` stored mantissa bits and minimum normal exponent `emin`, to nearest
 * even, with subnormals and overflow to ±Infinity (what IEEE conversion does).
 */
function roundToFormat(v: number, mant: number, emin: number, maxFinite: number): number {
  if (!Number.isFinite(v) || v === 0) return v;
  const a = Math.abs(v);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, emin) - mant);
  const q = a / ulp; // exact: scaling by a power of two
  const f = Math.floor(q);
  const rest = q - f;
  const r = rest > 0.5 || (rest === 0.5 && f % 2 === 1) ? f + 1 : f;
  const res = r * ulp;
  return Math.sign(v) * (res > maxFinite ? Infinity : res);
}

/** float → f16 → float, as PyTorch does it (double → float → half, each to nearest even). */
export const roundF16 = (v: number): number => roundToFormat(Math.fround(v), 10, -14, 65504);
/** float → bf16 → float (double → float → bfloat16, each to nearest even). */
export const roundBF16 = (v: number): number => roundToFormat(Math.fround(v), 7, -126, 3.3895313892515355e38);

/**
 * The value conversion of `cast`. Integer dtypes truncate toward zero (torch `.to(torch.int64)`), bool is
 * `x != 0`, f16 / bf16 round through their encodings. f32 is the reference's working precision (float64), so a
 * cast to f32 keeps the value.
 */
export function castValue(v: number, dtype: DType): number {
  switch (dtype) {
    case 'f32':
      return v;
    case 'f16':
      return roundF16(v);
    case 'bf16':
      return roundBF16(v);
    case 'i32':
    case 'i64':
      return Math.trunc(v);
    case 'bool':
      return v !== 0 ? 1 : 0;
  }
}

// ---------------------------------------------------------------------------------------------- dropout

/** A 32-bit integer hash (Wellons' lowbias32): the same in WGSL with u32 arithmetic. */
export function hash32(x: number): number {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Whether dropout keeps element `index` (row-major) for `seed`: u = hash32(index ^ hash32(seed)) / 2³² is
 * uniform in [0, 1) and the element is kept when u >= p. Counter-based, so any backend can recompute the mask.
 */
export function dropoutKeeps(seed: number, index: number, p: number): boolean {
  return hash32((index ^ hash32(seed)) >>> 0) / 4294967296 >= p;
}

/**
 * The seed of a dropout with a salt input (training feeds a new integer salt per update, so the mask changes
 * between updates while the graph stays the same): seed ^ hash32(salt).
 */
export function saltedSeed(seed: number, salt: number): number {
  return (seed ^ hash32(salt >>> 0)) >>> 0;
}

// ---------------------------------------------------------------------------------------------- rules

const leafByInterpreter: RefRule = () => {
  throw new Error('input and param values are supplied by the interpreter, not computed');
};

export const CORE_REFERENCE: { readonly [K in CoreOp]: RefRule } = {
  input: leafByInterpreter,
  param: leafByInterpreter,
  full: (_ins, attrs, out) => make(out.shape, new Float64Array(size(out.shape)).fill(attrNum(attrs, 'value'))),

  neg: unary((x) => -x),
  exp: unary(Math.exp),
  log: unary(Math.log),
  sqrt: unary(Math.sqrt),
  rsqrt: unary((x) => 1 / Math.sqrt(x)),
  tanh: unary(Math.tanh),
  sigmoid: unary((x) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)))),
  relu: unary((x) => Math.max(x, 0)),
  gelu: unary((x) => x * normalCdf(x)),
  erf: unary(erf),
  step: unary((x) => (x > 0 ? 1 : 0)),
  pow: ([x], attrs, out) => {
    const e = attrNum(attrs, 'exponent');
    return make(out.shape, x.data.map((v) => Math.pow(v, e)));
  },
  cast: ([x], _attrs, out) => make(out.shape, x.data.map((v) => castValue(v, out.dtype))),
  dropout: ([x, salt], attrs, out) => {
    const p = attrNum(attrs, 'p');
    if (p === 0) return make(out.shape, Float64Array.from(x.data));
    const seed = salt ? saltedSeed(attrNum(attrs, 'seed', 0), salt.data[0]) : attrNum(attrs, 'seed', 0);
    const k = 1 / (1 - p);
    return make(out.shape, x.data.map((v, i) => (dropoutKeeps(seed, i, p) ? v * k : 0)));
  },

  add: binary((a, b) => a + b),
  sub: binary((a, b) => a - b),
  mul: binary((a, b) => a * b),
  div: binary((a, b) => a / b),
  maximum: binary((a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : a > b ? a : b)),
  eq: binary((a, b) => (a === b ? 1 : 0)),

  sum: ([x], attrs, out) => reduce(x, attrs, out.shape, 0, (acc, v) => acc + v),
  // NaN propagates, as in torch.amax.
  max: ([x], attrs, out) => reduce(x, attrs, out.shape, -Infinity, (acc, v) => (v > acc || Number.isNaN(v) ? v : acc)),

  softmax: ([x], attrs) =>
    rowOp(x, attrs, (row) => {
      const m = row.reduce((a, v) => Math.max(a, v), -Infinity);
      let s = 0;
      for (let j = 0; j < row.length; j++) s += row[j] = Math.exp(row[j] - m);
      for (let j = 0; j < row.length; j++) row[j] /= s;
    }),
  log_softmax: ([x], attrs) =>
    rowOp(x, attrs, (row) => {
      const m = row.reduce((a, v) => Math.max(a, v), -Infinity);
      let s = 0;
      for (let j = 0; j < row.length; j++) s += Math.exp(row[j] - m);
      const lse = m + Math.log(s);
      for (let j = 0; j < row.length; j++) row[j] -= lse;
    }),
  layernorm: ([x], attrs) => {
    const eps = attrNum(attrs, 'eps');
    return rowOp(x, { dim: -1 }, (row) => {
      const n = row.length;
      const mean = row.reduce((a, v) => a + v, 0) / n;
      const variance = row.reduce((a, v) => a + (v - mean) * (v - mean), 0) / n;
      const r = 1 / Math.sqrt(variance + eps);
      for (let j = 0; j < n; j++) row[j] = (row[j] - mean) * r;
    });
  },

  matmul: ([a, b], _attrs, out) => {
    const [m, k] = a.shape.slice(-2);
    const n = b.shape[b.shape.length - 1];
    const batch = out.shape.slice(0, -2);
    const sa = broadcastStrides(a.shape.slice(0, -2), batch).map((s) => s * m * k);
    const sb = broadcastStrides(b.shape.slice(0, -2), batch).map((s) => s * k * n);
    const data = new Float64Array(size(out.shape));
    walk(batch, [sa, sb], (bi, [oa, ob]) => {
      const oc = bi * m * n;
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let t = 0; t < k; t++) s += a.data[oa + i * k + t] * b.data[ob + t * n + j];
          data[oc + i * n + j] = s;
        }
      }
    });
    return make(out.shape, data);
  },

  reshape: ([x], _attrs, out) => make(out.shape, Float64Array.from(x.data)),
  permute: ([x], attrs, out) => {
    const st = stridesOf(x.shape);
    const dims = attrInts(attrs, 'dims').map((d) => normDim(d, x.shape.length));
    return view(x, out.shape, dims.map((d) => st[d]));
  },
  slice: ([x], attrs, out) => {
    const d = normDim(attrNum(attrs, 'dim'), x.shape.length);
    const st = stridesOf(x.shape);
    const step = attrNum(attrs, 'step', 1);
    return view(x, out.shape, st.map((s, i) => (i === d ? s * step : s)), attrNum(attrs, 'start', 0) * st[d]);
  },
  concat: (ins, attrs, out) => {
    const d = normDim(attrNum(attrs, 'dim'), out.shape.length);
    const [outer, total, inner] = around(out.shape, d);
    const data = new Float64Array(size(out.shape));
    let at = 0;
    for (const t of ins) {
      const len = t.shape[d];
      for (let o = 0; o < outer; o++) data.set(t.data.subarray(o * len * inner, (o + 1) * len * inner), (o * total + at) * inner);
      at += len;
    }
    return make(out.shape, data);
  },
  // out[i] = x[i - before] where that is inside x, else value; negative pads crop.
  pad: ([x], attrs, out) => {
    const pads = attrPairs(attrs, 'pads');
    const value = attrNum(attrs, 'value', 0);
    const st = stridesOf(x.shape);
    const data = new Float64Array(size(out.shape));
    const r = out.shape.length;
    const idx = new Array<number>(r).fill(0);
    for (let i = 0; i < data.length; i++) {
      let src = 0;
      for (let dd = 0; dd < r && src >= 0; dd++) {
        const c = idx[dd] - pads[dd][0];
        src = c >= 0 && c < x.shape[dd] ? src + c * st[dd] : -1;
      }
      data[i] = src >= 0 ? x.data[src] : value;
      for (let dd = r - 1; dd >= 0; dd--) {
        if (++idx[dd] < out.shape[dd]) break;
        idx[dd] = 0;
      }
    }
    return make(out.shape, data);
  },
  expand: ([x], _attrs, out) => view(x, out.shape, broadcastStrides(x.shape, out.shape)),

  gather: ([x, index], attrs, out) => {
    const d = normDim(attrNum(attrs, 'dim'), x.shape.length);
    const xs = stridesOf(x.shape);
    const n = x.shape[d];
    // x's strides walked over index's shape, except along dim, where the index value picks the position.
    const walkStrides = xs.map((s, i) => (i === d ? 0 : s));
    const data = new Float64Array(size(out.shape));
    walk(index.shape, [walkStrides], (i, [o]) => {
      const j = index.data[i];
      if (!Number.isInteger(j) || j < 0 || j >= n) throw new Error(`gather: index ${j} at position ${i} is out of range for dim ${d} of size ${n}`);
      data[i] = x.data[o + j * xs[d]];
    });
    return make(out.shape, data);
  },
  scatter_add: ([g, index], attrs, out) => {
    const shape = out.shape;
    const d = normDim(attrNum(attrs, 'dim'), shape.length);
    const os = stridesOf(shape);
    const data = new Float64Array(size(shape));
    const r = index.shape.length;
    const idx = new Array<number>(r).fill(0);
    for (let i = 0; i < g.data.length; i++) {
      const j = index.data[i];
      if (!Number.isInteger(j) || j < 0 || j >= shape[d]) throw new Error(`scatter_add: index ${j} at position ${i} is out of range for dim ${d} of size ${shape[d]}`);
      let o = 0;
      for (let dd = 0; dd < r; dd++) {
        const c = dd === d ? j : idx[dd];
        if (c >= shape[dd]) throw new Error(`scatter_add: position ${i} (coordinate ${c} in dim ${dd}) is outside the output [${shape.join(', ')}]`);
        o += c * os[dd];
      }
      data[o] += g.data[i];
      for (let dd = r - 1; dd >= 0; dd--) {
        if (++idx[dd] < index.shape[dd]) break;
        idx[dd] = 0;
      }
    }
    return make(shape, data);
  },

  // DETR's PositionEmbeddingSine with no padding mask: channels [0, F) encode the row, [F, 2F) the column;
  // within each, even k is sin(e / t_k) and odd k cos(e / t_k), t_k = temperature^(2⌊k/2⌋/F), e = index + 1
  // (normalised: e / (size + 1e-6) · 2π).
  sine_position: (_ins, attrs, out) => {
    const [B, C, H, W] = out.shape;
    const data = new Float64Array(B * C * H * W);
    let i = 0;
    for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let h = 0; h < H; h++) for (let w = 0; w < W; w++) data[i++] = sinePosition(c, h, w, C, H, W, attrs);
    return make(out.shape, data);
  },
  // softmax(q·kᵀ·scale + mask)·v per (batch, head); scale defaults to 1/√D as in PyTorch's SDPA.
  attention: ([q, k, v, mask], attrs, out) => {
    const [B, H, Sq, D] = q.shape;
    const Sk = k.shape[2];
    const Dv = v.shape[3];
    const scale = attrNum(attrs, 'scale', 1 / Math.sqrt(D));
    const ms = mask ? broadcastStrides(mask.shape, [B, H, Sq, Sk]) : undefined;
    const data = new Float64Array(size(out.shape));
    const p = new Float64Array(Sk);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const qb = (b * H + h) * Sq * D;
        const kb = (b * H + h) * Sk * D;
        const vb = (b * H + h) * Sk * Dv;
        for (let i = 0; i < Sq; i++) {
          let m = -Infinity;
          for (let j = 0; j < Sk; j++) {
            let s = 0;
            for (let t = 0; t < D; t++) s += q.data[qb + i * D + t] * k.data[kb + j * D + t];
            s *= scale;
            if (mask && ms) s += mask.data[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]];
            p[j] = s;
            m = Math.max(m, s);
          }
          let z = 0;
          for (let j = 0; j < Sk; j++) z += p[j] = Math.exp(p[j] - m);
          const ob = ((b * H + h) * Sq + i) * Dv;
          for (let t = 0; t < Dv; t++) {
            let s = 0;
            for (let j = 0; j < Sk; j++) s += p[j] * v.data[vb + j * Dv + t];
            data[ob + t] = s / z;
          }
        }
      }
    }
    return make(out.shape, data);
  },
  ...ATTENTION_REFERENCE,
};

/** One value of DETR's sine position encoding (see the sine_position rule); shared with the GPU kernel's constants. */
export function sinePosition(c: number, h: number, w: number, C: number, H: number, W: number, attrs: Attrs): number {
  const F = C / 2;
  const temperature = typeof attrs.temperature === 'number' ? attrs.temperature : 10000;
  const normalize = attrs.normalize === true;
  const rowPart = c < F;
  const k = rowPart ? c : c - F;
  let e = (rowPart ? h : w) + 1;
  if (normalize) e = (e / ((rowPart ? H : W) + 1e-6)) * 2 * Math.PI;
  const t = temperature ** ((2 * Math.floor(k / 2)) / F);
  return k % 2 === 0 ? Math.sin(e / t) : Math.cos(e / t);
}
