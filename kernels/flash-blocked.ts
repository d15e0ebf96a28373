// Register-blocked flash-attention forward (f32), a tuning variant (Target.tuning.flashBlocked, unmeasured): the
// same softmax(q·kᵀ·scale)·v sweep as kernels/flash-forward.ts, laid out as a tiled matmul so that each vec4
// loaded from workgroup memory feeds 8-16 FMAs instead of 4.
//
// A workgroup of 128 invocations owns BR = 32 query rows of one (batch, head). Workgroup memory holds the q tile
// (pre-scaled, once), one key tile of BC keys (k, then v in the same buffer), the tile's scores S (overwritten
// in place by P) and the rows' rescale factors α. Per key tile, four phases between barriers:
//   1. stage k (rows at an odd vec4 stride: 8 neighbouring lanes read 8 distinct 16-byte slots);
//   2. S: invocation (sr = lid / 16, sc = lid % 16) computes the scores of rows sr + 8i (i < 4) and keys
//      sc + 16j (j < BC / 16): each step over the head dim loads 4 q vec4s (broadcasts) and BC/16 k vec4s for
//      16·BC/16 FMAs, summed over D in order (fma). Keys past Sk score -inf. The 4 rows of a key are one vec4
//      of S (key-major, 9 vec4s per key: the 8 row groups and a pad), so the P·V phase loads them at once.
//   3. softmax (and v staged meanwhile): 4 lanes per row, each over keys part + 4t; the tile max and the sum
//      of p are combined by subgroupShuffleXor (xor 1, then 2: every lane gets the same bits). m, l live in
//      those lanes' registers across tiles; α = e^{m_old − m_new} (0 while nothing was seen), p = e^{s − m_new}
//      (0 where s = -inf) written over s. Rows are dealt to lanes so that the 32 lanes of an NVIDIA subgroup
//      hit 32 distinct banks (lane group a of subgroup w takes component (a + w) % 4 of row group a; the pad
//      vec4 per key shifts the 4 parts' keys by 4 banks each).
//   4. P·V: invocation (pr = lid % 8, pc = lid / 8) owns rows pr + 8i (i < 4) and output vec4 columns pc and
//      pc + NC (NC = ceil(Dv / 8); a second such block when NC > 16, lanes past NC idle): rescaled by α,
//      plus Σ_key p·v in key order: one P vec4 and 2 v vec4 loads per 32 FMAs.
// At the end out = O / l (and with the sibling attention_lse, lse = m + ln l). Query rows past Sq are computed
// (zeros) but not stored. Four barriers per key tile. Fixed-order sums, no atomics: bitwise repeatable.
//
// Differences from the brief this was written to, and why: the S block is 4 rows x BC/16 keys (16 key groups
// whatever BC is) rather than 4 x 4 with BC/4 key groups, so all 128 lanes compute scores at BC = 48 and 32; S
// is stored in P's layout from the start, so the softmax rewrites it in place (no separate P tile: that is what
// lets D = 88 keep BC = 64 within the H200's 48 KiB); a P·V lane's two output vec4s are NC apart, not adjacent,
// so neighbouring column groups read neighbouring v slots.
//
// Applies where the target has subgroups of at least 4, allows 128 invocations and there is no mask (q, k and v
// may be plain bindings or views, as a backbone's qkv split is read: tiles are staged through tileSource);
// otherwise flashBlockedKernel declines (undefined) and the caller uses kernels/flash-forward.ts.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { dispatchGroups, f32Lit, groupIndexCode, u32Lit } from './elementwise.js';
import {
  BR,
  coefSlot,
  COMPONENTS,
  GROUPS,
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
  SWEEP_GROUPS as KEY_GROUPS,
  SWEEP_TILES as KEY_TILES,
  type Geometry,
} from './flash-blocked-common.js';
import { attentionGeometry, canSplit, EXP_FLASH, flashKernel, loadVec4TileCode, tileSource, vec4s, withSecondOutput, withSubgroups, withVectorReads, type FlashReads } from './flash-common.js';
import { combineCode } from './reduce.js';

/** Lanes per row in the softmax phase. */
const PARTS = LANES / BR;

/** The blocked kernel's layout for a head dim D (q, k) and Dv (v; 0 for attention_lse). */
export interface BlockedTiles {
  /** Keys per tile. */
  readonly keys: number;
  /** vec4s per k row in the tile (odd). */
  readonly kStride: number;
  /** vec4s per v row in the tile (2·NC: whole column pairs, zero-padded). */
  readonly vStride: number;
  /** Output column groups: a P·V block's vec4 columns are g and g + NC. */
  readonly columnGroups: number;
  /** Workgroup memory used, in bytes. */
  readonly bytes: number;
}

