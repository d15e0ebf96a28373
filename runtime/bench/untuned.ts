// Under a tuning profile, each bench row also times the default kernels (the program compiled without the
// profile's choices) on the same device in the same alternating bursts: what the profile gains, measured in the
// run that reports it (the profile's Dawn toggles stay: they are the device's).
import { compileGpu, outputIds, type GpuProgram } from '../../compiler/codegen/gpu.js';
import type { Graph } from '../../compiler/ir/graph.js';
import type { GpuDevice } from '../gpu/device.js';
import { programKey, relDiff, withTuning } from '../tune/pair-timing.js';
import { TimedProgram } from './ours.js';

export interface UntunedProgram {
  readonly timed: TimedProgram;
  readonly kernels: readonly string[];
  /** Its outputs' largest difference from the tuned program's, relative to each output's largest value. */
  readonly relDiff: number;
}

/** The default program, ready to time beside `tuned`; undefined without a profile's tuning or when it changes nothing here. */
export async function untunedProgram(
  gpu: GpuDevice,
  graph: Graph,
  tuned: GpuProgram,
  inputs: ReadonlyMap<number, Float32Array>,
  outputs: readonly string[],
  tunedOut: readonly Float32Array[],
): Promise<UntunedProgram | undefined> {
  if (!gpu.target.tuning) return undefined;
  const plain = compileGpu(graph, withTuning(gpu.target, undefined), tuned.options ?? {});
  if (programKey(plain.schedule.kernels) === programKey(tuned.schedule.kernels)) return undefined;
  const timed = await TimedProgram.create(gpu, plain, inputs);
  try {
    const ids = outputIds(plain, outputs, 'the default program');
    return { timed, kernels: plain.schedule.kernels.map((k) => k.name), relDiff: relDiff(await timed.outputs(ids), tunedOut) };
  } catch (e) {
    timed.destroy();
    throw e;
  }
}
