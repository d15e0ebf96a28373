// safetensors: exact round trips for every dtype, the on-disk layout, and errors (not crashes) on corrupt files.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { writeFileAtomic } from '../../runtime/weights/io.js';
import {
  encodeSafetensors,
  parseSafetensors,
  readSafetensors,
  readSafetensorsHeader,
  WeightsFormatError,
  writeSafetensors,
} from '../../runtime/weights/safetensors.js';
import { DTYPES, fromNumbers, itemSize, numel, tensorBytes, tensorFromBytes, type DType, type HostTensor } from '../../runtime/weights/tensor.js';

const RUNS = Number(process.env.VISFT_WEIGHTS_RUNS ?? 300);
const dir = mkdtempSync(join(tmpdir(), 'visft-st-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A tensor of any dtype with arbitrary element bytes (every bit pattern, NaNs included; bools 0/1). */
const tensorArb: fc.Arbitrary<HostTensor> = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 0, maxLength: 4 }),
  })
  .chain(({ dtype, shape }) => {
    const nbytes = numel(shape) * itemSize(dtype);
    const bytesArb = dtype === 'bool' ? fc.uint8Array({ min: 0, max: 1, minLength: nbytes, maxLength: nbytes }) : fc.uint8Array({ minLength: nbytes, maxLength: nbytes });
    return bytesArb.map((bytes) => tensorFromBytes(dtype, shape, bytes));
  });

const nameArb = fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.constantFrom('__proto__', 'constructor', 'visual.blocks.0.attn.qkv.weight', 'ü名'));
const dictArb = fc.uniqueArray(fc.tuple(nameArb.filter((s) => s !== '__metadata__'), tensorArb), {
  selector: (e) => e[0],
  maxLength: 6,
});
const metaArb = fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 12 }), { maxKeys: 3 }).map((d) => {
  const o: Record<string, string> = {};
  for (const [k, v] of Object.entries(d)) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return o;
});

function sameBytes(a: HostTensor, b: HostTensor, what: string): void {
  assert.equal(b.dtype, a.dtype, what);
  assert.deepEqual(b.shape, a.shape, what);
  assert.deepEqual(Buffer.from(tensorBytes(b)), Buffer.from(tensorBytes(a)), what);
}

test('round trip (in memory and through a file) keeps every dtype, shape, bit and metadata (property)', () => {
  let i = 0;
  fc.assert(
    fc.property(dictArb, metaArb, (entries, metadata) => {
      const tensors = new Map(entries);
      const bytes = encodeSafetensors(tensors, metadata);
      const back = parseSafetensors(bytes, 'mem');
      assert.equal(back.tensors.size, tensors.size);
      for (const [k, t] of tensors) sameBytes(t, back.tensors.get(k)!, k);
      assert.deepEqual(back.metadata, metadata);
      const file = join(dir, `rt${i++ % 4}.safetensors`);
      writeSafetensors(file, tensors, metadata);
      assert.deepEqual(readFileSync(file), Buffer.from(bytes), 'the file is the encoded bytes');
      const fromFile = readSafetensors(file);
      for (const [k, t] of tensors) sameBytes(t, fromFile.tensors.get(k)!, k);
      // every tensor starts aligned to its item size in the data section, and the data start is 8-aligned
      const h = readSafetensorsHeader(file);
      assert.equal(h.dataStart % 8, 0);
      for (const e of h.entries) assert.equal(e.begin % itemSize(e.dtype), 0, e.name);
    }),
    { numRuns: RUNS },
  );
});

