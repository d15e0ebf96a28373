// Flash attention (kernels/flash-forward.ts, kernels/flash-backward.ts) on Dawn: the forward, attention_lse
// and the gradients in q, k, v and the mask as the autodiff rule builds them, against the float64 CPU
// reference on random shapes (head dims 24, 88 and odd ones, Sq != Sk, lengths that are not multiples of the
// tiles, default and small tiles, several rows per invocation, rows split over subgroup lanes, masks broadcast
// several ways and -inf entries) and against PyTorch float64 fixtures (test/fixtures/ops/make_attention.py),
// also with the kernels generated for hardware; bitwise repeatability; tiles that fit every target's workgroup
// memory; and the VJP graph holding nothing of shape [.., Sq, Sk] but the mask.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { vjp } from '../../compiler/autodiff/vjp.js';
import { compileGpu } from '../../compiler/codegen/gpu.js';
import { PORTABLE_TARGET, type Kernel, type Target } from '../../compiler/codegen/types.js';
import { Builder } from '../../compiler/ir/builder.js';
import { numel, type Attrs, type Node } from '../../compiler/ir/graph.js';
import { interpret } from '../../compiler/ir/interpret.js';
import type { RefTensor } from '../../compiler/ir/rules/reference.js';
import { compileOp } from '../../compiler/lower/op-entry.js';
import { openDevice, type GpuDevice } from '../../runtime/gpu/device.js';
import { kernelRule } from '../../kernels/elementwise.js';
import { flashBackwardKernel, flashBackwardTiles } from '../../kernels/flash-backward.js';
import { canSplit, FlashTileError, HARDWARE_TILES } from '../../kernels/flash-common.js';
import { flashForwardKernel, flashForwardTiles, type FlashCaps } from '../../kernels/flash-forward.js';
import { GPU_RULES } from '../../kernels/index.js';
import { fixtureGraph, fixtures, WRT } from './attention-fixtures.js';
import { fcParams, hardwareLike, tightTarget } from './core-util.js';
import { checkAgainstReference, compare, pipelineFor, randomTensor, runGraph, runKernel, withDevice, type GpuContext, type RuleTable } from './harness.js';
import { attentionWithGrads, FORWARD_TOL, GRAD_TOL, type AttentionCaseDims } from './attention-cases.js';

type Tensor = { shape: number[]; data: Float32Array };
type FlashTilesLike = { rows: number; split: number; sweep: number };

/** GPU_RULES with the flash kernels' tiles capped (several tiles and ragged tails on tiny shapes). */
function capped(caps: FlashCaps): RuleTable {
  return {
    ...GPU_RULES,
    attention: kernelRule((n, i, t) => flashForwardKernel(n, i, t, caps)),
    attention_lse: kernelRule((n, i, t) => flashForwardKernel(n, i, t, caps)),
    attention_grad: kernelRule((n, i, t) => flashBackwardKernel(n, i, t, caps)),
  };
}

/** Tilings: the target's own, small ones (several tiles, ragged tails), and three rows per invocation. */
const TILES: Record<string, RuleTable | undefined> = {
  default: undefined,
  '4x8': capped({ own: 4, sweep: 8 }),
  '2x4': capped({ own: 2, sweep: 4 }),
  rows3: capped({ own: 9, sweep: 4, rows: 3 }),
};



interface Case extends AttentionCaseDims {
  mask: 'none' | 'full' | 'keys' | 'rows' | 'neg_inf';
  scale?: number;
  tiles: string;
  seed: number;
}

const caseArb = (tiles: readonly string[]): fc.Arbitrary<Case> => fc.record({
  b: fc.integer({ min: 1, max: 2 }),
  h: fc.integer({ min: 1, max: 2 }),
  sq: fc.integer({ min: 1, max: 19 }),
  sk: fc.integer({ min: 1, max: 37 }),
  d: fc.oneof(fc.constantFrom(24, 88), fc.integer({ min: 1, max: 33 })),
  dv: fc.oneof(fc.constant(-1), fc.integer({ min: 1, max: 40 })),
  mask: fc.constantFrom('none', 'full', 'keys', 'rows', 'neg_inf'),
  scale: fc.option(fc.constantFrom(0.2, 0.5), { nil: undefined }),
  tiles: fc.constantFrom(...tiles),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
}).map((c) => ({ ...c, dv: c.dv < 0 ? c.d : c.dv }));

