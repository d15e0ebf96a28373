// Reading the caption format: a set written by h5py exactly as create_input_files writes it (checked against what
// ViSFT's CaptionCOCODataset returns under torch), and the demo set (checked against the writer's own values).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { captionVocab, imageRuns, normalisationTable, openCaptionDataset, type CaptionBatch } from '../../runtime/data/caption.js';
import { DEMO_IMAGE_SIZE, DEMO_MAX_LEN, demoWordmap } from '../../runtime/data/demo-caption.js';
import { generateDemoData } from '../../runtime/data/demo.js';
import { COLOURS } from '../../runtime/data/shapes.js';
import { demoSpec, FIXTURES, IMAGENET, SMALL_DEMO, smallDemo } from './util.js';

interface Expected {
  name: string;
  cpi: number;
  maxLen: number;
  vocab: number;
  mean: [number, number, number];
  std: [number, number, number];
  splits: Record<string, { images: number; shape: number[]; samples: { index: number; image: number[]; caption: number[]; caplen: number }[] }>;
}
const expected = JSON.parse(readFileSync(join(FIXTURES, 'caption_expected.json'), 'utf8')) as Expected;
const fixtureRoot = join(FIXTURES, 'caption');

/** Checks targets and mask against captions and caplens: targets = captions[:, 1:], mask = t < caplen - 1. */
function checkTargetsAndMask(b: CaptionBatch, maxLen: number): void {
  for (let k = 0; k < b.caplens.length; k++) {
    for (let t = 0; t < maxLen - 1; t++) {
      assert.equal(b.targets[k * (maxLen - 1) + t], b.captions[k * maxLen + t + 1]);
      assert.equal(b.mask[k * (maxLen - 1) + t], t < b.caplens[k] - 1 ? 1 : 0);
    }
  }
}

for (const split of ['TRAIN', 'VAL']) {
  test(`the h5py fixture (${split}) reads as ViSFT's CaptionCOCODataset gives it, bit for bit`, async () => {
    const want = expected.splits[split];
    const ds = await openCaptionDataset({ root: fixtureRoot, split, name: expected.name, captionsPerImage: expected.cpi, maxLen: expected.maxLen, mean: expected.mean, std: expected.std });
    try {
      assert.equal(ds.images, want.images);
      assert.equal(ds.size, want.images * expected.cpi);
      assert.deepEqual(ds.imageShape, want.shape);
      assert.equal(ds.vocab, expected.vocab);
      assert.equal(ds.wordmap.get('<pad>'), 0);
      assert.equal(ds.wordmap.get('<end>'), expected.vocab - 1);
      const b = ds.batch(want.samples.map((s) => s.index));
      const per = want.shape[0] * want.shape[1] * want.shape[2];
      assert.equal(b.image.length, want.samples.length * per);
      want.samples.forEach((s, k) => {
        assert.deepEqual([...b.image.subarray(k * per, (k + 1) * per)], s.image, `image of caption ${s.index}`);
        assert.deepEqual([...b.captions.subarray(k * expected.maxLen, (k + 1) * expected.maxLen)], s.caption, `caption ${s.index}`);
        assert.equal(b.caplens[k], s.caplen);
      });
      checkTargetsAndMask(b, expected.maxLen);
    } finally {
      ds.close();
    }
  });
}

test('captionVocab counts the word map', async () => {
  assert.equal(captionVocab(fixtureRoot, expected.name), expected.vocab);
  assert.equal(captionVocab(await smallDemo(), 'demo'), 32);
});

test('the demo word map is the specified one: <pad> 0, 28 words, <unk> 29, <start> 30, <end> 31', () => {
  const wm = demoWordmap();
  assert.equal(Object.keys(wm).length, 32);
  assert.deepEqual([wm['<pad>'], wm['<unk>'], wm['<start>'], wm['<end>']], [0, 29, 30, 31]);
  assert.deepEqual(Object.values(wm).sort((a, b) => a - b), Array.from({ length: 32 }, (_, i) => i));
});

