// The GPU rule of every IR op: a WGSL kernel generator (unfused, one kernel per node), an alias of the input's
// buffer (reshape), or nothing (the leaves input and param, whose buffers the runtime fills). Typed
// `{ [K in IrOp]: GpuRule }`, so an op without a GPU rule does not compile.
import type { GpuRule } from '../compiler/codegen/types.js';
import type { IrOp } from '../compiler/ir/ops.js';
import type { CoreOp } from '../compiler/ir/rules/families.js';
import { ATTENTION_GPU_RULES } from './attention.js';
import { ELEMENTWISE_GPU_RULES, fullGen, kernelRule } from './elementwise.js';
import { MATMUL_GPU_RULES } from './matmul.js';
import { MOVEMENT_GPU_RULES } from './movement.js';
import { REDUCE_GPU_RULES } from './reduce.js';
import { ROW_GPU_RULES } from './row.js';
import { POSITION_GPU_RULES } from './position.js';
import { VISION_GPU_RULES } from './vision.js';

export const CORE_GPU_RULES: { readonly [K in CoreOp]: GpuRule } = {
  input: { kind: 'leaf' },
  param: { kind: 'leaf' },
  full: kernelRule(fullGen),
  ...ELEMENTWISE_GPU_RULES,
  ...REDUCE_GPU_RULES,
  ...ROW_GPU_RULES,
  ...MATMUL_GPU_RULES,
  ...MOVEMENT_GPU_RULES,
  ...ATTENTION_GPU_RULES,
  ...POSITION_GPU_RULES,
};

export const GPU_RULES: { readonly [K in IrOp]: GpuRule } = { ...CORE_GPU_RULES, ...VISION_GPU_RULES };
