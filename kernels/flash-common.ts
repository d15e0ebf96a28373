// What the flash-attention kernels (kernels/flash-forward.ts, kernels/flash-backward.ts) share: the geometry
// of an attention node, the choice of tile sizes from the Target's limits, and WGSL snippets (cooperative
// vec4 tile loads into workgroup memory, register-blocked dot products and accumulations, mask offsets).
//
// Every tiled kernel has the same shape: a workgroup owns `own` rows of one (batch, head) (query rows in the
// forward and dq, key rows in dk and dv) and sweeps the other side in tiles of `sweep` rows held in workgroup
// memory as vec4s. Each invocation owns `rows` of the owned rows outright: their q (or k, v) and output
// accumulators live in private vec4 arrays, and it computes their scores against every row of the tile, which
// all invocations read at the same address (a broadcast). So nothing is reduced across invocations (two
// barriers per tile: the tile is loaded, the tile is consumed), each tile load serves every owned row and each
// owned-row load serves the whole tile. Every sum runs in a fixed order, so results are bitwise repeatable.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, declareVec4, groupIndexCode, loopBound, makeKernel, stridesOf, u32Lit, unboundedLoop, withOutput, EXP_POLY, type KernelParts } from './elementwise.js';
import { floorPow2 } from './reduce.js';

/** attention_grad's input slots. */
export const GRAD_SLOTS = { Q: 0, K: 1, V: 2, G: 3, LSE: 4, DELTA: 5, MASK: 6 } as const;

export class FlashTileError extends Error {}

export interface AttentionGeometry {
  readonly B: number;
  readonly H: number;
  readonly Sq: number;
  readonly Sk: number;
  readonly D: number;
  /** v's last dim (0 when the kernel has no v). */
  readonly Dv: number;
  readonly scale: number;
  /** The mask's strides read as [B, H, Sq, Sk] (0 on broadcast dims), when there is a mask. */
  readonly maskStrides?: readonly number[];
}

/** The geometry of attention-family inputs q [B, H, Sq, D], k [B, H, Sk, D], optional v and mask. */
export function attentionGeometry(node: Node, q: Node, k: Node, v: Node | undefined, mask: Node | undefined): AttentionGeometry {
  const [B, H, Sq, D] = q.shape;
  const Sk = k.shape[2];
  return {
    B,
    H,
    Sq,
    Sk,
    D,
    Dv: v ? v.shape[3] : 0,
    scale: attrNum(node.attrs, 'scale', 1 / Math.sqrt(D)),
    maskStrides: mask ? broadcastStrides(mask.shape, [B, H, Sq, Sk]) : undefined,
  };
}

export interface FlashTiles {
  /** Rows a workgroup owns. */
  readonly own: number;
  /** Rows of the swept side per tile. */
  readonly sweep: number;
  /** Owned rows per invocation (any count: the code is unrolled over them). */
  readonly rows: number;
  /**
   * Invocations sharing each owned row (1, or a power of two up to the subgroup size): neighbouring lanes of one
   * subgroup, each holding every split-th vec4 of the row; dot products are summed across them by subgroup
   * shuffles. Cuts the registers an invocation needs at large head dims.
   */
  readonly split: number;
  /** Invocations per workgroup: own / rows · split. */
  readonly workgroup: number;
  /** Workgroup memory used, in bytes. */
  readonly bytes: number;
}

/** Caps on the tiles (tests use small ones for several tiles and ragged tails on tiny shapes). */
export interface FlashCaps {
  /** Owned rows per workgroup at most. */
  readonly own?: number;
  /** Swept rows per tile at most. */
  readonly sweep?: number;
  /** Owned rows per invocation, exactly (fewer only when a tile has fewer rows). */
  readonly rows?: number;
  /** Invocations per owned row, exactly (a power of two; needs the target's subgroups). */
  readonly split?: number;
  /** Invocations per workgroup at most, on hardware (HARDWARE_TILES.workgroup by default). */
  readonly workgroup?: number;
  /**
   * Each lane's loops over its vec4s of a row written out, one block per vec4 (hardware only): the private row
   * arrays are then indexed by constants and can stay in registers whether or not the driver unrolls a loop of
   * that length. Default off (rolled loops, unmeasured which is faster on NVIDIA; a `tune-sgmat` variant).
   */
  readonly unroll?: boolean;
  /**
   * Where `split` is unset, on hardware: the private floats of one invocation, over all its rows (`rows`, default 1),
   * that the lanes per row are chosen for: the fewest (1, 2, 4 or 8) that bring them within it. So one choice gives
   * head dim 88 two lanes and 112 four where two rows of 112 on two lanes would spill. Unset: each row's share within
   * HARDWARE_TILES.registerFloats.
   */
  readonly registers?: number;
}

