// What the tensor-core flash kernels (kernels/flash-sgmat.ts forward, kernels/flash-sgmat-backward.ts backward)
// share: padding, tile preferences, the staging loop, reads of row operands, and the tile fit check.
import type { Target } from '../compiler/codegen/types.js';
import { u32Lit, unboundedLoop } from './elementwise.js';
import type { TileSource } from './flash-common.js';
import type { SgmatShape } from './sgmat.js';

/** f16 elements of padding per staged f16 row (16 bytes: keeps rows aligned and off one bank). */
export const PAD16 = 8;
/** f32 elements of padding per scratch row (16 bytes). */
export const PAD32 = 4;
/** Tile preferences: more rows share each staged tile; longer swept tiles rescale (or reload) less often. */
export const SUBGROUP_CHOICES = [4, 2, 1];
export const SWEEP_CHOICES = [64, 32, 16];

export const roundUp = (x: number, to: number): number => Math.ceil(x / to) * to;
const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
export const lcm = (a: number, b: number): number => (a * b) / gcd(a, b);

/** WGSL: a loop of the workgroup's `T` invocations over `count` elements (`x`), rolled on software adapters. */
export function spread(target: Target, count: number, T: number, body: string[], indent = '  '): string {
  return [`for (var x = lid; x < ${unboundedLoop(count, target)}; x += ${u32Lit(T)}) {`, ...body.map((b) => `  ${b}`), '}'].map((s) => indent + s).join('\n');
}

/** WGSL reading element (row, col) of a tile of a row operand whose first row is `row0`, row length `cols`. */
export function readTile(src: TileSource, row0: string, cols: number, row: string, col: string, S: number): string {
  return typeof src === 'string' ? `${src}[(bh * ${u32Lit(S)} + ${row0} + ${row}) * ${u32Lit(cols)} + ${col}]` : src(row, col);
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
