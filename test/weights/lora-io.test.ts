// extract-lora / merge-lora: merges checked against torch (test/fixtures/lora/make_lora.py), extraction from a
// synthetic visft output folder, every error case, and the CLI's exit codes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test, type TestContext } from 'node:test';
import fc from 'fast-check';
import {
  collectLora,
  extractLora,
  findLoraWeights,
  loraKey,
  LoraError,
  MERGED_KEY,
  mergeLora,
  mergeLoraFiles,
  type LoraKeyFormat,
} from '../../runtime/weights/lora-io.js';
import { readSafetensors, WeightsFormatError, writeSafetensors } from '../../runtime/weights/safetensors.js';
import { castTensor, fromNumbers, tensorsIdentical, toFloat64, type DType, type HostTensor } from '../../runtime/weights/tensor.js';
import { loadStateDict, saveTorchZip } from '../../runtime/weights/torch-zip.js';
import { runCliInProcess } from '../golden/harness.js';

const FIX = fileURLToPath(new URL('../../../test/fixtures/lora/', import.meta.url));
const fix = (name: string) => join(FIX, name);
const PY = '/usr/bin/python3';
const tmp = mkdtempSync(join(tmpdir(), 'visft-lora-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const tmpFile = (name: string) => join(tmp, `${counter++}-${name}`);

/** One unit of rounding, relative: what make_lora.py's check allows too. */
const EPS: Partial<Record<DType, number>> = { f32: 2 ** -23, f16: 2 ** -10, bf16: 2 ** -7, f64: 2 ** -52 };

function assertClose(ours: HostTensor, expected: HostTensor, key: string): void {
  assert.equal(ours.dtype, expected.dtype, key);
  assert.deepEqual(ours.shape, expected.shape, key);
  const o = toFloat64(ours);
  const e = toFloat64(expected);
  const eps = EPS[expected.dtype]!;
  for (let i = 0; i < e.length; i++) {
    assert.ok(Math.abs(o[i] - e[i]) <= eps * Math.abs(e[i]), `${key}[${i}]: ${o[i]} vs ${e[i]}`);
  }
}

/**
 * Same keys (in the same order, where the format keeps an order: safetensors lays tensors out by dtype);
 * qkv weights within rounding of torch's merge; everything else bit-identical.
 */
function assertMergedLike(ours: Map<string, HostTensor>, expected: Map<string, HostTensor>, input: Map<string, HostTensor>, ordered: boolean): void {
  if (ordered) assert.deepEqual([...ours.keys()], [...expected.keys()]);
  else assert.deepEqual([...ours.keys()].sort(), [...expected.keys()].sort());
  for (const [k, e] of expected) {
    const o = ours.get(k)!;
    if (k.endsWith('attn.qkv.weight')) {
      assertClose(o, e, k);
      assert.ok(!tensorsIdentical(o, input.get(k)!), `${k} was not changed`);
      // the k rows (D..2D) carry no LoRA: bit-identical to the input
      const D = o.shape[1];
      const kRows = (t: HostTensor) => castTensor(t, 'f64').data.slice(D * D, 2 * D * D);
      assert.deepEqual(kRows(o), kRows(input.get(k)!), `${k}: k rows changed`);
    } else assert.ok(tensorsIdentical(o, e) && tensorsIdentical(o, input.get(k)!), `${k} changed`);
  }
}

/** make_lora.py's torch.load check of a file we wrote; skipped (with a reason) where there is no torch. */
function torchCheck(t: TestContext, ours: string, expected: string): void {
  if (!existsSync(PY)) return void t.skip('no /usr/bin/python3');
  const r = spawnSync(PY, [fix('make_lora.py'), 'check', ours, expected], { encoding: 'utf8' });
  if (/No module named 'torch'/.test(r.stderr)) return void t.skip('python3-torch is not installed');
  assert.equal(r.status, 0, `torch.load check failed:\n${r.stdout}${r.stderr}`);
}

// ---- merge against torch ---------------------------------------------------------------------------------------

const MERGES = [
  { backbone: 'backbone_eva.pth', expected: 'merged_eva.pth', alpha: 1, dtype: 'f32', prefix: '' },
  { backbone: 'backbone_clip.pth', expected: 'merged_clip.pth', alpha: 1, dtype: 'f16', prefix: 'visual.' },
  { backbone: 'backbone_lavis.pth', expected: 'merged_lavis.pth', alpha: 1, dtype: 'bf16', prefix: 'visual_encoder.' },
  { backbone: 'backbone_eva.pth', expected: 'merged_eva_alpha2.pth', alpha: 2, dtype: 'f32', prefix: '' },
];

for (const m of MERGES) {
  test(`merge-lora: ${m.backbone} (${m.dtype}, prefix "${m.prefix}") alpha ${m.alpha} matches torch, from both LoRA layouts`, (t) => {
    const input = loadStateDict(fix(m.backbone));
    const expected = loadStateDict(fix(m.expected));
    const outs: Map<string, HostTensor>[] = [];
    for (const lora of ['lora_visft.pt', 'lora_mmf.ckpt']) {
      for (const ext of ['pth', 'safetensors']) {
        const out = tmpFile(`merged.${ext}`);
        const s = mergeLoraFiles({ weights: fix(m.backbone), lora: fix(lora), alpha: m.alpha, output: out });
        assert.deepEqual([s.rank, s.scaling, s.prefix, s.dtype], [4, m.alpha / 4, m.prefix, m.dtype]);
        assert.deepEqual(s.merged, [0, 1, 2]);
        assert.deepEqual(s.uncovered, []);
        assert.equal(s.flattened, m.backbone === 'backbone_lavis.pth');
        const written = loadStateDict(out);
        assertMergedLike(written, expected, input, ext === 'pth');
        outs.push(written);
        if (ext === 'pth' && lora === 'lora_visft.pt') torchCheck(t, out, fix(m.expected));
        if (ext === 'safetensors') assert.equal(readSafetensors(out).metadata[MERGED_KEY], `${lora} alpha ${m.alpha}`);
      }
    }
    for (const o of outs.slice(1)) for (const [k, v] of o) assert.ok(tensorsIdentical(v, outs[0].get(k)!), k);
  });
}

test('merge-lora: a negative alpha undoes a merge (to rounding)', () => {
  const merged = tmpFile('m.pth');
  const back = tmpFile('back.pth');
  mergeLoraFiles({ weights: fix('backbone_eva.pth'), lora: fix('lora_visft.pt'), alpha: 1, output: merged });
  mergeLoraFiles({ weights: merged, lora: fix('lora_visft.pt'), alpha: -1, output: back });
  const input = loadStateDict(fix('backbone_eva.pth'));
  for (const [k, v] of loadStateDict(back)) {
    const o = toFloat64(v);
    const e = toFloat64(input.get(k)!);
    o.forEach((x, i) => assert.ok(Math.abs(x - e[i]) <= 1e-6 * Math.max(1, Math.abs(e[i])), `${k}[${i}]`));
  }
});

// ---- properties of the merge arithmetic ----------------------------------------------------------------------

function randomMatrix(rows: number, cols: number, values: number[]): HostTensor {
  return fromNumbers('f64', [rows, cols], Array.from({ length: rows * cols }, (_, i) => values[i % values.length]));
}

test('mergeLora: W + s·[B_q·A_q; 0; B_v·A_v] element by element, and B = 0 changes nothing', () => {
  const arb = fc.record({
    r: fc.integer({ min: 1, max: 6 }), // below, at and past the 4-term unrolling
    D: fc.integer({ min: 1, max: 6 }),
    alpha: fc.double({ min: -4, max: 4, noNaN: true }).filter((x) => x !== 0),
    values: fc.array(fc.double({ min: -2, max: 2, noNaN: true }), { minLength: 7, maxLength: 40 }),
  });
  fc.assert(
    fc.property(arb, ({ r, D, alpha, values }) => {
      const w = randomMatrix(3 * D, D, values);
      const a = randomMatrix(2 * r, D, values.slice(3));
      const b = randomMatrix(2 * D, r, values.slice(5));
      const lora = collectLora(new Map([['visual.blocks.0.attn.qkv.lora_A', a], ['visual.blocks.0.attn.qkv.lora_B', b]]), 'lora');
      const out = toFloat64(mergeLora(new Map([['blocks.0.attn.qkv.weight', w]]), lora, alpha, { backbone: 'bb', lora: 'lora' }).tensors.get('blocks.0.attn.qkv.weight')!);
      const W = toFloat64(w), A = toFloat64(a), B = toFloat64(b);
      for (let row = 0; row < 3 * D; row++) {
        for (let j = 0; j < D; j++) {
          let delta = 0;
          if (row < D || row >= 2 * D) {
            const g = row < D ? 0 : 1; // q group or v group
            const i = row - (g === 0 ? 0 : 2 * D);
            for (let k = 0; k < r; k++) delta += B[(g * D + i) * r + k] * A[(g * r + k) * D + j];
          }
          const want = W[row * D + j] + (alpha / r) * delta;
          assert.ok(Math.abs(out[row * D + j] - want) <= 1e-12 * Math.max(1, Math.abs(want)), `row ${row} col ${j}`);
        }
      }
      for (const dtype of ['f32', 'f16', 'bf16'] as const) {
        const wd = castTensor(w, dtype);
        const zero = collectLora(new Map([['blocks.0.attn.qkv.lora_A', a], ['blocks.0.attn.qkv.lora_B', fromNumbers('f32', [2 * D, r], new Array(2 * D * r).fill(0))]]), 'zero');
        const same = mergeLora(new Map([['blocks.0.attn.qkv.weight', wd]]), zero, alpha, { backbone: 'bb', lora: 'zero' }).tensors.get('blocks.0.attn.qkv.weight')!;
        assert.ok(tensorsIdentical(same, wd), dtype);
      }
    }),
    { numRuns: 60 },
  );
});

// ---- extract from a visft output folder ------------------------------------------------------------------------

/** The fixture LoRA under visft's graph names (optionally scaled, so that two checkpoints differ). */
function visftLora(scale = 1, dtype: DType = 'f32'): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [k, v] of loadStateDict(fix('lora_visft.pt'))) {
    out.set(k.replace(/^visual\./, ''), fromNumbers(dtype, v.shape, Array.from(toFloat64(v), (x) => x * scale)));
  }
  return out;
}

