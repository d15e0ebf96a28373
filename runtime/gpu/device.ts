// Opening a WebGPU device through Dawn (npm `webgpu`): the toggles that unlock f16 and subgroup matrices on
// NVIDIA, adapter selection, every useful feature and the adapter's maximum limits, device-loss tracking, and
// an orderly shutdown (the GPU object stays referenced until the device is gone: a collected GPU object with
// work in flight, e.g. a cold Mesa shader cache, crashes dawn.node; a device left alive keeps Node running).
import type { Target } from '../../compiler/codegen/types.js';
import { defaultBackend, withTimeout } from '../device/probe.js';
import { errorMessage, GpuDeviceLostError, GpuError } from './errors.js';
import { adapterDisplayName, dawnInfo, isFallbackAdapter, TARGET_LIMIT_KEYS, targetFromAdapter } from './target.js';
import { probeTensorCores } from './tensor-core-probe.js';
import { findProfile, profileAdapter, type LoadedProfile } from '../tune/profile.js';

export interface OpenDeviceOptions {
  /** Pick the adapter whose description, device, vendor or architecture contains this (case-insensitive). */
  adapter?: string;
  /** Dawn backend: vulkan (default on Linux), metal, d3d12, opengl, opengles, null. */
  backend?: string;
  /** Profiling: exact timestamps (Dawn's timestamp quantisation off). */
  profiling?: boolean;
  /** Give up on adapter and device requests after this many milliseconds (default 60000). */
  timeoutMs?: number;
  /**
   * Dawn toggles on top of visft's (an experiment's, e.g. `disable_robustness`: no index clamping in the shaders;
   * scripts/tune-sgmat.mjs times a second device opened with it against the first).
   */
  toggles?: readonly string[];
  /**
   * The tuning profile (runtime/tune/profile.ts): 'auto' (the one measured on this adapter, if any), 'none', or a
   * file. Default: $VISFT_TUNING, else 'auto'.
   */
  tuning?: string;
  /** Kernel choices over the profile's (or the defaults', without one): an experiment's, e.g. `visft profile --set`. */
  tuningSet?: Target['tuning'];
}

export interface AdapterDescription {
  /** Short display name (`llvmpipe`). */
  readonly name: string;
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly isFallbackAdapter: boolean;
}

/** Features requested whenever the adapter has them. */
export const WANTED_FEATURES = [
  'shader-f16',
  'subgroups',
  'subgroups-f16',
  'subgroup-size-control',
  'timestamp-query',
  'chromium-experimental-timestamp-query-inside-passes',
  'chromium-experimental-subgroup-matrix',
] as const;

export const DAWN_TOGGLES = ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia'] as const;

export class NoAdapterError extends GpuError {
  override name = 'NoAdapterError';
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message, 'opening the GPU', 'internal');
  }
}

