// Shape and dtype rules, one per op. A rule gets its inputs' types and the attributes and returns the
// output type, or throws ShapeError with a message that names the problem (the lowering adds where).
import type { Attrs, AttrValue, DType, Shape } from '../graph.js';
import type { IrOp } from '../ops.js';

export interface TensorType {
  readonly shape: Shape;
  readonly dtype: DType;
}

export class ShapeError extends Error {}

type ShapeRule = (ins: readonly TensorType[], attrs: Attrs) => TensorType;

const fail = (msg: string): never => {
  throw new ShapeError(msg);
};
const fmt = (s: Shape) => `[${s.join(', ')}]`;

export function attrNum(attrs: Attrs, key: string, dflt?: number): number {
  const v = attrs[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) return fail(`attribute '${key}' must be a number, got ${JSON.stringify(v)}`);
  return v;
}

export function attrInts(attrs: Attrs, key: string, dflt?: readonly number[]): number[] {
  const v: AttrValue | undefined = attrs[key] ?? dflt;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isInteger(x))) return fail(`attribute '${key}' must be a list of whole numbers, got ${JSON.stringify(v)}`);
  return [...(v as number[])];
}

export function attrPairs(attrs: Attrs, key: string): [number, number][] {
  const v = attrs[key];
  if (!Array.isArray(v) || v.some((p) => !Array.isArray(p) || p.length !== 2)) return fail(`attribute '${key}' must be a list of [a, b] pairs`);
  return (v as number[][]).map((p) => [p[0], p[1]]);
}

