// Named Targets for compiling without the device at hand (`visft compile --target NAME`): what a kernel schedule,
// its tiles and its memory plan will be on that GPU, and whether it fits, before any GPU time is spent. Each is
// what Dawn reports for that adapter with visft's toggles (../shared/docs/webgpu.md); on a machine that has the
// GPU, the runtime reads the real Target from the adapter instead (runtime/gpu/target.ts).
import { SUBGROUP_MATRIX_FEATURE } from '../../kernels/sgmat.js';
import { PORTABLE_TARGET, type Target } from './types.js';

const f16Configs = (shapes: readonly [number, number, number][]): Target['subgroupMatrixConfigs'] =>
  shapes.flatMap(([M, N, K]) => [
    { componentType: 'f16', resultComponentType: 'f16', M, N, K },
    { componentType: 'f16', resultComponentType: 'f32', M, N, K },
  ]);

/**
 * NVIDIA H100/H200 through Dawn on Vulkan with allow_unsafe_apis and vulkan_enable_f16_on_nvidia: features, subgroup
 * size, configs, workgroup memory, invocations and binding size as measured (webgpu.md); the buffer size and offset
 * alignment are WebGPU-conservative where unmeasured (a plan that fits them fits the GPU).
 */
const NVIDIA_HOPPER: Omit<Target, 'name'> = {
  isFallbackAdapter: false,
  features: ['shader-f16', 'subgroups', 'subgroups-f16', 'subgroup-size-control', 'timestamp-query', SUBGROUP_MATRIX_FEATURE],
  subgroupMinSize: 32,
  subgroupMaxSize: 32,
  subgroupMatrixConfigs: f16Configs([
    [16, 16, 16],
    [16, 8, 16],
    [16, 8, 8],
  ]),
  limits: {
    maxStorageBufferBindingSize: 2 ** 31 - 4,
    maxBufferSize: 2 ** 31 - 4,
    minStorageBufferOffsetAlignment: 256,
    maxComputeWorkgroupStorageSize: 49152,
    maxComputeInvocationsPerWorkgroup: 1024,
    maxComputeWorkgroupSizeX: 1024,
    maxComputeWorkgroupSizeY: 1024,
    maxComputeWorkgroupSizeZ: 64,
    maxComputeWorkgroupsPerDimension: 65535,
    maxStorageBuffersPerShaderStage: 10,
  },
};

/** Mesa lavapipe (Mesa 25, as read from the adapter here), the software adapter of machines without a GPU. */
const LAVAPIPE: Target = {
  name: 'lavapipe',
  isFallbackAdapter: true,
  features: ['shader-f16', 'subgroups', 'subgroup-size-control', 'timestamp-query'],
  subgroupMinSize: 8,
  subgroupMaxSize: 8,
  subgroupMatrixConfigs: [],
  limits: {
    maxStorageBufferBindingSize: 134217728,
    maxBufferSize: 2 ** 32 - 1,
    minStorageBufferOffsetAlignment: 16,
    maxComputeWorkgroupStorageSize: 32768,
    maxComputeInvocationsPerWorkgroup: 1024,
    maxComputeWorkgroupSizeX: 1024,
    maxComputeWorkgroupSizeY: 1024,
    maxComputeWorkgroupSizeZ: 1024,
    maxComputeWorkgroupsPerDimension: 65535,
    maxStorageBuffersPerShaderStage: 16,
  },
};

export const TARGETS: Readonly<Record<string, Target>> = {
  portable: PORTABLE_TARGET,
  lavapipe: LAVAPIPE,
  'nvidia-h100': { name: 'nvidia-h100', ...NVIDIA_HOPPER },
  'nvidia-h200': { name: 'nvidia-h200', ...NVIDIA_HOPPER },
};

/** Limits where a smaller value is the more capable device. */
const SMALLER_IS_MORE: ReadonlySet<keyof Target['limits']> = new Set(['minStorageBufferOffsetAlignment']);

/**
 * What `device` lacks to run kernels generated for `compiled` as they are (empty: it can): features, subgroup
 * sizes outside the range the kernels assumed, subgroup-matrix configs or their spelling, and limits.
 */
export function targetShortfalls(device: Target, compiled: Target): string[] {
  const missing = compiled.features.filter((f) => !device.features.includes(f)).map((f) => `feature ${f}`);
  if (compiled.features.includes('subgroups') && (device.subgroupMinSize < compiled.subgroupMinSize || device.subgroupMaxSize > compiled.subgroupMaxSize)) {
    missing.push(`subgroup size ${compiled.subgroupMinSize}-${compiled.subgroupMaxSize} (it has ${device.subgroupMinSize}-${device.subgroupMaxSize})`);
  }
  const key = (c: Target['subgroupMatrixConfigs'][number]) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`;
  const has = new Set(device.subgroupMatrixConfigs.map(key));
  missing.push(...compiled.subgroupMatrixConfigs.map(key).filter((k) => !has.has(k)).map((k) => `subgroup matrix ${k}`));
  if (compiled.subgroupMatrixConfigs.length && (device.subgroupMatrixSpelling ?? 'template') !== (compiled.subgroupMatrixSpelling ?? 'template')) {
    missing.push(`subgroup-matrix spelling '${compiled.subgroupMatrixSpelling ?? 'template'}' (it takes '${device.subgroupMatrixSpelling ?? 'template'}')`);
  }
  for (const [k, want] of Object.entries(compiled.limits) as [keyof Target['limits'], number][]) {
    const got = device.limits[k];
    if (SMALLER_IS_MORE.has(k) ? got > want : got < want) missing.push(`${k} ${want} (it has ${got})`);
  }
  return missing;
}
