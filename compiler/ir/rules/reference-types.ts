// The CPU reference's value type: float64 data in row-major order (integers stored exactly as floats).
import type { Attrs } from '../graph.js';
import type { TensorType } from './shape.js';

export interface RefTensor {
  readonly shape: readonly number[];
  readonly data: Float64Array;
}

/** Computes one op in float64. `out` is the output type the shape rule gave. */
export type RefRule = (ins: readonly RefTensor[], attrs: Attrs, out: TensorType) => RefTensor;
