// The IR's op set. Each op has a fusion kind (what the GPU backend may fuse it with) and the names of its
// attributes. The rule tables (shape, CPU reference, gradient, WGSL) are keyed by these names and typed
// `{ [K in IrOp]: ... }`, so an op without a rule does not compile.
//
// Language ops (compiler/ops/catalog.ts) lower to these: most one to one, some into several
// (`linear` = matmul + add, `layernorm` with affine = layernorm + mul + add, `lstm_cell` = its gates).

export type FusionKind = 'leaf' | 'elementwise' | 'reduce' | 'row' | 'matmul' | 'movement' | 'opaque';

interface OpInfo {
  readonly fusion: FusionKind;
  /** Attribute names; the shape rule validates their values. */
  readonly attrs: readonly string[];
  readonly doc: string;
}

const ew = (doc: string, attrs: readonly string[] = []): OpInfo => ({ fusion: 'elementwise', attrs, doc });

export const IR_OPS = {
  // leaves
  input: { fusion: 'leaf', attrs: ['name', 'shape', 'dtype'], doc: 'an entry input' },
  param: { fusion: 'leaf', attrs: ['path', 'shape', 'dtype'], doc: 'a parameter, named by its checkpoint path' },
  full: { fusion: 'leaf', attrs: ['value', 'shape', 'dtype'], doc: 'a constant tensor' },
  // elementwise, unary
  neg: ew('-x'),
  exp: ew('e^x'),
  log: ew('ln x'),
  sqrt: ew('√x'),
  rsqrt: ew('1/√x'),
  tanh: ew('tanh x'),
  sigmoid: ew('1/(1+e^-x)'),
  relu: ew('max(x, 0)'),
  gelu: ew('x·Φ(x), exact erf form'),
  erf: ew('error function'),
  step: ew('1 where x > 0, else 0 (derivative of relu)'),
  pow: ew('x^exponent', ['exponent']),
  cast: ew('convert to dtype', ['dtype']),
  dropout: ew('inverted dropout with a counter-based mask (p, seed); identity when p = 0', ['p', 'seed']),
  // elementwise, binary with broadcasting
  add: ew('a + b'),
  sub: ew('a - b'),
  mul: ew('a · b'),
  div: ew('a / b'),
  maximum: ew('max(a, b)'),
  eq: ew('1 where a == b, else 0'),
  // reductions
  sum: { fusion: 'reduce', attrs: ['dims', 'keepdim'], doc: 'sum over dims' },
  max: { fusion: 'reduce', attrs: ['dims', 'keepdim'], doc: 'max over dims' },
  // row ops (one row at a time over the last dim, or `dim`)
  softmax: { fusion: 'row', attrs: ['dim'], doc: 'softmax along dim' },
  log_softmax: { fusion: 'row', attrs: ['dim'], doc: 'log-softmax along dim' },
  layernorm: { fusion: 'row', attrs: ['eps'], doc: '(x - mean) / sqrt(var + eps) over the last dim (affine is separate)' },
  // linear algebra
  matmul: { fusion: 'matmul', attrs: [], doc: 'a @ b over the last two dims, batch dims broadcast' },
  // movement
  reshape: { fusion: 'movement', attrs: ['shape'], doc: 'same elements, new shape' },
  permute: { fusion: 'movement', attrs: ['dims'], doc: 'reorder dims' },
  slice: { fusion: 'movement', attrs: ['dim', 'start', 'end', 'step'], doc: 'x[start:end:step] along dim' },
  concat: { fusion: 'movement', attrs: ['dim'], doc: 'join inputs along dim' },
  pad: { fusion: 'movement', attrs: ['pads', 'value'], doc: 'constant padding; pads = [before, after] per dim' },
  expand: { fusion: 'movement', attrs: ['shape'], doc: 'broadcast to shape' },
  gather: { fusion: 'opaque', attrs: ['dim'], doc: 'out[..i..] = x[..index[..i..]..] along dim (index has out\'s shape)' },
  scatter_add: { fusion: 'opaque', attrs: ['dim', 'shape'], doc: 'the adjoint of gather: sums g into a zero tensor of shape at index' },
  // vision
  conv2d: { fusion: 'opaque', attrs: ['stride', 'padding', 'dilation', 'groups'], doc: 'NCHW convolution' },
  conv2d_grad_input: { fusion: 'opaque', attrs: ['stride', 'padding', 'dilation', 'groups', 'input_shape'], doc: 'the adjoint of conv2d in x' },
  conv2d_grad_weight: { fusion: 'opaque', attrs: ['stride', 'padding', 'dilation', 'groups', 'weight_shape'], doc: 'the adjoint of conv2d in w' },
  resize: { fusion: 'opaque', attrs: ['mode', 'size'], doc: 'bicubic or bilinear resize of the last two dims (align_corners=False)' },
  resize_grad: { fusion: 'opaque', attrs: ['mode', 'in_size'], doc: 'the adjoint of resize' },
  adaptive_avg_pool2d: { fusion: 'opaque', attrs: ['size'], doc: 'PyTorch adaptive average pooling of the last two dims' },
  adaptive_avg_pool2d_grad: { fusion: 'opaque', attrs: ['in_size'], doc: 'the adjoint of adaptive_avg_pool2d' },
  // positions
  sine_position: { fusion: 'opaque', attrs: ['channels', 'temperature', 'normalize'], doc: 'DETR sine position encoding of x\'s [B, C, H, W] grid (depends on the shape only): [B, channels, H, W]' },
  // attention
  attention: { fusion: 'opaque', attrs: ['scale'], doc: 'softmax(q·kᵀ·scale [+ mask])·v over [B, H, S, D]' },
  attention_lse: { fusion: 'opaque', attrs: ['scale'], doc: 'the row logsumexp of q·kᵀ·scale [+ mask]: [B, H, Sq], f32 (the softmax statistics attention\'s backward reuses); inputs q, k, [mask]' },
  attention_grad: {
    fusion: 'opaque',
    attrs: ['scale', 'wrt'],
    doc: 'the VJP of attention in input `wrt` (0 q, 1 k, 2 v, 3 the logits: [B, H, Sq, Sk], for a mask); inputs q, k, v, g, lse, delta = Σ g·out over the last dim, [mask]',
  },
  msdeform_attn: { fusion: 'opaque', attrs: ['levels'], doc: 'multi-scale deformable attention (Deformable-DETR layout)' },
  msdeform_attn_grad: { fusion: 'opaque', attrs: ['levels', 'wrt'], doc: 'the VJP of msdeform_attn in input `wrt` (0 value, 1 locations, 2 weights); inputs value, locations, weights, g' },
} as const satisfies Record<string, OpInfo>;

export type IrOp = keyof typeof IR_OPS;
export const IR_OP_NAMES = Object.keys(IR_OPS) as IrOp[];
