// `visft compile --op NAME`: one primitive op as the entry. Inputs are named as in the op's signature,
// the output is `output`; with --vjp the bundle takes `d:output` and returns `d:<input>` for every
// floating input.
import { vjp } from '../autodiff/vjp.js';
import { Builder } from '../ir/builder.js';
import { isOpName, OPS, type OpSignature } from '../ops/catalog.js';
import type { CompiledEntry } from './entry.js';
import { optimize } from '../passes/index.js';
import { autocastPass } from '../passes/autocast.js';
import { runPass } from '../passes/engine.js';
import { assertVerified } from '../ir/verify.js';
import { LOWER, LowerError, type ShapeValue } from './ops.js';
import { checkSeedShapes, splitSeedShapes } from './seed-shapes.js';

/** `--attr` values: numbers, true/false, lists `[1,2]` or `1,2` and pair lists `16x16,8x8` (levels). */
export function parseAttr(spec: string): [string, ShapeValue] {
  const m = /^([A-Za-z_]\w*)=(.*)$/.exec(spec);
  if (!m) throw new LowerError(`--attr takes KEY=VALUE, got '${spec}'`);
  const raw = m[2].trim();
  const scalar = (s: string): ShapeValue => {
    if (s === 'true' || s === 'false') return s === 'true';
    if (/^\d+x\d+$/.test(s)) return s.split('x').map(Number);
    const n = Number(s);
    return Number.isFinite(n) && s !== '' ? n : s;
  };
  const body = raw.startsWith('[') && raw.endsWith(']') ? raw.slice(1, -1) : raw;
  const items = body.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return [m[1], items.length > 1 || raw.startsWith('[') ? items.map(scalar) : scalar(raw)];
}

/** Inputs that hold integers (indices, class ids): they take no gradient. */
const INTEGER_INPUTS: Readonly<Record<string, readonly string[]>> = { gather: ['index'], embedding: ['ids'], cross_entropy: ['target'] };

export function compileOp(name: string, allShapes: ReadonlyMap<string, readonly number[]>, attrSpecs: readonly string[], withVjp: boolean, autocast?: 'f16' | 'bf16'): CompiledEntry {
  if (!isOpName(name)) throw new LowerError(`unknown op '${name}' (ops: ${Object.keys(OPS).join(', ')})`);
  const sig: OpSignature = OPS[name];
  const { inputs: shapes, seeds } = splitSeedShapes(allShapes, withVjp);
  const b = new Builder();
  const names = sig.inputs.map((i) => i.replace(/^\.\.\.|\?$/g, ''));
  const inputs: (number | undefined)[] = [];
  for (const [k, raw] of sig.inputs.entries()) {
    const shape = shapes.get(names[k]);
    if (!shape) {
      if (raw.endsWith('?')) inputs.push(undefined);
      else throw new LowerError(`--op ${name} needs --shape ${names[k]}=...`);
    } else inputs.push(b.input(names[k], shape, INTEGER_INPUTS[name]?.includes(names[k]) ? 'i64' : 'f32'));
  }
  for (const k of shapes.keys()) if (!names.includes(k)) throw new LowerError(`op ${name} has no input '${k}' (inputs: ${names.join(', ') || 'none'})`);
  const attrs = new Map(attrSpecs.map(parseAttr));
  // `levels` is a list of HxW pairs even when it names one level (`--attr levels=73x73`).
  const levels = attrs.get('levels');
  if (Array.isArray(levels) && levels.length === 2 && levels.every((v) => typeof v === 'number')) attrs.set('levels', [levels]);
  for (const k of attrs.keys()) if (!sig.attrs.includes(k)) throw new LowerError(`op ${name} has no attribute '${k}' (attributes: ${sig.attrs.join(', ') || 'none'})`);
  let seed = 0;
  const out = LOWER[name]({ inputs, attr: (k) => attrs.get(k), b, training: false, seed: () => ++seed });
  if (out.kind !== 'tensor') throw new LowerError(`op ${name} has several results; compile it inside a module`);
  b.output('output', out.id);
  // Mixed precision as a training step applies it: before the VJP, so the backward reads the rounded operands.
  let graph = autocast ? runPass(b.graph, autocastPass(autocast)) : b.graph;
  if (withVjp) {
    checkSeedShapes(seeds, graph);
    const wrt = graph.inputs.filter((i) => graph.node(i.node).dtype === 'f32');
    const r = vjp(graph, wrt.map((i) => i.node));
    for (const i of wrt) r.builder.output(`d:${i.name}`, r.grads.get(i.node)!);
    graph = r.builder.graph;
  }
  assertVerified(graph, 'lowering');
  return { graph: optimize(graph, { afterPass: (pass, g) => assertVerified(g, pass) }), entry: `op:${name}`, params: [], lora: [] };
}