function caseTensors(c: Case): Tensor[] {
  const ins = [randomTensor([c.b, c.h, c.sq, c.d], c.seed), randomTensor([c.b, c.h, c.sk, c.d], c.seed + 1), randomTensor([c.b, c.h, c.sk, c.dv], c.seed + 2)];
  ins.push(randomTensor([c.b, c.h, c.sq, c.dv], c.seed + 3));
  if (c.mask !== 'none') {
    const shape = { full: [c.b, c.h, c.sq, c.sk], keys: [c.b, 1, 1, c.sk], rows: [c.h, c.sq, 1], neg_inf: [c.sq, c.sk] }[c.mask];
    const m = randomTensor(shape, c.seed + 4, -3, 1);
    // Some -inf entries, but every row keeps one finite key (a row masked entirely is NaN everywhere).
    if (c.mask === 'neg_inf') for (let i = 0; i < m.data.length; i++) if (i % c.sk !== 0 && (i * 7) % 3 === 0) m.data[i] = -Infinity;
    ins.push(m);
  }
  return ins;
}

const label = (c: Case) => `[${c.b},${c.h},${c.sq},${c.sk}] d ${c.d} dv ${c.dv} mask ${c.mask} scale ${c.scale ?? 'default'} tiles ${c.tiles}`;

/** An H100-like target: 48 KiB of workgroup memory, 1024 invocations. */
const nvidiaLike = (t: Target): Target => ({
  ...hardwareLike(t),
  name: 'nvidia-like',
  limits: { ...t.limits, maxComputeWorkgroupStorageSize: 49152, maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupSizeX: 1024 },
});

function attentionNodes(d: number, mask: boolean, [B, H, Sq, Sk]: readonly number[] = [2, 3, 45, 70]) {
  const b = new Builder();
  const q = b.input('q', [B, H, Sq, d]);
  const k = b.input('k', [B, H, Sk, d]);
  const v = b.input('v', [B, H, Sk, d]);
  const g = b.input('g', [B, H, Sq, d]);
  const m = mask ? [b.input('m', [1, 1, Sq, Sk])] : [];
  const { grads } = attentionWithGrads(b, [q, k, v, g, ...m], {});
  const nodeOf = (id: number) => b.graph.node(id);
  const ins = (n: Node) => n.inputs.map(nodeOf);
  const lse = b.graph.nodes.find((n) => n.op === 'attention_lse')!;
  const fwd = b.graph.nodes.find((n) => n.op === 'attention')!;
  const gradNodes = b.graph.nodes.filter((n) => n.op === 'attention_grad' && n.attrs.wrt !== 3);
  assert.equal(grads.length, mask ? 4 : 3);
  return { fwd, lse, gradNodes, ins };
}

/** Bytes of workgroup memory a kernel's WGSL declares. */
function declaredShared(k: Kernel): number {
  let bytes = 0;
  for (const m of k.wgsl.matchAll(/var<workgroup>\s+\w+\s*:\s*array<(f32|vec4f),\s*(\d+)>/g)) bytes += (m[1] === 'f32' ? 4 : 16) * Number(m[2]);
  return bytes;
}

