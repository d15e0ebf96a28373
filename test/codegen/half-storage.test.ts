// f16 storage (compiler/codegen/half.ts, kernels/half-storage.ts): which values are stored as f16, the WGSL
// rewrite of their accesses, and on the device (lavapipe has shader-f16) that an autocast training step stores
// its f16 values in half the bytes with results bit for bit those of f32 storage.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { checkFiles } from '../../compiler/check/index.js';
import { halfBindings, exactHalfValues, planHalfStorage } from '../../compiler/codegen/half.js';
import { schedule } from '../../compiler/codegen/schedule.js';
import { PORTABLE_TARGET, type Kernel, type Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { formatBytes, planMemory } from '../../compiler/plan/memory.js';
import { trainPlan } from '../../compiler/train/plan.js';
import { compileStep } from '../../compiler/train/step-graph.js';
import { canStoreHalf, convertAccesses, halfStorageKernel } from '../../kernels/half-storage.js';
import { GPU_RULES } from '../../kernels/index.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { REPO_ROOT } from '../golden/harness.js';
import { makeRng } from '../ir/util.js';
import { assertBitwise } from '../kernels/harness.js';
import { captionFeeds } from '../train/caption-feeds.js';

const F16_TARGET: Target = { ...PORTABLE_TARGET, name: 'portable+f16', features: ['shader-f16'] };

test('convertAccesses widens reads and narrows stores of the half bindings only, nested indices included', () => {
  const half = new Set(['in_1', 'out_0']);
  assert.equal(convertAccesses('out_0[i] = in_0[i] + in_1[o1];', half), 'out_0[i] = f16(in_0[i] + f32(in_1[o1]));');
  assert.equal(convertAccesses('let v = in_1[u32(in_0[in_1[j]])] * 2.0f;', half), 'let v = f32(in_1[u32(in_0[f32(in_1[j])])]) * 2.0f;');
  assert.equal(convertAccesses('if (x) { out_0[oc + r * 4u] = fma(a[0], b, acc[i]); }', half), 'if (x) { out_0[oc + r * 4u] = f16(fma(a[0], b, acc[i])); }');
  assert.equal(convertAccesses('if (in_1[i] == 0.0f) { _ = arrayLength(&out_0); }', half), 'if (f32(in_1[i]) == 0.0f) { _ = arrayLength(&out_0); }');
  assert.equal(convertAccesses('tile_in_1[i] = 1.0f;', half), 'tile_in_1[i] = 1.0f;');
  assert.equal(convertAccesses('let a = taps.in_1[j] + in_1[j];', half), 'let a = taps.in_1[j] + f32(in_1[j]);');
  assert.throws(() => convertAccesses('out_0[i] += 1.0f;', half), /compound assignment to out_0/);
  // Operands a matmul loads as vec4s: widened to vec4<f32>; never stored to.
  const vec4 = new Set(['in_1']);
  assert.equal(convertAccesses('va = select(vec4<f32>(0f), in_1[(ob + c) / 4u], ok);', half, vec4), 'va = select(vec4<f32>(0f), vec4<f32>(in_1[(ob + c) / 4u]), ok);');
  assert.throws(() => convertAccesses('in_1[i] = v;', half, vec4), /store to in_1, read as vec4s/);
});

test('halfStorageKernel declares a vec4-loaded operand array<vec4<f16>>; a read_write vec4 binding cannot be stored as f16', () => {
  const kernel = (access: string) => ({
    name: 'k',
    wgsl: `@group(0) @binding(0) var<storage, ${access}> in_0: array<vec4<f32>>;\n@group(0) @binding(1) var<storage, read_write> out_0: array<f32>;\nfn main() { out_0[0] = in_0[0].x; }`,
    workgroupSize: [1, 1, 1] as [number, number, number],
    dispatch: [1, 1, 1] as [number, number, number],
    bindings: [
      { value: 0, access: 'read' as const },
      { value: 1, access: 'read_write' as const },
    ],
    nodes: [1],
  });
  assert.ok(canStoreHalf(kernel('read'), 0));
  assert.ok(!canStoreHalf(kernel('read_write'), 0));
  const k = halfStorageKernel(kernel('read'), new Set([0]));
  assert.match(k.wgsl, /in_0: array<vec4<f16>>;/);
  assert.match(k.wgsl, /out_0\[0\] = vec4<f32>\(in_0\[0\]\)\.x;/);
});

/** x·W rounded as autocast rounds it, then a bias add in f32: the rounded operands are exact f16 values. */
function autocastLinear(): { graph: Graph; x16: number; w16: number; wt: number; y: number } {
  const b = new Builder();
  const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
  const x = b.input('x', [6, 20]);
  const w = b.param('w', [12, 20]);
  const x16 = round(b.add('layernorm', [x], { eps: 1e-6 }));
  const w16 = round(w);
  const wt = b.add('permute', [w16], { dims: [1, 0] });
  const y = b.add('add', [round(b.add('matmul', [x16, wt])), b.param('bias', [12])]);
  b.output('y', y);
  b.output('x16', x16);
  return { graph: b.graph, x16, w16, wt, y };
}

test('exact f16 values: casts to f16, their round trips back to f32 and movement of them', () => {
  const { graph, x16, w16, wt, y } = autocastLinear();
  const exact = exactHalfValues(graph);
  for (const id of [x16, w16, wt]) assert.ok(exact.has(id), `%${id} is an exact f16`);
  assert.ok(!exact.has(y), 'the bias add is f32');
  assert.ok(!exact.has(graph.params[0].node), 'an f32 parameter is not');
});

test('the schedule stores exact temporaries as f16 only on a shader-f16 target, in half the bytes', () => {
  const { graph, w16, x16 } = autocastLinear();
  const portable = schedule(graph, PORTABLE_TARGET, GPU_RULES);
  assert.ok(portable.values.every((v) => v.dtype === 'f32'));
  assert.ok(portable.kernels.every((k) => !k.wgsl.includes('enable f16;')));
  const s = schedule(graph, F16_TARGET, GPU_RULES);
  const halfIds = s.values.filter((v) => v.dtype === 'f16').map((v) => v.id);
  // The rounded weight is a temporary: f16. The rounded activation is a graph output of f32 dtype: f32.
  assert.deepEqual(halfIds, [w16]);
  assert.ok(!halfIds.includes(x16));
  assert.equal(s.values.find((v) => v.id === w16)!.bytes, 12 * 20 * 2);
  const writer = s.kernels.find((k) => k.bindings.some((b) => b.value === w16 && b.access === 'read_write'))!;
  const reader = s.kernels.find((k) => k.bindings.some((b) => b.value === w16 && b.access === 'read'))!;
  for (const k of [writer, reader]) {
    assert.match(k.wgsl, /^enable f16;/, k.name);
    assert.match(k.name, /_f16io$/);
  }
  assert.match(reader.name, /^matmul_\w+_bt/, 'the matmul reads the f16 weight transposed, without a copy');
  assert.equal(schedule(graph, F16_TARGET, GPU_RULES, { halfStorage: false }).values.filter((v) => v.dtype === 'f16').length, 0);
  // Deterministic: the same graph schedules to the same kernels.
  assert.deepEqual(schedule(graph, F16_TARGET, GPU_RULES).kernels, s.kernels);
});

test('an f16 parameter read as f32 (a frozen fp16 backbone): no cast kernel, the matmul reads the f16 storage transposed', () => {
  const b = new Builder();
  const w = b.param('w', [12, 20], 'f16');
  const y = b.add('matmul', [b.input('x', [6, 20]), b.transposeLast(b.add('cast', [w], { dtype: 'f32' }))]);
  b.output('y', y);
  const s = schedule(b.graph, F16_TARGET, GPU_RULES);
  assert.equal(s.kernels.length, 1, s.kernels.map((k) => k.name).join(', '));
  assert.match(s.kernels[0].name, /^matmul_\w+_bt_f16io$/);
  assert.equal(s.kernels[0].bindings[1].value, w);
  assert.deepEqual(s.values.find((v) => v.id === w), { id: w, bytes: 12 * 20 * 2, kind: 'param', name: 'w', shape: [12, 20], dtype: 'f16' });
  // Without f16 storage the cast is a kernel of its own.
  assert.equal(schedule(b.graph, F16_TARGET, GPU_RULES, { halfStorage: false }).kernels.length, 2);
  assert.equal(schedule(b.graph, PORTABLE_TARGET, GPU_RULES).kernels.length, 2);
});

test('kernels with their own binding names (MSDeformAttn) store f16 too; a binding a local could shadow does not', () => {
  const b = new Builder();
  const value = b.add('cast', [b.input('value', [1, 4, 1, 2])], { dtype: 'f16' });
  const loc = b.input('sampling_locations', [1, 3, 1, 1, 1, 2]);
  const w = b.input('attention_weights', [1, 3, 1, 1, 1]);
  b.output('y', b.add('msdeform_attn', [b.add('cast', [value], { dtype: 'f32' }), loc, w], { levels: [[2, 2]] }));
  const s = schedule(b.graph, F16_TARGET, GPU_RULES);
  const msKernel = s.kernels.find((k) => k.name.startsWith('msdeform'))!;
  const rounded = msKernel.bindings[0].value;
  assert.ok(exactHalfValues(b.graph).has(rounded));
  assert.equal(s.values.find((v) => v.id === rounded)!.dtype, 'f16');
  assert.match(msKernel.name, /_f16io$/);
  assert.match(msKernel.wgsl, /var<storage, read> value: array<f16>;/);
  // Planned on the kernels as generated (f32 declarations), the same decision.
  const plain = schedule(b.graph, F16_TARGET, GPU_RULES, { halfStorage: false });
  assert.ok(planHalfStorage(b.graph, plain.values, plain.kernels, F16_TARGET).has(rounded));
  assert.deepEqual(halfBindings(plain.kernels.filter((k) => k.name.startsWith('msdeform')), new Set([rounded])), [new Set([0])]);
  // A binding named like a local (or a parameter) of the shader is left alone.
  const shadowed: Kernel = {
    ...msKernel,
    wgsl: '@group(0) @binding(0) var<storage, read> x: array<f32>;\n@group(0) @binding(1) var<storage, read_write> y: array<f32>;\nfn f(x: u32) -> f32 { return 0.0f; }\n',
  };
  assert.equal(canStoreHalf(shadowed, 0), false);
  assert.equal(canStoreHalf(shadowed, 1), true);
  assert.throws(() => halfStorageKernel(shadowed, new Set([0])), /cannot store binding 0 as f16/);
  assert.equal(halfStorageKernel(shadowed, new Set()), shadowed);
});

describe('on the device: an fp16 LoRA training step of eva_tiny (stage 2) on a frozen fp16 backbone', () => {
  let gpu: GpuDevice;
  before(async () => {
    gpu = await openDevice();
  });
  after(async () => {
    await gpu?.destroy();
  });

  test('f16 storage: same loss and gradients bit for bit as f32 storage, smaller plan', async (t: TestContext) => {
    if (!gpu.target.features.includes('shader-f16')) return t.skip(`the adapter ${gpu.target.name} has no shader-f16`);
    const checked = checkFiles([join(REPO_ROOT, 'pipelines', 'eva_tiny.visft')]);
    const plan = trainPlan(checked, checked.roots[0]);
    const stage = { ...plan.stages.find((s) => s.name === 'stage2')!, precision: 'fp16' as const };
    // A frozen fp16 backbone too: its weights are f16 parameters.
    const step = compileStep(checked, checked.roots[0], stage, { ...stage.tasks[0], backbonePrecision: 'fp16' }).graph;
    assert.ok(step.params.filter((p) => step.node(p.node).dtype === 'f16').length >= 10);
    const program = (halfStorage: boolean) => {
      const s = schedule(step, gpu.target, GPU_RULES, { halfStorage });
      return { target: gpu.target, schedule: s, plan: planMemory({ values: s.values, schedule: s.kernels, aliases: s.aliases }, gpu.target) };
    };
    const half = program(true);
    const full = program(false);
    const halfValues = half.schedule.values.filter((v) => v.dtype === 'f16');
    assert.ok(halfValues.length >= 10, `${halfValues.length} values stored as f16`);
    const peak = (p: typeof half) => p.plan.arenas.reduce((a, x) => a + x.size, 0);
    t.diagnostic(`eva_tiny stage2 fp16 step: ${halfValues.length} values f16; arenas ${formatBytes(peak(full))} → ${formatBytes(peak(half))}; live peak ${formatBytes(full.plan.liveBytesPeak)} → ${formatBytes(half.plan.liveBytesPeak)}`);
    assert.ok(peak(half) < peak(full) && half.plan.liveBytesPeak < full.plan.liveBytesPeak, 'the arenas and the live peak shrink');
    const f = captionFeeds(step, makeRng(11), { lossScale: 1024 });
    const a = await runGpu(gpu, step, half, f.inputs, f.params);
    const b = await runGpu(gpu, step, full, f.inputs, f.params);
    for (const [name, v] of b) assertBitwise(Float32Array.from(a.get(name)!.data), Float32Array.from(v.data), name);
    // And the interpreter agrees on the loss (it rounds where autocast does; it accumulates in float64).
    const ref = interpret(step, f.inputs, f.params).get('loss')!.data[0];
    const got = a.get('loss')!.data[0];
    assert.ok(Math.abs(got - ref) <= 2e-3 * Math.abs(ref), `loss ${got} vs the interpreter's ${ref}`);
  });
});
