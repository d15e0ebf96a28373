// Parameter initialisation for training from scratch: each parameter's `init` from its declaration
// (`zeros`, `ones`, `uniform(low, high)`, `normal(mean, std)`, `trunc_normal(std)`, `xavier_uniform(gain)`,
// `kaiming_uniform(a)`), else PyTorch's module defaults by shape (a matrix: kaiming_uniform(a: √5), i.e.
// U(±1/√fan_in) as nn.Linear; a vector: ones for a norm's weight, zeros otherwise). Every parameter draws from its
// own stream keyed by (seed, name), so adding a parameter never changes another one's values.
import { Rng } from '../data/rng.js';

export class InitError extends Error {}

const fans = (shape: readonly number[]) => {
  const receptive = shape.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: (shape[1] ?? 1) * receptive, fanOut: shape[0] * receptive };
};

function parseCall(init: string): { name: string; args: Map<string, number> } {
  const m = /^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$/s.exec(init);
  if (!m) throw new InitError(`cannot read init '${init}'`);
  const args = new Map<string, number>();
  for (const part of (m[2] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const kv = /^([a-z_]+)\s*:\s*(.+)$/.exec(part);
    if (!kv) throw new InitError(`init '${init}': arguments are NAME: VALUE`);
    const v = kv[2].trim();
    const sqrt = /^sqrt\((.+)\)$/.exec(v);
    const num = sqrt ? Math.sqrt(Number(sqrt[1])) : Number(v);
    if (!Number.isFinite(num)) throw new InitError(`init '${init}': '${v}' is not a number`);
    args.set(kv[1], num);
  }
  return { name: m[1], args };
}

/** The initial value of one parameter. */
export function initParam(name: string, shape: readonly number[], init: string | undefined, seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const rng = new Rng(seed, name);
  const rule = init ?? (shape.length >= 2 ? 'kaiming_uniform(a: sqrt(5))' : /norm[^.]*\.weight$|\.gamma$|ln[^.]*\.weight$/.test(name) ? 'ones' : 'zeros');
  const { name: kind, args } = parseCall(rule);
  const arg = (k: string, d: number) => args.get(k) ?? d;
  const uniform = (lo: number, hi: number) => {
    for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng.next();
  };
  const { fanIn, fanOut } = fans(shape);
  switch (kind) {
    case 'zeros':
      break;
    case 'ones':
      out.fill(1);
      break;
    case 'constant':
      out.fill(arg('value', 0));
      break;
    case 'uniform':
      uniform(arg('low', 0), arg('high', 1));
      break;
    case 'normal': {
      const mean = arg('mean', 0);
      const std = arg('std', 1);
      for (let i = 0; i < n; i++) out[i] = mean + std * rng.normal();
      break;
    }
    case 'trunc_normal': {
      // Resample outside ±2 (timm's default bounds, in units of std when std is small).
      const std = arg('std', 0.02);
      for (let i = 0; i < n; i++) {
        let v: number;
        do v = rng.normal() * std;
        while (Math.abs(v) > 2);
        out[i] = v;
      }
      break;
    }
    case 'xavier_uniform': {
      const bound = arg('gain', 1) * Math.sqrt(6 / (fanIn + fanOut));
      uniform(-bound, bound);
      break;
    }
    case 'kaiming_uniform': {
      const a = arg('a', 0);
      const bound = Math.sqrt(2 / (1 + a * a)) * Math.sqrt(3 / fanIn);
      uniform(-bound, bound);
      break;
    }
    default:
      throw new InitError(`parameter '${name}': unknown init '${kind}' (known: zeros, ones, constant, uniform, normal, trunc_normal, xavier_uniform, kaiming_uniform)`);
  }
  return out;
}
