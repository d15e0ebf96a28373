// `visft compile --op ... -o B` then `visft run B` end to end through the CLI, on the GPU (lavapipe in CI) against
// `--backend cpu` (the float64 reference) on the same bundle and inputs. The shapes are the ones that once took
// minutes on lavapipe: a portable bundle's flash kernels (head dim 88, ragged tiles) are rescheduled for the adapter.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fromNumbers, readSafetensors, toFloat64, writeSafetensors } from '../../runtime/weights/index.js';
import { roundF16 } from '../../compiler/ir/rules/reference-core.js';
import { makeRng } from '../ir/util.js';

const bin = fileURLToPath(new URL('../../../bin/visft.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'visft-run-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 180_000 });

/**
 * Compiles the op (with `extra` compile options), runs it on the GPU (with `gpuArgs` run options) and on the CPU,
 * and compares every output within `tol` of its scale; returns the GPU run's stdout and stderr.
 */
function compareRuns(op: string, shapes: Record<string, number[]>, attrs: string[], values: (name: string, i: number) => number, extra: string[] = [], tol = 1e-5, gpuArgs: string[] = []): { stdout: string; stderr: string } {
  const bundle = join(dir, `${op}.visftx`);
  const c = cli('compile', '--op', op, '--vjp', ...extra, '--shape', ...Object.entries(shapes).map(([k, s]) => `${k}=${s.join('x')}`), ...(attrs.length ? ['--attr', ...attrs] : []), '-o', bundle);
  assert.equal(c.status, 0, c.stderr);
  const outShape = shapes.q ?? [shapes.sampling_locations[0], shapes.sampling_locations[1], shapes.value[2] * shapes.value[3]];
  const inputs = { ...shapes, 'd:output': outShape };
  const file = join(dir, `${op}-in.safetensors`);
  writeSafetensors(file, new Map(Object.entries(inputs).map(([k, s]) => [k, fromNumbers('f32', s, Array.from({ length: s.reduce((a, b) => a * b, 1) }, (_, i) => values(k, i)))])));
  const runs = (['gpu', 'cpu'] as const).map((backend) => {
    const out = join(dir, `${op}-${backend}.safetensors`);
    const r = cli('run', bundle, '--inputs', file, '--outputs', out, '--backend', backend, ...(backend === 'gpu' ? gpuArgs : []));
    assert.equal(r.status, 0, `${backend}: ${r.stderr}${r.error ?? ''}`);
    return { stdout: r.stdout, stderr: r.stderr, tensors: readSafetensors(out).tensors };
  });
  const [gpu, cpu] = runs;
  if (extra.includes('fp16')) {
    // Autocast rounds the op's result and the gradients: every output holds f16 values on both backends.
    for (const run of runs) for (const [name, t] of run.tensors) assert.ok(toFloat64(t).every((x) => roundF16(x) === x), `${op} ${name}: not rounded to f16`);
  }
  assert.deepEqual([...gpu.tensors.keys()].sort(), [...cpu.tensors.keys()].sort());
  for (const [name, want] of cpu.tensors) {
    const [a, b] = [toFloat64(gpu.tensors.get(name)!), toFloat64(want)];
    const scale = Math.max(1, ...b.map(Math.abs));
    const worst = Math.max(...a.map((x, i) => Math.abs(x - b[i])));
    assert.ok(worst <= tol * scale, `${op} ${name}: GPU differs from the reference by ${worst} (scale ${scale})`);
  }
  return { stdout: gpu.stdout, stderr: gpu.stderr };
}

/** The number of kernels a run's stdout says it scheduled for the adapter. */
const scheduledCount = (stdout: string): number => Number(/^kernels: (\d+) scheduled for /m.exec(stdout)?.[1]);