/** A dim index, negative counting from the end. */
export function normDim(d: number, rank: number): number {
  const r = d < 0 ? d + rank : d;
  if (!Number.isInteger(r) || r < 0 || r >= rank) return fail(`dim ${d} is out of range for rank ${rank}`);
  return r;
}

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) fail(`shapes ${fmt(a)} and ${fmt(b)} do not broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

const same: ShapeRule = ([x]) => x;
const binary: ShapeRule = ([a, b]) => ({ shape: broadcastShapes(a.shape, b.shape), dtype: a.dtype });
const leaf: ShapeRule = (_ins, attrs) => ({ shape: attrInts(attrs, 'shape'), dtype: (attrs.dtype as DType) ?? 'f32' });

const reduce: ShapeRule = ([x], attrs) => {
  const dims = attrInts(attrs, 'dims').map((d) => normDim(d, x.shape.length));
  const keep = attrs.keepdim === true;
  const shape = x.shape.flatMap((s, i) => (dims.includes(i) ? (keep ? [1] : []) : [s]));
  return { shape, dtype: x.dtype };
};

const row: ShapeRule = ([x], attrs) => {
  normDim(attrNum(attrs, 'dim', -1), x.shape.length);
  return x;
};

function convOut(size: number, k: number, stride: number, pad: number, dil: number): number {
  return Math.floor((size + 2 * pad - dil * (k - 1) - 1) / stride) + 1;
}

export function conv2dShape(x: Shape, w: Shape, attrs: Attrs): number[] {
  if (x.length !== 4 || w.length !== 4) fail(`conv2d takes x [N, C, H, W] and weight [O, C/groups, kh, kw], got ${fmt(x)} and ${fmt(w)}`);
  const [s0, s1] = attrInts(attrs, 'stride', [1, 1]);
  const [p0, p1] = attrInts(attrs, 'padding', [0, 0]);
  const [d0, d1] = attrInts(attrs, 'dilation', [1, 1]);
  const groups = attrNum(attrs, 'groups', 1);
  if (x[1] !== w[1] * groups || w[0] % groups !== 0) fail(`conv2d: ${x[1]} input channels do not match weight ${fmt(w)} with groups ${groups}`);
  const h = convOut(x[2], w[2], s0, p0, d0);
  const wd = convOut(x[3], w[3], s1, p1, d1);
  if (h <= 0 || wd <= 0) fail(`conv2d: input ${fmt(x)} is smaller than the kernel ${fmt(w)}`);
  return [x[0], w[0], h, wd];
}

/** The geometry of conv2d(x, w) = y, shared by the CPU reference and the GPU kernels of the three conv ops. */
export interface Conv2dGeometry {
  readonly n: number;
  readonly c: number;
  readonly h: number;
  readonly w: number;
  readonly o: number;
  readonly kh: number;
  readonly kw: number;
  readonly oh: number;
  readonly ow: number;
  readonly groups: number;
  /** Input channels per group (the weight's dim 1) and output channels per group. */
  readonly cg: number;
  readonly og: number;
  readonly sh: number;
  readonly sw: number;
  readonly ph: number;
  readonly pw: number;
  readonly dh: number;
  readonly dw: number;
}

/** Reads the conv attributes and checks that x, w and y belong together (`what` names the op in errors). */
export function conv2dGeometry(x: Shape, w: Shape, y: Shape, attrs: Attrs, what: string): Conv2dGeometry {
  const expected = conv2dShape(x, w, attrs);
  if (expected.join() !== y.join()) fail(`${what}: output ${fmt(y)} does not match conv2d of ${fmt(x)} with ${fmt(w)} (${fmt(expected)})`);
  const [sh, sw] = attrInts(attrs, 'stride', [1, 1]);
  const [ph, pw] = attrInts(attrs, 'padding', [0, 0]);
  const [dh, dw] = attrInts(attrs, 'dilation', [1, 1]);
  const groups = attrNum(attrs, 'groups', 1);
  return { n: x[0], c: x[1], h: x[2], w: x[3], o: w[0], kh: w[2], kw: w[3], oh: y[2], ow: y[3], groups, cg: w[1], og: w[0] / groups, sh, sw, ph, pw, dh, dw };
}

/** The geometry of msdeform_attn, shared by the CPU reference and the GPU kernels; checks the three shapes. */
export interface MsDeformGeometry {
  readonly n: number;
  readonly s: number;
  readonly m: number;
  readonly dh: number;
  readonly lq: number;
  readonly p: number;
  readonly levels: readonly [number, number][];
  /** level_start_index: where each level's H·W rows begin in value's dim 1. */
  readonly starts: readonly number[];
}

export function msDeformGeometry(value: Shape, loc: Shape, attw: Shape, attrs: Attrs): MsDeformGeometry {
  const levels = attrPairs(attrs, 'levels');
  const starts: number[] = [];
  let total = 0;
  for (const [h, w] of levels) {
    starts.push(total);
    total += h * w;
  }
  const [n, s, m, dh] = value;
  const [, lq, , , p] = loc;
  const ok =
    value.length === 4 && s === total &&
    sameDims(loc, [n, lq, m, levels.length, p, 2]) &&
    sameDims(attw, [n, lq, m, levels.length, p]);
  if (!ok) fail(`msdeform_attn: value ${fmt(value)}, sampling_locations ${fmt(loc)}, attention_weights ${fmt(attw)} do not fit levels ${JSON.stringify(levels)}`);
  return { n, s, m, dh, lq, p, levels, starts };
}

const sameDims = (a: Shape, b: Shape) => a.length === b.length && a.every((s, i) => s === b[i]);

export const SHAPE_RULES: { readonly [K in IrOp]: ShapeRule } = {
  input: leaf,
  param: leaf,
  full: leaf,
  neg: same, exp: same, log: same, sqrt: same, rsqrt: same, tanh: same, sigmoid: same, relu: same, gelu: same, erf: same, step: same,
  pow: ([x], attrs) => (attrNum(attrs, 'exponent'), x),
  cast: ([x], attrs) => ({ shape: x.shape, dtype: attrs.dtype as DType }),
  dropout: ([x, salt], attrs) => {
    const p = attrNum(attrs, 'p');
    if (p < 0 || p >= 1) fail(`dropout p must be in [0, 1), got ${p}`);
    if (salt && salt.shape.reduce((a, b) => a * b, 1) !== 1) fail(`dropout's salt must be a scalar, got [${salt.shape.join(', ')}]`);
    return x;
  },
  add: binary, sub: binary, mul: binary, div: binary, maximum: binary, eq: binary,
  sum: reduce,
  max: reduce,
  softmax: row,
  log_softmax: row,
  layernorm: ([x], attrs) => (attrNum(attrs, 'eps'), normDim(-1, x.shape.length), x),
  matmul: ([a, b]) => {
    if (a.shape.length < 2 || b.shape.length < 2) fail(`matmul needs rank >= 2 operands, got ${fmt(a.shape)} and ${fmt(b.shape)}`);
    const [m, k] = a.shape.slice(-2);
    const [k2, n] = b.shape.slice(-2);
    if (k !== k2) fail(`matmul: inner dims differ: ${fmt(a.shape)} @ ${fmt(b.shape)}`);
    return { shape: [...broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2)), m, n], dtype: a.dtype };
  },
  reshape: ([x], attrs) => {
    const shape = attrInts(attrs, 'shape');
    const total = x.shape.reduce((p, s) => p * s, 1);
    const known = shape.filter((s) => s !== -1).reduce((p, s) => p * s, 1);
    const infer = shape.filter((s) => s === -1).length;
    if (infer > 1 || shape.some((s) => s < -1)) fail(`reshape: bad target shape ${fmt(shape)}`);
    const out = shape.map((s) => (s === -1 ? total / known : s));
    if (out.reduce((p, s) => p * s, 1) !== total || out.some((s) => !Number.isInteger(s))) fail(`reshape: cannot view ${fmt(x.shape)} as ${fmt(shape)}`);
    return { shape: out, dtype: x.dtype };
  },
  permute: ([x], attrs) => {
    const dims = attrInts(attrs, 'dims').map((d) => normDim(d, x.shape.length));
    if (dims.length !== x.shape.length || new Set(dims).size !== dims.length) fail(`permute: ${fmt(dims)} is not a permutation of ${x.shape.length} dims`);
    return { shape: dims.map((d) => x.shape[d]), dtype: x.dtype };
  },
  slice: ([x], attrs) => {
    const d = normDim(attrNum(attrs, 'dim'), x.shape.length);
    const n = x.shape[d];
    const start = attrNum(attrs, 'start', 0);
    const end = Math.min(attrNum(attrs, 'end', n), n);
    const step = attrNum(attrs, 'step', 1);
    if (start < 0 || start > end || step < 1) fail(`slice ${start}:${end}:${step} does not fit dim ${d} of ${fmt(x.shape)}`);
    const shape = [...x.shape];
    shape[d] = Math.ceil((end - start) / step);
    return { shape, dtype: x.dtype };
  },
  concat: (ins, attrs) => {
    if (ins.length === 0) fail('concat needs at least one input');
    const rank = ins[0].shape.length;
    const d = normDim(attrNum(attrs, 'dim'), rank);
    const shape = [...ins[0].shape];
    for (const t of ins.slice(1)) {
      if (t.shape.length !== rank || t.shape.some((s, i) => i !== d && s !== shape[i])) fail(`concat along dim ${d}: ${fmt(t.shape)} does not fit ${fmt(ins[0].shape)}`);
      shape[d] += t.shape[d];
    }
    return { shape, dtype: ins[0].dtype };
  },
  pad: ([x], attrs) => {
    const pads = attrPairs(attrs, 'pads');
    if (pads.length !== x.shape.length) fail(`pad: pads has ${pads.length} pairs for rank ${x.shape.length}`);
    const shape = x.shape.map((s, i) => s + pads[i][0] + pads[i][1]);
    if (shape.some((s) => s < 0)) fail(`pad: negative size`);
    return { shape, dtype: x.dtype };
  },
  expand: ([x], attrs) => {
    const shape = attrInts(attrs, 'shape');
    const b = broadcastShapes(x.shape, shape);
    if (b.join() !== shape.join()) fail(`expand: ${fmt(x.shape)} does not broadcast to ${fmt(shape)}`);
    return { shape, dtype: x.dtype };
  },
  gather: ([x, index], attrs) => {
    const d = normDim(attrNum(attrs, 'dim'), x.shape.length);
    if (index.shape.length !== x.shape.length || index.shape.some((s, i) => i !== d && s !== x.shape[i])) fail(`gather: index ${fmt(index.shape)} does not fit x ${fmt(x.shape)} along dim ${d}`);
    return { shape: index.shape, dtype: x.dtype };
  },
  scatter_add: ([g, index], attrs) => {
    const shape = attrInts(attrs, 'shape');
    normDim(attrNum(attrs, 'dim'), shape.length);
    if (g.shape.join() !== index.shape.join()) fail(`scatter_add: g ${fmt(g.shape)} and index ${fmt(index.shape)} differ`);
    return { shape, dtype: g.dtype };
  },
  conv2d: ([x, w], attrs) => ({ shape: conv2dShape(x.shape, w.shape, attrs), dtype: x.dtype }),
  conv2d_grad_input: ([g, w], attrs) => {
    const shape = attrInts(attrs, 'input_shape');
    const y = conv2dShape(shape, w.shape, attrs);
    if (y.join() !== g.shape.join()) fail(`conv2d_grad_input: g ${fmt(g.shape)} is not the output ${fmt(y)} of conv2d on ${fmt(shape)}`);
    return { shape, dtype: g.dtype };
  },
  conv2d_grad_weight: ([x, g], attrs) => {
    const shape = attrInts(attrs, 'weight_shape');
    const y = conv2dShape(x.shape, shape, attrs);
    if (y.join() !== g.shape.join()) fail(`conv2d_grad_weight: g ${fmt(g.shape)} is not the output ${fmt(y)} of conv2d with weight ${fmt(shape)}`);
    return { shape, dtype: g.dtype };
  },
  resize: ([x], attrs) => {
    const size = attrInts(attrs, 'size');
    if (x.shape.length < 2 || size.length !== 2 || size.some((s) => s < 1)) fail(`resize: size ${fmt(size)} for ${fmt(x.shape)}`);
    if (attrs.mode !== 'bicubic' && attrs.mode !== 'bilinear') fail(`resize mode must be bicubic or bilinear`);
    return { shape: [...x.shape.slice(0, -2), ...size], dtype: x.dtype };
  },
  resize_grad: ([g], attrs) => {
    const inSize = attrInts(attrs, 'in_size');
    if (g.shape.length < 2 || inSize.length !== 2 || inSize.some((s) => s < 1)) fail(`resize_grad: in_size ${fmt(inSize)} for ${fmt(g.shape)}`);
    if (attrs.mode !== 'bicubic' && attrs.mode !== 'bilinear') fail(`resize mode must be bicubic or bilinear`);
    return { shape: [...g.shape.slice(0, -2), ...inSize], dtype: g.dtype };
  },
  adaptive_avg_pool2d: ([x], attrs) => {
    const size = attrInts(attrs, 'size');
    if (x.shape.length < 2 || size.length !== 2 || size.some((s) => s < 1)) fail(`adaptive_avg_pool2d: size ${fmt(size)} for ${fmt(x.shape)}`);
    return { shape: [...x.shape.slice(0, -2), ...size], dtype: x.dtype };
  },
  adaptive_avg_pool2d_grad: ([g], attrs) => {
    const inSize = attrInts(attrs, 'in_size');
    if (g.shape.length < 2 || inSize.length !== 2 || inSize.some((s) => s < 1)) fail(`adaptive_avg_pool2d_grad: in_size ${fmt(inSize)} for ${fmt(g.shape)}`);
    return { shape: [...g.shape.slice(0, -2), ...inSize], dtype: g.dtype };
  },
  sine_position: ([x], attrs) => {
    const c = attrNum(attrs, 'channels');
    if (x.shape.length !== 4 || !Number.isInteger(c) || c <= 0 || c % 2 !== 0) fail(`sine_position takes x [B, C, H, W] and an even channels count, got ${fmt(x.shape)} and ${c}`);
    attrNum(attrs, 'temperature', 10000);
    return { shape: [x.shape[0], c, x.shape[2], x.shape[3]], dtype: 'f32' };
  },
  attention: ([q, k, v, mask]) => {
    if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) fail('attention takes q, k, v as [B, H, S, D]');
    if (q.shape[3] !== k.shape[3] || k.shape[2] !== v.shape[2] || q.shape[0] !== k.shape[0] || q.shape[1] !== k.shape[1]) fail(`attention: q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${fmt(v.shape)} do not fit`);
    if (mask) broadcastShapes(mask.shape, [q.shape[0], q.shape[1], q.shape[2], k.shape[2]]);
    return { shape: [q.shape[0], q.shape[1], q.shape[2], v.shape[3]], dtype: q.dtype };
  },
  attention_lse: (ins) => {
    if (ins.length !== 2 && ins.length !== 3) fail(`attention_lse takes q, k and an optional mask, got ${ins.length} inputs`);
    const [q, k, mask] = ins;
    if (q.shape.length !== 4 || k.shape.length !== 4) fail('attention_lse takes q, k as [B, H, S, D]');
    if (q.shape[3] !== k.shape[3] || q.shape[0] !== k.shape[0] || q.shape[1] !== k.shape[1]) fail(`attention_lse: q ${fmt(q.shape)}, k ${fmt(k.shape)} do not fit`);
    if (mask) broadcastShapes(mask.shape, [q.shape[0], q.shape[1], q.shape[2], k.shape[2]]);
    // Softmax statistics stay f32 whatever the inputs' dtype.
    return { shape: q.shape.slice(0, 3), dtype: 'f32' };
  },
  attention_grad: (ins, attrs) => {
    if (ins.length !== 6 && ins.length !== 7) fail(`attention_grad takes q, k, v, g, lse, delta and an optional mask, got ${ins.length} inputs`);
    const [q, k, v, g, lse, delta, mask] = ins;
    const wrt = attrNum(attrs, 'wrt');
    if (![0, 1, 2, 3].includes(wrt)) fail(`attention_grad: wrt is 0 (q), 1 (k), 2 (v) or 3 (the logits), got ${wrt}`);
    const y = SHAPE_RULES.attention(mask ? [q, k, v, mask] : [q, k, v], attrs);
    if (g.shape.join() !== y.shape.join()) fail(`attention_grad: g ${fmt(g.shape)} must be the output's ${fmt(y.shape)}`);
    const rows = q.shape.slice(0, 3);
    if (lse.shape.join() !== rows.join()) fail(`attention_grad: lse ${fmt(lse.shape)} must be ${fmt(rows)}`);
    if (delta.shape.join() !== rows.join()) fail(`attention_grad: delta ${fmt(delta.shape)} must be ${fmt(rows)}`);
    if (wrt === 3) return { shape: [...rows, k.shape[2]], dtype: q.dtype };
    return ins[wrt];
  },
  msdeform_attn: ([value, loc, attw], attrs) => {
    const levels = attrPairs(attrs, 'levels');
    const [n, s, m, dh] = value.shape;
    const total = levels.reduce((t, [h, w]) => t + h * w, 0);
    if (value.shape.length !== 4 || s !== total) fail(`msdeform_attn: value ${fmt(value.shape)} must be [N, ${total}, M, Dh] for levels ${JSON.stringify(levels)}`);
    const [n2, lq, m2, l, p, two] = loc.shape;
    if (loc.shape.length !== 6 || n2 !== n || m2 !== m || l !== levels.length || two !== 2) fail(`msdeform_attn: sampling_locations ${fmt(loc.shape)} must be [N, Lq, M, L, P, 2]`);
    if (attw.shape.join() !== [n, lq, m, l, p].join()) fail(`msdeform_attn: attention_weights ${fmt(attw.shape)} must be ${fmt([n, lq, m, l, p])}`);
    return { shape: [n, lq, m * dh], dtype: value.dtype };
  },
  msdeform_attn_grad: (ins, attrs) => {
    const wrt = attrNum(attrs, 'wrt');
    if (![0, 1, 2].includes(wrt)) fail('msdeform_attn_grad: wrt is 0, 1 or 2');
    if (ins.length !== 4) fail('msdeform_attn_grad takes value, sampling_locations, attention_weights and g');
    const y = SHAPE_RULES.msdeform_attn(ins.slice(0, 3), attrs);
    if (y.shape.join() !== ins[3].shape.join()) fail(`msdeform_attn_grad: g ${fmt(ins[3].shape)} must be ${fmt(y.shape)}`);
    return ins[wrt];
  },
};
