// The losses lowered to primitives (cross_entropy, binary_cross_entropy_logits, l1_loss) against PyTorch
// float64 (test/fixtures/ops/make_losses.py): values and input gradients, through `compile --op`'s path.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileOp } from '../../compiler/lower/op-entry.js';
import { interpret } from '../../compiler/ir/interpret.js';

interface T { shape: number[]; data: number[] }
interface Case { name: string; op: string; attrs: Record<string, unknown>; inputs: Record<string, T>; output: T; d_output: T; grads: Record<string, T> }

const file = fileURLToPath(new URL('../../../test/fixtures/ops/losses.json', import.meta.url));
const { cases } = JSON.parse(readFileSync(file, 'utf8')) as { cases: Case[] };

function close(actual: Float64Array, expected: number[], what: string) {
  assert.equal(actual.length, expected.length, `${what}: size`);
  expected.forEach((e, i) => assert.ok(Math.abs(actual[i] - e) <= 1e-10 * Math.max(1, Math.abs(e)), `${what}[${i}]: ${actual[i]} vs ${e}`));
}

for (const c of cases) {
  test(`${c.op}: ${c.name} matches PyTorch (value and gradients)`, () => {
    const shapes = new Map(Object.entries(c.inputs).map(([k, v]) => [k, v.shape]));
    const attrs = Object.entries(c.attrs).map(([k, v]) => `${k}=${v}`);
    const { graph } = compileOp(c.op, shapes, attrs, true);
    const inputs = new Map(Object.entries(c.inputs).map(([k, v]) => [k, { shape: v.shape, data: Float64Array.from(v.data) }]));
    inputs.set('d:output', { shape: c.d_output.shape, data: Float64Array.from(c.d_output.data) });
    const out = interpret(graph, inputs);
    close(out.get('output')!.data, c.output.data, 'output');
    for (const [k, g] of Object.entries(c.grads)) close(out.get(`d:${k}`)!.data, g.data, `d:${k}`);
  });
}
