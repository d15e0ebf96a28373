// Timing a compiled program on the GPU: the executor's layout (one buffer per arena of the memory plan, every
// kernel's pipeline, one bind group per kernel) without its per-run upload and readback, so that only the
// dispatches are timed. The executor has no per-kernel timing, so this encodes the same dispatches itself:
// each timed iteration is one compute pass with timestamp writes at its start and end (GPU time), and a
// separate batch of passes is timed on the wall clock to queue.onSubmittedWorkDone().
//
// The bench checks that this runner's output is bitwise the executor's (same kernels, same plan, same device:
// every kernel sums in a fixed order), so what is timed is what `visft run` computes.
import type { GpuProgram } from '../../compiler/codegen/gpu.js';
import { formatBytes } from '../../compiler/plan/memory.js';
import type { GpuDevice } from '../gpu/device.js';
import { compilePipeline, GpuError, withErrorScopes, type CompiledKernel } from '../gpu/errors.js';
import { fromF16, toF16 } from '../gpu/half.js';

/** Most timestamp queries in one query set (WebGPU's limit). */
const MAX_QUERIES = 4096;

export const hasTimestamps = (gpu: GpuDevice): boolean => gpu.device.features.has('timestamp-query');

/** A kernel ready to dispatch: its pipeline, bind group and workgroups. */
interface Step {
  readonly name: string;
  readonly compiled: CompiledKernel;
  readonly bindGroup: GPUBindGroup;
  readonly dispatch: readonly [number, number, number];
}

export class TimedProgram {
  private destroyed = false;

  private constructor(
    private readonly gpu: GpuDevice,
    private readonly program: GpuProgram,
    private readonly arenas: GPUBuffer[],
    private readonly steps: Step[],
  ) {}

  /** Creates the arenas, compiles every kernel, binds, and uploads `inputs` (value id → data, f32 values). */
  static async create(gpu: GpuDevice, program: GpuProgram, inputs: ReadonlyMap<number, Float32Array>): Promise<TimedProgram> {
    gpu.checkAlive('preparing the bench');
    const device = gpu.device;
    const { plan } = program;
    const arenas: GPUBuffer[] = [];
    try {
      for (const [i, a] of plan.arenas.entries()) {
        arenas.push(
          await withErrorScopes(device, `creating bench arena ${i} (${formatBytes(a.size)})`, () =>
            device.createBuffer({ label: `visft bench arena ${i} ${a.label}`, size: a.size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }),
          ),
        );
      }
      const kernels = program.schedule.kernels;
      const compiled = await Promise.all(kernels.map((k) => compilePipeline(device, k)));
      const steps = [];
      for (const [i, k] of kernels.entries()) {
        const bindGroup = await withErrorScopes(device, `binding the buffers of kernel '${k.name}'`, () =>
          device.createBindGroup({
            label: k.name,
            layout: compiled[i].layout,
            entries: k.bindings.map((b, j) => {
              const p = plan.placement.get(b.value);
              if (!p) throw new GpuError(`kernel '${k.name}' binds %${b.value}, which the memory plan does not place`, 'preparing the bench', 'validation');
              return { binding: j, resource: { buffer: arenas[p.arena], offset: p.offset, size: p.size } };
            }),
          }),
        );
        steps.push({ name: k.name, compiled: compiled[i], bindGroup, dispatch: k.dispatch });
      }
      const t = new TimedProgram(gpu, program, arenas, steps);
      for (const [id, data] of inputs) t.upload(id, data);
      return t;
    } catch (e) {
      for (const b of arenas) b.destroy();
      throw gpu.lostError('preparing the bench') ?? e;
    }
  }

  /** The device it runs on. */
  get device(): GpuDevice {
    return this.gpu;
  }

  /** Names of the kernels, in schedule order. */
  get kernelNames(): string[] {
    return this.program.schedule.kernels.map((k) => k.name);
  }

