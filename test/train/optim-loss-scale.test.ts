// Dynamic loss scaling against GradScaler (test/fixtures/train/loss_scale.json: the update kernel ported line by
// line, unscale_ with torch's own f32 ops), the default schedule, static scalers and state round trips.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { LossScaleError, LossScaler, type LossScaleState } from '../../runtime/train/loss-scale.js';
import { assertBitExact, f32s, readFixture } from './optim-fixtures.js';

const RUNS = Number(process.env.VISFT_TRAIN_RUNS ?? 100);

interface Sequence {
  name: string;
  opts: { init: number; growthFactor: number; backoffFactor: number; growthInterval: number };
  infs: boolean[];
  after: LossScaleState[];
}
const fixture = readFixture<{ sequences: Sequence[]; unscale: { scale: number; foundInf: boolean; before: string[]; after: string[] }[] }>('loss_scale.json');

for (const s of fixture.sequences) {
  test(`scale sequence '${s.name}' matches GradScaler`, () => {
    const scaler = LossScaler.dynamic(s.opts);
    s.infs.forEach((inf, u) => {
      scaler.update(inf);
      assert.deepEqual(scaler.state(), s.after[u], `after update ${u} (${inf ? 'inf' : 'clean'})`);
    });
  });
}

test('unscale matches GradScaler.unscale_ bit for bit, inf and NaN included', () => {
  for (const c of fixture.unscale) {
    const grads = new Map(c.before.map((b, i) => [`g${i}`, f32s(b)] as [string, Float32Array]));
    const { foundInf } = LossScaler.fixed(c.scale).unscale(grads);
    assert.equal(foundInf, c.foundInf, `scale ${c.scale}`);
    c.after.forEach((b, i) => assertBitExact(grads.get(`g${i}`)!, f32s(b), `scale ${c.scale} grad ${i}`));
  }
});

test("GradScaler's defaults: 2^16, doubling after 2000 clean updates, halving on inf", () => {
  const scaler = LossScaler.dynamic();
  assert.equal(scaler.scale, 65536);
  for (let u = 0; u < 1999; u++) scaler.update(false);
  assert.deepEqual(scaler.state(), { scale: 65536, growthTracker: 1999 });
  scaler.update(false);
  assert.deepEqual(scaler.state(), { scale: 131072, growthTracker: 0 });
  scaler.update(false);
  scaler.update(true);
  assert.deepEqual(scaler.state(), { scale: 65536, growthTracker: 0 });
});

test('fixed and none scalers never change; none leaves grads untouched but still finds inf', () => {
  const fixed = LossScaler.fixed(128);
  for (const inf of [true, false, false]) fixed.update(inf);
  assert.deepEqual(fixed.state(), { scale: 128, growthTracker: 0 });
  const none = LossScaler.none();
  const g = new Map([['a', new Float32Array([1.5, NaN, 3])]]);
  assert.equal(none.scale, 1);
  assert.deepEqual(none.unscale(g), { foundInf: true });
  assert.deepEqual([...g.get('a')!], [1.5, NaN, 3]);
  none.update(true);
  assert.equal(none.scale, 1);
  const clean = new Map([['a', new Float32Array([256, -64])]]);
  assert.deepEqual(fixed.unscale(clean), { foundInf: false });
  assert.deepEqual([...clean.get('a')!], [2, -0.5]);
});

test('state/load: a restored scaler continues exactly like the original', () => {
  fc.assert(
    fc.property(fc.array(fc.boolean(), { maxLength: 40 }), fc.nat(40), fc.integer({ min: 1, max: 5 }), (infs, cut, interval) => {
      const opts = { init: 2 ** 10, growthFactor: 2, backoffFactor: 0.5, growthInterval: interval };
      const a = LossScaler.dynamic(opts);
      const b = LossScaler.dynamic(opts);
      const at = Math.min(cut, infs.length);
      infs.slice(0, at).forEach((x) => a.update(x));
      b.load(JSON.parse(JSON.stringify(a.state())) as LossScaleState);
      for (const x of infs.slice(at)) {
        a.update(x);
        b.update(x);
        assert.deepEqual(b.state(), a.state());
      }
    }),
    { numRuns: RUNS },
  );
});

test('bad options and states give errors that say what is wrong', () => {
  const err = (re: RegExp) => (e: Error) => e instanceof LossScaleError && re.test(e.message);
  assert.throws(() => LossScaler.dynamic({ growthFactor: 1 }), err(/growth factor 1 must be a finite number > 1/));
  assert.throws(() => LossScaler.dynamic({ backoffFactor: 1 }), err(/backoff factor 1 must be in \(0, 1\)/));
  assert.throws(() => LossScaler.dynamic({ growthInterval: 0 }), err(/growth interval 0/));
  assert.throws(() => LossScaler.dynamic({ init: 1e39 }), err(/init 1e\+39 must be a finite number > 0 \(as an f32\)/));
  assert.throws(() => LossScaler.fixed(0), err(/fixed scale 0/));
  const d = LossScaler.dynamic({ growthInterval: 10 });
  assert.throws(() => d.load({ scale: NaN, growthTracker: 0 }), err(/loss scale state: scale NaN/));
  assert.throws(() => d.load({ scale: 8, growthTracker: 10 }), err(/growthTracker 10 must be an integer in \[0, 9\]/));
  assert.throws(() => d.load({ scale: 8, growthTracker: 1.5 }), err(/growthTracker 1.5/));
  assert.throws(() => LossScaler.fixed(64).load({ scale: 128, growthTracker: 0 }), err(/scale 128 differs from this run's fixed scale 64/));
  LossScaler.fixed(64).load({ scale: 64, growthTracker: 0 });
  d.load({ scale: 8, growthTracker: 9 });
  assert.deepEqual(d.state(), { scale: 8, growthTracker: 9 });
});
