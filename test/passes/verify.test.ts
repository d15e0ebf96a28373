// The verifier and the printer: well-formed graphs (built, random, differentiated) verify clean; each kind
// of corruption is caught with a message naming the node; the text form is exact and deterministic.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph, Node } from '../../compiler/ir/graph.js';
import { printGraph } from '../../compiler/ir/print.js';
import { assertVerified, verifyGraph, VerifyError } from '../../compiler/ir/verify.js';
import { buildGraph, graphCaseArb } from './graphs.js';

function small(): { g: Graph; ids: Record<string, number> } {
  const b = new Builder();
  const image = b.input('image', [1, 3, 4, 4]);
  const w = b.param('blocks.0.attn.qkv.weight', [4, 6]);
  const m = b.add('matmul', [image, w]);
  const s = b.add('sum', [m], { dims: [-1], keepdim: true });
  const h = b.add('add', [m, b.full(-0, [])]);
  b.output('features', s);
  return { g: b.graph, ids: { image, w, m, s, h } };
}

/** Replaces node `id` by a changed copy (nodes are read-only records). */
function patch(g: Graph, id: number, change: Partial<Record<keyof Node, unknown>>): void {
  g.nodes[id] = { ...g.nodes[id], ...change } as Node;
}

describe('verifyGraph', () => {
  test('well-formed graphs verify clean: built, random, and with their VJP', () => {
    assert.deepEqual(verifyGraph(small().g), []);
    fc.assert(
      fc.property(graphCaseArb(12), (c) => {
        const g = buildGraph(c).graph;
        assert.deepEqual(verifyGraph(g), []);
        vjp(g, g.inputs.map((e) => e.node).filter((id) => g.node(id).dtype === 'f32'));
        assert.deepEqual(verifyGraph(g), []);
      }),
      { numRuns: 60, includeErrorInReport: true },
    );
  });

  const corruptions: [string, (g: Graph, ids: Record<string, number>) => void, RegExp][] = [
    ['a wrong stored shape', (g, { m }) => patch(g, m, { shape: [1, 3, 4, 7] }), /%2 matmul: stored type f32\[1, 3, 4, 7\], the shape rule gives f32\[1, 3, 4, 6\]/],
    ['a wrong stored dtype', (g, { s }) => patch(g, s, { dtype: 'f16' }), /%3 sum: stored type f16\[1, 3, 4, 1\], the shape rule gives f32\[1, 3, 4, 1\]/],
    ['a forward reference', (g, { m }) => patch(g, m, { inputs: [0, 4] }), /%2 matmul: input %4 is not defined before it \(forward reference\)/],
    ['a reference to itself', (g, { s }) => patch(g, s, { inputs: [3] }), /%3 sum: input %3 is not defined before it/],
    ['a missing node', (g, { s }) => patch(g, s, { inputs: [-1] }), /%3 sum: input %-1 is not a node/],
    ['an unknown attribute', (g, { s }) => patch(g, s, { attrs: { dims: [-1], keepdim: true, keep: true } }), /%3 sum: unknown attribute 'keep' \(sum takes dims, keepdim\)/],
    ['an attribute the rule rejects', (g, { s }) => patch(g, s, { attrs: { dims: [4] } }), /%3 sum: the shape rule rejects it: dim 4 is out of range for rank 4/],
    ['an unknown op', (g, { s }) => patch(g, s, { op: 'summ' }), /%3 summ: unknown op/],
    ['an id that is not the index', (g, { s }) => patch(g, s, { id: 9 }), /node at index 3 has id %9/],
    ['a leaf with inputs', (g, { w }) => patch(g, w, { inputs: [0] }), /%1 param: a leaf has inputs/],
    ['a negative dim in a type', (g, { s }) => patch(g, s, { shape: [1, -3, 4, 1] }), /%3 sum: malformed type/],
    ['an input table entry on a param', (g, { w }) => g.inputs.push({ name: 'blocks.0.attn.qkv.weight', node: w }), /inputs: 'blocks.0.attn.qkv.weight' refers to %1 param, not an input/],
    ['a table name that is not the node\'s', (g) => (g.params[0] = { name: 'other', node: 1 }), /params: 'other' refers to %1 param whose path is "blocks.0.attn.qkv.weight"/],
    ['a duplicate output name', (g, { m }) => g.outputs.push({ name: 'features', node: m }), /outputs: 'features' is declared twice/],
    ['an output that is not a node', (g) => g.outputs.push({ name: 'ghost', node: 99 }), /outputs: 'ghost' refers to %99, which is not a node/],
    ['an undeclared input', (g) => g.inputs.pop(), /%0 input: not declared in graph.inputs/],
  ];
  for (const [what, corrupt, message] of corruptions) {
    test(`catches ${what}`, () => {
      const { g, ids } = small();
      corrupt(g, ids);
      const problems = verifyGraph(g);
      assert.ok(problems.some((p) => message.test(p)), `expected ${message} in:\n${problems.join('\n')}`);
    });
  }

  test('catches a random corruption of a random graph', () => {
    const kinds = ['shape', 'dtype', 'forward', 'attr'] as const;
    fc.assert(
      fc.property(graphCaseArb(12), fc.nat(), fc.constantFrom(...kinds), (c, pick, kind) => {
        const g = buildGraph(c).graph;
        const inner = g.nodes.filter((n) => n.inputs.length > 0);
        fc.pre(inner.length > 0);
        const n = inner[pick % inner.length];
        if (kind === 'shape') patch(g, n.id, { shape: [...n.shape, 2] });
        if (kind === 'dtype') patch(g, n.id, { dtype: n.dtype === 'f32' ? 'bf16' : 'f32' });
        if (kind === 'forward') patch(g, n.id, { inputs: [n.id + (pick % 2), ...n.inputs.slice(1)] });
        if (kind === 'attr') patch(g, n.id, { attrs: { ...n.attrs, bogus: 1 } });
        assert.notDeepEqual(verifyGraph(g), [], `${kind} corruption of %${n.id} ${n.op} not caught`);
      }),
      { numRuns: 100, includeErrorInReport: true },
    );
  });

  test('assertVerified throws a VerifyError naming the stage, every problem, and the graph', () => {
    const { g, ids } = small();
    patch(g, ids.m, { shape: [2] });
    patch(g, ids.s, { attrs: { dims: [-1], extra: 1 } });
    assert.doesNotThrow(() => assertVerified(small().g, 'lowering'));
    try {
      assertVerified(g, 'cse');
      assert.fail('no error');
    } catch (e) {
      assert.ok(e instanceof VerifyError);
      assert.equal(e.stage, 'cse');
      assert.ok(e.problems.length >= 2);
      assert.match(e.message, /^IR verification failed after cse \(\d+ problems\):/);
      assert.match(e.message, /unknown attribute 'extra'/);
      assert.match(e.message, /%2 = matmul\(%0, %1\) : f32\[2\]/);
    }
  });
});

