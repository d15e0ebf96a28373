// Flash-attention backward (f32, FlashAttention-2 style): the kernels of `attention_grad`, one per input
// `wrt`, none of which holds the [Sq, Sk] matrices in memory. Inputs q, k, v, g (the output's cotangent),
// lse (attention_lse), δ = Σ g·out per row, [mask]; P is recomputed tile by tile as e^{s − lse}.
//
// - wrt 0 (dq): a workgroup owns a tile of query rows (q pre-scaled, g's rows and the rows' lse, δ) and sweeps
//   the keys: per key tile it loads k and v, computes dS_rc = P_rc·(g_r·v_c − δ_r) into workgroup memory,
//   then dq_r += Σ_c dS_rc·k_c; finally ·scale.
// - wrt 1 (dk) and wrt 2 (dv): a workgroup owns a tile of key rows (k, and v for dk) and sweeps the queries:
//   per query tile it loads q (pre-scaled), g, lse, δ, computes P (dv) or dS (dk) transposed into workgroup
//   memory, then dv_c += Σ_r P_rc·g_r or dk_c += Σ_r dS_rc·(scale·q_r).
// - wrt 3 (the logits' cotangent dS itself, [B, H, Sq, Sk], for a mask that needs one): one invocation per
//   element, dot products from global memory.
// Every sum has a fixed order and no atomics are used: bitwise repeatable.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { dispatchGroups, f32Lit, flatKernel, groupIndexCode, loopBound, makeKernel, u32Lit } from './elementwise.js';
import { attentionGeometry, chooseFlashTiles, dotCode, loadTileCode, maskOffset, padStride, touchCode, withSecondOutput, type AttentionGeometry, type FlashTiles, queryTilePreamble } from './flash-common.js';
import type { FlashCaps } from './flash-forward.js';

const Q = 'in_0';
const K = 'in_1';
const V = 'in_2';
const G = 'in_3';
const LSE = 'in_4';
const DELTA = 'in_5';
const MASK = 'in_6';

function geometryOf(node: Node, inputs: readonly Node[]): AttentionGeometry {
  const [q, k, v] = inputs;
  return attentionGeometry(node, q, k, v, inputs[6]);
}

/** The tiles of an attention_grad node's kernel (wrt 0, 1 or 2). */
export function flashBackwardTiles(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}, kv = false): FlashTiles {
  const wrt = attrNum(node.attrs, 'wrt');
  const g = geometryOf(node, inputs);
  const ds = padStride(g.D);
  const vs = padStride(g.Dv);
  const what = `attention_grad %${node.id} (wrt ${wrt})`;
  if (wrt === 0) return chooseFlashTiles(target, what, g.Sq, g.Sk, (own, sweep) => 4 * (own * (ds + vs) + sweep * (ds + vs) + own * padStride(sweep)), caps);
  // Key tiles (k, and v for dk), query tiles (q, g), the P and/or dS tiles, lse (and δ for dk).
  const keyV = wrt === 1 || kv ? vs : 0;
  const stats = wrt === 1 || kv ? 2 : 1;
  const tiles = kv ? 2 : 1;
  return chooseFlashTiles(target, what, g.Sk, g.Sq, (own, sweep) => 4 * (own * (ds + keyV) + sweep * (ds + vs) + tiles * own * padStride(sweep) + stats * sweep), caps);
}

/**
 * The kernel of an attention_grad node. With `dv` (the wrt-2 node of the same inputs), the wrt-1 node's kernel
 * computes both: dk to out_0 and dv's value to out_1, in one sweep of the queries.
 */
export function flashBackwardKernel(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}, dv?: Node): Kernel {
  const wrt = attrNum(node.attrs, 'wrt');
  if (dv) {
    if (wrt !== 1 || dv.op !== 'attention_grad' || attrNum(dv.attrs, 'wrt') !== 2) throw new Error(`internal: %${node.id} (wrt ${wrt}) cannot also write %${dv.id}`);
    return withSecondOutput(dkdvKernel(node, inputs, target, 'kv', caps), dv, target);
  }
  if (wrt === 3) return logitsGradKernel(node, inputs, target);
  return wrt === 0 ? dqKernel(node, inputs, target, caps) : dkdvKernel(node, inputs, target, wrt === 1 ? 'k' : 'v', caps);
}

