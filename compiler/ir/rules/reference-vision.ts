// The CPU reference of the vision family in float64, with PyTorch's exact semantics: conv2d and its two
// adjoints, bicubic/bilinear resize (F.interpolate, align_corners=False), adaptive average pooling, and
// multi-scale deformable attention (Deformable-DETR's MSDeformAttn) with its backward.
//
// Resize and pooling are both separable resamplings: each output index along an axis is a weighted sum of
// a few input indices (its taps). The forward op applies the taps along W, then along H (the order PyTorch
// uses); the grad op is the exact adjoint, scattering the same weights back.
import type { Shape } from '../graph.js';
import type { VisionOp } from './families.js';
import type { RefRule, RefTensor } from './reference-types.js';
import { attrInts, attrNum, conv2dGeometry, msDeformGeometry, type Conv2dGeometry, type MsDeformGeometry } from './shape.js';

const fmt = (s: Shape) => `[${s.join(', ')}]`;
const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((s, i) => s === b[i]);
const tensor = (shape: Shape, data: Float64Array): RefTensor => ({ shape: [...shape], data });

// ---------------------------------------------------------------------------------------------------
// conv2d

type ConvGeom = Conv2dGeometry;

type ConvMode = 'forward' | 'grad_input' | 'grad_weight';

/**
 * One traversal of every (output element, kernel tap) pair that reads an in-bounds input element, shared by
 * the three ops so they are adjoint by construction: forward y += x·w, grad_input x += y·w, grad_weight w += y·x.
 */
function convLoop(k: ConvGeom, mode: ConvMode, x: Float64Array, w: Float64Array, y: Float64Array): void {
  const { sh, sw, ph, pw, dh, dw } = k;
  for (let n = 0; n < k.n; n++) {
    for (let o = 0; o < k.o; o++) {
      const c0 = Math.floor(o / k.og) * k.cg;
      for (let oy = 0; oy < k.oh; oy++) {
        for (let ox = 0; ox < k.ow; ox++) {
          const yi = ((n * k.o + o) * k.oh + oy) * k.ow + ox;
          let acc = 0;
          const gy = y[yi];
          for (let ci = 0; ci < k.cg; ci++) {
            const xPlane = (n * k.c + c0 + ci) * k.h;
            const wPlane = (o * k.cg + ci) * k.kh;
            for (let ky = 0; ky < k.kh; ky++) {
              const iy = oy * sh - ph + ky * dh;
              if (iy < 0 || iy >= k.h) continue;
              for (let kx = 0; kx < k.kw; kx++) {
                const ix = ox * sw - pw + kx * dw;
                if (ix < 0 || ix >= k.w) continue;
                const xi = (xPlane + iy) * k.w + ix;
                const wi = (wPlane + ky) * k.kw + kx;
                if (mode === 'forward') acc += x[xi] * w[wi];
                else if (mode === 'grad_input') x[xi] += gy * w[wi];
                else w[wi] += gy * x[xi];
              }
            }
          }
          if (mode === 'forward') y[yi] = acc;
        }
      }
    }
  }
}

const conv2d: RefRule = ([x, w], attrs, out) => {
  const y = new Float64Array(out.shape.reduce((a, b) => a * b, 1));
  convLoop(conv2dGeometry(x.shape, w.shape, out.shape, attrs, 'conv2d'), 'forward', x.data, w.data, y);
  return tensor(out.shape, y);
};

const conv2dGradInput: RefRule = ([g, w], attrs) => {
  const xShape = attrInts(attrs, 'input_shape');
  const dx = new Float64Array(xShape.reduce((a, b) => a * b, 1));
  convLoop(conv2dGeometry(xShape, w.shape, g.shape, attrs, 'conv2d_grad_input'), 'grad_input', dx, w.data, g.data);
  return tensor(xShape, dx);
};

const conv2dGradWeight: RefRule = ([x, g], attrs) => {
  const wShape = attrInts(attrs, 'weight_shape');
  const dw = new Float64Array(wShape.reduce((a, b) => a * b, 1));
  convLoop(conv2dGeometry(x.shape, wShape, g.shape, attrs, 'conv2d_grad_weight'), 'grad_weight', x.data, dw, g.data);
  return tensor(wShape, dw);
};

// ---------------------------------------------------------------------------------------------------
// Separable resampling: resize and adaptive average pooling

/** For each output index i along one axis: input indices index[start[i] .. start[i+1]) with weights. */
interface AxisTaps {
  readonly inSize: number;
  readonly outSize: number;
  readonly start: Int32Array;
  readonly index: Int32Array;
  readonly weight: Float64Array;
}

