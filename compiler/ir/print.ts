// The IR's text form (`visft compile --emit ir`): one line per node, with the entry inputs, parameters and
// outputs listed first and last. Deterministic: attributes print in the order IR_OPS declares them (unknown
// ones after, sorted), numbers print exactly (-0, NaN and ±Infinity included), so two graphs print the same
// exactly when they are the same graph.
//
//   # inputs
//   input image: f32[1, 3, 56, 56] = %0
//   # params
//   param blocks.0.attn.qkv.weight: f32[288, 96] = %5
//   # nodes
//   %0 = input image : f32[1, 3, 56, 56]
//   %7 = full 0.5 : f32[]
//   %12 = matmul(%3, %11) : f32[2, 16, 96]
//   %13 = sum(%12) : f32[2, 96]  {dims: [1], keepdim: false}
//   # outputs
//   output features: f32[2, 96] = %13
import type { AttrValue, Attrs, Graph, Named, Node } from './graph.js';
import { IR_OPS } from './ops.js';

/** A number as written in the IR: exact, with -0, NaN and ±Infinity spelt out. */
export function formatNumber(v: number): string {
  return Object.is(v, -0) ? '-0' : String(v);
}

export function formatAttrValue(v: AttrValue | undefined): string {
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => formatAttrValue(x as AttrValue)).join(', ')}]`;
  return String(v);
}

/** `f32[2, 16, 96]`; tolerant of malformed nodes (the verifier prints the graphs it rejects). */
export function formatType(n: Pick<Node, 'dtype' | 'shape'>): string {
  const shape = Array.isArray(n.shape) ? n.shape.join(', ') : String(n.shape);
  return `${n.dtype}[${shape}]`;
}

/** Attribute keys in a fixed order: the op's declared attributes first, then any others sorted. */
export function attrKeys(op: string, attrs: Attrs): string[] {
  const declared: readonly string[] = (IR_OPS as Record<string, { attrs: readonly string[] }>)[op]?.attrs ?? [];
  const keys = Object.keys(attrs).filter((k) => attrs[k] !== undefined);
  return [...declared.filter((k) => keys.includes(k)), ...keys.filter((k) => !declared.includes(k)).sort()];
}

export function formatAttrs(op: string, attrs: Attrs): string {
  const keys = attrKeys(op, attrs);
  return keys.length ? `{${keys.map((k) => `${k}: ${formatAttrValue(attrs[k])}`).join(', ')}}` : '';
}

/** Names print bare when they are plain paths (`blocks.0.attn.qkv.weight`, `d:features`), else quoted. */
const formatName = (name: unknown): string => (typeof name === 'string' && /^[\w.:\/\-\[\]]+$/.test(name) ? name : JSON.stringify(name));

const ref = (id: number): string => `%${id}`;

// Leaves print their defining attribute inline; their `shape` and `dtype` attrs repeat the node's type and
// print only when they disagree with it (a malformed node, as the verifier reports).
const LEAF_HEAD: Readonly<Partial<Record<string, (n: Node) => string>>> = {
  input: (n) => `input ${formatName(n.attrs.name)}`,
  param: (n) => `param ${formatName(n.attrs.path)}`,
  full: (n) => `full ${formatAttrValue(n.attrs.value)}`,
};

function leafExtras(n: Node): Attrs {
  const out: Record<string, AttrValue> = {};
  for (const k of attrKeys(n.op, n.attrs)) {
    const v = n.attrs[k];
    if (k === 'name' || k === 'path' || k === 'value') continue;
    if (k === 'shape' && formatAttrValue(v) === formatAttrValue(n.shape)) continue;
    if (k === 'dtype' && v === n.dtype) continue;
    out[k] = v;
  }
  return out;
}

export function formatNode(n: Node): string {
  const leaf = LEAF_HEAD[n.op];
  const args = n.inputs.map(ref).join(', ');
  // A leaf with inputs is malformed; still show them.
  const head = leaf ? leaf(n) + (n.inputs.length ? ` (${args})` : '') : `${n.op}(${args})`;
  const attrs = formatAttrs(n.op, leaf ? leafExtras(n) : n.attrs);
  return `${ref(n.id)} = ${head} : ${formatType(n)}${attrs ? '  ' + attrs : ''}`;
}

function formatNamed(kind: string, g: Graph, e: Named): string {
  const n = g.nodes[e.node];
  return `${kind} ${formatName(e.name)}: ${n ? formatType(n) : '?'} = ${ref(e.node)}`;
}

/** The whole graph as text, one line per node. */
export function printGraph(g: Graph): string {
  const lines: string[] = [];
  if (g.inputs.length) lines.push('# inputs', ...g.inputs.map((e) => formatNamed('input', g, e)));
  if (g.params.length) lines.push('# params', ...g.params.map((e) => formatNamed('param', g, e)));
  lines.push('# nodes', ...g.nodes.map(formatNode));
  if (g.outputs.length) lines.push('# outputs', ...g.outputs.map((e) => formatNamed('output', g, e)));
  return lines.join('\n') + '\n';
}
