// Shared helpers for the WGSL kernel tests: one Dawn device per test file, running one generated Kernel on
// Float32Array inputs, and checking an op's kernel against the float64 CPU reference (interpret).
//
// Usage in a test file (ESM, top-level await):
//
//   await withDevice(async (gpu) => {
//     await describe('elementwise', async () => {
//       await test('add broadcasts', async () => {
//         await checkAgainstReference(gpu, (b, [x, y]) => b.add('add', [x, y]), [xs, ys]);
//       });
//     });
//   });
//
// The device lives until `fn`'s promise settles, so every test must be awaited inside it (await each
// `describe` / `test`). The GPU instance stays referenced until the device is destroyed (a cold lavapipe
// shader cache otherwise crashes dawn.node), and the device is destroyed at the end so the process exits.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { makeRng } from '../ir/util.js';
import { TARGET_LIMIT_KEYS } from '../../runtime/gpu/target.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Graph, type Node } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { IrOp } from '../../compiler/ir/ops.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import type { GpuRule, Kernel, KernelChain, Target } from '../../compiler/codegen/types.js';
import { schedule, type ScheduleOptions } from '../../compiler/codegen/schedule.js';
import { planMemory } from '../../compiler/plan/memory.js';
import { GPU_RULES } from '../../kernels/index.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { bitwiseDifference } from '../passes/graphs.js';

// ---------------------------------------------------------------------------------------------- device

export interface GpuContext {
  readonly device: GPUDevice;
  readonly adapter: GPUAdapter;
  /** The Target read from the adapter (the device was created with these limits). */
  readonly target: Target;
}

/** Opens visft's device (runtime/gpu/device.ts) before the suite's tests and destroys it after; returns its getter. */
export function sharedDevice(): () => GpuDevice {
  let gpu: GpuDevice | undefined;
  before(async () => {
    gpu = await openDevice();
  });
  after(async () => {
    await gpu?.destroy();
  });
  return () => {
    if (!gpu) throw new Error('the device is not open yet');
    return gpu;
  };
}

const TARGET_LIMITS = TARGET_LIMIT_KEYS;

/** Features the test device is opened with where the adapter has them (the Target lists what was granted). */
const HARNESS_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups'];

let globalsInstalled = false;

/**
 * Creates one Dawn device (vulkan backend on Linux: lavapipe on machines without a GPU), runs `fn` with it
 * and destroys it afterwards, also when `fn` throws.
 */
export async function withDevice<T>(fn: (gpu: GpuContext) => Promise<T>): Promise<T> {
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';
  const mod = await import('webgpu');
  if (!globalsInstalled) {
    Object.assign(globalThis, mod.globals);
    globalsInstalled = true;
  }
  const backend = process.env.VISFT_WEBGPU_BACKEND ?? (process.platform === 'linux' ? 'vulkan' : undefined);
  // Referenced until the device is destroyed (see the note at the end).
  const instance: GPU | null = mod.create(backend ? [`backend=${backend}`] : []);
  const adapter = await instance.requestAdapter();
  if (!adapter) throw new Error(`no WebGPU adapter${backend ? ` for backend=${backend}` : ''} (install Mesa >= 25 lavapipe: scripts/setup.sh)`);
  const requiredLimits: Record<string, number> = {};
  for (const k of TARGET_LIMITS) requiredLimits[k] = adapter.limits[k];
  // The features kernels may enable (`enable subgroups;`, `enable f16;`) when the Target lists them.
  const requiredFeatures = HARNESS_FEATURES.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  let lost: string | undefined;
  device.lost.then(
    (l) => {
      if (l.reason !== 'destroyed') lost = `device lost (${l.reason}): ${l.message}`;
    },
    () => undefined,
  );
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number; isFallbackAdapter?: boolean };
  const limits = {} as Record<(typeof TARGET_LIMITS)[number], number>;
  for (const k of TARGET_LIMITS) limits[k] = device.limits[k];
  const target: Target = {
    name: (info.description || info.device || info.architecture || info.vendor || 'adapter').split(': ')[0],
    isFallbackAdapter: Boolean(info.isFallbackAdapter),
    features: [...device.features].map(String).sort(),
    // Without subgroups the sizes mean nothing (runtime/gpu/target.ts keeps WebGPU's bounds likewise).
    subgroupMinSize: device.features.has('subgroups') && info.subgroupMinSize ? info.subgroupMinSize : 4,
    subgroupMaxSize: device.features.has('subgroups') && info.subgroupMaxSize ? info.subgroupMaxSize : 128,
    subgroupMatrixConfigs: [],
    limits,
  };
  try {
    const r = await fn({ device, adapter, target });
    if (lost) throw new Error(lost);
    return r;
  } finally {
    try {
      await device.queue.onSubmittedWorkDone();
    } catch {
      // a lost device: destroy it anyway
    }
    device.destroy();
    await device.lost;
    // Read after the last await: keeps the GPU instance reachable until the device is gone.
    if (instance === null) throw new Error('unreachable');
  }
}

