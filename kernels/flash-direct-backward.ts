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
// The split mode (kernels/flash-split16.ts) runs the same layout on f32 operands split into scaled f16 pairs: three
// products where there was one, dS and P scaled under a-priori bounds before their own split (splitScales, below).
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { f32Lit, u32Lit, unboundedLoop } from './elementwise.js';
import { attentionGeometry, bindingOf, directReads, EXP_FLASH, flashKernel, GRAD_SLOTS, touchUnread, withSecondOutput, type FlashReads } from './flash-common.js';
import { accumulateRows, DIRECT_ROWS, directDispatch, directKeys, directMain, directOperands, directOperandsUnfit, fragmentsOut, productToScratch, scratchStride16, scratchStride32, sweepLoop, type DirectOperand, type SplitCounts } from './flash-direct-common.js';
import { gradOf, rolesOf, type FlashSgmatGrad } from './flash-sgmat-backward.js';
import { TOP, ZERO_EXPONENT } from './matmul-split16.js';
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
 * whose dv it also writes); check flashDirectBackwardUnfit first. With `split`, `attention_grad_<which>_flash_split16_f32`:
 * q, k, v and g are f32 values split into f16 pairs (kernels/flash-split16.ts; the scales below).
 */
export function flashDirectBackwardKernel(node: Node, inputs: readonly Node[], target: Target, sibling?: Node, reads: FlashReads = directReads(node), split?: SplitCounts): Kernel {
  const which = gradOf(node, sibling);
  if (!which) throw new Error(`internal: attention_grad %${node.id} has no direct kernel${sibling ? ` writing %${sibling.id}` : ''}`);
  const [q, k, v] = inputs;
  const geo = attentionGeometry(node, q, k, v, undefined);
  const loads = directGradLoads(which);
  const operands = directOperands(reads, inputs, loads, geo.H);
  if (typeof operands === 'string') throw new Error(`internal: attention_grad %${node.id} on the direct kernel: ${operands}`);
  const slots = rowSlots(which);
  const [x, y, a, b] = slots.map((slot) => operands[loads.indexOf(slot)]);
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
  // Split: each operand's lo part starts at lo(slot) of its binding; splitScales has the factors and scales.
  const lo = (slot: number) => (split ? split[slot] : 0);
  const sc = split && splitScales(which, slots, operands, loads, split, geo.Sq, geo.Sk, Dv, target);
  const tileStats =
    r.dq && !sc
      ? ''
      : `
    for (var c = lane; c < ${U(keys)}; c += lanes) {${
      r.dq ? '' : `\n      t_lse[c] = ${lseIn}[bh * ${U(geo.Sq)} + jc + c];${r.dP ? `\n      t_del[c] = ${delIn}[bh * ${U(geo.Sq)} + jc + c];` : ''}`
    }${sc ? sc.tileFactors : ''}
    }`;
  const products = [
    ...productToScratch(sOps, 's', (t) => `x_${t}`, a, 'ab', D, keys, 'tile_s', SS, split && { left: (t) => `xl_${t}`, right: lo(slots[2]) }),
    ...(r.dP ? productToScratch(pOps, 'dp', (t) => `y_${t}`, b, 'bb', Dv, keys, 'tile_dp', SS, split && { left: (t) => `yl_${t}`, right: lo(slots[3]) }) : []),
  ];
  // Split: dS and P (times the swept row's factor and the bound's scale) split into the scratches' two halves, lo
  // from LO.
  const LO = DIRECT_ROWS * SL;
  const halves = (scratch: string, at: number, v: string) => [`let ${v}h = f16_hi(${v});`, `${scratch}[r * ${U(SL)} + c] = f16(${v}h);`, `${scratch}[${U(at)} + r * ${U(SL)} + c] = f16(${v} - ${v}h);`];
  const weights = sc
    ? [
        `let s = tile_s[r * ${U(SS)} + c] * row_fx[r] * t_fa[c] * ${f32Lit(geo.scale)};`,
        `let p = select(0.0f, exp_flash(s - ${lseAt}), jc + c >= j0);`,
        ...(r.accX ? [`let w = p * (tile_dp[r * ${U(SS)} + c] * row_fy[r] * t_fb[c] - ${delAt}) * t_fa[c] * ${sc.dsScale};`, ...halves('tile_ds', LO, 'w')] : []),
        ...(r.accY ? ['let x = p * t_fb[c] * p_scale;', ...halves('tile_p', LO, 'x')] : []),
      ]
    : [
        `let s = tile_s[r * ${U(SS)} + c] * ${f32Lit(geo.scale)};`,
        `let p = select(0.0f, exp_flash(s - ${lseAt}), jc + c >= j0);`,
        ...(r.accX ? [`tile_ds[r * ${U(SL)} + c] = f16(p * (tile_dp[r * ${U(SS)} + c] - ${delAt}));`] : []),
        ...(r.accY ? [`tile_p[r * ${U(SL)} + c] = f16(p);`] : []),
      ];
  const elementwise = `    for (var e = lane; e < ${U(DIRECT_ROWS * keys)}; e += lanes) {
      let r = e / ${U(keys)};
      let c = e % ${U(keys)};
${weights.map((l) => `      ${l}`).join('\n')}
    }`;
  const accumulate = [
    ...(r.accX ? accumulateRows(xOps, 'ax', 'tile_ds', SL, a, 'ab', D, keys, split && { left: LO, right: lo(slots[2]) }) : []),
    ...(r.accY ? accumulateRows(yOps, 'ay', 'tile_p', SL, b, 'bb', Dv, keys, split && { left: LO, right: lo(slots[3]) }) : []),
  ];
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
    ...(r.accX ? [fragmentsOut(xOps, 'ax', D / 8, 'tile_s', keys, SS, 'out_0', ownLen, D, (e) => `${e} * ${f32Lit(geo.scale)}${sc ? ` * ${sc.dsUnscale}` : ''}`)] : []),
    ...(r.accY ? [fragmentsOut(yOps, 'ay', Dv / 8, 'tile_s', keys, SS, r.accX ? 'out_1' : 'out_0', ownLen, Dv, (e) => (sc ? `${e} * p_unscale` : e))] : []),
  ];
  const body = `${r.dP ? '' : `${touchUnread(reads, [V, DELTA])}\n`}  let ab = ${a.base};
  let bb = ${b.base};
  let xb = ${x.base} + ra * ${U(x.stride)};${r.dP ? `\n  let yb = ${y.base} + ra * ${U(y.stride)};` : ''}${rowStats}${sc ? sc.setup : ''}
${range(D / 8)
  .map((t) => `  let x_${t} = ${sOps.loadLeft(x.binding, `xb + ${U(8 * t)}`, U(x.stride))};`)
  .join('\n')}
${r.dP ? `${range(Dv / 8).map((t) => `  let y_${t} = ${pOps.loadLeft(y.binding, `yb + ${U(8 * t)}`, U(y.stride))};`).join('\n')}\n` : ''}${
    split
      ? `${range(D / 8)
          .map((t) => `  let xl_${t} = ${sOps.loadLeft(x.binding, `${U(lo(slots[0]))} + xb + ${U(8 * t)}`, U(x.stride))};`)
          .join('\n')}\n${r.dP ? `${range(Dv / 8).map((t) => `  let yl_${t} = ${pOps.loadLeft(y.binding, `${U(lo(slots[1]))} + yb + ${U(8 * t)}`, U(y.stride))};`).join('\n')}\n` : ''}`
      : ''
  }${[
    ...(r.accX ? range(D / 8).map((j) => `  var ax_${j} = ${xOps.zero(U(j))};`) : []),
    ...(r.accY ? range(Dv / 8).map((j) => `  var ay_${j} = ${yOps.zero(U(j))};`) : []),
  ].join('\n')}
${sweep}
${finals.join('\n')}`;
  const decls = [
    `var<workgroup> tile_s: array<f32, ${DIRECT_ROWS * SS}>;`,
    ...(r.dP ? [`var<workgroup> tile_dp: array<f32, ${DIRECT_ROWS * SS}>;`] : []),
    ...(r.accX ? [`var<workgroup> tile_ds: array<f16, ${(split ? 2 : 1) * DIRECT_ROWS * SL}>;`] : []),
    ...(r.accY ? [`var<workgroup> tile_p: array<f16, ${(split ? 2 : 1) * DIRECT_ROWS * SL}>;`] : []),
    ...(r.dq ? [`var<workgroup> row_lse: array<f32, ${DIRECT_ROWS}>;`, `var<workgroup> row_del: array<f32, ${DIRECT_ROWS}>;`] : [`var<workgroup> t_lse: array<f32, ${keys}>;`, ...(r.dP ? [`var<workgroup> t_del: array<f32, ${keys}>;`] : [])]),
    ...(sc ? sc.decls(keys) : []),
  ];
  const [own, swept] = r.dq ? ['query', 'keys'] : ['key', 'queries'];
  const main = `${EXP_FLASH}

${decls.join('\n')}

${directMain(target, `d${which}: one subgroup, ${DIRECT_ROWS} ${own} rows of one (batch, head), ${swept} in tiles of ${keys}.`, groups, dispatch, ownLen, body)}`;
  const used = [sOps, ...(r.dP ? [pOps] : []), ...(r.accX ? [xOps] : []), ...(r.accY ? [yOps] : [])];
  const helpers = used.map((o) => o.helpers()).filter(Boolean).join('\n\n');
  // Views are read at their affine offsets, never through their element functions: those are left out.
  const kernel = flashKernel(node, inputs, target, { ...reads, helpers: '', lib: [] }, {
    name: `attention_grad_${which}_flash_${split ? 'split16_f32' : 'direct_f16'}${keys === 16 ? '' : `_k${keys}`}`,
    body: helpers ? `${helpers}\n\n${main}` : main,
    workgroupSize: [sgmatLanes(target), 1, 1],
    dispatch,
    ...(split ? { lib: ['pow2', 'f16_hi'] } : {}),
  });
  const withDirectives = { ...kernel, wgsl: `${sOps.directives}\n${kernel.wgsl}` };
  return sibling ? withSecondOutput(withDirectives, sibling, target) : withDirectives;
}

