// LoRA weights out of visft runs and into EVA / EVA-CLIP / LAVIS backbones (the original's issue #1).
//
// Layout (loralib MergedLinear on the fused qkv, enable_lora [q, v]): lora_A is (2r, D) = [A_q; A_v], lora_B is
// (2D, r) = [B_q; B_v]; ΔW_q = B_q·A_q, ΔW_v = B_v·A_v, nothing on k. Merging adds scaling·ΔW (scaling = alpha/r)
// to the q rows (0..D) and v rows (2D..3D) of blocks.N.attn.qkv.weight [3D, D]. A merged file looks like any
// other backbone, so merging twice cannot be detected: that is the caller's responsibility.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { readFileHead } from './io.js';
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from './safetensors.js';
import { castTensor, describeTensor, fromNumbers, isFloatDType, toFloat64, type HostTensor } from './tensor.js';
import { isHostTensor, loadTorch, saveTorchZip, selectStateDict } from './torch-zip.js';
import { PyDict } from './pickle.js';

export class LoraError extends Error {
  override name = 'LoraError';
}

/** `[prefix.]blocks.N.attn.qkv.lora_A|B`: group 1 the prefix with its dot (or undefined), 2 the block, 3 A or B. */
const QKV_LORA = /^((?:.*\.)?)blocks\.(\d+)\.attn\.qkv\.lora_(A|B)$/s;
/** Any other LoRA tensor: one visft cannot place, so it is refused rather than silently dropped. */
const OTHER_LORA = /(^|\.)lora_[AB]$/;
const QKV_WEIGHT = /^((?:.*\.)?)blocks\.(\d+)\.attn\.qkv\.weight$/s;

export type LoraKeyFormat = 'loralib' | 'visft';

/** The key of a block's A or B: ViSFT's released names (`visual.` prefix) or visft's graph names. */
export function loraKey(block: number, which: 'A' | 'B', format: LoraKeyFormat): string {
  return `${format === 'loralib' ? 'visual.' : ''}blocks.${block}.attn.qkv.lora_${which}`;
}

export interface LoraBlock {
  block: number;
  a: HostTensor;
  b: HostTensor;
  aKey: string;
  bKey: string;
}

export interface LoraSet {
  /** Sorted by block index. */
  blocks: LoraBlock[];
  rank: number;
  dim: number;
  /** Keys that are not LoRA tensors (head weights and the like). */
  ignored: string[];
}

/** The qkv LoRA of a state dict, under any prefix (visual., module.visft_heads.backbone.0., none), validated. */
export function collectLora(tensors: ReadonlyMap<string, HostTensor>, source: string): LoraSet {
  const parts = new Map<number, { a?: [string, HostTensor]; b?: [string, HostTensor] }>();
  const ignored: string[] = [];
  for (const [key, t] of tensors) {
    const m = QKV_LORA.exec(key);
    if (!m) {
      if (OTHER_LORA.test(key)) throw new LoraError(`${source}: "${key}" is a LoRA tensor outside blocks.N.attn.qkv; only ViSFT's qkv LoRA ([q, v]) is supported`);
      ignored.push(key);
      continue;
    }
    const block = Number(m[2]);
    const slot = m[3] === 'A' ? 'a' : 'b';
    const entry = parts.get(block) ?? {};
    const prev = entry[slot];
    if (prev) throw new LoraError(`${source}: "${prev[0]}" and "${key}" are both lora_${m[3]} of block ${block}`);
    entry[slot] = [key, t];
    parts.set(block, entry);
  }
  if (parts.size === 0) {
    const some = ignored.slice(0, 5).map((k) => `"${k}"`).join(', ');
    throw new LoraError(`${source}: no LoRA tensors (keys like blocks.N.attn.qkv.lora_A / lora_B); it holds ${ignored.length ? `${some}${ignored.length > 5 ? `, … (${ignored.length} keys)` : ''}` : 'no tensors'}`);
  }
  const blocks: LoraBlock[] = [];
  let first: LoraBlock | undefined;
  for (const block of [...parts.keys()].sort((x, y) => x - y)) {
    const { a, b } = parts.get(block)!;
    if (!a || !b) {
      const [have, missing] = a ? [a[0], 'lora_B'] : [b![0], 'lora_A'];
      throw new LoraError(`${source}: block ${block} has "${have}" but no ${missing}`);
    }
    const lb: LoraBlock = { block, aKey: a[0], a: a[1], bKey: b[0], b: b[1] };
    const { rank, dim } = blockShape(lb, source);
    if (first) {
      const want = blockShape(first, source);
      if (rank !== want.rank || dim !== want.dim) {
        throw new LoraError(`${source}: "${lb.aKey}" is ${describeTensor(lb.a)} (r ${rank}, D ${dim}) but "${first.aKey}" is ${describeTensor(first.a)} (r ${want.rank}, D ${want.dim}): every block must have the same shapes`);
      }
    } else first = lb;
    blocks.push(lb);
  }
  const { rank, dim } = blockShape(blocks[0], source);
  return { blocks, rank, dim, ignored };
}

