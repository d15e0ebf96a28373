// LoRA with no extra kernel launch in the forward (compiler/codegen/fuse.ts: planSecondProducts,
// planRowProducts). The projection's kernel sums u·Bblkᵀ beside x·Wᵀ, reading B in its block layout through the
// pads and concat (kernels/view.ts); the layernorm kernel that writes x also computes u = x·Aᵀ·scale. On the
// device, bit for bit the unfused kernels, and within f32 tolerance of the CPU reference, for naive and tiled
// projections, one or two row groups, a power-of-two scale or not, and a target with little workgroup memory.
// (Bit for bit on a software adapter; on hardware the driver may compile the same layernorm differently in the
// two kernels: within a few ulps of the scale, test/kernels/harness.ts assertKernelsAgree.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { checkFiles } from '../../compiler/check/index.js';
import { schedule, type Schedule } from '../../compiler/codegen/schedule.js';
import { PORTABLE_TARGET, type Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { compileEntry } from '../../compiler/lower/entry.js';
import { applyLora } from '../../compiler/lower/lora.js';
import type { LoraTarget } from '../../compiler/resolve/pipeline.js';
import { GPU_RULES } from '../../kernels/index.js';
import { matmulVariant } from '../../kernels/matmul.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { makeRng, randomTensor } from '../ir/util.js';
import { hardwareLike } from '../kernels/core-util.js';
import { assertKernelsAgree, assertSchedulesAgree, matmulMismatch, scheduledProgram } from '../kernels/harness.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const sched = (g: Graph, target: Target = PORTABLE_TARGET, opts = {}): Schedule => schedule(g, target, GPU_RULES, opts);

function evaTiny(stage: boolean): Graph {
  const checked = checkFiles([root + 'pipelines/eva_tiny.visft']);
  return compileEntry(checked, checked.roots[0], { entry: 'eva', ...(stage ? { stage: 'stage2' } : {}), shapes: new Map([['image', [2, 3, 56, 56]]]) }).graph;
}

/** x [batch, seq, d] → layernorm + affine → linear(W [out, d], bias) with LoRA on `rows` of W. */
function loraProjection(c: { batch: number; seq: number; d: number; out: number; rank: number; alpha: number; rows: [number, number][] }): Graph {
  const b = new Builder();
  const x = b.input('x', [c.batch, c.seq, c.d]);
  const n = b.add('add', [b.add('mul', [b.add('layernorm', [x], { eps: 1e-6 }), b.param('g', [c.d])]), b.param('beta', [c.d])]);
  const y = b.add('add', [b.add('matmul', [n, b.add('permute', [b.param('w', [c.out, c.d])], { dims: [1, 0] })]), b.param('bias', [c.out])]);
  b.output('y', y);
  const selected = c.rows.reduce((s, [u, v]) => s + v - u, 0);
  const t: LoraTarget = { param: 'w', rows: c.rows, param_rows: c.out, rank: c.rank, alpha: c.alpha, lora_A: [c.rank * c.rows.length, c.d], lora_B: [selected, c.rank] };
  return applyLora(b.graph, [t]).graph;
}

const loraOnly = (s: Schedule, g: Graph) => {
  const lora = new Set(g.params.filter((p) => /lora_[AB]$/.test(p.name)).map((p) => p.node));
  const reads = (k: Schedule['kernels'][number]) => k.bindings.filter((bd) => bd.access === 'read').map((bd) => bd.value);
  return s.kernels.filter((k) => reads(k).length > 0 && reads(k).every((v) => lora.has(v)));
};

test('eva_tiny stage 2: the forward has as many kernels as without LoRA, and the LoRA factors are read by the norm and qkv kernels', () => {
  const plain = evaTiny(false);
  const lora = evaTiny(true);
  const [a, b] = [sched(plain), sched(lora)];
  assert.equal(b.kernels.length, a.kernels.length, b.kernels.map((k) => k.name).join('\n'));
  assert.deepEqual(loraOnly(b, lora), []);
  const names = (id: number) => b.kernels.filter((k) => k.bindings.some((bd) => bd.value === id)).map((k) => k.name);
  for (const p of lora.params.filter((x) => x.name.endsWith('lora_A'))) assert.deepEqual(names(p.node), ['layernorm_rows_wg_f32+mul_add+mm+mul'], p.name);
  for (const p of lora.params.filter((x) => x.name.endsWith('lora_B'))) assert.deepEqual(names(p.node), ['matmul_naive_f32_bt+mm+add_add'], p.name);
  // Off, the branch's pads, concat and two matmuls are kernels of their own again.
  assert.ok(sched(lora, PORTABLE_TARGET, { secondProducts: false }).kernels.length >= a.kernels.length + 2 * 5);
});

test('visft compile --emit kernels shows the same count with and without the stage', () => {
  const count = (extra: string[]) => {
    const args = [root + 'bin/visft.js', 'compile', root + 'pipelines/eva_tiny.visft', '--entry', 'eva', '--shape', 'image=2x3x56x56', '--emit', 'kernels', ...extra];
    const p = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 120_000 });
    assert.equal(p.status, 0, p.stderr);
    return Number(/^# (\d+) kernels/.exec(p.stdout)?.[1]);
  };
  const [without, withLora] = [count([]), count(['--stage', 'stage2'])];
  assert.ok(without > 0);
  assert.equal(withLora, without);
});

