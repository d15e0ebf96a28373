// The fused elementwise kernel: one invocation per element of the group's shape computes every member as a
// WGSL `let` (in topological order) from the group's external inputs, read with broadcasting, and writes
// only the root. Scalar constants are inlined.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { FusionGroup } from '../compiler/codegen/fuse.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { binaryExpr, broadcastStrides, f32Lit, flatKernel, offsetCode, unaryExpr } from './elementwise.js';

export function fusedKernel(graph: Graph, group: FusionGroup, target: Target): Kernel {
  const root = graph.node(group.root);
  const members = new Set(group.members);
  const externals: number[] = [];
  const isConst = (n: Node) => n.op === 'full' && n.shape.reduce((a, b) => a * b, 1) === 1;
  for (const m of group.members) {
    for (const i of graph.node(m).inputs) {
      if (!members.has(i) && !externals.includes(i) && !isConst(graph.node(i))) externals.push(i);
    }
  }
  const extNodes = externals.map((e) => graph.node(e));
  const strides = extNodes.map((n) => broadcastStrides(n.shape, root.shape));
  const offsets = offsetCode(root.shape, strides, externals.map((_, k) => `o${k}`), 'i');
  const lines = [offsets, ...externals.map((_, k) => `    let x${k} = in_${k}[o${k}];`)];
  const lib = new Set<string>();
  // Values are named by their position in the group, not their node ids, so the same computation at another
  // place in the graph (an unrolled loop's next step) is the same WGSL and compiles to the same pipeline.
  const local = new Map(group.members.map((m, k) => [m, k]));
  const ref = (id: number): string => {
    const n = graph.node(id);
    if (members.has(id)) return `v${local.get(id)}`;
    if (isConst(n)) return f32Lit(attrNum(n.attrs, 'value'));
    return `x${externals.indexOf(id)}`;
  };
  const ops: string[] = [];
  for (const m of group.members) {
    const n = graph.node(m);
    const e = n.inputs.length === 1 ? unaryExpr(n.op, ref(n.inputs[0])) : binaryExpr(n.op, ref(n.inputs[0]), ref(n.inputs[1]));
    if (!e) throw new Error(`internal: ${n.op} cannot be fused`);
    e.lib.forEach((l) => lib.add(l));
    lines.push(`    let v${local.get(m)} = ${e.expr};`);
    ops.push(n.op);
  }
  lines.push(`    out_0[i] = v${local.get(group.root)};`);
  // The kernel reads the externals and writes the root: a node with those inputs stands for the group.
  const standIn: Node = { ...root, inputs: externals };
  const k = flatKernel(standIn, extNodes, target, `fused_${ops.join('_')}_f32`.slice(0, 96), lines.join('\n'), { lib: [...lib] });
  return { ...k, nodes: [...group.members] };
}
