// eva_vit_tiny with LoRA (stage 2) on the GPU (lavapipe in CI): forward and LoRA gradients against the PyTorch
// fixtures, through a bundle as `visft run` reads it: 1e-4 forward, 1e-3 gradients (f32 on the device).
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bundleGpuProgram, makeBundle, parseBundle, serializeBundle } from '../../compiler/bundle.js';
import { checkFiles } from '../../compiler/check/index.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { PORTABLE_TARGET } from '../../compiler/codegen/types.js';
import { compileEntry } from '../../compiler/lower/entry.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { loadWeights } from '../../runtime/run-cpu.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { readSafetensors, toFloat64 } from '../../runtime/weights/index.js';
import { sharedDevice } from '../kernels/harness.js';
import { assertCloseScaled } from './fixture-harness.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const fx = root + 'test/fixtures/eva_tiny/';
const device = sharedDevice();

test('stage-2 forward and LoRA gradients on the GPU match PyTorch', async () => {
  const checked = checkFiles([root + 'pipelines/eva_tiny.visft']);
  const c = compileEntry(checked, checked.roots[0], { entry: 'eva', stage: 'stage2', vjp: true, shapes: new Map([['image', [2, 3, 56, 56]]]) });
  const text = serializeBundle(makeBundle(c, { file: 'eva_tiny', sha256: '' }, compileGpu(c.graph, PORTABLE_TARGET)));
  const { bundle, graph } = parseBundle(text, 'eva.visftx');
  const program = bundleGpuProgram(bundle, 'eva.visftx');
  const t = readSafetensors(fx + 'case_a.safetensors').tensors;
  const ref = (k: string): RefTensor => ({ shape: t.get(k)!.shape, data: toFloat64(t.get(k)!) });
  const out = await runGpu(device(), graph, program, new Map([['image', ref('image')], ['d:features', ref('d:features')]]), loadWeights([fx + 'weights.safetensors'], bundle));
  assertCloseScaled(out.get('features'), ref('features_lora'), 1e-4, 'features');
  for (const p of bundle.params.filter((x) => x.trainable)) assertCloseScaled(out.get(`d:${p.name}`), ref(`d:${p.name}`), 1e-3, `d:${p.name}`);
});
