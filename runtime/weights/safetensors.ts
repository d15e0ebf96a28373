// safetensors: u64 LE header length N, N bytes of UTF-8 JSON
//   { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ..., "__metadata__": { str: str } }
// then the data bytes; offsets are relative to the end of the header. Everything is validated before use.

import { BufferSource, FileSource, writeFileAtomic, type ByteSource } from './io.js';
import { isDType, itemSize, numel, shapeString, tensorBytes, tensorFromBytes, type DType, type HostTensor } from './tensor.js';

export class WeightsFormatError extends Error {
  constructor(readonly file: string, message: string, readonly tensor?: string) {
    super(tensor === undefined ? `${file}: ${message}` : `${file}: tensor "${tensor}": ${message}`);
    this.name = 'WeightsFormatError';
  }
}

const FILE_DTYPE: Record<string, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16', F64: 'f64', I64: 'i64', I32: 'i32', U8: 'u8', BOOL: 'bool' };
const DTYPE_FILE: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', f64: 'F64', i64: 'I64', i32: 'I32', u8: 'U8', bool: 'BOOL' };
/** Valid safetensors dtypes visft does not read. */
const OTHER_FILE_DTYPES = new Set(['I8', 'I16', 'U16', 'U32', 'U64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'C64']);

/** Largest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte range relative to the start of the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** Absolute file offset of the data section. */
  dataStart: number;
}

export interface SafetensorsContents {
  tensors: Map<string, HostTensor>;
  metadata: Record<string, string>;
}

/** obj[key] = value, also for the key "__proto__" (which plain assignment would treat as the prototype). */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isIndex(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

export function parseSafetensorsHeader(src: ByteSource): SafetensorsHeader {
  const file = src.name;
  const fail = (msg: string, tensor?: string): never => {
    throw new WeightsFormatError(file, msg, tensor);
  };
  if (src.size < 8) fail(`not a safetensors file: ${src.size} bytes, shorter than the 8-byte header length`);
  const lenBytes = src.read(0, 8);
  const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n < 2n) fail(`not a safetensors file: header length ${n} is too small for a JSON object`);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(`not a safetensors file: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLen = Number(n);
  if (8 + headerLen > src.size) fail(`truncated or not a safetensors file: header length ${headerLen} but only ${src.size - 8} bytes follow`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(src.read(8, headerLen));
  } catch {
    return fail('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) fail('header does not start with "{" (not a safetensors file?)');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) return fail('header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataSize = src.size - dataStart;
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(raw)) fail('__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ entry "${k}" is not a string`);
        setOwn(metadata, k, v);
      }
      continue;
    }
    if (!isPlainObject(raw)) fail('entry is not an object with dtype, shape and data_offsets', name);
    const info = raw as Record<string, unknown>;
    const fdt = info.dtype;
    if (typeof fdt !== 'string') fail('dtype is missing or not a string', name);
    const dtype = FILE_DTYPE[fdt as string];
    if (dtype === undefined) {
      const known = Object.keys(FILE_DTYPE).join(', ');
      if (OTHER_FILE_DTYPES.has(fdt as string)) fail(`dtype ${fdt} is not supported (visft reads ${known})`, name);
      fail(`unknown dtype ${JSON.stringify(fdt)} (visft reads ${known})`, name);
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every(isIndex)) fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    const offs = info.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isIndex)) {
      fail(`data_offsets ${JSON.stringify(offs)} is not a pair of non-negative integers`, name);
    }
    const [begin, end] = offs as number[];
    if (end < begin) fail(`data_offsets [${begin}, ${end}] end before they begin`, name);
    let count: number;
    try {
      count = numel(shape as number[]);
    } catch (e) {
      return fail((e as Error).message, name);
    }
    const want = count * itemSize(dtype);
    if (end - begin !== want) {
      fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${fdt}${shapeString(shape as number[])} needs ${want}`, name);
    }
    if (end > dataSize) {
      fail(`data_offsets [${begin}, ${end}] lie outside the file (its data section has ${dataSize} bytes): truncated?`, name);
    }
    entries.push({ name, dtype, shape: [...(shape as number[])], begin, end });
  }
  const byBegin = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < byBegin.length; i++) {
    const prev = byBegin[i - 1];
    const cur = byBegin[i];
    if (cur.begin < prev.end) {
      fail(`data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prev.name}" at [${prev.begin}, ${prev.end}]`, cur.name);
    }
  }
  return { entries, metadata, dataStart };
}

