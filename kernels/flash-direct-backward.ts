// A tensor-core flash-attention backward that loads its fragments straight from q, k, v and g in f16 storage
// (Target.tuning.flashDirectGrad): the kernels of attention_grad wrt 0 (dq), 1 (dk), 2 (dv), and dk with dv in one
// kernel where the schedule pairs them. The staged tensor-core backward (kernels/flash-sgmat-backward.ts) stages
// a, aᵀ, b and bᵀ through workgroup memory with barriers for every tile: on the H200 a barrier and fragment loads
// from workgroup memory per step held Dawn's subgroup matrices to 35–100 TFLOP/s against 485–587 with fragments
// loaded from storage (docs/perf.md, session 13). Unmeasured on NVIDIA: offered to `visft tune`.
//
// The forward's layout (kernels/flash-direct-common.ts): one subgroup owns 16 rows of one (batch, head) and sweeps
// the other side in tiles of 16, 32 or 64 rows, FlashAttention-2's split without atomics:
//   dq:    owns query rows, x = q, y = g; sweeps keys, a = k, b = v.
//   dk/dv: owns key rows, x = k, y = v; sweeps queries, a = q, b = g (S, dP, P and dS are transposed: [key, query]).
// x and y's 16x8 left fragments stay in registers. Per tile: S = x·aᵀ and dP = y·bᵀ on the 16x8x8 config (aᵀ and bᵀ
// loaded column-major from a and b's rows in place; head dims multiples of 8, so nothing is padded) into f32
// scratches; the lanes take the tile's elements: P = e^{S·scale − lse}, dS = P·(dP − δ) in f32, both rounded to f16
// into the left scratches (lse and δ per query: the owned rows' for dq, the tile's for dk/dv); then acc_x += dS·a
// (dq or dk) and acc_y += P·b (dv) on the 16x8x16 config, with a and b's rows as right fragments, the accumulators
// result fragments across tiles. Two barriers per tile, each synchronising one subgroup. At the end acc_x ·scale and
// acc_y go out through the scratch.
// The numerics are the staged kernel's: exact f16 products summed in f32, P and dS rounded to f16 before their
// products (test/kernels/attention-grad-bounds.ts derives the bound both tests take). q, k, v and g must be stored
// as f16 (Kernel.halfOnly: the schedule runs the fallback where one is not). No mask. Views of one binding under an
// affine map (q, k, v split from a fused projection; g from the output projection's gradient) are read in place.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { f32Lit, u32Lit } from './elementwise.js';
import { attentionGeometry, bindingOf, directReads, EXP_FLASH, flashKernel, GRAD_SLOTS, touchUnread, withSecondOutput, type FlashReads } from './flash-common.js';
import { accumulateRows, DIRECT_ROWS, directDispatch, directKeys, directMain, directOperands, directOperandsUnfit, fragmentsOut, productToScratch, scratchStride16, scratchStride32, sweepLoop } from './flash-direct-common.js';
import { gradOf, rolesOf, type FlashSgmatGrad } from './flash-sgmat-backward.js';
import { sgmatLanes, sgmatOps, sgmatSpelling } from './sgmat.js';

const { Q, K, V, G, LSE, DELTA } = GRAD_SLOTS;

/**
 * Why the kernel cannot compute this attention_grad node (with `sibling`, its wrt-2 pair; inputs read as `reads`
 * says) on `target`, or undefined.
 */
export function flashDirectBackwardUnfit(graph: Graph, node: Node, target: Target, sibling?: Node, reads: FlashReads = directReads(node)): string | undefined {
  if (node.op !== 'attention_grad') return `${node.op} is not attention_grad`;
  const which = gradOf(node, sibling);
  if (!which) return sibling ? `wrt ${attrNum(node.attrs, 'wrt')} does not pair with ${sibling.op} %${sibling.id}` : "the mask's gradient";
  if (node.inputs.length !== 6) return 'a mask';
  const inputs = node.inputs.map((i) => graph.node(i));
  const geo = attentionGeometry(node, inputs[Q], inputs[K], inputs[V], undefined);
  const ops = directOperands(reads, inputs, directGradLoads(which), geo.H);
  return directOperandsUnfit(graph, target, inputs.slice(0, 4), [geo.D, geo.Dv], [geo.Sq, geo.Sk]) ?? (typeof ops === 'string' ? ops : undefined);
}

