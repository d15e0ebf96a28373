// The h5py cross-check: what h5py (the original's writer and reader) sees in the demo HDF5 files visft writes.
// Run directly (`node dist/test/data/h5py-check.js`, /usr/bin/python3 with h5py) it writes the demo with
// H5PY_DEMO's options and records h5py's view in test/fixtures/data/demo_h5py.json, which demo.test.ts holds
// visft's output to (same file bytes, same image bytes, int64 attribute, contiguous uint8 dataset).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeDemoData } from '../../runtime/data/demo.js';

export const H5PY_DEMO = { seed: 7, images: 4 } as const;
export const H5PY_FIXTURE = fileURLToPath(new URL('../../../test/fixtures/data/demo_h5py.json', import.meta.url));
const DESCRIBE = fileURLToPath(new URL('../../../test/fixtures/data/describe_caption_hdf5.py', import.meta.url));

export interface H5pyView {
  file_sha256: string;
  attrs: string[];
  captions_per_image: { value: number; dtype: string; shape: number[] };
  keys: string[];
  images: { dtype: string; shape: number[]; chunks: null | number[]; layout: string; sha256: string };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = mkdtempSync(join(tmpdir(), 'visft-h5py-'));
  try {
    await makeDemoData(dir, H5PY_DEMO);
    const files = ['TRAIN_IMAGES_demo.hdf5', 'VAL_IMAGES_demo.hdf5'].map((f) => join(dir, f));
    const r = spawnSync('/usr/bin/python3', [DESCRIBE, ...files], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`h5py failed: ${r.stderr}`);
    writeFileSync(H5PY_FIXTURE, r.stdout);
    process.stdout.write(`wrote ${H5PY_FIXTURE}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
