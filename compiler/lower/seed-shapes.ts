// `--shape d:<output>=...` with --vjp: the gradient a VJP bundle takes in has the output's shape, so the shape
// is never needed, but users who list every bundle input give it. Accept it when it matches, say why when not.
import type { Graph } from '../ir/graph.js';
import { LowerError } from './ops.js';

/** The shapes of real inputs, and the `d:` ones set aside to check against the outputs. */
export function splitSeedShapes(shapes: ReadonlyMap<string, readonly number[]>, vjp: boolean): { inputs: Map<string, readonly number[]>; seeds: Map<string, readonly number[]> } {
  const inputs = new Map<string, readonly number[]>();
  const seeds = new Map<string, readonly number[]>();
  for (const [name, shape] of shapes) {
    if (!name.startsWith('d:')) inputs.set(name, shape);
    else if (vjp) seeds.set(name, shape);
    else throw new LowerError(`--shape ${name}: a gradient input exists only with --vjp`);
  }
  return { inputs, seeds };
}

/** Every given `d:NAME` shape names an output NAME of `forward` and equals its shape. */
export function checkSeedShapes(seeds: ReadonlyMap<string, readonly number[]>, forward: Graph): void {
  for (const [name, shape] of seeds) {
    const out = forward.outputs.find((o) => `d:${o.name}` === name);
    if (!out) throw new LowerError(`--shape ${name}: no output '${name.slice(2)}' (outputs: ${forward.outputs.map((o) => o.name).join(', ')})`);
    const want = forward.node(out.node).shape;
    if (want.length !== shape.length || want.some((d, i) => d !== shape[i])) throw new LowerError(`--shape ${name}=${shape.join('x')}: the output '${out.name}' is ${want.join('x')}, and its gradient has its shape`);
  }
}
