// A tensor-core flash-attention forward that loads its fragments straight from q, k and v in f16 storage
// (Target.tuning.flashDirect), `attention_flash_direct_f16`: softmax(q·kᵀ·scale)·v, and the sibling attention_lse.
// On the H200 the staged tensor-core kernels (kernels/flash-sgmat.ts) ran 2.6–3.5x slower than the f32 flash
// kernels, and Dawn's subgroup matrices reached 485–587 TFLOP/s with fragments loaded from storage against 35–100
// with a barrier and fragment loads from workgroup memory per step (scripts/sgmat-ceiling.mjs; docs/perf.md,
// session 13). Unmeasured on NVIDIA: offered to `visft tune`.
//
// One subgroup per workgroup owns 16 query rows of one (batch, head), so its barriers synchronise one subgroup
// (kernels/flash-direct-common.ts: the layout, ragged tiles and the way out, shared with the backward).
// - q·kᵀ on the 16x8x8 config: head dims that are multiples of 8 (EVA-G's 88, EVA-E's 112) need no padding, so no
//   fragment reads past a row. q's D/8 left fragments are loaded once; kᵀ's right fragments are loaded
//   column-major from k's rows in place.
// - Two passes over the keys, in tiles of 16, 32 or 64 (Target.tuning.flashDirectKeys): the first takes each row's
//   max of s·scale; the second computes p = e^{s·scale − max} rounded to f16 into a 16 x keys scratch, sums the
//   rounded p into l, and accumulates P·v on the 16x8x16 config into the output's Dv/8 result fragments, which stay
//   in registers: with the final max known, no tile rescales them. q·kᵀ is computed twice (three products' work
//   instead of two) to avoid the rescaling round trips through workgroup memory that bound the staged kernel.
// - The rows' statistics take every lane: on NVIDIA's 32, lanes l and l + 16 share row l % 16, each over half the
//   keys, with partial maxima and sums in slots of their own, combined once after each pass.
// - Ragged edges: a row tile past Sq reads the last 16 rows and keeps only its own; a key tile past Sk reads the
//   last keys and counts only those not seen before. So Sq and Sk must be at least 16.
// At the end out = O / l and lse = max + ln l (l sums the rounded weights, so out weighs exactly what it sums, as the
// staged kernel does). q, k and v must be stored as f16 (Kernel.halfOnly: the schedule runs the fallback where one is
// not). No mask. Views of one binding under an affine map (heads split from a fused projection) are read in place,
// rows at their stride (kernels/view-affine.ts; their rows must start on 16 bytes).
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { f32Lit, u32Lit } from './elementwise.js';
import { attentionGeometry, directReads, EXP_FLASH, flashKernel, withSecondOutput, type FlashReads } from './flash-common.js';
import { accumulateRows, DIRECT_ROWS, directDispatch, directKeys, directMain, directOperands, directOperandsUnfit, fragmentsOut, productToScratch, scratchStride16, scratchStride32, sweepLoop, type SplitCounts } from './flash-direct-common.js';
import { sgmatLanes, sgmatOps, sgmatSpelling } from './sgmat.js';

/** P's scale before its split: weights down to 2^-28 stay in f16's normal range. */
const P_SCALE = 14;

/** Why the kernel cannot compute this attention node (inputs q, k, v, read as `reads` says) on `target`, or undefined. */
export function flashDirectUnfit(graph: Graph, node: Node, target: Target, sibling?: Node, reads: FlashReads = directReads(node)): string | undefined {
  if (node.op !== 'attention') return `${node.op} is not attention`;
  if (sibling && sibling.op !== 'attention_lse') return `its sibling is ${sibling.op}`;
  if (node.inputs.length !== 3) return 'a mask';
  const inputs = node.inputs.map((i) => graph.node(i));
  const g = attentionGeometry(node, inputs[0], inputs[1], inputs[2], undefined);
  const ops = directOperands(reads, inputs, [0, 1, 2], g.H);
  return directOperandsUnfit(graph, target, inputs, [g.D, g.Dv], [g.Sq, g.Sk]) ?? (typeof ops === 'string' ? ops : undefined);
}

/**
 * The `attention_flash_direct_f16` kernel of an attention node (and its attention_lse sibling), reading q, k and v as
 * `reads` says (in place through affine views: kernels/view-affine.ts); check flashDirectUnfit first. With `split`,
 * `attention_flash_split16_f32`: q, k and v are f32 values split into f16 pairs (kernels/flash-split16.ts).
 */
