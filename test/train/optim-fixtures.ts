// Reading the PyTorch fixtures written by test/fixtures/train/make_optim.py, and f32 comparison helpers.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const DIR = fileURLToPath(new URL('../../../test/fixtures/train/', import.meta.url));

export function readFixture<T>(file: string): T {
  return JSON.parse(readFileSync(DIR + file, 'utf8')) as T;
}

/** base64 little-endian f32 -> a fresh Float32Array. */
export function f32s(b64: string): Float32Array {
  const bytes = Buffer.from(b64, 'base64');
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = bytes.readFloatLE(i * 4);
  return out;
}

export function tensorMap(names: string[], b64s: string[]): Map<string, Float32Array> {
  return new Map(names.map((n, i) => [n, f32s(b64s[i])]));
}

/** Distance in units in the last place between two f32 values (0 for equal, also for two NaNs). */
export function ulps(a: number, b: number): number {
  if (Number.isNaN(a) && Number.isNaN(b)) return 0;
  if (a === b) return 0;
  if (!Number.isFinite(a) || !Number.isFinite(b) || Number.isNaN(a) || Number.isNaN(b)) return Infinity;
  const key = (x: number): number => {
    const bits = new Uint32Array(new Float32Array([x]).buffer)[0];
    return bits & 0x80000000 ? -(bits & 0x7fffffff) : bits;
  };
  return Math.abs(key(a) - key(b));
}

export interface Comparison {
  maxUlps: number;
  maxRel: number;
  exact: number;
  total: number;
}

/** Compares element by element; relative error is measured against the tensor's largest magnitude so that
 *  elements near zero (where a few ulps are a huge relative error) do not dominate. */
export function compare(actual: Float32Array, expected: Float32Array, where: string): Comparison {
  assert.equal(actual.length, expected.length, `${where}: length`);
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  const c: Comparison = { maxUlps: 0, maxRel: 0, exact: 0, total: actual.length };
  for (let i = 0; i < actual.length; i++) {
    const u = ulps(actual[i], expected[i]);
    if (u === 0) c.exact++;
    c.maxUlps = Math.max(c.maxUlps, u);
    c.maxRel = Math.max(c.maxRel, Math.abs(actual[i] - expected[i]) / (scale || 1));
  }
  return c;
}

export function assertClose(actual: Float32Array, expected: Float32Array, where: string, relTol: number): Comparison {
  const c = compare(actual, expected, where);
  assert.ok(c.maxRel <= relTol, `${where}: max relative error ${c.maxRel} > ${relTol} (max ${c.maxUlps} ulps)`);
  return c;
}

export function assertBitExact(actual: Float32Array, expected: Float32Array, where: string): void {
  const c = compare(actual, expected, where);
  assert.equal(c.exact, c.total, `${where}: ${c.total - c.exact} of ${c.total} elements differ from torch (max ${c.maxUlps} ulps)`);
}