/**
 * Invocations per workgroup at most on software adapters: lavapipe took about twice as long to compile these
 * kernels with 256 invocations as with 64 or 128 (measured), and its invocations are SIMD lanes of a CPU core.
 */
export const FALLBACK_WORKGROUP_CAP = 64;

const ceilPow2 = (n: number): number => {
  let p = 1;
  while (p < n) p *= 2;
  return p;
};

/** WGSL: `var <acc> = Σ_t a[aOff + t]·b[bOff + t]` over t < n, in order (fma). */
export function dotCode(target: Target, acc: string, a: string, aOff: string, b: string, bOff: string, n: number, indent = '      '): string {
  return [
    `var ${acc} = 0.0f;`,
    `for (var t = 0u; t < ${loopBound(n, target)}; t++) { ${acc} = fma(${a}[${aOff} + t], ${b}[${bOff} + t], ${acc}); }`,
  ]
    .map((l) => indent + l)
    .join('\n');
}

/** WGSL: the mask's element offset for batch `b`, head `h`, query `i`, key `j` (u32 expressions). */
export function maskOffset(ms: readonly number[], b: string, h: string, i: string, j: string): string {
  const wrap = (v: string) => (/^\w+$/.test(v) ? v : `(${v})`);
  const terms = [b, h, i, j].flatMap((v, d) => (ms[d] === 0 ? [] : [ms[d] === 1 ? v : `${wrap(v)} * ${u32Lit(ms[d])}`]));
  return terms.join(' + ') || '0u';
}

/** WGSL: keeps bindings the formula does not read in an `auto` pipeline layout. */
export function touchCode(names: readonly string[], indent = '  '): string {
  return names.map((n) => `${indent}_ = &${n};`).join('\n');
}

/** `kernel` also writing `out_1` (bound after out_0) with the value of `node`. */
export function withSecondOutput(kernel: Kernel, node: Node, target: Target): Kernel {
  return withOutput(kernel, node, target, (message) => new FlashTileError(message));
}

// ------------------------------------------------------------------ how a kernel reads its inputs

/**
 * How a flash kernel reads one input: its binding's name (row-major, indexed from a row's base offset), or, for
 * the [B, H, S, D] row operands (q, k, v, g), the WGSL of element [b, h, row, col] through a view
 * (compiler/codegen/attention-views.ts: a movement tree read in place, maybe with a scalar prologue).
 */
export type FlashOperand = string | ((coords: readonly string[]) => string);

/** How a flash kernel reads its inputs and what it binds. */
export interface FlashReads {
  /** Per input slot of the node. */
  readonly slots: readonly FlashOperand[];
  /** The storage bound, in binding order, when it is not the node's inputs (views bind their leaves). */
  readonly bindings?: readonly Node[];
  /** Module-scope WGSL: the views' functions. */
  readonly helpers: string;
  readonly lib: readonly string[];
  /** IR nodes the reads compute in place (view ops, prologues). */
  readonly inlined: readonly number[];
  /** Appended to the kernel's name (which slots are read through views). */
  readonly suffix: string;
  /**
   * Slots read from their binding four values at a time (withVectorReads): declared array<vec4<f32>>, which f16
   * storage turns into array<vec4<f16>> (kernels/half-storage.ts: each load widened to vec4<f32>, exactly).
   */
  readonly vec4?: ReadonlySet<number>;
  /**
   * Per input slot, where its elements lie in a binding, when that is an affine map (kernels/view-affine.ts);
   * absent: every slot is its own binding, row-major (directReads).
   */
  readonly layouts?: readonly (RowLayout | undefined)[];
}

/** Where a row operand's elements lie in a binding: element [b, h, row, col] at offset + b·s0 + h·s1 + row·s2 + col·s3. */
export interface RowLayout {
  readonly binding: string;
  /** The binding's index among the kernel's inputs. */
  readonly index: number;
  readonly offset: number;
  readonly strides: readonly number[];
}

/** The layout of input `slot`: the reads' own, else its binding's, row-major; undefined for a view of no affine map. */
export function rowLayout(reads: FlashReads, inputs: readonly Node[], slot: number): RowLayout | undefined {
  if (reads.layouts) return reads.layouts[slot];
  const s = reads.slots[slot];
  return typeof s === 'string' ? { binding: s, index: slot, offset: 0, strides: stridesOf(inputs[slot].shape) } : undefined;
}

