// A zip reader (stored and deflated entries, zip64) over a ByteSource, and a writer for stored entries.
// Every offset and size read from the file is checked against the file before use.

import * as zlib from 'node:zlib';
import type { ByteSink, ByteSource } from './io.js';

export class ZipError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ZipError';
  }
}

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;

let crcTable: Uint32Array | undefined;
function crc32Fallback(data: Uint8Array, crc = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC-32 (zip / zlib polynomial), continuing from `crc`. */
export function crc32(data: Uint8Array, crc = 0): number {
  const native = (zlib as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;
  if (typeof native === 'function') {
    // zlib.crc32 takes at most 4 GiB per call on some versions: feed it in chunks
    let c = crc;
    const CH = 1 << 30;
    for (let i = 0; i < data.length; i += CH) c = native(data.subarray(i, Math.min(data.length, i + CH)), c);
    if (data.length === 0) c = native(data, c);
    return c >>> 0;
  }
  return crc32Fallback(data, crc);
}

function u64(dv: DataView, off: number, what: string, file: string): number {
  const v = dv.getBigUint64(off, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError(`${file}: ${what} ${v} is too large (corrupt zip?)`);
  return Number(v);
}

export class ZipReader {
  readonly entries: ZipEntry[] = [];
  private readonly byName = new Map<string, ZipEntry>();

  constructor(readonly src: ByteSource) {
    const file = src.name;
    const fail = (msg: string): never => {
      throw new ZipError(`${file}: ${msg}`);
    };
    if (src.size < 22) fail(`not a zip archive (${src.size} bytes, too short for the end-of-central-directory record)`);
    const tailLen = Math.min(src.size, 22 + 0xffff);
    const tailStart = src.size - tailLen;
    const tail = src.read(tailStart, tailLen);
    const tv = new DataView(tail.buffer);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (tv.getUint32(i, true) === SIG_EOCD && i + 22 + tv.getUint16(i + 20, true) <= tailLen) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) fail('not a zip archive or truncated: no end-of-central-directory record');
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    const eocdAbs = tailStart + eocd;
    if (eocdAbs >= 20) {
      const loc = src.read(eocdAbs - 20, 20);
      const lv = new DataView(loc.buffer);
      if (lv.getUint32(0, true) === SIG_EOCD64_LOCATOR) {
        const recOff = u64(lv, 8, 'zip64 record offset', file);
        if (recOff + 56 > src.size) fail('zip64 end-of-central-directory record lies outside the file');
        const rec = src.read(recOff, 56);
        const rv = new DataView(rec.buffer);
        if (rv.getUint32(0, true) !== SIG_EOCD64) fail('bad zip64 end-of-central-directory record');
        count = u64(rv, 32, 'entry count', file);
        cdSize = u64(rv, 40, 'central directory size', file);
        cdOffset = u64(rv, 48, 'central directory offset', file);
      }
    }
    if (cdOffset + cdSize > src.size) fail(`central directory (offset ${cdOffset}, ${cdSize} bytes) lies outside the file: truncated?`);
    if (count > cdSize / 46) fail(`central directory claims ${count} entries, more than fit in ${cdSize} bytes`);
    const cd = src.read(cdOffset, cdSize);
    const cv = new DataView(cd.buffer);
    let p = 0;
    const dec = new TextDecoder('utf-8');
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || cv.getUint32(p, true) !== SIG_CENTRAL) fail(`central directory entry ${i} is corrupt`);
      const flags = cv.getUint16(p + 8, true);
      const method = cv.getUint16(p + 10, true);
      const crc = cv.getUint32(p + 16, true);
      let csize = cv.getUint32(p + 20, true);
      let usize = cv.getUint32(p + 24, true);
      const nameLen = cv.getUint16(p + 28, true);
      const extraLen = cv.getUint16(p + 30, true);
      const commentLen = cv.getUint16(p + 32, true);
      let local = cv.getUint32(p + 42, true);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cdSize) fail(`central directory entry ${i} runs past the directory`);
      const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
      // zip64 extended information: present fields replace the 0xFFFFFFFF placeholders, in this order.
      let e = p + 46 + nameLen;
      const extraEnd = e + extraLen;
      while (e + 4 <= extraEnd) {
        const id = cv.getUint16(e, true);
        const len = cv.getUint16(e + 2, true);
        if (e + 4 + len > extraEnd) fail(`entry "${name}": corrupt extra field`);
        if (id === 0x0001) {
          let q = e + 4;
          const take = (what: string): number => {
            if (q + 8 > e + 4 + len) fail(`entry "${name}": zip64 extra field too short for the ${what}`);
            const v = u64(cv, q, what, file);
            q += 8;
            return v;
          };
          if (usize === 0xffffffff) usize = take('size');
          if (csize === 0xffffffff) csize = take('compressed size');
          if (local === 0xffffffff) local = take('local header offset');
        }
        e += 4 + len;
      }
      if (local + 30 > src.size) fail(`entry "${name}": local header offset ${local} lies outside the file`);
      if (local + csize > src.size) fail(`entry "${name}": data (${csize} bytes at ${local}) lies outside the file: truncated?`);
      const entry: ZipEntry = { name, method, flags, crc32: crc, compressedSize: csize, size: usize, localHeaderOffset: local };
      if (this.byName.has(name)) fail(`duplicate entry "${name}"`);
      this.entries.push(entry);
      this.byName.set(name, entry);
      p = end;
    }
  }

  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** Absolute offset of the entry's data, after its local header. */
  dataOffset(entry: ZipEntry): number {
    const file = this.src.name;
    const h = this.src.read(entry.localHeaderOffset, 30);
    const hv = new DataView(h.buffer);
    if (hv.getUint32(0, true) !== SIG_LOCAL) throw new ZipError(`${file}: entry "${entry.name}": bad local header`);
    const start = entry.localHeaderOffset + 30 + hv.getUint16(26, true) + hv.getUint16(28, true);
    if (start + entry.compressedSize > this.src.size) {
      throw new ZipError(`${file}: entry "${entry.name}": data (${entry.compressedSize} bytes at ${start}) lies outside the file: truncated?`);
    }
    return start;
  }

  /** The entry's uncompressed bytes (fresh, aligned buffer), CRC-checked unless verifyCrc is false. */
  read(entry: ZipEntry, opts: { verifyCrc?: boolean } = {}): Uint8Array {
    const file = this.src.name;
    const fail = (msg: string): never => {
      throw new ZipError(`${file}: entry "${entry.name}": ${msg}`);
    };
    if (entry.flags & 0x1) fail('encrypted entries are not supported');
    const start = this.dataOffset(entry);
    let out: Uint8Array;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) fail(`stored entry with compressed size ${entry.compressedSize} != size ${entry.size}`);
      out = this.src.read(start, entry.size);
    } else if (entry.method === 8) {
      // deflate cannot expand data more than ~1032:1: a larger claimed size is corrupt (or a zip bomb)
      if (entry.size > 1032 * entry.compressedSize + 64) fail(`claims ${entry.size} bytes from ${entry.compressedSize} deflated bytes, more than deflate can produce`);
      const packed = this.src.read(start, entry.compressedSize);
      let inflated: Buffer;
      try {
        inflated = zlib.inflateRawSync(packed, { maxOutputLength: Math.max(1, entry.size) });
      } catch (e) {
        return fail(`cannot inflate: ${(e as Error).message}`);
      }
      if (inflated.byteLength !== entry.size) fail(`inflates to ${inflated.byteLength} bytes, expected ${entry.size}`);
      out = new Uint8Array(entry.size);
      out.set(inflated);
    } else {
      return fail(`compression method ${entry.method} is not supported (only stored and deflate)`);
    }
    if (opts.verifyCrc !== false && crc32(out) !== entry.crc32) fail('CRC-32 mismatch: the file is corrupt');
    return out;
  }
}

