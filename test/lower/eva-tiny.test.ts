// eva_vit_tiny compiled from the stdlib and run on the cpu backend against PyTorch float64 fixtures
// (test/fixtures/eva_tiny, made by make_fixtures.py): forward at two image sizes (one needs the bicubic
// position resize), LoRA gradients, and the full VJP; weights from .safetensors and from .pth.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkFiles } from '../../compiler/check/index.js';
import { makeBundle, parseBundle, serializeBundle } from '../../compiler/bundle.js';
import { compileEntry, type EntryOptions } from '../../compiler/lower/entry.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { loadWeights } from '../../runtime/run-cpu.js';
import { readSafetensors, toFloat64 } from '../../runtime/weights/index.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const fx = root + 'test/fixtures/eva_tiny/';

function compile(pipeline: string, opts: EntryOptions) {
  const checked = checkFiles([root + pipeline]);
  assert.equal(checked.program.diags.errorCount, 0);
  const c = compileEntry(checked, checked.roots[0], opts);
  // Through the bundle format, as `visft run` does.
  const text = serializeBundle(makeBundle(c, { file: pipeline, sha256: '' }));
  return { text, ...parseBundle(text, 'test.visftx') };
}

function fixture(name: string): Map<string, RefTensor> {
  const out = new Map<string, RefTensor>();
  for (const [k, t] of readSafetensors(fx + name).tensors) out.set(k, { shape: t.shape, data: toFloat64(t) });
  return out;
}

function assertClose(actual: RefTensor | undefined, expected: RefTensor | undefined, what: string, rtol = 1e-5) {
  assert.ok(actual && expected, `${what}: missing`);
  assert.deepEqual([...actual.shape], [...expected.shape], `${what}: shape`);
  let scale = 0;
  for (const v of expected.data) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < expected.data.length; i++) {
    const err = Math.abs(actual.data[i] - expected.data[i]);
    assert.ok(err <= rtol * Math.max(Math.abs(expected.data[i]), scale * 1e-3), `${what}[${i}]: ${actual.data[i]} vs ${expected.data[i]}`);
  }
}

const inputsOf = (c: Map<string, RefTensor>, names: string[]) => new Map(names.map((n) => [n, c.get(n)!]));

test('forward without LoRA matches PyTorch at 56x56 (no position resize)', () => {
  const { bundle, graph } = compile('pipelines/eva_tiny.visft', { entry: 'eva', shapes: new Map([['image', [2, 3, 56, 56]]]) });
  const w = fixture('weights.safetensors');
  const params = new Map(bundle.params.map((p) => [p.name, w.get(p.name)!]));
  const c = fixture('case_a.safetensors');
  const out = interpret(graph, inputsOf(c, ['image']), params);
  assertClose(out.get('features'), c.get('features'), 'features');
});

for (const [weights, label] of [['weights.safetensors', 'safetensors'], ['weights.pth', 'torch zip']] as const) {
  for (const [caseFile, shape] of [['case_a.safetensors', [2, 3, 56, 56]], ['case_b.safetensors', [1, 3, 70, 84]]] as const) {
    test(`stage2 (LoRA q, v) forward and LoRA gradients match PyTorch: ${caseFile}, weights from ${label}`, () => {
      const { bundle, graph } = compile('pipelines/eva_tiny.visft', { entry: 'eva', stage: 'stage2', vjp: true, shapes: new Map([['image', [...shape]]]) });
      assert.deepEqual(bundle.params.filter((p) => p.trainable).map((p) => p.name).sort(), ['blocks.0.attn.qkv.lora_A', 'blocks.0.attn.qkv.lora_B', 'blocks.1.attn.qkv.lora_A', 'blocks.1.attn.qkv.lora_B']);
      const params = loadWeights([fx + weights], bundle);
      const c = fixture(caseFile);
      const out = interpret(graph, inputsOf(c, ['image', 'd:features']), params);
      assertClose(out.get('features'), c.get('features_lora'), 'features (LoRA)');
      for (const p of bundle.params.filter((x) => x.trainable)) assertClose(out.get(`d:${p.name}`), c.get(`d:${p.name}`), `d:${p.name}`);
    });
  }
}

test('the full VJP (every backbone parameter and the LoRA) matches PyTorch', () => {
  const { bundle, graph } = compile('test/fixtures/eva_tiny/full_vjp.visft', { entry: 'eva', stage: 'everything', vjp: true, shapes: new Map([['image', [2, 3, 56, 56]]]) });
  assert.equal(bundle.params.filter((p) => p.trainable).length, 35);
  const c = fixture('case_a.safetensors');
  const out = interpret(graph, inputsOf(c, ['image', 'd:features']), loadWeights([fx + 'weights.safetensors'], bundle));
  for (const p of bundle.params) assertClose(out.get(`d:${p.name}`), c.get(`d:${p.name}`), `d:${p.name}`);
});

test('frozen backbone parameters get no backward work in stage2', () => {
  const { graph, bundle } = compile('pipelines/eva_tiny.visft', { entry: 'eva', stage: 'stage2', vjp: true, shapes: new Map([['image', [2, 3, 56, 56]]]) });
  const cot = graph.inputs.find((i) => i.name === 'd:features')!.node;
  const backward = graph.nodes.filter((n) => n.id > cot);
  // Nothing computes a gradient for the patch embedding, norms, MLP or the qkv/proj weights themselves.
  assert.ok(!backward.some((n) => n.op === 'conv2d_grad_weight' || n.op === 'conv2d_grad_input'), 'no patch-embedding backward');
  const frozenShapes = new Set(bundle.params.filter((p) => !p.trainable).map((p) => p.shape.join('x')));
  const gradOutputs = graph.outputs.filter((o) => o.name.startsWith('d:'));
  assert.equal(gradOutputs.length, 4);
  for (const o of gradOutputs) assert.ok(!frozenShapes.has(graph.node(o.node).shape.join('x')) || o.name.includes('lora'));
  // The backward stops at block 0's qkv input: the first block's MLP and the patch embedding are never reached.
  assert.ok(backward.length < graph.nodes.length - backward.length + 200, `backward has ${backward.length} nodes`);
});

test('compiling twice gives a byte-identical bundle', () => {
  const opts: EntryOptions = { entry: 'eva', stage: 'stage2', vjp: true, shapes: new Map([['image', [1, 3, 70, 84]]]) };
  assert.equal(compile('pipelines/eva_tiny.visft', opts).text, compile('pipelines/eva_tiny.visft', opts).text);
});
