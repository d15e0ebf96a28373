// The executor on the local adapter (lavapipe here): hand-written kernels chained through temps whose storage
// the plan reuses, parameters uploaded once, f16 storage, SharedArrayBuffer inputs, compile errors, plan checks.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Kernel } from '../../compiler/codegen/types.js';
import { planMemory, PlanDoesNotFitError, type PlanValue } from '../../compiler/plan/memory.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { KernelCompileError, GpuDeviceLostError } from '../../runtime/gpu/errors.js';
import { Executor } from '../../runtime/gpu/executor.js';

const N = 1000; // not a multiple of the workgroup size, and 4000 bytes: not a multiple of 256

function ew(name: string, arity: 1 | 2, expr: string, ins: number[], out: number, n = N, type = 'f32'): Kernel {
  const decls = ins.map((_, i) => `@group(0) @binding(${i}) var<storage, read> in${i}: array<${type}>;`);
  const wgsl = `${type === 'f16' ? 'enable f16;\n' : ''}${decls.join('\n')}
@group(0) @binding(${arity}) var<storage, read_write> out: array<${type}>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= ${n}u) { return; }
  ${arity === 2 ? 'let a = in0[i]; let b = in1[i];' : 'let a = in0[i];'}
  out[i] = ${expr};
}
`;
  return {
    name,
    wgsl,
    workgroupSize: [64, 1, 1],
    dispatch: [Math.ceil(n / 64), 1, 1],
    bindings: [...ins.map((value) => ({ value, access: 'read' as const })), { value: out, access: 'read_write' }],
    nodes: [out],
  };
}

// x: input, w: param; t1 = x + w; t2 = t1 * 2; t3 = t2 + x; y = t3 * 0.5; z = reshape(t1) is read by the last.
// Ids: 0 x, 1 w, 2 t1, 3 t2, 4 t3, 5 y, 6 u (output: t2 - x), 7 z (alias of 6), 8 v (output: z * 3).
const values: PlanValue[] = [
  { id: 0, bytes: N * 4, kind: 'input', name: 'x' },
  { id: 1, bytes: N * 4, kind: 'param', name: 'w' },
  { id: 2, bytes: N * 4, kind: 'temp' },
  { id: 3, bytes: N * 4, kind: 'temp' },
  { id: 4, bytes: N * 4, kind: 'temp' },
  { id: 5, bytes: N * 4, kind: 'output', name: 'y' },
  { id: 6, bytes: N * 4, kind: 'temp' },
  { id: 8, bytes: N * 4, kind: 'output', name: 'v' },
];
const aliases = new Map([[7, 6]]);
const kernels: Kernel[] = [
  ew('add', 2, 'a + b', [0, 1], 2),
  ew('scale2', 1, 'a * 2.0', [2], 3),
  ew('add', 2, 'a + b', [3, 0], 4),
  ew('scale_half', 1, 'a * 0.5', [4], 5),
  ew('sub', 2, 'a - b', [3, 0], 6),
  ew('scale3', 1, 'a * 3.0', [7], 8),
];

function expected(x: Float32Array, w: Float32Array): { y: Float32Array; v: Float32Array } {
  const y = new Float32Array(N);
  const v = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    const t1 = Math.fround(x[i] + w[i]);
    const t2 = Math.fround(t1 * 2);
    y[i] = Math.fround(Math.fround(t2 + x[i]) * 0.5);
    v[i] = Math.fround(Math.fround(t2 - x[i]) * 3);
  }
  return { y, v };
}

const ramp = (f: (i: number) => number): Float32Array => Float32Array.from({ length: N }, (_, i) => f(i));