test('demo batches hold the writer\'s images, captions and lengths (any indices, repeats, any order)', async () => {
  const root = await smallDemo();
  const data = generateDemoData(SMALL_DEMO);
  for (const written of data.caption) {
    const ds = await openCaptionDataset(demoSpec(root, written.split));
    try {
      assert.equal(ds.images, written.count);
      assert.equal(ds.size, written.captions.length);
      assert.deepEqual(ds.imageShape, [3, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE]);
      assert.equal(ds.vocab, 32);
      const luts = [0, 1, 2].map((c) => normalisationTable(IMAGENET.mean[c], IMAGENET.std[c]));
      const per = 3 * DEMO_IMAGE_SIZE * DEMO_IMAGE_SIZE;
      const plane = DEMO_IMAGE_SIZE * DEMO_IMAGE_SIZE;
      fc.assert(
        fc.property(fc.array(fc.nat(ds.size - 1), { maxLength: 12 }), (indices) => {
          const b = ds.batch(indices);
          assert.equal(b.image.length, indices.length * per);
          indices.forEach((ci, k) => {
            assert.deepEqual([...b.captions.subarray(k * DEMO_MAX_LEN, (k + 1) * DEMO_MAX_LEN)], written.captions[ci]);
            assert.equal(b.caplens[k], written.caplens[ci]);
            const img = Math.floor(ci / 5);
            for (let p = 0; p < per; p += 97) {
              const c = Math.floor(p / plane);
              assert.equal(b.image[k * per + p], luts[c][written.images[img * per + p]], `caption ${ci} pixel ${p}`);
            }
          });
          checkTargetsAndMask(b, DEMO_MAX_LEN);
        }),
        { numRuns: 25 },
      );
    } finally {
      ds.close();
    }
  }
});

test('batch reads each run of consecutive images with one slice, never the whole dataset', async () => {
  const ds = await openCaptionDataset(demoSpec(await smallDemo()));
  try {
    // white-box: record the HDF5 hyperslabs the dataset asks for
    const dataset = (ds as unknown as { dataset: { slice: (r: number[][]) => unknown } }).dataset;
    const slices: number[][][] = [];
    const slice = dataset.slice.bind(dataset);
    dataset.slice = (ranges) => (slices.push(ranges), slice(ranges));
    ds.batch([27, 0, 4, 26, 11]); // images 5, 0, 0, 5, 2
    assert.deepEqual(slices, [[[0, 1]], [[2, 3]], [[5, 6]]]);
  } finally {
    ds.close();
  }
});

test('imageRuns: maximal runs of exactly the needed images', () => {
  fc.assert(
    fc.property(fc.array(fc.nat(200)), fc.integer({ min: 1, max: 7 }), (indices, cpi) => {
      const runs = imageRuns(indices, cpi);
      const covered = runs.flatMap(([a, b]) => Array.from({ length: b - a }, (_, i) => a + i));
      assert.deepEqual(covered, [...new Set(indices.map((i) => Math.floor(i / cpi)))].sort((a, b) => a - b));
      for (let r = 1; r < runs.length; r++) assert.ok(runs[r][0] > runs[r - 1][1], 'runs are separate and ordered');
    }),
  );
});

test('demo captions describe their pictures: the named colours are drawn at the shapes\' centres', () => {
  const data = generateDemoData({ seed: 3, images: 40 });
  const wm = demoWordmap();
  const names = Object.fromEntries(Object.entries(wm).map(([w, id]) => [id, w]));
  const split = data.caption[0];
  const plane = DEMO_IMAGE_SIZE * DEMO_IMAGE_SIZE;
  split.scenes.forEach((shapes, i) => {
    for (const s of shapes) {
      const p = Math.round(s.cy) * DEMO_IMAGE_SIZE + Math.round(s.cx);
      const rgb = [0, 1, 2].map((c) => split.images[i * 3 * plane + c * plane + p]);
      assert.deepEqual(rgb, [...COLOURS[s.colour]], `image ${i}: ${s.colour} ${s.kind}`);
    }
    for (let j = 0; j < 5; j++) {
      const ci = i * 5 + j;
      const words = split.captions[ci].slice(1, split.caplens[ci] - 1).map((id) => names[id]);
      assert.deepEqual(words, split.sentences[ci]);
      for (const s of shapes.slice(0, 1)) assert.ok(words.includes(s.colour) && words.includes(s.kind), `caption ${ci} '${words.join(' ')}' names the ${s.colour} ${s.kind}`);
      if (shapes.length === 1) assert.ok(words.includes(shapes[0].place) || words.includes(shapes[0].size), `caption ${ci} names place or size`);
    }
  });
  assert.ok(split.scenes.some((s) => s.length === 1) && split.scenes.some((s) => s.length === 2), 'one- and two-shape pictures');
});

test('the normalisation table is torch\'s float32 (x / 255 - mean) / std', () => {
  const t = normalisationTable(0.485, 0.229);
  assert.equal(t[0], Math.fround(Math.fround(0 - Math.fround(0.485)) / Math.fround(0.229)));
  for (let p = 0; p < 256; p++) assert.ok(Math.abs(t[p] - (p / 255 - 0.485) / 0.229) < 1e-6);
});