describe('printGraph', () => {
  test('prints inputs, params, one line per node, and outputs', () => {
    assert.equal(
      printGraph(small().g),
      [
        '# inputs',
        'input image: f32[1, 3, 4, 4] = %0',
        '# params',
        'param blocks.0.attn.qkv.weight: f32[4, 6] = %1',
        '# nodes',
        '%0 = input image : f32[1, 3, 4, 4]',
        '%1 = param blocks.0.attn.qkv.weight : f32[4, 6]',
        '%2 = matmul(%0, %1) : f32[1, 3, 4, 6]',
        '%3 = sum(%2) : f32[1, 3, 4, 1]  {dims: [-1], keepdim: true}',
        '%4 = full -0 : f32[]',
        '%5 = add(%2, %4) : f32[1, 3, 4, 6]',
        '# outputs',
        'output features: f32[1, 3, 4, 1] = %3',
        '',
      ].join('\n'),
    );
  });

  test('attributes print in declared order whatever the order they were given in; odd names are quoted', () => {
    const b1 = new Builder();
    const b2 = new Builder();
    for (const [b, attrs] of [
      [b1, { dim: 0, start: 1, end: 3, step: 1 }],
      [b2, { step: 1, end: 3, dim: 0, start: 1 }],
    ] as const) {
      const x = b.input('an image', [4]);
      b.output('y', b.add('slice', [x], attrs));
      b.add('pad', [x], { pads: [[1, 0]], value: -0 });
    }
    assert.equal(printGraph(b1.graph), printGraph(b2.graph));
    assert.match(printGraph(b1.graph), /%1 = slice\(%0\) : f32\[2\] {2}\{dim: 0, start: 1, end: 3, step: 1\}/);
    assert.match(printGraph(b1.graph), /%2 = pad\(%0\) : f32\[5\] {2}\{pads: \[\[1, 0\]\], value: -0\}/);
    assert.match(printGraph(b1.graph), /^input "an image": f32\[4\] = %0$/m);
  });

  test('a leaf whose attributes disagree with its type shows them', () => {
    const { g } = small();
    patch(g, 0, { shape: [2] });
    assert.match(printGraph(g), /^%0 = input image : f32\[2\] {2}\{shape: \[1, 3, 4, 4\]\}$/m);
  });
});
