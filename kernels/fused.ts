// The fused elementwise kernel: one invocation per element of the group's shape computes every member as a
// WGSL `let` (in topological order) from the group's external inputs, read with broadcasting, and writes
// only the root. Scalar constants are inlined. The member code is shared with the matmul epilogue
// (kernels/matmul-epilogue.ts), which evaluates the same lets on the matmul's accumulator.
//
// Bit for bit the unfused kernels: every value the unfused path would store (a member that another member
// reads) or read from memory (a constant) passes through `kept`, an identity the shader compiler cannot see
// through. Without it, lavapipe's optimiser reassociated `(v - e) - 0.125` as `v - (e + 0.125)`, contracted
// multiply-adds and folded `x * 0`, each an ulp or a sign away from the per-node kernels.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import { isScalarConst, type FusionGroup } from '../compiler/codegen/fuse.js';
import type { Graph, Node } from '../compiler/ir/graph.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { broadcastStrides, f32Lit, flatKernel, inlineExpr, offsetCode, u32Lit } from './elementwise.js';
import { viewCode, type ViewPlan } from './view.js';

/** The nodes a group reads from memory, in first-use order: members' inputs that are not members, constants or `skip`. */
export function groupExternals(graph: Graph, group: FusionGroup, skip?: number): number[] {
  const members = new Set(group.members);
  const externals: number[] = [];
  for (const m of group.members) {
    for (const i of graph.node(m).inputs) {
      if (!members.has(i) && i !== skip && !externals.includes(i) && !isScalarConst(graph.node(i))) externals.push(i);
    }
  }
  return externals;
}

/**
 * WGSL helper: x, through an integer identity the compiler cannot fold (out_0 is never empty where a kernel
 * stores), so it cannot reassociate, contract or fold arithmetic across it.
 */
export const KEPT_FN = 'fn kept(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ u32(arrayLength(&out_0) == 0u)); }';

export interface MemberCode {
  /** `let v<k> = …;` per member, k its position in the group; the root's value is `value`. Uses KEPT_FN. */
  readonly lines: string[];
  readonly value: string;
  /** Library functions the expressions call. */
  readonly lib: string[];
  /** The members' ops, in order (for the kernel name). */
  readonly ops: string[];
}

/**
 * WGSL for the group's members, where `external(id)` names the value of a node read from outside. Values are
 * named by their position in the group, not their node ids, so the same computation at another place in the
 * graph (an unrolled loop's next step) is the same WGSL and compiles to the same pipeline.
 */
export function memberCode(graph: Graph, group: FusionGroup, external: (id: number) => string): MemberCode {
  const local = new Map(group.members.map((m, k) => [m, k]));
  const ref = (id: number): string => {
    const n = graph.node(id);
    if (local.has(id)) return `v${local.get(id)}`;
    if (isScalarConst(n)) return `kept(${f32Lit(attrNum(n.attrs, 'value'))})`;
    return external(id);
  };
  const lines: string[] = [];
  const lib = new Set<string>();
  const ops: string[] = [];
  for (const m of group.members) {
    const n = graph.node(m);
    // x - x, x / x, x == x: the second read through kept(), so the compiler cannot fold them (to 0, 1, true) as if
    // x were never NaN or infinite; IEEE, the unfused kernels and the reference give NaN, NaN, false there.
    const operands = n.inputs.map((i, k) => (k > 0 && n.inputs.slice(0, k).includes(i) ? `kept(${ref(i)})` : ref(i)));
    const e = inlineExpr(n, operands);
    if (!e) throw new Error(`internal: ${n.op} cannot be fused`);
    e.lib.forEach((l) => lib.add(l));
    lines.push(`let v${local.get(m)} = ${m === group.root ? e.expr : `kept(${e.expr})`};`);
    ops.push(n.op === 'cast' ? `cast_${n.dtype}` : n.op);
  }
  return { lines, value: `v${local.get(group.root)}`, lib: [...lib], ops };
}

