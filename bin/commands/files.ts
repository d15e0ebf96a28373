// File writing that never leaves a half-written file: the weights writer's atomic write (runtime/weights/io.ts).
import { writeFileAtomic as writeAtomic } from '../../runtime/weights/io.js';

export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  writeAtomic(path, (sink) => sink.write(bytes));
}
