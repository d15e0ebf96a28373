// A stage's `export NAME { at, path, format }`: the named LoRA (or head) written at the listed updates, as
// safetensors or, for a .pth/.pt path, a torch zip that torch.load reads. `format: loralib` uses ViSFT's released
// key names (`visual.blocks.N.attn.qkv.lora_A`); `visft` keeps the graph's names.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { ExportPlan } from '../../compiler/train/plan.js';
import type { StepParam } from '../../compiler/train/step-graph.js';
import { saveTorchZip, writeSafetensors, type HostTensor } from '../weights/index.js';

export function exportKey(name: string, format: ExportPlan['format'], lora: boolean): string {
  return format === 'loralib' && lora ? `visual.${name}` : name;
}

/** Writes the export for `update`; returns the file written. */
export function writeExport(e: ExportPlan, values: ReadonlyMap<string, Float32Array>, params: readonly StepParam[], update: number): string {
  const file = e.path.replaceAll('{update}', String(update));
  const mine = params.filter((p) => p.part === e.what);
  const tensors = new Map<string, HostTensor>();
  for (const p of mine) {
    const v = values.get(p.name);
    if (v) tensors.set(exportKey(p.name, e.format, p.lora !== undefined), { dtype: 'f32', shape: [...p.shape], data: Float32Array.from(v) });
  }
  mkdirSync(dirname(file), { recursive: true });
  if (/\.(pth|pt|ckpt)$/.test(file)) saveTorchZip(file, tensors);
  else writeSafetensors(file, tensors);
  return file;
}
