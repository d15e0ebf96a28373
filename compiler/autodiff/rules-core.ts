// Gradient rules of the core ops, written with the graph's own ops (so gradients are graphs too and can be
// differentiated again). Each rule returns one cotangent per input, and builds only those `needs` asks for:
// a frozen input costs no backward nodes. Integer inputs (gather's index) and ops with a zero derivative
// (eq, step) give undefined.
import type { Builder } from '../ir/builder.js';
import { isFloat, type DType, type Shape } from '../ir/graph.js';
import type { CoreOp } from '../ir/rules/families.js';
import { attrInts, attrNum, attrPairs, normDim } from '../ir/rules/shape.js';
import type { GradCtx, GradRule } from './rule-types.js';

type Grads = (number | undefined)[];

/** A rank-0 constant, broadcast by the binary ops. */
const scalar = (b: Builder, value: number, dtype: DType): number => b.full(value, [], dtype);

/** The cotangent of the only input of an elementwise op: g · f′, with f′ built from the node. */
const chain =
  (deriv: (c: GradCtx, x: number, y: number) => number): GradRule =>
  (c) =>
    c.needs[0] ? [c.b.mul(c.g, deriv(c, c.node.inputs[0], c.node.id))] : [undefined];

/** For a binary op: the cotangent of each needed input, summed back over its broadcast dims. */
function binaryGrads(c: GradCtx, da: () => number, db: () => number): Grads {
  const [a, b] = c.node.inputs;
  return [c.needs[0] ? c.b.unbroadcast(da(), c.b.shape(a)) : undefined, c.needs[1] ? c.b.unbroadcast(db(), c.b.shape(b)) : undefined];
}

/** The shape of a reduction's output with keepdim, and the normalised dims. */
function keptShape(x: Shape, dimsAttr: readonly number[]): { dims: number[]; kept: number[] } {
  const dims = [...new Set(dimsAttr.map((d) => normDim(d, x.length)))];
  return { dims, kept: x.map((s, i) => (dims.includes(i) ? 1 : s)) };
}

/** A reduction's output (or cotangent) viewed with keepdim, so it broadcasts against the input. */
function asKept(b: Builder, id: number, keepdim: boolean, kept: readonly number[]): number {
  return keepdim ? id : b.add('reshape', [id], { shape: [...kept] });
}

const zeroDerivative: GradRule = ({ node }) => node.inputs.map(() => undefined);

