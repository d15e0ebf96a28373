// WGSL kernel generators for the row ops: softmax and log_softmax along any dim, layernorm over the last dim.
//
// A row is the `len` elements along the dim at one (outer, inner) position: element j of row r lives at
// (r / inner)·len·inner + r % inner + j·inner. Statistics are f32 and numerically stable (the row max is
// subtracted before exp; layernorm's variance is the two-pass biased one).
// - `<op>_row_wg_f32`: `lanes` invocations per row (reduce.ts, laneCount: >= 4 elements each on hardware, a
//   subgroup per row where one holds it), one or a few rows per workgroup (dispatch spread over x, y, z): each
//   lane folds j = lane, lane + lanes, … in order in registers (the row read once where it fits laneRegisters),
//   then the lanes combine by subgroup operations where the target has subgroups, else by a fixed-order tree in
//   workgroup memory (reduce.ts, laneReduceCode). Rows longer than 16.
// - `<op>_row_thread_f32`: one invocation per row, sequential loops. For short rows.
// - `<op>_rows_wg_f32+…+mm…`: several rows per workgroup, then a matmul of the stored rows (a row product:
//   compiler/codegen/fuse.ts, planRowProducts), written as a second output.
import type { FusionGroup, RowProductPlan } from '../compiler/codegen/fuse.js';
import type { Kernel, KernelGen, Target } from '../compiler/codegen/types.js';
import { numel, type Graph, type Node } from '../compiler/ir/graph.js';
import { attrNum, normDim } from '../compiler/ir/rules/shape.js';
import { dispatchGroups, f32Lit, flatKernel, groupIndexCode, kernelRule, makeKernel, u32Lit, unboundedLoop, withOutput } from './elementwise.js';
import { viewCode, type ViewPlan } from './view.js';
import { epilogueOutput } from './matmul-epilogue.js';
import { plainOutput, storeBlock, type MatmulOutput } from './matmul.js';
import { combineCode, laneReduce, laneReduceCode, laneReduceDecl, laneReduceParams, laneCount, laneRegisters, lanesShareWorkgroup, withLaneEnable, type LaneReduce, type ReduceOp } from './reduce.js';

type RowOp = 'softmax' | 'log_softmax' | 'layernorm';

/** Rows up to this long use one invocation per row. */
export const ROW_THREAD_MAX = 16;

interface RowPlan {
  readonly rows: number;
  readonly len: number;
  readonly inner: number;
}

function rowPlan(node: Node): RowPlan {
  const rank = node.shape.length;
  const d = node.op === 'layernorm' ? rank - 1 : normDim(attrNum(node.attrs, 'dim', -1), rank);
  const len = node.shape[d];
  const inner = numel(node.shape.slice(d + 1));
  return { rows: numel(node.shape.slice(0, d)) * inner, len, inner };
}

/** WGSL: `let base: u32` of row `r`, and the stride between its elements. */
function rowBase(p: RowPlan, r: string, indent: string): { code: string; stride: string } {
  if (p.inner === 1) return { code: `${indent}let base = ${r} * ${u32Lit(p.len)};`, stride: '' };
  return {
    code: `${indent}let base = (${r} / ${u32Lit(p.inner)}) * ${u32Lit(p.len * p.inner)} + ${r} % ${u32Lit(p.inner)};`,
    stride: ` * ${u32Lit(p.inner)}`,
  };
}

const maxCombine = (a: string, b: string) => combineCode('max', a, b);

