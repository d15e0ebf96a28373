// What the tensor-core flash kernels (kernels/flash-sgmat.ts forward, kernels/flash-sgmat-backward.ts backward)
// share: padding, tile preferences, the staging loop, reads of row operands, and the tile fit check.
import type { Target } from '../compiler/codegen/types.js';
import { groupIndexCode, u32Lit, unboundedLoop } from './elementwise.js';
import { tileSource, type FlashReads, type TileSource } from './flash-common.js';
import type { SgmatShape } from './sgmat.js';

/** f16 elements of padding per staged f16 row (16 bytes: keeps rows aligned and off one bank). */
export const PAD16 = 8;
/** f32 elements of padding per scratch row (16 bytes). */
export const PAD32 = 4;
/** Tile preferences: more rows share each staged tile; longer swept tiles rescale (or reload) less often. */
const SUBGROUP_CHOICES = [4, 2, 1];
const SWEEP_CHOICES = [64, 32, 16];

export const roundUp = (x: number, to: number): number => Math.ceil(x / to) * to;
const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
export const lcm = (a: number, b: number): number => (a * b) / gcd(a, b);

/** WGSL: a loop of the workgroup's `T` invocations over `count` elements (`x`), rolled on software adapters. */
export function spread(target: Target, count: number, T: number, body: string[], indent = '  '): string {
  return [`for (var x = lid; x < ${unboundedLoop(count, target)}; x += ${u32Lit(T)}) {`, ...body.map((b) => `  ${b}`), '}'].map((s) => indent + s).join('\n');
}

/** WGSL reading element (row, col) of a tile of a row operand whose first row is `row0`, row length `cols`. */
function readTile(src: TileSource, row0: string, cols: number, row: string, col: string, S: number): string {
  if (typeof src === 'object') throw new Error(`internal: the tensor-core flash kernels read ${src.vec4} one value at a time, not as vec4s`);
  return typeof src === 'string' ? `${src}[(bh * ${u32Lit(S)} + ${row0} + ${row}) * ${u32Lit(cols)} + ${col}]` : src(row, col);
}

/**
 * WGSL: the workgroup's `T` invocations stage `rows` rows of row operand `slot` (read through `reads`; first row
 * `row0`, row length `cols` of a sequence of `seq` rows) as f16, zeros past `valid` (a WGSL condition on `r`) and
 * from `cols` to `width` columns: element (r, c) goes to `dst(r, c)`.
 */
export function stageRows(
  target: Target,
  T: number,
  reads: FlashReads,
  o: { slot: number; row0: string; rows: number; valid: string; width: number; cols: number; seq: number; dst: (r: string, c: string) => string },
  indent?: string,
): string {
  const U = u32Lit;
  return spread(
    target,
    o.rows * o.width,
    T,
    [
      `let r = x / ${U(o.width)};`,
      `let c = x % ${U(o.width)};`,
      'var val = 0.0f;',
      `if (${o.valid} && c < ${U(o.cols)}) { val = ${readTile(tileSource(reads, o.slot, o.row0), o.row0, o.cols, 'r', 'c', o.seq)}; }`,
      `${o.dst('r', 'c')} = f16(val);`,
    ],
    indent,
  );
}

/** A tiling as the fit check sees it: `sweep` rows per swept tile (named `what`), invocations and bytes. */
export interface TileFit {
  readonly shape: SgmatShape;
  readonly subgroups: number;
  readonly sweep: number;
  readonly what: string;
  readonly invocations: number;
  readonly bytes: number;
}

