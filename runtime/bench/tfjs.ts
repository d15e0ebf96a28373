// The bench's peer: TensorFlow.js's WebGPU backend (@tensorflow/tfjs-backend-webgpu) on visft's own
// GPUDevice, so both run on the same device, with the same toggles (profiling: timestamps not quantised), in
// the same process.
//
// - tfjs registers its 'webgpu' backend only where `navigator.gpu` exists, and its constructor checks for it;
//   Node has no navigator.gpu (Node 20 no navigator at all; Node 21+ a read-only one), so `navigator.gpu` is
//   defined just while the backend is constructed, and removed again.
// - Any backend named 'webgpu' is removed and ours registered under that name; `dispose` removes it (which
//   frees tfjs's buffers, never the device: visft destroys that).
// - WEBGPU_CPU_FORWARD is turned off: tfjs otherwise runs ops on small, not yet uploaded tensors on the CPU.
// - Timing: tf.time() puts every tfjs program in its own compute pass with timestamp writes and reports the
//   sum of their GPU durations (kernelMs): the same measure as visft's timed passes. Wall time is n calls, a
//   flush of tfjs's pending commands (its public submitQueue) and queue.onSubmittedWorkDone(), divided by n.
import type * as TfCore from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import type { GpuDevice } from '../gpu/device.js';
import { errorMessage } from '../gpu/errors.js';

export type Tf = typeof TfCore;
export type Tensor = TfCore.Tensor;
/** One call of the peer: the row's outputs. */
export type PeerFn = () => Tensor[];

export const TFJS_BACKEND = 'webgpu';

export interface TfjsPeer {
  /** The backend package. */
  readonly name: string;
  /** tfjs-core's version, e.g. `4.22.0`. */
  readonly version: string;
  readonly tf: Tf;
  /** Whether tf.time() reports GPU timestamps (the device has timestamp-query). */
  readonly timestamps: boolean;
  /** Runs `fn` once and reads back its results as f32. */
  result(fn: PeerFn): Promise<Float32Array[]>;
  /** Untimed calls, then waits for the GPU. */
  warm(fn: PeerFn, n: number): Promise<void>;
  /** `n` calls (default 1) back to back under tf.time(): the GPU ms per call, and one call's programs in order. */
  timestamped(fn: PeerFn, n?: number): Promise<{ readonly ms: number; readonly programs: string[] }>;
  /** `n` calls back to back, flushed and waited for: wall ms per call (includes tfjs's CPU-side work). */
  wall(fn: PeerFn, n: number): Promise<number>;
  dispose(): void;
}

export class PeerUnavailableError extends Error {
  override name = 'PeerUnavailableError';
}

/** Runs `fn` while `navigator.gpu` is `gpu` (tfjs's WebGPU check), restoring the global afterwards. */
function withNavigatorGpu<T>(gpu: GPU, fn: () => T): T {
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (g.navigator?.gpu) return fn();
  const onGlobal = g.navigator === undefined;
  if (onGlobal) Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true, enumerable: false });
  else Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true, writable: true, enumerable: false });
  try {
    return fn();
  } finally {
    if (onGlobal) delete g.navigator;
    else delete g.navigator!.gpu;
  }
}

/** Loads tfjs and registers its WebGPU backend on `gpu`'s device. Throws PeerUnavailableError when tfjs is missing. */
export async function attachTfjs(gpu: GpuDevice): Promise<TfjsPeer> {
  let tf: Tf;
  let Backend: typeof WebGPUBackend;
  try {
    tf = await import('@tensorflow/tfjs-core');
    Backend = (await import('@tensorflow/tfjs-backend-webgpu')).WebGPUBackend;
  } catch (e) {
    throw new PeerUnavailableError(`cannot load @tensorflow/tfjs-core and @tensorflow/tfjs-backend-webgpu (npm install them): ${errorMessage(e)}`);
  }
  if (tf.findBackend(TFJS_BACKEND)) tf.removeBackend(TFJS_BACKEND);
  const backend = withNavigatorGpu(gpu.gpu, () => new Backend(gpu.device, gpu.adapter.info));
  tf.registerBackend(TFJS_BACKEND, () => backend, 100);
  if (!(await tf.setBackend(TFJS_BACKEND))) throw new PeerUnavailableError('tfjs did not accept its WebGPU backend on this device');
  tf.env().set('WEBGPU_CPU_FORWARD', false);
  const timestamps = gpu.device.features.has('timestamp-query');

  /** Submits whatever tfjs has encoded and waits for the queue. */
  const drain = async (what: string): Promise<void> => {
    backend.ensureCommandEncoderReady();
    backend.endComputePassEncoder();
    backend.submitQueue();
    await gpu.whileAlive(gpu.device.queue.onSubmittedWorkDone(), what);
  };
  const once = (fn: PeerFn): void => {
    tf.tidy(() => {
      fn();
    });
  };

  return {
    name: '@tensorflow/tfjs-backend-webgpu',
    version: tf.version_core,
    tf,
    timestamps,
    async result(fn) {
      const ts = tf.tidy(fn); // intermediates (moments, ...) freed, the results kept
      try {
        const out: Float32Array[] = [];
        for (const t of ts) {
          const d = await t.data();
          out.push(d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>));
        }
        return out;
      } finally {
        for (const t of ts) t.dispose();
      }
    },
    async warm(fn, n) {
      for (let i = 0; i < n; i++) once(fn);
      await drain('warming up tfjs');
    },
    async timestamped(fn, n = 1) {
      if (!timestamps) throw new Error('the device has no timestamp-query');
      const calls = Math.max(1, n);
      const info = await tf.time(() => {
        for (let i = 0; i < calls; i++) once(fn);
      });
      if (typeof info.kernelMs !== 'number') throw new Error(`tfjs timing failed: ${info.kernelMs.error}`);
      const all = (info.getExtraProfileInfo?.() ?? '').split(', ').filter(Boolean).map((p) => p.replace(/: [^:]*$/, ''));
      return { ms: info.kernelMs / calls, programs: all.slice(0, all.length / calls) };
    },
    async wall(fn, n) {
      await drain('timing tfjs');
      const t0 = performance.now();
      for (let i = 0; i < n; i++) once(fn);
      await drain('timing tfjs on the wall clock');
      return (performance.now() - t0) / Math.max(1, n);
    },
    dispose() {
      if (tf.findBackend(TFJS_BACKEND) === backend) tf.removeBackend(TFJS_BACKEND);
    },
  };
}
