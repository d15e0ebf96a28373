// WGSL kernel generators for the row ops: softmax and log_softmax along any dim, layernorm over the last dim.
//
// A row is the `len` elements along the dim at one (outer, inner) position: element j of row r lives at
// (r / inner)·len·inner + r % inner + j·inner. Statistics are f32 and numerically stable (the row max is
// subtracted before exp; layernorm's variance is the two-pass biased one).
// - `<op>_row_wg_f32`: one workgroup per row (dispatch spread over x, y, z): each invocation folds
//   j = t, t + WG, … in order, fixed-order reductions in workgroup memory (treeReduceCode). Rows longer than 16.
// - `<op>_row_thread_f32`: one invocation per row, sequential loops. For short rows.
import type { FusionGroup } from '../compiler/codegen/fuse.js';
import type { Kernel, KernelGen, Target } from '../compiler/codegen/types.js';
import { numel, type Graph, type Node } from '../compiler/ir/graph.js';
import { attrNum, normDim } from '../compiler/ir/rules/shape.js';
import { dispatchGroups, f32Lit, flatKernel, groupIndexCode, kernelRule, makeKernel, u32Lit } from './elementwise.js';
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
function workgroupKernel(op: RowOp, node: Node, inputs: readonly Node[], target: Target, p: RowPlan, out: MatmulOutput) {
  const wg = Math.min(treeWorkgroup(target), Math.max(32, ceilPow2(p.len)));
  const dispatch = dispatchGroups(p.rows, target);
  const { code, stride } = rowBase(p, 'r', '    ');
  const at = (j: string) => `base + ${j}${stride}`;
  const L = u32Lit(p.len);
  const W = u32Lit(wg);
  const loop = (stmt: string) => `    for (var j = lid; j < ${L}; j += ${W}) { ${stmt} }`;
  let body: string;
  if (op === 'layernorm') {
    const eps = f32Lit(attrNum(node.attrs, 'eps'));
    const n = f32Lit(p.len);
    body = `${code}
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
${loop(storeBlock(out.store(`(in_0[${at('j')}] - mean) * rs`, at('j')), '    '))}
    workgroupBarrier();`;
  } else {
    const write = storeBlock(out.store(op === 'softmax' ? `exp_f32(in_0[${at('j')}] - m) / s` : `in_0[${at('j')}] - lse`, at('j')), '    ');
    body = `${code}
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
${op === 'log_softmax' ? '    let lse = m + log_f32(s);\n' : ''}${loop(write)}
    workgroupBarrier();`;
  }
  const main = `${out.helpers ? `${out.helpers}\n\n` : ''}var<workgroup> row_buf: array<f32, ${wg}>;

@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('r', p.rows, dispatch)}
${body}
}`;
  const k = makeKernel(out.node, [...inputs, ...out.extra], target, { name: `${op}_row_wg_f32${out.suffix}`.slice(0, 96), body: main, workgroupSize: [wg, 1, 1], dispatch, lib: [...libOf(op), ...out.lib] });
  return { ...k, nodes: [...out.nodes] };
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
export function rowEpilogueKernel(graph: Graph, group: FusionGroup, target: Target): Kernel {
  if (group.row === undefined) throw new Error(`internal: fusion group %${group.root} has no row op`);
  const node = graph.node(group.row);
  return rowKernel(node, node.inputs.map((i) => graph.node(i)), target, epilogueOutput(graph, group));
}

const rowGen: KernelGen = (node, inputs, target) => rowKernel(node, inputs, target);

export const ROW_GPU_RULES = {
  softmax: kernelRule(rowGen),
  log_softmax: kernelRule(rowGen),
  layernorm: kernelRule(rowGen),
};