/** One invocation per row. */
function threadKernel(op: RowOp, node: Node, inputs: readonly Node[], target: Target, p: RowPlan, out: MatmulOutput) {
  const { code, stride } = rowBase(p, 'i', '    ');
  const at = (j: string) => `base + ${j}${stride}`;
  const L = u32Lit(p.len);
  let body: string;
  if (op === 'layernorm') {
    const eps = f32Lit(attrNum(node.attrs, 'eps'));
    const n = f32Lit(p.len);
    body = `${code}
    var s = 0.0f;
    for (var j = 0u; j < ${L}; j++) { s += in_0[${at('j')}]; }
    let mean = s / ${n};
    var q = 0.0f;
    for (var j = 0u; j < ${L}; j++) { let d = in_0[${at('j')}] - mean; q += d * d; }
    let rs = 1.0f / sqrt(q / ${n} + ${eps});
    for (var j = 0u; j < ${L}; j++) ${storeBlock(out.store(`(in_0[${at('j')}] - mean) * rs`, at('j')), '    ')}`;
  } else {
    const write = op === 'softmax' ? `exp_f32(in_0[${at('j')}] - m) / s` : `in_0[${at('j')}] - lse`;
    body = `${code}
    var m = ${f32Lit(-Infinity)};
    for (var j = 0u; j < ${L}; j++) { let v = in_0[${at('j')}]; m = ${maxCombine('m', 'v')}; }
    var s = 0.0f;
    for (var j = 0u; j < ${L}; j++) { s += exp_f32(in_0[${at('j')}] - m); }
${op === 'log_softmax' ? '    let lse = m + log_f32(s);\n' : ''}    for (var j = 0u; j < ${L}; j++) ${storeBlock(out.store(write, at('j')), '    ')}`;
  }
  const k = flatKernel(out.node, [...inputs, ...out.extra], target, `${op}_row_thread_f32${out.suffix}`.slice(0, 96), body, { lib: [...libOf(op), ...out.lib], helpers: out.helpers, n: p.rows });
  return { ...k, nodes: [...out.nodes] };
}

const libOf = (op: RowOp): string[] => (op === 'layernorm' ? [] : op === 'softmax' ? ['is_nan', 'exp_f32'] : ['is_nan', 'exp_f32', 'log_f32']);

/** Invocations a workgroup of short rows aims for (several rows side by side). */
const GROUP_INVOCATIONS = 64;

/**
 * How a workgroup row kernel splits its rows: `lanes` invocations per row, each owning elements j = lane +
 * k·lanes (coalesced loads) for k < `per`, `rows` rows per workgroup, and the reduction across the lanes. The
 * lanes (hence every sum's order) depend only on the row length and the target, so the row product kernel, which
 * runs one row at a time, rounds exactly as the row kernel.
 */
interface RowLayout {
  readonly lanes: number;
  readonly rows: number;
  readonly per: number;
  readonly reduce: LaneReduce;
}

function rowLayout(p: RowPlan, target: Target, oneRow = false): RowLayout {
  const lanes = laneCount(p.len, target);
  const rows = oneRow || !lanesShareWorkgroup(lanes, target) ? 1 : Math.max(1, Math.min(Math.floor(GROUP_INVOCATIONS / lanes), p.rows));
  return { lanes, rows, per: Math.ceil(p.len / lanes), reduce: laneReduce(lanes, rows, target) };
}

/** Workgroup memory (bytes) of a row layout's two reduction buffers. */
const scratchBytes = (l: RowLayout): number => 2 * 4 * l.reduce.slots;

/**
 * WGSL computing row `r` (in scope, with `lid`, `lane` and `slot`) and storing it through `out` where `live`
 * (a WGSL bool; stores only). Each lane folds its elements in order in registers (kept there when at most
 * laneRegisters), then the lanes combine (laneReduceCode, buffers row_red0 and row_red1).
 */