/** WGSL: `s += mask[...]` for the (b, h, query, key) given, or nothing without a mask. */
function maskAddCode(g: AttentionGeometry, i: string, j: string, indent: string): string {
  return g.maskStrides ? `\n${indent}s += ${MASK}[${maskOffset(g.maskStrides, 'b', 'h', i, j)}];` : '';
}

function dqKernel(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps): Kernel {
  const g = geometryOf(node, inputs);
  const { own: BR, sweep: BC, perRow: T, workgroup: WG } = flashBackwardTiles(node, inputs, target, caps);
  const DS = padStride(g.D);
  const VS = padStride(g.Dv);
  const SS = padStride(BC);
  const qTiles = Math.ceil(g.Sq / BR);
  const groups = g.B * g.H * qTiles;
  const dispatch = dispatchGroups(groups, target);
  const cols = Math.max(1, Math.ceil(g.D / T));
  const U = (n: number) => u32Lit(n);
  const lb = (n: number) => loopBound(n, target);
  const body = `var<workgroup> qs: array<f32, ${BR * DS}>;
var<workgroup> gs: array<f32, ${BR * VS}>;
var<workgroup> ks: array<f32, ${BC * DS}>;
var<workgroup> vs: array<f32, ${BC * VS}>;
var<workgroup> dss: array<f32, ${BR * SS}>;

// dq: ${BR} query rows x ${BC} keys per tile, ${T} invocations per row.
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${queryTilePreamble(groups, dispatch, qTiles, BR, T, g)}
${loadTileCode(target, 'qs', DS, Q, `(bh * ${U(g.Sq)} + i0) * ${U(g.D)}`, 'q_valid', BR, g.D, WG, f32Lit(g.scale), '  ')}
${loadTileCode(target, 'gs', VS, G, `(bh * ${U(g.Sq)} + i0) * ${U(g.Dv)}`, 'q_valid', BR, g.Dv, WG, undefined, '  ')}
  var lse_i = 0.0f;
  var del_i = 0.0f;
  if (row_ok) {
    lse_i = ${LSE}[bh * ${U(g.Sq)} + i];
    del_i = ${DELTA}[bh * ${U(g.Sq)} + i];
  }
  var acc: array<f32, ${cols}>;
  for (var j0 = 0u; j0 < ${lb(g.Sk)}; j0 += ${U(BC)}) {
    workgroupBarrier();
    let k_valid = min(${U(BC)}, ${U(g.Sk)} - j0);
${loadTileCode(target, 'ks', DS, K, `(bh * ${U(g.Sk)} + j0) * ${U(g.D)}`, 'k_valid', BC, g.D, WG)}
${loadTileCode(target, 'vs', VS, V, `(bh * ${U(g.Sk)} + j0) * ${U(g.Dv)}`, 'k_valid', BC, g.Dv, WG)}
    workgroupBarrier();
    for (var u = 0u; u < ${lb(BC / T)}; u++) {
      let c = tc + u * ${U(T)};
      var ds = 0.0f;
      if (row_ok && c < k_valid) {
${dotCode(target, 's', 'qs', `r * ${U(DS)}`, 'ks', `c * ${U(DS)}`, g.D, '        ')}${maskAddCode(g, 'i', 'j0 + c', '        ')}
        let p = exp_f32(s - lse_i);
${dotCode(target, 'dp', 'gs', `r * ${U(VS)}`, 'vs', `c * ${U(VS)}`, g.Dv, '        ')}
        ds = p * (dp - del_i);
      }
      dss[r * ${U(SS)} + c] = ds;
    }
    workgroupBarrier();
    for (var u = 0u; u < ${lb(cols)}; u++) {
      let d = tc + u * ${U(T)};
      if (d < ${U(g.D)}) {
        var a = acc[u];
        for (var c = 0u; c < ${lb(BC)}; c++) { a = fma(dss[r * ${U(SS)} + c], ks[c * ${U(DS)} + d], a); }
        acc[u] = a;
      }
    }
  }
  if (row_ok) {
    for (var u = 0u; u < ${lb(cols)}; u++) {
      let d = tc + u * ${U(T)};
      if (d < ${U(g.D)}) { out_0[(bh * ${U(g.Sq)} + i) * ${U(g.D)} + d] = acc[u] * ${f32Lit(g.scale)}; }
    }
  }
}`;
  return makeKernel(node, inputs, target, { name: 'attention_grad_q_flash_f32', body, workgroupSize: [WG, 1, 1], dispatch, lib: ['exp_f32'] });
}

