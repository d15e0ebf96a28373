// The bench's attention and MSDeformAttn rows: their shapes (ViSFT's), the graphs visft compiles for them (as
// `visft compile --op NAME --vjp`), the sampling locations they draw, and the tfjs peer's compositions against
// PyTorch float64 references (test/bench/fixtures/make_peer_fixtures.py: autograd of the composed attention and
// of the original's grid_sample composition, which runtime/bench/torch_peer.py times on NVIDIA machines).
// The rows running against the peer at tiny sizes are in bench.test.ts.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { isExactHalf } from '../../compiler/codegen/half.js';
import { compareOutputs } from '../../runtime/bench/bench.js';
import { peerCall } from '../../runtime/bench/peer-ops.js';
import { fillLocations } from '../../runtime/bench/rows-attention.js';
import { BENCH_ROW_NAMES, benchRows, rowGraph, rowInputData, selectRows, type RowSpec } from '../../runtime/bench/rows.js';
import { attachTfjs, type TfjsPeer } from '../../runtime/bench/tfjs.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';

if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';

const byName = (rows: readonly RowSpec[], name: string): RowSpec => {
  const r = rows.find((x) => x.name === name);
  assert.ok(r, `row ${name}`);
  return r;
};

describe('attention and MSDeformAttn rows', () => {
  test('full sizes are ViSFT shapes; every row is listed and selectable by prefix', () => {
    const full = benchRows('full');
    const shapes: [string, number[]][] = [
      ['attention_fwd_evag_caption', [8, 16, 324, 88]],
      ['attention_fwd_evag_detection', [1, 16, 2304, 88]],
      ['attention_fwd_evag_segmentation', [1, 16, 5329, 88]],
      ['attention_vjp_evae_caption', [8, 16, 324, 112]],
      ['attention_vjp_evae_segmentation', [1, 16, 5329, 112]],
    ];
    for (const [name, shape] of shapes) {
      const r = byName(full, name);
      assert.ok(BENCH_ROW_NAMES.includes(name), name);
      assert.deepEqual(r.inputs.slice(0, 3).map((i) => i.shape), [shape, shape, shape], name);
      assert.equal(r.shapeText, `q,k,v ${shape.join('x')}`);
      const [b, h, s, d] = shape;
      assert.equal(r.work.amount, (r.pass === 'forward' ? 4 : 14) * b * h * s * s * d, `${name}: FLOPs`);
    }
    const fwd = byName(full, 'attention_fwd_evag_caption');
    assert.deepEqual(fwd.outputs.map((o) => o.name), ['output']);
    const vjp = byName(full, 'attention_vjp_evag_caption');
    assert.equal(vjp.pass, 'forward+backward');
    assert.deepEqual(vjp.inputs.map((i) => i.name), ['q', 'k', 'v', 'd:output']);
    assert.deepEqual(vjp.outputs.map((o) => o.name), ['output', 'd:q', 'd:k', 'd:v']);

    const ms = byName(full, 'msdeform_fwd_m2f_pixel');
    assert.deepEqual(ms.inputs.map((i) => [i.name, i.shape]), [
      ['value', [1, 5329, 8, 32]],
      ['sampling_locations', [1, 5329, 8, 1, 4, 2]],
      ['attention_weights', [1, 5329, 8, 1, 4]],
    ]);
    assert.deepEqual(ms.opAttrs, ['levels=[73x73]']);
    assert.deepEqual(ms.outputs, [{ name: 'output', shape: [1, 5329, 256] }]);
    assert.deepEqual(byName(full, 'msdeform_vjp_m2f_pixel').outputs.map((o) => o.name), ['output', 'd:value', 'd:sampling_locations', 'd:attention_weights']);

    assert.deepEqual(selectRows(full, ['attention_vjp']).map((r) => r.name), BENCH_ROW_NAMES.filter((n) => n.startsWith('attention_vjp_')));
    assert.equal(selectRows(full, ['attention']).length, 18, 'EVA-G and EVA-E in f32, EVA-G in f16, forward and forward+backward');
    assert.equal(selectRows(full, ['attention_vjp_f16']).length, 3);
    assert.deepEqual(selectRows(full, ['msdeform']).map((r) => r.name), ['msdeform_fwd_m2f_pixel', 'msdeform_vjp_m2f_pixel', 'msdeform_fwd_m2f_3lvl', 'msdeform_vjp_m2f_3lvl']);
    // Mask2Former's three levels at strides 8, 16, 32 of a 512x512 image, every pixel a query.
    const three = byName(full, 'msdeform_vjp_m2f_3lvl');
    assert.deepEqual(three.opAttrs, ['levels=[64x64,32x32,16x16]']);
    assert.deepEqual(three.inputs.map((i) => [i.name, i.shape]), [
      ['value', [1, 5376, 8, 32]],
      ['sampling_locations', [1, 5376, 8, 3, 4, 2]],
      ['attention_weights', [1, 5376, 8, 3, 4]],
      ['d:output', [1, 5376, 256]],
    ]);
    // Names are the same at every size.
    for (const size of ['quick', 'tiny'] as const) assert.deepEqual(benchRows(size).map((r) => r.name), BENCH_ROW_NAMES);
  });

  test('graphs: the op through compileOp, and its VJP for forward+backward rows', () => {
    for (const name of ['attention_vjp_evag_caption', 'msdeform_vjp_m2f_pixel', 'msdeform_vjp_m2f_3lvl', 'attention_fwd_evae_detection']) {
      const row = byName(benchRows('tiny'), name);
      const { graph, inputs, outputs } = rowGraph(row);
      assert.deepEqual(inputs.map((id) => graph.inputs.find((i) => i.node === id)!.name), row.inputs.map((i) => i.name), name);
      assert.deepEqual(outputs, row.outputs.map((o) => o.name));
      for (const o of row.outputs) assert.deepEqual(graph.node(graph.outputs.find((g) => g.name === o.name)!.node).shape, o.shape, `${name} ${o.name}`);
      const ops = new Set<string>(graph.nodes.map((n) => n.op));
      assert.ok(ops.has(row.op), `${name}: has ${row.op}`);
      if (row.pass === 'forward+backward') assert.ok(ops.has(`${row.op}_grad`), `${name}: has ${row.op}_grad`);
    }
    assert.throws(() => rowGraph(byName(benchRows('tiny'), 'msdeform_fwd_m2f_pixel'), 'f16'), /f32 only/);
    // f16 attention rows: autocast before the VJP, so the forward and the backward read rounded q, k, v (and g).
    const half = rowGraph(byName(benchRows('tiny'), 'attention_vjp_f16_evag_caption')).graph;
    for (const n of half.nodes.filter((x) => x.op === 'attention' || x.op === 'attention_grad')) {
      for (const i of n.inputs.slice(0, 3)) assert.ok(isExactHalf(half, i), `%${n.id} ${n.op} reads %${i} rounded`);
    }
  });

  test('sampling locations: inside (-1, size) pixels, never within the margin of a whole pixel', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 80 }), fc.integer({ min: 1, max: 80 })), { minLength: 1, maxLength: 3 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (levels, points, seed) => {
          let s = seed;
          const uniform = () => {
            s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
            return s / 2 ** 32;
          };
          const fill = { kind: 'sampling_locations' as const, levels, points, margin: 1e-3 };
          const shape = [1, 3, 2, levels.length, points, 2];
          const loc = fillLocations(fill, shape, uniform);
          for (let i = 0; i < loc.length; i++) {
            const [h, w] = levels[Math.floor(i / (2 * points)) % levels.length];
            const size = i % 2 === 0 ? w : h;
            const pixel = Math.fround(Math.fround(loc[i] * size) - 0.5);
            if (!(pixel > -1 && pixel < size)) return false;
            if (Math.abs(pixel - Math.round(pixel)) < 0.9e-3) return false;
          }
          return true;
        },
      ),
    );
    const row = byName(benchRows('tiny'), 'msdeform_vjp_m2f_pixel');
    assert.deepEqual(rowInputData(row), rowInputData(row), 'deterministic');
  });
});