function rowBody(op: RowOp, node: Node, p: RowPlan, layout: RowLayout, out: MatmulOutput, target: Target, live = ''): { body: string; at: (j: string) => string } {
  const { code, stride } = rowBase(p, 'r', '    ');
  const at = (j: string) => `base + ${j}${stride}`;
  const L = u32Lit(p.len);
  const W = u32Lit(layout.lanes);
  const cached = layout.per <= laneRegisters(target);
  const guard = p.len % layout.lanes !== 0;
  // One pass over the lane's elements: `j` and, when cached, `xv[k]` in scope; `x` reads the element.
  const pass = (stmt: (x: string) => string, indent = '    ') =>
    cached
      ? `${indent}for (var k = 0u; k < ${unboundedLoop(layout.per, target)}; k++) {\n${indent}  let j = lane + k * ${W};\n${indent}  ${guard ? `if (j < ${L}) { ${stmt('xv[k]')} }` : stmt('xv[k]')}\n${indent}}`
      : `${indent}for (var j = lane; j < ${L}; j += ${W}) { ${stmt(`in_0[${at('j')}]`)} }`;
  const first = (stmt: (x: string) => string) => (cached ? pass((x) => `let v = in_0[${at('j')}]; ${x} = v; ${stmt('v')}`) : pass((x) => `let v = ${x}; ${stmt('v')}`));
  const reduce = (red: ReduceOp, acc: string, result: string, buf: string) => laneReduceCode(layout.reduce, red, acc, result, buf, target);
  const stores = (value: (x: string) => string) => {
    const loop = pass((x) => storeBlock(out.store(value(x), at('j')), '      '), live ? '      ' : '    ');
    return live ? `    if (${live}) {\n${loop}\n    }` : loop;
  };
  const regs = cached ? `    var xv: array<f32, ${layout.per}>;\n` : '';
  if (op === 'layernorm') {
    const eps = f32Lit(attrNum(node.attrs, 'eps'));
    const n = f32Lit(p.len);
    const body = `${code}
${regs}    var s = 0.0f;
${first((v) => `s += ${v};`)}
${reduce('sum', 's', 'total', 'row_red0')}
    let mean = total / ${n};
    var q = 0.0f;
${pass((x) => `let d = ${x} - mean; q += d * d;`)}
${reduce('sum', 'q', 'sq', 'row_red1')}
    let rs = 1.0f / sqrt(sq / ${n} + ${eps});
${stores((x) => `(${x} - mean) * rs`)}`;
    return { body, at };
  }
  // softmax keeps e^(x - m) in the registers for its stores; log_softmax keeps x.
  const keepExp = op === 'softmax' && cached;
  const body = `${code}
${regs}    var mx = ${f32Lit(-Infinity)};
${first((v) => `mx = ${maxCombine('mx', v)};`)}
${reduce('max', 'mx', 'm', 'row_red0')}
    var se = 0.0f;
${pass((x) => (keepExp ? `let e = exp_f32(${x} - m); ${x} = e; se += e;` : `se += exp_f32(${x} - m);`))}
${reduce('sum', 'se', 's', 'row_red1')}
${op === 'log_softmax' ? '    let lse = m + log_f32(s);\n' : ''}${stores((x) => (op === 'log_softmax' ? `${x} - lse` : keepExp ? `${x} / s` : `exp_f32(${x} - m) / s`))}`;
  return { body, at };
}

/** Workgroups of `rows` rows (one row: the workgroup's index; several: clamped, stores only where live). */
function workgroupKernel(op: RowOp, node: Node, inputs: readonly Node[], target: Target, p: RowPlan, out: MatmulOutput) {
  const layout = rowLayout(p, target);
  const { lanes, rows, reduce } = layout;
  const wg = lanes * rows;
  const groups = Math.ceil(p.rows / rows);
  const dispatch = dispatchGroups(groups, target);
  const index =
    rows === 1
      ? `${groupIndexCode('r', p.rows, dispatch)}\n  let lane = lid;`
      : `${groupIndexCode('g', groups, dispatch)}
  let lane = lid % ${u32Lit(lanes)};
  let slot = lid / ${u32Lit(lanes)};
  let row = g * ${u32Lit(rows)} + slot;
  let r = min(row, ${u32Lit(p.rows - 1)}); // the lanes of a missing row reduce a real one, storing nothing`;
  const { body } = rowBody(op, node, p, layout, out, target, rows === 1 ? '' : `row < ${u32Lit(p.rows)}`);
  const decls = [laneReduceDecl(reduce, 'row_red0'), laneReduceDecl(reduce, 'row_red1')].filter(Boolean).join('\n');
  const main = `${out.helpers ? `${out.helpers}\n\n` : ''}${decls ? `${decls}\n\n` : ''}@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${laneReduceParams(reduce)}) {
${index}
${body}
}`;
  const k = makeKernel(out.node, [...inputs, ...out.extra], target, { name: `${op}_row_wg_f32${out.suffix}`.slice(0, 96), body: main, workgroupSize: [wg, 1, 1], dispatch, lib: [...libOf(op), ...out.lib] });
  return { ...k, wgsl: withLaneEnable(reduce, k.wgsl), nodes: [...out.nodes] };
}

/** At most this many rows per workgroup for a row product (its accumulators are registers). */
const PRODUCT_ROWS_MAX = 16;

/**
 * How a row product's kernel splits work (undefined where the rows do not fit workgroup memory): `rows` rows per
 * workgroup staged in workgroup memory, each column's rows split over `lanes` invocations of `perLane` rows.
 */
