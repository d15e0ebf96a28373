// A joint stage with two tasks: stage 1 trains each task's head in its own run; stage 2 loads both heads, freezes
// them and trains the shared LoRA, drawing one task per update with the `mix` probabilities (cpu backend).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { MetricsLog } from '../../runtime/train/metrics.js';
import { REPO_ROOT } from '../golden/harness.js';

const CLI = join(REPO_ROOT, 'bin', 'visft.js');
let dir = '';
let pipeline = '';

/** The tiny pipeline with a second caption head and task; stage 2 mixes the two tasks 3:1 for `updates` updates. */
function twoTasks(updates: number): string {
  const src = readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'train', 'tiny.visft'), 'utf8');
  const head = src.slice(src.indexOf('head caption = '), src.indexOf(') on eva.features') + ') on eva.features'.length);
  const stage2 = src.indexOf('stage stage2');
  const out = src.slice(0, stage2).replace('dataset captions', `${head.replace('head caption =', 'head caption_b =').replace('dropout_p: 0.2', 'dropout_p: 0.1')}\n\ndataset captions`)
    .replace('task caption_tiny {', 'task caption_b_tiny {\n  head: caption_b\n  dataset: captions\n  loss: caption_loss(alpha_c: 1.0)\n}\n\ntask caption_tiny {')
    .replace('  train: [caption]\n', '  train: [caption, caption_b]\n')
    .replace('  updates: 6 updates\n', '  updates: 2 updates\n')
    .replace('  task caption_tiny { batch: 2 }\n', '  task caption_tiny { batch: 2 }\n  task caption_b_tiny { batch: 2 }\n');
  return `${out}stage stage2 {
  after: stage1
  init {
    caption: stage1.caption_tiny
    caption_b: stage1.caption_b_tiny
  }
  train: [tiny_lora]
  freeze: [eva, caption, caption_b]
  optimizer: adamw(betas: [0.9, 0.999], eps: 1e-8, weight_decay: 1e-4)
  lr: 3e-3
  schedule: constant
  updates: ${updates} updates
  checkpoint: ${updates} updates
  mix {
    caption_tiny: 0.75
    caption_b_tiny: 0.25
  }
  task caption_tiny { batch: 2 }
  task caption_b_tiny { batch: 2 }
}
`;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'visft-joint-'));
  const r = spawnSync(process.execPath, [CLI, 'make-demo-data', join(dir, 'data'), '--images', '16'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  pipeline = join(dir, 'two_tasks.visft');
  writeFileSync(pipeline, twoTasks(40));
});

test('stage 1 trains each head in its own run; stage 2 draws tasks with the mix probabilities, reproducibly', () => {
  const run = (out: string) => spawnSync(process.execPath, [CLI, 'train', pipeline, '--data', join(dir, 'data'), '--out', out, '--backend', 'cpu'], { encoding: 'utf8', env: { ...process.env, VISFT_OUT: out } });
  const out = join(dir, 'a');
  const r = run(out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /stage2\/joint: caption: from .*stage1\/caption_tiny\/ckpt-00000002/);
  assert.match(r.stderr, /stage2\/joint: caption_b: from .*stage1\/caption_b_tiny\/ckpt-00000002/);
  const rows = MetricsLog.read(join(out, 'metrics.jsonl'));
  const stage1 = rows.filter((x) => x.stage === 'stage1');
  assert.deepEqual([...new Set(stage1.map((x) => x.run))].sort(), ['caption_b_tiny', 'caption_tiny']);
  const joint = rows.filter((x) => x.stage === 'stage2');
  assert.equal(joint.length, 40);
  assert.ok(joint.every((x) => x.run === 'joint' && (x.task === 'caption_tiny' || x.task === 'caption_b_tiny')));
  // 40 draws at 3:1: caption_tiny 30 expected; a binomial(40, 0.75) is in [24, 36] with probability ~0.98, while
  // even draws (20 expected) fall there with probability ~0.13. The draws are seeded, so this never flakes.
  const a = joint.filter((x) => x.task === 'caption_tiny').length;
  assert.ok(a >= 24 && a <= 36, `caption_tiny drawn ${a} times of 40`);
  assert.ok(a < 40, 'both tasks are drawn');
  // The draws are a function of the seed and the update: a second run draws the same tasks.
  const again = join(dir, 'b');
  assert.equal(run(again).status, 0);
  assert.deepEqual(MetricsLog.read(join(again, 'metrics.jsonl')).filter((x) => x.stage === 'stage2').map((x) => x.task), joint.map((x) => x.task));
});