function writeCheckpoint(runDir: string, update: number, stage: string, stageIndex: number, weights: Map<string, HostTensor>, latest = true): string {
  const name = `ckpt-${String(update).padStart(8, '0')}`;
  const dir = join(runDir, name);
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'weights.safetensors'), weights);
  writeSafetensors(join(dir, 'optimizer.safetensors'), new Map([['step', fromNumbers('f32', [], [update])]]));
  const run = runDir.split('/').pop();
  writeFileSync(join(dir, 'state.json'), JSON.stringify({ format: 'visft-checkpoint', version: 1, stage, stage_index: stageIndex, run, update }));
  if (latest) writeFileSync(join(runDir, 'latest'), `${name}\n`);
  return dir;
}

/** OUT/stage1/caption (no LoRA, 2 checkpoints), OUT/stage2/joint (LoRA at 100 and, latest, 200). */
function syntheticOutput(): { out: string; latestCkpt: string } {
  const out = join(tmp, `out-${counter++}`);
  const head = fromNumbers('f32', [3, 2], [1, 2, 3, 4, 5, 6]);
  writeCheckpoint(join(out, 'stage1', 'caption'), 500, 'stage1', 0, new Map([['caption.fc.weight', head]]));
  writeCheckpoint(join(out, 'stage1', 'caption'), 1000, 'stage1', 0, new Map([['caption.fc.weight', head]]));
  const joint = join(out, 'stage2', 'joint');
  writeCheckpoint(joint, 100, 'stage2', 1, new Map([...visftLora(0.5), ['caption.fc.weight', head]]));
  const latestCkpt = writeCheckpoint(joint, 200, 'stage2', 1, new Map([...visftLora(1, 'f16'), ['caption.fc.weight', head]]));
  writeCheckpoint(joint, 300, 'stage2', 1, visftLora(3), false); // written but not yet complete: `latest` still says 200
  return { out, latestCkpt };
}

