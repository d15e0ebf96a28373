// Register-blocked flash-attention backward (f32), a tuning variant (Target.tuning.flashBlockedGrad, unmeasured):
// the dq and dk+dv kernels of kernels/flash-backward.ts (same formulas: P = e^{s − lse} with s from pre-scaled q,
// dS = P·(dP − δ), dP = g·vᵀ) laid out as the blocked forward (kernels/flash-blocked.ts; the shared score and
// output blocks in kernels/flash-blocked-common.ts), so that each vec4 loaded from workgroup memory feeds more
// FMAs than the 4 it feeds there. A workgroup of 128 invocations owns 32 rows; the other side comes in tiles.
//
// dq (attention_grad_q_blocked_f32): owns 32 query rows: q (pre-scaled) and g staged once, each lane's 4 rows'
// lse and δ in registers. One tile buffer holds v, then k (restaged rather than both held: that is what lets
// D = 88 take 48 keys). Per key tile, five barriers:
//   1. stage v; dP blocks (g·vᵀ, 4 rows x BC/16 keys per lane) in registers;
//   2. stage k; S blocks (q·kᵀ), then dS = select(0, e^{s − lse}·(dP − δ), key < Sk) written key-major (4 rows
//      per vec4, a pad vec4 per key);
//   3. dq += dS·k: lane (pr, pc) owns rows pr + 8i and vec4 columns g, g + NC (g = pc + 16b): one dS vec4 and
//      2 k vec4s per 32 FMAs, keys in order.
// Finally dq·scale; rows past Sq are computed (zeros) and not stored.
//
// dk+dv (attention_grad_kv_blocked_f32, dk to out_0, the wrt-2 sibling's dv to out_1): owns 32 keys: k and v
// staged once. One query-tile buffer holds g, q (pre-scaled), then g again; one coefficient tile holds dS, then
// P (query-major, 4 keys per vec4). Per query tile, seven barriers:
//   1. stage g (and the tile's lse, δ); dP blocks (v·gᵀ, 4 keys x BQ/16 queries per lane) in registers;
//   2. stage q; S blocks (k·qᵀ); P = select(0, e^{s − lse}, query < Sq) and dS = P·(dP − δ) in registers;
//      dS written;
//   3. dk += dSᵀ·q (4 keys x 2 vec4 columns per lane);
//   4. restage g, P written; dv += Pᵀ·g.
// Queries past Sq have P = 0; keys past Sk are computed (zeros) and not stored.
//
// Tiles (the largest of 64/48/32/16 that fits; swept rows at an odd vec4 stride ≥ 2·NC, whose pairs the output
// blocks read): on the nvidia-h200 target (48 KiB), both kernels take 48 swept rows at D = Dv = 88 (dq 47104
// bytes, dk+dv 47488), 32 at 112 (48128, 48384), 16 at 128 (43520, 43648). FMAs per vec4 loaded: score blocks
// 16·BC/16 per 4 + BC/16 (6.9 at 48, 5.3 at 32, 3.2 at 16), output blocks 32 per 3 (10.7; at D = 88, 5 of 16
// column groups idle); over a tile at D = 88, 8.1 (dq) and 8.7 (dk+dv) against 4. The price: restaging (dk+dv
// loads g twice per query tile) and more barriers per tile (5 and 7 against 2).
//
// Every sum has a fixed order (over the head dim, then the swept rows in order), no atomics: bitwise repeatable.
// Applies to wrt 0, and wrt 1 paired with its wrt-2 sibling, where the target allows 128 invocations, lse and δ are
// bindings and there is no mask (q, k, v and g may be views, staged through tileSource); otherwise
// flashBlockedGradKernel declines (undefined) and the caller uses kernels/flash-backward.ts.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { dispatchGroups, f32Lit, groupIndexCode, u32Lit } from './elementwise.js';
import {
  BR,
  coefSlot,
  LANES,
  outputBlockCode,
  outputBlocks,
  outputDeclLines,
  ownedTileLines,
  range,
  scoreBlockLines,
  SP_STRIDE,
  storeBlocksCode,
  sweptRow,
  SWEEP_GROUPS,
  SWEEP_TILES,
  type Geometry,
} from './flash-blocked-common.js';
import { attentionGeometry, bindingOf, EXP_FLASH, flashKernel, GRAD_SLOTS, loadVec4TileCode, tileSource, vec4s, withSecondOutput, withVectorReads, type FlashReads } from './flash-common.js';

