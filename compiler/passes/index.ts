// The optimisation passes, each a named rule table run by the one engine (engine.ts), and `optimize`, which
// runs them in a fixed order until a whole round changes nothing. Every pass is value-preserving against the
// reference interpreter, keeps the inputs, params and outputs tables, and never changes an output's type.
import type { Graph } from '../ir/graph.js';
import { cse } from './cse.js';
import { dce } from './dce.js';
import { runPass, sameGraph, type Pass } from './engine.js';
import { fold } from './fold.js';
import { simplify } from './simplify.js';

export { rewrite, runPass, sameGraph, structuralKey, RewriteError, type Candidate, type Pass, type Rule, type RuleTable, type RewriteCtx } from './engine.js';

export const PASSES = { dce, cse, fold, simplify } as const satisfies Record<string, Pass>;
export type PassName = keyof typeof PASSES;

/** The order `optimize` runs them in, each round. */
export const PIPELINE: readonly Pass[] = [simplify, fold, cse, dce];

export interface OptimizeOptions {
  /** Called with each pass's result (tests verify the graph here). */
  readonly afterPass?: (pass: string, graph: Graph) => void;
  /** Rule firings counted by rule name. */
  readonly stats?: Map<string, number>;
  /** Rounds before giving up on a fixed point: default 16. */
  readonly maxRounds?: number;
}

/** Runs PIPELINE until a round leaves the graph as it was; returns a new graph. Idempotent. */
export function optimize(graph: Graph, opts: OptimizeOptions = {}): Graph {
  const max = opts.maxRounds ?? 16;
  let g = graph;
  for (let round = 0; round < max; round++) {
    const before = g;
    for (const pass of PIPELINE) {
      g = runPass(g, pass, opts.stats);
      opts.afterPass?.(pass.name, g);
    }
    if (sameGraph(before, g)) return g;
  }
  throw new Error(`optimize did not reach a fixed point in ${max} rounds`);
}
