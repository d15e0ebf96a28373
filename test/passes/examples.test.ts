// Constructed examples: each pass does its job (CSE merges, DCE removes, fold folds, each simplification
// fires) and leaves alone what it must not touch (inputs never merge, x·0 stays, x + 0 stays when x may be
// -0, ...). Every rewritten graph is checked bit for bit against the original on feeds with -0, NaN and ±∞.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { assertVerified } from '../../compiler/ir/verify.js';
import { optimize, PASSES, rewrite, RewriteError, runPass, type Pass, type Rule } from '../../compiler/passes/index.js';
import { bitwiseDifference, feeds, run } from './graphs.js';

/** Ops of the nodes some output depends on, in order. */
const liveOps = (g: Graph): string[] => {
  const live = g.live();
  return g.nodes.filter((n) => live.has(n.id)).map((n) => n.op);
};

/** Runs `pass`, checks the result verifies and computes the same outputs bit for bit; returns it. */
function apply(g: Graph, pass: Pass | 'optimize'): Graph {
  const out = pass === 'optimize' ? optimize(g) : runPass(g, pass);
  assertVerified(out, pass === 'optimize' ? pass : pass.name);
  for (const seed of [1, 2, 3]) {
    for (const special of [false, true]) {
      const f = feeds(g, seed, special);
      const diff = bitwiseDifference(run(g, f), run(out, f));
      assert.equal(diff, undefined, diff);
    }
  }
  return out;
}

const { cse, dce, fold, simplify } = PASSES;

describe('cse', () => {
  test('merges duplicated subexpressions bottom-up', () => {
    const b = new Builder();
    const x = b.input('x', [2, 3]);
    const w = b.param('w', [3, 4]);
    const y1 = b.add('exp', [b.add('matmul', [x, w])]);
    const y2 = b.add('exp', [b.add('matmul', [x, w])]);
    b.output('y', b.add('add', [y1, y2]));
    const out = apply(b.graph, cse);
    assert.deepEqual(liveOps(out), ['input', 'param', 'matmul', 'exp', 'add']);
    const add = out.node(out.outputs[0].node);
    assert.equal(add.inputs[0], add.inputs[1]);
  });

  test('never merges inputs or params, even of the same shape', () => {
    const b = new Builder();
    const x = b.input('x', [3]);
    const y = b.input('y', [3]);
    const p = b.param('p', [3]);
    const q = b.param('q', [3]);
    b.output('s', b.add('add', [b.add('add', [x, y]), b.add('add', [p, q])]));
    const out = apply(b.graph, cse);
    assert.equal(out.nodes.length, b.graph.nodes.length);
  });

  test('merges equal constants, but not 0 and -0, nor different dtypes or shapes', () => {
    const b = new Builder();
    const x = b.input('x', [2]);
    const cs = [b.full(0, [2]), b.full(0, [2]), b.full(-0, [2]), b.full(0, [2], 'f16'), b.full(0, []), b.full(0, [])];
    b.output('y', b.add('concat', cs.map((c) => b.add('div', [x, c])).map((d) => b.add('expand', [d], { shape: [2] })), { dim: 0 }));
    const out = apply(b.graph, cse);
    const fulls = out.nodes.filter((n) => n.op === 'full').map((n) => `${Object.is(n.attrs.value, -0) ? '-0' : n.attrs.value}:${n.dtype}[${n.shape}]`);
    assert.deepEqual(fulls, ['0:f32[2]', '-0:f32[2]', '0:f16[2]', '0:f32[]']);
  });

  test('merges dropouts with the same seed, never with different seeds', () => {
    const b = new Builder();
    const x = b.input('x', [64]);
    const d1 = b.add('dropout', [x], { p: 0.5, seed: 7 });
    const d2 = b.add('dropout', [x], { p: 0.5, seed: 7 });
    const d3 = b.add('dropout', [x], { p: 0.5, seed: 8 });
    b.output('y', b.add('concat', [d1, d2, d3], { dim: 0 }));
    const out = apply(b.graph, cse);
    assert.deepEqual(out.nodes.filter((n) => n.op === 'dropout').map((n) => n.attrs.seed), [7, 8]);
  });
});

