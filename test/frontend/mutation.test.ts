// Robustness of the front end: every shipped .visft file (stdlib/, pipelines/), randomly damaged, must still
// be checked without a crash. Properties: checking never throws and never reports an internal error (VF0001);
// every diagnostic's span lies inside its file's text and renders; `visft check` exits 0 or 1 and prints no
// stack trace. Runs: VISFT_MUTATION_RUNS per file (default 25) and VISFT_MUTATION_CLI_RUNS for the CLI (8).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { checkFiles } from '../../compiler/check/index.js';
import { renderDiagnostic } from '../../compiler/frontend/diagnostics.js';
import { REPO_ROOT, runCliInProcess } from '../golden/harness.js';

const RUNS = Number(process.env.VISFT_MUTATION_RUNS ?? 25);
const CLI_RUNS = Number(process.env.VISFT_MUTATION_CLI_RUNS ?? 8);

/** The shipped sources, found at test time. */
const shipped = ['stdlib', 'pipelines'].flatMap((dir) =>
  readdirSync(join(REPO_ROOT, dir))
    .filter((f) => f.endsWith('.visft'))
    .sort()
    .map((f) => join(REPO_ROOT, dir, f)),
);

const tmp = mkdtempSync(join(tmpdir(), 'visft-mutation-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------- mutations (on bytes)

/** Text inserted by mutations: tokens, keywords, punctuation, literals, comments, unicode, control characters. */
const POOL = [
  // keywords and the words the checks know
  'import', 'module', 'param', 'input', 'output', 'let', 'repeat', 'in', 'if', 'else', 'true', 'false', 'and', 'or',
  'not', 'on', 'as', 'backbone', 'lora', 'head', 'dataset', 'task', 'stage', 'updates', 'train', 'freeze', 'mix',
  'init', 'export', 'weights', 'path', 'rank', 'alpha', 'targets', 'after', 'std', 'std.eva_vit', 'std.nope', 'eva',
  'x', 'B', 'width', 'blocks.*.attn.qkv.weight[q, v]', 'as blocks.{i}', 'eva_block(x, width: 8)', 'layernorm(',
  // punctuation and operators
  '{', '}', '(', ')', '[', ']', ',', ':', '.', '..', '..<', '=', '==', '!=', '<', '<=', '>', '>=', '*', '**', '+',
  '-', '/', '%', '@', '#', '$', '`', '\\', '?', ';',
  // literals
  '"s"', '"${X}"', '"${X:-d}"', '"${"', '"\\q"', '"', '"unterminated', '0', '-1', '42', '1e999', '1e-999', '100k',
  '1.5k', '2M', '2k updates', '3 epochs', '0.1', '1..5', '0..<4', '9999999999999999999999',
  // comments
  '// comment', '/* comment */', '/*', '*/',
  // unicode and control characters
  'é', '𝛼', '😀', '\u200b', '\ufeff', '\u202e', '\u00a0', '\u2028', '\t', '\r', '\r\n', '\n', '\f', '\v', '\x01',
  '\x1b[31m', '\x7f', '\ufffd',
];

const enc = new TextEncoder();

type Mutation = (bytes: Uint8Array) => Uint8Array;

const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
const at = (frac: number, len: number): number => Math.min(len, Math.floor(frac * (len + 1)));
const insert = (bytes: Uint8Array, pos: number, what: Uint8Array): Uint8Array => concat(bytes.subarray(0, pos), what, bytes.subarray(pos));
const lines = (bytes: Uint8Array): Uint8Array[] => {
  const out: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 10) {
      out.push(bytes.subarray(start, i + 1));
      start = i + 1;
    }
  }
  out.push(bytes.subarray(start));
  return out;
};

const frac = fc.double({ min: 0, max: 1, noNaN: true });

