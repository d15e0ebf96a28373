// The GPU half of compilation: schedule (kernels, fusion, aliases) then the memory plan, for a Target.
// Deterministic for a given graph and target, so bundles stay byte-identical.
import type { Graph } from '../ir/graph.js';
import { GPU_RULES } from '../../kernels/index.js';
import { planMemory, type MemoryPlan } from '../plan/memory.js';
import { schedule, type Schedule, type ScheduleOptions } from './schedule.js';
import type { Target } from './types.js';

export interface GpuProgram {
  readonly target: Target;
  readonly schedule: Schedule;
  readonly plan: MemoryPlan;
  /** How it was scheduled (a bundle keeps `fuse: false`, so a runtime that re-schedules it does the same). */
  readonly options?: ScheduleOptions;
}

/** The value ids of a program's outputs `names`; a missing one is an internal error naming `what` (the program). */
export function outputIds(program: GpuProgram, names: readonly string[], what: string): number[] {
  return names.map((name) => {
    const id = program.schedule.outputs.get(name);
    if (id === undefined) throw new Error(`internal: ${what} has no output '${name}'`);
    return id;
  });
}

export function compileGpu(graph: Graph, target: Target, opts: ScheduleOptions = {}): GpuProgram {
  const s = schedule(graph, target, GPU_RULES, opts);
  const plan = planMemory({ values: s.values, schedule: s.kernels, aliases: s.aliases }, target);
  return { target, schedule: s, plan, options: opts };
}

/** `--emit kernels`: one line per kernel with what it computes and binds. */
export function formatKernels(p: GpuProgram, graph: Graph): string {
  const lines = [`# ${p.schedule.kernels.length} kernels for target '${p.target.name}'`];
  p.schedule.kernels.forEach((k, i) => {
    const ops = k.nodes.map((n) => `%${n} ${graph.nodes[n]?.op ?? '?'}`).join(', ') || 'copy';
    const binds = k.bindings.map((b) => `${b.access === 'read' ? '' : 'w:'}%${b.value}`).join(' ');
    lines.push(`k${i} ${k.name} [${k.dispatch.join('x')}] x [${k.workgroupSize.join('x')}]  computes ${ops}  binds ${binds}`);
  });
  return lines.join('\n') + '\n';
}

/** `--emit wgsl`: every kernel's source, in schedule order. */
export function formatWgsl(p: GpuProgram): string {
  return p.schedule.kernels.map((k, i) => `// ---- k${i}: ${k.name}\n${k.wgsl}`).join('\n');
}
