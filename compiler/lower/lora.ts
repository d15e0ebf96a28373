// LoRA placement as a graph transformation. Each target parameter W [out, in] is consumed by a projection
// `matmul(x, permute(W, [1, 0]))` (how `linear` lowers). That projection gains the low-rank branch of
// loralib's MergedLinear: for each selected row range g, (x·A_gᵀ)·B_gᵀ·(alpha / r) placed in g's rows,
// zeros elsewhere. A is `<param-without-.weight>.lora_A` [r·groups, in] and B `.lora_B` [rows, r], groups
// stacked in row order (for q, v of qkv: A = [A_q; A_v], B = [B_q; B_v]).
//
// The branch is two matmuls whatever the number of groups, so that the GPU backend runs it in few kernels:
//   u = x·Aᵀ                      [N, r·groups]   all groups at once, x viewed as rows [N, in]
//   y = x·Wᵀ + (u·Bblkᵀ)·scaling  [..., out]      this add (and the bias add after it) run in the base
//                                                  matmul's kernel, as its epilogue
// Bblk [out, r·groups] is B block-structured: B_g in g's rows and g's r columns, zeros elsewhere. It is built
// from the parameter alone (a pad per group, a concat, a transpose: parameter-sized kernels). Each output
// of u·Bblkᵀ sums the same products as (x·A_gᵀ)·B_gᵀ plus exact zeros, so values are those of the per-group
// formula, bit for bit. ΔW = B·A [out, in] is never materialised, forward or backward.
import { Builder } from '../ir/builder.js';
import { Graph, type Node } from '../ir/graph.js';
import type { LoraTarget } from '../resolve/pipeline.js';
import { LowerError } from './ops.js';

export interface LoraParams {
  readonly target: string;
  readonly a: string;
  readonly b: string;
}

export const loraNames = (param: string): { a: string; b: string } => {
  const base = param.endsWith('.weight') ? param.slice(0, -'.weight'.length) : param;
  return { a: `${base}.lora_A`, b: `${base}.lora_B` };
};

/** A target's LoRA as graph values: the parameters and the transposed factors the branch multiplies by. */
interface LoraValues {
  readonly a: number;
  readonly b: number;
  /** Aᵀ [in, r·groups] and Bblkᵀ [r·groups, out], built on first use. */
  factors?: { readonly aT: number; readonly bBlockT: number };
}

/** Returns a new graph with the LoRA branches added (and their parameters declared). */
export function applyLora(graph: Graph, targets: readonly LoraTarget[]): { graph: Graph; lora: LoraParams[] } {
  const byPath = new Map(targets.map((t) => [t.param, t]));
  for (const t of targets) checkRows(t);
  const paramOf = new Map<number, LoraTarget>();
  for (const p of graph.params) {
    const t = byPath.get(p.name);
    if (t) paramOf.set(p.node, t);
  }
  const missing = targets.filter((t) => !graph.params.some((p) => p.name === t.param));
  if (missing.length) throw new LowerError(`LoRA targets not in this graph: ${missing.map((t) => t.param).join(', ')}`);

  // Which permute nodes are Wᵀ of a target, and check every use of a target is such a projection.
  const transposeOf = new Map<number, LoraTarget>();
  for (const n of graph.nodes) {
    for (const [k, i] of n.inputs.entries()) {
      const t = paramOf.get(i);
      if (!t) continue;
      const isT = n.op === 'permute' && JSON.stringify(n.attrs.dims) === '[1,0]';
      if (!isT) throw new LowerError(`LoRA target '${t.param}' is used by ${n.op} (input ${k}), not as a linear projection's weight`);
      transposeOf.set(n.id, t);
    }
  }

  const b = new Builder(new Graph());
  const remap = new Map<number, number>();
  const loraNodes = new Map<string, LoraValues>();
  const lora: LoraParams[] = [];
  const loraFor = (t: LoraTarget): LoraValues => {
    let got = loraNodes.get(t.param);
    if (!got) {
      const names = loraNames(t.param);
      got = { a: b.param(names.a, t.lora_A), b: b.param(names.b, t.lora_B) };
      loraNodes.set(t.param, got);
      lora.push({ target: t.param, ...names });
    }
    return got;
  };
  const copy = (n: Node): number => {
    if (n.op === 'input') return b.input(String(n.attrs.name), n.shape, n.dtype);
    if (n.op === 'param') {
      const id = b.param(String(n.attrs.path), n.shape, n.dtype);
      const t = paramOf.get(n.id);
      if (t) loraFor(t);
      return id;
    }
    return b.add(n.op, n.inputs.map((i) => remap.get(i)!), n.attrs);
  };
  for (const n of graph.nodes) {
    const id = copy(n);
    remap.set(n.id, id);
    const t = n.op === 'matmul' ? transposeOf.get(n.inputs[1]) : undefined;
    if (t) remap.set(n.id, withBranch(b, id, remap.get(n.inputs[0])!, t, loraFor(t)));
  }
  for (const o of graph.outputs) b.output(o.name, remap.get(o.node)!);
  return { graph: b.graph, lora };
}

