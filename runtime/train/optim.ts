// AdamW, Adam and SGD on f32 master weights, step for step as torch 1.13's single-tensor CPU path
// (torch/optim/{adamw,adam,sgd}.py, the default there). Every element op rounds to f32 where torch's kernel does:
// a python float hyper-parameter becomes an f32 scalar, `add_(t, alpha=a)` and `addcmul_` end in one fused
// multiply-add (torch's AVX2 kernels use fmadd; checked bit for bit against test/fixtures/train/optim.json), and
// `addcdiv_` is self + (value*t1)/t2 with each op rounded. Params are visited in the map's order.

const f = Math.fround;

export interface OptimizerConfig {
  kind: 'adamw' | 'adam' | 'sgd';
  betas: [number, number];
  eps: number;
  weightDecay: number;
  momentum: number;
  nesterov: boolean;
}

/** A bad optimizer config, lr or gradient set. */
export class OptimizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OptimizerError';
  }
}

/** A checkpoint's optimizer state that does not fit the params. */
export class OptimizerStateError extends OptimizerError {
  constructor(message: string) {
    super(message);
    this.name = 'OptimizerStateError';
  }
}

/** f32 fused multiply-add a*b+c with one rounding, for f32 inputs. a*b is exact in f64, and rounding the f64 sum
 *  again to f32 is wrong only when that sum lands exactly halfway between two f32s; only then is the sum's own
 *  rounding error (TwoSum) needed to pick the side. */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f(s);
  if (r === s) return r;
  const t = s - r; // exact
  const other = r + 2 * t; // the f32 on s's other side when s is a midpoint (exact then)
  if (f(other) !== other) return r;
  const bv = s - p;
  const err = (p - (s - bv)) + (c - bv); // s + err === p + c exactly
  if (err === 0) return r; // a true tie: fround already chose the even one
  return (err > 0) === (t > 0) ? other : r;
}

function checkConfig(c: OptimizerConfig): void {
  const bad = (what: string): never => {
    throw new OptimizerError(`optimizer ${c.kind}: ${what}`);
  };
  if (c.kind !== 'adamw' && c.kind !== 'adam' && c.kind !== 'sgd') bad(`unknown kind '${String(c.kind)}' (expected adamw, adam or sgd)`);
  const inRange = (v: number, lo: number, hiExclusive: number): boolean => Number.isFinite(v) && v >= lo && v < hiExclusive;
  if (c.kind !== 'sgd') {
    if (!Array.isArray(c.betas) || c.betas.length !== 2) bad('betas must be a pair [beta1, beta2]');
    if (!inRange(c.betas[0], 0, 1)) bad(`beta1 ${c.betas[0]} must be in [0, 1)`);
    if (!inRange(c.betas[1], 0, 1)) bad(`beta2 ${c.betas[1]} must be in [0, 1)`);
    if (!inRange(c.eps, 0, Infinity)) bad(`eps ${c.eps} must be a finite number >= 0`);
  } else {
    if (!inRange(c.momentum, 0, Infinity)) bad(`momentum ${c.momentum} must be a finite number >= 0`);
    if (c.nesterov && c.momentum <= 0) bad('nesterov needs momentum > 0');
  }
  if (!inRange(c.weightDecay, 0, Infinity)) bad(`weight decay ${c.weightDecay} must be a finite number >= 0`);
}

export class Optimizer {
  private readonly config: OptimizerConfig;
  private readonly params: [string, Float32Array][];
  private readonly moments: Map<string, Float32Array>[]; // one map per state kind, keyed by param name
  private readonly momentNames: string[];
  private steps = 0;

  constructor(config: OptimizerConfig, params: ReadonlyMap<string, Float32Array>) {
    checkConfig(config);
    this.config = { ...config, betas: [config.betas[0], config.betas[1]] };
    this.params = [...params.entries()];
    this.momentNames = config.kind === 'sgd' ? (config.momentum !== 0 ? ['momentum_buffer'] : []) : ['exp_avg', 'exp_avg_sq'];
    // Adam's moments start at zero (torch creates them zeroed at the first step); SGD's buffer is the first
    // update's gradient, so it exists only from step 1 on.
    this.moments = this.momentNames.map(() => new Map());
    if (config.kind !== 'sgd') for (const m of this.moments) for (const [name, p] of this.params) m.set(name, new Float32Array(p.length));
  }

  get stepCount(): number {
    return this.steps;
  }

  step(grads: ReadonlyMap<string, Float32Array>, lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new OptimizerError(`optimizer step ${this.steps + 1}: lr ${lr} must be a finite number >= 0`);
    this.checkGrads(grads);
    this.steps += 1;
    for (const [name, param] of this.params) {
      const grad = grads.get(name)!;
      if (this.config.kind === 'sgd') this.sgd(name, param, grad, lr);
      else this.adam(name, param, grad, lr);
    }
  }

