// Optimizers against torch 1.13: whole training runs from test/fixtures/train/optim.json (clip, schedule and loss
// scaling in the loop, as a trainer drives them), bit-exact given torch's clip norms; checkpoint round trips
// that continue bit for bit; and the fused multiply-add the f32 emulation rests on, against an exact oracle.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Optimizer, OptimizerError, OptimizerStateError, fmaF32, type OptimizerConfig } from '../../runtime/train/optim.js';
import { learningRate, type ScheduleConfig } from '../../runtime/train/schedule.js';
import { clipGradNorm, scaleToNorm } from '../../runtime/train/clip.js';
import { LossScaler } from '../../runtime/train/loss-scale.js';
import { assertBitExact, assertClose, compare, f32s, readFixture, tensorMap } from './optim-fixtures.js';

const RUNS = Number(process.env.VISFT_TRAIN_RUNS ?? 100);

interface Step {
  update: number;
  lr: number;
  grads?: string[];
  scaledGrads?: string[];
  scale?: number;
  foundInf?: boolean;
  totalNorm?: number;
  params: string[];
}
interface Case {
  name: string;
  optimizer: OptimizerConfig;
  schedule: ScheduleConfig;
  clip: number | null;
  amp: { init: number; growthFactor: number; backoffFactor: number; growthInterval: number } | null;
  names: string[];
  init: string[];
  steps: Step[];
  finalState: Record<string, string>;
}
const { cases } = readFixture<{ cases: Case[] }>('optim.json');

/** Replays a fixture run. With torchNorms the clip uses torch's total norm (the one thing computed differently:
 *  torch sums squares in f32 lanes, visft in f64), and then every param must match torch bit for bit. */
function replay(c: Case, torchNorms: boolean): void {
  const params = tensorMap(c.names, c.init);
  const arrays = [...params.values()];
  const opt = new Optimizer(c.optimizer, params);
  const scaler = c.amp ? LossScaler.dynamic(c.amp) : null;
  let stepped = 0;
  for (const s of c.steps) {
    const where = `${c.name} update ${s.update}`;
    // Math.cos and glibc's cos may differ in the last bit; step with torch's lr so params stay comparable
    const lr = learningRate(c.schedule, s.update);
    assert.ok(Math.abs(lr - s.lr) <= 1e-14 * s.lr, `${where}: lr ${lr} vs ${s.lr}`);
    let foundInf = false;
    let grads: Map<string, Float32Array>;
    if (scaler) {
      assert.equal(scaler.scale, s.scale, `${where}: loss scale`);
      grads = tensorMap(c.names, s.scaledGrads!);
      foundInf = scaler.unscale(grads).foundInf;
      assert.equal(foundInf, s.foundInf, `${where}: foundInf`);
    } else {
      grads = tensorMap(c.names, s.grads!);
    }
    if (!foundInf) {
      if (c.clip !== null) {
        const norm = torchNorms ? s.totalNorm! : clipGradNorm(grads, c.clip);
        assert.ok(Math.abs(norm - s.totalNorm!) <= 1e-6 * s.totalNorm!, `${where}: total norm ${norm} vs torch ${s.totalNorm}`);
        if (torchNorms) scaleToNorm(grads, norm, c.clip);
      }
      opt.step(grads, s.lr);
      stepped++;
    }
    scaler?.update(foundInf);
    c.names.forEach((name, i) => {
      const expected = f32s(s.params[i]);
      if (torchNorms || c.clip === null) assertBitExact(params.get(name)!, expected, `${where} param ${name}`);
      else assertClose(params.get(name)!, expected, `${where} param ${name}`, 1e-6);
    });
  }
  // params were updated in place, in the caller's arrays
  assert.deepEqual([...params.values()], arrays);
  assert.equal(opt.stepCount, stepped);
  const state = opt.stateTensors();
  assert.deepEqual([...state.keys()].sort(), Object.keys(c.finalState).sort());
  for (const [key, b64] of Object.entries(c.finalState)) {
    if (torchNorms) assertBitExact(state.get(key)!, f32s(b64), `${c.name} state ${key}`);
    else assertClose(state.get(key)!, f32s(b64), `${c.name} state ${key}`, 1e-6);
  }
}

