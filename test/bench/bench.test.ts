// The bench machinery on the local adapter (lavapipe here) at tiny sizes: every row compiles, runs through the
// executor, agrees with tfjs-webgpu on the same device, and is timed; the report has every row and field.
// No timing assertions: speed is what the bench measures, never what a test asserts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { runBenchCommand } from '../../bin/commands/bench.js';
import { UsageError } from '../../bin/commands/errors.js';
import { compareAll, compareOutputs, repeatFor, runBench, unavailableReason, type BenchReport } from '../../runtime/bench/bench.js';
import { TARGETS } from '../../compiler/codegen/targets.js';
import { formatReport } from '../../runtime/bench/report.js';
import { BENCH_ROW_NAMES, benchRows, rowInputData, selectRows } from '../../runtime/bench/rows.js';

if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';

describe('bench pieces', () => {
  test('rows: names, prefixes, EVA shapes, deterministic inputs', () => {
    const full = benchRows('full');
    assert.deepEqual(
      full.map((r) => r.name),
      BENCH_ROW_NAMES,
    );
    const byName = new Map(full.map((r) => [r.name, r]));
    assert.equal(byName.get('matmul_f32_evag_qkv')!.shapeText, '256x1408 @ 1408x4224');
    assert.equal(byName.get('matmul_f32_evag_fc2')!.shapeText, '256x6144 @ 6144x1408');
    assert.equal(byName.get('matmul_f32_evae_fc1')!.shapeText, '256x1792 @ 1792x15360');
    assert.equal(byName.get('softmax_attn')!.shapeText, '4096x256');
    assert.equal(byName.get('layernorm_evag')!.shapeText, '256x1408');
    assert.equal(byName.get('gelu_evag')!.shapeText, '256x6144');
    assert.deepEqual(
      selectRows(full, ['gelu', 'matmul_f32_evae_qkv']).map((r) => r.name),
      ['matmul_f32_evae_qkv', 'gelu_evag', 'gelu_evae'],
    );
    assert.throws(() => selectRows(full, ['convolution']), /no bench row matches 'convolution'; rows are: matmul_f32_evag_qkv/);
    const [a1] = rowInputData(byName.get('layernorm_evag')!);
    const [a2] = rowInputData(byName.get('layernorm_evag')!);
    assert.deepEqual(a1, a2);
    assert.ok(a1.every((v) => v >= -1 && v < 3));
  });

  test('compareOutputs: tolerance, scale, non-finite values', () => {
    const t = { atol: 1e-4, rtol: 1e-4, scaled: false };
    assert.equal(compareOutputs(Float32Array.of(1, 2), Float32Array.of(1.0001, 2), t).passed, true);
    assert.equal(compareOutputs(Float32Array.of(1, 2), Float32Array.of(1.01, 2), t).passed, false);
    assert.equal(compareOutputs(Float32Array.of(NaN, 2), Float32Array.of(NaN, 2), t).passed, true);
    assert.equal(compareOutputs(Float32Array.of(NaN, 2), Float32Array.of(1, 2), t).passed, false);
    assert.equal(compareOutputs(Float32Array.of(1), Float32Array.of(1, 2), t).passed, false);
    // Scaled: the absolute part is relative to the largest peer value.
    const s = { atol: 1e-4, rtol: 0, scaled: true };
    assert.equal(compareOutputs(Float32Array.of(1000, 0.05), Float32Array.of(1000, 0), s).passed, true);
    assert.equal(compareOutputs(Float32Array.of(1, 0.05), Float32Array.of(1, 0), s).passed, false);
  });

  test('compareAll: every output against its own scale; the worst one is named', () => {
    const t = { atol: 1e-4, rtol: 0, scaled: true };
    const ok = compareAll([Float32Array.of(1000, 0.05), Float32Array.of(1, 2)], [Float32Array.of(1000, 0), Float32Array.of(1, 2)], ['output', 'd:q'], t);
    assert.equal(ok.passed, true);
    assert.equal(ok.worstOutput, 'output');
    // 0.05 off is within 1e-4·1000 for the first output, not within 1e-4·2 for the second.
    const bad = compareAll([Float32Array.of(1000, 0), Float32Array.of(1, 2.05)], [Float32Array.of(1000, 0), Float32Array.of(1, 2)], ['output', 'd:q'], t);
    assert.equal(bad.passed, false);
    assert.equal(bad.worstOutput, 'd:q');
    assert.ok(Math.abs(bad.maxAbsDiff - 0.05) < 1e-6);
    assert.equal(compareAll([Float32Array.of(1)], [Float32Array.of(1), Float32Array.of(2)], ['output'], t).passed, false);
    assert.equal(compareAll([Float32Array.of(1)], [Float32Array.of(1)], ['out'], t).worstOutput, undefined);
  });

  test('the report shows a row whose peer was skipped, and why', () => {
    const ours = { ms: 2, wallMs: 2.5, rate: 1, kernels: ['attention_flash_f32'] };
    const rep: BenchReport = {
      tool: 'visft bench',
      date: '2026-11-27T00:00:00.000Z',
      command: 'visft bench --rows attention_vjp_evag_segmentation',
      device: { name: 'gpu', description: '', vendor: 'v', architecture: '', backend: 'vulkan', isFallbackAdapter: false, features: [] },
      sizes: { size: 'full', tokens: 256, reason: 'model sizes' },
      timing: { method: 'gpu-timestamps', statistic: 'median', warmup: 3, clockWarmupMs: 300, repeat: 20 },
      peer: { name: '@tensorflow/tfjs-backend-webgpu', version: '4.22.0', sameDevice: true },
      rows: [
        {
          name: 'attention_vjp_evag_segmentation',
          what: 'EVA-G self-attention',
          op: 'attention',
          pass: 'forward+backward',
          dtype: 'f32',
          shape: 'q,k,v 1x16x5329x88',
          status: 'ok',
          rateUnit: 'GFLOP/s',
          ours,
          peerComputes: 'composed attention',
          peerSkipped: 'tfjs failed on this row, so only ours ran (unchecked): out of memory',
          repeat: 20,
        },
      ],
      ok: true,
    };
    const text = formatReport(rep);
    assert.match(text, /attention_vjp_evag_segmentation\s+q,k,v 1x16x5329x88\s+2\.000\s.*-\s+-\s+20\s+no peer \(below\)/);
    assert.match(text, /peer skipped:\n  attention_vjp_evag_segmentation: tfjs failed on this row, so only ours ran \(unchecked\): out of memory/);
    assert.match(text, /attention and MSDeformAttn rows: the shapes below/);
    assert.match(text, /^  attention forward\+backward: composed attention$/m);
  });

  test('repeatFor: a fixed count, else about targetMs of work within bounds', () => {
    const p = { targetMs: 1000, min: 5, max: 50 };
    assert.equal(repeatFor(7, 1), 7);
    assert.equal(repeatFor(p, 100), 10);
    assert.equal(repeatFor(p, 1000), 5);
    assert.equal(repeatFor(p, 0.001), 50);
  });

  test('f16 rows run where the target has shader-f16 (attention\'s forward rows too: autocast\'s rounding stores f16), none without it', () => {
    const h200 = TARGETS['nvidia-h200'];
    const noF16 = { ...h200, features: h200.features.filter((f) => f !== 'shader-f16') };
    const f16 = benchRows('tiny').filter((r) => r.dtype === 'f16');
    assert.ok(f16.some((r) => r.op === 'attention' && r.pass === 'forward') && f16.some((r) => r.op === 'matmul'));
    for (const row of f16) {
      assert.equal(unavailableReason(row, h200), undefined, row.name);
      assert.match(unavailableReason(row, noF16) ?? '', /no shader-f16/, row.name);
    }
    for (const row of benchRows('tiny').filter((r) => r.dtype === 'f32')) assert.equal(unavailableReason(row, noF16), undefined, row.name);
  });

  test('the command rejects unknown rows and bad --repeat before opening a device', async () => {
    await assert.rejects(runBenchCommand({ rows: 'matmul,convolution' }), (e: unknown) => e instanceof UsageError && /no bench row matches 'convolution'/.test(e.message));
    await assert.rejects(runBenchCommand({ repeat: '0' }), (e: unknown) => e instanceof UsageError && /--repeat/.test(e.message));
    await assert.rejects(runBenchCommand({ repeat: '2.5' }), UsageError);
    await assert.rejects(runBenchCommand({ set: '{"nope": 1}' }), (e: unknown) => e instanceof UsageError && /--set: tuning\.nope: not a known field/.test(e.message));
  });
});

