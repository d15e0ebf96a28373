// DETR's sine position encoding: the CPU reference against PyTorch (test/fixtures/ops/make_losses.py) and the
// GPU kernel against the reference.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Builder } from '../../compiler/ir/builder.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { checkAgainstReference, withDevice } from '../kernels/harness.js';

interface Case { shape: number[]; temperature: number; normalize: boolean; output: { data: number[] } }
const file = fileURLToPath(new URL('../../../test/fixtures/ops/positions.json', import.meta.url));
const { cases } = JSON.parse(readFileSync(file, 'utf8')) as { cases: Case[] };

for (const c of cases) {
  test(`sine_position ${c.shape.join('x')} (T ${c.temperature}, normalize ${c.normalize}) matches PyTorch`, () => {
    const b = new Builder();
    const x = b.input('x', [c.shape[0], 3, c.shape[2], c.shape[3]]);
    b.output('y', b.add('sine_position', [x], { channels: c.shape[1], temperature: c.temperature, normalize: c.normalize }));
    const y = interpret(b.graph, new Map([['x', { shape: b.shape(x), data: new Float64Array(c.shape[0] * 3 * c.shape[2] * c.shape[3]) }]])).get('y')!;
    assert.deepEqual([...y.shape], c.shape);
    c.output.data.forEach((e, i) => assert.ok(Math.abs(y.data[i] - e) < 1e-12, `[${i}] ${y.data[i]} vs ${e}`));
  });
}

test('sine_position on the GPU matches the reference', async () => {
  await withDevice(async (gpu) => {
    for (const c of cases) {
      const x = { shape: [c.shape[0], 2, c.shape[2], c.shape[3]], data: new Float32Array(c.shape[0] * 2 * c.shape[2] * c.shape[3]) };
      await checkAgainstReference(gpu, (b, [xi]) => b.add('sine_position', [xi], { channels: c.shape[1], temperature: c.temperature, normalize: c.normalize }), [x], { rtol: 1e-5, atol: 2e-6 });
    }
  });
});
