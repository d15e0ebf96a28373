// The attention and MSDeformAttn rows of `visft bench`, at the shapes ViSFT runs them.
//
// Attention [B, H, S, D] (EVA-G: 16 heads of 88; EVA-E: 16 heads of 112), one row per task's input in stage 2
// (per GPU): caption 8 images of 256² (18² = 324 patches of 14), detection 1 of at most 672² (48² = 2304),
// segmentation 1 crop of 1024² (73² = 5329). MSDeformAttn at the Mask2Former pixel decoder's shape: Lq = S = 5329 (one 73x73 level),
// 8 heads of 32, 4 points. Each op has a forward row and a forward+backward row (the op's VJP graph, built as
// `visft compile --op NAME --vjp` builds it).
//
// `quick` shrinks heads and head dims by 4 and tokens by 4 to 16 (software adapters); `tiny` (tests) is
// smaller still, and its MSDeformAttn has two levels so that the peer's per-level path is tested too.
import { dimsText, ioBytes, numel, type BenchInput, type BenchOutput, type BenchPass, type BenchSize, type LocationFill, type RowSpec, type Tolerance } from './row-types.js';

interface AttentionTask {
  readonly task: 'caption' | 'detection' | 'segmentation';
  readonly batch: number;
  readonly tokens: number;
}

interface AttentionDims {
  readonly heads: number;
  readonly evag: number;
  readonly evae: number;
  readonly tasks: readonly AttentionTask[];
}

export const ATTENTION_SIZES: Readonly<Record<BenchSize, AttentionDims>> = {
  full: {
    heads: 16,
    evag: 88,
    evae: 112,
    tasks: [
      { task: 'caption', batch: 8, tokens: 324 },
      { task: 'detection', batch: 1, tokens: 2304 },
      { task: 'segmentation', batch: 1, tokens: 5329 },
    ],
  },
  quick: {
    heads: 4,
    evag: 22,
    evae: 28,
    tasks: [
      { task: 'caption', batch: 2, tokens: 81 },
      { task: 'detection', batch: 1, tokens: 144 },
      { task: 'segmentation', batch: 1, tokens: 324 },
    ],
  },
  // One shape for every task: WGSL is specialised to its shapes, and a cold shader cache on lavapipe takes
  // seconds per attention kernel, so the tests compile each kernel once per model.
  tiny: {
    heads: 2,
    evag: 11,
    evae: 14,
    tasks: [
      { task: 'caption', batch: 2, tokens: 12 },
      { task: 'detection', batch: 2, tokens: 12 },
      { task: 'segmentation', batch: 2, tokens: 12 },
    ],
  },
};

interface MsDeformDims {
  /** The row's name after `msdeform_{fwd,vjp}_`. */
  readonly tag: string;
  readonly levels: readonly (readonly [number, number])[];
  readonly heads: number;
  readonly headDim: number;
  readonly points: number;
}

/**
 * Mask2Former's pixel decoder: 8 heads of 32, 4 points; one 73x73 level (the original's row), and the three levels
 * it runs at (strides 8, 16, 32 of a 512x512 image: 64², 32², 16²; every pixel a query).
 */
export const MSDEFORM_SIZES: Readonly<Record<BenchSize, readonly MsDeformDims[]>> = {
  full: [
    { tag: 'm2f_pixel', levels: [[73, 73]], heads: 8, headDim: 32, points: 4 },
    { tag: 'm2f_3lvl', levels: [[64, 64], [32, 32], [16, 16]], heads: 8, headDim: 32, points: 4 },
  ],
  quick: [
    { tag: 'm2f_pixel', levels: [[18, 18]], heads: 8, headDim: 32, points: 4 },
    { tag: 'm2f_3lvl', levels: [[16, 16], [8, 8], [4, 4]], heads: 8, headDim: 32, points: 4 },
  ],
  tiny: [
    { tag: 'm2f_pixel', levels: [[4, 5], [2, 3]], heads: 2, headDim: 4, points: 2 },
    { tag: 'm2f_3lvl', levels: [[4, 4], [2, 2], [1, 1]], heads: 2, headDim: 4, points: 2 },
  ],
};

