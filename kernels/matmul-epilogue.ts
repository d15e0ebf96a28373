// A matmul with a fused elementwise epilogue (compiler/codegen/fuse.ts plans it): each variant of
// kernels/matmul.ts computes the f32 accumulator of an output element as usual and, instead of storing it,
// evaluates the group's members on it (the same `let`s as the fused elementwise kernel, kernels/fused.ts),
// reading the group's other inputs with broadcasting at the output index (a bias [N] over the rows, a
// residual [..., M, N]; scalar constants inlined), and stores the root's value. The math after the
// accumulator is the unfused path's (bit for bit), so `linear` (matmul + bias) and `x + proj(y)` are one
// kernel each.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { FusionGroup } from '../compiler/codegen/fuse.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { broadcastStrides, offsetCode } from './elementwise.js';
import { groupExternals, KEPT_FN, memberCode } from './fused.js';
import { DIRECT_READS, matmulKernel, matmulVariant, type MatmulOutput, type MatmulReads, type MatmulVariant } from './matmul.js';

/**
 * The epilogue as the output of its producer's kernel (the matmul's, or the row op's, kernels/row.ts): the
 * group's root is written, its other externals are bound after the producer's inputs.
 */
export function epilogueOutput(graph: Graph, group: FusionGroup): MatmulOutput {
  const mmId = group.matmul ?? group.row;
  if (mmId === undefined) throw new Error(`internal: fusion group %${group.root} has no matmul or row op`);
  const mm = graph.node(mmId);
  const root = graph.node(group.root);
  const externals = groupExternals(graph, group, mmId);
  const extNodes = externals.map((e) => graph.node(e));
  const strides = extNodes.map((n) => broadcastStrides(n.shape, root.shape));
  // The product is `mm`, the externals `x<k>` (bindings after the producer's): names by position, so repeated
  // layers share WGSL.
  const code = memberCode(graph, group, (id) => (id === mmId ? 'mm' : `x${externals.indexOf(id)}`));
  const offsets = externals.length ? offsetCode(root.shape, strides, externals.map((_, k) => `eo${k}`), 'o', '').split('\n') : [];
  const node: Node = { ...mm, id: root.id, inputs: [...mm.inputs, ...externals], shape: root.shape, dtype: root.dtype };
  return {
    suffix: `+${code.ops.join('_')}`,
    node,
    extra: extNodes,
    lib: code.lib,
    helpers: KEPT_FN,
    nodes: [mmId, ...group.members],
    store: (value, index) => [
      // The accumulator as the unfused path stores it: the compiler cannot merge the epilogue's arithmetic
      // into the dot product's (lavapipe split the last fma and reassociated it with a following `+ 2`).
      `let mm = kept(${value});`,
      `let o = ${index};`,
      ...offsets,
      ...externals.map((_, k) => `let x${k} = in_${k + mm.inputs.length}[eo${k}];`),
      ...code.lines,
      `out_0[o] = ${code.value};`,
    ],
  };
}

/**
 * The kernel of a fusion group with a matmul: the matmul's variant (or a forced one) with the group as
 * epilogue, reading the operands `reads` marks transposed through their permutes.
 */
export function matmulEpilogueKernel(graph: Graph, group: FusionGroup, target: Target, variant?: MatmulVariant, reads: MatmulReads = DIRECT_READS): Kernel {
  if (group.matmul === undefined) throw new Error(`internal: fusion group %${group.root} has no matmul`);
  const mm = graph.node(group.matmul);
  const inputs = mm.inputs.map((i) => graph.node(i));
  return matmulKernel(mm, inputs, target, variant ?? matmulVariant(mm, inputs, target), epilogueOutput(graph, group), reads);
}