export function rowProductShape(shape: readonly number[], n: number, target: Target): { rows: number; lanes: number; perLane: number; wg: number } | undefined {
  const p: RowPlan = { rows: numel(shape.slice(0, -1)), len: shape[shape.length - 1], inner: 1 };
  const layout = rowLayout(p, target, true);
  const wg = layout.lanes;
  const fit = Math.floor((target.limits.maxComputeWorkgroupStorageSize - scratchBytes(layout)) / (4 * p.len));
  const most = Math.min(PRODUCT_ROWS_MAX, fit, p.rows);
  if (most < 1) return undefined;
  const lanes = Math.max(1, Math.min(most, Math.floor(wg / n)));
  const perLane = Math.floor(most / lanes);
  return { rows: lanes * perLane, lanes, perLane, wg };
}

/**
 * A matmul [rows, len] @ [len, n] on the rows a row kernel writes (compiler/codegen/fuse.ts, planRowProducts):
 * LoRA's `x·Aᵀ` where x is a layernorm's output. Its bindings follow the row kernel's inputs; it writes out_1.
 */
export interface RowProduct {
  readonly n: number;
  /** Element (t, col) of the right operand (a view, kernels/view.ts). */
  b(t: string, col: string): string;
  /** Module-scope WGSL the operand and store code call. */
  readonly helpers: string;
  readonly lib: readonly string[];
  /** Appended to the kernel name after `+mm`. */
  readonly suffix: string;
  /** The IR nodes it computes, the last written to out_1. */
  readonly nodes: readonly number[];
  /** Statements storing the f32 `value` of element `index` to out_1. */
  store(value: string, index: string): string[];
}

/**
 * Several rows per workgroup, each stored as its own kernel would, then copied back from storage (its f16
 * rounding included, as a separate matmul would read it) into workgroup memory; then each invocation owns a
 * column of the product for `perLane` of the rows, reading each element of the right operand once for all of
 * them. Every product element is summed over the row in k order with fma, as the naive and tiled matmul kernels
 * sum (bit for bit).
 */
function productKernel(op: RowOp, node: Node, inputs: readonly Node[], target: Target, p: RowPlan, out: MatmulOutput, product: RowProduct): Kernel {
  const shape = rowProductShape(node.shape, product.n, target);
  if (p.inner !== 1 || !shape) throw new Error(`internal: ${op} %${node.id}: no row product for rows of ${p.len} on target '${target.name}'`);
  const { rows, lanes, perLane, wg } = shape;
  const groups = Math.ceil(p.rows / rows);
  const dispatch = dispatchGroups(groups, target);
  // One row at a time over all the workgroup's invocations: the row kernel's lanes (rowLayout), hence its bits.
  const layout = rowLayout(p, target, true);
  const { body, at } = rowBody(op, node, p, layout, out, target);
  const [L, W, N, R] = [u32Lit(p.len), u32Lit(wg), u32Lit(product.n), u32Lit(p.rows)];
  const indent = (code: string) => code.replace(/^/gm, '    ');
  const helpers = [out.helpers, product.helpers].filter(Boolean).join('\n\n');
  const decls = [laneReduceDecl(layout.reduce, 'row_red0'), laneReduceDecl(layout.reduce, 'row_red1')].filter(Boolean).join('\n');
  const main = `${helpers ? `${helpers}\n\n` : ''}${decls ? `${decls}\n` : ''}var<workgroup> row_x: array<f32, ${rows * p.len}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${laneReduceParams(layout.reduce)}) {
${groupIndexCode('g', groups, dispatch)}
  let r0 = g * ${u32Lit(rows)};
  let lane = lid;
  for (var rb = 0u; rb < ${unboundedLoop(rows, target)}; rb++) {
    let r = r0 + rb;
    if (r < ${R}) {
${indent(body)}
        for (var j = lid; j < ${L}; j += ${W}) { row_x[rb * ${L} + j] = out_0[${at('j')}]; }
    }
    workgroupBarrier();
  }
  for (var w = lid; w < ${u32Lit(product.n * lanes)}; w += ${W}) {
    let c = w % ${N};
    let band = w / ${N};
    var acc = array<f32, ${perLane}>(); // zeros on every pass (a bare declaration was not re-zeroed on lavapipe)
    for (var t = 0u; t < ${unboundedLoop(p.len, target)}; t++) {
      let bv = ${product.b('t', 'c')};
      for (var i = 0u; i < ${u32Lit(perLane)}; i++) { acc[i] = fma(row_x[(band + i * ${u32Lit(lanes)}) * ${L} + t], bv, acc[i]); }
    }
    for (var i = 0u; i < ${unboundedLoop(perLane, target)}; i++) { // rolled on software adapters: the store code can be long (GELU)
      let r = r0 + band + i * ${u32Lit(lanes)};
      if (r < ${R}) ${storeBlock(product.store('acc[i]', `r * ${N} + c`), '      ')}
    }
  }
}`;
  const name = `${op}_rows_wg_f32${out.suffix}+mm${product.suffix}`.slice(0, 96);
  const k = makeKernel(out.node, [...inputs, ...out.extra], target, { name, body: main, workgroupSize: [wg, 1, 1], dispatch, lib: [...libOf(op), ...out.lib, ...product.lib] });
  return { ...k, wgsl: withLaneEnable(layout.reduce, k.wgsl), nodes: [...out.nodes, ...product.nodes] };
}

