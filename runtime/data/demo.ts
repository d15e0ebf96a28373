// `visft make-demo-data DIR`: seeded synthetic data in the real formats, small enough for a CPU.
//   DIR/WORDMAP_demo.json, DIR/{TRAIN,VAL}_{IMAGES,CAPTIONS,CAPLENS}_demo.*       the caption set (caption.ts)
//   DIR/annotations/instances_{train,val}2017.json, DIR/{train,val}2017/*.jpg   COCO instances (demo-coco.ts)
//   DIR/.visft-demo.json                                                        what this command wrote
// It overwrites only files it wrote itself (listed in the manifest), so a mistyped DIR never loses data.
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { captionFileNames } from './caption-files.js';
import { DEMO_CAPTION_NAME, DEMO_CAPTIONS_PER_IMAGE, DEMO_IMAGE_SIZE, DEMO_MAX_LEN, DEMO_WORDS, makeCaptionSplit, writeCaptionSplit, writeDemoWordmap, writeText, type CaptionSplit } from './demo-caption.js';
import { DEMO_COCO_CATEGORIES, DEMO_COCO_SIZE, makeCocoSplit, writeCocoSplit, type CocoSplit } from './demo-coco.js';
import { DataError } from './errors.js';
import { Rng } from './rng.js';

export const DEMO_MANIFEST = '.visft-demo.json';
export const DEFAULT_DEMO_SEED = 1;
export const DEFAULT_DEMO_IMAGES = 256;
export const MAX_DEMO_IMAGES = 100_000;

/** The demo folder cannot be written as asked (it holds other files, or is not a folder). */
export class DemoDataError extends DataError {}

export interface DemoOptions {
  seed?: number;
  /** TRAIN / train2017 images (default 256); VAL / val2017 get an eighth of that, at least 1. */
  images?: number;
}

export interface DemoData {
  seed: number;
  caption: CaptionSplit[];
  coco: CocoSplit[];
}

/** What was written, for printing: a file or files (relative to the folder) and what they hold. */
export interface DemoEntry {
  path: string;
  detail: string;
}

/** The demo data in memory: a pure function of the seed and the image count. */
export function generateDemoData(opts: DemoOptions = {}): DemoData {
  const seed = opts.seed ?? DEFAULT_DEMO_SEED;
  const images = opts.images ?? DEFAULT_DEMO_IMAGES;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new DemoDataError(`the seed must be an integer in 0..4294967295, got ${seed}`);
  if (!Number.isInteger(images) || images < 1 || images > MAX_DEMO_IMAGES) throw new DemoDataError(`the image count must be an integer in 1..${MAX_DEMO_IMAGES}, got ${images}`);
  const val = Math.max(1, Math.round(images / 8));
  return {
    seed,
    caption: [makeCaptionSplit(new Rng(seed, 'caption/TRAIN'), 'TRAIN', images), makeCaptionSplit(new Rng(seed, 'caption/VAL'), 'VAL', val)],
    coco: [
      makeCocoSplit(new Rng(seed, 'coco/train2017'), 'train2017', images, 100_000, 1),
      makeCocoSplit(new Rng(seed, 'coco/val2017'), 'val2017', val, 900_000, 5_000_001),
    ],
  };
}

/** Relative paths of every file the demo writes, manifest excluded. */
export function demoFiles(data: DemoData): string[] {
  const files = [captionFileNames('TRAIN', DEMO_CAPTION_NAME).wordmap];
  for (const s of data.caption) {
    const n = captionFileNames(s.split, DEMO_CAPTION_NAME);
    files.push(n.images, n.captions, n.caplens);
  }
  for (const s of data.coco) files.push(`annotations/instances_${s.split}.json`, ...s.coco.images.map((im) => `${s.split}/${im.file_name}`));
  return files;
}

export interface DemoResult {
  /** The folder, absolute. */
  dir: string;
  /** What was written, paths relative to dir. */
  entries: DemoEntry[];
}

export async function makeDemoData(dir: string, opts: DemoOptions = {}): Promise<DemoResult> {
  const data = generateDemoData(opts);
  const root = resolve(dir);
  const planned = demoFiles(data);
  const previous = prepareFolder(root);
  // The manifest first lists old and new files, so an interrupted run can be rerun over its own files.
  writeManifest(root, data, [...new Set([...previous, ...planned])]);

  writeDemoWordmap(root);
  for (const s of data.caption) await writeCaptionSplit(root, s);
  for (const s of data.coco) writeCocoSplit(root, s);
  const keep = new Set(planned);
  for (const stale of previous) if (!keep.has(stale) && existsSync(join(root, stale))) unlinkSync(join(root, stale));
  writeManifest(root, data, planned);
  return { dir: root, entries: describeDemo(data) };
}

