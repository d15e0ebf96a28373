// WGSL kernel generators for the reductions `sum` and `max` over any dims (keepdim only changes the shape).
//
// Two variants, chosen per shape:
// - `reduce_<op>_seq_f32`: one invocation per output element, looping over the reduced elements in row-major
//   order (the reference's order), nested loops with baked strides. For reduced sizes up to 256.
// - `reduce_<op>_tree_f32`: one workgroup per output element (dispatch spread over x, y, z): each invocation
//   folds the elements t, t + WG, t + 2·WG, … in order, then a fixed-order combine in workgroup memory (a
//   tree on hardware, a serial fold on software adapters: treeReduceCode). Deterministic; reduced sizes > 256.
// `max` propagates NaN as the reference (torch.amax): once NaN, always NaN.
import type { FusionGroup } from '../compiler/codegen/fuse.js';
import type { Kernel, KernelGen, Target } from '../compiler/codegen/types.js';
import { numel, type Graph, type Node } from '../compiler/ir/graph.js';
import { attrInts, normDim } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, dispatchGroups, f32Lit, flatKernel, groupIndexCode, kernelRule, makeKernel, mergeDims, offsetCode, stridesOf, u32Lit, unboundedLoop } from './elementwise.js';
import { groupExternals, KEPT_FN, memberCode } from './fused.js';

export type ReduceOp = 'sum' | 'max';

/** The combine step and identity of a reduction, as WGSL. */
export function combineCode(op: ReduceOp, acc: string, v: string): string {
  return op === 'sum' ? `${acc} + ${v}` : `select(${acc}, ${v}, ${v} > ${acc} || is_nan(${v}))`;
}
export function identityCode(op: ReduceOp): string {
  return op === 'sum' ? '0.0f' : f32Lit(-Infinity);
}