test('extract-lora: an output folder picks the latest checkpoint of the last stage with LoRA, every input level works', () => {
  const { out, latestCkpt } = syntheticOutput();
  const expected = visftLora(1, 'f16');
  for (const input of [out, join(out, 'stage2'), join(out, 'stage2', 'joint'), latestCkpt, join(latestCkpt, 'weights.safetensors')]) {
    for (const format of ['loralib', 'visft'] as LoraKeyFormat[]) {
      for (const ext of ['pth', 'pt', 'safetensors']) {
        const file = tmpFile(`lora.${ext}`);
        const s = extractLora(input, file, format);
        if (input !== join(latestCkpt, 'weights.safetensors')) {
          assert.equal(s.found.ckptDir, latestCkpt);
          assert.deepEqual(s.found.state, { stage: 'stage2', stage_index: 1, run: 'joint', update: 200 });
        }
        assert.deepEqual(s.lora.ignored, ['caption.fc.weight']);
        const got = loadStateDict(file);
        assert.deepEqual([...got.keys()], [0, 1, 2].flatMap((n) => [loraKey(n, 'A', format), loraKey(n, 'B', format)]));
        for (const n of [0, 1, 2]) {
          for (const which of ['A', 'B'] as const) {
            const t = got.get(loraKey(n, which, format))!;
            assert.equal(t.dtype, 'f32');
            assert.ok(tensorsIdentical(t, castTensor(expected.get(`blocks.${n}.attn.qkv.lora_${which}`)!, 'f32')));
          }
        }
      }
    }
  }
});