test('no row product where a row does not fit workgroup memory; the branch then has its own matmul', () => {
  const g = loraProjection({ batch: 2, seq: 5, d: 64, out: 96, rank: 4, alpha: 8, rows: [[0, 32], [64, 96]] });
  // A row of 64 f32s and less than the row kernel's two 16-lane reduction buffers (kernels/row.ts).
  const tiny: Target = { ...PORTABLE_TARGET, name: 'tiny-wg', limits: { ...PORTABLE_TARGET.limits, maxComputeWorkgroupStorageSize: 4 * 64 + 4 * 31 } };
  const names = sched(g, tiny).kernels.map((k) => k.name);
  assert.ok(names.some((n) => /^matmul_\w+_f32_bt\+mul$/.test(n)), names.join(', '));
  assert.deepEqual(sched(g).kernels.map((k) => k.name), ['layernorm_rows_wg_f32+mul_add+mm+mul', 'matmul_naive_f32_bt+mm+add_add']);
});

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

/** The longest sums behind a projection's output: the layernorm's and the product's over d, the second product's over the rank. */
const projectionTerms = (d: number, rank: number) => 2 * d + rank;

/**
 * eva_tiny's (stdlib/eva_vit.visft: 56², patches of 14, width 96, 2 blocks, 4 heads, mlp 256, 17 tokens) longest
 * chain of sums: the patch embedding over 3·14·14, then per block the norms, qkv, proj and fc1 over 96, the scores
 * over 24, softmax and attention·v over 17 tokens, fc2 over 256.
 */
const EVA_TINY_TERMS = 3 * 14 * 14 + 2 * (5 * 96 + 24 + 2 * 17 + 256);

const feeds = (g: Graph, seed: number) => {
  const rng = makeRng(seed);
  const feed = (named: readonly { name: string; node: number }[]) => new Map(named.map((e) => [e.name, randomTensor(g.node(e.node).shape, rng, -1, 1)] as const)) as Map<string, RefTensor>;
  return { inputs: feed(g.inputs), params: feed(g.params) };
};

