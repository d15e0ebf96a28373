// Probe whether this machine has a working WebGPU adapter through Dawn's npm package `webgpu`.
//
// The probe loads the native module, requests an adapter and a device, runs one tiny compute dispatch,
// reads the result back and checks it, then destroys the device so the process can exit.
// It never throws: every failure becomes `{ ok: false, error }`.

export interface ProbeAdapterInfo {
  /** A short display name: the driver's description up to its first ': ' (e.g. "llvmpipe"), else device. */
  name: string;
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
}

export interface ProbeResult {
  /** True when an adapter and device were obtained and the test dispatch returned the right values. */
  ok: boolean;
  /** The Dawn backend that was requested (e.g. "vulkan"); absent when Dawn chose by itself. */
  backend?: string;
  adapter?: ProbeAdapterInfo;
  features?: string[];
  /** True when the compute dispatch's output was read back and matched the expected values. */
  verified?: boolean;
  error?: string;
  /** What to do about the error, when known (e.g. which driver to install). */
  hint?: string;
}

export interface ProbeOptions {
  /** Dawn backend: "vulkan" (default on Linux), "metal", "d3d12", "opengl", "opengles", "null". */
  backend?: string;
  /** Give up after this many milliseconds (default 60000). */
  timeoutMs?: number;
}

/** The backend the probe asks for when none is given: Vulkan on Linux, Dawn's own choice elsewhere. */
export function defaultBackend(platform: NodeJS.Platform = process.platform): string | undefined {
  return platform === 'linux' ? 'vulkan' : undefined;
}

const N = 64;

const SHADER = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> data: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i < arrayLength(&data)) {
    data[i] = data[i] * 2.0 + f32(i);
  }
}
`;

function input(i: number): number {
  // Exactly representable in f32, and so is 2*x + i.
  return 1.5 + 0.25 * i;
}

let globalsInstalled = false;

function message(e: unknown): string {
  const m = e instanceof Error ? e.message || e.name : String(e);
  // Dawn's messages can span lines; keep the error one line so it prints as one.
  return m.replace(/\s*\n\s*/g, ' ').trim();
}

/** Rejects when `p` has not settled within `ms` (dawn.node can hang on a broken driver). */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

function driverHint(backend: string | undefined): string | undefined {
  if (process.platform === 'linux' && (backend === undefined || backend === 'vulkan')) {
    return 'on a machine without a GPU, install the Vulkan loader and Mesa >= 25 lavapipe; `bash scripts/setup.sh` does this on Debian and Ubuntu';
  }
  return undefined;
}

/** Probe for a working WebGPU adapter. Never throws. */
export async function probeWebGPU(options: ProbeOptions = {}): Promise<ProbeResult> {
  const backend = options.backend ?? defaultBackend();
  const timeoutMs = options.timeoutMs ?? 60_000;
  const result: ProbeResult = { ok: false };
  if (backend !== undefined) result.backend = backend;

  // The GPU instance must outlive the device: if it is garbage-collected while Dawn or the driver still has
  // work in flight (e.g. lavapipe compiling a shader with a cold Mesa cache), dawn.node crashes the process.
  let gpu: GPU | undefined;
  let device: GPUDevice | undefined;
  try {
    let mod: typeof import('webgpu');
    try {
      mod = await import('webgpu');
    } catch (e) {
      result.error = `cannot load the 'webgpu' package (Dawn's native module): ${message(e)}`;
      return result;
    }
    if (!globalsInstalled) {
      // Installs GPUBufferUsage, GPUMapMode, GPUShaderStage, ... Never touches navigator.
      Object.assign(globalThis, mod.globals);
      globalsInstalled = true;
    }

    try {
      gpu = mod.create(backend !== undefined ? [`backend=${backend}`] : []);
    } catch (e) {
      result.error = `cannot create the WebGPU instance: ${message(e)}`;
      return result;
    }

    let adapter: GPUAdapter | null;
    try {
      adapter = await withTimeout(gpu.requestAdapter(), timeoutMs, 'requestAdapter');
    } catch (e) {
      result.error = `requestAdapter failed: ${message(e)}`;
      return result;
    }
    if (!adapter) {
      result.error = `no adapter${backend !== undefined ? ` for backend=${backend}` : ''}`;
      const hint = driverHint(backend);
      if (hint) result.hint = hint;
      return result;
    }

    const info = adapter.info;
    const legacyFallback = (adapter as unknown as { isFallbackAdapter?: unknown }).isFallbackAdapter;
    result.adapter = {
      name: '',
      vendor: info?.vendor ?? '',
      architecture: info?.architecture ?? '',
      device: info?.device ?? '',
      description: info?.description ?? '',
      isFallbackAdapter: Boolean(info?.isFallbackAdapter ?? legacyFallback ?? false),
    };
    result.adapter.name = adapterName(result.adapter);
    result.features = [...adapter.features].map(String).sort();

    try {
      device = await withTimeout(adapter.requestDevice(), timeoutMs, 'requestDevice');
    } catch (e) {
      result.error = `requestDevice failed: ${message(e)}`;
      return result;
    }
    let lost: string | undefined;
    device.lost.then(
      (l) => {
        if (l.reason !== 'destroyed') lost = `device lost (${l.reason}): ${l.message}`;
      },
      () => undefined,
    );

    const error = await testDispatch(device, timeoutMs);
    if (lost || error) {
      result.error = lost ?? error;
      return result;
    }
    result.verified = true;
    result.ok = true;
    return result;
  } catch (e) {
    result.error = `WebGPU probe failed: ${message(e)}`;
    return result;
  } finally {
    await shutdown(device, [], Math.min(timeoutMs, 10_000));
    // Read after the last await so that the instance stays reachable until the device is gone.
    if (gpu === null) result.error = 'unreachable';
  }
}

