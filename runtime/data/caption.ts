// The caption task's data in the original's format (a-PyTorch-Tutorial-to-Image-Captioning's create_input_files,
// read as ViSFT's CaptionCOCODataset reads it):
//   {SPLIT}_IMAGES_{name}.hdf5    dataset `images` uint8 [N, 3, H, W], attribute `captions_per_image`
//   {SPLIT}_CAPTIONS_{name}.json  N * cpi lists of maxLen ids: <start> words <end> <pad>...
//   {SPLIT}_CAPLENS_{name}.json   N * cpi numbers: words + 2
//   WORDMAP_{name}.json           word -> id
// Caption i belongs to image i // cpi. Everything is checked at open; images are read per batch, one HDF5
// hyperslab per run of consecutive images, never the whole dataset (real TRAIN files are 20+ GB).
import type { Dataset } from 'h5wasm/node';
import { locateCaptionFiles, locateWordmap } from './caption-files.js';
import { checkCaptionLayout, checkImages, readCaplens, readCaptions, type Ids } from './caption-checks.js';
import { DataError } from './errors.js';
import { openHdf5, hdf5Reason, type H5File } from './hdf5.js';
import { readWordmap, type Wordmap } from './wordmap.js';

export { DataError } from './errors.js';

export interface CaptionDatasetSpec {
  root: string;
  split: string;
  name: string;
  captionsPerImage: number;
  /** Ids per encoded caption: create_input_files' max_len + 2 (52 for the original's COCO files). */
  maxLen: number;
  mean: [number, number, number];
  std: [number, number, number];
}

export interface CaptionBatch {
  /** [B, 3, H, W]: (pixel / 255 - mean) / std, in float32 as torchvision's Normalize computes it. */
  image: Float32Array;
  /** [B, maxLen] token ids. */
  captions: Float32Array;
  /** [B] words + 2. */
  caplens: Float32Array;
  /** [B, maxLen - 1] = captions[:, 1:]. */
  targets: Float32Array;
  /** [B, maxLen - 1]: 1 where t < caplen - 1 (the decode steps the original's packed loss counts), else 0. */
  mask: Float32Array;
}

export interface CaptionDataset {
  readonly images: number;
  /** Captions: images * captionsPerImage. */
  readonly size: number;
  readonly imageShape: readonly [number, number, number];
  readonly vocab: number;
  readonly wordmap: ReadonlyMap<string, number>;
  batch(captionIndices: readonly number[]): CaptionBatch;
  close(): void;
}

/** The number of ids in WORDMAP_{name}.json under root (checked): what the caption head's `vocab` must be. */
export function captionVocab(root: string, name: string): number {
  return readWordmap(locateWordmap(root, name)).size;
}

export async function openCaptionDataset(spec: CaptionDatasetSpec): Promise<CaptionDataset> {
  checkSpec(spec);
  const files = locateCaptionFiles(spec.root, spec.split, spec.name);
  const wordmap = readWordmap(files.wordmap);
  const file = await openHdf5(files.images);
  try {
    const { images, shape } = checkImages(file, files.images, spec.captionsPerImage);
    const count = shape[0] * spec.captionsPerImage;
    const captions = readCaptions(files.captions, count, spec.maxLen, wordmap);
    const caplens = readCaplens(files.caplens, count, spec.maxLen);
    checkCaptionLayout(files.captions, captions, caplens, spec.maxLen, wordmap);
    return new HdfCaptionDataset(spec, files.images, file, images, shape, captions, caplens, wordmap);
  } catch (e) {
    file.close();
    throw e;
  }
}

function checkSpec(spec: CaptionDatasetSpec): void {
  const where = `caption dataset '${spec.name}' (${spec.split})`;
  if (!Number.isInteger(spec.captionsPerImage) || spec.captionsPerImage < 1) throw new DataError(`${where}: captions_per_image must be a positive integer, got ${spec.captionsPerImage}`);
  if (!Number.isInteger(spec.maxLen) || spec.maxLen < 2) throw new DataError(`${where}: max_len must be an integer >= 2 (<start> and <end>), got ${spec.maxLen}`);
  if (spec.mean.length !== 3 || spec.std.length !== 3 || spec.std.some((s) => !(s > 0))) throw new DataError(`${where}: normalisation needs 3 means and 3 positive stds`);
}

class HdfCaptionDataset implements CaptionDataset {
  readonly images: number;
  readonly size: number;
  readonly imageShape: readonly [number, number, number];
  readonly vocab: number;
  readonly wordmap: ReadonlyMap<string, number>;
  private readonly cpi: number;
  private readonly maxLen: number;
  /** pixel value -> normalised float32, per channel. */
  private readonly lut: Float32Array[];
  private file: H5File | undefined;

