// `visft make-demo-data DIR [--seed N] [--images N]`: synthetic caption and COCO data in the original's formats.
import { DataError } from '../../runtime/data/errors.js';
import { DEFAULT_DEMO_IMAGES, DEFAULT_DEMO_SEED, makeDemoData } from '../../runtime/data/demo.js';
import { UsageError } from './errors.js';

export interface MakeDemoDataOptions {
  seed?: string;
  images?: string;
}

export async function runMakeDemoData(dir: string, opts: MakeDemoDataOptions): Promise<number> {
  const seed = integerOption('--seed', opts.seed, DEFAULT_DEMO_SEED);
  const images = integerOption('--images', opts.images, DEFAULT_DEMO_IMAGES);
  try {
    const result = await makeDemoData(dir, { seed, images });
    const width = Math.max(...result.entries.map((e) => e.path.length));
    process.stdout.write(`wrote demo data to ${result.dir} (seed ${seed}):\n`);
    for (const e of result.entries) process.stdout.write(`  ${e.path.padEnd(width)}  ${e.detail}\n`);
    return 0;
  } catch (e) {
    if (e instanceof DataError) throw new UsageError(e.message);
    const code = (e as NodeJS.ErrnoException).code;
    if (code) throw new UsageError(`cannot write the demo data to ${dir}: ${(e as Error).message}`);
    throw e;
  }
}

function integerOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${name} takes a non-negative integer, not '${value}'`);
  return Number(value);
}
