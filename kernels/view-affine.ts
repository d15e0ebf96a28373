// Views that are affine maps of one leaf's storage: element (c0, …, c{r-1}) of the root is the leaf's flat
// element offset + Σ c_d·stride_d. Permutes, slices, broadcasts (stride 0) and reshapes that keep dims apart or
// merge dims laid out one after the other are; pads, concats and constants are not. A kernel that loads blocks with
// hardware strides (a subgroup-matrix load: rows at a stride, elements along a row adjacent) reads such a view in
// place where element by element index arithmetic (kernels/view.ts) would defeat the block load. The map is composed
// step by step, so a chain whose middle is not affine (a reshape across a broadcast) is not found even where a later
// slice makes the whole affine again: such a view is read element by element, correct and slower.
import type { Graph, Shape } from '../compiler/ir/graph.js';
import { attrInts, attrNum, normDim } from '../compiler/ir/rules/shape.js';
import { stridesOf } from './elementwise.js';
import { reshapeGroups, type ViewPlan } from './view.js';

/** Where the root's elements lie in the leaf's storage (flat element offsets). */
export interface AffineView {
  readonly leaf: number;
  readonly offset: number;
  /** Per dim of the root. */
  readonly strides: readonly number[];
}

interface Layout {
  readonly offset: number;
  readonly strides: readonly number[];
}

/** The view as an affine map of its one leaf, or undefined when it is not one. */
export function affineView(graph: Graph, plan: ViewPlan): AffineView | undefined {
  if (plan.leaves.length !== 1) return undefined;
  const leaf = plan.leaves[0];
  const inlined = new Set(plan.inlined);
  const walk = (id: number): Layout | undefined => {
    const node = graph.node(id);
    if (id === leaf) return { offset: 0, strides: stridesOf(node.shape) };
    if (!inlined.has(id) || node.inputs.length !== 1) return undefined;
    const x = walk(node.inputs[0]);
    if (!x) return undefined;
    const xs = graph.node(node.inputs[0]).shape;
    switch (node.op) {
      case 'permute':
        return { offset: x.offset, strides: attrInts(node.attrs, 'dims').map((d) => x.strides[normDim(d, xs.length)]) };
      case 'expand': {
        const lead = node.shape.length - xs.length;
        return { offset: x.offset, strides: node.shape.map((s, d) => (d < lead || (xs[d - lead] === 1 && s !== 1) ? 0 : x.strides[d - lead])) };
      }
      case 'slice': {
        const dim = normDim(attrNum(node.attrs, 'dim'), xs.length);
        const strides = [...x.strides];
        strides[dim] *= attrNum(node.attrs, 'step', 1);
        return { offset: x.offset + attrNum(node.attrs, 'start', 0) * x.strides[dim], strides };
      }
      case 'reshape': {
        const strides = reshapeStrides(xs, x.strides, node.shape);
        return strides && { offset: x.offset, strides };
      }
      default:
        return undefined;
    }
  };
  const layout = walk(plan.root);
  return layout && { leaf, ...layout };
}

/**
 * The strides of `out` reshaped from dims `inp` laid out at `strides`, or undefined: within each group of dims the
 * reshape maps onto each other (kernels/view.ts reshapeGroups), the input's dims of more than one element must lie
 * one after the other (stride of each = the next's stride · its size), as row-major storage has them.
 */
export function reshapeStrides(inp: Shape, strides: readonly number[], out: Shape): number[] | undefined {
  const result = out.map(() => 0);
  for (const g of reshapeGroups(out, inp)) {
    const dims = g.inp.filter((d) => inp[d] !== 1);
    for (let i = 0; i + 1 < dims.length; i++) if (strides[dims[i]] !== strides[dims[i + 1]] * inp[dims[i + 1]]) return undefined;
    let st = dims.length ? strides[dims[dims.length - 1]] : 0;
    for (let i = g.out.length - 1; i >= 0; i--) {
      const d = g.out[i];
      result[d] = out[d] === 1 ? 0 : st;
      st *= out[d];
    }
  }
  return result;
}