/**
 * dk, dv, or both (`kv`: one sweep of the queries computes P and dS once and writes dk to out_0, dv to out_1).
 * Each output element sums over the query rows in order whatever the tiles, so `kv` equals the two kernels
 * bit for bit.
 */
function dkdvKernel(node: Node, inputs: readonly Node[], target: Target, which: 'k' | 'v' | 'kv', caps: FlashCaps): Kernel {
  const g = geometryOf(node, inputs);
  const { own: BK, sweep: BQ, perRow: T, workgroup: WG } = flashBackwardTiles(node, inputs, target, caps, which === 'kv');
  const dk = which !== 'v';
  const dv = which !== 'k';
  const DS = padStride(g.D);
  const VS = padStride(g.Dv);
  const PS = padStride(BQ);
  const kTiles = Math.ceil(g.Sk / BK);
  const groups = g.B * g.H * kTiles;
  const dispatch = dispatchGroups(groups, target);
  const U = (n: number) => u32Lit(n);
  const lb = (n: number) => loopBound(n, target);
  // dk sums dS·(scale·q) over the query rows (tile dst), dv sums P·g (tile pt).
  const outs = [...(dk ? [{ acc: 'acc_k', tile: 'dst', src: `qs[rr * ${U(DS)} + d]`, D: g.D }] : []), ...(dv ? [{ acc: 'acc_v', tile: 'pt', src: `gs[rr * ${U(VS)} + d]`, D: g.Dv }] : [])];
  const colsOf = (D: number) => Math.max(1, Math.ceil(D / T));
  const values = [
    ...(dk ? [`${dotCode(target, 'dp', 'gs', `rr * ${U(VS)}`, 'vs', `c * ${U(VS)}`, g.Dv, '        ')}`, '        ds = p * (dp - del_t[rr]);'] : []),
    ...(dv ? ['        pv = p;'] : []),
  ].join('\n');
  const body = `var<workgroup> ks: array<f32, ${BK * DS}>;
${dk ? `var<workgroup> vs: array<f32, ${BK * VS}>;\n` : ''}var<workgroup> qs: array<f32, ${BQ * DS}>;
var<workgroup> gs: array<f32, ${BQ * VS}>;
${outs.map((o) => `var<workgroup> ${o.tile}: array<f32, ${BK * PS}>;`).join('\n')}
var<workgroup> lse_t: array<f32, ${BQ}>;
${dk ? `var<workgroup> del_t: array<f32, ${BQ}>;\n` : ''}
// d${which}: ${BK} key rows x ${BQ} queries per tile, ${T} invocations per key row.
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${dk ? '' : `${touchCode([V, DELTA])}\n`}${groupIndexCode('grp', groups, dispatch)}
  let bh = grp / ${U(kTiles)};
  let j0 = (grp % ${U(kTiles)}) * ${U(BK)};
  let h = bh % ${U(g.H)};
  let b = bh / ${U(g.H)};
  let c = lid / ${U(T)};
  let tr = lid % ${U(T)};
  let j = j0 + c;
  let key_ok = j < ${U(g.Sk)};
  let k_valid = min(${U(BK)}, ${U(g.Sk)} - j0);
${loadTileCode(target, 'ks', DS, K, `(bh * ${U(g.Sk)} + j0) * ${U(g.D)}`, 'k_valid', BK, g.D, WG, undefined, '  ')}
${dk ? loadTileCode(target, 'vs', VS, V, `(bh * ${U(g.Sk)} + j0) * ${U(g.Dv)}`, 'k_valid', BK, g.Dv, WG, undefined, '  ') : ''}
${outs.map((o) => `  var ${o.acc}: array<f32, ${colsOf(o.D)}>;`).join('\n')}
  for (var i0 = 0u; i0 < ${lb(g.Sq)}; i0 += ${U(BQ)}) {
    workgroupBarrier();
    let q_valid = min(${U(BQ)}, ${U(g.Sq)} - i0);
${loadTileCode(target, 'qs', DS, Q, `(bh * ${U(g.Sq)} + i0) * ${U(g.D)}`, 'q_valid', BQ, g.D, WG, f32Lit(g.scale))}
${loadTileCode(target, 'gs', VS, G, `(bh * ${U(g.Sq)} + i0) * ${U(g.Dv)}`, 'q_valid', BQ, g.Dv, WG)}
    for (var x = lid; x < ${lb(BQ)}; x += ${U(WG)}) {
      var st = 0.0f;${dk ? '\n      var dt = 0.0f;' : ''}
      if (x < q_valid) {
        st = ${LSE}[bh * ${U(g.Sq)} + i0 + x];${dk ? `\n        dt = ${DELTA}[bh * ${U(g.Sq)} + i0 + x];` : ''}
      }
      lse_t[x] = st;${dk ? '\n      del_t[x] = dt;' : ''}
    }
    workgroupBarrier();
    for (var u = 0u; u < ${lb(BQ / T)}; u++) {
      let rr = tr + u * ${U(T)};
      ${[dk ? 'var ds = 0.0f;' : '', dv ? 'var pv = 0.0f;' : ''].filter(Boolean).join(' ')}
      if (key_ok && rr < q_valid) {
${dotCode(target, 's', 'qs', `rr * ${U(DS)}`, 'ks', `c * ${U(DS)}`, g.D, '        ')}${maskAddCode(g, 'i0 + rr', 'j', '        ')}
        let p = exp_f32(s - lse_t[rr]);
${values}
      }
${[dk ? `      dst[c * ${U(PS)} + rr] = ds;` : '', dv ? `      pt[c * ${U(PS)} + rr] = pv;` : ''].filter(Boolean).join('\n')}
    }
    workgroupBarrier();
${outs
  .map(
    (o) => `    for (var u = 0u; u < ${lb(colsOf(o.D))}; u++) {
      let d = tr + u * ${U(T)};
      if (d < ${U(o.D)}) {
        var a = ${o.acc}[u];
        for (var rr = 0u; rr < ${lb(BQ)}; rr++) { a = fma(${o.tile}[c * ${U(PS)} + rr], ${o.src}, a); }
        ${o.acc}[u] = a;
      }
    }`,
  )
  .join('\n')}
  }
  if (key_ok) {
${outs
  .map(
    (o, k) => `    for (var u = 0u; u < ${lb(colsOf(o.D))}; u++) {
      let d = tr + u * ${U(T)};
      if (d < ${U(o.D)}) { out_${k}[(bh * ${U(g.Sk)} + j) * ${U(o.D)} + d] = ${o.acc}[u]; }
    }`,
  )
  .join('\n')}
  }
}`;
  return makeKernel(node, inputs, target, { name: `attention_grad_${which}_flash_f32`, body, workgroupSize: [WG, 1, 1], dispatch, lib: ['exp_f32'] });
}

