// Subgroup-matrix (tensor core) primitives for the kernel generators: one interface, two spellings.
// - native: Dawn's `chromium_experimental_subgroup_matrix` builtins (subgroupMatrixLoad, ...MultiplyAccumulate,
//   subgroupMatrixStore), used where the device has the feature (NVIDIA with allow_unsafe_apis: f16 inputs, f32
//   results, 16x16x16 among others; ../shared/docs/webgpu.md).
// - emulated: machines without a GPU (lavapipe) have no subgroup matrices; a test Target that lists configs without
//   the feature gets this spelling, so the kernels' tiling, indexing, bounds and epilogues run and are checked
//   there. A left or right matrix is its offset into the workgroup array it was loaded from (read in place by the
//   product); a result is a slot of m·n f32s in workgroup memory (`sgm_acc`), where lane l of a subgroup of L owns
//   elements l, l + L, ... (the kernel has `lane` and `lanes` in scope). No private arrays: LLVM compiled
//   by-value matrices for minutes. Its product sums k in order with fma: on exact f16 operands it matches a
//   sequential f32 loop bit for bit.
// Semantics (gpuweb proposals/subgroup-matrix.md): left is M rows x K columns, right K x N, result M x N; a load
// or store reads element [r, c] at offset + r·stride + c (row-major, the only layout used here); matrices live in
// function scope; every call and its operands must be subgroup-uniform (the kernels switch the uniformity
// diagnostic off because offsets derive from the subgroup's id).
import type { Target } from '../compiler/codegen/types.js';
import { u32Lit } from './elementwise.js';

/** The WebGPU feature behind `enable chromium_experimental_subgroup_matrix;`. */
export const SUBGROUP_MATRIX_FEATURE = 'chromium-experimental-subgroup-matrix';

/** An f16-input, f32-result shape the Target's subgroup matrices multiply: [m, k] x [k, n]. */
export interface SgmatShape {
  readonly m: number;
  readonly n: number;
  readonly k: number;
}

/**
 * The f16 x f16 -> f32 config the kernels use on `target`, or undefined: 16x16x16 when listed, else the largest.
 * Needs shader-f16 (the tiles are f16).
 */
export function sgmatShape(target: Target): SgmatShape | undefined {
  const fits = halfConfigs(target);
  const square = fits.find((c) => c.M === 16 && c.N === 16 && c.K === 16);
  const best = square ?? [...fits].sort((a, b) => b.M * b.N * b.K - a.M * a.N * a.K)[0];
  return best ? { m: best.M, n: best.N, k: best.K } : undefined;
}

/** The f16 x f16 -> f32 configs the kernels can use on `target` (none without shader-f16: the tiles are f16). */
const halfConfigs = (target: Target): Target['subgroupMatrixConfigs'] =>
  target.features.includes('shader-f16') ? target.subgroupMatrixConfigs.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32') : [];

/** The f16 x f16 -> f32 config m x n x k when `target` lists it (kernels that need one shape in particular). */
export function sgmatConfig(target: Target, m: number, n: number, k: number): SgmatShape | undefined {
  return halfConfigs(target).some((c) => c.M === m && c.N === n && c.K === k) ? { m, n, k } : undefined;
}

/** Whether `target` runs the builtins (else the kernels emulate them). */
export const nativeSgmat = (target: Target): boolean => target.features.includes(SUBGROUP_MATRIX_FEATURE) && target.features.includes('subgroups');

/** Why a Target cannot run the subgroup-matrix kernels (sgmatShape is undefined). */
export const NO_SGMAT_CONFIG = 'the target has no f16 x f16 -> f32 subgroup-matrix config (or no shader-f16)';

/** How a kernel spells the subgroup-matrix operations: natively in one of Dawn's two spellings, or emulated. */
export type SgmatSpelling = 'template' | 'argument' | 'emulated';

/** The spelling for `target` (Target.subgroupMatrixSpelling; emulated without the feature). */
export const sgmatSpelling = (target: Target): SgmatSpelling => (nativeSgmat(target) ? (target.subgroupMatrixSpelling ?? 'template') : 'emulated');

/** Invocations per emulated subgroup (emulation repeats the matrix loads per lane group: keep it small). */
const EMULATED_LANES = 4;

