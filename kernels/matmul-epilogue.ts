// A matmul with a fused elementwise epilogue (compiler/codegen/fuse.ts plans it): each variant of
// kernels/matmul.ts computes the f32 accumulator of an output element as usual and, instead of storing it,
// evaluates the group's members on it (the same `let`s as the fused elementwise kernel, kernels/fused.ts),
// reading the group's other inputs with broadcasting at the output index (a bias [N] over the rows, a
// residual [..., M, N]; scalar constants inlined), and stores the root's value. The math after the
// accumulator is the unfused path's (bit for bit), so `linear` (matmul + bias) and `x + proj(y)` are one
// kernel each.
import type { Kernel, KernelChain, Target } from '../compiler/codegen/types.js';
import { epilogueProducer, secondProductLeaves, type FusionGroup, type SecondProductPlan } from '../compiler/codegen/fuse.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { externalReads, groupExternals, KEPT_FN, memberCode } from './fused.js';
import { viewCode, type ViewPlan } from './view.js';
import { DIRECT_READS, graphMatmulVariant, matmulKernel, rowCoords, type MatmulOutput, type MatmulReads, type MatmulVariant, type OperandViews } from './matmul.js';
import { matmulKernels } from './matmul-split-across.js';

/**
 * The epilogue as the output of its producer's kernel (the matmul's, or the row op's, kernels/row.ts): the
 * group's root is written, its other externals are bound after the producer's inputs.
 */
export function epilogueOutput(graph: Graph, group: FusionGroup, layout: EpilogueLayout = {}): MatmulOutput {
  const mmId = epilogueProducer(group);
  if (mmId === undefined) throw new Error(`internal: fusion group %${group.root} has no matmul, row op or reduction`);
  const mm = graph.node(mmId);
  const root = graph.node(group.root);
  const out = layout.out ?? 'out_0';
  const first = layout.firstExtra ?? mm.inputs.length + (layout.before?.length ?? 0);
  const externals = groupExternals(graph, group, mmId).filter((e) => e !== layout.computed);
  const reads = externalReads(graph, root.shape, externals, layout.views, first);
  // The product is `mm`, the externals `x<k>` (bindings after the producer's): names by position, so repeated
  // layers share WGSL.
  const code = memberCode(graph, group, (id) => (id === mmId ? 'mm' : id === layout.computed ? 'mm2' : `x${externals.indexOf(id)}`));
  const before = layout.before ?? [];
  const node: Node = { ...mm, id: root.id, inputs: [...mm.inputs, ...before.map((n) => n.id), ...reads.bindings], shape: root.shape, dtype: root.dtype };
  return {
    suffix: `+${code.ops.join('_')}`,
    node,
    extra: [...before, ...reads.bindings.map((b) => graph.node(b))],
    lib: code.lib,
    helpers: [KEPT_FN, reads.helpers].filter(Boolean).join('\n\n'),
    nodes: [...reads.inlined, mmId, ...group.members],
    store: (value, index, second) => [
      // The accumulator as the unfused path stores it: the compiler cannot merge the epilogue's arithmetic
      // into the dot product's (lavapipe split the last fma and reassociated it with a following `+ 2`).
      `let mm = kept(${value});`,
      ...(layout.computed !== undefined ? [`let mm2 = kept(${secondValue(second)});`] : []),
      `let o = ${index};`,
      ...reads.lines('o'),
      ...code.lines,
      `${out}[o] = ${code.value};`,
    ],
  };
}

const secondValue = (second: string | undefined): string => {
  if (second === undefined) throw new Error('internal: an epilogue with a computed external was stored without a second product');
  return second;
};

/** Where an epilogue's bindings and output go when its kernel binds more than the producer's operands. */
export interface EpilogueLayout {
  /** The output binding (default `out_0`; a second output is `out_1`). */
  readonly out?: string;
  /** Bindings between the producer's inputs and the group's externals. */
  readonly before?: readonly Node[];
  /** The binding index of the first external (default: after the producer's inputs and `before`). */
  readonly firstExtra?: number;
  /** An external the kernel computes itself (a second product), named `mm2` from `store`'s `second`. */
  readonly computed?: number;
  /** Externals read in place through views (compiler/codegen/fuse.ts, planViewReads). */
  readonly views?: ReadonlyMap<number, ViewPlan>;
}