test('attention (head dim 88, 11 queries, 47 keys) forward and backward: a portable bundle is rescheduled and matches the reference', () => {
  const rand = makeRng(7);
  const { stdout: out } = compareRuns('attention', { q: [1, 2, 11, 88], k: [1, 2, 47, 88], v: [1, 2, 47, 88] }, [], () => rand() * 4 - 2);
  assert.match(out, /^kernels: \d+ scheduled for .+ \(the bundle's are for 'portable'\)$/m);
});

test('attention under --precision fp16 (operands, output and gradients rounded as a training step rounds them) matches the reference', () => {
  const rand = makeRng(5);
  // Both sides round at the same places; a value the GPU's f32 arithmetic puts on the other side of an f16
  // rounding boundary than the float64 reference differs by one f16 ulp (2^-11 relative, 2^-10 near a power of 2).
  compareRuns('attention', { q: [1, 2, 13, 24], k: [1, 2, 29, 24], v: [1, 2, 29, 24] }, [], () => rand() * 4 - 2, ['--precision', 'fp16'], 2e-3);
  const bad = cli('compile', '--op', 'attention', '--precision', 'fp8', '--shape', 'q=1x1x2x4', 'k=1x1x2x4', 'v=1x1x2x4', '--emit', 'ir');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--precision takes fp32, fp16 or bf16; got 'fp8'/);
});

test('compile --precision on a pipeline entry: autocast rounds the backbone\'s matmul operands in the IR, and the stage\'s gradients follow', () => {
  const ir = (...extra: string[]) => {
    const r = cli('compile', 'pipelines/eva_tiny.visft', '--entry', 'eva', '--stage', 'stage2', '--vjp', '--shape', 'image=1x3x28x28', ...extra, '--emit', 'ir');
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  const [plain, half] = [ir(), ir('--precision', 'fp16')];
  const casts = (text: string) => (text.match(/= cast\(.*\{dtype: "f16"\}/g) ?? []).length;
  assert.equal(casts(plain), 0);
  assert.ok(casts(half) > 10, `${casts(half)} roundings to f16`);
  assert.match(half, /^output d:blocks\.0\.attn\.qkv\.lora_A: f32\[16, 96\]/m);
});

test('msdeform_attn over two levels, points outside the map, forward and backward, matches the reference', () => {
  const rand = makeRng(11);
  const levels = [[5, 3], [2, 4]];
  const S = levels.reduce((a, [h, w]) => a + h * w, 0);
  const values = (name: string) => (name === 'sampling_locations' ? rand() * 1.4 - 0.2 : name === 'attention_weights' ? rand() : rand() * 2 - 1);
  compareRuns('msdeform_attn', { value: [1, S, 2, 8], sampling_locations: [1, 9, 2, 2, 3, 2], attention_weights: [1, 9, 2, 2, 3] }, [`levels=${levels.map((l) => l.join('x')).join(',')}`], values);
});

test('run --set: kernel choices over the profile reschedule the bundle here (the sweep split: more kernels) and still match the reference', () => {
  const shapes = { q: [1, 2, 11, 88], k: [1, 2, 150, 88], v: [1, 2, 150, 88] };
  const set = '{"flashSweepSplit": 1024}';
  const rand = makeRng(13);
  const split = compareRuns('attention', shapes, [], () => rand() * 4 - 2, [], 1e-5, ['--set', set]);
  assert.match(split.stderr, /^visft: kernel choices set: \{"flashSweepSplit":1024\}$/m);
  // The same bundle without the choice: the forward and dq each lose their partial-sum kernel.
  const plain = cli('run', join(dir, 'attention.visftx'), '--inputs', join(dir, 'attention-in.safetensors'), '--outputs', join(dir, 'attention-plain.safetensors'));
  assert.equal(plain.status, 0, plain.stderr);
  assert.equal(scheduledCount(split.stdout), scheduledCount(plain.stdout) + 2, `${split.stdout}\n${plain.stdout}`);
  const usage: [string[], RegExp][] = [
    [['--set', '{"flashSweepSplit": true}'], /^visft: --set: tuning\.flashSweepSplit: /m],
    [['--set', set, '--backend', 'cpu'], /^visft: --set chooses GPU kernels; --backend cpu runs the float64 reference/m],
    [['--set', set, '--kernels', 'bundle'], /^visft: --set chooses the kernels scheduled here; --kernels bundle runs the bundle's own$/m],
  ];
  for (const [args, message] of usage) {
    const r = cli('run', join(dir, 'attention.visftx'), '--inputs', 'i', '--outputs', 'o', ...args);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
  }
});

test('run --kernels takes auto, bundle or device', () => {
  const r = cli('run', join(dir, 'none.visftx'), '--inputs', 'i', '--outputs', 'o', '--kernels', 'fast');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--kernels is auto, bundle, device, not 'fast'/);
});

test('a bundle too big for a target is a clear error: at compile time for its target, at run time for the adapter', () => {
  // a: 8192 x 8192 f32, 256 MiB in one binding: over WebGPU's least maxStorageBufferBindingSize (128 MiB).
  const shapes = ['--shape', 'a=8192x8192', 'b=8192x64'];
  const portable = cli('compile', '--op', 'matmul', ...shapes, '-o', join(dir, 'big.visftx'));
  assert.equal(portable.status, 1);
  assert.match(portable.stderr, /^visft: cannot compile for target 'portable': value %0 \(a\) f32\[8192, 8192\] needs 268435456 bytes \(256\.0 MiB\), over the device's maxStorageBufferBindingSize 134217728 \(128\.0 MiB\): .*give --target/);
  const h100 = cli('compile', '--op', 'matmul', ...shapes, '--target', 'nvidia-h100', '-o', join(dir, 'big.visftx'));
  assert.equal(h100.status, 0, h100.stderr);
  // lavapipe binds 128 MiB at most: refused before the (missing) inputs are read; a GPU that binds more gets as far
  // as the inputs. Either way one line that says what, never an internal error.
  const run = cli('run', join(dir, 'big.visftx'), '--inputs', join(dir, 'missing.safetensors'), '--outputs', join(dir, 'o.safetensors'));
  assert.equal(run.status, 1);
  assert.match(run.stderr, /^visft: (cannot run on .+: value %0 \(a\) f32\[8192, 8192\] needs 268435456 bytes \(256\.0 MiB\), over the device's maxStorageBufferBindingSize \d+ .*|cannot read inputs .*missing\.safetensors: no such file)$/m);
  assert.doesNotMatch(run.stderr, /internal error|\n\s+at /);
  // A product of 2^32 elements: more than a kernel's u32 indices reach. It fails as one binding too many, before
  // any kernel is generated (it was an internal error from the kernel's index arithmetic).
  const huge = cli('compile', '--op', 'matmul', '--shape', 'a=65536x16', 'b=16x65536', '--target', 'nvidia-h200', '-o', join(dir, 'huge.visftx'));
  assert.equal(huge.status, 1);
  assert.match(huge.stderr, /^visft: cannot compile for target 'nvidia-h200': value %2 f32\[65536, 65536\] needs 17179869184 bytes \(16\.00 GiB\), over the device's maxStorageBufferBindingSize 2147483644 \(2\.00 GiB\): every tensor must fit in one binding/);
  assert.doesNotMatch(huge.stderr, /internal error|\n\s+at /);
});

test('unreadable weights and inputs are named, on either backend', () => {
  const bundle = join(dir, 'gelu.visftx');
  assert.equal(cli('compile', '--op', 'gelu', '--shape', 'x=4', '-o', bundle).status, 0);
  for (const backend of ['cpu', 'gpu']) {
    const missing = cli('run', bundle, '--inputs', join(dir, 'nothing.safetensors'), '--outputs', join(dir, 'o.safetensors'), '--backend', backend);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^visft: cannot read inputs .*nothing\.safetensors: no such file$/m, backend);
    const folder = cli('run', bundle, '--inputs', dir, '--outputs', join(dir, 'o.safetensors'), '--backend', backend);
    assert.match(folder.stderr, /^visft: cannot read inputs .*: a folder$/m, backend);
  }
  const extra = cli('run', bundle, '--weights', join(dir, 'w.safetensors'), '--inputs', 'i', '--outputs', 'o');
  assert.equal(extra.status, 2, 'a bundle without parameters takes no --weights');
  const eva = join(dir, 'eva.visftx');
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  assert.equal(cli('compile', `${root}pipelines/eva_tiny.visft`, '--entry', 'eva', '--shape', 'image=1x3x56x56', '-o', eva).status, 0);
  const weights = cli('run', eva, '--weights', join(dir, 'no-weights.pth'), '--inputs', join(dir, 'nothing.safetensors'), '--outputs', join(dir, 'o.safetensors'), '--backend', 'cpu');
  assert.equal(weights.status, 1);
  assert.match(weights.stderr, /^visft: cannot read weights .*no-weights\.pth: no such file$/m);
});

test('an inputs file with a tensor the bundle does not take (a misspelt name) is warned about, on either backend, and the run goes on', () => {
  const bundle = join(dir, 'gelu-extra.visftx');
  assert.equal(cli('compile', '--op', 'gelu', '--shape', 'x=4', '-o', bundle).status, 0);
  const file = join(dir, 'gelu-extra-in.safetensors');
  writeSafetensors(file, new Map([['x', fromNumbers('f32', [4], [1, 2, 3, 4])], ['d:outptu', fromNumbers('f32', [4], [1, 1, 1, 1])]]));
  for (const backend of ['cpu', 'gpu']) {
    const r = cli('run', bundle, '--inputs', file, '--outputs', join(dir, `gelu-extra-${backend}.safetensors`), '--backend', backend);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^visft: warning: .*gelu-extra-in\.safetensors: 'd:outptu' is not an input of the bundle \(its inputs: x\); ignored$/m, backend);
  }
  const exact = join(dir, 'gelu-exact-in.safetensors');
  writeSafetensors(exact, new Map([['x', fromNumbers('f32', [4], [1, 2, 3, 4])]]));
  const clean = cli('run', bundle, '--inputs', exact, '--outputs', join(dir, 'o.safetensors'), '--backend', 'cpu');
  assert.equal(clean.status, 0, clean.stderr);
  assert.doesNotMatch(clean.stderr, /warning/);
});

test('an empty slice (x[:, 5:5]) runs on the GPU: a [3, 0] output and a zero gradient, as on the reference', () => {
  const bundle = join(dir, 'empty-slice.visftx');
  const c = cli('compile', '--op', 'slice', '--vjp', '--attr', 'dim=1', 'start=5', 'end=5', '--shape', 'x=3x8', '-o', bundle);
  assert.equal(c.status, 0, c.stderr);
  const file = join(dir, 'empty-slice-in.safetensors');
  writeSafetensors(file, new Map([['x', fromNumbers('f32', [3, 8], Array.from({ length: 24 }, (_, i) => i + 1))], ['d:output', fromNumbers('f32', [3, 0], [])]]));
  for (const backend of ['gpu', 'cpu']) {
    const out = join(dir, `empty-slice-${backend}.safetensors`);
    const r = cli('run', bundle, '--inputs', file, '--outputs', out, '--backend', backend);
    assert.equal(r.status, 0, `${backend}: ${r.stderr}`);
    const t = readSafetensors(out).tensors;
    assert.deepEqual(t.get('output')!.shape, [3, 0], backend);
    assert.deepEqual([...toFloat64(t.get('d:x')!)], new Array(24).fill(0), backend);
  }
});
