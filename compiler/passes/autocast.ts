// Mixed precision as PyTorch's autocast does it for the ops that dominate: the operands and the result of every
// matmul, attention and convolution are rounded to f16 (or bf16), products are accumulated in f32, and
// everything else (softmax and layernorm statistics, losses, the optimizer's master weights) stays f32. Run
// before autodiff: the gradient of a rounding is a rounding of the gradient, so gradients that flow through
// these ops are f16 values too — small ones underflow and large ones overflow to inf without loss scaling,
// exactly the behaviour dynamic loss scaling exists for. (Values are rounded, then held in f32 buffers: this
// gives AMP's numerics; f16 storage, for memory and speed, is the kernels' business.)
import type { DType } from '../ir/graph.js';
import type { Candidate, Pass, RewriteCtx, Rule } from './engine.js';

const CASTED_OPS = new Set(['matmul', 'attention', 'conv2d']);

/** Whether node `id` already holds half values as f32: a cast to f32 of a half value (a round trip, a half parameter). */
function isRounded(ctx: RewriteCtx, id: number, half: DType): boolean {
  const n = ctx.node(id);
  return n.op === 'cast' && n.dtype === 'f32' && ctx.node(n.inputs[0]).dtype === half;
}

const round = (ctx: RewriteCtx, id: number, half: DType): number => ctx.add('cast', [ctx.add('cast', [id], { dtype: half })], { dtype: 'f32' });

/** Movement ops: rounding commutes with them, so it is done below them, on the (smaller, untransposed) source. */
const MOVES = new Set(['permute', 'reshape', 'expand', 'slice']);

/** Whether `id` holds half values: rounded, or moved from rounded values. */
function holdsHalf(ctx: RewriteCtx, id: number, half: DType): boolean {
  const n = ctx.node(id);
  return n.dtype !== 'f32' || isRounded(ctx, id, half) || (MOVES.has(n.op) && holdsHalf(ctx, n.inputs[0], half));
}

/**
 * `id` rounded to half: the rounding goes below movement ops, so a weight read as Wᵀ is rounded as W and the
 * matmul still reads it transposed in place (no transposed copy), and a half parameter is not rounded again.
 */
function roundOperand(ctx: RewriteCtx, id: number, half: DType): number {
  if (holdsHalf(ctx, id, half)) return id;
  const n = ctx.node(id);
  if (MOVES.has(n.op)) return ctx.add(n.op, [roundOperand(ctx, n.inputs[0], half)], n.attrs);
  return round(ctx, id, half);
}

function rule(half: DType): Rule {
  return (n: Candidate, ctx) => {
    if (!CASTED_OPS.has(n.op) || n.dtype !== 'f32') return undefined;
    // The mask of attention is added to f32 scores: it is not rounded.
    const operands = n.op === 'attention' ? n.inputs.slice(0, 3) : n.inputs;
    if (operands.every((i) => holdsHalf(ctx, i, half))) return undefined;
    const inputs = n.inputs.map((i, k) => (k < operands.length ? roundOperand(ctx, i, half) : i));
    return round(ctx, ctx.add(n.op, inputs, n.attrs), half);
  };
}

export function autocastPass(half: 'f16' | 'bf16'): Pass {
  return {
    name: `autocast_${half}`,
    doc: `matmul, attention and conv2d operands and results rounded to ${half} (f32 accumulation), the rest f32`,
    rules: { [`round matmul/attention/conv2d operands and results to ${half}`]: rule(half) },
  };
}

