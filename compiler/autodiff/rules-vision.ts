// Gradient rules of the vision family. conv2d's three ops are bilinear maps that are adjoints of each
// other in every argument, so each one's VJP is made of the other two (second order works); resize and
// adaptive pooling are linear and swap with their grad ops. msdeform_attn's VJP is its grad op in each
// input; its second order is not supported.
import type { Attrs, Node } from '../ir/graph.js';
import type { VisionOp } from '../ir/rules/families.js';
import type { GradRule } from './rule-types.js';

/** The convolution geometry attributes of a conv2d-family node (those that are set). */
function convAttrs(node: Node): Attrs {
  const out: Record<string, Attrs[string]> = {};
  for (const key of ['stride', 'padding', 'dilation', 'groups']) if (node.attrs[key] !== undefined) out[key] = node.attrs[key];
  return out;
}

const lastTwo = (s: readonly number[]) => s.slice(-2);

// With C_w the convolution by w and ⟨·,·⟩ the sum of elementwise products, the three conv ops are the
// partial derivatives of one trilinear form T(x, w, g) = ⟨g, C_w x⟩: conv2d(x, w) = ∂T/∂g,
// conv2d_grad_input(g, w) = ∂T/∂x = C_wᵀ g, conv2d_grad_weight(x, g) = ∂T/∂w. So the VJP of each is made of
// the other two, with the cotangent taking the place of the argument the op differentiates in.
const conv2d: GradRule = ({ b, node, g }) => {
  const [x, w] = node.inputs;
  const a = convAttrs(node);
  return [
    b.add('conv2d_grad_input', [g, w], { ...a, input_shape: [...b.shape(x)] }),
    b.add('conv2d_grad_weight', [x, g], { ...a, weight_shape: [...b.shape(w)] }),
  ];
};

/** dx = C_wᵀ gy; with cotangent g of dx: in gy, C_w g; in w, conv2d_grad_weight(g, gy). */
const conv2dGradInput: GradRule = ({ b, node, g }) => {
  const [gy, w] = node.inputs;
  const a = convAttrs(node);
  return [b.add('conv2d', [g, w], a), b.add('conv2d_grad_weight', [g, gy], { ...a, weight_shape: [...b.shape(w)] })];
};

/** dw = ∂⟨gy, C_w x⟩/∂w; with cotangent g of dw: in x, C_gᵀ gy; in gy, C_g x. */
const conv2dGradWeight: GradRule = ({ b, node, g }) => {
  const [x, gy] = node.inputs;
  const a = convAttrs(node);
  return [b.add('conv2d_grad_input', [gy, g], { ...a, input_shape: [...b.shape(x)] }), b.add('conv2d', [x, g], a)];
};

export const VISION_GRADS: { readonly [K in VisionOp]: GradRule } = {
  conv2d,
  conv2d_grad_input: conv2dGradInput,
  conv2d_grad_weight: conv2dGradWeight,
  resize: ({ b, node, g }) => [b.add('resize_grad', [g], { mode: node.attrs.mode, in_size: lastTwo(b.shape(node.inputs[0])) })],
  resize_grad: ({ b, node, g }) => [b.add('resize', [g], { mode: node.attrs.mode, size: lastTwo(b.shape(node.inputs[0])) })],
  adaptive_avg_pool2d: ({ b, node, g }) => [b.add('adaptive_avg_pool2d_grad', [g], { in_size: lastTwo(b.shape(node.inputs[0])) })],
  adaptive_avg_pool2d_grad: ({ b, node, g }) => [b.add('adaptive_avg_pool2d', [g], { size: lastTwo(b.shape(node.inputs[0])) })],
  msdeform_attn: ({ b, node, g }) => {
    const [value, loc, attw] = node.inputs;
    return [0, 1, 2].map((wrt) => b.add('msdeform_attn_grad', [value, loc, attw, g], { levels: node.attrs.levels, wrt }));
  },
  msdeform_attn_grad: () => {
    throw new Error('second-order gradient of msdeform_attn is not supported');
  },
};
