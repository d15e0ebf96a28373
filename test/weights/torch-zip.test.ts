// torch.save checkpoints: committed fixtures written by torch 1.13 (make_weights.py) load bit-exactly (zip,
// legacy and deflated archives; views, shared storages, Parameters, nested checkpoints); malicious pickles are
// refused without running anything; saveTorchZip output loads back here and, when torch is installed, in torch.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { FileSource, writeFileAtomic } from '../../runtime/weights/io.js';
import { evaClipEVisual, matchWeights } from '../../runtime/weights/keymap.js';
import { PickleError, PickleWriter, PyDict, PyOpaque, UnsafePickleError } from '../../runtime/weights/pickle.js';
import { WeightsFormatError, writeSafetensors } from '../../runtime/weights/safetensors.js';
import { DTYPES, fromNumbers, itemSize, numel, tensorFromBytes, toFloat32, type HostTensor } from '../../runtime/weights/tensor.js';
import { loadStateDict, loadTorch, saveTorchZip, selectStateDict } from '../../runtime/weights/torch-zip.js';
import { writeZip, ZipError, ZipReader } from '../../runtime/weights/zip.js';
import { describe, torchCheckTensors, torchDescribe, type Described } from './torch-check.js';

const RUNS = Number(process.env.VISFT_WEIGHTS_RUNS ?? 100);
const FIX = fileURLToPath(new URL('../../../test/fixtures/weights/', import.meta.url));
const PY = '/usr/bin/python3';
const hasPython = existsSync(PY);
const MARKER = '/tmp/visft-weights-test-pwned';
const dir = mkdtempSync(join(tmpdir(), 'visft-tz-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function expectExactly(sd: Map<string, HostTensor>, expectedFile: string, what: string): void {
  const expected = JSON.parse(readFileSync(FIX + expectedFile, 'utf8')) as Record<string, Described>;
  assert.deepEqual([...sd.keys()], Object.keys(expected), `${what}: keys in order`);
  for (const [k, want] of Object.entries(expected)) assert.deepEqual(describe(sd.get(k)!), want, `${what}: ${k}`);
}

function isWeightsError(e: unknown): boolean {
  return e instanceof WeightsFormatError || e instanceof ZipError || e instanceof PickleError;
}

/** A torch-style archive around a hand-written data.pkl (and optional storages). */
function archive(name: string, pkl: Uint8Array, storages: Uint8Array[] = []): string {
  const file = join(dir, name);
  writeFileAtomic(file, (sink) =>
    writeZip(sink, [{ name: 'archive/data.pkl', data: pkl }, ...storages.map((data, i) => ({ name: `archive/data/${i}`, data })), { name: 'archive/version', data: new TextEncoder().encode('3\n') }]),
  );
  return file;
}

/** Pickle of {name: _rebuild_tensor_v2(storage(key 0, FloatStorage, numel), offset, size, stride)}. */
function onePickle(numelInPid: number, offset: number, size: number[], stride: number[]): Uint8Array {
  const w = new PickleWriter().proto(2).emptyDict().mark().str('t').global('torch._utils', '_rebuild_tensor_v2').mark();
  w.mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(numelInPid).tuple().binpersid();
  w.int(offset).intTuple(size).intTuple(stride).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce();
  return w.setitems().stop().bytes();
}

test('plain.pth, its legacy-format and deflated twins load exactly as torch saved them', () => {
  for (const f of ['plain.pth', 'plain_legacy.pth', 'plain_deflated.pth']) expectExactly(loadStateDict(FIX + f), 'plain.expected.json', f);
  const sd = loadStateDict(FIX + 'plain.pth');
  // spot-check decoded values of the views
  assert.deepEqual([...toFloat32(sd.get('shared_step')!)], [-2.5, -1, 0.5, 2, 3.5, 5, 6.5]);
  assert.deepEqual([...toFloat32(sd.get('expanded')!)], [1.5, -2, 1.5, -2, 1.5, -2]);
  assert.deepEqual([...(sd.get('permuted')!.data as Int32Array)].slice(0, 6), [0, 4, 8, 12, 16, 20]);
  assert.deepEqual(sd.get('scalar')!.shape, []);
});

test('tensors that shared a storage in torch are independent copies here', () => {
  const sd = loadStateDict(FIX + 'plain.pth');
  const a = sd.get('shared_a')!.data as Float32Array;
  const b = sd.get('shared_b')!.data as Float32Array;
  const step = sd.get('shared_step')!.data as Float32Array;
  const before = [...b, ...step];
  a.fill(1234);
  assert.deepEqual([...b, ...step], before);
  assert.notEqual(a.buffer, b.buffer);
});

test('EVA-CLIP-style checkpoint: the EVA-E rules keep the visual tower minus head/cls_token, unprefixed', () => {
  const sd = loadStateDict(FIX + 'eva_clip_style.pth');
  assert.ok(sd.has('text.token_embedding.weight') && sd.has('logit_scale'));
  const visual = evaClipEVisual(sd);
  assert.deepEqual([...visual.keys()], [
    'pos_embed',
    'patch_embed.proj.weight',
    'patch_embed.proj.bias',
    'blocks.0.norm1.weight',
    'blocks.0.attn.qkv.weight',
    'blocks.0.attn.q_bias',
    'blocks.0.attn.v_bias',
    'norm.weight',
  ]);
  assert.deepEqual(visual.get('blocks.0.attn.qkv.weight')!.shape, [24, 8]);
});

test('mmf-style checkpoint: auto finds the model dict; explicit keys; the whole structure via loadTorch', () => {
  const file = FIX + 'mmf_style.ckpt';
  const sd = loadStateDict(file);
  assert.deepEqual([...sd.keys()], ['caption_head.embedding.weight', 'caption_head.fc.weight', 'caption_head.fc.bias']);
  assert.deepEqual([...loadStateDict(file, { key: 'model' }).keys()], [...sd.keys()]);
  assert.throws(() => loadStateDict(file, { key: 'optimizer' }), /tensor "state": is a dict, not a tensor/);
  assert.throws(() => loadStateDict(file, { key: 'ema' }), /has no key "ema"; top-level keys: "model", "optimizer", "num_updates"/);
  const all = loadTorch(file) as PyDict;
  const meta = (all.get('model') as PyDict).attrs?.get('_metadata');
  assert.ok(meta instanceof PyDict && meta.has('caption_head.fc'), 'the state dict\'s _metadata attribute (set by BUILD) is kept');
  assert.equal(all.get('num_updates'), 500);
  assert.equal(all.get('best_metric_value'), 0.25);
  assert.equal(all.get('notes'), null);
  const group = ((all.get('optimizer') as PyDict).get('param_groups') as PyDict[])[0];
  assert.deepEqual(group.get('betas'), [0.9, 0.999]);
  assert.ok(Object.isFrozen(group.get('betas')), 'tuples are frozen arrays');
});

test('ViSFT-style LoRA file (nn.Parameter values) loads exactly and matches the expected LoRA shapes', () => {
  const sd = loadStateDict(FIX + 'visft_lora.pth');
  expectExactly(sd, 'lora.expected.json', 'visft_lora.pth');
  const expected = [0, 1].flatMap((n) => [
    { path: `visual.blocks.${n}.attn.qkv.lora_A`, shape: [8, 8] },
    { path: `visual.blocks.${n}.attn.qkv.lora_B`, shape: [16, 4] },
  ]);
  const m = matchWeights(expected, sd);
  assert.ok(m.ok);
});

test('malicious.pth (os.system in __reduce__) is refused and its payload never runs', () => {
  if (existsSync(MARKER)) unlinkSync(MARKER);
  const file = FIX + 'malicious.pth';
  const message = `refusing to load ${file}: it references posix.system, which a state dict never needs; visft never executes pickled code`;
  for (const load of [() => loadStateDict(file), () => loadTorch(file), () => loadTorch(file, { allowOpaque: ['posix.*', 'posix.system'] })]) {
    assert.throws(load, (e: unknown) => {
      assert.ok(e instanceof UnsafePickleError);
      assert.equal(e.message, message);
      assert.equal(e.module, 'posix');
      assert.equal(e.global, 'system');
      return true;
    });
  }
  assert.equal(existsSync(MARKER), false, 'the payload did not run');
});

test('hand-made archives naming dangerous globals are refused, by GLOBAL and by STACK_GLOBAL', () => {
  const cases: [string, string][] = [
    ['builtins', 'eval'],
    ['__builtin__', 'eval'],
    ['os', 'system'],
    ['nt', 'system'],
    ['subprocess', 'Popen'],
    ['torch', 'load'],
    ['torch._utils', '_rebuild_qtensor'],
    ['numpy.core.multiarray', '_reconstruct'],
  ];
  for (const [m, n] of cases) {
    const viaGlobal = new PickleWriter().proto(2).global(m, n).str('x').tuple().reduce().stop().bytes();
    const file = archive(`evil-${m}-${n}.pth`, viaGlobal);
    assert.throws(() => loadStateDict(file), new RegExp(`^UnsafePickleError: refusing to load ${file.replace(/[.]/g, '\\.')}: it references ${m.replace(/[.]/g, '\\.')}\\.${n}, which a state dict never needs`));
    const enc = new TextEncoder();
    const mb = enc.encode(m);
    const nb = enc.encode(n);
    const viaStack = Uint8Array.from([0x80, 4, 0x8c, mb.length, ...mb, 0x8c, nb.length, ...nb, 0x93, 0x8c, 1, 0x78, 0x85, 0x52, 0x2e]);
    assert.throws(() => loadTorch(archive(`evil4-${m}-${n}.pth`, viaStack)), (e: unknown) => e instanceof UnsafePickleError && e.message.includes(`it references ${m}.${n},`));
  }
});

test('allowOpaque keeps named globals (e.g. an mmf config) as inert placeholders', () => {
  const w = new PickleWriter().proto(2).emptyDict().mark();
  w.str('config').global('omegaconf.dictconfig', 'DictConfig').emptyTuple().reduce();
  w.str('model').emptyDict().mark().str('w').global('torch._utils', '_rebuild_tensor_v2').mark();
  w.mark().str('storage').global('torch', 'HalfStorage').str('0').str('cuda:0').int(2).tuple().binpersid();
  w.int(0).intTuple([2]).intTuple([1]).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce().setitems();
  const file = archive('mmf-config.ckpt', w.setitems().stop().bytes(), [Uint8Array.of(0x00, 0x3c, 0x00, 0xc0)]);
  assert.throws(() => loadStateDict(file), /it references omegaconf\.dictconfig\.DictConfig/);
  const sd = loadStateDict(file, { allowOpaque: ['omegaconf.*'] });
  assert.deepEqual([...toFloat32(sd.get('w')!)], [1, -2]);
  const all = loadTorch(file, { allowOpaque: ['omegaconf.dictconfig.DictConfig'] }) as PyDict;
  assert.ok(all.get('config') instanceof PyOpaque);
});

test('storage problems are reported: missing entry, too small, view out of range, unsupported dtype', () => {
  const f4 = new Uint8Array(16);
  assert.throws(() => loadStateDict(archive('nostorage.pth', onePickle(4, 0, [4], [1]))), /storage 0 is missing \(no archive\/data\/0 entry\)/);
  assert.throws(() => loadStateDict(archive('small.pth', onePickle(8, 0, [8], [1]), [f4])), /storage 0 holds 16 bytes but 8 f32 elements need 32/);
  assert.throws(() => loadStateDict(archive('view.pth', onePickle(4, 2, [3], [1]), [f4])), /reaches element 4 of a storage of 4 elements/);
  assert.throws(() => loadStateDict(archive('stride.pth', onePickle(4, 0, [2, 2], [3, 1]), [f4])), /reaches element 4/);
  assert.throws(() => loadStateDict(archive('bomb.pth', onePickle(4, 0, [100000, 100000], [0, 0]), [f4])), /would expand to 40000000000 bytes, far more than the file holds; refusing/);
  const int8 = new PickleWriter().proto(2).global('torch', 'CharStorage').stop().bytes();
  assert.throws(() => loadStateDict(archive('int8.pth', int8)), /holds int8 tensors \(torch\.CharStorage\), which visft does not support/);
  // a good one for contrast: a (2, 2) view at offset 0 with stride (1, 2) is a transpose
  const t = loadStateDict(archive('ok.pth', onePickle(4, 0, [2, 2], [1, 2]), [new Uint8Array(Float32Array.of(1, 2, 3, 4).buffer)])).get('t')!;
  assert.deepEqual([...toFloat32(t)], [1, 3, 2, 4]);
});

test('truncated or corrupted archives give errors, not crashes (property)', () => {
  const base = readFileSync(FIX + 'plain.pth');
  const tmp = join(dir, 'fuzz.pth');
  fc.assert(
    fc.property(
      fc.oneof(
        fc.integer({ min: 0, max: base.length - 1 }).map((cut) => base.subarray(0, cut)),
        fc.array(fc.tuple(fc.integer({ min: 0, max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }).map((flips) => {
          const c = Buffer.from(base);
          for (const [at, v] of flips) c[at] = v;
          return c;
        }),
      ),
      (bytes) => {
        writeFileSync(tmp, bytes);
        try {
          loadStateDict(tmp);
        } catch (e) {
          assert.ok(isWeightsError(e), `unexpected ${(e as Error).stack}`);
        }
      },
    ),
    { numRuns: RUNS * 3 },
  );
  writeFileSync(tmp, base.subarray(0, base.length - 10));
  assert.throws(() => loadStateDict(tmp), /no end-of-central-directory record/);
  const flipped = Buffer.from(base);
  const zip = new ZipReader(new FileSource(FIX + 'plain.pth'));
  const entry = zip.entries.find((e) => e.name.endsWith('/data/0'))!;
  const at = zip.dataOffset(entry);
  zip.src.close();
  flipped[at] ^= 1;
  writeFileSync(tmp, flipped);
  assert.throws(() => loadStateDict(tmp), /entry "plain\/data\/0": CRC-32 mismatch: the file is corrupt/);
});

test('files that are not checkpoints are named as such; safetensors files load through loadStateDict', () => {
  const text = join(dir, 'notes.pth');
  writeFileSync(text, 'hello world, not a checkpoint');
  assert.throws(() => loadStateDict(text), /not a PyTorch checkpoint/);
  const empty = join(dir, 'empty.pth');
  writeFileSync(empty, '');
  assert.throws(() => loadStateDict(empty), /not a PyTorch checkpoint/);
  const other = join(dir, 'other.zip');
  writeFileAtomic(other, (sink) => writeZip(sink, [{ name: 'readme.txt', data: new TextEncoder().encode('hi') }]));
  assert.throws(() => loadStateDict(other), /a zip archive but not a torch\.save checkpoint: no <archive>\/data\.pkl entry/);
  const st = join(dir, 'w.safetensors');
  writeSafetensors(st, { 'blocks.0.w': fromNumbers('bf16', [2], [1, 2]) });
  assert.deepEqual([...toFloat32(loadStateDict(st).get('blocks.0.w')!)], [1, 2]);
  assert.throws(() => loadStateDict(st, { key: 'model' }), /is a safetensors file: it has no key "model"/);
});

test('selectStateDict explains what it found instead of a tensor dict', () => {
  const mixed = new PyDict([['a', fromNumbers('f32', [1], [1])], ['step', 3]]);
  assert.throws(() => selectStateDict(mixed, 'm.pth'), /m\.pth: is not a state dict: entry "step" is a int, not a tensor/);
  assert.throws(() => selectStateDict([1, 2], 'l.pth'), /l\.pth: holds a list, not a dict of tensors/);
  assert.throws(() => selectStateDict(new PyDict([['epoch', 1]]), 'e.pth'), /no tensor dict found .* top-level keys: "epoch"; name the key to use/);
  const nested = new PyDict([['model', new PyDict([['module', new PyDict([['w', fromNumbers('f32', [1], [1])]])]])]]);
  assert.deepEqual([...selectStateDict(nested, 'n.pth').keys()], ['w']);
});

const tensorArb: fc.Arbitrary<HostTensor> = fc
  .record({ dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }) })
  .chain(({ dtype, shape }) => {
    const nbytes = numel(shape) * itemSize(dtype);
    const bytes = dtype === 'bool' ? fc.uint8Array({ min: 0, max: 1, minLength: nbytes, maxLength: nbytes }) : fc.uint8Array({ minLength: nbytes, maxLength: nbytes });
    return bytes.map((b) => tensorFromBytes(dtype, shape, b));
  });
const tensorDictArb = fc
  .uniqueArray(fc.tuple(fc.oneof(fc.string({ minLength: 1, maxLength: 10 }), fc.constantFrom('visual.blocks.0.attn.qkv.lora_A', 'ü', '__proto__')), tensorArb), { selector: (e) => e[0], maxLength: 5 })
  .map((entries) => new Map(entries));

test('saveTorchZip output loads back exactly and has torch\'s layout (property)', () => {
  let i = 0;
  fc.assert(
    fc.property(tensorDictArb, (tensors) => {
      const file = join(dir, `saved${i++ % 3}.pth`);
      saveTorchZip(file, tensors);
      const back = loadStateDict(file);
      assert.deepEqual([...back.keys()], [...tensors.keys()]);
      for (const [k, t] of tensors) assert.deepEqual(describe(back.get(k)!), describe(t), k);
      const src = new FileSource(file);
      try {
        const zip = new ZipReader(src);
        assert.deepEqual(zip.entries.map((e) => e.name), ['archive/data.pkl', 'archive/byteorder', ...[...tensors.keys()].map((_, j) => `archive/data/${j}`), 'archive/version']);
        for (const e of zip.entries) assert.equal(zip.dataOffset(e) % 64, 0, `${e.name} is 64-byte aligned`);
        assert.equal(new TextDecoder().decode(zip.read(zip.get('archive/byteorder')!)), 'little');
      } finally {
        src.close();
      }
    }),
    { numRuns: RUNS },
  );
});

// torch.load's view of our archive: `saved_by_visft.pth` is saveTorchZip's output for torchCheckTensors(), and
// `saved_by_visft.torch.json` is what torch.load (weights_only=True) read from it when the fixture was made
// (`node dist/test/weights/torch-check.js`, with python3-torch installed). The test holds both
// ends without needing torch: our writer still produces those exact bytes, and torch's reading of them
// equals the tensors. Where torch is installed, it is also asked again, live.
test('torch.load (weights_only=True) reads saveTorchZip output exactly', () => {
  const tensors = torchCheckTensors();
  const file = join(dir, 'for-torch.pth');
  saveTorchZip(file, tensors);
  assert.deepEqual(readFileSync(file), readFileSync(join(FIX, 'saved_by_visft.pth')), 'saveTorchZip output changed: regenerate the torch check fixture');
  const recorded = JSON.parse(readFileSync(join(FIX, 'saved_by_visft.torch.json'), 'utf8')) as Record<string, Described>;
  assert.deepEqual(Object.keys(recorded), [...tensors.keys()]);
  for (const [k, t] of tensors) assert.deepEqual(recorded[k], describe(t), k);
  const live = torchDescribe(file);
  if (live !== undefined) assert.deepEqual(live, recorded);
});

test('zip64 records: written with zip64 always, read back here and by Python\'s zipfile', () => {
  const file = join(dir, 'z64.zip');
  const files = [
    { name: 'a/one', data: new TextEncoder().encode('first') },
    { name: 'a/two', data: [Uint8Array.of(1, 2), Uint8Array.of(3)] },
    { name: 'a/empty', data: new Uint8Array(0) },
  ];
  writeFileAtomic(file, (sink) => writeZip(sink, files, { zip64: 'always', align: 16 }));
  const src = new FileSource(file);
  try {
    const zip = new ZipReader(src);
    assert.deepEqual(zip.entries.map((e) => [e.name, e.size]), [['a/one', 5], ['a/two', 3], ['a/empty', 0]]);
    assert.deepEqual([...zip.read(zip.get('a/two')!)], [1, 2, 3]);
    for (const e of zip.entries) assert.equal(zip.dataOffset(e) % 16, 0);
  } finally {
    src.close();
  }
  if (hasPython) {
    const script = 'import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(",".join(f"{i.filename}:{i.file_size}" for i in z.infolist()))';
    const r = spawnSync(PY, ['-c', script, file], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'a/one:5,a/two:3,a/empty:0');
  }
});