/** Why a tiling cannot run on `target` with `groups` workgroups (undefined when it can). */
export function tilesUnfit(target: Target, t: TileFit, groups: number): string | undefined {
  const { m, n, k } = t.shape;
  if (!Number.isInteger(t.subgroups) || t.subgroups < 1) return `${t.subgroups} subgroups per workgroup`;
  if (t.sweep < 1 || t.sweep % n !== 0 || t.sweep % k !== 0) return `${t.sweep} ${t.what} per tile are not a multiple of the ${m}x${n}x${k} config's n and k`;
  const L = target.limits;
  if (t.invocations > L.maxComputeInvocationsPerWorkgroup || t.invocations > L.maxComputeWorkgroupSizeX) return `${t.invocations} invocations per workgroup exceed the target's limits`;
  if (t.bytes > L.maxComputeWorkgroupStorageSize) return `${t.bytes} bytes of workgroup memory exceed the target's ${L.maxComputeWorkgroupStorageSize}`;
  if (groups > L.maxComputeWorkgroupsPerDimension ** 3) return `${groups} workgroups exceed the dispatch limits`;
  return undefined;
}

/** What the flash kernels' entry point starts with (flashMainHead). */
export interface FlashMainHead {
  /** A comment line describing the tiling. */
  readonly comment: string;
  readonly invocations: number;
  /** sgmatIds: the entry point's extra parameters and the statements defining sg, lane, lanes. */
  readonly ids: { readonly params: string; readonly code: string };
  readonly groups: number;
  readonly dispatch: readonly [number, number, number];
  /** Tiles of owned rows per (batch, head), `rows` rows each; their first row is named `row0`. */
  readonly tiles: number;
  readonly rows: number;
  readonly row0: string;
  readonly heads: number;
  /** Subgroups that compute, `m` owned rows each. */
  readonly subgroups: number;
  readonly m: number;
}

/**
 * WGSL from `@compute` to the subgroup's first owned row: the workgroup's (batch `b`, head `h`, pair `bh`) and
 * first owned row, `computes` and `sm` (the subgroup's first row in the tile).
 */
export function flashMainHead(o: FlashMainHead): string {
  const U = u32Lit;
  return `// ${o.comment}
@compute @workgroup_size(${o.invocations}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${o.ids.params}) {
${groupIndexCode('grp', o.groups, o.dispatch)}
${o.ids.code}  let bh = grp / ${U(o.tiles)};
  let ${o.row0} = (grp % ${U(o.tiles)}) * ${U(o.rows)};
  let h = bh % ${U(o.heads)};
  let b = bh / ${U(o.heads)};
  // Subgroups past ${o.subgroups} (smaller runtime subgroups) only help stage the tiles.
  let computes = sg < ${U(o.subgroups)};
  let sm = sg * ${U(o.m)};`;
}

/**
 * The first tiling that fits, in preference order: up to 4 subgroups (no more than `own` rows need), then swept
 * tiles of 64, 32, 16 rows rounded to the config's n and k (no longer than `sweep` rows need), then `option` off
 * before on. `unfit` says why a candidate does not fit; the result is the tiles, or why none fits.
 */
export function firstFit<T>(
  shape: SgmatShape,
  dims: { readonly own: number; readonly sweep: number; readonly d: number; readonly dv: number },
  make: (subgroups: number, sweep: number, option: boolean) => T,
  unfit: (tiles: T) => string | undefined,
): T | string {
  const unit = lcm(shape.n, shape.k);
  const maxSubgroups = Math.max(1, Math.ceil(dims.own / shape.m));
  const maxSweep = Math.max(unit, roundUp(dims.sweep, unit));
  let last = 'no tiles';
  for (const subgroups of SUBGROUP_CHOICES.filter((s) => s <= maxSubgroups || s === 1)) {
    for (const sweep of [...new Set(SWEEP_CHOICES.map((c) => roundUp(c, unit)))].filter((c) => c <= maxSweep || c === unit)) {
      for (const option of [false, true]) {
        const tiles = make(subgroups, sweep, option);
        const why = unfit(tiles);
        if (!why) return tiles;
        last = why;
      }
    }
  }
  return `no tiles fit (head dims ${dims.d}, ${dims.dv}): ${last}`;
}