describe('dce', () => {
  test('drops dead interior nodes, keeps every declared input and param', () => {
    const b = new Builder();
    const x = b.input('x', [2, 3]);
    b.input('unused', [5]);
    const w = b.param('w', [3, 3]);
    b.param('frozen.unused', [4]);
    const dead = b.add('exp', [b.add('matmul', [x, w])]);
    b.add('neg', [dead]);
    b.full(3, [2]);
    const y = b.add('tanh', [x]);
    b.output('y', y);
    b.output('y again', y);
    const out = apply(b.graph, dce);
    assert.deepEqual(out.nodes.map((n) => n.op), ['input', 'input', 'param', 'param', 'tanh']);
    assert.deepEqual(out.inputs.map((e) => e.name), ['x', 'unused']);
    assert.deepEqual(out.params.map((e) => e.name), ['w', 'frozen.unused']);
    assert.deepEqual(out.outputs, [{ name: 'y', node: 4 }, { name: 'y again', node: 4 }]);
  });

  test('does not change its argument', () => {
    const b = new Builder();
    const x = b.input('x', [2]);
    b.add('exp', [x]);
    b.output('x', x);
    const count = b.graph.nodes.length;
    runPass(b.graph, dce);
    assert.equal(b.graph.nodes.length, count);
  });
});

describe('fold', () => {
  const foldOne = (build: (b: Builder) => number): Graph => {
    const b = new Builder();
    b.output('y', build(b));
    return apply(b.graph, fold);
  };
  const foldedValue = (g: Graph): number | undefined => {
    const n = g.node(g.outputs[0].node);
    return n.op === 'full' ? (n.attrs.value as number) : undefined;
  };

  test('folds elementwise ops over constants, broadcasting', () => {
    const g = foldOne((b) => b.add('exp', [b.add('neg', [b.add('add', [b.full(2, [2, 3]), b.full(3, [])])])]));
    assert.equal(foldedValue(g), Math.exp(-5));
    assert.deepEqual(g.node(g.outputs[0].node).shape, [2, 3]);
  });

  test('a uniform sum is added in the interpreter order (0.1 · 10 is not 1)', () => {
    const g = foldOne((b) => b.add('sum', [b.full(0.1, [10, 2])], { dims: [0] }));
    assert.equal(foldedValue(g), 0.9999999999999999);
    const tiny = foldOne((b) => b.add('sum', [b.full(1e-10, [5000])], { dims: [0] }));
    assert.equal(foldedValue(tiny), interpret(rebuildSum(1e-10, 5000), new Map()).get('y')!.data[0]);
  });

  test('large provably uniform results fold without being evaluated', () => {
    const b = new Builder();
    const big = b.full(0.5, [2000, 3000]);
    const s = b.add('sum', [b.add('mul', [big, b.full(2, [])])], { dims: [1] });
    const m = b.add('matmul', [b.full(0.25, [64, 512]), b.full(4, [512, 64])]);
    const sm = b.add('softmax', [b.full(3, [100, 100])], { dim: 0 });
    b.output('s', s);
    b.output('m', m);
    b.output('sm', sm);
    const t0 = performance.now();
    const out = runPass(b.graph, fold);
    assert.ok(performance.now() - t0 < 500, 'folding took too long');
    const value = (name: string) => out.node(out.outputs.find((o) => o.name === name)!.node).attrs.value;
    assert.equal(value('s'), 3000);
    assert.equal(value('m'), 512);
    assert.equal(value('sm'), 1 / 100);
    assertVerified(out, 'fold');
  });

  test('does not fold non-uniform results, non-finite values, or large unknown ones', () => {
    const cases: [string, (b: Builder) => number][] = [
      ['concat of different values', (b) => b.add('concat', [b.full(1, [2]), b.full(2, [2])], { dim: 0 })],
      ['pad with another value', (b) => b.add('pad', [b.full(1, [2])], { pads: [[1, 0]], value: 0 })],
      ['dropout with p > 0', (b) => b.add('dropout', [b.full(1, [32])], { p: 0.5, seed: 1 })],
      ['log of a negative constant (NaN)', (b) => b.add('log', [b.full(-1, [2])])],
      ['division by zero (Infinity)', (b) => b.add('div', [b.full(1, [2]), b.full(0, [])])],
      ['a large gather', (b) => b.add('gather', [b.full(1, [5000, 2]), b.full(0, [5000, 2])], { dim: 1 })],
    ];
    for (const [what, build] of cases) {
      const g = foldOne(build);
      assert.equal(foldedValue(g), undefined, what);
    }
  });

  test('folds small ops of other kinds when the result is uniform', () => {
    const g = foldOne((b) => b.add('gather', [b.full(1.5, [3, 2]), b.full(1, [3, 4])], { dim: 1 }));
    assert.equal(foldedValue(g), 1.5);
    const p = foldOne((b) => b.add('pad', [b.full(0, [2])], { pads: [[1, 1]], value: 0 }));
    assert.equal(foldedValue(p), 0);
  });
});

function rebuildSum(v: number, n: number): Graph {
  const b = new Builder();
  b.output('y', b.add('sum', [b.full(v, [n])], { dims: [0] }));
  return b.graph;
}

