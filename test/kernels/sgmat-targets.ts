// Targets for the subgroup-matrix kernel tests (kernels/sgmat.ts and its users). lavapipe has no subgroup matrices:
// a Target that lists configs without the feature gets the emulated spelling, which runs there; on a GPU with the
// feature the same tests run natively (deviceSgmatTarget).
import type { Target } from '../../compiler/codegen/types.js';
import { SUBGROUP_MATRIX_FEATURE } from '../../kernels/sgmat.js';

export type Config = { M: number; N: number; K: number };

/** `t` with exactly these f16 x f16 -> f32 configs. */
export const withConfigs = (t: Target, configs: Config[], name: string): Target => ({
  ...t,
  name: `${t.name}+${name}`,
  subgroupMatrixConfigs: configs.map((c) => ({ componentType: 'f16', resultComponentType: 'f32', ...c })),
});

const LIMITS: Target['limits'] = {
  maxStorageBufferBindingSize: 2 ** 31 - 4,
  maxBufferSize: 2 ** 32 - 1,
  minStorageBufferOffsetAlignment: 256,
  maxComputeWorkgroupStorageSize: 49152,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxComputeWorkgroupSizeX: 1024,
  maxComputeWorkgroupSizeY: 1024,
  maxComputeWorkgroupSizeZ: 64,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBuffersPerShaderStage: 10,
};

/** An H100 as Dawn reports it with visft's toggles: the feature, subgroups of 32, 48 KiB. */
export const NVIDIA: Target = withConfigs(
  { name: 'nvidia', isFallbackAdapter: false, features: ['shader-f16', 'subgroups', SUBGROUP_MATRIX_FEATURE], subgroupMinSize: 32, subgroupMaxSize: 32, subgroupMatrixConfigs: [], limits: LIMITS },
  [{ M: 16, N: 16, K: 16 }, { M: 16, N: 8, K: 16 }],
  'configs',
);

/** lavapipe with configs listed but no feature: the emulated spelling, 32 KiB. */
export const EMULATED: Target = withConfigs(
  { name: 'llvmpipe', isFallbackAdapter: true, features: ['shader-f16', 'subgroups'], subgroupMinSize: 8, subgroupMaxSize: 8, subgroupMatrixConfigs: [], limits: { ...LIMITS, maxComputeWorkgroupStorageSize: 32768 } },
  [{ M: 16, N: 16, K: 16 }],
  'configs',
);

/**
 * The device's Target for a test of `config`: emulated (the config added) without the feature; natively the config
 * if the device lists it, else the device's own configs (`forced` false: tiles chosen for `config` may not fit).
 */
export function deviceSgmatTarget(base: Target, native: boolean, config: Config): { target: Target; forced: boolean } {
  if (!native) return { target: withConfigs(base, [config], 'sgmat'), forced: true };
  const listed = base.subgroupMatrixConfigs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === config.M && c.N === config.N && c.K === config.K);
  return listed ? { target: withConfigs(base, [config], 'native'), forced: true } : { target: base, forced: false };
}
