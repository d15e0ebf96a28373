// Task data for training: opens a task's data set in its on-disk format and serves batches in a fixed order that
// depends only on (seed, task, batch number): each epoch is a seeded permutation of the examples and batch k takes
// positions k·B .. (k+1)·B - 1 of the epochs laid end to end. The order needs no state beyond the number of
// batches a task has drawn, so a resumed run sees exactly the batches an uninterrupted run would.
import { openCaptionDataset, type CaptionDataset } from '../data/caption.js';
import type { TaskPlan } from '../../compiler/train/plan.js';
import { Rng } from '../data/rng.js';

export class TrainDataError extends Error {}

export interface TaskData {
  readonly size: number;
  /** The batch with number `k` (0-based) for this task: inputs by graph input name. */
  batch(k: number): Map<string, Float32Array>;
  /** The data set's vocabulary size where it has one (captions). */
  readonly vocab?: number;
  close(): void;
}

/**
 * Positions [k·B, (k+1)·B) of the concatenated seeded epoch permutations of `size` examples, as a stateful reader
 * that keeps the last epoch's permutation (consecutive batches reuse it; any k can still be asked for).
 */
export function batchOrder(seed: number, key: string, size: number, batch: number): (k: number) => number[] {
  let cached: { epoch: number; perm: Uint32Array } = { epoch: -1, perm: new Uint32Array(0) };
  const permOf = (epoch: number) => {
    if (cached.epoch !== epoch) cached = { epoch, perm: permutation(size, new Rng(seed, `${key}/epoch${epoch}`)) };
    return cached.perm;
  };
  return (k) => {
    const out: number[] = [];
    for (let pos = k * batch; pos < (k + 1) * batch; pos++) {
      const epoch = Math.floor(pos / size);
      out.push(permOf(epoch)[pos - epoch * size]);
    }
    return out;
  };
}

function permutation(n: number, rng: Rng): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** Bilinear resize of [B, C, h, w] to [B, C, H, W] (align_corners=False, as torch's interpolate). */
export function resizeBilinear(x: Float32Array, B: number, C: number, h: number, w: number, H: number, W: number): Float32Array {
  if (h === H && w === W) return x;
  const out = new Float32Array(B * C * H * W);
  const src = (o: number, n: number, N: number) => Math.min(Math.max((o + 0.5) * (n / N) - 0.5, 0), n - 1);
  for (let bc = 0; bc < B * C; bc++) {
    for (let y = 0; y < H; y++) {
      const sy = src(y, h, H);
      const y0 = Math.floor(sy);
      const y1 = Math.min(y0 + 1, h - 1);
      const fy = sy - y0;
      for (let xx = 0; xx < W; xx++) {
        const sx = src(xx, w, W);
        const x0 = Math.floor(sx);
        const x1 = Math.min(x0 + 1, w - 1);
        const fx = sx - x0;
        const at = (yy: number, xi: number) => x[bc * h * w + yy * w + xi];
        out[bc * H * W + y * W + xx] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
      }
    }
  }
  return out;
}

export const TRAINABLE_FORMATS = ['caption_hdf5'];

/** Why a task's data cannot be read by this build, or undefined. */
export function unreadableData(task: TaskPlan): string | undefined {
  return TRAINABLE_FORMATS.includes(task.dataset.format) ? undefined : `task '${task.name}': data in the ${task.dataset.format} format cannot be trained on yet (supported: ${TRAINABLE_FORMATS.join(', ')})`;
}

/** Opens the task's data set; `root` overrides the dataset's folder (`visft train --data DIR`). */
export async function openTaskData(task: TaskPlan, imageSide: number, seed: number, root?: string): Promise<TaskData> {
  const ds = task.dataset;
  const problem = unreadableData(task);
  if (problem) throw new TrainDataError(problem);
  const maxLen = Number(ds.args.max_len ?? 52);
  const caption: CaptionDataset = await openCaptionDataset({
    root: root ?? ds.root,
    split: ds.split,
    name: String(ds.args.name ?? ''),
    captionsPerImage: Number(ds.args.captions_per_image ?? 5),
    maxLen,
    mean: ds.mean,
    std: ds.std,
  });
  const order = batchOrder(seed, task.name, caption.size, task.batch);
  const [C, h, w] = caption.imageShape;
  if (C !== 3) throw new TrainDataError(`task '${task.name}': images have ${C} channels, the backbone takes 3`);
  return {
    size: caption.size,
    vocab: caption.vocab,
    batch(k) {
      const idx = order(k);
      const b = caption.batch(idx);
      return new Map([
        ['image', resizeBilinear(b.image, idx.length, 3, h, w, imageSide, imageSide)],
        ['captions', b.captions],
        ['caplens', b.caplens],
        ['targets', b.targets],
        ['mask', b.mask],
      ]);
    },
    close: () => caption.close(),
  };
}
