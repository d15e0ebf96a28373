// What the flash-attention kernels (kernels/flash-forward.ts, kernels/flash-backward.ts) share: the geometry
// of an attention node, the choice of tile sizes from the Target's limits, and WGSL snippets (cooperative
// tile loads into workgroup memory, dot products, mask offsets).
//
// Every tiled kernel has the same shape: a workgroup owns `own` rows of one (batch, head) (query rows in the
// forward and dq, key rows in dk and dv) and sweeps the other side in tiles of `sweep` rows held in workgroup
// memory. Its invocations form `own` x `perRow`: invocation (r, tc) computes the scores of its row r against
// sweep rows tc, tc + perRow, …, and accumulates output columns tc, tc + perRow, … of row r in registers.
// Every sum runs in a fixed order, so results are bitwise repeatable.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, groupIndexCode, loopBound, u32Lit, withOutput } from './elementwise.js';
import { floorPow2 } from './reduce.js';

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
  /** Invocations per owned row (a power of two dividing `sweep`). */
  readonly perRow: number;
  /** Invocations per workgroup: own · perRow. */
  readonly workgroup: number;
  /** Workgroup memory used, in bytes. */
  readonly bytes: number;
}

/** Preferred tile sizes on hardware; lowered to the problem's size and until the tiles fit the target. */
export const FLASH_OWN_CAP = 32;
export const FLASH_SWEEP_CAP = 64;
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

/**
 * Tile sizes for a kernel that owns rows of a side of length `ownLen` and sweeps one of length `sweepLen`;
 * `bytes` gives the workgroup memory a choice needs. Starts from min(cap, next power of two of the length)
 * and halves the larger tile until it fits maxComputeWorkgroupStorageSize.
 */
export function chooseFlashTiles(
  target: Target,
  what: string,
  ownLen: number,
  sweepLen: number,
  bytes: (own: number, sweep: number, workgroup: number) => number,
  caps: { readonly own?: number; readonly sweep?: number } = {},
): FlashTiles {
  const L = target.limits;
  const maxWg = floorPow2(Math.min(target.isFallbackAdapter ? FALLBACK_WORKGROUP_CAP : 256, L.maxComputeInvocationsPerWorkgroup, L.maxComputeWorkgroupSizeX));
  let own = Math.min(caps.own ?? FLASH_OWN_CAP, ceilPow2(Math.max(1, ownLen)), maxWg);
  let sweep = Math.min(caps.sweep ?? FLASH_SWEEP_CAP, ceilPow2(Math.max(1, sweepLen)));
  for (;;) {
    const perRow = Math.min(sweep, floorPow2(Math.floor(maxWg / own)));
    const workgroup = own * perRow;
    const need = bytes(own, sweep, workgroup);
    if (need <= L.maxComputeWorkgroupStorageSize) return { own, sweep, perRow, workgroup, bytes: need };
    if (own === 1 && sweep === 1) {
      throw new FlashTileError(`${what}: one row of each tile needs ${need} bytes of workgroup memory, over the ${L.maxComputeWorkgroupStorageSize} of target '${target.name}' (head dim too large)`);
    }
    if (sweep > own || own === 1) sweep /= 2;
    else own /= 2;
  }
}

/** A row stride for a tile in workgroup memory: odd, so invocations reading one column of many rows spread over banks. */
export function padStride(n: number): number {
  return n % 2 === 0 ? n + 1 : n;
}

/**
 * WGSL: loads `rows` consecutive rows of `cols` values, starting at element `base` of `src`, into `dst` with
 * row stride `stride`; rows at or past `valid` (a u32 expression) are zeros. Values are multiplied by `scale`
 * when given. Run by all `workgroup` invocations (index `lid`).
 */
export function loadTileCode(
  target: Target,
  dst: string,
  stride: number,
  src: string,
  base: string,
  valid: string,
  rows: number,
  cols: number,
  workgroup: number,
  scale?: string,
  indent = '    ',
): string {
  if (cols === 0) return '';
  const value = scale ? `${src}[${base} + x] * ${scale}` : `${src}[${base} + x]`;
  return [
    `for (var x = lid; x < ${loopBound(rows * cols, target)}; x += ${u32Lit(workgroup)}) {`,
    `  let row = x / ${u32Lit(cols)};`,
    `  var val = 0.0f;`,
    `  if (row < ${valid}) { val = ${value}; }`,
    `  ${dst}[row * ${u32Lit(stride)} + x % ${u32Lit(cols)}] = val;`,
    `}`,
  ]
    .map((l) => indent + l)
    .join('\n');
}

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

/**
 * The start of a kernel whose workgroup owns `rows` query rows of one (batch, head): `bh`, `b`, `h`, the tile's
 * first row `i0`, this invocation's row `r` = i0 + r (`i`, `row_ok`) and column slot `tc` (`perRow` per row), and
 * `q_valid` rows of the tile inside the sequence.
 */
export function queryTilePreamble(groups: number, dispatch: readonly [number, number, number], qTiles: number, rows: number, perRow: number, g: Pick<AttentionGeometry, 'H' | 'Sq'>): string {
  const U = u32Lit;
  return `${groupIndexCode('grp', groups, dispatch)}
  let bh = grp / ${U(qTiles)};
  let i0 = (grp % ${U(qTiles)}) * ${U(rows)};
  let h = bh % ${U(g.H)};
  let b = bh / ${U(g.H)};
  let r = lid / ${U(perRow)};
  let tc = lid % ${U(perRow)};
  let i = i0 + r;
  let row_ok = i < ${U(g.Sq)};
  let q_valid = min(${U(rows)}, ${U(g.Sq)} - i0);`;
}

/** `kernel` also writing `out_1` (bound after out_0) with the value of `node`; too many bindings: no flash tile. */
export function withSecondOutput(kernel: Kernel, node: Node, target: Target): Kernel {
  return withOutput(kernel, node, target, (message) => new FlashTileError(message));
}
