// Flash-attention backward (f32, FlashAttention-2 style): the kernels of `attention_grad`, one per input
// `wrt`, none of which holds the [Sq, Sk] matrices in memory. Inputs q, k, v, g (the output's cotangent),
// lse (attention_lse), δ = Σ g·out per row, [mask]; P is recomputed tile by tile as e^{s − lse}. The layout is
// kernels/flash-common.ts's: each invocation owns whole rows in registers and reads the swept tile by broadcast,
// so the scores never go through workgroup memory and nothing is reduced across invocations.
//
// - wrt 0 (dq): an invocation owns query rows (q pre-scaled, g, lse, δ, the dq accumulator) and sweeps the key
//   tiles (k, v): dS_c = P_c·(g·v_c − δ), dq += Σ_c dS_c·k_c; finally ·scale.
// - wrt 1 (dk) and wrt 2 (dv): an invocation owns key rows (k, and v for dk, the accumulators) and sweeps the
//   query tiles (q pre-scaled, g, lse, δ): dv += Σ_r P_r·g_r, dk += Σ_r dS_r·(scale·q_r); both in one sweep
//   when the schedule pairs them.
// - wrt 3 (the logits' cotangent dS itself, [B, H, Sq, Sk], for a mask that needs one): one invocation per
//   element, dot products from global memory.
// Every sum has a fixed order and no atomics are used: bitwise repeatable.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { dispatchGroups, f32Lit, flatKernel, u32Lit } from './elementwise.js';
import {
  accumulateRowsCode,
  attentionGeometry,
  bindingOf,
  chooseRowTiles,
  directReads,
  dotCode,
  dotRowsCode,
  EXP_FLASH,
  flashKernel,
  GRAD_SLOTS,
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
  touchUnread,
  withSecondOutput,
  withSubgroups,
  withVectorReads,
  type AttentionGeometry,
  type FlashCaps,
  type FlashReads,
  type FlashTiles,
  type SweepChunks,
} from './flash-common.js';
import { flashBlockedGradKernel } from './flash-blocked-backward.js';

const { Q, K, V, G, LSE, DELTA, MASK } = GRAD_SLOTS;

function geometryOf(node: Node, inputs: readonly Node[]): AttentionGeometry {
  const [q, k, v] = inputs;
  return attentionGeometry(node, q, k, v, inputs[6]);
}

/** The tiles of an attention_grad node's kernel (wrt 0, 1 or 2; `kv`: dk and dv in one kernel). */
export function flashBackwardTiles(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}, kv = false): FlashTiles {
  const wrt = attrNum(node.attrs, 'wrt');
  const g = geometryOf(node, inputs);
  const what = `attention_grad %${node.id} (wrt ${wrt})`;
  const mask = (own: number, sweep: number) => (g.maskStrides ? 4 * maskTileFloats(own, sweep) : 0);
  const tileBytes = (sweep: number, split: number) => 16 * sweep * (tileVec4s(g.D, split) + tileVec4s(g.Dv, split));
  const [d, dv4] = [(split: number) => laneVec4s(g.D, split), (split: number) => laneVec4s(g.Dv, split)];
  // dq: k and v tiles; private per query row q, g, the accumulator, the scores and dP.
  if (wrt === 0) return chooseRowTiles(target, what, g.Sq, g.Sk, (own, sweep, split) => tileBytes(sweep, split) + mask(own, sweep), (sweep, split) => 4 * (2 * d(split) + dv4(split)) + 2 * sweep, caps, true);
  // dk, dv: q and g tiles and the queries' lse (and δ for dk); private per key row k and the dk accumulator, v
  // and the dv accumulator (v for dk too), the scores (and dP).
  const dk = wrt === 1 || kv;
  const dv = wrt === 2 || kv;
  const stats = dk ? 2 : 1;
  const rowFloats = (sweep: number, split: number) => 4 * ((dk ? 2 * d(split) + dv4(split) : d(split)) + (dv ? dv4(split) : 0)) + (dk ? 2 : 1) * sweep;
  return chooseRowTiles(target, what, g.Sk, g.Sq, (own, sweep, split) => tileBytes(sweep, split) + 4 * stats * sweep + mask(own, sweep), rowFloats, caps, true);
}