const { Q, K, V, G, LSE, DELTA } = GRAD_SLOTS;

/** Which blocked gradient kernel: dq, or dk and dv together. */
export type BlockedGradKind = 'q' | 'kv';

/** A blocked gradient kernel's layout for head dims D (q, k) and Dv (v, g). */
export interface BlockedGradTiles {
  /** Swept rows per tile (keys for dq, queries for dk+dv). */
  readonly sweep: number;
  /** vec4s per swept row in its tile: odd, and at least both outputs' column pairs. */
  readonly stride: number;
  /** Workgroup memory used, in bytes. */
  readonly bytes: number;
}

/**
 * The tiles of the `kind` kernel within `limit` bytes of workgroup memory, or undefined when none fit. Both hold
 * the owned tiles (32 rows of D and of Dv), one swept tile (stride x sweep) and one coefficient tile (9 vec4s per
 * swept row); dk+dv also the swept rows' lse and δ.
 */
export function blockedGradTiles(kind: BlockedGradKind, D: number, Dv: number, limit: number): BlockedGradTiles | undefined {
  const widest = Math.max(vec4s(D), vec4s(Dv));
  const stride = 2 * Math.ceil(widest / 2) + 1;
  for (const sweep of SWEEP_TILES) {
    const bytes = 16 * (BR * (vec4s(D) + vec4s(Dv)) + sweep * (stride + SP_STRIDE)) + (kind === 'kv' ? 8 * sweep : 0);
    if (bytes <= limit) return { sweep, stride, bytes };
  }
  return undefined;
}

/**
 * The blocked kernel of an attention_grad node: dq (wrt 0), or dk with `dv` (its wrt-2 sibling) writing both;
 * undefined where it does not apply (see the header). `given`: how the node's inputs are read, as
 * flashBackwardKernel takes them.
 */
export function flashBlockedGradKernel(node: Node, inputs: readonly Node[], target: Target, dv: Node | undefined, given: FlashReads): Kernel | undefined {
  const wrt = attrNum(node.attrs, 'wrt');
  const kind: BlockedGradKind | undefined = wrt === 0 && !dv ? 'q' : wrt === 1 && dv?.op === 'attention_grad' && attrNum(dv.attrs, 'wrt') === 2 ? 'kv' : undefined;
  const L = target.limits;
  if (!kind || inputs.length > DELTA + 1 || Math.min(L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX) < LANES) return undefined;
  // q, k, v and g may be read through views (their tiles are staged through tileSource); lse and δ are indexed.
  if ([LSE, DELTA].some((s) => typeof given.slots[s] !== 'string')) return undefined;
  const [q, k, v] = inputs;
  const g = attentionGeometry(node, q, k, v, undefined);
  const tiles = blockedGradTiles(kind, g.D, g.Dv, L.maxComputeWorkgroupStorageSize);
  if (!tiles) return undefined;
  const reads = target.tuning?.vectorLoads === false ? given : withVectorReads(given, inputs, [Q, K, V, G]);
  const ownTiles = Math.ceil((kind === 'q' ? g.Sq : g.Sk) / BR);
  const groups = g.B * g.H * ownTiles;
  const dispatch = dispatchGroups(groups, target);
  const head = groupIndexCode('grp', groups, dispatch);
  const body = kind === 'q' ? dqBody(g, tiles, target, reads, head, ownTiles) : dkdvBody(g, tiles, target, reads, head, ownTiles);
  const kernel = flashKernel(node, inputs, target, reads, { name: `attention_grad_${kind}_blocked_f32`, body, workgroupSize: [LANES, 1, 1], dispatch });
  return dv ? withSecondOutput(kernel, dv, target) : kernel;
}