test('on the device: random LoRA projections equal the unfused kernels (bit for bit on a software adapter) and the CPU reference', async () => {
  const common = { rank: fc.integer({ min: 1, max: 9 }), alpha: fc.constantFrom(8, 6, 1), two: fc.boolean(), seed: fc.integer() };
  const small = fc.record({ batch: fc.integer({ min: 1, max: 3 }), seq: fc.integer({ min: 17, max: 45 }), d: fc.integer({ min: 20, max: 150 }), out3: fc.integer({ min: 8, max: 60 }), ...common });
  // Over 2M multiply-adds with M and N of 132 or more: the tiled projection.
  const large = fc.record({ batch: fc.constant(3), seq: fc.integer({ min: 44, max: 50 }), d: fc.integer({ min: 130, max: 160 }), out3: fc.integer({ min: 44, max: 60 }), ...common });
  const arb = fc.oneof({ arbitrary: small, weight: 2 }, { arbitrary: large, weight: 1 });
  let tiled = 0;
  await fc.assert(
    fc.asyncProperty(arb, async (c) => {
      const out = 3 * c.out3;
      const rows: [number, number][] = c.two ? [[0, c.out3], [2 * c.out3, out]] : [[c.out3, 2 * c.out3]];
      const g = loraProjection({ ...c, out, rows });
      const what = JSON.stringify({ ...c, out });
      const f = feeds(g, c.seed);
      const program = await assertSchedulesAgree(gpu, g, f, {}, { secondProducts: false }, what, { terms: projectionTerms(c.d, c.rank) });
      const names = program.schedule.kernels.map((k) => k.name);
      assert.equal(names.length, 2, `${what}: ${names.join(', ')}`);
      const proj = g.nodes.find((n) => n.op === 'matmul' && g.node(n.inputs[1]).op === 'permute' && g.node(g.node(n.inputs[1]).inputs[0]).op === 'param' && g.params.find((p) => p.node === g.node(n.inputs[1]).inputs[0])?.name === 'w')!;
      const expected = interpret(g, f.inputs, f.params);
      const d = matmulMismatch(expected, await runGpu(gpu, g, program, f.inputs, f.params), c.d);
      assert.equal(d, undefined, `${what}: ${d}`);
      // Software adapters take the blocked projection where hardware takes the tiled one: run both kernels' second
      // products here, the tiled one scheduled for a hardware-like target.
      const hardware = hardwareLike(gpu.target);
      if (matmulVariant(proj, proj.inputs.map((i) => g.node(i)), hardware) === 'tiled') {
        tiled++;
        const dh = matmulMismatch(expected, await runGpu(gpu, g, scheduledProgram(g, hardware, {}), f.inputs, f.params), c.d);
        assert.equal(dh, undefined, `${what} (tiled): ${dh}`);
      }
    }),
    { numRuns: 6, seed: 4242 },
  );
  assert.ok(tiled > 0, 'no case ran the tiled projection');
});

// The VJP runs these kernels too; it is checked against PyTorch in test/gpu/eva-tiny-gpu.test.ts.
test('on the device: the eva_tiny stage-2 forward equals the unfused LoRA kernels (bit for bit on a software adapter)', async () => {
  const g = evaTiny(true);
  await assertSchedulesAgree(gpu, g, feeds(g, 7), {}, { secondProducts: false }, 'eva_tiny stage2', { terms: EVA_TINY_TERMS });
});

test('on the device: with one row per workgroup (little workgroup memory) the row product still equals the unfused kernels', async () => {
  const g = loraProjection({ batch: 2, seq: 9, d: 200, out: 96, rank: 8, alpha: 16, rows: [[0, 32], [64, 96]] });
  // Room for one row of 200 f32s (and the reduction buffers, none with subgroups on a software adapter), not two.
  const small: Target = { ...gpu.target, name: 'small-wg', limits: { ...gpu.target.limits, maxComputeWorkgroupStorageSize: 4 * 200 + 4 * 150 } };
  const f = feeds(g, 3);
  const program = scheduledProgram(g, small, {});
  assert.match(program.schedule.kernels[0].name, /^layernorm_rows_wg_f32\+mul_add\+mm\+mul/);
  assert.match(program.schedule.kernels[0].wgsl, /array<f32, 200>;/);
  const fused = await runGpu(gpu, g, program, f.inputs, f.params);
  const plain = await runGpu(gpu, g, scheduledProgram(g, small, { secondProducts: false }), f.inputs, f.params);
  for (const [name, v] of plain) assertKernelsAgree(gpu.target, fused.get(name)!.data, v.data, name, projectionTerms(200, 8));
});