/** r and D of one block, checking A (2r, D) and B (2D, r) against each other. */
function blockShape(lb: LoraBlock, source: string): { rank: number; dim: number } {
  const { a, b } = lb;
  for (const [key, t] of [[lb.aKey, a], [lb.bKey, b]] as const) {
    if (t.shape.length !== 2) throw new LoraError(`${source}: "${key}" is ${describeTensor(t)}; a LoRA matrix has 2 dims`);
    if (!isFloatDType(t.dtype)) throw new LoraError(`${source}: "${key}" is ${describeTensor(t)}, not a float tensor`);
  }
  const [aRows, aCols] = a.shape;
  const [bRows, bCols] = b.shape;
  if (aRows === 0 || aRows % 2 !== 0) throw new LoraError(`${source}: "${lb.aKey}" is ${describeTensor(a)}: its rows must be 2r (A_q over A_v), an even number`);
  const rank = aRows / 2;
  if (bCols !== rank) throw new LoraError(`${source}: rank mismatch: "${lb.bKey}" is ${describeTensor(b)} but "${lb.aKey}" is ${describeTensor(a)} (r ${rank}); B must be (2D, r)`);
  if (bRows % 2 !== 0 || bRows / 2 !== aCols) throw new LoraError(`${source}: "${lb.bKey}" is ${describeTensor(b)} but "${lb.aKey}" is ${describeTensor(a)} (D ${aCols}); B must be (2D, r) = [${2 * aCols}, ${rank}]`);
  return { rank, dim: aCols };
}

// ---- reading and writing whole files ---------------------------------------------------------------------------

export interface LoadedTensors {
  tensors: Map<string, HostTensor>;
  /** safetensors metadata ({} for torch files). */
  metadata: Record<string, string>;
  /** A torch file whose tensors sat inside a container (e.g. {'model': {...}}), which the output flattens. */
  nested: boolean;
}

/** The tensors of a .safetensors or torch.save file (recognised by content), and where they were found. */
export function loadTensorsFile(file: string): LoadedTensors {
  const head = readFileHead(file);
  const isZip = head[0] === 0x50 && head[1] === 0x4b;
  // A .safetensors name on content that is neither a zip archive nor a pickle: the safetensors reader says what is wrong.
  if (!isZip && ((head.length >= 9 && head[8] === 0x7b) || (outputFormat(file) === 'safetensors' && head[0] !== 0x80))) {
    const { tensors, metadata } = readSafetensors(file);
    return { tensors, metadata, nested: false };
  }
  const obj = loadTorch(file);
  const flat = obj instanceof PyDict && [...obj.values()].every(isHostTensor);
  return { tensors: selectStateDict(obj, file), metadata: {}, nested: !flat };
}

/** The output format named by a file's extension, or undefined. */
export function outputFormat(file: string): 'safetensors' | 'torch' | undefined {
  if (/\.safetensors$/i.test(file)) return 'safetensors';
  if (/\.(pth|pt)$/i.test(file)) return 'torch';
  return undefined;
}

/** Writes atomically, in the format the extension names (.safetensors, or .pth/.pt for torch.load). */
export function writeTensorsFile(file: string, tensors: ReadonlyMap<string, HostTensor>, metadata: Record<string, string> = {}): void {
  const format = outputFormat(file);
  if (format === 'safetensors') writeSafetensors(file, new Map(tensors), metadata);
  else if (format === 'torch') saveTorchZip(file, new Map(tensors));
  else throw new LoraError(`${file}: the output must end in .safetensors, .pth or .pt`);
}

// ---- finding the checkpoint of a visft run ---------------------------------------------------------------------

export interface CheckpointState {
  stage: string;
  stage_index: number;
  run: string;
  update: number;
}