// ---------------------------------------------------------------------------------------------- running one kernel

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

function wgslLine(wgsl: string, line: number): string {
  const l = wgsl.split('\n')[line - 1];
  return l === undefined ? '' : `\n  ${line} | ${l}`;
}

/** The compute pipeline for a kernel's WGSL, compiled once per device; a compile error names the kernel and line. */
export async function pipelineFor(device: GPUDevice, kernel: Kernel): Promise<GPUComputePipeline> {
  let cache = pipelines.get(device);
  if (!cache) pipelines.set(device, (cache = new Map()));
  const hit = cache.get(kernel.wgsl);
  if (hit) return hit;
  device.pushErrorScope('validation');
  device.pushErrorScope('internal');
  const module = device.createShaderModule({ code: kernel.wgsl, label: kernel.name });
  const pipeline = device.createComputePipeline({ label: kernel.name, layout: 'auto', compute: { module, entryPoint: 'main' } });
  const internal = await device.popErrorScope();
  const validation = await device.popErrorScope();
  if (internal || validation) {
    const info = await module.getCompilationInfo();
    const msgs = info.messages
      .filter((m) => m.type === 'error')
      .map((m) => `${m.lineNum}:${m.linePos}: ${m.message}${wgslLine(kernel.wgsl, m.lineNum)}`);
    const detail = msgs.length ? msgs.join('\n') : [validation?.message, internal?.message].filter(Boolean).join('\n');
    throw new Error(`kernel ${kernel.name}: WGSL pipeline creation failed:\n${detail}`);
  }
  cache.set(kernel.wgsl, pipeline);
  return pipeline;
}

// (GPUBufferUsage is a global only once withDevice has loaded webgpu: read it when a buffer is made.)
const storageUsage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
/** Bytes of a test buffer of `n` f32s: whole 16-byte units, at least one. */
const paddedBytes = (n: number) => Math.max(16, Math.ceil((n * 4) / 16) * 16);

/** A storage buffer holding `data`. */
function uploaded(device: GPUDevice, data: Float32Array): GPUBuffer {
  const buf = device.createBuffer({ size: paddedBytes(data.length), usage: storageUsage() });
  if (data.length) device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
  return buf;
}

/** A storage buffer of `n` f32s poisoned with NaN, so a word no kernel writes shows. */
const poisoned = (device: GPUDevice, n: number): GPUBuffer => uploaded(device, new Float32Array(paddedBytes(n) / 4).fill(NaN));