/**
 * Runs the probe's compute dispatch on an open device (64 values, `x * 2 + i`) and checks what comes back.
 * Returns undefined when it verified, else what went wrong. Never throws; frees its buffers.
 */
export async function testDispatch(device: GPUDevice, timeoutMs = 60_000): Promise<string | undefined> {
  let buffer: GPUBuffer | undefined;
  let readback: GPUBuffer | undefined;
  try {
    device.pushErrorScope('validation');
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('internal');

    const bytes = N * 4;
    buffer = device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const data = new Float32Array(N);
    for (let i = 0; i < N; i++) data[i] = input(i);
    device.queue.writeBuffer(buffer, 0, data);

    const module = device.createShaderModule({ code: SHADER });
    const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer } }],
    });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(Math.ceil(N / 64));
    pass.end();
    encoder.copyBufferToBuffer(buffer, 0, readback, 0, bytes);
    device.queue.submit([encoder.finish()]);

    const errors: string[] = [];
    for (let k = 0; k < 3; k++) {
      const err = await withTimeout(device.popErrorScope(), timeoutMs, 'popErrorScope');
      if (err) errors.push(err.message);
    }
    if (errors.length > 0) return `the test dispatch raised GPU errors: ${errors.map((e) => message(e)).join('; ')}`;

    await withTimeout(readback.mapAsync(GPUMapMode.READ), timeoutMs, 'reading back the test dispatch');
    const out = new Float32Array(readback.getMappedRange().slice(0));
    readback.unmap();

    for (let i = 0; i < N; i++) {
      const want = 2 * input(i) + i;
      if (out[i] !== want) return `the test dispatch returned a wrong value at index ${i}: got ${out[i]}, expected ${want}`;
    }
    return undefined;
  } catch (e) {
    return `the test dispatch failed: ${message(e)}`;
  } finally {
    buffer?.destroy();
    readback?.destroy();
  }
}

/** Wait for queued work, destroy buffers and device, and wait for Dawn to report the device lost. Never throws. */
async function shutdown(device: GPUDevice | undefined, buffers: (GPUBuffer | undefined)[], ms: number): Promise<void> {
  if (!device) return;
  try {
    await withTimeout(device.queue.onSubmittedWorkDone(), ms, 'onSubmittedWorkDone');
  } catch {
    // A lost or broken device: destroy it anyway.
  }
  try {
    for (const b of buffers) b?.destroy();
    device.destroy();
    await withTimeout(device.lost, ms, 'device.lost');
  } catch {
    // Cleanup must not turn a result into a throw.
  }
}

/** A short display name for an adapter, e.g. "llvmpipe" for "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)". */
export function adapterName(a: Omit<ProbeAdapterInfo, 'name'>): string {
  const d = a.description.split(': ')[0].trim();
  return d || a.device || a.architecture || a.vendor || 'unnamed adapter';
}

/** One human line describing a probe result, e.g. `webgpu: ok (llvmpipe, software adapter, vulkan)`. */
export function describeProbe(r: ProbeResult): string {
  if (!r.ok) return `webgpu: no working adapter: ${r.error ?? 'unknown error'}${r.hint ? ` (${r.hint})` : ''}`;
  const a = r.adapter;
  const name = a ? a.name || adapterName(a) : 'unnamed adapter';
  const parts = [name, a?.isFallbackAdapter ? 'software adapter' : 'hardware adapter'];
  if (r.backend) parts.push(r.backend);
  return `webgpu: ok (${parts.join(', ')})`;
}
