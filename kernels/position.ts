// DETR's sine position encoding on the GPU: a function of the output index only. The per-channel constants
// (which axis, 1/t_k, sin or cos, the normalisation) are computed on the host with the reference's formula
// and baked in, so the kernel differs from the reference only by f32 rounding and the device's sin/cos.
import type { KernelGen } from '../compiler/codegen/types.js';
import { attrNum } from '../compiler/ir/rules/shape.js';
import { f32Lit, flatKernel, kernelRule, u32Lit } from './elementwise.js';

const sinePositionGen: KernelGen = (node, inputs, target) => {
  const [, C, H, W] = node.shape;
  const F = C / 2;
  const temperature = attrNum(node.attrs, 'temperature', 10000);
  const normalize = node.attrs.normalize === true;
  const inv = Array.from({ length: F }, (_, k) => f32Lit(1 / temperature ** ((2 * Math.floor(k / 2)) / F)));
  const rowScale = normalize ? (2 * Math.PI) / (H + 1e-6) : 1;
  const colScale = normalize ? (2 * Math.PI) / (W + 1e-6) : 1;
  const helpers = `const INV_T = array<f32, ${F}>(${inv.join(', ')});`;
  // x is bound for its shape only; touching it keeps the binding in every pipeline layout.
  const body = `    _ = arrayLength(&in_0);
    let w = i % ${u32Lit(W)};
    let h = (i / ${u32Lit(W)}) % ${u32Lit(H)};
    let c = (i / ${u32Lit(W * H)}) % ${u32Lit(C)};
    let row = c < ${u32Lit(F)};
    let k = select(c - ${u32Lit(F)}, c, row);
    let e = select(f32(w + 1u) * ${f32Lit(colScale)}, f32(h + 1u) * ${f32Lit(rowScale)}, row);
    let a = e * INV_T[k];
    out_0[i] = select(cos(a), sin(a), (k & 1u) == 0u);`;
  return flatKernel(node, inputs, target, 'sine_position_f32', body, { helpers });
};

export const POSITION_GPU_RULES = { sine_position: kernelRule(sinePositionGen) } as const;
