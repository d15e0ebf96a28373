// The demo caption set: pictures of one or two coloured shapes and five paraphrased captions each that name
// colour, shape and place, so a tiny captioning model's loss falls within a few hundred updates. Written in the
// original's files and layouts (see caption.ts), as create_input_files would with max_len 10 words.
import { join } from 'node:path';
import { writeFileAtomic } from '../weights/io.js';
import { captionFileNames } from './caption-files.js';
import { writeHdf5Atomic } from './hdf5.js';
import { pythonJson } from './python-json.js';
import type { Rng } from './rng.js';
import { COLOUR_NAMES, COLOURS, Canvas, SHAPE_KINDS, shapePolygon, type Shape } from './shapes.js';

export const DEMO_CAPTION_NAME = 'demo';
export const DEMO_CAPTIONS_PER_IMAGE = 5;
/** Ids per encoded caption: <start>, at most 10 words, <end>, padding. */
export const DEMO_MAX_LEN = 12;
export const DEMO_IMAGE_SIZE = 56;

/** Ids 1..28, in this order; then <unk> 29, <start> 30, <end> 31, <pad> 0 (create_input_files' numbering). */
export const DEMO_WORDS = [
  'a', 'red', 'green', 'blue', 'yellow', 'white', 'circle', 'square', 'triangle', 'small', 'large', 'on', 'the',
  'left', 'right', 'top', 'bottom', 'at', 'in', 'and', 'is', 'there', 'image', 'picture', 'shows', 'of', 'with', 'side',
] as const;

/** The word map in create_input_files' key order (words, <unk>, <start>, <end>, then <pad>). */
export function demoWordmap(): Record<string, number> {
  const map: Record<string, number> = {};
  DEMO_WORDS.forEach((w, i) => (map[w] = i + 1));
  map['<unk>'] = DEMO_WORDS.length + 1;
  map['<start>'] = DEMO_WORDS.length + 2;
  map['<end>'] = DEMO_WORDS.length + 3;
  map['<pad>'] = 0;
  return map;
}

export type Place = 'left' | 'right' | 'top' | 'bottom';
export interface PlacedShape extends Shape {
  place: Place;
  size: 'small' | 'large';
}

export interface CaptionSplit {
  split: string;
  /** [N, 3, 56, 56] uint8, image after image. */
  images: Uint8Array;
  count: number;
  /** Per image, its shapes (the first one is named first in most captions). */
  scenes: PlacedShape[][];
  /** N * 5 sentences, tokenised. */
  sentences: string[][];
  /** N * 5 encoded captions of DEMO_MAX_LEN ids, and their lengths (words + 2). */
  captions: number[][];
  caplens: number[];
}

const CENTRES: Record<Place, [number, number]> = { left: [14, 28], right: [42, 28], top: [28, 14], bottom: [28, 42] };

function placeShape(rng: Rng, place: Place, size: 'small' | 'large', avoid?: Shape): PlacedShape {
  for (;;) {
    const kind = rng.pick(SHAPE_KINDS);
    const colour = rng.pick(COLOUR_NAMES);
    if (avoid && avoid.kind === kind && avoid.colour === colour) continue; // two shapes must be told apart
    const [x, y] = CENTRES[place];
    const r = size === 'small' ? rng.int(6, 7) : rng.int(10, 11);
    return { kind, colour, cx: x + rng.int(-2, 2), cy: y + rng.int(-2, 2), r, place, size };
  }
}

function scene(rng: Rng): PlacedShape[] {
  const size = () => (rng.chance(0.5) ? 'small' : 'large');
  if (rng.chance(0.5)) return [placeShape(rng, rng.pick(['left', 'right', 'top', 'bottom'] as const), size())];
  const pair = rng.pick([['left', 'right'], ['top', 'bottom']] as const);
  const [p1, p2] = rng.chance(0.5) ? [pair[0], pair[1]] : [pair[1], pair[0]];
  const first = placeShape(rng, p1, size());
  return [first, placeShape(rng, p2, size(), first)];
}