/** wrt 3: dS = P·(dP − δ) over [B, H, Sq, Sk], one invocation per element. */
function logitsGradKernel(node: Node, inputs: readonly Node[], target: Target): Kernel {
  const g = geometryOf(node, inputs);
  const U = (n: number) => u32Lit(n);
  const body = `    let j = i % ${U(g.Sk)};
    let row = i / ${U(g.Sk)};
    let qi = row % ${U(g.Sq)};
    let bh = row / ${U(g.Sq)};
    let h = bh % ${U(g.H)};
    let b = bh / ${U(g.H)};
${dotCode(target, 'qk', Q, `row * ${U(g.D)}`, K, `(bh * ${U(g.Sk)} + j) * ${U(g.D)}`, g.D, '    ')}
    var s = qk * ${f32Lit(g.scale)};${maskAddCode(g, 'qi', 'j', '    ')}
    let p = exp_f32(s - ${LSE}[row]);
${dotCode(target, 'dp', G, `row * ${U(g.Dv)}`, V, `(bh * ${U(g.Sk)} + j) * ${U(g.Dv)}`, g.Dv, '    ')}
    out_0[i] = p * (dp - ${DELTA}[row]);`;
  return flatKernel(node, inputs, target, 'attention_grad_logits_f32', body, { lib: ['exp_f32'] });
}
