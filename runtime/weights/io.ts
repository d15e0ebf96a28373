// Random-access byte sources (a file read by position, so files larger than a Node buffer work) and atomic writes.

import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

export interface ByteSource {
  /** Used in error messages. */
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes from `offset` into a fresh, 8-byte-aligned buffer; throws if out of range. */
  read(offset: number, length: number): Uint8Array;
  close(): void;
}

const CHUNK = 1 << 30;

export class FileSource implements ByteSource {
  readonly size: number;
  private fd: number | undefined;
  constructor(readonly name: string) {
    this.fd = openSync(name, 'r');
    try {
      this.size = fstatSync(this.fd).size;
    } catch (e) {
      closeSync(this.fd);
      throw e;
    }
  }
  read(offset: number, length: number): Uint8Array {
    if (this.fd === undefined) throw new Error(`${this.name}: read after close`);
    checkRange(this, offset, length);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, Math.min(CHUNK, length - done), offset + done);
      if (n <= 0) throw new Error(`${this.name}: unexpected end of file at byte ${offset + done} (the file changed while being read?)`);
      done += n;
    }
    return out;
  }
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

export class BufferSource implements ByteSource {
  readonly size: number;
  constructor(readonly name: string, private readonly bytes: Uint8Array) {
    this.size = bytes.byteLength;
  }
  read(offset: number, length: number): Uint8Array {
    checkRange(this, offset, length);
    return this.bytes.slice(offset, offset + length);
  }
  close(): void {}
}

function checkRange(src: ByteSource, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > src.size) {
    throw new Error(`${src.name}: truncated or corrupt: needs bytes ${offset}..${offset + length} but the file has ${src.size}`);
  }
}

/** The first `n` bytes of a file (fewer when it is shorter): enough to recognise its format by content. */
export function readFileHead(file: string, n = 16): Uint8Array {
  const src = new FileSource(file);
  try {
    return src.read(0, Math.min(src.size, n));
  } finally {
    src.close();
  }
}

/** Sequential writer used by the atomic writers. */
export interface ByteSink {
  readonly position: number;
  write(bytes: Uint8Array): void;
}

/** The temporary file an atomic write of `file` fills: `.NAME.PID.HEX.tmp` beside it. */
const atomicTemp = (file: string): string => join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);

/** The file an atomic write was writing, for a path that is one of its temporaries (else undefined). */
export function atomicTargetOf(path: string): string | undefined {
  const m = /^(.*[\\/])?\.(.+)\.\d+\.[0-9a-f]+\.tmp$/.exec(path);
  return m ? `${m[1] ?? ''}${m[2]}` : undefined;
}

const FS_REASONS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EISDIR: 'a folder',
  ENOTDIR: 'a path through a file',
  EACCES: 'permission denied',
  EPERM: 'not permitted',
  ENOSPC: 'no space left on the device',
  EROFS: 'a read-only file system',
};

/** A file-system error code in words (`ENOENT` → `no such file`), the code itself when unlisted. */
export const fsErrorReason = (code: string): string => FS_REASONS[code] ?? code;

/**
 * Writes `file` atomically: the content goes to a temporary file in the same folder, which is flushed to disk
 * and renamed over `file` only when `fill` returned; on any error the temporary file is removed and `file` is
 * untouched.
 */
export function writeFileAtomic(file: string, fill: (sink: ByteSink) => void): void {
  const tmp = atomicTemp(file);
  const fd = openSync(tmp, 'wx', 0o644);
  let ok = false;
  try {
    let position = 0;
    const sink: ByteSink = {
      get position() {
        return position;
      },
      write(bytes: Uint8Array) {
        let done = 0;
        while (done < bytes.byteLength) {
          const n = writeSync(fd, bytes, done, Math.min(CHUNK, bytes.byteLength - done), position + done);
          done += n;
        }
        position += bytes.byteLength;
      },
    };
    fill(sink);
    fsyncSync(fd);
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) {
      try {
        unlinkSync(tmp);
      } catch {
        // already gone
      }
    }
  }
  try {
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw e;
  }
}