/** The input slots of x, y, a and b (see the top of the file). */
const rowSlots = (which: FlashSgmatGrad): [number, number, number, number] => (which === 'q' ? [Q, G, K, V] : [K, V, Q, G]);

/** The slots a kernel loads as subgroup-matrix fragments (they must be stored as f16): x, y (not for dv alone), a, b. */
export function directGradLoads(which: FlashSgmatGrad): number[] {
  const [x, y, a, b] = rowSlots(which);
  return which === 'v' ? [x, a, b] : [x, y, a, b];
}

/**
 * The `attention_grad_<which>_flash_direct_f16` kernel of an attention_grad node (with `sibling`, the wrt-2 node
 * whose dv it also writes); check flashDirectBackwardUnfit first.
 */
export function flashDirectBackwardKernel(node: Node, inputs: readonly Node[], target: Target, sibling?: Node, reads: FlashReads = directReads(node)): Kernel {
  const which = gradOf(node, sibling);
  if (!which) throw new Error(`internal: attention_grad %${node.id} has no direct kernel${sibling ? ` writing %${sibling.id}` : ''}`);
  const [q, k, v] = inputs;
  const geo = attentionGeometry(node, q, k, v, undefined);
  const loads = directGradLoads(which);
  const operands = directOperands(reads, inputs, loads, geo.H);
  if (typeof operands === 'string') throw new Error(`internal: attention_grad %${node.id} on the direct kernel: ${operands}`);
  const [x, y, a, b] = rowSlots(which).map((slot) => operands[loads.indexOf(slot)]);
  const [lseIn, delIn] = [bindingOf(reads, LSE), bindingOf(reads, DELTA)];
  const r = rolesOf(which);
  const U = u32Lit;
  const [ownLen, sweepLen] = r.dq ? [geo.Sq, geo.Sk] : [geo.Sk, geo.Sq];
  const { D, Dv } = geo;
  const keys = directKeys(target, sweepLen);
  const spelling = sgmatSpelling(target);
  // One spelling per pair of arrays the products read (the emulation tracks where its left and right come from).
  const sOps = sgmatOps({ m: 16, n: 8, k: 8 }, spelling, keys / 8, 'sgs');
  const pOps = sgmatOps({ m: 16, n: 8, k: 8 }, spelling, keys / 8, 'sgp');
  const xOps = sgmatOps({ m: 16, n: 8, k: 16 }, spelling, D / 8, 'sgx');
  const yOps = sgmatOps({ m: 16, n: 8, k: 16 }, spelling, Dv / 8, 'sgy');
  const { groups, dispatch } = directDispatch(target, geo.B * geo.H, ownLen);
  const SS = scratchStride32(keys);
  const SL = scratchStride16(keys);
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const indent = (lines: string[]) => lines.map((l) => `    ${l}`).join('\n');
  // lse and δ of a query: the owned row's (dq) or the tile column's (dk, dv), staged per tile.
  const [lseAt, delAt] = r.dq ? ['row_lse[r]', 'row_del[r]'] : ['t_lse[c]', 't_del[c]'];
  const tileStats = r.dq
    ? ''
    : `
    for (var c = lane; c < ${U(keys)}; c += lanes) {
      t_lse[c] = ${lseIn}[bh * ${U(geo.Sq)} + jc + c];${r.dP ? `\n      t_del[c] = ${delIn}[bh * ${U(geo.Sq)} + jc + c];` : ''}
    }`;
  const products = [
    ...productToScratch(sOps, 's', (t) => `x_${t}`, a, 'ab', D, keys, 'tile_s', SS),
    ...(r.dP ? productToScratch(pOps, 'dp', (t) => `y_${t}`, b, 'bb', Dv, keys, 'tile_dp', SS) : []),
  ];
  const elementwise = `    for (var e = lane; e < ${U(DIRECT_ROWS * keys)}; e += lanes) {
      let r = e / ${U(keys)};
      let c = e % ${U(keys)};
      let s = tile_s[r * ${U(SS)} + c] * ${f32Lit(geo.scale)};
      let p = select(0.0f, exp_flash(s - ${lseAt}), jc + c >= j0);${r.accX ? `\n      tile_ds[r * ${U(SL)} + c] = f16(p * (tile_dp[r * ${U(SS)} + c] - ${delAt}));` : ''}${r.accY ? `\n      tile_p[r * ${U(SL)} + c] = f16(p);` : ''}
    }`;
  const accumulate = [...(r.accX ? accumulateRows(xOps, 'ax', 'tile_ds', SL, a, 'ab', D, keys) : []), ...(r.accY ? accumulateRows(yOps, 'ay', 'tile_p', SL, b, 'bb', Dv, keys) : [])];
  const sweep = sweepLoop(target, sweepLen, keys, `${indent(products)}${tileStats}
    workgroupBarrier();
${elementwise}
    workgroupBarrier();
${indent(accumulate)}`);
  const rowStats = r.dq
    ? `
  for (var r = lane; r < ${U(DIRECT_ROWS)}; r += lanes) {
    row_lse[r] = ${lseIn}[bh * ${U(geo.Sq)} + ra + r];
    row_del[r] = ${delIn}[bh * ${U(geo.Sq)} + ra + r];
  }`
    : '';
  const finals = [
    ...(r.accX ? [fragmentsOut(xOps, 'ax', D / 8, 'tile_s', keys, SS, 'out_0', ownLen, D, (e) => `${e} * ${f32Lit(geo.scale)}`)] : []),
    ...(r.accY ? [fragmentsOut(yOps, 'ay', Dv / 8, 'tile_s', keys, SS, r.accX ? 'out_1' : 'out_0', ownLen, Dv, (e) => e)] : []),
  ];
  const body = `${r.dP ? '' : `${touchUnread(reads, [V, DELTA])}\n`}  let ab = ${a.base};
  let bb = ${b.base};
  let xb = ${x.base} + ra * ${U(x.stride)};${r.dP ? `\n  let yb = ${y.base} + ra * ${U(y.stride)};` : ''}${rowStats}
${range(D / 8)
  .map((t) => `  let x_${t} = ${sOps.loadLeft(x.binding, `xb + ${U(8 * t)}`, U(x.stride))};`)
  .join('\n')}
${r.dP ? `${range(Dv / 8).map((t) => `  let y_${t} = ${pOps.loadLeft(y.binding, `yb + ${U(8 * t)}`, U(y.stride))};`).join('\n')}\n` : ''}${[
    ...(r.accX ? range(D / 8).map((j) => `  var ax_${j} = ${xOps.zero(U(j))};`) : []),
    ...(r.accY ? range(Dv / 8).map((j) => `  var ay_${j} = ${yOps.zero(U(j))};`) : []),
  ].join('\n')}
${sweep}
${finals.join('\n')}`;
  const decls = [
    `var<workgroup> tile_s: array<f32, ${DIRECT_ROWS * SS}>;`,
    ...(r.dP ? [`var<workgroup> tile_dp: array<f32, ${DIRECT_ROWS * SS}>;`] : []),
    ...(r.accX ? [`var<workgroup> tile_ds: array<f16, ${DIRECT_ROWS * SL}>;`] : []),
    ...(r.accY ? [`var<workgroup> tile_p: array<f16, ${DIRECT_ROWS * SL}>;`] : []),
    ...(r.dq ? [`var<workgroup> row_lse: array<f32, ${DIRECT_ROWS}>;`, `var<workgroup> row_del: array<f32, ${DIRECT_ROWS}>;`] : [`var<workgroup> t_lse: array<f32, ${keys}>;`, ...(r.dP ? [`var<workgroup> t_del: array<f32, ${keys}>;`] : [])]),
  ];
  const [own, swept] = r.dq ? ['query', 'key'] : ['key', 'query'];
  const main = `${EXP_FLASH}

${decls.join('\n')}

${directMain(target, `d${which}: one subgroup, ${DIRECT_ROWS} ${own} rows of one (batch, head), ${swept}s in tiles of ${keys}.`, groups, dispatch, ownLen, body)}`;
  const used = [sOps, ...(r.dP ? [pOps] : []), ...(r.accX ? [xOps] : []), ...(r.accY ? [yOps] : [])];
  const helpers = used.map((o) => o.helpers()).filter(Boolean).join('\n\n');
  // Views are read at their affine offsets, never through their element functions: those are left out.
  const kernel = flashKernel(node, inputs, target, { ...reads, helpers: '', lib: [] }, {
    name: `attention_grad_${which}_flash_direct_f16${keys === 16 ? '' : `_k${keys}`}`,
    body: helpers ? `${helpers}\n\n${main}` : main,
    workgroupSize: [sgmatLanes(target), 1, 1],
    dispatch,
  });
  const withDirectives = { ...kernel, wgsl: `${sOps.directives}\n${kernel.wgsl}` };
  return sibling ? withSecondOutput(withDirectives, sibling, target) : withDirectives;
}
