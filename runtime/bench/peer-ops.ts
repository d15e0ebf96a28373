// What the tfjs peer computes for each row, in tfjs ops on the row's input tensors. A call returns one tensor
// per row output, in the row's output order (a forward+backward row: the output, then each input's gradient).
//
// Attention is the composition tfjs users write (tfjs has no fused attention). MSDeformAttn has no tfjs
// equivalent of grid_sample, so the peer is the original's composition (ms_deform_attn_core_pytorch:
// grid_sample with bilinear sampling, zero padding, align_corners=False, per level; times the attention
// weights; summed over levels and points) written with tf.gather: for each sample, the four neighbouring
// pixels' value rows, their bilinear weights, and a 0/1 mask that zeroes pixels outside the map.
//
// Backward: tf.grads cannot run here. @tensorflow/tfjs-core registers no gradient functions (the
// @tensorflow/tfjs union package does, and it is not a dependency), so tf.grads fails with "gradient function
// not found for BatchMatMul". The backward is therefore written out in tfjs ops: the ops tfjs's gradient
// functions run for these compositions (BatchMatMul: two matMuls; Softmax: y·(dy − Σ dy·y); Gather:
// unsortedSegmentSum), in the order reverse-mode autodiff runs them.
import type { Tensor1D } from '@tensorflow/tfjs-core';
import type { RowSpec } from './row-types.js';
import type { Tensor, Tf } from './tfjs.js';

export interface PeerCall {
  /** One call of the peer: the row's outputs. */
  readonly run: () => Tensor[];
  /** Frees tensors the call keeps between runs (constant offsets). */
  dispose(): void;
}

const single = (run: () => Tensor): PeerCall => ({ run: () => [run()], dispose: () => undefined });

/** Composed attention; with `dO` also dq, dk, dv as autodiff of the composition computes them. */
function attention(tf: Tf, q: Tensor, k: Tensor, v: Tensor, dO?: Tensor): Tensor[] {
  const scale = 1 / Math.sqrt(q.shape[q.shape.length - 1]);
  const p = tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale));
  const out = tf.matMul(p, v);
  if (!dO) return [out];
  const dv = tf.matMul(p, dO, true, false);
  const dp = tf.matMul(dO, v, false, true);
  const dLogits = tf.mul(tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true))), scale); // softmax, then the scale
  return [out, tf.matMul(dLogits, k), tf.matMul(dLogits, q, true, false), dv];
}

/** MSDeformAttn in tfjs ops for `levels` ([H, W] each), shapes as the IR op's; with a cotangent (the 4th
 * input) also the gradients in value, locations and weights. */
