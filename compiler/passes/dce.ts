// Dead code elimination: nodes no output depends on are dropped. Declared inputs and parameters stay (the
// bundle's signature does not change when a value goes unused), so DCE is the engine's liveness filter with
// an empty rule table.
import type { Pass } from './engine.js';

export const dce: Pass = {
  name: 'dce',
  doc: 'drop nodes that no output depends on; keep every declared input and parameter',
  rules: {},
  dropDead: true,
};
