// `visft profile BUNDLE [--repeat N] [--top N] [--json] [--adapter NAME] [--tuning auto|none|FILE] [--set JSON] [--kernels ...]`:
// where a compiled program's GPU time goes (runtime/bench/profile-program.ts). It runs what `visft run` would run
// on this adapter (the same kernel choice and tuning profile), on seeded data (inputs in [-1, 1), parameters in
// [-0.02, 0.02): the tuner's bundle data), so no weights are needed. Exit 0, 1 on GPU errors, 2 for usage errors.
import { bundleProgramFor } from '../../compiler/bundle.js';
import { checkPlanFits, PlanError } from '../../compiler/plan/memory.js';
import { hasTimestamps, TimedProgram } from '../../runtime/bench/ours.js';
import { profileProgram } from '../../runtime/bench/profile-program.js';
import { openDevice } from '../../runtime/gpu/device.js';
import { GpuError } from '../../runtime/gpu/errors.js';
import { bundleCase } from '../../runtime/tune/pair-timing.js';
import { describeProfile, profileSummary } from '../../runtime/tune/profile.js';
import { kernelChoiceArg, readBundleArg } from './bundle-args.js';
import { gpuErrorExit, UsageError } from './errors.js';
import { tuningSetArg, tuningSetLine } from './tuning-set.js';

export interface ProfileCliOptions {
  repeat?: string;
  top?: string;
  json?: boolean;
  adapter?: string;
  tuning?: string;
  kernels?: string;
  set?: string;
}

function count(value: string | undefined, option: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${option} takes a whole number from 1 to ${max}, not '${value}'`);
  return n;
}

export async function runProfileCommand(file: string, opts: ProfileCliOptions): Promise<number> {
  const repeat = count(opts.repeat, '--repeat', 5, 100);
  const top = count(opts.top, '--top', 10, 1000);
  const kernels = kernelChoiceArg(opts.kernels);
  const tuningSet = tuningSetArg(opts.set);
  const { bundle, graph } = readBundleArg(file);
  if (!bundle.gpu) throw new UsageError(`${file} has no GPU kernels: compile it with this visft`);
  try {
    const gpu = await openDevice({ adapter: opts.adapter, tuning: opts.tuning, tuningSet, profiling: true });
    try {
      if (!hasTimestamps(gpu)) throw new GpuError(`the adapter ${gpu.info.description || gpu.target.name} has no timestamp queries: nothing to time kernels with`, 'profiling', 'validation');
      const { program, rescheduled } = bundleProgramFor(bundle, graph, file, gpu.target, kernels);
      checkPlanFits(program.plan, gpu.target);
      const data = bundleCase(file, graph).data;
      const timed = await TimedProgram.create(gpu, program, new Map([...data].filter(([id]) => program.plan.placement.has(id))));
      try {
        await timed.warm(2);
        const p = await profileProgram(timed, repeat, top);
        const device = { adapter: gpu.info.description || gpu.target.name, backend: gpu.backend ?? '', tuning: gpu.tuningProfile?.file ?? null, ...(tuningSet ? { set: tuningSet } : {}), ...(rescheduled ? { rescheduled } : {}) };
        if (opts.json) {
          process.stdout.write(JSON.stringify({ bundle: file, device, repeat, ...p }, null, 2) + '\n');
          return 0;
        }
        const w = (s: string) => process.stdout.write(s + '\n');
        w(`device: ${device.adapter} (${device.backend || 'default backend'})`);
        w(`tuning profile: ${gpu.tuningProfile ? describeProfile(profileSummary(gpu.tuningProfile)) : 'none'}`);
        if (tuningSet) w(tuningSetLine(tuningSet, !!gpu.tuningProfile));
        if (rescheduled) w(`kernels: scheduled for ${gpu.target.name} (${rescheduled})`);
        w(`${file}: ${p.kernels} kernels; one pass ${p.passMs.toFixed(3)} ms; each in a pass of its own ${p.kernelsMs.toFixed(3)} ms in all (GPU timestamps, medians of ${repeat} runs; seeded data)`);
        const table = (title: string, rows: typeof p.byName) => {
          w(`      ms   share  count  ${title}`);
          for (const k of rows) w(`${k.ms.toFixed(3).padStart(8)}  ${(100 * k.share).toFixed(1).padStart(5)}%  ${String(k.count).padStart(5)}  ${k.name}`);
        };
        table('kind', p.byKind);
        table('kernel', p.byName);
        w(`slowest single kernels (place among the ${p.kernels} dispatched):`);
        for (const k of p.slowest) w(`${k.ms.toFixed(3).padStart(8)}  #${k.index}  ${k.name}`);
        return 0;
      } finally {
        timed.destroy();
      }
    } finally {
      await gpu.destroy();
    }
  } catch (e) {
    if (e instanceof PlanError) {
      process.stderr.write(`visft: ${e.message}\n`);
      return 1;
    }
    return gpuErrorExit(e);
  }
}