/** A mappable buffer to copy `n` f32s into, and the function that reads them once the copy is submitted. */
function readback(device: GPUDevice, n: number): { readonly buffer: GPUBuffer; read(): Promise<Float32Array> } {
  const buffer = device.createBuffer({ size: paddedBytes(n), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  return {
    buffer,
    async read() {
      await buffer.mapAsync(GPUMapMode.READ);
      const data = new Float32Array(buffer.getMappedRange().slice(0, n * 4));
      buffer.unmap();
      return data;
    },
  };
}

/**
 * Runs one kernel: inputs bound in order (read), then the output (read_write) of `outputElements` f32s;
 * returns the output. The kernel's bindings must be its inputs then one output.
 */
export async function runKernel(device: GPUDevice, kernel: Kernel, inputs: readonly Float32Array[], outputElements: number): Promise<Float32Array> {
  if (kernel.bindings.length !== inputs.length + 1) {
    throw new Error(`kernel ${kernel.name}: ${kernel.bindings.length} bindings for ${inputs.length} inputs and 1 output`);
  }
  kernel.bindings.forEach((b, i) => {
    const want = i < inputs.length ? 'read' : 'read_write';
    if (b.access !== want) throw new Error(`kernel ${kernel.name}: binding ${i} is ${b.access}, expected ${want}`);
  });
  const pipeline = await pipelineFor(device, kernel);
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  const buffers: GPUBuffer[] = [];
  try {
    buffers.push(...inputs.map((x) => uploaded(device, x)));
    const out = poisoned(device, outputElements);
    buffers.push(out);
    const back = readback(device, outputElements);
    buffers.push(back.buffer);
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.slice(0, inputs.length + 1).map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const enc = device.createCommandEncoder({ label: kernel.name });
    if (kernel.dispatch.every((d) => d > 0)) {
      const pass = enc.beginComputePass({ label: kernel.name });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(kernel.dispatch[0], kernel.dispatch[1], kernel.dispatch[2]);
      pass.end();
    }
    enc.copyBufferToBuffer(out, 0, back.buffer, 0, paddedBytes(outputElements));
    device.queue.submit([enc.finish()]);
    const oom = await device.popErrorScope();
    const validation = await device.popErrorScope();
    if (oom || validation) throw new Error(`kernel ${kernel.name}: ${[validation?.message, oom?.message].filter(Boolean).join('; ')}`);
    return await back.read();
  } finally {
    for (const b of buffers) b.destroy();
  }
}

/** Runs `kernel` on `inputs` (bound first) with one output per size; returns the outputs. */
export async function runKernelOutputs(device: GPUDevice, kernel: Kernel, inputs: readonly Float32Array[], sizes: readonly number[]): Promise<Float32Array[]> {
  assert.equal(kernel.bindings.length, inputs.length + sizes.length, `${kernel.name}: bindings`);
  const pipeline = await pipelineFor(device, kernel);
  const buffers = inputs.map((x) => uploaded(device, x));
  const outs = sizes.map((n) => poisoned(device, n));
  const backs = sizes.map((n) => readback(device, n));
  try {
    device.pushErrorScope('validation');
    const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [...buffers, ...outs].map((buffer, binding) => ({ binding, resource: { buffer } })) });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(...kernel.dispatch);
    pass.end();
    outs.forEach((o, i) => enc.copyBufferToBuffer(o, 0, backs[i].buffer, 0, paddedBytes(sizes[i])));
    device.queue.submit([enc.finish()]);
    const error = await device.popErrorScope();
    if (error) throw new Error(`${kernel.name}: ${error.message}`);
    return await Promise.all(backs.map((b) => b.read()));
  } finally {
    for (const b of [...buffers, ...outs, ...backs.map((r) => r.buffer)]) b.destroy();
  }
}

/**
 * Runs a chain of kernels computing `node` (a ChainGen's result): its inputs' values from `values`, each scratch
 * value in a buffer of its own poisoned with NaN bits (a kernel that reads a word no earlier kernel wrote
 * shows), the kernels in order in one submission; returns the node's value. Checks each kernel's contract
 * (bindings: the node's inputs or scratch read, scratch or the node's value written).
 */
