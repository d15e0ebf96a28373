// Common subexpression elimination by structural hashing: a node with the same op, the same (already merged)
// inputs and the same attributes as an earlier node is that node. Because the engine rebuilds in order, one
// sweep merges whole duplicated subgraphs bottom-up.
//
// - `input` and `param` leaves are never merged (the engine never offers them to rules): two inputs of the
//   same shape are different values.
// - `full` constants with the same value, shape and dtype are merged; numbers compare exactly, so 0 and -0
//   (and NaN and a number) stay apart.
// - `dropout` is a counter-based mask of (p, seed, element index), so two dropouts of the same value with the
//   same p and seed are the same value and merge; different seeds differ in their attributes and never do.
import type { Pass } from './engine.js';

export const cse: Pass = {
  name: 'cse',
  doc: 'merge structurally identical nodes (same op, inputs, attributes); inputs and params never merge',
  rules: {
    'merge identical': (n, ctx) => ctx.find(n),
  },
};
