// Learning-rate schedules against torch's LambdaLR stepped like mmf (test/fixtures/train/schedule.json), plus
// properties: warmup rises to the peak, the decay never leaves [final*peak, peak] and never rises.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ScheduleError, learningRate, type ScheduleConfig } from '../../runtime/train/schedule.js';
import { readFixture } from './optim-fixtures.js';

const RUNS = Number(process.env.VISFT_TRAIN_RUNS ?? 100);
const { schedules } = readFixture<{ schedules: { schedule: ScheduleConfig; lrs: number[] }[] }>('schedule.json');

for (const { schedule: s, lrs } of schedules) {
  test(`${s.kind}(peak ${s.peak}, warmup ${s.warmup}, total ${s.total}, final ${s.final}) matches LambdaLR for ${lrs.length} updates`, () => {
    lrs.forEach((expected, update) => {
      const lr = learningRate(s, update);
      // f64 throughout; Math.cos may differ from glibc's cos in the last bit
      assert.ok(Math.abs(lr - expected) <= 1e-14 * s.peak, `update ${update}: ${lr} vs torch ${expected}`);
      if (update >= s.total && s.kind !== 'constant') assert.equal(lr, s.final * s.peak, `update ${update}: past total, lr holds at the floor`);
    });
  });
}

test("mmf's indexing: the first update of a warmup runs at lr 0, update `warmup` is the first at peak", () => {
  const visft: ScheduleConfig = { kind: 'warmup_cosine', peak: 4e-4, warmup: 2000, total: 100_000, final: 0 };
  assert.equal(learningRate(visft, 0), 0);
  assert.equal(learningRate(visft, 1), 4e-4 / 2000);
  assert.ok(learningRate(visft, 1999) < 4e-4);
  assert.equal(learningRate(visft, 2000), 4e-4);
  assert.equal(learningRate(visft, 100_000), 0);
  assert.equal(learningRate({ ...visft, warmup: 0 }, 0), 4e-4, 'no warmup: the first update is at peak');
  assert.equal(learningRate({ kind: 'constant', peak: 1e-3, warmup: 0, total: 0, final: 0 }, 12345), 1e-3, 'constant ignores total');
});

const scheduleArb: fc.Arbitrary<ScheduleConfig> = fc
  .record({
    kind: fc.constantFrom('warmup_cosine' as const, 'warmup_linear' as const, 'constant' as const),
    peak: fc.double({ min: 1e-7, max: 1, noNaN: true }),
    warmup: fc.nat(50),
    extra: fc.integer({ min: 1, max: 500 }),
    final: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1, noNaN: true })),
  })
  .map(({ extra, ...s }) => ({ ...s, total: s.warmup + extra }));

test('warmup rises from 0 to the peak; after warmup lr stays in [final*peak, peak] and never rises', () => {
  fc.assert(
    fc.property(scheduleArb, (s) => {
      const floor = s.kind === 'constant' ? s.peak : s.final * s.peak;
      let previous = -Infinity;
      for (let u = 0; u <= s.total + 5; u++) {
        const lr = learningRate(s, u);
        assert.ok(lr >= 0 && lr <= s.peak, `update ${u}: lr ${lr} outside [0, ${s.peak}]`);
        if (u < s.warmup) {
          assert.ok(lr >= previous, `warmup update ${u}: lr fell`);
          assert.ok(lr < s.peak || s.peak === 0, `warmup update ${u}: already at peak`);
        } else {
          // a relative 1e-15 leeway for f64 rounding of floor + (peak - floor) * factor
          assert.ok(lr >= floor * (1 - 1e-15) && lr <= s.peak, `update ${u}: lr ${lr} outside [${floor}, ${s.peak}]`);
          if (u > s.warmup) assert.ok(lr <= previous, `update ${u}: lr rose from ${previous} to ${lr}`);
          else assert.equal(lr, s.peak, 'the first update after warmup is at peak');
        }
        previous = lr;
      }
    }),
    { numRuns: RUNS },
  );
});

test('bad schedules give errors that say what is wrong', () => {
  const s: ScheduleConfig = { kind: 'warmup_cosine', peak: 1e-3, warmup: 10, total: 100, final: 0 };
  const err = (re: RegExp) => (e: Error) => e instanceof ScheduleError && re.test(e.message);
  assert.throws(() => learningRate({ ...s, warmup: 200 }, 0), err(/schedule warmup_cosine: warmup 200 is longer than total 100/));
  assert.throws(() => learningRate({ ...s, peak: -1 }, 0), err(/peak lr -1/));
  assert.throws(() => learningRate({ ...s, warmup: 2.5 }, 0), err(/warmup 2.5 must be a whole number/));
  assert.throws(() => learningRate({ ...s, final: 1.5 }, 0), err(/final 1.5 must be a fraction of peak in \[0, 1\]/));
  assert.throws(() => learningRate({ ...s, total: 0, warmup: 0 }, 0), err(/total 0/));
  assert.throws(() => learningRate(s, -1), err(/update index -1/));
  assert.throws(() => learningRate({ ...s, kind: 'step' as 'constant' }, 0), err(/unknown kind 'step'/));
});
