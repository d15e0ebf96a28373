import { withDevice, runGraph } from '../test/kernels/harness.js';
import { Builder } from '../compiler/ir/builder.js';
import { interpret } from '../compiler/ir/interpret.js';
const n = 48001;
const lo = Number(process.argv[2] ?? -12), hi = Number(process.argv[3] ?? 12);
const x = new Float32Array(n);
for (let i = 0; i < n; i++) x[i] = lo + ((hi - lo) * i) / (n - 1);
await withDevice(async (gpu) => {
  for (const op of ['exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'sigmoid', 'gelu', 'erf'] as const) {
    const b = new Builder();
    const xi = b.input('x0', [n]);
    const y = b.add(op, [xi]);
    b.output('y', y);
    const ref = interpret(b.graph, new Map([['x0', { shape: [n], data: Float64Array.from(x) }]])).get('y')!.data;
    const { value } = await runGraph(gpu, b.graph, y, [x]);
    let worst = 0, at = 0, worstUlp = 0;
    for (let i = 0; i < n; i++) {
      const r = ref[i], g = value[i];
      if (!Number.isFinite(r) || Math.abs(r) < 1e-30) continue;
      const e = Math.abs(g - r) / Math.abs(r);
      const ulp = Math.abs(g - r) / (2 ** (Math.floor(Math.log2(Math.abs(r))) - 23));
      if (e > worst) { worst = e; at = x[i]; }
      worstUlp = Math.max(worstUlp, ulp);
    }
    console.log(op.padEnd(8), 'max rel', worst.toExponential(2), 'at', at, 'max ulp', worstUlp.toFixed(2));
  }
});
