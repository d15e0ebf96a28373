// The tensor-core matmul that loads its fragments straight from the operands in storage (Target.tuning.sgmatDirect):
// no staging through workgroup memory and no barrier in its K loop. On the H200 (scripts/sgmat-ceiling.mjs,
// docs/perf.md, session 13) Dawn's subgroup matrices multiplied at 510–616 TFLOP/s from registers and 485–587
// with their fragments loaded from storage buffers, but at 35–100 with a workgroup barrier and fragment loads from
// workgroup memory per iteration: the staged kernel (kernels/matmul-sgmat.ts: two barriers per K step) is bounded
// by its staging, at 60–94.
//
// Each subgroup owns FM x FN result fragments of the staged kernel's tile (the same grid, so K ranges and the
// schedule see one variant) and loads its left and right fragments from the operands, transposed ones in place
// (column-major loads). Fragments past M or N are moved back to end at the last row or column (M, N >= the
// fragment) and keep only the elements no other fragment owns: no reads outside the operands, any M and N. K must
// be a multiple of the fragment's k. The operands must be stored as f16 (subgroupMatrixLoad reads f16 arrays): the
// kernel says so (Kernel.halfOnly), and the schedule runs the staged kernel where one is stored as f32.
// Epilogues are the staged kernel's (per-fragment scratch in workgroup memory, barriers only there).
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { dispatchGroups, u32Lit } from './elementwise.js';
import { assemble, tileOrigin, type MatmulDims, type MatmulOutput } from './matmul.js';
import { fragmentEpilogue, fragmentProducts, fragmentsOf, sgmatChoice, sgmatKernelHead, sgmatMatmul, type SgmatTiles } from './matmul-sgmat.js';
import { sgmatIds, sgmatLanes, sgmatOps, sgmatSpelling, type SgmatShape } from './sgmat.js';

/**
 * Why fragments of this problem's operands would not start on 16 bytes (8 f16s), or undefined: rows of a (columns,
 * read transposed) lie K (M) apart, columns of b (rows, read transposed) N (K) apart; K is a multiple of the fragment.
 */
export function strideUnaligned(d: MatmulDims): string | undefined {
  if (d.transA && d.m % 8) return `a is read transposed with rows ${d.m} elements apart (not a multiple of 8)`;
  if (!d.transB && d.n % 8) return `b's rows are ${d.n} elements apart (not a multiple of 8)`;
  return undefined;
}

/** Why the direct kernel cannot compute this problem, or undefined when it can. */
export function directUnfit(d: MatmulDims, shape: SgmatShape, out: MatmulOutput): string | undefined {
  if (d.viewA || d.viewB) return 'an operand is read through a view';
  if (d.k % shape.k !== 0) return `K (${d.k}) is not a multiple of the fragment's ${shape.k}`;
  if (d.m < shape.m || d.n < shape.n) return `the output (${d.m}x${d.n}) is smaller than one fragment`;
  if (strideUnaligned(d)) return strideUnaligned(d);
  if (out.kRange && out.kRange.len % shape.k !== 0) return `K ranges of ${out.kRange.len}`;
  return undefined;
}

/**
 * The `matmul_sgmat_f16` variant's kernel: with Target.tuning.sgmatDirect, where directUnfit allows, the direct
 * kernel (falling back to the staged one where an operand is stored as f32); else the staged kernel.
 */
export function sgmatKernel(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims, suffix: string, tiles?: SgmatTiles): Kernel {
  const staged = sgmatMatmul(out, inputs, target, d, suffix, tiles);
  if (!target.tuning?.sgmatDirect) return staged;
  const { shape, tiles: t } = sgmatChoice(target, d, tiles);
  if (directUnfit(d, shape, out) !== undefined || (t.ksplit ?? 1) !== 1) return staged;
  return { ...sgmatDirectMatmul(out, inputs, target, d, suffix, shape, t), halfOnly: { bindings: [0, 1], fallback: staged } };
}

/**
 * f32 operands split into f16 pairs (kernels/matmul-split16.ts): in_0 and in_1 are f16 arrays holding each operand's
 * hi part (in its own layout), its lo part from `aLo` / `bLo`, and a power-of-two exponent per output row of a (from
 * `aScales`) and per output column of b (from `bScales`) by which the parts were scaled.
 */
export interface SplitOperands {
  readonly aLo: number;
  readonly bLo: number;
  readonly aScales: number;
  readonly bScales: number;
}