  constructor(
    spec: CaptionDatasetSpec,
    private readonly path: string,
    file: H5File,
    private readonly dataset: Dataset,
    shape: readonly [number, number, number, number],
    private readonly captionIds: Ids,
    private readonly caplenValues: Ids,
    wordmap: Wordmap,
  ) {
    this.file = file;
    this.images = shape[0];
    this.imageShape = [shape[1], shape[2], shape[3]];
    this.cpi = spec.captionsPerImage;
    this.size = this.images * this.cpi;
    this.maxLen = spec.maxLen;
    this.vocab = wordmap.size;
    this.wordmap = wordmap.words;
    this.lut = [0, 1, 2].map((c) => normalisationTable(spec.mean[c], spec.std[c]));
  }

  batch(captionIndices: readonly number[]): CaptionBatch {
    if (!this.file) throw new Error(`${this.path}: batch() after close()`);
    for (const i of captionIndices) {
      if (!Number.isInteger(i) || i < 0 || i >= this.size) throw new RangeError(`${this.path}: caption index ${i} is outside 0..${this.size - 1}`);
    }
    const b = captionIndices.length;
    const L = this.maxLen;
    const out: CaptionBatch = {
      image: new Float32Array(b * this.imageShape[0] * this.imageShape[1] * this.imageShape[2]),
      captions: new Float32Array(b * L),
      caplens: new Float32Array(b),
      targets: new Float32Array(b * (L - 1)),
      mask: new Float32Array(b * (L - 1)),
    };
    captionIndices.forEach((ci, k) => {
      const len = this.caplenValues[ci];
      out.caplens[k] = len;
      for (let t = 0; t < L; t++) out.captions[k * L + t] = this.captionIds[ci * L + t];
      for (let t = 0; t < L - 1; t++) {
        out.targets[k * (L - 1) + t] = this.captionIds[ci * L + t + 1];
        out.mask[k * (L - 1) + t] = t < len - 1 ? 1 : 0;
      }
    });
    this.fillImages(captionIndices, out.image);
    return out;
  }

  /** Reads each run of consecutive needed images with one hyperslab and normalises it into the batch slots. */
  private fillImages(captionIndices: readonly number[], into: Float32Array): void {
    const [channels, h, w] = this.imageShape;
    const plane = h * w;
    const per = channels * plane;
    const slots = new Map<number, number[]>(); // image index -> batch positions
    captionIndices.forEach((ci, k) => {
      const img = Math.floor(ci / this.cpi);
      const list = slots.get(img);
      if (list) list.push(k);
      else slots.set(img, [k]);
    });
    for (const [first, end] of imageRuns(captionIndices, this.cpi)) {
      const pixels = this.readImages(first, end);
      for (let img = first; img < end; img++) {
        const src = (img - first) * per;
        for (const k of slots.get(img)!) {
          const dst = k * per;
          for (let c = 0; c < channels; c++) {
            const lut = this.lut[c];
            const base = c * plane;
            for (let p = 0; p < plane; p++) into[dst + base + p] = lut[pixels[src + base + p]];
          }
        }
      }
    }
  }

  private readImages(start: number, end: number): Uint8Array {
    let data: unknown;
    try {
      data = this.dataset.slice([[start, end]]);
    } catch (e) {
      throw new DataError(`${this.path}: cannot read images ${start}..${end - 1}: ${hdf5Reason(e)}`);
    }
    const expected = (end - start) * this.imageShape[0] * this.imageShape[1] * this.imageShape[2];
    if (!(data instanceof Uint8Array) || data.length !== expected) {
      throw new DataError(`${this.path}: reading images ${start}..${end - 1} gave ${data instanceof Uint8Array ? data.length : typeof data} values, expected ${expected}`);
    }
    return data;
  }

  close(): void {
    this.file?.close();
    this.file = undefined;
  }
}

/** The images that captions need (caption i shows image i // cpi), as maximal runs [start, end) of consecutive indices. */
export function imageRuns(captionIndices: readonly number[], cpi: number): [number, number][] {
  const needed = [...new Set(captionIndices.map((ci) => Math.floor(ci / cpi)))].sort((a, b) => a - b);
  const runs: [number, number][] = [];
  for (const img of needed) {
    const last = runs[runs.length - 1];
    if (last && last[1] === img) last[1] = img + 1;
    else runs.push([img, img + 1]);
  }
  return runs;
}

/**
 * pixel -> (pixel / 255 - mean) / std with torch's roundings: the division by 255 in float64 (numpy) then float32
 * (torch.FloatTensor), the subtraction and division in float32 (transforms.Normalize's sub_ and div_).
 */
export function normalisationTable(mean: number, std: number): Float32Array {
  const f = Math.fround;
  const table = new Float32Array(256);
  for (let p = 0; p < 256; p++) table[p] = f(f(f(p / 255) - f(mean)) / f(std));
  return table;
}