/** The WGSL of a tile staged by all lanes: rows `row0` + r of input `slot` (`cols` wide) while r < `valid`. */
function stage(target: Target, reads: FlashReads, g: Geometry, dst: string, slot: number, row0: string, valid: string, rows: number, stride: number, scaled = false, indent = '    '): string {
  const [len, cols] = [slot === Q || slot === G ? g.Sq : g.Sk, slot === Q || slot === K ? g.D : g.Dv];
  return loadVec4TileCode(target, dst, tileSource(reads, slot, row0), `(bh * ${u32Lit(len)} + ${row0}) * ${u32Lit(cols)}`, valid, rows, cols, LANES, scaled ? f32Lit(g.scale) : undefined, stride, indent);
}

/** A tile the workgroup stages once: 32 rows of input `slot`; `base`, a score lane's offset into it. */
interface OwnedTile {
  readonly tile: string;
  readonly slot: number;
  readonly base: string;
  readonly scaled?: boolean;
}

/** The swept side's tile (`rows` x `stride` vec4s) and a score lane's offset into it; the coefficient tile `wt`. */
interface SweptTile {
  readonly tile: string;
  readonly base: string;
  readonly rows: number;
  readonly stride: number;
}

/**
 * WGSL from the declarations to the lane roles: the owned tiles, the swept and coefficient tiles (and `extra`
 * declarations), then in `main` the workgroup's (b, h) `bh` and first owned row `row0` (`valid` of them inside
 * the side), the owned tiles staged, each lane's score (sr, sc) and output (pr, pc) roles and score offsets.
 */
function mainStart(g: Geometry, target: Target, reads: FlashReads, head: string, ownTiles: number, row0: string, valid: string, owned: readonly OwnedTile[], swept: SweptTile, extra: readonly string[], comment: string): string {
  const U = u32Lit;
  const vec4sOf = (slot: number) => vec4s(slot === Q || slot === K ? g.D : g.Dv);
  const [what, other] = row0 === 'q0' ? ['rows', 'keys'] : ['keys', 'queries'];
  return [
    EXP_FLASH,
    '',
    ...owned.map((o) => `var<workgroup> ${o.tile}: array<vec4f, ${BR * vec4sOf(o.slot)}>;`),
    `var<workgroup> ${swept.tile}: array<vec4f, ${swept.rows * swept.stride}>;`,
    `var<workgroup> wt: array<vec4f, ${swept.rows * SP_STRIDE}>;`,
    ...extra,
    '',
    `// ${comment}`,
    `@compute @workgroup_size(${LANES}, 1, 1)`,
    'fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {',
    head,
    ...ownedTileLines(g.H, ownTiles, row0 === 'q0' ? g.Sq : g.Sk, row0, valid),
    ...owned.map((o) => stage(target, reads, g, o.tile, o.slot, row0, valid, BR, vec4sOf(o.slot), o.scaled, '  ')),
    `  // Score blocks: ${what} sr + 8i, ${other} sc + 16j. Output blocks: ${what} pr + 8i, vec4 columns pc + 16b (+ NC).`,
    `  let sr = lid / ${U(SWEEP_GROUPS)};`,
    `  let sc = lid % ${U(SWEEP_GROUPS)};`,
    `  let pr = lid % ${U(BR / 4)};`,
    `  let pc = lid / ${U(BR / 4)};`,
    ...owned.map((o) => `  let ${o.base} = sr * ${U(vec4sOf(o.slot))};`),
    `  let ${swept.base} = sc * ${U(swept.stride)};`,
  ].join('\n');
}

