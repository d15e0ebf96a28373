// The vision ops against PyTorch: test/fixtures/ops/vision_ops.json holds F.interpolate (bicubic, bilinear),
// F.adaptive_avg_pool2d, F.conv2d and Deformable-DETR's grid_sample form of MSDeformAttn, each with a random
// cotangent and the VJP in every input from autograd, all in float64 (made by test/fixtures/ops/make_ops.py).
// Our forward rule and our gradient rules (through vjp and the interpreter) must agree to 1e-10 relative.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { IrOp } from '../../compiler/ir/ops.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { assertClose, tensor } from './util.js';

interface JsonTensor {
  readonly shape: number[];
  readonly data: number[];
}

interface Fixture {
  readonly name: string;
  readonly op: IrOp;
  readonly attrs: Attrs;
  readonly inputs: JsonTensor[];
  readonly output: JsonTensor;
  readonly cotangent: JsonTensor;
  readonly grads: JsonTensor[];
}

const FILE = new URL('../../../test/fixtures/ops/vision_ops.json', import.meta.url);
const { cases } = JSON.parse(readFileSync(FILE, 'utf8')) as { cases: Fixture[] };
const ref = (t: JsonTensor): RefTensor => tensor(t.shape, t.data);

/**
 * 1e-10 relative to the tensor's largest element: sums whose terms cancel can be far smaller than their
 * terms, and both sides round each term at 1e-16 of its own size, not of the sum's.
 */
function tolerance(t: JsonTensor) {
  const scale = t.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  return { rtol: 1e-10, atol: 1e-10 * scale };
}

/** The op's output and the gradient of ⟨cotangent, output⟩ in every input, through vjp and interpret. */
function run(f: Fixture): { y: RefTensor; grads: RefTensor[] } {
  const b = new Builder();
  const ids = f.inputs.map((t, k) => b.input(`x${k}`, t.shape, 'f32'));
  b.output('y', b.add(f.op, ids, f.attrs));
  const { grads } = vjp(b.graph, ids);
  ids.forEach((id, k) => b.output(`grad${k}`, grads.get(id)!));
  const feed = new Map(f.inputs.map((t, k) => [`x${k}`, ref(t)]));
  feed.set('d:y', ref(f.cotangent));
  const outs = interpret(b.graph, feed);
  return { y: outs.get('y')!, grads: ids.map((_, k) => outs.get(`grad${k}`)!) };
}

test('the PyTorch fixtures cover every vision forward op', () => {
  const ops = new Set(cases.map((c) => c.op));
  assert.deepEqual([...ops].sort(), ['adaptive_avg_pool2d', 'conv2d', 'msdeform_attn', 'resize']);
  assert.ok(cases.some((c) => c.op === 'resize' && c.attrs.mode === 'bicubic' && c.inputs[0].shape.slice(-2).join() === '16,16' && String(c.attrs.size) === '6,5'));
});

for (const f of cases) {
  test(`matches PyTorch: ${f.name}`, () => {
    const { y, grads } = run(f);
    assertClose(y, ref(f.output), { ...tolerance(f.output), label: 'output' });
    grads.forEach((g, k) => assertClose(g, ref(f.grads[k]), { ...tolerance(f.grads[k]), label: `gradient of input ${k}` }));
  });
}
