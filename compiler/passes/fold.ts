// Constant folding: a node whose inputs are all `full` constants, and whose result is one repeated value,
// becomes a `full` of that value. Values are computed exactly as the reference interpreter computes them
// (its float64 rules, same order of operations), so folding never changes a result, NaN, ±Infinity and the
// sign of zero included. A `full` value must be finite (the reference reads it with attrNum), so results that
// come out NaN or ±Infinity are not folded.
//
// Cheap by construction: ops whose result is provably uniform (elementwise, movement, reductions, row ops,
// matmul) are evaluated on one element, one reduced run or one row, whatever the size; any other op is
// evaluated in full only when its output has at most 4096 elements (and its inputs at most 65536), and
// folded only when every element comes out the same.
import { numel } from '../ir/graph.js';
import { IR_OPS, type IrOp } from '../ir/ops.js';
import { REFERENCE, type RefTensor } from '../ir/rules/reference.js';
import { attrNum, attrPairs, normDim } from '../ir/rules/shape.js';
import type { Candidate, Pass, RewriteCtx } from './engine.js';

const MAX_EVAL_OUT = 4096;
const MAX_EVAL_IN = 65536;
/** Longest run of additions evaluated for a uniform sum / matmul (longer ones are left alone). */
const MAX_RUN = 1 << 24;

interface Const {
  readonly value: number;
  readonly shape: readonly number[];
}

const filled = (shape: readonly number[], value: number): RefTensor => ({ shape: [...shape], data: new Float64Array(numel(shape)).fill(value) });
const same = (a: number, b: number): boolean => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));

/** Σ of `count` copies of v, added in the interpreter's order (acc = 0, then acc + v each time). */
function runSum(v: number, count: number): number | undefined {
  if (count > MAX_RUN) return undefined;
  let acc = 0;
  for (let i = 0; i < count; i++) {
    const next = acc + v;
    if (next === acc) return acc; // adding v no longer changes it (acc starts at +0, so never -0)
    acc = next;
  }
  return acc;
}

/** The one value of a result that is uniform because of what the op is; undefined where that is not known. */
type Uniform = (n: Candidate, ins: readonly Const[]) => number | undefined;

const elementwise: Uniform = (n, ins) => REFERENCE[n.op](ins.map((c) => filled([], c.value)), n.attrs, { shape: [], dtype: n.dtype }).data[0];
const first: Uniform = (_n, [x]) => x.value;

function rowValue(n: Candidate, [x]: readonly Const[], dim: number): number | undefined {
  const len = x.shape[dim];
  if (len > MAX_RUN) return undefined;
  const attrs = n.op === 'layernorm' ? n.attrs : { ...n.attrs, dim: 0 };
  const row = REFERENCE[n.op]([filled([len], x.value)], attrs, { shape: [len], dtype: n.dtype }).data;
  return row.every((v) => same(v, row[0])) ? row[0] : undefined;
}

const UNIFORM: Partial<Record<IrOp, Uniform>> = {
  // Elementwise ops apply one function per element; dropout's mask depends on the element, so only p = 0.
  ...Object.fromEntries(
    (Object.keys(IR_OPS) as IrOp[]).filter((op) => IR_OPS[op].fusion === 'elementwise' && op !== 'dropout').map((op) => [op, elementwise]),
  ),
  dropout: (n, ins) => (attrNum(n.attrs, 'p') === 0 ? ins[0].value : undefined),
  // Movement ops only rearrange (and, for pad, add the pad value).
  reshape: first,
  permute: first,
  expand: first,
  slice: first,
  concat: (_n, ins) => (ins.every((c) => same(c.value, ins[0].value)) ? ins[0].value : undefined),
  pad: (n, [x]) => {
    const pads = attrPairs(n.attrs, 'pads');
    const value = attrNum(n.attrs, 'value', 0);
    return pads.every(([a, b]) => a <= 0 && b <= 0) || same(value, x.value) ? x.value : undefined;
  },
  sum: (n, [x]) => runSum(x.value, numel(x.shape) / numel(n.shape)),
  // max starts from -Infinity and takes NaN: one element or more gives the value itself.
  max: (n, [x]) => (numel(x.shape) / numel(n.shape) >= 1 ? x.value : -Infinity),
  softmax: (n, ins) => rowValue(n, ins, normDim(attrNum(n.attrs, 'dim', -1), ins[0].shape.length)),
  log_softmax: (n, ins) => rowValue(n, ins, normDim(attrNum(n.attrs, 'dim', -1), ins[0].shape.length)),
  layernorm: (n, ins) => rowValue(n, ins, ins[0].shape.length - 1),
  // Each output is s = 0, s += a·b over k (the interpreter's order).
  matmul: (_n, [a, b]) => runSum(a.value * b.value, a.shape[a.shape.length - 1]),
};

/** Evaluates a small node in full with the reference rule; its value when every element is the same. */
function evaluateSmall(n: Candidate, ins: readonly Const[]): number | undefined {
  if (numel(n.shape) > MAX_EVAL_OUT || ins.some((c) => numel(c.shape) > MAX_EVAL_IN)) return undefined;
  let data: Float64Array;
  try {
    data = REFERENCE[n.op](ins.map((c) => filled(c.shape, c.value)), n.attrs, n).data;
  } catch {
    return undefined; // e.g. a gather index out of range: leave it for the interpreter to report
  }
  return data.every((v) => same(v, data[0])) ? data[0] : undefined;
}

function foldConstant(n: Candidate, ctx: RewriteCtx): number | undefined {
  if (n.inputs.length === 0) return undefined;
  const nodes = n.inputs.map((i) => ctx.node(i));
  if (!nodes.every((m) => m.op === 'full')) return undefined;
  // An empty result has no values to keep.
  if (numel(n.shape) === 0) return ctx.full(0, n.shape, n.dtype);
  const ins = nodes.map((m) => ({ value: m.attrs.value as number, shape: m.shape }));
  if (!ins.every((c) => Number.isFinite(c.value))) return undefined;
  const v = UNIFORM[n.op]?.(n, ins) ?? evaluateSmall(n, ins);
  // `full` holds finite values only (its attribute is checked as a number): NaN and ±Infinity stay unfolded.
  return v === undefined || !Number.isFinite(v) ? undefined : ctx.full(v, n.shape, n.dtype);
}

export const fold: Pass = {
  name: 'fold',
  doc: 'replace a node of constants whose result is one repeated value by a `full` of that value',
  rules: { 'fold constant': foldConstant },
};
