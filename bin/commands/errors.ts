import { NoAdapterError } from '../../runtime/gpu/device.js';
import { GpuError } from '../../runtime/gpu/errors.js';
import { atomicTargetOf, fsErrorReason } from '../../runtime/weights/io.js';

/** A user-facing failure of a command (bad arguments, unwritable output): printed as `visft: message`, exit 2. */
export class UsageError extends Error {}

const WRITES = new Set(['write', 'rename', 'mkdir', 'unlink', 'fsync']);

/**
 * A file-system failure as one line (`cannot read w.pth: no such file`), or undefined for any other error. Node's
 * own text (`ENOENT: no such file or directory, open 'w.pth'`) says the call, not what visft was doing; a failed
 * atomic write names the file asked for, not its temporary.
 */
export function fileErrorLine(e: unknown): string | undefined {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof err.code !== 'string') return undefined;
  if (!err.path) return `${fsErrorReason(err.code)} (${err.message})`;
  const target = atomicTargetOf(err.path);
  if (target !== undefined || (err.syscall && WRITES.has(err.syscall))) {
    return `cannot write ${target ?? err.path}: ${err.code === 'ENOENT' ? 'its folder does not exist' : fsErrorReason(err.code)}`;
  }
  return `cannot read ${err.path}: ${fsErrorReason(err.code)}`;
}

/** For a command that only reads the GPU (bench, tune): a GPU error printed as `visft: ...` (with the install hint) and exit 1; anything else rethrown. */
export function gpuErrorExit(e: unknown): number {
  if (!(e instanceof GpuError)) throw e;
  const hint = e instanceof NoAdapterError && e.hint ? `\n  hint: ${e.hint}` : '';
  process.stderr.write(`visft: ${e.message}${hint}\n`);
  return 1;
}
