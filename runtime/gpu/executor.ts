// Runs a kernel schedule on a device per a memory plan: one GPU buffer per arena, every pipeline compiled up
// front, one bind group per kernel binding {buffer, offset, size} from the plan; a run uploads inputs (and
// parameters when given), encodes every dispatch in order in one compute pass, copies the requested values
// into a reused MAP_READ staging buffer and reads them back.
import type { Kernel } from '../../compiler/codegen/types.js';
import { checkPlanFits, formatBytes, type MemoryPlan, type PlanValue, type PlannedValue } from '../../compiler/plan/memory.js';
import type { GpuDevice } from './device.js';
import { compilePipeline, GpuError, GpuOutOfMemoryError, withErrorScopes, type CompiledKernel } from './errors.js';
import { fromF16, toF16 } from './half.js';

interface Step {
  readonly kernel: Kernel;
  readonly compiled: CompiledKernel;
  readonly bindGroup: GPUBindGroup;
}

type ValueInfo = readonly PlanValue[] | ReadonlyMap<number, PlanValue>;

const bytesPerElement = (v: PlannedValue): number => (v.dtype === 'f16' ? 2 : 4);
const label = (v: { id: number; name?: string }): string => (v.name ? `%${v.id} (${v.name})` : `%${v.id}`);

/** A plain-ArrayBuffer copy of a view (dawn.node crashes on writeBuffer from a SharedArrayBuffer view). */
function plainBytes(data: ArrayBufferView, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  out.set(new Uint8Array(data.buffer, data.byteOffset, Math.min(data.byteLength, bytes)));
  return out;
}

export class Executor {
  private readonly uploaded = new Set<number>();
  private staging: GPUBuffer | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private destroyed = false;

  private constructor(
    readonly gpu: GpuDevice,
    readonly plan: MemoryPlan,
    private readonly values: Map<number, PlannedValue>,
    private readonly arenas: GPUBuffer[],
    private readonly steps: Step[],
  ) {}