/**
 * Invocations per subgroup a kernel is laid out for: natively the Target's largest (Dawn requires x to be a multiple);
 * emulated 4, or Target.emulatedLanes (tests of code that depends on the lane count, such as NVIDIA's 32).
 */
export const sgmatLanes = (target: Target): number => (nativeSgmat(target) ? target.subgroupMaxSize : (target.emulatedLanes ?? EMULATED_LANES));

/**
 * How a kernel knows its subgroup `sg`, its `lane` and the subgroup's `lanes`: natively the builtins (extra
 * parameters of `fn main`); emulated, blocks of `lanes` consecutive invocations (statements after `lid`).
 */
export function sgmatIds(native: boolean, lanes: number): { readonly params: string; readonly code: string } {
  return native
    ? { params: ', @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) lanes: u32', code: '' }
    : { params: '', code: `  let sg = lid / ${u32Lit(lanes)};\n  let lane = lid % ${u32Lit(lanes)};\n  let lanes = ${u32Lit(lanes)};\n` };
}

/** The WGSL spelling of the subgroup-matrix operations for one kernel. */
export interface SgmatOps {
  readonly native: boolean;
  /** Directives the module starts with. */
  readonly directives: string;
  /** A zero result matrix; `slot` (a u32 expression below `slots`) tells the emulation where it lives. */
  zero(slot: string): string;
  /**
   * Left [m, k] (row-major at `offset`, row stride `stride`) of the f16 array `tile` (workgroup memory, or a
   * storage binding); `colMajor`: element [r, c] at offset + c·stride + r (a transposed operand read in place).
   */
  loadLeft(tile: string, offset: string, stride: string, colMajor?: boolean): string;
  /** Right [k, n] of `tile`. */
  loadRight(tile: string, offset: string, stride: string, colMajor?: boolean): string;
  /** left · right + acc. */
  multiplyAccumulate(left: string, right: string, acc: string): string;
  /** Statement storing result `value` [m, n] into the f32 workgroup array `tile`. */
  store(tile: string, offset: string, value: string, stride: string): string;
  /** A result [m, n] loaded from the f32 workgroup array `tile` (into result slot `slot` when emulated). */
  loadResult(tile: string, offset: string, stride: string, slot: string): string;
  /** WGSL types of a left, right and result matrix (to declare a `var` before assigning it in a branch). */
  readonly leftType: string;
  readonly rightType: string;
  readonly resultType: string;
  /** Module-scope declarations the emulated spelling uses (empty when native). */
  helpers(): string;
}

/**
 * The spelling for a kernel holding `slots` result matrices per workgroup. `prefix` names the emulation's
 * module-scope helpers and slot array: a kernel whose products read left (or right) matrices from two arrays
 * uses one spelling per pair of arrays, each with its own prefix (kernels/flash-sgmat.ts).
 */
