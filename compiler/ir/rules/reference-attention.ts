// The CPU reference (float64) of the ops attention's gradient is made of: attention_lse (the softmax row
// statistics) and attention_grad (the VJP in q, k, v or the logits), written straight from the definitions:
// with s_ij = q_i·k_j·scale + mask_ij, P_ij = e^{s_ij − lse_i}, dP_ij = g_i·v_j and dS_ij = P_ij·(dP_ij − δ_i),
//   dq_i = scale·Σ_j dS_ij·k_j,  dk_j = scale·Σ_i dS_ij·q_i,  dv_j = Σ_i P_ij·g_i,  dlogits_ij = dS_ij.
// lse and δ (= Σ_c g_ic·out_ic) are inputs, so the rule is exactly the op's meaning, whatever computed them.
import type { Attrs, Shape } from '../graph.js';
import type { RefRule, RefTensor } from './reference-types.js';
import { attrNum } from './shape.js';

const size = (shape: Shape): number => shape.reduce((a, b) => a * b, 1);

/** The strides of a mask read as [B, H, Sq, Sk] under broadcasting (0 on broadcast dims). */
function maskStrides(shape: Shape, target: Shape): number[] {
  const st: number[] = [];
  for (let i = shape.length - 1, acc = 1; i >= 0; i--) {
    st[i] = acc;
    acc *= shape[i];
  }
  const lead = target.length - shape.length;
  return target.map((_, i) => (i < lead || shape[i - lead] === 1 ? 0 : st[i - lead]));
}

interface Geometry {
  readonly B: number;
  readonly H: number;
  readonly Sq: number;
  readonly Sk: number;
  readonly D: number;
  readonly scale: number;
  /** The logit s_ij of batch-head bh (q·k·scale + mask). */
  readonly logit: (bh: number, i: number, j: number) => number;
}

function geometry(q: RefTensor, k: RefTensor, mask: RefTensor | undefined, attrs: Attrs): Geometry {
  const [B, H, Sq, D] = q.shape;
  const Sk = k.shape[2];
  const scale = attrNum(attrs, 'scale', 1 / Math.sqrt(D));
  const ms = mask ? maskStrides(mask.shape, [B, H, Sq, Sk]) : undefined;
  const logit = (bh: number, i: number, j: number): number => {
    let s = 0;
    const qo = (bh * Sq + i) * D;
    const ko = (bh * Sk + j) * D;
    for (let t = 0; t < D; t++) s += q.data[qo + t] * k.data[ko + t];
    s *= scale;
    if (mask && ms) s += mask.data[Math.floor(bh / H) * ms[0] + (bh % H) * ms[1] + i * ms[2] + j * ms[3]];
    return s;
  };
  return { B, H, Sq, Sk, D, scale, logit };
}

/** lse_i = log Σ_j e^{s_ij}, computed as m + log Σ e^{s_ij − m} (−∞ for a row masked entirely). */
const attentionLse: RefRule = ([q, k, mask], attrs, out) => {
  const { B, H, Sq, Sk, logit } = geometry(q, k, mask, attrs);
  const data = new Float64Array(size(out.shape));
  const s = new Float64Array(Sk);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Sq; i++) {
      let m = -Infinity;
      for (let j = 0; j < Sk; j++) m = Math.max(m, (s[j] = logit(bh, i, j)));
      // A row masked entirely: log 0 (as torch.logsumexp gives), not the NaN of e^{−∞ − (−∞)}.
      if (m === -Infinity) {
        data[bh * Sq + i] = -Infinity;
        continue;
      }
      let z = 0;
      for (let j = 0; j < Sk; j++) z += Math.exp(s[j] - m);
      data[bh * Sq + i] = m + Math.log(z);
    }
  }
  return { shape: [...out.shape], data };
};

const attentionGrad: RefRule = ([q, k, v, g, lse, delta, mask], attrs, out) => {
  const wrt = attrNum(attrs, 'wrt');
  const { B, H, Sq, Sk, D, scale, logit } = geometry(q, k, mask, attrs);
  const Dv = v.shape[3];
  const data = new Float64Array(size(out.shape));
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Sq; i++) {
      const row = bh * Sq + i;
      for (let j = 0; j < Sk; j++) {
        const p = Math.exp(logit(bh, i, j) - lse.data[row]);
        if (wrt === 2) {
          for (let c = 0; c < Dv; c++) data[(bh * Sk + j) * Dv + c] += p * g.data[row * Dv + c];
          continue;
        }
        let dp = 0;
        for (let c = 0; c < Dv; c++) dp += g.data[row * Dv + c] * v.data[(bh * Sk + j) * Dv + c];
        const ds = p * (dp - delta.data[row]);
        if (wrt === 3) data[row * Sk + j] = ds;
        else if (wrt === 0) for (let t = 0; t < D; t++) data[row * D + t] += scale * ds * k.data[(bh * Sk + j) * D + t];
        else for (let t = 0; t < D; t++) data[(bh * Sk + j) * D + t] += scale * ds * q.data[row * D + t];
      }
    }
  }
  return { shape: [...out.shape], data };
};

export const ATTENTION_REFERENCE = {
  attention_lse: attentionLse,
  attention_grad: attentionGrad,
} as const satisfies Record<string, RefRule>;