export async function runChain(device: GPUDevice, node: Node, chain: KernelChain, values: ReadonlyMap<number, Float32Array>, target: Target): Promise<Float32Array> {
  const buffers = new Map<number, GPUBuffer>();
  const outElements = numel(node.shape);
  const back = readback(device, outElements);
  try {
    for (const id of node.inputs) if (!buffers.has(id)) buffers.set(id, uploaded(device, values.get(id)!));
    for (const sc of chain.scratch) buffers.set(sc.ref, poisoned(device, sc.words));
    buffers.set(node.id, poisoned(device, outElements));
    const enc = device.createCommandEncoder({ label: chain.kernels.at(-1)?.name });
    device.pushErrorScope('validation');
    for (const kernel of chain.kernels) {
      checkKernelLimits(kernel, target, kernel.name);
      for (const b of kernel.bindings) {
        const scratch = b.value < 0;
        assert.ok(scratch ? chain.scratch.some((sc) => sc.ref === b.value) : b.access === 'read' ? node.inputs.includes(b.value) : b.value === node.id, `${kernel.name}: binds %${b.value} (${b.access})`);
      }
      const pipeline = await pipelineFor(device, kernel);
      const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: kernel.bindings.map((b, binding) => ({ binding, resource: { buffer: buffers.get(b.value)! } })) });
      if (kernel.dispatch.some((d) => d === 0)) continue;
      const pass = enc.beginComputePass({ label: kernel.name });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...kernel.dispatch);
      pass.end();
    }
    enc.copyBufferToBuffer(buffers.get(node.id)!, 0, back.buffer, 0, paddedBytes(outElements));
    device.queue.submit([enc.finish()]);
    const error = await device.popErrorScope();
    if (error) throw new Error(`chain ${chain.kernels.map((k) => k.name).join(', ')}: ${error.message}`);
    return await back.read();
  } finally {
    for (const b of [...buffers.values(), back.buffer]) b.destroy();
  }
}

// ---------------------------------------------------------------------------------------------- against the reference

export type RuleTable = { readonly [K in IrOp]?: GpuRule };

let defaultRules: RuleTable | undefined;

/** GPU_RULES from kernels/index.ts, loaded lazily (so this harness compiles before that file exists). */
export async function gpuRules(): Promise<RuleTable> {
  if (!defaultRules) {
    const path = '../../kernels/index.js';
    const mod = (await import(path)) as { GPU_RULES: RuleTable };
    defaultRules = mod.GPU_RULES;
  }
  return defaultRules;
}

export interface CheckOptions {
  /** Relative tolerance (default 1e-5). */
  rtol?: number;
  /** Absolute tolerance, multiplied by max(1, max |reference|) unless scaleAtol is false (default 1e-6). */
  atol?: number;
  /** Whether atol is scaled by the output's magnitude (default true). */
  scaleAtol?: boolean;
  /** Bit-exact comparison (movement ops, casts, dropout masks). */
  exact?: boolean;
  /** The target kernels are generated for (default: the device's). */
  target?: Target;
  /** The rule table (default: GPU_RULES from kernels/index.ts). */
  rules?: RuleTable;
  /** Extra text for failure messages (e.g. the fast-check case). */
  label?: string;
}

export interface CheckResult {
  readonly gpu: Float32Array;
  readonly ref: Float64Array;
  readonly shape: readonly number[];
  /** The kernels that ran, in order (one per non-leaf, non-alias node). */
  readonly kernels: readonly Kernel[];
}

type TensorLike = { readonly shape: readonly number[]; readonly data: ArrayLike<number> };

/**
 * Builds a graph with inputs `x0`, `x1`, … of the given tensors' shapes (f32), `build` adds the op(s) and
 * returns the output node; runs the CPU reference (on the inputs rounded to f32) and the GPU kernels of
 * every node in order, and compares the output. Throws an AssertionError naming the first mismatch.
 */
