// The safe unpickler: Python's own pickles of plain data (protocols 0-5, committed fixture) decode to the
// expected values; globals go through the resolver only; corrupt input gives PickleError, never a crash.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { PickleError, PickleWriter, PyDict, PySet, unpickle, UnsafePickleError, type PyCallable } from '../../runtime/weights/pickle.js';

const RUNS = Number(process.env.VISFT_WEIGHTS_RUNS ?? 300);
const fixtures = fileURLToPath(new URL('../../../test/fixtures/weights/', import.meta.url));
const pickles = JSON.parse(readFileSync(fixtures + 'pickles.json', 'utf8')) as Record<string, string>;

function callable(module: string, name: string, call: (args: readonly unknown[]) => unknown): PyCallable {
  return { kind: 'callable', module, name, call };
}

/** Test-only stand-ins for the plain-data globals Python uses below protocol 4 (sets, bytes). */
function plainGlobals(module: string, name: string): unknown {
  const b = module === 'builtins' || module === '__builtin__';
  if (b && (name === 'set' || name === 'frozenset')) {
    return callable(module, name, (args) => {
      if (!Array.isArray(args[0])) throw new PickleError('set of a non-list');
      return new PySet(args[0]);
    });
  }
  if (b && name === 'bytes') return callable(module, name, () => new Uint8Array(0));
  if (module === '_codecs' && name === 'encode') {
    return callable(module, name, (args) => {
      if (typeof args[0] !== 'string') throw new PickleError('encode of a non-string');
      return Uint8Array.from(args[0], (c) => c.charCodeAt(0));
    });
  }
  throw new UnsafePickleError('test.pkl', module, name);
}

/** A JSON-comparable form that keeps the distinctions that matter (tuple vs list, int vs bigint, bytes, sets). */
function norm(x: unknown): unknown {
  if (typeof x === 'bigint') return { int: x.toString() };
  if (typeof x === 'number' && !Number.isFinite(x)) return { float: String(x) };
  if (x instanceof Uint8Array) return { bytes: Buffer.from(x).toString('hex') };
  if (x instanceof PyDict) return { dict: [...x.entries()].map(([k, v]) => [norm(k), norm(v)]) };
  if (x instanceof PySet) return { set: [...x].map(norm).sort() };
  if (Array.isArray(x)) return Object.isFrozen(x) ? { tuple: x.map(norm) } : x.map(norm);
  return x;
}

const expected = (() => {
  const d = (entries: [unknown, unknown][]): PyDict => new PyDict(entries);
  const t = (...items: unknown[]): readonly unknown[] => Object.freeze(items);
  const shared = [1, 2];
  const c = d([['c', [[], d([])]]]);
  const nested = d([['a', d([['b', c]])]]);
  return d([
    ['ints', [0, 1, -1, 255, 256, 65535, 65536, -(2 ** 31), 2 ** 31, 2n ** 63n, -(2n ** 70n) - 5n]],
    ['floats', [0.5, -1e300, Infinity]],
    ['consts', [null, true, false]],
    ['text', ['', 'abc', 'ü'.repeat(300), 'line\nbreak']],
    ['bytes', [new Uint8Array(0), Uint8Array.of(0, 255), Uint8Array.from({ length: 256 }, (_, i) => i)]],
    ['tuples', [t(), t(1), t(1, 2), t(1, 2, 3), t(1, 2, 3, 4)]],
    ['dict_keys', d([[1, 'one'], [t(2, 3), 'pair'], ['k', 'v']])],
    ['shared', [shared, shared]],
    ['sets', [new PySet([1, 2]), new PySet([3])]],
    ['nested', nested],
  ]);
})();

for (const protocol of ['0', '1', '2', '3', '4', '5']) {
  test(`Python pickle protocol ${protocol} of plain data decodes exactly`, () => {
    const bytes = Buffer.from(pickles[protocol], 'hex');
    const { value, end } = unpickle(bytes, { file: 'p.pkl', findGlobal: plainGlobals });
    assert.equal(end, bytes.length);
    assert.deepEqual(norm(value), norm(expected));
    const shared = (value as PyDict).get('shared') as unknown[][];
    assert.equal(shared[0], shared[1], 'the memo gives back the same object');
  });
}

