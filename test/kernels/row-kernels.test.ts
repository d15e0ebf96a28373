// The row kernels (kernels/row.ts: softmax, log_softmax, layernorm) and the workgroup reductions
// (kernels/reduce.ts: sum and max over more than 256 elements) on every lane-reduction path of
// kernels/reduce.ts (laneReduceCode): the device's own target (a software adapter: one subgroup per row) and
// hardware-like targets with and without subgroups (subgroup shuffles for short rows, subgroupAdd/subgroupMax
// plus workgroup partials for long ones, barrier trees without subgroups), and a target that only bounds the
// subgroup size loosely (the kernels read it at run time). Random row lengths (1, primes, powers of two and
// their neighbours, up to 4096), row counts, offsets up to 1e4, -inf, +inf and NaN, against the float64 CPU
// reference; runs repeat bit for bit.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { laneCount } from '../../kernels/reduce.js';
import { openDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { randomTensor } from '../ir/util.js';
import { fcParams, hardwareLike } from './core-util.js';
import { assertBitwise, assertKernelsAgree, checkAgainstReference, makeRng, runGraph, scheduledProgram, withDevice, type GpuContext } from './harness.js';

type RowOp = 'softmax' | 'log_softmax' | 'layernorm';

const LENGTHS = [1, 2, 3, 5, 13, 16, 17, 31, 64, 97, 127, 128, 255, 256, 257, 509, 1000, 1024, 1409, 4096];

const withoutSubgroups = (t: Target): Target => ({ ...t, name: `${t.name} (no subgroups)`, features: t.features.filter((f) => f !== 'subgroups') });

/** The device's subgroups, but with a range around the real size: codegen may only rely on the bounds. */
const looseSubgroups = (t: Target): Target => ({ ...t, name: `${t.name} (loose subgroup sizes)`, subgroupMinSize: Math.max(1, t.subgroupMinSize / 2), subgroupMaxSize: t.subgroupMaxSize * 2 });

/** The targets that steer the generators onto each lane-reduction path the device can run. */
function targets(t: Target): [string, Target][] {
  const all: [string, Target][] = [
    ['device', t],
    ['device, no subgroups', withoutSubgroups(t)],
    ['hardware', hardwareLike(t)],
    ['hardware, no subgroups', hardwareLike(withoutSubgroups(t))],
  ];
  if (t.features.includes('subgroups')) all.push(['hardware, loose subgroup sizes', looseSubgroups(hardwareLike(t))]);
  return all;
}

interface RowCase {
  readonly op: RowOp;
  readonly len: number;
  readonly rows: number;
  /** Elements after the row dim (softmax along a middle dim); 1 for the last dim. */
  readonly inner: number;
  /** Per-row offset scale and spread of the values. */
  readonly offset: number;
  readonly spread: number;
  /** Special values per row: -inf entries, and rarely +inf or NaN. */
  readonly specials: readonly ('-inf' | 'inf' | 'nan' | 'none')[];
  readonly seed: number;
}

const caseArb = (op: RowOp): fc.Arbitrary<RowCase> =>
  fc
    .record({
      len: fc.constantFrom(...LENGTHS),
      rows: fc.integer({ min: 1, max: 6 }),
      inner: op === 'layernorm' ? fc.constant(1) : fc.constantFrom(1, 1, 3),
      offset: fc.constantFrom(0, 10, 1e4),
      spread: fc.constantFrom(0.5, 4, 30),
      specials: fc.array(fc.constantFrom('none', 'none', 'none', '-inf', '-inf', 'inf', 'nan'), { minLength: 6, maxLength: 6 }),
      seed: fc.integer(),
    })
    .map((c) => ({ ...c, op, rows: c.len >= 1000 ? Math.min(c.rows, 2) : c.rows, inner: c.len >= 1000 ? 1 : c.inner, offset: op === 'layernorm' ? Math.min(c.offset, 100 * c.spread) : c.offset }));

/** The case's input, [rows, len, inner] (the row dim in the middle), rounded to f32. */
function caseInput(c: RowCase): { shape: number[]; data: Float32Array } {
  const rng = makeRng(c.seed);
  const data = new Float32Array(c.rows * c.len * c.inner);
  for (let r = 0; r < c.rows; r++) {
    for (let i = 0; i < c.inner; i++) {
      const offset = c.offset * (2 * rng() - 1);
      for (let j = 0; j < c.len; j++) data[(r * c.len + j) * c.inner + i] = offset + c.spread * (2 * rng() - 1);
      const at = (r * c.len + Math.floor(rng() * c.len)) * c.inner + i;
      const special = c.specials[r % c.specials.length];
      if (special === '-inf') data[at] = -Infinity;
      if (special === 'inf') data[at] = Infinity;
      if (special === 'nan') data[at] = NaN;
    }
  }
  // A row of -inf only, where there are rows to spare (softmax: NaN as the reference).
  if (c.rows >= 5) for (let j = 0; j < c.len; j++) data[(4 * c.len + j) * c.inner] = -Infinity;
  return { shape: [c.rows, c.len, c.inner], data };
}

const label = (c: RowCase, where: string) => `${where}: ${c.op} rows ${c.rows} len ${c.len} inner ${c.inner} offset ${c.offset} spread ${c.spread} specials ${c.specials.join(',')} seed ${c.seed}`;

/**
 * f32 tolerances: softmax is relative to its outputs; log_softmax's x - lse loses |x|'s ulp (offsets to 1e4);
 * layernorm's centred values lose offset/spread ulps (kept at most 100).
 */
function tolerance(c: RowCase): { rtol: number; atol: number; scaleAtol?: boolean } {
  const big = Math.abs(c.offset) + c.spread;
  if (c.op === 'softmax') return { rtol: 2e-5, atol: 1e-6 };
  if (c.op === 'log_softmax') return { rtol: 2e-5, atol: 1e-6 + 4 * 2 ** -23 * big, scaleAtol: false };
  return { rtol: 2e-5, atol: 2e-6 * (1 + Math.abs(c.offset) / c.spread) };
}

const build = (c: RowCase) => (b: Builder, [x]: number[]) => (c.op === 'layernorm' ? b.add('layernorm', [b.add('reshape', [x], { shape: [c.rows * c.inner, c.len] })], { eps: 1e-5 }) : b.add(c.op, [x], { dim: 1 }));

/** The row kernel (the graph's last), checked against the reference on `target`. */
async function checkRow(gpu: GpuContext, c: RowCase, target: Target, where: string): Promise<Kernel> {
  const r = await checkAgainstReference(gpu, build(c), [caseInput(c)], { ...tolerance(c), target, label: label(c, where) });
  return r.kernels[r.kernels.length - 1];
}

/** What the kernel's WGSL must use on `target`: subgroup builtins exactly where it has them (rows over 16). */
function assertPath(k: Kernel, c: RowCase, target: Target, where: string): void {
  const what = `${label(c, where)}: ${k.name}`;
  if (c.len <= 16) {
    assert.match(k.name, /_row_thread_f32$/, what);
    return;
  }
  assert.match(k.name, /_row_wg_f32$/, what);
  const lanes = laneCount(c.len, target);
  assert.equal(k.workgroupSize[0] % lanes, 0, `${what}: workgroup ${k.workgroupSize[0]} for ${lanes} lanes`);
  if (!target.features.includes('subgroups')) assert.doesNotMatch(k.wgsl, /subgroup/, what);
  else if (lanes <= target.subgroupMinSize) assert.match(k.wgsl, /^enable subgroups;[^]*subgroupShuffleXor/, what);
  else {
    assert.match(k.wgsl, /^enable subgroups;/, what);
    assert.match(k.wgsl, /@builtin\(subgroup_size\) sg_size/, what);
    assert.match(k.wgsl, /subgroupAdd\(/, what);
  }
}

await withDevice(async (gpu) => {
  const all = targets(gpu.target);

  await describe('row kernels against the reference on every reduction path', async () => {
    for (const op of ['softmax', 'log_softmax', 'layernorm'] as const) {
      await test(`${op}: random lengths, row counts, magnitudes and infinities`, async () => {
        await fc.assert(
          fc.asyncProperty(caseArb(op), fc.nat(all.length - 1), async (c, t) => {
            const [where, target] = all[t];
            assertPath(await checkRow(gpu, c, target, where), c, target, where);
          }),
          fcParams(16, op === 'softmax' ? 811 : op === 'log_softmax' ? 812 : 813),
        );
      });
    }

    await test('every target on the lengths around a subgroup, a workgroup and the register budget', async () => {
      for (const [where, target] of all) {
        for (const len of [17, 257, 4096]) {
          for (const op of ['softmax', 'layernorm'] as const) {
            const c: RowCase = { op, len, rows: len > 1000 ? 2 : 9, inner: 1, offset: op === 'layernorm' ? 3 : 50, spread: 4, specials: ['none', '-inf', 'none'], seed: len };
            assertPath(await checkRow(gpu, c, target, where), c, target, where);
          }
        }
      }
    });
  });

  await describe('sum and max over more than 256 elements (one workgroup per output)', async () => {
    await test('random slices with NaN, on every reduction path', async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom('sum' as const, 'max' as const), fc.constantFrom(257, 300, 509, 1000, 4096), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.integer(), fc.nat(all.length - 1), async (op, len, outs, nan, seed, t) => {
          const [where, target] = all[t];
          const rng = makeRng(seed);
          const data = Float32Array.from({ length: outs * len }, () => 8 * rng() - 4);
          if (nan) data[Math.floor(rng() * data.length)] = NaN;
          const r = await checkAgainstReference(gpu, (b, [x]) => b.add(op, [x], { dims: [1] }), [{ shape: [outs, len], data }], {
            exact: op === 'max',
            rtol: 1e-5,
            atol: 1e-6 * Math.sqrt(len),
            target,
            label: `${where}: ${op} [${outs}, ${len}] nan ${nan} seed ${seed}`,
          });
          assert.equal(r.kernels[0].name, `reduce_${op}_tree_f32`);
          assert.equal(r.kernels[0].workgroupSize[0], laneCount(len, target));
        }),
        fcParams(16, 814),
      );
    });
  });

  await test('two runs are equal bit for bit on every target', async () => {
    for (const [where, target] of all) {
      for (const op of ['softmax', 'log_softmax', 'layernorm'] as const) {
        for (const len of [97, 1409]) {
          const c: RowCase = { op, len, rows: 3, inner: 1, offset: 20, spread: 5, specials: ['none'], seed: 7 + len };
          const b = new Builder();
          const x = b.input('x', [c.rows * c.inner, c.len]);
          const y = op === 'layernorm' ? b.add('layernorm', [x], { eps: 1e-5 }) : b.add(op, [x], { dim: -1 });
          b.output('y', y);
          const input = caseInput(c).data;
          const first = await runGraph(gpu, b.graph, y, [input], { target });
          const second = await runGraph(gpu, b.graph, y, [input], { target });
          assertBitwise(second.value, first.value, `${where}: ${op} rows of ${len}`);
        }
      }
    }
  });
});

