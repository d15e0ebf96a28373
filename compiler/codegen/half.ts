// Which values are stored as f16. On a target with `shader-f16`, a value is stored in half the bytes when
// that loses nothing and every kernel that binds it can (kernels/half-storage.ts):
// - a value whose IR dtype is f16 (an f16 input, parameter, or a cast to f16): storing rounds it, as its dtype says;
// - a temporary that is exactly an f16 although typed f32: autocast's round trips (cast to f16, then back to f32,
//   compiler/passes/autocast.ts), and movement of such values (a transposed, sliced, padded, reshaped copy).
// Autocast's operands and results of matmul, attention and conv, and the activations kept for the backward
// pass, are such values: stored as f16, mixed precision halves their memory and the bandwidth of the kernels
// that read them, with the same results as f32 storage (the kernels compute in f32 either way).
// Inputs, parameters and outputs of f32 dtype keep f32 storage: the runtime exchanges them as f32.
import type { Graph, Node } from '../ir/graph.js';
import { roundF16 } from '../ir/rules/reference-core.js';
import { canStoreHalf } from '../../kernels/half-storage.js';
import type { Kernel, Target } from './types.js';

/** Ops whose output holds only values of their (first) input, or a constant. */
const MOVES = new Set(['reshape', 'permute', 'slice', 'expand', 'concat', 'pad']);

/** Whether node `n` holds exact f16 numbers, given which of its inputs do. */
function holdsHalf(n: Node, inputHalf: (id: number) => boolean): boolean {
  if (n.dtype === 'f16') return true;
  if (n.op === 'cast') return n.dtype === 'f32' && inputHalf(n.inputs[0]);
  if (!MOVES.has(n.op) || n.inputs.length === 0 || !n.inputs.every(inputHalf)) return false;
  if (n.op !== 'pad') return true;
  const v = Number(n.attrs.value ?? 0);
  return roundF16(v) === v;
}

/** Node ids whose values are exactly f16 numbers (in topological order, so one pass suffices). */
export function exactHalfValues(graph: Graph): Set<number> {
  const exact = new Set<number>();
  for (const n of graph.nodes) if (holdsHalf(n, (i) => exact.has(i))) exact.add(n.id);
  return exact;
}

/** Whether value `id` is exactly an f16 number: exactHalfValues for one value (walks only its movement chain). */
export function isExactHalf(graph: Graph, id: number): boolean {
  return holdsHalf(graph.node(id), (i) => isExactHalf(graph, i));
}

export interface StoredValue {
  readonly id: number;
  readonly kind: 'input' | 'param' | 'output' | 'temp';
}

/**
 * The stored values (by id) to keep as f16 on `target`: none without `shader-f16`. `graph` knows every value
 * except synthetic ones (output copies, ids past its nodes), which stay f32.
 */
export function planHalfStorage(graph: Graph, values: readonly StoredValue[], kernels: readonly Kernel[], target: Target): Set<number> {
  const half = new Set<number>();
  if (!target.features.includes('shader-f16')) return half;
  const exact = exactHalfValues(graph);
  const boundBy = new Map<number, { kernel: Kernel; binding: number }[]>();
  for (const kernel of kernels) {
    kernel.bindings.forEach((b, binding) => {
      const users = boundBy.get(b.value);
      if (users) users.push({ kernel, binding });
      else boundBy.set(b.value, [{ kernel, binding }]);
    });
  }
  for (const v of values) {
    if (v.id >= graph.nodes.length) continue;
    const node = graph.node(v.id);
    const candidate = node.dtype === 'f16' || (v.kind === 'temp' && exact.has(v.id));
    if (candidate && (boundBy.get(v.id) ?? []).every((u) => canStoreHalf(u.kernel, u.binding))) half.add(v.id);
  }
  return half;
}

/** Every kernel with its half-stored bindings marked (indices into its bindings). */
export function halfBindings(kernels: readonly Kernel[], half: ReadonlySet<number>): Set<number>[] {
  return kernels.map((k) => new Set(k.bindings.flatMap((b, i) => (half.has(b.value) ? [i] : []))));
}