for (const c of cases) {
  test(`${c.name}: ${c.steps.length} updates match torch 1.13 bit for bit${c.clip !== null ? ", given torch's clip norms" : ''}`, () => replay(c, true));
  if (c.clip !== null) test(`${c.name}: with visft's own clip norms, params stay within 1e-6 of torch`, () => replay(c, false));
}

// ---- checkpoint round trip ------------------------------------------------------------------------------------

const f32 = fc.float({ min: -4, max: 4, noNaN: true, noDefaultInfinity: true });
const configArb: fc.Arbitrary<OptimizerConfig> = fc.oneof(
  fc.record({
    kind: fc.constantFrom('adamw' as const, 'adam' as const),
    betas: fc.tuple(fc.double({ min: 0, max: 0.99, noNaN: true }), fc.double({ min: 0.5, max: 0.9999, noNaN: true })),
    eps: fc.constantFrom(1e-8, 1e-6, 0),
    weightDecay: fc.constantFrom(0, 1e-4, 0.05),
    momentum: fc.constant(0),
    nesterov: fc.constant(false),
  }),
  fc.record({
    kind: fc.constant('sgd' as const),
    betas: fc.constant<[number, number]>([0.9, 0.999]),
    eps: fc.constant(1e-8),
    weightDecay: fc.constantFrom(0, 1e-3),
    momentum: fc.constantFrom(0, 0.5, 0.9),
    nesterov: fc.boolean(),
  }).map((c) => ({ ...c, nesterov: c.nesterov && c.momentum > 0 })),
);

test('stateTensors/loadState: a resumed run continues bit for bit like an uninterrupted one', () => {
  fc.assert(
    fc.property(
      configArb,
      fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 1, max: 6 }),
      fc.nat(6),
      fc.integer({ min: 0, max: 2 ** 31 }),
      (config, sizes, updates, splitAt, seed) => {
        const split = Math.min(splitAt, updates);
        const names = sizes.map((_, i) => `p${i}`);
        const rand = lcg(seed);
        const init = sizes.map((n) => Float32Array.from({ length: n }, () => Math.fround(rand() * 2 - 1)));
        const gradSeq = Array.from({ length: updates }, () => new Map(names.map((nm, i) => [nm, Float32Array.from({ length: sizes[i] }, () => Math.fround(rand() * 2 - 1))])));
        const lrs = Array.from({ length: updates }, (_, u) => (u + 1) * 1e-3);

        const straight = new Map(names.map((nm, i) => [nm, init[i].slice()]));
        const a = new Optimizer(config, straight);
        gradSeq.forEach((g, u) => a.step(g, lrs[u]));

        const first = new Map(names.map((nm, i) => [nm, init[i].slice()]));
        const b = new Optimizer(config, first);
        for (let u = 0; u < split; u++) b.step(gradSeq[u], lrs[u]);
        const saved = b.stateTensors();
        const resumedParams = new Map([...first].map(([nm, t]) => [nm, t.slice()]));
        const c = new Optimizer(config, resumedParams);
        c.loadState(b.stepCount, saved);
        for (let u = split; u < updates; u++) c.step(gradSeq[u], lrs[u]);

        assert.equal(c.stepCount, a.stepCount);
        for (const nm of names) assertBitExact(resumedParams.get(nm)!, straight.get(nm)!, `param ${nm}`);
        const sa = a.stateTensors(), sc = c.stateTensors();
        assert.deepEqual([...sc.keys()], [...sa.keys()]);
        for (const [k, t] of sa) assertBitExact(sc.get(k)!, t, `state ${k}`);
      },
    ),
    { numRuns: RUNS },
  );
});

