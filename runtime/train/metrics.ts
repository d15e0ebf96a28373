// metrics.jsonl: one JSON object per line, e.g.
//   {"stage":"stage1","run":"caption_coco","task":"caption_coco","update":100,"loss":2.31,"lr":4e-4,"grad_norm":0.9,
//    "loss_scale":65536,"skipped":false,"time_s":12.5,"updates_per_s":8.0}
// Appends are one write each; a writer killed mid-line leaves a partial last line, which read() skips and the next
// append cuts off. Non-finite numbers (a NaN loss) are written as null, since JSON has no NaN.

import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, statSync, appendFileSync, ftruncateSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../weights/io.js';

export class MetricsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetricsError';
  }
}

interface ParsedLine {
  text: string;
  row: Record<string, unknown>;
}

export class MetricsLog {
  private tailChecked = false;

  constructor(readonly file: string) {}

  append(row: Record<string, unknown>): void {
    if (!this.tailChecked) {
      mkdirSync(dirname(this.file), { recursive: true });
      cutPartialLastLine(this.file);
      this.tailChecked = true;
    }
    let line: string;
    try {
      line = JSON.stringify(row);
    } catch (e) {
      throw new MetricsError(`${this.file}: cannot write a row of update ${String(row.update)}: ${(e as Error).message}`);
    }
    appendFileSync(this.file, line + '\n');
  }

  /** Flushes appended rows to disk (e.g. before saving a checkpoint, so no row it covers can be lost). */
  sync(): void {
    if (!existsSync(this.file)) return;
    const fd = openSync(this.file, 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** On resume: drops the rows of (stage, run) with update > `update`; the file is rewritten atomically. */
  truncateAfter(stage: string, run: string, update: number): void {
    if (!existsSync(this.file)) return;
    const { lines, partialTail } = parseFile(this.file);
    const keep = lines.filter(({ row }) => !(row.stage === stage && row.run === run && typeof row.update === 'number' && row.update > update));
    if (keep.length === lines.length && !partialTail) return;
    const bytes = new TextEncoder().encode(keep.map((l) => l.text + '\n').join(''));
    writeFileAtomic(this.file, (sink) => sink.write(bytes));
    this.tailChecked = true;
  }

  /** All rows of a metrics file; a MetricsError names the file and line of a row that is not a JSON object. */
  static read(file: string): Record<string, unknown>[] {
    if (!existsSync(file)) throw new MetricsError(`${file}: no such metrics file`);
    return parseFile(file).lines.map((l) => l.row);
  }
}

/** Parses every complete line; a last line without "\n" (a killed writer's) is reported, not parsed. */
function parseFile(file: string): { lines: ParsedLine[]; partialTail: boolean } {
  const text = readFileSync(file, 'utf8');
  const parts = text.split('\n');
  const tail = parts.pop() ?? '';
  const lines: ParsedLine[] = [];
  parts.forEach((line, i) => {
    if (line.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new MetricsError(`${file}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new MetricsError(`${file}:${i + 1}: not a JSON object`);
    lines.push({ text: line, row: row as Record<string, unknown> });
  });
  return { lines, partialTail: tail !== '' };
}

/** Truncates `file` after its last "\n" (reading backwards, so a long log is not read whole). */
function cutPartialLastLine(file: string): void {
  if (!existsSync(file)) return;
  const size = statSync(file).size;
  if (size === 0) return;
  const fd = openSync(file, 'r+');
  try {
    const buf = Buffer.alloc(1 << 16);
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - buf.length);
      const n = readSync(fd, buf, 0, end - start, start);
      const i = buf.subarray(0, n).lastIndexOf(0x0a);
      if (i >= 0) {
        if (start + i + 1 < size) ftruncateSync(fd, start + i + 1);
        return;
      }
      end = start;
    }
    ftruncateSync(fd, 0);
  } finally {
    closeSync(fd);
  }
}
