// Small matmul graphs several kernel tests build: a product whose operands may be read transposed, and a
// projection with an epilogue and a LoRA branch.
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import type { MatmulReads } from '../../kernels/matmul.js';

/** The dims of a rank-`r` permute that swaps the last two. */
export const swapLast = (r: number): number[] => [...Array(r).keys()].map((d) => (d === r - 2 ? r - 1 : d === r - 1 ? r - 2 : d));

/** a [...ba, M, K] @ b [...bb, K, N]; a transposed operand is stored swapped and permuted back. */
export function product(ba: number[], bb: number[], m: number, k: number, n: number, reads: MatmulReads = [false, false]) {
  const b = new Builder();
  const operand = (name: string, shape: number[], trans: boolean) => {
    const stored = trans ? [...shape.slice(0, -2), shape[shape.length - 1], shape[shape.length - 2]] : shape;
    const s = b.input(name, stored);
    return trans ? b.add('permute', [s], { dims: swapLast(shape.length) }) : s;
  };
  const mm = b.add('matmul', [operand('a', [...ba, m, k], reads[0]), operand('b', [...bb, k, n], reads[1])]);
  b.output('y', mm);
  const node = b.graph.node(mm);
  return { graph: b.graph, node, inputs: node.inputs.map((i) => b.graph.node(i)) };
}

/** gelu(x @ Wᵀ + bias) + r, with a LoRA branch (x @ Aᵀ · 0.5) @ Bᵀ in the sum when `lora`. */
export function linearGraph(tokens: number, d: number, out: number, lora: boolean): Graph {
  const b = new Builder();
  const x = b.input('x', [2, tokens, d]);
  let y = b.add('matmul', [x, b.transposeLast(b.param('w', [out, d]))]);
  if (lora) {
    const rows = b.add('reshape', [x], { shape: [-1, d] });
    const u = b.add('mul', [b.add('matmul', [rows, b.transposeLast(b.param('lora_a', [4, d]))]), b.add('full', [], { shape: [], value: 0.5 })]);
    y = b.add('add', [y, b.add('reshape', [b.add('matmul', [u, b.transposeLast(b.param('lora_b', [out, 4]))])], { shape: [2, tokens, out] })]);
  }
  b.output('y', b.add('add', [b.add('gelu', [b.add('add', [y, b.param('bias', [out])])]), b.input('r', [2, tokens, out])]));
  return b.graph;
}
