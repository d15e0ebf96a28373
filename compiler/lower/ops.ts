// How each language op (compiler/ops/catalog.ts) becomes IR: one rule per op, checked exhaustive by the
// type system. Most are one IR node; some are a few (`linear` = matmul + add, `layernorm` = normalise +
// affine, `lstm_cell` = its gates). Arguments arrive already evaluated: tensors as node ids, shape
// values as numbers, booleans, strings or lists.
import type { Builder } from '../ir/builder.js';
import type { DType } from '../ir/graph.js';
import type { OpName } from '../ops/catalog.js';

export type Value =
  | { readonly kind: 'tensor'; readonly id: number }
  | { readonly kind: 'shape'; readonly v: ShapeValue }
  | { readonly kind: 'record'; readonly fields: ReadonlyMap<string, Value> };

export type ShapeValue = number | boolean | string | readonly ShapeValue[];

export class LowerError extends Error {}

export interface OpArgs {
  /** Inputs in signature order (optional ones undefined), or the variadic list for `...xs`. */
  readonly inputs: readonly (number | undefined)[];
  readonly attr: (name: string) => ShapeValue | undefined;
  readonly b: Builder;
  /** Training mode: dropout is active. */
  readonly training: boolean;
  /** A fresh seed for a random op (deterministic per graph position). */
  readonly seed: () => number;
  /** The per-update dropout salt (a scalar input), when the graph is compiled for a training loop. */
  readonly salt?: () => number;
}

type LowerRule = (a: OpArgs) => Value;

const T = (id: number): Value => ({ kind: 'tensor', id });

