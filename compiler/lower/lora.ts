// LoRA placement as a graph transformation. Each target parameter W [out, in] is consumed by a projection
// `matmul(x, permute(W, [1, 0]))` (how `linear` lowers). That projection gains the low-rank branch of
// loralib's MergedLinear: for each selected row range g, (x·A_gᵀ)·B_gᵀ·(alpha / r) placed in g's rows,
// zeros elsewhere; ΔW is never materialised. A is `<param-without-.weight>.lora_A` [r·groups, in] and B
// `.lora_B` [rows, r], groups stacked in row order (for q, v of qkv: A = [A_q; A_v], B = [B_q; B_v]).
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

/** Returns a new graph with the LoRA branches added (and their parameters declared). */
export function applyLora(graph: Graph, targets: readonly LoraTarget[]): { graph: Graph; lora: LoraParams[] } {
  const byPath = new Map(targets.map((t) => [t.param, t]));
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
  const loraNodes = new Map<string, { a: number; b: number }>();
  const lora: LoraParams[] = [];
  const loraFor = (t: LoraTarget) => {
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
    if (t && n.op === 'matmul') remap.set(n.id, b.add('add', [id, branch(b, remap.get(n.inputs[0])!, t, loraFor(t))]));
  }
  for (const o of graph.outputs) b.output(o.name, remap.get(o.node)!);
  return { graph: b.graph, lora };
}

/** The low-rank branch for one projection input x [..., in] → [..., out]. */
function branch(b: Builder, x: number, t: LoraTarget, p: { a: number; b: number }): number {
  const rank = t.rank;
  const scaling = t.alpha / rank;
  const total = t.param_rows;
  const lead = b.shape(x).slice(0, -1);
  const parts: number[] = [];
  let bRow = 0;
  let cursor = 0;
  t.rows.forEach(([start, end], g) => {
    const aG = b.add('slice', [p.a], { dim: 0, start: g * rank, end: (g + 1) * rank, step: 1 });
    const bG = b.add('slice', [p.b], { dim: 0, start: bRow, end: bRow + (end - start), step: 1 });
    bRow += end - start;
    const u = b.add('matmul', [x, b.add('permute', [aG], { dims: [1, 0] })]);
    const v = b.add('matmul', [u, b.add('permute', [bG], { dims: [1, 0] })]);
    if (start > cursor) parts.push(b.full(0, [...lead, start - cursor]));
    parts.push(v);
    cursor = end;
  });
  if (total > cursor) parts.push(b.full(0, [...lead, total - cursor]));
  const delta = parts.length === 1 ? parts[0] : b.add('concat', parts, { dim: -1 });
  return b.scale(delta, scaling);
}
