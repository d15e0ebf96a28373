// The f32 flash kernels with their swept side split across workgroups (Target.tuning.flashSweepSplit,
// kernels/flash-sweep-split.ts): how many chunks (sweepChunks), the chains the schedule runs for the bench rows, and on
// the device, through the schedule, against the float64 reference: attention (with and without its lse sibling), a
// lone attention_lse, and a VJP's dq, dk, dv (apart, or dk with dv in one kernel) as the autodiff rule builds them, on
// random shapes, masks (whole chunks of keys at -inf for some rows, rows masked entirely), tiles, software and
// hardware-like kernels; and with q, k, v and g read through views of a projection and a cotangent, as a ViT has them
// (bitwise repeatable there).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import type { Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import type { Attrs, Graph } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { SWEEP_CHUNK_MIN_TILES, sweepChunks, MAX_SWEEP_CHUNKS } from '../../kernels/flash-sweep-split.js';
import { benchRows, rowGraph } from '../../runtime/bench/rows.js';
import { runGpu } from '../../runtime/run-gpu.js';
import { fcParams, hardwareLike } from './core-util.js';
import { compare, randomTensor, sharedDevice } from './harness.js';
import { attentionWithGrads, FORWARD_TOL, GRAD_TOL, type AttentionCaseDims } from './attention-cases.js';

const H200 = TARGETS['nvidia-h200'];
/** The shipped H200 profile's flash tiles (2 rows per invocation, 2 lanes per row, 128 invocations). */
const H200_CAPS = { rows: 2, split: 2, sweep: 16, workgroup: 128 };
/** The tolerance of output `name`: the forward's, or the gradients'. */
const tolOf = (name: string) => (name.startsWith('d') ? GRAD_TOL : FORWARD_TOL);

describe('how many chunks', () => {
  test('enough for the fill, each at least SWEEP_CHUNK_MIN_TILES tiles, at most MAX_SWEEP_CHUNKS, covering the keys once', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 1, max: 20000 }), fc.constantFrom(4, 8, 16, 32), (fill, groups, Sk, sweep) => {
        const c = sweepChunks(fill, groups, Sk, sweep);
        const tiles = Math.ceil(Sk / sweep);
        if (!c) {
          // One chunk only where more would not help or not fit: the grid fills already, or too few tiles.
          assert.ok(groups * 2 > fill || tiles < 2 * SWEEP_CHUNK_MIN_TILES || Math.ceil(fill / groups) < 2, `${fill} ${groups} ${Sk} ${sweep}`);
          return;
        }
        assert.ok(c.count >= 2 && c.count <= MAX_SWEEP_CHUNKS);
        assert.equal(c.len % sweep, 0);
        assert.ok(c.len >= SWEEP_CHUNK_MIN_TILES * sweep);
        assert.ok((c.count - 1) * c.len < Sk && Sk <= c.count * c.len, 'every chunk holds keys, and they cover Sk');
        assert.ok(c.count <= Math.ceil(fill / groups), 'no more chunks than the fill asks for');
      }),
      fcParams(300, 11),
    );
    assert.deepEqual(sweepChunks(1056, 288, 2304, 16), { count: 4, len: 576 });
    assert.equal(sweepChunks(264, 288, 2304, 16), undefined, 'the grid fills already');
    assert.equal(sweepChunks(1056, 288, 100, 16), undefined, '7 tiles: chunks of fewer than 4 tiles');
  });
});

