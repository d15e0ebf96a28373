// Key transforms applied to a loaded state dict (strip_prefix, drop), the EVA-CLIP-E extraction preset, and the
// strict match of loaded tensors against the parameters a model expects. Missing weights are always an error
// (the original loaded with strict=False and silently kept random weights): only keys the pipeline lists in
// allow_missing may be absent.

import { sameShape, shapeString, type HostTensor } from './tensor.js';

export type KeyRule = { op: 'strip_prefix'; prefix: string } | { op: 'drop'; patterns: readonly string[] };

const regexCache = new Map<string, RegExp>();

/** `*` matches any run of characters, dots included; every other character is literal. */
export function globToRegExp(pattern: string): RegExp {
  let re = regexCache.get(pattern);
  if (!re) {
    const body = pattern
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*');
    re = new RegExp(`^${body}$`, 's');
    regexCache.set(pattern, re);
  }
  return re;
}

export function matchesGlob(key: string, pattern: string): boolean {
  return globToRegExp(pattern).test(key);
}

export function matchesAny(key: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => matchesGlob(key, p));
}

/** Removes `prefix` from the keys that start with it; other keys are kept as they are. */
export function stripPrefix<T>(m: ReadonlyMap<string, T>, prefix: string): Map<string, T> {
  const out = new Map<string, T>();
  const origin = new Map<string, string>();
  for (const [k, v] of m) {
    const nk = prefix && k.startsWith(prefix) ? k.slice(prefix.length) : k;
    const prev = origin.get(nk);
    if (prev !== undefined) {
      throw new Error(`strip_prefix ${JSON.stringify(prefix)} maps both "${prev}" and "${k}" to "${nk}"`);
    }
    origin.set(nk, k);
    out.set(nk, v);
  }
  return out;
}

/** Removes the keys matching any of the glob patterns. */
export function dropKeys<T>(m: ReadonlyMap<string, T>, patterns: readonly string[]): { kept: Map<string, T>; dropped: string[] } {
  const kept = new Map<string, T>();
  const dropped: string[] = [];
  for (const [k, v] of m) {
    if (matchesAny(k, patterns)) dropped.push(k);
    else kept.set(k, v);
  }
  return { kept, dropped };
}

export function applyKeyRules<T>(m: ReadonlyMap<string, T>, rules: readonly KeyRule[]): Map<string, T> {
  let cur = new Map(m);
  for (const r of rules) cur = r.op === 'strip_prefix' ? stripPrefix(cur, r.prefix) : dropKeys(cur, r.patterns).kept;
  return cur;
}

/**
 * EVA-E weights from an EVA-CLIP checkpoint: drop keys starting with `text` or `logit`, drop `visual.*` keys
 * containing `head` or `cls_token`, strip `visual.`.
 */
export const EVA_CLIP_E_RULES: readonly KeyRule[] = Object.freeze([
  { op: 'drop', patterns: ['text*', 'logit*', 'visual.*head*', 'visual.*cls_token*'] },
  { op: 'strip_prefix', prefix: 'visual.' },
]);

export function evaClipEVisual<T>(m: ReadonlyMap<string, T>): Map<string, T> {
  return applyKeyRules(m, EVA_CLIP_E_RULES);
}

// ---- matching ------------------------------------------------------------------------------------------------

export interface ExpectedWeight {
  path: string;
  shape: readonly number[];
}

export interface WrongShape {
  name: string;
  expected: number[];
  actual: number[];
}

export interface MatchOptions {
  /** Glob patterns of expected keys that may be absent (they keep their initialisation). */
  allowMissing?: readonly string[];
  /** Names the weights in the message. */
  file?: string;
  /** How many names each list shows before "… and N more" (default 10). */
  maxListed?: number;
}

export class WeightMismatchError extends Error {
  constructor(
    message: string,
    readonly missing: string[],
    readonly unexpected: string[],
    readonly wrongShape: WrongShape[],
    /** missing name -> the loaded name it probably is. */
    readonly suggestions: Map<string, string>,
  ) {
    super(message);
    this.name = 'WeightMismatchError';
  }
}

export type MatchResult =
  | { ok: true; tensors: Map<string, HostTensor>; allowedMissing: string[] }
  | { ok: false; error: WeightMismatchError };

/** Edit distance, or Infinity once it certainly exceeds `max`. */
export function editDistance(a: string, b: string, max = Infinity): number {
  if (Math.abs(a.length - b.length) > max) return Infinity;
  let prev = new Array<number>(b.length + 1);
  let cur = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    let rowMin = cur[0];
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
      if (cur[j] < rowMin) rowMin = cur[j];
    }
    if (rowMin > max) return Infinity;
    [prev, cur] = [cur, prev];
  }
  return prev[b.length] > max ? Infinity : prev[b.length];
}

/** The candidate `name` most likely means: same key under another prefix, else the nearest by edit distance. */
export function didYouMean(name: string, candidates: readonly string[]): string | undefined {
  const affix = candidates.filter((c) => c !== name && (c.endsWith(`.${name}`) || name.endsWith(`.${c}`)));
  if (affix.length > 0) return affix.sort((x, y) => x.length - y.length || (x < y ? -1 : 1))[0];
  const max = Math.max(2, Math.floor(name.length / 5));
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(name, c, Math.min(max, bestD));
    if (d < bestD || (d === bestD && best !== undefined && c < best)) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= max ? best : undefined;
}

