// The f32 flash kernels with their lane loops written out (Target.tuning.flashCaps.unroll, hardware code): no
// loop over a lane's vec4s is left, and forward, attention_lse and the gradients give bitwise what the rolled
// kernels give, both matching the float64 reference. Run with the hardware code shapes on this adapter (a copy
// of its Target marked as hardware), with rows split over subgroup lanes where it has subgroups.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GRAD_RULES } from '../../compiler/autodiff/rules.js';
import type { Target } from '../../compiler/codegen/types.js';
import type { Builder } from '../../compiler/ir/builder.js';
import { canSplit, type FlashCaps } from '../../kernels/flash-common.js';
import { hardwareLike } from './core-util.js';
import { checkAgainstReference, randomTensor, sharedDevice, type GpuContext } from './harness.js';
import { FORWARD_TOL, GRAD_TOL } from './attention-cases.js';

/** Lane loops as the generators write them (flash-common.ts laneLoop). */
const LANE_LOOP = /for \(var [ut] = 0u; [ut] < /;

/** `t` as hardware, with these flash caps (small tiles keep lavapipe's compile short; tails on every side). */
const tuned = (t: Target, caps: FlashCaps): Target => ({ ...hardwareLike(t), tuning: { flashCaps: caps } });

const opened = sharedDevice();

describe('flash kernels with unrolled lane loops', () => {
  test('forward, lse and gradients: no lane loop left, bitwise the rolled kernels, within tolerance of the reference', async () => {
    const dev: GpuContext = { device: opened().device, adapter: opened().adapter, target: opened().target };
    const splits = [1, ...[2, 4].filter((k) => canSplit(dev.target, k))];
    // Head dims 13 and 9 (tails inside the last vec4; split rows padded past the row), dk ≠ dv. Small: lavapipe
    // compiles hardware code (every loop unrolled by LLVM) slowly.
    const cases = [{ d: 13, dv: 9, sq: 5, sk: 7, split: splits[Math.min(1, splits.length - 1)] }];
    for (const [i, c] of cases.entries()) {
      const caps: FlashCaps = { own: 4, sweep: 4, rows: 2, split: c.split };
      const ins = [[1, 2, c.sq, c.d], [1, 2, c.sk, c.d], [1, 2, c.sk, c.dv], [1, 2, c.sq, c.dv]].map((s, j) => randomTensor(s, 90 + 10 * i + j));
      const builds: [string, (b: Builder, xs: number[]) => number, typeof ins, typeof FORWARD_TOL][] = [
        ['attention', (b, xs) => b.add('attention', xs.slice(0, 3), {}), ins, FORWARD_TOL],
        ['attention_lse', (b, xs) => b.add('attention_lse', xs.slice(0, 2), {}), ins, FORWARD_TOL],
        ...[0, 1, 2].map((wrt): [string, (b: Builder, xs: number[]) => number, typeof ins, typeof GRAD_TOL] => [
          `d${'qkv'[wrt]}`,
          (b, [q, k, v, g]) => {
            const y = b.add('attention', [q, k, v], {});
            const node = b.graph.node(y);
            return GRAD_RULES.attention({ b, node, g, needs: node.inputs.map(() => true) })[wrt]!;
          },
          ins,
          GRAD_TOL,
        ]),
      ];
      for (const [what, build, inputs, tol] of builds) {
        const label = `${what} d ${c.d} dv ${c.dv} split ${c.split}`;
        const rolled = await checkAgainstReference(dev, build, inputs, { ...tol, target: tuned(dev.target, caps), label: `${label} rolled` });
        const unrolled = await checkAgainstReference(dev, build, inputs, { ...tol, target: tuned(dev.target, { ...caps, unroll: true }), label: `${label} unrolled` });
        const flash = (ks: typeof rolled.kernels) => ks.filter((k) => k.name.startsWith('attention_'));
        assert.ok(flash(rolled.kernels).some((k) => LANE_LOOP.test(k.wgsl)), `${label}: the rolled kernels loop over lane vec4s`);
        for (const k of flash(unrolled.kernels)) assert.doesNotMatch(k.wgsl, LANE_LOOP, `${label}: ${k.name}`);
        assert.deepEqual(new Uint32Array(unrolled.gpu.buffer), new Uint32Array(rolled.gpu.buffer), `${label}: bitwise`);
      }
    }
  });
});
