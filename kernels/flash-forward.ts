// Flash-attention forward (f32): softmax(q·kᵀ·scale [+ mask])·v without the [Sq, Sk] scores in memory, and
// the same sweep for attention_lse (the row logsumexp the backward reuses).
//
// A workgroup owns a tile of query rows of one (batch, head), q pre-scaled in workgroup memory, and sweeps
// the keys in tiles (kernels/flash-common.ts for the layout). Per key tile:
//   1. load k's tile; invocation (r, tc) computes the scores s_rc (dot over D in order, + mask) of its
//      columns c = tc, tc + perRow, … into workgroup memory, -inf past Sk;
//   2. the row's tile max from the perRow partial maxima (read in order by every invocation of the row), the
//      running max m_new = max(m, tile max), α = e^{m − m_new} (0 while nothing was seen);
//   3. v's tile replaces k's; p = e^{s − m_new} (0 where s = -inf, so a fully masked tile adds nothing);
//      l = α·l + Σ p (partials in order);
//   4. each invocation rescales its output columns d = tc, tc + perRow, … by α and adds Σ_c p_rc·v_cd.
// At the end out = acc / l and lse = m + ln l. A row masked entirely gives 0/0 = NaN (and lse = -inf), as the
// reference. Four barriers per key tile, no atomics: bitwise repeatable.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { dispatchGroups, f32Lit, loopBound, makeKernel, u32Lit } from './elementwise.js';
import { attentionGeometry, chooseFlashTiles, dotCode, withSecondOutput, loadTileCode, maskOffset, padStride, type FlashTiles, queryTilePreamble } from './flash-common.js';
import { combineCode } from './reduce.js';

export interface FlashCaps {
  readonly own?: number;
  readonly sweep?: number;
}

/** The tiles the forward (or attention_lse) uses for this node. */
export function flashForwardTiles(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}): FlashTiles {
  const lseOnly = node.op === 'attention_lse';
  const [q, k] = inputs;
  const D = q.shape[3];
  const Dv = lseOnly ? 0 : inputs[2].shape[3];
  const qs = padStride(D);
  const kvs = padStride(Math.max(D, Dv));
  return chooseFlashTiles(target, `${node.op} %${node.id}`, q.shape[2], k.shape[2], (own, sweep, wg) => 4 * (own * qs + sweep * kvs + own * padStride(sweep) + 2 * wg), caps);
}

/**
 * The kernel of an `attention` node (inputs q, k, v, [mask]) or an `attention_lse` node (q, k, [mask]). With
 * `lse` (an attention_lse node of the same q, k, mask and scale), the attention kernel also writes that node's
 * value, the m + ln l it has at the end anyway: the backward needs no sweep of its own for it.
 */
