// The IR verifier: a table of named checks over nodes and over the graph's name tables, run after every
// pass in tests (and at stage boundaries). Each check returns its problems as sentences naming the node;
// an empty list means the graph is well formed. The central check re-runs the shape rule: a node's stored
// shape and dtype must be what SHAPE_RULES give for its inputs' stored types and its attributes.
import type { DType, Graph, Named, Node } from './graph.js';
import { IR_OPS, type IrOp } from './ops.js';
import { formatType, printGraph } from './print.js';
import { SHAPE_RULES } from './rules/shape.js';

const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'i64', 'bool'];
const LEAVES: readonly string[] = ['input', 'param', 'full'];

const isOp = (op: unknown): op is IrOp => typeof op === 'string' && Object.hasOwn(IR_OPS, op);
const label = (n: Node): string => `%${n.id} ${String(n.op)}`;
const sameType = (a: Pick<Node, 'shape' | 'dtype'>, b: Pick<Node, 'shape' | 'dtype'>): boolean =>
  a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((s, i) => s === b.shape[i]);

/** Whether node `n`'s inputs all name earlier nodes (so its input types can be looked up). */
const inputsOk = (n: Node, at: number): boolean => Array.isArray(n.inputs) && n.inputs.every((i) => Number.isInteger(i) && i >= 0 && i < at);
const typeOk = (n: Node): boolean => DTYPES.includes(n.dtype) && Array.isArray(n.shape) && n.shape.every((s) => Number.isInteger(s) && s >= 0);

type NodeCheck = (n: Node, at: number, g: Graph) => readonly string[];
type GraphCheck = (g: Graph) => readonly string[];

/** Per-node checks, in order; `at` is the node's index in `graph.nodes`. */
export const NODE_CHECKS: Readonly<Record<string, NodeCheck>> = {
  'id is index': (n, at) => (n.id === at ? [] : [`node at index ${at} has id %${n.id}`]),
  'known op': (n) => (isOp(n.op) ? [] : [`${label(n)}: unknown op`]),
  'valid type': (n) => (typeOk(n) ? [] : [`${label(n)}: malformed type ${formatType(n)}`]),
  'inputs are earlier nodes': (n, at) =>
    Array.isArray(n.inputs)
      ? n.inputs.flatMap((i) => (Number.isInteger(i) && i >= 0 && i < at ? [] : [`${label(n)}: input %${i} is ${Number.isInteger(i) && i >= at ? 'not defined before it (forward reference)' : 'not a node'}`]))
      : [`${label(n)}: inputs is not a list`],
  'leaves have no inputs': (n) => (LEAVES.includes(n.op) && Array.isArray(n.inputs) && n.inputs.length > 0 ? [`${label(n)}: a leaf has inputs`] : []),
  'declared attrs only': (n) => {
    if (!isOp(n.op)) return [];
    if (!n.attrs || typeof n.attrs !== 'object') return [`${label(n)}: attrs is not an object`];
    const declared: readonly string[] = IR_OPS[n.op].attrs;
    return Object.keys(n.attrs).flatMap((k) => (declared.includes(k) ? [] : [`${label(n)}: unknown attribute '${k}' (${n.op} takes ${declared.length ? declared.join(', ') : 'none'})`]));
  },
  'leaf names': (n) => {
    if (!n.attrs) return [];
    if (n.op === 'input' && typeof n.attrs.name !== 'string') return [`${label(n)}: needs a string 'name'`];
    if (n.op === 'param' && typeof n.attrs.path !== 'string') return [`${label(n)}: needs a string 'path'`];
    return [];
  },
  'type is the shape rule': (n, at, g) => {
    if (!isOp(n.op) || !n.attrs || !inputsOk(n, at)) return [];
    const ins = n.inputs.map((i) => g.nodes[i]);
    if (!ins.every(typeOk)) return [];
    try {
      const t = SHAPE_RULES[n.op](ins, n.attrs);
      return sameType(t, n) ? [] : [`${label(n)}: stored type ${formatType(n)}, the shape rule gives ${formatType(t)}`];
    } catch (e) {
      return [`${label(n)}: the shape rule rejects it: ${(e as Error).message}`];
    }
  },
};

function tableCheck(table: 'inputs' | 'params' | 'outputs', op: 'input' | 'param' | undefined, key: 'name' | 'path' | undefined): GraphCheck {
  return (g) => {
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const e of g[table] as readonly Named[]) {
      if (seen.has(e.name)) problems.push(`${table}: '${e.name}' is declared twice`);
      seen.add(e.name);
      const n = g.nodes[e.node];
      if (!Number.isInteger(e.node) || !n) {
        problems.push(`${table}: '${e.name}' refers to %${e.node}, which is not a node`);
        continue;
      }
      if (op && n.op !== op) problems.push(`${table}: '${e.name}' refers to ${label(n)}, not an ${op}`);
      else if (key && n.attrs[key] !== e.name) problems.push(`${table}: '${e.name}' refers to ${label(n)} whose ${key} is ${JSON.stringify(n.attrs[key])}`);
    }
    return problems;
  };
}

function declaredLeaves(op: 'input' | 'param', table: 'inputs' | 'params'): GraphCheck {
  return (g) => {
    const declared = new Set(g[table].map((e) => e.node));
    return g.nodes.flatMap((n) => (n.op === op && !declared.has(n.id) ? [`${label(n)}: not declared in graph.${table}`] : []));
  };
}

/** Checks over the whole graph: the name tables point at the right nodes, and every leaf is declared. */
export const GRAPH_CHECKS: Readonly<Record<string, GraphCheck>> = {
  'input table': tableCheck('inputs', 'input', 'name'),
  'param table': tableCheck('params', 'param', 'path'),
  'output table': tableCheck('outputs', undefined, undefined),
  'inputs declared': declaredLeaves('input', 'inputs'),
  'params declared': declaredLeaves('param', 'params'),
};

/** All problems found, in node order and then the tables' checks; empty when the graph is well formed. */
export function verifyGraph(g: Graph): string[] {
  const problems: string[] = [];
  g.nodes.forEach((n, at) => {
    if (!n || typeof n !== 'object') {
      problems.push(`node at index ${at} is missing`);
      return;
    }
    for (const check of Object.values(NODE_CHECKS)) problems.push(...check(n, at, g));
  });
  for (const check of Object.values(GRAPH_CHECKS)) problems.push(...check(g));
  return problems;
}

export class VerifyError extends Error {
  constructor(
    readonly stage: string,
    readonly problems: readonly string[],
    message: string,
  ) {
    super(message);
  }
}

/** Throws a VerifyError listing every problem (and the graph's text, when it is small) after `stage`. */
export function assertVerified(g: Graph, stage: string): void {
  const problems = verifyGraph(g);
  if (problems.length === 0) return;
  let text = '';
  try {
    text = g.nodes.length <= 200 ? `\n${printGraph(g)}` : '';
  } catch {
    text = '';
  }
  throw new VerifyError(stage, problems, `IR verification failed after ${stage} (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}${text}`);
}