/** The direct kernel; with `split`, the product of split operands: hi·hi' + hi·lo' + lo·hi' per step, scaled back. */
export function sgmatDirectMatmul(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims, suffix: string, shape: SgmatShape, t: SgmatTiles, split?: SplitOperands): Kernel {
  const U = u32Lit;
  const { m: fm, n: fn, k: fk } = shape;
  const lanes = sgmatLanes(target);
  const P = t.wm * t.wn;
  const T = P * lanes;
  const frags = fragmentsOf(t);
  const ops = sgmatOps(shape, sgmatSpelling(target), P * frags.length);
  const bm = t.wm * t.fm * fm;
  const bn = t.wn * t.fn * fn;
  const tilesM = Math.ceil(d.m / bm);
  const range = out.kRange;
  const G = tilesM * d.batch * (range?.splits ?? 1);
  const [gy, gz] = dispatchGroups(G, target);
  const origin = tileOrigin(d, tilesM, bm, range);
  // a[row, k] at oa + row·K + k (transposed: oa + k·M + row); b[k, col] at ob + k·N + col (transposed: ob + col·K + k).
  // `at` offsets a split operand's lo part.
  const left = (i: number, k: string, at = '') => (d.transA ? ops.loadLeft('in_0', `${at}oa + (${k}) * ${U(d.m)} + ra_${i}`, U(d.m), true) : ops.loadLeft('in_0', `${at}oa + ra_${i} * ${U(d.k)} + ${k}`, U(d.k)));
  const right = (j: number, k: string, at = '') => (d.transB ? ops.loadRight('in_1', `${at}ob + cb_${j} * ${U(d.k)} + ${k}`, U(d.k), true) : ops.loadRight('in_1', `${at}ob + (${k}) * ${U(d.n)} + cb_${j}`, U(d.n)));
  const products = (k: string) =>
    split
      ? [
          ...fragmentProducts(t, ops, (i) => left(i, k), (j) => right(j, k)),
          ...Array.from({ length: t.fm }, (_, i) => `let al_${i} = ${left(i, k, `${U(split.aLo)} + `)};`),
          ...Array.from({ length: t.fn }, (_, j) => `let bl_${j} = ${right(j, k, `${U(split.bLo)} + `)};`),
          ...frags.flatMap(([i, j]) => [`acc_${i}_${j} = ${ops.multiplyAccumulate(`a_${i}`, `bl_${j}`, `acc_${i}_${j}`)};`, `acc_${i}_${j} = ${ops.multiplyAccumulate(`al_${i}`, `b_${j}`, `acc_${i}_${j}`)};`]),
        ]
      : fragmentProducts(t, ops, (i) => left(i, k), (j) => right(j, k));
  const step = (k: string, indent: string) => ['{', ...products(k).map((l) => `  ${l}`), '}'].map((l) => indent + l).join('\n');
  // Split operands: each element times 2^-(its row's and column's exponents), both within ±126, so each factor is a
  // normal f32 and the scaling exact (unless the product itself falls below f32's normal range).
  const unscale = split
    ? (v: string) => `${v} * pow2(-i32(f32(in_0[${U(split.aScales)} + oa / ${U(d.k)} + row]))) * pow2(-i32(f32(in_1[${U(split.bScales)} + ob / ${U(d.k)} + col])))`
    : undefined;
  // The loop takes `unroll` fragment steps at a time (the staged kernel's K step), then single steps to the end.
  const unroll = Math.max(1, Math.floor(t.bk / fk));
  const wide = unroll * fk;
  const kEnd = range ? `min(kb + ${U(range.len)}, ${U(d.k)})` : U(d.k);
  const ids = sgmatIds(ops.native, lanes);
  const main = `var<workgroup> tile_c: array<f32, ${P * fm * fn}>;

${sgmatKernelHead(T, ids, origin, { gy, groups: G, bn }, d)}
  // Subgroups past WM x WN (smaller runtime subgroups) compute nothing.
  let computes = sg < ${U(P)};
  let sm = (sg / ${U(t.wn)}) * ${U(t.fm * fm)};
  let sn = (sg % ${U(t.wn)}) * ${U(t.fn * fn)};
  // Each fragment's first row and column (r, c), and where it is read (ra, cb): moved back inside the output.
${Array.from({ length: t.fm }, (_, i) => `  let r_${i} = m0 + sm + ${U(i * fm)};\n  let ra_${i} = min(r_${i}, ${U(d.m - fm)});`).join('\n')}
${Array.from({ length: t.fn }, (_, j) => `  let c_${j} = n0 + sn + ${U(j * fn)};\n  let cb_${j} = min(c_${j}, ${U(d.n - fn)});`).join('\n')}
${frags.map(([i, j], f) => `  var acc_${i}_${j} = ${ops.zero(`sg * ${U(frags.length)} + ${U(f)}`)};`).join('\n')}
  if (computes) {
    let ke = ${kEnd};
    var k = ${range ? 'kb' : '0u'};
    for (; k + ${U(wide)} <= ke; k += ${U(wide)}) {
${Array.from({ length: unroll }, (_, s) => step(s === 0 ? 'k' : `k + ${U(s * fk)}`, '      ')).join('\n')}
    }
    for (; k < ke; k += ${U(fk)}) {
${step('k', '      ')}
    }
  }
${frags.map(([i, j]) => fragmentEpilogue(out, d, { shape, tiles: t }, ops, i, j, target, { row: (x) => `ra_${x}`, col: (y) => `cb_${y}`, keep: (x, y) => `row >= r_${x} && col >= c_${y}` }, unscale)).join('\n')}
}`;
  const helpers = ops.helpers();
  const name = split ? 'matmul_split16_f32' : 'matmul_sgmat_direct_f16';
  const kernel = assemble(split ? { ...out, lib: [...out.lib, 'pow2'] } : out, inputs, target, `${name}${range ? `_ks${range.splits}` : ''}${suffix}`, { body: helpers ? `${helpers}\n\n${main}` : main, workgroupSize: [T, 1, 1], dispatch: [Math.ceil(d.n / bn), gy, gz] });
  return { ...kernel, wgsl: `${ops.directives}\n${kernel.wgsl}` };
}