describe('as generated for the H200', () => {
  const target = (fill?: number): Target => ({ ...H200, tuning: { flashCaps: H200_CAPS, ...(fill ? { flashSweepSplit: fill } : {}) } });
  const rowOf = (name: string) => rowGraph(benchRows('full').find((r) => r.name === name)!).graph;

  test('EVA-G detection: 288 workgroups become 4 grids of 288 over 576 keys each, then the merge', () => {
    const { schedule } = compileGpu(rowOf('attention_fwd_evag_detection'), target(1056));
    assert.deepEqual(
      schedule.kernels.map((k) => [k.name, k.dispatch[0] * k.dispatch[1] * k.dispatch[2]]),
      [
        ['attention_flash_part4_f32', 1152],
        ['attention_keysum4_f32', Math.ceil((16 * 2304 * 88) / 256)],
      ],
    );
    const [part, sum] = schedule.kernels;
    assert.match(part.wgsl, /let chunk = grp_all \/ 288u;\n {2}let grp = grp_all % 288u;/);
    assert.match(part.wgsl, /let j0_begin = chunk \* 576u;\n {2}let j0_end = min\(j0_begin \+ 576u, 2304u\);\n {2}for \(var j0 = j0_begin; j0 < j0_end; j0 \+= 16u\) \{/);
    // The partial state: the output unscaled (no / l), then m and l after the four chunks' outputs.
    assert.doesNotMatch(part.wgsl, /\/ l0/);
    assert.match(part.wgsl, /out_0\[12976128u \+ \(chunk\) \* 36864u \+ bh \* 2304u \+ i0\] = m0;/);
    assert.match(part.wgsl, /out_0\[13123584u \+ \(chunk\) \* 36864u \+ bh \* 2304u \+ i0\] = l0;/);
    // The merge: chunks in order, weights e^{m_c - M}.
    assert.equal(sum.wgsl.match(/acc = fma\(w, part\[/g)?.length, 4);
    assert.match(sum.wgsl, /out_0\[i\] = acc \/ l;/);
    // The scratch: 4 chunks of 36864 rows, 88 values and m, l each.
    assert.equal(schedule.kernels[0].bindings.at(-1)!.value, sum.bindings[0].value);
  });

  test("a VJP: the forward's merge writes the lse; dq's keys and dk with dv's queries split, their partial sums added", () => {
    const { schedule } = compileGpu(rowOf('attention_vjp_evag_detection'), target(1056));
    const names = schedule.kernels.map((k) => [k.name, k.dispatch[0] * k.dispatch[1] * k.dispatch[2], k.nodes.length]);
    assert.deepEqual(names, [
      ['attention_flash_part4_f32', 1152, 1],
      ['attention_keysum4_f32', Math.ceil((16 * 2304 * 88) / 256), 2],
      ['reduce_sum_seq_f32+mul', 144, 2],
      ['attention_grad_q_flash_part4_f32', 1152, 1],
      ['attention_grad_sum4_f32', Math.ceil((16 * 2304 * 88) / 256), 1],
      ['attention_grad_kv_flash_part4_f32', 1152, 1],
      ['attention_grad_sum4_f32', Math.ceil((2 * 16 * 2304 * 88) / 256), 2],
    ]);
    const [, sum, , dq, , kv, kvSum] = schedule.kernels;
    assert.match(sum.wgsl, /if \(col == 0u\) \{ out_1\[row\] = mx \+ log_f32\(l\); \}/);
    assert.match(dq.wgsl, /let j0_begin = chunk \* 576u;/);
    assert.match(kv.wgsl, /let i0_begin = chunk \* 576u;\n {2}let i0_end = min\(i0_begin \+ 576u, 2304u\);/);
    // dk's partials, then dv's after all four chunks of dk (4 · 36864 rows of 88).
    assert.match(kv.wgsl, /out_0\[at \+ 0u\] = v\.x;/);
    assert.match(kv.wgsl, /let at = \(chunk \* 36864u \+ bh \* 2304u \+ j0\) \* 88u \+ c;/);
    assert.match(kv.wgsl, /let at = 12976128u \+ \(chunk \* 36864u \+ bh \* 2304u \+ j0\) \* 88u \+ c;/);
    assert.match(kvSum.wgsl, /out_1\[i - 3244032u\] = part\[12976128u \+ i - 3244032u\] \+ part\[16220160u \+ i - 3244032u\]/);
  });

  test('not asked for, a grid that fills already, or too few keys: the one kernel', () => {
    const names = (name: string, fill?: number) => compileGpu(rowOf(name), target(fill)).schedule.kernels.map((k) => k.name);
    assert.deepEqual(names('attention_fwd_evag_detection'), ['attention_flash_f32']);
    assert.deepEqual(names('attention_fwd_evag_detection', 264), ['attention_flash_f32']);
    assert.deepEqual(names('attention_fwd_evag_caption', 1056), ['attention_flash_part3_f32', 'attention_keysum3_f32']);
    // Empty queries: the one kernel.
    const b = new Builder();
    const [q, k, v] = [b.input('q', [1, 1, 0, 8]), b.input('k', [1, 1, 64, 8]), b.input('v', [1, 1, 64, 8])];
    b.output('y', b.add('attention', [q, k, v]));
    assert.deepEqual(
      compileGpu(b.graph, { ...target(1 << 20), tuning: { flashSweepSplit: 1 << 20, flashCaps: { sweep: 4 } } }).schedule.kernels.map((kk) => kk.name),
      compileGpu(b.graph, H200).schedule.kernels.map((kk) => kk.name),
    );
    // Under a tensor-core forward (f32 split into f16 pairs) that kernel runs, not the key split.
    const tc = compileGpu(rowOf('attention_fwd_evag_detection'), { ...H200, tuning: { flashSweepSplit: 1056, f32AttentionTensorCores: true } });
    assert.ok(!tc.schedule.kernels.some((k) => /part|keysum/.test(k.name)));
  });
});

// ------------------------------------------------------------------------------------------------ on the device

type Kind = 'attention' | 'attention+lse' | 'lse' | 'vjp';
type MaskKind = 'none' | 'keys' | 'chunk' | 'row';

interface Case extends AttentionCaseDims {
  kind: Kind;
  /** For 'vjp': which of dq, dk, dv the graph asks for. */
  needs: [boolean, boolean, boolean];
  mask: MaskKind;
  scale?: number;
  sweep: 4 | 8;
  own: number;
  hardware: boolean;
  seed: number;
}

/**
 * The case's graph: attention (with its attention_lse sibling for 'attention+lse') or attention_lse alone, over inputs
 * q, k, v and a mask [Sq, Sk] where the case has one.
 */
function caseGraph(c: Case): Graph {
  const b = new Builder();
  const q = b.input('q', [c.b, c.h, c.sq, c.d]);
  const k = b.input('k', [c.b, c.h, c.sk, c.d]);
  const v = b.input('v', [c.b, c.h, c.sk, c.dv]);
  const mask = c.mask === 'none' ? [] : [b.input('m', [c.sq, c.sk])];
  const attrs: Attrs = c.scale === undefined ? {} : { scale: c.scale };
  if (c.kind === 'vjp') {
    const g = b.input('g', [c.b, c.h, c.sq, c.dv]);
    const { y, grads } = attentionWithGrads(b, [q, k, v, g, ...mask], attrs, [...c.needs, ...mask.map(() => false)]);
    b.output('y', y);
    grads.forEach((d, i) => d !== undefined && b.output(`d${'qkv'[i]}`, d));
    return b.graph;
  }
  if (c.kind !== 'lse') b.output('y', b.add('attention', [q, k, v, ...mask], attrs));
  if (c.kind !== 'attention') b.output('lse', b.add('attention_lse', [q, k, ...mask], attrs));
  return b.graph;
}

/**
 * The mask: random values, and -inf on every key of chunk 0 for the even rows ('chunk': a chunk with nothing to add), on
 * every key but the last ('keys'), or on every key of row 0 ('row': a row masked entirely, NaN and lse -inf).
 */
function caseMask(c: Case, len: number): Float32Array {
  const m = randomTensor([c.sq, c.sk], c.seed + 4, -3, 1).data;
  for (let i = 0; i < c.sq; i++)
    for (let j = 0; j < c.sk; j++) {
      const off = (c.mask === 'chunk' && i % 2 === 0 && j < len) || (c.mask === 'keys' && j < c.sk - 1) || (c.mask === 'row' && i === 0);
      if (off) m[i * c.sk + j] = -Infinity;
    }
  return m;
}

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    b: fc.integer({ min: 1, max: 2 }),
    h: fc.integer({ min: 1, max: 2 }),
    sq: fc.integer({ min: 1, max: 40 }),
    sk: fc.integer({ min: 32, max: 90 }),
    d: fc.oneof(fc.constantFrom(8, 24), fc.integer({ min: 1, max: 20 })),
    dv: fc.oneof(fc.constant(-1), fc.integer({ min: 1, max: 20 })),
    kind: fc.constantFrom<Kind>('attention', 'attention+lse', 'lse', 'vjp', 'vjp'),
    needs: fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()).filter((n) => n.some((x) => x)),
    mask: fc.constantFrom<MaskKind>('none', 'keys', 'chunk', 'row'),
    scale: fc.option(fc.constantFrom(0.3, 1.5), { nil: undefined }),
    sweep: fc.constantFrom<4 | 8>(4, 8),
    own: fc.constantFrom(4, 8, 16),
    hardware: fc.boolean(),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  })
  // A row masked entirely makes every gradient NaN (its P is e^{−∞ + ∞}): the VJP takes masked chunks instead.
  .map((c) => ({ ...c, dv: c.dv < 0 ? c.d : c.dv, mask: c.kind === 'vjp' && c.mask === 'row' ? 'chunk' : c.mask }));

