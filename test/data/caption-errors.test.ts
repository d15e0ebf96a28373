// Every way a caption set can be wrong gives a DataError that names the file and what is wrong (and the index).
import assert from 'node:assert/strict';
import { readFileSync, rmSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { captionVocab, DataError, openCaptionDataset, type CaptionDatasetSpec } from '../../runtime/data/caption.js';
import { DEMO_IMAGE_SIZE } from '../../runtime/data/demo-caption.js';
import { writeHdf5Atomic, type H5File } from '../../runtime/data/hdf5.js';
import { copyOfSmallDemo, demoSpec, SMALL_DEMO } from './util.js';

const IMAGES = 'TRAIN_IMAGES_demo.hdf5';
const CAPTIONS = 'TRAIN_CAPTIONS_demo.json';
const CAPLENS = 'TRAIN_CAPLENS_demo.json';
const WORDMAP = 'WORDMAP_demo.json';
const N = SMALL_DEMO.images;
const S = DEMO_IMAGE_SIZE;

const readJson = (dir: string, f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8'));
const writeJson = (dir: string, f: string, v: unknown) => writeFileSync(join(dir, f), JSON.stringify(v));
const editJson = (f: string, edit: (v: any) => unknown) => (dir: string) => writeJson(dir, f, edit(readJson(dir, f)));
const rewriteImages = (fill: (f: H5File) => void) => (dir: string) => writeHdf5Atomic(join(dir, IMAGES), fill);
const cpi5 = (f: H5File) => f.create_attribute('captions_per_image', 5, null, '<q');

interface Case {
  name: string;
  corrupt: (dir: string) => void | Promise<void>;
  error: RegExp;
  spec?: Partial<CaptionDatasetSpec>;
}

const cases: Case[] = [
  { name: 'missing images file', corrupt: (d) => rmSync(join(d, IMAGES)), error: /TRAIN_IMAGES_demo\.hdf5: not found\. Missing: TRAIN_IMAGES_demo\.hdf5 .*has: .*TRAIN_CAPTIONS_demo\.json.*Caption sets there: 'demo' \(VAL\)/ },
  { name: 'missing captions file', corrupt: (d) => rmSync(join(d, CAPTIONS)), error: /TRAIN_CAPTIONS_demo\.json: not found/ },
  { name: 'missing caplens file', corrupt: (d) => rmSync(join(d, CAPLENS)), error: /TRAIN_CAPLENS_demo\.json: not found/ },
  { name: 'missing word map', corrupt: (d) => rmSync(join(d, WORDMAP)), error: /WORDMAP_demo\.json: not found/ },
  { name: 'another name', corrupt: () => {}, spec: { name: 'coco' }, error: /TRAIN_IMAGES_coco\.hdf5: not found.*Caption sets there: 'demo' \(TRAIN, VAL\)/ },
  { name: 'missing folder', corrupt: (d) => rmSync(d, { recursive: true }), error: /caption data folder .* does not exist \(expected TRAIN_IMAGES_demo\.hdf5/ },
  { name: 'not HDF5', corrupt: (d) => writeFileSync(join(d, IMAGES), 'images go here'), error: /TRAIN_IMAGES_demo\.hdf5: not an HDF5 file/ },
  { name: 'truncated HDF5', corrupt: (d) => truncateSync(join(d, IMAGES), statSync(join(d, IMAGES)).size - 1000), error: /TRAIN_IMAGES_demo\.hdf5: cannot open as HDF5: truncated: the file has \d+ bytes but its superblock says \d+/ },
  {
    name: 'no images dataset',
    corrupt: rewriteImages((f) => (cpi5(f), f.create_dataset({ name: 'imgs', data: new Uint8Array(N * 3 * S * S), shape: [N, 3, S, S], dtype: '<B' }))),
    error: /TRAIN_IMAGES_demo\.hdf5: no dataset 'images' \(the file has: imgs\)/,
  },
  { name: 'images is a group', corrupt: rewriteImages((f) => (cpi5(f), f.create_group('images'))), error: /'images' is a group, expected a dataset/ },
  {
    name: 'float images',
    corrupt: rewriteImages((f) => (cpi5(f), f.create_dataset({ name: 'images', data: new Float32Array(N * 3 * S * S), shape: [N, 3, S, S], dtype: '<f' }))),
    error: /TRAIN_IMAGES_demo\.hdf5: 'images' has dtype float32, expected uint8/,
  },
  {
    name: 'int16 images',
    corrupt: rewriteImages((f) => (cpi5(f), f.create_dataset({ name: 'images', data: new Int16Array(N * 3 * S * S), shape: [N, 3, S, S], dtype: '<h' }))),
    error: /'images' has dtype int16, expected uint8/,
  },
  {
    name: 'rank 3',
    corrupt: rewriteImages((f) => (cpi5(f), f.create_dataset({ name: 'images', data: new Uint8Array(N * 3 * S), shape: [N, 3, S], dtype: '<B' }))),
    error: /'images' has shape \[6, 3, 56\], expected \[N, 3, H, W\]/,
  },
  {
    name: 'HWC layout',
    corrupt: rewriteImages((f) => (cpi5(f), f.create_dataset({ name: 'images', data: new Uint8Array(N * 3 * S * S), shape: [N, S, S, 3], dtype: '<B' }))),
    error: /'images' has 56 channels \(shape \[6, 56, 56, 3\]\), expected 3/,
  },
  {
    name: 'no captions_per_image',
    corrupt: rewriteImages((f) => f.create_dataset({ name: 'images', data: new Uint8Array(N * 3 * S * S), shape: [N, 3, S, S], dtype: '<B' })),
    error: /TRAIN_IMAGES_demo\.hdf5: no attribute 'captions_per_image'/,
  },
  {
    name: 'captions_per_image not an integer',
    corrupt: rewriteImages((f) => (f.create_attribute('captions_per_image', 'five'), f.create_dataset({ name: 'images', data: new Uint8Array(N * 3 * S * S), shape: [N, 3, S, S], dtype: '<B' }))),
    error: /attribute 'captions_per_image' must be an integer, found five/,
  },
  { name: 'captions_per_image differs from the spec', corrupt: () => {}, spec: { captionsPerImage: 3 }, error: /attribute 'captions_per_image' is 5, the dataset spec says 3/ },
  { name: 'too few captions', corrupt: editJson(CAPTIONS, (c) => c.slice(1)), error: /TRAIN_CAPTIONS_demo\.json: 29 captions, expected 30 \(images x captions_per_image\)/ },
  { name: 'captions not a list', corrupt: editJson(CAPTIONS, () => ({ a: 1 })), error: /TRAIN_CAPTIONS_demo\.json: expected a JSON list of captions/ },
  { name: 'captions not JSON', corrupt: (d) => writeFileSync(join(d, CAPTIONS), '[[30, 1'), error: /TRAIN_CAPTIONS_demo\.json: not valid JSON/ },
  { name: 'a short caption', corrupt: editJson(CAPTIONS, (c) => ((c[17] = c[17].slice(0, 11)), c)), error: /TRAIN_CAPTIONS_demo\.json: caption 17 has 11 ids, expected max_len 12/ },
  { name: 'max_len of the spec differs', corrupt: () => {}, spec: { maxLen: 52 }, error: /caption 0 has 12 ids, expected max_len 52/ },
  { name: 'an id outside the word map', corrupt: editJson(CAPTIONS, (c) => ((c[9][2] = 32), c)), error: /TRAIN_CAPTIONS_demo\.json: caption 9 position 2: id 32 is not in the word map \(ids 0\.\.31\)/ },
  { name: 'a non-integer id', corrupt: editJson(CAPTIONS, (c) => ((c[4][1] = 1.5), c)), error: /caption 4 position 1: id 1\.5 is not in the word map/ },
  { name: 'no <start>', corrupt: editJson(CAPTIONS, (c) => ((c[3][0] = 1), c)), error: /caption 3 starts with id 1, expected <start> \(30\)/ },
  { name: 'too few caption lengths', corrupt: editJson(CAPLENS, (c) => c.slice(2)), error: /TRAIN_CAPLENS_demo\.json: 28 caption lengths, expected 30/ },
  { name: 'a caption length of 1', corrupt: editJson(CAPLENS, (c) => ((c[5] = 1), c)), error: /TRAIN_CAPLENS_demo\.json: caption length 5 is 1, expected an integer in \[2, 12\]/ },
  { name: 'a caption length over max_len', corrupt: editJson(CAPLENS, (c) => ((c[6] = 13), c)), error: /caption length 6 is 13, expected an integer in \[2, 12\]/ },
  { name: 'a length that misses <end>', corrupt: editJson(CAPLENS, (c) => ((c[7] = c[7] - 1), c)), error: /TRAIN_CAPTIONS_demo\.json: caption 7 has id \d+ at position \d+, expected <end> \(31\) there as its length is \d+/ },
  {
    name: 'words after <end>',
    corrupt: (d) => {
      editJson(CAPTIONS, (c) => ((c[8] = [30, 1, 7, 31, 0, 0, 0, 0, 0, 0, 0, 5]), c))(d); // "a circle", then a stray word
      editJson(CAPLENS, (c) => ((c[8] = 4), c))(d);
    },
    error: /TRAIN_CAPTIONS_demo\.json: caption 8 has id 5 at position 11, after its <end>; expected <pad> \(0\)/,
  },
  { name: 'word map without <unk>', corrupt: editJson(WORDMAP, (w) => (delete w['<unk>'], (w['<end>'] = 29), w)), error: /WORDMAP_demo\.json: the word map lacks <unk>/ },
  { name: 'word map with duplicate ids', corrupt: editJson(WORDMAP, (w) => ((w.side = 27), w)), error: /WORDMAP_demo\.json: duplicate id 27: 'with' and 'side'/ },
  { name: '<pad> not 0', corrupt: editJson(WORDMAP, (w) => ((w['<pad>'] = 28), (w.side = 0), w)), error: /WORDMAP_demo\.json: <pad> must have id 0/ },
  { name: 'word map ids with a gap', corrupt: editJson(WORDMAP, (w) => ((w.side = 40), w)), error: /WORDMAP_demo\.json: id 40 of 'side' is outside 0\.\.31/ },
  { name: 'word map not an object', corrupt: editJson(WORDMAP, (w) => Object.keys(w)), error: /WORDMAP_demo\.json: a word map is a JSON object of word -> id, found a list/ },
  { name: 'word map id not an integer', corrupt: editJson(WORDMAP, (w) => ((w.side = '28'), w)), error: /WORDMAP_demo\.json: the id of 'side' must be a non-negative integer, found "28"/ },
];

for (const c of cases) {
  test(`DataError: ${c.name}`, async () => {
    const dir = await copyOfSmallDemo('bad');
    await c.corrupt(dir);
    await assert.rejects(openCaptionDataset({ ...demoSpec(dir), ...c.spec }), (e: unknown) => {
      assert.ok(e instanceof DataError, `not a DataError: ${e}`);
      assert.match(e.message, c.error);
      assert.doesNotMatch(e.message, /HDF5-DIAG|\n/, 'one line, no HDF5 stack');
      return true;
    });
  });
}

test('captionVocab gives the same errors for the word map', async () => {
  const dir = await copyOfSmallDemo('vocab');
  editJson(WORDMAP, (w) => ((w.side = 27), w))(dir);
  assert.throws(() => captionVocab(dir, 'demo'), (e: unknown) => e instanceof DataError && /duplicate id 27/.test(e.message));
  assert.throws(() => captionVocab(dir, 'nope'), (e: unknown) => e instanceof DataError && /WORDMAP_nope\.json: not found.*Caption sets there: 'demo'/.test(e.message));
});

test('batch rejects caption indices outside the set', async () => {
  const ds = await openCaptionDataset(demoSpec(await copyOfSmallDemo('range')));
  try {
    assert.throws(() => ds.batch([0, 30]), /caption index 30 is outside 0\.\.29/);
    assert.throws(() => ds.batch([1.5]), /caption index 1\.5 is outside/);
  } finally {
    ds.close();
  }
  assert.throws(() => ds.batch([0]), /after close/);
});