export function sgmatOps(shape: SgmatShape, spelling: SgmatSpelling, slots: number, prefix = 'sgm'): SgmatOps {
  const native = spelling !== 'emulated';
  const { m, n, k } = shape;
  const left = `subgroup_matrix_left<f16, ${k}, ${m}>`;
  const right = `subgroup_matrix_right<f16, ${n}, ${k}>`;
  const result = `subgroup_matrix_result<f32, ${n}, ${m}>`;
  // Row-major throughout: the layout as a template argument (current Dawn) or a bool argument (first releases).
  const load = (type: string, tile: string, offset: string, stride: string, colMajor = false) =>
    spelling === 'template' ? `subgroupMatrixLoad<${type}, ${colMajor ? 'col_major' : 'row_major'}>(&${tile}, ${offset}, ${stride})` : `subgroupMatrixLoad<${type}>(&${tile}, ${offset}, ${colMajor}, ${stride})`;
  if (native) {
    return {
      native,
      directives: 'enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic(off, chromium.subgroup_matrix_uniformity);',
      zero: () => `${result}()`,
      loadLeft: (tile, offset, stride, colMajor) => load(left, tile, offset, stride, colMajor),
      loadRight: (tile, offset, stride, colMajor) => load(right, tile, offset, stride, colMajor),
      multiplyAccumulate: (l, r, acc) => `subgroupMatrixMultiplyAccumulate(${l}, ${r}, ${acc})`,
      store: (tile, offset, value, stride) =>
        spelling === 'template' ? `subgroupMatrixStore<row_major>(&${tile}, ${offset}, ${value}, ${stride});` : `subgroupMatrixStore(&${tile}, ${offset}, ${value}, false, ${stride});`,
      loadResult: (tile, offset, stride) => load(result, tile, offset, stride),
      leftType: left,
      rightType: right,
      resultType: result,
      helpers: () => '',
    };
  }
  const MN = u32Lit(m * n);
  // The arrays, strides and layouts left and right matrices are read from (one of each per kernel).
  let from: { left?: [string, string, boolean]; right?: [string, string, boolean] } = {};
  const source = (kind: 'left' | 'right', tile: string, stride: string, colMajor = false) => {
    const seen = from[kind];
    if (seen && (seen[0] !== tile || seen[1] !== stride || seen[2] !== colMajor)) throw new Error(`internal: emulated subgroup matrices read ${kind} matrices from ${seen[0]} and ${tile}`);
    from = { ...from, [kind]: [tile, stride, colMajor] };
  };
  const stores = new Set<string>();
  const resultLoads = new Set<string>();
  const P = prefix;
  const lanesLoop = (body: string) => `for (var e = lane; e < ${MN}; e += lanes) { ${body} }`;
  return {
    native,
    directives: 'enable f16;',
    zero: (slot) => `${P}_zero(${slot}, lane, lanes)`,
    loadLeft: (tile, offset, stride, colMajor) => (source('left', tile, stride, colMajor), offset),
    loadRight: (tile, offset, stride, colMajor) => (source('right', tile, stride, colMajor), offset),
    multiplyAccumulate: (l, r, acc) => `${P}_multiply_accumulate(${l}, ${r}, ${acc}, lane, lanes)`,
    store: (tile, offset, value, stride) => {
      stores.add(tile);
      return `${P}_store_${tile}(${offset}, ${value}, ${stride}, lane, lanes);`;
    },
    loadResult: (tile, offset, stride, slot) => {
      resultLoads.add(tile);
      return `${P}_load_${tile}(${slot}, ${offset}, ${stride}, lane, lanes)`;
    },
    leftType: 'u32',
    rightType: 'u32',
    resultType: 'u32',
    helpers: () => {
      const [a, sa, colA] = from.left ?? ['tile_a', '1u', false];
      const [b, sb, colB] = from.right ?? ['tile_b', '1u', false];
      // Element [r, c] of a matrix at `at`: row-major at + r·stride + c, column-major at + c·stride + r.
      const el = (at: string, stride: string, col: boolean, r: string, c: string) => (col ? `${at} + ${c} * ${stride} + ${r}` : `${at} + ${r} * ${stride} + ${c}`);
      return [
        `var<workgroup> ${P}_acc: array<f32, ${slots * m * n}>;`,
        `fn ${P}_zero(slot: u32, lane: u32, lanes: u32) -> u32 {\n  ${lanesLoop(`${P}_acc[slot * ${MN} + e] = 0.0f;`)}\n  return slot;\n}`,
        `fn ${P}_multiply_accumulate(a: u32, b: u32, slot: u32, lane: u32, lanes: u32) -> u32 {
  ${lanesLoop(`
    let i = e / ${u32Lit(n)};
    let j = e % ${u32Lit(n)};
    var s = ${P}_acc[slot * ${MN} + e];
    for (var t = 0u; t < unbounded(${u32Lit(k)}); t++) { s = fma(f32(${a}[${el('a', sa, colA, 'i', 't')}]), f32(${b}[${el('b', sb, colB, 't', 'j')}]), s); }
    ${P}_acc[slot * ${MN} + e] = s;
  `)}
  return slot;
}`,
        ...[...stores].map(
          (tile) => `fn ${P}_store_${tile}(offset: u32, slot: u32, stride: u32, lane: u32, lanes: u32) {
  ${lanesLoop(`${tile}[offset + (e / ${u32Lit(n)}) * stride + e % ${u32Lit(n)}] = ${P}_acc[slot * ${MN} + e];`)}
}`,
        ),
        ...[...resultLoads].map(
          (tile) => `fn ${P}_load_${tile}(slot: u32, offset: u32, stride: u32, lane: u32, lanes: u32) -> u32 {
  ${lanesLoop(`${P}_acc[slot * ${MN} + e] = ${tile}[offset + (e / ${u32Lit(n)}) * stride + e % ${u32Lit(n)}];`)}
  return slot;
}`,
        ),
      ].join('\n\n');
    },
  };
}
