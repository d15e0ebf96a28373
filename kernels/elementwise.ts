// WGSL kernel generators for the elementwise ops (unfused: one kernel per IR node), and the helpers every
// kernels/*.ts generator shares: WGSL literals, binding declarations, the flat grid-stride dispatch, index
// math from an output index to strided / broadcast inputs (strides baked in as constants), and a small
// library of accurate f32 functions (exp, log, erf, erfc, tanh) that do not depend on the device's builtins.
//
// Values are contiguous row-major f32 arrays. Bindings: `in_0 .. in_{n-1}` (read) then `out_0` (read_write).
import type { Kernel, KernelGen, Target } from '../compiler/codegen/types.js';
import { numel, type DType, type Node, type Shape } from '../compiler/ir/graph.js';
import { hash32 } from '../compiler/ir/rules/reference-core.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { gridDispatch, gridMain } from './grid-param.js';

// ---------------------------------------------------------------------------------------------- WGSL literals

/** A u32 literal; throws when n is not a whole number in [0, 2³²). */
export function u32Lit(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`internal: ${n} is not a u32`);
  return `${n}u`;
}

/** An i32 literal. */
export function i32Lit(n: number): string {
  if (!Number.isInteger(n) || n < -0x80000000 || n > 0x7fffffff) throw new Error(`internal: ${n} is not an i32`);
  return n < 0 ? `(${n}i)` : `${n}i`;
}

/**
 * The f32 literal of Math.fround(v), exact (the shortest decimal of a float64 that is an f32 converts back
 * exactly). Non-finite values cannot be WGSL constants: they read the private `INF_U` / `NAN_U` at run time. So
 * does -0 (`NZERO_U`): WGSL lets a compiler ignore the sign of a zero constant, and lavapipe's stored `-0.0f` as +0,
 * so x / full(-0) gave +inf where IEEE, PyTorch and the reference give -inf.
 */
export function f32Lit(v: number): string {
  const f = Math.fround(v);
  if (Number.isNaN(f)) return 'bitcast<f32>(NAN_U)';
  if (f === Infinity) return 'bitcast<f32>(INF_U)';
  if (f === -Infinity) return '(-bitcast<f32>(INF_U))';
  if (Object.is(f, -0)) return 'bitcast<f32>(NZERO_U)';
  const s = String(f);
  return f < 0 ? `(${s}f)` : `${s}f`;
}

// ---------------------------------------------------------------------------------------------- shapes