/**
 * The kernel of an attention_grad node. With `dv` (the wrt-2 node of the same inputs), the wrt-1 node's kernel
 * computes both: dk to out_0 and dv's value to out_1, in one sweep of the queries. `reads`: q, k, v, g through
 * views (compiler/codegen/attention-views.ts) instead of their bindings (not for wrt 3). With `chunks` (wrt 0, 1, 2),
 * one grid per chunk of the swept side (keys for dq, queries for dk and dv), each storing its partial sums for
 * kernels/flash-sweep-split.ts to add: out_0 holds [chunks, dk or dq] (then [chunks, dv] in the pair's kernel).
 */
export function flashBackwardKernel(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps = {}, dv?: Node, reads: FlashReads = directReads(node), chunks?: SweepChunks): Kernel {
  // The register-blocked variant (kernels/flash-blocked-backward.ts) where a tuning run asks for it and it applies.
  const blocked = target.tuning?.flashBlockedGrad && !target.isFallbackAdapter && !chunks ? flashBlockedGradKernel(node, inputs, target, dv, reads) : undefined;
  if (blocked) return blocked;
  const wrt = attrNum(node.attrs, 'wrt');
  if (dv) {
    if (wrt !== 1 || dv.op !== 'attention_grad' || attrNum(dv.attrs, 'wrt') !== 2) throw new Error(`internal: %${node.id} (wrt ${wrt}) cannot also write %${dv.id}`);
    const kernel = dkdvKernel(node, inputs, target, 'kv', caps, vectorRows(reads, inputs, target), chunks);
    return chunks ? kernel : withSecondOutput(kernel, dv, target);
  }
  if (wrt === 3) {
    if (reads.bindings || chunks) throw new Error(`internal: attention_grad %${node.id} (wrt 3) reads its inputs flat, not through views, in one grid`);
    return logitsGradKernel(node, inputs, target);
  }
  return wrt === 0 ? dqKernel(node, inputs, target, caps, vectorRows(reads, inputs, target), chunks) : dkdvKernel(node, inputs, target, wrt === 1 ? 'k' : 'v', caps, vectorRows(reads, inputs, target), chunks);
}

/** q, k, v and g rows as vec4s where the head dims allow (unless Target.tuning.vectorLoads is false). */
const vectorRows = (reads: FlashReads, inputs: readonly Node[], target: Target): FlashReads => (target.tuning?.vectorLoads === false ? reads : withVectorReads(reads, inputs, [Q, K, V, G]));

/** WGSL: `s += mask[...]` for the (b, h, query, key) given, or nothing without a mask. */
function maskAddCode(g: AttentionGeometry, i: string, j: string, indent: string): string {
  return g.maskStrides ? `\n${indent}s += in_${MASK}[${maskOffset(g.maskStrides, 'b', 'h', i, j)}];` : '';
}

/** WGSL: `s<r>_<c> += mt[...]`, the mask's tile entry of owned row r and swept row c, or nothing without a mask. */
function maskAddRowsCode(g: AttentionGeometry, t: FlashTiles, owned: readonly number[]): string {
  if (!g.maskStrides) return '';
  const n = t.sweep;
  const slots = t.workgroup / t.split;
  return `${owned.map((r) => Array.from({ length: n }, (_, c) => `    s${r}_${c} += mt[${u32Lit(r * slots * (n + 1) + c)} + mrow];`).join('\n')).join('\n')}\n`;
}

/**
 * dq: each invocation owns query rows (for each: q pre-scaled, g, its lse and δ, the accumulator in registers)
 * and sweeps the key tiles: dS_c = P_c·(g·v_c − δ) with P_c = e^{q·k_c [+ mask] − lse}, then
 * dq += Σ_c dS_c·k_c; finally ·scale.
 */