// f32 on both sides; the sums run over D (scores), S (output, dv) and S·D (dq, dk): errors stay near
// √S·2⁻²⁴ of each output's largest value.
const ATTENTION_FWD_TOL: Tolerance = { atol: 2e-5, rtol: 1e-4, scaled: true };
const ATTENTION_VJP_TOL: Tolerance = { atol: 1e-4, rtol: 1e-4, scaled: true };
const MSDEFORM_TOL: Tolerance = { atol: 2e-5, rtol: 1e-4, scaled: true };

export const ATTENTION_PEER =
  'tf.matMul(tf.softmax(tf.mul(tf.matMul(q, k, false, true), D^-0.5)), v): composed, the [B, H, S, S] scores in memory (the IR op uses its default scale D^-0.5)';
export const ATTENTION_VJP_PEER =
  'the composed attention, then its backward in tfjs ops as autodiff runs it (tf.grads needs gradient functions that tfjs-core alone does not register): dv = matMul(p, dy, true), dp = matMul(dy, v, false, true), dS = p·(dp − Σ dp·p)·D^-0.5, dq = matMul(dS, k), dk = matMul(dS, q, true)';
export const MSDEFORM_PEER =
  "the original's grid_sample composition in tfjs ops: per level and corner, tf.gather of value rows at the clamped pixel, a 0/1 validity mask for zero padding, bilinear weights; times the attention weights, summed over points and levels";
export const MSDEFORM_VJP_PEER =
  "that composition, then its backward in tfjs ops as autodiff (and grid_sample's backward) runs it: value's gradient by tf.unsortedSegmentSum (tf.gather's gradient), the locations' through the bilinear weights only (floor, indices and masks are constants)";

/** The cotangent input and the gradient outputs of a forward+backward row. */
function vjpParts(inputs: readonly BenchInput[], out: BenchOutput): { inputs: BenchInput[]; outputs: BenchOutput[] } {
  return {
    inputs: [...inputs, { name: 'd:output', shape: out.shape, range: [-1, 1] }],
    outputs: [out, ...inputs.map((i) => ({ name: `d:${i.name}`, shape: i.shape }))],
  };
}

// f16 rows (mixed precision as autocast runs it: q, k, v and the cotangent rounded to f16, f32 statistics): our
// tensor-core kernels round P (and the backward's dS) to f16 as well, PyTorch's f16 SDPA alike; the peer runs f32
// on the same rounded inputs. Errors stay near 2⁻⁹ of each output's largest value.
const ATTENTION_F16_TOL: Tolerance = { atol: 4e-3, rtol: 4e-3, scaled: true };

function attentionRow(pass: BenchPass, model: 'evag' | 'evae', heads: number, d: number, t: AttentionTask, dtype: 'f32' | 'f16' = 'f32'): RowSpec {
  const shape = [t.batch, heads, t.tokens, d];
  const inputs: BenchInput[] = [
    { name: 'q', shape, range: [-2, 2] },
    { name: 'k', shape, range: [-2, 2] },
    { name: 'v', shape, range: [-1, 1] },
  ];
  const out: BenchOutput = { name: 'output', shape };
  const fwdFlops = 4 * t.batch * heads * t.tokens * t.tokens * d;
  const vjp = pass === 'forward+backward';
  const modelName = model === 'evag' ? 'EVA-G' : 'EVA-E';
  return {
    name: `attention_${vjp ? 'vjp' : 'fwd'}_${dtype === 'f16' ? 'f16_' : ''}${model}_${t.task}`,
    op: 'attention',
    pass,
    dtype,
    what: `${modelName} self-attention, ${t.task} input${vjp ? ', forward and backward' : ''}${dtype === 'f16' ? ', f16 (autocast)' : ''}`,
    ...(vjp ? vjpParts(inputs, out) : { inputs, outputs: [out] }),
    attrs: {},
    opAttrs: [],
    shapeText: `q,k,v ${dimsText(shape)}`,
    // FlashAttention-2's count: forward 4·B·H·S²·D; backward 2.5x that (its five S²·D products).
    work: { unit: 'GFLOP/s', amount: vjp ? 3.5 * fwdFlops : fwdFlops },
    tolerance: dtype === 'f16' ? ATTENTION_F16_TOL : vjp ? ATTENTION_VJP_TOL : ATTENTION_FWD_TOL,
    peer: vjp ? ATTENTION_VJP_PEER : ATTENTION_PEER,
  };
}

