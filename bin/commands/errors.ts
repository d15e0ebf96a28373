/** A user-facing failure of a command (bad arguments, unwritable output): printed as `visft: message`, exit 2. */
export class UsageError extends Error {}

const WHY: Readonly<Record<string, string>> = { ENOENT: 'no such file', EISDIR: 'a folder', ENOTDIR: 'a path through a file', EACCES: 'permission denied', EPERM: 'not permitted', ENOSPC: 'no space left on the device', EROFS: 'a read-only file system' };
const WRITES = new Set(['write', 'rename', 'mkdir', 'unlink', 'fsync']);

/** An atomic write's temporary file (runtime/weights/io.ts, bin/commands/files.ts: `.NAME.PID[.HEX].tmp`) → NAME's path. */
function atomicTarget(path: string): string | undefined {
  const m = /^(.*[\\/])?\.(.+)\.\d+(\.[0-9a-f]+)?\.tmp$/.exec(path);
  return m ? `${m[1] ?? ''}${m[2]}` : undefined;
}

/**
 * A file-system failure as one line (`cannot read w.pth: no such file`), or undefined for any other error. Node's
 * own text (`ENOENT: no such file or directory, open 'w.pth'`) says the call, not what visft was doing; a failed
 * atomic write names the file asked for, not its temporary.
 */
export function fileErrorLine(e: unknown): string | undefined {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof err.code !== 'string') return undefined;
  if (!err.path) return `${WHY[err.code] ?? err.code} (${err.message})`;
  const target = atomicTarget(err.path);
  if (target !== undefined || (err.syscall && WRITES.has(err.syscall))) {
    const why = err.code === 'ENOENT' ? 'its folder does not exist' : (WHY[err.code] ?? err.code);
    return `cannot write ${target ?? err.path}: ${why}`;
  }
  return `cannot read ${err.path}: ${WHY[err.code] ?? err.code}`;
}