function dqKernel(node: Node, inputs: readonly Node[], target: Target, caps: FlashCaps, reads: FlashReads, chunks?: SweepChunks): Kernel {
  const g = geometryOf(node, inputs);
  const [lse, delta, mask] = [LSE, DELTA, MASK].map((s) => (s < node.inputs.length ? bindingOf(reads, s) : ''));
  const tiles = flashBackwardTiles(node, inputs, target, caps);
  const { sweep: BC, rows: RM, split, workgroup: WG } = tiles;
  const share = target.tuning?.flashShareExp === true;
  const DS = tileVec4s(g.D, split);
  const VS = tileVec4s(g.Dv, split);
  const qTiles = Math.ceil(g.Sq / tiles.own);
  const groups = g.B * g.H * qTiles;
  const count = chunks?.count ?? 1;
  const dispatch = dispatchGroups(groups * count, target);
  const U = (n: number) => u32Lit(n);
  // A chunk's partial dq: after the other chunks' (chunk · B·H·Sq rows).
  const outRow = (r: number) => (chunks ? `chunk * ${U(g.B * g.H * g.Sq)} + bh * ${U(g.Sq)} + i${r}` : `bh * ${U(g.Sq)} + i${r}`);
  const owned = Array.from({ length: RM }, (_, r) => r);
  const each = (f: (r: number) => string) => owned.map(f).join('\n');
  const rowBase = (r: number, D: number) => `(bh * ${U(g.Sq)} + i${r}) * ${U(D)}`;
  const ms = g.maskStrides;
  const rowStart = (r: number) => `${loadVec4RowCode(target, `q${r}`, rowSource(reads, Q, `i${r}`), rowBase(r, g.D), `row_ok${r}`, g.D, f32Lit(g.scale), split)}
${loadVec4RowCode(target, `g${r}`, rowSource(reads, G, `i${r}`), rowBase(r, g.Dv), `row_ok${r}`, g.Dv, undefined, split)}
  var lse${r} = 0.0f;
  var del${r} = 0.0f;
  if (row_ok${r}) {
    lse${r} = ${lse}[bh * ${U(g.Sq)} + i${r}];
    del${r} = ${delta}[bh * ${U(g.Sq)} + i${r}];
  }
  var acc${r}: array<vec4f, ${laneVec4s(g.D, split)}>;`;
  const body = `${EXP_FLASH}

var<workgroup> kt: array<vec4f, ${BC * DS}>;
var<workgroup> vt: array<vec4f, ${BC * VS}>;
${ms ? `var<workgroup> mt: array<f32, ${maskTileFloats(tiles.own, BC)}>;\n` : ''}
// dq: ${RM} query row(s) per ${split > 1 ? `${split} invocations` : 'invocation'}, ${tiles.own} rows per workgroup, ${BC} keys per tile.
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${ownedRowsPreamble(groups, dispatch, qTiles, tiles, g.H, g.Sq, 'i', 'row_ok', ms !== undefined, count)}
${each(rowStart)}
${sweepLoopCode('j0', g.Sk, BC, target, chunks)}
    workgroupBarrier();
    let k_valid = min(${U(BC)}, ${U(g.Sk)} - j0);
${loadVec4TileCode(target, 'kt', tileSource(reads, K, 'j0'), `(bh * ${U(g.Sk)} + j0) * ${U(g.D)}`, 'k_valid', BC, g.D, WG, undefined, DS)}
${loadVec4TileCode(target, 'vt', tileSource(reads, V, 'j0'), `(bh * ${U(g.Sk)} + j0) * ${U(g.Dv)}`, 'k_valid', BC, g.Dv, WG, undefined, VS)}${ms ? `\n${loadMaskTileCode(target, mask, tiles.own, BC, WG, 'own_valid', 'k_valid', (o, c) => maskOffset(ms, 'b', 'h', `own0 + ${o}`, `j0 + ${c}`))}` : ''}
    workgroupBarrier();
${dotRowsCode(target, 's', owned.map((r) => `q${r}`), 'kt', DS, BC, split)}
${dotRowsCode(target, 'dp', owned.map((r) => `g${r}`), 'vt', VS, BC, split)}
${maskAddRowsCode(g, tiles, owned)}${each((r) => laneValuesCode(BC, split, share, (c) => `ds${r}_${c}`, (c) => [`s${r}_${c}`, `dp${r}_${c}`, U(c)], ([x, dp, c]) => `select(0.0f, exp_flash(${x} - lse${r}) * (${dp} - del${r}), ${c} < k_valid)`))}
${accumulateRowsCode(target, owned.map((r) => `acc${r}`), 'kt', DS, BC, (c, r) => `ds${r}_${c}`, undefined, split)}
  }
${each((r) => `  if (row_ok${r}) {\n${storeVec4RowCode(target, 'out_0', `(${outRow(r)}) * ${U(g.D)}`, `acc${r}`, g.D, (x) => `${x} * ${f32Lit(g.scale)}`, split)}\n  }`)}
}`;
  const name = `attention_grad_q_flash${chunks ? `_part${count}` : ''}_f32`;
  return withSubgroups(flashKernel(node, inputs, target, reads, { name, body, workgroupSize: [WG, 1, 1], dispatch }), split);
}

