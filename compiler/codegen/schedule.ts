// From the IR to the kernel graph: each live node becomes a kernel from the GPU rule table (or shares its
// input's buffer, for reshape), elementwise chains are fused (compiler/codegen/fuse.ts), into the matmul
// that feeds them where it can (its GPU_RULES kernel with an epilogue, kernels/matmul-epilogue.ts), a permute of
// the last two dims that only a matmul reads is read transposed by the matmul kernel (no copy), and the result
// lists every value that needs storage, for the memory plan.
import { Graph, numel, type Node } from '../ir/graph.js';
import type { GpuRule, Kernel, KernelChain, Scratch, Target } from './types.js';
import { epilogueProducer, isInlineElementwise, planFusion, planOperandViews, planReducePrologues, planRowProducts, planSecondProducts, planSiblingOutputs, planTransposedReads, planViewReads, ROW_EPILOGUE_OPS, secondProductLeaves, type FusionGroup, type RowProductPlan, type SecondProductPlan } from './fuse.js';
import { groupExternals } from '../../kernels/fused.js';
import type { ViewPlan } from '../../kernels/view.js';
import { FlashTileError } from '../../kernels/flash-common.js';
import { flashBackwardKernel } from '../../kernels/flash-backward.js';
import { flashForwardKernel } from '../../kernels/flash-forward.js';
import { msdeformPointGradsKernel } from '../../kernels/msdeform.js';
import { fusedKernel } from '../../kernels/fused.js';
import { matmulEpilogueKernels, operandViews } from '../../kernels/matmul-epilogue.js';
import { graphMatmulVariant } from '../../kernels/matmul.js';
import { matmulKernels } from '../../kernels/matmul-split-across.js';
import { reduceEpilogueKernel, reducePrologueKernel } from '../../kernels/reduce.js';
import { rowEpilogueKernel, rowProductKernel } from '../../kernels/row.js';
import { halfStorageKernel } from '../../kernels/half-storage.js';
import { halfBindings, planHalfStorage } from './half.js';
import { planAttentionViews } from './attention-views.js';
import { attentionChain, attentionViewKernels, tensorCoreAttention } from '../../kernels/attention.js';
import { overBindingMessage, PlanError } from '../plan/memory.js';

export type ValueKind = 'input' | 'param' | 'output' | 'temp';

export interface ValueInfo {
  readonly id: number;
  readonly bytes: number;
  readonly kind: ValueKind;
  /** The input, parameter or output name; for a chain's scratch value, what it holds (`histogram for %5`). */
  readonly name?: string;
  readonly shape: readonly number[];
  /** Element type in storage: f16 where compiler/codegen/half.ts allows it. */
  readonly dtype: 'f32' | 'f16';
}

export interface Schedule {
  readonly kernels: Kernel[];
  /** Values with their own storage, in id order. */
  readonly values: ValueInfo[];
  /** value → the value whose storage it shares (reshape). */
  readonly aliases: Map<number, number>;
  /** Graph outputs by name → the value holding them. */
  readonly outputs: Map<string, number>;
}

/** Bytes of a value's storage: f32 (or f16) elements, at least one, so a binding is never empty. */
// An empty tensor has 0 bytes; the memory plan still binds at least 4 (a binding is never empty).
export const valueBytes = (shape: readonly number[], dtype: 'f32' | 'f16' = 'f32'): number => numel(shape) * (dtype === 'f16' ? 2 : 4);