/**
 * The split kernels' scales (kernels/flash-split16.ts). Every operand row carries its split exponent s (|x|·2^s <
 * 2^TOP): S and dP come out of the pair products times their rows' factors 2^-s. dS and P are split again before
 * their products with a's and b's rows, each times its swept row's factor 2^-s_c (a's and b's row scales folded in,
 * so neither needs a column split) and a power of two that brings an a-priori bound just below 2^TOP:
 *   |dP_ij| ≤ Σ|g_i||v_j| < Dv·2^(2·TOP − s_gi − s_vj) and |δ_i| = |Σ_d o_id·g_id| < Dv·2^(2·TOP − s_gi − min s_v)
 *   (|o_id| ≤ max_j |v_jd|), so |dS_ij|·2^-s_c < 2Dv·2^(2·TOP − s_gi − min s_v − s_c), with 2Dv ≤ 2^L:
 *   dq (rows are queries, a = k, b = v): per row, 2^(s_gi + min s_k + min s_v − TOP − L);
 *   dk (rows are keys, a = q, b = g): one per (batch, head), 2^(min s_v + min_i (s_qi + s_gi) − TOP − L);
 *   dv: P·2^-s_gi ≤ 2^-min s_g, so 2^(TOP + min s_g).
 * A loose bound costs nothing but dS's smallest values: lo keeps absolute precision to 2^-24 of f16's unit, 2^-38 of
 * the bound (test/kernels/flash-split16-backward.test.ts bounds the error). The minima run over every row of the
 * (batch, head); zero rows carry ZERO_EXPONENT, the largest, so they never loosen them. Exponents clamp to pow2's
 * domain, which only data spanning more than f32's range reaches.
 */