test('extract-lora round-trips to the tensors ViSFT released; torch.load reads our .pth the same', (t) => {
  const run = join(tmp, `run-${counter++}`, 'stage2', 'joint');
  writeCheckpoint(run, 5000, 'stage2', 1, visftLora());
  const file = tmpFile('eva_lora_5000.pth');
  extractLora(run, file);
  const ours = loadStateDict(file);
  const released = loadStateDict(fix('lora_visft.pt'));
  assert.deepEqual([...ours.keys()], [...released.keys()]);
  for (const [k, v] of released) assert.ok(tensorsIdentical(ours.get(k)!, v), k);
  torchCheck(t, file, fix('lora_visft.pt'));
  // and merging ours gives exactly what merging the released file gives
  const a = tmpFile('a.safetensors');
  const b = tmpFile('b.safetensors');
  mergeLoraFiles({ weights: fix('backbone_clip.pth'), lora: file, alpha: 1, output: a });
  mergeLoraFiles({ weights: fix('backbone_clip.pth'), lora: fix('lora_visft.pt'), alpha: 1, output: b });
  const [x, y] = [readSafetensors(a).tensors, readSafetensors(b).tensors];
  for (const [k, v] of x) assert.ok(tensorsIdentical(v, y.get(k)!), k);
});

// ---- errors --------------------------------------------------------------------------------------------------

function throwsLora(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LoraError, `expected a LoraError, got ${String(e)}`);
    for (const p of parts) assert.match(e.message, typeof p === 'string' ? new RegExp(p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : p);
    return true;
  });
}

function loraFile(entries: [string, HostTensor][]): string {
  const file = tmpFile('lora.safetensors');
  writeSafetensors(file, new Map(entries));
  return file;
}

const f32 = (rows: number, cols: number) => fromNumbers('f32', [rows, cols], Array.from({ length: rows * cols }, (_, i) => (i % 7) / 7));

