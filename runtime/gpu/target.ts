// The codegen Target of a real adapter and device: features, subgroup sizes, subgroup-matrix configs and
// limits, all read from Dawn. Nothing here knows about any particular GPU.
import type { Target } from '../../compiler/codegen/types.js';
import { adapterName } from '../device/probe.js';
import { SUBGROUP_MATRIX_FEATURE } from '../../kernels/sgmat.js';

/** The limits codegen and the memory plan rely on (Target['limits'] keys); requested at the adapter's maximum. */
export const TARGET_LIMIT_KEYS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'minStorageBufferOffsetAlignment',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const satisfies readonly (keyof Target['limits'])[];


type SubgroupMatrixConfig = Target['subgroupMatrixConfigs'][number];

/** adapter.info as dawn.node fills it (fields beyond @webgpu/types). */
interface DawnAdapterInfo {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
  subgroupMatrixConfigs?: readonly { componentType: unknown; resultComponentType: unknown; M: unknown; N: unknown; K: unknown }[];
}

export function dawnInfo(adapter: GPUAdapter): DawnAdapterInfo {
  return (adapter.info ?? {}) as unknown as DawnAdapterInfo;
}

export function isFallbackAdapter(adapter: GPUAdapter): boolean {
  const legacy = (adapter as unknown as { isFallbackAdapter?: unknown }).isFallbackAdapter;
  return Boolean(dawnInfo(adapter).isFallbackAdapter ?? legacy ?? false);
}

/** A short display name: `llvmpipe`, `NVIDIA H100 80GB HBM3`. */
export function adapterDisplayName(adapter: GPUAdapter): string {
  const i = dawnInfo(adapter);
  return adapterName({
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description: i.description ?? '',
    isFallbackAdapter: isFallbackAdapter(adapter),
  });
}

/** Subgroup-matrix configs from adapter.info (Dawn, NVIDIA with allow_unsafe_apis), sorted, deduplicated. */
export function subgroupMatrixConfigs(adapter: GPUAdapter): SubgroupMatrixConfig[] {
  const raw = dawnInfo(adapter).subgroupMatrixConfigs ?? [];
  const seen = new Set<string>();
  const out: SubgroupMatrixConfig[] = [];
  for (const c of raw) {
    const cfg = { componentType: String(c.componentType), resultComponentType: String(c.resultComponentType), M: Number(c.M), N: Number(c.N), K: Number(c.K) };
    const key = `${cfg.componentType}/${cfg.resultComponentType}/${cfg.M}x${cfg.N}x${cfg.K}`;
    if (!seen.has(key)) (seen.add(key), out.push(cfg));
  }
  return out.sort((a, b) => a.componentType.localeCompare(b.componentType) || a.resultComponentType.localeCompare(b.resultComponentType) || b.M - a.M || b.N - a.N || b.K - a.K);
}

/**
 * The Target for code that runs on `device` (created from `adapter`): the device's features and limits (what
 * was actually granted), the adapter's subgroup sizes, and its subgroup-matrix configs when the device has the
 * subgroup-matrix feature. Without a device, the adapter's features and limits.
 */
export function targetFromAdapter(adapter: GPUAdapter, device?: GPUDevice): Target {
  const info = dawnInfo(adapter);
  const features = [...(device ?? adapter).features].map(String).sort();
  const src = (device ?? adapter).limits as unknown as Record<string, number>;
  const limits = Object.fromEntries(TARGET_LIMIT_KEYS.map((k) => [k, Number(src[k])])) as unknown as Target['limits'];
  const hasSubgroups = features.includes('subgroups');
  return {
    name: adapterDisplayName(adapter),
    isFallbackAdapter: isFallbackAdapter(adapter),
    features,
    // Without subgroups the sizes mean nothing; keep WebGPU's bounds so nothing relies on them.
    subgroupMinSize: hasSubgroups && info.subgroupMinSize ? info.subgroupMinSize : 4,
    subgroupMaxSize: hasSubgroups && info.subgroupMaxSize ? info.subgroupMaxSize : 128,
    subgroupMatrixConfigs: features.includes(SUBGROUP_MATRIX_FEATURE) ? subgroupMatrixConfigs(adapter) : [],
    limits,
  };
}