/** Makes sure root is a folder holding nothing but an earlier demo; returns the files that demo listed. */
function prepareFolder(root: string): string[] {
  if (existsSync(root) && !lstatSync(root).isDirectory()) throw new DemoDataError(`${root} exists and is not a folder`);
  mkdirSync(root, { recursive: true });
  const present = listFiles(root);
  if (present.length === 0) return [];
  const previous = readManifest(root);
  const ours = new Set([DEMO_MANIFEST, ...(previous ?? [])]);
  const foreign = present.filter((f) => !ours.has(f) && !isLeftoverTemp(f));
  if (foreign.length) {
    const shown = foreign.slice(0, 5).join(', ') + (foreign.length > 5 ? `, ... (${foreign.length} in all)` : '');
    throw new DemoDataError(`${root} is not empty and holds files make-demo-data did not write (${shown}); give an empty or new folder`);
  }
  for (const f of present) if (isLeftoverTemp(f)) unlinkSync(join(root, f));
  return previous ?? [];
}

/** Files (and links) under root, relative, with '/' separators. */
function listFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listFiles(root, path));
    else out.push(path);
  }
  return out.sort();
}

/** A temporary file of an interrupted atomic write (writeFileAtomic's naming). */
function isLeftoverTemp(rel: string): boolean {
  return /(^|\/)\.[^/]+\.\d+\.[0-9a-f]{12}\.tmp$/.test(rel);
}

function readManifest(root: string): string[] | undefined {
  const file = join(root, DEMO_MANIFEST);
  if (!existsSync(file)) return undefined;
  try {
    const json = JSON.parse(readFileSync(file, 'utf8')) as { tool?: unknown; files?: unknown };
    if (json.tool === 'visft make-demo-data' && Array.isArray(json.files) && json.files.every((f) => typeof f === 'string')) return json.files as string[];
  } catch {
    // not ours: reported below
  }
  throw new DemoDataError(`${file} is not a make-demo-data manifest; give an empty or new folder`);
}

function writeManifest(root: string, data: DemoData, files: string[]): void {
  const manifest = { tool: 'visft make-demo-data', format: 1, seed: data.seed, images: data.caption[0].count, files };
  writeText(join(root, DEMO_MANIFEST), JSON.stringify(manifest, null, 1) + '\n');
}

function describeDemo(data: DemoData): DemoEntry[] {
  const s = DEMO_IMAGE_SIZE;
  const names = (split: string) => captionFileNames(split, DEMO_CAPTION_NAME);
  const entries: DemoEntry[] = [
    { path: names('TRAIN').wordmap, detail: `word map: ${DEMO_WORDS.length + 4} ids (<pad> 0, ${DEMO_WORDS.length} words, <unk> ${DEMO_WORDS.length + 1}, <start> ${DEMO_WORDS.length + 2}, <end> ${DEMO_WORDS.length + 3})` },
  ];
  for (const c of data.caption) {
    const n = names(c.split);
    entries.push(
      { path: n.images, detail: `images uint8 [${c.count}, 3, ${s}, ${s}], captions_per_image ${DEMO_CAPTIONS_PER_IMAGE}` },
      { path: `${n.captions}, ${n.caplens}`, detail: `${c.captions.length} captions of ${DEMO_MAX_LEN} ids and their lengths` },
    );
  }
  for (const c of data.coco) {
    entries.push(
      { path: `annotations/instances_${c.split}.json`, detail: `COCO instances: ${c.coco.images.length} images, ${c.coco.annotations.length} annotations, categories ${DEMO_COCO_CATEGORIES.map((k) => `${k.name} (${k.id})`).join(', ')}` },
      { path: `${c.split}/*.jpg`, detail: `${c.coco.images.length} JPEGs, ${DEMO_COCO_SIZE}x${DEMO_COCO_SIZE}` },
    );
  }
  entries.push({ path: DEMO_MANIFEST, detail: `the files above, seed ${data.seed} (make-demo-data overwrites only these)` });
  return entries;
}
