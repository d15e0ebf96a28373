// The subgroup-matrix (tensor core) flash-attention forward, `attention_flash_sgmat_f16`: softmax(q·kᵀ·scale
// [+ mask])·v for q, k, v holding exact f16 values (compiler/codegen/half.ts isExactHalf) on a Target with an
// f16 x f16 -> f32 subgroup-matrix config (kernels/sgmat.ts; emulated on lavapipe, native on NVIDIA).
//
// A workgroup owns BR = W·m query rows of one (batch, head): W subgroups of m rows each (m: the config's left
// rows). It stages those q rows as f16 once (head dim padded with zeros to DKP, a multiple of the config's k),
// and each subgroup loads its q fragments into registers. Then it sweeps the keys in tiles of BC:
//   1. stage kᵀ [DKP, BC] (a row-major right matrix) and v [BC, DVP] as f16, zeros past Sk and past the head dims;
//   2. S = q·kᵀ per subgroup (BC/n result fragments, DKP/k steps), stored to the f32 scratch `tile_s`;
//   3. the softmax on every invocation: P = ⌊T/BR⌋ (1 to 8) invocations per row, each over every P-th key. Pass 1:
//      s·scale + mask (-inf past Sk) and the part's max; pass 2: the row's new max m (from the parts' maxima, in
//      part order), p = e^{s − m} rounded to f16 into `tile_p`, the part's Σ f32(p), and α = e^{m_old − m} (0
//      while nothing was seen); then per row l = α·l + the parts' sums in part order (the sum of the rounded
//      weights, so out = Σ p·v / Σ p weighs exactly what it sums). No float atomics: bitwise repeatable;
//   4. O (result fragments held across tiles) rescaled by α after the first tile: stored to the scratch a chunk
//      at a time, rows with α ≠ 1 multiplied, loaded back; then O += P·V (BC/k steps, DVP/n fragments).
//      Skipping the round trip when no row's max moved (flags set with a workgroup atomicOr, read with
//      workgroupUniformLoad) gave wrong rows natively on the H200 (2026-11-27; right when emulated, and right
//      natively with the flags taken out): it is not used.
// At the end out = O / l (and the sibling attention_lse's m + ln l). A row masked entirely gives 0/0 = NaN (lse
// -inf), as the reference. Products of f16 numbers are exact in f32, so S is q·kᵀ summed in f32; the one
// rounding the f32 kernels do not have is p to f16 before P·V (relative 2^-11 with round-to-nearest).
//
// Workgroup memory (natively): q and P share one array (q's fragments live in registers once loaded); kᵀ and v
// get an array each, or share one when that is what fits (v is then staged after S, alongside the softmax). The
// emulated spelling needs q to stay (its fragments are offsets) and adds its result slots. Tiles: the most
// subgroups (rows), then the longest key tiles, that fit the Target's workgroup memory.
// Natively the workgroup is W subgroups of subgroupMaxSize; subgroups past W (smaller runtime subgroups) only
// help stage. On software adapters loops stay rolled (unboundedLoop) to keep LLVM's compile time low.
// The split softmax (replacing one invocation per row; 9.5 ms at EVA-G detection on the H200 before it) is
// unmeasured on NVIDIA.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import { isExactHalf } from '../compiler/codegen/half.js';
import type { Graph, Node, Shape } from '../compiler/ir/graph.js';
import { dispatchGroups, f32Lit, u32Lit, unboundedLoop } from './elementwise.js';
import { attentionGeometry, bindingOf, directReads, EXP_FLASH, flashKernel, maskOffset, withSecondOutput, type FlashReads } from './flash-common.js';
import { combineCode } from './reduce.js';
import { firstFit, flashMainHead, PAD16, PAD32, roundUp, spread, stageRows, tilesUnfit } from './flash-sgmat-common.js';
import { NO_SGMAT_CONFIG, nativeSgmat, sgmatIds, sgmatSpelling, sgmatLanes, sgmatOps, sgmatShape, type SgmatShape } from './sgmat.js';

/** How the kernel tiles one (batch, head). */
export interface FlashSgmatTiles {
  /** Subgroups per workgroup, each owning m query rows. */
  readonly subgroups: number;
  /** Keys per tile (a multiple of the config's n and k). */
  readonly keys: number;
  /** kᵀ and v staged one after the other into one array (less memory, one more exposed load per tile). */
  readonly sharedKv: boolean;
}

