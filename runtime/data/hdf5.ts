// HDF5 through h5wasm (the HDF5 C library compiled to WebAssembly; its Node entry reads and writes real files by
// path, by position, so files far larger than memory work). Loaded on first use: it is 4 MB of JavaScript that
// commands without HDF5 data should not pay for.
import { closeSync, fsyncSync, openSync, readSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { File as H5File } from 'h5wasm/node';
import { DataError } from './errors.js';

export type H5 = typeof import('h5wasm/node');
export type { H5File };

let loading: Promise<H5> | undefined;

/** The h5wasm module, ready, with HDF5 errors thrown as JavaScript errors (not printed to the console). */
export function loadHdf5(): Promise<H5> {
  loading ??= (async () => {
    const h5 = await import('h5wasm/node');
    const module = await h5.ready;
    module.activate_throwing_error_handler();
    return h5;
  })();
  return loading;
}

const SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]; // \x89HDF\r\n\x1a\n

/** Whether the file carries the HDF5 signature at byte 0, 512, 1024, 2048, ... (where the format allows it). */
export function hasHdf5Signature(file: string): boolean {
  const size = statSync(file).size;
  const fd = openSync(file, 'r');
  try {
    const head = new Uint8Array(SIGNATURE.length);
    for (let at = 0; at + SIGNATURE.length <= size; at = at === 0 ? 512 : at * 2) {
      if (readSync(fd, head, 0, head.length, at) === head.length && SIGNATURE.every((b, i) => head[i] === b)) return true;
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * The useful line of an HDF5 error stack: the innermost frame's message (e.g. "truncated file: eof = 1000, ...").
 * h5wasm's thrown message is the whole HDF5-DIAG text.
 */
export function hdf5Reason(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const frames = [...text.matchAll(/#\d+: .* in [\w.]+\(\): (.*)$/gm)].map((m) => m[1].trim());
  const reason = frames.length ? frames[frames.length - 1] : text.split('\n')[0].trim();
  const truncated = /truncated file: eof = (\d+).*stored_eof = (\d+)/.exec(reason);
  if (truncated) return `truncated: the file has ${truncated[1]} bytes but its superblock says ${truncated[2]}`;
  return reason;
}

/** Opens an HDF5 file for reading; a DataError names the file when it is missing, not HDF5, or damaged. */
export async function openHdf5(file: string): Promise<H5File> {
  const h5 = await loadHdf5();
  let isHdf5: boolean;
  try {
    isHdf5 = hasHdf5Signature(file);
  } catch (e) {
    throw new DataError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!isHdf5) throw new DataError(`${file}: not an HDF5 file (no HDF5 signature)`);
  try {
    return new h5.File(file, 'r');
  } catch (e) {
    throw new DataError(`${file}: cannot open as HDF5: ${hdf5Reason(e)}`);
  }
}

/**
 * Writes an HDF5 file atomically: `fill` writes into a temporary file in the same folder, which is flushed and
 * renamed over `file` only when it succeeded. The file format is kept readable by old HDF5 (1.8, as h5py's
 * default 'earliest' is). Same content, same bytes: see withFixedClock.
 */
export async function writeHdf5Atomic(file: string, fill: (f: H5File) => void): Promise<void> {
  const h5 = await loadHdf5();
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let ok = false;
  try {
    withFixedClock(() => {
      const f = new h5.File(tmp, 'w', { libver: ['earliest', 'v108'] });
      try {
        fill(f);
      } finally {
        f.close();
      }
    });
    const fd = openSync(tmp, 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    ok = true;
  } finally {
    if (!ok) {
      try {
        unlinkSync(tmp);
      } catch {
        // never created, or already gone
      }
    }
  }
}

/**
 * HDF5 stamps each dataset with its modification time (h5py turns that off; h5wasm cannot), which it reads from
 * Date.now through Emscripten. Pinning the clock to the epoch while the (synchronous) write runs makes the bytes
 * depend only on the content; nothing else can run in between.
 */
function withFixedClock(write: () => void): void {
  const now = Date.now;
  Date.now = () => 0;
  try {
    write();
  } finally {
    Date.now = now;
  }
}
