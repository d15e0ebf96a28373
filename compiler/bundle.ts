// The executable bundle (.visftx): versioned, self-describing JSON holding the IR, the parameter manifest
// (paths, shapes, init, trainable, LoRA), the entry's inputs and outputs, and the weights' key rules.
// Serialisation is deterministic: the same compile gives byte-identical files.
import { Graph, type Attrs, type DType } from './ir/graph.js';
import type { IrOp } from './ir/ops.js';
import { IR_OPS } from './ir/ops.js';
import type { CompiledEntry, WeightsSpec } from './lower/entry.js';
import { Builder } from './ir/builder.js';
import type { Kernel, Target } from './codegen/types.js';
import { PORTABLE_TARGET } from './codegen/types.js';
import { compileGpu, type GpuProgram } from './codegen/gpu.js';
import { TARGETS, targetShortfalls } from './codegen/targets.js';
import { canonicalJson } from './util/canonical-json.js';
import type { ValueInfo } from './codegen/schedule.js';
import { planMemory } from './plan/memory.js';

export const BUNDLE_FORMAT = 'visft-bundle';
export const BUNDLE_VERSION = 1;

export interface TensorSpec {
  readonly name: string;
  readonly shape: number[];
  readonly dtype: DType;
}

export interface BundleParam extends TensorSpec {
  readonly init?: string;
  readonly parts?: readonly string[];
  readonly trainable: boolean;
  readonly lora_of?: string;
}

export interface Bundle {
  readonly format: typeof BUNDLE_FORMAT;
  readonly version: number;
  readonly entry: string;
  readonly stage: string | null;
  readonly source: { readonly file: string; readonly sha256: string };
  readonly inputs: TensorSpec[];
  readonly outputs: TensorSpec[];
  readonly params: BundleParam[];
  readonly weights: WeightsSpec | null;
  /** The GPU program: kernels in schedule order, the values they bind, aliases and outputs (the memory plan is derived). */
  readonly gpu: {
    readonly target: string;
    /** false when compiled with --no-fuse (absent: fused). */
    readonly fused?: boolean;
    /** The Target.tuning the kernels were generated with (a tuning profile's; absent: the defaults). */
    readonly tuning?: Target['tuning'];
    readonly kernels: Kernel[];
    readonly values: ValueInfo[];
    readonly aliases: [number, number][];
    readonly outputs: [string, number][];
    /** Bytes the memory plan allocates for the target, for a quick look. */
    readonly plan_bytes: number;
  } | null;
  /** Nodes as [op, inputs, attrs, shape, dtype]. */
  readonly graph: {
    readonly nodes: [IrOp, number[], Attrs, number[], DType][];
    readonly inputs: [string, number][];
    readonly params: [string, number][];
    readonly outputs: [string, number][];
  };
}

export class BundleError extends Error {}

const spec = (g: Graph, name: string, node: number): TensorSpec => ({ name, shape: [...g.node(node).shape], dtype: g.node(node).dtype });

export function makeBundle(c: CompiledEntry, source: { file: string; sha256: string }, gpu?: GpuProgram): Bundle {
  const g = c.graph;
  return {
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    entry: c.entry,
    stage: c.stage ?? null,
    source,
    inputs: g.inputs.map((i) => spec(g, i.name, i.node)),
    outputs: g.outputs.map((o) => spec(g, o.name, o.node)),
    params: c.params.map((p) => ({ ...spec(g, p.path, p.node), ...(p.init ? { init: p.init } : {}), ...(p.parts ? { parts: p.parts } : {}), trainable: p.trainable, ...(p.lora ? { lora_of: p.lora.target } : {}) })),
    weights: c.weights ?? null,
    gpu: gpu
      ? {
          target: gpu.target.name,
          ...(gpu.options?.fuse === false ? { fused: false } : {}),
          ...(gpu.target.tuning ? { tuning: gpu.target.tuning } : {}),
          kernels: gpu.schedule.kernels,
          values: gpu.schedule.values,
          aliases: [...gpu.schedule.aliases],
          outputs: [...gpu.schedule.outputs],
          plan_bytes: gpu.plan.peakBytes,
        }
      : null,
    graph: {
      nodes: g.nodes.map((n) => [n.op, [...n.inputs], n.attrs, [...n.shape], n.dtype]),
      inputs: g.inputs.map((i) => [i.name, i.node]),
      params: g.params.map((p) => [p.name, p.node]),
      outputs: g.outputs.map((o) => [o.name, o.node]),
    },
  };
}

export function serializeBundle(b: Bundle): string {
  return JSON.stringify(b) + '\n';
}