/** A row op's kernel writing through `out` (default: its own value; an elementwise epilogue otherwise). */
function rowKernel(node: Node, inputs: readonly Node[], target: Target, out: MatmulOutput = plainOutput(node)): Kernel {
  const op = node.op as RowOp;
  const p = rowPlan(node);
  return p.len <= ROW_THREAD_MAX ? threadKernel(op, node, inputs, target, p, out) : workgroupKernel(op, node, inputs, target, p, out);
}

/**
 * The kernel of a fusion group whose producer is a row op (compiler/codegen/fuse.ts): the row kernel evaluates
 * the group's members on each value it would store (layernorm's affine, a softmax's scaling) and stores the root.
 */
export function rowEpilogueKernel(graph: Graph, group: FusionGroup, target: Target, views?: ReadonlyMap<number, ViewPlan>): Kernel {
  if (group.row === undefined) throw new Error(`internal: fusion group %${group.root} has no row op`);
  const node = graph.node(group.row);
  return rowKernel(node, node.inputs.map((i) => graph.node(i)), target, epilogueOutput(graph, group, { views }));
}

/**
 * The kernel of a row op (with its epilogue group, if any) that also computes a matmul of the rows it writes
 * (planRowProducts): the product's operand view and epilogue bind after the row kernel's inputs, its value is
 * out_1.
 */
export function rowProductKernel(graph: Graph, row: number, group: FusionGroup | undefined, plan: RowProductPlan, target: Target, views?: ReadonlyMap<number, ViewPlan>): Kernel {
  const node = graph.node(row);
  const p = rowPlan(node);
  const base = group ? epilogueOutput(graph, group, { views }) : plainOutput(node);
  const first = base.node.inputs.length;
  const leaves = plan.b.leaves;
  const view = viewCode(graph, plan.b, 'rb', (leaf) => `in_${first + leaves.indexOf(leaf)}`);
  const mm = graph.node(plan.matmul);
  const epi = plan.group ? epilogueOutput(graph, plan.group, { out: 'out_1', firstExtra: first + leaves.length }) : undefined;
  const extra = [...leaves.map((l) => graph.node(l)), ...(epi?.extra ?? [])];
  const out: MatmulOutput = { ...base, node: { ...base.node, inputs: [...base.node.inputs, ...extra.map((n) => n.id)] }, extra: [...base.extra, ...extra] };
  const product: RowProduct = {
    n: mm.shape[mm.shape.length - 1],
    b: (t, col) => view.call([t, col]),
    helpers: [...new Set([view.helpers, epi?.helpers].filter((h): h is string => !!h && h !== base.helpers))].join('\n\n'),
    lib: epi?.lib ?? [],
    suffix: epi?.suffix ?? '',
    nodes: [...plan.b.inlined, ...(epi?.nodes ?? [plan.matmul])],
    store: epi ? (value, index) => epi.store(value, index) : (value, index) => [`out_1[${index}] = ${value};`],
  };
  const kernel = productKernel(node.op as RowOp, node, node.inputs.map((i) => graph.node(i)), target, p, out, product);
  return { ...withOutput(kernel, graph.node(plan.group?.root ?? plan.matmul), target), nodes: kernel.nodes };
}

const rowGen: KernelGen = (node, inputs, target) => rowKernel(node, inputs, target);

export const ROW_GPU_RULES = {
  softmax: kernelRule(rowGen),
  log_softmax: kernelRule(rowGen),
  layernorm: kernelRule(rowGen),
};
