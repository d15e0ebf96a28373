// A check that the native subgroup-matrix kernels compile on this device before any program uses them. Their
// spelling (kernels/sgmat.ts) follows the gpuweb proposal and Dawn's tests, but a driver or Dawn version may still
// reject it; Dawn also moved the builtins' layout from a bool argument to a template argument, so both spellings
// are tried. When neither compiles, the device is used without tensor cores (the f32-accumulating tiles compute the
// same products) rather than every fp16 program failing at pipeline creation. `visft doctor` prints why.
import type { Kernel, Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { directGradLoads, flashDirectBackwardKernel } from '../../kernels/flash-direct-backward.js';
import { flashDirectForwardKernel } from '../../kernels/flash-direct.js';
import { flashSgmatBackwardKernel } from '../../kernels/flash-sgmat-backward.js';
import { flashSgmatForwardKernel } from '../../kernels/flash-sgmat.js';
import { halfStorageKernel } from '../../kernels/half-storage.js';
import { matmulKernel, plainOutput } from '../../kernels/matmul.js';
import { split16Chain } from '../../kernels/matmul-split16.js';
import { flashSplitChain, flashSplitGradChain } from '../../kernels/flash-split16.js';
import { nativeSgmat, sgmatConfig, sgmatShape } from '../../kernels/sgmat.js';
import { errorMessage } from './errors.js';

/** One small kernel of each native subgroup-matrix generator the target uses: matmul, flash forward, flash backward (dk+dv). */
export function probeKernels(target: Target): Kernel[] {
  const b = new Builder();
  const mm = b.add('matmul', [b.input('a', [64, 48]), b.input('b', [48, 64])]);
  const [q, k, v] = ['q', 'k', 'v'].map((n) => b.input(n, [1, 1, 24, 40]));
  const att = b.add('attention', [q, k, v]);
  const g = b.input('g', [1, 1, 24, 40]);
  const lse = b.input('lse', [1, 1, 24]);
  const delta = b.input('delta', [1, 1, 24]);
  const dk = b.add('attention_grad', [q, k, v, g, lse, delta], { wrt: 1 });
  const dv = b.add('attention_grad', [q, k, v, g, lse, delta], { wrt: 2 });
  const graph: Graph = b.graph;
  const inputsOf = (id: number) => graph.node(id).inputs.map((i) => graph.node(i));
  // Under Target.tuning.sgmatDirect the matmul reads its operands as f16 storage, as the schedule binds them, and
  // its staged fallback is checked too.
  const matmul = matmulKernel(graph.node(mm), inputsOf(mm), target, 'sgmat');
  const { halfOnly, ...direct } = matmul;
  // Under flashDirect and flashDirectGrad, the flash kernels that load q, k, v and g as f16 storage (where the
  // target lists their configs; elsewhere the schedule does not use them).
  const half = (slots: readonly number[]) => new Set(slots);
  const configs = sgmatConfig(target, 16, 8, 8) && sgmatConfig(target, 16, 8, 16);
  return [
    ...(halfOnly ? [halfStorageKernel(direct, new Set(halfOnly.bindings)), halfOnly.fallback] : [matmul]),
    flashSgmatForwardKernel(graph.node(att), inputsOf(att), target),
    flashSgmatBackwardKernel(graph.node(dk), inputsOf(dk), target, { sibling: graph.node(dv) }),
    ...(configs && target.tuning?.flashDirect ? [halfStorageKernel(flashDirectForwardKernel(graph.node(att), inputsOf(att), target), half([0, 1, 2]))] : []),
    // Under f32AttentionTensorCores, an f32 attention forward's chain; under f32AttentionGradTensorCores, dk+dv's.
    ...(configs && target.tuning?.f32AttentionTensorCores ? flashSplitChain(graph, graph.node(att), target).kernels : []),
    ...(configs && target.tuning?.f32AttentionGradTensorCores ? flashSplitGradChain(graph, graph.node(dk), target, graph.node(dv)).kernels : []),
    // Under f32TensorCores, an f32 product's chain: the splits and the product of the pairs.
    ...(target.tuning?.f32TensorCores ? split16Chain(graph.node(mm), inputsOf(mm), target, plainOutput(graph.node(mm)), [false, false]).kernels : []),
    ...(configs && target.tuning?.flashDirectGrad ? [halfStorageKernel(flashDirectBackwardKernel(graph.node(dk), inputsOf(dk), target, graph.node(dv)), half(directGradLoads('kv')))] : []),
  ];
}

/** Why `target`'s native kernels do not compile on `device` (the first failure), or undefined when they do. */
async function compileProblem(device: GPUDevice, target: Target): Promise<string | undefined> {
  let kernels: Kernel[];
  try {
    kernels = probeKernels(target);
  } catch (e) {
    return `generating the test kernels failed: ${errorMessage(e)}`;
  }
  for (const kernel of kernels) {
    device.pushErrorScope('validation');
    let thrown: string | undefined;
    try {
      const module = device.createShaderModule({ code: kernel.wgsl, label: kernel.name });
      await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: kernel.name });
    } catch (e) {
      thrown = errorMessage(e);
    }
    const error = await device.popErrorScope();
    // The scope holds the shader module's own error (Tint's message); the rejected pipeline only points at it.
    const why = error?.message ?? thrown;
    if (why) return `${kernel.name} did not compile: ${why.split('\n').find((l) => /error/i.test(l))?.trim() ?? why.split('\n')[0]}`;
  }
  return undefined;
}

/** What the probe found: the spelling the device's Dawn accepts, or why tensor cores stay off. */
export type TensorCoreProbe = { readonly spelling: 'template' | 'argument' } | { readonly problem: string } | undefined;

/**
 * Whether the native subgroup-matrix kernels run on `device`: in Dawn's current spelling (layouts as template
 * arguments), else in the first releases' (a bool argument; current Dawn still accepts it with a deprecation
 * warning per kernel), else why not (the current spelling's failure). Undefined when the Target has none.
 */
export async function probeTensorCores(device: GPUDevice, target: Target): Promise<TensorCoreProbe> {
  if (!nativeSgmat(target) || !sgmatShape(target)) return undefined;
  const problem = await compileProblem(device, { ...target, subgroupMatrixSpelling: 'template' });
  if (!problem) return { spelling: 'template' };
  if (!(await compileProblem(device, { ...target, subgroupMatrixSpelling: 'argument' }))) return { spelling: 'argument' };
  return { problem };
}

/** Why the native subgroup-matrix kernels cannot run on `device` in either spelling, or undefined. */
export async function tensorCoreProblem(device: GPUDevice, target: Target): Promise<string | undefined> {
  const probe = await probeTensorCores(device, target);
  return probe && 'problem' in probe ? probe.problem : undefined;
}
