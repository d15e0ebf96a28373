// The checks made when a caption set is opened: the HDF5 images, the captions and their lengths. Each failure is
// a DataError naming the file, what is wrong and, for captions, the index.
import type { Dataset } from 'h5wasm/node';
import { DataError } from './errors.js';
import type { H5File } from './hdf5.js';
import { readJsonFile } from './json-file.js';
import type { Wordmap } from './wordmap.js';

export function checkImages(file: H5File, path: string, cpi: number): { images: Dataset; shape: [number, number, number, number] } {
  const images = file.get('images');
  if (images === null) throw new DataError(`${path}: no dataset 'images' (the file has: ${file.keys().join(', ') || 'nothing'})`);
  const kind = (images as { type?: string }).type ?? 'reference';
  if (kind !== 'Dataset') throw new DataError(`${path}: 'images' is a ${kind.toLowerCase()}, expected a dataset`);
  const dataset = images as Dataset;
  const meta = dataset.metadata;
  if (meta.type !== 0 || meta.size !== 1 || meta.signed) throw new DataError(`${path}: 'images' has dtype ${dtypeName(meta)}, expected uint8`);
  const shape = dataset.shape ?? [];
  if (shape.length !== 4) throw new DataError(`${path}: 'images' has shape [${shape.join(', ')}], expected [N, 3, H, W]`);
  if (shape[1] !== 3) throw new DataError(`${path}: 'images' has ${shape[1]} channels (shape [${shape.join(', ')}]), expected 3 ([N, 3, H, W])`);
  if (shape[0] < 1 || shape[2] < 1 || shape[3] < 1) throw new DataError(`${path}: 'images' is empty (shape [${shape.join(', ')}])`);

  if (!Object.keys(file.attrs).includes('captions_per_image')) throw new DataError(`${path}: no attribute 'captions_per_image' on the file`);
  const value = file.attrs['captions_per_image'].value;
  const scalar = ArrayBuffer.isView(value) && !(value instanceof DataView) && value.length === 1 ? value[0] : value;
  const n = typeof scalar === 'bigint' ? Number(scalar) : scalar;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw new DataError(`${path}: attribute 'captions_per_image' must be an integer, found ${String(value)}`);
  if (n !== cpi) throw new DataError(`${path}: attribute 'captions_per_image' is ${n}, the dataset spec says ${cpi}`);
  return { images: dataset, shape: shape as [number, number, number, number] };
}

function dtypeName(meta: { type: number; size: number; signed: boolean }): string {
  if (meta.type === 0) return `${meta.signed ? 'int' : 'uint'}${meta.size * 8}`;
  if (meta.type === 1) return `float${meta.size * 8}`;
  return `HDF5 class ${meta.type} (${meta.size} bytes)`;
}

export type Ids = Uint16Array | Uint32Array;

/** The captions as one flat [count, maxLen] array; every id is one of the word map's. */
export function readCaptions(path: string, count: number, maxLen: number, wordmap: Wordmap): Ids {
  const json = readJsonFile(path, 'captions');
  if (!Array.isArray(json)) throw new DataError(`${path}: expected a JSON list of captions, found ${typeof json}`);
  if (json.length !== count) {
    throw new DataError(`${path}: ${json.length} captions, expected ${count} (images x captions_per_image)`);
  }
  const ids: Ids = wordmap.size <= 0x10000 ? new Uint16Array(count * maxLen) : new Uint32Array(count * maxLen);
  for (let i = 0; i < count; i++) {
    const caption: unknown = json[i];
    if (!Array.isArray(caption)) throw new DataError(`${path}: caption ${i} is not a list of ids`);
    if (caption.length !== maxLen) {
      throw new DataError(`${path}: caption ${i} has ${caption.length} ids, expected max_len ${maxLen} (<start>, words, <end>, padding)`);
    }
    for (let t = 0; t < maxLen; t++) {
      const id: unknown = caption[t];
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= wordmap.size) {
        throw new DataError(`${path}: caption ${i} position ${t}: id ${JSON.stringify(id)} is not in the word map (ids 0..${wordmap.size - 1})`);
      }
      ids[i * maxLen + t] = id;
    }
  }
  return ids;
}

export function readCaplens(path: string, count: number, maxLen: number): Ids {
  const json = readJsonFile(path, 'caption lengths');
  if (!Array.isArray(json)) throw new DataError(`${path}: expected a JSON list of caption lengths, found ${typeof json}`);
  if (json.length !== count) throw new DataError(`${path}: ${json.length} caption lengths, expected ${count} (one per caption)`);
  const lens = maxLen <= 0x10000 ? new Uint16Array(count) : new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const n: unknown = json[i];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 2 || n > maxLen) {
      throw new DataError(`${path}: caption length ${i} is ${JSON.stringify(n)}, expected an integer in [2, ${maxLen}] (words + 2)`);
    }
    lens[i] = n;
  }
  return lens;
}

/** <start> first, <end> at caplen - 1, <pad> after it: what create_input_files writes, so lengths and ids agree. */
export function checkCaptionLayout(path: string, ids: Ids, lens: Ids, maxLen: number, wm: Wordmap): void {
  for (let i = 0; i < lens.length; i++) {
    const row = i * maxLen;
    const len = lens[i];
    if (ids[row] !== wm.start) throw new DataError(`${path}: caption ${i} starts with id ${ids[row]}, expected <start> (${wm.start})`);
    if (ids[row + len - 1] !== wm.end) {
      throw new DataError(`${path}: caption ${i} has id ${ids[row + len - 1]} at position ${len - 1}, expected <end> (${wm.end}) there as its length is ${len}`);
    }
    for (let t = len; t < maxLen; t++) {
      if (ids[row + t] !== wm.pad) throw new DataError(`${path}: caption ${i} has id ${ids[row + t]} at position ${t}, after its <end>; expected <pad> (0)`);
    }
  }
}