const mutation: fc.Arbitrary<{ name: string; apply: Mutation }> = fc.oneof(
  fc.tuple(frac, fc.nat({ max: 400 })).map(([f, n]) => ({
    name: `delete ${n} bytes at ${f.toFixed(3)}`,
    apply: (b: Uint8Array) => {
      const p = at(f, b.length);
      return concat(b.subarray(0, p), b.subarray(Math.min(b.length, p + n)));
    },
  })),
  fc.tuple(frac, fc.array(fc.constantFrom(...POOL), { minLength: 1, maxLength: 8 }), fc.constantFrom(' ', '', '\n')).map(([f, words, sep]) => ({
    name: `insert ${JSON.stringify(words.join(sep))} at ${f.toFixed(3)}`,
    apply: (b: Uint8Array) => insert(b, at(f, b.length), enc.encode(words.join(sep))),
  })),
  fc.tuple(frac, fc.integer({ min: 1, max: 4 })).map(([f, times]) => ({
    name: `duplicate line at ${f.toFixed(3)} x${times}`,
    apply: (b: Uint8Array) => {
      const ls = lines(b);
      const i = Math.min(ls.length - 1, Math.floor(f * ls.length));
      ls.splice(i, 0, ...Array<Uint8Array>(times).fill(ls[i]));
      return concat(...ls);
    },
  })),
  fc.tuple(frac, frac).map(([f, g]) => ({
    name: `swap lines at ${f.toFixed(3)} and ${g.toFixed(3)}`,
    apply: (b: Uint8Array) => {
      const ls = lines(b);
      const i = Math.min(ls.length - 1, Math.floor(f * ls.length));
      const j = Math.min(ls.length - 1, Math.floor(g * ls.length));
      [ls[i], ls[j]] = [ls[j], ls[i]];
      return concat(...ls);
    },
  })),
  frac.map((f) => ({ name: `truncate at ${f.toFixed(3)}`, apply: (b: Uint8Array) => b.subarray(0, at(f, b.length)) })),
  fc
    .tuple(frac, fc.constantFrom([0x00], [0x80], [0xc3], [0xe2, 0x82], [0xff], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0xef, 0xbb, 0xbf]))
    .map(([f, raw]) => ({ name: `insert bytes [${raw.map((x) => x.toString(16)).join(' ')}] at ${f.toFixed(3)}`, apply: (b: Uint8Array) => insert(b, at(f, b.length), Uint8Array.from(raw)) })),
  fc
    .tuple(frac, fc.integer({ min: 1, max: 1000 }), fc.constantFrom('(', '[', '{', '([{', 'not ', '-', 'a.'), fc.boolean())
    .map(([f, depth, open, closed]) => ({
      name: `insert ${depth} x '${open}'${closed ? ' (closed)' : ''} at ${f.toFixed(3)}`,
      apply: (b: Uint8Array) => {
        const close = [...open].reverse().map((c) => ({ '(': ')', '[': ']', '{': '}' })[c] ?? '').join('');
        const text = open.repeat(depth) + (closed ? 'x' + close.repeat(depth) : '');
        return insert(b, at(f, b.length), enc.encode(text));
      },
    })),
);

const mutations = fc.array(mutation, { minLength: 1, maxLength: 5 });

function mutate(original: Uint8Array, ms: { apply: Mutation }[]): Uint8Array {
  return ms.reduce((b, m) => m.apply(b), original);
}

// ---------------------------------------------------------------- properties

/** Checks one damaged file; returns a description of what is wrong, or undefined. */
function problemsOf(path: string): string | undefined {
  let result;
  try {
    result = checkFiles([path], {});
  } catch (e) {
    return `checkFiles threw: ${(e as Error).stack ?? String(e)}`;
  }
  for (const d of result.program.diags.list) {
    if (d.code === 'VF0001') return `internal error: ${d.message}`;
    const { start, end } = d.span;
    const len = d.file.text.length;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || start > end || end > len) {
      return `${d.code} '${d.message}' has span ${start}..${end} outside 0..${len} of ${d.file.path}`;
    }
    let shown: string;
    try {
      shown = renderDiagnostic(d);
    } catch (e) {
      return `renderDiagnostic threw on ${d.code}: ${(e as Error).stack ?? String(e)}`;
    }
    if (typeof shown !== 'string' || !shown.startsWith(`${d.file.path}:`)) return `bad rendering of ${d.code}: ${shown}`;
  }
  return undefined;
}

test('the shipped files are found and check cleanly before mutation', () => {
  assert.ok(shipped.length >= 4, `only ${shipped.length} shipped .visft files found`);
  for (const f of shipped) {
    const { program } = checkFiles([f], {});
    assert.equal(program.diags.errorCount, 0, `${f} has errors:\n${program.diags.sorted().map(renderDiagnostic).join('\n')}`);
  }
});

for (const file of shipped) {
  const name = basename(file);
  test(`mutated ${name}: the front end never crashes and every span is inside its file`, () => {
    const original = new Uint8Array(readFileSync(file));
    const dir = mkdtempSync(join(tmp, 'm-'));
    // Same name in a temporary folder: `import std.x` still resolves from the repository's stdlib.
    const path = join(dir, name);
    fc.assert(
      fc.property(mutations, (ms) => {
        writeFileSync(path, mutate(original, ms));
        const problem = problemsOf(path);
        assert.equal(problem, undefined, `after ${ms.map((m) => m.name).join('; ')}: ${problem}`);
      }),
      { numRuns: RUNS, includeErrorInReport: true },
    );
  });
}

test('visft check on mutated files exits 0 or 1 and prints no stack trace', async () => {
  const dir = mkdtempSync(join(tmp, 'cli-'));
  const originals = shipped.map((f) => ({ name: basename(f), bytes: new Uint8Array(readFileSync(f)) }));
  await fc.assert(
    fc.asyncProperty(fc.nat({ max: originals.length - 1 }), mutations, async (k, ms) => {
      const path = join(dir, originals[k].name);
      writeFileSync(path, mutate(originals[k].bytes, ms));
      const r = await runCliInProcess(['check', path]);
      const what = `after ${ms.map((m) => m.name).join('; ')} of ${originals[k].name}`;
      assert.ok(r.code === 0 || r.code === 1, `exit code ${r.code} ${what}:\n${r.stderr}`);
      const output = r.stdout + r.stderr;
      assert.doesNotMatch(output, /^ {4}at /m, `stack trace printed ${what}:\n${output.slice(0, 4000)}`);
      assert.doesNotMatch(output, /internal error/, `internal error ${what}:\n${output.slice(0, 4000)}`);
    }),
    { numRuns: CLI_RUNS, includeErrorInReport: true },
  );
});
