// `visft make-demo-data`: deterministic bytes, files h5py reads, valid COCO, and it never overwrites others' files.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import jpeg from 'jpeg-js';
import { DEMO_COCO_CATEGORIES, type CocoFile } from '../../runtime/data/demo-coco.js';
import { DEMO_MANIFEST, DemoDataError, demoFiles, generateDemoData, makeDemoData } from '../../runtime/data/demo.js';
import { runCliInProcess } from '../golden/harness.js';
import { H5PY_DEMO, H5PY_FIXTURE, type H5pyView } from './h5py-check.js';
import { pythonJson, type PyJson } from '../../runtime/data/python-json.js';
import { FIXTURES, SMALL_DEMO, smallDemo, tempDir } from './util.js';

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

function listFiles(root: string, rel = ''): string[] {
  return readdirSync(join(root, rel), { withFileTypes: true }).flatMap((e) => {
    const path = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory() ? listFiles(root, path) : [path];
  }).sort();
}

test('the same seed gives the same bytes; another seed other data', async () => {
  const [a, b, c] = [tempDir('seed-a'), tempDir('seed-b'), tempDir('seed-c')];
  await makeDemoData(a, { seed: 5, images: 8 });
  await makeDemoData(b, { seed: 5, images: 8 });
  await makeDemoData(c, { seed: 6, images: 8 });
  const files = listFiles(a);
  assert.deepEqual(files, listFiles(b));
  assert.deepEqual(files, [...demoFiles(generateDemoData({ seed: 5, images: 8 })), DEMO_MANIFEST].sort());
  for (const f of files) assert.ok(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), `${f} differs between two runs`);
  for (const f of ['TRAIN_IMAGES_demo.hdf5', 'TRAIN_CAPTIONS_demo.json', 'annotations/instances_train2017.json']) {
    assert.ok(!readFileSync(join(a, f)).equals(readFileSync(join(c, f))), `${f} is the same for seeds 5 and 6`);
  }
});

test('h5py reads the demo HDF5 files as create_input_files\' (recorded by h5py-check.ts)', async () => {
  const recorded = JSON.parse(readFileSync(H5PY_FIXTURE, 'utf8')) as Record<string, H5pyView>;
  const dir = tempDir('h5py');
  await makeDemoData(dir, H5PY_DEMO);
  const data = generateDemoData(H5PY_DEMO);
  for (const split of data.caption) {
    const name = `${split.split}_IMAGES_demo.hdf5`;
    const view = recorded[name];
    const hint = `${name}: rerun node dist/test/data/h5py-check.js if h5wasm changed`;
    assert.equal(sha256(readFileSync(join(dir, name))), view.file_sha256, hint);
    assert.equal(sha256(split.images), view.images.sha256, `${name}: h5py read other image bytes than the writer's`);
    assert.deepEqual(view.captions_per_image, { value: 5, dtype: 'int64', shape: [] });
    assert.deepEqual(view.attrs, ['captions_per_image']);
    assert.deepEqual(view.keys, ['images']);
    assert.deepEqual([view.images.dtype, view.images.layout, view.images.chunks], ['uint8', 'contiguous', null]);
    assert.deepEqual(view.images.shape, [split.count, 3, 56, 56]);
  }
});

test('JSON files are laid out as Python\'s json.dump writes them (the h5py fixture\'s files are Python\'s)', async () => {
  const fixture = join(FIXTURES, 'caption');
  for (const f of readdirSync(fixture).filter((n) => n.endsWith('.json'))) {
    const text = readFileSync(join(fixture, f), 'utf8');
    assert.equal(pythonJson(JSON.parse(text) as PyJson), text, f);
  }
  const dir = await smallDemo();
  assert.match(readFileSync(join(dir, 'WORDMAP_demo.json'), 'utf8'), /^\{"a": 1, "red": 2, .*"side": 28, "<unk>": 29, "<start>": 30, "<end>": 31, "<pad>": 0\}$/);
  assert.match(readFileSync(join(dir, 'TRAIN_CAPTIONS_demo.json'), 'utf8'), /^\[\[30, \d+, .*\]\]$/);
  assert.match(readFileSync(join(dir, 'TRAIN_CAPLENS_demo.json'), 'utf8'), /^\[\d+(, \d+)*\]$/);
  assert.equal(pythonJson({ x: [1.5, -0.25, 3], y: 'z' }), '{"x": [1.5, -0.25, 3], "y": "z"}');
});

