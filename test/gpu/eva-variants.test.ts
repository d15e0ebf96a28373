// EVA variants that eva_tiny does not cover, against PyTorch float64 fixtures (test/fixtures/eva_variants/
// make_fixtures.py): post-norm blocks (EVA-ViT-E) with LoRA on q, k and v, and pre-norm with LoRA on k alone at head
// dim 5, both on grids that resize the positions. The stage's forward and LoRA gradients, on the CPU reference
// (1e-9) and on the GPU (lavapipe in CI) through a bundle as `visft run` reads it (1e-4 forward, 1e-3 gradients).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bundleProgramFor, makeBundle, parseBundle, serializeBundle } from '../../compiler/bundle.js';
import { checkFiles } from '../../compiler/check/index.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { compileEntry } from '../../compiler/lower/entry.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { runCpu } from '../../runtime/run-cpu.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { readSafetensors, toFloat64 } from '../../runtime/weights/index.js';
import { sharedDevice } from '../kernels/harness.js';
import { assertCloseScaled } from './fixture-harness.js';

const fx = fileURLToPath(new URL('../../../test/fixtures/eva_variants/', import.meta.url));
const device = sharedDevice();

for (const name of ['post_qkv', 'pre_k']) {
  test(`${name}: stage forward and LoRA gradients match PyTorch on the CPU reference and on the GPU`, async () => {
    const file = readSafetensors(`${fx}${name}.safetensors`).tensors;
    const ref = (k: string): RefTensor => ({ shape: file.get(k)!.shape, data: toFloat64(file.get(k)!) });
    const checked = checkFiles([`${fx}${name}.visft`]);
    assert.equal(checked.program.diags.errorCount, 0);
    const c = compileEntry(checked, checked.roots[0], { entry: 'eva', stage: 'tune', vjp: true, shapes: new Map([['image', ref('input:image').shape]]) });
    const { bundle, graph } = parseBundle(serializeBundle(makeBundle(c, { file: name, sha256: '' }, compileGpu(c.graph, PORTABLE_TARGET))), `${name}.visftx`);
    const params = new Map(bundle.params.map((p) => [p.name, ref(p.name)]));
    const inputs = new Map([['image', ref('input:image')], ['d:features', ref('input:d:features')]]);
    const trainable = bundle.params.filter((p) => p.trainable).map((p) => p.name);
    assert.ok(trainable.length === 2 * (name === 'post_qkv' ? 2 : 1) && trainable.every((p) => /\.attn\.qkv\.lora_[AB]$/.test(p)), `trains ${trainable}`);
    const cpu = runCpu(graph, inputs, params);
    const { program } = bundleProgramFor(bundle, graph, `${name}.visftx`, device().target, 'auto');
    const dev = await runGpu(device(), graph, program, inputs, params);
    for (const [out, rtol] of [[cpu, 1e-9], [dev, 1e-4]] as const) assertCloseScaled(out.get('features'), ref('expected:features'), rtol, `${name} features`);
    for (const p of trainable) for (const [out, rtol] of [[cpu, 1e-9], [dev, 1e-3]] as const) assertCloseScaled(out.get(`d:${p}`), ref(`expected:d:${p}`), rtol, `${name} d:${p}`);
  });
}
