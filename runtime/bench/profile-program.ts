// Where a program's time goes on the GPU: every kernel timed in a pass of its own (GPU timestamps), summed by
// kernel name (one name per generator, layout and fusion: `attention_grad_kv_flash_f32`, `matmul_sgmat_f16_bt`),
// beside the whole program timed as it runs (one pass). For `visft profile`: a model's training step as compiled.
import type { TimedProgram } from './ours.js';

export interface KernelShare {
  readonly name: string;
  /** Kernels of the schedule with this name. */
  readonly count: number;
  /** Their GPU ms per run, summed. */
  readonly ms: number;
  /** ms over the sum of every kernel's. */
  readonly share: number;
}

export interface ProgramProfile {
  /** The program in one pass, as `visft run` dispatches it: median GPU ms of `repeat` runs. */
  readonly passMs: number;
  /** Each kernel in a pass of its own (median over `repeat` runs), summed: a little above passMs (pass overheads). */
  readonly kernelsMs: number;
  readonly kernels: number;
  /** By kernel name, slowest first. */
  readonly byName: readonly KernelShare[];
  /** By kind (the name's first word: matmul, attention, fused, layernorm, …), slowest first. */
  readonly byKind: readonly KernelShare[];
  /** The slowest single kernels, with their place in the schedule. */
  readonly slowest: readonly { readonly index: number; readonly name: string; readonly ms: number }[];
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Times `timed` (warmed by the caller) `repeat` times whole and kernel by kernel. */
export async function profileProgram(timed: TimedProgram, repeat: number, top = 10): Promise<ProgramProfile> {
  const passMs = median(await timed.timestamped(repeat));
  const each = await timed.kernelTimes(repeat);
  const kernelsMs = each.reduce((a, k) => a + k.ms, 0);
  const summed = (key: (name: string) => string): KernelShare[] => {
    const groups = new Map<string, { count: number; ms: number }>();
    for (const k of each) {
      const g = groups.get(key(k.name)) ?? { count: 0, ms: 0 };
      groups.set(key(k.name), { count: g.count + 1, ms: g.ms + k.ms });
    }
    return [...groups].map(([name, g]) => ({ name, ...g, share: kernelsMs > 0 ? g.ms / kernelsMs : 0 })).sort((a, b) => b.ms - a.ms || a.name.localeCompare(b.name));
  };
  const byName = summed((name) => name);
  const byKind = summed((name) => name.split(/[_+]/)[0]);
  const slowest = each.map((k, index) => ({ index, name: k.name, ms: k.ms })).sort((a, b) => b.ms - a.ms || a.index - b.index).slice(0, top);
  return { passMs, kernelsMs, kernels: each.length, byName, byKind, slowest };
}