test('the COCO files are valid: boxes inside images, polygons inside boxes, raw category ids, decodable JPEGs', async () => {
  const dir = await smallDemo();
  const data = generateDemoData(SMALL_DEMO);
  const eps = 0.011; // vertices and box sizes are rounded to 0.01
  for (const split of data.coco) {
    const coco = JSON.parse(readFileSync(join(dir, 'annotations', `instances_${split.split}.json`), 'utf8')) as CocoFile;
    assert.deepEqual(coco, JSON.parse(JSON.stringify(split.coco)), 'the file holds the writer\'s values');
    assert.deepEqual(coco.categories.map((c) => c.id), [1, 3, 18]);
    const categories = new Set(DEMO_COCO_CATEGORIES.map((c) => c.id));
    const images = new Map(coco.images.map((im) => [im.id, im]));
    assert.equal(images.size, coco.images.length, 'image ids are unique');
    assert.equal(new Set(coco.annotations.map((a) => a.id)).size, coco.annotations.length, 'annotation ids are unique');
    assert.ok(coco.annotations.length >= coco.images.length);
    for (const a of coco.annotations) {
      const im = images.get(a.image_id);
      assert.ok(im, `annotation ${a.id}: image ${a.image_id} exists`);
      assert.ok(categories.has(a.category_id), `annotation ${a.id}: category ${a.category_id}`);
      assert.equal(a.iscrowd, 0);
      const [x, y, w, h] = a.bbox;
      assert.ok(w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= im.width && y + h <= im.height, `annotation ${a.id}: box ${a.bbox} inside ${im.width}x${im.height}`);
      assert.equal(a.segmentation.length, 1);
      const poly = a.segmentation[0];
      assert.ok(poly.length >= 6 && poly.length % 2 === 0);
      for (let i = 0; i < poly.length; i += 2) {
        assert.ok(poly[i] >= x - eps && poly[i] <= x + w + eps && poly[i + 1] >= y - eps && poly[i + 1] <= y + h + eps, `annotation ${a.id}: vertex (${poly[i]}, ${poly[i + 1]}) inside box ${a.bbox}`);
      }
      assert.ok(Number.isInteger(a.area) && a.area > 0 && a.area <= (w + 1) * (h + 1), `annotation ${a.id}: area ${a.area}`);
    }
    coco.images.forEach((im, i) => {
      assert.match(im.file_name, /^\d{12}\.jpg$/);
      const decoded = jpeg.decode(readFileSync(join(dir, split.split, im.file_name)), { useTArray: true });
      assert.deepEqual([decoded.width, decoded.height], [im.width, im.height]);
      let diff = 0;
      const rgb = split.pictures[i];
      for (let p = 0; p < im.width * im.height; p++) for (let c = 0; c < 3; c++) diff += Math.abs(decoded.data[4 * p + c] - rgb[3 * p + c]);
      assert.ok(diff / (im.width * im.height * 3) < 3, `${im.file_name}: JPEG mean error ${diff / (im.width * im.height * 3)}`);
    });
  }
});

test('rerunning over its own folder rewrites it, dropping files the new run does not make', async () => {
  const dir = tempDir('rerun');
  await makeDemoData(dir, { seed: 2, images: 9 });
  await makeDemoData(dir, { seed: 2, images: 4 });
  const fresh = tempDir('fresh');
  await makeDemoData(fresh, { seed: 2, images: 4 });
  assert.deepEqual(listFiles(dir), listFiles(fresh));
  for (const f of listFiles(dir)) assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(fresh, f))), f);
});

