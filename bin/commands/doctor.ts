// `visft doctor`: which WebGPU adapter visft would use (opened as visft opens it: toggles, features, limits),
// the Target codegen gets from it, whether it runs a dispatch, and what to install when there is none.
import { sgmatShape } from '../../kernels/sgmat.js';
import type { Target } from '../../compiler/codegen/types.js';
import { defaultBackend, testDispatch } from '../../runtime/device/probe.js';
import { dawnAdapterList, dawnToggles, openDevice, type AdapterDescription, type GpuDevice } from '../../runtime/gpu/device.js';
import { errorMessage } from '../../runtime/gpu/errors.js';
import { describeProfile, profileSummary, TuningProfileError } from '../../runtime/tune/profile.js';

export interface DoctorOptions {
  json?: boolean;
  /** Substring of the adapter's name to pick (multi-GPU machines). */
  adapter?: string;
  backend?: string;
  /** auto, none, or a tuning profile file. */
  tuning?: string;
}

export interface DoctorReport {
  ok: boolean;
  backend?: string;
  /** The Dawn toggles the device was opened with. */
  toggles?: string[];
  adapter?: AdapterDescription;
  /** Adapters Dawn lists for the backend (name and backend). */
  adapters?: { backend: string; name: string }[];
  target?: Target;
  /** Why tensor cores are off although the adapter lists subgroup matrices. */
  tensorCoresOff?: string;
  /** Why the tuning profile could not be applied (the rest of the report is without one). */
  tuningError?: string;
  /** The tuning profile applied (its file, when it was measured, what it adopted), if one was. */
  tuning?: { file: string; created: string; adopted: readonly string[] };
  verified?: boolean;
  error?: string;
  hint?: string;
}

const KEY_LIMITS: (keyof Target['limits'])[] = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'minStorageBufferOffsetAlignment',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
];

export async function doctorReport(opts: DoctorOptions = {}): Promise<DoctorReport> {
  const backend = opts.backend ?? defaultBackend();
  const report: DoctorReport = { ok: false };
  if (backend !== undefined) report.backend = backend;
  // The toggles it opens devices with, known even when none opens.
  report.toggles = dawnToggles();
  let gpu: GpuDevice | undefined;
  try {
    const open = (tuning?: string) => openDevice({ ...(backend !== undefined ? { backend } : {}), ...(opts.adapter ? { adapter: opts.adapter } : {}), ...(tuning ? { tuning } : {}) });
    try {
      gpu = await open(opts.tuning);
    } catch (e) {
      if (!(e instanceof TuningProfileError)) throw e;
      // The adapter is fine: say what is wrong with the profile and examine the rest without it.
      report.tuningError = e.message;
      gpu = await open('none');
    }
    report.adapter = gpu.info;
    report.target = gpu.target;
    if (gpu.tensorCoresOff) report.tensorCoresOff = gpu.tensorCoresOff;
    report.toggles = [...gpu.toggles];
    const tp = gpu.tuningProfile;
    if (tp) report.tuning = profileSummary(tp);
    const error = await testDispatch(gpu.device);
    if (error) report.error = error;
    else report.verified = true;
    report.ok = !error && !report.tuningError;
  } catch (e) {
    report.error = errorMessage(e);
    const hint = (e as { hint?: unknown }).hint;
    report.hint = typeof hint === 'string' ? hint : installHint();
  } finally {
    await gpu?.destroy();
  }
  try {
    report.adapters = await dawnAdapterList(backend);
  } catch {
    // Listing is a courtesy.
  }
  return report;
}

export async function runDoctor(opts: DoctorOptions): Promise<number> {
  const r = await doctorReport(opts);
  if (opts.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return r.ok ? 0 : 1;
  }
  const w = (s: string) => process.stdout.write(s + '\n');
  if (r.adapter && r.target) {
    const a = r.adapter;
    const t = r.target;
    w(`adapter: ${a.description || a.device || a.vendor} (${[a.vendor, a.architecture].filter(Boolean).join(', ')})`);
    w(`software adapter: ${a.isFallbackAdapter ? 'yes (correct but slow; numbers from it are not speed claims)' : 'no'}`);
    w(`backend: ${r.backend ?? 'default'}`);
    const toggles = r.toggles ?? [];
    // Timings depend on it: Dawn's robustness transform clamps every array index in the shaders.
    const robust = toggles.includes('disable_robustness') ? 'off' : 'on (Dawn clamps array indices in shaders; VISFT_DAWN_TOGGLES=disable_robustness turns it off)';
    w(`dawn toggles: ${toggles.join(', ')}; shader robustness ${robust}`);
    const tp = r.tuning;
    if (r.tuningError) w(`tuning profile: ERROR: ${r.tuningError}`);
    else w(`tuning profile: ${tp ? describeProfile(tp) : 'none for this adapter (`visft tune` measures one)'}`);
    w(`features: ${t.features.join(', ') || 'none'}`);
    w(`subgroups: ${t.features.includes('subgroups') ? `sizes ${t.subgroupMinSize}..${t.subgroupMaxSize}` : 'not available'}`);
    w(`subgroup matrices: ${t.subgroupMatrixConfigs.length ? t.subgroupMatrixConfigs.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`).join(', ') : 'none'}`);
    const sg = sgmatShape(t);
    const off = r.tensorCoresOff ? `no: the adapter lists subgroup matrices, but ${r.tensorCoresOff}` : 'no (f16 products run on the f32 tiles)';
    w(`tensor cores: ${sg ? `yes, f16 ${sg.m}x${sg.n}x${sg.k} (matmuls and flash attention of f16 values; builtins in Dawn's ${t.subgroupMatrixSpelling === 'argument' ? 'first (bool layout argument)' : 'current (layout template argument)'} spelling)` : off}`);
    w('limits:');
    for (const k of KEY_LIMITS) w(`  ${k}: ${t.limits[k]}`);
    if (r.adapters && r.adapters.length > 1) w(`other adapters: ${r.adapters.map((x) => `${x.name} (${x.backend})`).join('; ')} (pick one with --adapter NAME)`);
    w(`test dispatch: ${r.verified ? 'ok' : `failed: ${r.error ?? 'unknown error'}`}`);
    return r.ok ? 0 : 1;
  }
  w(`no working WebGPU adapter: ${r.error ?? 'unknown reason'}`);
  w(r.hint ?? installHint());
  return 1;
}

function installHint(): string {
  if (process.platform === 'linux') {
    return 'install a Vulkan driver: on Debian 12, Mesa 25 from bookworm-backports (`apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`), or run scripts/setup.sh which does it';
  }
  if (process.platform === 'darwin') return 'macOS uses Metal: update macOS and make sure the `webgpu` npm package installed its darwin build';
  return 'Windows uses D3D12: update the GPU driver';
}
