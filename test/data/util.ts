// Shared by the data tests: temporary folders and a small demo set to read or corrupt.
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEMO_CAPTIONS_PER_IMAGE, DEMO_MAX_LEN } from '../../runtime/data/demo-caption.js';
import { makeDemoData } from '../../runtime/data/demo.js';
import type { CaptionDatasetSpec } from '../../runtime/data/caption.js';

export const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/data/', import.meta.url));
export const IMAGENET: Pick<CaptionDatasetSpec, 'mean' | 'std'> = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

// One folder per test file, removed when the file's tests end (registered here, at the top level: an after()
// inside a test would run when that test ends).
const root = mkdtempSync(join(tmpdir(), 'visft-data-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** A fresh temporary folder. */
export function tempDir(tag: string): string {
  return mkdtempSync(join(root, `${tag}-`));
}

export const SMALL_DEMO = { seed: 11, images: 6 } as const;
let small: Promise<string> | undefined;

/** A demo folder with 6 TRAIN images, made once per test file; copy it before changing anything. */
export function smallDemo(): Promise<string> {
  small ??= (async () => {
    const dir = tempDir('small');
    await makeDemoData(dir, SMALL_DEMO);
    return dir;
  })();
  return small;
}

export async function copyOfSmallDemo(tag: string): Promise<string> {
  const dir = join(tempDir(tag), 'data');
  cpSync(await smallDemo(), dir, { recursive: true });
  return dir;
}

export function demoSpec(root: string, split = 'TRAIN'): CaptionDatasetSpec {
  return { root, split, name: 'demo', captionsPerImage: DEMO_CAPTIONS_PER_IMAGE, maxLen: DEMO_MAX_LEN, ...IMAGENET };
}
