// `visft train` end to end on the tiny two-stage pipeline (test/fixtures/train/tiny.visft) and the demo data:
// outputs, exports, exact resume after SIGKILL and after Ctrl-C, and the errors for bad runs. Child processes run
// the real CLI; the cpu backend keeps them fast, and one GPU run checks resume on the device.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../golden/harness.js';
import { loadStateDict } from '../../runtime/weights/index.js';
import { readSafetensors } from '../../runtime/weights/safetensors.js';
import { MetricsLog } from '../../runtime/train/metrics.js';
import { makeRng } from '../ir/util.js';

const CLI = join(REPO_ROOT, 'bin', 'visft.js');
const PIPELINE = join(REPO_ROOT, 'test', 'fixtures', 'train', 'tiny.visft');
let DATA = '';

before(() => {
  DATA = mkdtempSync(join(tmpdir(), 'visft-train-data-'));
  const r = spawnSync(process.execPath, [CLI, 'make-demo-data', DATA, '--images', '16'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

const fresh = (tag: string) => mkdtempSync(join(tmpdir(), `visft-train-${tag}-`));

function train(out: string, extra: string[] = [], pipeline = PIPELINE) {
  return spawnSync(process.execPath, [CLI, 'train', pipeline, '--data', DATA, '--out', out, '--backend', 'cpu', ...extra], { encoding: 'utf8', env: { ...process.env, VISFT_OUT: out } });
}

/** The bytes of every final checkpoint of a run folder, by run, for bit-for-bit comparison. */
function finalCheckpoints(out: string): Map<string, Buffer> {
  const got = new Map<string, Buffer>();
  for (const [stage, run] of [['stage1', 'caption_tiny'], ['stage2', 'joint']]) {
    const dir = join(out, stage, run);
    const latest = readFileSync(join(dir, 'latest'), 'utf8').trim();
    for (const f of ['weights.safetensors', 'optimizer.safetensors', 'state.json']) got.set(`${stage}/${run}/${latest}/${f}`, readFileSync(join(dir, latest, f)));
  }
  return got;
}

/** Metrics rows without the wall-clock fields. */
const metricsOf = (out: string) => MetricsLog.read(join(out, 'metrics.jsonl')).map(({ time_s, updates_per_s, ...rest }) => (void time_s, void updates_per_s, rest));

let reference: { out: string; checkpoints: Map<string, Buffer> } | undefined;
function referenceRun() {
  if (!reference) {
    const out = fresh('ref');
    const r = train(out);
    assert.equal(r.status, 0, r.stderr);
    reference = { out, checkpoints: finalCheckpoints(out) };
  }
  return reference;
}

test('train runs both stages: checkpoints, metrics, loss curves, the LoRA export, and extract-lora agrees', () => {
  const { out } = referenceRun();
  const rows = metricsOf(out);
  assert.deepEqual(rows.map((r) => `${r.stage}:${r.update}`), [1, 2, 3, 4, 5, 6].map((u) => `stage1:${u}`).concat([1, 2, 3, 4, 5, 6].map((u) => `stage2:${u}`)));
  for (const r of rows) assert.ok(Number.isFinite(r.loss as number) && (r.loss as number) > 0, `loss of ${r.stage}:${r.update}`);
  assert.equal(rows[0].lr, 0, 'the first update of a warmup runs at lr 0, as mmf');
  for (const s of ['stage1', 'stage2']) assert.match(readFileSync(join(out, s, 'loss.svg'), 'utf8'), /<svg[\s\S]*<\/svg>/);
  // Stage 1 trains the head only; stage 2 only the LoRA, starting from stage 1's final head.
  const w1 = readSafetensors(join(out, 'stage1', 'caption_tiny', 'ckpt-00000006', 'weights.safetensors')).tensors;
  assert.ok([...w1.keys()].every((k) => k.startsWith('caption.')), [...w1.keys()].join());
  const w2 = readSafetensors(join(out, 'stage2', 'joint', 'ckpt-00000006', 'weights.safetensors')).tensors;
  assert.deepEqual([...w2.keys()].sort(), ['blocks.0.attn.qkv.lora_A', 'blocks.0.attn.qkv.lora_B']);
  assert.deepEqual(w2.get('blocks.0.attn.qkv.lora_A')!.shape, [4, 32]);
  assert.deepEqual(w2.get('blocks.0.attn.qkv.lora_B')!.shape, [64, 2]);
  assert.ok((w2.get('blocks.0.attn.qkv.lora_B')!.data as Float32Array).some((v) => v !== 0), 'lora_B moved off zero');
  // The export at update 4, with ViSFT's key names, loads as a state dict.
  const exported = loadStateDict(join(out, 'tiny', 'lora_4.pth'));
  assert.deepEqual([...exported.keys()].sort(), ['visual.blocks.0.attn.qkv.lora_A', 'visual.blocks.0.attn.qkv.lora_B']);
  // extract-lora on the run folder takes the final stage-2 checkpoint.
  const file = join(out, 'extracted.safetensors');
  const r = spawnSync(process.execPath, [CLI, 'extract-lora', out, '-o', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const ex = readSafetensors(file).tensors;
  assert.deepEqual([...(ex.get('visual.blocks.0.attn.qkv.lora_B')!.data as Float32Array)], [...(w2.get('blocks.0.attn.qkv.lora_B')!.data as Float32Array)]);
});

test('a run killed with SIGKILL at random moments and resumed ends bit for bit as an uninterrupted run', async () => {
  const ref = referenceRun();
  const out = fresh('kill');
  const rnd = makeRng(Number(process.env.VISFT_KILL_SEED ?? 7));
  for (let kill = 0; kill < 3; kill++) {
    const child = spawn(process.execPath, [CLI, 'train', PIPELINE, '--data', DATA, '--out', out, '--backend', 'cpu', '--resume'], { env: { ...process.env, VISFT_OUT: out }, stdio: 'ignore' });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const delay = 400 + Math.floor(rnd() * 1800);
    const timer = setTimeout(() => child.kill('SIGKILL'), delay);
    await exited;
    clearTimeout(timer);
  }
  const r = train(out, ['--resume']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(finalCheckpoints(out), ref.checkpoints);
  assert.deepEqual(metricsOf(out), metricsOf(ref.out));
});

test('Ctrl-C saves a checkpoint and exits 130; --resume finishes bit for bit as an uninterrupted run', async () => {
  const ref = referenceRun();
  const out = fresh('sigint');
  const child = spawn(process.execPath, [CLI, 'train', PIPELINE, '--data', DATA, '--out', out, '--backend', 'cpu'], { env: { ...process.env, VISFT_OUT: out }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  let sent = false;
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    // Interrupt once the first updates are done (between checkpoints).
    if (!sent && /stage1\/caption_tiny: 6 updates/.test(err)) {
      sent = true;
      setTimeout(() => child.kill('SIGINT'), 150);
    }
  });
  const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
  assert.equal(code, 130, err);
  assert.match(err, /interrupted: checkpoint saved at update \d+/);
  const r = train(out, ['--resume']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(finalCheckpoints(out), ref.checkpoints);
});

test('existing checkpoints are never overwritten without --resume', () => {
  const out = fresh('exists');
  assert.equal(train(out, ['--stage', 'stage1']).status, 0);
  const before = readdirSync(join(out, 'stage1', 'caption_tiny')).sort();
  const r = train(out, ['--stage', 'stage1']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /already has checkpoints: pass --resume/);
  assert.deepEqual(readdirSync(join(out, 'stage1', 'caption_tiny')).sort(), before);
});

test('stage 2 alone needs stage 1 first; a pipeline edited since its checkpoint is refused on resume', () => {
  const out = fresh('order');
  const r = train(out, ['--stage', 'stage2']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /initialises 'caption' from stage1\.caption_tiny, but .* has no checkpoint: train stage 'stage1' first/);
  const dir = fresh('edited');
  const copy = join(dir, 'tiny.visft');
  copyFileSync(PIPELINE, copy);
  assert.equal(train(out, ['--stage', 'stage1', '--max-updates', '2'], copy).status, 0);
  writeFileSync(copy, readFileSync(copy, 'utf8').replace('lr: 3e-3', 'lr: 1e-3'));
  const again = train(out, ['--stage', 'stage1', '--resume'], copy);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /the pipeline changed since the checkpoint/);
});

test('a loss that is not finite skips updates, then stops with a clear error and keeps the last checkpoint', () => {
  const dir = fresh('nan');
  const copy = join(dir, 'tiny.visft');
  writeFileSync(copy, readFileSync(PIPELINE, 'utf8').replace(/lr: 3e-3\n  schedule: warmup_cosine\(warmup: 2 updates\)\n  updates: 6 updates/, 'lr: 1e30\n  schedule: constant\n  updates: 20 updates'));
  const out = join(dir, 'out');
  const r = train(out, ['--stage', 'stage1'], copy);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /not finite for 6 updates in a row .* The last checkpoint in .* is kept/);
  assert.match(r.stderr, /warning: update \d+ skipped/);
  assert.ok(existsSync(join(out, 'stage1', 'caption_tiny', 'latest')));
});

test('data that does not fit the pipeline is a clear error: missing files, a word map of the wrong size', () => {
  const out = fresh('data');
  const missing = spawnSync(process.execPath, [CLI, 'train', PIPELINE, '--data', join(out, 'nowhere'), '--out', out, '--backend', 'cpu'], { encoding: 'utf8' });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /TRAIN_IMAGES_demo\.hdf5/);
  assert.doesNotMatch(missing.stderr, /\n\s+at /, 'no stack trace');
  // A fresh --out of a run that failed before writing anything is not left behind; one that existed stays.
  const never = join(out, 'never', 'run');
  const failed = spawnSync(process.execPath, [CLI, 'train', PIPELINE, '--data', join(out, 'nowhere'), '--out', never, '--backend', 'cpu'], { encoding: 'utf8' });
  assert.equal(failed.status, 1, failed.stderr);
  assert.ok(!existsSync(join(out, 'never')), `${join(out, 'never')} was left behind`);
  assert.ok(existsSync(out), 'an --out that existed before the run stays');
  const copy = join(out, 'tiny.visft');
  writeFileSync(copy, readFileSync(PIPELINE, 'utf8').replace('vocab: 32', 'vocab: 40'));
  const r = train(join(out, 'run'), [], copy);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /word map of captions has 32 entries but head 'caption' was declared with vocab 40/);
});

test('on the GPU, a run stopped at a checkpoint and resumed ends bit for bit as an uninterrupted one', () => {
  const gpu = (out: string, extra: string[]) => spawnSync(process.execPath, [CLI, 'train', PIPELINE, '--data', DATA, '--out', out, '--stage', 'stage1', ...extra], { encoding: 'utf8', env: { ...process.env, VISFT_OUT: out } });
  const a = fresh('gpu-a');
  // --set: the kernel choices over the profile's; vector loads are what the kernels take anyway, so a ends as b.
  const ra = gpu(a, ['--set', '{"vectorLoads": true}']);
  assert.equal(ra.status, 0, ra.stderr);
  assert.match(ra.stderr, /^visft: kernel choices set: \{"vectorLoads":true\}$/m);
  // Run b again from its own update-4 checkpoint, as if it had been stopped there.
  const b = fresh('gpu-b');
  const rb = gpu(b, []);
  assert.equal(rb.status, 0, rb.stderr);
  const run = (o: string) => join(o, 'stage1', 'caption_tiny');
  writeFileSync(join(run(b), 'latest'), 'ckpt-00000004\n');
  rmSync(join(run(b), 'ckpt-00000006'), { recursive: true });
  const rc = gpu(b, ['--resume']);
  assert.equal(rc.status, 0, rc.stderr);
  assert.match(rc.stderr, /resuming from .*ckpt-00000004/);
  for (const f of ['weights.safetensors', 'optimizer.safetensors', 'state.json']) {
    assert.deepEqual(readFileSync(join(run(b), 'ckpt-00000006', f)), readFileSync(join(run(a), 'ckpt-00000006', f)), f);
  }
  const cpuRef = referenceRun();
  const gpuLoss = metricsOf(a).map((r) => r.loss as number);
  const cpuLoss = metricsOf(cpuRef.out).filter((r) => r.stage === 'stage1').map((r) => r.loss as number);
  gpuLoss.forEach((l, i) => assert.ok(Math.abs(l - cpuLoss[i]) <= 1e-4 * Math.abs(cpuLoss[i]), `update ${i + 1}: gpu ${l} vs cpu ${cpuLoss[i]}`));
});

test('a backbone weights block is loaded strictly with its key rules; a misshapen tensor is named', async () => {
  const { checkFiles } = await import('../../compiler/check/index.js');
  const { trainPlan } = await import('../../compiler/train/plan.js');
  const { compileStep } = await import('../../compiler/train/step-graph.js');
  const { saveTorchZip } = await import('../../runtime/weights/index.js');
  const dir = fresh('weights');
  const copy = join(dir, 'tiny.visft');
  const weights = join(dir, 'eva_clip_like.pth');
  writeFileSync(copy, readFileSync(PIPELINE, 'utf8').replace('backbone eva = eva_vit(img_size: 56, patch: 14, width: 32, depth: 1, heads: 2, mlp_hidden: 64)', `backbone eva = eva_vit(img_size: 56, patch: 14, width: 32, depth: 1, heads: 2, mlp_hidden: 64) {\n  weights {\n    path: "${weights}"\n    drop: ["text*"]\n    strip_prefix: "visual."\n  }\n}`));
  const checked = checkFiles([copy]);
  const plan = trainPlan(checked, checked.roots[0]);
  const step = compileStep(checked, checked.roots[0], plan.stages[0], plan.stages[0].tasks[0]);
  const eva = step.params.filter((p) => p.part === 'eva');
  assert.ok(eva.length > 5);
  // An EVA-CLIP-style file: `visual.` keys, a text tower to drop, values 0.5 everywhere.
  const tensors = new Map(eva.map((p) => [`visual.${p.name}`, { dtype: 'f32' as const, shape: [...p.shape], data: new Float32Array(p.shape.reduce((a, b) => a * b, 1)).fill(0.5) }]));
  tensors.set('text.token_embedding.weight', { dtype: 'f32', shape: [2, 2], data: new Float32Array(4) });
  saveTorchZip(weights, tensors);
  const ok = train(join(dir, 'ok'), ['--stage', 'stage1', '--max-updates', '2'], copy);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, new RegExp(`eva: ${eva.length} tensors from .*eva_clip_like\\.pth`));
  // One tensor of the wrong shape: the error names it and both shapes; nothing is trained.
  const bad = eva.find((p) => p.shape.length === 2)!;
  tensors.set(`visual.${bad.name}`, { dtype: 'f32', shape: [bad.shape[0] + 1, bad.shape[1]], data: new Float32Array((bad.shape[0] + 1) * bad.shape[1]) });
  saveTorchZip(weights, tensors);
  const r = train(join(dir, 'bad'), ['--stage', 'stage1'], copy);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(bad.name), r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.equal(existsSync(join(dir, 'bad', 'stage1', 'caption_tiny', 'latest')), false);
});

test('fp16: AMP rounding with dynamic loss scaling backs off from an overflowing scale, then trains', () => {
  const dir = fresh('amp');
  const copy = join(dir, 'tiny.visft');
  const src = readFileSync(PIPELINE, 'utf8');
  const stage1 = src.indexOf('stage stage1');
  const amp = src.slice(stage1).replace('  checkpoint: 2 updates\n', '  checkpoint: 2 updates\n  precision: fp16\n  loss_scale: dynamic(init: 1e9, growth_interval: 2000)\n').replace('updates: 6 updates', 'updates: 30 updates');
  writeFileSync(copy, src.slice(0, stage1) + amp);
  const out = join(dir, 'out');
  const r = train(out, ['--stage', 'stage1'], copy);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /fp16: matmul, attention and conv operands and results rounded to f16/);
  const rows = metricsOf(out);
  const skipped = rows.filter((x) => x.skipped === true);
  assert.ok(skipped.length >= 5 && rows[0].skipped === true, `an f16 overflow at scale 1e9 skips the first updates (${skipped.length} skipped)`);
  assert.ok(rows.slice(-3).every((x) => x.skipped === false), 'then the scale fits and updates go through');
  for (let i = 1; i < skipped.length; i++) assert.ok((skipped[i].loss_scale as number) < (skipped[i - 1].loss_scale as number), 'each overflow halves the scale');
  // The rounding changes the loss only slightly from fp32 (same initial weights and batch).
  const fp32 = metricsOf(referenceRun().out)[0].loss as number;
  assert.ok(Math.abs((rows[0].loss as number) - fp32) < 1e-2 * fp32, `${rows[0].loss} vs ${fp32}`);
  assert.notEqual(rows[0].loss, fp32, 'the f16 rounding is really applied');
});

test('--set takes kernel choices for the GPU: a bad one, or one on the CPU backend, is a usage error before training', () => {
  const out = fresh('set');
  for (const [set, message] of [
    ['{"nope": true}', /^visft: --set: tuning\.nope: /m],
    ['{"vectorLoads": true}', /^visft: --set chooses GPU kernels; --backend cpu runs the float64 reference/m],
  ] as const) {
    const r = train(out, ['--set', set]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  assert.deepEqual(readdirSync(out), [], 'nothing written');
});

test('--tasks trains a subset of the tasks; an unknown task is a usage error', () => {
  const out = fresh('tasks');
  const bad = train(out, ['--tasks', 'caption_tiny,nope']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--tasks: no task nope in .* \(tasks: caption_tiny\)/);
  const plan = spawnSync(process.execPath, [CLI, 'train', PIPELINE, '--tasks', 'caption_tiny', '--stage', 'stage2', '--plan'], { encoding: 'utf8' });
  assert.equal(plan.status, 0, plan.stderr);
  const stages = (JSON.parse(plan.stdout) as { stages: { name: string; tasks: { name: string; weight: number }[] }[] }).stages;
  assert.deepEqual(stages.map((s) => [s.name, s.tasks.map((t) => t.name)]), [['stage2', ['caption_tiny']]]);
  const ok = train(out, ['--tasks', 'caption_tiny', '--stage', 'stage1', '--max-updates', '2']);
  assert.equal(ok.status, 0, ok.stderr);
  const state = JSON.parse(readFileSync(join(out, 'stage1', 'caption_tiny', 'ckpt-00000002', 'state.json'), 'utf8')) as { tasks: string[] };
  assert.deepEqual(state.tasks, ['caption_tiny']);
});
