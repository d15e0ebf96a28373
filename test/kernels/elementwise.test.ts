// The elementwise kernels (kernels/elementwise.ts) on Dawn against the float64 CPU reference: every unary op on
// random shapes and on a dense grid with special values (accuracy of the f32 exp, log, erf, gelu, tanh,
// sigmoid), pow's exponent cases, casts bit-exact (f16 / bf16 rounding to nearest even, subnormals,
// overflow), dropout's mask bit-exact with the reference's hash, binary ops with NumPy broadcasting, NaN
// semantics of maximum and eq, full, and the tight-limits target (grid-stride loop over a capped dispatch).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Builder } from '../../compiler/ir/builder.js';
import type { DType } from '../../compiler/ir/graph.js';
import { dropoutKeeps } from '../../compiler/ir/rules/reference-core.js';
import { GPU_RULES } from '../../kernels/index.js';
import { broadcastPairArb, fcParams, shapeArb, tightTarget } from './core-util.js';
import { checkAgainstReference, randomTensor, withDevice } from './harness.js';

const UNARY = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'sigmoid', 'relu', 'gelu', 'erf', 'step'] as const;
const BINARY = ['add', 'sub', 'mul', 'div', 'maximum', 'eq'] as const;

/** A grid over [lo, hi] plus special values. */
function grid(n: number, lo: number, hi: number, extra: readonly number[] = []): { shape: number[]; data: Float32Array } {
  const data = new Float32Array(n + extra.length);
  for (let i = 0; i < n; i++) data[i] = lo + ((hi - lo) * i) / (n - 1);
  extra.forEach((v, i) => (data[n + i] = v));
  return { shape: [data.length], data };
}

const SPECIAL = [0, -0, 1e-30, -1e-30, 1, -1, 0.5, -0.5, 2, 30, -30, 88, -88, 100, -110, Infinity, -Infinity, NaN];