/** q [B, H, Sq, D], k [B, H, Sk, D], v [B, H, Sk, Dv]. */
export interface AttentionShapes {
  readonly q: Shape;
  readonly k: Shape;
  readonly v: Shape;
}

/** Sizes of the arrays a tiling needs (elements), and the workgroup bytes in all. */
interface Layout {
  readonly shape: SgmatShape;
  readonly tiles: FlashSgmatTiles;
  readonly native: boolean;
  readonly lanes: number;
  readonly invocations: number;
  /** Invocations per query row in the softmax, each over every parts-th key of the tile (1 when T < 2·BR). */
  readonly parts: number;
  /** Query rows per workgroup and keys per tile. */
  readonly br: number;
  readonly bc: number;
  /** Head dims padded to the config (q·kᵀ's k steps; P·V's n columns). */
  readonly dkp: number;
  readonly dvp: number;
  /** Row strides: staged q, P, kᵀ, v (f16) and the scratch (f32). */
  readonly sq: number;
  readonly sp: number;
  readonly sk: number;
  readonly sv: number;
  readonly ss: number;
  /** Elements of the q and P arrays (one shared array natively), and of kᵀ and v (one array when shared). */
  readonly qElems: number;
  readonly pElems: number;
  readonly kElems: number;
  readonly vElems: number;
  readonly bytes: number;
}

/** At most this many invocations share a row's softmax (their combine is unrolled). */
const MAX_PARTS = 8;

function layout(target: Target, shape: SgmatShape, d: number, dv: number, tiles: FlashSgmatTiles): Layout {
  const native = nativeSgmat(target);
  const lanes = sgmatLanes(target);
  const br = tiles.subgroups * shape.m;
  const bc = tiles.keys;
  const dkp = roundUp(d, shape.k);
  const dvp = roundUp(dv, shape.n);
  const [sq, sp, sk, sv, ss] = [dkp + PAD16, bc + PAD16, bc + PAD16, dvp + PAD16, bc + PAD32];
  const q = br * sq;
  const p = br * sp;
  const [qElems, pElems] = native ? [Math.max(q, p), 0] : [q, p];
  const [kt, vt] = [dkp * sk, bc * sv];
  const [kElems, vElems] = tiles.sharedKv ? [Math.max(kt, vt), 0] : [kt, vt];
  const invocations = tiles.subgroups * lanes;
  const parts = Math.max(1, Math.min(MAX_PARTS, bc, Math.floor(invocations / br)));
  // The f32 scratch, the row statistics (m, l, α), the parts' maxima and sums, and the emulated result slots (S
  // and O fragments).
  const slots = native ? 0 : tiles.subgroups * (bc / shape.n + dvp / shape.n);
  const bytes = 2 * (qElems + pElems + kElems + vElems) + 4 * (br * ss + 3 * br + 2 * br * parts + slots * shape.m * shape.n);
  return { shape, tiles, native, lanes, invocations, parts, br, bc, dkp, dvp, sq, sp, sk, sv, ss, qElems, pElems, kElems, vElems, bytes };
}

/** Why a layout cannot run on `target` for `bh` (batch, head) pairs (undefined when it can). */
const layoutUnfit = (target: Target, l: Layout, bh: number, sq: number): string | undefined =>
  tilesUnfit(target, { ...l, subgroups: l.tiles.subgroups, sweep: l.tiles.keys, what: 'keys' }, bh * Math.ceil(sq / l.br));

/** The dims of `shapes`, or why they are not attention's. */
function dimsOf(shapes: AttentionShapes): { bh: number; sq: number; sk: number; d: number; dv: number } | string {
  const { q, k, v } = shapes;
  if (q.length !== 4 || k.length !== 4 || v.length !== 4) return `q, k, v must be [B, H, S, D] (got [${q}], [${k}], [${v}])`;
  if (q[3] === 0 || v[3] === 0) return 'a head dim of 0';
  return { bh: q[0] * q[1], sq: q[2], sk: k[2], d: q[3], dv: v[3] };
}

/**
 * The tiles the kernel uses for these shapes on `target`: the first that fits of up to 4 subgroups (no more
 * than Sq needs), then key tiles of 64, 32, 16 (no longer than Sk needs), kᵀ and v apart before shared; or why
 * none fits.
 */
