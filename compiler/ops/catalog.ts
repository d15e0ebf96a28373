// The primitive op set as the language sees it: each op's positional tensor inputs and keyword attributes.
// The front end resolves calls against this table (unknown ops and keywords get a "did you mean"); the
// compiler core keys its shape, gradient, reference and WGSL rules by the same names.

/** An input name ending in `?` is optional; one starting with `...` takes the rest as a list. */
export interface OpSignature {
  readonly inputs: readonly string[];
  readonly attrs: readonly string[];
  /** Named results, for ops with several (`lstm_cell(...).h`). */
  readonly results?: readonly string[];
  readonly doc: string;
}

const unary = (doc: string): OpSignature => ({ inputs: ['x'], attrs: [], doc });
const binary = (doc: string): OpSignature => ({ inputs: ['a', 'b'], attrs: [], doc });
const reduce = (doc: string): OpSignature => ({ inputs: ['x'], attrs: ['dims', 'keepdim'], doc });

export const OPS = {
  // elementwise (the operators + - * / map to add sub mul div)
  add: binary('a + b with broadcasting'),
  sub: binary('a - b with broadcasting'),
  mul: binary('a * b with broadcasting'),
  div: binary('a / b with broadcasting'),
  maximum: binary('elementwise max'),
  neg: unary('-x'),
  exp: unary('e^x'),
  log: unary('natural log'),
  sqrt: unary('square root'),
  rsqrt: unary('1 / sqrt(x)'),
  tanh: unary('hyperbolic tangent'),
  sigmoid: unary('1 / (1 + e^-x)'),
  relu: unary('max(x, 0)'),
  gelu: unary('exact (erf) GELU'),
  erf: unary('error function'),
  pow: { inputs: ['x'], attrs: ['exponent'], doc: 'x ^ exponent' },
  cast: { inputs: ['x'], attrs: ['dtype'], doc: 'convert to dtype' },
  dropout: { inputs: ['x'], attrs: ['p'], doc: 'inverted dropout while training, identity otherwise' },
  // reductions and rows
  sum: reduce('sum over dims'),
  mean: reduce('mean over dims'),
  max: reduce('max over dims'),
  softmax: { inputs: ['x'], attrs: ['dim'], doc: 'softmax along dim' },
  log_softmax: { inputs: ['x'], attrs: ['dim'], doc: 'log-softmax along dim' },
  layernorm: { inputs: ['x', 'weight?', 'bias?'], attrs: ['eps'], doc: 'layer norm over the last dim' },
  groupnorm: { inputs: ['x', 'weight?', 'bias?'], attrs: ['groups', 'eps'], doc: 'group norm over channels (dim 1)' },
  // linear algebra
  matmul: { inputs: ['a', 'b'], attrs: [], doc: 'batched matrix product a @ b' },
  linear: { inputs: ['x', 'weight', 'bias?'], attrs: [], doc: 'x @ weight^T + bias (weight is [out, in])' },
  // movement
  reshape: { inputs: ['x'], attrs: ['shape'], doc: 'same elements, new shape (-1 infers one dim)' },
  permute: { inputs: ['x'], attrs: ['dims'], doc: 'reorder dims' },
  transpose: { inputs: ['x'], attrs: ['dim0', 'dim1'], doc: 'swap two dims' },
  flatten: { inputs: ['x'], attrs: ['start', 'end'], doc: 'merge dims start..end' },
  unsqueeze: { inputs: ['x'], attrs: ['dim'], doc: 'insert a dim of size 1' },
  slice: { inputs: ['x'], attrs: ['dim', 'start', 'end', 'step'], doc: 'x[start:end:step] along dim' },
  concat: { inputs: ['...xs'], attrs: ['dim'], doc: 'join along dim' },
  pad: { inputs: ['x'], attrs: ['pads', 'value'], doc: 'constant padding, pads as [before, after] per dim from the last' },
  expand: { inputs: ['x'], attrs: ['shape'], doc: 'broadcast to shape' },
  gather: { inputs: ['x', 'index'], attrs: ['dim'], doc: 'x[index] along dim' },
  embedding: { inputs: ['ids', 'weight'], attrs: [], doc: 'rows of weight picked by integer ids' },
  // constants
  zeros: { inputs: [], attrs: ['shape', 'dtype'], doc: 'a tensor of zeros' },
  ones: { inputs: [], attrs: ['shape', 'dtype'], doc: 'a tensor of ones' },
  full: { inputs: [], attrs: ['shape', 'value', 'dtype'], doc: 'a tensor filled with value' },
  arange: { inputs: [], attrs: ['n', 'dtype'], doc: '0, 1, ..., n-1' },
  // vision
  patchify: { inputs: ['image', 'weight', 'bias?'], attrs: ['patch'], doc: 'conv with stride = kernel = patch, as [B, h*w, D]' },
  conv2d: { inputs: ['x', 'weight', 'bias?'], attrs: ['stride', 'padding', 'dilation', 'groups'], doc: 'general 2-D convolution (NCHW)' },
  resize_bicubic: { inputs: ['x'], attrs: ['size'], doc: 'bicubic resize, PyTorch align_corners=False' },
  resize_bilinear: { inputs: ['x'], attrs: ['size'], doc: 'bilinear resize, PyTorch align_corners=False' },
  adaptive_avg_pool2d: { inputs: ['x'], attrs: ['size'], doc: 'adaptive average pooling to size (PyTorch bins)' },
  sine_position: { inputs: ['x'], attrs: ['channels', 'temperature', 'normalize'], doc: 'DETR sine position encoding for a [B, C, H, W] map' },
  // attention
  attention: { inputs: ['q', 'k', 'v', 'mask?'], attrs: ['scale'], doc: 'scaled dot-product attention over [B, H, S, D]' },
  msdeform_attn: {
    inputs: ['value', 'sampling_locations', 'attention_weights'],
    attrs: ['levels'],
    doc: 'multi-scale deformable attention (Deformable-DETR layout)',
  },
  // recurrent
  lstm_cell: {
    inputs: ['x', 'h', 'c', 'w_ih', 'w_hh', 'b_ih?', 'b_hh?'],
    attrs: [],
    results: ['h', 'c'],
    doc: 'one LSTMCell step (gates i, f, g, o as PyTorch)',
  },
  // losses
  cross_entropy: { inputs: ['logits', 'target', 'weight?'], attrs: ['ignore_index', 'reduction'], doc: 'softmax cross-entropy' },
  binary_cross_entropy_logits: { inputs: ['logits', 'target'], attrs: ['reduction'], doc: 'sigmoid BCE' },
  l1_loss: { inputs: ['a', 'b'], attrs: ['reduction'], doc: 'mean absolute error' },
} as const satisfies Record<string, OpSignature>;

export type OpName = keyof typeof OPS;

export function isOpName(name: string): name is OpName {
  return Object.prototype.hasOwnProperty.call(OPS, name);
}

/** The operator symbols of the language and the ops they stand for. */
export const OPERATOR_OPS = { '+': 'add', '-': 'sub', '*': 'mul', '/': 'div' } as const satisfies Record<string, OpName>;
