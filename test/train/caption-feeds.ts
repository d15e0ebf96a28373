// Feeds for a compiled caption training step (compiler/train/step-graph.ts) on random weights: word ids below the
// vocabulary, lengths, a 0/1 mask, the dropout salt, the loss cotangent (the loss scale), uniform values for the
// other inputs, and parameters at their dtype's precision as the step runners give them.
import { numel, type Graph } from '../../compiler/ir/graph.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { randomTensor, type Rng } from '../ir/util.js';

export interface CaptionFeeds {
  readonly inputs: Map<string, RefTensor>;
  readonly params: Map<string, RefTensor>;
}

export function captionFeeds(g: Graph, rng: Rng, opts: { readonly salt?: number; readonly lossScale?: number } = {}): CaptionFeeds {
  const ints = (shape: readonly number[], n: number): RefTensor => ({ shape: [...shape], data: Float64Array.from({ length: numel(shape) }, () => Math.floor(rng() * n)) });
  const special: Record<string, (shape: readonly number[]) => RefTensor> = {
    captions: (s) => ints(s, 32),
    targets: (s) => ints(s, 32),
    caplens: (s) => ints(s, 11),
    mask: (s) => ints(s, 2),
    dropout_salt: () => ({ shape: [1], data: Float64Array.of(opts.salt ?? 777) }),
    'd:loss': () => ({ shape: [], data: Float64Array.of(opts.lossScale ?? 1) }),
  };
  const inputs = new Map(g.inputs.map((e) => [e.name, special[e.name]?.(g.node(e.node).shape) ?? randomTensor(g.node(e.node).shape, rng, -1, 1)] as const));
  const param = (id: number): RefTensor => {
    const t = randomTensor(g.node(id).shape, rng, -0.2, 0.2);
    return g.node(id).dtype === 'f16' ? { ...t, data: t.data.map(roundF16) } : t;
  };
  return { inputs, params: new Map(g.params.map((e) => [e.name, param(e.node)])) };
}
