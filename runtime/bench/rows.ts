// The rows of `visft bench`: one op each, at the shapes EVA-G and EVA-E run (ViT tokens of a 224 image), with
// what visft compiles for it (a one-op IR graph) and what the peer (tfjs on the same device) computes for it.
//
// Sizes: `full` is the real model (256 tokens: a 224 image in 14-pixel patches, no class token); `quick` is
// 64 tokens and every feature dim / 4 (software adapters); `tiny` is 8 tokens and dims / 32 (tests only).
// The attention and MSDeformAttn rows (rows-attention.ts) have their own shapes, per task.
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { compileOp } from '../../compiler/lower/op-entry.js';
import { dimsText, numel, type BenchSize, type RowSpec, type Tolerance } from './row-types.js';
import { attentionRows, fillLocations } from './rows-attention.js';

export type { BenchInput, BenchOp, BenchOutput, BenchPass, BenchSize, RowSpec, Tolerance } from './row-types.js';

interface ModelDims {
  /** Embedding width. */
  readonly dim: number;
  /** qkv projection output (3·dim). */
  readonly qkv: number;
  /** MLP hidden width. */
  readonly mlp: number;
}

interface SizeDims {
  readonly tokens: number;
  readonly heads: number;
  readonly evag: ModelDims;
  readonly evae: ModelDims;
}

/** EVA-G (EVA-01 g/14: width 1408, MLP 6144, 16 heads) and EVA-E (EVA-02-E/14: width 1792, MLP 15360, 16 heads). */
export const BENCH_SIZES: Readonly<Record<BenchSize, SizeDims>> = {
  full: { tokens: 256, heads: 16, evag: { dim: 1408, qkv: 4224, mlp: 6144 }, evae: { dim: 1792, qkv: 5376, mlp: 15360 } },
  quick: { tokens: 64, heads: 16, evag: { dim: 352, qkv: 1056, mlp: 1536 }, evae: { dim: 448, qkv: 1344, mlp: 3840 } },
  tiny: { tokens: 8, heads: 2, evag: { dim: 44, qkv: 132, mlp: 192 }, evae: { dim: 56, qkv: 168, mlp: 480 } },
};

export const LAYERNORM_EPS = 1e-6;

function matmulRow(name: string, what: string, dtype: 'f32' | 'f16', m: number, k: number, n: number): RowSpec {
  return {
    name,
    op: 'matmul',
    pass: 'forward',
    dtype,
    what,
    inputs: [
      { name: 'a', shape: [m, k], range: [-1, 1] },
      { name: 'b', shape: [k, n], range: [-1, 1] },
    ],
    outputs: [{ name: 'out', shape: [m, n] }],
    attrs: {},
    shapeText: `${m}x${k} @ ${k}x${n}`,
    work: { unit: 'GFLOP/s', amount: 2 * m * k * n },
    // f32 sums of k products: error grows like √k·eps relative to the output's scale; f16 storage rounds to 2⁻¹¹.
    tolerance: dtype === 'f32' ? { atol: 1e-4, rtol: 1e-4, scaled: true } : { atol: 4e-3, rtol: 2e-3, scaled: true },
    peer: dtype === 'f32' ? 'tf.matMul(a, b) (f32)' : 'tf.matMul(a, b) in f32 on the same f16-rounded inputs (tfjs has no f16 tensors)',
  };
}

function ewRow(name: string, op: 'layernorm' | 'softmax' | 'gelu', what: string, shape: readonly number[], range: readonly [number, number], tolerance: Tolerance, peer: string, attrs: Record<string, number> = {}): RowSpec {
  return {
    name,
    op,
    pass: 'forward',
    dtype: 'f32',
    what,
    inputs: [{ name: 'x', shape, range }],
    outputs: [{ name: 'out', shape }],
    attrs,
    shapeText: dimsText(shape),
    work: { unit: 'GB/s', amount: 2 * numel(shape) * 4 },
    tolerance,
    peer,
  };
}

const LAYERNORM_PEER = `m = tf.moments(x, -1, true); tf.batchNorm(x, m.mean, m.variance, undefined, undefined, 1e-6) (tf.layers.layerNormalization's arithmetic without its tiling and affine)`;
const SOFTMAX_PEER = 'tf.softmax(x) (last dim)';
const GELU_PEER = 'tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))) (exact-erf GELU from tf ops)';

