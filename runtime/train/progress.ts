// Training progress on a terminal (one redrawn line with a bar) or in a log file / CI (a plain line now and then).
// Written by hand: a bar is ~100 lines and the common libraries pull in more than they save.

export interface ProgressUpdate {
  done: number;
  total: number;
  loss?: number;
  lr?: number;
  /** updates/s; measured from the calls when left out. */
  rate?: number;
  extra?: string;
}

export interface Progress {
  update(p: ProgressUpdate): void;
  /** Prints a line; on a terminal it goes above the bar, which is then redrawn. */
  log(line: string): void;
  done(summary: string): void;
}

export interface ProgressOptions {
  /** Not a TTY: print every this many updates (default: about 20 lines per run). */
  plainEvery?: number;
  /** Clock in ms (tests pass a fake one). */
  now?: () => number;
}

const REDRAW_MS = 100;
const CLEAR_LINE = '\r\x1b[2K';
/** Weight of the newest loss in the smoothed loss shown. */
const LOSS_EMA = 0.1;

export function createProgress(label: string, stream: NodeJS.WriteStream = process.stderr, opts: ProgressOptions = {}): Progress {
  if (opts.plainEvery !== undefined && !(Number.isSafeInteger(opts.plainEvery) && opts.plainEvery >= 1)) {
    throw new RangeError(`progress: plainEvery must be a positive integer, got ${opts.plainEvery}`);
  }
  const now = opts.now ?? (() => performance.now());
  const tty = stream.isTTY === true;
  let start: { t: number; done: number } | undefined;
  let smoothed: number | undefined;
  let last: ProgressUpdate | undefined;
  let lastRate: number | undefined;
  let lastDraw = -Infinity;
  let barShown = false;
  let lastPlainBucket = 0;
  let finished = false;

  const line = (p: ProgressUpdate, withBar: boolean): string => {
    const parts: string[] = [label];
    const frac = p.total > 0 ? Math.min(1, Math.max(0, p.done / p.total)) : 0;
    if (withBar) parts.push(bar(frac, barWidth(stream)));
    parts.push(`${p.done}/${p.total}`);
    if (!withBar) parts.push(`(${Math.floor(frac * 100)}%)`);
    if (lastRate !== undefined && lastRate > 0) parts.push(`${formatRate(lastRate)} upd/s`);
    if (smoothed !== undefined) parts.push(`loss ${formatLoss(smoothed)}`);
    else if (p.loss !== undefined) parts.push(`loss ${formatLoss(p.loss)}`);
    if (p.lr !== undefined) parts.push(`lr ${p.lr.toExponential(2)}`);
    if (lastRate !== undefined && lastRate > 0 && p.done < p.total) parts.push(`ETA ${formatDuration((p.total - p.done) / lastRate)}`);
    if (p.extra) parts.push(p.extra);
    return parts.join(' ');
  };

  const draw = (): void => {
    if (!last) return;
    const cols = stream.columns && stream.columns > 10 ? stream.columns : 80;
    stream.write(CLEAR_LINE + line(last, true).slice(0, cols - 1));
    barShown = true;
  };

  return {
    update(p) {
      if (finished) return;
      const t = now();
      if (!start) start = { t, done: p.done };
      if (p.rate !== undefined) lastRate = p.rate;
      else if (t > start.t && p.done > start.done) lastRate = ((p.done - start.done) * 1000) / (t - start.t);
      // A skipped (non-finite) loss must not poison the average.
      if (p.loss !== undefined && Number.isFinite(p.loss)) smoothed = smoothed === undefined ? p.loss : smoothed + LOSS_EMA * (p.loss - smoothed);
      last = p;
      const atEnd = p.done >= p.total;
      if (tty) {
        if (atEnd || t - lastDraw >= REDRAW_MS) {
          lastDraw = t;
          draw();
        }
        return;
      }
      const every = opts.plainEvery ?? Math.max(1, Math.round(p.total / 20));
      const bucket = Math.floor(p.done / every);
      if (bucket > lastPlainBucket || (atEnd && lastPlainBucket !== Infinity)) {
        lastPlainBucket = atEnd ? Infinity : bucket;
        stream.write(line(p, false) + '\n');
      }
    },
    log(text) {
      if (tty && barShown) {
        stream.write(CLEAR_LINE + text + '\n');
        draw();
      } else {
        stream.write(text + '\n');
      }
    },
    done(summary) {
      if (finished) return;
      finished = true;
      stream.write((tty && barShown ? CLEAR_LINE : '') + summary + '\n');
    },
  };
}

function barWidth(stream: NodeJS.WriteStream): number {
  const cols = stream.columns && stream.columns > 10 ? stream.columns : 80;
  return Math.max(10, Math.min(30, Math.floor(cols / 4)));
}

function bar(frac: number, width: number): string {
  const full = Math.round(frac * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}]`;
}

function formatRate(r: number): string {
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}

function formatLoss(x: number): string {
  return Number.isFinite(x) ? x.toPrecision(4) : String(x).toLowerCase();
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}
