// openDevice and targetFromAdapter on the local adapter (lavapipe here; a GPU elsewhere), and error scopes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { adapterMatches, dawnOptions, NoAdapterError, openDevice } from '../../runtime/gpu/device.js';
import { GpuError, GpuOutOfMemoryError, withErrorScopes } from '../../runtime/gpu/errors.js';
import { f16BitsToF32, f32ToF16Bits } from '../../runtime/gpu/half.js';
import { targetFromAdapter, TARGET_LIMIT_KEYS } from '../../runtime/gpu/target.js';
import { nativeSgmat } from '../../kernels/sgmat.js';

test('openDevice: the Target reflects the adapter and device (llvmpipe: fallback, shader-f16, subgroups)', async () => {
  const gpu = await openDevice();
  try {
    const t = gpu.target;
    // The tensor-core probe adds the builtins' spelling the device's Dawn accepts (NVIDIA: the current one).
    const { subgroupMatrixSpelling, ...probed } = t;
    assert.deepEqual(targetFromAdapter(gpu.adapter, gpu.device), probed);
    if (nativeSgmat(t) && t.subgroupMatrixConfigs.length) assert.ok(subgroupMatrixSpelling === 'template' || subgroupMatrixSpelling === 'argument', `${subgroupMatrixSpelling}`);
    else assert.equal(subgroupMatrixSpelling, undefined);
    for (const k of TARGET_LIMIT_KEYS) assert.equal(t.limits[k], (gpu.device.limits as unknown as Record<string, number>)[k], k);
    // The device got the adapter's maximum for every limit codegen uses.
    for (const k of TARGET_LIMIT_KEYS) {
      const a = (gpu.adapter.limits as unknown as Record<string, number>)[k];
      assert.equal(t.limits[k], a, `${k}: device ${t.limits[k]}, adapter ${a}`);
    }
    assert.deepEqual([...t.features].sort(), t.features, 'features sorted');
    for (const f of t.features) assert.ok(gpu.adapter.features.has(f), f);
    assert.ok(t.subgroupMinSize <= t.subgroupMaxSize);
    assert.equal(t.name, gpu.info.name);
    if (/llvmpipe/.test(gpu.info.description)) {
      assert.equal(t.name, 'llvmpipe');
      assert.equal(t.isFallbackAdapter, true);
      assert.ok(t.features.includes('shader-f16'), 'lavapipe has shader-f16');
      assert.ok(t.features.includes('subgroups'), 'lavapipe has subgroups');
      assert.deepEqual([t.subgroupMinSize, t.subgroupMaxSize], [8, 8]);
      assert.deepEqual(t.subgroupMatrixConfigs, []);
    }
    // A Target is plain data: it survives JSON (it goes into bundles).
    assert.deepEqual(JSON.parse(JSON.stringify(t)), t);
  } finally {
    await gpu.destroy();
  }
  assert.throws(() => gpu.gpu, /destroyed/);
});

test('openDevice by adapter name, and a clear error when none matches', async () => {
  const first = await openDevice();
  const name = first.info.name;
  await first.destroy();
  const again = await openDevice({ adapter: name.toUpperCase() });
  assert.equal(again.info.description, first.info.description);
  await again.destroy();
  await assert.rejects(openDevice({ adapter: 'no-such-gpu-anywhere' }), (e: unknown) => e instanceof NoAdapterError && /no WebGPU adapter matches 'no-such-gpu-anywhere'; available: .+/.test(e.message));
});

test('dawn options: NVIDIA toggles always, timestamp quantisation off when profiling', () => {
  assert.deepEqual(dawnOptions({ backend: 'vulkan' }), ['backend=vulkan', 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia']);
  assert.deepEqual(dawnOptions({ profiling: true }), ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization']);
  // An experiment's toggles (scripts/tune-sgmat.mjs opens a second device with them), each once.
  assert.deepEqual(dawnOptions({ toggles: ['disable_robustness', 'allow_unsafe_apis'] }), ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness']);
  // Extra toggles for experiments on a lent GPU (scripts/device-check.sh).
  const saved = process.env.VISFT_DAWN_TOGGLES;
  process.env.VISFT_DAWN_TOGGLES = ' use_vulkan_memory_model, ';
  try {
    assert.deepEqual(dawnOptions({}), ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,use_vulkan_memory_model']);
  } finally {
    if (saved === undefined) delete process.env.VISFT_DAWN_TOGGLES;
    else process.env.VISFT_DAWN_TOGGLES = saved;
  }
  const a = { name: 'llvmpipe', vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm', description: 'llvmpipe: Mesa 25', isFallbackAdapter: true };
  assert.ok(adapterMatches(a, 'Mesa'));
  assert.ok(!adapterMatches(a, 'nvidia'));
});

test('withErrorScopes turns a validation error into a GpuError naming the operation', async () => {
  const gpu = await openDevice();
  try {
    await assert.rejects(
      withErrorScopes(gpu.device, "creating buffer 'bad'", () => gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.MAP_WRITE })),
      (e: unknown) => e instanceof GpuError && e.kind === 'validation' && /^GPU validation error while creating buffer 'bad': /.test(e.message),
    );
    const ok = await withErrorScopes(gpu.device, 'creating a buffer', () => gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE }));
    assert.equal(ok.size, 16);
    ok.destroy();
    assert.deepEqual(gpu.uncapturedErrors, []);
  } finally {
    await gpu.destroy();
  }
});

test('withErrorScopes reports out-of-memory as GpuOutOfMemoryError', async () => {
  // A stand-in device whose out-of-memory scope reports an error (real OOM is not reproducible on demand).
  const scopes: string[] = [];
  const fake = {
    pushErrorScope: (f: string) => scopes.push(f),
    popErrorScope: () => Promise.resolve(scopes.pop() === 'out-of-memory' ? ({ message: 'Out of memory allocating 8 GiB' } as GPUError) : null),
  } as unknown as GPUDevice;
  await assert.rejects(withErrorScopes(fake, "creating arena 0 'temps' (8.00 GiB)", () => 1), (e: unknown) => e instanceof GpuOutOfMemoryError && /out of GPU memory while creating arena 0 'temps' \(8\.00 GiB\): Out of memory/.test(e.message));
  assert.deepEqual(scopes, []);
});

test('f16 conversion: exact values, rounding to nearest even, subnormals, overflow', () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65520, 0x7c00], // rounds up to infinity
    [Infinity, 0x7c00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // tie to even (0)
    [3 * 2 ** -25, 0x0002], // tie to even (2)
    [1 + 2 ** -11, 0x3c00], // tie to even
    [1 + 3 * 2 ** -11, 0x3c02],
    [0.1, 0x2e66],
  ];
  for (const [x, h] of cases) assert.equal(f32ToF16Bits(x), h, `${x}`);
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
  for (let h = 0; h < 0x7c00; h += 7) assert.equal(f32ToF16Bits(f16BitsToF32(h)), h);
});