test('extract-lora errors: no checkpoints, no LoRA keys, bad shapes, missing halves, a bad `latest`, the output name', () => {
  const empty = join(tmp, `empty-${counter++}`);
  mkdirSync(join(empty, 'stage1'), { recursive: true });
  throwsLora(() => findLoraWeights(empty), empty, 'no checkpoints');
  throwsLora(() => findLoraWeights(join(tmp, 'nowhere')), 'does not exist');

  const { out } = syntheticOutput();
  throwsLora(() => extractLora(join(out, 'stage1', 'caption'), tmpFile('x.pth')), 'no LoRA tensors', 'caption.fc.weight');
  rmSync(join(out, 'stage2'), { recursive: true });
  throwsLora(() => extractLora(out, tmpFile('x.pth')), 'no LoRA keys in the latest checkpoint of any run');

  const x = tmpFile('x.pth');
  throwsLora(() => extractLora(loraFile([['blocks.0.attn.qkv.lora_A', f32(3, 8)], ['blocks.0.attn.qkv.lora_B', f32(16, 1)]]), x), '"blocks.0.attn.qkv.lora_A" is f32[3, 8]', 'even');
  throwsLora(() => extractLora(loraFile([['blocks.0.attn.qkv.lora_A', f32(8, 8)], ['blocks.0.attn.qkv.lora_B', f32(16, 3)]]), x), 'rank mismatch', '"blocks.0.attn.qkv.lora_B" is f32[16, 3]', 'r 4');
  throwsLora(() => extractLora(loraFile([['blocks.0.attn.qkv.lora_A', f32(8, 8)], ['blocks.0.attn.qkv.lora_B', f32(12, 4)]]), x), '"blocks.0.attn.qkv.lora_B" is f32[12, 4]', 'D 8');
  throwsLora(() => extractLora(loraFile([['blocks.0.attn.qkv.lora_A', f32(8, 8)], ['blocks.0.attn.qkv.lora_B', f32(16, 4)], ['blocks.1.attn.qkv.lora_A', f32(4, 8)], ['blocks.1.attn.qkv.lora_B', f32(16, 2)]]), x), '"blocks.1.attn.qkv.lora_A" is f32[4, 8] (r 2', 'same shapes');
  throwsLora(() => extractLora(loraFile([['blocks.0.attn.qkv.lora_A', f32(8, 8)]]), x), 'block 0 has "blocks.0.attn.qkv.lora_A" but no lora_B');
  throwsLora(() => extractLora(loraFile([['blocks.3.attn.qkv.lora_B', f32(16, 4)]]), x), 'block 3 has "blocks.3.attn.qkv.lora_B" but no lora_A');
  throwsLora(() => extractLora(loraFile([['blocks.0.mlp.fc1.lora_A', f32(8, 8)]]), x), '"blocks.0.mlp.fc1.lora_A" is a LoRA tensor outside blocks.N.attn.qkv');
  throwsLora(() => extractLora(loraFile([['visual.blocks.0.attn.qkv.lora_A', f32(8, 8)], ['blocks.0.attn.qkv.lora_A', f32(8, 8)]]), x), 'are both lora_A of block 0');
  throwsLora(() => extractLora(fix('lora_visft.pt'), tmpFile('x.bin')), 'must end in .safetensors, .pth or .pt');

  const run = join(tmp, `run-${counter++}`);
  writeCheckpoint(run, 100, 'stage2', 1, visftLora());
  writeFileSync(join(run, 'latest'), 'ckpt-00000999\n');
  throwsLora(() => findLoraWeights(run), 'names ckpt-00000999, which does not exist');
  writeFileSync(join(run, 'latest'), '../elsewhere\n');
  throwsLora(() => findLoraWeights(run), 'is not the name of a checkpoint folder');
  rmSync(join(run, 'latest'));
  throwsLora(() => findLoraWeights(run), 'no `latest` file');
});

test('extract-lora: a broken .safetensors file gets the safetensors reader\'s error; a torch archive under that name still loads', () => {
  const broken = tmpFile('broken.safetensors');
  writeFileSync(broken, 'garbage');
  assert.throws(() => extractLora(broken, tmpFile('x.pth')), (e: unknown) => e instanceof WeightsFormatError && /broken\.safetensors: not a safetensors file/.test(e.message));
  const renamed = tmpFile('renamed.safetensors');
  saveTorchZip(renamed, new Map([['blocks.0.attn.qkv.lora_A', f32(8, 8)], ['blocks.0.attn.qkv.lora_B', f32(16, 4)]]));
  const out = tmpFile('x.safetensors');
  extractLora(renamed, out);
  assert.deepEqual([...readSafetensors(out).tensors.keys()].sort(), ['visual.blocks.0.attn.qkv.lora_A', 'visual.blocks.0.attn.qkv.lora_B']);
});