/** The largest power of two <= n. */
export function floorPow2(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

/** The smallest power of two >= n. */
export function ceilPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * WGSL statements that reduce `buf[0 .. wg)` (wg a power of two) into buf[0] with `combine`, in a fixed order;
 * the caller has written buf[lid] and must be in uniform control flow. Ends with a barrier. Hardware targets
 * get a tree (log2(wg) barriers); software adapters a serial fold by invocation 0 (two barriers: lavapipe
 * compiles barriers in loops slowly, and its invocations are SIMD lanes on a CPU core anyway).
 */
export function treeReduceCode(buf: string, wg: number, combine: (a: string, b: string) => string, target: Target, indent = '    ', lid = 'lid'): string {
  const lines = target.isFallbackAdapter
    ? [
        `workgroupBarrier();`,
        `if (${lid} == 0u) {`,
        `  var folded = ${buf}[0];`,
        `  for (var s = 1u; s < ${u32Lit(wg)}; s++) { folded = ${combine('folded', `${buf}[s]`)}; }`,
        `  ${buf}[0] = folded;`,
        `}`,
        `workgroupBarrier();`,
      ]
    : [
        `workgroupBarrier();`,
        `for (var s = ${u32Lit(wg / 2)}; s > 0u; s = s >> 1u) {`,
        `  if (${lid} < s) { ${buf}[${lid}] = ${combine(`${buf}[${lid}]`, `${buf}[${lid} + s]`)}; }`,
        `  workgroupBarrier();`,
        `}`,
      ];
  return lines.map((l) => indent + l).join('\n');
}

/** The workgroup size of a tree reduction: a power of two within the target's limits, at most `cap`. */
export function treeWorkgroup(target: Target, cap = 256): number {
  const L = target.limits;
  return floorPow2(Math.min(cap, L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX, Math.floor(L.maxComputeWorkgroupStorageSize / 4)));
}

/** Reductions with a reduced size above this use one workgroup per output element. */
export const TREE_THRESHOLD = 256;

interface ReducePlan {
  /** Kept dims (the output order) and their strides in x. */
  readonly keptShape: number[];
  readonly keptStrides: number[];
  /** Reduced dims, merged, and their strides in x. */
  readonly redShape: number[];
  readonly redStrides: number[];
  readonly outCount: number;
  readonly redCount: number;
}

function plan(x: Node, node: Node): ReducePlan {
  const rank = x.shape.length;
  const dims = new Set(attrInts(node.attrs, 'dims').map((d) => normDim(d, rank)));
  const st = stridesOf(x.shape);
  const kd = x.shape.map((_, d) => d).filter((d) => !dims.has(d));
  const rd = x.shape.map((_, d) => d).filter((d) => dims.has(d));
  const red = mergeDims(
    rd.map((d) => x.shape[d]),
    [rd.map((d) => st[d])],
  );
  return {
    keptShape: kd.map((d) => x.shape[d]),
    keptStrides: kd.map((d) => st[d]),
    redShape: red.shape,
    redStrides: red.strides[0],
    outCount: numel(node.shape),
    redCount: numel(rd.map((d) => x.shape[d])),
  };
}

/**
 * How a reduction reads the element at a flat offset of its input: from memory, or computed by a fused
 * elementwise prologue (compiler/codegen/fuse.ts planReducePrologues).
 */
export interface ReduceInput {
  /** The node the kernel stands for: its inputs are the bindings, its id the output. */
  readonly node: Node;
  readonly bindings: readonly Node[];
  readonly lib: readonly string[];
  readonly helpers?: string;
  /** The IR nodes the kernel computes (the reduction last). */
  readonly nodes: readonly number[];
  /** Appended to the kernel's name. */
  readonly suffix: string;
  /** WGSL statements declaring `v`, the element at offset `off`. */
  load(off: string): string;
}

const plainInput = (node: Node, inputs: readonly Node[]): ReduceInput => ({ node, bindings: inputs, lib: [], nodes: [node.id], suffix: '', load: (off) => `let v = in_0[${off}];` });

/**
 * The reduction `node` of the group's root (an elementwise tree only the reduction reads), computing the tree at
 * each element instead of reading it: the tree's lets (kernels/fused.ts), its externals read with broadcasting
 * at the element's offset. The root passes through `kept`, so it is not contracted into the sum.
 */
export function reducePrologueKernel(graph: Graph, node: Node, group: FusionGroup, target: Target): Kernel {
  const root = graph.node(group.root);
  const externals = groupExternals(graph, group);
  const extNodes = externals.map((e) => graph.node(e));
  const strides = extNodes.map((n) => broadcastStrides(n.shape, root.shape));
  const code = memberCode(graph, group, (id) => `x${externals.indexOf(id)}`);
  const input: ReduceInput = {
    node: { ...node, inputs: externals },
    bindings: extNodes,
    lib: code.lib,
    helpers: KEPT_FN,
    nodes: [...group.members, node.id],
    suffix: `+${code.ops.join('_')}`,
    // In a block of its own: the offset code's names (rem, c0, …) may be the kernel's too.
    load: (off) =>
      `var v = 0.0f; { ${[`let eo = ${off};`, offsetCode(root.shape, strides, externals.map((_, k) => `eo${k}`), 'eo', ''), ...externals.map((_, k) => `let x${k} = in_${k}[eo${k}];`), ...code.lines, `v = kept(${code.value});`]
        .filter(Boolean)
        .join(' ')} }`,
  };
  return reduceKernel(node.op as ReduceOp, node, graph.node(node.inputs[0]), target, input);
}

const reduceGen =
  (op: ReduceOp): KernelGen =>
  (node, inputs, target) =>
    reduceKernel(op, node, inputs[0], target, plainInput(node, inputs));

function reduceKernel(op: ReduceOp, node: Node, x: Node, target: Target, input: ReduceInput): Kernel {
    const p = plan(x, node);
    const lib = [...(op === 'max' ? ['is_nan'] : []), ...input.lib];
    const name = (variant: string) => `reduce_${op}_${variant}_f32${input.suffix}`.slice(0, 96);
    const base = offsetCode(p.keptShape, [p.keptStrides], ['base'], 'o');
    if (p.redCount <= TREE_THRESHOLD || p.redCount === 0) {
      // Nested loops over the reduced dims, outermost first: the reference's row-major order.
      const r = p.redShape.length;
      const open: string[] = [];
      const close: string[] = [];
      for (let d = 0; d < r; d++) {
        const pad = '    ' + '  '.repeat(d + 1);
        open.push(`${pad}for (var r${d} = 0u; r${d} < ${unboundedLoop(p.redShape[d], target)}; r${d}++) {`);
        close.unshift(`${pad}}`);
      }
      const inner = '    ' + '  '.repeat(r + 1);
      const off = ['base', ...p.redShape.map((_, d) => (p.redStrides[d] === 1 ? `r${d}` : `r${d} * ${u32Lit(p.redStrides[d])}`))].join(' + ');
      const body = [
        '    let o = i;',
        base,
        `    var acc = ${identityCode(op)};`,
        ...open,
        `${inner}${input.load(off)}`,
        `${inner}acc = ${combineCode(op, 'acc', 'v')};`,
        ...close,
        '    out_0[o] = acc;',
      ].join('\n');
      const k = flatKernel(input.node, input.bindings, target, name('seq'), body, { lib, helpers: input.helpers });
      return { ...k, nodes: [...input.nodes] };
    }
    const wg = treeWorkgroup(target);
    const dispatch = dispatchGroups(p.outCount, target);
      const redOff = offsetCode(p.redShape, [p.redStrides], ['roff'], 'r', '      ');
    const main = `${input.helpers ? `${input.helpers}\n\n` : ''}var<workgroup> red_buf: array<f32, ${wg}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('o', p.outCount, dispatch)}
${base}
    var acc = ${identityCode(op)};
    for (var r = lid; r < ${u32Lit(p.redCount)}; r += ${u32Lit(wg)}) {
${redOff}
      ${input.load('base + roff')}
      acc = ${combineCode(op, 'acc', 'v')};
    }
    red_buf[lid] = acc;
${treeReduceCode('red_buf', wg, (a, b) => combineCode(op, a, b), target)}
    if (lid == 0u) { out_0[o] = red_buf[0]; }
}`;
    const k = makeKernel(input.node, input.bindings, target, { name: name('tree'), body: main, workgroupSize: [wg, 1, 1], dispatch, lib });
    return { ...k, nodes: [...input.nodes] };
}

export const REDUCE_GPU_RULES = {
  sum: kernelRule(reduceGen('sum')),
  max: kernelRule(reduceGen('max')),
};