function axisTaps(inSize: number, outSize: number, taps: (i: number) => [number, number][]): AxisTaps {
  const all = Array.from({ length: outSize }, (_, i) => taps(i));
  const start = new Int32Array(outSize + 1);
  for (let i = 0; i < outSize; i++) start[i + 1] = start[i] + all[i].length;
  const flat = all.flat();
  return { inSize, outSize, start, index: Int32Array.from(flat, ([j]) => j), weight: Float64Array.from(flat, ([, wt]) => wt) };
}

const clampIndex = (i: number, size: number) => Math.min(Math.max(i, 0), size - 1);

/** PyTorch's upsample_bilinear2d along one axis (align_corners=False, no scale factor given). */
function bilinearTaps(inSize: number, outSize: number): AxisTaps {
  const scale = inSize / outSize;
  return axisTaps(inSize, outSize, (i) => {
    const src = Math.max(scale * (i + 0.5) - 0.5, 0);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    const lambda = Math.min(Math.max(src - i0, 0), 1);
    const i1 = i0 < inSize - 1 ? i0 + 1 : i0;
    return [[i0, 1 - lambda], [i1, lambda]];
  });
}

/** Keys' cubic convolution with A = -0.75, PyTorch's upsample_bicubic2d (taps clamped to the border). */
const CUBIC_A = -0.75;
const cubic1 = (x: number) => ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1; // |x| <= 1
const cubic2 = (x: number) => ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A; // 1 < |x| < 2

function bicubicTaps(inSize: number, outSize: number): AxisTaps {
  const scale = inSize / outSize;
  return axisTaps(inSize, outSize, (i) => {
    const src = scale * (i + 0.5) - 0.5;
    const i0 = Math.floor(src);
    const t = src - i0;
    const w = [cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)];
    return w.map((wt, k): [number, number] => [clampIndex(i0 - 1 + k, inSize), wt]);
  });
}

/** PyTorch's adaptive pooling bins: [floor(i·in/out), ceil((i+1)·in/out)), each averaged. */
function adaptivePoolTaps(inSize: number, outSize: number): AxisTaps {
  return axisTaps(inSize, outSize, (i) => {
    const lo = Math.floor((i * inSize) / outSize);
    const hi = Math.ceil(((i + 1) * inSize) / outSize);
    return Array.from({ length: hi - lo }, (_, k): [number, number] => [lo + k, 1 / (hi - lo)]);
  });
}

function resizeTaps(mode: unknown, inSize: number, outSize: number): AxisTaps {
  if (mode === 'bicubic') return bicubicTaps(inSize, outSize);
  if (mode === 'bilinear') return bilinearTaps(inSize, outSize);
  throw new Error(`resize mode must be bicubic or bilinear, got ${JSON.stringify(mode)}`);
}

/** Applies taps along the last two dims: first along W (th), then along H (tv). */
function resample(x: RefTensor, tv: AxisTaps, th: AxisTaps): RefTensor {
  const { inSize: ih, outSize: oh } = tv;
  const { inSize: iw, outSize: ow } = th;
  const lead = x.shape.slice(0, -2);
  if (x.shape.length < 2 || !sameShape(x.shape.slice(-2), [ih, iw])) throw new Error(`resample: input ${fmt(x.shape)} does not end in [${ih}, ${iw}]`);
  const planes = lead.reduce((a, b) => a * b, 1);
  const out = new Float64Array(planes * oh * ow);
  const tmp = new Float64Array(ih * ow);
  for (let p = 0; p < planes; p++) {
    const xo = p * ih * iw;
    for (let r = 0; r < ih; r++) {
      for (let c = 0; c < ow; c++) {
        let acc = 0;
        for (let k = th.start[c]; k < th.start[c + 1]; k++) acc += th.weight[k] * x.data[xo + r * iw + th.index[k]];
        tmp[r * ow + c] = acc;
      }
    }
    const yo = p * oh * ow;
    for (let r = 0; r < oh; r++) {
      for (let c = 0; c < ow; c++) {
        let acc = 0;
        for (let k = tv.start[r]; k < tv.start[r + 1]; k++) acc += tv.weight[k] * tmp[tv.index[k] * ow + c];
        out[yo + r * ow + c] = acc;
      }
    }
  }
  return tensor([...lead, oh, ow], out);
}