export interface FoundWeights {
  /** The weights file to read. */
  file: string;
  /** The checkpoint folder and its state, when the input was a folder. */
  ckptDir?: string;
  state?: CheckpointState;
}

function isDir(p: string): boolean {
  return existsSync(p) && statSync(p).isDirectory();
}

function readState(ckptDir: string): CheckpointState | undefined {
  const file = join(ckptDir, 'state.json');
  if (!existsSync(file)) return undefined;
  let s: Partial<CheckpointState> & { format?: unknown };
  try {
    s = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new LoraError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof s !== 'object' || s === null || s.format !== 'visft-checkpoint' || typeof s.stage !== 'string' || typeof s.stage_index !== 'number' || typeof s.run !== 'string' || typeof s.update !== 'number') {
    throw new LoraError(`${file}: not a visft checkpoint state (needs format "visft-checkpoint", stage, stage_index, run, update)`);
  }
  return { stage: s.stage, stage_index: s.stage_index, run: s.run, update: s.update };
}

function checkpointAt(ckptDir: string): FoundWeights {
  const file = join(ckptDir, 'weights.safetensors');
  if (!existsSync(file)) throw new LoraError(`${ckptDir}: no weights.safetensors (an incomplete checkpoint?)`);
  return { file, ckptDir, state: readState(ckptDir) };
}

/** The checkpoint a run folder's `latest` names. */
function latestOf(runDir: string): FoundWeights {
  const latestFile = join(runDir, 'latest');
  if (!existsSync(latestFile)) throw new LoraError(`${runDir}: no \`latest\` file, so no complete checkpoint`);
  const name = readFileSync(latestFile, 'utf8').trim();
  if (!name || name === '.' || name === '..' || /[\\/]/.test(name)) throw new LoraError(`${latestFile}: "${name}" is not the name of a checkpoint folder`);
  const dir = join(runDir, name);
  if (!isDir(dir)) throw new LoraError(`${latestFile} names ${name}, which does not exist in ${runDir}`);
  return checkpointAt(dir);
}

function subdirs(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name)).sort();
}

const isRunDir = (d: string) => existsSync(join(d, 'latest')) || readdirSync(d).some((n) => /^ckpt-\d+$/.test(n));

function hasLoraKeys(weightsFile: string): boolean {
  return readSafetensorsHeader(weightsFile).entries.some((e) => QKV_LORA.test(e.name));
}

/**
 * What extract-lora reads: a weights file as given; a checkpoint folder's weights.safetensors; a run folder's
 * `latest` checkpoint; or, for an output folder (OUT or OUT/<stage>), the latest checkpoint of the run with
 * LoRA keys in the stage with the highest stage_index.
 */
export function findLoraWeights(input: string): FoundWeights {
  if (!existsSync(input)) throw new LoraError(`${input} does not exist`);
  if (!isDir(input)) return { file: input };
  if (existsSync(join(input, 'weights.safetensors'))) return checkpointAt(input);
  if (isRunDir(input)) return latestOf(input);
  const runs = subdirs(input).flatMap((d) => (isRunDir(d) ? [d] : subdirs(d).filter(isRunDir)));
  if (runs.length === 0) throw new LoraError(`${input}: no checkpoints (looked for <stage>/<run>/latest and <run>/latest)`);
  const withLora: (FoundWeights & { state: CheckpointState })[] = [];
  for (const run of runs) {
    if (!existsSync(join(run, 'latest'))) continue;
    const found = latestOf(run);
    if (!found.state) throw new LoraError(`${found.ckptDir}: no state.json, so its stage is unknown`);
    if (hasLoraKeys(found.file)) withLora.push({ ...found, state: found.state });
  }
  if (withLora.length === 0) throw new LoraError(`${input}: no LoRA keys in the latest checkpoint of any run (${runs.map((r) => resolve(r)).join(', ')})`);
  const top = Math.max(...withLora.map((f) => f.state.stage_index));
  const best = withLora.filter((f) => f.state.stage_index === top);
  if (best.length > 1) throw new LoraError(`${input}: several runs of stage ${best[0].state.stage} hold LoRA (${best.map((f) => f.ckptDir).join(', ')}); name one`);
  return best[0];
}

// ---- extract -------------------------------------------------------------------------------------------------

export interface ExtractSummary {
  found: FoundWeights;
  lora: LoraSet;
  output: string;
  format: LoraKeyFormat;
}