describe('executor on the local adapter', () => {
  let gpu: GpuDevice;
  before(async () => {
    gpu = await openDevice();
  });
  after(async () => {
    await gpu?.destroy();
  });

  test('a chain of kernels through reused temps computes the right values, run after run, params uploaded once', async () => {
    const plan = planMemory({ values, schedule: kernels, aliases }, gpu.target);
    // The plan does reuse storage: t1 and t3 never live together.
    assert.deepEqual(plan.placement.get(2), plan.placement.get(4));
    assert.deepEqual(plan.placement.get(7), plan.placement.get(6));
    const ex = await Executor.create(gpu, kernels, plan, values);
    try {
      const w = ramp((i) => (i % 7) - 3.25);
      ex.setParams(new Map([[1, w]]));
      for (const [k, x] of [ramp((i) => i * 0.5), ramp((i) => 100 - i * 0.125)].entries()) {
        const out = await ex.run(new Map([[0, x]]), new Map(), [5, 8]);
        const want = expected(x, w);
        assert.deepEqual(out.get(5), want.y, `run ${k}: y`);
        assert.deepEqual(out.get(8), want.v, `run ${k}: v`);
      }
      // New params in run(), and an input backed by a SharedArrayBuffer.
      const w2 = ramp((i) => i * 0.25);
      const shared = new Float32Array(new SharedArrayBuffer(N * 4 + 8), 8, N);
      shared.set(ramp((i) => -i));
      const out = await ex.run(new Map([[0, shared]]), new Map([[1, w2]]), [5, 8, 1]);
      const want = expected(shared, w2);
      assert.deepEqual(out.get(5), want.y);
      assert.deepEqual(out.get(8), want.v);
      assert.deepEqual(out.get(1), w2, 'a parameter reads back as uploaded');
      // Deterministic: the same inputs give the same bits.
      const again = await ex.run(new Map([[0, shared]]), new Map(), [5, 8]);
      assert.deepEqual(again.get(5), out.get(5));
      await assert.rejects(ex.run(new Map([[0, shared]]), new Map(), [3]), /cannot read back temp %3: its storage is reused/);
      await assert.rejects(ex.run(new Map([[0, new Float32Array(3)]]), new Map(), [5]), /input %0 \(x\) has 3 elements, expected 1000/);
    } finally {
      ex.destroy();
    }
  });

  test('a missing parameter is an error before anything runs', async () => {
    const plan = planMemory({ values, schedule: kernels, aliases }, gpu.target);
    const ex = await Executor.create(gpu, kernels, plan, values);
    try {
      await assert.rejects(ex.run(new Map([[0, ramp((i) => i)]]), new Map(), [5]), /parameter %1 \(w\) was never uploaded/);
    } finally {
      ex.destroy();
    }
  });

  test('f16 storage is converted on upload and readback', async (t) => {
    if (!gpu.target.features.includes('shader-f16')) return t.skip('no shader-f16');
    const n = 37; // 74 bytes: padded to 76
    const vals: PlanValue[] = [
      { id: 0, bytes: n * 2, kind: 'input', dtype: 'f16' },
      { id: 1, bytes: n * 2, kind: 'output', dtype: 'f16' },
    ];
    const k = [ew('double_f16', 1, 'a * 2.0h', [0], 1, n, 'f16')];
    const ex = await Executor.create(gpu, k, planMemory({ values: vals, schedule: k }, gpu.target), vals);
    try {
      const x = Float32Array.from({ length: n }, (_, i) => i * 0.5 - 4);
      const out = await ex.run(new Map([[0, x]]), new Map(), [1]);
      assert.deepEqual(out.get(1), x.map((v) => v * 2));
    } finally {
      ex.destroy();
    }
  });

  test('a WGSL syntax error is a KernelCompileError naming the kernel and the line', async () => {
    const bad = ew('broken_add', 2, 'a + b', [0, 1], 2);
    const wgsl = bad.wgsl.replace('let i = gid.x;', 'let i = gid.x +;');
    const line = wgsl.split('\n').findIndex((l) => l.includes('gid.x +;')) + 1;
    const plan = planMemory({ values: values.slice(0, 3), schedule: [bad] }, gpu.target);
    await assert.rejects(Executor.create(gpu, [{ ...bad, wgsl }], plan), (e: unknown) => {
      assert.ok(e instanceof KernelCompileError, String(e));
      assert.equal(e.kernel, 'broken_add');
      assert.equal(e.diagnostics[0].line, line);
      assert.match(e.diagnostics[0].text, /let i = gid\.x \+;/);
      assert.match(e.message, /^kernel 'broken_add' failed to compile \(WGSL, 1 error\):\n/);
      assert.match(e.message, new RegExp(`broken_add\\.wgsl:${line}:\\d+: error: `));
      assert.match(e.message, new RegExp(`${line} \\|   let i = gid\\.x \\+;`));
      return true;
    });
  });

  test("a binding whose access disagrees with the WGSL is a KernelCompileError naming the kernel", async () => {
    const k = ew('wrong_access', 1, 'a', [0], 1);
    const swapped: Kernel = { ...k, bindings: [{ value: 0, access: 'read_write' }, { value: 1, access: 'read_write' }] };
    const vals: PlanValue[] = [
      { id: 0, bytes: N * 4, kind: 'temp' },
      { id: 1, bytes: N * 4, kind: 'output' },
    ];
    const plan = planMemory({ values: vals, schedule: [swapped] }, gpu.target);
    await assert.rejects(Executor.create(gpu, [swapped], plan), (e: unknown) => e instanceof KernelCompileError && e.kernel === 'wrong_access' && /pipeline/.test(e.message));
  });

  test('a plan that does not fit the device is rejected before allocating', async () => {
    const huge = gpu.target.limits.maxStorageBufferBindingSize + 1024;
    const vals: PlanValue[] = [{ id: 0, bytes: huge, kind: 'param', name: 'huge' }];
    const plan = planMemory({ values: vals, schedule: [] }, { ...gpu.target.limits, maxStorageBufferBindingSize: huge * 2, maxBufferSize: huge * 2 });
    await assert.rejects(Executor.create(gpu, [], plan), (e: unknown) => e instanceof PlanDoesNotFitError && /value %0 \(huge\) needs \d+ bytes \([\d.]+ [KMG]iB\), over the device's maxStorageBufferBindingSize/.test(e.message));
  });
});

test('a run on a destroyed device is a GpuDeviceLostError', async () => {
  const gpu = await openDevice();
  const k = [ew('copy', 1, 'a', [0], 1, 4)];
  const vals: PlanValue[] = [
    { id: 0, bytes: 16, kind: 'input' },
    { id: 1, bytes: 16, kind: 'output' },
  ];
  const ex = await Executor.create(gpu, k, planMemory({ values: vals, schedule: k }, gpu.target));
  const out = await ex.run(new Map([[0, new Float32Array([1, 2, 3, 4])]]), new Map(), [1]);
  assert.deepEqual(out.get(1), new Float32Array([1, 2, 3, 4]));
  await gpu.destroy();
  await assert.rejects(ex.run(new Map([[0, new Float32Array(4)]]), new Map(), [1]), (e: unknown) => e instanceof GpuDeviceLostError && /was destroyed/.test(e.message));
});
