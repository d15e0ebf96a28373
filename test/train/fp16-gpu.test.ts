// `visft train` in fp16 on the GPU (lavapipe has shader-f16): stage 1 of the tiny pipeline with AMP, dynamic loss
// scaling and the backbone's `precision: fp16` (frozen there), its values stored as f16; the losses and the
// gradient norms agree with the cpu backend (float64 with the same roundings) update by update. One stage keeps
// the shader compiles of a cold cache short.
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

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'visft-fp16-'));
  const r = spawnSync(process.execPath, [CLI, 'make-demo-data', join(dir, 'data'), '--images', '16'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const src = readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'train', 'tiny.visft'), 'utf8');
  const backbone = 'backbone eva = eva_vit(img_size: 56, patch: 14, width: 32, depth: 1, heads: 2, mlp_hidden: 64)';
  assert.ok(src.includes(backbone));
  const amp = src
    .replace(backbone, `${backbone} {\n  precision: fp16\n}`)
    .replaceAll('  checkpoint: 2 updates\n', '  checkpoint: 2 updates\n  precision: fp16\n  loss_scale: dynamic(init: 1024, growth_interval: 2000)\n');
  pipeline = join(dir, 'tiny_fp16.visft');
  writeFileSync(pipeline, amp);
});

const train = (out: string, backend: string) =>
  spawnSync(process.execPath, [CLI, 'train', pipeline, '--data', join(dir, 'data'), '--out', out, '--backend', backend, '--max-updates', '3', '--stage', 'stage1'], { encoding: 'utf8', env: { ...process.env, VISFT_OUT: out } });

test('fp16 with an fp16 backbone: the gpu run stores f16 values and matches the cpu run', () => {
  const gpu = join(dir, 'gpu');
  const cpu = join(dir, 'cpu');
  const rg = train(gpu, 'gpu');
  assert.equal(rg.status, 0, rg.stderr);
  assert.match(rg.stderr, /stage1\/caption_tiny: fp16: .*; \d+ values stored as f16 \(/);
  assert.match(rg.stderr, /stage1\/caption_tiny: eva: frozen weights held at fp16/);
  const rc = train(cpu, 'cpu');
  assert.equal(rc.status, 0, rc.stderr);
  const rows = (out: string) => MetricsLog.read(join(out, 'metrics.jsonl'));
  const [g, c] = [rows(gpu), rows(cpu)];
  assert.equal(g.length, 3);
  assert.deepEqual(g.map((r) => [r.stage, r.update, r.loss_scale]), c.map((r) => [r.stage, r.update, r.loss_scale]));
  g.forEach((r, i) => assert.ok(Math.abs((r.loss as number) - (c[i].loss as number)) <= 1e-4 * Math.abs(c[i].loss as number), `${r.stage} update ${r.update}: gpu ${r.loss} vs cpu ${c[i].loss}`));
  // The gradients' global norms too (before clipping). The weights are not compared: Adam's first updates are
  // about ±lr·sign(g), so a near-zero gradient that rounds to f16 differently in f32 and float64 sums may flip.
  g.forEach((r, i) => assert.ok(Math.abs((r.grad_norm as number) - (c[i].grad_norm as number)) <= 1e-3 * (c[i].grad_norm as number), `${r.stage} update ${r.update}: grad norm gpu ${r.grad_norm} vs cpu ${c[i].grad_norm}`));
});
