// A backbone's `precision: fp16` (or bf16): its frozen weights are held at that precision, as the original keeps
// EVA's weights in half precision while only LoRA and the heads train. Each frozen parameter becomes a parameter
// of the half dtype read through a cast to f32, so every consumer is unchanged; on a device with shader-f16 the
// parameter is stored in half the bytes (compiler/codegen/half.ts), and the step runners round the values they
// are given to the parameter's dtype, so both backends compute on the same numbers.
import { Builder } from '../ir/builder.js';
import type { DType, Graph } from '../ir/graph.js';

/** `graph` with the parameters named in `frozen` typed `dtype` and cast to f32 where they are read. */
export function lowPrecisionParams(graph: Graph, frozen: ReadonlySet<string>, dtype: Extract<DType, 'f16' | 'bf16'>): Graph {
  const b = new Builder();
  const value: number[] = []; // old id → the id its readers use
  const leaf: number[] = []; // old leaf id → the new leaf
  for (const n of graph.nodes) {
    if (n.op === 'param' && frozen.has(String(n.attrs.path))) {
      leaf[n.id] = b.add('param', [], { ...n.attrs, dtype });
      value[n.id] = b.add('cast', [leaf[n.id]], { dtype: 'f32' });
    } else {
      value[n.id] = b.add(n.op, n.inputs.map((i) => value[i]), n.attrs);
      leaf[n.id] = value[n.id];
    }
  }
  b.graph.inputs.push(...graph.inputs.map((e) => ({ name: e.name, node: leaf[e.node] })));
  b.graph.params.push(...graph.params.map((e) => ({ name: e.name, node: leaf[e.node] })));
  b.graph.outputs.push(...graph.outputs.map((e) => ({ name: e.name, node: value[e.node] })));
  return b.graph;
}