test('stateTensors returns copies; loadState copies too', () => {
  const p = new Map([['w', new Float32Array([1, 2, 3])]]);
  const opt = new Optimizer({ kind: 'adamw', betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, momentum: 0, nesterov: false }, p);
  opt.step(new Map([['w', new Float32Array([0.5, -1, 2])]]), 0.1);
  const s = opt.stateTensors();
  const before = s.get('exp_avg.w')!.slice();
  s.get('exp_avg.w')!.fill(99);
  assert.deepEqual(opt.stateTensors().get('exp_avg.w'), before);
  const loaded = new Map([['exp_avg.w', new Float32Array(3)], ['exp_avg_sq.w', new Float32Array(3)]]);
  opt.loadState(1, loaded);
  loaded.get('exp_avg.w')!.fill(7);
  assert.deepEqual(opt.stateTensors().get('exp_avg.w'), new Float32Array(3));
});

test('SGD keeps a momentum buffer only with momentum, and only after its first step', () => {
  const cfg: OptimizerConfig = { kind: 'sgd', betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, momentum: 0.9, nesterov: false };
  const opt = new Optimizer(cfg, new Map([['w', new Float32Array([1, 2])]]));
  assert.deepEqual([...opt.stateTensors().keys()], []);
  opt.loadState(0, new Map());
  opt.step(new Map([['w', new Float32Array([1, 1])]]), 0.1);
  assert.deepEqual([...opt.stateTensors().keys()], ['momentum_buffer.w']);
  const plain = new Optimizer({ ...cfg, momentum: 0 }, new Map([['w', new Float32Array([1, 2])]]));
  plain.step(new Map([['w', new Float32Array([1, 1])]]), 0.1);
  assert.deepEqual([...plain.stateTensors().keys()], []);
  assert.throws(() => plain.loadState(3, new Map([['momentum_buffer.w', new Float32Array(2)]])), /unexpected tensor 'momentum_buffer.w'/);
});

// ---- errors -------------------------------------------------------------------------------------------------------

test('bad gradients, lr, configs and checkpoint state give errors that name the tensor', () => {
  const adamw: OptimizerConfig = { kind: 'adamw', betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-4, momentum: 0, nesterov: false };
  const params = () => new Map([['a.weight', new Float32Array(4)], ['a.bias', new Float32Array(2)]]);
  const opt = new Optimizer(adamw, params());
  const g = (a: number, b: number, extra?: string) => {
    const m = new Map([['a.weight', new Float32Array(a)], ['a.bias', new Float32Array(b)]]);
    if (extra) m.set(extra, new Float32Array(1));
    return m;
  };
  assert.throws(() => opt.step(new Map([['a.weight', new Float32Array(4)]]), 1e-3), (e: Error) => e instanceof OptimizerError && /step 1: no gradient for parameter 'a.bias'/.test(e.message));
  assert.throws(() => opt.step(g(4, 3), 1e-3), /gradient for 'a.bias' has 3 elements, the parameter has 2/);
  assert.throws(() => opt.step(g(4, 2, 'b.weight'), 1e-3), /gradient for unknown parameter 'b.weight'/);
  assert.throws(() => opt.step(g(4, 2), NaN), /lr NaN must be a finite number >= 0/);
  assert.equal(opt.stepCount, 0, 'a rejected step changes nothing');

  const state = new Map([['exp_avg.a.weight', new Float32Array(4)], ['exp_avg_sq.a.weight', new Float32Array(4)], ['exp_avg.a.bias', new Float32Array(2)]]);
  const isState = (re: RegExp) => (e: Error) => e instanceof OptimizerStateError && re.test(e.message);
  assert.throws(() => opt.loadState(5, state), isState(/missing tensor 'exp_avg_sq.a.bias'/));
  state.set('exp_avg_sq.a.bias', new Float32Array(3));
  assert.throws(() => opt.loadState(5, state), isState(/tensor 'exp_avg_sq.a.bias' has 3 elements, its parameter has 2/));
  state.set('exp_avg_sq.a.bias', new Float32Array(2));
  state.set('momentum_buffer.a.bias', new Float32Array(2));
  assert.throws(() => opt.loadState(5, state), isState(/unexpected tensor 'momentum_buffer.a.bias'/));
  state.delete('momentum_buffer.a.bias');
  assert.throws(() => opt.loadState(-1, state), isState(/step count -1/));
  opt.loadState(5, state);
  assert.equal(opt.stepCount, 5);

  assert.throws(() => new Optimizer({ ...adamw, betas: [1, 0.999] }, params()), /optimizer adamw: beta1 1 must be in \[0, 1\)/);
  assert.throws(() => new Optimizer({ ...adamw, eps: -1 }, params()), /eps -1/);
  assert.throws(() => new Optimizer({ ...adamw, weightDecay: NaN }, params()), /weight decay NaN/);
  assert.throws(() => new Optimizer({ ...adamw, kind: 'sgd', nesterov: true }, params()), /optimizer sgd: nesterov needs momentum > 0/);
  assert.throws(() => new Optimizer({ ...adamw, kind: 'lamb' as 'sgd' }, params()), /unknown kind 'lamb'/);
});

