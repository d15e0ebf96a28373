// WGSL kernel generators for the reductions `sum` and `max` over any dims (keepdim only changes the shape).
//
// Two variants, chosen per shape:
// - `reduce_<op>_seq_f32`: one invocation per output element, looping over the reduced elements in row-major
//   order (the reference's order), nested loops with baked strides. For reduced sizes up to 256.
// - `reduce_<op>_tree_f32`: one workgroup per output element (dispatch spread over x, y, z): each invocation
//   folds the elements t, t + WG, t + 2·WG, … in order (at least 4), then a fixed-order combine across them
//   (subgroup operations where the target has subgroups, else a tree in workgroup memory, a serial fold on
//   software adapters: laneReduceCode). Deterministic; reduced sizes > 256.
// `max` propagates NaN as the reference (torch.amax): once NaN, always NaN.
import type { FusionGroup } from '../compiler/codegen/fuse.js';
import type { Kernel, KernelGen, Target } from '../compiler/codegen/types.js';
import { numel, type Graph, type Node } from '../compiler/ir/graph.js';
import { attrInts, normDim } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, dispatchGroups, f32Lit, flatKernel, groupIndexCode, kernelRule, makeKernel, mergeDims, offsetCode, stridesOf, u32Lit, unboundedLoop } from './elementwise.js';
import { groupExternals, KEPT_FN, memberCode } from './fused.js';
import { epilogueOutput } from './matmul-epilogue.js';
import { storeBlock, type MatmulOutput } from './matmul.js';
import type { ViewPlan } from './view.js';

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

// ---------------------------------------------------------------------------------------------- lane reductions

/** Whether kernels for this target may use WGSL subgroup builtins (the device must have been opened with them). */
export const hasSubgroups = (target: Target): boolean => target.features.includes('subgroups');

/**
 * How the `lanes` invocations that share one row (or reduced slice) combine their register partials:
 * - `shuffle`: a subgroupShuffleXor butterfly among the lanes (lanes <= subgroupMinSize: a row never straddles
 *   a subgroup); no workgroup memory, no barrier. Several rows per workgroup.
 * - `subgroup`: subgroupAdd/subgroupMax over each subgroup, the subgroups' partials in workgroup memory (one
 *   barrier), spread over each subgroup's lanes and combined by the subgroup op again, so every lane holds the
 *   row's value. The subgroup size is read at run time (@builtin(subgroup_size));
 *   the buffer holds the worst case, lanes / subgroupMinSize partials per row. Several rows per workgroup only
 *   when lanes is a multiple of subgroupMaxSize (subgroups never straddle rows).
 * - `tree`: without subgroups, a fixed-order tree over the lanes in workgroup memory (a serial fold by lane 0 on
 *   software adapters, as treeReduceCode).
 * Like flash-common's split rows, subgroups are taken to be runs of consecutive local_invocation_index (what
 * Vulkan, Metal and D3D12 drivers do for 1-D workgroups). The order of every combine is fixed for a device and
 * pipeline: runs repeat bit for bit (no atomics).
 */
export type LaneMode = 'shuffle' | 'subgroup' | 'tree';

export interface LaneReduce {
  /** Invocations per row, a power of two; `lane` in [0, lanes) in the generated code. */
  readonly lanes: number;
  /** Rows per workgroup; `slot` in [0, rows) in the generated code (unused when 1). */
  readonly rows: number;
  readonly mode: LaneMode;
  /** f32 elements of each workgroup buffer a reduction uses (0: none). */
  readonly slots: number;
}

/** Whether `lanes`-wide rows may share a workgroup on this target (see LaneMode). */
export function lanesShareWorkgroup(lanes: number, target: Target): boolean {
  return !hasSubgroups(target) || lanes <= target.subgroupMinSize || lanes % target.subgroupMaxSize === 0;
}