export function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  for (let i = shape.length - 1, acc = 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Strides of `shape` read as `target` under NumPy broadcasting: 0 on broadcast (size-1 or missing) dims. */
export function broadcastStrides(shape: Shape, target: Shape): number[] {
  const st = stridesOf(shape);
  const lead = target.length - shape.length;
  return target.map((_, i) => (i < lead || shape[i - lead] === 1 ? 0 : st[i - lead]));
}

/**
 * Simplifies a walk over `shape` with several stride vectors: drops size-1 dims and merges adjacent dims that
 * every vector walks contiguously (s[d] = s[d+1]·shape[d+1]). The flat element order is unchanged.
 */
export function mergeDims(shape: Shape, strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const keep = shape.map((_, d) => d).filter((d) => shape[d] !== 1);
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (const d of keep) {
    const last = outShape.length - 1;
    if (last >= 0 && strides.every((s, k) => outStrides[k][last] === s[d] * shape[d])) {
      outShape[last] *= shape[d];
      strides.forEach((s, k) => (outStrides[k][last] = s[d]));
    } else {
      outShape.push(shape[d]);
      strides.forEach((s, k) => outStrides[k].push(s[d]));
    }
  }
  return { shape: outShape, strides: outStrides };
}

/**
 * WGSL statements that declare `let <names[k]>: u32` = Σ coord_d(index) · strides[k][d] over `shape`, the
 * row-major coordinates of the flat index `index`, with the divisions by baked-in constants. A vector equal
 * to the contiguous strides of `shape` is the index itself; an all-zero one is 0.
 */
export function offsetCode(shape: Shape, strides: readonly (readonly number[])[], names: readonly string[], index: string, indent = '    '): string {
  const lines: string[] = [];
  const contiguous = stridesOf(shape);
  const general: number[] = [];
  strides.forEach((s, k) => {
    if (shape.every((n, d) => n === 1 || s[d] === contiguous[d])) lines.push(`let ${names[k]} = ${index};`);
    else if (shape.every((n, d) => n === 1 || s[d] === 0)) lines.push(`let ${names[k]} = 0u;`);
    else general.push(k);
  });
  if (general.length) {
    const m = mergeDims(shape, general.map((k) => strides[k]));
    const r = m.shape.length;
    if (r === 1) {
      general.forEach((k, j) => lines.push(`let ${names[k]} = ${mulLit(index, m.strides[j][0])};`));
    } else {
      const acc = general.map((k) => `${names[k]}_acc`);
      acc.forEach((a) => lines.push(`var ${a} = 0u;`));
      lines.push(`var rem = ${index};`);
      for (let d = r - 1; d >= 0; d--) {
        const c = `c${d}`;
        if (d > 0) {
          lines.push(`let ${c} = rem % ${u32Lit(m.shape[d])};`);
          lines.push(`rem = rem / ${u32Lit(m.shape[d])};`);
        } else lines.push(`let ${c} = rem;`);
        general.forEach((_, j) => {
          const s = m.strides[j][d];
          if (s !== 0) lines.push(`${acc[j]} += ${mulLit(c, s)};`);
        });
      }
      general.forEach((k, j) => lines.push(`let ${names[k]} = ${acc[j]};`));
    }
  }
  return lines.map((l) => indent + l).join('\n');
}

/** `x * s` with the trivial cases folded. */
export function mulLit(x: string, s: number): string {
  return s === 0 ? '0u' : s === 1 ? x : `${x} * ${u32Lit(s)}`;
}

/** WGSL: e^x's Cody-Waite reduction, x = k·ln2 + r with ln2 in two parts (|r| <= ln2/2). */
const EXP_REDUCE = `  let k = floor(fma(x, 1.4426950408889634f, 0.5f));
  let r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-6f;
`;

/** WGSL: `p` = e^r by its degree-7 Taylor polynomial (|r| <= ln2/2). */
const EXP_TAYLOR = `  var p = 1.9841270113829523e-4f;
  p = fma(p, r, 1.3888889225199819e-3f);
  p = fma(p, r, 8.333333767950535e-3f);
  p = fma(p, r, 4.1666667908430099e-2f);
  p = fma(p, r, 1.6666667163372040e-1f);
  p = fma(p, r, 0.5f);
  p = fma(p, r, 1.0f);
  p = fma(p, r, 1.0f);
`;

/** WGSL: e^x's reduction and polynomial `p` (e^x = p·2^k), shared by exp_f32 and flash's exp. */
export const EXP_POLY = EXP_REDUCE + EXP_TAYLOR;

// ---------------------------------------------------------------------------------------------- kernels

/**
 * A constant loop bound, which on software adapters (lavapipe) is written so the shader compiler cannot fold
 * it: LLVM then keeps the loop rolled, which cuts lavapipe's compile time several-fold (the value is the
 * same). Hardware targets get the literal, which their compilers unroll.
 */
export function loopBound(n: number, target: Target): string {
  return target.isFallbackAdapter ? `rolled(${u32Lit(n)})` : u32Lit(n);
}

/**
 * A loop bound for software adapters that LLVM cannot bound at all (loopBound's it can: [n, n + 1]), so it
 * neither unrolls nor vectorises the loop. For loops whose bodies it would otherwise unroll at great compile
 * cost and little gain: on lavapipe a 32-step naive matmul loop compiled in ~0.85 s with loopBound and ~0.06 s
 * with this, running as fast; flash attention's inner loops, on the other hand, run ~1.6x slower without the
 * unrolling, so they keep loopBound. Hardware targets get the literal.
 */
export function unboundedLoop(n: number, target: Target): string {
  return target.isFallbackAdapter ? `unbounded(${u32Lit(n)})` : u32Lit(n);
}

/** The flat invocations per workgroup: 256 where the target allows it. */
export function flatWorkgroup(target: Target): number {
  return Math.min(256, target.limits.maxComputeInvocationsPerWorkgroup, target.limits.maxComputeWorkgroupSizeX);
}

/**
 * A dispatch of at least `groups` workgroups within maxComputeWorkgroupsPerDimension: [g, 1, 1], else spread
 * over y (and z). Groups beyond maxComputeWorkgroupsPerDimension³ are capped when `cap` (a grid-stride loop
 * covers the rest), and an error otherwise.
 */
export function dispatchGroups(groups: number, target: Target, cap = false): [number, number, number] {
  const maxD = target.limits.maxComputeWorkgroupsPerDimension;
  let g = Math.max(1, groups);
  if (g > maxD ** 3) {
    if (!cap) throw new Error(`${groups} workgroups exceed maxComputeWorkgroupsPerDimension³ of target '${target.name}'`);
    g = maxD ** 3;
  }
  if (g <= maxD) return [g, 1, 1];
  if (g <= maxD * maxD) {
    const gy = Math.ceil(g / maxD);
    return [Math.ceil(g / gy), gy, 1];
  }
  const gz = Math.ceil(g / (maxD * maxD));
  const gy = Math.min(maxD, Math.ceil(g / (gz * maxD)));
  return [Math.min(maxD, Math.ceil(g / (gz * gy))), gy, gz];
}

/** WGSL: the workgroup's flat index over a dispatch from dispatchGroups (reads `wid`). */
export function flatGroupExpr(dispatch: readonly [number, number, number]): string {
  const [gx, gy, gz] = dispatch;
  if (gy === 1 && gz === 1) return 'wid.x';
  if (gz === 1) return `wid.y * ${u32Lit(gx)} + wid.x`;
  return `(wid.z * ${u32Lit(gy)} + wid.y) * ${u32Lit(gx)} + wid.x`;
}

/**
 * WGSL for a kernel with one workgroup per item (row, output element): `let <v> = ` the workgroup's flat
 * index, and an early (uniform) return past `count`.
 */
export function groupIndexCode(v: string, count: number, dispatch: readonly [number, number, number], indent = '  '): string {
  if (dispatch[0] * dispatch[1] * dispatch[2] < count) throw new Error(`internal: ${count} workgroups do not fit a ${dispatch.join('x')} dispatch`);
  return `${indent}let ${v} = ${flatGroupExpr(dispatch)};\n${indent}if (${v} >= ${u32Lit(count)}) { return; }`;
}

/** Declarations of the storage bindings: one per input (read), then the output (read_write). */
export function bindingDecls(inputs: number): string {
  const lines: string[] = [];
  for (let i = 0; i < inputs; i++) lines.push(`@group(0) @binding(${i}) var<storage, read> in_${i}: array<f32>;`);
  lines.push(`@group(0) @binding(${inputs}) var<storage, read_write> out_0: array<f32>;`);
  return lines.join('\n');
}

/**
 * The kernel's WGSL with the read-only f32 bindings `names` declared `array<vec4<f32>>`, for kernels that read
 * them one vec4 at a time (kernels/half-storage.ts stores such a binding as array<vec4<f16>> where f16).
 */
export function declareVec4(wgsl: string, names: readonly string[]): string {
  return names.reduce((w, name) => w.replace(`var<storage, read> ${name}: array<f32>;`, `var<storage, read> ${name}: array<vec4<f32>>;`), wgsl);
}

/** Fails with a clear message when a kernel would bind more storage buffers than the target allows. */
export function checkBindings(node: Node, target: Target): void {
  const n = node.inputs.length + 1;
  if (n > target.limits.maxStorageBuffersPerShaderStage) {
    throw new Error(`${node.op} %${node.id}: ${n} storage buffers exceed maxStorageBuffersPerShaderStage (${target.limits.maxStorageBuffersPerShaderStage}) of target '${target.name}'; split the op`);
  }
}

export interface KernelParts {
  /** Stable and descriptive; the generated WGSL starts with a comment naming it. */
  readonly name: string;
  /** Module-scope code after the bindings and library functions: `var<workgroup>`s, helpers, `fn main`. */
  readonly body: string;
  readonly workgroupSize: readonly [number, number, number];
  readonly dispatch: readonly [number, number, number];
  /** Library functions used (LIB keys); dependencies are added. */
  readonly lib?: readonly string[];
}

/**
 * Rewrites every decimal f32 literal (`0.7f`, `1.4426950408889634f`) as the exact f32 it rounds to, so the
 * WGSL never asks the compiler to round a literal (which Tint may reject).
 */
export function exactLiterals(code: string): string {
  return code.replace(/(?<![\w.])(\d+\.\d*(?:e[+-]?\d+)?|\d+e[+-]?\d+)f\b/g, (_m, num: string) => f32Lit(Number(num)));
}

/** Assembles a Kernel for `node`: bindings = its inputs (read) then its output (read_write). Deterministic text. */
export function makeKernel(node: Node, inputs: readonly Node[], target: Target, parts: KernelParts): Kernel {
  checkBindings(node, target);
  const [x, y, z] = parts.workgroupSize;
  const L = target.limits;
  if (x * y * z > L.maxComputeInvocationsPerWorkgroup || x > L.maxComputeWorkgroupSizeX || y > L.maxComputeWorkgroupSizeY || z > L.maxComputeWorkgroupSizeZ) {
    throw new Error(`internal: ${parts.name} workgroup ${x}x${y}x${z} exceeds the limits of target '${target.name}'`);
  }
  if (parts.dispatch.some((d) => d < 1 || d > L.maxComputeWorkgroupsPerDimension)) {
    throw new Error(`${node.op} %${node.id}: dispatch ${parts.dispatch.join('x')} exceeds maxComputeWorkgroupsPerDimension of target '${target.name}'`);
  }
  const lib = libCode(parts.lib ?? []);
  const code = [lib, parts.body].filter(Boolean).join('\n\n');
  const prelude: string[] = [];
  if (/\bINF_U\b/.test(code)) prelude.push('var<private> INF_U: u32 = 0x7f800000u;');
  if (/\bNAN_U\b/.test(code)) prelude.push('var<private> NAN_U: u32 = 0x7fc00000u;');
  if (/\bNZERO_U\b/.test(code)) prelude.push('var<private> NZERO_U: u32 = 0x80000000u;');
  if (/\brolled\(/.test(code)) {
    prelude.push('// n, opaque to the compiler (the length is below 2^31): keeps loops rolled on software adapters.');
    prelude.push('fn rolled(n: u32) -> u32 { return n + (arrayLength(&out_0) >> 31u); }');
  }
  if (/\bunbounded\(/.test(code)) {
    prelude.push('// n, with no upper bound the compiler can prove (the length is never 2^32 - 1).');
    prelude.push('fn unbounded(n: u32) -> u32 { return select(n, arrayLength(&out_0), arrayLength(&out_0) == 0xffffffffu); }');
  }
  const head = `// ${parts.name}: ${node.op} [${inputs.map((i) => `[${i.shape.join(', ')}]`).join(', ')}] -> [${node.shape.join(', ')}] (generated by visft)`;
  const wgsl = [head, bindingDecls(node.inputs.length), ...(prelude.length ? ['', ...prelude] : []), '', exactLiterals(code), ''].join('\n');
  return {
    name: parts.name,
    wgsl,
    workgroupSize: [x, y, z],
    dispatch: [...parts.dispatch] as [number, number, number],
    bindings: [...node.inputs.map((value) => ({ value, access: 'read' as const })), { value: node.id, access: 'read_write' as const }],
    nodes: [node.id],
  };
}

/**
 * The kernel with a second output binding `out_1` after `out_0`, holding `node`'s value (a kernel that computes
 * two values in one sweep). Fails with `tooMany`'s error when the bindings exceed the target's limit.
 */
export function withOutput(kernel: Kernel, node: Node, target: Target, tooMany: (message: string) => Error = (m) => new Error(m)): Kernel {
  const bindings = [...kernel.bindings, { value: node.id, access: 'read_write' as const }];
  if (bindings.length > target.limits.maxStorageBuffersPerShaderStage) throw tooMany(`${kernel.name}: ${bindings.length} storage buffers exceed the target's ${target.limits.maxStorageBuffersPerShaderStage}`);
  const out0 = `@group(0) @binding(${kernel.bindings.length - 1}) var<storage, read_write> out_0: array<f32>;`;
  if (!kernel.wgsl.includes(out0)) throw new Error(`internal: ${kernel.name} does not declare out_0 last`);
  const wgsl = kernel.wgsl.replace(out0, `${out0}\n@group(0) @binding(${kernel.bindings.length}) var<storage, read_write> out_1: array<f32>;`);
  return { ...kernel, wgsl, bindings, nodes: [...kernel.nodes, node.id] };
}

/**
 * Workgroups of a flat kernel at most on software adapters, each invocation looping over several elements: every
 * workgroup costs a CPU thread a fixed overhead there. On lavapipe (2 cores) an elementwise kernel over 98304
 * elements took 1.1 ms in 384 workgroups and 0.33-0.59 ms in 8-64; GELU 2.2-3.1 ms against 1.0-1.5 ms. 64 keeps
 * machines with many cores busy.
 */
export const SOFTWARE_FLAT_GROUPS = 64;

/**
 * A kernel with one invocation per output element (on software adapters, several: SOFTWARE_FLAT_GROUPS) in a
 * grid-stride loop over `n` elements: `body` is WGSL statements that see `i: u32` (the flat output index) and
 * write `out_0[i]`.
 */
export function flatKernel(
  node: Node,
  inputs: readonly Node[],
  target: Target,
  name: string,
  body: string,
  opts: { readonly lib?: readonly string[]; readonly helpers?: string; readonly n?: number } = {},
): Kernel {
  const n = opts.n ?? numel(node.shape);
  const wg = flatWorkgroup(target);
  const groups = Math.ceil(n / wg);
  const dispatch = dispatchGroups(target.isFallbackAdapter ? Math.min(groups, SOFTWARE_FLAT_GROUPS) : groups, target, true);
  const stride = dispatch[0] * dispatch[1] * dispatch[2] * wg;
  const main = `${opts.helpers ? `${opts.helpers}\n\n` : ''}@compute @workgroup_size(${wg}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  for (var i = (${flatGroupExpr(dispatch)}) * ${u32Lit(wg)} + lid; i < ${u32Lit(n)}; i += ${u32Lit(stride)}) {
${body}
  }
}`;
  return makeKernel(node, inputs, target, { name, body: main, workgroupSize: [wg, 1, 1], dispatch, lib: opts.lib ?? [] });
}

/**
 * The kernel of a node without elements: one invocation that does nothing, but uses every binding (an
 * `auto` pipeline layout keeps only the bindings a shader uses).
 */
export function emptyKernel(node: Node, inputs: readonly Node[], target: Target): Kernel {
  const touch = [...node.inputs.map((_, i) => `in_${i}[0]`), '0.0f'].join(' + ');
  const main = `@compute @workgroup_size(1, 1, 1)
fn main() {
  // No elements to compute; the branch is never taken.
  if (arrayLength(&out_0) == 0xffffffffu) { out_0[0] = ${touch}; }
}`;
  return makeKernel(node, inputs, target, { name: `${node.op}_empty_f32`, body: main, workgroupSize: [1, 1, 1], dispatch: [1, 1, 1] });
}

/** A GpuRule for a generator; nodes without elements get emptyKernel (no division by zero-size dims). */
export function kernelRule(gen: KernelGen): { readonly kind: 'kernel'; readonly gen: KernelGen } {
  return { kind: 'kernel', gen: (node, inputs, target) => (numel(node.shape) === 0 ? emptyKernel(node, inputs, target) : gen(node, inputs, target)) };
}

// ---------------------------------------------------------------------------------------------- f32 library

const horner = (coef: readonly number[], v: string): string => coef.reduceRight((acc, c, i) => (i === coef.length - 1 ? f32Lit(c) : `fma(${acc}, ${v}, ${f32Lit(c)})`), '');

// erf(x) = x + x·R(x²) on |x| < 1; erfc(z) = e^{-z²}·S(1/z)/z on z >= 1 (S on [1, 2.5) and [2.5, 10] around
// 1/z = 0.7 and 0.25). Least-squares fits in relative error to mpmath (float64 errors 1.2e-9, 5e-9, 4e-9);
// measured in f32 arithmetic: erf within 8.3e-8 relative, erfc within 2.7e-7 relative down to 1e-36.
const ERF_R = [0.12837916612625122, -0.3761262595653534, 0.1128358244895935, -0.026853691786527634, 0.005188099108636379, -0.0008008189615793526, 7.847259257687256e-5];
const ERFC_A = [0.4766766428947449, -0.17068704962730408, 0.012498033232986927, 0.05136400833725929, -0.06055556610226631, 0.043447788804769516, -0.01767156645655632, -0.011223039589822292, 0.025236807763576508];
/**
 * ln(erfc(z)·e^{z²}/t) as a polynomial in t = 1/(1 + z/2), z >= 0: the Chebyshev fit of Press et al. (Numerical
 * Recipes §6.2, `erfcc`), fractional error below 1.2e-7 for every z.
 */
const ERFC_CHEB = [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277];
const ERFC_B = [0.5479978322982788, -0.11944694072008133, -0.1677883118391037, 0.2195194959640503, -0.02761610969901085, -0.2738710641860962, 0.3780384659767151, -0.02858315408229828];
// Cephes tanhf on |x| < 0.625.
const TANH_P = [-3.33332819422e-1, 1.33314422036e-1, -5.37397155531e-2, 2.06390887954e-2, -5.70498872745e-3];

/**
 * The f32 bits of x rounded to f16 (to nearest even, subnormals, overflow to ±inf), as an f32: the
 * reference's roundF16 on an f32 value, bit-exact with u32 operations.
 */
const CAST_F16 = `fn cast_f16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let sign = b & 0x80000000u;
  let a = b & 0x7fffffffu;
  if (a >= 0x7f800000u) { return x; }
  if (a >= 0x38800000u) {
    // normal in f16: keep 10 of the 23 mantissa bits
    let r = (a + 0x00000fffu + ((a >> 13u) & 1u)) & 0xffffe000u;
    if (r > 0x477fe000u) { return bitcast<f32>(sign | 0x7f800000u); }
    return bitcast<f32>(sign | r);
  }
  // f16 subnormal: a multiple of 2^-24
  let e = i32(a >> 23u) - 127i;
  let s = u32(-1i - e);
  if (a < 0x00800000u || s >= 25u) { return bitcast<f32>(sign); }
  let m = (a & 0x007fffffu) | 0x00800000u;
  var q = m >> s;
  let rest = m & ((1u << s) - 1u);
  let half = 1u << (s - 1u);
  if (rest > half || (rest == half && (q & 1u) == 1u)) { q += 1u; }
  return bitcast<f32>(sign | bitcast<u32>(f32(q) * 5.9604644775390625e-8f));
}`;

/** Rounds the f32 to bf16 (nearest even; the carry gives ±inf on overflow), as an f32. */
const CAST_BF16 = `fn cast_bf16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return x; }
  return bitcast<f32>((b + 0x00007fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}`;

/** WGSL library functions by name, with their dependencies. Emitted in this table's order. */
const LIB: Readonly<Record<string, { readonly deps: readonly string[]; readonly code: string }>> = {
  cast_f16: { deps: [], code: CAST_F16 },
  cast_bf16: { deps: [], code: CAST_BF16 },
  // Exact scaling by powers of two and f16 pairs (kernels/matmul-split16.ts: f32 products on f16 tensor cores).
  pow2: {
    deps: [],
    code: `// 2^s for s in [-126, 127]: a normal f32 built from its bits (exact, where ldexp may flush its edges).
fn pow2(s: i32) -> f32 {
  return bitcast<f32>(u32(s + 127) << 23u);
}`,
  },
  f16_hi: {
    deps: [],
    code: `// x's top 11 significant bits (truncated): exact in f16 down to its normal range, and x − f16_hi(x) exact in f32.
// Not x − f32(f16(x)): compilers may fold that round trip to 0 (lavapipe's does).
fn f16_hi(x: f32) -> f32 {
  return bitcast<f32>(bitcast<u32>(x) & 0xffffe000u);
}`,
  },
  is_nan: {
    deps: [],
    code: `fn is_nan(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}`,
  },
  exp_f32: {
    deps: [],
    code: `// e^x to about 1 ulp: x = k·ln2 + r (Cody-Waite), e^r by its degree-7 Taylor polynomial (|r| <= ln2/2).
fn exp_f32(x: f32) -> f32 {
  if (x > 88.72284f) { return bitcast<f32>(INF_U); }
  if (x < -103.97209f) { return 0.0f; }
${EXP_POLY}  return ldexp(p, i32(k));
}`,
  },
  log_f32: {
    deps: [],
    code: `// ln x to about 1 ulp: x = 2^e·m with m in [√½, √2), ln m = 2·atanh(f/(2+f)) with f = m - 1 (exact).
fn log_f32(x: f32) -> f32 {
  var bits = bitcast<u32>(x);
  if (bits >= 0x80000000u) {
    if ((bits & 0x7fffffffu) == 0u) { return -bitcast<f32>(INF_U); }
    return bitcast<f32>(NAN_U);
  }
  if (bits == 0u) { return -bitcast<f32>(INF_U); }
  if (bits >= 0x7f800000u) { return x; }
  var e = 0i;
  if (bits < 0x00800000u) {
    bits = bitcast<u32>(x * 8388608.0f);
    e = -23i;
  }
  e += i32(bits >> 23u) - 127i;
  var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
  if (m > 1.4142135f) {
    m = m * 0.5f;
    e += 1i;
  }
  let f = m - 1.0f;
  let s = f / (2.0f + f);
  let s2 = s * s;
  var p = 0.22222222f;
  p = fma(p, s2, 0.28571428f);
  p = fma(p, s2, 0.4f);
  p = fma(p, s2, 0.6666667f);
  let lnm = fma(s * s2, p, 2.0f * s);
  let fe = f32(e);
  return fma(fe, 0.693145751953125f, fma(fe, 1.428606765330187e-6f, lnm));
}`,
  },
  erfcx_f32: {
    deps: [],
    code: `// e^{z²}·erfc(z) for z >= 1: S(1/z)/z, S a polynomial on each of [1, 2.5) and [2.5, 10].
fn erfcx_f32(z: f32) -> f32 {
  let t = 1.0f / z;
  var p: f32;
  if (z < 2.5f) {
    let v = t - 0.7f;
    p = ${horner(ERFC_A, 'v')};
  } else {
    let v = t - 0.25f;
    p = ${horner(ERFC_B, 'v')};
  }
  return p * t;
}`,
  },
  erfc_tail: {
    deps: ['exp_f32', 'erfcx_f32'],
    code: `// erfc(z) for z >= 1, relative error about 3e-7: e^{-z²} (z² split exactly as in Cody's erfc) times erfcx.
fn erfc_tail(z: f32) -> f32 {
  if (z > 10.0f) { return 0.0f; }
  let zs = floor(fma(z, 16.0f, 0.5f)) * 0.0625f;
  let e = exp_f32(-(zs * zs)) * exp_f32(-((z - zs) * (z + zs)));
  return e * erfcx_f32(z);
}`,
  },
  erf_f32: {
    deps: ['erfc_tail'],
    code: `// erf(x), relative error below 1e-7.
fn erf_small(x: f32) -> f32 {
  let s = x * x;
  return fma(x, ${horner(ERF_R, 's')}, x);
}

fn erf_f32(x: f32) -> f32 {
  if (abs(x) < 1.0f) { return erf_small(x); }
  let r = 1.0f - erfc_tail(abs(x));
  return select(r, -r, x < 0.0f);
}

fn erfc_f32(x: f32) -> f32 {
  if (x >= 1.0f) { return erfc_tail(x); }
  if (x <= -1.0f) { return 2.0f - erfc_tail(-x); }
  return 1.0f - erf_small(x);
}`,
  },
  sigmoid_f32: {
    deps: ['exp_f32'],
    code: `fn sigmoid_f32(x: f32) -> f32 {
  if (x >= 0.0f) { return 1.0f / (1.0f + exp_f32(-x)); }
  let e = exp_f32(x);
  return e / (1.0f + e);
}`,
  },
  exp_split: {
    deps: [],
    code: `// e^{hi + lo} for hi a multiple of 2^-16 (|hi| < 2^14) and |lo| < 8, to about 1 ulp however large hi is:
// hi − k·ln2_hi (ln2_hi = 45426·2^-16) is taken exactly in integers. In floats a software adapter's optimiser
// reassociated (hi − k·ln2_hi) + lo into the rounded (hi + lo) − k·ln2_hi (3e-6 error at hi = −71, on lavapipe).
fn exp_split(hi: f32, lo: f32) -> f32 {
  let k = floor(fma(hi + lo, 1.4426950408889634f, 0.5f));
  let d = f32(i32(hi * 65536.0f) - i32(k) * 45426i) * 0.0000152587890625f;
  let r = (d + lo) - k * 1.428606765330187e-6f;
${EXP_TAYLOR}  return ldexp(p, i32(k));
}`,
  },
  normcdf_f32: {
    deps: ['exp_split'],
    code: `// Φ(x) = ½·erfc(|x|/√2) below 0, 1 − ½·erfc(|x|/√2) above, without branches: erfc(z) = t·e^{−z² + Q(t)},
// t = 1/(1 + z/2), Q the Chebyshev fit in ERFC_CHEB. −z² = −x²/2 is split exactly (x rounded to 1/16 squares
// exactly), so neither x/√2's rounding nor the exponent's size enters the result: relative error about 4e-7.
fn normcdf_f32(x: f32) -> f32 {
  let a = min(abs(x), 15.0f);
  let t = 1.0f / fma(a, 0.35355339059327373f, 1.0f);
  let q = ${horner(ERFC_CHEB, 't')};
  let xs = floor(fma(a, 16.0f, 0.5f)) * 0.0625f;
  let e = t * exp_split(-0.5f * (xs * xs), fma(-0.5f * (a - xs), a + xs, q));
  return select(1.0f - 0.5f * e, 0.5f * e, x < 0.0f);
}`,
  },
  tanh_f32: {
    deps: ['exp_f32'],
    code: `fn tanh_f32(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.625f) {
    let s = x * x;
    return fma(x * s, ${horner(TANH_P, 's')}, x);
  }
  if (a > 9.1f) { return select(1.0f, -1.0f, x < 0.0f); }
  let r = 1.0f - 2.0f / (exp_f32(2.0f * a) + 1.0f);
  return select(r, -r, x < 0.0f);
}`,
  },
};

function libCode(names: readonly string[]): string {
  const need = new Set<string>();
  const add = (n: string) => {
    if (need.has(n)) return;
    const f = LIB[n];
    if (!f) throw new Error(`internal: no WGSL library function ${n}`);
    f.deps.forEach(add);
    need.add(n);
  };
  names.forEach(add);
  return Object.keys(LIB)
    .filter((n) => need.has(n))
    .map((n) => LIB[n].code)
    .join('\n\n');
}

// ---------------------------------------------------------------------------------------------- unary ops

interface Fn1 {
  readonly expr: (x: string) => string;
  readonly lib?: readonly string[];
}

/**
 * WGSL statements computing `acc` = base^n for a whole n >= 0 by square-and-multiply (relative error about
 * 2·log2(n) ulp): unrolled up to 64, a loop beyond.
 */
function powIntCode(base: string, n: number): string {
  if (n <= 64) {
    const lines = [`var sq = ${base};`, 'var acc = 1.0f;'];
    for (let k = n; k > 0; k = Math.floor(k / 2)) {
      if (k & 1) lines.push('acc = acc * sq;');
      if (k > 1) lines.push('sq = sq * sq;');
    }
    return lines.map((l) => `  ${l}`).join('\n');
  }
  return `  var sq = ${base};
  var acc = 1.0f;
  var k = ${u32Lit(n)};
  loop {
    if ((k & 1u) == 1u) { acc = acc * sq; }
    k = k >> 1u;
    if (k == 0u) { break; }
    sq = sq * sq;
  }`;
}

/**
 * x^e as Math.pow: whole e by square-and-multiply (of 1/x when e < 0), ±½ by sqrt; otherwise
 * x^n·e^{f·ln x} with n = trunc(e) and |f| < 1, so the exponential's argument stays small (NaN for x < 0).
 * For e not whole, -0 and -inf count as +0 and +inf (IEEE pow, Math.pow and PyTorch: (-inf)^0.5 = inf,
 * (-0)^-0.5 = inf), where sqrt and ln alone would give NaN and -inf.
 */
function powFn(e: number): { code: string; lib: string[] } {
  if (e === 0) return { code: 'fn pow_f(x: f32) -> f32 { return 1.0f; }', lib: [] };
  const n = Math.trunc(e);
  const base = e < 0 ? '(1.0f / x)' : 'x';
  if (n === e) return { code: `fn pow_f(x: f32) -> f32 {\n${powIntCode(base, Math.abs(n))}\n  return acc;\n}`, lib: [] };
  const unsigned = '  let x = select(x0, abs(x0), (bitcast<u32>(x0) & 0x7fffffffu) == 0u || bitcast<u32>(x0) == 0xff800000u);';
  if (e === 0.5 || e === -0.5) return { code: `fn pow_f(x0: f32) -> f32 {\n${unsigned}\n  return ${UNARY[e > 0 ? 'sqrt' : 'rsqrt'].expr('x')};\n}`, lib: [] };
  return {
    code: `fn pow_f(x0: f32) -> f32 {\n${unsigned}\n${powIntCode(base, Math.abs(n))}\n  return acc * exp_f32(${f32Lit(e - n)} * log_f32(x));\n}`,
    lib: ['exp_f32', 'log_f32'],
  };
}


const UNARY: Readonly<Record<string, Fn1>> = {
  neg: { expr: (x) => `-${x}` },
  exp: { expr: (x) => `exp_f32(${x})`, lib: ['exp_f32'] },
  log: { expr: (x) => `log_f32(${x})`, lib: ['log_f32'] },
  sqrt: { expr: (x) => `select(sqrt(${x}), bitcast<f32>(NAN_U), ${x} < 0.0f)` },
  rsqrt: { expr: (x) => `select(1.0f / sqrt(${x}), bitcast<f32>(NAN_U), ${x} < 0.0f)` },
  tanh: { expr: (x) => `tanh_f32(${x})`, lib: ['tanh_f32'] },
  sigmoid: { expr: (x) => `sigmoid_f32(${x})`, lib: ['sigmoid_f32'] },
  // NaN stays NaN (NVIDIA's compiler turns a plain select(x, 0, x < 0) into a max that drops NaN).
  relu: { expr: (x) => `select(select(${x}, 0.0f, ${x} < 0.0f), ${x}, is_nan(${x}))`, lib: ['is_nan'] },
  gelu: { expr: (x) => `(${x} * normcdf_f32(${x}))`, lib: ['normcdf_f32'] },
  erf: { expr: (x) => `erf_f32(${x})`, lib: ['erf_f32'] },
  step: { expr: (x) => `select(0.0f, 1.0f, ${x} > 0.0f)` },
};

const unaryGen =
  (op: string): KernelGen =>
  (node, inputs, target) => {
    const f = UNARY[op];
    return flatKernel(node, inputs, target, `ew_${op}_f32`, `    out_0[i] = ${f.expr('in_0[i]')};`, { lib: f.lib ?? [] });
  };

const powGen: KernelGen = (node, inputs, target) => {
  const e = attrNum(node.attrs, 'exponent');
  const f = powFn(e);
  return flatKernel(node, inputs, target, 'ew_pow_f32', '    out_0[i] = pow_f(in_0[i]);', { lib: f.lib, helpers: f.code });
};

/** The conversion of `cast` on an f32 expression (integers truncate, bool is x != 0, f16/bf16 round), as an f32. */
function castExpr(dtype: DType, x: string): { expr: string; lib: readonly string[] } {
  switch (dtype) {
    case 'f32':
      return { expr: x, lib: [] };
    case 'i32':
    case 'i64':
      return { expr: `trunc(${x})`, lib: [] };
    case 'bool':
      return { expr: `select(0.0f, 1.0f, (bitcast<u32>(${x}) & 0x7fffffffu) != 0u)`, lib: [] };
    case 'f16':
      return { expr: `cast_f16(${x})`, lib: ['cast_f16'] };
    case 'bf16':
      return { expr: `cast_bf16(${x})`, lib: ['cast_bf16'] };
  }
}

const castGen: KernelGen = (node, inputs, target) => {
  const c = castExpr(node.dtype, 'in_0[i]');
  return flatKernel(node, inputs, target, `ew_cast_${node.dtype}_f32`, `    out_0[i] = ${c.expr};`, { lib: c.lib });
};

/**
 * Inverted dropout with the reference's counter-based mask: element i is kept when
 * hash32(i ^ hash32(seed)) >= ceil(p·2³²) (the reference's hash / 2³² >= p, exactly), and scaled by 1/(1-p).
 */
const dropoutGen: KernelGen = (node, inputs, target) => {
  const p = attrNum(node.attrs, 'p');
  if (p === 0) return flatKernel(node, inputs, target, 'ew_dropout_identity_f32', '    out_0[i] = in_0[i];');
  const seed = attrNum(node.attrs, 'seed', 0) >>> 0;
  const hs = hash32(seed);
  const threshold = Math.ceil(p * 4294967296);
  if (threshold > 0xffffffff) return flatKernel(node, inputs, target, 'ew_dropout_none_f32', '    out_0[i] = 0.0f;');
  const scale = f32Lit(1 / (1 - p));
  // The seed travels in the dispatch where it fits (kernels/grid-param.ts), so dropouts that differ only in it
  // (one per unrolled step) share a shader; it is baked in otherwise.
  const n = numel(node.shape);
  const wg = flatWorkgroup(target);
  const grid = gridDispatch(n, seed, wg, target);
  const seedCode = grid ? 'k' : u32Lit(seed);
  // With a salt input (an integer-valued f32 scalar): the seed is seed ^ hash32(salt), as saltedSeed.
  const key = inputs.length > 1 ? `hash32(${seedCode} ^ hash32(u32(in_1[0])))` : grid ? 'hash32(k)' : u32Lit(hs);
  const body = `    let h = hash32(i ^ ${key});
    out_0[i] = select(0.0f, in_0[i] * ${scale}, h >= ${u32Lit(threshold)});`;
  const hash = `// Wellons' lowbias32, as reference-core.ts's hash32.
fn hash32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}`;
  if (grid) return makeKernel(node, inputs, target, { name: 'ew_dropout_f32', body: `${hash}\n\n${gridMain(wg, n, 'the seed', body)}`, workgroupSize: [wg, 1, 1], dispatch: grid });
  return flatKernel(node, inputs, target, 'ew_dropout_f32', body, { helpers: hash });
};

// ---------------------------------------------------------------------------------------------- binary ops

const BINARY: Readonly<Record<string, { readonly expr: (a: string, b: string) => string; readonly lib?: readonly string[] }>> = {
  add: { expr: (a, b) => `${a} + ${b}` },
  sub: { expr: (a, b) => `${a} - ${b}` },
  mul: { expr: (a, b) => `${a} * ${b}` },
  div: { expr: (a, b) => `${a} / ${b}` },
  // NaN when either is NaN, as the reference (WGSL's max leaves NaN unspecified).
  maximum: { expr: (a, b) => `select(select(${b}, ${a}, ${a} > ${b}), bitcast<f32>(NAN_U), is_nan(${a}) || is_nan(${b}))`, lib: ['is_nan'] },
  eq: { expr: (a, b) => `select(0.0f, 1.0f, ${a} == ${b} && !is_nan(${a}))`, lib: ['is_nan'] },
};

const binaryGen =
  (op: string): KernelGen =>
  (node, inputs, target) => {
    const [a, b] = inputs;
    const out = node.shape;
    const f = BINARY[op];
    const offsets = offsetCode(out, [broadcastStrides(a.shape, out), broadcastStrides(b.shape, out)], ['ia', 'ib'], 'i');
    const body = `${offsets}\n    let a = in_0[ia];\n    let b = in_1[ib];\n    out_0[i] = ${f.expr('a', 'b')};`;
    const bcast = a.shape.join() !== out.join() || b.shape.join() !== out.join();
    return flatKernel(node, inputs, target, `ew_${op}${bcast ? '_bcast' : ''}_f32`, body, { lib: f.lib ?? [] });
  };

// ---------------------------------------------------------------------------------------------- leaves

/** `full`: fills the output with the value (f32). */
export const fullGen: KernelGen = (node, inputs, target) =>
  flatKernel(node, inputs, target, 'fill_f32', `    out_0[i] = ${f32Lit(attrNum(node.attrs, 'value'))};`);

// ---------------------------------------------------------------------------------------------- the table

const kernel = kernelRule;

export const ELEMENTWISE_GPU_RULES = {
  neg: kernel(unaryGen('neg')),
  exp: kernel(unaryGen('exp')),
  log: kernel(unaryGen('log')),
  sqrt: kernel(unaryGen('sqrt')),
  rsqrt: kernel(unaryGen('rsqrt')),
  tanh: kernel(unaryGen('tanh')),
  sigmoid: kernel(unaryGen('sigmoid')),
  relu: kernel(unaryGen('relu')),
  gelu: kernel(unaryGen('gelu')),
  erf: kernel(unaryGen('erf')),
  step: kernel(unaryGen('step')),
  pow: kernel(powGen),
  cast: kernel(castGen),
  dropout: kernel(dropoutGen),
  add: kernel(binaryGen('add')),
  sub: kernel(binaryGen('sub')),
  mul: kernel(binaryGen('mul')),
  div: kernel(binaryGen('div')),
  maximum: kernel(binaryGen('maximum')),
  eq: kernel(binaryGen('eq')),
} as const;

/** Exported for the fused-kernel generator: the WGSL expression of a unary / binary elementwise op. */
export function unaryExpr(op: string, x: string): { expr: string; lib: readonly string[] } | undefined {
  const f = UNARY[op];
  return f ? { expr: f.expr(x), lib: f.lib ?? [] } : undefined;
}
export function binaryExpr(op: string, a: string, b: string): { expr: string; lib: readonly string[] } | undefined {
  const f = BINARY[op];
  return f ? { expr: f.expr(a, b), lib: f.lib ?? [] } : undefined;
}
/**
 * The WGSL expression of an elementwise node on its arguments' expressions, or undefined when it cannot be
 * inlined (a fused kernel computes it): the unary and binary ops, and `cast` by its dtype.
 */
export function inlineExpr(node: Pick<Node, 'op' | 'dtype'>, args: readonly string[]): { expr: string; lib: readonly string[] } | undefined {
  if (node.op === 'cast') return args.length === 1 ? castExpr(node.dtype, args[0]) : undefined;
  if (args.length === 1) return unaryExpr(node.op, args[0]);
  return args.length === 2 ? binaryExpr(node.op, args[0], args[1]) : undefined;
}
/** The WGSL of library functions by name (with dependencies), for generators that build modules themselves. */
export function wgslLib(names: readonly string[]): string {
  return libCode(names);
}
