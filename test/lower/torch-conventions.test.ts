// `compile --op` follows PyTorch's conventions where they extend the IR ops (found by scripts/oracle-fuzz.py):
// Python slice bounds (negative, out of range, empty), expand's -1, torch.gather with an index smaller than x in
// the other dims, and torch.matmul / F.linear with 1-D operands. Checked on the float64 reference against
// direct implementations of those rules, on random shapes (fast-check).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { LowerError } from '../../compiler/lower/ops.js';
import { compileOp } from '../../compiler/lower/op-entry.js';

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const iota = (s: readonly number[], from = 0): RefTensor => ({ shape: [...s], data: Float64Array.from({ length: numel(s) }, (_, i) => from + i) });

/** Runs `--op op` on the reference with these inputs; the output tensor. */
function run(op: string, inputs: Record<string, RefTensor>, attrs: string[] = []): RefTensor {
  const { graph } = compileOp(op, new Map(Object.entries(inputs).map(([k, t]) => [k, t.shape])), attrs, false);
  return interpret(graph, new Map(Object.entries(inputs))).get('output')!;
}

/** Python's range(*slice(start, end, step).indices(n)) for step > 0. */
function pyIndices(n: number, step: number, start?: number, end?: number): number[] {
  const clamp = (v: number | undefined, dflt: number) => (v === undefined ? dflt : Math.min(Math.max(v < 0 ? v + n : v, 0), n));
  const out: number[] = [];
  for (let i = clamp(start, 0); i < clamp(end, n); i += step) out.push(i);
  return out;
}

test('slice takes Python bounds: negative ones count from the end, out-of-range ones clamp, end before start is empty', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: -12, max: 12 }), fc.option(fc.integer({ min: -12, max: 12 }), { nil: undefined }), (n, rows, step, start, end) => {
      const x = iota([rows, n]);
      const y = run('slice', { x }, ['dim=-1', `start=${start}`, ...(end === undefined ? [] : [`end=${end}`]), `step=${step}`]);
      const cols = pyIndices(n, step, start, end);
      assert.deepEqual(y.shape, [rows, cols.length]);
      assert.deepEqual([...y.data], Array.from({ length: rows }, (_, r) => cols.map((c) => r * n + c)).flat());
    }),
  );
});

test("expand's -1 keeps x's size at that dim; a -1 on a new leading dim is refused with the reason", () => {
  assert.deepEqual(run('expand', { x: iota([3, 1]) }, ['shape=[2,-1,4]']).shape, [2, 3, 4]);
  assert.deepEqual([...run('expand', { x: iota([3, 1]) }, ['shape=[-1,2]']).data], [0, 0, 1, 1, 2, 2]);
  assert.throws(() => run('expand', { x: iota([3, 1]) }, ['shape=[-1,3,2]']), (e: unknown) => e instanceof LowerError && /expand: -1 at dim 0 of \[-1,3,2\] is a new dim of x \[3,1\]; give its size/.test(e.message));
});

test('gather with an index smaller than x in the other dims reads x over the index extent (torch.gather)', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }), fc.nat(), fc.nat(), (xs, dimSeed, seed) => {
      const dim = dimSeed % xs.length;
      const is = xs.map((s, k) => (k === dim ? 1 + ((seed >> k) % 4) : 1 + ((seed >> (k + 3)) % s)));
      const x = iota(xs, 100);
      const index: RefTensor = { shape: is, data: Float64Array.from({ length: numel(is) }, (_, i) => (i * 7 + seed) % xs[dim]) };
      const y = run('gather', { x, index }, [`dim=${dim}`]);
      assert.deepEqual(y.shape, is);
      const strides = (s: readonly number[]) => s.map((_, k) => numel(s.slice(k + 1)));
      const [sx, si] = [strides(xs), strides(is)];
      y.data.forEach((v, i) => {
        const coord = is.map((_, k) => Math.floor(i / si[k]) % is[k]);
        coord[dim] = index.data[i];
        assert.equal(v, x.data[coord.reduce((a, c, k) => a + c * sx[k], 0)]);
      });
    }),
  );
});

test('matmul and linear take 1-D operands as torch does: a row on the left, a column on the right, the added dim dropped', () => {
  const dot = (a: RefTensor, b: RefTensor, n: number) => Array.from({ length: n }, (_, j) => a.data.reduce((s, v, k) => s + v * b.data[k * n + j], 0));
  const [a, b] = [iota([3], 1), iota([3, 4], 1)];
  const ab = run('matmul', { a, b });
  assert.deepEqual(ab.shape, [4]);
  assert.deepEqual([...ab.data], dot(a, b, 4));
  const bt = iota([2, 4, 3], 1);
  const col = run('matmul', { a: bt, b: a });
  assert.deepEqual(col.shape, [2, 4]);
  assert.deepEqual([...col.data], Array.from({ length: 8 }, (_, r) => [0, 1, 2].reduce((s, k) => s + bt.data[r * 3 + k] * a.data[k], 0)));
  assert.deepEqual(run('matmul', { a, b: a }).shape, []);
  assert.deepEqual([...run('matmul', { a, b: a }).data], [1 + 4 + 9]);
  const lin = run('linear', { x: a, weight: iota([4, 3], 1), bias: iota([4], 10) });
  assert.deepEqual(lin.shape, [4]);
  assert.deepEqual([...lin.data], [0, 1, 2, 3].map((o) => 10 + o + [0, 1, 2].reduce((s, k) => s + a.data[k] * (1 + o * 3 + k), 0)));
});