export function flashSgmatTiles(target: Target, shapes: AttentionShapes): FlashSgmatTiles | string {
  const shape = sgmatShape(target);
  if (!shape) return NO_SGMAT_CONFIG;
  const dims = dimsOf(shapes);
  if (typeof dims === 'string') return dims;
  if (target.tuning?.flashSgmatTiles) return target.tuning.flashSgmatTiles;
  return firstFit(
    shape,
    { own: dims.sq, sweep: dims.sk, d: dims.d, dv: dims.dv },
    (subgroups, keys, sharedKv): FlashSgmatTiles => ({ subgroups, keys, sharedKv }),
    (tiles) => layoutUnfit(target, layout(target, shape, dims.d, dims.dv, tiles), dims.bh, dims.sq),
  );
}

/** The workgroup bytes of `tiles` for these shapes on `target` (the chosen tiles when not given). */
export function flashSgmatBytes(target: Target, shapes: AttentionShapes, tiles?: FlashSgmatTiles): number {
  const shape = sgmatShape(target);
  const dims = dimsOf(shapes);
  const t = tiles ?? flashSgmatTiles(target, shapes);
  if (!shape || typeof dims === 'string' || typeof t === 'string') throw new Error(`internal: flash sgmat bytes of unfit shapes`);
  return layout(target, shape, dims.d, dims.dv, t).bytes;
}

/** Why the kernel cannot run attention of these shapes on `target` (with `tiles`, else its own), or undefined. */
export function flashSgmatUnfit(target: Target, shapes: AttentionShapes, tiles?: FlashSgmatTiles): string | undefined {
  const shape = sgmatShape(target);
  if (!shape) return NO_SGMAT_CONFIG;
  const dims = dimsOf(shapes);
  if (typeof dims === 'string') return dims;
  if (!tiles) {
    const t = flashSgmatTiles(target, shapes);
    return typeof t === 'string' ? t : undefined;
  }
  const l = layout(target, shape, dims.d, dims.dv, tiles);
  return layoutUnfit(target, l, dims.bh, dims.sq);
}

/**
 * Whether the attention node `node` of `graph` should run on this kernel: q, k and v hold exact f16 values, the
 * target has a config, and tiles fit.
 */
export function flashSgmatApplies(graph: Graph, node: Node, target: Target): boolean {
  if (node.op !== 'attention') return false;
  const [q, k, v] = node.inputs.slice(0, 3).map((i) => graph.node(i));
  if (![q, k, v].every((x) => isExactHalf(graph, x.id))) return false;
  return flashSgmatUnfit(target, { q: q.shape, k: k.shape, v: v.shape }) === undefined;
}

export interface FlashSgmatOptions {
  /** Forced tiles (tests); else flashSgmatTiles. */
  readonly tiles?: FlashSgmatTiles;
  /** An attention_lse node of the same q, k, mask and scale: also written (out_1), as m + ln l. */
  readonly lse?: Node;
  /** q, k, v through views (compiler/codegen/attention-views.ts) instead of their bindings. */
  readonly reads?: FlashReads;
}

