// Building graphs: every node's type comes from the shape rules, so a graph built here is well typed.
import { Graph, type Attrs, type DType, type Shape } from './graph.js';
import type { IrOp } from './ops.js';
import { SHAPE_RULES } from './rules/shape.js';

export class Builder {
  constructor(readonly graph: Graph = new Graph()) {}

  /** Adds a node; throws ShapeError when the inputs do not fit the op. */
  add(op: IrOp, inputs: readonly number[], attrs: Attrs = {}): number {
    const ins = inputs.map((i) => this.graph.node(i));
    const t = SHAPE_RULES[op](ins, attrs);
    const id = this.graph.nodes.length;
    this.graph.nodes.push({ id, op, inputs: [...inputs], attrs, shape: [...t.shape], dtype: t.dtype });
    return id;
  }

  input(name: string, shape: Shape, dtype: DType = 'f32'): number {
    const id = this.add('input', [], { name, shape: [...shape], dtype });
    this.graph.inputs.push({ name, node: id });
    return id;
  }

  param(path: string, shape: Shape, dtype: DType = 'f32'): number {
    const id = this.add('param', [], { path, shape: [...shape], dtype });
    this.graph.params.push({ name: path, node: id });
    return id;
  }

  full(value: number, shape: Shape, dtype: DType = 'f32'): number {
    return this.add('full', [], { value, shape: [...shape], dtype });
  }

  output(name: string, node: number): void {
    this.graph.outputs.push({ name, node });
  }

  shape(id: number): Shape {
    return this.graph.node(id).shape;
  }

  // Small conveniences used by gradient rules and lowering.
  add2(a: number, b: number): number {
    return this.add('add', [a, b]);
  }
  mul(a: number, b: number): number {
    return this.add('mul', [a, b]);
  }
  scale(a: number, k: number): number {
    return this.add('mul', [a, this.full(k, [], this.graph.node(a).dtype)]);
  }
  transposeLast(a: number): number {
    const r = this.shape(a).length;
    const dims = [...Array(r).keys()];
    [dims[r - 2], dims[r - 1]] = [dims[r - 1], dims[r - 2]];
    return this.add('permute', [a], { dims });
  }

  /** Sums a broadcast result back to `shape` (the gradient of broadcasting). */
  unbroadcast(g: number, shape: Shape): number {
    const gs = this.shape(g);
    if (gs.length === shape.length && gs.every((s, i) => s === shape[i])) return g;
    const lead = gs.length - shape.length;
    const dims: number[] = [];
    for (let i = 0; i < gs.length; i++) if (i < lead || (shape[i - lead] === 1 && gs[i] !== 1)) dims.push(i);
    const summed = dims.length ? this.add('sum', [g], { dims, keepdim: true }) : g;
    return this.add('reshape', [summed], { shape: [...shape] });
  }
}