export const CORE_GRADS: { readonly [K in CoreOp]: GradRule } = {
  input: zeroDerivative,
  param: zeroDerivative,
  full: zeroDerivative,

  neg: ({ b, g, needs }) => [needs[0] ? b.add('neg', [g]) : undefined],
  exp: chain(({ b }, _x, y) => y),
  log: ({ b, g, node, needs }) => [needs[0] ? b.add('div', [g, node.inputs[0]]) : undefined],
  // d√x = 1/(2√x)
  sqrt: ({ b, g, node, needs }) => [needs[0] ? b.add('div', [g, b.scale(node.id, 2)]) : undefined],
  // d x^{-1/2} = -½·y³
  rsqrt: chain(({ b }, _x, y) => b.scale(b.mul(y, b.mul(y, y)), -0.5)),
  tanh: chain(({ b, node }, _x, y) => b.add('sub', [scalar(b, 1, node.dtype), b.mul(y, y)])),
  sigmoid: chain(({ b, node }, _x, y) => b.mul(y, b.add('sub', [scalar(b, 1, node.dtype), y]))),
  relu: chain(({ b }, x) => b.add('step', [x])),
  // d(x·Φ(x)) = Φ(x) + x·φ(x)
  gelu: chain(({ b, node }, x) => {
    const cdf = b.scale(b.add2(b.add('erf', [b.scale(x, Math.SQRT1_2)]), scalar(b, 1, node.dtype)), 0.5);
    const pdf = b.scale(b.add('exp', [b.scale(b.mul(x, x), -0.5)]), 1 / Math.sqrt(2 * Math.PI));
    return b.add2(cdf, b.mul(x, pdf));
  }),
  // d erf = 2/√π · e^{-x²}
  erf: chain(({ b }, x) => b.scale(b.add('exp', [b.scale(b.mul(x, x), -1)]), 2 / Math.sqrt(Math.PI))),
  step: zeroDerivative,
  pow: (c) => {
    const e = attrNum(c.node.attrs, 'exponent');
    if (!c.needs[0] || e === 0) return [undefined];
    if (e === 1) return [c.g];
    const x = c.node.inputs[0];
    return [c.b.mul(c.g, c.b.scale(e === 2 ? x : c.b.add('pow', [x], { exponent: e - 1 }), e))];
  },
  // The cotangent goes back to the source dtype; integer sources take none.
  cast: ({ b, g, node, needs }) => {
    const src = b.graph.node(node.inputs[0]).dtype;
    if (!needs[0] || !isFloat(src)) return [undefined];
    return [src === node.dtype ? g : b.add('cast', [g], { dtype: src })];
  },
  // The same mask (same p, seed and element indices), scaled the same: dropout is linear.
  dropout: ({ b, g, node, needs }) => [needs[0] ? (attrNum(node.attrs, 'p') === 0 ? g : b.add('dropout', [g, ...node.inputs.slice(1)], node.attrs)) : undefined, ...node.inputs.slice(1).map(() => undefined)],

  add: (c) => binaryGrads(c, () => c.g, () => c.g),
  sub: (c) => binaryGrads(c, () => c.g, () => c.b.add('neg', [c.g])),
  mul: (c) => binaryGrads(c, () => c.b.mul(c.g, c.node.inputs[1]), () => c.b.mul(c.g, c.node.inputs[0])),
  // d(a/b)/db = -a/b² = -y/b
  div: (c) =>
    binaryGrads(
      c,
      () => c.b.add('div', [c.g, c.node.inputs[1]]),
      () => c.b.add('neg', [c.b.add('div', [c.b.mul(c.g, c.node.id), c.node.inputs[1]])]),
    ),
  // PyTorch's convention: where a == b each side gets half.
  maximum: (c) => {
    const { b, g, node } = c;
    const [x, y] = node.inputs;
    let ga: number | undefined;
    const toA = () => (ga ??= b.mul(g, b.add2(b.add('step', [b.add('sub', [x, y])]), b.scale(b.add('eq', [x, y]), 0.5))));
    return binaryGrads(c, toA, () => b.add('sub', [g, toA()]));
  },
  eq: zeroDerivative,

  sum: ({ b, g, node, needs }) => {
    if (!needs[0]) return [undefined];
    const x = node.inputs[0];
    const { kept } = keptShape(b.shape(x), attrInts(node.attrs, 'dims'));
    return [b.add('expand', [asKept(b, g, node.attrs.keepdim === true, kept)], { shape: [...b.shape(x)] })];
  },
  // Like torch.amax: the cotangent is split evenly among the elements equal to the maximum.
  max: ({ b, g, node, needs }) => {
    if (!needs[0]) return [undefined];
    const x = node.inputs[0];
    const keepdim = node.attrs.keepdim === true;
    const { dims, kept } = keptShape(b.shape(x), attrInts(node.attrs, 'dims'));
    const mask = b.add('eq', [x, asKept(b, node.id, keepdim, kept)]);
    const count = b.add('sum', [mask], { dims, keepdim: true });
    return [b.mul(mask, b.add('div', [asKept(b, g, keepdim, kept), count]))];
  },

  // y·(g − Σ g·y)
  softmax: ({ b, g, node, needs }) => {
    if (!needs[0]) return [undefined];
    const dim = attrNum(node.attrs, 'dim', -1);
    const y = node.id;
    const s = b.add('sum', [b.mul(g, y)], { dims: [dim], keepdim: true });
    return [b.mul(y, b.add('sub', [g, s]))];
  },
  // g − softmax(x)·Σ g, with softmax(x) = e^y
  log_softmax: ({ b, g, node, needs }) => {
    if (!needs[0]) return [undefined];
    const dim = attrNum(node.attrs, 'dim', -1);
    const s = b.add('sum', [g], { dims: [dim], keepdim: true });
    return [b.add('sub', [g, b.mul(b.add('exp', [node.id]), s)])];
  },
  // With y = (x − μ)·r, r = 1/√(var + eps) over the last dim of size n: dx = r·(g − mean(g) − y·mean(g·y)).
  layernorm: ({ b, g, node, needs }) => {
    if (!needs[0]) return [undefined];
    const x = node.inputs[0];
    const n = b.shape(x)[b.shape(x).length - 1];
    const mean = (t: number) => b.scale(b.add('sum', [t], { dims: [-1], keepdim: true }), 1 / n);
    const xc = b.add('sub', [x, mean(x)]);
    const r = b.add('rsqrt', [b.add2(mean(b.mul(xc, xc)), scalar(b, attrNum(node.attrs, 'eps'), node.dtype))]);
    const y = node.id;
    const inner = b.add('sub', [b.add('sub', [g, mean(g)]), b.mul(y, mean(b.mul(g, y)))]);
    return [b.mul(r, inner)];
  },

  // g·bᵀ and aᵀ·g, summed over broadcast batch dims.
  matmul: (c) => {
    const { b, g, node } = c;
    const [x, w] = node.inputs;
    return binaryGrads(
      c,
      () => b.add('matmul', [g, b.transposeLast(w)]),
      () => b.add('matmul', [b.transposeLast(x), g]),
    );
  },

  reshape: ({ b, g, node, needs }) => [needs[0] ? b.add('reshape', [g], { shape: [...b.shape(node.inputs[0])] }) : undefined],
  permute: ({ b, g, node, needs }) => {
    if (!needs[0]) return [undefined];
    const rank = b.shape(g).length;
    const dims = attrInts(node.attrs, 'dims').map((d) => normDim(d, rank));
    const inverse = new Array<number>(rank);
    dims.forEach((d, i) => (inverse[d] = i));
    return [b.add('permute', [g], { dims: inverse })];
  },
  // Zeros around the slice: with step s, interleave s − 1 zeros after each element (a new dim padded, then
  // flattened), then pad (or crop) along dim to the input's size.
  slice: ({ b, g, node, needs }) => {
    if (!needs[0]) return [undefined];
    const xs = b.shape(node.inputs[0]);
    const d = normDim(attrNum(node.attrs, 'dim'), xs.length);
    const start = attrNum(node.attrs, 'start', 0);
    const step = attrNum(node.attrs, 'step', 1);
    let t = g;
    const gs = [...b.shape(g)];
    if (step > 1) {
      const split = [...gs.slice(0, d + 1), 1, ...gs.slice(d + 1)];
      t = b.add('reshape', [t], { shape: split });
      t = b.add('pad', [t], { pads: split.map((_, i) => (i === d + 1 ? [0, step - 1] : [0, 0])), value: 0 });
      gs[d] *= step;
      t = b.add('reshape', [t], { shape: [...gs] });
    }
    return [b.add('pad', [t], { pads: xs.map((s, i) => (i === d ? [start, s - start - gs[d]] : [0, 0])), value: 0 })];
  },
  concat: ({ b, g, node, needs }) => {
    const rank = b.shape(g).length;
    const d = normDim(attrNum(node.attrs, 'dim'), rank);
    let at = 0;
    return node.inputs.map((x, k) => {
      const len = b.shape(x)[d];
      at += len;
      return needs[k] ? b.add('slice', [g], { dim: d, start: at - len, end: at, step: 1 }) : undefined;
    });
  },
  // out[i] = x[i − before], so dx[i] = g[i + before]: the pad with negated pads (positive ones crop back).
  pad: ({ b, g, node, needs }) => [needs[0] ? b.add('pad', [g], { pads: attrPairs(node.attrs, 'pads').map(([lo, hi]) => [-lo, -hi]), value: 0 }) : undefined],
  expand: ({ b, g, node, needs }) => [needs[0] ? b.unbroadcast(g, b.shape(node.inputs[0])) : undefined],
  gather: ({ b, g, node, needs }) => {
    const [x, index] = node.inputs;
    return [needs[0] ? b.add('scatter_add', [g, index], { dim: node.attrs.dim, shape: [...b.shape(x)] }) : undefined, undefined];
  },
  scatter_add: ({ b, g, node, needs }) => {
    const [, index] = node.inputs;
    return [needs[0] ? b.add('gather', [g, index], { dim: node.attrs.dim }) : undefined, undefined];
  },

  // The encoding depends on x's shape only.
  sine_position: () => [undefined],
  // Flash-attention style: the backward never builds the [Sq, Sk] probabilities. It recomputes the row
  // logsumexp (attention_lse), takes δ = Σ g·out per row, and each needed input's cotangent is one
  // attention_grad node (kernels that recompute P tile by tile); a mask's is the logits' cotangent summed
  // over its broadcast dims.
  attention: ({ b, g, node, needs }) => {
    const [q, k, v, mask] = node.inputs;
    if (!needs.some(Boolean)) return node.inputs.map(() => undefined);
    const scale = attrNum(node.attrs, 'scale', 1 / Math.sqrt(b.shape(q)[3]));
    const masked = mask === undefined ? [] : [mask];
    const lse = b.add('attention_lse', [q, k, ...masked], { scale });
    const delta = b.add('sum', [b.mul(g, node.id)], { dims: [-1], keepdim: false });
    const grad = (wrt: number) => b.add('attention_grad', [q, k, v, g, lse, delta, ...masked], { scale, wrt });
    const grads: Grads = [needs[0] ? grad(0) : undefined, needs[1] ? grad(1) : undefined, needs[2] ? grad(2) : undefined];
    if (mask !== undefined) grads.push(needs[3] ? b.unbroadcast(grad(3), b.shape(mask)) : undefined);
    return grads;
  },
  attention_lse: () => {
    throw new Error('second-order gradient of attention is not supported (attention_lse has no gradient rule)');
  },
  attention_grad: () => {
    throw new Error('second-order gradient of attention is not supported (attention_grad has no gradient rule)');
  },
};
