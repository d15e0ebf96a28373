// How many workgroups of each main kernel this GPU runs at once (runtime/bench/waves.ts): each kernel timed on grids of
// growing size, its steps fitted. Whether the f32 flash kernels' 288 workgroups at EVA-G detection leave a last wave
// nearly empty (the sweep split's premise, docs/perf.md), and where the matmuls' K split should aim.
//   node scripts/waves.mjs [--kernels flash,matmul_f32,matmul_f16] [--quick] [--json FILE]
// (after `npx tsc`). Kernels are generated under the tuning profile that applies (VISFT_TUNING), with the swept
// side and K never split, so each grid is one kernel:
//   flash       attention's VJP at [1, h, 2304, 88] for h = 1 … 32: the forward (with lse), dq and dk+dv kernels;
//   matmul_f32  [256, 1408] x [1408, 64·t] for t = 4, 8, … 160 (tiles of 64x64 by default): the tiled kernel;
//   matmul_f16  the same on f16 values (the tensor-core kernel where the GPU has them).
// Each grid: 100 ms of warm-up, then each kernel's median of 5 timestamped passes. --quick: small shapes, a check
// of this script on a software adapter (its times mean nothing).
import { writeFileSync } from 'node:fs';
import { compileGpu } from '../dist/compiler/codegen/gpu.js';
import { Builder } from '../dist/compiler/ir/builder.js';
import { compileOp } from '../dist/compiler/lower/op-entry.js';
import { seededUniform } from '../dist/runtime/bench/rows.js';
import { TimedProgram } from '../dist/runtime/bench/ours.js';
import { fitWaves } from '../dist/runtime/bench/waves.js';
import { openDevice } from '../dist/runtime/gpu/device.js';

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const kinds = (opt('--kernels') ?? 'flash,matmul_f32,matmul_f16').split(',');
const gpu = await openDevice({ profiling: true });
// One kernel per grid: no sweep split, no K ranges.
const target = { ...gpu.target, tuning: { ...gpu.target.tuning, flashSweepSplit: undefined, matmulSplits: 1 } };
console.log(`adapter: ${gpu.info.description || gpu.target.name}; tuning ${JSON.stringify(target.tuning)}`);

const range = (from, to, step = 1) => Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, i) => from + i * step);

/** The grids of one sweep: each a graph and the kernels (by name prefix) to time in it. */
const SWEEPS = {
  flash: () => {
    const [S, D] = quick ? [64, 24] : [2304, 88];
    return range(1, quick ? 6 : 32).map((h) => {
      const shape = [1, h, S, D];
      return { label: `h ${h}`, graph: compileOp('attention', new Map(['q', 'k', 'v'].map((n) => [n, shape])), [], true).graph };
    });
  },
  matmul_f32: () => matmulSweep('f32'),
  matmul_f16: () => matmulSweep('f16'),
};
const PREFIXES = { flash: ['attention_flash', 'attention_grad_q_flash', 'attention_grad_kv_flash'], matmul_f32: ['matmul_'], matmul_f16: ['matmul_'] };

function matmulSweep(dtype) {
  const [M, K] = quick ? [32, 64] : [256, 1408];
  return range(quick ? 1 : 4, quick ? 6 : 160, quick ? 1 : 4).map((t) => {
    const b = new Builder();
    const a = b.input('a', [M, K], dtype);
    const w = b.input('b', [K, 64 * t], dtype);
    b.output('out', b.add('matmul', [a, w]));
    return { label: `n ${64 * t}`, graph: b.graph };
  });
}

const report = {};
for (const kind of kinds) {
  const sweep = SWEEPS[kind];
  if (!sweep) throw new Error(`--kernels: no sweep '${kind}' (there are ${Object.keys(SWEEPS).join(', ')})`);
  const points = {};
  for (const { label, graph } of sweep()) {
    const program = compileGpu(graph, target);
    const next = seededUniform(`${kind} ${label}`);
    const data = new Map([...graph.inputs].map((i) => [i.node, Float32Array.from({ length: graph.node(i.node).shape.reduce((x, y) => x * y, 1) }, () => 2 * next() - 1)]));
    const timed = await TimedProgram.create(gpu, program, new Map([...data].filter(([id]) => program.plan.placement.has(id))));
    try {
      const t0 = performance.now();
      while (performance.now() - t0 < 100) await timed.warm(2);
      const times = await timed.kernelTimes(5);
      // kernelTimes times the kernels with work, in schedule order.
      program.schedule.kernels.filter((k) => k.dispatch.every((d) => d > 0)).forEach((k, i) => {
        const prefix = PREFIXES[kind].find((p) => k.name.startsWith(p));
        if (!prefix) return;
        const groups = k.dispatch[0] * k.dispatch[1] * k.dispatch[2];
        (points[k.name] ??= []).push({ groups, ms: times[i].ms });
      });
    } finally {
      timed.destroy();
    }
  }
  for (const [name, pts] of Object.entries(points)) {
    const fit = pts.length >= 3 ? fitWaves(pts) : undefined;
    report[name] = { points: pts, fit };
    console.log(`\n${name}: ${pts.map((p) => `${p.groups}:${p.ms.toFixed(4)}`).join(' ')}`);
    if (fit) console.log(`  ${fit.slots} workgroups at once fit best: ${fit.waveMs.toFixed(4)} ms per wave + ${fit.baseMs.toFixed(4)} ms (rms ${fit.rms.toExponential(2)}; a straight line: ${fit.lineRms.toExponential(2)})`);
  }
}
if (opt('--json')) writeFileSync(opt('--json'), JSON.stringify(report, null, 1));
await gpu.destroy();
