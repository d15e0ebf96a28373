// Command arguments that name bundles (visft compile -o) and how to run their kernels: read and checked once for
// every command that takes them, bad ones a usage error (exit 2) naming the file or the option.
import { readFileSync } from 'node:fs';
import { BundleError, parseBundle, type Bundle, type KernelChoice } from '../../compiler/bundle.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { fileErrorLine, UsageError } from './errors.js';

/** A bundle file read and parsed; unreadable or malformed, a usage error naming it. */
export function readBundleArg(file: string): { readonly bundle: Bundle; readonly graph: Graph } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(fileErrorLine(e) ?? `cannot read ${file}`);
  }
  try {
    return parseBundle(text, file);
  } catch (e) {
    if (e instanceof BundleError) throw new UsageError(e.message);
    throw e;
  }
}

const KERNEL_CHOICES: readonly KernelChoice[] = ['auto', 'bundle', 'device'];

/** `--kernels` (default auto), checked. */
export function kernelChoiceArg(value: string | undefined): KernelChoice {
  const choice = (value ?? 'auto') as KernelChoice;
  if (!KERNEL_CHOICES.includes(choice)) throw new UsageError(`--kernels is ${KERNEL_CHOICES.join(', ')}, not '${value}'`);
  return choice;
}