/**
 * The kernel of a fusion group with a matmul: the matmul's variant (or a forced one) with the group as
 * epilogue, reading the operands `reads` marks transposed through their permutes.
 */
export function matmulEpilogueKernel(graph: Graph, group: FusionGroup, target: Target, variant?: MatmulVariant, reads: MatmulReads = DIRECT_READS, second?: SecondProductPlan, views?: ReadonlyMap<number, ViewPlan>, operands?: OperandViews): Kernel {
  const { mm, inputs, out } = groupProduct(graph, group, second, views);
  return matmulKernel(mm, inputs, target, variant ?? graphMatmulVariant(graph, mm, target), out, reads, operands);
}

/**
 * The kernels of a matmul group as the schedule runs them: a chain with K split across workgroups where
 * matmulChain picks one (kernels/matmul-split-across.ts), else matmulEpilogueKernel's one kernel.
 */
export function matmulEpilogueKernels(graph: Graph, group: FusionGroup, target: Target, reads: MatmulReads = DIRECT_READS, second?: SecondProductPlan, views?: ReadonlyMap<number, ViewPlan>, operands?: OperandViews): KernelChain {
  const { mm, inputs, out } = groupProduct(graph, group, second, views);
  return matmulKernels(mm, inputs, target, graphMatmulVariant(graph, mm, target), out, reads, operands);
}

/** A matmul group's product, its operands and its output (with the second product's, when planned). */
function groupProduct(graph: Graph, group: FusionGroup, second?: SecondProductPlan, views?: ReadonlyMap<number, ViewPlan>): { mm: Node; inputs: Node[]; out: MatmulOutput } {
  if (group.matmul === undefined) throw new Error(`internal: fusion group %${group.root} has no matmul`);
  const mm = graph.node(group.matmul);
  const inputs = mm.inputs.map((i) => graph.node(i));
  const out = second ? secondProductOutput(graph, group, second, views) : epilogueOutput(graph, group, { views });
  return { mm, inputs, out };
}

/** A matmul's operand views (planOperandViews) as the kernel reads them: the leaf bound in the operand's slot. */
export function operandViews(graph: Graph, plans: readonly [ViewPlan | undefined, ViewPlan | undefined] | undefined): OperandViews | undefined {
  if (!plans) return undefined;
  const view = (plan: ViewPlan | undefined, slot: number) => {
    if (!plan) return undefined;
    const at = (binding: string) => viewCode(graph, plan, slot === 0 ? 'va' : 'vb', () => binding);
    const code = at(`in_${slot}`);
    return { leaf: graph.node(plan.leaves[0]), inlined: plan.inlined, helpers: code.helpers, call: (c: readonly string[]) => code.call(c), rebound: at };
  };
  return [view(plans[0], 0), view(plans[1], 1)];
}

/**
 * The epilogue of a group whose kernel also sums a second product (compiler/codegen/fuse.ts,
 * planSecondProducts): the views' leaves are bound after the matmul's operands, the product's value is the
 * second accumulator, and the views' reads are WGSL functions (`sa_*`, `sb_*`).
 */
function secondProductOutput(graph: Graph, group: FusionGroup, plan: SecondProductPlan, views?: ReadonlyMap<number, ViewPlan>): MatmulOutput {
  const leaves = secondProductLeaves(plan);
  const binding = (leaf: number) => `in_${2 + leaves.indexOf(leaf)}`;
  const a = viewCode(graph, plan.a, 'sa', binding);
  const b = viewCode(graph, plan.b, 'sb', binding);
  const mm = graph.node(plan.matmul);
  const [aShape, bShape] = mm.inputs.map((i) => graph.node(i).shape);
  const base = epilogueOutput(graph, group, { before: leaves.map((l) => graph.node(l)), computed: plan.external, views });
  const viewed = [...new Set([...plan.a.inlined, ...plan.b.inlined])].sort((x, y) => x - y);
  return {
    ...base,
    suffix: `+mm${base.suffix}`,
    helpers: [base.helpers, a.helpers, b.helpers].filter(Boolean).join('\n\n'),
    nodes: [...viewed, plan.matmul, ...(plan.external !== plan.matmul ? [plan.external] : []), ...base.nodes],
    second: {
      k: aShape[aShape.length - 1],
      a: (row, t) => a.call([...rowCoords(aShape.slice(0, -1), row), t]),
      b: (t, col) => b.call([...bShape.slice(0, -2).map(() => '0u'), t, col]),
    },
  };
}