export interface ScheduleOptions {
  /** Fuse elementwise chains and matmul epilogues (default true); off gives one kernel per node, for fused = unfused tests. */
  readonly fuse?: boolean;
  /** Fuse elementwise groups into the matmul that feeds them (default true, with `fuse`). */
  readonly epilogues?: boolean;
  /** Matmuls read permutes of the last two dims transposed instead of a copy (default true, with `fuse`). */
  readonly transposedReads?: boolean;
  /** One kernel writes an attention's lse, dk's dv, MSDeformAttn's two point gradients (default true, with `fuse`; planSiblingOutputs). */
  readonly siblings?: boolean;
  /** A matmul's kernel also sums a second product its epilogue adds (default true, with `epilogues`; planSecondProducts). */
  readonly secondProducts?: boolean;
  /** Fused kernels read movement ops among their inputs in place (default true, with `fuse`; planViewReads). */
  readonly views?: boolean;
  /** Attention kernels read q, k, v movement trees (and q's scaling) in place (default true, with `views`; compiler/codegen/attention-views.ts). */
  readonly attentionViews?: boolean;
  /** Store exact-f16 values as f16 where the target has shader-f16 (default true; compiler/codegen/half.ts). */
  readonly halfStorage?: boolean;
}

export function schedule(graph: Graph, target: Target, rules: { readonly [op: string]: GpuRule }, opts: ScheduleOptions = {}): Schedule {
  const live = graph.live();
  for (const i of graph.inputs) live.add(i.node);
  for (const p of graph.params) live.add(p.node);
  const kernels: Kernel[] = [];
  const aliases = new Map<number, number>();
  const root = (id: number): number => aliases.get(id) ?? id;
  const kinds = new Map<number, ValueKind>();
  const names = new Map<number, string>();
  for (const i of graph.inputs) (kinds.set(i.node, 'input'), names.set(i.node, i.name));
  for (const p of graph.params) (kinds.set(p.node, 'param'), names.set(p.node, p.name));

  const outputNodes = new Set(graph.outputs.map((o) => o.node));
  const maxInputs = target.limits.maxStorageBuffersPerShaderStage - 1;
  const planned = opts.fuse === false ? [] : planFusion(graph, live, outputNodes, maxInputs, { epilogues: opts.epilogues });
  // Elementwise trees that only a reduction reads run inside the reduction's kernel.
  const prologues = opts.fuse === false ? new Map<number, FusionGroup>() : planReducePrologues(graph, live, outputNodes, planned, maxInputs);
  const inPrologue = new Set([...prologues.values()].map((g) => g.root));
  const groups = [...planned.filter((g) => !inPrologue.has(g.root)), ...prologues.values()];
  const groupOf = new Map(planned.filter((g) => !inPrologue.has(g.root)).map((g) => [g.root, g] as const));
  const absorbed = new Set(groups.flatMap((g) => [...g.members.filter((m) => m !== g.root), ...[epilogueProducer(g)].filter((p): p is number => p !== undefined)]));
  for (const root of inPrologue) absorbed.add(root);
  const transposed = opts.fuse === false || opts.transposedReads === false ? new Map() : planTransposedReads(graph, live, outputNodes);
  for (const [mm, reads] of transposed) graph.node(mm).inputs.forEach((p, i) => reads[i] && absorbed.add(p));
  // Values a sibling's kernel computes in the same sweep (attention's lse, dk's dv): no kernel of their own.
  const siblingOf = opts.fuse === false || opts.siblings === false ? new Map<number, number>() : planSiblingOutputs(graph, live);
  for (const l of siblingOf.values()) absorbed.add(l);
  // A second product in a matmul group's epilogue (LoRA's u·Bblkᵀ) is summed by the group's kernel, its
  // operands read in place through their pads, concats and transposes.
  const seconds = opts.fuse === false || opts.epilogues === false || opts.secondProducts === false ? new Map<number, SecondProductPlan>() : planSecondProducts(graph, live, outputNodes, [...groupOf.values()], maxInputs, target);
  for (const p of seconds.values()) for (const id of [p.external, p.matmul]) absorbed.add(id);
  // A matmul of the rows a row kernel writes (LoRA's x·Aᵀ after a layernorm) runs in the row kernel.
  const rowKernels = new Map<number, { row: number; group?: FusionGroup }>();
  for (const g of groupOf.values()) if (g.row !== undefined) rowKernels.set(g.root, { row: g.row, group: g });
  for (const n of graph.nodes) if (ROW_EPILOGUE_OPS.has(n.op) && live.has(n.id) && !absorbed.has(n.id) && !groupOf.has(n.id)) rowKernels.set(n.id, { row: n.id });
  const taken = new Set([...seconds.values()].map((p) => p.matmul));
  const leaf = (id: number) => kinds.get(id) === 'input' || kinds.get(id) === 'param';
  const rowProducts = opts.fuse === false || opts.epilogues === false || opts.secondProducts === false ? new Map<number, RowProductPlan>() : planRowProducts(graph, live, outputNodes, rowKernels, [...groupOf.values()], taken, (id, before) => leaf(id) || (id < before && !absorbed.has(id)), maxInputs, target);
  for (const p of rowProducts.values()) for (const id of [p.matmul, ...(p.group?.members ?? [])]) absorbed.add(id);
  // Attention kernels read q, k, v (and q's scaling) in place (compiler/codegen/attention-views.ts).
  const attn = planAttentionViews(graph, live, outputNodes, absorbed, siblingOf, groups, target, opts.fuse !== false && opts.views !== false && opts.attentionViews !== false);
  for (const id of attn.computed) absorbed.add(id);
  // Fused kernels read movement ops among their inputs in place (views), and so does a lone elementwise node
  // that reads one (it becomes a group of one).
  const members = new Set([...groups.flatMap((g) => g.members), ...inPrologue]);
  const singles = graph.nodes.filter((n) => live.has(n.id) && !absorbed.has(n.id) && !members.has(n.id) && isInlineElementwise(n)).map((n) => ({ root: n.id, members: [n.id] }));
  const rowProductBindings = (p: RowProductPlan) => p.b.leaves.length + (p.group ? groupExternals(graph, p.group, p.matmul).length : 0) + 1;
  const fixedBindings = (g: FusionGroup) =>
    g.matmul !== undefined
      ? 2 + (seconds.has(g.root) ? secondProductLeaves(seconds.get(g.root)!).length : 0)
      : g.row !== undefined
        ? graph.node(g.row).inputs.length + (rowProducts.has(g.root) ? rowProductBindings(rowProducts.get(g.root)!) : 0)
        : g.reduce !== undefined
          ? (prologues.has(g.reduce) ? groupExternals(graph, prologues.get(g.reduce)!).length : 1)
          : 0;
  const viewReads = opts.fuse === false || opts.views === false ? new Map<number, Map<number, ViewPlan>>() : planViewReads(graph, live, outputNodes, [...groupOf.values(), ...singles].filter((g) => !absorbed.has(g.root)), fixedBindings, new Set([...seconds.values()].map((p) => p.external)), maxInputs);
  for (const g of singles) if (viewReads.has(g.root)) groupOf.set(g.root, g);
  // Matmul operands through views with one leaf (the permute merging attention heads).
  const operandPlans = opts.fuse === false || opts.views === false ? new Map<number, [ViewPlan | undefined, ViewPlan | undefined]>() : planOperandViews(graph, live, outputNodes, transposed, new Set([...taken, ...[...rowProducts.values()].map((p) => p.matmul)]));
  // Views read in place: the view ops they inline have no kernel.
  const inPlace = [
    ...[...seconds.values()].map((p) => ({ readers: [p.matmul], plans: [p.a, p.b] })),
    ...[...rowProducts.values()].map((p) => ({ readers: [p.matmul], plans: [p.b] })),
    ...[...viewReads].map(([root, m]) => ({ readers: groupOf.get(root)!.members, plans: [...m.values()] })),
    ...[...operandPlans].map(([mm, v]) => ({ readers: [mm], plans: v.filter((p): p is ViewPlan => p !== undefined) })),
    ...attn.inPlace,
  ];
  const viewed = new Map<number, Set<number>>(); // reader → the constants it reads in place
  for (const { readers: rs, plans } of inPlace) {
    const inlined = plans.flatMap((v) => v.inlined);
    for (const id of inlined) if (graph.node(id).op !== 'full') absorbed.add(id);
    for (const id of inlined) for (const r of [...rs, ...inlined]) if (graph.node(r).inputs.includes(id)) viewed.set(r, (viewed.get(r) ?? new Set()).add(id));
  }
  // Constants that every reader inlines (scalars in fused kernels, any constant in a view): no fill kernel.
  const fused = new Set([...groups, ...groupOf.values()].flatMap((g) => g.members));
  const readers = new Map<number, number[]>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const i of n.inputs) readers.set(i, [...(readers.get(i) ?? []), n.id]);
  for (const n of graph.nodes) {
    if (n.op !== 'full' || !live.has(n.id) || outputNodes.has(n.id)) continue;
    const scalar = numel(n.shape) === 1;
    if ((readers.get(n.id) ?? []).every((r) => (scalar && fused.has(r)) || viewed.get(r)?.has(n.id))) absorbed.add(n.id);
  }

  // An f16 parameter or input read as f32 (a frozen fp16 backbone's weights): with f16 storage the kernels
  // widen what they load, so the cast needs no kernel; its readers bind the leaf (f32 storage holds the same values).
  const halfTarget = opts.halfStorage !== false && target.features.includes('shader-f16');
  const halfLeafCast = (id: number): boolean => {
    const n = graph.node(id);
    const src = n.op === 'cast' && n.dtype === 'f32' ? graph.node(n.inputs[0]) : undefined;
    return halfTarget && src !== undefined && src.dtype === 'f16' && (src.op === 'param' || src.op === 'input') && !outputNodes.has(id);
  };
  // Values the graph does not have (output copies, chains' scratch) get ids past its nodes.
  const synthetic = new Map<number, readonly number[]>(); // id → shape
  const newValue = (shape: readonly number[], name?: string): number => {
    const id = graph.nodes.length + synthetic.size;
    synthetic.set(id, shape);
    if (name) names.set(id, name);
    return id;
  };
  // Bind the storage owners: an aliased input is read through the buffer it shares.
  const push = (k: Kernel) => kernels.push(rebind(k, (b) => ({ ...b, value: root(b.value) })));
  // A chain's scratch values get ids of their own, named for the node they serve.
  const pushChain = (node: Node, chain: KernelChain) => chainKernels(chain, (sc) => newValue([sc.words], `${sc.name} for %${node.id}`)).forEach(push);
  for (const node of graph.nodes) {
    if (!live.has(node.id) || absorbed.has(node.id)) continue;
    if (!halfLeafCast(node.id) && rules[node.op]?.kind !== 'alias') checkBindable(node, names.get(node.id), target);
    const group = groupOf.get(node.id);
    const prologue = prologues.get(node.id);
    const rowProduct = rowProducts.get(node.id);
    const views = viewReads.get(node.id);
    if (rowProduct) push(rowProductKernel(graph, rowKernels.get(node.id)!.row, group, rowProduct, target, views));
    else if (group?.matmul !== undefined) {
      const mm = [transposed.get(group.matmul), seconds.get(group.root), views, operandViews(graph, operandPlans.get(group.matmul))] as const;
      // One kernel, or a chain through scratch partials with K split across workgroups (kernels/matmul-split-across.ts).
      pushChain(graph.node(group.root), matmulEpilogueKernels(graph, group, target, ...mm));
    } else if (group)
      push(
        group.row !== undefined
          ? rowEpilogueKernel(graph, group, target, views)
          : group.reduce !== undefined
            ? reduceEpilogueKernel(graph, group, prologues.get(group.reduce), target, views)
            : fusedKernel(graph, group, target, views),
      );
    else if (prologue) push(reducePrologueKernel(graph, node, prologue, target));
    else if (attn.plans.has(node.id)) {
      const sibling = siblingOf.has(node.id) ? graph.node(siblingOf.get(node.id)!) : undefined;
      // f32 attention split onto the tensor cores, the splits reading the views (Target.tuning.f32Attention*TensorCores),
      // or its swept side split across workgroups (flashSweepSplit).
      const split = attentionChain(graph, node, sibling, target, attn.plans.get(node.id));
      if (split) pushChain(node, split);
      else attentionViewKernels(graph, node, sibling, attn.plans, target).forEach(push);
    }
    else if (halfLeafCast(node.id)) aliases.set(node.id, root(node.inputs[0]));
    else {
      const rule = rules[node.op];
      if (!rule) throw new Error(`no GPU rule for op '${node.op}'`);
      if (rule.kind === 'alias') aliases.set(node.id, root(node.inputs[0]));
      if (rule.kind !== 'kernel' && rule.kind !== 'chain') continue;
      const inputs = node.inputs.map((i) => graph.node(i));
      const reads = transposed.get(node.id);
      const sibling = siblingOf.get(node.id);
      const opViews = operandViews(graph, operandPlans.get(node.id));
      // A matmul's variant depends on its operands in the graph (exact f16 values: subgroup matrices).
      const variant = node.op === 'matmul' ? graphMatmulVariant(graph, node, target) : undefined;
      const siblingNode = sibling === undefined ? undefined : graph.node(sibling);
      // f32 attention split onto the tensor cores (Target.tuning.f32AttentionTensorCores, f32AttentionGradTensorCores),
      // or its swept side split across workgroups (flashSweepSplit).
      const split = attentionChain(graph, node, siblingNode, target);
      if (variant) pushChain(node, matmulKernels(node, inputs, target, variant, undefined, reads, opViews));
      else if (split) pushChain(node, split);
      else if (siblingNode !== undefined) withSibling(node, siblingNode, graph, target, rules).forEach(push);
      else if (rule.kind === 'chain') pushChain(node, rule.gen(node, inputs, target));
      else push(tensorCoreAttention(graph, node, target) ?? rule.gen(node, inputs, target));
    }
  }

  // Outputs must own their storage: an output that is an input, a parameter or an alias gets a copy.
  const outputs = new Map<string, number>();
  for (const o of graph.outputs) {
    let v = root(o.node);
    const k = kinds.get(v);
    if (k === 'input' || k === 'param' || [...outputs.values()].includes(v)) {
      const id = newValue(graph.node(o.node).shape);
      kernels.push(copyKernel(v, id, numel(graph.node(o.node).shape), target));
      v = id;
      kinds.set(v, 'temp');
    }
    outputs.set(o.name, v);
    kinds.set(v, 'output');
    names.set(v, o.name);
  }

  const ids = new Set<number>();
  for (const k of kernels) for (const b of k.bindings) ids.add(b.value);
  for (const i of graph.inputs) ids.add(i.node);
  for (const p of graph.params) ids.add(p.node);
  const shapeOf = (id: number): readonly number[] => synthetic.get(id) ?? graph.node(id).shape;
  const stored = [...ids].sort((a, b) => a - b).map((id) => ({ id, kind: kinds.get(id) ?? 'temp' }));
  const half = opts.halfStorage === false ? new Set<number>() : planHalfStorage(graph, stored, kernels, target);
  const chosen = resolveHalfOnly(kernels, half);
  const marks = halfBindings(chosen, half);
  const values = stored.map(({ id, kind }) => {
    const dtype = half.has(id) ? ('f16' as const) : ('f32' as const);
    return { id, bytes: valueBytes(shapeOf(id), dtype), kind, name: names.get(id), shape: [...shapeOf(id)], dtype };
  });
  return { kernels: chosen.map((k, i) => halfStorageKernel(k, marks[i])), values, aliases, outputs };
}