await withDevice(async (gpu: GpuContext) => {
  await describe('flash attention forward', async () => {
    await test('attention and attention_lse on random shapes, masks and tiles', async () => {
      await fc.assert(
        fc.asyncProperty(caseArb(Object.keys(TILES)), async (c) => {
          const [q, k, v, , mask] = caseTensors(c);
          const attrs: Attrs = c.scale === undefined ? {} : { scale: c.scale };
          const qkm = mask ? [q, k, mask] : [q, k];
          const rules = TILES[c.tiles];
          const r = await checkAgainstReference(gpu, (b, xs) => b.add('attention', xs, attrs), mask ? [q, k, v, mask] : [q, k, v], { ...FORWARD_TOL, rules, label: label(c) });
          assert.equal(r.kernels[0].name, 'attention_flash_f32');
          await checkAgainstReference(gpu, (b, xs) => b.add('attention_lse', xs, attrs), qkm, { ...FORWARD_TOL, rules, label: `lse ${label(c)}` });
        }),
        fcParams(4, 701),
      );
    });
  });

  await describe('flash attention backward', async () => {
    await test('gradients in q, k, v and the mask (the autodiff rule) on random shapes, masks and tiles', async () => {
      await fc.assert(
        fc.asyncProperty(caseArb(Object.keys(TILES)), async (c) => {
          const ins = caseTensors(c);
          const attrs: Attrs = c.scale === undefined ? {} : { scale: c.scale };
          for (let wrt = 0; wrt < ins.length - 1; wrt++) {
            const r = await checkAgainstReference(gpu, (b, xs) => attentionWithGrads(b, xs, attrs).grads[wrt]!, ins, { ...GRAD_TOL, rules: TILES[c.tiles], label: `d${WRT[wrt]} ${label(c)}` });
            const names = r.kernels.map((k) => k.name);
            assert.ok(!names.some((n) => n.startsWith('matmul') || n.startsWith('softmax')), names.join(' '));
          }
        }),
        fcParams(3, 702),
      );
    });
  });

  await describe('against PyTorch float64 (make_attention.py)', async () => {
    for (const fx of fixtures) {
      await test(`${fx.name}: the CPU reference matches to 1e-10`, () => {
        const { graph, names } = fixtureGraph(fx);
        const inputs = new Map<string, RefTensor>(names.map((n) => [n, { shape: fx.inputs[n].shape, data: Float64Array.from(fx.inputs[n].data) }]));
        inputs.set('d:y', { shape: fx.d_output.shape, data: Float64Array.from(fx.d_output.data) });
        const out = interpret(graph, inputs);
        const want = [['y', fx.output] as const, ...names.map((n) => [`d:${n}`, fx.grads[n]] as const)];
        for (const [name, t] of want) {
          const got = out.get(name)!;
          assert.deepEqual(got.shape, t.shape, name);
          got.data.forEach((x, i) => assert.ok(Math.abs(x - t.data[i]) <= 1e-10 * (1 + Math.abs(t.data[i])), `${fx.name} ${name}[${i}]: ${x} vs torch ${t.data[i]}`));
        }
      });
      // One tiling per case (lavapipe compiles every kernel of a new shape): several tiles and tails for the
      // cases with masks.
      for (const tiles of [fx.inputs.mask ? '4x8' : 'default']) {
        await test(`${fx.name}: the GPU forward and gradients match (tiles ${tiles})`, async () => {
          const { graph, names } = fixtureGraph(fx);
          const inputs = graph.inputs.map((i) => Float32Array.from((i.name === 'd:y' ? fx.d_output : fx.inputs[i.name]).data));
          const want = [['y', fx.output] as const, ...names.map((n) => [`d:${n}`, fx.grads[n]] as const)];
          for (const [name, t] of want) {
            const node = graph.outputs.find((o) => o.name === name)!.node;
            const { value, kernels } = await runGraph(gpu, graph, node, inputs, { rules: TILES[tiles] });
            compare(value, t.data, t.shape, { ...(name === 'y' ? FORWARD_TOL : GRAD_TOL), label: `${fx.name} ${name} tiles ${tiles}` }, kernels);
          }
        });
      }
    }
  });

  await describe('repeatability and limits', async () => {
    await test('the same node gives the same WGSL and bitwise the same output, forward and dk', async () => {
      const { fwd, gradNodes, ins } = attentionNodes(24, true);
      const dk = gradNodes.find((n) => n.attrs.wrt === 1)!;
      // Values of every input the kernels bind (lse and δ random too: only the bits matter here).
      const valuesFor = (n: Node) => ins(n).map((x, i) => randomTensor(x.shape, 40 + i, -1, 1).data);
      for (const node of [fwd, dk]) {
        const k1 = (node.op === 'attention' ? flashForwardKernel : flashBackwardKernel)(node, ins(node), gpu.target);
        const k2 = (node.op === 'attention' ? flashForwardKernel : flashBackwardKernel)(node, ins(node), gpu.target);
        assert.equal(k1.wgsl, k2.wgsl);
        const xs = valuesFor(node);
        const o1 = await runKernel(gpu.device, k1, xs, numel(node.shape));
        const o2 = await runKernel(gpu.device, k2, xs, numel(node.shape));
        assert.ok(o1.every(Number.isFinite), `${k1.name}: finite output`);
        assert.deepEqual(new Uint32Array(o1.buffer), new Uint32Array(o2.buffer), k1.name);
      }
    });

    await test('tiles fit workgroup memory on every target, head dims 24 to 128', async () => {
      const targets = [PORTABLE_TARGET, gpu.target, nvidiaLike(gpu.target), tightTarget(gpu.target)];
      for (const d of [24, 64, 88, 112, 128]) {
        const { fwd, lse, gradNodes, ins } = attentionNodes(d, d === 88);
        for (const target of targets) {
          // The tight target allows 27 workgroups in all: a smaller problem.
          const nodes = target.name === 'tight' ? attentionNodes(d, d === 88, [1, 1, 20, 20]) : { fwd, lse, gradNodes, ins };
          for (const node of [nodes.fwd, nodes.lse, ...nodes.gradNodes]) {
            const isFwd = node.op !== 'attention_grad';
            const tiles = (isFwd ? flashForwardTiles : flashBackwardTiles)(node, nodes.ins(node), target);
            const kernel = (isFwd ? flashForwardKernel : flashBackwardKernel)(node, nodes.ins(node), target);
            const where = `${kernel.name} d ${d} on ${target.name}`;
            assert.equal(declaredShared(kernel), tiles.bytes, where);
            assert.ok(tiles.bytes <= target.limits.maxComputeWorkgroupStorageSize, where);
            assert.ok(tiles.workgroup <= target.limits.maxComputeInvocationsPerWorkgroup, where);
            assert.equal(tiles.own, (tiles.workgroup / tiles.split) * tiles.rows, where);
          }
          // dk and dv in one kernel (two score tiles): within the limits too. With a mask it binds 9 buffers:
          // over the portable 8, where the two kernels stay apart (the schedule falls back).
          const [dk, dv] = [1, 2].map((w) => nodes.gradNodes.find((n) => n.attrs.wrt === w)!);
          if (dk.inputs.length + 2 > target.limits.maxStorageBuffersPerShaderStage) {
            assert.throws(() => flashBackwardKernel(dk, nodes.ins(dk), target, {}, dv), FlashTileError);
            continue;
          }
          const kvTiles = flashBackwardTiles(dk, nodes.ins(dk), target, {}, true);
          const kv = flashBackwardKernel(dk, nodes.ins(dk), target, {}, dv);
          assert.equal(declaredShared(kv), kvTiles.bytes, `${kv.name} d ${d} on ${target.name}`);
          assert.ok(kvTiles.bytes <= target.limits.maxComputeWorkgroupStorageSize && kvTiles.workgroup <= target.limits.maxComputeInvocationsPerWorkgroup);
        }
        // Dawn accepts their WGSL (rolled loops as on lavapipe; unrolled hardware code for the smallest head dim).
        const [dk, dv] = [1, 2].map((w) => gradNodes.find((n) => n.attrs.wrt === w)!);
        if (dk.inputs.length + 2 <= gpu.target.limits.maxStorageBuffersPerShaderStage) await pipelineFor(gpu.device, flashBackwardKernel(dk, ins(dk), gpu.target, {}, dv));
        await pipelineFor(gpu.device, flashForwardKernel(fwd, ins(fwd), gpu.target, {}, lse));
        for (const node of [fwd, lse, ...gradNodes]) {
          const gen = node.op === 'attention_grad' ? flashBackwardKernel : flashForwardKernel;
          await pipelineFor(gpu.device, gen(node, ins(node), gpu.target));
          if (d === 24) await pipelineFor(gpu.device, gen(node, ins(node), nvidiaLike(gpu.target)));
        }
      }
    });

    await test('hardware tiles: two rows per invocation at head dim 24, rows split over subgroup lanes from 88 on', () => {
      // An NVIDIA-like target with 32-wide subgroups, and the same without subgroups.
      const withSub: Target = { ...nvidiaLike(gpu.target), features: [...gpu.target.features.filter((f) => f !== 'subgroups'), 'subgroups'], subgroupMinSize: 32, subgroupMaxSize: 32 };
      const noSub: Target = { ...withSub, features: withSub.features.filter((f) => f !== 'subgroups') };
      const shape = (t: FlashTilesLike) => [t.rows, t.split, t.sweep];
      // [rows, split] of the forward, dq and dk with dv, over 300 rows.
      for (const [d, fwd, dqRows, kvRows] of [
        [24, [2, 1], [1, 1], [1, 1]],
        [88, [1, 2], [1, 4], [1, 4]],
        [128, [1, 4], [1, 4], [1, 8]],
      ] as const) {
        const nodes = attentionNodes(d, false, [1, 2, 300, 300]);
        const [dq, dk] = [0, 1].map((w) => nodes.gradNodes.find((n) => n.attrs.wrt === w)!);
        assert.deepEqual(shape(flashForwardTiles(nodes.fwd, nodes.ins(nodes.fwd), withSub)), [...fwd, HARDWARE_TILES.sweep], `forward d ${d}`);
        assert.deepEqual(shape(flashBackwardTiles(dq, nodes.ins(dq), withSub)), [...dqRows, HARDWARE_TILES.sweep], `dq d ${d}`);
        assert.deepEqual(shape(flashBackwardTiles(dk, nodes.ins(dk), withSub, {}, true)), [...kvRows, HARDWARE_TILES.sweep], `dk, dv d ${d}`);
        for (const node of [nodes.fwd, dq, dk]) {
          const tiles = (node.op === 'attention' ? flashForwardTiles : flashBackwardTiles)(node, nodes.ins(node), noSub);
          assert.equal(tiles.split, 1, `${node.op} d ${d} without subgroups`);
        }
        assert.throws(() => flashForwardKernel(nodes.fwd, nodes.ins(nodes.fwd), noSub, { split: 2 }), /subgroups/);
      }
      // A tuning run's caps (Target.tuning.flashCaps) apply under the caller's: workgroup size, split, sweep.
      const nodes = attentionNodes(88, false, [1, 2, 300, 300]);
      const tuned: Target = { ...withSub, tuning: { flashCaps: { split: 4, workgroup: 256, sweep: 32, rows: 1 } } };
      const t = flashForwardTiles(nodes.fwd, nodes.ins(nodes.fwd), tuned);
      // 64 rows per workgroup at most (256 / 4): 300 rows are 5 tiles of 60, so 240 invocations (64 by default).
      assert.deepEqual([t.rows, t.split, t.sweep, t.workgroup], [1, 4, 32, 240]);
      assert.equal(flashForwardTiles(nodes.fwd, nodes.ins(nodes.fwd), tuned, { split: 2 }).split, 2, "the caller's caps win");
      // flashGradCaps take the gradient kernels' tiles in place of flashCaps, and leave the forward's.
      const [dq, dk] = [0, 1].map((w) => nodes.gradNodes.find((n) => n.attrs.wrt === w)!);
      const both: Target = { ...withSub, tuning: { flashCaps: tuned.tuning!.flashCaps, flashGradCaps: { split: 2, workgroup: 128, sweep: 16, rows: 2 } } };
      const rowsSplit = (x: FlashTilesLike) => [x.rows, x.split, x.sweep];
      assert.deepEqual(rowsSplit(flashForwardTiles(nodes.fwd, nodes.ins(nodes.fwd), both)), [1, 4, 32]);
      for (const [node, kv] of [[dq, false], [dk, true]] as const) {
        assert.deepEqual(rowsSplit(flashBackwardTiles(node, nodes.ins(node), both, {}, kv)), [2, 2, 16], `wrt ${node.attrs.wrt}`);
        assert.deepEqual(rowsSplit(flashBackwardTiles(node, nodes.ins(node), tuned, {}, kv)), [1, 4, 32], `wrt ${node.attrs.wrt} follows flashCaps`);
      }
      // A register budget over an invocation's rows instead of a fixed split: two rows of head dim 88 on two lanes hold
      // 2 · (4 · (11 + 11) + 16) = 208 floats; at 112 two lanes would hold 256, so four; at 24 one lane holds 2 · 40.
      const budget: Target = { ...withSub, tuning: { flashCaps: { rows: 2, workgroup: 128, sweep: 16, registers: 208 } } };
      for (const [d, split] of [[24, 1], [88, 2], [112, 4], [128, 4]] as const) {
        const n = attentionNodes(d, false, [1, 2, 300, 300]);
        const x = flashForwardTiles(n.fwd, n.ins(n.fwd), budget);
        assert.deepEqual([x.rows, x.split], [2, split], `head dim ${d}`);
        assert.ok(x.workgroup <= 128);
      }
    });
  });

  await describe('rows split over subgroup lanes (a device opened with its subgroups)', async () => {
    let opened: GpuDevice | undefined;
    before(async () => {
      opened = await openDevice();
    });
    after(async () => {
      await opened?.destroy();
    });
    const context = (): GpuContext => ({ device: opened!.device, adapter: opened!.adapter, target: opened!.target });
    /** 2, 4 and 8 lanes per row, as far as the device's subgroups reach. */
    const splits = (t: Target) => [2, 4, 8].filter((k) => canSplit(t, k)).map((k) => [`split${k}`, capped({ own: 6, sweep: 8, rows: 2, split: k })] as const);

    await test('forward, attention_lse and the gradients match the reference on random shapes and masks', async () => {
      const dev = context();
      const tables = new Map<string, RuleTable>(splits(dev.target));
      if (tables.size === 0) {
        // No subgroups: the tiles never split, and asking for a split is an error.
        const { fwd, ins } = attentionNodes(88, false);
        assert.equal(flashForwardTiles(fwd, ins(fwd), dev.target).split, 1);
        assert.throws(() => flashForwardKernel(fwd, ins(fwd), dev.target, { split: 2 }), /subgroups/);
        return;
      }
      await fc.assert(
        fc.asyncProperty(caseArb([...tables.keys()]), async (c) => {
          const ins = caseTensors(c);
          const attrs: Attrs = c.scale === undefined ? {} : { scale: c.scale };
          const rules = tables.get(c.tiles);
          const fwd = await checkAgainstReference(dev, (b, xs) => b.add('attention', xs, attrs), ins.length > 4 ? [ins[0], ins[1], ins[2], ins[4]] : ins.slice(0, 3), { ...FORWARD_TOL, rules, label: label(c) });
          assert.match(fwd.kernels[0].wgsl, /^enable subgroups;/);
          await checkAgainstReference(dev, (b, xs) => b.add('attention_lse', xs, attrs), ins.length > 4 ? [ins[0], ins[1], ins[4]] : ins.slice(0, 2), { ...FORWARD_TOL, rules, label: `lse ${label(c)}` });
          for (let wrt = 0; wrt < ins.length - 1; wrt++) {
            await checkAgainstReference(dev, (b, xs) => attentionWithGrads(b, xs, attrs).grads[wrt]!, ins, { ...GRAD_TOL, rules, label: `d${WRT[wrt]} ${label(c)}` });
          }
        }),
        fcParams(3, 703),
      );
    });

    await test('the PyTorch fixtures with rows split over 4 lanes', async () => {
      const dev = context();
      const table = splits(dev.target).find(([n]) => n === 'split4');
      if (!table) {
        assert.ok(!canSplit(dev.target, 4));
        return;
      }
      for (const fx of fixtures) {
        const { graph, names } = fixtureGraph(fx);
        const inputs = graph.inputs.map((i) => Float32Array.from((i.name === 'd:y' ? fx.d_output : fx.inputs[i.name]).data));
        for (const [name, t] of [['y', fx.output] as const, ...names.map((n) => [`d:${n}`, fx.grads[n]] as const)]) {
          const node = graph.outputs.find((o) => o.name === name)!.node;
          const { value, kernels } = await runGraph(dev, graph, node, inputs, { rules: table[1] });
          compare(value, t.data, t.shape, { ...(name === 'y' ? FORWARD_TOL : GRAD_TOL), label: `${fx.name} ${name} split 4` }, kernels);
        }
      }
    });
  });

  await describe('no [.., Sq, Sk] buffer in the backward', async () => {
    await test('compile --op attention --vjp: no node and no buffer of the scores\' size', () => {
      const [B, H, S, D] = [1, 2, 40, 24];
      const shapes = new Map(['q', 'k', 'v'].map((n) => [n, [B, H, S, D]]));
      const { graph } = compileOp('attention', shapes, [], true);
      for (const n of graph.nodes) assert.ok(!(n.shape.length >= 2 && n.shape.at(-2) === S && n.shape.at(-1) === S), `%${n.id} ${n.op} [${n.shape.join(', ')}]`);
      const program = compileGpu(graph, PORTABLE_TARGET);
      const scores = B * H * S * S * 4;
      for (const v of program.schedule.values) assert.ok(v.bytes < scores, `value %${v.id}: ${v.bytes} bytes`);
      assert.ok(graph.outputs.some((o) => o.name === 'd:q') && graph.outputs.some((o) => o.name === 'd:v'));
    });

    await test('with a fixed mask, only the mask itself has shape [.., Sq, Sk]', () => {
      const [Sq, Sk] = [5, 7];
      const b = new Builder();
      const q = b.input('q', [2, 3, Sq, 4]);
      const k = b.input('k', [2, 3, Sk, 4]);
      const v = b.input('v', [2, 3, Sk, 6]);
      const mask = b.input('mask', [3, Sq, Sk]);
      b.output('y', b.add('attention', [q, k, v, mask]));
      const { builder } = vjp(b.graph, [q, k, v]);
      const square = builder.graph.nodes.filter((n) => n.shape.length >= 2 && n.shape.at(-2) === Sq && n.shape.at(-1) === Sk);
      assert.deepEqual(square.map((n) => n.id), [mask]);
      const ops = builder.graph.nodes.map((n) => n.op);
      assert.equal(ops.filter((o) => o === 'attention_grad').length, 3);
      assert.ok(!ops.includes('matmul') && !ops.includes('softmax'), ops.join(' '));
    });
  });
});