/** Parses and validates a bundle, rebuilding the graph through the shape rules (so a tampered file is caught). */
export function parseBundle(text: string, file: string): { bundle: Bundle; graph: Graph } {
  let b: Bundle;
  try {
    b = JSON.parse(text) as Bundle;
  } catch (e) {
    throw new BundleError(`${file} is not a visft bundle (not JSON: ${(e as Error).message})`);
  }
  if (!b || b.format !== BUNDLE_FORMAT) throw new BundleError(`${file} is not a visft bundle`);
  if (b.version !== BUNDLE_VERSION) throw new BundleError(`${file} is bundle version ${b.version}; this visft reads version ${BUNDLE_VERSION}: recompile it`);
  const builder = new Builder(new Graph());
  try {
    b.graph.nodes.forEach(([op, inputs, attrs, shape, dtype], i) => {
      if (!(op in IR_OPS)) throw new BundleError(`node ${i} has unknown op '${op}'`);
      if (inputs.some((x) => !(x >= 0 && x < i))) throw new BundleError(`node ${i} (${op}) refers to a later node`);
      const id = builder.add(op, inputs, attrs);
      const n = builder.graph.node(id);
      if (n.shape.join() !== shape.join() || n.dtype !== dtype) throw new BundleError(`node ${i} (${op}) claims [${shape}] ${dtype} but computes [${n.shape}] ${n.dtype}`);
    });
  } catch (e) {
    if (e instanceof BundleError) throw new BundleError(`${file}: ${e.message}`);
    throw new BundleError(`${file}: corrupt graph: ${(e as Error).message}`);
  }
  const g = builder.graph;
  const check = (list: [string, number][], op: IrOp, what: string) =>
    list.map(([name, node]) => {
      if (!g.nodes[node] || (op !== 'full' && g.nodes[node].op !== op)) throw new BundleError(`${file}: ${what} '${name}' points at a wrong node`);
      return { name, node };
    });
  g.inputs.push(...check(b.graph.inputs, 'input', 'input'));
  g.params.push(...check(b.graph.params, 'param', 'param'));
  for (const [name, node] of b.graph.outputs) {
    if (!g.nodes[node]) throw new BundleError(`${file}: output '${name}' points at no node`);
    g.outputs.push({ name, node });
  }
  return { bundle: b, graph: g };
}

/** The bundle's own GPU program, its memory plan re-derived (deterministically) for `target` (the device). */
export function bundleGpuProgram(b: Bundle, file: string, target: Target = PORTABLE_TARGET): GpuProgram {
  if (!b.gpu) throw new BundleError(`${file} has no GPU kernels: compile it with this visft`);
  const schedule = { kernels: b.gpu.kernels, values: b.gpu.values, aliases: new Map(b.gpu.aliases), outputs: new Map(b.gpu.outputs) };
  const plan = planMemory({ values: schedule.values, schedule: schedule.kernels, aliases: schedule.aliases }, target);
  return { target, schedule, plan };
}

/**
 * Which kernels `visft run` uses: `bundle` (the bundle's own), `device` (scheduled for the device at hand from the
 * bundle's graph, as `visft compile --target` would for it), or `auto`: the bundle's own when it was compiled for
 * a named GPU target that the device satisfies, else the device's. A `portable` bundle's kernels run anywhere but
 * are planned for WebGPU's least limits and no features, and software adapters compile their unrolled loops
 * slowly (minutes for one flash-attention kernel on lavapipe), so `auto` schedules them for the device.
 */
export type KernelChoice = 'auto' | 'bundle' | 'device';

export interface ChosenProgram {
  readonly program: GpuProgram;
  /** Why the device's kernels were scheduled instead of the bundle's (absent when the bundle's run). */
  readonly rescheduled?: string;
}

export function bundleProgramFor(b: Bundle, graph: Graph, file: string, device: Target, choice: KernelChoice): ChosenProgram {
  if (!b.gpu) throw new BundleError(`${file} has no GPU kernels: compile it with this visft`);
  const compiledFor = TARGETS[b.gpu.target];
  const shortfalls = compiledFor ? targetShortfalls(device, compiledFor) : [`a target this visft does not know ('${b.gpu.target}')`];
  if (choice === 'bundle') {
    if (shortfalls.length) throw new BundleError(`${file} was compiled for '${b.gpu.target}'; this adapter (${device.name}) lacks ${shortfalls.join(', ')}: run with --kernels device, or compile it for this GPU`);
    return { program: bundleGpuProgram(b, file, device) };
  }
  // Kernels generated with other tuning choices than this device's (its tuning profile) run, but slower.
  const sameTuning = canonicalJson(b.gpu.tuning ?? {}) === canonicalJson(device.tuning ?? {});
  const own = choice === 'auto' && b.gpu.target !== PORTABLE_TARGET.name && !shortfalls.length && sameTuning;
  if (own) return { program: bundleGpuProgram(b, file, device) };
  const why =
    choice === 'device'
      ? '--kernels device'
      : b.gpu.target === PORTABLE_TARGET.name
        ? `the bundle's are for '${PORTABLE_TARGET.name}'`
        : shortfalls.length
          ? `the bundle's are for '${b.gpu.target}', and this adapter lacks ${shortfalls.join(', ')}`
          : device.tuning
            ? `the bundle's were generated without this adapter's tuning profile`
            : `the bundle's were generated with tuning choices, and no tuning profile applies to this adapter`;
  return { program: compileGpu(graph, device, b.gpu.fused === false ? { fuse: false } : {}), rescheduled: why };
}