/** Five paraphrases (10 words at most) naming what the picture shows. */
export function describe(shapes: readonly PlacedShape[]): string[][] {
  const words = (s: string) => s.split(' ');
  if (shapes.length === 1) {
    const { colour: c, kind: k, place: p, size: z } = shapes[0];
    return [`a ${c} ${k} on the ${p}`, `a ${z} ${c} ${k} at the ${p}`, `in the picture a ${c} ${k} is at the ${p}`, `a picture of a ${z} ${c} ${k}`, `there is a ${z} ${c} ${k} on the ${p} side`].map(words);
  }
  const [a, b] = shapes;
  return [
    `a ${a.colour} ${a.kind} and a ${b.colour} ${b.kind}`,
    `a ${a.colour} ${a.kind} on the ${a.place} and a ${b.colour} ${b.kind}`,
    `the image shows a ${a.colour} ${a.kind} with a ${b.colour} ${b.kind}`,
    `a ${b.colour} ${b.kind} at the ${b.place} with a ${a.colour} ${a.kind}`,
    `there is a ${a.colour} ${a.kind} and a ${b.colour} ${b.kind}`,
  ].map(words);
}

/** create_input_files' encoding: <start> words <end> <pad>..., length DEMO_MAX_LEN. */
export function encodeCaption(words: readonly string[], wordmap: Record<string, number>): number[] {
  const maxWords = DEMO_MAX_LEN - 2;
  if (words.length > maxWords) throw new Error(`demo caption '${words.join(' ')}' has ${words.length} words, more than ${maxWords}`);
  return [wordmap['<start>'], ...words.map((w) => wordmap[w] ?? wordmap['<unk>']), wordmap['<end>'], ...new Array<number>(maxWords - words.length).fill(0)];
}

export function makeCaptionSplit(rng: Rng, split: string, count: number): CaptionSplit {
  const size = DEMO_IMAGE_SIZE;
  const wordmap = demoWordmap();
  const images = new Uint8Array(count * 3 * size * size);
  const out: CaptionSplit = { split, images, count, scenes: [], sentences: [], captions: [], caplens: [] };
  for (let i = 0; i < count; i++) {
    const canvas = new Canvas(size, size);
    canvas.background(rng);
    const shapes = scene(rng);
    for (const s of shapes) canvas.fill(shapePolygon(s), COLOURS[s.colour]);
    images.set(canvas.toCHW(), i * 3 * size * size);
    out.scenes.push(shapes);
    const sentences = describe(shapes);
    // the original samples its captions in random order; so do we
    for (let j = sentences.length - 1; j > 0; j--) {
      const k = rng.int(0, j);
      [sentences[j], sentences[k]] = [sentences[k], sentences[j]];
    }
    for (const words of sentences) {
      out.sentences.push(words);
      out.captions.push(encodeCaption(words, wordmap));
      out.caplens.push(words.length + 2);
    }
  }
  return out;
}

/** Writes {SPLIT}_IMAGES/_CAPTIONS/_CAPLENS_demo; returns the paths relative to dir. */
export async function writeCaptionSplit(dir: string, data: CaptionSplit): Promise<string[]> {
  const names = captionFileNames(data.split, DEMO_CAPTION_NAME);
  await writeHdf5Atomic(join(dir, names.images), (f) => {
    f.create_attribute('captions_per_image', DEMO_CAPTIONS_PER_IMAGE, null, '<q'); // h5py stores a Python int as int64
    f.create_dataset({ name: 'images', data: data.images, shape: [data.count, 3, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE], dtype: '<B' });
  });
  writeText(join(dir, names.captions), pythonJson(data.captions));
  writeText(join(dir, names.caplens), pythonJson(data.caplens));
  return [names.images, names.captions, names.caplens];
}

export function writeDemoWordmap(dir: string): string {
  const name = captionFileNames('TRAIN', DEMO_CAPTION_NAME).wordmap;
  writeText(join(dir, name), pythonJson(demoWordmap()));
  return name;
}

export function writeText(file: string, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  writeFileAtomic(file, (sink) => sink.write(bytes));
}