describe('bench on the local adapter (tiny sizes)', () => {
  let report: BenchReport;

  test('every row runs, agrees with tfjs on the same device, and is timed', async () => {
    report = await runBench({ size: 'tiny', repeat: 2, warmup: 1, command: 'test' });
    assert.deepEqual(
      report.rows.map((r) => r.name),
      BENCH_ROW_NAMES,
    );
    assert.equal(report.ok, true, JSON.stringify(report.rows.filter((r) => r.status !== 'ok' && r.status !== 'unavailable')));
    assert.equal(report.sizes.size, 'tiny');
    assert.ok('name' in report.peer, 'tfjs-webgpu loaded');
    assert.equal(report.peer.version, '4.22.0');
    assert.ok(report.device.name.length > 0);
    assert.equal(typeof report.device.isFallbackAdapter, 'boolean');
    assert.ok(!Number.isNaN(Date.parse(report.date)));
    assert.equal(report.timing.method, report.device.features.includes('timestamp-query') ? 'gpu-timestamps' : 'wall-clock');

    for (const r of report.rows) {
      if (r.dtype === 'f16' && r.status === 'unavailable') {
        assert.match(r.reason ?? '', /^not available: /, r.name);
        continue;
      }
      assert.equal(r.status, 'ok', `${r.name}: ${r.reason}`);
      assert.ok(r.check?.passed, `${r.name}: correctness check`);
      assert.equal(r.repeat, 2);
      for (const s of [r.ours!, r.peer!]) {
        assert.ok(Number.isFinite(s.ms) && s.ms >= 0, `${r.name}: ms`);
        assert.ok(Number.isFinite(s.wallMs) && s.wallMs > 0, `${r.name}: wall ms`);
        assert.ok(!Number.isNaN(s.rate), `${r.name}: rate`);
        if (report.timing.method === 'gpu-timestamps') assert.ok(s.gpuMs && s.gpuMs.min <= s.gpuMs.median, `${r.name}: GPU ms`);
      }
      assert.ok(r.ours!.kernels.length >= 1 && r.ours!.kernels.every((k) => k.length > 0), `${r.name}: our kernels`);
      // Where a row of several kernels spends its time: each kernel in a pass of its own.
      if (report.timing.method === 'gpu-timestamps' && r.ours!.kernels.length > 1) {
        const per = r.ours!.perKernel ?? [];
        assert.deepEqual(per.map((k) => k.name), r.ours!.kernels, `${r.name}: per-kernel times name the kernels`);
        assert.ok(per.every((k) => Number.isFinite(k.ms) && k.ms >= 0), `${r.name}: per-kernel ms`);
      } else assert.equal(r.ours!.perKernel, undefined, r.name);
      if (report.timing.method === 'gpu-timestamps') assert.ok(r.peer!.kernels.length >= 1, `${r.name}: peer programs`);
      assert.ok(r.ratio !== undefined && Number.isFinite(r.ratio), `${r.name}: ratio`);
      assert.equal(r.rateUnit, r.op === 'matmul' || r.op === 'attention' ? 'GFLOP/s' : 'GB/s');
      assert.equal(r.peerSkipped, undefined, `${r.name}: the peer ran`);
      // Forward+backward rows compare the output and every input's gradient, and run the backward's kernels.
      if (r.pass === 'forward+backward') {
        assert.match(r.check!.worstOutput ?? '', /^(output|d:\w+)$/, r.name);
        assert.ok(r.ours!.kernels.length > 1, `${r.name}: forward and backward kernels`);
      }
    }
    assert.deepEqual(
      report.rows.filter((r) => r.pass === 'forward+backward').map((r) => r.name),
      BENCH_ROW_NAMES.filter((n) => /^(attention|msdeform)_vjp_/.test(n)),
    );
    // f32 rows are never unavailable.
    assert.ok(report.rows.filter((r) => r.dtype === 'f32').every((r) => r.status === 'ok'));
  });

  test('the text report names the device, every row and the peer; JSON round-trips', () => {
    assert.ok(report, 'the bench ran');
    const text = formatReport(report);
    assert.ok(text.includes(report.device.name));
    for (const n of BENCH_ROW_NAMES) assert.ok(text.includes(n), n);
    assert.match(text, /ratio = peer ms \/ ours ms/);
    assert.match(text, /@tensorflow\/tfjs-backend-webgpu 4\.22\.0 on the same GPUDevice/);
    assert.match(text, /^  attention forward\+backward: /m);
    assert.match(text, /^  msdeform_attn: the original's grid_sample composition/m);
    if (report.device.isFallbackAdapter) assert.match(text, /FALLBACK \(software\) adapter: ratios on it are not speed claims/);
    for (const r of report.rows.filter((x) => x.status === 'unavailable')) assert.ok(text.includes(r.reason!), r.name);
    assert.deepEqual(JSON.parse(JSON.stringify(report)), report);
  });

  test('--set: kernel choices over the profile (none here), in the report; the default kernels timed beside them', async () => {
    const r = await runBench({ size: 'tiny', rows: ['attention_fwd_evag_caption'], repeat: 2, warmup: 1, command: 'test', tuning: 'none', tuningSet: { flashCaps: { sweep: 4 } } });
    assert.deepEqual(r.device.set, { flashCaps: { sweep: 4 } });
    assert.equal(r.device.tuning, undefined);
    const [row] = r.rows;
    assert.equal(row.status, 'ok');
    // Smaller key tiles change the flash kernel's program (on lavapipe's tiles at least): the defaults are timed in
    // the same bursts, outputs equal.
    if (r.device.isFallbackAdapter) assert.ok(row.untuned, 'the choice changes the program here');
    if (row.untuned) assert.ok(row.untuned.relDiff <= 1e-6, JSON.stringify(row.untuned));
    assert.match(formatReport(r), /\ntuning profile: none\nkernel choices set: \{"flashCaps":\{"sweep":4\}\}\n/);
  });

  test('`visft bench --json` with a row filter: exit 0, the chosen rows, the size choice explained', () => {
    const bin = fileURLToPath(new URL('../../../bin/visft.js', import.meta.url));
    const p = spawnSync(process.execPath, [bin, 'bench', '--json', '--rows', 'layernorm_evag,matmul_f16_evag_qkv', '--repeat', '2'], { encoding: 'utf8', timeout: 300_000 });
    assert.equal(p.status, 0, p.stderr);
    const r = JSON.parse(p.stdout) as BenchReport;
    assert.deepEqual(
      r.rows.map((x) => x.name),
      ['matmul_f16_evag_qkv', 'layernorm_evag'],
    );
    assert.equal(r.command, 'visft bench --json --rows layernorm_evag,matmul_f16_evag_qkv --repeat 2');
    if (r.device.isFallbackAdapter) {
      assert.equal(r.sizes.size, 'quick');
      assert.match(r.sizes.reason, /automatically.*fallback/);
    } else assert.equal(r.sizes.size, 'full');
    assert.match(p.stderr, /bench: layernorm_evag: ours /);
  });
});