function listBlock<T>(title: string, items: readonly T[], show: (x: T) => string, maxListed: number): string[] {
  if (items.length === 0) return [];
  const lines = [`  ${title}:`];
  for (const x of items.slice(0, maxListed)) lines.push(`    ${show(x)}`);
  if (items.length > maxListed) lines.push(`    … and ${items.length - maxListed} more`);
  return lines;
}

/** A prefix that turns many missing names into present ones (or the reverse), as a strip_prefix hint. */
function prefixHint(missing: readonly string[], unexpected: readonly string[]): string | undefined {
  const present = new Set(unexpected);
  const counts = new Map<string, number>();
  const sample = missing.slice(0, 200);
  for (const m of sample) {
    for (const u of unexpected) {
      if (u.length > m.length && u.endsWith(m) && u[u.length - m.length - 1] === '.') {
        const p = u.slice(0, u.length - m.length);
        counts.set(p, (counts.get(p) ?? 0) + 1);
      }
    }
  }
  let best: [string, number] | undefined;
  for (const e of counts) if (!best || e[1] > best[1]) best = e;
  if (best && (best[1] >= 2 || sample.length === 1)) {
    return `${best[1]} of the missing keys are in the file under the prefix "${best[0]}": add strip_prefix "${best[0]}"`;
  }
  // the expected names carry a prefix the file's keys lack
  const rev = new Map<string, number>();
  for (const m of sample) {
    const dot = m.indexOf('.');
    if (dot > 0 && present.has(m.slice(dot + 1))) rev.set(m.slice(0, dot + 1), (rev.get(m.slice(0, dot + 1)) ?? 0) + 1);
  }
  for (const e of rev) if (!best || e[1] > best[1]) best = e;
  if (best && best[1] >= 2) return `${best[1]} of the missing keys are in the file without the prefix "${best[0]}"`;
  return undefined;
}

/**
 * Matches loaded tensors (after strip_prefix/drop) against the expected parameters. Success: the tensors keyed
 * by expected path, in the expected order. Failure: every missing key (minus allow_missing), every unexpected
 * key and every wrongly-shaped key, all reported at once.
 */
export function matchWeights(
  expected: readonly ExpectedWeight[],
  loaded: ReadonlyMap<string, HostTensor>,
  opts: MatchOptions = {},
): MatchResult {
  const allow = opts.allowMissing ?? [];
  const maxListed = opts.maxListed ?? 10;
  const expectedNames = new Set<string>();
  const missing: string[] = [];
  const allowedMissing: string[] = [];
  const wrongShape: WrongShape[] = [];
  const tensors = new Map<string, HostTensor>();
  const expectedShape = new Map<string, readonly number[]>();
  for (const e of expected) {
    if (expectedNames.has(e.path)) throw new Error(`matchWeights: the model lists "${e.path}" twice`);
    expectedNames.add(e.path);
    expectedShape.set(e.path, e.shape);
    const t = loaded.get(e.path);
    if (t === undefined) {
      if (matchesAny(e.path, allow)) allowedMissing.push(e.path);
      else missing.push(e.path);
    } else if (!sameShape(t.shape, e.shape)) {
      wrongShape.push({ name: e.path, expected: [...e.shape], actual: [...t.shape] });
    } else tensors.set(e.path, t);
  }
  const unexpected = [...loaded.keys()].filter((k) => !expectedNames.has(k));
  if (missing.length === 0 && unexpected.length === 0 && wrongShape.length === 0) return { ok: true, tensors, allowedMissing };

  const suggestions = new Map<string, string>();
  for (const m of missing.slice(0, maxListed)) {
    const s = didYouMean(m, unexpected);
    if (s !== undefined) suggestions.set(m, s);
  }
  const where = opts.file ? ` in ${opts.file}` : '';
  const lines = [`the weights${where} do not match the model:`];
  lines.push(
    ...listBlock(
      `${missing.length} missing (the model has them, the file does not)`,
      missing,
      (m) => {
        const s = suggestions.get(m);
        return `${m} ${shapeString(expectedShape.get(m) ?? [])}${s ? `  (did you mean "${s}"?)` : ''}`;
      },
      maxListed,
    ),
  );
  lines.push(
    ...listBlock(`${unexpected.length} unexpected (in the file, not in the model)`, unexpected, (u) => `${u} ${shapeString(loaded.get(u)!.shape)}`, maxListed),
  );
  lines.push(
    ...listBlock(
      `${wrongShape.length} wrongly shaped`,
      wrongShape,
      (w) => `${w.name}: the model expects ${shapeString(w.expected)}, the file has ${shapeString(w.actual)}`,
      maxListed,
    ),
  );
  const hint = missing.length > 0 && unexpected.length > 0 ? prefixHint(missing, unexpected) : undefined;
  if (hint) lines.push(`  hint: ${hint}`);
  if (missing.length > 0) lines.push('  visft never runs with missing weights: list keys that are meant to be absent in allow_missing');
  if (unexpected.length > 0) lines.push('  drop keys the model does not use with a drop rule');
  return { ok: false, error: new WeightMismatchError(lines.join('\n'), missing, unexpected, wrongShape, suggestions) };
}
