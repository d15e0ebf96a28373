// `visft bench [--json] [--quick | --full] [--rows NAME,...] [--adapter NAME] [--repeat N] [--tuning P] [--set JSON]`: visft's kernels
// against tfjs-webgpu on the same device (runtime/bench). Exit 0 when every row ran and agreed with the peer
// (or is not available on this device), 1 when a row disagreed or failed, 2 for usage errors.
import { BENCH_ROW_NAMES } from '../../runtime/bench/rows.js';
import { gpuErrorExit, UsageError } from './errors.js';
import { tuningSetArg } from './tuning-set.js';

export interface BenchCliOptions {
  json?: boolean;
  quick?: boolean;
  full?: boolean;
  rows?: string;
  adapter?: string;
  /** auto, none, or a tuning profile file. */
  tuning?: string;
  repeat?: string;
  /** Kernel choices over the profile's, as JSON. */
  set?: string;
}

/** The command line as given, for the report (flags in a fixed order). */
function commandLine(o: BenchCliOptions): string {
  const parts = ['visft bench'];
  if (o.json) parts.push('--json');
  if (o.quick) parts.push('--quick');
  if (o.full) parts.push('--full');
  if (o.rows) parts.push(`--rows ${o.rows}`);
  if (o.adapter) parts.push(`--adapter '${o.adapter}'`);
  if (o.repeat) parts.push(`--repeat ${o.repeat}`);
  if (o.tuning) parts.push(`--tuning ${o.tuning}`);
  if (o.set) parts.push(`--set '${o.set}'`);
  return parts.join(' ');
}

export async function runBenchCommand(opts: BenchCliOptions): Promise<number> {
  const rows = (opts.rows ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = rows.filter((f) => !BENCH_ROW_NAMES.some((n) => n === f || n.startsWith(f)));
  if (unknown.length) throw new UsageError(`no bench row matches ${unknown.map((u) => `'${u}'`).join(', ')}; rows are: ${BENCH_ROW_NAMES.join(', ')}`);
  let repeat: number | undefined;
  if (opts.repeat !== undefined) {
    repeat = Number(opts.repeat);
    if (!/^\d+$/.test(opts.repeat) || repeat < 1 || repeat > 10_000) throw new UsageError(`--repeat takes a whole number from 1 to 10000, not '${opts.repeat}'`);
  }
  if (opts.quick && opts.full) throw new UsageError('--quick and --full exclude each other');
  const tuningSet = tuningSetArg(opts.set);

  const { runBench } = await import('../../runtime/bench/bench.js');
  const { formatReport } = await import('../../runtime/bench/report.js');
  try {
    const report = await runBench({
      ...(opts.quick ? { quick: true } : {}),
      ...(opts.full ? { size: 'full' as const } : {}),
      rows,
      ...(opts.adapter ? { adapter: opts.adapter } : {}),
      ...(repeat !== undefined ? { repeat } : {}),
      ...(opts.tuning ? { tuning: opts.tuning } : {}),
      ...(tuningSet ? { tuningSet } : {}),
      command: commandLine(opts),
      progress: (line) => process.stderr.write(`bench: ${line}\n`),
    });
    process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
    return report.ok ? 0 : 1;
  } catch (e) {
    return gpuErrorExit(e);
  }
}
