// `visft run BUNDLE [--weights W ...] --inputs I.safetensors --outputs O.safetensors [--backend cpu|gpu]`
import { readFileSync } from 'node:fs';
import { BundleError, bundleProgramFor, parseBundle } from '../../compiler/bundle.js';
import { checkPlanFits, PlanError } from '../../compiler/plan/memory.js';
import { openDevice } from '../../runtime/gpu/device.js';
import { describeProfile, profileSummary } from '../../runtime/tune/profile.js';
import { GpuError } from '../../runtime/gpu/errors.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { RunError } from '../../compiler/ir/interpret.js';
import { loadInputs, loadWeights, runCpu, RunInputError } from '../../runtime/run-cpu.js';
import { fromNumbers, writeSafetensors, WeightsFormatError, WeightMismatchError, UnsafePickleError, PickleError, ZipError } from '../../runtime/weights/index.js';
import { kernelChoiceArg } from './bundle-args.js';
import { tuningSetArg, tuningSetLine } from './tuning-set.js';
import { fileErrorLine, UsageError } from './errors.js';

export interface RunOptions {
  weights?: string[];
  inputs?: string;
  outputs?: string;
  backend: string;
  adapter?: string;
  /** auto, none, or a tuning profile file. */
  tuning?: string;
  f64?: boolean;
  kernels?: string;
  /** Kernel choices over the tuning profile's, as JSON (`--set`). */
  set?: string;
}

/** `f()`, its memory-plan errors saying which adapter the bundle does not fit. */
function fitted<T>(adapter: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PlanError) throw new PlanError(`cannot run on ${adapter}: ${e.message}`);
    throw e;
  }
}

export async function runRun(bundleFile: string, opts: RunOptions): Promise<number> {
  if (!opts.inputs || !opts.outputs) throw new UsageError('run needs --inputs I.safetensors and --outputs O.safetensors');
  if (opts.backend !== 'cpu' && opts.backend !== 'gpu') throw new UsageError(`--backend is cpu or gpu, not '${opts.backend}'`);
  const kernels = kernelChoiceArg(opts.kernels);
  const tuningSet = tuningSetArg(opts.set, opts.backend);
  if (tuningSet && kernels === 'bundle') throw new UsageError("--set chooses the kernels scheduled here; --kernels bundle runs the bundle's own");
  try {
    let text: string;
    try {
      text = readFileSync(bundleFile, 'utf8');
    } catch (e) {
      throw new RunInputError(`cannot read ${bundleFile} (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
    const { bundle, graph } = parseBundle(text, bundleFile);
    if (bundle.params.length && !opts.weights?.length) throw new UsageError(`${bundleFile} has ${bundle.params.length} parameters: give --weights`);
    if (!bundle.params.length && opts.weights?.length) throw new UsageError(`${bundleFile} has no parameters: drop --weights`);
    const load = () => ({ params: bundle.params.length ? loadWeights(opts.weights!, bundle) : new Map(), inputs: loadInputs(opts.inputs!, bundle, (m) => process.stderr.write(`visft: warning: ${m}\n`)) });
    let outputs;
    if (opts.backend === 'cpu') {
      const { params, inputs } = load();
      outputs = runCpu(graph, inputs, params);
    } else {
      if (!bundle.gpu) throw new BundleError(`${bundleFile} has no GPU kernels: compile it with this visft`);
      const gpu = await openDevice({ adapter: opts.adapter, tuning: opts.tuning, tuningSet });
      if (gpu.tuningProfile) process.stderr.write(`visft: tuning profile ${describeProfile(profileSummary(gpu.tuningProfile))}\n`);
      if (tuningSet) process.stderr.write(`visft: ${tuningSetLine(tuningSet, !!gpu.tuningProfile)}\n`);
      try {
        const { program, rescheduled } = fitted(gpu.target.name, () => bundleProgramFor(bundle, graph, bundleFile, gpu.target, kernels));
        if (rescheduled) process.stdout.write(`kernels: ${program.schedule.kernels.length} scheduled for ${gpu.target.name} (${rescheduled})\n`);
        // Whether it fits before reading gigabytes of weights.
        fitted(gpu.target.name, () => checkPlanFits(program.plan, gpu.target));
        const { params, inputs } = load();
        outputs = await runGpu(gpu, graph, program, inputs, params);
      } finally {
        await gpu.destroy();
      }
    }
    const dtype = opts.f64 ? 'f64' : 'f32';
    const tensors = new Map([...outputs].map(([k, v]) => [k, fromNumbers(dtype, v.shape, v.data)] as const));
    writeSafetensors(opts.outputs, tensors, { bundle: bundleFile, backend: opts.backend });
    process.stdout.write(`wrote ${opts.outputs}: ${[...outputs.keys()].join(', ')}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    if ([BundleError, RunInputError, RunError, WeightsFormatError, WeightMismatchError, UnsafePickleError, PickleError, ZipError, GpuError, PlanError].some((c) => e instanceof c)) {
      process.stderr.write(`visft: ${(e as Error).message}\n`);
      return 1;
    }
    const fileError = fileErrorLine(e);
    if (fileError) {
      process.stderr.write(`visft: ${fileError}\n`);
      return 1;
    }
    throw e;
  }
}