/** The `attention_flash_sgmat_f16` kernel of an attention node (inputs q, k, v, [mask]); check flashSgmatUnfit first. */
export function flashSgmatForwardKernel(node: Node, inputs: readonly Node[], target: Target, opts: FlashSgmatOptions = {}): Kernel {
  if (node.op !== 'attention') throw new Error(`internal: attention_flash_sgmat_f16 computes attention, not ${node.op} (%${node.id})`);
  const { lse } = opts;
  if (lse && lse.op !== 'attention_lse') throw new Error(`internal: %${node.id} attention cannot also write %${lse.id} ${lse.op}`);
  const reads = opts.reads ?? directReads(node);
  const [q, k, v, mask] = inputs;
  const shapes = { q: q.shape, k: k.shape, v: v.shape };
  const shape = sgmatShape(target);
  const tiles = opts.tiles ?? flashSgmatTiles(target, shapes);
  const why = typeof tiles === 'string' ? tiles : flashSgmatUnfit(target, shapes, tiles);
  if (!shape || typeof tiles === 'string' || why) throw new Error(`internal: attention_flash_sgmat_f16 for %${node.id}: ${why}`);
  const g = attentionGeometry(node, q, k, v, mask);
  const l = layout(target, shape, g.D, g.Dv, tiles);
  const { m, n, k: kk } = shape;
  const { br: BR, bc: BC, dkp: DKP, dvp: DVP, sq: SQ, sp: SP, sk: SK, sv: SV, ss: SS, invocations: T, native } = l;
  const W = tiles.subgroups;
  const U = u32Lit;
  const NEG_INF = f32Lit(-Infinity);
  // Two spellings: S = q·kᵀ reads q and kᵀ, O = P·V reads P and v (the emulation reads one pair of arrays each).
  const sFrags = BC / n;
  const oFrags = DVP / n;
  const sOps = sgmatOps(shape, sgmatSpelling(target), W * sFrags, 'sgs');
  const oOps = sgmatOps(shape, sgmatSpelling(target), W * oFrags, 'sgo');
  const [qArr, pArr] = native ? ['tile_qp', 'tile_qp'] : ['tile_q', 'tile_p'];
  const [kArr, vArr] = tiles.sharedKv ? ['tile_kv', 'tile_kv'] : ['tile_k', 'tile_v'];
  const qTiles = Math.ceil(g.Sq / BR);
  const groups = g.B * g.H * qTiles;
  const dispatch = dispatchGroups(groups, target);
  const maxC = (a: string, b: string) => combineCode('max', a, b);
  const range = (count: number) => Array.from({ length: count }, (_, i) => i);
  const ifComputes = (lines: string[], indent: string) => [`${indent}if (computes) {`, ...lines.map((x) => `${indent}  ${x}`), `${indent}}`].join('\n');

  const stage = (slot: number, row0: string, rows: number, valid: string, width: number, cols: number, seq: number, dst: (r: string, c: string) => string, indent?: string) =>
    stageRows(target, T, reads, { slot, row0, rows, valid, width, cols, seq, dst }, indent);
  const stageQ = stage(0, 'i0', BR, `i0 + r < ${U(g.Sq)}`, DKP, g.D, g.Sq, (r, c) => `${qArr}[${r} * ${U(SQ)} + ${c}]`);
  // kᵀ: key r of the tile is column r (reads run along the head dim: coalesced).
  const stageK = stage(1, 'j0', BC, 'r < k_valid', DKP, g.D, g.Sk, (r, c) => `${kArr}[${c} * ${U(SK)} + ${r}]`, '    ');
  const stageV = stage(2, 'j0', BC, 'r < k_valid', DVP, g.Dv, g.Sk, (r, c) => `${vArr}[${r} * ${U(SV)} + ${c}]`, '    ');
  // S = q·kᵀ: fragment c holds keys c·n …; each k step's q fragment is in registers.
  const scores: string[] = [];
  for (let c = 0; c < sFrags; c++) {
    scores.push(`var s_${c} = ${sOps.zero(`sg * ${U(sFrags)} + ${U(c)}`)};`);
  }
  for (let t = 0; t < DKP / kk; t++) {
    for (let c = 0; c < sFrags; c++) scores.push(`s_${c} = ${sOps.multiplyAccumulate(`q_${t}`, sOps.loadRight(kArr, `${U(t * kk * SK + c * n)}`, U(SK)), `s_${c}`)};`);
  }
  for (let c = 0; c < sFrags; c++) scores.push(sOps.store('tile_s', `sm * ${U(SS)} + ${U(c * n)}`, `s_${c}`, U(SS)));

  const ms = g.maskStrides;
  const maskName = mask ? bindingOf(reads, 3) : '';
  const maskAdd = ms ? `\n      if (row < ${U(g.Sq)} && j < k_valid) { s += ${maskName}[${maskOffset(ms, 'b', 'h', 'row', 'j0 + j')}]; }` : '';
  // The softmax, T invocations at once: pair x = (row x / P, part x % P) walks keys part, part + P, ... of the
  // row. Pass 1: s·scale + mask (-inf past Sk), the part's max. Pass 2: the row's new max m from the parts' (read
  // in a fixed order), p = e^{s − m} rounded to f16 into P, the part's Σ f32(p); part 0 writes α. Then one
  // invocation per row: m, and l = α·l + the parts' sums in part order.
  const P = l.parts;
  const pairs = BR * P;
  const partsOf = (arr: string) => range(P).map((p) => `${arr}[r * ${U(P)} + ${U(p)}]`);
  // Statements: `name` = the max of `first` and the parts' maxima, in part order.
  const rowMax = (name: string, first: string) => [`var ${name} = ${first};`, ...partsOf('part_m').map((x) => `${name} = ${maxC(name, x)};`)];
  const rowSum = partsOf('part_l').join(' + ');
  const pairIds = [`let r = x / ${U(P)};`, `let part = x % ${U(P)};`];
  const keys = `for (var j = part; j < ${unboundedLoop(BC, target)}; j += ${U(P)}) {`;
  const softmax = `${spread(target, pairs, T, [
  ...pairIds,
  'let row = i0 + r;',
  `var mx = ${NEG_INF};`,
  keys,
  `  var s = tile_s[r * ${U(SS)} + j] * ${f32Lit(g.scale)};${maskAdd}`,
  `  s = select(${NEG_INF}, s, j < k_valid);`,
  `  tile_s[r * ${U(SS)} + j] = s;`,
  `  mx = ${maxC('mx', 's')};`,
  '}',
  'part_m[x] = mx;',
], '    ')}
    workgroupBarrier();
${spread(target, pairs, T, [
  ...pairIds,
  'let m_old = row_m[r];',
  ...rowMax('mn', 'm_old'),
  'var ps = 0.0f;',
  keys,
  `  let s = tile_s[r * ${U(SS)} + j];`,
  `  let p = f16(select(exp_flash(s - mn), 0.0f, s == ${NEG_INF}));`,
  `  ${pArr}[r * ${U(SP)} + j] = p;`,
  '  ps += f32(p);',
  '}',
  'part_l[x] = ps;',
  'if (part == 0u) {',
  '  // e^{m_old - m_new}; 0 while nothing was seen (m_old = -inf).',
  `  let alpha = select(exp_flash(m_old - mn), 0.0f, m_old == ${NEG_INF});`,
  '  row_a[r] = alpha;',
  '}',
], '    ')}
    workgroupBarrier();
    for (var r = lid; r < ${unboundedLoop(BR, target)}; r += ${U(T)}) {
      row_l[r] = row_l[r] * row_a[r] + ${rowSum};
${rowMax('mn', 'row_m[r]').map((x) => `      ${x}`).join('\n')}
      row_m[r] = mn;
    }`;

  // O's fragments pass through the subgroup's m x BC scratch rows a chunk of BC/n at a time.
  const chunk = BC / n;
  const chunks = range(Math.ceil(oFrags / chunk)).map((ci) => range(Math.min(chunk, oFrags - ci * chunk)).map((x) => ci * chunk + x));
  const oSlot = (j: number) => `sg * ${U(oFrags)} + ${U(j)}`;
  const through = (frags: number[], indent: string, each: string[]) => {
    const width = frags.length * n;
    const c0 = frags[0] * n;
    return [
      ifComputes(frags.map((j) => oOps.store('tile_s', `sm * ${U(SS)} + ${U((j - frags[0]) * n)}`, `o_${j}`, U(SS))), indent),
      `${indent}workgroupBarrier();`,
      spread(target, BR * width, T, [`let r = x / ${U(width)};`, `let c = x % ${U(width)};`, ...each.map((e) => e.replaceAll('COL', c0 ? `${U(c0)} + c` : 'c'))], indent),
    ].join('\n');
  };
  // Never at the first tile (O is zero).
  const rescale = `    if (j0 > 0u) {\n${chunks
    .map((frags, i) =>
      [
        ...(i > 0 ? ['      workgroupBarrier();'] : []),
        through(frags, '      ', [`let a = row_a[r];`, `if (a != 1.0f) { tile_s[r * ${U(SS)} + c] *= a; }`]),
        '      workgroupBarrier();',
        ifComputes(frags.map((j) => `o_${j} = ${oOps.loadResult('tile_s', `sm * ${U(SS)} + ${U((j - frags[0]) * n)}`, U(SS), oSlot(j))};`), '      '),
      ].join('\n'),
    )
    .join('\n')}\n    }`;
  const pv: string[] = [];
  for (let t = 0; t < BC / kk; t++) {
    pv.push(`{`, `  let p_${t} = ${oOps.loadLeft(pArr, `sm * ${U(SP)} + ${U(t * kk)}`, U(SP))};`);
    for (let j = 0; j < oFrags; j++) pv.push(`  o_${j} = ${oOps.multiplyAccumulate(`p_${t}`, oOps.loadRight(vArr, U(t * kk * SV + j * n), U(SV)), `o_${j}`)};`);
    pv.push(`}`);
  }
  const finals = chunks
    .map((frags, i) =>
      [
        ...(i > 0 ? ['  workgroupBarrier();'] : []),
        through(frags, '  ', [
          `let row = i0 + r;`,
          `let col = COL;`,
          `if (row < ${U(g.Sq)} && col < ${U(g.Dv)}) { out_0[(bh * ${U(g.Sq)} + row) * ${U(g.Dv)} + col] = tile_s[r * ${U(SS)} + c] / row_l[r]; }`,
        ]),
      ].join('\n'),
    )
    .join('\n');
  const storeLse = lse
    ? `\n  for (var r = lid; r < ${unboundedLoop(BR, target)}; r += ${U(T)}) {
    if (i0 + r < ${U(g.Sq)}) { out_1[bh * ${U(g.Sq)} + i0 + r] = row_m[r] + log_f32(row_l[r]); }
  }`
    : '';

  const ids = sgmatIds(native, l.lanes);
  const decls = [
    `var<workgroup> ${qArr}: array<f16, ${l.qElems}>;`,
    ...(native ? [] : [`var<workgroup> ${pArr}: array<f16, ${l.pElems}>;`]),
    `var<workgroup> ${kArr}: array<f16, ${l.kElems}>;`,
    ...(tiles.sharedKv ? [] : [`var<workgroup> ${vArr}: array<f16, ${l.vElems}>;`]),
    `var<workgroup> tile_s: array<f32, ${BR * SS}>;`,
    `var<workgroup> row_m: array<f32, ${BR}>;`,
    `var<workgroup> row_l: array<f32, ${BR}>;`,
    `var<workgroup> row_a: array<f32, ${BR}>;`,
    `var<workgroup> part_m: array<f32, ${pairs}>;`,
    `var<workgroup> part_l: array<f32, ${pairs}>;`,
  ].join('\n');
  const main = `${EXP_FLASH}

${decls}

${flashMainHead({ comment: `${W} subgroup(s) of ${m} query rows, ${BC} keys per tile, ${shape.m}x${shape.n}x${shape.k} matrices${tiles.sharedKv ? ', kᵀ and v in one array' : ''}.`, invocations: T, ids, groups, dispatch, tiles: qTiles, rows: BR, row0: 'i0', heads: g.H, subgroups: W, m })}
${stageQ}
  for (var r = lid; r < ${unboundedLoop(BR, target)}; r += ${U(T)}) {
    row_m[r] = ${NEG_INF};
    row_l[r] = 0.0f;
  }
  workgroupBarrier();
${range(DKP / kk)
  .map((t) => `  var q_${t}: ${sOps.leftType};`)
  .join('\n')}
${ifComputes(
  range(DKP / kk).map((t) => `q_${t} = ${sOps.loadLeft(qArr, `sm * ${U(SQ)} + ${U(t * kk)}`, U(SQ))};`),
  '  ',
)}
${range(oFrags)
  .map((j) => `  var o_${j} = ${oOps.zero(oSlot(j))};`)
  .join('\n')}
  for (var j0 = 0u; j0 < ${unboundedLoop(g.Sk, target)}; j0 += ${U(BC)}) {
    let k_valid = min(${U(BC)}, ${U(g.Sk)} - j0);
    workgroupBarrier();
${stageK}
${tiles.sharedKv ? '' : `${stageV}\n`}    workgroupBarrier();
${ifComputes(scores, '    ')}
    workgroupBarrier();
${tiles.sharedKv ? `${stageV}\n` : ''}${softmax}
${rescale}
${ifComputes(pv, '    ')}
  }
  workgroupBarrier();
${finals}${storeLse}
}`;
  const helpers = [sOps.helpers(), oOps.helpers()].filter(Boolean).join('\n\n');
  const name = lse ? 'attention_flash_lse_sgmat_f16' : 'attention_flash_sgmat_f16';
  const kernel = flashKernel(node, inputs, target, reads, {
    name,
    body: helpers ? `${helpers}\n\n${main}` : main,
    workgroupSize: [T, 1, 1],
    dispatch,
    lib: ['is_nan', ...(lse ? ['log_f32'] : [])],
  });
  const withDirectives = { ...kernel, wgsl: `${sOps.directives}\n${kernel.wgsl}` };
  return lse ? withSecondOutput(withDirectives, lse, target) : withDirectives;
}