  private checkGrads(grads: ReadonlyMap<string, Float32Array>): void {
    const where = `optimizer step ${this.steps + 1}`;
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (g === undefined) throw new OptimizerError(`${where}: no gradient for parameter '${name}'`);
      if (g.length !== p.length) throw new OptimizerError(`${where}: gradient for '${name}' has ${g.length} elements, the parameter has ${p.length}`);
    }
    if (grads.size !== this.params.length) {
      const known = new Set(this.params.map(([n]) => n));
      const extra = [...grads.keys()].filter((n) => !known.has(n));
      throw new OptimizerError(`${where}: gradient for unknown parameter '${extra[0]}'`);
    }
  }

  private adam(name: string, p: Float32Array, g: Float32Array, lr: number): void {
    const { betas: [beta1, beta2], eps, weightDecay } = this.config;
    const m = this.moments[0].get(name)!;
    const v = this.moments[1].get(name)!;
    const decoupled = this.config.kind === 'adamw';
    // Scalars the way torch gets them: python doubles, cast to f32 when they meet a tensor.
    const decay = f(1 - lr * weightDecay);
    const wd = f(weightDecay);
    const b1 = f(beta1), oneMinusB1 = f(1 - beta1);
    const b2 = f(beta2), oneMinusB2 = f(1 - beta2);
    const stepSize = lr / (1 - beta1 ** this.steps);
    const negStep = f(-stepSize);
    const bc2Sqrt = f(Math.sqrt(1 - beta2 ** this.steps));
    const epsF = f(eps);
    for (let i = 0; i < p.length; i++) {
      let gi = g[i];
      if (decoupled) p[i] = f(p[i] * decay); // param.mul_(1 - lr * weight_decay)
      else if (weightDecay !== 0) gi = fmaF32(p[i], wd, gi); // grad.add(param, alpha=weight_decay)
      m[i] = fmaF32(gi, oneMinusB1, f(m[i] * b1)); // exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
      v[i] = fmaF32(f(oneMinusB2 * gi), gi, f(v[i] * b2)); // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
      const denom = f(f(f(Math.sqrt(v[i])) / bc2Sqrt) + epsF); // (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
      p[i] = f(p[i] + f(f(negStep * m[i]) / denom)); // param.addcdiv_(exp_avg, denom, value=-step_size)
    }
  }

  private sgd(name: string, p: Float32Array, g: Float32Array, lr: number): void {
    const { momentum, nesterov, weightDecay } = this.config;
    const wd = f(weightDecay), mom = f(momentum), negLr = f(-lr);
    const buffers = this.moments[0];
    let buf = buffers?.get(name);
    const first = momentum !== 0 && buf === undefined;
    if (first) buffers.set(name, (buf = new Float32Array(p.length)));
    for (let i = 0; i < p.length; i++) {
      let d = weightDecay !== 0 ? fmaF32(p[i], wd, g[i]) : g[i]; // d_p = d_p.add(param, alpha=weight_decay)
      if (buf !== undefined) {
        // buf = clone(d_p) at the first step, else buf.mul_(momentum).add_(d_p, alpha=1 - dampening), dampening 0
        buf[i] = first ? d : f(f(buf[i] * mom) + d);
        d = nesterov ? fmaF32(buf[i], mom, d) : buf[i]; // d_p.add(buf, alpha=momentum) or buf
      }
      p[i] = fmaF32(d, negLr, p[i]); // param.add_(d_p, alpha=-lr)
    }
  }

  /** Moments as named tensors for checkpoints: `exp_avg.<name>`, `exp_avg_sq.<name>` (adam/adamw),
   *  `momentum_buffer.<name>` (sgd with momentum, once a step has run). Copies, in parameter order. */
  stateTensors(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [name] of this.params) {
      this.momentNames.forEach((kind, k) => {
        const t = this.moments[k].get(name);
        if (t !== undefined) out.set(`${kind}.${name}`, t.slice());
      });
    }
    return out;
  }

  /** Restores a checkpoint's moments and step count; errors name a missing, unexpected or wrong-length tensor. */
  loadState(stepCount: number, tensors: ReadonlyMap<string, Float32Array>): void {
    if (!Number.isSafeInteger(stepCount) || stepCount < 0) throw new OptimizerStateError(`optimizer state: step count ${stepCount} must be an integer >= 0`);
    const hasMoments = this.config.kind !== 'sgd' || stepCount > 0;
    const expected = new Map<string, number>();
    if (hasMoments) for (const kind of this.momentNames) for (const [name, p] of this.params) expected.set(`${kind}.${name}`, p.length);
    for (const [key, length] of expected) {
      const t = tensors.get(key);
      if (t === undefined) throw new OptimizerStateError(`optimizer state: missing tensor '${key}'`);
      if (t.length !== length) throw new OptimizerStateError(`optimizer state: tensor '${key}' has ${t.length} elements, its parameter has ${length}`);
    }
    for (const key of tensors.keys()) {
      if (!expected.has(key)) throw new OptimizerStateError(`optimizer state: unexpected tensor '${key}' (${this.config.kind}${hasMoments ? '' : ' before its first step'} keeps ${this.describeState()})`);
    }
    this.momentNames.forEach((kind, k) => {
      this.moments[k].clear();
      if (hasMoments) for (const [name] of this.params) this.moments[k].set(name, tensors.get(`${kind}.${name}`)!.slice());
    });
    this.steps = stepCount;
  }

  private describeState(): string {
    return this.momentNames.length === 0 ? 'no tensors' : this.momentNames.map((k) => `${k}.<param>`).join(', ');
  }
}
