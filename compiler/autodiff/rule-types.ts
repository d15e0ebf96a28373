// What a gradient rule sees: the node, the cotangent of its output, and a builder to add the VJP's nodes.
import type { Builder } from '../ir/builder.js';
import type { Node } from '../ir/graph.js';

export interface GradCtx {
  readonly b: Builder;
  readonly node: Node;
  /** The cotangent of the node's output (same shape). */
  readonly g: number;
  /**
   * Per input, whether its cotangent is used (it lies on a path to a requested value). Rules may skip the
   * others (return undefined) so frozen inputs cost no backward nodes.
   */
  readonly needs: readonly boolean[];
}

/**
 * Returns one cotangent per input, or undefined for inputs that take no gradient (integer indices,
 * shape-only inputs). Rules are written with the graph's own ops, so gradients are graphs too.
 */
export type GradRule = (c: GradCtx) => readonly (number | undefined)[];
