// Batched matmuls whose operands are read through views (kernels/matmul.ts operandCoords): the batch index is
// decomposed into the coordinates of several batch dims of different sizes, and each operand reads its own
// permuted or expanded batch layout. Every variant (naive, split-K, blocked, tiled) matches the float64
// reference. A decomposition with the dims' order reversed ([2, 3] read as [3, 2]) gave another batch's products
// in every variant; the random-graph differential test found it at 5,000 runs.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { chainMismatch } from '../codegen/matmul-graphs.js';
import { feeds, permutation } from '../passes/graphs.js';
import { fcParams, hardwareLike } from './core-util.js';
import { sharedDevice } from './harness.js';

interface Case {
  /** The output's batch dims (one to three, of sizes 1 to 4). */
  readonly batch: number[];
  readonly m: number;
  readonly k: number;
  readonly n: number;
  /** How each operand reaches its batch layout: 0 plain, 1 a permutation of stored batch dims, 2 an expand of a leading dim. */
  readonly modeA: number;
  readonly modeB: number;
  /** The permutation's seed. */
  readonly perm: number;
}

/** An operand of shape [...batch, rows, cols] reached through `mode` from an input named `name`. */
function operand(b: Builder, name: string, batch: readonly number[], rows: number, cols: number, mode: number, perm: number): number {
  const r = batch.length;
  if (mode === 1) {
    // Stored with its batch dims permuted by p, then permuted back: dims[p[i]] = i.
    const p = permutation(r, perm);
    const stored = b.input(name, [...p.map((d) => batch[d]), rows, cols]);
    const back = Array<number>(r);
    p.forEach((d, i) => (back[d] = i));
    return b.add('permute', [stored], { dims: [...back, r, r + 1] });
  }
  if (mode === 2 && batch[0] > 1) {
    // The first batch dim is a broadcast of a stored size-1 dim.
    const stored = b.input(name, [1, ...batch.slice(1), rows, cols]);
    return b.add('expand', [stored], { shape: [...batch, rows, cols] });
  }
  return b.input(name, [...batch, rows, cols]);
}

function batchGraph(c: Case): Graph {
  const b = new Builder();
  const a = operand(b, 'a', c.batch, c.m, c.k, c.modeA, c.perm);
  const w = operand(b, 'b', c.batch, c.k, c.n, c.modeB, c.perm + 7);
  b.output('y', b.add('matmul', [a, w]));
  return b.graph;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  batch: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }),
  m: fc.integer({ min: 1, max: 9 }),
  k: fc.integer({ min: 1, max: 9 }),
  n: fc.integer({ min: 1, max: 9 }),
  modeA: fc.integer({ min: 0, max: 2 }),
  modeB: fc.integer({ min: 0, max: 2 }),
  perm: fc.nat({ max: 1000 }),
});

describe('on the device', () => {
  const device = sharedDevice();

  /** Runs case `c` on the device (scheduled as hardware or not) against the reference; returns its kernels' names. */
  async function matches(c: Case, hardware: boolean): Promise<string[]> {
    const graph = batchGraph(c);
    const target = hardware ? hardwareLike(device().target) : device().target;
    const program = compileGpu(graph, target);
    const names = program.schedule.kernels.map((k) => k.name);
    const f = feeds(graph, c.perm + 1, false);
    const got = await runGpu(device(), graph, program, f.inputs, f.params);
    const m = chainMismatch(graph, f, got, c.k);
    assert.equal(m, undefined, `${JSON.stringify(c)} (${names.join(', ')}): ${m}`);
    return names;
  }

  test('batch dims [2, 3] through permutes in every variant: naive, split-K, blocked (software) and tiled (hardware)', async () => {
    const variants: [Omit<Case, 'batch' | 'modeA' | 'modeB' | 'perm'>, boolean, RegExp][] = [
      [{ m: 3, k: 5, n: 4 }, false, /^matmul_naive_f32_av_bv$/],
      [{ m: 4, k: 600, n: 4 }, false, /^matmul_splitk_f32_av_bv$/],
      [{ m: 64, k: 96, n: 64 }, false, /^matmul_blocked_f32_av_bv$/],
      [{ m: 64, k: 96, n: 64 }, true, /^matmul_tiled_f32_av_bv$/],
    ];
    for (const [dims, hardware, name] of variants) {
      const names = await matches({ batch: [2, 3], modeA: 1, modeB: 1, perm: 1, ...dims }, hardware);
      assert.ok(names.some((n) => name.test(n)), `${name}: ${names.join(', ')}`);
    }
  });

  test('random batch dims, layouts and small sizes (the naive kernel, as software and as hardware) equal the reference', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, fc.boolean(), async (c, hardware) => void (await matches(c, hardware))),
      fcParams(25, 6061),
    );
  });
});