function splitScales(
  which: FlashSgmatGrad,
  slots: readonly [number, number, number, number],
  operands: readonly DirectOperand[],
  loads: readonly number[],
  split: SplitCounts,
  Sq: number,
  Sk: number,
  Dv: number,
  target: Target,
) {
  const U = u32Lit;
  const r = rolesOf(which);
  const [ownLen, sweepLen] = r.dq ? [Sq, Sk] : [Sk, Sq];
  const L = Math.ceil(Math.log2(2 * Dv));
  // The exponent of row `row` (of this (batch, head)) of the operand in slot `slot`.
  const exp = (slot: number, len: number) => (row: string) => {
    const o = operands[loads.indexOf(slot)];
    return `i32(f32(${o.binding}[${U(2 * split[slot])} + bh * ${U(len)} + ${row}]))`;
  };
  const [ex, ey, ea, eb] = [exp(slots[0], ownLen), exp(slots[1], ownLen), exp(slots[2], sweepLen), exp(slots[3], sweepLen)];
  const lanes = sgmatLanes(target);
  // The minima: [name, rows, exponent of row j], each over every row of the (batch, head), across the lanes.
  type Min = readonly [string, number, (j: string) => string];
  const both: Min = ['m_ab', sweepLen, (j) => `${ea(j)} + ${eb(j)}`];
  const mins: Min[] = r.dq
    ? [
        ['m_a', sweepLen, ea],
        ['m_b', sweepLen, eb],
      ]
    : [...(r.accX ? [['m_y', ownLen, ey] as Min, both] : []), ...(r.accY ? [['m_b', sweepLen, eb] as Min] : [])];
  const NONE = 4 * ZERO_EXPONENT;
  const clampExp = (e: string) => `clamp(${e}, -126, 126)`;
  const minimum = `${mins.map(([m, len, e]) => `
  var ${m} = ${NONE};
  for (var j = lane; j < ${unboundedLoop(len, target)}; j += lanes) { ${m} = min(${m}, ${e('j')}); }`).join('')}
${mins.map(([m], i) => `  red_e[${U(i * lanes)} + lane] = ${m};`).join('\n')}
  workgroupBarrier();
  for (var p = 0u; p < lanes; p++) {
${mins.map(([m], i) => `    ${m} = min(${m}, red_e[${U(i * lanes)} + p]);`).join('\n')}
  }`;
  const rowFactors = `
  for (var r = lane; r < ${U(DIRECT_ROWS)}; r += lanes) {
    row_fx[r] = pow2(-${ex('ra + r')});${r.dP ? `\n    row_fy[r] = pow2(-${ey('ra + r')});` : ''}${
      r.dq ? `\n    let e = ${clampExp(`${ey('ra + r')} + m_a + m_b - ${TOP + L}`)};\n    row_ex[r] = pow2(e);\n    row_ux[r] = pow2(-e);` : ''
    }
  }`;
  const uniform = [
    ...(!r.dq && r.accX ? [`  let e_ds = ${clampExp(`m_y + m_ab - ${TOP + L}`)};`, '  let ds_scale = pow2(e_ds);', '  let ds_unscale = pow2(-e_ds);'] : []),
    ...(r.accY ? [`  let e_p = ${clampExp(`m_b + ${TOP}`)};`, '  let p_scale = pow2(e_p);', '  let p_unscale = pow2(-e_p);'] : []),
  ];
  return {
    setup: `${minimum}${rowFactors}${uniform.length ? `\n${uniform.join('\n')}` : ''}`,
    tileFactors: `\n      t_fa[c] = pow2(-${ea('jc + c')});\n      t_fb[c] = pow2(-${eb('jc + c')});`,
    dsScale: r.dq ? 'row_ex[r]' : 'ds_scale',
    dsUnscale: r.dq ? 'row_ux[r]' : 'ds_unscale',
    decls: (keys: number) => [
      `var<workgroup> red_e: array<i32, ${mins.length * lanes}>;`,
      `var<workgroup> row_fx: array<f32, ${DIRECT_ROWS}>;`,
      ...(r.dP ? [`var<workgroup> row_fy: array<f32, ${DIRECT_ROWS}>;`] : []),
      ...(r.dq ? [`var<workgroup> row_ex: array<f32, ${DIRECT_ROWS}>;`, `var<workgroup> row_ux: array<f32, ${DIRECT_ROWS}>;`] : []),
      `var<workgroup> t_fa: array<f32, ${keys}>;`,
      `var<workgroup> t_fb: array<f32, ${keys}>;`,
    ],
  };
}
