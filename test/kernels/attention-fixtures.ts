// The PyTorch float64 attention fixtures (test/fixtures/ops/make_attention.py): cases with inputs, output, the
// output's cotangent and the gradients, and the graph of a case (attention with its VJP in every input).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs } from '../../compiler/ir/graph.js';

export const WRT = ['q', 'k', 'v', 'mask'] as const;

export type FixtureTensor = { shape: number[]; data: number[] };

export interface Fixture {
  name: string;
  attrs: Attrs;
  inputs: Record<string, FixtureTensor>;
  output: FixtureTensor;
  d_output: FixtureTensor;
  grads: Record<string, FixtureTensor>;
}

/** JSON has no infinities: the generator writes them as "-inf" / "inf". */
const decode = (t: { shape: number[]; data: (number | string)[] }): FixtureTensor => ({
  shape: t.shape,
  data: t.data.map((v) => (typeof v === 'number' ? v : v === '-inf' ? -Infinity : v === 'inf' ? Infinity : NaN)),
});

export const fixtures: Fixture[] = (
  JSON.parse(readFileSync(fileURLToPath(new URL('../../../test/fixtures/ops/attention.json', import.meta.url)), 'utf8')) as { cases: Fixture[] }
).cases.map((c) => ({
  ...c,
  inputs: Object.fromEntries(Object.entries(c.inputs).map(([k, t]) => [k, decode(t)])),
  output: decode(c.output),
  d_output: decode(c.d_output),
  grads: Object.fromEntries(Object.entries(c.grads).map(([k, t]) => [k, decode(t)])),
}));

/** The graph of a fixture: attention over its inputs, with the VJP in every input (outputs y, d:q, …). */
export function fixtureGraph(fx: Fixture) {
  const b = new Builder();
  const names = WRT.filter((n) => fx.inputs[n]);
  const ins = names.map((n) => b.input(n, fx.inputs[n].shape));
  b.output('y', b.add('attention', ins, fx.attrs));
  const r = vjp(b.graph, ins);
  names.forEach((n, i) => r.builder.output(`d:${n}`, r.grads.get(ins[i])!));
  return { graph: r.builder.graph, names };
}