// ---- fused multiply-add -------------------------------------------------------------------------------------------

/** The f32 nearest (ties to even) to the exact a*b+c, by BigInt arithmetic on values scaled by 2^298. */
function exactFma(a: number, b: number, c: number, candidate: number): boolean {
  const S = 2 ** 149;
  const big = (x: number) => BigInt(x * S);
  const exact = big(a) * big(b) + big(c) * BigInt(S);
  const scaled = (x: number) => big(x) * BigInt(S);
  const dist = (x: number) => {
    const d = scaled(x) - exact;
    return d < 0n ? -d : d;
  };
  const bits = new Uint32Array(new Float32Array([candidate]).buffer)[0];
  const near = [bits - 1, bits + 1].map((x) => new Float32Array(new Uint32Array([x >>> 0]).buffer)[0]).filter(Number.isFinite);
  const dc = dist(candidate);
  return near.every((n) => {
    const dn = dist(n);
    return dc < dn || (dc === dn && (bits & 1) === 0);
  });
}

test('fmaF32 rounds a*b+c once, also where rounding through f64 would hit a tie', () => {
  const a = 1 + 2 ** -23, b = 2 ** -24 - 2 ** -47;
  // exact: 1 + 2^-23 + 2^-24 - 2^-70, just below the midpoint that f64 rounding lands on
  assert.equal(Math.fround(a * b + a), 1 + 2 ** -22, 'naive rounding is off by one ulp here');
  assert.equal(fmaF32(a, b, a), 1 + 2 ** -23);
  assert.equal(fmaF32(a, -b, -a), -(1 + 2 ** -23));
  assert.equal(fmaF32(1 + 2 ** -23, 2 ** -24 + 2 ** -47, 1), 1 + 2 ** -23, 'just above a midpoint rounds up');
  assert.ok(exactFma(a, b, a, fmaF32(a, b, a)));
  fc.assert(
    fc.property(f32, f32, fc.float({ min: -64, max: 64, noNaN: true, noDefaultInfinity: true }), (x, y, z) => {
      const r = fmaF32(x, y, z);
      return Object.is(r, Math.fround(r)) && exactFma(x, y, z, r === 0 ? 0 : r);
    }),
    { numRuns: RUNS * 10 },
  );
});

test('the fixtures really compare: a one-ulp change in one param is caught', () => {
  const c = cases.find((k) => k.clip === null)!;
  const expected = f32s(c.init[0]);
  const changed = expected.slice();
  changed[3] = Math.fround(changed[3] * (1 + 2 ** -22));
  assert.equal(compare(changed, expected, 'x').exact, expected.length - 1);
  assert.throws(() => assertBitExact(changed, expected, 'x'));
});

/** Small deterministic generator for test data. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