test('f16 and bf16 files hold the exact IEEE encodings (subnormals, inf, nan, ties rounded to even)', () => {
  const values = [1, -2, 2 ** -24, 2 ** -25, 3 * 2 ** -25, 65504, 65520, Infinity, -Infinity, NaN, 1 + 2 ** -11, -0];
  const f16 = fromNumbers('f16', [values.length], values);
  const bf16 = fromNumbers('bf16', [4], [1 + 2 ** -8, 1 + 3 * 2 ** -8, 2 ** -133, -Infinity]);
  const bytes = encodeSafetensors({ h: f16, b: bf16 });
  const header = readSafetensorsHeader(writeTemp('exact.safetensors', bytes));
  const h = header.entries.find((e) => e.name === 'h')!;
  const b = header.entries.find((e) => e.name === 'b')!;
  const view = Buffer.from(bytes);
  const u16 = (off: number, n: number): number[] => Array.from({ length: n }, (_, i) => view.readUInt16LE(off + 2 * i));
  assert.deepEqual(u16(header.dataStart + h.begin, values.length), [
    0x3c00, 0xc000, 0x0001, 0x0000, 0x0002, 0x7bff, 0x7c00, 0x7c00, 0xfc00, 0x7e00, 0x3c00, 0x8000,
  ]);
  assert.deepEqual(u16(header.dataStart + b.begin, 4), [0x3f80, 0x3f82, 0x0001, 0xff80]);
  assert.match(new TextDecoder().decode(bytes.subarray(8, 8 + Number(view.readBigUInt64LE(0)))), /"dtype":"F16"/);
});

function writeTemp(name: string, bytes: Uint8Array | string): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

