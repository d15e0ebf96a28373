// WGSL kernel generators for the row ops: softmax and log_softmax along any dim, layernorm over the last dim.
//
// A row is the `len` elements along the dim at one (outer, inner) position: element j of row r lives at
// (r / inner)·len·inner + r % inner + j·inner. Statistics are f32 and numerically stable (the row max is
// subtracted before exp; layernorm's variance is the two-pass biased one).
// - `<op>_row_wg_f32`: one workgroup per row (dispatch spread over x, y, z): each invocation folds
//   j = t, t + WG, … in order, fixed-order reductions in workgroup memory (treeReduceCode). Rows longer than 16.
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
import { ceilPow2, combineCode, treeReduceCode, treeWorkgroup } from './reduce.js';

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
const sumCombine = (a: string, b: string) => `${a} + ${b}`;

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

/** One workgroup per row. */
/** The workgroup size of a row's kernel: a power of two covering the row, within the target's tree size. */
const rowWorkgroup = (p: RowPlan, target: Target): number => Math.min(treeWorkgroup(target), Math.max(32, ceilPow2(p.len)));

/** WGSL computing row `r` (in scope) and storing it through `out`: the reductions in row_buf, then the stores. */
function rowBody(op: RowOp, node: Node, p: RowPlan, wg: number, out: MatmulOutput, target: Target): { body: string; at: (j: string) => string } {
  const { code, stride } = rowBase(p, 'r', '    ');
  const at = (j: string) => `base + ${j}${stride}`;
  const L = u32Lit(p.len);
  const W = u32Lit(wg);
  const loop = (stmt: string) => `    for (var j = lid; j < ${L}; j += ${W}) { ${stmt} }`;
  if (op === 'layernorm') {
    const eps = f32Lit(attrNum(node.attrs, 'eps'));
    const n = f32Lit(p.len);
    const body = `${code}
    var s = 0.0f;
${loop(`s += in_0[${at('j')}];`)}
    row_buf[lid] = s;
${treeReduceCode('row_buf', wg, sumCombine, target)}
    let mean = row_buf[0] / ${n};
    workgroupBarrier();
    var q = 0.0f;
${loop(`let d = in_0[${at('j')}] - mean; q += d * d;`)}
    row_buf[lid] = q;
${treeReduceCode('row_buf', wg, sumCombine, target)}
    let rs = 1.0f / sqrt(row_buf[0] / ${n} + ${eps});
${loop(storeBlock(out.store(`(in_0[${at('j')}] - mean) * rs`, at('j')), '    '))}`;
    return { body, at };
  }
  const write = storeBlock(out.store(op === 'softmax' ? `exp_f32(in_0[${at('j')}] - m) / s` : `in_0[${at('j')}] - lse`, at('j')), '    ');
  const body = `${code}
    var mx = ${f32Lit(-Infinity)};
${loop(`let v = in_0[${at('j')}]; mx = ${maxCombine('mx', 'v')};`)}
    row_buf[lid] = mx;
${treeReduceCode('row_buf', wg, maxCombine, target)}
    let m = row_buf[0];
    workgroupBarrier();
    var se = 0.0f;
${loop(`se += exp_f32(in_0[${at('j')}] - m);`)}
    row_buf[lid] = se;
${treeReduceCode('row_buf', wg, sumCombine, target)}
    let s = row_buf[0];
${op === 'log_softmax' ? '    let lse = m + log_f32(s);\n' : ''}${loop(write)}`;
  return { body, at };
}

/** One workgroup per row. */
function workgroupKernel(op: RowOp, node: Node, inputs: readonly Node[], target: Target, p: RowPlan, out: MatmulOutput) {
  const wg = rowWorkgroup(p, target);
  const dispatch = dispatchGroups(p.rows, target);
  const { body } = rowBody(op, node, p, wg, out, target);
  const main = `${out.helpers ? `${out.helpers}\n\n` : ''}var<workgroup> row_buf: array<f32, ${wg}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('r', p.rows, dispatch)}
${body}
    workgroupBarrier();
}`;
  const k = makeKernel(out.node, [...inputs, ...out.extra], target, { name: `${op}_row_wg_f32${out.suffix}`.slice(0, 96), body: main, workgroupSize: [wg, 1, 1], dispatch, lib: [...libOf(op), ...out.lib] });
  return { ...k, nodes: [...out.nodes] };
}

/** At most this many rows per workgroup for a row product (its accumulators are registers). */
const PRODUCT_ROWS_MAX = 16;

/**
 * How a row product's kernel splits work (undefined where the rows do not fit workgroup memory): `rows` rows per
 * workgroup staged in workgroup memory, each column's rows split over `lanes` invocations of `perLane` rows.
 */
export function rowProductShape(shape: readonly number[], n: number, target: Target): { rows: number; lanes: number; perLane: number; wg: number } | undefined {
  const p: RowPlan = { rows: numel(shape.slice(0, -1)), len: shape[shape.length - 1], inner: 1 };
  const wg = rowWorkgroup(p, target);
  const fit = Math.floor((target.limits.maxComputeWorkgroupStorageSize - 4 * wg) / (4 * p.len));
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
  const { body, at } = rowBody(op, node, p, wg, out, target);
  const [L, W, N, R] = [u32Lit(p.len), u32Lit(wg), u32Lit(product.n), u32Lit(p.rows)];
  const indent = (code: string) => code.replace(/^/gm, '    ');
  const helpers = [out.helpers, product.helpers].filter(Boolean).join('\n\n');
  const main = `${helpers ? `${helpers}\n\n` : ''}var<workgroup> row_buf: array<f32, ${wg}>;
var<workgroup> row_x: array<f32, ${rows * p.len}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('g', groups, dispatch)}
  let r0 = g * ${u32Lit(rows)};
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
    let lane = w / ${N};
    var acc = array<f32, ${perLane}>(); // zeros on every pass (a bare declaration was not re-zeroed on lavapipe)
    for (var t = 0u; t < ${unboundedLoop(p.len, target)}; t++) {
      let bv = ${product.b('t', 'c')};
      for (var i = 0u; i < ${u32Lit(perLane)}; i++) { acc[i] = fma(row_x[(lane + i * ${u32Lit(lanes)}) * ${L} + t], bv, acc[i]); }
    }
    for (var i = 0u; i < ${unboundedLoop(perLane, target)}; i++) { // rolled on software adapters: the store code can be long (GELU)
      let r = r0 + lane + i * ${u32Lit(lanes)};
      if (r < ${R}) ${storeBlock(product.store('acc[i]', `r * ${N} + c`), '      ')}
    }
  }
}`;
  const name = `${op}_rows_wg_f32${out.suffix}+mm${product.suffix}`.slice(0, 96);
  const k = makeKernel(out.node, [...inputs, ...out.extra], target, { name, body: main, workgroupSize: [wg, 1, 1], dispatch, lib: [...libOf(op), ...out.lib, ...product.lib] });
  return { ...k, nodes: [...out.nodes, ...product.nodes] };
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