/**
 * dk, dv, or both (`kv`: one sweep of the queries computes P and dS once and writes dk to out_0, dv to out_1).
 * Each invocation owns key rows (for each: k, and v for dk, and the accumulators in registers) and sweeps the
 * query tiles (q pre-scaled, g, the queries' lse and δ): P_r = e^{q_r·k [+ mask] − lse_r}, dv += Σ_r P_r·g_r,
 * dk += Σ_r P_r·(g_r·v − δ_r)·q_r. Each output element sums over the query rows in order whatever the tiles,
 * so `kv` equals the two kernels bit for bit where their rows are split alike (always on software adapters; on
 * hardware the lighter kernels may split less, which changes the order of the dot products' sums).
 */
function dkdvKernel(node: Node, inputs: readonly Node[], target: Target, which: 'k' | 'v' | 'kv', caps: FlashCaps, reads: FlashReads, chunks?: SweepChunks): Kernel {
  const g = geometryOf(node, inputs);
  const [lse, delta, mask] = [LSE, DELTA, MASK].map((s) => (s < node.inputs.length ? bindingOf(reads, s) : ''));
  const tiles = flashBackwardTiles(node, inputs, target, caps, which === 'kv');
  const { sweep: BQ, rows: RM, split, workgroup: WG } = tiles;
  const share = target.tuning?.flashShareExp === true;
  const dk = which !== 'v';
  const dv = which !== 'k';
  const DS = tileVec4s(g.D, split);
  const VS = tileVec4s(g.Dv, split);
  const kTiles = Math.ceil(g.Sk / tiles.own);
  const groups = g.B * g.H * kTiles;
  const count = chunks?.count ?? 1;
  const dispatch = dispatchGroups(groups * count, target);
  const U = (n: number) => u32Lit(n);
  const queries = Array.from({ length: BQ }, (_, c) => c);
  const owned = Array.from({ length: RM }, (_, r) => r);
  const each = (f: (r: number) => string) => owned.map(f).join('\n');
  const keyBase = (r: number, D: number) => `(bh * ${U(g.Sk)} + j${r}) * ${U(D)}`;
  const ms = g.maskStrides;
  const outs = [...(dk ? [{ acc: 'acc_k', D: g.D }] : []), ...(dv ? [{ acc: 'acc_v', D: g.Dv }] : [])];
  // Where output o of key row r goes: its own binding, or with chunks the one scratch, [chunks, dk] then [chunks, dv].
  const keys = g.B * g.H * g.Sk;
  const store = (r: number, o: (typeof outs)[number], k: number) =>
    chunks
      ? storeVec4RowCode(target, 'out_0', `${k > 0 ? `${U(count * keys * g.D)} + ` : ''}(chunk * ${U(keys)} + bh * ${U(g.Sk)} + j${r}) * ${U(o.D)}`, `${o.acc}${r}`, o.D, undefined, split)
      : storeVec4RowCode(target, `out_${k}`, keyBase(r, o.D), `${o.acc}${r}`, o.D, undefined, split);
  const rowStart = (r: number) =>
    [
      loadVec4RowCode(target, `k${r}`, rowSource(reads, K, `j${r}`), keyBase(r, g.D), `key_ok${r}`, g.D, undefined, split),
      ...(dk ? [loadVec4RowCode(target, `v${r}`, rowSource(reads, V, `j${r}`), keyBase(r, g.Dv), `key_ok${r}`, g.Dv, undefined, split)] : []),
      ...outs.map((o) => `  var ${o.acc}${r}: array<vec4f, ${laneVec4s(o.D, split)}>;`),
    ].join('\n');
  const scores = (r: number) =>
    [
      laneValuesCode(BQ, split, share, (c) => `p${r}_${c}`, (c) => [`s${r}_${c}`, U(c)], ([x, c]) => `select(0.0f, exp_flash(${x} - lse_t[${c}]), ${c} < q_valid)`),
      ...(dk ? queries.map((c) => `    let ds${r}_${c} = p${r}_${c} * (dp${r}_${c} - del_t[${U(c)}]);`) : []),
    ].join('\n');
  const body = `${EXP_FLASH}

var<workgroup> qt: array<vec4f, ${BQ * DS}>;
var<workgroup> gt: array<vec4f, ${BQ * VS}>;
var<workgroup> lse_t: array<f32, ${BQ}>;
${dk ? `var<workgroup> del_t: array<f32, ${BQ}>;\n` : ''}${ms ? `var<workgroup> mt: array<f32, ${maskTileFloats(tiles.own, BQ)}>;\n` : ''}
// d${which}: ${RM} key row(s) per ${split > 1 ? `${split} invocations` : 'invocation'}, ${tiles.own} rows per workgroup, ${BQ} queries per tile.
@compute @workgroup_size(${WG}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${dk ? '' : `${touchUnread(reads, [V, DELTA])}\n`}${ownedRowsPreamble(groups, dispatch, kTiles, tiles, g.H, g.Sk, 'j', 'key_ok', ms !== undefined, count)}
${each(rowStart)}
${sweepLoopCode('i0', g.Sq, BQ, target, chunks)}
    workgroupBarrier();
    let q_valid = min(${U(BQ)}, ${U(g.Sq)} - i0);
${loadVec4TileCode(target, 'qt', tileSource(reads, Q, 'i0'), `(bh * ${U(g.Sq)} + i0) * ${U(g.D)}`, 'q_valid', BQ, g.D, WG, f32Lit(g.scale), DS)}
${loadVec4TileCode(target, 'gt', tileSource(reads, G, 'i0'), `(bh * ${U(g.Sq)} + i0) * ${U(g.Dv)}`, 'q_valid', BQ, g.Dv, WG, undefined, VS)}
    for (var x = lid; x < ${U(BQ)}; x += ${U(WG)}) {
      var st = 0.0f;${dk ? '\n      var dt = 0.0f;' : ''}
      if (x < q_valid) {
        st = ${lse}[bh * ${U(g.Sq)} + i0 + x];${dk ? `\n        dt = ${delta}[bh * ${U(g.Sq)} + i0 + x];` : ''}
      }
      lse_t[x] = st;${dk ? '\n      del_t[x] = dt;' : ''}
    }${ms ? `\n${loadMaskTileCode(target, mask, tiles.own, BQ, WG, 'own_valid', 'q_valid', (o, c) => maskOffset(ms, 'b', 'h', `i0 + ${c}`, `own0 + ${o}`))}` : ''}
    workgroupBarrier();
${dotRowsCode(target, 's', owned.map((r) => `k${r}`), 'qt', DS, BQ, split)}
${dk ? dotRowsCode(target, 'dp', owned.map((r) => `v${r}`), 'gt', VS, BQ, split) : ''}
${maskAddRowsCode(g, tiles, owned)}${each(scores)}
${dk ? accumulateRowsCode(target, owned.map((r) => `acc_k${r}`), 'qt', DS, BQ, (c, r) => `ds${r}_${c}`, undefined, split) : ''}
${dv ? accumulateRowsCode(target, owned.map((r) => `acc_v${r}`), 'gt', VS, BQ, (c, r) => `p${r}_${c}`, undefined, split) : ''}
  }
${each((r) => `  if (key_ok${r}) {\n${outs.map((o, k) => store(r, o, k)).join('\n')}\n  }`)}
}`;
  const name = `attention_grad_${which}_flash${chunks ? `_part${count}` : ''}_f32`;
  return withSubgroups(flashKernel(node, inputs, target, reads, { name, body, workgroupSize: [WG, 1, 1], dispatch }), split);
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
${dotCode(target, 'qk', `in_${Q}`, `row * ${U(g.D)}`, `in_${K}`, `(bh * ${U(g.Sk)} + j) * ${U(g.D)}`, g.D, '    ')}
    var s = qk * ${f32Lit(g.scale)};${maskAddCode(g, 'qi', 'j', '    ')}
    let p = exp_f32(s - in_${LSE}[row]);
${dotCode(target, 'dp', `in_${G}`, `row * ${U(g.Dv)}`, `in_${V}`, `(bh * ${U(g.Sk)} + j) * ${U(g.Dv)}`, g.Dv, '    ')}
    out_0[i] = p * (dp - in_${DELTA}[row]);`;
  return flatKernel(node, inputs, target, 'attention_grad_logits_f32', body, { lib: ['exp_f32'] });
}