export async function checkAgainstReference(
  gpu: GpuContext,
  build: (b: Builder, xs: number[]) => number,
  inputs: readonly TensorLike[],
  opts: CheckOptions = {},
): Promise<CheckResult> {
  const b = new Builder();
  const xs = inputs.map((t, i) => b.input(`x${i}`, t.shape));
  const y = build(b, xs);
  b.output('y', y);
  const f32 = inputs.map((t) => Float32Array.from(t.data as ArrayLike<number>));
  const refIns = new Map<string, RefTensor>(inputs.map((t, i) => [`x${i}`, { shape: [...t.shape], data: Float64Array.from(f32[i]) }]));
  const ref = interpret(b.graph, refIns).get('y')!;
  const { value, kernels } = await runGraph(gpu, b.graph, y, f32, opts);
  const shape = b.graph.node(y).shape;
  compare(value, ref.data, shape, opts, kernels);
  return { gpu: value, ref: ref.data, shape, kernels };
}

/** Runs every node up to `out` with its GPU rule; `inputs` are the graph's `input` nodes' values in order. */
export async function runGraph(
  gpu: GpuContext,
  graph: Graph,
  out: number,
  inputs: readonly Float32Array[],
  opts: Pick<CheckOptions, 'target' | 'rules'> = {},
): Promise<{ value: Float32Array; kernels: Kernel[] }> {
  const rules = opts.rules ?? (await gpuRules());
  const target = opts.target ?? gpu.target;
  const values = new Map<number, Float32Array>();
  graph.inputs.forEach((named, i) => values.set(named.node, inputs[i]));
  const kernels: Kernel[] = [];
  for (const node of graph.nodes) {
    if (node.id > out) break;
    if (values.has(node.id)) continue;
    const rule = rules[node.op];
    if (!rule) throw new Error(`no GPU rule for ${node.op}`);
    const ins: Node[] = node.inputs.map((i) => graph.node(i));
    if (rule.kind === 'leaf') throw new Error(`%${node.id} ${node.op} is a leaf without a value`);
    if (rule.kind === 'alias') {
      values.set(node.id, values.get(node.inputs[0])!);
      continue;
    }
    if (rule.kind === 'chain') {
      const chain = rule.gen(node, ins, target);
      kernels.push(...chain.kernels);
      values.set(node.id, await runChain(gpu.device, node, chain, values, target));
      continue;
    }
    const kernel = rule.gen(node, ins, target);
    checkKernelShape(kernel, node, target);
    kernels.push(kernel);
    values.set(node.id, await runKernel(gpu.device, kernel, node.inputs.map((i) => values.get(i)!), numel(node.shape)));
  }
  return { value: values.get(out)!, kernels };
}

/** The contract every generated kernel keeps: bindings, entry point, limits. */
export function checkKernelShape(kernel: Kernel, node: Node, target: Target): void {
  const [x, y, z] = kernel.workgroupSize;
  const where = `kernel ${kernel.name} for %${node.id} ${node.op}`;
  checkKernelLimits(kernel, target, where);
  assert.deepEqual(
    kernel.bindings.map((b) => b.value),
    [...node.inputs, node.id],
    `${where}: bindings must be the inputs then the output`,
  );
  assert.match(kernel.wgsl, /fn main\s*\(/, `${where}: no entry point main`);
  const m = /@workgroup_size\(([^)]*)\)/.exec(kernel.wgsl);
  assert.ok(m, `${where}: no @workgroup_size`);
  const declared = m[1].split(',').map((s) => Number(s.trim()));
  while (declared.length < 3) declared.push(1);
  assert.deepEqual(declared, [x, y, z], `${where}: @workgroup_size(${m[1]}) does not match workgroupSize`);
}

/** A kernel's workgroup, dispatch and bindings within the target's limits. */
function checkKernelLimits(kernel: Kernel, target: Target, where: string): void {
  const [x, y, z] = kernel.workgroupSize;
  const L = target.limits;
  assert.ok(x * y * z <= L.maxComputeInvocationsPerWorkgroup, `${where}: workgroup ${x}x${y}x${z} exceeds ${L.maxComputeInvocationsPerWorkgroup} invocations`);
  assert.ok(x <= L.maxComputeWorkgroupSizeX && y <= L.maxComputeWorkgroupSizeY && z <= L.maxComputeWorkgroupSizeZ, `${where}: workgroup size over the limits`);
  assert.ok(kernel.dispatch.every((d) => d <= L.maxComputeWorkgroupsPerDimension), `${where}: dispatch ${kernel.dispatch.join('x')} over maxComputeWorkgroupsPerDimension`);
  assert.ok(kernel.bindings.length <= L.maxStorageBuffersPerShaderStage, `${where}: ${kernel.bindings.length} storage bindings`);
}