await withDevice(async (gpu) => {
  await describe('unary ops', async () => {
    // Maximum relative errors measured on lavapipe over [-12, 12] (see the report): exp 1.1 ulp, log 2.5,
    // sqrt 0.5, rsqrt 1.4, tanh 1.2, sigmoid 2.1, gelu 3.5 (4.2e-7; its branch-free Φ, kernels/elementwise.ts
    // normcdf_f32), erf 1.05. The bounds leave a margin.
    const tol: Record<(typeof UNARY)[number], number> = {
      neg: 0, exp: 3e-7, log: 4e-7, sqrt: 2e-7, rsqrt: 3e-7, tanh: 3e-7, sigmoid: 4e-7, relu: 0, gelu: 1e-6, erf: 2.5e-7, step: 0,
    };
    for (const op of UNARY) {
      await test(`${op}: accurate over a dense grid and special values`, async () => {
        const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
        const x = positive ? grid(3001, 1e-3, 50, [...SPECIAL, 1e-3, 1 + 2 ** -23, 1 - 2 ** -24, 1.5e-38]) : grid(4001, -12, 12, SPECIAL);
        // Subnormal and tiny results: an absolute floor far below f32's normal range.
        await checkAgainstReference(gpu, (b, [a]) => b.add(op, [a]), [x], { rtol: tol[op], atol: 1e-37, scaleAtol: false, exact: tol[op] === 0 });
      });
    }
    await test('each unary op on random shapes', async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...UNARY), shapeArb(0, 4), fc.integer(), async (op, shape, seed) => {
          const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
          const x = randomTensor(shape, seed, positive ? 0.01 : -5, 5);
          await checkAgainstReference(gpu, (b, [a]) => b.add(op, [a]), [x], { label: `${op} [${shape}]` });
        }),
        fcParams(8, 101),
      );
    });
    await test('negative inputs of log, sqrt and rsqrt give NaN; zero gives -inf, 0 and inf', async () => {
      const x = { shape: [5], data: Float32Array.from([-1, -1e-30, 0, -0, 4]) };
      for (const op of ['log', 'sqrt', 'rsqrt'] as const) await checkAgainstReference(gpu, (b, [a]) => b.add(op, [a]), [x], { exact: op !== 'log' });
    });
  });

  await describe('pow', async () => {
    for (const e of [0, 1, 2, 3, -1, -2, 0.5, -0.5, 2.5, -1.5, 17, 20, 1 / 3]) {
      await test(`exponent ${e}`, async () => {
        const whole = Number.isInteger(e);
        // -0 and -inf under a fractional exponent: IEEE pow (Math.pow, PyTorch) gives +0 / +inf, not NaN.
        const x = grid(501, whole ? -3 : 0, 3, whole ? [0, -0, 1, -1, NaN, Infinity, -Infinity] : [0, -0, 1, 1e-20, NaN, -1, Infinity, -Infinity]);
        const rtol = Math.abs(e) > 16 || !whole ? 2e-6 : 1e-6;
        await checkAgainstReference(gpu, (b, [a]) => b.add('pow', [a], { exponent: e }), [x], { rtol, atol: 1e-30, scaleAtol: false });
      });
    }
  });

  await describe('cast', async () => {
    // Values around f16's and bf16's rounding boundaries: ties, subnormals, overflow.
    const edges: number[] = [0, -0, NaN, Infinity, -Infinity, 65504, 65519.996, 65520, 65536, -65520, 1e6, 2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 2 ** -25 * 1.0000001, 2 ** -26, 1e-8, 5.96e-8, 6.1e-5, 6.09e-5, 3.3895313892515355e38, 3.4e38, 1e-39, -1e-40];
    for (let i = 0; i < 24; i++) edges.push(1 + i * 2 ** -11, 1 + (i + 0.5) * 2 ** -10, -(2 + (i + 0.5) * 2 ** -9), 1 + (i + 0.5) * 2 ** -7, 1e-6 * (1 + i / 7));
    for (const dtype of ['f16', 'bf16', 'i32', 'i64', 'bool', 'f32'] as DType[]) {
      await test(`to ${dtype} is bit-exact`, async () => {
        const rnd = randomTensor([2000], 7, -70000, 70000).data;
        const small = randomTensor([2000], 8, -1e-4, 1e-4).data;
        const data = Float32Array.from([...edges, ...rnd, ...small]);
        await checkAgainstReference(gpu, (b, [a]) => b.add('cast', [a], { dtype }), [{ shape: [data.length], data }], { exact: true });
      });
    }
  });

  await describe('dropout', async () => {
    await test('the mask is the reference hash, bit for bit; kept values scaled by 1/(1-p)', async () => {
      for (const [p, seed] of [[0.1, 0], [0.5, 12345], [0.9, 4294967295], [0.25, -7]] as const) {
        const x = randomTensor([37, 53], 3, 0.5, 2);
        const r = await checkAgainstReference(gpu, (b, [a]) => b.add('dropout', [a], { p, seed }), [x], { rtol: 2e-7 });
        for (let i = 0; i < r.gpu.length; i++) assert.equal(r.gpu[i] !== 0, dropoutKeeps(seed, i, p), `element ${i}, p ${p}, seed ${seed}`);
      }
    });
    await test('p = 0 is the identity', async () => {
      await checkAgainstReference(gpu, (b, [a]) => b.add('dropout', [a], { p: 0, seed: 3 }), [randomTensor([3, 7], 1)], { exact: true });
    });
  });

  await describe('binary ops', async () => {
    await test('NumPy broadcasting on random shapes', async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...BINARY), broadcastPairArb(), fc.integer(), async (op, [sa, sb], seed) => {
          const a = randomTensor(sa, seed);
          // Denominators away from zero; eq needs equal values sometimes.
          const b = op === 'div' ? randomTensor(sb, seed + 1, 0.5, 2) : randomTensor(sb, seed + 1);
          if (op === 'eq') for (let i = 0; i < b.data.length; i += 2) b.data[i] = a.data[i % Math.max(1, a.data.length)] ?? 0;
          await checkAgainstReference(gpu, (bb, [x, y]) => bb.add(op, [x, y]), [a, b], { label: `${op} [${sa}] [${sb}]`, exact: op !== 'div' });
        }),
        fcParams(14, 202),
      );
    });
    await test('the same value on both sides (x + x)', async () => {
      const b = new Builder();
      const x = b.input('x0', [3, 5]);
      const y = b.add('mul', [x, x]);
      const node = b.graph.node(y);
      const rule = GPU_RULES.mul;
      assert.equal(rule.kind, 'kernel');
      if (rule.kind === 'kernel') assert.deepEqual(rule.gen(node, [b.graph.node(x), b.graph.node(x)], gpu.target).bindings.map((v) => v.value), [x, x, y]);
      await checkAgainstReference(gpu, (bb, [a]) => bb.add('mul', [a, a]), [randomTensor([3, 5], 4)], { exact: true });
    });
    await test('maximum propagates NaN; eq is 0 for NaN; division by zero gives inf', async () => {
      const a = { shape: [6], data: Float32Array.from([NaN, 1, NaN, -0, 2, 1]) };
      const c = { shape: [6], data: Float32Array.from([1, NaN, NaN, 0, 2, 0]) };
      for (const op of ['maximum', 'eq', 'div'] as const) await checkAgainstReference(gpu, (b, [x, y]) => b.add(op, [x, y]), [a, c], { exact: true });
    });
  });

  await describe('full and limits', async () => {
    await test('full fills its value, also through a capped dispatch (grid-stride loop)', async () => {
      for (const value of [2.5, -1e-3, 0, 1e30]) {
        await checkAgainstReference(gpu, (b, [x]) => b.add('add', [x, b.full(value, [3, 1])]), [randomTensor([3, 7], 2)], { exact: true });
      }
      const r = await checkAgainstReference(gpu, (b) => b.full(7, [50, 101]), [], { exact: true, target: tightTarget(gpu.target) });
      assert.ok(r.kernels[0].dispatch.every((d) => d <= 3));
    });
    await test('broadcast add over a capped dispatch with 64-invocation workgroups', async () => {
      const r = await checkAgainstReference(gpu, (b, [x, y]) => b.add('sub', [x, y]), [randomTensor([9, 1, 33], 1), randomTensor([40, 1], 2)], { exact: true, target: tightTarget(gpu.target) });
      assert.deepEqual(r.kernels[0].workgroupSize, [64, 1, 1]);
    });
  });
});