/**
 * A value that will have storage but that no binding can hold fails here, as the memory plan would fail it, before
 * its kernel is generated (whose index arithmetic would overflow u32 first). Its storage may yet be chosen f16, so
 * an f16 value counts two bytes an element.
 */
function checkBindable(node: Node, name: string | undefined, target: Target): void {
  const bytes = valueBytes(node.shape, node.dtype === 'f16' ? 'f16' : 'f32');
  const limit = target.limits.maxStorageBufferBindingSize;
  if (bytes > limit) throw new PlanError(overBindingMessage({ id: node.id, name, shape: node.shape, dtype: node.dtype }, bytes, limit));
}

/**
 * The kernel of a node that also writes its sibling's value (planSiblingOutputs); when flash tiles do not fit
 * (huge head dims), each node's own kernel.
 */
function withSibling(node: Node, sibling: Node, graph: Graph, target: Target, rules: { readonly [op: string]: GpuRule }): Kernel[] {
  const inputsOf = (n: Node) => n.inputs.map((i) => graph.node(i));
  const gen = (n: Node) => {
    const rule = rules[n.op];
    if (rule?.kind !== 'kernel') throw new Error(`internal: no kernel rule for ${n.op}`);
    return rule.gen(n, inputsOf(n), target);
  };
  try {
    const tensorCores = tensorCoreAttention(graph, node, target, sibling);
    if (tensorCores) return [tensorCores];
    if (node.op === 'msdeform_attn_grad') return [msdeformPointGradsKernel(node, inputsOf(node), sibling, target)];
    return [node.op === 'attention' ? flashForwardKernel(node, inputsOf(node), target, {}, sibling) : flashBackwardKernel(node, inputsOf(node), target, {}, sibling)];
  } catch (e) {
    if (e instanceof FlashTileError) return [gen(node), gen(sibling)];
    throw e;
  }
}

