// The CPU reference, one rule per op in float64: the numerical oracle for every backend and pass.
import type { IrOp } from '../ops.js';
import { CORE_REFERENCE } from './reference-core.js';
import type { RefRule } from './reference-types.js';
import { VISION_REFERENCE } from './reference-vision.js';

export type { RefRule, RefTensor } from './reference-types.js';

export const REFERENCE: { readonly [K in IrOp]: RefRule } = { ...CORE_REFERENCE, ...VISION_REFERENCE };
