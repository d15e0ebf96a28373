// The demo detection / segmentation set in COCO 2017's layout: annotations/instances_{train,val}2017.json
// (images, annotations with bbox [x, y, w, h], area, iscrowd 0, polygon segmentation, category_id) and
// {train,val}2017/<12-digit id>.jpg. Category ids are raw COCO ids (not 0..K-1), as in the real files, so readers
// must map them.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { writeFileAtomic } from '../weights/io.js';
import { writeText } from './demo-caption.js';
import type { Rng } from './rng.js';
import { COLOUR_NAMES, COLOURS, Canvas, SHAPE_KINDS, polygonBox, shapePolygon, type Shape, type ShapeKind } from './shapes.js';

export const DEMO_COCO_SIZE = 64;
const JPEG_QUALITY = 95;

/** Raw COCO ids, with gaps. */
export const DEMO_COCO_CATEGORIES: readonly { supercategory: string; id: number; name: ShapeKind }[] = [
  { supercategory: 'shape', id: 1, name: 'circle' },
  { supercategory: 'shape', id: 3, name: 'square' },
  { supercategory: 'shape', id: 18, name: 'triangle' },
];

export interface CocoImage {
  license: number;
  file_name: string;
  height: number;
  width: number;
  id: number;
}
export interface CocoAnnotation {
  segmentation: number[][];
  area: number;
  iscrowd: 0;
  image_id: number;
  bbox: [number, number, number, number];
  category_id: number;
  id: number;
}
export interface CocoFile {
  info: Record<string, string | number>;
  licenses: { id: number; name: string; url: string }[];
  images: CocoImage[];
  annotations: CocoAnnotation[];
  categories: typeof DEMO_COCO_CATEGORIES;
}

export interface CocoSplit {
  /** train2017 or val2017. */
  split: string;
  coco: CocoFile;
  /** The pictures before JPEG compression, [H, W, 3], in `coco.images` order. */
  pictures: Uint8Array[];
}

/** 1 to 3 shapes, each in its own quadrant so none overlap. */
function shapesFor(rng: Rng): Shape[] {
  const cell = DEMO_COCO_SIZE / 2;
  const quadrants = [0, 1, 2, 3];
  for (let i = 3; i > 0; i--) {
    const k = rng.int(0, i);
    [quadrants[i], quadrants[k]] = [quadrants[k], quadrants[i]];
  }
  return quadrants.slice(0, rng.int(1, 3)).map((q) => {
    const r = rng.int(5, 11);
    const x0 = (q % 2) * cell;
    const y0 = Math.floor(q / 2) * cell;
    return { kind: rng.pick(SHAPE_KINDS), colour: rng.pick(COLOUR_NAMES), cx: x0 + rng.int(r + 1, cell - r - 1), cy: y0 + rng.int(r + 1, cell - r - 1), r };
  });
}

/** `split` is train2017 or val2017; image ids start at firstId and step by 2 (COCO's ids are not contiguous either). */
export function makeCocoSplit(rng: Rng, split: string, count: number, firstId: number, firstAnnotationId: number): CocoSplit {
  const size = DEMO_COCO_SIZE;
  const coco: CocoFile = {
    info: { description: `visft demo shapes (synthetic, ${split})`, version: '1.0', year: 2017, contributor: 'visft make-demo-data' },
    licenses: [{ id: 1, name: 'CC0 (synthetic data)', url: '' }],
    images: [],
    annotations: [],
    categories: DEMO_COCO_CATEGORIES,
  };
  const pictures: Uint8Array[] = [];
  let annotationId = firstAnnotationId;
  for (let i = 0; i < count; i++) {
    const id = firstId + 2 * i;
    const canvas = new Canvas(size, size);
    canvas.background(rng);
    coco.images.push({ license: 1, file_name: `${String(id).padStart(12, '0')}.jpg`, height: size, width: size, id });
    for (const s of shapesFor(rng)) {
      const poly = shapePolygon(s);
      const area = canvas.fill(poly, COLOURS[s.colour]);
      const category = DEMO_COCO_CATEGORIES.find((c) => c.name === s.kind)!;
      coco.annotations.push({ segmentation: [poly], area, iscrowd: 0, image_id: id, bbox: polygonBox(poly), category_id: category.id, id: annotationId++ });
    }
    pictures.push(canvas.rgb);
  }
  return { split, coco, pictures };
}

/** Writes annotations/instances_{split}.json and {split}/*.jpg under dir; returns the paths relative to dir. */
export function writeCocoSplit(dir: string, data: CocoSplit): string[] {
  mkdirSync(join(dir, 'annotations'), { recursive: true });
  mkdirSync(join(dir, data.split), { recursive: true });
  const written: string[] = [];
  data.coco.images.forEach((image, i) => {
    const canvas = new Canvas(image.width, image.height);
    canvas.rgb.set(data.pictures[i]);
    const encoded = jpeg.encode({ data: canvas.toRGBA(), width: image.width, height: image.height }, JPEG_QUALITY).data;
    const rel = `${data.split}/${image.file_name}`;
    writeFileAtomic(join(dir, rel), (sink) => sink.write(encoded));
    written.push(rel);
  });
  const rel = `annotations/instances_${data.split}.json`;
  writeText(join(dir, rel), JSON.stringify(data.coco));
  written.push(rel);
  return written;
}