describe('simplify', () => {
  /** Builds y = build(x) for an input x of the given shape, simplifies, returns the live ops after. */
  const simplified = (build: (b: Builder, x: number) => number, shape: number[] = [2, 3]): string[] => {
    const b = new Builder();
    const x = b.input('x', shape);
    b.output('y', build(b, x));
    return liveOps(apply(b.graph, simplify));
  };

  test('identities fire', () => {
    const cases: [string, (b: Builder, x: number) => number, string[]][] = [
      ['x + (-0)', (b, x) => b.add('add', [x, b.full(-0, [])]), ['input']],
      ['(-0) + x', (b, x) => b.add('add', [b.full(-0, [3]), x]), ['input']],
      ['exp(x) + 0', (b, x) => b.add('add', [b.add('exp', [x]), b.full(0, [])]), ['input', 'exp']],
      ['relu(x) + 0', (b, x) => b.add('add', [b.add('relu', [x]), b.full(0, [])]), ['input', 'relu']],
      ['x - 0', (b, x) => b.add('sub', [x, b.full(0, [])]), ['input']],
      ['x · 1', (b, x) => b.add('mul', [x, b.full(1, [1, 3])]), ['input']],
      ['1 · x', (b, x) => b.add('mul', [b.full(1, []), x]), ['input']],
      ['x / 1', (b, x) => b.add('div', [x, b.full(1, [])]), ['input']],
      ['x ^ 1', (b, x) => b.add('pow', [x], { exponent: 1 }), ['input']],
      ['neg(neg(x))', (b, x) => b.add('neg', [b.add('neg', [x])]), ['input']],
      ['dropout p = 0', (b, x) => b.add('dropout', [x], { p: 0, seed: 3 }), ['input']],
      ['cast f32 → f32', (b, x) => b.add('cast', [x], { dtype: 'f32' }), ['input']],
      ['cast(cast(x, f16), f16)', (b, x) => b.add('cast', [b.add('cast', [x], { dtype: 'f16' })], { dtype: 'f16' }), ['input', 'cast']],
      ['max over no dims', (b, x) => b.add('max', [x], { dims: [] }), ['input']],
      ['max over a size-1 dim', (b, x) => b.add('max', [b.add('reshape', [x], { shape: [2, 1, 3] })], { dims: [1] }), ['input']],
      ['sum over no dims of exp(x)', (b, x) => b.add('sum', [b.add('exp', [x])], { dims: [] }), ['input', 'exp']],
      ['reshape to the same shape', (b, x) => b.add('reshape', [x], { shape: [2, -1] }), ['input']],
      ['reshape(reshape(x))', (b, x) => b.add('reshape', [b.add('reshape', [x], { shape: [6] })], { shape: [3, 2] }), ['input', 'reshape']],
      ['reshape there and back', (b, x) => b.add('reshape', [b.add('reshape', [x], { shape: [6] })], { shape: [2, 3] }), ['input']],
      ['identity permute', (b, x) => b.add('permute', [x], { dims: [0, 1] }), ['input']],
      ['permute and its inverse', (b, x) => b.add('permute', [b.add('permute', [x], { dims: [1, 0] })], { dims: [-1, 0] }), ['input']],
      ['identity slice', (b, x) => b.add('slice', [x], { dim: 1, start: 0, end: 99 }), ['input']],
      ['expand to the same shape', (b, x) => b.add('expand', [x], { shape: [2, 3] }), ['input']],
      ['expand(expand(x))', (b, x) => b.add('expand', [b.add('expand', [x], { shape: [1, 2, 3] })], { shape: [4, 2, 3] }), ['input', 'expand']],
      ['pad by zero', (b, x) => b.add('pad', [x], { pads: [[0, 0], [0, 0]], value: 1 }), ['input']],
      ['concat of one', (b, x) => b.add('concat', [x], { dim: 1 }), ['input']],
    ];
    for (const [what, build, expected] of cases) assert.deepEqual(simplified(build), expected, what);
  });

  test('permute∘permute composes to one permute', () => {
    const ops = simplified((b, x) => b.add('permute', [b.add('permute', [x], { dims: [1, 2, 0] })], { dims: [1, 0, 2] }), [2, 3, 4]);
    assert.deepEqual(ops, ['input', 'permute']);
  });

  test('leaves alone what would change a value or a type', () => {
    const cases: [string, (b: Builder, x: number) => number][] = [
      ['x · 0 (NaN · 0 is NaN)', (b, x) => b.add('mul', [x, b.full(0, [])])],
      ['x + 0 where x may be -0', (b, x) => b.add('add', [x, b.full(0, [])])],
      ['x - (-0) where x may be -0', (b, x) => b.add('sub', [x, b.full(-0, [])])],
      ['0 - x', (b, x) => b.add('sub', [b.full(0, []), x])],
      ['1 / x', (b, x) => b.add('div', [b.full(1, []), x])],
      ['sum over no dims of x (0 + x)', (b, x) => b.add('sum', [x], { dims: [] })],
      ['x + (-0) that broadcasts x up', (b, x) => b.add('add', [x, b.full(-0, [4, 2, 3])])],
      ['x · 1 that changes the dtype', (b, x) => b.add('mul', [b.full(1, [], 'f16'), x])],
      ['cast f16 → f16 of unrounded values', (b, x) => b.add('cast', [b.add('add', [b.add('cast', [x], { dtype: 'f16' }), b.full(0.1, [], 'f16')])], { dtype: 'f16' })],
      ['a strided slice', (b, x) => b.add('slice', [x], { dim: 1, start: 0, end: 3, step: 2 })],
      ['a slice from 1', (b, x) => b.add('slice', [x], { dim: 0, start: 1 })],
      ['x - x', (b, x) => b.add('sub', [x, x])],
    ];
    for (const [what, build] of cases) {
      const b = new Builder();
      const x = b.input('x', [2, 3]);
      b.output('y', build(b, x));
      const before = liveOps(b.graph);
      assert.deepEqual(liveOps(apply(b.graph, simplify)), before, what);
    }
  });

  test('x + 0 → x would be wrong for -0: the guard is what keeps the values', () => {
    const b = new Builder();
    const x = b.input('x', [1]);
    b.output('y', b.add('div', [b.full(1, []), b.add('add', [x, b.full(0, [])])]));
    const y = interpret(b.graph, new Map([['x', { shape: [1], data: Float64Array.of(-0) }]])).get('y')!;
    assert.equal(y.data[0], Infinity); // 1 / ((-0) + 0) = 1 / +0; without the addition it would be -Infinity
  });
});