export function flashForwardKernel(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}, lse?: Node): Kernel {
  const lseOnly = node.op === 'attention_lse';
  if (lse && (lseOnly || lse.op !== 'attention_lse')) throw new Error(`internal: %${node.id} ${node.op} cannot also write %${lse.id} ${lse.op}`);
  const [q, k] = inputs;
  const v = lseOnly ? undefined : inputs[2];
  const mask = lseOnly ? inputs[2] : inputs[3];
  const maskName = lseOnly ? 'in_2' : 'in_3';
  const g = attentionGeometry(node, q, k, v, mask);
  const { own: BR, sweep: BC, perRow: T, workgroup: WG } = flashForwardTiles(node, inputs, target, caps);
  const QS = padStride(g.D);
  const KS = padStride(Math.max(g.D, g.Dv));
  const PS = padStride(BC);
  const qTiles = Math.ceil(g.Sq / BR);
  const groups = g.B * g.H * qTiles;
  const dispatch = dispatchGroups(groups, target);
  const cols = Math.max(1, Math.ceil(g.Dv / T));
  const U = (n: number) => u32Lit(n);
  const lb = (n: number) => loopBound(n, target);
  const maxC = (a: string, b: string) => combineCode('max', a, b);
  const NEG_INF = f32Lit(-Infinity);
  const maskAdd = g.maskStrides ? `\n        if (row_ok) { s += ${maskName}[${maskOffset(g.maskStrides, 'b', 'h', 'i', 'j0 + c')}]; }` : '';

  const loadV = lseOnly ? '' : `    // v's tile replaces k's (every score of this tile is computed).\n${loadTileCode(target, 'kv', KS, 'in_2', `(bh * ${U(g.Sk)} + j0) * ${U(g.Dv)}`, 'k_valid', BC, g.Dv, WG)}\n`;
  const accumulate = lseOnly
    ? ''
    : `    for (var u = 0u; u < ${lb(cols)}; u++) {
      let d = tc + u * ${U(T)};
      if (d < ${U(g.Dv)}) {
        var a = acc[u] * alpha;
        for (var c = 0u; c < ${lb(BC)}; c++) { a = fma(ps[r * ${U(PS)} + c], kv[c * ${U(KS)} + d], a); }
        acc[u] = a;
      }
    }
`;
  const storeLse = (out: string) => `    if (tc == 0u) { ${out}[bh * ${U(g.Sq)} + i] = m + log_f32(l); }`;
  const store = lseOnly
    ? storeLse('out_0')
    : `    for (var u = 0u; u < ${lb(cols)}; u++) {
      let d = tc + u * ${U(T)};
      if (d < ${U(g.Dv)}) { out_0[(bh * ${U(g.Sq)} + i) * ${U(g.Dv)} + d] = acc[u] / l; }
    }${lse ? `
${storeLse('out_1')}` : ''}`;

  const body = `var<workgroup> qs: array<f32, ${BR * QS}>;
var<workgroup> kv: array<f32, ${BC * KS}>;
var<workgroup> ps: array<f32, ${BR * PS}>;
var<workgroup> red_max: array<f32, ${WG}>;
var<workgroup> red_sum: array<f32, ${WG}>;

// ${BR} query rows x ${BC} keys per tile, ${T} invocations per row.
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${queryTilePreamble(groups, dispatch, qTiles, BR, T, g)}
${loadTileCode(target, 'qs', QS, 'in_0', `(bh * ${U(g.Sq)} + i0) * ${U(g.D)}`, 'q_valid', BR, g.D, WG, f32Lit(g.scale), '  ')}
  var m = ${NEG_INF};
  var l = 0.0f;
${lseOnly ? '' : `  var acc: array<f32, ${cols}>;\n`}  for (var j0 = 0u; j0 < ${lb(g.Sk)}; j0 += ${U(BC)}) {
    workgroupBarrier();
    let k_valid = min(${U(BC)}, ${U(g.Sk)} - j0);
${loadTileCode(target, 'kv', KS, 'in_1', `(bh * ${U(g.Sk)} + j0) * ${U(g.D)}`, 'k_valid', BC, g.D, WG)}
    workgroupBarrier();
    var pm = ${NEG_INF};
    for (var u = 0u; u < ${lb(BC / T)}; u++) {
      let c = tc + u * ${U(T)};
      var s = ${NEG_INF};
      if (c < k_valid) {
${dotCode(target, 'dot', 'qs', `r * ${U(QS)}`, 'kv', `c * ${U(KS)}`, g.D, '        ')}
        s = dot;${maskAdd}
        pm = ${maxC('pm', 's')};
      }
      ps[r * ${U(PS)} + c] = s;
    }
    red_max[lid] = pm;
    workgroupBarrier();
    var mt = red_max[r * ${U(T)}];
    for (var x = 1u; x < ${lb(T)}; x++) { mt = ${maxC('mt', `red_max[r * ${U(T)} + x]`)}; }
    let mn = ${maxC('m', 'mt')};
    // e^{m_old - m_new}; 0 while nothing was seen (m_old = -inf).
    let alpha = select(exp_f32(m - mn), 0.0f, m == ${NEG_INF});
${loadV}    var psum = 0.0f;
    for (var u = 0u; u < ${lb(BC / T)}; u++) {
      let c = r * ${U(PS)} + tc + u * ${U(T)};
      let s = ps[c];
      let p = select(exp_f32(s - mn), 0.0f, s == ${NEG_INF});
      ps[c] = p;
      psum += p;
    }
    red_sum[lid] = psum;
    workgroupBarrier();
    var st = red_sum[r * ${U(T)}];
    for (var x = 1u; x < ${lb(T)}; x++) { st += red_sum[r * ${U(T)} + x]; }
    l = l * alpha + st;
    m = mn;
${accumulate}  }
  if (row_ok) {
${store}
  }
}`;
  const name = lseOnly ? 'attention_lse_flash_f32' : lse ? 'attention_flash_lse_f32' : 'attention_flash_f32';
  const kernel = makeKernel(node, inputs, target, { name, body, workgroupSize: [WG, 1, 1], dispatch, lib: ['is_nan', 'exp_f32', ...(lseOnly || lse ? ['log_f32'] : [])] });
  return lse ? withSecondOutput(kernel, lse, target) : kernel;
}