const label = (c: Case) => `${c.kind}${c.kind === 'vjp' ? ` ${c.needs.map((n, i) => (n ? `d${'qkv'[i]}` : '')).join('')}` : ''} [${c.b},${c.h},${c.sq},${c.sk}] d ${c.d} dv ${c.dv} mask ${c.mask} scale ${c.scale ?? 'default'} sweep ${c.sweep} own ${c.own}${c.hardware ? ' as hardware' : ''}`;

describe('on the device, through the schedule', () => {
  const gpu = sharedDevice();
  /** The device's target asking for the split wherever it can (a fill no grid reaches), with the case's tiles. */
  const splitTarget = (base: Target, sweep: number, own: number): Target => ({ ...base, tuning: { ...base.tuning, flashSweepSplit: 1 << 20, flashCaps: { sweep, own } } });

  test('attention with and without its lse, attention_lse alone, and VJPs, against the float64 reference', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const base = c.hardware ? hardwareLike(gpu().target) : gpu().target;
        const target = splitTarget(base, c.sweep, c.own);
        const graph = caseGraph(c);
        const program = compileGpu(graph, target);
        const names = program.schedule.kernels.map((k) => k.name);
        // 32 to 90 keys in tiles of 4 or 8: split wherever two chunks of SWEEP_CHUNK_MIN_TILES tiles fit.
        const tiles = Math.ceil(c.sk / c.sweep);
        const chunks = sweepChunks(1 << 20, 1, c.sk, c.sweep);
        if (tiles >= 2 * SWEEP_CHUNK_MIN_TILES) assert.ok(names.some((n) => /^attention(_lse)?_flash_part\d+_f32$/.test(n)) && names.some((n) => /keysum\d+_f32$/.test(n)), `${label(c)}: ${names.join(' ')}`);
        // dq sweeps the keys; dk and dv sweep the queries, which split where Sq has 2·SWEEP_CHUNK_MIN_TILES tiles.
        if (c.kind === 'vjp' && c.needs[0] && tiles >= 2 * SWEEP_CHUNK_MIN_TILES) assert.ok(names.some((n) => /^attention_grad_q_flash_part\d+_f32$/.test(n)), `${label(c)}: ${names.join(' ')}`);
        if (c.kind === 'vjp' && (c.needs[1] || c.needs[2]) && Math.ceil(c.sq / c.sweep) >= 2 * SWEEP_CHUNK_MIN_TILES) assert.ok(names.some((n) => /^attention_grad_(k|v|kv)_flash_part\d+_f32$/.test(n)), `${label(c)}: ${names.join(' ')}`);
        const inputs = new Map<string, RefTensor>([
          ['q', { shape: [c.b, c.h, c.sq, c.d], data: Float64Array.from(randomTensor([c.b, c.h, c.sq, c.d], c.seed).data) }],
          ['k', { shape: [c.b, c.h, c.sk, c.d], data: Float64Array.from(randomTensor([c.b, c.h, c.sk, c.d], c.seed + 1).data) }],
          ['v', { shape: [c.b, c.h, c.sk, c.dv], data: Float64Array.from(randomTensor([c.b, c.h, c.sk, c.dv], c.seed + 2).data) }],
        ]);
        if (c.kind === 'vjp') inputs.set('g', { shape: [c.b, c.h, c.sq, c.dv], data: Float64Array.from(randomTensor([c.b, c.h, c.sq, c.dv], c.seed + 3).data) });
        if (c.mask !== 'none') inputs.set('m', { shape: [c.sq, c.sk], data: Float64Array.from(caseMask(c, chunks?.len ?? c.sk)) });
        const got = await runGpu(gpu(), graph, program, inputs, new Map());
        const ref = interpret(graph, inputs);
        for (const [name, r] of ref) compare(Float32Array.from(got.get(name)!.data), r.data, r.shape, { ...tolOf(name), label: `${label(c)}: ${name}` }, program.schedule.kernels);
      }),
      fcParams(12, 5),
    );
  });

  test('q, k, v and g read through views of a projection and a cotangent (as a ViT block has them): forward and VJP', async () => {
    const [B, H, S, D] = [1, 2, 70, 12];
    const b = new Builder();
    const x = b.input('x', [B, S, 3 * H * D]);
    const heads = (i: number) => b.add('slice', [x], { dim: 2, start: i * H * D, end: (i + 1) * H * D });
    const split = (id: number) => b.add('permute', [b.add('reshape', [id], { shape: [B, S, H, D] })], { dims: [0, 2, 1, 3] });
    const [q, k, v] = [0, 1, 2].map((i) => split(heads(i)));
    const { y, grads } = attentionWithGrads(b, [q, k, v, split(b.input('gx', [B, S, H * D]))]);
    b.output('y', y);
    grads.forEach((d, i) => b.output(`d${'qkv'[i]}`, d!));
    const inputs = new Map<string, RefTensor>([
      ['x', { shape: [B, S, 3 * H * D], data: Float64Array.from(randomTensor([B, S, 3 * H * D], 77).data) }],
      ['gx', { shape: [B, S, H * D], data: Float64Array.from(randomTensor([B, S, H * D], 78).data) }],
    ]);
    const ref = interpret(b.graph, inputs);
    for (const base of [gpu().target, hardwareLike(gpu().target)]) {
      const program = compileGpu(b.graph, splitTarget(base, 4, 8));
      const names = program.schedule.kernels.map((kk) => kk.name).filter((n) => n.startsWith('attention'));
      // Each partial kernel reads the projection in place; each combining kernel writes the values.
      assert.deepEqual(
        names.map((n) => n.replace(/\d+_f32/, '_f32')),
        ['attention_flash_part_f32_qv_kv_vv', 'attention_keysum_f32', 'attention_grad_q_flash_part_f32_qv_kv_vv', 'attention_grad_sum_f32', 'attention_grad_kv_flash_part_f32_qv_kv_vv', 'attention_grad_sum_f32'],
      );
      const got = await runGpu(gpu(), b.graph, program, inputs, new Map());
      // Chunks combined in a fixed order, no atomics: a second run gives the same bits.
      const again = await runGpu(gpu(), b.graph, program, inputs, new Map());
      for (const [name, x] of got) assert.deepEqual(new Uint32Array(Float32Array.from(again.get(name)!.data).buffer), new Uint32Array(Float32Array.from(x.data).buffer), `${base.name}: ${name} repeats`);
      for (const [name, r] of ref) compare(Float32Array.from(got.get(name)!.data), r.data, r.shape, { ...tolOf(name), label: `${base.name}: ${name}` }, program.schedule.kernels);
    }
  });
});