describe('optimize', () => {
  test('runs the passes together to a fixed point', () => {
    const b = new Builder();
    const x = b.input('x', [2, 3]);
    const w = b.param('w', [3, 3]);
    // (x @ w) · (0.5 + 0.5) twice, a transpose and its inverse, and dead work.
    const one = b.add('add', [b.full(0.5, []), b.full(0.5, [])]);
    const h1 = b.add('mul', [b.add('matmul', [x, w]), one]);
    const h2 = b.add('mul', [b.add('matmul', [x, w]), one]);
    const t = b.add('permute', [b.add('permute', [b.add('add', [h1, h2])], { dims: [1, 0] })], { dims: [1, 0] });
    b.add('exp', [t]);
    b.output('y', t);
    const stats = new Map<string, number>();
    const out = optimize(b.graph, { stats });
    assert.deepEqual(out.nodes.map((n) => n.op), ['input', 'param', 'matmul', 'add']);
    assert.ok((stats.get('merge identical') ?? 0) >= 1);
    assert.ok((stats.get('fold constant') ?? 0) >= 1);
    assert.ok((stats.get('x · 1 → x') ?? 0) >= 1);
    apply(b.graph, 'optimize');
  });
});

describe('engine', () => {
  test('a rule that changes the type of a node is an error', () => {
    const b = new Builder();
    const x = b.input('x', [2, 3]);
    b.output('y', b.add('exp', [x]));
    assert.throws(() => rewrite(b.graph, { bad: (n, ctx) => (n.op === 'exp' ? ctx.add('sum', [n.inputs[0]], { dims: [0] }) : undefined) }), RewriteError);
  });

  test('a rule table that never settles is an error, not a hang', () => {
    const b = new Builder();
    const x = b.input('x', [2]);
    b.output('y', b.add('neg', [x]));
    // neg(x) → neg(neg(neg(x))): grows on every application.
    const grow: Rule = (n, ctx) => (n.op === 'neg' ? ctx.add('neg', [ctx.add('neg', [ctx.add('neg', [n.inputs[0]])])]) : undefined);
    assert.throws(() => rewrite(b.graph, { grow }), RewriteError);
  });

  test('counts firings per rule', () => {
    const b = new Builder();
    const x = b.input('x', [2]);
    b.output('y', b.add('neg', [b.add('neg', [b.add('neg', [b.add('neg', [x])])])]));
    const stats = new Map<string, number>();
    const out = rewrite(b.graph, simplify.rules, { stats });
    assert.equal(stats.get('neg(neg(x)) → x'), 2);
    assert.equal(out.outputs[0].node, 0);
  });
});
