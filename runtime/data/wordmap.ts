// WORDMAP_{name}.json: word -> id, as create_input_files writes it (<pad> 0; <unk>, <start>, <end> the last three).
import { DataError } from './errors.js';
import { readJsonFile } from './json-file.js';

export const SPECIAL_TOKENS = ['<pad>', '<unk>', '<start>', '<end>'] as const;

export interface Wordmap {
  readonly file: string;
  readonly words: ReadonlyMap<string, number>;
  /** Number of ids (= entries): the caption head's vocab. */
  readonly size: number;
  readonly pad: number;
  readonly unk: number;
  readonly start: number;
  readonly end: number;
}

/** Reads and checks a word map: ids are integers numbering the words 0..size-1 once each, with the four specials. */
export function readWordmap(file: string): Wordmap {
  const json = readJsonFile(file, 'word map');
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new DataError(`${file}: a word map is a JSON object of word -> id, found ${Array.isArray(json) ? 'a list' : typeof json}`);
  }
  const words = new Map<string, number>();
  const byId = new Map<number, string>();
  const entries = Object.entries(json as Record<string, unknown>);
  for (const [word, id] of entries) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new DataError(`${file}: the id of '${word}' must be a non-negative integer, found ${JSON.stringify(id)}`);
    }
    const other = byId.get(id);
    if (other !== undefined) throw new DataError(`${file}: duplicate id ${id}: '${other}' and '${word}'`);
    if (id >= entries.length) {
      throw new DataError(`${file}: id ${id} of '${word}' is outside 0..${entries.length - 1} (the ids must number the ${entries.length} words from 0)`);
    }
    words.set(word, id);
    byId.set(id, word);
  }
  const missing = SPECIAL_TOKENS.filter((t) => !words.has(t));
  if (missing.length) throw new DataError(`${file}: the word map lacks ${missing.join(', ')}`);
  if (words.get('<pad>') !== 0) throw new DataError(`${file}: <pad> must have id 0 (captions are padded with 0), found ${words.get('<pad>')}`);
  return { file, words, size: words.size, pad: 0, unk: words.get('<unk>')!, start: words.get('<start>')!, end: words.get('<end>')! };
}
