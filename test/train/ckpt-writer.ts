// Child process for the kill test: resumes from the run's latest checkpoint and saves checkpoints forever, printing
// "saved <update>" after each save returns. The content of every checkpoint is a function of its update number, so
// the parent can check whatever survives a SIGKILL.
//   node ckpt-writer.js <runDir>

import { pathToFileURL } from 'node:url';
import { loadLatestCheckpoint, saveCheckpoint, type CheckpointContent } from '../../runtime/train/checkpoint.js';
import type { HostTensor } from '../../runtime/weights/tensor.js';

export const KILL_TEST_KEEP = 2;

function filled(shape: number[], seed: number): HostTensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let s = (seed * 2654435761) >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (s + 0x9e3779b9) >>> 0; // cheap, deterministic, different for every update
    data[i] = (s >>> 8) / 65536 - 128;
  }
  return { dtype: 'f32', shape, data };
}

/** ~6 MB per checkpoint, so a save takes long enough for kills to land inside it. */
export function checkpointContent(update: number): CheckpointContent {
  return {
    weights: new Map([
      ['head.proj.weight', filled([512, 1024], update * 3 + 1)],
      ['head.proj.bias', filled([1024], update * 3 + 2)],
    ]),
    optimizer: new Map([
      ['head.proj.weight.exp_avg', filled([512, 1024], update * 5 + 3)],
      ['head.proj.weight.exp_avg_sq', filled([512, 1024], update * 7 + 4)],
    ]),
    state: { update, lr: update * 1e-6, rng: `seed-${update}`, loss_scale: 65536 / (1 + (update % 4)), tasks: { caption: update % 3 } },
  };
}

function main(runDir: string): void {
  const start = (loadLatestCheckpoint(runDir)?.update ?? 0) + 1;
  for (let update = start; ; update++) {
    saveCheckpoint(runDir, update, checkpointContent(update), { keep: KILL_TEST_KEEP });
    process.stdout.write(`saved ${update}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv[2]);