function dqBody(g: Geometry, tiles: BlockedGradTiles, target: Target, reads: FlashReads, head: string, qTiles: number): string {
  const U = u32Lit;
  const { sweep: BC, stride: YS } = tiles;
  const [D4, V4] = [vec4s(g.D), vec4s(g.Dv)];
  const KJ = BC / SWEEP_GROUPS;
  const rows4 = range(4);
  const ob = outputBlocks('dq', Math.ceil(D4 / 2));
  const [lse, delta] = [bindingOf(reads, LSE), bindingOf(reads, DELTA)];
  const dsLines = range(KJ).flatMap((j) => [
    ...rows4.map((i) => `    let ds${i}_${j} = select(0.0f, exp_flash(s${i}_${j} - lse${i}) * (dp${i}_${j} - del${i}), ${sweptRow(j)} < k_valid);`),
    `    wt[${coefSlot(j)}] = vec4f(${rows4.map((i) => `ds${i}_${j}`).join(', ')});`,
  ]);
  const owned = [
    { tile: 'qt', slot: Q, base: 'qa', scaled: true },
    { tile: 'gt', slot: G, base: 'ga' },
  ];
  const comment = `dq: ${BR} query rows per workgroup, ${BC} keys per tile (v, then k, in yt); scores in 4 x ${KJ} blocks, dq in ${ob.blocks.length} block(s) of 4 rows x 2 vec4s per invocation.`;
  return `${mainStart(g, target, reads, head, qTiles, 'q0', 'q_valid', owned, { tile: 'yt', base: 'ya', rows: BC, stride: YS }, [], comment)}
  // lse and δ of rows sr + 8i (0 past Sq: those rows are not stored).
${rows4
  .map((i) => {
    const row = `q0 + sr + ${U(8 * i)}`;
    return `  var lse${i} = 0.0f;\n  var del${i} = 0.0f;\n  if (${row} < ${U(g.Sq)}) {\n    lse${i} = ${lse}[bh * ${U(g.Sq)} + ${row}];\n    del${i} = ${delta}[bh * ${U(g.Sq)} + ${row}];\n  }`;
  })
  .join('\n')}
${outputDeclLines(ob).join('\n')}
  for (var j0 = 0u; j0 < ${U(g.Sk)}; j0 += ${U(BC)}) {
    workgroupBarrier();
    let k_valid = min(${U(BC)}, ${U(g.Sk)} - j0);
${stage(target, reads, g, 'yt', V, 'j0', 'k_valid', BC, YS)}
    workgroupBarrier();
${scoreBlockLines('dp', { tile: 'gt', base: 'ga', stride: V4 }, { tile: 'yt', base: 'ya', stride: YS }, V4, KJ, '    ').join('\n')}
    workgroupBarrier();
${stage(target, reads, g, 'yt', K, 'j0', 'k_valid', BC, YS)}
    workgroupBarrier();
${scoreBlockLines('s', { tile: 'qt', base: 'qa', stride: D4 }, { tile: 'yt', base: 'ya', stride: YS }, D4, KJ, '    ').join('\n')}
${dsLines.join('\n')}
    workgroupBarrier();
${outputBlockCode(ob, { coef: 'wt', tile: 'yt', stride: YS, count: BC, coefName: 'ds', rowName: 'k' })}
  }
${storeBlocksCode(ob, { out: 'out_0', row0: 'q0', rows: g.Sq, cols: g.D, value: (acc) => `${acc} * ${f32Lit(g.scale)}` })}
}`;
}