/** layernorm · g + beta, then a matmul by wᵀ + bias: the row product kernel (x·wᵀ inside the layernorm kernel). */
function rowProductGraph(rows: number, len: number, out: number): Builder {
  const b = new Builder();
  const x = b.input('x', [rows, len]);
  const n = b.add('add', [b.add('mul', [b.add('layernorm', [x], { eps: 1e-6 }), b.param('g', [len])]), b.param('beta', [len])]);
  b.output('y', b.add('add', [b.add('matmul', [n, b.add('permute', [b.param('w', [out, len])], { dims: [1, 0] })]), b.param('bias', [out])]));
  return b;
}

// Bit for bit on a software adapter; on hardware within assertKernelsAgree's bound: the same layernorm code in the
// row-product kernel and the row kernel parted by up to 32 ulps of small values on an H200 (the LoRA projection
// of test/codegen/lora-fusion.test.ts is this pair of kernels).
await test('the row product kernel equals the row kernel and a matmul (bit for bit on a software adapter) on every reduction path', async () => {
  const opened = await openDevice();
  try {
    for (const [where, target] of targets(opened.target)) {
      for (const len of [40, 200]) {
        const g = rowProductGraph(5, len, 12).graph;
        const rng = makeRng(len);
        const feed = (named: readonly { name: string; node: number }[]) => new Map(named.map((e) => [e.name, randomTensor(g.node(e.node).shape, rng, -2, 2)] as const)) as Map<string, RefTensor>;
        const [inputs, params] = [feed(g.inputs), feed(g.params)];
        const fused = scheduledProgram(g, target, {});
        assert.match(fused.schedule.kernels[0].name, /^layernorm_rows_wg_f32\+mul_add\+mm/, `${where}, rows of ${len}`);
        const a = await runGpu(opened, g, fused, inputs, params);
        const b = await runGpu(opened, g, scheduledProgram(g, target, { secondProducts: false }), inputs, params);
        assert.deepEqual([...b.keys()], [...a.keys()], `${where}, rows of ${len}: outputs`);
        // The layernorm's sums and the product's, each over the row.
        for (const [name, v] of a) assertKernelsAgree(opened.target, b.get(name)!.data, v.data, `${where}, rows of ${len}: ${name}`, 2 * len);
      }
    }
  } finally {
    await opened.destroy();
  }
});
