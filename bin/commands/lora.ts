// `visft extract-lora RUN_DIR|CKPT_DIR|FILE -o OUT [--format loralib|visft]` and
// `visft merge-lora --weights BACKBONE --lora LORA [--alpha 1] -o OUT`.
import { relative } from 'node:path';
import { extractLora, LoraError, mergeLoraFiles, type LoraKeyFormat } from '../../runtime/weights/lora-io.js';
import { PickleError, UnsafePickleError, WeightsFormatError, ZipError } from '../../runtime/weights/index.js';
import { fileErrorLine, UsageError } from './errors.js';

export interface ExtractLoraOptions {
  output?: string;
  format: string;
}

export interface MergeLoraOptions {
  weights?: string;
  lora?: string;
  alpha: string;
  output?: string;
}

/** Expected failures (bad files, missing checkpoints) print one line and exit 1; anything else is a bug. */
function reportFailure(e: unknown): number {
  if (e instanceof UsageError) throw e;
  const known = [LoraError, WeightsFormatError, UnsafePickleError, PickleError, ZipError].some((c) => e instanceof c);
  const fileError = fileErrorLine(e);
  if (known || fileError) {
    process.stderr.write(`visft: ${known ? (e as Error).message : fileError}\n`);
    return 1;
  }
  throw e;
}

function shown(p: string): string {
  const r = relative(process.cwd(), p);
  return r && !r.startsWith('..') ? r : p;
}

function blockRange(blocks: number[]): string {
  const contiguous = blocks.every((n, i) => n === blocks[0] + i);
  return contiguous && blocks.length > 1 ? `${blocks[0]}..${blocks[blocks.length - 1]}` : blocks.join(', ');
}

export function runExtractLora(input: string, opts: ExtractLoraOptions): number {
  if (!opts.output) throw new UsageError('extract-lora needs -o OUT(.safetensors|.pth|.pt)');
  if (opts.format !== 'loralib' && opts.format !== 'visft') throw new UsageError(`--format is loralib or visft, not '${opts.format}'`);
  try {
    const s = extractLora(input, opts.output, opts.format as LoraKeyFormat);
    const { found, lora } = s;
    if (found.ckptDir) {
      const st = found.state;
      process.stdout.write(`took ${shown(found.ckptDir)}${st ? ` (stage ${st.stage}, run ${st.run}, update ${st.update})` : ''}\n`);
    }
    const blocks = lora.blocks.map((b) => b.block);
    const ignored = lora.ignored.length ? `; ignored ${lora.ignored.length} other tensor${lora.ignored.length === 1 ? '' : 's'}` : '';
    process.stdout.write(
      `wrote ${opts.output}: LoRA of ${blocks.length} block${blocks.length === 1 ? '' : 's'} (${blockRange(blocks)}), r ${lora.rank}, D ${lora.dim}, ` +
        `${opts.format} keys (${s.format === 'loralib' ? 'visual.' : ''}blocks.N.attn.qkv.lora_A/B), f32${ignored}\n`,
    );
    return 0;
  } catch (e) {
    return reportFailure(e);
  }
}

export function runMergeLora(opts: MergeLoraOptions): number {
  if (!opts.weights || !opts.lora || !opts.output) throw new UsageError('merge-lora needs --weights BACKBONE --lora LORA -o OUT(.safetensors|.pth|.pt)');
  const alpha = Number(opts.alpha);
  // a negative alpha subtracts: merging with -alpha undoes a merge
  if (opts.alpha.trim() === '' || !Number.isFinite(alpha) || alpha === 0) throw new UsageError(`--alpha must be a non-zero number, not '${opts.alpha}'`);
  try {
    const s = mergeLoraFiles({ weights: opts.weights, lora: opts.lora, alpha, output: opts.output });
    if (s.previousMerge) process.stderr.write(`visft: warning: ${opts.weights} already records a merge (${s.previousMerge}); merging twice adds the LoRA twice\n`);
    process.stdout.write(
      `merged ${s.merged.length} block${s.merged.length === 1 ? '' : 's'} (${s.prefix}blocks.${blockRange(s.merged)}.attn.qkv.weight, ${s.dtype}): ` +
        `r ${s.rank}, alpha ${alpha}, scaling ${s.scaling}\n`,
    );
    if (s.uncovered.length) process.stdout.write(`note: the LoRA does not cover backbone blocks ${blockRange(s.uncovered)}; they are unchanged\n`);
    if (s.flattened) process.stdout.write(`note: ${opts.weights} keeps its tensors inside a container; ${opts.output} holds the flat state dict\n`);
    process.stdout.write(`wrote ${opts.output}: ${s.tensors.size} tensors, all but the merged qkv weights unchanged\n`);
    return 0;
  } catch (e) {
    return reportFailure(e);
  }
}
