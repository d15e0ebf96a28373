// The split lanes of an f32 flash kernel's row sharing its exponentials (Target.tuning.flashShareExp,
// kernels/flash-common.ts laneValuesCode): each lane computes 1/split of a tile's exponentials and takes the rest by
// subgroup shuffles. The values are the ones every lane computed before, so the forward, its lse, dq, dk and dv must be
// the unshared kernels' bit for bit (up to the sign of exact zeros): on random shapes, masks, 2, 4 and 8 lanes per row,
// one or two rows per invocation, swept tiles shorter than the lanes (no sharing there), through the schedule on the
// device (hardware code). Also what the H200 would run: a split-th of the exponentials in each of the three kernels.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { canSplit } from '../../kernels/flash-common.js';
import { fcParams, hardwareLike } from './core-util.js';
import { assertBitwise, randomTensor, sharedDevice } from './harness.js';
import { attentionWithGrads, type AttentionCaseDims } from './attention-cases.js';

const H200 = TARGETS['nvidia-h200'];
const H200_CAPS = { rows: 2, split: 2, sweep: 16, workgroup: 128 };
const exps = (wgsl: string) => wgsl.split('exp_flash(').length - 2; // minus the definition

describe('as generated for the H200', () => {
  test('EVA-G detection under the profile: half the exponentials in the forward, dq and dk+dv, one shuffle per pair', () => {
    const graph = rowGraph(benchRows('full').find((r) => r.name === 'attention_vjp_evag_detection')!).graph;
    const kernels = (share: boolean) => compileGpu(graph, { ...H200, tuning: { flashCaps: H200_CAPS, ...(share ? { flashShareExp: true } : {}) } }).schedule.kernels.filter((k) => k.name.includes('flash'));
    const [plain, shared] = [kernels(false), kernels(true)];
    assert.deepEqual(
      shared.map((k) => k.name),
      plain.map((k) => k.name),
    );
    for (const [i, k] of shared.entries()) {
      // 2 rows x 16 swept rows a tile (and the forward's 2 rescaling factors, unshared).
      const extra = k.name.startsWith('attention_flash') ? 2 : 0;
      assert.equal(exps(plain[i].wgsl), 32 + extra, plain[i].name);
      assert.equal(exps(k.wgsl), 16 + extra, k.name);
      assert.equal(k.wgsl.split('subgroupShuffleXor(e, 1u)').length - 1, 16, k.name);
    }
  });
});

interface Case extends AttentionCaseDims {
  split: 2 | 4 | 8;
  rows: 1 | 2;
  sweep: 4 | 8 | 16;
  mask: boolean;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    b: fc.integer({ min: 1, max: 2 }),
    h: fc.integer({ min: 1, max: 2 }),
    sq: fc.integer({ min: 1, max: 30 }),
    sk: fc.integer({ min: 1, max: 40 }),
    d: fc.integer({ min: 1, max: 40 }),
    dv: fc.integer({ min: 1, max: 40 }),
    split: fc.constantFrom<2 | 4 | 8>(2, 4, 8),
    rows: fc.constantFrom<1 | 2>(1, 2),
    sweep: fc.constantFrom<4 | 8 | 16>(4, 8, 16),
    mask: fc.boolean(),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  });

/** attention (with its lse) and dq, dk, dv as the autodiff rule builds them, with a mask [Sq, Sk] holding -inf entries. */
function vjpGraph(c: Case): Graph {
  const b = new Builder();
  const q = b.input('q', [c.b, c.h, c.sq, c.d]);
  const k = b.input('k', [c.b, c.h, c.sk, c.d]);
  const v = b.input('v', [c.b, c.h, c.sk, c.dv]);
  const mask = c.mask ? [b.input('m', [c.sq, c.sk])] : [];
  const g = b.input('g', [c.b, c.h, c.sq, c.dv]);
  const { y, grads } = attentionWithGrads(b, [q, k, v, g, ...mask], {}, [true, true, true, ...mask.map(() => false)]);
  b.output('y', y);
  grads.forEach((d, i) => d !== undefined && b.output(`d${'qkv'[i]}`, d));
  return b.graph;
}

describe('on the device, through the schedule', () => {
  const gpu = sharedDevice();
  test('the forward and dq, dk, dv are the unshared kernels bit for bit', async (t) => {
    const base = hardwareLike(gpu().target);
    if (!canSplit(base, 2)) {
      t.diagnostic(`this adapter has no subgroups: rows are not split over lanes, nothing to share`);
      return;
    }
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        fc.pre(canSplit(base, c.split));
        const graph = vjpGraph(c);
        const target = (share: boolean): Target => ({ ...base, tuning: { flashCaps: { split: c.split, rows: c.rows, sweep: c.sweep }, ...(share ? { flashShareExp: true } : {}) } });
        const inputs = new Map<string, RefTensor>(
          graph.inputs.map((i, n) => {
            const shape = graph.node(i.node).shape;
            const data = randomTensor(shape, c.seed + n).data;
            // Masked entries: every third, never a whole row (key 0 stays).
            if (i.name === 'm') for (let x = 0; x < data.length; x++) if (x % c.sk !== 0 && x % 3 === 1) data[x] = -Infinity;
            return [i.name, { shape: [...shape], data: Float64Array.from(data) }];
          }),
        );
        const [plain, shared] = [compileGpu(graph, target(false)), compileGpu(graph, target(true))];
        const sharing = shared.schedule.kernels.some((k) => k.wgsl.includes('subgroupShuffleXor(e, '));
        // Shared wherever a swept tile is a whole number of lane groups.
        assert.equal(sharing, shared.schedule.kernels.some((k) => /flash/.test(k.name) && /(\d+) (keys|queries) per tile/.exec(k.wgsl) !== null && Number(/(\d+) (keys|queries) per tile/.exec(k.wgsl)![1]) % c.split === 0), JSON.stringify(c));
        const [a, b] = [await runGpu(gpu(), graph, plain, inputs, new Map()), await runGpu(gpu(), graph, shared, inputs, new Map())];
        // Two shaders: bit for bit up to the sign of exact zeros, which Vulkan lets a compiler treat as insignificant
        // (e.g. fold fma(a, b, 0) into a·b): a key masked for every query got dk = -0 from one and +0 from the other.
        const unsignedZeros = (data: ArrayLike<number>) => Float32Array.from(data, (v) => (v === 0 ? 0 : v));
        for (const [name, x] of a) assertBitwise(unsignedZeros(b.get(name)!.data), unsignedZeros(x.data), `${JSON.stringify(c)}: ${name}`);
      }),
      fcParams(5, 4),
    );
  });
});
