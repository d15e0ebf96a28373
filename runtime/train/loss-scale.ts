// Loss scaling for fp16 training with torch.cuda.amp.GradScaler's semantics (torch 1.13). The scale is an f32
// like GradScaler's _scale tensor; update() follows _amp_update_scale_'s kernel: on inf/NaN multiply by the
// backoff factor and reset the tracker, otherwise count the clean step and after growthInterval of them multiply
// by the growth factor — unless that would overflow f32 — and reset the tracker.

const f = Math.fround;

export interface LossScaleState {
  scale: number;
  growthTracker: number;
}

export class LossScaleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LossScaleError';
  }
}

interface Dynamics {
  growthFactor: number;
  backoffFactor: number;
  growthInterval: number;
}

export class LossScaler {
  private current: number;
  private tracker = 0;

  private constructor(scale: number, private readonly dynamics: Dynamics | null) {
    this.current = f(scale);
  }

  static dynamic(opts: { init?: number; growthFactor?: number; backoffFactor?: number; growthInterval?: number } = {}): LossScaler {
    const { init = 2 ** 16, growthFactor = 2, backoffFactor = 0.5, growthInterval = 2000 } = opts;
    checkScale(init, 'loss scale: init');
    if (!(growthFactor > 1) || !Number.isFinite(growthFactor)) throw new LossScaleError(`loss scale: growth factor ${growthFactor} must be a finite number > 1`);
    if (!(backoffFactor > 0 && backoffFactor < 1)) throw new LossScaleError(`loss scale: backoff factor ${backoffFactor} must be in (0, 1)`);
    if (!Number.isSafeInteger(growthInterval) || growthInterval < 1) throw new LossScaleError(`loss scale: growth interval ${growthInterval} must be a whole number of updates >= 1`);
    return new LossScaler(init, { growthFactor, backoffFactor, growthInterval });
  }

  static fixed(scale: number): LossScaler {
    checkScale(scale, 'loss scale: fixed scale');
    return new LossScaler(scale, null);
  }

  /** Scale 1, never changes: unscale() only checks for inf/NaN. */
  static none(): LossScaler {
    return new LossScaler(1, null);
  }

  get scale(): number {
    return this.current;
  }

  /** Divides grads by the scale in place (f32, as GradScaler.unscale_) and reports whether any is inf/NaN. */
  unscale(grads: ReadonlyMap<string, Float32Array>): { foundInf: boolean } {
    // GradScaler: inv_scale = self._scale.double().reciprocal().float(); each grad becomes g * inv_scale in f32.
    const inv = f(1 / this.current);
    let foundInf = false;
    for (const g of grads.values()) {
      for (let i = 0; i < g.length; i++) {
        const v = g[i];
        if (!Number.isFinite(v)) foundInf = true;
        if (inv !== 1) g[i] = f(v * inv);
      }
    }
    return { foundInf };
  }

  /** After a step (skipped when foundInf): backoff on inf, growth after growthInterval clean steps. */
  update(foundInf: boolean): void {
    const d = this.dynamics;
    if (d === null) return;
    if (foundInf) {
      this.current = f(this.current * d.backoffFactor);
      this.tracker = 0;
      return;
    }
    const successful = this.tracker + 1;
    if (successful === d.growthInterval) {
      const grown = f(this.current * d.growthFactor);
      if (Number.isFinite(grown)) this.current = grown; // never grow past f32's range to inf
      this.tracker = 0;
    } else {
      this.tracker = successful;
    }
  }

  state(): LossScaleState {
    return { scale: this.current, growthTracker: this.tracker };
  }

  /** Restores a checkpoint's scale and tracker. A fixed or disabled scaler accepts only its own scale, so that
   *  resuming with a different scaling setup is a visible choice rather than a silent one. */
  load(s: LossScaleState): void {
    if (typeof s !== 'object' || s === null) throw new LossScaleError('loss scale state: expected {scale, growthTracker}');
    checkScale(s.scale, 'loss scale state: scale');
    const limit = this.dynamics?.growthInterval ?? 1;
    if (!Number.isSafeInteger(s.growthTracker) || s.growthTracker < 0 || s.growthTracker >= limit) {
      throw new LossScaleError(`loss scale state: growthTracker ${s.growthTracker} must be an integer in [0, ${limit - 1}]`);
    }
    if (this.dynamics === null && f(s.scale) !== this.current) {
      throw new LossScaleError(`loss scale state: scale ${s.scale} differs from this run's fixed scale ${this.current}`);
    }
    this.current = f(s.scale);
    this.tracker = s.growthTracker;
  }
}

function checkScale(scale: number, what: string): void {
  if (typeof scale !== 'number' || !Number.isFinite(f(scale)) || !(f(scale) > 0)) throw new LossScaleError(`${what} ${scale} must be a finite number > 0 (as an f32)`);
}
