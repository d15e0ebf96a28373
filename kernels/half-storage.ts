// f16 storage for any generated kernel: a binding whose value is stored as f16 is declared `array<f16>`, every
// read of it is widened to f32 where it is indexed (`f32(in_2[i])`) and every store to it narrows the f32 value
// (`out_0[i] = f16(v)`). Kernels keep computing in f32 (f32 accumulators, softmax statistics), so a value that
// is exactly an f16 (an autocast rounding, compiler/codegen/half.ts) is stored in half the bytes with the same
// results, and an f16 input is read as the f32 it stands for.
//
// This works on the finished WGSL, so every generator that declares a binding as `array<f32>` and indexes it as
// `name[index]` gets it without knowing (makeKernel's `in_<k>` / `out_0`, the vision kernels' `value`, `x`, `dw`).
// A binding whose name the shader also declares as a local (it could be shadowed) keeps f32 storage
// (canStoreHalf says so).
import type { Kernel } from '../compiler/codegen/types.js';

/**
 * The storage binding declared at @binding(i) as `array<f32>` (or, read-only, `array<vec4<f32>>`: a matmul's
 * operands loaded as vec4s), when no local declaration can shadow its name.
 */
function binding(wgsl: string, i: number): { readonly name: string; readonly vec4: boolean } | undefined {
  const m = new RegExp(`@group\\(0\\) @binding\\(${i}\\) var<storage, (read|read_write)> (\\w+): array<(f32|vec4<f32>)>;`).exec(wgsl);
  if (!m) return undefined;
  const vec4 = m[3] !== 'f32';
  if (vec4 && m[1] !== 'read') return undefined;
  const shadowed = new RegExp(`\\b(?:let|var|const)\\s+${m[2]}\\b|\\bfn\\s+${m[2]}\\b|[(,]\\s*${m[2]}\\s*:`).test(wgsl);
  return shadowed ? undefined : { name: m[2], vec4 };
}

/** Whether `kernel` can bind its `binding`-th value as f16 (its WGSL declares and indexes it the standard way). */
export function canStoreHalf(kernel: Kernel, i: number): boolean {
  return binding(kernel.wgsl, i) !== undefined;
}

/** The index of the `]` closing the `[` at `open`. */
function closingBracket(code: string, open: number): number {
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if (code[i] === '[') depth++;
    else if (code[i] === ']' && --depth === 0) return i;
  }
  throw new Error(`internal: unbalanced '[' at offset ${open} of a kernel`);
}

/** The index of the `;` ending the statement that continues at `from` (outside brackets and parentheses). */
function statementEnd(code: string, from: number): number {
  let depth = 0;
  for (let i = from; i < code.length; i++) {
    const c = code[i];
    if (c === '(' || c === '[') depth++;
    else if (c === ')' || c === ']') depth--;
    else if (c === ';' && depth === 0) return i;
  }
  throw new Error(`internal: a store in a kernel has no ';'`);
}

/**
 * `code` with every access to a binding in `half` converted: reads widened to f32 (vec4<f32> for the bindings in
 * `vec4`), stores narrowed to f16.
 */
export function convertAccesses(code: string, half: ReadonlySet<string>, vec4: ReadonlySet<string> = new Set()): string {
  const access = /\b([A-Za-z_]\w*)\[/g;
  let out = '';
  let pos = 0;
  for (;;) {
    access.lastIndex = pos;
    const m = access.exec(code);
    if (!m) break;
    const open = m.index + m[0].length - 1;
    // A struct member (`taps.w[j]`) is not the binding of that name.
    if (!half.has(m[1]) || code[m.index - 1] === '.') {
      out += code.slice(pos, open + 1);
      pos = open + 1;
      continue;
    }
    const close = closingBracket(code, open);
    const target = `${m[1]}[${convertAccesses(code.slice(open + 1, close), half, vec4)}]`;
    const after = code.slice(close + 1);
    const assign = /^\s*=(?!=)\s*/.exec(after);
    if (assign) {
      const rhs = close + 1 + assign[0].length;
      const end = statementEnd(code, rhs);
      if (vec4.has(m[1])) throw new Error(`internal: a store to ${m[1]}, read as vec4s`);
      out += `${code.slice(pos, m.index)}${target} = f16(${convertAccesses(code.slice(rhs, end), half, vec4).trim()})`;
      pos = end;
    } else if (/^\s*[-+*/%&|^]=/.test(after)) {
      throw new Error(`internal: a compound assignment to ${m[1]} cannot be stored as f16`);
    } else {
      out += `${code.slice(pos, m.index)}${vec4.has(m[1]) ? 'vec4<f32>' : 'f32'}(${target})`;
      pos = close + 1;
    }
  }
  return out + code.slice(pos);
}

/**
 * The kernel with the bindings at `bindings` (indices into kernel.bindings) stored as f16: declarations,
 * accesses, `enable f16;`, and `_f16io` appended to its name. Unchanged when `bindings` is empty.
 */
export function halfStorageKernel(kernel: Kernel, bindings: ReadonlySet<number>): Kernel {
  if (bindings.size === 0) return kernel;
  const names = new Set<string>();
  const vec4 = new Set<string>();
  let wgsl = kernel.wgsl;
  for (const i of [...bindings].sort((a, b) => a - b)) {
    const b = binding(wgsl, i);
    if (!b) throw new Error(`internal: kernel ${kernel.name} cannot store binding ${i} as f16`);
    names.add(b.name);
    if (b.vec4) vec4.add(b.name);
    wgsl = b.vec4 ? wgsl.replace(`> ${b.name}: array<vec4<f32>>;`, `> ${b.name}: array<vec4<f16>>;`) : wgsl.replace(`> ${b.name}: array<f32>;`, `> ${b.name}: array<f16>;`);
  }
  // The declarations hold no `name[`: the whole module converts.
  // Kernels that compute in f16 (subgroup-matrix tiles) enable it already.
  const converted = convertAccesses(wgsl, names, vec4);
  return { ...kernel, name: `${kernel.name}_f16io`, wgsl: /^enable f16;$/m.test(converted) ? converted : `enable f16;\n${converted}` };
}
