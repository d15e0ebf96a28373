// The gradient rules of every op, merged from the families and checked exhaustive here.
import type { IrOp } from '../ir/ops.js';
import type { GradRule } from './rule-types.js';
import { CORE_GRADS } from './rules-core.js';
import { VISION_GRADS } from './rules-vision.js';

export type { GradCtx, GradRule } from './rule-types.js';

export const GRAD_RULES: { readonly [K in IrOp]: GradRule } = { ...CORE_GRADS, ...VISION_GRADS };
