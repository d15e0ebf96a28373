// Op families, so the rule tables can live in one file per family and still be checked exhaustive
// where they are merged.
import type { IrOp } from '../ops.js';

export const VISION_OPS = [
  'conv2d', 'conv2d_grad_input', 'conv2d_grad_weight', 'resize', 'resize_grad',
  'adaptive_avg_pool2d', 'adaptive_avg_pool2d_grad', 'msdeform_attn', 'msdeform_attn_grad',
] as const satisfies readonly IrOp[];

export type VisionOp = (typeof VISION_OPS)[number];
export type CoreOp = Exclude<IrOp, VisionOp>;