// ---- writer --------------------------------------------------------------------------------------------------

export interface ZipFileSpec {
  name: string;
  /** Content, possibly in several pieces. */
  data: Uint8Array | readonly Uint8Array[];
}

const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01, fixed so output is reproducible
const DOS_TIME = 0;

/**
 * Writes a zip of stored (uncompressed) entries whose data starts at multiples of `align` bytes (padding in the
 * local header's extra field, as torch does). Uses zip64 records only where sizes or offsets need them, or
 * everywhere with zip64: 'always'.
 */
export function writeZip(sink: ByteSink, files: readonly ZipFileSpec[], opts: { align?: number; zip64?: 'auto' | 'always' } = {}): void {
  const align = opts.align ?? 64;
  const force64 = opts.zip64 === 'always';
  const enc = new TextEncoder();
  const central: Uint8Array[] = [];
  const names = new Set<string>();
  for (const f of files) {
    if (names.has(f.name)) throw new ZipError(`duplicate zip entry name ${f.name}`);
    names.add(f.name);
    const parts = f.data instanceof Uint8Array ? [f.data] : f.data;
    let size = 0;
    let crc = 0;
    for (const part of parts) {
      size += part.byteLength;
      crc = crc32(part, crc);
    }
    crc >>>= 0;
    const name = enc.encode(f.name);
    const utf8Flag = /^[\x20-\x7e]*$/.test(f.name) ? 0 : 0x800;
    const offset = sink.position;
    const big = force64 || size >= 0xffffffff;
    const z64Local = big ? 20 : 0;
    const base = offset + 30 + name.byteLength + z64Local;
    const pad = (align - ((base + 4) % align)) % align; // 4 = the padding field's own header
    const padField = pad + 4;
    const local = new Uint8Array(30 + name.byteLength + z64Local + padField);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, SIG_LOCAL, true);
    lv.setUint16(4, big ? 45 : 20, true);
    lv.setUint16(6, utf8Flag, true);
    lv.setUint16(8, 0, true);
    lv.setUint16(10, DOS_TIME, true);
    lv.setUint16(12, DOS_DATE, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, big ? 0xffffffff : size, true);
    lv.setUint32(22, big ? 0xffffffff : size, true);
    lv.setUint16(26, name.byteLength, true);
    lv.setUint16(28, z64Local + padField, true);
    local.set(name, 30);
    let q = 30 + name.byteLength;
    if (big) {
      lv.setUint16(q, 0x0001, true);
      lv.setUint16(q + 2, 16, true);
      lv.setBigUint64(q + 4, BigInt(size), true);
      lv.setBigUint64(q + 12, BigInt(size), true);
      q += 20;
    }
    lv.setUint16(q, 0x4246, true); // "FB": padding, as torch's writer uses
    lv.setUint16(q + 2, pad, true);
    sink.write(local);
    for (const part of parts) sink.write(part);

    const offBig = force64 || offset >= 0xffffffff;
    const z64Fields = (big ? 2 : 0) + (offBig ? 1 : 0);
    const z64Central = z64Fields ? 4 + 8 * z64Fields : 0;
    const c = new Uint8Array(46 + name.byteLength + z64Central);
    const cv = new DataView(c.buffer);
    cv.setUint32(0, SIG_CENTRAL, true);
    cv.setUint16(4, z64Fields ? 45 : 20, true);
    cv.setUint16(6, z64Fields ? 45 : 20, true);
    cv.setUint16(8, utf8Flag, true);
    cv.setUint16(10, 0, true);
    cv.setUint16(12, DOS_TIME, true);
    cv.setUint16(14, DOS_DATE, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, big ? 0xffffffff : size, true);
    cv.setUint32(24, big ? 0xffffffff : size, true);
    cv.setUint16(28, name.byteLength, true);
    cv.setUint16(30, z64Central, true);
    cv.setUint32(42, offBig ? 0xffffffff : offset, true);
    c.set(name, 46);
    if (z64Fields) {
      let r = 46 + name.byteLength;
      cv.setUint16(r, 0x0001, true);
      cv.setUint16(r + 2, 8 * z64Fields, true);
      r += 4;
      if (big) {
        cv.setBigUint64(r, BigInt(size), true);
        cv.setBigUint64(r + 8, BigInt(size), true);
        r += 16;
      }
      if (offBig) cv.setBigUint64(r, BigInt(offset), true);
    }
    central.push(c);
  }
  const cdOffset = sink.position;
  let cdSize = 0;
  for (const c of central) {
    sink.write(c);
    cdSize += c.byteLength;
  }
  const n = files.length;
  const need64 = force64 || n >= 0xffff || cdOffset >= 0xffffffff || cdSize >= 0xffffffff;
  if (need64) {
    const recOffset = sink.position;
    const rec = new Uint8Array(56 + 20);
    const rv = new DataView(rec.buffer);
    rv.setUint32(0, SIG_EOCD64, true);
    rv.setBigUint64(4, 44n, true);
    rv.setUint16(12, 45, true);
    rv.setUint16(14, 45, true);
    rv.setBigUint64(24, BigInt(n), true);
    rv.setBigUint64(32, BigInt(n), true);
    rv.setBigUint64(40, BigInt(cdSize), true);
    rv.setBigUint64(48, BigInt(cdOffset), true);
    rv.setUint32(56, SIG_EOCD64_LOCATOR, true);
    rv.setBigUint64(64, BigInt(recOffset), true);
    rv.setUint32(72, 1, true);
    sink.write(rec);
  }
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, SIG_EOCD, true);
  ev.setUint16(8, need64 ? 0xffff : n, true);
  ev.setUint16(10, need64 ? 0xffff : n, true);
  ev.setUint32(12, need64 ? 0xffffffff : cdSize, true);
  ev.setUint32(16, need64 ? 0xffffffff : cdOffset, true);
  sink.write(eocd);
}