/** How a kernel reads a group's externals: the storage it binds and the WGSL giving each external's value. */
export interface ExternalReads {
  /** The nodes bound, in order: plain externals and the leaves of viewed ones, each once. */
  readonly bindings: number[];
  /** Module-scope WGSL: the views' functions. */
  readonly helpers: string;
  /** The IR nodes the views compute in place. */
  readonly inlined: number[];
  /** Statements declaring `x<k>` (external k's value, broadcast) at the flat index `index` of `shape`. Uses KEPT_FN. */
  lines(index: string): string[];
}

/**
 * Reads of `externals` into a value of `shape`, bound from `in_<first>` on: each plain external at its
 * broadcast offset, each external in `views` through its view (kernels/view.ts) at its broadcast coordinates.
 */
export function externalReads(graph: Graph, shape: readonly number[], externals: readonly number[], views: ReadonlyMap<number, ViewPlan> = new Map(), first = 0): ExternalReads {
  const bindings: number[] = [];
  for (const e of externals) for (const b of views.get(e)?.leaves ?? [e]) if (!bindings.includes(b)) bindings.push(b);
  const binding = (id: number) => `in_${first + bindings.indexOf(id)}`;
  const viewed = externals.map((e, k) => (views.has(e) ? viewCode(graph, views.get(e)!, `ev${k}_`, binding) : undefined));
  const plain = externals.flatMap((e, k) => (views.has(e) ? [] : [k]));
  const r = shape.length;
  return {
    bindings,
    helpers: viewed.flatMap((v) => (v ? [v.helpers] : [])).join('\n\n'),
    inlined: [...new Set(externals.flatMap((e) => views.get(e)?.inlined ?? []))],
    lines: (index) => {
      const strides = plain.map((k) => broadcastStrides(graph.node(externals[k]).shape, shape));
      const out = plain.length ? offsetCode(shape, strides, plain.map((k) => `eo${k}`), index, '').split('\n') : [];
      out.push(...plain.map((k) => `let x${k} = ${binding(externals[k])}[eo${k}];`));
      if (viewed.some(Boolean)) {
        // The root's coordinates, then each view's: aligned right, size-1 dims read at 0 (broadcast).
        out.push(`var vrem = ${index};`);
        for (let d = r - 1; d >= 0; d--) out.push(d > 0 ? `let rc${d} = vrem % ${u32Lit(shape[d])}; vrem = vrem / ${u32Lit(shape[d])};` : `let rc0 = vrem;`);
        viewed.forEach((v, k) => {
          if (!v) return;
          const es = graph.node(externals[k]).shape;
          // Through kept(): a view may be a constant (a full, expanded or padded) that the shader compiler would
          // otherwise fold into the arithmetic, e.g. x / 0 into 0 where IEEE and the unfused kernels give ±inf.
          out.push(`let x${k} = kept(${v.call(es.map((n, d) => (n === 1 ? '0u' : `rc${d + r - es.length}`)))});`);
        });
      }
      return out;
    },
  };
}

export function fusedKernel(graph: Graph, group: FusionGroup, target: Target, views?: ReadonlyMap<number, ViewPlan>): Kernel {
  const root = graph.node(group.root);
  const externals = groupExternals(graph, group);
  const reads = externalReads(graph, root.shape, externals, views);
  const code = memberCode(graph, group, (id) => `x${externals.indexOf(id)}`);
  const lines = [...reads.lines('i'), ...code.lines].map((l) => `    ${l}`);
  lines.push(`    out_0[i] = ${code.value};`);
  // The kernel reads the externals and writes the root: a node with those inputs stands for the group.
  const standIn: Node = { ...root, inputs: reads.bindings };
  const helpers = [KEPT_FN, reads.helpers].filter(Boolean).join('\n\n');
  const k = flatKernel(standIn, reads.bindings.map((b) => graph.node(b)), target, `fused_${code.ops.join('_')}_f32`.slice(0, 96), lines.join('\n'), { lib: code.lib, helpers });
  return { ...k, nodes: [...reads.inlined, ...group.members] };
}