/** The LoRA tensors of a weights file (or run), renamed to `format` and stored as f32 in `output`. */
export function extractLora(input: string, output: string, format: LoraKeyFormat = 'loralib'): ExtractSummary {
  if (!outputFormat(output)) throw new LoraError(`${output}: the output must end in .safetensors, .pth or .pt`);
  const found = findLoraWeights(input);
  const lora = collectLora(loadTensorsFile(found.file).tensors, found.file);
  const out = new Map<string, HostTensor>();
  for (const b of lora.blocks) {
    out.set(loraKey(b.block, 'A', format), b.a.dtype === 'f32' ? b.a : castTensor(b.a, 'f32'));
    out.set(loraKey(b.block, 'B', format), b.b.dtype === 'f32' ? b.b : castTensor(b.b, 'f32'));
  }
  writeTensorsFile(output, out, { format: `visft-lora-${format}`, rank: String(lora.rank), source: found.file });
  return { found, lora, output, format };
}

// ---- merge ---------------------------------------------------------------------------------------------------

export interface MergeResult {
  tensors: Map<string, HostTensor>;
  /** The backbone's key prefix before blocks.N ('' for eva_vit_g.pth, 'visual.' for EVA-CLIP). */
  prefix: string;
  merged: number[];
  /** Backbone blocks the LoRA does not cover. */
  uncovered: number[];
  rank: number;
  scaling: number;
}

/** The backbone's qkv weights by block index, under its one prefix. */
function qkvWeights(backbone: ReadonlyMap<string, HostTensor>, name: string): { prefix: string; byBlock: Map<number, string> } {
  const byPrefix = new Map<string, Map<number, string>>();
  for (const key of backbone.keys()) {
    const m = QKV_WEIGHT.exec(key);
    if (!m) continue;
    const blocks = byPrefix.get(m[1]) ?? new Map<number, string>();
    blocks.set(Number(m[2]), key);
    byPrefix.set(m[1], blocks);
  }
  if (byPrefix.size === 0) throw new LoraError(`${name}: no blocks.N.attn.qkv.weight under any prefix; is it an EVA ViT backbone?`);
  if (byPrefix.size > 1) throw new LoraError(`${name}: qkv weights under several prefixes (${[...byPrefix.keys()].map((p) => `"${p}"`).join(', ')}); which tower is meant is ambiguous`);
  const [[prefix, byBlock]] = byPrefix;
  return { prefix, byBlock };
}

/**
 * W_qkv' = W_qkv + scaling·[B_q·A_q; 0; B_v·A_v] for every LoRA block, in float64, stored in W's dtype. Every
 * other tensor is passed through unchanged (same object, same order).
 */
export function mergeLora(backbone: ReadonlyMap<string, HostTensor>, lora: LoraSet, alpha: number, names: { backbone: string; lora: string }): MergeResult {
  if (!Number.isFinite(alpha)) throw new LoraError(`alpha must be a finite number, got ${alpha}`);
  const { prefix, byBlock } = qkvWeights(backbone, names.backbone);
  const { rank: r, dim: D } = lora;
  const scaling = alpha / r;
  const replaced = new Map<string, HostTensor>();
  for (const lb of lora.blocks) {
    const wKey = byBlock.get(lb.block);
    if (!wKey) throw new LoraError(`${names.lora}: "${lb.aKey}" is for block ${lb.block}, but ${names.backbone} has no ${prefix}blocks.${lb.block}.attn.qkv.weight (its blocks: ${describeBlocks([...byBlock.keys()])})`);
    const w = backbone.get(wKey)!;
    if (w.shape.length !== 2 || w.shape[0] !== 3 * D || w.shape[1] !== D) {
      throw new LoraError(`shape mismatch: "${lb.aKey}" in ${names.lora} is ${describeTensor(lb.a)} (D ${D}), so "${wKey}" should be [${3 * D}, ${D}], but in ${names.backbone} it is ${describeTensor(w)}`);
    }
    if (!isFloatDType(w.dtype)) throw new LoraError(`${names.backbone}: "${wKey}" is ${describeTensor(w)}, not a float tensor`);
    const out = toFloat64(w);
    const a = toFloat64(lb.a);
    const b = toFloat64(lb.b);
    addDelta(out, a, b, { aRow0: 0, bRow0: 0, wRow0: 0 }, r, D, scaling); // q
    addDelta(out, a, b, { aRow0: r, bRow0: D, wRow0: 2 * D }, r, D, scaling); // v
    replaced.set(wKey, fromNumbers(w.dtype, w.shape, out));
  }
  const tensors = new Map<string, HostTensor>();
  for (const [k, t] of backbone) tensors.set(k, replaced.get(k) ?? t);
  const merged = lora.blocks.map((b) => b.block);
  const uncovered = [...byBlock.keys()].filter((n) => !merged.includes(n)).sort((x, y) => x - y);
  return { tensors, prefix, merged, uncovered, rank: r, scaling };
}

