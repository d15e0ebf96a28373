// Running a compiled graph on the GPU: the program's kernels through the executor on a Dawn device, with
// parameters and inputs by name and outputs by name, as f32.
import type { GpuProgram } from '../compiler/codegen/gpu.js';
import type { Graph } from '../compiler/ir/graph.js';
import type { RefTensor } from '../compiler/ir/rules/reference.js';
import { Executor } from './gpu/executor.js';
import type { GpuDevice } from './gpu/device.js';

const f32 = (t: RefTensor): Float32Array => Float32Array.from(t.data);

export async function runGpu(gpu: GpuDevice, graph: Graph, program: GpuProgram, inputs: ReadonlyMap<string, RefTensor>, params: ReadonlyMap<string, RefTensor>): Promise<Map<string, RefTensor>> {
  const exec = await Executor.create(gpu, program.schedule.kernels, program.plan);
  try {
    const byId = <T>(named: readonly { name: string; node: number }[], values: ReadonlyMap<string, RefTensor>, what: string) =>
      new Map(
        named.map((n) => {
          const v = values.get(n.name);
          if (!v) throw new Error(`missing ${what} '${n.name}'`);
          return [n.node, f32(v)] as const;
        }),
      );
    const outIds = [...program.schedule.outputs.values()];
    const got = await exec.run(byId(graph.inputs, inputs, 'input'), byId(graph.params, params, 'parameter'), outIds);
    const out = new Map<string, RefTensor>();
    for (const o of graph.outputs) {
      const id = program.schedule.outputs.get(o.name)!;
      out.set(o.name, { shape: graph.node(o.node).shape, data: Float64Array.from(got.get(id)!) });
    }
    return out;
  } finally {
    exec.destroy();
  }
}