export function flashDirectForwardKernel(node: Node, inputs: readonly Node[], target: Target, lse?: Node, reads: FlashReads = directReads(node), split?: SplitCounts): Kernel {
  const [q, k, v] = inputs;
  const g = attentionGeometry(node, q, k, v, undefined);
  const operands = directOperands(reads, inputs, [0, 1, 2], g.H);
  if (typeof operands === 'string') throw new Error(`internal: attention %${node.id} on the direct kernel: ${operands}`);
  const [oq, ok, ov] = operands;
  const U = u32Lit;
  const keys = directKeys(target, g.Sk);
  const spelling = sgmatSpelling(target);
  const sOps = sgmatOps({ m: 16, n: 8, k: 8 }, spelling, keys / 8, 'sgs');
  const oOps = sgmatOps({ m: 16, n: 8, k: 16 }, spelling, g.Dv / 8, 'sgo');
  const { groups, dispatch } = directDispatch(target, g.B * g.H, g.Sq);
  const SS = scratchStride32(keys);
  const SP = scratchStride16(keys);
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const scores = productToScratch(sOps, 's', (t) => `q_${t}`, ok, 'kb', g.D, keys, 'tile_s', SS, split && { left: (t) => `ql_${t}`, right: split[1] });
  // Split: P, scaled by 2^P_SCALE (f16's normal range then reaches far below any weight that counts), in two halves
  // of tile_p: hi, then lo from PL.
  const PL = DIRECT_ROWS * SP;
  // Lanes per subgroup at most / 16: the partial statistics' slots per row.
  const partsMax = Math.max(1, Math.floor(sgmatLanes(target) / DIRECT_ROWS));
  // Every lane works on the rows' statistics: with 16 lanes or more, lanes l and l + 16, … share row l % 16, each
  // over its own part of the keys (j ≡ part mod parts), keeping a partial max (pass 1) and sum (pass 2) in a slot of
  // its own (part_m, part_l: no barrier, no subgroup operation), combined once after each pass; with fewer lanes
  // (the emulation's 4), each takes every 4th row whole.
  const laneRows = (lines: string[]) =>
    [`    for (var r = lane % 16u; r < ${U(DIRECT_ROWS)}; r += rstep) {`, ...lines.map((l) => `      ${l}`), '    }'].join('\n');
  // Split: each score times 2^-(its query's and key's exponents), one power of two at a time (each a normal f32): the
  // rows' factors staged once, the tile's keys' with its scores (in the scratch's barrier).
  const unscaled = split ? ' * row_sq[r] * tile_sk[j]' : '';
  const keyFactors = split
    ? `
    for (var c = lane; c < ${U(keys)}; c += lanes) { tile_sk[c] = pow2(-i32(f32(${ok.binding}[${U(2 * split[1])} + bh * ${U(g.Sk)} + jc + c]))); }`
    : '';
  const keyLoop = (lines: string[]) => [`for (var j = part; j < ${U(keys)}; j += parts) {`, `  let s = tile_s[r * ${U(SS)} + j]${unscaled} * ${f32Lit(g.scale)};`, '  let counted = jc + j >= j0;', ...lines.map((l) => `  ${l}`), '}'];
  const slot = `part * ${U(DIRECT_ROWS)} + r`;
  const indent = (lines: string[]) => lines.map((l) => `    ${l}`).join('\n');
  // A pass over the keys: each tile's scores into the scratch, then the lanes' rows, then `after` (both passes end on
  // a barrier: the next tile's scores overwrite the scratch).
  const pass = (rows: string[], after: string) =>
    sweepLoop(
      target,
      g.Sk,
      keys,
      `${indent(scores)}${keyFactors}
    workgroupBarrier();
${laneRows(rows)}
    workgroupBarrier();${after}`,
    );
  const pass1 = pass([`var mx = part_m[${slot}];`, ...keyLoop(['mx = select(mx, max(mx, s), counted);']), `part_m[${slot}] = mx;`], '');
  const weights = split
    ? [
        'let p = select(0.0f, exp_flash(s - mx), counted);',
        `let ps = p * ${f32Lit(2 ** P_SCALE)};`,
        'let ph = f16_hi(ps);',
        `tile_p[r * ${U(SP)} + j] = f16(ph);`,
        `tile_p[${U(PL)} + r * ${U(SP)} + j] = f16(ps - ph);`,
        'l += p;',
      ]
    : ['let p = f16(select(0.0f, exp_flash(s - mx), counted));', `tile_p[r * ${U(SP)} + j] = p;`, 'l += f32(p);'];
  const pass2 = pass(
    ['let mx = row_m[r];', `var l = part_l[${slot}];`, ...keyLoop(weights), `part_l[${slot}] = l;`],
    `\n${indent(accumulateRows(oOps, 'o', 'tile_p', SP, ov, 'vb', g.Dv, keys, split && { left: PL, right: split[2] }))}`,
  );
  // A row's statistic from its parts' slots, in part order (the previous barrier ordered their writes).
  const combine = (row: string, slots: string, op: (a: string, b: string) => string) => `  for (var r = lane; r < ${U(DIRECT_ROWS)}; r += lanes) {
    var x = ${slots}[r];
    for (var p = 1u; p < parts; p++) { x = ${op('x', `${slots}[p * ${U(DIRECT_ROWS)} + r]`)}; }
    ${row}[r] = x;
  }`;
  const storeLse = lse
    ? `
  for (var r = lane; r < ${U(DIRECT_ROWS)}; r += lanes) {
    if (ra + r >= r0) { out_1[bh * ${U(g.Sq)} + ra + r] = row_m[r] + log_f32(row_l[r]); }
  }`
    : '';
  const body = `  let qb = ${oq.base} + ra * ${U(oq.stride)};
  let kb = ${ok.base};
  let vb = ${ov.base};
  let parts = max(1u, lanes / 16u);
  let part = lane / 16u;
  let rstep = min(lanes, 16u);
  for (var i = lane; i < ${U(DIRECT_ROWS * partsMax)}; i += lanes) {
    part_m[i] = ${f32Lit(-Infinity)};
    part_l[i] = 0.0f;
  }${
    split
      ? `
  for (var r = lane; r < ${U(DIRECT_ROWS)}; r += lanes) { row_sq[r] = pow2(-i32(f32(${oq.binding}[${U(2 * split[0])} + bh * ${U(g.Sq)} + ra + r]))); }`
      : ''
  }
${range(g.D / 8)
  .map((t) => `  let q_${t} = ${sOps.loadLeft(oq.binding, `qb + ${U(8 * t)}`, U(oq.stride))};`)
  .join('\n')}${
    split
      ? `\n${range(g.D / 8)
          .map((t) => `  let ql_${t} = ${sOps.loadLeft(oq.binding, `${U(split[0])} + qb + ${U(8 * t)}`, U(oq.stride))};`)
          .join('\n')}`
      : ''
  }
${pass1}
${combine('row_m', 'part_m', (a, b) => `max(${a}, ${b})`)}
  workgroupBarrier();
${range(g.Dv / 8)
  .map((j) => `  var o_${j} = ${oOps.zero(U(j))};`)
  .join('\n')}
${pass2}
${combine('row_l', 'part_l', (a, b) => `${a} + ${b}`)}
${fragmentsOut(oOps, 'o', g.Dv / 8, 'tile_s', keys, SS, 'out_0', g.Sq, g.Dv, (x, col) =>
  // Split: P's 2^P_SCALE and v's column exponent come off (each factor a normal f32) before / l.
  split ? `${x} * ${f32Lit(2 ** -P_SCALE)} * pow2(-i32(f32(${ov.binding}[${U(2 * split[2])} + bh * ${U(g.Dv)} + ${col}]))) / row_l[r]` : `${x} / row_l[r]`,
)}${storeLse}`;
  const main = `${EXP_FLASH}

var<workgroup> tile_s: array<f32, ${DIRECT_ROWS * SS}>;
var<workgroup> tile_p: array<f16, ${(split ? 2 : 1) * DIRECT_ROWS * SP}>;${split ? `\nvar<workgroup> row_sq: array<f32, ${DIRECT_ROWS}>;\nvar<workgroup> tile_sk: array<f32, ${keys}>;` : ''}
var<workgroup> row_m: array<f32, ${DIRECT_ROWS}>;
var<workgroup> row_l: array<f32, ${DIRECT_ROWS}>;
var<workgroup> part_m: array<f32, ${DIRECT_ROWS * partsMax}>;
var<workgroup> part_l: array<f32, ${DIRECT_ROWS * partsMax}>;

${directMain(target, `One subgroup: ${DIRECT_ROWS} query rows of one (batch, head), keys in tiles of ${keys}, two passes.`, groups, dispatch, g.Sq, body)}`;
  const helpers = [sOps.helpers(), oOps.helpers()].filter(Boolean).join('\n\n');
  // Views are read at their affine offsets, never through their element functions: those are left out.
  const kernel = flashKernel(node, inputs, target, { ...reads, helpers: '', lib: [] }, {
    name: `attention_flash${lse ? '_lse' : ''}_${split ? 'split16_f32' : 'direct_f16'}${keys === 16 ? '' : `_k${keys}`}`,
    body: helpers ? `${helpers}\n\n${main}` : main,
    workgroupSize: [sgmatLanes(target), 1, 1],
    dispatch,
    lib: [...(lse ? ['log_f32'] : []), ...(split ? ['pow2', 'f16_hi'] : [])],
  });
  const withDirectives = { ...kernel, wgsl: `${sOps.directives}\n${kernel.wgsl}` };
  return lse ? withSecondOutput(withDirectives, lse, target) : withDirectives;
}