/** w[wRow0 + i, j] += s·Σ_k b[bRow0 + i, k]·a[aRow0 + k, j] for i, j < D, k < r (row-major, in place). */
function addDelta(w: Float64Array, a: Float64Array, b: Float64Array, at: { aRow0: number; bRow0: number; wRow0: number }, r: number, D: number, s: number): void {
  const row = new Float64Array(D);
  for (let i = 0; i < D; i++) {
    row.fill(0);
    const bOff = (at.bRow0 + i) * r;
    let k = 0;
    // four rank terms per pass over the row: fewer loads and stores of row[j] (EVA-G takes ~1 s per block)
    for (; k + 4 <= r; k += 4) {
      const [b0, b1, b2, b3] = [b[bOff + k], b[bOff + k + 1], b[bOff + k + 2], b[bOff + k + 3]];
      const o0 = (at.aRow0 + k) * D;
      const [o1, o2, o3] = [o0 + D, o0 + 2 * D, o0 + 3 * D];
      for (let j = 0; j < D; j++) row[j] += b0 * a[o0 + j] + b1 * a[o1 + j] + b2 * a[o2 + j] + b3 * a[o3 + j];
    }
    for (; k < r; k++) {
      const bik = b[bOff + k];
      const o = (at.aRow0 + k) * D;
      for (let j = 0; j < D; j++) row[j] += bik * a[o + j];
    }
    const wOff = (at.wRow0 + i) * D;
    // adding an exact zero would still turn -0 into +0: leave untouched entries bit-identical
    for (let j = 0; j < D; j++) if (row[j] !== 0) w[wOff + j] += s * row[j];
  }
}

function describeBlocks(blocks: number[]): string {
  const s = [...blocks].sort((x, y) => x - y);
  const contiguous = s.every((n, i) => n === s[0] + i);
  return contiguous && s.length > 2 ? `${s[0]}..${s[s.length - 1]}` : s.join(', ');
}

export interface MergeFilesSummary extends MergeResult {
  output: string;
  /** The backbone's tensors sat in a container (e.g. LAVIS's {'model': ...}); the output is the flat dict. */
  flattened: boolean;
  /** The qkv weights' dtype. */
  dtype: string;
  ignored: string[];
  /** The backbone's own record of an earlier merge (safetensors files written by merge-lora only). */
  previousMerge?: string;
}

/** safetensors metadata key recording what merge-lora merged into a file. */
export const MERGED_KEY = 'visft_merged_lora';

/** merge-lora on files: read both, merge, write `output` atomically in the format its extension names. */
export function mergeLoraFiles(opts: { weights: string; lora: string; alpha: number; output: string }): MergeFilesSummary {
  if (!outputFormat(opts.output)) throw new LoraError(`${opts.output}: the output must end in .safetensors, .pth or .pt`);
  if (resolve(opts.output) === resolve(opts.weights)) throw new LoraError(`${opts.output} is the backbone itself; write the merged weights to a new file`);
  const lora = collectLora(loadTensorsFile(opts.lora).tensors, opts.lora);
  const backbone = loadTensorsFile(opts.weights);
  const result = mergeLora(backbone.tensors, lora, opts.alpha, { backbone: opts.weights, lora: opts.lora });
  // safetensors outputs record the merge, so that merging into a merged file can at least be warned about
  const record = `${basename(opts.lora)} alpha ${opts.alpha}`;
  const previousMerge = backbone.metadata[MERGED_KEY];
  const metadata = { ...backbone.metadata, [MERGED_KEY]: previousMerge ? `${previousMerge}; ${record}` : record };
  writeTensorsFile(opts.output, result.tensors, outputFormat(opts.output) === 'safetensors' ? metadata : {});
  const firstKey = `${result.prefix}blocks.${result.merged[0]}.attn.qkv.weight`;
  return { ...result, output: opts.output, flattened: backbone.nested, dtype: result.tensors.get(firstKey)!.dtype, ignored: lora.ignored, previousMerge };
}
