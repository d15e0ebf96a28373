// The subgroup-matrix (tensor core) flash-attention backward: the kernels of `attention_grad` (wrt 0: dq;
// wrt 1: dk; wrt 2: dv; dk and dv in one kernel when the schedule pairs them) for q, k, v and g holding exact
// f16 values (compiler/codegen/half.ts isExactHalf) on a Target with an f16 x f16 -> f32 subgroup-matrix config
// (kernels/sgmat.ts: native on NVIDIA, emulated on lavapipe). Inputs as kernels/flash-backward.ts: q, k, v, g,
// lse (the forward's m + ln l), δ = Σ g·out per query row, [mask]; FlashAttention-2's split, no atomics.
//
// A workgroup owns BR = W·m rows of one (batch, head) and sweeps the other side in tiles of BC rows:
//   dq:    owns query rows x = q, y = g; sweeps keys a = k, b = v.
//   dk/dv: owns key rows x = k, y = v; sweeps queries a = q, b = g (so S, dP, P, dS are transposed: [key, query]).
// Per tile: stage aᵀ, bᵀ (row-major right matrices) and a, b as f16 (zeros past the sequence and the head dims);
//   S = x·aᵀ and dP = y·bᵀ as result fragments, stored to the f32 scratches; then every invocation of the
//   workgroup takes elements x, x + T, ... of the BR x BC tile (row x / BC, column x % BC: lse and δ are given,
//   so there is nothing to combine across invocations): s = S·scale [+ mask], P = e^{s − lse},
//   dS = P·(dP − δ) in f32, both rounded to f16 into the left array;
//   then acc_x += dS·a (dq or dk), acc_y += P·b (dv), accumulators held as result fragments across tiles.
// At the end the accumulators go out through the scratch a chunk at a time (acc_x ·scale, as the f32 kernel).
// Products of f16 numbers are exact in f32; the roundings the f32 kernels do not have are P and dS to f16
// before their products (relative 2^-10 either way WGSL rounds, absolute 2^-25 where they fall below f16's
// normal range): test/kernels/attention-grad-bounds.ts derives the test bound from exactly these.
//
// Workgroup memory: natively x and y are staged once into the start of one f16 array and loaded into
// registers, so the tile arrays reuse that space; emulated matrices are offsets into their arrays, so x and y
// stay, and the emulation's result slots count. `sequential` tiles stage aᵀ, bᵀ, a, b one after the other
// into one region (less memory, more barriers). Tiles: the most subgroups, the longest sweep, concurrent
// before sequential, that fit. On software adapters loops stay rolled (unboundedLoop) for LLVM's compile time.
// Not yet tuned on a GPU: its elementwise parts (staging, P and dS, the way out) already run on every
// invocation, one element each (the forward's one-invocation-per-row softmax has no counterpart here); each
// is a barrier-separated phase. What bounds it on NVIDIA is unmeasured (the products-removed ablation was the
// forward's); suspects: a and aᵀ (b and bᵀ) staged from global memory twice, the transposed (strided) stores.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import { isExactHalf } from '../compiler/codegen/half.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { dispatchGroups, f32Lit, u32Lit, unboundedLoop } from './elementwise.js';
import { attentionGeometry, bindingOf, directReads, EXP_FLASH, flashKernel, FlashTileError, GRAD_SLOTS, maskOffset, touchUnread, withSecondOutput, type FlashReads } from './flash-common.js';
import type { AttentionShapes } from './flash-sgmat.js';
import { firstFit, flashMainHead, lcm, PAD16, PAD32, roundUp, spread, stageRows, tilesUnfit } from './flash-sgmat-common.js';
import { NO_SGMAT_CONFIG, nativeSgmat, sgmatIds, sgmatSpelling, sgmatLanes, sgmatOps, sgmatShape, type SgmatShape } from './sgmat.js';

/** How a backward kernel tiles one (batch, head). */
export interface FlashSgmatBackwardTiles {
  /** Subgroups per workgroup, each owning m rows. */
  readonly subgroups: number;
  /** Swept rows per tile (a multiple of the config's n and k). */
  readonly sweep: number;
  /** aᵀ, bᵀ, a and b staged one after the other into one region. */
  readonly sequential: boolean;
}

/** What a kernel computes: dq, dk, dv, or dk and dv together. */
export type FlashSgmatGrad = 'q' | 'k' | 'v' | 'kv';