/** The adjoint of `resample`: scatters g back through the same taps, H first, then W. */
function resampleAdjoint(g: RefTensor, tv: AxisTaps, th: AxisTaps): RefTensor {
  const { inSize: ih, outSize: oh } = tv;
  const { inSize: iw, outSize: ow } = th;
  const lead = g.shape.slice(0, -2);
  if (g.shape.length < 2 || !sameShape(g.shape.slice(-2), [oh, ow])) throw new Error(`resample adjoint: cotangent ${fmt(g.shape)} does not end in [${oh}, ${ow}]`);
  const planes = lead.reduce((a, b) => a * b, 1);
  const dx = new Float64Array(planes * ih * iw);
  const tmp = new Float64Array(ih * ow);
  for (let p = 0; p < planes; p++) {
    tmp.fill(0);
    const go = p * oh * ow;
    for (let r = 0; r < oh; r++) {
      for (let k = tv.start[r]; k < tv.start[r + 1]; k++) {
        const wt = tv.weight[k];
        const row = tv.index[k] * ow;
        for (let c = 0; c < ow; c++) tmp[row + c] += wt * g.data[go + r * ow + c];
      }
    }
    const xo = p * ih * iw;
    for (let r = 0; r < ih; r++) {
      for (let c = 0; c < ow; c++) {
        const v = tmp[r * ow + c];
        for (let k = th.start[c]; k < th.start[c + 1]; k++) dx[xo + r * iw + th.index[k]] += th.weight[k] * v;
      }
    }
  }
  return tensor([...lead, ih, iw], dx);
}

const lastTwo = (s: Shape): [number, number] => [s[s.length - 2], s[s.length - 1]];

const resize: RefRule = ([x], attrs) => {
  const [ih, iw] = lastTwo(x.shape);
  const [oh, ow] = attrInts(attrs, 'size');
  return resample(x, resizeTaps(attrs.mode, ih, oh), resizeTaps(attrs.mode, iw, ow));
};

const resizeGrad: RefRule = ([g], attrs) => {
  const [ih, iw] = attrInts(attrs, 'in_size');
  const [oh, ow] = lastTwo(g.shape);
  return resampleAdjoint(g, resizeTaps(attrs.mode, ih, oh), resizeTaps(attrs.mode, iw, ow));
};

const adaptiveAvgPool2d: RefRule = ([x], attrs) => {
  const [ih, iw] = lastTwo(x.shape);
  const [oh, ow] = attrInts(attrs, 'size');
  return resample(x, adaptivePoolTaps(ih, oh), adaptivePoolTaps(iw, ow));
};

const adaptiveAvgPool2dGrad: RefRule = ([g], attrs) => {
  const [ih, iw] = attrInts(attrs, 'in_size');
  const [oh, ow] = lastTwo(g.shape);
  return resampleAdjoint(g, adaptivePoolTaps(ih, oh), adaptivePoolTaps(iw, ow));
};

// ---------------------------------------------------------------------------------------------------
// Multi-scale deformable attention

type MsDeformGeom = MsDeformGeometry;

/**
 * Visits every sampling point that lands within one pixel of its level (grid_sample with zero padding and
 * align_corners=False, as the CUDA kernel does): `visit` gets the point's flat index in attention_weights,
 * the output row offset (into [N, Lq, M·Dh]), the level size, the offsets into value of the four corners
 * (-1 for a corner outside the map: it reads zero) and the fractional position (lh, lw).
 */
function msDeformPoints(
  k: MsDeformGeom,
  loc: Float64Array,
  visit: (pt: number, outRow: number, h: number, w: number, corners: readonly number[], lh: number, lw: number) => void,
): void {
  const L = k.levels.length;
  const corners = [0, 0, 0, 0];
  for (let n = 0; n < k.n; n++) {
    for (let q = 0; q < k.lq; q++) {
      for (let m = 0; m < k.m; m++) {
        const outRow = ((n * k.lq + q) * k.m + m) * k.dh;
        for (let l = 0; l < L; l++) {
          const [h, w] = k.levels[l];
          for (let p = 0; p < k.p; p++) {
            const pt = (((n * k.lq + q) * k.m + m) * L + l) * k.p + p;
            const hIm = loc[2 * pt + 1] * h - 0.5;
            const wIm = loc[2 * pt] * w - 0.5;
            if (!(hIm > -1 && wIm > -1 && hIm < h && wIm < w)) continue;
            const h0 = Math.floor(hIm);
            const w0 = Math.floor(wIm);
            for (let c = 0; c < 4; c++) {
              const y = h0 + (c >> 1);
              const x = w0 + (c & 1);
              corners[c] = y >= 0 && y < h && x >= 0 && x < w ? ((n * k.s + k.starts[l] + y * w + x) * k.m + m) * k.dh : -1;
            }
            visit(pt, outRow, h, w, corners, hIm - h0, wIm - w0);
          }
        }
      }
    }
  }
}