function dkdvBody(g: Geometry, tiles: BlockedGradTiles, target: Target, reads: FlashReads, head: string, kTiles: number): string {
  const U = u32Lit;
  const { sweep: BQ, stride: XS } = tiles;
  const [D4, V4] = [vec4s(g.D), vec4s(g.Dv)];
  const QJ = BQ / SWEEP_GROUPS;
  const rows4 = range(4);
  const dk = outputBlocks('dk', Math.ceil(D4 / 2));
  const dv = outputBlocks('dv', Math.ceil(V4 / 2));
  const [lse, delta] = [bindingOf(reads, LSE), bindingOf(reads, DELTA)];
  const coefLines = (c: string) => range(QJ).map((j) => `    wt[${coefSlot(j)}] = vec4f(${rows4.map((i) => `${c}${i}_${j}`).join(', ')});`);
  const pdsLines = range(QJ).flatMap((j) => [
    `    let ql${j} = lse_t[${sweptRow(j)}];`,
    `    let qd${j} = del_t[${sweptRow(j)}];`,
    ...rows4.map((i) => `    let p${i}_${j} = select(0.0f, exp_flash(s${i}_${j} - ql${j}), ${sweptRow(j)} < q_valid);`),
    ...rows4.map((i) => `    let ds${i}_${j} = p${i}_${j} * (dp${i}_${j} - qd${j});`),
  ]);
  const owned = [
    { tile: 'kt', slot: K, base: 'ka' },
    { tile: 'vt', slot: V, base: 'va' },
  ];
  const extra = [`var<workgroup> lse_t: array<f32, ${BQ}>;`, `var<workgroup> del_t: array<f32, ${BQ}>;`];
  const comment = `dk, dv: ${BR} keys per workgroup, ${BQ} queries per tile (g, q, g in xt; dS, then P in wt); scores in 4 x ${QJ} blocks, dk and dv in ${dk.blocks.length} and ${dv.blocks.length} block(s) of 4 keys x 2 vec4s per invocation.`;
  return `${mainStart(g, target, reads, head, kTiles, 'k0', 'k_valid', owned, { tile: 'xt', base: 'xa', rows: BQ, stride: XS }, extra, comment)}
${[...outputDeclLines(dk), ...outputDeclLines(dv)].join('\n')}
  for (var i0 = 0u; i0 < ${U(g.Sq)}; i0 += ${U(BQ)}) {
    workgroupBarrier();
    let q_valid = min(${U(BQ)}, ${U(g.Sq)} - i0);
${stage(target, reads, g, 'xt', G, 'i0', 'q_valid', BQ, XS)}
    for (var x = lid; x < ${U(BQ)}; x += ${U(LANES)}) {
      var st = 0.0f;
      var dt = 0.0f;
      if (x < q_valid) {
        st = ${lse}[bh * ${U(g.Sq)} + i0 + x];
        dt = ${delta}[bh * ${U(g.Sq)} + i0 + x];
      }
      lse_t[x] = st;
      del_t[x] = dt;
    }
    workgroupBarrier();
${scoreBlockLines('dp', { tile: 'vt', base: 'va', stride: V4 }, { tile: 'xt', base: 'xa', stride: XS }, V4, QJ, '    ').join('\n')}
    workgroupBarrier();
${stage(target, reads, g, 'xt', Q, 'i0', 'q_valid', BQ, XS, true)}
    workgroupBarrier();
${scoreBlockLines('s', { tile: 'kt', base: 'ka', stride: D4 }, { tile: 'xt', base: 'xa', stride: XS }, D4, QJ, '    ').join('\n')}
${pdsLines.join('\n')}
${coefLines('ds').join('\n')}
    workgroupBarrier();
${outputBlockCode(dk, { coef: 'wt', tile: 'xt', stride: XS, count: BQ, coefName: 'ds', rowName: 'q' })}
    workgroupBarrier();
${stage(target, reads, g, 'xt', G, 'i0', 'q_valid', BQ, XS)}
${coefLines('p').join('\n')}
    workgroupBarrier();
${outputBlockCode(dv, { coef: 'wt', tile: 'xt', stride: XS, count: BQ, coefName: 'p', rowName: 'g' })}
  }
${storeBlocksCode(dk, { out: 'out_0', row0: 'k0', rows: g.Sk, cols: g.D, value: (acc) => acc })}
${storeBlocksCode(dv, { out: 'out_1', row0: 'k0', rows: g.Sk, cols: g.Dv, value: (acc) => acc })}
}`;
}