function num(a: OpArgs, name: string, dflt?: number): number {
  const v = a.attr(name) ?? dflt;
  if (typeof v !== 'number') throw new LowerError(`'${name}' must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function ints(a: OpArgs, name: string, dflt?: readonly number[]): number[] {
  const v = a.attr(name) ?? dflt;
  if (typeof v === 'number') return [v];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isInteger(x))) throw new LowerError(`'${name}' must be a list of whole numbers, got ${JSON.stringify(v)}`);
  return v as number[];
}

function pair(a: OpArgs, name: string, dflt: number): [number, number] {
  const v = ints(a, name, [dflt, dflt]);
  return v.length === 1 ? [v[0], v[0]] : [v[0], v[1]];
}

function need(a: OpArgs, i: number, what: string): number {
  const id = a.inputs[i];
  if (id === undefined) throw new LowerError(`missing tensor input '${what}'`);
  return id;
}

const unary = (op: 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'tanh' | 'sigmoid' | 'relu' | 'gelu' | 'erf'): LowerRule => (a) => T(a.b.add(op, [need(a, 0, 'x')]));
const binary = (op: 'add' | 'sub' | 'mul' | 'div' | 'maximum'): LowerRule => (a) => T(a.b.add(op, [need(a, 0, 'a'), need(a, 1, 'b')]));

function rank(a: OpArgs, id: number): number {
  return a.b.shape(id).length;
}

function norm(d: number, r: number): number {
  return d < 0 ? d + r : d;
}

/** Reshape that resolves -1 and symbolic sizes already evaluated. */
function reshape(b: Builder, x: number, shape: readonly number[]): number {
  return b.add('reshape', [x], { shape: [...shape] });
}

/** `linear`: x @ weightᵀ + bias (weight [out, in]). LoRA attaches to this exact pattern (compiler/lower/lora.ts). */
/**
 * x @ y with torch.matmul's rules for 1-D operands: a 1-D left operand is a row [1, K], a 1-D right one a column
 * [K, 1], and the dim each added is dropped from the result (1-D @ 1-D is a scalar).
 */
export function matmulNd(b: Builder, x: number, y: number): number {
  const [xs, ys] = [b.shape(x), b.shape(y)];
  const out = b.add('matmul', [xs.length === 1 ? reshape(b, x, [1, xs[0]]) : x, ys.length === 1 ? reshape(b, y, [ys[0], 1]) : y]);
  if (xs.length > 1 && ys.length > 1) return out;
  const os = b.shape(out);
  const dropped = [...(xs.length === 1 ? [os.length - 2] : []), ...(ys.length === 1 ? [os.length - 1] : [])];
  return reshape(b, out, os.filter((_, i) => !dropped.includes(i)));
}

export function linear(b: Builder, x: number, w: number, bias?: number): number {
  const y = matmulNd(b, x, b.add('permute', [w], { dims: [1, 0] }));
  return bias === undefined ? y : b.add('add', [y, bias]);
}

function reduce(a: OpArgs, op: 'sum' | 'max', mean: boolean): Value {
  const x = need(a, 0, 'x');
  const r = rank(a, x);
  const dims = a.attr('dims') === undefined ? [...Array(r).keys()] : ints(a, 'dims').map((d) => norm(d, r));
  const keepdim = a.attr('keepdim') === true;
  const y = a.b.add(op, [x], { dims, keepdim });
  if (!mean) return T(y);
  const n = dims.reduce((p, d) => p * a.b.shape(x)[d], 1);
  return T(a.b.scale(y, 1 / n));
}

function affine(b: Builder, y: number, w: number | undefined, bias: number | undefined, shape?: readonly number[]): number {
  let out = y;
  if (w !== undefined) out = b.add('mul', [out, shape ? reshape(b, w, shape) : w]);
  if (bias !== undefined) out = b.add('add', [out, shape ? reshape(b, bias, shape) : bias]);
  return out;
}

function constant(a: OpArgs, value: number): Value {
  const dtype = (a.attr('dtype') as DType | undefined) ?? 'f32';
  return T(a.b.full(value, ints(a, 'shape'), dtype));
}

/** `reduction`: mean (default; weighted by w when given), sum, or none. */
function reduceLoss(a: OpArgs, loss: number, w?: number): number {
  const b = a.b;
  const mode = a.attr('reduction') ?? 'mean';
  const all = (x: number) => b.add('sum', [x], { dims: [...b.shape(x).keys()], keepdim: false });
  if (mode === 'none') return loss;
  if (mode === 'sum') return all(loss);
  if (mode !== 'mean') throw new LowerError(`reduction is mean, sum or none, not '${String(mode)}'`);
  if (w !== undefined) return b.add('div', [all(loss), all(w)]);
  return b.scale(all(loss), 1 / Math.max(1, b.shape(loss).reduce((p, d) => p * d, 1)));
}

const notYet = (op: string): LowerRule => () => {
  throw new LowerError(`op '${op}' cannot be compiled yet (its lowering arrives with the head that needs it)`);
};

export const LOWER: { readonly [K in OpName]: LowerRule } = {
  add: binary('add'),
  sub: binary('sub'),
  mul: binary('mul'),
  div: binary('div'),
  maximum: binary('maximum'),
  neg: unary('neg'),
  exp: unary('exp'),
  log: unary('log'),
  sqrt: unary('sqrt'),
  rsqrt: unary('rsqrt'),
  tanh: unary('tanh'),
  sigmoid: unary('sigmoid'),
  relu: unary('relu'),
  gelu: unary('gelu'),
  erf: unary('erf'),
  pow: (a) => T(a.b.add('pow', [need(a, 0, 'x')], { exponent: num(a, 'exponent') })),
  cast: (a) => T(a.b.add('cast', [need(a, 0, 'x')], { dtype: String(a.attr('dtype')) })),
  dropout: (a) => {
    const x = need(a, 0, 'x');
    const p = num(a, 'p', 0.5);
    return T(a.training && p > 0 ? a.b.add('dropout', a.salt ? [x, a.salt()] : [x], { p, seed: a.seed() }) : x);
  },
  sum: (a) => reduce(a, 'sum', false),
  mean: (a) => reduce(a, 'sum', true),
  max: (a) => reduce(a, 'max', false),
  softmax: (a) => T(a.b.add('softmax', [need(a, 0, 'x')], { dim: num(a, 'dim', -1) })),
  log_softmax: (a) => T(a.b.add('log_softmax', [need(a, 0, 'x')], { dim: num(a, 'dim', -1) })),
  layernorm: (a) => T(affine(a.b, a.b.add('layernorm', [need(a, 0, 'x')], { eps: num(a, 'eps', 1e-5) }), a.inputs[1], a.inputs[2])),
  groupnorm: (a) => {
    // Normalise over (C / groups, H, W) per group, then the per-channel affine.
    const x = need(a, 0, 'x');
    const s = a.b.shape(x);
    const groups = num(a, 'groups');
    if (s[1] % groups !== 0) throw new LowerError(`groupnorm: ${s[1]} channels do not split into ${groups} groups`);
    const rest = s.slice(1).reduce((p, d) => p * d, 1);
    const g = reshape(a.b, x, [s[0], groups, rest / groups]);
    const y = reshape(a.b, a.b.add('layernorm', [g], { eps: num(a, 'eps', 1e-5) }), s);
    const cshape = [1, s[1], ...s.slice(2).map(() => 1)];
    return T(affine(a.b, y, a.inputs[1], a.inputs[2], cshape));
  },
  matmul: (a) => T(matmulNd(a.b, need(a, 0, 'a'), need(a, 1, 'b'))),
  linear: (a) => T(linear(a.b, need(a, 0, 'x'), need(a, 1, 'weight'), a.inputs[2])),
  reshape: (a) => T(reshape(a.b, need(a, 0, 'x'), ints(a, 'shape'))),
  permute: (a) => T(a.b.add('permute', [need(a, 0, 'x')], { dims: ints(a, 'dims') })),
  transpose: (a) => {
    const x = need(a, 0, 'x');
    const r = rank(a, x);
    const dims = [...Array(r).keys()];
    const i = norm(num(a, 'dim0'), r);
    const j = norm(num(a, 'dim1'), r);
    [dims[i], dims[j]] = [dims[j], dims[i]];
    return T(a.b.add('permute', [x], { dims }));
  },
  flatten: (a) => {
    const x = need(a, 0, 'x');
    const s = a.b.shape(x);
    const start = norm(num(a, 'start', 0), s.length);
    const end = norm(num(a, 'end', -1), s.length);
    const merged = s.slice(start, end + 1).reduce((p, d) => p * d, 1);
    return T(reshape(a.b, x, [...s.slice(0, start), merged, ...s.slice(end + 1)]));
  },
  unsqueeze: (a) => {
    const x = need(a, 0, 'x');
    const s = [...a.b.shape(x)];
    s.splice(norm(num(a, 'dim'), s.length + 1), 0, 1);
    return T(reshape(a.b, x, s));
  },
  slice: (a) => {
    const x = need(a, 0, 'x');
    const d = norm(num(a, 'dim'), rank(a, x));
    // Python's slice bounds: negative ones count from the end, both clamp to [0, n], end before start is empty.
    const n = a.b.shape(x)[d];
    const bound = (name: string, dflt: number) => {
      const v = num(a, name, dflt);
      return Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    };
    const start = bound('start', 0);
    return T(a.b.add('slice', [x], { dim: d, start, end: Math.max(start, bound('end', n)), step: num(a, 'step', 1) }));
  },
  concat: (a) => T(a.b.add('concat', a.inputs.map((_, k) => need(a, k, `xs[${k}]`)), { dim: num(a, 'dim', 0) })),
  pad: (a) => {
    // PyTorch's F.pad order: [before, after] pairs starting from the last dim.
    const x = need(a, 0, 'x');
    const flat = ints(a, 'pads');
    const r = rank(a, x);
    if (flat.length % 2 !== 0 || flat.length / 2 > r) throw new LowerError(`pad: ${flat.length} pad values for rank ${r}`);
    const pairs: [number, number][] = Array.from({ length: r }, () => [0, 0]);
    for (let k = 0; k < flat.length / 2; k++) pairs[r - 1 - k] = [flat[2 * k], flat[2 * k + 1]];
    return T(a.b.add('pad', [x], { pads: pairs, value: num(a, 'value', 0) }));
  },
  expand: (a) => {
    // torch's expand: -1 keeps the size of x's dim at that place (not for new leading dims).
    const x = need(a, 0, 'x');
    const xs = a.b.shape(x);
    const shape = ints(a, 'shape');
    const lead = shape.length - xs.length;
    const sizes = shape.map((s, i) => {
      if (s !== -1) return s;
      if (i < lead) throw new LowerError(`expand: -1 at dim ${i} of [${shape}] is a new dim of x [${xs}]; give its size`);
      return xs[i - lead];
    });
    return T(a.b.add('expand', [x], { shape: sizes }));
  },
  gather: (a) => {
    // torch.gather: index may be smaller than x in the other dims; x is read over index's extent there.
    const x = need(a, 0, 'x');
    const index = need(a, 1, 'index');
    const [xs, is] = [a.b.shape(x), a.b.shape(index)];
    const d = norm(num(a, 'dim'), xs.length);
    let src = x;
    if (is.length === xs.length) for (let k = 0; k < xs.length; k++) if (k !== d && is[k] < xs[k]) src = a.b.add('slice', [src], { dim: k, start: 0, end: is[k], step: 1 });
    return T(a.b.add('gather', [src, index], { dim: d }));
  },
  embedding: (a) => {
    // Rows of weight [V, E] picked by ids [...]: a gather along dim 0 with the ids broadcast over E.
    const ids = need(a, 0, 'ids');
    const w = need(a, 1, 'weight');
    const idShape = a.b.shape(ids);
    const e = a.b.shape(w)[1];
    const n = idShape.reduce((p, d) => p * d, 1);
    const idx = a.b.add('expand', [reshape(a.b, ids, [n, 1])], { shape: [n, e] });
    return T(reshape(a.b, a.b.add('gather', [w, idx], { dim: 0 }), [...idShape, e]));
  },
  zeros: (a) => constant(a, 0),
  ones: (a) => constant(a, 1),
  full: (a) => constant(a, num(a, 'value')),
  arange: notYet('arange'),
  patchify: (a) => {
    // Conv with kernel = stride = patch, as tokens [B, h·w, D].
    const image = need(a, 0, 'image');
    const w = need(a, 1, 'weight');
    const p = num(a, 'patch');
    const [, , ih, iw] = a.b.shape(image);
    if (ih % p !== 0 || iw % p !== 0) throw new LowerError(`the image is ${ih}x${iw}, which is not a multiple of the patch size ${p}`);
    const y = a.b.add('conv2d', [image, w], { stride: [p, p], padding: [0, 0], dilation: [1, 1], groups: 1 });
    const [n, d, h, wd] = a.b.shape(y);
    const tokens = a.b.add('permute', [reshape(a.b, y, [n, d, h * wd])], { dims: [0, 2, 1] });
    return T(a.inputs[2] === undefined ? tokens : a.b.add('add', [tokens, a.inputs[2]]));
  },
  conv2d: (a) => {
    const x = need(a, 0, 'x');
    const w = need(a, 1, 'weight');
    const y = a.b.add('conv2d', [x, w], { stride: pair(a, 'stride', 1), padding: pair(a, 'padding', 0), dilation: pair(a, 'dilation', 1), groups: num(a, 'groups', 1) });
    const bias = a.inputs[2];
    return T(bias === undefined ? y : a.b.add('add', [y, reshape(a.b, bias, [1, a.b.shape(bias)[0], 1, 1])]));
  },
  resize_bicubic: (a) => T(a.b.add('resize', [need(a, 0, 'x')], { mode: 'bicubic', size: pair(a, 'size', 1) })),
  resize_bilinear: (a) => T(a.b.add('resize', [need(a, 0, 'x')], { mode: 'bilinear', size: pair(a, 'size', 1) })),
  adaptive_avg_pool2d: (a) => T(a.b.add('adaptive_avg_pool2d', [need(a, 0, 'x')], { size: pair(a, 'size', 1) })),
  sine_position: (a) =>
    T(a.b.add('sine_position', [need(a, 0, 'x')], { channels: num(a, 'channels'), temperature: num(a, 'temperature', 10000), normalize: a.attr('normalize') === true })),
  attention: (a) => {
    const q = need(a, 0, 'q');
    const d = a.b.shape(q)[3];
    const inputs = [q, need(a, 1, 'k'), need(a, 2, 'v'), ...(a.inputs[3] === undefined ? [] : [a.inputs[3]])];
    return T(a.b.add('attention', inputs, { scale: num(a, 'scale', 1 / Math.sqrt(d)) }));
  },
  msdeform_attn: (a) => {
    const levels = a.attr('levels');
    if (levels === undefined) throw new LowerError(`msdeform_attn needs levels, the value maps' [H, W] sizes (with --op: --attr levels=64x64,32x32,16x16)`);
    if (!Array.isArray(levels)) throw new LowerError(`msdeform_attn: levels must be a list of [H, W] pairs`);
    return T(a.b.add('msdeform_attn', [need(a, 0, 'value'), need(a, 1, 'sampling_locations'), need(a, 2, 'attention_weights')], { levels: levels as number[][] }));
  },
  lstm_cell: (a) => {
    // PyTorch LSTMCell: gates = x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh, split i, f, g, o.
    const b = a.b;
    const gates = b.add('add', [linear(b, need(a, 0, 'x'), need(a, 3, 'w_ih'), a.inputs[5]), linear(b, need(a, 1, 'h'), need(a, 4, 'w_hh'), a.inputs[6])]);
    const hidden = b.shape(need(a, 1, 'h'))[1];
    const part = (k: number) => b.add('slice', [gates], { dim: 1, start: k * hidden, end: (k + 1) * hidden, step: 1 });
    const i = b.add('sigmoid', [part(0)]);
    const f = b.add('sigmoid', [part(1)]);
    const g = b.add('tanh', [part(2)]);
    const o = b.add('sigmoid', [part(3)]);
    const c = b.add('add', [b.mul(f, need(a, 2, 'c')), b.mul(i, g)]);
    const h = b.mul(o, b.add('tanh', [c]));
    return { kind: 'record', fields: new Map([['h', T(h)], ['c', T(c)]]) };
  },
  cross_entropy: (a) => {
    // logits [N, C, ...] (classes on dim 1, as PyTorch), integer targets [N, ...]; optional class weights;
    // targets equal to ignore_index count for nothing. mean = Σ w·nll / Σ w over the counted targets.
    const b = a.b;
    const logits = need(a, 0, 'logits');
    const target = need(a, 1, 'target');
    const ls = b.shape(logits);
    const tshape = b.shape(target);
    if (ls.length < 2 || tshape.length !== ls.length - 1 || tshape.some((d, i) => d !== ls[i === 0 ? 0 : i + 1])) throw new LowerError(`cross_entropy: target [${tshape.join(', ')}] does not fit logits [${ls.join(', ')}] (classes on dim 1)`);
    const ignore = a.attr('ignore_index');
    // Ignored targets pick class 0 (so the gather stays in range), then weigh 0.
    let w = typeof ignore === 'number' ? b.add('sub', [b.full(1, []), b.add('eq', [target, b.full(ignore, [])])]) : b.full(1, tshape);
    const safe = typeof ignore === 'number' ? b.mul(target, w) : target;
    const logp = b.add('log_softmax', [logits], { dim: 1 });
    const idx = b.add('reshape', [safe], { shape: [tshape[0], 1, ...tshape.slice(1)] });
    const picked = b.add('reshape', [b.add('gather', [logp, idx], { dim: 1 })], { shape: [...tshape] });
    if (a.inputs[2] !== undefined) {
      const flat = b.add('reshape', [safe], { shape: [tshape.reduce((p, d) => p * d, 1)] });
      w = b.mul(w, b.add('reshape', [b.add('gather', [a.inputs[2], flat], { dim: 0 })], { shape: [...tshape] }));
    }
    const loss = b.mul(b.add('neg', [picked]), w);
    return T(reduceLoss(a, loss, w));
  },
  binary_cross_entropy_logits: (a) => {
    // max(x, 0) - x·t + log(1 + exp(-|x|)): stable for large |x|.
    const b = a.b;
    const x = need(a, 0, 'logits');
    const t = need(a, 1, 'target');
    const abs = b.add('maximum', [x, b.add('neg', [x])]);
    const soft = b.add('log', [b.add('add', [b.full(1, []), b.add('exp', [b.add('neg', [abs])])])]);
    const loss = b.add('add', [b.add('sub', [b.add('maximum', [x, b.full(0, [])]), b.mul(x, t)]), soft]);
    return T(reduceLoss(a, loss));
  },
  l1_loss: (a) => {
    const b = a.b;
    const d = b.add('sub', [need(a, 0, 'a'), need(a, 1, 'b')]);
    return T(reduceLoss(a, b.add('maximum', [d, b.add('neg', [d])])));
  },
};
