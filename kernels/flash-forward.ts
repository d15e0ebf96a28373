// Flash-attention forward (f32): softmax(q·kᵀ·scale [+ mask])·v without the [Sq, Sk] scores in memory, and
// the same sweep for attention_lse (the row logsumexp the backward reuses).
//
// Each invocation owns `rows` query rows of one (batch, head) (kernels/flash-common.ts for the layout): their
// pre-scaled q, output accumulators, running max m and sum l live in registers. The workgroup sweeps the keys
// in tiles loaded together into workgroup memory (k and v as vec4s, coalesced; the mask's tile too). Per key
// tile, for each owned row:
//   1. the scores s_c against every key c of the tile (c unrolled: each q vec4 loaded serves all of them, each
//      key vec4 serves every owned row), + mask, -inf past Sk;
//   2. m_new = max(m, max_c s_c), α = e^{m − m_new} (0 while nothing was seen), p_c = e^{s_c − m_new} (0 where
//      s = -inf, so a fully masked tile adds nothing), l = α·l + Σ_c p_c;
//   3. the output rescaled by α plus Σ_c p_c·v_c.
// Two barriers per key tile, no reductions across invocations but the subgroup sums of split rows. At the end
// out = acc / l and lse = m + ln l. A row masked entirely gives 0/0 = NaN (and lse = -inf), as the reference.
// Fixed-order sums: bitwise repeatable.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { dispatchGroups, f32Lit, u32Lit } from './elementwise.js';
import {
  accumulateRowsCode,
  attentionGeometry,
  bindingOf,
  chooseRowTiles,
  directReads,
  dotRowsCode,
  EXP_FLASH,
  flashKernel,
  laneValuesCode,
  laneVec4s,
  loadMaskTileCode,
  loadVec4RowCode,
  loadVec4TileCode,
  maskOffset,
  maskTileFloats,
  ownedRowsPreamble,
  rowSource,
  storeVec4RowCode,
  sweepLoopCode,
  tileSource,
  tileVec4s,
  withSecondOutput,
  withSubgroups,
  withVectorReads,
  type FlashCaps,
  type FlashReads,
  type FlashTiles,
  type SweepChunks,
} from './flash-common.js';
import { flashBlockedKernel } from './flash-blocked.js';
import { combineCode } from './reduce.js';

export type { FlashCaps, SweepChunks } from './flash-common.js';

/**
 * Where a chunked forward stores its partial states in its one output [words]: per chunk c and row r (of the
 * B·H·Sq rows), the unnormalised output at acc(c, r)·Dv (none for attention_lse), the running max at m(c, r) and the
 * sum at l(c, r).
 */
export function partLayout(chunks: number, rows: number, Dv: number) {
  const at = (c: string, r: string) => `(${c}) * ${u32Lit(rows)} + ${r}`;
  const mBase = chunks * rows * Dv;
  const lBase = mBase + chunks * rows;
  return {
    words: lBase + chunks * rows,
    acc: at,
    m: (c: string, r: string) => `${u32Lit(mBase)} + ${at(c, r)}`,
    l: (c: string, r: string) => `${u32Lit(lBase)} + ${at(c, r)}`,
  };
}

/** The tiles the forward (or attention_lse) uses for this node. */
export function flashForwardTiles(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}): FlashTiles {
  const lseOnly = node.op === 'attention_lse';
  const [q, k] = inputs;
  const [D, Dv] = [q.shape[3], lseOnly ? 0 : inputs[2].shape[3]];
  const masked = (lseOnly ? inputs[2] : inputs[3]) !== undefined;
  // Workgroup memory: the k and v tiles (and the mask's). Private per owned row: q, the output, the tile's scores.
  const bytes = (own: number, sweep: number, split: number) => 16 * sweep * (tileVec4s(D, split) + tileVec4s(Dv, split)) + (masked ? 4 * maskTileFloats(own, sweep) : 0);
  const rowFloats = (sweep: number, split: number) => 4 * (laneVec4s(D, split) + laneVec4s(Dv, split)) + sweep;
  return chooseRowTiles(target, `${node.op} %${node.id}`, q.shape[2], k.shape[2], bytes, rowFloats, caps);
}

