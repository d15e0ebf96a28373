// What a Target.tuning read from a file may hold: one check per key (exhaustive over the Target's type, so a new
// tuning key must say how it is checked here), each returning a problem (`.key: expected ...`) or undefined.
import type { Target } from '../../compiler/codegen/types.js';

type Tuning = NonNullable<Target['tuning']>;
type Check = (v: unknown) => string | undefined;

const isInt = (v: unknown, min = 1, max = 4096): boolean => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

const oneOf =
  (...allowed: readonly unknown[]): Check =>
  (v) =>
    allowed.includes(v) ? undefined : `: expected one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`;

const bool: Check = (v) => (typeof v === 'boolean' ? undefined : ': expected true or false');
const int =
  (min = 1, max = 4096): Check =>
  (v) =>
    isInt(v, min, max) ? undefined : `: expected an integer from ${min} to ${max}`;

/** An object whose keys each have a check; `required` ones must be present. */
function record(fields: Record<string, Check>, required: readonly string[] = []): Check {
  return (v) => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return ': expected an object';
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!(k in fields)) return `.${k}: not a known field (${Object.keys(fields).join(', ')})`;
      const p = fields[k](o[k]);
      if (p) return `.${k}${p}`;
    }
    const missing = required.find((k) => !(k in o));
    return missing ? `.${missing}: missing` : undefined;
  };
}

const staging = oneOf('loop', 'unrolled', 'prefetch');
const flashCaps = record({ own: int(), sweep: int(), rows: int(1, 8), split: oneOf(1, 2, 4, 8, 16, 32), workgroup: int(1, 1024), unroll: bool, registers: int(16, 1024) });

const CHECKS: { readonly [K in keyof Tuning]-?: Check } = {
  sgmatTiles: record({ wm: int(1, 8), wn: int(1, 8), fm: int(1, 8), fn: int(1, 8), bk: int(8, 256), staging, ksplit: oneOf(1, 2) }, ['wm', 'wn', 'fm', 'fn', 'bk']),
  flashSgmatTiles: record({ subgroups: int(1, 16), keys: int(8, 512), sharedKv: bool }, ['subgroups', 'keys', 'sharedKv']),
  sgmatDirect: bool,
  f32TensorCores: bool,
  tiledStaging: staging,
  tiledKSplit: oneOf(1, 2),
  tiledTiles: record({ tm: oneOf(64, 128), tn: oneOf(64, 128), rows: oneOf(4, 8), cols: oneOf(4, 8), tk: oneOf(16, 32) }, ['tm', 'tn', 'rows', 'cols']),
  vectorLoads: bool,
  tensorCoreAttention: bool,
  flashDirect: bool,
  flashDirectGrad: bool,
  f32AttentionTensorCores: bool,
  f32AttentionGradTensorCores: bool,
  flashDirectKeys: oneOf(16, 32, 64),
  matmulSplits: int(1, 64),
  splitTiles: int(8, 4096),
  flashSweepSplit: int(2, 1 << 20),
  flashShareExp: bool,
  flashCaps,
  flashGradCaps: flashCaps,
  flashBlocked: bool,
  flashBlockedGrad: bool,
  msdeformValueGrad: oneOf('indexed', 'tiled', 'gather'),
  msdeformSplits: (v) => (Array.isArray(v) ? (v.every((x) => isInt(x, 1, 1024)) ? undefined : ': expected integers from 1 to 1024') : int(1, 1024)(v)),
};

/** Undefined when `v` is a valid Target.tuning, else the problem (`.flashCaps.split: expected one of ...`). */
export function validateTuning(v: unknown): string | undefined {
  return record(CHECKS)(v);
}