function fmtNum(v: number): string {
  return Number.isNaN(v) ? 'NaN' : String(v);
}

/**
 * Compares GPU f32 output with the float64 reference rounded to f32: |gpu - ref| <= atol + rtol·|ref|, NaN
 * matches NaN, infinities must match exactly; `exact` wants the same f32 (either zero matches the other).
 */
export function compare(gpuOut: Float32Array, ref: ArrayLike<number>, shape: readonly number[], opts: CheckOptions = {}, kernels: readonly Kernel[] = []): void {
  const names = kernels.map((k) => k.name).join(', ') || '(no kernel)';
  const label = opts.label ? ` [${opts.label}]` : '';
  assert.equal(gpuOut.length, ref.length, `${names}${label}: ${gpuOut.length} values, reference has ${ref.length}`);
  const rtol = opts.rtol ?? 1e-5;
  let maxAbs = 0;
  for (let i = 0; i < ref.length; i++) if (Number.isFinite(Math.fround(ref[i]))) maxAbs = Math.max(maxAbs, Math.abs(ref[i]));
  const atol = (opts.atol ?? 1e-6) * (opts.scaleAtol === false ? 1 : Math.max(1, maxAbs));
  for (let i = 0; i < ref.length; i++) {
    const g = gpuOut[i];
    // The ideal f32 result is the reference rounded to f32 (which also overflows to ±inf like f32 does).
    const r = Math.fround(ref[i]);
    let ok: boolean;
    if (opts.exact) ok = Object.is(g, r) || (Number.isNaN(g) && Number.isNaN(r)) || (g === 0 && r === 0);
    else if (Number.isNaN(r) || Number.isNaN(g)) ok = Number.isNaN(r) && Number.isNaN(g);
    else if (!Number.isFinite(r) || !Number.isFinite(g)) ok = g === r;
    else ok = Math.abs(g - r) <= atol + rtol * Math.abs(r);
    if (!ok) {
      assert.fail(
        `${names}${label}: output [${shape.join(', ')}] differs at flat index ${i}: gpu ${fmtNum(g)}, reference ${fmtNum(r)}` +
          ` (|diff| ${Math.abs(g - r)}, rtol ${rtol}, atol ${atol}${opts.exact ? ', exact' : ''})`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------- random data

export { makeRng };

/** A tensor of `shape` with uniform values in [lo, hi), rounded to f32. */
export function randomTensor(shape: readonly number[], seed: number, lo = -2, hi = 2): { shape: number[]; data: Float32Array } {
  const rng = makeRng(seed);
  const n = numel(shape);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = lo + (hi - lo) * rng();
  return { shape: [...shape], data };
}

/** Whole numbers in [0, n) stored as f32 (gather / scatter_add indices). */
export function randomIndex(shape: readonly number[], n: number, seed: number): { shape: number[]; data: Float32Array } {
  const rng = makeRng(seed);
  const data = new Float32Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(rng() * n);
  return { shape: [...shape], data };
}

/** A graph scheduled for `target` with its memory plan, as the executor takes it (fusion options as schedule's). */
export function scheduledProgram(graph: Graph, target: Target, opts: ScheduleOptions) {
  const s = schedule(graph, target, GPU_RULES, opts);
  return { target, schedule: s, plan: planMemory({ values: s.values, schedule: s.kernels, aliases: s.aliases }, target) };
}

/** f32 agreement of a K-long product with the reference: relative to each output's largest value (as the differential test). */
export function matmulMismatch(expected: ReadonlyMap<string, RefTensor>, actual: ReadonlyMap<string, RefTensor>, k: number): string | undefined {
  for (const [name, e] of expected) {
    const a = actual.get(name)!;
    let scale = 1e-30;
    for (const v of e.data) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < e.data.length; i++) {
      if (!(Math.abs(e.data[i] - a.data[i]) <= 2e-6 * Math.sqrt(k) * scale + 2e-5 * Math.abs(e.data[i]))) return `${name}[${i}]: ${a.data[i]} vs ${e.data[i]} (scale ${scale})`;
    }
  }
  return undefined;
}

/** Within `tol(i)` of the reference, NaN exactly where it is NaN; returns the largest error over the bound. */
export function assertWithin(actual: Float32Array, expected: ArrayLike<number>, tol: (i: number) => number, what: string): number {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const [a, e] = [actual[i], expected[i]];
    if (Number.isNaN(e) || Number.isNaN(a)) {
      assert.ok(Number.isNaN(a) && Number.isNaN(e), `${what}: element ${i} is ${a}, expected ${e}`);
      continue;
    }
    const err = Math.abs(a - e);
    if (!(err <= tol(i))) assert.fail(`${what}: element ${i} is ${a}, expected ${e} (error ${err} over the bound ${tol(i)})`);
    worst = Math.max(worst, err / tol(i));
  }
  return worst;
}

/** Equal bit for bit (any NaN equals any NaN). */
export function assertBitwise(actual: Float32Array, expected: Float32Array, what: string): void {
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const e = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  assert.equal(a.length, e.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i] && !(Number.isNaN(actual[i]) && Number.isNaN(expected[i]))) assert.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]} bit for bit`);
  }
}

// ---------------------------------------------------------------------------------------------- different kernels, same sums

/** One ulp of 1 in f32 (2^-23). */
const F32_EPS = 2 ** -23;

/**
 * On a hardware adapter, how far apart two *different* kernels that compute the same sums in the same order may
 * be: this many ulps of the output's largest |value|, times √terms (the length of the longest chain of sums
 * behind it).
 *
 * Why not 0: WGSL fixes the rounding of +, - and * only; x / y (2.5 ulps), sqrt, exp and log may be a few ulps
 * off, and a driver's compiler may lower the same expression differently in two shaders (reciprocal-multiply,
 * rsqrt, which parts it contracts, by context). The kernels spell their fmas and guard stored values with
 * `kept` (kernels/fused.ts), which is enough for lavapipe but not NVIDIA's compiler: on an H200, the same
 * layernorm code in the row kernel and in the row-product kernel gave 25 of 595 values up to 32 ulps apart
 * (about one ulp of the row's scale), while each kernel run twice was bit for bit. Such differences enter each
 * sum as independent terms of either sign, so over K terms they grow like √K ulps of the values' scale. Measured
 * there (test/codegen/attention-lse.test.ts, lora-fusion.test.ts): at most 0.2 of this bound. A real bug (a term
 * missing, doubled or misplaced) moves a result by about scale/√K, far beyond it at these K.
 */
export const HARDWARE_ULPS_PER_ROOT_TERM = 4;

/** The largest |value| of the finite elements (the scale a sum's rounding is relative to). */
function finiteScale(values: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i])) scale = Math.max(scale, Math.abs(values[i]));
  return scale;
}

/**
 * Two different kernels computing the same sums in the same order agree: bit for bit on a software adapter
 * (lavapipe's LLVM, with the `kept` guards, keeps every WGSL operation as written), and on hardware within
 * HARDWARE_ULPS_PER_ROOT_TERM ulps of the output's scale per √terms, NaN and ±∞ exactly where the other has them.
 * `deviceTarget` is the Target of the device that ran both (its compiler is what matters, not the codegen
 * target). Returns the largest difference as a fraction of the bound (0 on a software adapter).
 *
 * Not for one kernel run twice: a repeat is bit for bit everywhere (assertBitwise).
 */
export function assertKernelsAgree(deviceTarget: Target, actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, terms: number): number {
  if (!(terms >= 1)) throw new Error(`assertKernelsAgree(${what}): terms must be at least 1, got ${terms}`);
  assert.equal(actual.length, expected.length, `${what}: length`);
  if (deviceTarget.isFallbackAdapter) {
    assertBitwise(Float32Array.from(actual), Float32Array.from(expected), `${what} (software adapter: IEEE operation order)`);
    return 0;
  }
  const bound = HARDWARE_ULPS_PER_ROOT_TERM * F32_EPS * Math.sqrt(terms) * finiteScale(expected);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const [a, e] = [actual[i], expected[i]];
    if (!Number.isFinite(a) || !Number.isFinite(e)) {
      if (!(Object.is(a, e) || (Number.isNaN(a) && Number.isNaN(e)))) assert.fail(`${what}: element ${i} is ${a}, expected ${e}`);
      continue;
    }
    const err = Math.abs(a - e);
    if (err > bound) {
      assert.fail(`${what}: element ${i} is ${a}, expected ${e} (difference ${err} over ${HARDWARE_ULPS_PER_ROOT_TERM} ulps of the scale per √${terms} terms: ${bound})`);
    }
    if (bound > 0) worst = Math.max(worst, err / bound);
  }
  return worst;
}

/** How two schedules of one graph must agree (assertSchedulesAgree). */
export interface ScheduleAgreement {
  /**
   * The longest sum behind an output when the schedules put its arithmetic in different kernels (fused vs
   * unfused products, reductions, epilogues): assertKernelsAgree. Leave it out where they only move data
   * differently (views, copies): then bit for bit on every device.
   */
  readonly terms?: number;
}

/**
 * Runs `graph` through the executor scheduled two ways (fusion options) and asserts every output equal bit for
 * bit, or, with `agreement.terms`, as assertKernelsAgree (bitwise on a software adapter); returns the first
 * program.
 */
export async function assertSchedulesAgree(
  gpu: GpuDevice,
  graph: Graph,
  feeds: { readonly inputs: ReadonlyMap<string, RefTensor>; readonly params?: ReadonlyMap<string, RefTensor> },
  a: ScheduleOptions,
  b: ScheduleOptions,
  what: string,
  agreement: ScheduleAgreement = {},
) {
  const params = feeds.params ?? new Map<string, RefTensor>();
  const first = scheduledProgram(graph, gpu.target, a);
  const ra = await runGpu(gpu, graph, first, feeds.inputs, params);
  const rb = await runGpu(gpu, graph, scheduledProgram(graph, gpu.target, b), feeds.inputs, params);
  if (agreement.terms === undefined) {
    const d = bitwiseDifference(rb, ra);
    assert.equal(d, undefined, `${what}: ${d}`);
    return first;
  }
  for (const [name, x] of ra) {
    const y = rb.get(name);
    assert.ok(y, `${what}: output ${name} is missing`);
    assert.deepEqual(y.shape, x.shape, `${what}: output ${name}: shape`);
    assertKernelsAgree(gpu.target, y.data, x.data, `${what}: output ${name}`, agreement.terms);
  }
  return first;
}

/**
 * A training step's outputs against the interpreter's: the loss within `lossRel` of it (relative), and every
 * gradient (outputs named d:…) within `gradRel` of its largest value.
 */
export function assertStepNear(out: ReadonlyMap<string, RefTensor>, ref: ReadonlyMap<string, RefTensor>, lossRel: number, gradRel: number): void {
  const loss = [out.get('loss')!.data[0], ref.get('loss')!.data[0]];
  assert.ok(Math.abs(loss[0] - loss[1]) <= lossRel * Math.abs(loss[1]), `loss ${loss[0]} vs the interpreter's ${loss[1]}`);
  for (const [name, r] of ref) {
    if (!name.startsWith('d:')) continue;
    const scale = Math.max(...r.data.map(Math.abs));
    const worst = Math.max(...r.data.map((v, i) => Math.abs(v - out.get(name)!.data[i])));
    assert.ok(worst <= gradRel * scale, `${name}: worst error ${worst}, largest value ${scale}`);
  }
}