/** Bilinear corner weights in corner order (top-left, top-right, bottom-left, bottom-right). */
const bilinear = (lh: number, lw: number) => [(1 - lh) * (1 - lw), (1 - lh) * lw, lh * (1 - lw), lh * lw];

const msdeformAttn: RefRule = ([value, loc, attw], attrs, out) => {
  const k = msDeformGeometry(value.shape, loc.shape, attw.shape, attrs);
  const y = new Float64Array(k.n * k.lq * k.m * k.dh);
  msDeformPoints(k, loc.data, (pt, outRow, _h, _w, corners, lh, lw) => {
    const cw = bilinear(lh, lw);
    const a = attw.data[pt];
    for (let d = 0; d < k.dh; d++) {
      let v = 0;
      for (let c = 0; c < 4; c++) if (corners[c] >= 0) v += cw[c] * value.data[corners[c] + d];
      y[outRow + d] += a * v;
    }
  });
  return tensor(out.shape, y);
};

/** The VJP of msdeform_attn in value (0), sampling_locations (1) or attention_weights (2). */
const msdeformAttnGrad: RefRule = ([value, loc, attw, g], attrs) => {
  const k = msDeformGeometry(value.shape, loc.shape, attw.shape, attrs);
  if (!sameShape(g.shape, [k.n, k.lq, k.m * k.dh])) throw new Error(`msdeform_attn_grad: cotangent ${fmt(g.shape)} must be ${fmt([k.n, k.lq, k.m * k.dh])}`);
  const wrt = attrNum(attrs, 'wrt');
  const v = value.data;
  if (wrt === 0) {
    const dv = new Float64Array(v.length);
    msDeformPoints(k, loc.data, (pt, outRow, _h, _w, corners, lh, lw) => {
      const cw = bilinear(lh, lw);
      const a = attw.data[pt];
      for (let c = 0; c < 4; c++) {
        if (corners[c] < 0) continue;
        for (let d = 0; d < k.dh; d++) dv[corners[c] + d] += a * cw[c] * g.data[outRow + d];
      }
    });
    return tensor(value.shape, dv);
  }
  if (wrt === 1) {
    const dloc = new Float64Array(loc.data.length);
    msDeformPoints(k, loc.data, (pt, outRow, h, w, corners, lh, lw) => {
      const a = attw.data[pt];
      let dlw = 0;
      let dlh = 0;
      const [c00, c01, c10, c11] = corners;
      for (let d = 0; d < k.dh; d++) {
        const v00 = c00 >= 0 ? v[c00 + d] : 0;
        const v01 = c01 >= 0 ? v[c01 + d] : 0;
        const v10 = c10 >= 0 ? v[c10 + d] : 0;
        const v11 = c11 >= 0 ? v[c11 + d] : 0;
        const gd = g.data[outRow + d];
        dlw += gd * ((1 - lh) * (v01 - v00) + lh * (v11 - v10));
        dlh += gd * ((1 - lw) * (v10 - v00) + lw * (v11 - v01));
      }
      dloc[2 * pt] = a * w * dlw;
      dloc[2 * pt + 1] = a * h * dlh;
    });
    return tensor(loc.shape, dloc);
  }
  if (wrt === 2) {
    const da = new Float64Array(attw.data.length);
    msDeformPoints(k, loc.data, (pt, outRow, _h, _w, corners, lh, lw) => {
      const cw = bilinear(lh, lw);
      let acc = 0;
      for (let d = 0; d < k.dh; d++) {
        let s = 0;
        for (let c = 0; c < 4; c++) if (corners[c] >= 0) s += cw[c] * v[corners[c] + d];
        acc += g.data[outRow + d] * s;
      }
      da[pt] = acc;
    });
    return tensor(attw.shape, da);
  }
  throw new Error(`msdeform_attn_grad: wrt must be 0, 1 or 2, got ${wrt}`);
};

export const VISION_REFERENCE: { readonly [K in VisionOp]: RefRule } = {
  conv2d,
  conv2d_grad_input: conv2dGradInput,
  conv2d_grad_weight: conv2dGradWeight,
  resize,
  resize_grad: resizeGrad,
  adaptive_avg_pool2d: adaptiveAvgPool2d,
  adaptive_avg_pool2d_grad: adaptiveAvgPool2dGrad,
  msdeform_attn: msdeformAttn,
  msdeform_attn_grad: msdeformAttnGrad,
};