/** The tiles for head dims D and Dv within `limit` bytes of workgroup memory, or undefined when none fit. */
export function blockedTiles(D: number, Dv: number, limit: number): BlockedTiles | undefined {
  const D4 = vec4s(D);
  const kStride = D4 % 2 === 1 ? D4 : D4 + 1;
  const columnGroups = Math.ceil(vec4s(Dv) / 2);
  const vStride = 2 * columnGroups;
  for (const keys of KEY_TILES) {
    const vec4Count = BR * D4 + keys * Math.max(kStride, vStride) + keys * SP_STRIDE + (Dv > 0 ? GROUPS : 0);
    if (16 * vec4Count <= limit) return { keys, kStride, vStride, columnGroups, bytes: 16 * vec4Count };
  }
  return undefined;
}

/**
 * The blocked kernel of an `attention` node (q, k, v) or `attention_lse` node (q, k), also writing `lse`'s value
 * when given (as flashForwardKernel), or undefined where it does not apply (see the header).
 */
export function flashBlockedKernel(node: Node, inputs: readonly Node[], target: Target, lse: Node | undefined, given: FlashReads): Kernel | undefined {
  const lseOnly = node.op === 'attention_lse';
  const operands = lseOnly ? [0, 1] : [0, 1, 2];
  const masked = inputs.length > operands.length;
  const L = target.limits;
  if (masked || !canSplit(target, PARTS) || Math.min(L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX) < LANES) return undefined;
  const reads = target.tuning?.vectorLoads === false ? given : withVectorReads(given, inputs, operands);
  const [q, k] = inputs;
  const g = attentionGeometry(node, q, k, lseOnly ? undefined : inputs[2], undefined);
  const tiles = blockedTiles(g.D, g.Dv, L.maxComputeWorkgroupStorageSize);
  if (!tiles) return undefined;
  const qTiles = Math.ceil(g.Sq / BR);
  const groups = g.B * g.H * qTiles;
  const dispatch = dispatchGroups(groups, target);
  const body = blockedBody(g, tiles, target, reads, lseOnly, lse !== undefined, groups, dispatch, qTiles);
  const name = lseOnly ? 'attention_lse_flash_blocked_f32' : lse ? 'attention_flash_lse_blocked_f32' : 'attention_flash_blocked_f32';
  const kernel = withSubgroups(flashKernel(node, inputs, target, reads, { name, body, workgroupSize: [LANES, 1, 1], dispatch, lib: ['is_nan', ...(lseOnly || lse ? ['log_f32'] : [])] }), PARTS);
  return lse ? withSecondOutput(kernel, lse, target) : kernel;
}

