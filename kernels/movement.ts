// WGSL kernel generators for the movement ops (reshape is an alias, no kernel) and gather / scatter_add.
// One invocation per output element in a grid-stride loop; all index math uses baked-in shapes and strides.
// - permute, expand, slice: `<op>_f32`, a strided read (expand: stride 0 on broadcast dims, slice: the dim's
//   stride × step from start), dims merged where the read is contiguous.
// - concat: `concat_<n>_f32`, the position along dim picks the input (a chain of comparisons).
// - pad: `pad_f32`, the value outside the input (negative pads crop).
// - A slice's start and the offset of a pad along its one padded dim travel in the dispatch where they fit
//   (kernels/grid-param.ts), counted in chunks of the slice's (the pad input's) length where they divide evenly,
//   else in elements: an unrolled loop's per-step slices and pads, or the gate chunks of an LSTM cell, then
//   share one shader.
// - gather: `gather_f32`, the index value (stored as f32) picks the position along dim; NaN for an index that
//   is not a whole number in range (the reference throws; a kernel cannot).
// - scatter_add: `scatter_add_f32`, deterministic without atomics: each output element loops over the index
//   positions along dim that can reach it, in ascending order (the reference's order), summing matches.
import type { Kernel, KernelGen } from '../compiler/codegen/types.js';
import { numel, type Node } from '../compiler/ir/graph.js';
import { attrInts, attrNum, attrPairs, normDim } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, f32Lit, flatKernel, flatWorkgroup, kernelRule, makeKernel, mulLit, offsetCode, stridesOf, u32Lit } from './elementwise.js';
import { gridDispatch, gridMain } from './grid-param.js';

type Target = Parameters<KernelGen>[2];

/** out[i] = in_0[base + Σ coord_d(i)·strides[d]]. */
function stridedCopy(node: Node, inputs: readonly Node[], target: Target, name: string, strides: readonly number[], base = 0): Kernel {
  const off = offsetCode(node.shape, [strides], ['src'], 'i');
  const b = base ? ` + ${u32Lit(base)}` : '';
  return flatKernel(node, inputs, target, name, `${off}\n    out_0[i] = in_0[src${b}];`);
}

const permuteGen: KernelGen = (node, inputs, target) => {
  const x = inputs[0];
  const st = stridesOf(x.shape);
  const dims = attrInts(node.attrs, 'dims').map((d) => normDim(d, x.shape.length));
  return stridedCopy(node, inputs, target, 'permute_f32', dims.map((d) => st[d]));
};

const expandGen: KernelGen = (node, inputs, target) => stridedCopy(node, inputs, target, 'expand_f32', broadcastStrides(inputs[0].shape, node.shape));

/** How a start or offset along a dim is counted: in chunks of `len` where it divides evenly, else in elements. */
const unitOf = (offset: number, len: number): number => (len > 0 && offset % len === 0 ? len : 1);

const sliceGen: KernelGen = (node, inputs, target) => {
  const x = inputs[0];
  const d = normDim(attrNum(node.attrs, 'dim'), x.shape.length);
  const st = stridesOf(x.shape);
  const step = attrNum(node.attrs, 'step', 1);
  const start = attrNum(node.attrs, 'start', 0);
  const strides = st.map((s, i) => (i === d ? s * step : s));
  const n = numel(node.shape);
  const unit = unitOf(start, node.shape[d]);
  const wg = flatWorkgroup(target);
  const dispatch = n > 0 ? gridDispatch(n, start / unit, wg, target) : undefined;
  if (dispatch) {
    const body = `${offsetCode(node.shape, [strides], ['src'], 'i')}\n    out_0[i] = in_0[src + ${mulLit('k', unit * st[d])}];`;
    const what = unit === 1 ? 'the start' : `the start in chunks of ${unit}`;
    return makeKernel(node, inputs, target, { name: 'slice_f32', body: gridMain(wg, n, what, body), workgroupSize: [wg, 1, 1], dispatch });
  }
  // An empty slice may start past the end; nothing is read then.
  const base = n === 0 ? 0 : start * st[d];
  return stridedCopy(node, inputs, target, 'slice_f32', strides, base);
};

const concatGen: KernelGen = (node, inputs, target) => {
  const d = normDim(attrNum(node.attrs, 'dim'), node.shape.length);
  const inner = numel(node.shape.slice(d + 1));
  const total = node.shape[d];
  const lines = [`    let o = i / ${u32Lit(total * inner)};`, `    let c = (i / ${u32Lit(inner)}) % ${u32Lit(total)};`, `    let r = i % ${u32Lit(inner)};`];
  let at = 0;
  const branches: string[] = [];
  inputs.forEach((t, k) => {
    const len = t.shape[d];
    if (len > 0) {
      const read = `in_${k}[(o * ${u32Lit(len)} + c - ${u32Lit(at)}) * ${u32Lit(inner)} + r]`;
      branches.push(`if (c < ${u32Lit(at + len)}) { v = ${read}; }`);
    }
    at += len;
  });
  // Every input is bound (also empty ones); touch them so the bindings stay in the pipeline layout.
  const touch = inputs.map((t, k) => (t.shape[d] > 0 ? '' : `    if (i == 0xffffffffu) { v = in_${k}[0]; }`)).filter(Boolean);
  lines.push('    var v = 0.0f;', `    ${branches.join(' else ')}`, ...touch, '    out_0[i] = v;');
  return flatKernel(node, inputs, target, `concat_${inputs.length}_f32`, lines.join('\n'));
};