/** Row ranges must be sorted, disjoint and inside the parameter (resolve guarantees it; a bad target says so here). */
function checkRows(t: LoraTarget): void {
  let cursor = 0;
  for (const [start, end] of t.rows) {
    if (start < cursor || end <= start || end > t.param_rows) {
      throw new LowerError(`LoRA target '${t.param}': row ranges ${JSON.stringify(t.rows)} are not sorted, disjoint ranges inside its ${t.param_rows} rows`);
    }
    cursor = end;
  }
  const selected = t.rows.reduce((n, [s, e]) => n + e - s, 0);
  if (t.lora_A[0] !== t.rank * t.rows.length || t.lora_B[0] !== selected || t.lora_B[1] !== t.rank) {
    throw new LowerError(`LoRA target '${t.param}': lora_A ${JSON.stringify(t.lora_A)} and lora_B ${JSON.stringify(t.lora_B)} do not fit rank ${t.rank} on ${t.rows.length} row range(s) of ${selected} rows`);
  }
}

/**
 * base = x·Wᵀ (already built) plus the low-rank branch, base + (x·Aᵀ·Bblkᵀ)·scaling. The branch runs on x
 * viewed as rows [N, in] (a reshape shares its buffer): the gradients of A and B are then single matmuls, not
 * batched ones summed over the batch. Its result, viewed back, is added to the base matmul, whose kernel
 * computes that add (and the bias add after it) as its epilogue.
 *
 * loralib scales the product. When scaling is a power of two, scaling u instead gives the same value bit for
 * bit (every product and partial sum is scaled exactly), and costs no kernel in either direction: the scale
 * runs in the x·Aᵀ matmul, and its gradient in the matmul that computes du.
 */
function withBranch(b: Builder, base: number, x: number, t: LoraTarget, p: LoraValues): number {
  p.factors ??= { aT: b.add('permute', [p.a], { dims: [1, 0] }), bBlockT: blockTransposed(b, p.b, t) };
  const scaling = t.alpha / t.rank;
  const exact = Number.isInteger(Math.log2(Math.abs(scaling)));
  const xs = b.shape(x);
  const rows = b.add('reshape', [x], { shape: [-1, xs[xs.length - 1]] });
  const u = b.add('matmul', [rows, p.factors.aT]);
  const v = b.add('matmul', [exact ? b.scale(u, scaling) : u, p.factors.bBlockT]);
  const branch = b.add('reshape', [v], { shape: [...xs.slice(0, -1), t.param_rows] });
  return b.add('add', [base, exact ? branch : b.scale(branch, scaling)]);
}

/**
 * Bblkᵀ [r·groups, out] from B [rows, r]: per group one pad that crops B to the group's rows and widens it to
 * r·groups columns (B_g in columns g·r ..< (g+1)·r); the rows before the first group and after the last come
 * from the same pads, the rows between groups are zeros; the pieces are concatenated in row order.
 */
function blockTransposed(b: Builder, bParam: number, t: LoraTarget): number {
  const r = t.rank;
  const groups = t.rows.length;
  const rowsB = t.lora_B[0];
  const pieces: number[] = [];
  let bRow = 0;
  t.rows.forEach(([start, end], g) => {
    const len = end - start;
    const before = g === 0 ? start : -bRow; // only the first group has no B rows before it
    const after = g === groups - 1 ? t.param_rows - end : -(rowsB - bRow - len);
    if (g > 0 && start > t.rows[g - 1][1]) pieces.push(b.full(0, [start - t.rows[g - 1][1], r * groups]));
    const pads: [number, number][] = [
      [before, after],
      [g * r, (groups - 1 - g) * r],
    ];
    pieces.push(pads.every(([lo, hi]) => lo === 0 && hi === 0) ? bParam : b.add('pad', [bParam], { pads, value: 0 }));
    bRow += len;
  });
  const block = pieces.length === 1 ? pieces[0] : b.add('concat', pieces, { dim: 0 });
  return b.add('permute', [block], { dims: [1, 0] });
}