test('globals are resolved only through the resolver, and a refusal stops the load at once', () => {
  // (os.system, ('echo',)) REDUCE, built by hand; the resolver refuses os.system
  const w = new PickleWriter().proto(2).global('os', 'system').str('touch /tmp/x').tuple().reduce().stop();
  const seen: string[] = [];
  assert.throws(
    () =>
      unpickle(w.bytes(), {
        file: 'evil.pkl',
        findGlobal: (m, n) => {
          seen.push(`${m}.${n}`);
          throw new UnsafePickleError('evil.pkl', m, n);
        },
        persistentLoad: () => assert.fail('nothing after the refused global runs'),
      }),
    /refusing to load evil\.pkl: it references os\.system, which a state dict never needs; visft never executes pickled code/,
  );
  assert.deepEqual(seen, ['os.system']);
  // STACK_GLOBAL (protocol 4) takes module and name from the stack
  const sg = Uint8Array.from([0x80, 4, 0x8c, 8, ...Buffer.from('builtins'), 0x8c, 4, ...Buffer.from('eval'), 0x93, 0x2e]);
  assert.throws(() => unpickle(sg, { file: 'e.pkl', findGlobal: plainGlobals }), /it references builtins\.eval/);
  // INST names a class inline
  const inst = Uint8Array.from([0x28, 0x69, ...Buffer.from('subprocess\nPopen\n'), 0x2e]);
  assert.throws(() => unpickle(inst, { file: 'i.pkl', findGlobal: plainGlobals }), /it references subprocess\.Popen/);
  // REDUCE of something that is not an allowed global is an error, not a call
  const notCallable = new PickleWriter().proto(2).str('os.system').emptyTuple().reduce().stop();
  assert.throws(() => unpickle(notCallable.bytes(), { file: 'n.pkl', findGlobal: plainGlobals }), /REDUCE of something that is not an allowed global/);
});

test('PickleWriter ints and floats round-trip through the unpickler (property)', () => {
  fc.assert(
    fc.property(fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }), fc.double(), (i, f) => {
      const w = new PickleWriter().proto(2).mark().int(i).float(f).tuple().stop();
      const v = unpickle(w.bytes(), { file: 'w.pkl', findGlobal: plainGlobals }).value as unknown[];
      const want = i >= -(2n ** 53n) + 1n && i <= 2n ** 53n - 1n ? Number(i) : i;
      assert.equal(v[0], want);
      assert.ok(Object.is(v[1], f));
    }),
    { numRuns: RUNS },
  );
});

test('protocol-0 text opcodes: INT booleans, LONG, FLOAT specials, STRING, PUT/GET', () => {
  const text = "(I01\nI00\nI-7\nL12345678901234567890L\nFinf\nF-1.5\nS'py2'\np0\ng0\nt.";
  const v = unpickle(Buffer.from(text, 'latin1'), { file: 't.pkl', findGlobal: plainGlobals }).value;
  assert.deepEqual(norm(v), norm(Object.freeze([true, false, -7, 12345678901234567890n, Infinity, -1.5, 'py2', 'py2'])));
  assert.throws(() => unpickle(Buffer.from('Fconstructor\n.'), { file: 'f.pkl', findGlobal: plainGlobals }), /bad FLOAT/);
});

test('corrupt or truncated pickles give PickleError, never another exception (property)', () => {
  const bases = ['0', '2', '4', '5'].map((p) => Uint8Array.from(Buffer.from(pickles[p], 'hex')));
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: bases.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
      fc.option(fc.nat(), { nil: undefined }),
      (which, flips, cut) => {
        let b = bases[which].slice();
        for (const [at, v] of flips) b[at % b.length] = v;
        if (cut !== undefined) b = b.slice(0, cut % b.length);
        try {
          unpickle(b, { file: 'fuzz.pkl', findGlobal: plainGlobals });
        } catch (e) {
          assert.ok(e instanceof PickleError, `not a PickleError: ${(e as Error).stack}`);
        }
      },
    ),
    { numRuns: RUNS * 5 },
  );
  assert.throws(() => unpickle(new Uint8Array(0), { file: 'e.pkl', findGlobal: plainGlobals }), /corrupt pickle at byte 0: needs 1 more bytes/);
  assert.throws(() => unpickle(Uint8Array.of(0x80, 9), { file: 'v.pkl', findGlobal: plainGlobals }), /unsupported pickle protocol 9/);
  assert.throws(() => unpickle(Uint8Array.of(0xff), { file: 'u.pkl', findGlobal: plainGlobals }), /unknown opcode 0xff/);
  assert.throws(() => unpickle(Uint8Array.of(0x68, 3, 0x2e), { file: 'm.pkl', findGlobal: plainGlobals }), /memo entry 3 is not set/);
  assert.throws(() => unpickle(Uint8Array.of(0x2e), { file: 's.pkl', findGlobal: plainGlobals }), /stack underflow/);
  assert.throws(() => unpickle(Uint8Array.of(0x82, 1, 0x2e), { file: 'x.pkl', findGlobal: plainGlobals }), /EXT opcodes/);
  assert.throws(() => unpickle(Uint8Array.of(0x8d, 255, 255, 255, 255, 0, 0, 0, 0), { file: 'b.pkl', findGlobal: plainGlobals }), /needs 4294967295 more bytes/);
});