/**
 * A chain's kernels with each scratch placeholder bound to the value `place` gives it (a fresh id in the schedule,
 * a buffer in a test). A binding to a placeholder the chain does not declare is an internal error.
 */
export function chainKernels(chain: KernelChain, place: (scratch: Scratch) => number): Kernel[] {
  const ids = new Map(chain.scratch.map((sc) => [sc.ref, place(sc)] as const));
  return chain.kernels.map((k) =>
    rebind(k, (b) => {
      if (b.value >= 0) return b;
      const id = ids.get(b.value);
      if (id === undefined) throw new Error(`internal: kernel ${k.name} binds scratch ${b.value}, which its chain does not declare`);
      return { ...b, value: id };
    }),
  );
}

type Binding = Kernel['bindings'][number];

/** `k` with each binding mapped, its f16-only fallback's too. */
function rebind(k: Kernel, f: (b: Binding) => Binding): Kernel {
  const bindings = k.bindings.map(f);
  return k.halfOnly ? { ...k, bindings, halfOnly: { ...k.halfOnly, fallback: rebind(k.halfOnly.fallback, f) } } : { ...k, bindings };
}

/**
 * Each kernel that reads some bindings only as f16 (Kernel.halfOnly) where they all are, else its fallback; none
 * keeps the mark. The fallback binds the same values and can store them as f16 too, so `half` stands.
 */
function resolveHalfOnly(kernels: readonly Kernel[], half: ReadonlySet<number>): Kernel[] {
  return kernels.map((k) => {
    if (!k.halfOnly) return k;
    const { halfOnly, ...rest } = k;
    return halfOnly.bindings.every((i) => half.has(k.bindings[i].value)) ? rest : halfOnly.fallback;
  });
}

/** A plain copy, for outputs that would otherwise share storage with an input, parameter or another output. */
function copyKernel(from: number, to: number, elements: number, target: Target): Kernel {
  const wg = 64;
  const groups = Math.ceil(Math.max(1, elements) / wg);
  const x = Math.min(groups, target.limits.maxComputeWorkgroupsPerDimension);
  const y = Math.ceil(groups / x);
  return {
    name: 'copy_f32',
    wgsl: `@group(0) @binding(0) var<storage, read> in_0: array<f32>;
@group(0) @binding(1) var<storage, read_write> out_0: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${x * wg}u;
  if (i < ${elements}u) { out_0[i] = in_0[i]; }
}
`,
    workgroupSize: [wg, 1, 1],
    dispatch: [x, y, 1],
    bindings: [
      { value: from, access: 'read' },
      { value: to, access: 'read_write' },
    ],
    nodes: [],
  };
}
