// A tensor-core flash-attention forward that loads its fragments straight from q, k and v in f16 storage
// (Target.tuning.flashDirect), `attention_flash_direct_f16`: softmax(q·kᵀ·scale)·v, and the sibling attention_lse.
// On the H200 the staged tensor-core kernels (kernels/flash-sgmat.ts) ran 2.6–3.5x slower than the f32 flash
// kernels, and Dawn's subgroup matrices reached 485–587 TFLOP/s with fragments loaded from storage against 35–100
// with a barrier and fragment loads from workgroup memory per step (scripts/sgmat-ceiling.mjs; docs/perf.md,
// session 13). Unmeasured on NVIDIA: offered to `visft tune`.
//
// One subgroup per workgroup owns 16 query rows of one (batch, head), so its barriers synchronise one subgroup.
// - q·kᵀ on the 16x8x8 config: head dims that are multiples of 8 (EVA-G's 88, EVA-E's 112) need no padding, so no
//   fragment reads past a row. q's D/8 left fragments are loaded once; kᵀ's right fragments are loaded
//   column-major from k's rows in place.
// - Two passes over the keys, in tiles of 16: the first takes each row's max of s·scale; the second computes
//   p = e^{s·scale − max} rounded to f16 into a 16x16 scratch, sums the rounded p into l, and accumulates P·v on the
//   16x8x16 config into the output's Dv/8 result fragments, which stay in registers: with the final max known, no
//   tile rescales them. q·kᵀ is computed twice (three products' work instead of two) to avoid the rescaling round
//   trips through workgroup memory that bound the staged kernel.
// - Ragged edges: a row tile past Sq reads the last 16 rows and keeps only its own; a key tile past Sk reads the
//   last 16 keys and counts only those not seen before. So Sq and Sk must be at least 16.
// At the end out = O / l and lse = max + ln l (l sums the rounded weights, so out weighs exactly what it sums, as the
// staged kernel does). q, k and v must be stored as f16 (Kernel.halfOnly: the schedule runs the fallback where one is
// not). No mask, no views.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import { isExactHalf } from '../compiler/codegen/half.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { dispatchGroups, f32Lit, u32Lit, unboundedLoop } from './elementwise.js';
import { attentionGeometry, directReads, EXP_FLASH, flashKernel, withSecondOutput } from './flash-common.js';
import { PAD16, PAD32 } from './flash-sgmat-common.js';
import { nativeSgmat, sgmatConfig, sgmatIds, sgmatLanes, sgmatOps, sgmatSpelling } from './sgmat.js';

const ROWS = 16;
const KEYS = 16;

/** Why the kernel cannot compute this attention node (inputs q, k, v) on `target`, or undefined. */
export function flashDirectUnfit(graph: Graph, node: Node, target: Target, sibling?: Node): string | undefined {
  if (node.op !== 'attention') return `${node.op} is not attention`;
  if (sibling && sibling.op !== 'attention_lse') return `its sibling is ${sibling.op}`;
  if (node.inputs.length !== 3) return 'a mask';
  if (!sgmatConfig(target, 16, 8, 8) || !sgmatConfig(target, 16, 8, 16)) return 'the target lists no f16 x f16 -> f32 16x8x8 and 16x8x16 subgroup-matrix configs';
  const [q, k, v] = node.inputs.map((i) => graph.node(i));
  if (![q, k, v].every((x) => isExactHalf(graph, x.id))) return 'q, k or v is not exactly f16';
  const g = attentionGeometry(node, q, k, v, undefined);
  if (g.D % 8 || g.Dv % 8) return `head dims ${g.D} and ${g.Dv} are not multiples of 8`;
  if (g.Sq < ROWS || g.Sk < KEYS) return `fewer than ${ROWS} queries or ${KEYS} keys`;
  return undefined;
}