function blockedBody(g: Geometry, tiles: BlockedTiles, target: Target, reads: FlashReads, lseOnly: boolean, withLse: boolean, groups: number, dispatch: [number, number, number], qTiles: number): string {
  const U = u32Lit;
  const NEG_INF = f32Lit(-Infinity);
  const maxC = (a: string, b: string) => combineCode('max', a, b);
  const { keys: BC, kStride: KS, vStride: VS, columnGroups: NC } = tiles;
  const D4 = vec4s(g.D);
  const KJ = BC / KEY_GROUPS;
  const ts = range(BC / PARTS);
  // P·V blocks per lane: column groups pc + 16b.
  const ob = outputBlocks('o', NC);
  const lseOut = lseOnly ? 'out_0' : 'out_1';

  const stageK = loadVec4TileCode(target, 'kv', tileSource(reads, 1, 'j0'), `(bh * ${U(g.Sk)} + j0) * ${U(g.D)}`, 'k_valid', BC, g.D, LANES, undefined, KS);
  const stageV = lseOnly ? '' : loadVec4TileCode(target, 'kv', tileSource(reads, 2, 'j0'), `(bh * ${U(g.Sk)} + j0) * ${U(g.Dv)}`, 'k_valid', BC, g.Dv, LANES, undefined, VS);

  // Phase 2: the scores of rows sr + 8i, keys sc + 16j.
  const scores = [
    '    {',
    ...scoreBlockLines('s', { tile: 'qt', base: 'qa', stride: D4 }, { tile: 'kv', base: 'ka', stride: KS }, D4, KJ, '      '),
    ...range(KJ).map((j) => `      sp[${coefSlot(j)}] = select(vec4f(${NEG_INF}), vec4f(${range(4).map((i) => `s${i}_${j}`).join(', ')}), ${sweptRow(j)} < k_valid);`),
    '    }',
  ].join('\n');

  // Phase 3: this lane's keys part + 4t of row (sa, si); the row's max and sum over its 4 lanes.
  const at = (t: number) => `sp[${t === 0 ? 'part' : `(part + ${U(PARTS * t)})`} * ${U(SP_STRIDE)} + sa][si]`;
  const softmax = [
    '    {',
    ...ts.map((t) => `      let s${t} = ${at(t)};`),
    '      var mt = s0;',
    ...ts.slice(1).map((t) => `      mt = ${maxC('mt', `s${t}`)};`),
    ...[1, 2].flatMap((x) => [`      let mx${x} = subgroupShuffleXor(mt, ${U(x)});`, `      mt = ${maxC('mt', `mx${x}`)};`]),
    `      let mn = ${maxC('m', 'mt')};`,
    '      // e^{m_old - m_new}; 0 while nothing was seen (m_old = -inf).',
    `      let alpha = select(exp_flash(m - mn), 0.0f, m == ${NEG_INF});`,
    ...ts.map((t) => `      let p${t} = select(exp_flash(s${t} - mn), 0.0f, s${t} == ${NEG_INF});`),
    `      var ps = ${ts.map((t) => `p${t}`).join(' + ')};`,
    ...[1, 2].map((x) => `      ps += subgroupShuffleXor(ps, ${U(x)});`),
    '      l = l * alpha + ps;',
    '      m = mn;',
    ...(lseOnly ? [] : [...ts.map((t) => `      ${at(t)} = p${t};`), '      if (part == 0u) { al[sa][si] = alpha; }']),
    '    }',
  ].join('\n');

  // Phase 4: O = O·α + Σ_key p·v for this lane's blocks.
  const pv = outputBlockCode(ob, { coef: 'sp', tile: 'kv', stride: VS, count: BC }, (b) => [
    '  let a = al[pr];',
    ...range(4).map((i) => `  ${[0, 1].map((w) => `${ob.acc(b, i, w)} = ${ob.acc(b, i, w)} * a.${COMPONENTS[i]};`).join(' ')}`),
  ]);

  // out = O / l: rows past Sq and columns past Dv are not stored.
  const storeOut = storeBlocksCode(ob, { out: 'out_0', row0: 'q0', rows: g.Sq, cols: g.Dv, value: (acc, i) => `${acc} / lv.${COMPONENTS[i]}` });
  const storeLse = `  if (part == 0u && q0 + sa + 8u * si < ${U(g.Sq)}) { ${lseOut}[bh * ${U(g.Sq)} + q0 + sa + 8u * si] = m + log_f32(l); }`;

  const declarations = [
    `var<workgroup> qt: array<vec4f, ${BR * D4}>;`,
    `var<workgroup> kv: array<vec4f, ${BC * Math.max(KS, lseOnly ? 0 : VS)}>;`,
    `var<workgroup> sp: array<vec4f, ${BC * SP_STRIDE}>;`,
    ...(lseOnly ? [] : [`var<workgroup> al: array<vec4f, ${GROUPS}>;`]),
  ];
  const oDecls = lseOnly ? [] : outputDeclLines(ob);
  return `${EXP_FLASH}

${declarations.join('\n')}

// ${BR} query rows per workgroup, ${BC} keys per tile; scores in 4 x ${KJ} blocks${lseOnly ? '' : `, outputs in ${ob.blocks.length} block(s) of 4 rows x 2 vec4s per invocation`}.
@compute @workgroup_size(${LANES}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
${groupIndexCode('grp', groups, dispatch)}
${ownedTileLines(g.H, qTiles, g.Sq, 'q0', 'q_valid').join('\n')}
${loadVec4TileCode(target, 'qt', tileSource(reads, 0, 'q0'), `(bh * ${U(g.Sq)} + q0) * ${U(g.D)}`, 'q_valid', BR, g.D, LANES, f32Lit(g.scale), D4, '  ')}
  // Scores: rows sr + 8i, keys sc + 16j.
  let sr = lid / ${U(KEY_GROUPS)};
  let sc = lid % ${U(KEY_GROUPS)};
  let qa = sr * ${U(D4)};
  let ka = sc * ${U(KS)};
  // Softmax: row sa + 8·si, keys part + 4t; m and l of that row.
  let part = lid % ${U(PARTS)};
  let sa = (lid / ${U(PARTS)}) % ${U(GROUPS)};
  let si = (sa + lid / 32u) % 4u;
  var m = ${NEG_INF};
  var l = 0.0f;
${
  lseOnly
    ? ''
    : `  // P·V: rows pr + 8i, output vec4 columns (pc + 16b) and (pc + 16b + ${NC}).
  let pr = lid % ${U(GROUPS)};
  let pc = lid / ${U(GROUPS)};
${oDecls.join('\n')}
`
}  for (var j0 = 0u; j0 < ${U(g.Sk)}; j0 += ${U(BC)}) {
    workgroupBarrier();
    let k_valid = min(${U(BC)}, ${U(g.Sk)} - j0);
${stageK}
    workgroupBarrier();
${scores}
    workgroupBarrier();
${stageV}
${softmax}
${lseOnly ? '' : `    workgroupBarrier();\n${pv}\n`}  }
${
  lseOnly
    ? storeLse
    : `  workgroupBarrier();
  if (part == 0u) { al[sa][si] = l; }
  workgroupBarrier();
  let lv = al[pr];
${storeOut}${withLse ? `\n${storeLse}` : ''}`
}
}`;
}