/**
 * `reads` with the row operands among `slots` that the f32 flash kernels load as vec4s: those read from their
 * binding (no view, or a direct one: kernels/attention.ts) whose rows are whole vec4s (head dim a multiple of 4,
 * so every row starts on one), unless the kernel also reads that binding element by element (through a view's
 * function, or as a flat input such as the mask): one declaration serves both.
 */
export function withVectorReads(reads: FlashReads, inputs: readonly Node[], slots: readonly number[]): FlashReads {
  const whole = (s: number) => typeof reads.slots[s] === 'string' && inputs[s] !== undefined && inputs[s].shape[inputs[s].shape.length - 1] % 4 === 0;
  const rows = slots.filter(whole);
  const scalar = (name: string) => new RegExp(`\\b${name}\\[`).test(reads.helpers) || reads.slots.some((s, i) => s === name && !rows.includes(i));
  const vec = rows.filter((s) => !scalar(reads.slots[s] as string));
  return vec.length ? { ...reads, vec4: new Set(vec) } : reads;
}

/** The plain reads: input slot i is binding `in_<i>`. */
export function directReads(node: Node): FlashReads {
  return { slots: node.inputs.map((_, i) => `in_${i}`), helpers: '', lib: [], inlined: [], suffix: '' };
}

/** The binding name of input `slot`, which the kernel reads with flat offsets (lse, δ, the mask). */
export function bindingOf(reads: FlashReads, slot: number): string {
  const s = reads.slots[slot];
  if (typeof s !== 'string') throw new Error(`internal: flash input ${slot} is read through a view, but the kernel reads it flat`);
  return s;
}

/** A binding read one vec4 at a time (withVectorReads). */
export interface Vec4Binding {
  readonly vec4: string;
}
/** Reads one row of a row operand: the binding, or element `col` of row `row` of the (b, h) through the view. */
export type RowSource = string | Vec4Binding | ((col: string) => string);
/** Reads a tile of a row operand: the binding, or element `col` of the tile's row `row` through the view. */
export type TileSource = string | Vec4Binding | ((row: string, col: string) => string);

/** The source of row `row` (a WGSL u32) of row operand `slot`, for the current (b, h). */
export function rowSource(reads: FlashReads, slot: number, row: string): RowSource {
  const s = reads.slots[slot];
  if (typeof s === 'string') return reads.vec4?.has(slot) ? { vec4: s } : s;
  return (col) => s(['b', 'h', row, col]);
}

/** The source of the tile of row operand `slot` whose first row is `row0`, for the current (b, h). */
export function tileSource(reads: FlashReads, slot: number, row0: string): TileSource {
  const s = reads.slots[slot];
  if (typeof s === 'string') return reads.vec4?.has(slot) ? { vec4: s } : s;
  return (row, col) => s(['b', 'h', `${row0} + ${row}`, col]);
}

/** WGSL: keeps the bindings of the slots a kernel does not read (every binding when views rebind them). */
export function touchUnread(reads: FlashReads, slots: readonly number[], indent = '  '): string {
  const names = reads.bindings ? reads.bindings.map((_, i) => `in_${i}`) : slots.map((s) => bindingOf(reads, s));
  return touchCode(names, indent);
}

/** makeKernel for a flash kernel: binds what `reads` binds, with its helpers, library and name suffix. */
export function flashKernel(node: Node, inputs: readonly Node[], target: Target, reads: FlashReads, parts: KernelParts): Kernel {
  const k = unvectored(node, inputs, target, reads, parts);
  return { ...k, wgsl: declareVec4(k.wgsl, [...(reads.vec4 ?? [])].map((slot) => reads.slots[slot] as string)) };
}

function unvectored(node: Node, inputs: readonly Node[], target: Target, reads: FlashReads, parts: KernelParts): Kernel {
  if (!reads.bindings) return makeKernel(node, inputs, target, parts);
  const bound: Node = { ...node, inputs: reads.bindings.map((n) => n.id) };
  const body = reads.helpers ? `${reads.helpers}\n\n${parts.body}` : parts.body;
  const k = makeKernel(bound, reads.bindings, target, { ...parts, body, name: `${parts.name}${reads.suffix}`.slice(0, 96), lib: [...(parts.lib ?? []), ...reads.lib] });
  return { ...k, nodes: [...reads.inlined, ...k.nodes] };
}

// ------------------------------------------------------------------ row-per-invocation layout (vec4 tiles)

/**
 * WGSL: e^x as the library's exp_f32 (kernels/elementwise.ts: the same reduction and polynomial, about 1 ulp)
 * but without branches: the out-of-range cases are selected at the end, and p·2^k is two exact power-of-two
 * multiplications (one rounding, as ldexp). The kernels inline it once per score of a tile; early returns
 * there would give every copy divergent control flow.
 */
