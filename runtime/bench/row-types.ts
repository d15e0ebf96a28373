// What a bench row is: the types every row module shares (rows.ts: matmul and the row ops; rows-attention.ts:
// attention and MSDeformAttn), kept apart so that those modules do not import each other.

export type BenchSize = 'full' | 'quick' | 'tiny';
export type BenchOp = 'matmul' | 'layernorm' | 'softmax' | 'gelu' | 'attention' | 'msdeform_attn';
/** `forward+backward`: the op's VJP graph (forward output and every input's gradient), as training runs it. */
export type BenchPass = 'forward' | 'forward+backward';

/** |ours − peer| ≤ atol·scale + rtol·|peer|, scale = max|peer| (per output) when `scaled`, else 1. */
export interface Tolerance {
  readonly atol: number;
  readonly rtol: number;
  readonly scaled: boolean;
}

/**
 * MSDeformAttn sampling locations ([N, Lq, M, L, P, 2], x then y, in [0, 1] of each level): drawn so that no
 * pixel coordinate (loc·size − 0.5) lies within `margin` of a whole number. The gradient in the locations jumps
 * where a coordinate crosses a pixel, and there two f32 computations of the same point may round to different
 * sides: the peer comparison would test rounding, not the op. Pixel coordinates cover (-1, size): every place
 * where a sample reads at least one pixel, the border cells reading the zero padding in part.
 */
export interface LocationFill {
  readonly kind: 'sampling_locations';
  /** [H, W] of every level. */
  readonly levels: readonly (readonly [number, number])[];
  readonly points: number;
  /** Distance kept from whole pixel coordinates. */
  readonly margin: number;
}

export interface BenchInput {
  readonly name: string;
  readonly shape: readonly number[];
  /** Values are uniform in [lo, hi) from a seeded generator (unless `fill` says otherwise). */
  readonly range: readonly [number, number];
  readonly fill?: LocationFill;
}

export interface BenchOutput {
  /** The graph output's name: `out` (row ops), `output` and `d:<input>` (rows built by compileOp). */
  readonly name: string;
  readonly shape: readonly number[];
}

export interface RowSpec {
  /** Stable name, for `--rows` (a prefix selects several: `matmul_f32`, `gelu`, `attention_vjp`). */
  readonly name: string;
  readonly op: BenchOp;
  readonly pass: BenchPass;
  readonly dtype: 'f32' | 'f16';
  /** What the row stands for in the model. */
  readonly what: string;
  /** In the order the peer takes them; a forward+backward row's last input is the cotangent `d:output`. */
  readonly inputs: readonly BenchInput[];
  /** Compared in order with the peer's results. */
  readonly outputs: readonly BenchOutput[];
  /** Attributes of the one-op graph (row ops built directly). */
  readonly attrs: Readonly<Record<string, number>>;
  /** `--attr` specs for rows built by compileOp (`visft compile --op NAME [--vjp]`), e.g. `levels=[73x73]`. */
  readonly opAttrs?: readonly string[];
  /** `256x1408 @ 1408x4224`, `4096x256`. */
  readonly shapeText: string;
  /** Work for the rate column: FLOPs (GFLOP/s) or bytes read once and written once (GB/s). */
  readonly work: { readonly unit: 'GFLOP/s' | 'GB/s'; readonly amount: number };
  readonly tolerance: Tolerance;
  /** What the peer computes, in tfjs calls. */
  readonly peer: string;
}

export const dimsText = (s: readonly number[]): string => s.join('x');
export const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** Bytes of every input read once and every output written once, f32. */
export const ioBytes = (inputs: readonly { shape: readonly number[] }[], outputs: readonly { shape: readonly number[] }[]): number =>
  4 * [...inputs, ...outputs].reduce((a, t) => a + numel(t.shape), 0);