  private upload(id: number, data: Float32Array): void {
    const v = this.program.plan.values.get(id);
    const p = this.program.plan.placement.get(id);
    if (!v || !p) throw new Error(`cannot upload %${id}: the memory plan has no storage for it`);
    const src: ArrayBufferView = v.dtype === 'f16' ? toF16(data) : data;
    const bytes = new Uint8Array(p.size); // a plain ArrayBuffer, a multiple of 4 bytes
    bytes.set(new Uint8Array(src.buffer, src.byteOffset, Math.min(src.byteLength, p.size)));
    this.gpu.device.queue.writeBuffer(this.arenas[p.arena], p.offset, bytes.buffer, 0, p.size);
  }

  private encodePass(encoder: GPUCommandEncoder, timestampWrites?: GPUComputePassTimestampWrites): void {
    const pass = encoder.beginComputePass({ label: 'visft bench', ...(timestampWrites ? { timestampWrites } : {}) });
    for (const s of this.steps) {
      const [x, y, z] = s.dispatch;
      if (x === 0 || y === 0 || z === 0) continue;
      pass.setPipeline(s.compiled.pipeline);
      pass.setBindGroup(0, s.bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    }
    pass.end();
  }

  /** Runs every kernel once and reads back the values `ids` (outputs) as f32. */
  async outputs(ids: readonly number[]): Promise<Float32Array[]> {
    this.check();
    const device = this.gpu.device;
    const reads = ids.map((id) => {
      const v = this.program.plan.values.get(id);
      const p = this.program.plan.placement.get(id);
      if (!v || !p) throw new Error(`cannot read back %${id}: the memory plan has no storage for it`);
      return { v, p, staging: device.createBuffer({ label: `visft bench readback %${id}`, size: p.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }) };
    });
    try {
      await withErrorScopes(device, 'running the bench kernels', () => {
        const encoder = device.createCommandEncoder({ label: 'visft bench output' });
        this.encodePass(encoder);
        for (const { p, staging } of reads) encoder.copyBufferToBuffer(this.arenas[p.arena], p.offset, staging, 0, p.size);
        device.queue.submit([encoder.finish()]);
      });
      const out: Float32Array[] = [];
      for (const { v, staging } of reads) {
        await this.gpu.whileAlive(staging.mapAsync(GPUMapMode.READ), 'reading the bench output');
        const mapped = staging.getMappedRange().slice(0);
        staging.unmap();
        const n = v.dtype === 'f16' ? v.bytes / 2 : v.bytes / 4;
        out.push(v.dtype === 'f16' ? fromF16(new Uint16Array(mapped, 0, n)) : new Float32Array(mapped, 0, n));
      }
      return out;
    } finally {
      for (const r of reads) r.staging.destroy();
    }
  }

  /** Encodes `n` iterations in one submission and waits for them; wall ms per iteration. */
  private async submitPasses(n: number, what: string): Promise<number> {
    const device = this.gpu.device;
    const t0 = performance.now();
    await withErrorScopes(device, what, () => {
      const encoder = device.createCommandEncoder({ label: `visft bench ${what}` });
      for (let i = 0; i < n; i++) this.encodePass(encoder);
      device.queue.submit([encoder.finish()]);
    });
    await this.gpu.whileAlive(device.queue.onSubmittedWorkDone(), what);
    return (performance.now() - t0) / Math.max(1, n);
  }

  /** Untimed warm-up iterations (shaders are compiled per process, caches fill); wall ms per iteration. */
  async warm(n: number): Promise<number> {
    this.check();
    return n > 0 ? this.submitPasses(n, 'warming up') : 0;
  }

  /** `n` iterations back to back in one submission: wall ms per iteration (includes encoding and submission). */
  async wall(n: number): Promise<number> {
    this.check();
    return this.submitPasses(n, 'timing on the wall clock');
  }

  /** `n` passes (at most 2048), each between two timestamps; their durations in ms. */
  async timestamped(n: number): Promise<number[]> {
    this.check();
    if (n > MAX_QUERIES / 2) throw new Error(`at most ${MAX_QUERIES / 2} timestamped passes at once`);
    const device = this.gpu.device;
    const count = 2 * n;
    const querySet = device.createQuerySet({ label: 'visft bench timestamps', type: 'timestamp', count });
    const resolve = device.createBuffer({ label: 'visft bench timestamps', size: count * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = device.createBuffer({ label: 'visft bench timestamps readback', size: count * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      await withErrorScopes(device, 'timing with timestamp queries', () => {
        const encoder = device.createCommandEncoder({ label: 'visft bench timestamps' });
        for (let i = 0; i < n; i++) this.encodePass(encoder, { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 });
        encoder.resolveQuerySet(querySet, 0, count, resolve, 0);
        encoder.copyBufferToBuffer(resolve, 0, read, 0, count * 8);
        device.queue.submit([encoder.finish()]);
      });
      await this.gpu.whileAlive(read.mapAsync(GPUMapMode.READ), 'reading timestamps');
      const ts = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push(Number(ts[2 * i + 1] - ts[2 * i]) / 1e6);
      return out;
    } finally {
      querySet.destroy();
      resolve.destroy();
      read.destroy();
    }
  }

  /**
   * `n` iterations with every kernel in its own pass between two timestamps: each kernel's median GPU ms, in
   * schedule order (where a row's time goes; passes of their own add a little per kernel). Submitted in chunks of
   * at most `chunk` (MAX_QUERIES / 2) passes, so a whole model's step (thousands of kernels) is timed too.
   */
  async kernelTimes(n: number, chunk = MAX_QUERIES / 2): Promise<{ readonly name: string; readonly ms: number }[]> {
    this.check();
    const live = this.steps.filter((s) => s.dispatch.every((d) => d > 0));
    const samples = live.map(() => [] as number[]);
    for (let i = 0; i < n; i++) {
      for (let first = 0; first < live.length; first += chunk) {
        const times = await this.passTimes(live.slice(first, first + chunk));
        times.forEach((ms, k) => samples[first + k].push(ms));
      }
    }
    return live.map((step, k) => ({ name: step.name, ms: [...samples[k]].sort((a, b) => a - b)[Math.floor(n / 2)] }));
  }

  /** One pass per step, each between two timestamps, in one submission: their GPU ms. */
  private async passTimes(steps: readonly Step[]): Promise<number[]> {
    const device = this.gpu.device;
    const count = 2 * steps.length;
    const querySet = device.createQuerySet({ label: 'visft bench kernel timestamps', type: 'timestamp', count });
    const resolve = device.createBuffer({ label: 'visft bench kernel timestamps', size: 8 * count, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = device.createBuffer({ label: 'visft bench kernel timestamps readback', size: 8 * count, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      await withErrorScopes(device, 'timing each kernel', () => {
        const encoder = device.createCommandEncoder({ label: 'visft bench kernel timestamps' });
        steps.forEach((s, q) => {
          const pass = encoder.beginComputePass({ label: 'visft bench kernel', timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * q, endOfPassWriteIndex: 2 * q + 1 } });
          pass.setPipeline(s.compiled.pipeline);
          pass.setBindGroup(0, s.bindGroup);
          pass.dispatchWorkgroups(...s.dispatch);
          pass.end();
        });
        encoder.resolveQuerySet(querySet, 0, count, resolve, 0);
        encoder.copyBufferToBuffer(resolve, 0, read, 0, 8 * count);
        device.queue.submit([encoder.finish()]);
      });
      await this.gpu.whileAlive(read.mapAsync(GPUMapMode.READ), 'reading kernel timestamps');
      const ts = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      return steps.map((_, q) => Number(ts[2 * q + 1] - ts[2 * q]) / 1e6);
    } finally {
      querySet.destroy();
      resolve.destroy();
      read.destroy();
    }
  }

  private check(): void {
    if (this.destroyed) throw new Error('this bench program was destroyed');
    this.gpu.checkAlive('running the bench');
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const b of this.arenas) b.destroy();
  }
}