export const EXP_FLASH = `fn exp_flash(x: f32) -> f32 {
${EXP_POLY}  // p·2^k as two exact power-of-two scalings (one rounding, as ldexp): 2^k1 keeps p·2^k1 normal.
  let k1 = clamp(k, -120.0f, 127.0f);
  let k2 = clamp(k - k1, -30.0f, 1.0f);
  let e = (p * bitcast<f32>(u32(k1 + 127.0f) << 23u)) * bitcast<f32>(u32(k2 + 127.0f) << 23u);
  return select(select(e, 0.0f, x < -103.97209f), bitcast<f32>(INF_U), x > 88.72284f);
}`;

/** vec4s per row of `n` values. */
export const vec4s = (n: number): number => Math.ceil(n / 4);

const COMPONENTS = ['x', 'y', 'z', 'w'] as const;

/**
 * Default tiles on software adapters (lavapipe): an invocation is a SIMD lane of a CPU core, its "registers"
 * are stack memory, and what costs is each load from workgroup or private memory (a gather, lane by lane), so
 * an invocation owns many rows: each tile row it loads then serves them all. The generated code grows with
 * rows x sweep, and LLVM's compile time with it (8 x 16 took about twice as long to compile as 8 x 8 and ran
 * no faster in the backward, measured).
 */
export const SOFTWARE_TILES = { rows: 8, sweep: 8, workgroup: 16 } as const;

/**
 * Default tiles on hardware: as many owned rows per invocation (up to maxRows) as keep its private rows and
 * scores within `registerFloats` (one row at head dim 88; register blocking where head dims are small).
 */
export const HARDWARE_TILES = { sweep: 16, workgroup: 64, maxRows: 4, registerFloats: 128 } as const;

/** The workgroup memory a choice of tiles needs: `own` rows per workgroup, `sweep` rows per swept tile. */
export type TileBytes = (own: number, sweep: number, split: number) => number;

/** Whether kernels may use subgroup shuffles among `split` neighbouring invocations on this target. */
export function canSplit(target: Target, split: number): boolean {
  return split === 1 || (target.features.includes('subgroups') && split <= target.subgroupMinSize);
}

/**
 * Invocations per owned row on hardware: 1 while an owned row's private floats fit the register budget, else
 * the fewest (2, 4 or 8) that bring one lane's share within it, where the target has subgroups that wide.
 */
function defaultSplit(target: Target, rowFloats: (split: number) => number, budget: number = HARDWARE_TILES.registerFloats): number {
  if (target.isFallbackAdapter) return 1;
  let split = 1;
  while (rowFloats(split) > budget && split < 8 && canSplit(target, split * 2)) split *= 2;
  return split;
}

/**
 * Tile sizes for a kernel whose invocations own `rows` rows each (`own` rows per workgroup) of a side of length
 * `ownLen` and sweep one of length `sweepLen` in tiles of `sweep` rows held in workgroup memory; `rowFloats`
 * is the private floats one lane of an owned row needs. The owned side is split into as few tiles as the rows
 * per invocation allow, and the rows are spread evenly over them (little padding: 144 rows on lavapipe are two
 * tiles of 5 x 15, not two of 8 x 16). The sweep starts at min(default, next power of two of its length) and
 * halves until the tiles fit the target's workgroup memory.
 */