const { Q, K, V, G, LSE, DELTA, MASK } = GRAD_SLOTS;

/** Which products a kernel has: dP (dq, dk), acc_x += dS·a (dq, dk), acc_y += P·b (dv). */
export function rolesOf(which: FlashSgmatGrad) {
  return { dq: which === 'q', dP: which !== 'v', accX: which !== 'v', accY: which === 'v' || which === 'kv' };
}

interface Dims {
  readonly bh: number;
  readonly own: number;
  readonly sweep: number;
  readonly d: number;
  readonly dv: number;
}

function dimsOf(shapes: AttentionShapes, which: FlashSgmatGrad): Dims | string {
  const { q, k, v } = shapes;
  if (q.length !== 4 || k.length !== 4 || v.length !== 4) return `q, k, v must be [B, H, S, D] (got [${q}], [${k}], [${v}])`;
  if (q[3] === 0 || v[3] === 0) return 'a head dim of 0';
  const dq = which === 'q';
  return { bh: q[0] * q[1], own: dq ? q[2] : k[2], sweep: dq ? k[2] : q[2], d: q[3], dv: v[3] };
}

/** Where one f16 matrix lives: its array and first element. */
interface Region {
  readonly arr: string;
  readonly base: number;
}

interface Layout {
  readonly shape: SgmatShape;
  readonly tiles: FlashSgmatBackwardTiles;
  readonly native: boolean;
  readonly lanes: number;
  readonly invocations: number;
  readonly br: number;
  readonly bc: number;
  readonly dkp: number;
  readonly dvp: number;
  /** Strides: own rows (x, y), transposed sweep (aᵀ, bᵀ), sweep rows (a, b), left (dS, P), f32 scratch. */
  readonly so: number;
  readonly st: number;
  readonly sn: number;
  readonly sl: number;
  readonly ss: number;
  readonly x: Region;
  readonly y: Region;
  readonly at: Region;
  readonly bt: Region;
  readonly a: Region;
  readonly b: Region;
  readonly ds: Region;
  readonly p: Region;
  /** f16 arrays and their elements. */
  readonly arrays: ReadonlyMap<string, number>;
  readonly slots: { readonly s: number; readonly acc: number };
  readonly bytes: number;
}

function layout(target: Target, shape: SgmatShape, which: FlashSgmatGrad, d: number, dv: number, tiles: FlashSgmatBackwardTiles): Layout {
  const r = rolesOf(which);
  const native = nativeSgmat(target);
  const lanes = sgmatLanes(target);
  const unit = lcm(shape.n, shape.k);
  const br = tiles.subgroups * shape.m;
  const bc = tiles.sweep;
  const dkp = roundUp(d, unit);
  const dvp = roundUp(dv, unit);
  const so = Math.max(dkp, r.dP ? dvp : 0) + PAD16;
  const st = bc + PAD16;
  const sn = Math.max(r.accX ? dkp : 0, r.accY ? dvp : 0) + PAD16;
  const sl = bc + PAD16;
  const ss = bc + PAD32;
  const sizes = { x: br * so, y: r.dP ? br * so : 0, at: dkp * st, bt: r.dP ? dvp * st : 0, a: r.accX ? bc * sn : 0, b: r.accY ? bc * sn : 0, ds: r.accX ? br * sl : 0, p: r.accY ? br * sl : 0 };
  const own = sizes.x + sizes.y;
  const right = tiles.sequential ? Math.max(sizes.at, sizes.bt, sizes.a, sizes.b) : sizes.at + sizes.bt + sizes.a + sizes.b;
  const left = sizes.ds + sizes.p;
  const arrays = new Map<string, number>();
  let regions: Pick<Layout, 'x' | 'y' | 'at' | 'bt' | 'a' | 'b' | 'ds' | 'p'>;
  if (native) {
    // One array: x and y first, then (once they are in registers) the tiles over them.
    const h = (base: number): Region => ({ arr: 'tile_h', base });
    const seq = tiles.sequential;
    regions = { x: h(0), y: h(sizes.x), at: h(0), bt: h(seq ? 0 : sizes.at), a: h(seq ? 0 : sizes.at + sizes.bt), b: h(seq ? 0 : sizes.at + sizes.bt + sizes.a), ds: h(right), p: h(right + sizes.ds) };
    arrays.set('tile_h', Math.max(own, right + left));
  } else {
    const [t, n] = tiles.sequential ? ['tile_r', 'tile_r'] : ['tile_t', 'tile_n'];
    regions = { x: { arr: 'tile_own', base: 0 }, y: { arr: 'tile_own', base: sizes.x }, at: { arr: t, base: 0 }, bt: { arr: t, base: tiles.sequential ? 0 : sizes.at }, a: { arr: n, base: 0 }, b: { arr: n, base: tiles.sequential ? 0 : sizes.a }, ds: { arr: 'tile_l', base: 0 }, p: { arr: 'tile_l', base: sizes.ds } };
    arrays.set('tile_own', own);
    arrays.set('tile_l', left);
    if (tiles.sequential) arrays.set('tile_r', right);
    else {
      arrays.set('tile_t', sizes.at + sizes.bt);
      arrays.set('tile_n', sizes.a + sizes.b);
    }
  }
  const slots = native ? { s: 0, acc: 0 } : { s: tiles.subgroups * (bc / shape.n), acc: tiles.subgroups * ((r.accX ? dkp / shape.n : 0) + (r.accY ? dvp / shape.n : 0)) };
  const stats = r.dq ? 2 * br : (r.dP ? 2 : 1) * bc;
  const f16 = [...arrays.values()].reduce((s, e) => s + e, 0);
  const f32 = br * ss * (r.dP ? 2 : 1) + stats + (slots.s + slots.acc) * shape.m * shape.n;
  const bytes = 2 * f16 + 4 * f32;
  return { shape, tiles, native, lanes, invocations: tiles.subgroups * lanes, br, bc, dkp, dvp, so, st, sn, sl, ss, ...regions, arrays, slots, bytes };
}

