// Learning-rate schedules as mmf runs them: mmf's warmup_cosine / warmup_linear schedulers are LambdaLR around
// transformers' get_cosine_schedule_with_warmup / get_linear_schedule_with_warmup, built before training (which
// sets lr = peak * lambda(0)) and stepped once after every update (LRSchedulerCallback.on_update_end, skipped fp16
// updates included). So the update with 0-based index u uses lambda(u): the very first update runs at lr 0 when
// there is a warmup, and update `warmup` is the first at the full peak. Arithmetic is f64 in the order of the
// python lambdas, so with final = 0 the values equal LambdaLR's bit for bit (test/fixtures/train/schedule.json).

export interface ScheduleConfig {
  kind: 'warmup_cosine' | 'warmup_linear' | 'constant';
  peak: number;
  warmup: number;
  total: number;
  /** final lr as a fraction of peak (the floor the decay ends at), default 0 */
  final: number;
}

export class ScheduleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScheduleError';
  }
}

function check(s: ScheduleConfig, update: number): void {
  const bad = (what: string): never => {
    throw new ScheduleError(`schedule ${s.kind}: ${what}`);
  };
  if (s.kind !== 'warmup_cosine' && s.kind !== 'warmup_linear' && s.kind !== 'constant') bad(`unknown kind '${String(s.kind)}' (expected warmup_cosine, warmup_linear or constant)`);
  if (!Number.isFinite(s.peak) || s.peak < 0) bad(`peak lr ${s.peak} must be a finite number >= 0`);
  if (!Number.isSafeInteger(s.warmup) || s.warmup < 0) bad(`warmup ${s.warmup} must be a whole number of updates >= 0`);
  if (s.kind !== 'constant') {
    if (!Number.isSafeInteger(s.total) || s.total < 1) bad(`total ${s.total} must be a whole number of updates >= 1`);
    if (s.warmup > s.total) bad(`warmup ${s.warmup} is longer than total ${s.total}`);
    if (!(s.final >= 0 && s.final <= 1)) bad(`final ${s.final} must be a fraction of peak in [0, 1]`);
  }
  if (!Number.isSafeInteger(update) || update < 0) bad(`update index ${update} must be an integer >= 0`);
}

/** The lr used for the update with 0-based index `update`. Past `total` the decaying schedules hold at the floor
 *  final*peak (transformers' cosine lambda would climb back up there; nothing in visft trains that long). */
export function learningRate(s: ScheduleConfig, update: number): number {
  check(s, update);
  if (update < s.warmup) return s.peak * (update / Math.max(1, s.warmup));
  if (s.kind === 'constant') return s.peak * 1.0;
  const span = Math.max(1, s.total - s.warmup);
  let factor: number;
  if (s.kind === 'warmup_cosine') {
    const progress = Math.min(1, (update - s.warmup) / span);
    factor = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2.0 * progress)));
  } else {
    factor = Math.max(0, (s.total - update) / span);
  }
  const floor = s.final * s.peak;
  // exactly peak at the top (floor + (peak - floor) can miss it by an ulp), and never above it
  return factor >= 1 ? s.peak : Math.min(s.peak, floor + (s.peak - floor) * factor);
}