export function chooseRowTiles(target: Target, what: string, ownLen: number, sweepLen: number, bytes: TileBytes, rowFloats: (sweep: number, split: number) => number, given: FlashCaps, grad = false): FlashTiles {
  // A tuning's caps (Target.tuning.flashCaps; flashGradCaps for the gradient kernels where set) under the caller's.
  const tuned = (grad ? target.tuning?.flashGradCaps : undefined) ?? target.tuning?.flashCaps;
  const caps: FlashCaps = { ...tuned, ...given };
  const L = target.limits;
  const soft = target.isFallbackAdapter;
  const maxWg = floorPow2(Math.min(soft ? FALLBACK_WORKGROUP_CAP : 256, L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX));
  const len = Math.max(1, ownLen);
  for (let sweep = Math.min(caps.sweep ?? (soft ? SOFTWARE_TILES.sweep : HARDWARE_TILES.sweep), ceilPow2(Math.max(1, sweepLen))); ; sweep /= 2) {
    const lane = caps.registers === undefined ? (k: number) => rowFloats(sweep, k) : (k: number) => (caps.rows ?? 1) * rowFloats(sweep, k);
    const split = Math.min(caps.split ?? defaultSplit(target, lane, caps.registers), maxWg);
    if (!canSplit(target, split)) throw new Error(`internal: ${what}: ${split} invocations per row need subgroups of at least ${split} on target '${target.name}'`);
    const slotsMax = Math.floor(maxWg / split);
    const lanes = Math.max(1, Math.min(soft ? SOFTWARE_TILES.workgroup : Math.floor((caps.workgroup ?? HARDWARE_TILES.workgroup) / split), slotsMax));
    const fit = Math.max(1, Math.min(HARDWARE_TILES.maxRows, floorPow2(Math.floor(HARDWARE_TILES.registerFloats / rowFloats(sweep, split)))));
    const maxRows = caps.rows ?? (soft ? SOFTWARE_TILES.rows : fit);
    const tiles = Math.ceil(len / Math.min(caps.own ?? Infinity, maxRows * lanes, maxRows * slotsMax));
    const even = Math.ceil(len / tiles);
    const rows = caps.rows === undefined ? Math.min(maxRows, Math.ceil(even / lanes)) : Math.min(caps.rows, even);
    const slots = Math.ceil(even / rows);
    const own = slots * rows;
    const need = bytes(own, sweep, split);
    if (need <= L.maxComputeWorkgroupStorageSize) return { own, sweep, rows, split, workgroup: slots * split, bytes: need };
    if (sweep === 1) throw new FlashTileError(`${what}: one row of the swept tile needs ${need} bytes of workgroup memory, over the ${L.maxComputeWorkgroupStorageSize} of target '${target.name}' (head dim too large)`);
  }
}

/** Floats of the mask's tile in workgroup memory: `own` x `sweep` with an odd row stride (no bank conflicts). */
export const maskTileFloats = (own: number, sweep: number): number => own * (sweep + 1);

/**
 * WGSL: loads the mask's entries for the owned rows own0 + o (o < `own`, inside while o < `ownValid`) and the
 * swept rows sweep0 + s (s < `sweep`, inside while s < `sweepValid`) into `mt` (row stride sweep + 1, zeros
 * outside); `offset(o, s)` is the mask's element offset of such a pair. Neighbouring invocations read
 * neighbouring swept rows (coalesced where the mask varies along them).
 */
export function loadMaskTileCode(target: Target, src: string, own: number, sweep: number, workgroup: number, ownValid: string, sweepValid: string, offset: (o: string, s: string) => string, indent = '    '): string {
  const U = u32Lit;
  return [
    `for (var x = lid; x < ${loopBound(own * sweep, target)}; x += ${U(workgroup)}) {`,
    `  let o = x / ${U(sweep)};`,
    `  let s = x % ${U(sweep)};`,
    `  var val = 0.0f;`,
    `  if (o < ${ownValid} && s < ${sweepValid}) { val = ${src}[${offset('o', 's')}]; }`,
    `  mt[o * ${U(sweep + 1)} + s] = val;`,
    `}`,
  ]
    .map((l) => indent + l)
    .join('\n');
}

/** The vec4s of a row of `cols` values that one of `split` lanes holds. */
export const laneVec4s = (cols: number, split: number): number => Math.ceil(vec4s(cols) / split);

/** vec4s per row of a tile in workgroup memory: padded with zeros to a whole share for each of `split` lanes. */
export const tileVec4s = (cols: number, split: number): number => split * laneVec4s(cols, split);

/** The column of component e of the vec4 whose first column is `c`. */
const colOf = (e: number): string => (e === 0 ? 'c' : `c + ${u32Lit(e)}`);

/** The WGSL statements filling `v` (x, y, z, w) from `src` at `at`, `c` being the row's column of x, for a row of `cols`. */
function componentsCode(cols: number, stride: number, assign: (comp: string, e: number) => string, indent: string): string[] {
  // Columns past `cols` (the last vec4's tail, the padding of split rows) stay zero.
  const exact = vec4s(cols) === stride;
  return COMPONENTS.map((x, e) => (cols % 4 === 0 && exact) || (e === 0 && exact) ? `${indent}${assign(x, e)}` : `${indent}if (c + ${u32Lit(e)} < ${u32Lit(cols)}) { ${assign(x, e)} }`);
}

/**
 * WGSL: `dst` = the vec4 at element `at` of a vec4 binding (cols a multiple of 4, so `at` is one's first element),
 * scaled; the padding vec4s past `cols` (split rows, `stride` > cols / 4) stay zero.
 */
function vec4Read(src: Vec4Binding, dst: string, cols: number, stride: number, sc: string, indent: string): string[] {
  const load = `${dst} = ${src.vec4}[at / 4u]${sc};`;
  return [stride * 4 === cols ? `${indent}${load}` : `${indent}if (c < ${u32Lit(cols)}) { ${load} }`];
}

