// Properties of the passes on random graphs (recipe lists, see graphs.ts) and on their VJP graphs:
// every pass's result passes the verifier, keeps the tables and output types, and computes the same
// outputs bit for bit (NaN, ±Infinity and -0 included: the passes are exact, not just close); optimize
// is idempotent and deterministic.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { isFloat, type Graph } from '../../compiler/ir/graph.js';
import { printGraph } from '../../compiler/ir/print.js';
import { assertVerified, verifyGraph } from '../../compiler/ir/verify.js';
import { optimize, PASSES, runPass } from '../../compiler/passes/index.js';
import { bitwiseDifference, buildGraph, feeds, graphCaseArb, run, type GraphCase } from './graphs.js';

const NUM_RUNS = 200;

/** The tables' names and the outputs' types, which no pass may change. */
function signature(g: Graph): string {
  const typed = (e: { name: string; node: number }) => `${e.name}:${g.node(e.node).dtype}[${g.node(e.node).shape.join(',')}]`;
  return [g.inputs.map(typed).join(' '), g.params.map(typed).join(' '), g.outputs.map(typed).join(' ')].join(' | ');
}

/** Checks a transformed graph against the original: verifier, signature, values on two feeds. */
function checkPreserves(before: Graph, after: Graph, c: GraphCase, stage: string): void {
  assertVerified(after, stage);
  assert.equal(signature(after), signature(before), `${stage} changed the signature`);
  for (const special of [false, true]) {
    const f = feeds(before, c.seed, special);
    const diff = bitwiseDifference(run(before, f), run(after, f));
    if (diff) assert.fail(`${stage} changed a value: ${diff}\nbefore:\n${printGraph(before)}\nafter:\n${printGraph(after)}`);
  }
}

describe('random graphs', () => {
  test('the generator builds most recipes, and its graphs verify', () => {
    let built = 0;
    let skipped = 0;
    fc.assert(
      fc.property(graphCaseArb(), (c) => {
        const r = buildGraph(c);
        built += r.built;
        skipped += r.skipped;
        assert.deepEqual(verifyGraph(r.graph), []);
      }),
      { numRuns: 200, includeErrorInReport: true },
    );
    assert.ok(built > 4 * skipped, `only ${built} of ${built + skipped} recipes built`);
  });

  for (const [name, pass] of Object.entries(PASSES)) {
    test(`${name}: verifies, keeps every output bit for bit, and is idempotent`, () => {
      fc.assert(
        fc.property(graphCaseArb(), (c) => {
          const g = buildGraph(c).graph;
          const once = runPass(g, pass);
          checkPreserves(g, once, c, name);
          assert.equal(printGraph(runPass(once, pass)), printGraph(once), `${name} is not idempotent`);
        }),
        { numRuns: NUM_RUNS, includeErrorInReport: true },
      );
    });
  }

  test('optimize: every pass of every round verifies; values kept; idempotent and deterministic', () => {
    fc.assert(
      fc.property(graphCaseArb(), (c) => {
        const g = buildGraph(c).graph;
        const text = printGraph(g);
        const opt = optimize(g, { afterPass: (p, h) => assertVerified(h, p) });
        assert.equal(printGraph(g), text, 'optimize changed its argument');
        checkPreserves(g, opt, c, 'optimize');
        assert.equal(printGraph(optimize(opt)), printGraph(opt), 'optimize twice differs from once');
        assert.equal(printGraph(optimize(g)), printGraph(opt), 'optimize is not deterministic');
        assert.ok(opt.nodes.length <= g.nodes.length, 'optimize grew the graph');
      }),
      { numRuns: NUM_RUNS, includeErrorInReport: true },
    );
  });

  test('VJP graphs of random graphs: optimize verifies and keeps forward and gradient values', () => {
    fc.assert(
      fc.property(graphCaseArb(14), (c) => {
        const g = buildGraph(c).graph;
        const wrt = [...g.inputs, ...g.params].map((e) => e.node).filter((id) => isFloat(g.node(id).dtype));
        const res = vjp(g, wrt);
        wrt.forEach((id, k) => g.outputs.push({ name: `grad${k}`, node: res.grads.get(id)! }));
        assertVerified(g, 'vjp');
        const opt = optimize(g, { afterPass: (p, h) => assertVerified(h, p) });
        checkPreserves(g, opt, c, 'optimize after vjp');
      }),
      { numRuns: 100, includeErrorInReport: true },
    );
  });
});