test('merge-lora errors: a block the backbone lacks, shape mismatches naming both tensors, no qkv, overwriting the input', () => {
  const out = tmpFile('o.pth');
  const eva = fix('backbone_eva.pth');
  const block5 = loraFile([['visual.blocks.5.attn.qkv.lora_A', f32(8, 8)], ['visual.blocks.5.attn.qkv.lora_B', f32(16, 4)]]);
  throwsLora(() => mergeLoraFiles({ weights: eva, lora: block5, alpha: 1, output: out }), '"visual.blocks.5.attn.qkv.lora_A" is for block 5', 'no blocks.5.attn.qkv.weight', 'its blocks: 0..2');
  const d6 = loraFile([['visual.blocks.0.attn.qkv.lora_A', f32(8, 6)], ['visual.blocks.0.attn.qkv.lora_B', f32(12, 4)]]);
  throwsLora(() => mergeLoraFiles({ weights: eva, lora: d6, alpha: 1, output: out }), 'shape mismatch', '"visual.blocks.0.attn.qkv.lora_A"', 'f32[8, 6]', '"blocks.0.attn.qkv.weight"', 'f32[24, 8]');
  const noB = loraFile([['visual.blocks.0.attn.qkv.lora_A', f32(8, 8)]]);
  throwsLora(() => mergeLoraFiles({ weights: eva, lora: noB, alpha: 1, output: out }), 'no lora_B');
  const headOnly = tmpFile('head.pth');
  saveTorchZip(headOnly, new Map([['head.weight', f32(2, 2)]]));
  throwsLora(() => mergeLoraFiles({ weights: headOnly, lora: fix('lora_visft.pt'), alpha: 1, output: out }), 'no blocks.N.attn.qkv.weight under any prefix');
  const two = tmpFile('two.safetensors');
  writeSafetensors(two, new Map([['a.blocks.0.attn.qkv.weight', f32(24, 8)], ['b.blocks.0.attn.qkv.weight', f32(24, 8)]]));
  throwsLora(() => mergeLoraFiles({ weights: two, lora: fix('lora_visft.pt'), alpha: 1, output: out }), 'several prefixes', '"a."', '"b."');
  throwsLora(() => mergeLoraFiles({ weights: eva, lora: fix('lora_visft.pt'), alpha: 1, output: eva }), 'is the backbone itself');
  throwsLora(() => mergeLoraFiles({ weights: eva, lora: fix('lora_visft.pt'), alpha: 1, output: tmpFile('o.bin') }), 'must end in');
  assert.ok(!existsSync(out), 'nothing written on error');
});

// ---- the CLI -------------------------------------------------------------------------------------------------

test('the CLI: 0 when done (with a summary), 1 for bad files, 2 for bad usage', async () => {
  const out = tmpFile('m.safetensors');
  let r = await runCliInProcess(['merge-lora', '--weights', fix('backbone_clip.pth'), '--lora', fix('lora_visft.pt'), '-o', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /merged 3 blocks \(visual\.blocks\.0\.\.2\.attn\.qkv\.weight, f16\): r 4, alpha 1, scaling 0\.25/);
  r = await runCliInProcess(['merge-lora', '--weights', out, '--lora', fix('lora_visft.pt'), '-o', tmpFile('again.safetensors')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /already records a merge \(lora_visft\.pt alpha 1\)/);

  const { out: visftOut, latestCkpt } = syntheticOutput();
  r = await runCliInProcess(['extract-lora', visftOut, '-o', tmpFile('l.pth'), '--format', 'visft']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes(`${latestCkpt} (stage stage2, run joint, update 200)`), r.stdout);
  assert.match(r.stdout, /LoRA of 3 blocks \(0\.\.2\), r 4, D 8, visft keys/);

  for (const argv of [
    ['extract-lora', fix('backbone_eva.pth'), '-o', tmpFile('x.pth')],
    ['merge-lora', '--weights', fix('backbone_eva.pth'), '--lora', fix('make_lora.py'), '-o', tmpFile('x.pth')],
    ['merge-lora', '--weights', join(tmp, 'missing.pth'), '--lora', fix('lora_visft.pt'), '-o', tmpFile('x.pth')],
  ]) {
    r = await runCliInProcess(argv);
    assert.equal(r.code, 1, `${argv.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^visft: \S/);
    assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
  }
  for (const argv of [
    ['extract-lora', fix('lora_visft.pt')],
    ['extract-lora', fix('lora_visft.pt'), '-o', tmpFile('x.pth'), '--format', 'peft'],
    ['merge-lora', '--weights', fix('backbone_eva.pth'), '-o', tmpFile('x.pth')],
    ['merge-lora', '--weights', fix('backbone_eva.pth'), '--lora', fix('lora_visft.pt'), '--alpha', 'one', '-o', tmpFile('x.pth')],
    ['merge-lora', '--weights', fix('backbone_eva.pth'), '--lora', fix('lora_visft.pt'), '--alpha', '0', '-o', tmpFile('x.pth')],
  ]) {
    r = await runCliInProcess(argv);
    assert.equal(r.code, 2, `${argv.join(' ')}: ${r.stderr}`);
  }
});