/**
 * WGSL: loads `rows` rows of `cols` values (row-major, from element `base` of `src`) into the vec4 array `dst`
 * (`stride` vec4s per row, the tail zero-padded), or through a view (`src` a function; `base` unused); rows at or
 * past `valid` are zeros. Multiplied by `scale` when given. Invocation `lid` of `workgroup` fills vec4s lid,
 * lid + workgroup, …: neighbours read neighbouring values (coalesced) and each writes one whole vec4.
 */
export function loadVec4TileCode(target: Target, dst: string, src: TileSource, base: string, valid: string, rows: number, cols: number, workgroup: number, scale?: string, stride = vec4s(cols), indent = '    '): string {
  if (cols === 0) return '';
  const U = u32Lit;
  const sc = scale ? ` * ${scale}` : '';
  const read = (e: number) => (typeof src === 'string' ? `${src}[at + ${U(e)}]` : typeof src === 'function' ? src('row', colOf(e)) : '');
  return [
    `for (var x = lid; x < ${loopBound(rows * stride, target)}; x += ${U(workgroup)}) {`,
    `  let row = x / ${U(stride)};`,
    `  let c = (x % ${U(stride)}) * 4u;`,
    `  var val = vec4f(0.0f);`,
    `  if (row < ${valid}) {`,
    ...(typeof src !== 'function' ? [`    let at = ${base} + row * ${U(cols)} + c;`] : []),
    ...(typeof src === 'object' ? vec4Read(src, 'val', cols, stride, sc, '    ') : componentsCode(cols, stride, (x, e) => `val.${x} = ${read(e)}${sc};`, '    ')),
    `  }`,
    `  ${dst}[x] = val;`,
    `}`,
  ]
    .map((l) => indent + l)
    .join('\n');
}

/**
 * WGSL: `body` for each of this lane's vec4s u of a row split over `split` lanes, `t` being the row's vec4 (lane
 * `part`): a loop, or (tuning flashCaps.unroll, hardware) one block per u with u and t constants.
 */
function laneLoop(target: Target, cols4: number, split: number, body: readonly string[]): string[] {
  const n = Math.ceil(cols4 / split);
  const U = u32Lit;
  const inner = body.map((l) => `  ${l}`);
  if (target.tuning?.flashCaps?.unroll && !target.isFallbackAdapter) {
    return Array.from({ length: n }, (_, u) => ['{', `  let u = ${U(u)};`, `  let t = ${split === 1 ? U(u) : `part + ${U(u * split)}`};`, ...inner, '}']).flat();
  }
  const head = split === 1 ? [`for (var t = 0u; t < ${unboundedLoop(n, target)}; t++) {`, `  let u = t;`] : [`for (var u = 0u; u < ${unboundedLoop(n, target)}; u++) {`, `  let t = part + u * ${U(split)};`];
  return [...head, ...inner, '}'];
}

/**
 * WGSL: `var <dst>: array<vec4f, …>` holding this lane's vec4s of the row of `cols` values from element `base` of
 * `src`, or through a view (`src` a function; `base` unused); zeros when not `ok`, and past the row.
 */
export function loadVec4RowCode(target: Target, dst: string, src: RowSource, base: string, ok: string, cols: number, scale?: string, split = 1, indent = '  '): string {
  const U = u32Lit;
  const sc = scale ? ` * ${scale}` : '';
  const read = (e: number) => (typeof src === 'string' ? `${src}[at + ${U(e)}]` : typeof src === 'function' ? src(colOf(e)) : '');
  return [
    `var ${dst}: array<vec4f, ${laneVec4s(cols, split)}>;`,
    `if (${ok}) {`,
    ...laneLoop(target, vec4s(cols), split, [
      `let c = t * 4u;`,
      ...(typeof src !== 'function' ? [`let at = ${base} + c;`] : []),
      `var v = vec4f(0.0f);`,
      ...(typeof src === 'object' ? vec4Read(src, 'v', cols, tileVec4s(cols, split), sc, '') : componentsCode(cols, tileVec4s(cols, split), (x, e) => `v.${x} = ${read(e)}${sc};`, '')),
      `${dst}[u] = v;`,
    ]).map((l) => `  ${l}`),
    `}`,
  ]
    .map((l) => indent + l)
    .join('\n');
}

