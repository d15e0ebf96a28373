// Attention kernels reading q, k, v (and the backward's g) in place (compiler/codegen/attention-views.ts;
// kernels/attention.ts attentionReads): the slices and permutes that split a fused qkv projection into heads,
// and q's scaling, run inside the flash kernels. eva_tiny loses five kernels per block (forward and VJP, with
// and without LoRA), also through `visft compile --emit kernels`; shared, exported and too-wide trees keep their
// kernels; and on the device random movement trees (slices of a packed buffer, transposes, concats, expands,
// strided slices; head dims not multiples of 4; f32 and f16 storage; scalings and autocast roundings on q and
// k) give the same bits as the unfused schedule, forward, lse and the three gradients.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { checkFiles } from '../../compiler/check/index.js';
import { schedule, type Schedule, type ScheduleOptions } from '../../compiler/codegen/schedule.js';
import { planAttentionViews } from '../../compiler/codegen/attention-views.js';
import { PORTABLE_TARGET, type Kernel, type Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Attrs, type Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import { compileEntry } from '../../compiler/lower/entry.js';
import { planMemory } from '../../compiler/plan/memory.js';
import { attentionReads } from '../../kernels/attention.js';
import { flashBackwardKernel } from '../../kernels/flash-backward.js';
import { canSplit, type FlashReads } from '../../kernels/flash-common.js';
import { flashForwardKernel } from '../../kernels/flash-forward.js';
import { GPU_RULES } from '../../kernels/index.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { feeds } from '../passes/graphs.js';
import { assertBitwise, assertSchedulesAgree, runKernel } from '../kernels/harness.js';
import type { AttentionCaseDims } from '../kernels/attention-cases.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const OFF: ScheduleOptions = { attentionViews: false };
const isAttention = (name: string) => name.startsWith('attention');

/** Every read binding is written by an earlier kernel (or is an input or parameter), within the target's bindings; the memory plan accepts it. */
function assertWellFormed(g: Graph, target: Target, what: string, opts: ScheduleOptions = {}): Schedule {
  const s = schedule(g, target, GPU_RULES, opts);
  const ready = new Set<number>([...g.inputs, ...g.params].map((x) => x.node));
  for (const k of s.kernels) {
    assert.ok(k.bindings.length <= target.limits.maxStorageBuffersPerShaderStage, `${what}: ${k.name} binds ${k.bindings.length}`);
    for (const b of k.bindings) if (b.access === 'read') assert.ok(ready.has(b.value), `${what}: ${k.name} reads %${b.value} before it is written`);
    for (const b of k.bindings) if (b.access === 'read_write') ready.add(b.value);
  }
  planMemory({ values: s.values, schedule: s.kernels, aliases: s.aliases }, target);
  return s;
}

function evaTiny(stage: string | undefined, vjp: boolean): Graph {
  const checked = checkFiles([root + 'pipelines/eva_tiny.visft']);
  return compileEntry(checked, checked.roots[0], { entry: 'eva', stage, vjp, shapes: new Map([['image', [2, 3, 56, 56]]]) }).graph;
}

test('eva_tiny: each block loses q, k, v slices and permutes and q scaling kernels (stage 1 and 2, forward and VJP)', () => {
  for (const stage of [undefined, 'stage2']) {
    for (const vjp of [false, true]) {
      const what = `${stage ?? 'no LoRA'}${vjp ? ' VJP' : ''}`;
      const g = evaTiny(stage, vjp);
      const on = assertWellFormed(g, PORTABLE_TARGET, what);
      const off = schedule(g, PORTABLE_TARGET, GPU_RULES, OFF);
      // Two blocks, five kernels each: slice and permute of k and of v, slice + permute + scale of q.
      assert.equal(on.kernels.length, off.kernels.length - 10, `${what}: ${on.kernels.length} kernels with attention views, ${off.kernels.length} without`);
      const attention = on.kernels.filter((k) => isAttention(k.name));
      assert.equal(attention.length, vjp ? 6 : 2, `${what}: ${attention.map((k) => k.name).join(', ')}`);
      for (const k of attention) {
        assert.match(k.name, /_qv_kv_vv\+mul$/, what);
        // q, k and v come from one buffer: the projection's output (a matmul epilogue's root).
        const qkv = k.bindings[0].value;
        assert.equal(g.node(qkv).op, 'add', `${what}: ${k.name} binds %${qkv} ${g.node(qkv).op}`);
        assert.equal(k.bindings.filter((b) => b.value === qkv).length, 1);
        const ops = k.nodes.map((n) => g.node(n).op);
        assert.ok(ops.every((op) => ['slice', 'reshape', 'permute', 'mul'].includes(op) || op.startsWith('attention')), `${what}: ${k.name} computes ${ops.join(', ')}`);
        assert.equal(ops.filter((op) => op === 'slice').length, 3);
      }
      const scalings = (x: Schedule) => x.kernels.filter((k) => k.name === 'fused_mul_f32').length;
      assert.equal(scalings(on), scalings(off) - 2, what);
    }
  }
});

test('visft compile --emit kernels: the attention kernels bind the qkv projection alone', () => {
  const args = [root + 'bin/visft.js', 'compile', root + 'pipelines/eva_tiny.visft', '--entry', 'eva', '--shape', 'image=2x3x56x56', '--emit', 'kernels', '--stage', 'stage2'];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const count = Number(/^# (\d+) kernels/.exec(lines[0])?.[1]);
  assert.equal(count, schedule(evaTiny('stage2', false), PORTABLE_TARGET, GPU_RULES).kernels.length);
  assert.equal(count, schedule(evaTiny('stage2', false), PORTABLE_TARGET, GPU_RULES, OFF).kernels.length - 10);
  const attention = lines.filter((l) => / attention_flash_f32/.test(l));
  assert.equal(attention.length, 2, r.stdout);
  for (const l of attention) {
    assert.match(l, /attention_flash_f32_qv_kv_vv\+mul .* computes (%\d+ (slice|reshape|permute|mul), )+%\d+ attention {2}binds %\d+ w:%\d+$/, l);
  }
  assert.ok(!lines.some((l) => / fused_mul_f32 /.test(l)), r.stdout);
});

test('a tree another node reads, or that is an output, keeps its kernel; a prologue never splits a fusion group', () => {
  const b = new Builder();
  const x = b.input('x', [1, 5, 2 * 3 * 8]);
  const heads = (start: number) => b.add('permute', [b.add('reshape', [b.add('slice', [x], { dim: 2, start, end: start + 16 })], { shape: [1, 5, 2, 8] })], { dims: [0, 2, 1, 3] });
  const q = heads(0);
  const k = heads(16);
  const v = heads(32);
  b.output('y', b.add('attention', [q, k, v]));
  b.output('kexp', b.add('exp', [k])); // k is read elsewhere: computed once, bound
  b.output('v', v); // v is an output: it keeps its storage
  const s = assertWellFormed(b.graph, PORTABLE_TARGET, 'shared');
  const attn = s.kernels.find((k) => isAttention(k.name))!;
  assert.equal(attn.name, 'attention_flash_f32_qv');
  assert.deepEqual(attn.bindings.map((x) => x.value), [x, k, v, b.graph.nodes.find((n) => n.op === 'attention')!.id]);

  // q = exp(permute(t))·c: exp and the scaling are one fusion group, wholly a prologue.
  const c = new Builder();
  const t = c.input('t', [1, 2, 8, 5]);
  const kk = c.input('k', [1, 2, 5, 8]);
  const scaled = c.add('mul', [c.add('exp', [c.add('permute', [t], { dims: [0, 1, 3, 2] })]), c.full(0.5, [1])]);
  c.output('y', c.add('attention', [scaled, kk, kk]));
  const names = assertWellFormed(c.graph, PORTABLE_TARGET, 'prologue').kernels.map((k) => k.name);
  assert.deepEqual(names, ['attention_flash_f32_qv+exp_mul']);
  // q = (exp(permute(t)) + u)·c: the scaling alone would split the group {exp, add, mul}; the group computes q.
  const d = new Builder();
  const u = d.input('u', [1, 2, 5, 8]);
  const k2 = d.input('k', [1, 2, 5, 8]);
  const sum = d.add('add', [d.add('exp', [d.add('permute', [d.input('t', [1, 2, 8, 5])], { dims: [0, 1, 3, 2] })]), u]);
  d.output('y', d.add('attention', [d.add('mul', [sum, d.full(0.5, [1])]), k2, k2]));
  assert.deepEqual(assertWellFormed(d.graph, PORTABLE_TARGET, 'split group').kernels.map((k) => k.name), ['fused_exp_add_mul_f32', 'attention_flash_f32']);
});

test('too many leaves for the bindings: plans are dropped until every kernel fits', () => {
  const b = new Builder();
  const part = (name: string) => b.input(name, [1, 2, 3, 5]);
  const cat = (p: string) => b.add('concat', [part(`${p}0`), part(`${p}1`), part(`${p}2`)], { dim: 2 });
  const [q, k, v] = ['q', 'k', 'v'].map(cat);
  const g = cat('g');
  b.output('y', b.add('attention', [q, k, v]));
  const lse = b.add('attention_lse', [q, k]);
  const delta = b.input('delta', [1, 2, 9]);
  for (const wrt of [0, 1, 2]) b.output(`d${wrt}`, b.add('attention_grad', [q, k, v, g, lse, delta], { wrt }));
  // Plain, the kernel of dk and dv binds 6 inputs and 2 outputs; through views, 12 leaves and 4 plain inputs.
  for (const limit of [8, 10, 12, 16]) {
    const target: Target = { ...PORTABLE_TARGET, name: `bindings-${limit}`, limits: { ...PORTABLE_TARGET.limits, maxStorageBuffersPerShaderStage: limit } };
    const s = assertWellFormed(b.graph, target, `${limit} bindings`);
    const attention = s.kernels.filter((k) => isAttention(k.name)).map((k) => k.name);
    if (limit === 16) assert.deepEqual(attention, ['attention_flash_lse_f32_qv_kv_vv', 'attention_grad_q_flash_f32_qv_kv_vv_gv', 'attention_grad_kv_flash_f32_qv_kv_vv_gv']);
    if (limit === 12) assert.ok(attention.some((n) => /_[qkvg]v/.test(n)), attention.join(', '));
  }
});

// ---------------------------------------------------------------------------------------------- on the device

const LAYOUTS = ['packed', 'transposed', 'concat', 'expand', 'strided', 'plain'] as const;
type Layout = (typeof LAYOUTS)[number];
const PROLOGUES = ['none', 'mul', 'mul_first', 'div', 'mul_round'] as const;

interface Case extends AttentionCaseDims {
  layouts: [Layout, Layout, Layout, Layout]; // q, k, v, g
  prologues: [(typeof PROLOGUES)[number], (typeof PROLOGUES)[number]]; // q, k
  factor: number;
  scale: 'default' | 'one' | 'other';
  mask: boolean;
  half: boolean;
  grads: boolean;
  seed: number;
}

const caseArb: fc.Arbitrary<Case> = fc.record({
  b: fc.integer({ min: 1, max: 2 }),
  h: fc.integer({ min: 1, max: 3 }),
  sq: fc.integer({ min: 1, max: 19 }),
  sk: fc.integer({ min: 1, max: 21 }),
  d: fc.oneof(fc.constantFrom(5, 13, 24), fc.integer({ min: 1, max: 9 })),
  dv: fc.integer({ min: 1, max: 11 }),
  layouts: fc.tuple(...([0, 1, 2, 3].map(() => fc.constantFrom(...LAYOUTS)) as [fc.Arbitrary<Layout>, fc.Arbitrary<Layout>, fc.Arbitrary<Layout>, fc.Arbitrary<Layout>])),
  prologues: fc.tuple(fc.constantFrom(...PROLOGUES), fc.constantFrom('none' as const, 'mul' as const, 'mul_round' as const)),
  factor: fc.constantFrom(0.2041241452319315, 0.35355339059327373, 1.7, 3),
  scale: fc.constantFrom('default' as const, 'one' as const, 'other' as const),
  mask: fc.boolean(),
  half: fc.boolean(),
  grads: fc.boolean(),
  seed: fc.integer({ min: 1, max: 1e6 }),
});

/** attention (and attention_lse, and with `grads` the three attention_grad nodes) over operands built as the case says. */
function caseGraph(c: Case, rawPacks = false): Graph {
  const b = new Builder();
  const round = (id: number) => (c.half ? b.add('cast', [b.add('cast', [id], { dtype: 'f16' })], { dtype: 'f32' }) : id);
  // Row operands packed side by side per sequence length (q and g: Sq; k and v: Sk), after two spare columns.
  const specs = [
    { name: 'q', s: c.sq, dx: c.d },
    { name: 'k', s: c.sk, dx: c.d },
    { name: 'v', s: c.sk, dx: c.dv },
    { name: 'g', s: c.sq, dx: c.dv },
  ];
  const packs = new Map<number, { width: number; leaf?: number }>();
  const offsets = specs.map((o, i) => {
    if (c.layouts[i] !== 'packed') return 0;
    const p = packs.get(o.s) ?? { width: 2 };
    packs.set(o.s, p);
    const at = p.width;
    p.width += c.h * o.dx;
    return at;
  });
  const packLeaf = (s: number) => {
    const p = packs.get(s)!;
    // A computed buffer (the projection): x + bias, rounded to f16 values when the case stores f16; or the input itself.
    if (p.leaf === undefined) {
      const x = b.input(`pack${s}`, [c.b, s, p.width]);
      p.leaf = rawPacks ? x : round(b.add('add', [x, b.param(`bias${s}`, [p.width])]));
    }
    return p.leaf;
  };
  const operand = (i: number): number => {
    const { name, s, dx } = specs[i];
    const full = [c.b, c.h, s, dx];
    const leaf = (shape: number[]) => round(b.input(name, shape));
    switch (c.layouts[i]) {
      case 'packed': {
        const cols = b.add('slice', [packLeaf(s)], { dim: 2, start: offsets[i], end: offsets[i] + c.h * dx });
        return b.add('permute', [b.add('reshape', [cols], { shape: [c.b, s, c.h, dx] })], { dims: [0, 2, 1, 3] });
      }
      case 'transposed':
        return b.add('permute', [leaf([c.b, c.h, dx, s])], { dims: [0, 1, 3, 2] });
      case 'concat': {
        if (s < 2) return b.add('permute', [leaf([c.b, c.h, dx, s])], { dims: [0, 1, 3, 2] });
        const first = 1 + (c.seed % (s - 1));
        return b.add('concat', [round(b.input(`${name}0`, [c.b, c.h, first, dx])), round(b.input(`${name}1`, [c.b, c.h, s - first, dx]))], { dim: 2 });
      }
      case 'expand':
        return b.add('expand', [leaf([c.b, 1, s, dx])], { shape: full });
      case 'strided':
        return b.add('slice', [leaf([c.b, c.h, 2 * s + 1, dx])], { dim: 2, start: 1, end: 2 * s + 1, step: 2 });
      case 'plain':
        return leaf(full);
    }
  };
  const prologue = (x: number, kind: Case['prologues'][number]): number => {
    const k = b.full(c.factor, c.seed % 2 ? [1] : []);
    switch (kind) {
      case 'none':
        return x;
      case 'mul':
        return b.add('mul', [x, k]);
      case 'mul_first':
        return b.add('mul', [k, x]);
      case 'div':
        return b.add('div', [x, k]);
      case 'mul_round':
        return b.add('cast', [b.add('cast', [b.add('mul', [x, k])], { dtype: 'f16' })], { dtype: 'f32' });
    }
  };
  const q = prologue(operand(0), c.prologues[0]);
  const k = prologue(operand(1), c.prologues[1]);
  const v = operand(2);
  const mask = c.mask ? [b.input('mask', [c.seed % 3 ? 1 : c.b, 1, c.sq, c.sk])] : [];
  const attrs: Attrs = c.scale === 'default' ? {} : { scale: c.scale === 'one' ? 1 : 0.3 };
  b.output('y', b.add('attention', [q, k, v, ...mask], attrs));
  const lse = b.add('attention_lse', [q, k, ...mask], attrs);
  b.output('lse', lse);
  if (c.grads) {
    const g = operand(3);
    const delta = b.input('delta', [c.b, c.h, c.sq]);
    for (const wrt of [0, 1, 2]) b.output(`d${'qkv'[wrt]}`, b.add('attention_grad', [q, k, v, g, lse, delta, ...mask], { ...attrs, wrt }));
  }
  return b.graph;
}

let gpu: GpuDevice;
before(async () => {
  gpu = await openDevice();
});
after(async () => {
  await gpu?.destroy();
});

test('on the device: random movement trees feeding attention give the bits of the unfused schedule', async () => {
  const seen = { viewed: 0, prologue: 0, gradients: 0, half: 0, concat: 0 };
  await fc.assert(
    fc.asyncProperty(caseArb, async (c) => {
      const graph = caseGraph(c);
      const what = JSON.stringify(c);
      const s = assertWellFormed(graph, gpu.target, what);
      const names = s.kernels.filter((k) => isAttention(k.name)).map((k) => k.name);
      const viewed = names.some((n) => /_[qkvg]v/.test(n));
      seen.viewed += Number(viewed);
      seen.prologue += Number(names.some((n) => n.includes('+')));
      seen.gradients += Number(names.some((n) => n.startsWith('attention_grad') && n.includes('_gv')));
      seen.half += Number(viewed && names.some((n) => n.endsWith('_f16io')));
      seen.concat += Number(c.layouts.some((l, i) => l === 'concat' && names.some((n) => n.includes(`_${'qkvg'[i]}v`))));
      // A packed q, k or v (with a prologue or not) is read in place by the forward kernel where the bindings allow,
      // unless its prologue rounds to f16: that runs once, in a kernel of its own.
      const fwd = names.find((n) => n.startsWith('attention_flash'))!;
      const rounded = (i: number) => c.prologues[i] === 'mul_round';
      if (!c.layouts.slice(0, 3).includes('concat')) c.layouts.slice(0, 3).forEach((l, i) => l === 'packed' && assert.equal(fwd.includes(`_${'qkv'[i]}v`), !rounded(i), `${what}: ${fwd}`));
      await assertSchedulesAgree(gpu, graph, feeds(graph, c.seed, false), {}, OFF, what);
    }),
    { numRuns: 10, seed: 11 },
  );
  // What the ten cases covered (fixed seed): every case reads some operand in place.
  const covered = JSON.stringify(seen);
  assert.equal(seen.viewed, 10, covered);
  for (const k of ['prologue', 'gradients', 'half', 'concat'] as const) assert.ok(seen[k] >= 2, covered);
});

test('on the device: the eva-style split of one qkv buffer with q pre-scaled, forward and gradients, f32 and f16 storage', async () => {
  for (const half of [false, true]) {
    const c: Case = { b: 2, h: 3, sq: 9, sk: 9, d: 7, dv: 7, layouts: ['packed', 'packed', 'packed', 'packed'], prologues: ['mul', 'none'], factor: 1 / Math.sqrt(7), scale: 'one', mask: false, half, grads: true, seed: 7 };
    const graph = caseGraph(c);
    const program = await assertSchedulesAgree(gpu, graph, feeds(graph, 11, false), {}, OFF, `eva-style, ${half ? 'f16' : 'f32'} storage`);
    const names = program.schedule.kernels.map((k) => k.name);
    assert.ok(names.every((n) => !/^(slice|permute|fused_mul)_f32/.test(n)), names.join(', '));
    assert.ok(names.filter((n) => /^attention.*_qv_kv_vv(_gv)?\+mul(_f16io)?$/.test(n)).length >= 3, names.join(', '));
    if (half) {
      const pack = program.schedule.values.find((v) => v.kind === 'temp' && v.shape.join() === [2, 9, 2 + 4 * 3 * 7].join() && v.dtype === 'f16');
      assert.ok(pack, 'the packed buffer is stored as f16');
    }
  }
});

test('on the device, kernel by kernel: rows split over subgroup lanes and several rows per invocation read views too', async () => {
  // The kernels with small tiles, rows split over lanes (as on GPUs with large head dims), against the plain
  // kernels on the operands the views stand for (movement copies and an f32 product: exact on the CPU).
  // Head dim 88: each row over the most lanes the device allows (up to 4); 13: two rows per invocation, unsplit.
  const widest = [4, 2, 1].find((k) => canSplit(gpu.target, k))!;
  for (const [d, split] of [[88, widest], [13, 1]]) {
    const c: Case = { b: 1, h: 2, sq: 13, sk: 11, d, dv: d - 2, layouts: ['packed', 'transposed', 'packed', 'strided'], prologues: ['mul', 'none'], factor: 0.125, scale: 'default', mask: true, half: false, grads: true, seed: 5 };
    const graph = caseGraph(c, true);
    const live = graph.live();
    for (const x of [...graph.inputs, ...graph.params]) live.add(x.node);
    const { plans } = planAttentionViews(graph, live, new Set(graph.outputs.map((o) => o.node)), new Set(), new Map(), [], gpu.target);
    const nodes = graph.nodes.filter((n) => plans.has(n.id) && n.op !== 'attention_lse');
    assert.equal(nodes.length, 4, `head dim ${d}: ${nodes.map((n) => n.op).join(', ')}`);
    const kernels = nodes.map((n) => {
      const caps = { own: 6, sweep: 8, rows: 2, split };
      const inputs = n.inputs.map((i) => graph.node(i));
      const gen = (reads?: FlashReads) => (n.op === 'attention' ? flashForwardKernel(n, inputs, gpu.target, caps, undefined, reads) : flashBackwardKernel(n, inputs, gpu.target, caps, undefined, reads));
      return { n, viewed: gen(attentionReads(graph, n, plans.get(n.id)!)), plain: gen() };
    });
    // The values every kernel binds, from the CPU reference (added as outputs once the plans are made).
    const f = feeds(graph, d, false);
    for (const k of kernels) for (const b of [...k.viewed.bindings, ...k.plain.bindings]) if (b.access === 'read' && !graph.outputs.some((o) => o.name === `%${b.value}`)) graph.outputs.push({ name: `%${b.value}`, node: b.value });
    const values = interpret(graph, f.inputs, f.params);
    const data = (id: number) => Float32Array.from(values.get(`%${id}`)!.data);
    for (const k of kernels) {
      const run = (kernel: Kernel) => runKernel(gpu.device, kernel, kernel.bindings.slice(0, -1).map((b) => data(b.value)), numel(k.n.shape));
      const what = `${k.viewed.name}, head dim ${d}, split ${split}`;
      if (split > 1) assert.match(k.viewed.wgsl, /^enable subgroups;/, what);
      assert.match(k.viewed.name, /_qv_kv_vv(_gv)?\+mul$/, what);
      assertBitwise(await run(k.viewed), await run(k.plain), what);
    }
  }
});