interface FixtureTensor {
  shape: number[];
  data: number[];
}
interface FixtureCase {
  name: string;
  op: 'attention' | 'msdeform_attn';
  levels?: [number, number][];
  inputs: FixtureTensor[];
  outputs: FixtureTensor[];
}

const FIXTURE = fileURLToPath(new URL('../../../test/bench/fixtures/peer_ops.json', import.meta.url));

describe('the tfjs peer against PyTorch (float64 autograd)', () => {
  let gpu: GpuDevice;
  let peer: TfjsPeer;
  before(async () => {
    gpu = await openDevice({});
    peer = await attachTfjs(gpu);
  });
  after(async () => {
    peer?.dispose();
    await gpu?.destroy();
  });

  const { cases } = JSON.parse(readFileSync(FIXTURE, 'utf8')) as { cases: FixtureCase[] };
  test('the fixture has attention and two-level MSDeformAttn cases', () => {
    assert.ok(cases.some((c) => c.op === 'attention'));
    assert.ok(cases.some((c) => c.op === 'msdeform_attn' && c.levels!.length === 2));
  });
  for (const c of cases) {
    test(`${c.name}: output and every gradient`, async () => {
      // A row spec shaped like the fixture: the peer reads the op, the pass and (MSDeformAttn) the levels.
      const template = byName(benchRows('tiny'), c.op === 'attention' ? 'attention_vjp_evag_caption' : 'msdeform_vjp_m2f_pixel');
      const row: RowSpec = {
        ...template,
        inputs: template.inputs.map((inp, i) => ({ ...inp, shape: c.inputs[i].shape, ...(inp.fill ? { fill: { ...inp.fill, levels: c.levels! } } : {}) })),
      };
      const xs = c.inputs.map((t) => peer.tf.tensor(Float32Array.from(t.data), t.shape, 'float32'));
      const call = peerCall(peer.tf, row, xs);
      try {
        const got = await peer.result(call.run);
        assert.equal(got.length, c.outputs.length);
        for (const [i, want] of c.outputs.entries()) {
          const check = compareOutputs(got[i], Float32Array.from(want.data), { atol: 1e-5, rtol: 1e-4, scaled: true });
          assert.ok(check.passed, `${c.name} output ${i}: max |diff| ${check.maxAbsDiff}, ${check.worst}x the tolerance`);
        }
      } finally {
        call.dispose();
        for (const x of xs) x.dispose();
      }
    });
  }
});