/** The `attention_flash_direct_f16` kernel of an attention node (and its attention_lse sibling); check flashDirectUnfit first. */
export function flashDirectForwardKernel(node: Node, inputs: readonly Node[], target: Target, lse?: Node): Kernel {
  const [q, k, v] = inputs;
  const g = attentionGeometry(node, q, k, v, undefined);
  const U = u32Lit;
  const NEG_INF = f32Lit(-Infinity);
  const spelling = sgmatSpelling(target);
  const sOps = sgmatOps({ m: 16, n: 8, k: 8 }, spelling, 2, 'sgs');
  const oOps = sgmatOps({ m: 16, n: 8, k: 16 }, spelling, g.Dv / 8, 'sgo');
  const lanes = sgmatLanes(target);
  const tiles = Math.ceil(g.Sq / ROWS);
  const groups = g.B * g.H * tiles;
  const [gy, gz] = dispatchGroups(groups, target);
  // Scratch row strides (16-byte aligned rows, off one bank): f32 scores and output, f16 weights.
  const SS = KEYS + PAD32;
  const SP = KEYS + PAD16;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  // Scores of keys jc … jc + 15 into the scratch: two 16x8 result fragments, D/8 products each.
  const scores = [
    ...range(2).map((c) => `var s_${c} = ${sOps.zero(U(c))};`),
    ...range(g.D / 8).flatMap((t) => range(2).map((c) => `s_${c} = ${sOps.multiplyAccumulate(`q_${t}`, sOps.loadRight('in_1', `kb + (jc + ${U(8 * c)}) * ${U(g.D)} + ${U(8 * t)}`, U(g.D), true), `s_${c}`)};`)),
    ...range(2).map((c) => sOps.store('tile_s', U(8 * c), `s_${c}`, U(SS))),
  ];
  const keyLoop = (body: string) => `  for (var j0 = 0u; j0 < ${unboundedLoop(g.Sk, target)}; j0 += ${U(KEYS)}) {
    // The tile's keys: the last 16 where it would pass Sk; those before j0 were counted already.
    let jc = min(j0, ${U(g.Sk - KEYS)});
${body}
  }`;
  // A lane's rows: r = lane, lane + lanes, … (each row has one owner, so its statistics need no barrier).
  const ownRows = (lines: string[]) => [`    for (var r = lane; r < ${U(ROWS)}; r += lanes) {`, ...lines.map((l) => `      ${l}`), '    }'].join('\n');
  const scoreOf = `let s = tile_s[r * ${U(SS)} + j] * ${f32Lit(g.scale)};`;
  const counted = 'let counted = jc + j >= j0;';
  const pass1 = keyLoop(`${scores.map((l) => `    ${l}`).join('\n')}
    workgroupBarrier();
${ownRows([`var mx = row_m[r];`, `for (var j = 0u; j < ${U(KEYS)}; j++) {`, `  ${scoreOf}`, `  ${counted}`, `  mx = select(mx, max(mx, s), counted);`, '}', 'row_m[r] = mx;'])}
    workgroupBarrier();`);
  const pv = [
    `let p = ${oOps.loadLeft('tile_p', '0u', U(SP))};`,
    ...range(g.Dv / 8).map((j) => `o_${j} = ${oOps.multiplyAccumulate('p', oOps.loadRight('in_2', `vb + jc * ${U(g.Dv)} + ${U(8 * j)}`, U(g.Dv)), `o_${j}`)};`),
  ];
  const pass2 = keyLoop(`${scores.map((l) => `    ${l}`).join('\n')}
    workgroupBarrier();
${ownRows([
  `let mx = row_m[r];`,
  `var l = row_l[r];`,
  `for (var j = 0u; j < ${U(KEYS)}; j++) {`,
  `  ${scoreOf}`,
  `  ${counted}`,
  `  let p = f16(select(0.0f, exp_flash(s - mx), counted));`,
  `  tile_p[r * ${U(SP)} + j] = p;`,
  '  l += f32(p);',
  '}',
  'row_l[r] = l;',
])}
    workgroupBarrier();
${pv.map((l) => `    ${l}`).join('\n')}`);
  // The output, two fragments at a time through the scratch's 16 columns.
  const finals = range(Math.ceil(g.Dv / KEYS))
    .map((c) => {
      const frags = range(Math.min(2, g.Dv / 8 - 2 * c)).map((x) => 2 * c + x);
      return `  workgroupBarrier();
${frags.map((j) => `  ${oOps.store('tile_s', U(8 * (j - 2 * c)), `o_${j}`, U(SS))}`).join('\n')}
  workgroupBarrier();
  for (var r = lane; r < ${U(ROWS)}; r += lanes) {
    let row = ra + r;
    if (row >= r0) {
      for (var e = 0u; e < ${U(8 * frags.length)}; e++) { out_0[(bh * ${U(g.Sq)} + row) * ${U(g.Dv)} + ${U(16 * c)} + e] = tile_s[r * ${U(SS)} + e] / row_l[r]; }
    }
  }`;
    })
    .join('\n');
  const storeLse = lse
    ? `
  for (var r = lane; r < ${U(ROWS)}; r += lanes) {
    if (ra + r >= r0) { out_1[bh * ${U(g.Sq)} + ra + r] = row_m[r] + log_f32(row_l[r]); }
  }`
    : '';
  const ids = sgmatIds(nativeSgmat(target), lanes);
  const main = `${EXP_FLASH}

var<workgroup> tile_s: array<f32, ${ROWS * SS}>;
var<workgroup> tile_p: array<f16, ${ROWS * SP}>;
var<workgroup> row_m: array<f32, ${ROWS}>;
var<workgroup> row_l: array<f32, ${ROWS}>;

// One subgroup: ${ROWS} query rows of one (batch, head), keys in tiles of ${KEYS}, two passes.
@compute @workgroup_size(${lanes}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${ids.params}) {
  let g = wid.z * ${U(gy)} + wid.y;
  if (g >= ${U(groups)}) { return; }
${ids.code}  let bh = g / ${U(tiles)};
  // The tile's first row, and the first row it reads (the last 16 where it would pass Sq).
  let r0 = (g % ${U(tiles)}) * ${U(ROWS)};
  let ra = min(r0, ${U(g.Sq - ROWS)});
  let qb = (bh * ${U(g.Sq)} + ra) * ${U(g.D)};
  let kb = bh * ${U(g.Sk * g.D)};
  let vb = bh * ${U(g.Sk * g.Dv)};
  for (var r = lane; r < ${U(ROWS)}; r += lanes) {
    row_m[r] = ${NEG_INF};
    row_l[r] = 0.0f;
  }
${range(g.D / 8)
  .map((t) => `  let q_${t} = ${sOps.loadLeft('in_0', `qb + ${U(8 * t)}`, U(g.D))};`)
  .join('\n')}
${pass1}
${range(g.Dv / 8)
  .map((j) => `  var o_${j} = ${oOps.zero(U(j))};`)
  .join('\n')}
${pass2}
${finals}${storeLse}
}`;
  const helpers = [sOps.helpers(), oOps.helpers()].filter(Boolean).join('\n\n');
  const kernel = flashKernel(node, inputs, target, directReads(node), {
    name: lse ? 'attention_flash_lse_direct_f16' : 'attention_flash_direct_f16',
    body: helpers ? `${helpers}\n\n${main}` : main,
    workgroupSize: [lanes, 1, 1],
    dispatch: [1, gy, gz],
    lib: lse ? ['log_f32'] : [],
  });
  const withDirectives = { ...kernel, wgsl: `${sOps.directives}\n${kernel.wgsl}` };
  return lse ? withSecondOutput(withDirectives, lse, target) : withDirectives;
}