/**
 * The kernel of an `attention` node (inputs q, k, v, [mask]) or an `attention_lse` node (q, k, [mask]). With
 * `lse` (an attention_lse node of the same q, k, mask and scale), the attention kernel also writes that node's
 * value, the m + ln l it has at the end anyway: the backward needs no sweep of its own for it. `reads`: q, k, v
 * through views (compiler/codegen/attention-views.ts) instead of their bindings. With `chunks`, one grid per chunk of
 * the keys, storing the rows' partial states (partLayout) for kernels/flash-sweep-split.ts to combine.
 */
export function flashForwardKernel(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}, lse?: Node, given: FlashReads = directReads(node), chunks?: SweepChunks): Kernel {
  const lseOnly = node.op === 'attention_lse';
  // q, k (and v) rows as vec4s where the head dim allows.
  const reads = target.tuning?.vectorLoads === false ? given : withVectorReads(given, inputs, lseOnly ? [0, 1] : [0, 1, 2]);
  if (lse && (lseOnly || lse.op !== 'attention_lse' || chunks)) throw new Error(`internal: %${node.id} ${node.op} cannot also write %${lse.id} ${lse.op}${chunks ? ' in chunks' : ''}`);
  // The register-blocked variant (kernels/flash-blocked.ts) where a tuning run asks for it and it applies.
  const blocked = target.tuning?.flashBlocked && !target.isFallbackAdapter && !chunks ? flashBlockedKernel(node, inputs, target, lse, given) : undefined;
  if (blocked) return blocked;
  const [q, k] = inputs;
  const v = lseOnly ? undefined : inputs[2];
  const mask = lseOnly ? inputs[2] : inputs[3];
  const maskName = mask ? bindingOf(reads, lseOnly ? 2 : 3) : '';
  const g = attentionGeometry(node, q, k, v, mask);
  const tiles = flashForwardTiles(node, inputs, target, caps);
  const { own: BR, sweep: BC, rows: RM, split, workgroup: WG } = tiles;
  const slots = WG / split;
  // The split lanes of a row share its exponentials (Target.tuning.flashShareExp).
  const share = target.tuning?.flashShareExp === true;
  const DS = tileVec4s(g.D, split);
  const VS = tileVec4s(g.Dv, split);
  const qTiles = Math.ceil(g.Sq / BR);
  const groups = g.B * g.H * qTiles;
  const count = chunks?.count ?? 1;
  const dispatch = dispatchGroups(groups * count, target);
  const U = (n: number) => u32Lit(n);
  const NEG_INF = f32Lit(-Infinity);
  const keys = Array.from({ length: BC }, (_, c) => c);
  const owned = Array.from({ length: RM }, (_, r) => r);
  const maxC = (a: string, b: string) => combineCode('max', a, b);
  const each = (f: (r: number) => string) => owned.map(f).join('\n');
  const rowBase = (r: number, D: number) => `(bh * ${U(g.Sq)} + i${r}) * ${U(D)}`;
  const ms = g.maskStrides;
  const loadMask = ms
    ? `\n${loadMaskTileCode(target, maskName, BR, BC, WG, 'own_valid', 'k_valid', (o, c) => maskOffset(ms, 'b', 'h', `own0 + ${o}`, `j0 + ${c}`))}`
    : '';
  // The mask's entry (0 outside the problem) is added to every score; scores of keys past Sk (only in the last
  // tile) are -inf.
  const softmax = (r: number) => `${ms ? `${keys.map((c) => `    s${r}_${c} += mt[${U(r * slots * (BC + 1) + c)} + mrow];`).join('\n')}\n` : ''}${keys
    .slice(1)
    .map((c) => `    s${r}_${c} = select(${NEG_INF}, s${r}_${c}, ${U(c)} < k_valid);`)
    .join('\n')}
    var mt${r} = s${r}_0;
${keys
  .slice(1)
  .map((c) => `    mt${r} = ${maxC(`mt${r}`, `s${r}_${c}`)};`)
  .join('\n')}
    let mn${r} = ${maxC(`m${r}`, `mt${r}`)};
    // e^{m_old - m_new}; 0 while nothing was seen (m_old = -inf).
    let alpha${r} = select(exp_flash(m${r} - mn${r}), 0.0f, m${r} == ${NEG_INF});
${laneValuesCode(BC, split, share, (c) => `p${r}_${c}`, (c) => [`s${r}_${c}`], ([x]) => `select(exp_flash(${x} - mn${r}), 0.0f, ${x} == ${NEG_INF})`)}
    l${r} = l${r} * alpha${r} + (${keys.map((c) => `p${r}_${c}`).join(' + ')});
    m${r} = mn${r};`;
  const storeLse = (r: number, out: string) => `    ${split > 1 ? 'if (part == 0u) { ' : ''}${out}[bh * ${U(g.Sq)} + i${r}] = m${r} + log_f32(l${r});${split > 1 ? ' }' : ''}`;
  const store = (r: number) =>
    lseOnly ? storeLse(r, 'out_0') : `${storeVec4RowCode(target, 'out_0', rowBase(r, g.Dv), `acc${r}`, g.Dv, (x) => `${x} / l${r}`, split)}${lse ? `\n${storeLse(r, 'out_1')}` : ''}`;
  // A chunk's partial state: the output unscaled, m and l.
  const part = partLayout(count, g.B * g.H * g.Sq, g.Dv);
  const storePart = (r: number) => {
    const row = `bh * ${U(g.Sq)} + i${r}`;
    const ml = `out_0[${part.m('chunk', row)}] = m${r}; out_0[${part.l('chunk', row)}] = l${r};`;
    return [...(lseOnly ? [] : [storeVec4RowCode(target, 'out_0', `(${part.acc('chunk', row)}) * ${U(g.Dv)}`, `acc${r}`, g.Dv, (x) => x, split)]), `    ${split > 1 ? `if (part == 0u) { ${ml} }` : ml}`].join('\n');
  };
  const rowStart = (r: number) =>
    [
      loadVec4RowCode(target, `q${r}`, rowSource(reads, 0, `i${r}`), rowBase(r, g.D), `row_ok${r}`, g.D, f32Lit(g.scale), split),
      `  var m${r} = ${NEG_INF};`,
      `  var l${r} = 0.0f;`,
      ...(lseOnly ? [] : [`  var acc${r}: array<vec4f, ${laneVec4s(g.Dv, split)}>;`]),
    ].join('\n');

  const body = `${EXP_FLASH}

var<workgroup> kt: array<vec4f, ${BC * DS}>;
${lseOnly ? '' : `var<workgroup> vt: array<vec4f, ${BC * VS}>;\n`}${ms ? `var<workgroup> mt: array<f32, ${maskTileFloats(BR, BC)}>;\n` : ''}
// ${RM} query row(s) per ${split > 1 ? `${split} invocations` : 'invocation'}, ${BR} rows per workgroup, ${BC} keys per tile.
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${ownedRowsPreamble(groups, dispatch, qTiles, tiles, g.H, g.Sq, 'i', 'row_ok', ms !== undefined, count)}
${each(rowStart)}
${sweepLoopCode('j0', g.Sk, BC, target, chunks)}
    workgroupBarrier();
    let k_valid = min(${U(BC)}, ${U(g.Sk)} - j0);
${loadVec4TileCode(target, 'kt', tileSource(reads, 1, 'j0'), `(bh * ${U(g.Sk)} + j0) * ${U(g.D)}`, 'k_valid', BC, g.D, WG, undefined, DS)}
${lseOnly ? '' : loadVec4TileCode(target, 'vt', tileSource(reads, 2, 'j0'), `(bh * ${U(g.Sk)} + j0) * ${U(g.Dv)}`, 'k_valid', BC, g.Dv, WG, undefined, VS)}${loadMask}
    workgroupBarrier();
${dotRowsCode(target, 's', owned.map((r) => `q${r}`), 'kt', DS, BC, split)}
${each(softmax)}
${
  lseOnly
    ? ''
    : accumulateRowsCode(
        target,
        owned.map((r) => `acc${r}`),
        'vt',
        VS,
        BC,
        (c, r) => `p${r}_${c}`,
        (r) => `alpha${r}`,
        split,
      )
}
  }
${each((r) => `  if (row_ok${r}) {\n${chunks ? storePart(r) : store(r)}\n  }`)}
}`;
  const name = `${lseOnly ? 'attention_lse_flash' : lse ? 'attention_flash_lse' : 'attention_flash'}${chunks ? `_part${count}` : ''}_f32`;
  const kernel = withSubgroups(flashKernel(node, inputs, target, reads, { name, body, workgroupSize: [WG, 1, 1], dispatch, lib: ['is_nan', ...(lseOnly || lse ? ['log_f32'] : [])] }), split);
  return lse ? withSecondOutput(kernel, lse, target) : kernel;
}
