// `visft compile FILE --entry NAME [--stage S] [--vjp] [--precision fp16|bf16] [--shape IN=AxBxC ...] -o OUT.visftx`
// `visft compile --op OPNAME --shape IN=... [--attr KEY=VALUE ...] [--vjp] [--precision fp16|bf16] -o OUT.visftx`
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { checkFiles } from '../../compiler/check/index.js';
import { makeBundle, serializeBundle } from '../../compiler/bundle.js';
import { compileEntry, type CompiledEntry } from '../../compiler/lower/entry.js';
import { LocatedLowerError } from '../../compiler/lower/lower.js';
import { LowerError } from '../../compiler/lower/ops.js';
import { compileOp } from '../../compiler/lower/op-entry.js';
import { ShapeError } from '../../compiler/ir/rules/shape.js';
import { printGraph } from '../../compiler/ir/print.js';
import { compileGpu, formatKernels, formatWgsl } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import { readProfile } from '../../runtime/tune/profile.js';
import { formatPlan, PlanError } from '../../compiler/plan/memory.js';
import { UsageError } from './errors.js';
import { tuningSetArg } from './tuning-set.js';
import { writeFileAtomic } from './files.js';
import { printDiagnostics, summary } from './report.js';

export interface CompileOptions {
  entry?: string;
  op?: string;
  stage?: string;
  vjp?: boolean;
  /** For --op: fp32 (default), fp16 or bf16 autocast (compiler/lower/op-entry.ts). */
  precision?: string;
  shape: string[];
  attr: string[];
  output?: string;
  emit?: string;
  optimize: boolean;
  fuse: boolean;
  /** A named Target (compiler/codegen/targets.ts); default portable. */
  target?: string;
  /** A tuning profile file (`visft tune`) whose choices the kernels take (what that GPU will run under it), or none. */
  tuning?: string;
  /** Kernel choices as JSON over the profile's (bin/commands/tuning-set.ts). */
  set?: string;
}

export function parseShapes(specs: readonly string[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const s of specs) {
    const m = /^([A-Za-z_:][\w:.]*)=(\d+(?:x\d+)*)$/.exec(s);
    if (!m) throw new UsageError(`--shape takes NAME=AxBxC (whole numbers), got '${s}'`);
    out.set(m[1], m[2].split('x').map(Number));
  }
  return out;
}

/** --precision as the lowering's autocast (compiler/passes/autocast.ts). */
function autocastOf(opts: CompileOptions): 'f16' | 'bf16' | undefined {
  const p = opts.precision;
  if (p === undefined || p === 'fp32') return undefined;
  if (p !== 'fp16' && p !== 'bf16') throw new UsageError(`--precision takes fp32, fp16 or bf16; got '${p}'`);
  return p === 'fp16' ? 'f16' : 'bf16';
}

/** What `--emit` prints. */
const EMITS = ['ir', 'kernels', 'wgsl', 'plan'];

export function runCompile(file: string | undefined, opts: CompileOptions): number {
  if (!opts.output && !opts.emit) throw new UsageError('compile needs -o OUT.visftx (or --emit ir|kernels|wgsl|plan)');
  if (opts.emit !== undefined && !EMITS.includes(opts.emit)) throw new UsageError(`--emit takes ${EMITS.join(', ')}; got '${opts.emit}'`);
  const named = TARGETS[opts.target ?? 'portable'];
  if (!named) throw new UsageError(`--target takes ${Object.keys(TARGETS).join(', ')}; got '${opts.target}'`);
  // A profile file, or none (the defaults, as the device commands take it); auto needs an adapter, which compile has not.
  if (opts.tuning === 'auto') throw new UsageError('compile has no adapter to find a tuning profile for: give the profile file (the shipped ones are in runtime/tune/profiles/) or none');
  const profiled = opts.tuning && opts.tuning !== 'none' ? readProfile(opts.tuning).tuning : undefined;
  // --set: kernel choices over the profile's, as visft profile and bench take them.
  const tuning = { ...profiled, ...tuningSetArg(opts.set) };
  const target = Object.keys(tuning).length ? { ...named, tuning } : named;
  const shapes = parseShapes(opts.shape);
  const autocast = autocastOf(opts);
  let compiled: CompiledEntry;
  let source = { file: '', sha256: '' };
  try {
    if (opts.op !== undefined) {
      if (file !== undefined || opts.entry !== undefined) throw new UsageError('give either FILE --entry NAME or --op OPNAME, not both');
      compiled = compileOp(opts.op, shapes, opts.attr, opts.vjp === true, autocast);
      source = { file: `op:${opts.op}`, sha256: '' };
    } else {
      if (file === undefined || opts.entry === undefined) throw new UsageError('compile needs FILE --entry NAME, or --op OPNAME');
      const checked = checkFiles([file]);
      if (checked.program.diags.errorCount || !checked.roots[0]) {
        printDiagnostics(checked.program.diags);
        process.stderr.write(summary(checked.program.diags, `cannot compile ${file}`) + '\n');
        return 1;
      }
      compiled = compileEntry(checked, checked.roots[0], { entry: opts.entry, stage: opts.stage, vjp: opts.vjp, shapes, optimize: opts.optimize, autocast });
      source = { file, sha256: createHash('sha256').update(readFileSync(file)).digest('hex') };
    }
  } catch (e) {
    if (e instanceof LocatedLowerError) {
      process.stderr.write(`${e.where()}: error: ${e.message}\n`);
      return 1;
    }
    if (e instanceof LowerError || e instanceof ShapeError) {
      process.stderr.write(`visft: cannot compile: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  let gpu;
  try {
    gpu = compileGpu(compiled.graph, target, { fuse: opts.fuse });
  } catch (e) {
    if (!(e instanceof PlanError)) throw e;
    const hint = target.name === 'portable' ? ` (the portable target has WebGPU's least limits: give --target for the GPU it will run on)` : '';
    process.stderr.write(`visft: cannot compile for target '${target.name}': ${e.message}${hint}\n`);
    return 1;
  }
  if (opts.emit === 'ir') process.stdout.write(printGraph(compiled.graph));
  else if (opts.emit === 'kernels') process.stdout.write(formatKernels(gpu, compiled.graph));
  else if (opts.emit === 'wgsl') process.stdout.write(formatWgsl(gpu));
  else if (opts.emit === 'plan') process.stdout.write(formatPlan(gpu.plan));
  if (opts.output) {
    try {
      writeFileAtomic(opts.output, serializeBundle(makeBundle(compiled, source, gpu)));
    } catch (e) {
      process.stderr.write(`visft: cannot write ${opts.output}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
      return 1;
    }
    const g = compiled.graph;
    process.stdout.write(`wrote ${opts.output}: ${g.nodes.length} nodes, ${g.params.length} parameters (${compiled.params.filter((p) => p.trainable).length} trainable), outputs ${g.outputs.map((o) => o.name).join(', ')}\n`);
  }
  return 0;
}
