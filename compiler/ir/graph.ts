// The one IR: a graph of typed nodes (op, dtype, static shape, attributes, inputs), in SSA form and
// topological order by construction (a node's inputs always have smaller ids). Leaves are `input`
// (named entry values), `param` (checkpoint paths) and `full` (constants).
import type { IrOp } from './ops.js';

export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'i64' | 'bool';
export type Shape = readonly number[];

export type AttrValue = number | boolean | string | readonly number[] | readonly (readonly number[])[];
export type Attrs = Readonly<Record<string, AttrValue>>;

export interface Node {
  readonly id: number;
  readonly op: IrOp;
  readonly inputs: readonly number[];
  readonly attrs: Attrs;
  readonly shape: Shape;
  readonly dtype: DType;
}

export interface Named {
  readonly name: string;
  readonly node: number;
}

export class Graph {
  readonly nodes: Node[] = [];
  /** Entry inputs by name (`image`, `d:features`). */
  readonly inputs: Named[] = [];
  /** Parameters by checkpoint path. */
  readonly params: Named[] = [];
  readonly outputs: Named[] = [];

  node(id: number): Node {
    const n = this.nodes[id];
    if (!n) throw new Error(`no node %${id}`);
    return n;
  }

  /** Ids of nodes that some output depends on, in order. */
  live(roots: readonly number[] = this.outputs.map((o) => o.node)): Set<number> {
    const keep = new Set<number>();
    const stack = [...roots];
    while (stack.length) {
      const id = stack.pop()!;
      if (keep.has(id)) continue;
      keep.add(id);
      stack.push(...this.node(id).inputs);
    }
    return keep;
  }
}

export const numel = (shape: Shape): number => shape.reduce((a, b) => a * b, 1);
export const isFloat = (d: DType): boolean => d === 'f32' || d === 'f16' || d === 'bf16';
