// The reference interpreter: runs a graph op by op with the float64 CPU rules. It is the `cpu` backend
// and the oracle that passes, fusion and GPU kernels are tested against.
import { Graph, numel } from './graph.js';
import { REFERENCE, type RefTensor } from './rules/reference.js';

export class RunError extends Error {}

/** Evaluates the graph's outputs from named inputs and parameters. Missing or misshapen values are errors. */
export function interpret(graph: Graph, inputs: ReadonlyMap<string, RefTensor>, params: ReadonlyMap<string, RefTensor> = new Map()): Map<string, RefTensor> {
  const values = new Map<number, RefTensor>();
  const live = graph.live();
  for (const node of graph.nodes) {
    if (!live.has(node.id)) continue;
    let v: RefTensor | undefined;
    if (node.op === 'input' || node.op === 'param') {
      const key = String(node.op === 'input' ? node.attrs.name : node.attrs.path);
      v = (node.op === 'input' ? inputs : params).get(key);
      if (!v) throw new RunError(`missing ${node.op} '${key}' (shape [${node.shape.join(', ')}])`);
      if (v.shape.length !== node.shape.length || v.shape.some((s, i) => s !== node.shape[i])) {
        throw new RunError(`${node.op} '${key}' has shape [${v.shape.join(', ')}], expected [${node.shape.join(', ')}]`);
      }
    } else {
      v = REFERENCE[node.op](node.inputs.map((i) => values.get(i)!), node.attrs, node);
    }
    if (v.data.length !== numel(node.shape)) throw new RunError(`internal: %${node.id} ${node.op} produced ${v.data.length} values for shape [${node.shape.join(', ')}]`);
    values.set(node.id, v);
  }
  return new Map(graph.outputs.map((o) => [o.name, values.get(o.node)!]));
}