const padGen: KernelGen = (node, inputs, target) => {
  const x = inputs[0];
  const pads = attrPairs(node.attrs, 'pads');
  const value = f32Lit(attrNum(node.attrs, 'value', 0));
  const st = stridesOf(x.shape);
  const r = node.shape.length;
  const n = numel(node.shape);
  const wg = flatWorkgroup(target);
  // Padding or cropping (a slice's adjoint) along one dim only: its offset can travel in the dispatch, counted
  // in chunks of the smaller side's length where that divides it.
  const padded = pads.flatMap(([a, b], d) => (a !== 0 || b !== 0 ? [d] : []));
  const [before, after] = padded.length === 1 ? pads[padded[0]] : [0, 0];
  const crop = before <= 0 && after <= 0;
  const p = padded.length === 1 && (crop || (before >= 0 && after >= 0)) ? padded[0] : -1;
  const unit = p >= 0 ? unitOf(Math.abs(before), crop ? node.shape[p] : x.shape[p]) : 1;
  const dispatch = p >= 0 ? gridDispatch(n, Math.abs(before) / unit, wg, target) : undefined;
  const lines = ['    var rem = i;', '    var src = 0u;', '    var inside = true;'];
  for (let d = r - 1; d >= 0; d--) {
    lines.push(d > 0 ? `    let c${d} = i32(rem % ${u32Lit(node.shape[d])});` : `    let c${d} = i32(rem);`);
    if (d > 0) lines.push(`    rem = rem / ${u32Lit(node.shape[d])};`);
    const b = pads[d][0];
    const xc = dispatch && d === p ? `c${d} ${crop ? '+' : '-'} i32(${mulLit('k', unit)})` : b === 0 ? `c${d}` : `c${d} - ${b < 0 ? `(${b}i)` : `${b}i`}`;
    lines.push(`    let x${d} = ${xc};`);
    lines.push(`    inside = inside && x${d} >= 0i && x${d} < ${x.shape[d]}i;`);
    if (st[d] !== 0) lines.push(`    src += u32(max(x${d}, 0i)) * ${u32Lit(st[d])};`);
  }
  lines.push(`    out_0[i] = select(${value}, in_0[min(src, ${u32Lit(Math.max(0, numel(x.shape) - 1))})], inside);`);
  if (!dispatch) return flatKernel(node, inputs, target, 'pad_f32', lines.join('\n'));
  const what = `the ${crop ? 'crop' : 'pad'} before dim ${p}${unit === 1 ? '' : ` in chunks of ${unit}`}`;
  return makeKernel(node, inputs, target, { name: 'pad_f32', body: gridMain(wg, n, what, lines.join('\n')), workgroupSize: [wg, 1, 1], dispatch });
};

const gatherGen: KernelGen = (node, inputs, target) => {
  const [x, index] = inputs;
  const d = normDim(attrNum(node.attrs, 'dim'), x.shape.length);
  const xs = stridesOf(x.shape);
  const n = x.shape[d];
  const off = offsetCode(index.shape, [xs.map((s, i) => (i === d ? 0 : s))], ['o'], 'i');
  const body = `${off}
    let j = in_1[i];
    if (j >= 0.0f && j < ${f32Lit(n)} && j == floor(j)) {
      out_0[i] = in_0[o + u32(j) * ${u32Lit(xs[d])}];
    } else {
      out_0[i] = bitcast<f32>(NAN_U);
    }`;
  return flatKernel(node, inputs, target, 'gather_f32', body);
};

const scatterAddGen: KernelGen = (node, inputs, target) => {
  const [, index] = inputs;
  const shape = node.shape;
  const r = shape.length;
  const d = normDim(attrNum(node.attrs, 'dim'), r);
  const is = stridesOf(index.shape);
  const lines = ['    var rem = i;', '    var base = 0u;', '    var reach = true;', '    var cd = 0u;'];
  for (let k = r - 1; k >= 0; k--) {
    lines.push(k > 0 ? `    let c${k} = rem % ${u32Lit(shape[k])};` : `    let c${k} = rem;`);
    if (k > 0) lines.push(`    rem = rem / ${u32Lit(shape[k])};`);
    if (k === d) lines.push(`    cd = c${k};`);
    else {
      // Only index positions with the same coordinate reach this element.
      if (index.shape[k] < shape[k]) lines.push(`    reach = reach && c${k} < ${u32Lit(index.shape[k])};`);
      if (is[k] !== 0 && index.shape[k] > 1) lines.push(`    base += c${k} * ${u32Lit(is[k])};`);
    }
  }
  const len = index.shape[d];
  lines.push(
    '    var acc = 0.0f;',
    `    if (reach && ${u32Lit(len)} > 0u) {`,
    '      let want = f32(cd);',
    `      for (var p = 0u; p < ${u32Lit(len)}; p++) {`,
    `        let at = base + p * ${u32Lit(is[d])};`,
    '        if (in_1[at] == want) { acc += in_0[at]; }',
    '      }',
    '    }',
    '    out_0[i] = acc;',
  );
  return flatKernel(node, inputs, target, 'scatter_add_f32', lines.join('\n'));
};

const kernel = kernelRule;

export const MOVEMENT_GPU_RULES = {
  reshape: { kind: 'alias' as const },
  permute: kernel(permuteGen),
  slice: kernel(sliceGen),
  concat: kernel(concatGen),
  pad: kernel(padGen),
  expand: kernel(expandGen),
  gather: kernel(gatherGen),
  scatter_add: kernel(scatterAddGen),
};
