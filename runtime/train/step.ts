// Running one compiled training step: data and parameters in, the loss and the trainable parameters' gradients out.
// `gpu` runs the step's kernels through the executor (frozen parameters uploaded once, trainable ones before each
// step); `cpu` runs the float64 reference interpreter (slow; for checking, and machines without any adapter).
import { compileGpu, outputIds } from '../../compiler/codegen/gpu.js';
import type { ValueInfo } from '../../compiler/codegen/schedule.js';
import { formatBytes } from '../../compiler/plan/memory.js';
import { roundBF16 } from '../../compiler/ir/rules/reference-core.js';
import { fromF16, toF16 } from '../gpu/half.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { StepGraph } from '../../compiler/train/step-graph.js';
import type { GpuDevice } from '../gpu/device.js';
import { Executor } from '../gpu/executor.js';

export interface StepResult {
  readonly loss: number;
  readonly grads: Map<string, Float32Array>;
}

export interface StepRunner {
  readonly kernels: number;
  /** How the step's values are stored: how many are f16 and the bytes that saves (compiler/codegen/half.ts). */
  readonly storage: string;
  /** Frozen parameters (by name), uploaded once. */
  setFrozen(values: ReadonlyMap<string, Float32Array>): void;
  run(inputs: ReadonlyMap<string, Float32Array>, trainable: ReadonlyMap<string, Float32Array>): Promise<StepResult>;
  destroy(): void;
}

function storageNote(values: readonly ValueInfo[]): string {
  const half = values.filter((v) => v.dtype === 'f16');
  if (half.length === 0) return 'values are held in f32 buffers (the device has no shader-f16)';
  const saved = half.reduce((a, v) => a + v.bytes, 0);
  return `${half.length} values stored as f16 (${formatBytes(saved)} instead of ${formatBytes(2 * saved)})`;
}

/** Frozen values at their parameters' precision (a frozen fp16 backbone's weights rounded to f16), by name. */
function atPrecision(step: StepGraph, values: ReadonlyMap<string, Float32Array>): Map<string, Float32Array> {
  const dtype = new Map(step.params.map((p) => [p.name, p.dtype]));
  const out = new Map<string, Float32Array>();
  for (const [name, v] of values) {
    const d = dtype.get(name);
    out.set(name, d === 'f16' ? fromF16(toF16(v)) : d === 'bf16' ? v.map(roundBF16) : v);
  }
  return out;
}

const trainableNames = (step: StepGraph) => step.params.filter((p) => p.trainable).map((p) => p.name);

export async function gpuStepRunner(gpu: GpuDevice, step: StepGraph): Promise<StepRunner> {
  const program = compileGpu(step.graph, gpu.target);
  const exec = await Executor.create(gpu, program.schedule.kernels, program.plan);
  const g = step.graph;
  const paramId = new Map(g.params.map((p) => [p.name, p.node]));
  const inputId = new Map(g.inputs.map((i) => [i.name, i.node]));
  const names = trainableNames(step);
  const gradIds = outputIds(program, names.map((n) => `d:${n}`), 'the step');
  const [lossId] = outputIds(program, ['loss'], 'the step');
  return {
    kernels: program.schedule.kernels.length,
    storage: storageNote(program.schedule.values),
    setFrozen(values) {
      const m = new Map<number, Float32Array>();
      for (const [name, v] of atPrecision(step, values)) if (paramId.has(name)) m.set(paramId.get(name)!, v);
      exec.setParams(m);
    },
    async run(inputs, trainable) {
      const ins = new Map<number, Float32Array>();
      for (const [name, id] of inputId) {
        const v = inputs.get(name);
        if (!v) throw new Error(`internal: no data for the step's input '${name}'`);
        ins.set(id, v);
      }
      const ps = new Map(names.map((n) => [paramId.get(n)!, trainable.get(n)!]));
      const got = await exec.run(ins, ps, [lossId, ...gradIds]);
      return { loss: got.get(lossId)![0], grads: new Map(names.map((n, i) => [n, got.get(gradIds[i])!])) };
    },
    destroy: () => exec.destroy(),
  };
}

export function cpuStepRunner(step: StepGraph): StepRunner {
  const f64 = (v: Float32Array, shape: readonly number[]) => ({ shape: [...shape], data: Float64Array.from(v) });
  const shapes = new Map(step.graph.params.map((p) => [p.name, step.graph.node(p.node).shape]));
  const frozen = new Map<string, { shape: number[]; data: Float64Array }>();
  const names = trainableNames(step);
  return {
    kernels: 0,
    storage: 'the cpu backend holds every value in float64',
    setFrozen(values) {
      for (const [name, v] of atPrecision(step, values)) if (shapes.has(name)) frozen.set(name, f64(v, shapes.get(name)!));
    },
    async run(inputs, trainable) {
      const ins = new Map(step.graph.inputs.map((i) => [i.name, f64(inputs.get(i.name)!, step.graph.node(i.node).shape)]));
      const params = new Map(frozen);
      for (const n of names) params.set(n, f64(trainable.get(n)!, shapes.get(n)!));
      const out = interpret(step.graph, ins, params);
      return { loss: out.get('loss')!.data[0], grads: new Map(names.map((n) => [n, Float32Array.from(out.get(`d:${n}`)!.data)])) };
    },
    destroy: () => undefined,
  };
}