/** Why a layout cannot run on `target` with `groups` workgroups (undefined when it can). */
const layoutUnfit = (target: Target, l: Layout, groups: number): string | undefined => tilesUnfit(target, { ...l, subgroups: l.tiles.subgroups, sweep: l.tiles.sweep, what: 'swept rows' }, groups);

/** The tiles of the `which` kernel for these shapes on `target`, or why none fits. */
export function flashSgmatBackwardTiles(target: Target, shapes: AttentionShapes, which: FlashSgmatGrad): FlashSgmatBackwardTiles | string {
  const shape = sgmatShape(target);
  if (!shape) return NO_SGMAT_CONFIG;
  const dims = dimsOf(shapes, which);
  if (typeof dims === 'string') return dims;
  return firstFit(
    shape,
    dims,
    (subgroups, sweep, sequential): FlashSgmatBackwardTiles => ({ subgroups, sweep, sequential }),
    (tiles) => {
      const l = layout(target, shape, which, dims.d, dims.dv, tiles);
      return layoutUnfit(target, l, dims.bh * Math.ceil(dims.own / l.br));
    },
  );
}

/** The workgroup bytes of `tiles` (the chosen ones when not given). */
export function flashSgmatBackwardBytes(target: Target, shapes: AttentionShapes, which: FlashSgmatGrad, tiles?: FlashSgmatBackwardTiles): number {
  const shape = sgmatShape(target);
  const dims = dimsOf(shapes, which);
  const t = tiles ?? flashSgmatBackwardTiles(target, shapes, which);
  if (!shape || typeof dims === 'string' || typeof t === 'string') throw new Error('internal: flash sgmat backward bytes of unfit shapes');
  return layout(target, shape, which, dims.d, dims.dv, t).bytes;
}

/** Why the `which` kernel cannot run these shapes on `target` (with `tiles`, else its own), or undefined. */
export function flashSgmatBackwardUnfit(target: Target, shapes: AttentionShapes, which: FlashSgmatGrad, tiles?: FlashSgmatBackwardTiles): string | undefined {
  const shape = sgmatShape(target);
  if (!shape) return NO_SGMAT_CONFIG;
  const dims = dimsOf(shapes, which);
  if (typeof dims === 'string') return dims;
  if (!tiles) {
    const t = flashSgmatBackwardTiles(target, shapes, which);
    return typeof t === 'string' ? t : undefined;
  }
  const l = layout(target, shape, which, dims.d, dims.dv, tiles);
  return layoutUnfit(target, l, dims.bh * Math.ceil(dims.own / l.br));
}