test('a folder with other files is refused, and left as it was', async () => {
  for (const foreign of ['notes.txt', 'train2017/000000000001.jpg', 'WORDMAP_demo.json']) {
    const dir = tempDir('foreign');
    mkdirSync(join(dir, 'train2017'));
    writeFileSync(join(dir, foreign), 'mine');
    await assert.rejects(makeDemoData(dir, { images: 2 }), (e: unknown) => {
      assert.ok(e instanceof DemoDataError);
      assert.match(e.message, new RegExp(`is not empty and holds files make-demo-data did not write \\(${foreign.replace('.', '\\.')}\\); give an empty or new folder`));
      return true;
    });
    assert.deepEqual(listFiles(dir), [foreign]);
    assert.equal(readFileSync(join(dir, foreign), 'utf8'), 'mine');
  }
  // a file added to an earlier demo folder is someone else's too
  const dir = tempDir('added');
  await makeDemoData(dir, { images: 2 });
  writeFileSync(join(dir, 'val2017', 'extra.jpg'), 'mine');
  await assert.rejects(makeDemoData(dir, { images: 2 }), /holds files make-demo-data did not write \(val2017\/extra\.jpg\)/);
});

test('a path that is a file, a foreign manifest, bad options: clear errors', async () => {
  const dir = tempDir('odd');
  writeFileSync(join(dir, 'file'), 'x');
  await assert.rejects(makeDemoData(join(dir, 'file')), /file exists and is not a folder/);
  const other = join(dir, 'other');
  mkdirSync(other);
  writeFileSync(join(other, DEMO_MANIFEST), '{"tool": "something else", "files": []}');
  await assert.rejects(makeDemoData(other), /\.visft-demo\.json is not a make-demo-data manifest/);
  await assert.rejects(makeDemoData(join(dir, 'x'), { images: 0 }), /the image count must be an integer in 1\.\.100000, got 0/);
  await assert.rejects(makeDemoData(join(dir, 'y'), { seed: -1 }), /the seed must be an integer in 0\.\.4294967295/);
});

test('an interrupted write\'s temporary file is cleared on the next run', async () => {
  const dir = tempDir('temp');
  await makeDemoData(dir, { images: 2 });
  const leftover = join(dir, '.TRAIN_IMAGES_demo.hdf5.1234.0123456789ab.tmp');
  writeFileSync(leftover, 'half');
  await makeDemoData(dir, { images: 2 });
  assert.ok(!existsSync(leftover));
});

test('visft make-demo-data: prints what it wrote; usage errors exit 2 without a stack trace', async () => {
  const dir = join(tempDir('cli'), 'demo');
  const ok = await runCliInProcess(['make-demo-data', dir, '--images', '3', '--seed', '4']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, new RegExp(`^wrote demo data to ${dir} \\(seed 4\\):\\n`));
  for (const f of ['WORDMAP_demo.json', 'TRAIN_IMAGES_demo.hdf5', 'VAL_CAPTIONS_demo.json', 'annotations/instances_val2017.json', 'train2017/\\*\\.jpg']) assert.match(ok.stdout, new RegExp(`\\n  ${f}`));
  assert.match(ok.stdout, /images uint8 \[3, 3, 56, 56\], captions_per_image 5/);
  assert.ok(statSync(join(dir, 'TRAIN_IMAGES_demo.hdf5')).size > 3 * 3 * 56 * 56);

  const bad = await runCliInProcess(['make-demo-data', dir, '--images', 'lots']);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, "visft: --images takes a non-negative integer, not 'lots'\n");
  writeFileSync(join(dir, 'mine.txt'), 'x');
  const refused = await runCliInProcess(['make-demo-data', dir]);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^visft: .* holds files make-demo-data did not write \(mine\.txt\); give an empty or new folder\n$/);
});