  /**
   * Checks the plan against the device, creates the arenas (an out-of-memory error names the arena and the
   * plan's total), compiles every distinct kernel (KernelCompileError on failure) and creates the bind groups.
   * `valueInfo` may override names and storage dtypes; the plan's own value table is used otherwise.
   */
  static async create(gpu: GpuDevice, kernels: readonly Kernel[], plan: MemoryPlan, valueInfo?: ValueInfo): Promise<Executor> {
    gpu.checkAlive('preparing kernels');
    const device = gpu.device;
    const limits = gpu.target.limits;
    checkPlanFits(plan, gpu.target);

    const values = new Map(plan.values);
    const extra = valueInfo === undefined ? [] : Array.isArray(valueInfo) ? (valueInfo as readonly PlanValue[]) : [...(valueInfo as ReadonlyMap<number, PlanValue>).values()];
    for (const v of extra) {
      const p = values.get(v.id);
      if (!p) continue;
      values.set(v.id, { ...p, ...(v.name !== undefined ? { name: v.name } : {}), ...(v.dtype !== undefined ? { dtype: v.dtype } : {}) });
    }

    for (const k of kernels) {
      if (k.bindings.length > limits.maxStorageBuffersPerShaderStage) {
        throw new GpuError(`kernel '${k.name}' binds ${k.bindings.length} buffers but the device allows ${limits.maxStorageBuffersPerShaderStage} (maxStorageBuffersPerShaderStage)`, `preparing kernel '${k.name}'`, 'validation');
      }
      for (const [axis, n] of k.dispatch.entries()) {
        if (!Number.isInteger(n) || n < 0 || n > limits.maxComputeWorkgroupsPerDimension) {
          throw new GpuError(`kernel '${k.name}' dispatches ${n} workgroups along ${'xyz'[axis]} but the device allows ${limits.maxComputeWorkgroupsPerDimension} (maxComputeWorkgroupsPerDimension)`, `preparing kernel '${k.name}'`, 'validation');
        }
      }
      for (const b of k.bindings) {
        if (!plan.placement.has(b.value)) throw new GpuError(`kernel '${k.name}' binds %${b.value}, which the memory plan does not place`, `preparing kernel '${k.name}'`, 'validation');
      }
    }

    const arenas: GPUBuffer[] = [];
    try {
      for (const [i, a] of plan.arenas.entries()) {
        const what = `creating arena ${i} '${a.label}' (${formatBytes(a.size)})`;
        try {
          arenas.push(
            await withErrorScopes(device, what, () =>
              device.createBuffer({ label: `visft arena ${i} ${a.label}`, size: a.size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }),
            ),
          );
        } catch (e) {
          if (e instanceof GpuOutOfMemoryError) {
            throw new GpuOutOfMemoryError(
              `out of GPU memory creating buffer 'arena ${i} ${a.label}' of ${formatBytes(a.size)}: the plan needs ${formatBytes(plan.peakBytes)} in all but the device (${gpu.info.name}) could not allocate it`,
              what,
            );
          }
          throw e;
        }
      }

      // Compile every distinct kernel (same WGSL and binding access → one pipeline), concurrently.
      const byKey = new Map<string, Promise<CompiledKernel>>();
      const compiled = kernels.map((k) => {
        const key = `${k.bindings.map((b) => b.access).join(',')}\n${k.wgsl}`;
        let p = byKey.get(key);
        if (!p) (p = compilePipeline(device, k)), byKey.set(key, p);
        return p;
      });
      const settled = await Promise.allSettled(compiled);
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
      const pipelines = settled.map((s) => (s as PromiseFulfilledResult<CompiledKernel>).value);

      const steps: Step[] = [];
      for (const [i, k] of kernels.entries()) {
        const c = pipelines[i];
        const bindGroup = await withErrorScopes(device, `binding the buffers of kernel '${k.name}'`, () =>
          device.createBindGroup({
            label: k.name,
            layout: c.layout,
            entries: k.bindings.map((b, j) => {
              const p = plan.placement.get(b.value)!;
              return { binding: j, resource: { buffer: arenas[p.arena], offset: p.offset, size: p.size } };
            }),
          }),
        );
        steps.push({ kernel: k, compiled: c, bindGroup });
      }
      return new Executor(gpu, plan, values, arenas, steps);
    } catch (e) {
      for (const b of arenas) b.destroy();
      throw gpu.lostError('preparing kernels') ?? e;
    }
  }

  get kernelCount(): number {
    return this.steps.length;
  }

  /** Uploads parameters now; later runs reuse them. */
  setParams(params: ReadonlyMap<number, ArrayLike<number> & ArrayBufferView>): void {
    this.checkUsable('uploading parameters');
    for (const [id, data] of params) this.upload(id, data, 'param');
  }