/** WGSL: stores this lane's vec4s of the row of `cols` values in `src` (each through `value(x)`) to `dst` from element `base`. */
export function storeVec4RowCode(target: Target, dst: string, base: string, src: string, cols: number, value: (x: string) => string = (x) => x, split = 1, indent = '    '): string {
  const U = u32Lit;
  return [
    ...laneLoop(target, vec4s(cols), split, [
      `let c = t * 4u;`,
      `let at = ${base} + c;`,
      `let v = ${src}[u];`,
      ...componentsCode(cols, tileVec4s(cols, split), (x, e) => `${dst}[at + ${U(e)}] = ${value(`v.${x}`)};`, ''),
    ]),
  ]
    .map((l) => indent + l)
    .join('\n');
}

/**
 * WGSL: the dot products `<acc><r>_<c>` of each private vec4 row `owned[r]` with rows c = 0 … n-1 of the vec4
 * tile `tile` (`stride` vec4s per row), each summed over the columns in order (fma). The tile's rows are the
 * same for every invocation (a broadcast read), each load of a tile row serves every owned row and each load of
 * an owned row serves n dot products. Split rows: each lane sums its share, then the `split` lanes add their
 * sums pairwise (subgroupShuffleXor; the same bits in every lane, as a + b = b + a).
 */
export function dotRowsCode(target: Target, acc: string, owned: readonly string[], tile: string, stride: number, n: number, split = 1, indent = '    '): string {
  const U = u32Lit;
  const name = (r: number, c: number) => `${acc}${r}_${c}`;
  const lines = [owned.map((_, r) => Array.from({ length: n }, (_, c) => `var ${name(r, c)} = 0.0f;`).join(' ')).join('\n')];
  const body = owned.map((row, r) => `let x${r} = ${row}[u];`);
  for (let c = 0; c < n; c++) {
    const fmas = owned.map((_, r) => COMPONENTS.map((x) => `${name(r, c)} = fma(x${r}.${x}, y.${x}, ${name(r, c)});`).join(' '));
    body.push(`{ let y = ${tile}[${c === 0 ? 't' : `${U(c * stride)} + t`}]; ${fmas.join(' ')} }`);
  }
  lines.push(...laneLoop(target, stride, split, body));
  for (let m = 1; m < split; m *= 2) owned.forEach((_, r) => lines.push(Array.from({ length: n }, (_, c) => `${name(r, c)} += subgroupShuffleXor(${name(r, c)}, ${U(m)});`).join(' ')));
  return lines.map((l) => indent + l).join('\n');
}

/**
 * WGSL: `let <name(c)> = <value(operands(c))>;` for the n swept rows c of an owned row split over `split` lanes. The
 * lanes hold the same operands (the scores' sums are exchanged), so by default every lane computes every value, an
 * exponential each. With `share` (Target.tuning.flashShareExp) lane `part` computes only the values of rows c ≡ part
 * (mod split), from operands chosen by `part`, and takes the others from its neighbours by subgroup shuffles: the
 * same bits (each value computed once, as every lane computed it) for 1/split of the exponentials. Where n is not a
 * multiple of split, every lane computes every value.
 */
export function laneValuesCode(n: number, split: number, share: boolean, name: (c: number) => string, operands: (c: number) => readonly string[], value: (ops: readonly string[]) => string, indent = '    '): string {
  const U = u32Lit;
  if (!share || split === 1 || n % split !== 0) return Array.from({ length: n }, (_, c) => `${indent}let ${name(c)} = ${value(operands(c))};`).join('\n');
  const lines: string[] = [];
  for (let g = 0; g < n; g += split) {
    const keys = Array.from({ length: split }, (_, j) => g + j);
    // This lane's row of the group (g + part), its operands chosen by part.
    const chosen = operands(g).map((_, o) => keys.slice(1).reduce((acc, c) => `select(${acc}, ${operands(c)[o]}, part == ${U(c - g)})`, operands(g)[o]));
    lines.push(`{`, ...chosen.map((x, o) => `  let o${o} = ${x};`), `  let e = ${value(chosen.map((_, o) => `o${o}`))};`);
    // v<m>: the value lane part ^ m computed, row g + (part ^ m).
    for (let m = 1; m < split; m++) lines.push(`  let v${m} = subgroupShuffleXor(e, ${U(m)});`);
    for (const c of keys) {
      const j = c - g;
      const pick = Array.from({ length: split - 1 }, (_, i) => i + 1).reduce((acc, m) => `select(${acc}, v${m}, (part ^ ${U(j)}) == ${U(m)})`, 'e');
      lines.push(`  ${name(c)} = ${pick};`);
    }
    lines.push(`}`);
  }
  const decls = Array.from({ length: n }, (_, c) => `var ${name(c)}: f32;`).join(' ');
  return [decls, ...lines].map((l) => indent + l).join('\n');
}

