// Targets for the subgroup-matrix kernel tests (kernels/sgmat.ts and its users). lavapipe has no subgroup matrices:
// a Target that lists configs without the feature gets the emulated spelling, which runs there; on a GPU with the
// feature the same tests run natively (deviceSgmatTarget).
import { after, before } from 'node:test';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs, Graph } from '../../compiler/ir/graph.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import { nativeSgmat, SUBGROUP_MATRIX_FEATURE } from '../../kernels/sgmat.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';

export type Config = { M: number; N: number; K: number };

/** `t` with exactly these f16 x f16 -> f32 configs. */
export const withConfigs = (t: Target, configs: Config[], name: string): Target => ({
  ...t,
  name: `${t.name}+${name}`,
  subgroupMatrixConfigs: configs.map((c) => ({ componentType: 'f16', resultComponentType: 'f32', ...c })),
});

/** `t` with these configs but without the subgroup-matrix feature: the emulated spelling, on any device. */
export const emulatedConfigs = (t: Target, configs: Config[], name: string): Target => {
  const listed = withConfigs(t, configs, name);
  return { ...listed, features: listed.features.filter((f) => f !== SUBGROUP_MATRIX_FEATURE) };
};

/** An H100 as Dawn reports it with visft's toggles (compiler/codegen/targets.ts): the feature, subgroups of 32, 48 KiB. */
export const NVIDIA: Target = TARGETS['nvidia-h100'];

/** lavapipe with configs listed but no feature: the emulated spelling, 32 KiB. */
export const EMULATED: Target = withConfigs(TARGETS.lavapipe, [{ M: 16, N: 16, K: 16 }], 'configs');

/**
 * The device's Target for a test of `config`: emulated (the config added) without the feature; natively the config
 * if the device lists it, else the device's own configs (`forced` false: tiles chosen for `config` may not fit).
 */
export function deviceSgmatTarget(base: Target, native: boolean, config: Config): { target: Target; forced: boolean } {
  if (!native) return { target: withConfigs(base, [config], 'sgmat'), forced: true };
  const listed = base.subgroupMatrixConfigs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === config.M && c.N === config.N && c.K === config.K);
  return listed ? { target: withConfigs(base, [config], 'native'), forced: true } : { target: base, forced: false };
}

/**
 * The device of a describe block's tests (opened before them, destroyed after them) and whether it runs subgroup
 * matrices natively (else the tests' Targets emulate them).
 */
export function sgmatDevice(): { readonly gpu: () => GpuDevice; readonly native: () => boolean } {
  let gpu: GpuDevice | undefined;
  before(async () => {
    gpu = await openDevice();
  });
  after(async () => {
    await gpu?.destroy();
  });
  return { gpu: () => gpu!, native: () => nativeSgmat(gpu!.target) };
}

/** x16 @ w16ᵀ + bias, then GELU, and a LoRA-style second product (x16 @ aᵀ · s) @ bᵀ in the epilogue. */
export function autocastLinear(rowsPer: number, d: number, out: number, rank: number): Graph {
  const b = new Builder();
  const round = (id: number) => b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' });
  const x = round(b.add('layernorm', [b.input('x', [2, rowsPer, d])], { eps: 1e-6 }));
  const proj = b.add('matmul', [x, b.transposeLast(round(b.param('w', [out, d])))]);
  // As compiler/lower/lora.ts builds it: the branch on x viewed as rows, its result viewed back.
  const rows = b.add('reshape', [x], { shape: [-1, d] });
  const u = b.add('mul', [b.add('matmul', [rows, b.transposeLast(b.param('lora_a', [rank, d]))]), b.add('full', [], { shape: [], value: 0.5 })]);
  const lora = b.add('reshape', [b.add('matmul', [u, b.transposeLast(b.param('lora_b', [out, rank]))])], { shape: [2, rowsPer, out] });
  b.output('y', b.add('gelu', [b.add('add', [b.add('add', [proj, lora]), b.param('bias', [out])])]));
  b.output('p', b.add('add', [b.add('matmul', [x, b.transposeLast(round(b.param('w2', [out, d])))]), b.param('bias2', [out])]));
  return b.graph;
}

/** The configs the tensor-core flash kernels from storage take (kernels/flash-direct-common.ts): 16x8x8 and 16x8x16. */
export const DIRECT_CONFIGS: Config[] = [
  { M: 16, N: 8, K: 8 },
  { M: 16, N: 8, K: 16 },
];

/**
 * attention(q, k, v [, mask]) and its attention_lse sibling (an output when `withLse`); `round`: q, k and v rounded to
 * f16 first (exact f16 operands, as autocast makes them).
 */
export function attentionGraph(qs: number[], ks: number[], vs: number[], opts: { attrs?: Attrs; withLse?: boolean; mask?: number[]; round?: boolean } = {}): { graph: Graph; y: number; lse: number } {
  const b = new Builder();
  const round = (id: number) => (opts.round ? b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' }) : id);
  const [q, k, v] = [round(b.input('q', qs)), round(b.input('k', ks)), round(b.input('v', vs))];
  const m = opts.mask ? [b.input('mask', opts.mask)] : [];
  const attrs = opts.attrs ?? {};
  const y = b.add('attention', [q, k, v, ...m], attrs);
  const lse = b.add('attention_lse', [q, k, ...m], attrs);
  b.output('y', y);
  if (opts.withLse ?? true) b.output('lse', lse);
  return { graph: b.graph, y, lse };
}

/**
 * a @ w (w given [n, k] and transposed when `transB`), batched as given ([...ba, m, k], w [...bb, k, n]); `round`: both
 * rounded to f16 first (exact f16 operands, as autocast makes them); `epilogue` on the product.
 */
export function productGraph(ba: number[], m: number, k: number, n: number, transB: boolean, opts: { bb?: number[]; round?: boolean; epilogue?: (b: Builder, y: number) => number } = {}): Graph {
  const b = new Builder();
  const round = (id: number) => (opts.round ? b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' }) : id);
  const bb = opts.bb ?? [];
  const a = round(b.input('a', [...ba, m, k]));
  const w = transB ? b.transposeLast(round(b.param('w', [...bb, n, k]))) : round(b.param('w', [...bb, k, n]));
  const y = b.add('matmul', [a, w]);
  b.output('y', opts.epilogue ? opts.epilogue(b, y) : y);
  return b.graph;
}