  /**
   * Runs the schedule: uploads `params` (if any; otherwise those of an earlier run or setParams) and every
   * input, runs every kernel in order, and reads back `outputs` (outputs, inputs or params; temps' storage is
   * reused, so they cannot be read back).
   */
  run(inputs: ReadonlyMap<number, Float32Array>, params: ReadonlyMap<number, Float32Array>, outputs: readonly number[]): Promise<Map<number, Float32Array>> {
    const next = this.queue.then(() => this.runNow(inputs, params, outputs));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runNow(inputs: ReadonlyMap<number, Float32Array>, params: ReadonlyMap<number, Float32Array>, outputs: readonly number[]): Promise<Map<number, Float32Array>> {
    this.checkUsable('running kernels');
    const device = this.gpu.device;

    for (const [id, data] of params) this.upload(id, data, 'param');
    for (const [id, data] of inputs) this.upload(id, data, 'input');
    for (const v of this.values.values()) {
      if (v.root !== v.id || !this.plan.placement.has(v.id)) continue;
      if (v.kind === 'input' && !inputs.has(v.id) && !this.uploaded.has(v.id)) throw new Error(`missing input ${label(v)}`);
      if (v.kind === 'param' && !this.uploaded.has(v.id)) throw new Error(`parameter ${label(v)} was never uploaded (pass it to run or setParams)`);
    }

    const reads = outputs.map((id) => {
      const v = this.values.get(id);
      const p = this.plan.placement.get(id);
      if (!v || !p) throw new Error(`cannot read back %${id}: the memory plan has no storage for it`);
      if (v.kind === 'temp' && !v.wholeRun) throw new Error(`cannot read back temp ${label(v)}: its storage is reused; only outputs, inputs and parameters can be read back`);
      return { v, p };
    });
    const offsets: number[] = [];
    let total = 0;
    for (const r of reads) (offsets.push(total), (total += r.p.size));
    if (total > 0 && (!this.staging || this.staging.size < total)) {
      this.staging?.destroy();
      this.staging = await withErrorScopes(device, `creating the ${formatBytes(total)} readback buffer`, () =>
        device.createBuffer({ label: 'visft readback', size: total, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
      );
    }

    const what = `running ${this.steps.length} kernel(s)`;
    await withErrorScopes(device, what, () => {
      const encoder = device.createCommandEncoder({ label: 'visft run' });
      if (this.steps.length > 0) {
        const pass = encoder.beginComputePass({ label: 'visft kernels' });
        for (const s of this.steps) {
          const [x, y, z] = s.kernel.dispatch;
          if (x === 0 || y === 0 || z === 0) continue;
          pass.setPipeline(s.compiled.pipeline);
          pass.setBindGroup(0, s.bindGroup);
          pass.dispatchWorkgroups(x, y, z);
        }
        pass.end();
      }
      reads.forEach((r, i) => encoder.copyBufferToBuffer(this.arenas[r.p.arena], r.p.offset, this.staging!, offsets[i], r.p.size));
      device.queue.submit([encoder.finish()]);
    });

    const result = new Map<number, Float32Array>();
    if (total > 0) {
      const staging = this.staging!;
      await this.gpu.whileAlive(staging.mapAsync(GPUMapMode.READ, 0, total), what);
      try {
        const mapped = staging.getMappedRange(0, total);
        reads.forEach((r, i) => {
          const n = r.v.bytes / bytesPerElement(r.v);
          result.set(r.v.id, r.v.dtype === 'f16' ? fromF16(new Uint16Array(mapped.slice(offsets[i], offsets[i] + n * 2))) : new Float32Array(mapped.slice(offsets[i], offsets[i] + n * 4)));
        });
      } finally {
        staging.unmap();
      }
    } else {
      await this.gpu.whileAlive(device.queue.onSubmittedWorkDone(), what);
    }
    if (this.gpu.uncapturedErrors.length > 0) {
      throw new GpuError(`uncaptured GPU error(s) during the run: ${this.gpu.uncapturedErrors.splice(0).join('; ')}`, what, 'validation');
    }
    return result;
  }

  private upload(id: number, data: ArrayLike<number> & ArrayBufferView, kind: 'param' | 'input'): void {
    const v = this.values.get(id);
    const p = this.plan.placement.get(id);
    if (!v || !p) throw new Error(`cannot upload %${id}: the memory plan has no storage for it`);
    if (v.kind !== kind) throw new Error(`${label(v)} is a ${v.kind}, not a ${kind}`);
    const n = v.bytes / bytesPerElement(v);
    if (data.length !== n) throw new Error(`${kind} ${label(v)} has ${data.length} elements, expected ${n}`);
    let bytes: ArrayBufferView;
    if (v.dtype === 'f16') bytes = toF16(data instanceof Float32Array ? data : Float32Array.from(data));
    else if (data instanceof Float32Array) bytes = data;
    else bytes = Float32Array.from(data);
    // writeBuffer needs a multiple of 4 bytes and a plain ArrayBuffer.
    const size = p.size;
    const plain = bytes.byteLength === size && !(bytes.buffer instanceof SharedArrayBuffer) ? bytes : plainBytes(bytes, size);
    this.gpu.device.queue.writeBuffer(this.arenas[p.arena], p.offset, plain.buffer, plain.byteOffset, size);
    this.uploaded.add(id);
  }

  private checkUsable(what: string): void {
    if (this.destroyed) throw new Error('this executor was destroyed');
    this.gpu.checkAlive(what);
  }

  /** Frees the arenas and the staging buffer (the device stays open). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const b of this.arenas) b.destroy();
    this.staging?.destroy();
    this.staging = undefined;
  }
}