/**
 * WGSL: for each of this lane's vec4s of the private arrays `owned[r]`: acc = acc·scale(r) (when given) +
 * Σ_c coef(c, r)·tile[c][t] over c < n in order (`stride` vec4s per tile row); each tile load serves every array.
 */
export function accumulateRowsCode(
  target: Target,
  owned: readonly string[],
  tile: string,
  stride: number,
  n: number,
  coef: (c: number, r: number) => string,
  scale?: (r: number) => string,
  split = 1,
  indent = '    ',
): string {
  const U = u32Lit;
  const body = owned.map((acc, r) => `var a${r} = ${acc}[u]${scale ? ` * ${scale(r)}` : ''};`);
  for (let c = 0; c < n; c++) body.push(`{ let y = ${tile}[${c === 0 ? 't' : `${U(c * stride)} + t`}]; ${owned.map((_, r) => `a${r} = fma(vec4f(${coef(c, r)}), y, a${r});`).join(' ')} }`);
  owned.forEach((acc, r) => body.push(`${acc}[u] = a${r};`));
  const lines = laneLoop(target, stride, split, body);
  return lines.map((l) => indent + l).join('\n');
}

/**
 * The swept side cut into `count` chunks of `len` (a whole number of tiles), each swept by a grid of workgroups of
 * its own (kernels/flash-sweep-split.ts): the kernel then stores partial results, which a second kernel combines.
 */
export interface SweepChunks {
  readonly count: number;
  readonly len: number;
}

/**
 * WGSL: the loop over the swept side's tiles (`v` their first row, `sweep` rows each, `S` rows in all); with `chunks`,
 * over the tiles of chunk `chunk` only (ownedRowsPreamble's).
 */
export function sweepLoopCode(v: string, S: number, sweep: number, target: Target, chunks?: SweepChunks): string {
  const U = u32Lit;
  if (!chunks) return `  for (var ${v} = 0u; ${v} < ${loopBound(S, target)}; ${v} += ${U(sweep)}) {`;
  return [`  let ${v}_begin = chunk * ${U(chunks.len)};`, `  let ${v}_end = min(${v}_begin + ${U(chunks.len)}, ${U(S)});`, `  for (var ${v} = ${v}_begin; ${v} < ${v}_end; ${v} += ${U(sweep)}) {`].join('\n');
}

/**
 * WGSL: the first lines of a kernel whose workgroup owns tile `grp % tiles` of `t.own` rows of one (batch, head)
 * `bh` (of a side of length S, starting at row `own0`) and whose invocation (slot, part) owns rows
 * `<row><r>` = own0 + slot + r·slots (r < t.rows; `<ok><r>`: inside the side), part `part` of each when rows are
 * split. With a mask: `own_valid` rows of the tile inside the side and `mrow`, the slot's row in the mask tile.
 * With `chunks` > 1 the dispatch holds `chunks` such grids, one per chunk of the swept side: `chunk` says which.
 */
export function ownedRowsPreamble(groups: number, dispatch: readonly [number, number, number], tiles: number, t: FlashTiles, H: number, S: number, row: string, ok: string, masked: boolean, chunks = 1): string {
  const U = u32Lit;
  const slots = t.workgroup / t.split;
  const lines = [
    ...(chunks > 1 ? [groupIndexCode('grp_all', groups * chunks, dispatch), `  let chunk = grp_all / ${U(groups)};`, `  let grp = grp_all % ${U(groups)};`] : [groupIndexCode('grp', groups, dispatch)]),
    `  let bh = grp / ${U(tiles)};`,
    `  let own0 = (grp % ${U(tiles)}) * ${U(t.own)};`,
    `  let h = bh % ${U(H)};`,
    `  let b = bh / ${U(H)};`,
    t.split === 1 ? '  let slot = lid;' : `  let slot = lid / ${U(t.split)};\n  let part = lid % ${U(t.split)};`,
    ...(masked ? [`  let own_valid = min(${U(t.own)}, ${U(S)} - own0);`, `  let mrow = slot * ${U(t.sweep + 1)};`] : []),
    ...Array.from({ length: t.rows }, (_, r) => `  let ${row}${r} = own0 + slot + ${U(r * slots)};\n  let ${ok}${r} = ${row}${r} < ${U(S)};`),
  ];
  return lines.join('\n');
}

/** `kernel` with `enable subgroups;` when its tiles split rows over several invocations. */
export function withSubgroups(kernel: Kernel, split: number): Kernel {
  return split === 1 ? kernel : { ...kernel, wgsl: `enable subgroups;\n${kernel.wgsl}` };
}