/** The Dawn toggles a device is opened with: visft's, then `toggles`, then VISFT_DAWN_TOGGLES's, each once. */
export function dawnToggles(toggles: readonly string[] = []): string[] {
  // VISFT_DAWN_TOGGLES adds toggles (comma-separated) for experiments on a lent GPU, e.g. use_vulkan_memory_model,
  // which Dawn's own subgroup-matrix tests enable on Vulkan, or disable_robustness.
  const extra = (process.env.VISFT_DAWN_TOGGLES ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  return [...new Set([...DAWN_TOGGLES, ...toggles, ...extra])];
}

/** The Dawn `create` options for a backend and profiling choice. */
export function dawnOptions(o: { backend?: string; profiling?: boolean; adapter?: string; toggles?: readonly string[] } = {}): string[] {
  const flags: string[] = [];
  if (o.backend) flags.push(`backend=${o.backend}`);
  if (o.adapter) flags.push(`adapter=${o.adapter}`);
  flags.push(`enable-dawn-features=${dawnToggles(o.toggles).join(',')}`);
  if (o.profiling) flags.push('disable-dawn-features=timestamp_quantization');
  return flags;
}

let webgpuModule: typeof import('webgpu') | undefined;

async function loadWebGPU(): Promise<typeof import('webgpu')> {
  if (!webgpuModule) {
    try {
      webgpuModule = await import('webgpu');
    } catch (e) {
      throw new NoAdapterError(`cannot load the 'webgpu' package (Dawn's native module): ${errorMessage(e)}`);
    }
    // GPUBufferUsage, GPUMapMode, GPUShaderStage, ... (never navigator: read-only on Node 21+).
    Object.assign(globalThis, webgpuModule.globals);
  }
  return webgpuModule;
}


export function describeAdapter(adapter: GPUAdapter): AdapterDescription {
  const i = dawnInfo(adapter);
  return {
    name: adapterDisplayName(adapter),
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description: i.description ?? '',
    isFallbackAdapter: isFallbackAdapter(adapter),
  };
}

const sameAdapter = (a: AdapterDescription, b: AdapterDescription): boolean =>
  a.vendor === b.vendor && a.architecture === b.architecture && a.device === b.device && a.description === b.description && a.isFallbackAdapter === b.isFallbackAdapter;

export function adapterMatches(a: AdapterDescription, query: string): boolean {
  const q = query.toLowerCase();
  return [a.description, a.device, a.vendor, a.architecture, a.name].some((s) => s.toLowerCase().includes(q));
}

function driverHint(backend: string | undefined): string | undefined {
  if (process.platform === 'linux' && (backend === undefined || backend === 'vulkan')) {
    return 'on a machine without a GPU, install the Vulkan loader and Mesa >= 25 lavapipe; `bash scripts/setup.sh` does this on Debian and Ubuntu';
  }
  return undefined;
}

/** Adapters Dawn's own enumeration lists for a backend (`{ backend, name }`), parsed from dawn.node. */
export async function dawnAdapterList(backend: string | undefined = defaultBackend(), timeoutMs = 30_000): Promise<{ backend: string; name: string }[]> {
  const mod = await loadWebGPU();
  // dawn.node lists every adapter when asked for one that does not exist.
  let gpu: GPU | undefined = mod.create(dawnOptions({ backend, adapter: '\u0001visft: list adapters' }));
  try {
    const a = await withTimeout(gpu.requestAdapter(), timeoutMs, 'requestAdapter');
    return a ? [{ backend: backend ?? '', name: describeAdapter(a).description }] : [];
  } catch (e) {
    const out: { backend: string; name: string }[] = [];
    for (const m of errorMessage(e).matchAll(/\*\s*backend:\s*'([^']*)',\s*name:\s*'([^']*)'/g)) out.push({ backend: m[1], name: m[2] });
    return out;
  } finally {
    gpu = undefined;
  }
}

/** A device opened by openDevice. Keeps the GPU object alive until destroy() has finished. */
export class GpuDevice {
  /** What codegen targets: read from the adapter; without subgroup matrices when they failed to compile here. */
  target: Target;
  /** Why tensor cores are off although the adapter lists subgroup matrices (tensorCoreProblem), if they are. */
  tensorCoresOff?: string;
  /** The Dawn toggles the device was opened with (timings depend on them: shader robustness is one). */
  toggles: readonly string[] = [];
  /** The tuning profile applied: its Target.tuning is in `target`, its toggles in `toggles`. */
  tuningProfile?: LoadedProfile;
  readonly info: AdapterDescription;
  readonly lost: Promise<GPUDeviceLostInfo>;
  /** Uncaptured GPU errors (everything visft does runs in error scopes, so these point at a bug). */
  readonly uncapturedErrors: string[] = [];
  private gpuRef: GPU | null;
  private lostInfo: GPUDeviceLostInfo | undefined;
  private destroying = false;

  constructor(
    gpu: GPU,
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly backend: string | undefined,
    readonly profiling: boolean,
  ) {
    this.gpuRef = gpu;
    this.info = describeAdapter(adapter);
    this.target = targetFromAdapter(adapter, device);
    this.lost = device.lost.then((info) => {
      this.lostInfo = info;
      return info;
    });
    device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      this.uncapturedErrors.push(ev.error.message);
    };
  }

  /** The Dawn GPU object; throws after destroy(). */
  get gpu(): GPU {
    if (!this.gpuRef) throw new GpuDeviceLostError('the GPU device was destroyed', 'using the GPU', 'destroyed');
    return this.gpuRef;
  }

  get isLost(): boolean {
    return this.lostInfo !== undefined || this.destroying;
  }

  /** The error to report for a lost (or destroyed) device, undefined while it is alive. */
  lostError(what = 'using the GPU'): GpuDeviceLostError | undefined {
    if (this.destroying || this.lostInfo?.reason === 'destroyed') {
      return new GpuDeviceLostError(`the GPU device (${this.info.name}) was destroyed; open a new one`, what, 'destroyed');
    }
    if (!this.lostInfo) return undefined;
    const m = this.lostInfo.message.trim();
    return new GpuDeviceLostError(
      `the GPU device (${this.info.name}) was lost while ${what}${m ? `: ${m}` : ''} (a driver reset, a kernel that ran too long, or the GPU went away); open a new device and run again`,
      what,
      this.lostInfo.reason,
    );
  }

  /** Throws GpuDeviceLostError when the device is lost or destroyed. */
  checkAlive(what?: string): void {
    const e = this.lostError(what);
    if (e) throw e;
  }

  /** Resolves with `p`, or rejects with GpuDeviceLostError as soon as the device is lost. */
  async whileAlive<T>(p: Promise<T>, what: string): Promise<T> {
    this.checkAlive(what);
    const lost = this.lost.then(() => {
      throw this.lostError(what)!;
    });
    lost.catch(() => undefined);
    return Promise.race([p, lost]);
  }

  /** Waits for queued work, destroys the device, waits for Dawn to confirm, then drops the GPU object. */
  async destroy(timeoutMs = 10_000): Promise<void> {
    if (this.destroying) return;
    this.destroying = true;
    try {
      if (!this.lostInfo) await withTimeout(this.device.queue.onSubmittedWorkDone(), timeoutMs, 'onSubmittedWorkDone');
    } catch {
      // A lost or wedged device: destroy it anyway.
    }
    try {
      this.device.destroy();
      await withTimeout(this.lost, timeoutMs, 'device.lost');
    } catch {
      // Shutdown must not throw.
    }
    this.device.onuncapturederror = null;
    this.gpuRef = null;
  }
}