/** Every row at a size, in table order. */
export function benchRows(size: BenchSize): RowSpec[] {
  const { tokens: t, heads, evag: g, evae: e } = BENCH_SIZES[size];
  const rows: RowSpec[] = [];
  for (const dtype of ['f32', 'f16'] as const) {
    rows.push(
      matmulRow(`matmul_${dtype}_evag_qkv`, 'EVA-G qkv projection', dtype, t, g.dim, g.qkv),
      matmulRow(`matmul_${dtype}_evag_fc1`, 'EVA-G MLP fc1', dtype, t, g.dim, g.mlp),
      matmulRow(`matmul_${dtype}_evag_fc2`, 'EVA-G MLP fc2', dtype, t, g.mlp, g.dim),
      matmulRow(`matmul_${dtype}_evae_qkv`, 'EVA-E qkv projection', dtype, t, e.dim, e.qkv),
      matmulRow(`matmul_${dtype}_evae_fc1`, 'EVA-E MLP fc1', dtype, t, e.dim, e.mlp),
      matmulRow(`matmul_${dtype}_evae_fc2`, 'EVA-E MLP fc2', dtype, t, e.mlp, e.dim),
    );
  }
  const ln = { atol: 1e-4, rtol: 1e-4, scaled: false };
  rows.push(
    ewRow('layernorm_evag', 'layernorm', 'EVA-G pre-norm (no affine)', [t, g.dim], [-1, 3], ln, LAYERNORM_PEER, { eps: LAYERNORM_EPS }),
    ewRow('layernorm_evae', 'layernorm', 'EVA-E pre-norm (no affine)', [t, e.dim], [-1, 3], ln, LAYERNORM_PEER, { eps: LAYERNORM_EPS }),
    ewRow('softmax_attn', 'softmax', `attention probabilities (${heads} heads x ${t} query rows)`, [heads * t, t], [-6, 6], { atol: 1e-6, rtol: 1e-4, scaled: false }, SOFTMAX_PEER, { dim: -1 }),
    ewRow('gelu_evag', 'gelu', 'EVA-G MLP activation', [t, g.mlp], [-5, 5], { atol: 1e-5, rtol: 1e-4, scaled: false }, GELU_PEER),
    ewRow('gelu_evae', 'gelu', 'EVA-E MLP activation', [t, e.mlp], [-5, 5], { atol: 1e-5, rtol: 1e-4, scaled: false }, GELU_PEER),
  );
  rows.push(...attentionRows(size));
  return rows;
}

/** Row names (the same at every size). */
export const BENCH_ROW_NAMES: readonly string[] = benchRows('tiny').map((r) => r.name);

/**
 * The rows `filters` select: each filter is a row name or a prefix of names (`matmul_f32`, `gelu`); all rows
 * when there are none. Throws with the list of names when a filter matches nothing.
 */
export function selectRows(rows: readonly RowSpec[], filters: readonly string[]): RowSpec[] {
  if (filters.length === 0) return [...rows];
  const unknown = filters.filter((f) => !rows.some((r) => r.name === f || r.name.startsWith(f)));
  if (unknown.length) throw new Error(`no bench row matches ${unknown.map((u) => `'${u}'`).join(', ')}; rows are: ${rows.map((r) => r.name).join(', ')}`);
  return rows.filter((r) => filters.some((f) => r.name === f || r.name.startsWith(f)));
}

/** Rows whose graph is built as `visft compile --op NAME [--vjp]` builds it (f32 inputs, default attributes). */
const viaCompileOp = (row: RowSpec): boolean => row.op === 'attention' || row.op === 'msdeform_attn';

/**
 * The one-op IR graph of a row: its input node ids in the row's order and its output names. Row ops are one
 * node; attention and MSDeformAttn go through compileOp (their lowering's defaults; with --vjp for a
 * forward+backward row: outputs `output` and `d:<input>`, the cotangent input `d:output`).
 */
export function rowGraph(row: RowSpec, dtype: 'f32' | 'f16' = row.dtype): { graph: Graph; inputs: number[]; outputs: string[] } {
  if (!viaCompileOp(row)) {
    const b = new Builder();
    const ins = row.inputs.map((i) => b.input(i.name, i.shape, dtype));
    b.output('out', b.add(row.op, ins, row.attrs));
    return { graph: b.graph, inputs: ins, outputs: row.outputs.map((o) => o.name) };
  }
  if (dtype !== 'f32' && row.op !== 'attention') throw new Error(`bench row ${row.name}: ${row.op} rows are f32 only`);
  const shapes = new Map(row.inputs.filter((i) => !i.name.startsWith('d:')).map((i) => [i.name, i.shape] as const));
  // f16: mixed precision as a training step runs it (autocast rounds attention's operands before the VJP).
  const { graph } = compileOp(row.op, shapes, row.opAttrs ?? [], row.pass === 'forward+backward', dtype === 'f16' ? 'f16' : undefined);
  const inputs = row.inputs.map((i) => {
    const found = graph.inputs.find((g) => g.name === i.name);
    if (!found) throw new Error(`internal: the graph of bench row ${row.name} has no input '${i.name}' (inputs: ${graph.inputs.map((g) => g.name).join(', ')})`);
    return found.node;
  });
  for (const o of row.outputs) {
    if (!graph.outputs.some((g) => g.name === o.name)) throw new Error(`internal: the graph of bench row ${row.name} has no output '${o.name}'`);
  }
  return { graph, inputs, outputs: row.outputs.map((o) => o.name) };
}

/** A seeded generator of uniform values in [0, 1) (mulberry32), seeded by a name: the same name, the same values. */
export function seededUniform(name: string): () => number {
  let seed = 0x9e3779b9;
  for (const ch of name) seed = Math.imul(seed ^ ch.charCodeAt(0), 0x85ebca6b) >>> 0;
  return (): number => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let z = seed;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seeded uniform values, the same for every run of a row. */
export function rowInputData(row: RowSpec): Float32Array[] {
  const next = seededUniform(row.name);
  return row.inputs.map((i) => {
    if (i.fill) return fillLocations(i.fill, i.shape, next);
    const out = new Float32Array(numel(i.shape));
    const [lo, hi] = i.range;
    for (let j = 0; j < out.length; j++) out[j] = lo + (hi - lo) * next();
    return out;
  });
}