function readFrom(src: ByteSource, opts: { names?: readonly string[] }): SafetensorsContents {
  const header = parseSafetensorsHeader(src);
  let entries = header.entries;
  if (opts.names) {
    const byName = new Map(entries.map((e) => [e.name, e]));
    entries = opts.names.map((name) => {
      const e = byName.get(name);
      if (!e) throw new WeightsFormatError(src.name, 'not in the file', name);
      return e;
    });
  }
  const tensors = new Map<string, HostTensor>();
  for (const e of entries) {
    const bytes = src.read(header.dataStart + e.begin, e.end - e.begin);
    tensors.set(e.name, tensorFromBytes(e.dtype, e.shape, bytes, { copy: false }));
  }
  return { tensors, metadata: header.metadata };
}

/** The header only (names, dtypes, shapes, offsets, metadata), validated; the data is not read. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const src = new FileSource(file);
  try {
    return parseSafetensorsHeader(src);
  } finally {
    src.close();
  }
}

/** Reads all tensors (or just `names`) of a safetensors file. */
export function readSafetensors(file: string, opts: { names?: readonly string[] } = {}): SafetensorsContents {
  const src = new FileSource(file);
  try {
    return readFrom(src, opts);
  } finally {
    src.close();
  }
}

/** Parses safetensors bytes held in memory; `name` is used in error messages. */
export function parseSafetensors(bytes: Uint8Array, name = '<buffer>'): SafetensorsContents {
  return readFrom(new BufferSource(name, bytes), {});
}

export type TensorDict = Map<string, HostTensor> | Record<string, HostTensor>;

export function tensorEntries(tensors: TensorDict): [string, HostTensor][] {
  return tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
}

interface Layout {
  header: Uint8Array;
  order: [string, HostTensor][];
}

function layout(tensors: TensorDict, metadata: Record<string, string> | undefined, file: string): Layout {
  const order = tensorEntries(tensors);
  const seen = new Set<string>();
  for (const [name, t] of order) {
    if (name === '__metadata__') throw new WeightsFormatError(file, 'the name __metadata__ is reserved', name);
    if (seen.has(name)) throw new WeightsFormatError(file, 'duplicate name', name);
    seen.add(name);
    if (!isDType(t.dtype)) throw new WeightsFormatError(file, `unknown dtype ${String(t.dtype)}`, name);
    if (tensorBytes(t).byteLength !== numel(t.shape) * itemSize(t.dtype)) {
      throw new WeightsFormatError(file, `data does not match ${t.dtype}${shapeString(t.shape)}`, name);
    }
  }
  // Wider items first (stable), so every tensor starts aligned to its item size in the file.
  order.sort((a, b) => itemSize(b[1].dtype) - itemSize(a[1].dtype));
  const json: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new WeightsFormatError(file, `__metadata__ entry "${k}" is not a string`);
    }
    json.__metadata__ = { ...metadata };
  }
  let pos = 0;
  for (const [name, t] of order) {
    const len = numel(t.shape) * itemSize(t.dtype);
    setOwn(json, name, { dtype: DTYPE_FILE[t.dtype], shape: t.shape, data_offsets: [pos, pos + len] });
    pos += len;
  }
  let text = JSON.stringify(json);
  const enc = new TextEncoder();
  let body = enc.encode(text);
  const pad = (8 - (body.byteLength % 8)) % 8;
  if (pad) body = enc.encode((text += ' '.repeat(pad)));
  const header = new Uint8Array(8 + body.byteLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(body.byteLength), true);
  header.set(body, 8);
  return { header, order };
}

/** The whole file as bytes (for small files and tests). */
export function encodeSafetensors(tensors: TensorDict, metadata?: Record<string, string>): Uint8Array {
  const { header, order } = layout(tensors, metadata, '<buffer>');
  const total = header.byteLength + order.reduce((s, [, t]) => s + tensorBytes(t).byteLength, 0);
  const out = new Uint8Array(total);
  out.set(header, 0);
  let pos = header.byteLength;
  for (const [, t] of order) {
    const b = tensorBytes(t);
    out.set(b, pos);
    pos += b.byteLength;
  }
  return out;
}

/** Writes a safetensors file atomically (temporary file + rename). */
export function writeSafetensors(file: string, tensors: TensorDict, metadata?: Record<string, string>): void {
  const { header, order } = layout(tensors, metadata, file);
  writeFileAtomic(file, (sink) => {
    sink.write(header);
    for (const [, t] of order) sink.write(tensorBytes(t));
  });
}
