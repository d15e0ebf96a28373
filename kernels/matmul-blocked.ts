// `matmul_blocked_f32`: the matmul of software adapters. Each invocation computes a 4x4 block of outputs from
// registers, sequential over K, reading a and b straight from storage: no workgroup memory and no barriers, which
// a CPU pays for per invocation while its caches already hold the operands (lavapipe: docs/perf.md, session 8).
// Same operand layouts, views, batches, second product and stores as the naive variant; sums in k order.
import type { Kernel, Target } from '../compiler/codegen/types.js';
import type { Node } from '../compiler/ir/graph.js';
import { flatKernel, u32Lit, unboundedLoop } from './elementwise.js';
import { batchOffsets, readsSuffix, storeBlock, type MatmulDims, type MatmulOutput } from './matmul.js';

/** Rows and columns of outputs per invocation. */
const BLOCK = 4;

export function blockedMatmul(out: MatmulOutput, inputs: readonly Node[], target: Target, d: MatmulDims): Kernel {
  const U = u32Lit;
  const [rb, cb] = [Math.ceil(d.m / BLOCK), Math.ceil(d.n / BLOCK)];
  const idx = Array.from({ length: BLOCK }, (_, i) => i);
  const pairs = idx.flatMap((r) => idx.map((c) => [r, c] as const));
  const a = (r: number, t: string) => (d.viewA ? d.viewA(`row_${r}`, t) : d.transA ? `in_0[oa + row_${r} + ${t} * ${U(d.m)}]` : `in_0[oa + row_${r} * ${U(d.k)} + ${t}]`);
  const b = (t: string, c: number) => (d.viewB ? d.viewB(t, `col_${c}`) : d.transB ? `in_1[ob + col_${c} * ${U(d.k)} + ${t}]` : `in_1[ob + ${t} * ${U(d.n)} + col_${c}]`);
  // One product's sweep: the block's a column and b row loaded once per k, 16 fmas.
  const sweep = (acc: string, k: number, av: (r: number, t: string) => string, bv: (t: string, c: number) => string) => `${pairs.map(([r, c]) => `    var ${acc}${r}_${c} = 0.0f;`).join('\n')}
    for (var t = 0u; t < ${unboundedLoop(k, target)}; t++) {
${idx.map((r) => `      let a${r} = ${av(r, 't')};`).join('\n')}
${idx.map((c) => `      let b${c} = ${bv('t', c)};`).join('\n')}
${pairs.map(([r, c]) => `      ${acc}${r}_${c} = fma(a${r}, b${c}, ${acc}${r}_${c});`).join('\n')}
    }`;
  const second = out.second;
  const stores = pairs
    .map(([r, c]) => {
      const s = out.store(`acc${r}_${c}`, `(bi * ${U(d.m)} + row0 + ${U(r)}) * ${U(d.n)} + col0 + ${U(c)}`, second ? `acc2_${r}_${c}` : undefined);
      return `    if (row0 + ${U(r)} < ${U(d.m)} && col0 + ${U(c)} < ${U(d.n)}) ${storeBlock(s, '    ')}`;
    })
    .join('\n');
  // Rows and columns past the matrix read its last one (in bounds); their results are not stored.
  const body = `    let col0 = (i % ${U(cb)}) * ${U(BLOCK)};
    let row0 = ((i / ${U(cb)}) % ${U(rb)}) * ${U(BLOCK)};
    let bi = i / ${U(rb * cb)};
${batchOffsets(d, '    ')}
${idx.map((r) => `    let row_${r} = min(row0 + ${U(r)}, ${U(d.m - 1)});`).join('\n')}
${idx.map((c) => `    let col_${c} = min(col0 + ${U(c)}, ${U(d.n - 1)});`).join('\n')}
${sweep('acc', d.k, a, b)}${second ? `\n${sweep('acc2_', second.k, (r, t) => second.a(`row_${r}`, t), (t, c) => second.b(t, `col_${c}`))}` : ''}
${stores}`;
  const k = flatKernel(out.node, [...inputs, ...out.extra], target, `matmul_blocked_f32${readsSuffix(d)}${out.suffix}`.slice(0, 96), body, { lib: out.lib, helpers: out.helpers, n: d.batch * rb * cb });
  return { ...k, nodes: [...out.nodes] };
}
