// The file names of a caption set, as create_input_files names them, and a clear error when some are missing.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DataError } from './errors.js';

export interface CaptionFiles {
  readonly images: string;
  readonly captions: string;
  readonly caplens: string;
  readonly wordmap: string;
}

export function captionFileNames(split: string, name: string): CaptionFiles {
  return {
    images: `${split}_IMAGES_${name}.hdf5`,
    captions: `${split}_CAPTIONS_${name}.json`,
    caplens: `${split}_CAPLENS_${name}.json`,
    wordmap: `WORDMAP_${name}.json`,
  };
}

/** The four files' paths; a DataError lists what is missing, what the folder has, and the caption sets it holds. */
export function locateCaptionFiles(root: string, split: string, name: string): CaptionFiles {
  const names = captionFileNames(split, name);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new DataError(`caption data folder ${root} does not exist (expected ${Object.values(names).join(', ')} there)`);
  }
  const missing = Object.values(names).filter((n) => !existsSync(join(root, n)));
  if (missing.length) throw new DataError(`${join(root, missing[0])}: not found. ${describeFolder(root, names, missing)}`);
  return {
    images: join(root, names.images),
    captions: join(root, names.captions),
    caplens: join(root, names.caplens),
    wordmap: join(root, names.wordmap),
  };
}

/** One file of a caption set (the word map alone, for the vocab check), with the same missing-file message. */
export function locateWordmap(root: string, name: string): string {
  const names = captionFileNames('TRAIN', name);
  const file = join(root, names.wordmap);
  if (!existsSync(file)) {
    const folder = existsSync(root) ? describeFolder(root, { wordmap: names.wordmap }, [names.wordmap]) : `The folder ${root} does not exist.`;
    throw new DataError(`${file}: not found. ${folder}`);
  }
  return file;
}

function describeFolder(root: string, expected: Partial<CaptionFiles>, missing: string[]): string {
  const entries = readdirSync(root).sort();
  const sets = new Map<string, Set<string>>();
  for (const e of entries) {
    const m = /^([A-Za-z]+)_IMAGES_(.+)\.hdf5$/.exec(e) ?? /^()WORDMAP_(.+)\.json$/.exec(e);
    if (!m) continue;
    const splits = sets.get(m[2]) ?? new Set<string>();
    if (m[1]) splits.add(m[1]);
    sets.set(m[2], splits);
  }
  const shown = entries.slice(0, 12).join(', ') + (entries.length > 12 ? `, ... (${entries.length} entries)` : '');
  const parts = [
    `Missing: ${missing.join(', ')} (expected ${Object.values(expected).join(', ')}).`,
    entries.length ? `${root} has: ${shown}.` : `${root} is empty.`,
  ];
  if (sets.size) {
    const list = [...sets].map(([n, s]) => `'${n}'${s.size ? ` (${[...s].sort().join(', ')})` : ''}`).join(', ');
    parts.push(`Caption sets there: ${list}.`);
  }
  return parts.join(' ');
}