export function laneReduce(lanes: number, rows: number, target: Target): LaneReduce {
  if (lanes !== floorPow2(lanes) || rows < 1) throw new Error(`internal: lane reduction over ${lanes} lanes, ${rows} rows`);
  if (rows > 1 && !lanesShareWorkgroup(lanes, target)) throw new Error(`internal: ${lanes}-lane rows cannot share a workgroup on target '${target.name}'`);
  if (hasSubgroups(target) && lanes <= target.subgroupMinSize) return { lanes, rows, mode: 'shuffle', slots: 0 };
  if (hasSubgroups(target)) return { lanes, rows, mode: 'subgroup', slots: rows * Math.ceil(lanes / target.subgroupMinSize) };
  return { lanes, rows, mode: 'tree', slots: rows * lanes };
}

/** The most invocations one row (or reduced slice) gets: a power of two within the target, its 2 buffers in workgroup memory. */
export function laneLimit(target: Target): number {
  const L = target.limits;
  return floorPow2(Math.min(256, L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX, Math.floor(L.maxComputeWorkgroupStorageSize / 8)));
}

/** Values one lane may keep in registers: a hardware register budget; a software adapter's are memory anyway. */
export function laneRegisters(target: Target): number {
  return target.isFallbackAdapter ? 256 : 16;
}

/**
 * The lanes for a row (or reduced slice) of `len` elements, a power of two:
 * - hardware: as many as give each lane at least 4 elements (up to laneLimit: 256), except that a row whose
 *   elements fit the registers of one subgroup's lanes (laneRegisters each) gets exactly subgroupMinSize
 *   lanes (a subgroup per row, `shuffle` mode: no barrier, no workgroup memory);
 * - software adapters: one subgroup's width at most (8 without subgroups), for their lanes are a CPU core's
 *   SIMD lanes, and every barrier and cross-lane step costs far more than a longer loop.
 */
export function laneCount(len: number, target: Target): number {
  const wide = Math.min(laneLimit(target), floorPow2(Math.max(1, Math.ceil(len / 4))));
  const subgroup = hasSubgroups(target) ? Math.min(laneLimit(target), floorPow2(target.subgroupMinSize)) : 8;
  if (target.isFallbackAdapter) return Math.min(wide, subgroup);
  if (hasSubgroups(target) && wide > subgroup && Math.ceil(len / subgroup) <= laneRegisters(target)) return subgroup;
  return wide;
}

/** Extra parameters of `fn main` the reduction reads (the subgroup builtins in `subgroup` mode). */
export function laneReduceParams(r: LaneReduce): string {
  return r.mode === 'subgroup' ? ', @builtin(subgroup_size) sg_size: u32, @builtin(subgroup_invocation_id) sg_lane: u32' : '';
}

/** Module-scope declaration of a reduction's workgroup buffer `buf` ('' when it needs none). */
export function laneReduceDecl(r: LaneReduce, buf: string): string {
  return r.slots ? `var<workgroup> ${buf}: array<f32, ${r.slots}>;` : '';
}

/** The kernel's WGSL with `enable subgroups;` when the reduction uses subgroup builtins. */
export function withLaneEnable(r: LaneReduce, wgsl: string): string {
  return r.mode === 'tree' ? wgsl : `enable subgroups;\n${wgsl}`;
}

/** WGSL: `x` combined over the subgroup. subgroupMax leaves NaN to the implementation: a NaN anywhere makes it NaN. */
function subgroupCombine(op: ReduceOp, x: string): string {
  return op === 'sum' ? `subgroupAdd(${x})` : `select(subgroupMax(${x}), bitcast<f32>(NAN_U), subgroupAny(is_nan(${x})))`;
}

/**
 * WGSL statements declaring `var <result>`: `acc` (each lane's partial, f32) combined over the lanes of the
 * row, the same value in every lane. Reads `lid`, `lane` (lid % lanes) and, with several rows, `slot`
 * (lid / lanes); writes the workgroup buffer `buf` (laneReduceDecl). Must be reached in uniform control flow by
 * every invocation of the workgroup. `max` propagates NaN as combineCode does.
 */
