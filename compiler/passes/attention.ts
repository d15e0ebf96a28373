// Recognising scaled-dot-product attention written out as ops — softmax(q·kᵀ·scale [+ mask])·v — and replacing
// it with the `attention` op, whose kernels (flash attention, forward and backward) never hold the S x S scores.
// A model can then write attention either way. Run before autodiff, so the backward is attention's too.
//
// Matched: matmul(softmax(L, dim: last), v) where L is s, s·c, c·s, s/c (c a scalar constant), optionally plus a
// mask, and s = matmul(q, permute(k, last two dims swapped)); q, k, v of rank 3 ([B, S, D], one head: reshaped
// to [B, 1, S, D] and back) or 4 ([B, H, S, D]) with equal leading dims. A softmax with other consumers is
// still computed for them; the rewrite is value-preserving either way.
import type { Node } from '../ir/graph.js';
import { attrNum } from '../ir/rules/shape.js';
import type { Candidate, Pass, RewriteCtx, Rule } from './engine.js';

const isScalarConst = (n: Node) => n.op === 'full' && n.shape.reduce((a, b) => a * b, 1) === 1;

const lastDim = (n: Node): boolean => {
  const d = attrNum(n.attrs, 'dim', -1);
  return d === -1 || d === n.shape.length - 1;
};

/** `permute(k, ...)` that swaps exactly the last two dims: returns k. */
function transposedOf(n: Node): number | undefined {
  if (n.op !== 'permute') return undefined;
  const dims = n.attrs.dims as number[];
  const r = dims.length;
  const swapsLast = dims.every((d, i) => (i < r - 2 ? d === i : i === r - 2 ? d === r - 1 : d === r - 2));
  return r >= 3 && swapsLast ? n.inputs[0] : undefined;
}

/** L = s·c | c·s | s/c | s with s = q·kᵀ: returns q, k and the scale. */
function scoresOf(id: number, ctx: RewriteCtx): { q: number; k: number; scale: number } | undefined {
  const n = ctx.node(id);
  let s = n;
  let scale = 1;
  if (n.op === 'mul' || n.op === 'div') {
    const [a, b] = n.inputs.map((i) => ctx.node(i));
    if (isScalarConst(b)) (s = a), (scale = n.op === 'mul' ? attrNum(b.attrs, 'value') : 1 / attrNum(b.attrs, 'value'));
    else if (n.op === 'mul' && isScalarConst(a)) (s = b), (scale = attrNum(a.attrs, 'value'));
    else return undefined;
  }
  if (s.op !== 'matmul') return undefined;
  const k = transposedOf(ctx.node(s.inputs[1]));
  return k === undefined || !Number.isFinite(scale) ? undefined : { q: s.inputs[0], k, scale };
}

const sdpa: Rule = (n: Candidate, ctx) => {
  if (n.op !== 'matmul') return undefined;
  const p = ctx.node(n.inputs[0]);
  if (p.op !== 'softmax' || !lastDim(p)) return undefined;
  const v = n.inputs[1];
  let logits = p.inputs[0];
  let mask: number | undefined;
  const l = ctx.node(logits);
  if (l.op === 'add') {
    const found = scoresOf(l.inputs[0], ctx) ? 0 : scoresOf(l.inputs[1], ctx) ? 1 : -1;
    if (found < 0) return undefined;
    logits = l.inputs[found];
    mask = l.inputs[1 - found];
  }
  const sc = scoresOf(logits, ctx);
  if (!sc) return undefined;
  const [qs, ks, vs] = [sc.q, sc.k, v].map((i) => ctx.node(i).shape);
  const rank = qs.length;
  if ((rank !== 3 && rank !== 4) || ks.length !== rank || vs.length !== rank) return undefined;
  const lead = (s: readonly number[]) => s.slice(0, -2).join();
  if (lead(qs) !== lead(ks) || lead(ks) !== lead(vs)) return undefined;
  if (mask !== undefined && ctx.node(mask).shape.length > rank) return undefined;
  if (rank === 4) return ctx.add('attention', mask === undefined ? [sc.q, sc.k, v] : [sc.q, sc.k, v, mask], { scale: sc.scale });
  // One head: [B, S, D] → [B, 1, S, D] and back.
  const up = (id: number) => {
    const s = ctx.node(id).shape;
    return ctx.add('reshape', [id], { shape: [s[0], 1, ...s.slice(1)] });
  };
  const m = mask === undefined ? [] : [ctx.node(mask).shape.length === 3 ? up(mask) : mask];
  const o = ctx.add('attention', [up(sc.q), up(sc.k), up(v), ...m], { scale: sc.scale });
  return ctx.add('reshape', [o], { shape: [...n.shape] });
};

export const attentionPass: Pass = {
  name: 'attention',
  doc: 'softmax(q·kᵀ·scale [+ mask])·v written as ops becomes the attention op (flash kernels, forward and backward)',
  rules: { 'softmax(q·kᵀ·c [+ mask])·v → attention': sdpa },
  dropDead: true,
};
