// msdeform_attn in the CPU reference: sampling at pixel centres and between them, zero padding outside the
// map, and finite differences of the gradient in all three inputs over random geometry (1-2 levels, points
// outside [0, 1], Dh not a multiple of 4). Its second order is not supported and says so.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { msGeometry, type MsCase } from './msdeform-geometry.js';
import { assertClose, evalOp, finiteDifferenceCheck, makeRng, randomTensor, tensor, type Rng } from './util.js';

const NUM_RUNS = Number(process.env.VISFT_VISION_RUNS ?? 25);

const msCase: fc.Arbitrary<MsCase> = msGeometry({ lq: [1, 3], m: [1, 2], dh: [1, 5], p: [1, 3], side: 4, levels: 2 });

const shapes = (c: MsCase) => {
  const s = c.levels.reduce((t, [h, w]) => t + h * w, 0);
  const L = c.levels.length;
  return { value: [c.n, s, c.m, c.dh], loc: [c.n, c.lq, c.m, L, c.p, 2], attw: [c.n, c.lq, c.m, L, c.p], out: [c.n, c.lq, c.m * c.dh] };
};

/**
 * Sampling locations in [-0.3, 1.3), kept at least 1% of a pixel away from the lines where bilinear
 * sampling has a kink (pixel centres, and one pixel outside the map), so central differences are exact.
 */
function locations(c: MsCase, rng: Rng): RefTensor {
  const shape = shapes(c).loc;
  const L = c.levels.length;
  return tensor(shape, (i) => {
    const level = Math.floor(i / (2 * c.p)) % L;
    const size = c.levels[level][1 - (i % 2)]; // x scales by W, y by H
    let u = -0.3 + 1.6 * rng();
    const t = u * size - 0.5;
    const frac = t - Math.floor(t);
    if (frac < 0.01 || frac > 0.99) u += 0.02 / size;
    return u;
  });
}

test('msdeform_attn: a point at a pixel centre reads that pixel; between centres it interpolates; outside reads zeros', () => {
  // One level 2x3, N = M = 1, Dh = 2: value[y*3 + x] = [10y + x, -(10y + x)].
  const value = tensor([1, 6, 1, 2], (i) => {
    const pix = i >> 1;
    const v = 10 * Math.floor(pix / 3) + (pix % 3);
    return i % 2 ? -v : v;
  });
  const cases: [number, number, number][] = [
    // (x, y) in [0, 1], expected channel 0
    [(2 + 0.5) / 3, (1 + 0.5) / 2, 12], // centre of pixel (y 1, x 2)
    [(0.5 + 0.5) / 3, (0 + 0.5) / 2, 0.5], // halfway between (0, 0) and (0, 1)
    [(2 + 0.5) / 3, 0.25 / 2, 0.75 * 2], // y = -0.25 in pixels: 0.75 of row 0, 0.25 of a zero row above
    [(2.75 + 0.5) / 3, (0.5 + 0.5) / 2, 0.25 * (0.5 * 2 + 0.5 * 12)], // 0.75 past the last column: 0.25 of it, 0.75 of zeros
    [-0.5, 0.5, 0], // far outside
  ];
  for (const [x, y, expected] of cases) {
    const loc = tensor([1, 1, 1, 1, 1, 2], [x, y]);
    const out = evalOp('msdeform_attn', [value, loc, tensor([1, 1, 1, 1, 1], [2])], { levels: [[2, 3]] });
    assertClose(out, [2 * expected, -2 * expected], { label: `(${x}, ${y})` });
  }
});

test('msdeform_attn: levels are offset by level_start_index and summed with their weights', () => {
  // Two levels 1x1 and 2x2, Dh = 1; one point per level at the centre of the map.
  const value = tensor([1, 5, 1, 1], [7, 1, 2, 3, 4]);
  const loc = tensor([1, 1, 1, 2, 1, 2], [0.5, 0.5, 0.75, 0.25]); // level 0 centre; level 1 pixel (0, 1)
  const out = evalOp('msdeform_attn', [value, loc, tensor([1, 1, 1, 2, 1], [0.5, 0.25])], { levels: [[1, 1], [2, 2]] });
  assertClose(out, [0.5 * 7 + 0.25 * 2]);
});

for (const [wrt, name] of [[0, 'value'], [1, 'sampling_locations'], [2, 'attention_weights']] as const) {
  test(`msdeform_attn: gradient in ${name} matches finite differences`, () => {
    fc.assert(
      fc.property(msCase, (c) => {
        const rng = makeRng(c.seed);
        const s = shapes(c);
        const inputs = [
          { shape: s.value, value: randomTensor(s.value, rng), grad: wrt === 0 },
          { shape: s.loc, value: locations(c, rng), grad: wrt === 1 },
          { shape: s.attw, value: randomTensor(s.attw, rng, 0, 1), grad: wrt === 2 },
        ];
        finiteDifferenceCheck((b, [v, l, a]) => b.add('msdeform_attn', [v, l, a], { levels: c.levels }), inputs, { seed: c.seed });
      }),
      { numRuns: NUM_RUNS },
    );
  });
}

test('msdeform_attn_grad: the second-order gradient says it is not supported', () => {
  const b = new Builder();
  const c: MsCase = { n: 1, lq: 1, m: 1, dh: 2, p: 1, levels: [[2, 2]], seed: 1 };
  const s = shapes(c);
  const ins = [b.input('v', s.value), b.input('l', s.loc), b.input('a', s.attw), b.input('g', s.out)];
  b.output('dv', b.add('msdeform_attn_grad', ins, { levels: c.levels, wrt: 0 }));
  assert.throws(() => vjp(b.graph, [ins[1]]), /second-order gradient of msdeform_attn is not supported/);
});

test('msdeform_attn_grad: the shape rule checks the cotangent and the inputs', () => {
  const b = new Builder();
  const c: MsCase = { n: 1, lq: 2, m: 2, dh: 3, p: 1, levels: [[2, 2]], seed: 1 };
  const s = shapes(c);
  const ins = [b.input('v', s.value), b.input('l', s.loc), b.input('a', s.attw)];
  assert.deepEqual(b.shape(b.add('msdeform_attn_grad', [...ins, b.input('g', s.out)], { levels: c.levels, wrt: 1 })), s.loc);
  assert.throws(() => b.add('msdeform_attn_grad', [...ins, b.input('g2', [1, 2, 5])], { levels: c.levels, wrt: 0 }), /g \[1, 2, 5\] must be \[1, 2, 6\]/);
  assert.throws(() => b.add('msdeform_attn_grad', [...ins, b.input('g3', s.out)], { levels: [[2, 3]], wrt: 0 }), /value \[1, 4, 2, 3\] must be \[N, 6, M, Dh\]/);
});