/**
 * Opens a device: the GPU with visft's toggles, an adapter (by name, else high-performance, else low-power),
 * and a device with every useful feature the adapter has and its maximum limits for the Target's keys.
 * Throws NoAdapterError (with a hint) when there is no adapter or none matches.
 */
export async function openDevice(options: OpenDeviceOptions = {}): Promise<GpuDevice> {
  const mod = await loadWebGPU();
  const backend = options.backend ?? defaultBackend();
  const timeoutMs = options.timeoutMs ?? 60_000;
  const profiling = options.profiling ?? false;
  const make = (adapterName?: string): GPU => {
    try {
      return mod.create(dawnOptions({ backend, profiling, toggles: options.toggles, ...(adapterName ? { adapter: adapterName } : {}) }));
    } catch (e) {
      throw new NoAdapterError(`cannot create the WebGPU instance${backend ? ` (backend=${backend})` : ''}: ${errorMessage(e)}`);
    }
  };

  let gpu: GPU | undefined = make();
  const candidates: GPUAdapter[] = [];
  const failures: string[] = [];
  for (const powerPreference of ['high-performance', 'low-power'] as const) {
    try {
      const a = await withTimeout(gpu.requestAdapter({ powerPreference }), timeoutMs, 'requestAdapter');
      if (a && !candidates.some((c) => sameAdapter(describeAdapter(c), describeAdapter(a)))) candidates.push(a);
    } catch (e) {
      failures.push(errorMessage(e).split('\n')[0]);
    }
  }

  let adapter: GPUAdapter | undefined;
  if (options.adapter) {
    adapter = candidates.find((a) => adapterMatches(describeAdapter(a), options.adapter!));
    if (!adapter) {
      // Dawn's own enumeration sees every adapter, not just the two preferred ones.
      const byName = make(options.adapter);
      try {
        const a = await withTimeout(byName.requestAdapter({ powerPreference: 'high-performance' }), timeoutMs, 'requestAdapter');
        if (a) (adapter = a), (gpu = byName);
      } catch {
        // Listed below.
      }
    }
    if (!adapter) {
      const known = candidates.map((a) => describeAdapter(a).description || describeAdapter(a).name);
      for (const d of await dawnAdapterList(backend).catch(() => [])) if (!known.some((k) => k.includes(d.name) || d.name.includes(k))) known.push(`${d.name} (${d.backend})`);
      throw new NoAdapterError(`no WebGPU adapter matches '${options.adapter}'; available: ${known.length ? known.join('; ') : 'none'}`, driverHint(backend));
    }
  } else {
    adapter = candidates[0];
  }
  if (!adapter) {
    throw new NoAdapterError(`no WebGPU adapter${backend ? ` for backend=${backend}` : ''}${failures.length ? `: ${failures.join('; ')}` : ''}`, driverHint(backend));
  }

  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const adapterLimits = adapter.limits as unknown as Record<string, number>;
  const requiredLimits: Record<string, number> = {};
  for (const k of TARGET_LIMIT_KEYS) if (typeof adapterLimits[k] === 'number') requiredLimits[k] = adapterLimits[k];
  let device: GPUDevice;
  try {
    device = await withTimeout(adapter.requestDevice({ label: 'visft', requiredFeatures, requiredLimits }), timeoutMs, 'requestDevice');
  } catch (e) {
    throw new NoAdapterError(`requestDevice on ${describeAdapter(adapter).name} failed: ${errorMessage(e)}`);
  }
  const opened = new GpuDevice(gpu, adapter, device, backend, profiling);
  opened.toggles = dawnToggles(options.toggles);
  let loaded: LoadedProfile | undefined;
  try {
    loaded = findProfile(profileAdapter(opened.info, backend), options.tuning);
  } catch (e) {
    await opened.destroy();
    throw e;
  }
  const wanted = loaded?.profile.toggles.filter((t) => !opened.toggles.includes(t)) ?? [];
  if (loaded && wanted.length) {
    // Toggles are the instance's: open again with the profile's, and this very profile (so this is the last time).
    await opened.destroy();
    return openDevice({ ...options, toggles: [...(options.toggles ?? []), ...wanted], tuning: loaded.file, adapter: options.adapter ?? (opened.info.description || undefined) });
  }
  if (loaded) opened.tuningProfile = loaded;
  const tuning = { ...(loaded?.profile.tuning ?? {}), ...(options.tuningSet ?? {}) };
  if (Object.keys(tuning).length) opened.target = { ...opened.target, tuning };
  const probe = await probeTensorCores(device, opened.target);
  if (probe && 'problem' in probe) {
    opened.target = { ...opened.target, subgroupMatrixConfigs: [] };
    opened.tensorCoresOff = probe.problem;
  } else if (probe) opened.target = { ...opened.target, subgroupMatrixSpelling: probe.spelling };
  return opened;
}