function msdeform(tf: Tf, levels: readonly (readonly [number, number])[], xs: readonly Tensor[], vjp: boolean): PeerCall {
  const [value, loc, attw, dy] = xs;
  const [N, S, M, Dh] = value.shape;
  const [, Lq, , , P] = attw.shape;
  // (n·M + m)·H·W per level: where a (batch, head)'s map starts in the level's table (f32: exact below 2²⁴).
  const bases = levels.map(([h, w]) => tf.tensor(Float32Array.from({ length: N * M }, (_, i) => i * h * w), [N, M, 1, 1], 'float32'));
  const starts = levels.map((_, l) => levels.slice(0, l).reduce((acc, [h, w]) => acc + h * w, 0));
  const pixels = levels.reduce((acc, [h, w]) => acc + h * w, 0);
  if (pixels !== S) throw new Error(`msdeform peer: levels ${JSON.stringify(levels)} cover ${pixels} pixels, value has ${S}`);

  const run = (): Tensor[] => {
    // The cotangent as [N, M, Lq, 1, Dh], next to the [N, M, Lq, P, Dh] samples.
    const g = vjp ? tf.expandDims(tf.transpose(tf.reshape(dy, [N, Lq, M, Dh]), [0, 2, 1, 3]), 3) : undefined;
    let out: Tensor | undefined;
    const dValue: Tensor[] = [];
    const dLoc: Tensor[] = [];
    const dWeights: Tensor[] = [];
    for (const [l, [h, w]] of levels.entries()) {
      const table = tf.reshape(tf.transpose(tf.slice(value, [0, starts[l], 0, 0], [N, h * w, M, Dh]), [0, 2, 1, 3]), [-1, Dh]); // [N·M·H·W, Dh]
      const [lx, ly] = tf.unstack(tf.transpose(tf.reshape(tf.slice(loc, [0, 0, 0, l, 0, 0], [N, Lq, M, 1, P, 2]), [N, Lq, M, P, 2]), [0, 2, 1, 3, 4]), 4);
      const a = tf.transpose(tf.reshape(tf.slice(attw, [0, 0, 0, l, 0], [N, Lq, M, 1, P]), [N, Lq, M, P]), [0, 2, 1, 3]); // [N, M, Lq, P]
      const px = tf.sub(tf.mul(lx, w), 0.5); // align_corners=False
      const py = tf.sub(tf.mul(ly, h), 0.5);
      const x0 = tf.floor(px);
      const y0 = tf.floor(py);
      const fx = tf.sub(px, x0);
      const fy = tf.sub(py, y0);
      const corners = [0, 1].flatMap((cy) =>
        [0, 1].map((cx) => {
          const x = tf.add(x0, cx);
          const y = tf.add(y0, cy);
          const inside = tf.cast(tf.logicalAnd(tf.logicalAnd(tf.greaterEqual(x, 0), tf.less(x, w)), tf.logicalAnd(tf.greaterEqual(y, 0), tf.less(y, h))), 'float32');
          const row = tf.add(tf.add(tf.mul(tf.clipByValue(y, 0, h - 1), w), tf.clipByValue(x, 0, w - 1)), bases[l]);
          const index: Tensor1D = tf.reshape(tf.cast(row, 'int32'), [-1]);
          const wx = cx ? fx : tf.sub(1, fx);
          const wy = cy ? fy : tf.sub(1, fy);
          const bw = tf.mul(tf.mul(wx, wy), inside); // 0 for a pixel in the zero padding
          return { cx, cy, inside, index, wx, wy, bw, rows: tf.reshape(tf.gather(table, index), [N, M, Lq, P, Dh]) };
        }),
      );
      const sampled = corners.map((c) => tf.mul(c.rows, tf.expandDims(c.bw, -1))).reduce((s, t) => tf.add(s, t)); // grid_sample
      const level = tf.sum(tf.mul(sampled, tf.expandDims(a, -1)), 3); // [N, M, Lq, Dh]
      out = out ? tf.add(out, level) : level;
      if (!g) continue;
      dWeights.push(tf.sum(tf.mul(sampled, g), -1));
      const dSampled = tf.mul(g, tf.expandDims(a, -1));
      let dTable: Tensor | undefined;
      let dfx: Tensor | undefined;
      let dfy: Tensor | undefined;
      for (const c of corners) {
        const dRows = tf.unsortedSegmentSum(tf.reshape(tf.mul(dSampled, tf.expandDims(c.bw, -1)), [-1, Dh]), c.index, N * M * h * w);
        dTable = dTable ? tf.add(dTable, dRows) : dRows;
        const dBw = tf.mul(tf.sum(tf.mul(dSampled, c.rows), -1), c.inside);
        const tx = tf.mul(tf.mul(dBw, c.wy), c.cx ? 1 : -1);
        const ty = tf.mul(tf.mul(dBw, c.wx), c.cy ? 1 : -1);
        dfx = dfx ? tf.add(dfx, tx) : tx;
        dfy = dfy ? tf.add(dfy, ty) : ty;
      }
      dValue.push(tf.transpose(tf.reshape(dTable!, [N, M, h * w, Dh]), [0, 2, 1, 3]));
      dLoc.push(tf.stack([tf.mul(dfx!, w), tf.mul(dfy!, h)], -1)); // [N, M, Lq, P, 2]
    }
    const output = tf.reshape(tf.transpose(out!, [0, 2, 1, 3]), [N, Lq, M * Dh]);
    if (!g) return [output];
    return [
      output,
      dValue.length > 1 ? tf.concat(dValue, 1) : dValue[0],
      tf.transpose(tf.stack(dLoc, 3), [0, 2, 1, 3, 4, 5]),
      tf.transpose(tf.stack(dWeights, 3), [0, 2, 1, 3, 4]),
    ];
  };
  return { run, dispose: () => bases.forEach((b) => b.dispose()) };
}

/** How the tfjs peer computes `row` on `xs` (the row's inputs, in order). */
export function peerCall(tf: Tf, row: RowSpec, xs: readonly Tensor[]): PeerCall {
  const vjp = row.pass === 'forward+backward';
  switch (row.op) {
    case 'matmul':
      return single(() => tf.matMul(xs[0], xs[1]));
    case 'layernorm':
      return single(() => {
        const m = tf.moments(xs[0], -1, true);
        return tf.batchNorm(xs[0], m.mean, m.variance, undefined, undefined, row.attrs.eps);
      });
    case 'softmax':
      return single(() => tf.softmax(xs[0]));
    case 'gelu':
      return single(() => tf.mul(tf.mul(xs[0], 0.5), tf.add(1, tf.erf(tf.div(xs[0], Math.SQRT2)))));
    case 'attention': {
      const [q, k, v, dy] = xs;
      return { run: () => attention(tf, q, k, v, vjp ? dy : undefined), dispose: () => undefined };
    }
    case 'msdeform_attn': {
      const levels = row.inputs.find((i) => i.fill)?.fill?.levels;
      if (!levels) throw new Error(`internal: bench row ${row.name} has no sampling levels`);
      return msdeform(tf, levels, xs, vjp);
    }
  }
}
