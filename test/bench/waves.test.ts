// fitWaves (runtime/bench/waves.ts): the resident workgroups read back from kernel times over grids of growing size,
// on synthetic staircases with noise, against a straight line (no waves) and a grid that never fills one wave.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { fitWaves, type WavePoint } from '../../runtime/bench/waves.js';
import { makeRng } from '../ir/util.js';
import { fcParams } from '../kernels/core-util.js';

/** Times of a kernel with `slots` resident workgroups on grids of `step`, 2·step, … up to `max`, with relative noise. */
function staircase(slots: number, step: number, max: number, noise: number, seed: number): WavePoint[] {
  const rng = makeRng(seed);
  const points: WavePoint[] = [];
  for (let g = step; g <= max; g += step) points.push({ groups: g, ms: (0.05 + 1.3 * Math.ceil(g / slots)) * (1 + noise * (2 * rng() - 1)) });
  return points;
}

test('waves: the resident workgroups of a staircase, within one grid step, with 2% noise', () => {
  fc.assert(
    fc.property(fc.integer({ min: 40, max: 600 }), fc.integer({ min: 4, max: 24 }), fc.integer({ min: 1, max: 1 << 30 }), (slots, step, seed) => {
      // Grids reaching past three waves, sampled finer than a wave.
      fc.pre(step * 3 <= slots);
      const points = staircase(slots, step, 3.5 * slots, 0.02, seed);
      const fit = fitWaves(points);
      // Grids only say which grids a wave ends between: every count that gives each grid its waves fits as well.
      assert.ok(Math.abs(fit.slots - slots) < step, `slots ${slots}, step ${step}: fitted ${fit.slots}`);
      for (const p of points) assert.equal(Math.ceil(p.groups / fit.slots), Math.ceil(p.groups / slots), `slots ${slots}, step ${step}: waves of ${p.groups}`);
      assert.ok(Math.abs(fit.waveMs - 1.3) < 0.1, `${fit.waveMs} ms per wave`);
      assert.ok(fit.rms < fit.lineRms, 'the waves fit better than a straight line');
    }),
    fcParams(60, 3),
  );
  // EVA-G detection's forward under the H200 profile if two workgroups fit a multiprocessor (264 at once), on grids of
  // 18 workgroups a head: 264 to 269 give every grid the same waves; ties go to the largest.
  assert.equal(fitWaves(staircase(264, 18, 900, 0, 1)).slots, 269);
});

test('waves: a straight line fits as well as one-workgroup waves; a grid that never fills a wave is flat', () => {
  const linear = Array.from({ length: 20 }, (_, i) => ({ groups: 10 * (i + 1), ms: 0.01 * 10 * (i + 1) }));
  const fit = fitWaves(linear);
  assert.ok(fit.rms < 1e-9 && fit.lineRms < 1e-9);
  assert.ok(fit.slots <= 10, `${fit.slots}`);
  const flat = Array.from({ length: 10 }, (_, i) => ({ groups: 10 * (i + 1), ms: 2 }));
  assert.equal(fitWaves(flat).slots, 100, 'one wave holds every grid: the largest count fits');
  assert.throws(() => fitWaves(flat.slice(0, 2)), /at least 3/);
});