/** The kernel kind of an attention_grad node (with its wrt-2 sibling: 'kv'); undefined for wrt 3. */
export function gradOf(node: Node, sibling?: Node): FlashSgmatGrad | undefined {
  const wrt = attrNum(node.attrs, 'wrt');
  if (sibling) return wrt === 1 && sibling.op === 'attention_grad' && attrNum(sibling.attrs, 'wrt') === 2 ? 'kv' : undefined;
  return wrt === 0 ? 'q' : wrt === 1 ? 'k' : wrt === 2 ? 'v' : undefined;
}

/**
 * Whether the attention_grad node `node` (with `sibling`, its wrt-2 pair, when the schedule pairs them) should
 * run on these kernels: wrt 0, 1 or 2; q, k, v and g hold exact f16 values; the target has a config; tiles fit.
 */
export function flashSgmatBackwardApplies(graph: Graph, node: Node, target: Target, sibling?: Node): boolean {
  if (node.op !== 'attention_grad') return false;
  const which = gradOf(node, sibling);
  if (!which) return false;
  const [q, k, v, g] = node.inputs.slice(0, 4).map((i) => graph.node(i));
  if (![q, k, v, g].every((x) => isExactHalf(graph, x.id))) return false;
  return flashSgmatBackwardUnfit(target, { q: q.shape, k: k.shape, v: v.shape }, which) === undefined;
}

export interface FlashSgmatBackwardOptions {
  /** The wrt-2 node of the same inputs (node being wrt 1): dk to out_0, dv to out_1. */
  readonly sibling?: Node;
  /** q, k, v, g through views (compiler/codegen/attention-views.ts). */
  readonly reads?: FlashReads;
  /** Forced tiles (tests); else flashSgmatBackwardTiles. */
  readonly tiles?: FlashSgmatBackwardTiles;
}

/**
 * The kernel of an attention_grad node (wrt 0, 1 or 2; with `sibling` the wrt-1 node's kernel also writes dv);
 * check flashSgmatBackwardApplies first. Throws FlashTileError when the tiles do not fit.
 */