function msdeformRow(pass: BenchPass, m: MsDeformDims): RowSpec {
  const s = m.levels.reduce((a, [h, w]) => a + h * w, 0);
  const L = m.levels.length;
  const lq = s;
  const inputs: BenchInput[] = [
    { name: 'value', shape: [1, s, m.heads, m.headDim], range: [-1, 1] },
    {
      name: 'sampling_locations',
      shape: [1, lq, m.heads, L, m.points, 2],
      range: [0, 1],
      fill: { kind: 'sampling_locations', levels: m.levels, points: m.points, margin: 1e-3 },
    },
    { name: 'attention_weights', shape: [1, lq, m.heads, L, m.points], range: [0, 0.5] },
  ];
  const out: BenchOutput = { name: 'output', shape: [1, lq, m.heads * m.headDim] };
  const vjp = pass === 'forward+backward';
  const parts = vjp ? vjpParts(inputs, out) : { inputs, outputs: [out] };
  const levelText = m.levels.map(([h, w]) => `${h}x${w}`).join('+');
  return {
    name: `msdeform_${vjp ? 'vjp' : 'fwd'}_${m.tag}`,
    op: 'msdeform_attn',
    pass,
    dtype: 'f32',
    what: `Mask2Former pixel decoder MSDeformAttn${vjp ? ', forward and backward' : ''}`,
    ...parts,
    attrs: {},
    opAttrs: [`levels=[${m.levels.map(([h, w]) => `${h}x${w}`).join(',')}]`],
    shapeText: `value ${dimsText(inputs[0].shape)}, Lq ${lq}, levels ${levelText}, ${m.points} points`,
    work: { unit: 'GB/s', amount: ioBytes(parts.inputs, parts.outputs) },
    tolerance: MSDEFORM_TOL,
    peer: vjp ? MSDEFORM_VJP_PEER : MSDEFORM_PEER,
  };
}

/** The attention rows (forward, then forward+backward; EVA-G then EVA-E) and the MSDeformAttn rows. */
export function attentionRows(size: BenchSize): RowSpec[] {
  const a = ATTENTION_SIZES[size];
  const rows: RowSpec[] = [];
  for (const pass of ['forward', 'forward+backward'] as const) {
    for (const model of ['evag', 'evae'] as const) for (const t of a.tasks) rows.push(attentionRow(pass, model, a.heads, a[model], t));
    // EVA-G in f16 too: what the tensor-core kernels run (against PyTorch's f16 SDPA on NVIDIA).
    for (const t of a.tasks) rows.push(attentionRow(pass, 'evag', a.heads, a.evag, t, 'f16'));
  }
  for (const m of MSDEFORM_SIZES[size]) for (const pass of ['forward', 'forward+backward'] as const) rows.push(msdeformRow(pass, m));
  return rows;
}

/** Sampling locations as LocationFill describes, from a uniform [0, 1) source. */
export function fillLocations(f: LocationFill, shape: readonly number[], uniform: () => number): Float32Array {
  const out = new Float32Array(numel(shape));
  const L = f.levels.length;
  for (let i = 0; i < out.length; i += 2) {
    const level = f.levels[Math.floor(i / (2 * f.points)) % L];
    for (let c = 0; c < 2; c++) {
      const size = c === 0 ? level[1] : level[0]; // x scales with W, y with H
      // One of the size + 1 unit cells between -1 and size, then a position inside it away from its ends.
      const cell = Math.min(size, Math.floor(uniform() * (size + 1)));
      const pixel = cell - 1 + f.margin + (1 - 2 * f.margin) * uniform();
      out[i + c] = (pixel + 0.5) / size;
    }
  }
  return out;
}