export function laneReduceCode(r: LaneReduce, op: ReduceOp, acc: string, result: string, buf: string, target: Target, indent = '    '): string {
  const combine = (a: string, b: string) => combineCode(op, a, b);
  const L = u32Lit(r.lanes);
  const lines: string[] = [];
  if (r.mode === 'shuffle') {
    // The shuffle in a let of its own: in combineCode's `||` it would be under non-uniform control flow.
    lines.push(`var ${result} = ${acc};`);
    for (let m = 1; m < r.lanes; m *= 2) lines.push(`{ let other = subgroupShuffleXor(${result}, ${u32Lit(m)}); ${result} = ${combine(result, 'other')}; }`);
  } else if (r.mode === 'subgroup') {
    const base = r.rows > 1 ? `slot * ${u32Lit(r.slots / r.rows)}` : '0u';
    const at = (i: string) => (r.rows > 1 ? `${buf}[${base} + ${i}]` : `${buf}[${i}]`);
    const parts = `(${L} + sg_size - 1u) / sg_size`;
    lines.push(
      `let ${result}_sg = ${subgroupCombine(op, acc)};`,
      `if (sg_lane == 0u) { ${at(`lane / sg_size`)} = ${result}_sg; }`,
      `workgroupBarrier();`,
      // The partials (lanes / subgroup size of them) are spread over each subgroup's lanes, then combined again.
      `var ${result}_p = ${identityCode(op)};`,
      `for (var i = sg_lane; i < ${parts}; i += sg_size) { ${result}_p = ${combine(`${result}_p`, at('i'))}; }`,
      `var ${result} = ${subgroupCombine(op, `${result}_p`)};`,
    );
  } else {
    const first = r.rows > 1 ? `${buf}[lid - lane]` : `${buf}[0]`;
    lines.push(`${buf}[lid] = ${acc};`, `workgroupBarrier();`);
    if (target.isFallbackAdapter) {
      lines.push(
        `if (lane == 0u) {`,
        `  var folded = ${buf}[lid];`,
        `  for (var s = 1u; s < ${L}; s++) { folded = ${combine('folded', `${buf}[lid + s]`)}; }`,
        `  ${buf}[lid] = folded;`,
        `}`,
        `workgroupBarrier();`,
      );
    } else if (r.lanes > 1) {
      lines.push(
        `for (var s = ${u32Lit(r.lanes / 2)}; s > 0u; s = s >> 1u) {`,
        `  if (lane < s) { ${buf}[lid] = ${combine(`${buf}[lid]`, `${buf}[lid + s]`)}; }`,
        `  workgroupBarrier();`,
        `}`,
      );
    }
    lines.push(`var ${result} = ${first};`);
  }
  return lines.map((l) => indent + l).join('\n');
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

/** `input` for a kernel that stores the epilogue `out`'s root: its bindings after the input's, its code and names. */
function withEpilogue(input: ReduceInput, reduction: Node, out: MatmulOutput): ReduceInput {
  return {
    node: { ...input.node, id: out.node.id, shape: out.node.shape, dtype: out.node.dtype, inputs: [...input.node.inputs, ...out.extra.map((n) => n.id)] },
    bindings: [...input.bindings, ...out.extra],
    lib: [...input.lib, ...out.lib],
    // A prologue's helpers are kept() alone, which the epilogue's begin with: once.
    helpers: !input.helpers || (input.helpers === KEPT_FN && out.helpers?.startsWith(KEPT_FN)) ? out.helpers : [input.helpers, out.helpers].filter(Boolean).join('\n\n'),
    nodes: [...input.nodes.filter((n) => n !== reduction.id), ...out.nodes],
    suffix: `${input.suffix}${out.suffix}`,
    load: input.load,
  };
}

/**
 * The reduction `node` of the group's root (an elementwise tree only the reduction reads), computing the tree at
 * each element instead of reading it: the tree's lets (kernels/fused.ts), its externals read with broadcasting
 * at the element's offset. The root passes through `kept`, so it is not contracted into the sum.
 */
function prologueInput(graph: Graph, node: Node, group: FusionGroup): ReduceInput {
  const root = graph.node(group.root);
  const externals = groupExternals(graph, group);
  const extNodes = externals.map((e) => graph.node(e));
  const strides = extNodes.map((n) => broadcastStrides(n.shape, root.shape));
  const code = memberCode(graph, group, (id) => `x${externals.indexOf(id)}`);
  return {
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
}

/** The reduction `node` computing its input's elementwise tree `group` (compiler/codegen/fuse.ts planReducePrologues). */
export function reducePrologueKernel(graph: Graph, node: Node, group: FusionGroup, target: Target): Kernel {
  return reduceKernel(node.op as ReduceOp, node, graph.node(node.inputs[0]), target, prologueInput(graph, node, group));
}

/**
 * The reduction of `group` (its epilogue producer) storing the group's root instead of its own value: the
 * elementwise ops after it (layernorm's backward scales its sums by 1/n) run on each result before the store.
 * With `prologue`, the reduction also computes its input's tree.
 */
export function reduceEpilogueKernel(graph: Graph, group: FusionGroup, prologue: FusionGroup | undefined, target: Target, views?: ReadonlyMap<number, ViewPlan>): Kernel {
  if (group.reduce === undefined) throw new Error(`internal: fusion group %${group.root} has no reduction`);
  const node = graph.node(group.reduce);
  const input = prologue ? prologueInput(graph, node, prologue) : plainInput(node, node.inputs.map((i) => graph.node(i)));
  const out = epilogueOutput(graph, group, { firstExtra: input.bindings.length, views });
  return reduceKernel(node.op as ReduceOp, node, graph.node(node.inputs[0]), target, input, out);
}

const reduceGen =
  (op: ReduceOp): KernelGen =>
  (node, inputs, target) =>
    reduceKernel(op, node, inputs[0], target, plainInput(node, inputs));

/**
 * The kernel of reduction `node` over `x`, reading its elements as `input` says; with `out` (an epilogue), it
 * stores `out`'s root from each result instead of the result.
 */
function reduceKernel(op: ReduceOp, node: Node, x: Node, target: Target, plain: ReduceInput, out?: MatmulOutput): Kernel {
    const input = out ? withEpilogue(plain, node, out) : plain;
    const p = plan(x, node);
    const lib = [...new Set([...(op === 'max' ? ['is_nan'] : []), ...input.lib])];
    const name = (variant: string) => `reduce_${op}_${variant}_f32${input.suffix}`.slice(0, 96);
    // The result `value` of output element `o`: stored, or the epilogue's root computed from it and stored.
    const store = (value: string, indent: string) => (out ? `let oi = o;\n${indent}${storeBlock(out.store(value, 'oi'), indent)}` : `out_0[o] = ${value};`);
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
        `    ${store('acc', '    ')}`,
      ].join('\n');
      const k = flatKernel(input.node, input.bindings, target, name('seq'), body, { lib, helpers: input.helpers });
      return { ...k, nodes: [...input.nodes] };
    }
    // Each lane folds every lanes-th element in order (laneCount), then the lanes combine (laneReduceCode).
    const red = laneReduce(laneCount(p.redCount, target), 1, target);
    const wg = red.lanes;
    const dispatch = dispatchGroups(p.outCount, target);
    const redOff = offsetCode(p.redShape, [p.redStrides], ['roff'], 'r', '      ');
    const main = `${input.helpers ? `${input.helpers}\n\n` : ''}${laneReduceDecl(red, 'red_buf')}

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${laneReduceParams(red)}) {
${groupIndexCode('o', p.outCount, dispatch)}
${base}
    let lane = lid;
    var acc = ${identityCode(op)};
    for (var r = lid; r < ${u32Lit(p.redCount)}; r += ${u32Lit(wg)}) {
${redOff}
      ${input.load('base + roff')}
      acc = ${combineCode(op, 'acc', 'v')};
    }
${laneReduceCode(red, op, 'acc', 'total', 'red_buf', target)}
    if (lid == 0u) {
      ${store('total', '      ')}
    }
}`;
    const k = makeKernel(input.node, input.bindings, target, { name: name('tree'), body: main, workgroupSize: [wg, 1, 1], dispatch, lib });
    return { ...k, wgsl: withLaneEnable(red, k.wgsl), nodes: [...input.nodes] };
}

export const REDUCE_GPU_RULES = {
  sum: kernelRule(reduceGen('sum')),
  max: kernelRule(reduceGen('max')),
};