export function flashSgmatBackwardKernel(node: Node, inputs: readonly Node[], target: Target, opts: FlashSgmatBackwardOptions = {}): Kernel {
  const { sibling } = opts;
  if (node.op !== 'attention_grad') throw new Error(`internal: the sgmat backward computes attention_grad, not ${node.op} (%${node.id})`);
  const which = gradOf(node, sibling);
  if (!which) throw new Error(`internal: attention_grad %${node.id} (wrt ${String(node.attrs.wrt)})${sibling ? ` cannot also write %${sibling.id}` : ' has no sgmat kernel'}`);
  const reads = opts.reads ?? directReads(node);
  const [q, k, v] = inputs;
  const mask = inputs[MASK];
  const shapes = { q: q.shape, k: k.shape, v: v.shape };
  const shape = sgmatShape(target);
  const tiles = opts.tiles ?? flashSgmatBackwardTiles(target, shapes, which);
  const why = typeof tiles === 'string' ? tiles : flashSgmatBackwardUnfit(target, shapes, which, tiles);
  if (!shape || typeof tiles === 'string' || why) throw new FlashTileError(`attention_grad %${node.id} on subgroup matrices: ${why}`);
  const g = attentionGeometry(node, q, k, v, mask);
  const r = rolesOf(which);
  const l = layout(target, shape, which, g.D, g.Dv, tiles);
  const { m, n, k: kk } = shape;
  const { br: BR, bc: BC, dkp: DKP, dvp: DVP, so: SO, st: ST, sn: SN, sl: SL, ss: SS, invocations: T, native } = l;
  const W = tiles.subgroups;
  const U = u32Lit;
  const [ownLen, sweepLen] = r.dq ? [g.Sq, g.Sk] : [g.Sk, g.Sq];
  const [xSlot, ySlot, aSlot, bSlot] = r.dq ? [Q, G, K, V] : [K, V, Q, G];
  const sF = BC / n;
  const xF = r.accX ? DKP / n : 0;
  const yF = r.accY ? DVP / n : 0;
  // S and dP read x, y (one array) and aᵀ, bᵀ; the accumulations read dS, P and a, b: one spelling each.
  const sOps = sgmatOps(shape, sgmatSpelling(target), l.slots.s, 'sgs');
  const accOps = sgmatOps(shape, sgmatSpelling(target), l.slots.acc, 'sga');
  const ownTiles = Math.ceil(ownLen / BR);
  const groups = g.B * g.H * ownTiles;
  const dispatch = dispatchGroups(groups, target);
  const range = (count: number) => Array.from({ length: count }, (_, i) => i);
  const ifComputes = (lines: string[], indent: string) => [`${indent}if (computes) {`, ...lines.map((x) => `${indent}  ${x}`), `${indent}}`].join('\n');
  const at = (reg: Region, offset: string) => `${reg.arr}[${reg.base ? `${U(reg.base)} + ` : ''}${offset}]`;
  const off = (reg: Region, offset: string) => (reg.base ? `${U(reg.base)} + ${offset}` : offset);

  const stage = (slot: number, row0: string, rows: number, valid: string, width: number, cols: number, seq: number, dst: (r: string, c: string) => string, indent?: string) =>
    stageRows(target, T, reads, { slot, row0, rows, valid, width, cols, seq, dst }, indent);
  const ownValid = `own0 + r < ${U(ownLen)}`;
  const stageX = stage(xSlot, 'own0', BR, ownValid, DKP, g.D, ownLen, (rr, c) => at(l.x, `${rr} * ${U(SO)} + ${c}`), '  ');
  const stageY = r.dP ? stage(ySlot, 'own0', BR, ownValid, DVP, g.Dv, ownLen, (rr, c) => at(l.y, `${rr} * ${U(SO)} + ${c}`), '  ') : '';
  const I = '    ';
  const stageAt = stage(aSlot, 'j0', BC, 'r < valid', DKP, g.D, sweepLen, (rr, c) => at(l.at, `${c} * ${U(ST)} + ${rr}`), I);
  const stageBt = r.dP ? stage(bSlot, 'j0', BC, 'r < valid', DVP, g.Dv, sweepLen, (rr, c) => at(l.bt, `${c} * ${U(ST)} + ${rr}`), I) : '';
  const stageA = r.accX ? stage(aSlot, 'j0', BC, 'r < valid', DKP, g.D, sweepLen, (rr, c) => at(l.a, `${rr} * ${U(SN)} + ${c}`), I) : '';
  const stageB = r.accY ? stage(bSlot, 'j0', BC, 'r < valid', DVP, g.Dv, sweepLen, (rr, c) => at(l.b, `${rr} * ${U(SN)} + ${c}`), I) : '';

  // S = x·aᵀ and dP = y·bᵀ (the emulation reuses S's slots for dP: S is stored first).
  const product = (name: string, left: string, right: Region, steps: number, scratch: string) => {
    const lines = range(sF).map((c) => `var ${name}_${c} = ${sOps.zero(`sg * ${U(sF)} + ${U(c)}`)};`);
    for (let t = 0; t < steps; t++) for (let c = 0; c < sF; c++) lines.push(`${name}_${c} = ${sOps.multiplyAccumulate(`${left}_${t}`, sOps.loadRight(right.arr, U(right.base + t * kk * ST + c * n), U(ST)), `${name}_${c}`)};`);
    for (let c = 0; c < sF; c++) lines.push(sOps.store(scratch, `sm * ${U(SS)} + ${U(c * n)}`, `${name}_${c}`, U(SS)));
    return lines;
  };
  const sLines = product('s', 'x', l.at, DKP / kk, 'tile_s');
  const dpLines = r.dP ? product('dp', 'y', l.bt, DVP / kk, 'tile_dp') : [];
  // acc += left·right over the tile's BC rows.
  const accumulate = (acc: string, frags: number, left: Region, right: Region) => {
    const lines: string[] = [];
    for (let t = 0; t < BC / kk; t++) {
      lines.push('{', `  let l_${t} = ${accOps.loadLeft(left.arr, `${off(left, `sm * ${U(SL)}`)} + ${U(t * kk)}`, U(SL))};`);
      for (let j = 0; j < frags; j++) lines.push(`  ${acc}_${j} = ${accOps.multiplyAccumulate(`l_${t}`, accOps.loadRight(right.arr, U(right.base + t * kk * SN + j * n), U(SN)), `${acc}_${j}`)};`);
      lines.push('}');
    }
    return lines;
  };
  const xLines = r.accX ? accumulate('ax', xF, l.ds, l.a) : [];
  const yLines = r.accY ? accumulate('ay', yF, l.p, l.b) : [];

  // Every invocation, one element of the tile at a time: P and dS in f32, rounded to f16 for the products.
  const ms = g.maskStrides;
  const maskName = mask ? bindingOf(reads, MASK) : '';
  const [qi, kj] = r.dq ? ['own0 + r', 'j0 + c'] : ['j0 + c', 'own0 + r'];
  const lseAt = r.dq ? 'row_lse[r]' : 'lse_t[c]';
  const delAt = r.dq ? 'row_del[r]' : 'del_t[c]';
  const elementwise = spread(
    target,
    BR * BC,
    T,
    [
      `let r = x / ${U(BC)};`,
      `let c = x % ${U(BC)};`,
      `let ok = c < valid && ${ownValid};`,
      `var s = tile_s[r * ${U(SS)} + c] * ${f32Lit(g.scale)};`,
      ...(ms ? [`if (ok) { s += ${maskName}[${maskOffset(ms, 'b', 'h', qi, kj)}]; }`] : []),
      `let p = select(0.0f, exp_flash(s - ${lseAt}), ok);`,
      ...(r.accX ? [`${at(l.ds, `r * ${U(SL)} + c`)} = f16(p * (tile_dp[r * ${U(SS)} + c] - ${delAt}));`] : []),
      ...(r.accY ? [`${at(l.p, `r * ${U(SL)} + c`)} = f16(p);`] : []),
    ],
    I,
  );
  const bar = `${I}workgroupBarrier();`;
  const lseName = bindingOf(reads, LSE);
  const delName = r.dP ? bindingOf(reads, DELTA) : '';
  const sweepStats = r.dq
    ? ''
    : `${I}for (var c = lid; c < ${U(BC)}; c += ${U(T)}) {
${I}  let in_tile = c < valid;
${I}  lse_t[c] = select(0.0f, ${lseName}[bh * ${U(g.Sq)} + select(0u, j0 + c, in_tile)], in_tile);${r.dP ? `\n${I}  del_t[c] = select(0.0f, ${delName}[bh * ${U(g.Sq)} + select(0u, j0 + c, in_tile)], in_tile);` : ''}
${I}}`;
  const phases = tiles.sequential
    ? [
        stageAt,
        sweepStats,
        bar,
        ifComputes(sLines, I),
        ...(r.dP ? [bar, stageBt, bar, ifComputes(dpLines, I)] : []),
        bar,
        elementwise,
        r.accX ? stageA : stageB,
        bar,
        ...(r.accX ? [ifComputes(xLines, I)] : []),
        ...(r.accX && r.accY ? [bar, stageB, bar] : []),
        ...(r.accY ? [ifComputes(yLines, I)] : []),
      ]
    : [stageAt, stageBt, stageA, stageB, sweepStats, bar, ifComputes([...sLines, ...dpLines], I), bar, elementwise, bar, ifComputes([...xLines, ...yLines], I)];

  // Accumulators out through the scratch, a chunk of BC columns at a time.
  const accSlot = (j: number) => `sg * ${U(xF + yF)} + ${U(j)}`;
  const chunkFrags = BC / n;
  const emit = (acc: string, frags: number, out: string, width: number, scale?: number) =>
    range(Math.ceil(frags / chunkFrags))
      .map((ci) => {
        const js = range(Math.min(chunkFrags, frags - ci * chunkFrags)).map((x) => ci * chunkFrags + x);
        const wc = js.length * n;
        const c0 = js[0] * n;
        return [
          '  workgroupBarrier();',
          ifComputes(js.map((j) => accOps.store('tile_s', `sm * ${U(SS)} + ${U((j - js[0]) * n)}`, `${acc}_${j}`, U(SS))), '  '),
          '  workgroupBarrier();',
          spread(
            target,
            BR * wc,
            T,
            [
              `let r = x / ${U(wc)};`,
              `let col = ${c0 ? `${U(c0)} + ` : ''}x % ${U(wc)};`,
              `if (${ownValid} && col < ${U(width)}) { ${out}[(bh * ${U(ownLen)} + own0 + r) * ${U(width)} + col] = tile_s[r * ${U(SS)} + x % ${U(wc)}]${scale === undefined ? '' : ` * ${f32Lit(scale)}`}; }`,
            ],
            '  ',
          ),
        ].join('\n');
      })
      .join('\n');
  const finals = [...(r.accX ? [emit('ax', xF, 'out_0', g.D, g.scale)] : []), ...(r.accY ? [emit('ay', yF, r.accX ? 'out_1' : 'out_0', g.Dv)] : [])].join('\n');

  const ids = sgmatIds(native, l.lanes);
  const decls = [
    ...[...l.arrays].map(([name, elems]) => `var<workgroup> ${name}: array<f16, ${Math.max(1, elems)}>;`),
    `var<workgroup> tile_s: array<f32, ${BR * SS}>;`,
    ...(r.dP ? [`var<workgroup> tile_dp: array<f32, ${BR * SS}>;`] : []),
    ...(r.dq ? [`var<workgroup> row_lse: array<f32, ${BR}>;`, `var<workgroup> row_del: array<f32, ${BR}>;`] : [`var<workgroup> lse_t: array<f32, ${BC}>;`, ...(r.dP ? [`var<workgroup> del_t: array<f32, ${BC}>;`] : [])]),
  ].join('\n');
  const rowStats = r.dq
    ? `  for (var r = lid; r < ${U(BR)}; r += ${U(T)}) {
    let ok = ${ownValid};
    let row = bh * ${U(g.Sq)} + select(0u, own0 + r, ok);
    row_lse[r] = select(0.0f, ${lseName}[row], ok);
    row_del[r] = select(0.0f, ${delName}[row], ok);
  }`
    : '';
  const main = `${EXP_FLASH}

${decls}

${flashMainHead({ comment: `d${which}: ${W} subgroup(s) of ${m} ${r.dq ? 'query' : 'key'} rows, ${BC} ${r.dq ? 'keys' : 'queries'} per tile${tiles.sequential ? ' (staged one operand at a time)' : ''}, ${m}x${n}x${kk} matrices.`, invocations: T, ids, groups, dispatch, tiles: ownTiles, rows: BR, row0: 'own0', heads: g.H, subgroups: W, m })}
${r.dP ? '' : `${touchUnread(reads, [V, DELTA])}\n`}${stageX}
${stageY ? `${stageY}\n` : ''}${rowStats ? `${rowStats}\n` : ''}  workgroupBarrier();
${range(DKP / kk)
  .map((t) => `  var x_${t}: ${sOps.leftType};`)
  .join('\n')}
${r.dP ? `${range(DVP / kk).map((t) => `  var y_${t}: ${sOps.leftType};`).join('\n')}\n` : ''}${ifComputes(
  [
    ...range(DKP / kk).map((t) => `x_${t} = ${sOps.loadLeft(l.x.arr, `${off(l.x, `sm * ${U(SO)}`)} + ${U(t * kk)}`, U(SO))};`),
    ...(r.dP ? range(DVP / kk).map((t) => `y_${t} = ${sOps.loadLeft(l.y.arr, `${off(l.y, `sm * ${U(SO)}`)} + ${U(t * kk)}`, U(SO))};`) : []),
  ],
  '  ',
)}
${[...range(xF).map((j) => `  var ax_${j} = ${accOps.zero(accSlot(j))};`), ...range(yF).map((j) => `  var ay_${j} = ${accOps.zero(accSlot(xF + j))};`)].join('\n')}
  for (var j0 = 0u; j0 < ${unboundedLoop(sweepLen, target)}; j0 += ${U(BC)}) {
    let valid = min(${U(BC)}, ${U(sweepLen)} - j0);
    workgroupBarrier();
${phases.filter(Boolean).join('\n')}
  }
${finals}
}`;
  const helpers = [sOps.helpers(), accOps.helpers()].filter(Boolean).join('\n\n');
  const kernel = flashKernel(node, inputs, target, reads, {
    name: `attention_grad_${which}_flash_sgmat_f16`,
    body: helpers ? `${helpers}\n\n${main}` : main,
    workgroupSize: [T, 1, 1],
    dispatch,
  });
  const withDirectives = { ...kernel, wgsl: `${sOps.directives}\n${kernel.wgsl}` };
  return sibling ? withSecondOutput(withDirectives, sibling, target) : withDirectives;
}