/** A file with the given header object and `dataBytes` bytes of data. */
function rawFile(header: unknown, dataBytes: number, headerText?: string): Uint8Array {
  const text = headerText ?? JSON.stringify(header);
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + body.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

function rejects(bytes: Uint8Array, pattern: RegExp, name = 'bad.safetensors'): void {
  const file = writeTemp(name, bytes);
  assert.throws(() => readSafetensors(file), (e: unknown) => {
    assert.ok(e instanceof WeightsFormatError, `a WeightsFormatError, got ${String(e)}`);
    assert.ok(e.message.startsWith(file), `the message names the file: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test('corrupt files give clear errors naming the file and the tensor', () => {
  const good = { a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: 'I64', shape: [1], data_offsets: [16, 24] } };
  rejects(new Uint8Array(0), /0 bytes, shorter than the 8-byte header length/);
  rejects(new Uint8Array(5), /5 bytes/);
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 2n ** 62n, true);
  rejects(huge, /header length 4611686018427387904 exceeds/);
  const past = new Uint8Array(16);
  new DataView(past.buffer).setBigUint64(0, 1000n, true);
  rejects(past, /header length 1000 but only 8 bytes follow/);
  rejects(rawFile(null, 0, '{"a": '), /not valid JSON/);
  rejects(rawFile(null, 0, '[1, 2]'), /does not start with "\{"/);
  rejects(rawFile(null, 0, '{}\xff'.replace('\xff', '\u00ff')).map((b, i, a) => (i === a.length - 1 ? 0xff : b)), /not valid UTF-8|not valid JSON/);
  rejects(rawFile(good, 20), /tensor "b": data_offsets \[16, 24\] lie outside the file .*truncated/);
  rejects(rawFile({ ...good, b: { dtype: 'I64', shape: [1], data_offsets: [8, 16] } }, 24), /tensor "b": data_offsets \[8, 16\] overlap tensor "a" at \[0, 16\]/);
  rejects(rawFile({ a: { dtype: 'F9', shape: [1], data_offsets: [0, 4] } }, 4), /tensor "a": unknown dtype "F9"/);
  rejects(rawFile({ a: { dtype: 'I8', shape: [1], data_offsets: [0, 1] } }, 1), /tensor "a": dtype I8 is not supported/);
  rejects(rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8), /tensor "a": data_offsets \[0, 8\] hold 8 bytes but F32\[3\] needs 12/);
  rejects(rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /tensor "a": shape \[-1\] is not a list of non-negative integers/);
  rejects(rawFile({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4), /shape/);
  rejects(rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), /end before they begin/);
  rejects(rawFile({ a: { dtype: 'F32', shape: [1] } }, 4), /data_offsets undefined is not a pair/);
  rejects(rawFile({ a: { shape: [1], data_offsets: [0, 4] } }, 4), /dtype is missing/);
  rejects(rawFile({ a: 7 }, 0), /tensor "a": entry is not an object/);
  rejects(rawFile({ __metadata__: { k: 1 } }, 0), /__metadata__ entry "k" is not a string/);
  rejects(rawFile({ __metadata__: [] }, 0), /__metadata__ is not an object/);
});

test('a file without tensors, and tensors with no elements, are valid', () => {
  const empty = parseSafetensors(encodeSafetensors({}, { format: 'pt' }));
  assert.equal(empty.tensors.size, 0);
  assert.deepEqual(empty.metadata, { format: 'pt' });
  const z = parseSafetensors(encodeSafetensors({ z: fromNumbers('f32', [0, 3], []), s: fromNumbers('i64', [], [5]) }));
  assert.deepEqual(z.tensors.get('z')!.shape, [0, 3]);
  assert.deepEqual([...(z.tensors.get('s')!.data as BigInt64Array)], [5n]);
});

test('truncating or corrupting a valid file gives a WeightsFormatError or valid tensors, never a crash (property)', () => {
  const base = encodeSafetensors({
    w: fromNumbers('f32', [4, 3], Array.from({ length: 12 }, (_, i) => i)),
    b: fromNumbers('bf16', [3], [1, 2, 3]),
    i: fromNumbers('i64', [2], [1, -1]),
  }, { a: 'b' });
  fc.assert(
    fc.property(
      fc.oneof(
        fc.integer({ min: 0, max: base.length - 1 }).map((cut) => base.slice(0, cut)),
        fc.tuple(fc.integer({ min: 0, max: base.length - 1 }), fc.integer({ min: 0, max: 255 })).map(([at, v]) => {
          const c = base.slice();
          c[at] = v;
          return c;
        }),
      ),
      (bytes) => {
        try {
          const r = parseSafetensors(bytes, 'fuzz');
          for (const t of r.tensors.values()) assert.equal(tensorBytes(t).byteLength, numel(t.shape) * itemSize(t.dtype));
        } catch (e) {
          assert.ok(e instanceof WeightsFormatError, `unexpected ${(e as Error).stack}`);
        }
      },
    ),
    { numRuns: RUNS * 3 },
  );
});

test('readSafetensors can read a subset of names; unknown names are errors', () => {
  const file = join(dir, 'subset.safetensors');
  writeSafetensors(file, { a: fromNumbers('f32', [1], [1]), b: fromNumbers('u8', [2], [1, 2]) });
  assert.deepEqual([...readSafetensors(file, { names: ['b'] }).tensors.keys()], ['b']);
  assert.throws(() => readSafetensors(file, { names: ['c'] }), /tensor "c": not in the file/);
});

test('writes are atomic: a failed write leaves the old file and no temporary files behind', () => {
  const sub = mkdtempSync(join(dir, 'atomic-'));
  const file = join(sub, 'w.safetensors');
  writeSafetensors(file, { a: fromNumbers('f32', [1], [1]) });
  const before = readFileSync(file);
  assert.throws(() =>
    writeFileAtomic(file, (sink) => {
      sink.write(new Uint8Array(100));
      throw new Error('disk on fire');
    }),
  /disk on fire/);
  assert.deepEqual(readFileSync(file), before);
  assert.deepEqual(readdirSync(sub), ['w.safetensors']);
  const bad = { dtype: 'f32', shape: [3], data: new Float32Array(2) } as HostTensor;
  assert.throws(() => writeSafetensors(file, { bad }), /tensor "bad": data does not match f32\[3\]/);
  assert.throws(() => writeSafetensors(file, { __metadata__: fromNumbers('f32', [1], [1]) }), /reserved/);
  assert.deepEqual(readFileSync(file), before);
  assert.deepEqual(readdirSync(sub), ['w.safetensors']);
});

test('dtypes map to the safetensors names', () => {
  const names: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', f64: 'F64', i64: 'I64', i32: 'I32', u8: 'U8', bool: 'BOOL' };
  for (const dtype of DTYPES) {
    const bytes = encodeSafetensors({ t: fromNumbers(dtype, [1], [1]) });
    const len = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len))) as Record<string, { dtype: string }>;
    assert.equal(header.t.dtype, names[dtype]);
  }
});
