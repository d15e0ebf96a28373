// GPU errors with context: every Dawn call that can fail runs inside validation, out-of-memory and internal
// error scopes, and a failure names what was being done (a kernel, a buffer) instead of surfacing later as an
// uncaptured error.
import type { Kernel } from '../../compiler/codegen/types.js';

export type GpuErrorKind = 'validation' | 'out-of-memory' | 'internal' | 'lost' | 'compile';

export class GpuError extends Error {
  override name = 'GpuError';
  constructor(
    message: string,
    /** What visft was doing: `creating arena 0 'temps'`, `running 12 kernels`. */
    readonly what: string,
    readonly kind: GpuErrorKind,
  ) {
    super(message);
  }
}

export class GpuOutOfMemoryError extends GpuError {
  override name = 'GpuOutOfMemoryError';
  constructor(message: string, what: string) {
    super(message, what, 'out-of-memory');
  }
}

export class GpuDeviceLostError extends GpuError {
  override name = 'GpuDeviceLostError';
  constructor(
    message: string,
    what: string,
    /** Dawn's reason: 'destroyed' or 'unknown'. */
    readonly reason: string,
  ) {
    super(message, what, 'lost');
  }
}

/** One WGSL diagnostic of a failed kernel, with the offending source line. */
export interface KernelDiagnostic {
  readonly type: string;
  readonly message: string;
  /** 1-based; 0 when Dawn gave no position. */
  readonly line: number;
  readonly column: number;
  /** The WGSL text of that line ('' when unknown). */
  readonly text: string;
}

export class KernelCompileError extends GpuError {
  override name = 'KernelCompileError';
  constructor(
    readonly kernel: string,
    readonly dawnMessage: string,
    readonly diagnostics: readonly KernelDiagnostic[],
    stage: 'shader' | 'pipeline',
  ) {
    super(formatCompileError(kernel, dawnMessage, diagnostics, stage), `compiling kernel '${kernel}'`, 'compile');
  }
}

function formatCompileError(kernel: string, dawnMessage: string, diagnostics: readonly KernelDiagnostic[], stage: 'shader' | 'pipeline'): string {
  const where = stage === 'shader' ? 'WGSL' : 'compute pipeline';
  const lines = [
    diagnostics.length > 0
      ? `kernel '${kernel}' failed to compile (${where}, ${diagnostics.length} error${diagnostics.length === 1 ? '' : 's'}):`
      : `kernel '${kernel}' failed to compile (${where}): ${firstLine(dawnMessage)}`,
  ];
  for (const d of diagnostics) {
    if (d.line > 0) {
      lines.push(`  ${kernel}.wgsl:${d.line}:${d.column}: ${d.type}: ${d.message}`);
      lines.push(`  ${String(d.line).padStart(5)} | ${d.text}`);
      lines.push(`  ${' '.repeat(5)} | ${' '.repeat(Math.max(0, d.column - 1))}^`);
    } else {
      lines.push(`  ${kernel}.wgsl: ${d.type}: ${d.message}`);
    }
  }
  const rest = dawnMessage.trim().split('\n').slice(1).filter((l) => l.trim().length > 0);
  if (diagnostics.length === 0 && rest.length > 0) lines.push(...rest.map((l) => `  ${l.trim()}`));
  return lines.join('\n');
}

function firstLine(s: string): string {
  return s.trim().split('\n')[0] ?? '';
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message || e.name : String(e);
}

/**
 * Runs `fn` inside validation, out-of-memory and internal error scopes and throws a GpuError naming `what`
 * when Dawn reports one. `fn` should do its Dawn calls synchronously: the scopes are pushed and popped around
 * the synchronous part (so several of these may be in flight at once without mixing their scopes); when `fn`
 * returns a promise, it is awaited after the scopes are popped.
 */
export async function withErrorScopes<T>(device: GPUDevice, what: string, fn: () => T): Promise<Awaited<T>> {
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('internal');
  let result: T | undefined;
  let thrown: { e: unknown } | undefined;
  try {
    result = fn();
  } catch (e) {
    thrown = { e };
  }
  const popped = [device.popErrorScope(), device.popErrorScope(), device.popErrorScope()];
  const [internal, oom, validation] = await Promise.all(popped.map((p) => p.catch((e: unknown) => ({ message: `popErrorScope failed: ${errorMessage(e)}` }) as GPUError)));
  if (thrown) throw thrown.e;
  if (oom) throw new GpuOutOfMemoryError(`out of GPU memory while ${what}: ${oom.message}`, what);
  if (validation) throw new GpuError(`GPU validation error while ${what}: ${validation.message.trim()}`, what, 'validation');
  if (internal) throw new GpuError(`GPU internal error while ${what}: ${internal.message.trim()}`, what, 'internal');
  return (await result) as Awaited<T>;
}

/** The bind group layout a kernel's bindings imply: 'read' → read-only-storage, 'read_write' → storage. */
export function kernelBindGroupLayout(device: GPUDevice, kernel: Kernel): GPUBindGroupLayout {
  return device.createBindGroupLayout({
    label: `${kernel.name} bindings`,
    entries: kernel.bindings.map((b, i) => ({
      binding: i,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: b.access === 'read' ? 'read-only-storage' : 'storage' },
    })),
  });
}

export interface CompiledKernel {
  readonly kernel: Kernel;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
}

/**
 * Compiles a kernel: createShaderModule and getCompilationInfo (a WGSL error throws KernelCompileError with
 * the kernel's name, Dawn's message and the offending lines), then the compute pipeline with an explicit
 * layout from the kernel's bindings (so a binding whose access disagrees with the WGSL is an error naming it).
 */
export async function compilePipeline(device: GPUDevice, kernel: Kernel): Promise<CompiledKernel> {
  let module!: GPUShaderModule;
  let scopeError: unknown;
  try {
    await withErrorScopes(device, `creating the shader module of kernel '${kernel.name}'`, () => {
      module = device.createShaderModule({ label: kernel.name, code: kernel.wgsl });
    });
  } catch (e) {
    scopeError = e;
  }
  if (module) {
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length > 0) {
      const src = kernel.wgsl.split('\n');
      const diagnostics = errors.map((m) => ({
        type: m.type,
        message: m.message,
        line: m.lineNum,
        column: m.linePos,
        text: m.lineNum > 0 ? (src[m.lineNum - 1] ?? '').replace(/\r$/, '') : '',
      }));
      const dawn = scopeError instanceof GpuError ? scopeError.message.replace(/^GPU validation error while [^:]*: /, '') : errors.map((m) => m.message).join('; ');
      throw new KernelCompileError(kernel.name, dawn, diagnostics, 'shader');
    }
  }
  if (scopeError) throw new KernelCompileError(kernel.name, errorMessage(scopeError), [], 'shader');

  let layout!: GPUBindGroupLayout;
  let pending!: Promise<GPUComputePipeline>;
  try {
    await withErrorScopes(device, `creating the pipeline of kernel '${kernel.name}'`, () => {
      layout = kernelBindGroupLayout(device, kernel);
      pending = device.createComputePipelineAsync({
        label: kernel.name,
        layout: device.createPipelineLayout({ label: kernel.name, bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: 'main' },
      });
    });
  } catch (e) {
    pending?.catch(() => undefined);
    throw new KernelCompileError(kernel.name, errorMessage(e), [], 'pipeline');
  }
  try {
    const pipeline = await pending;
    return { kernel, pipeline, layout };
  } catch (e) {
    throw new KernelCompileError(kernel.name, errorMessage(e), [], 'pipeline');
  }
}
