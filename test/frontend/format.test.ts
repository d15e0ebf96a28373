// The formatter: printing never changes the AST, formatting is idempotent and keeps every comment.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { stripSpans, type FileAst } from '../../compiler/ast.js';
import { Diagnostics, renderDiagnostic } from '../../compiler/frontend/diagnostics.js';
import { formatSource, printAst } from '../../compiler/frontend/format.js';
import { parseSource, type Parsed } from '../../compiler/frontend/parse.js';
import { SourceFile } from '../../compiler/frontend/source.js';
import { visftLexer } from '../../grammar/tokens.js';
import { fileAst } from './arbitraries.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
/** Runs per property; `VISFT_FMT_RUNS=5000` for a longer search (about 25 s). */
const NUM_RUNS = Number(process.env.VISFT_FMT_RUNS ?? 200);

function parse(text: string, path = 'test.visft'): { parsed: Parsed; errors: string[] } {
  const diags = new Diagnostics();
  const parsed = parseSource(new SourceFile(path, text), diags);
  return { parsed, errors: diags.sorted().map(renderDiagnostic) };
}

function parseClean(text: string, what: string): Parsed {
  const { parsed, errors } = parse(text);
  assert.deepEqual(errors, [], `${what} does not parse:\n${text}`);
  return parsed;
}

/**
 * Generated trees ignore precedence (see arbitraries.ts), so printing `binary(*, binary(+, a, b), c)` has to add
 * parentheses, and the text parses back with a `paren` node the tree did not have. The property therefore compares
 * the trees with every `paren` node replaced by its content; that the printer puts parentheses exactly where the
 * AST has `paren` nodes is checked on parsed trees, which carry them (the re-parse below, and the other tests).
 */
function withoutParens(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutParens);
  if (node === null || typeof node !== 'object') return node;
  const o = node as Record<string, unknown>;
  if (o.kind === 'paren') return withoutParens(o.expr);
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, withoutParens(v)]));
}

const commentTexts = (p: Parsed): string[] => p.comments.map((c) => c.image.trimEnd()).sort();

/** The checks every formatting run must pass: re-parses to the same AST, keeps the comments, is a fixed point. */
function checkFormat(original: Parsed, width?: number): string {
  const once = formatSource(original, { width });
  const reparsed = parseClean(once, 'formatted text');
  assert.deepEqual(stripSpans(reparsed.ast), stripSpans(original.ast), `formatting changed the AST:\n${once}`);
  assert.deepEqual(commentTexts(reparsed), commentTexts(original), `formatting changed the comments:\n${once}`);
  assert.equal(formatSource(reparsed, { width }), once, 'formatting is not idempotent');
  assert.ok(once === '' || once.endsWith('\n'), 'ends with a newline');
  assert.doesNotMatch(once, /\n\n\n/, 'at most one blank line in a row');
  assert.doesNotMatch(once, /^\n/, 'no blank line at the start');
  return once;
}

const width = fc.oneof(fc.constant(110), fc.integer({ min: 16, max: 110 }));

// ---------------------------------------------------------------- (a) printAst ∘ parse is the identity on ASTs

test('printAst: generated ASTs print to text that parses back to them', () => {
  fc.assert(
    fc.property(fileAst, width, (ast: FileAst, w) => {
      const text = printAst(ast, { width: w });
      const { parsed, errors } = parse(text);
      assert.deepEqual(errors, [], `printed text does not parse:\n${text}`);
      assert.deepEqual(withoutParens(stripSpans(parsed.ast)), withoutParens(stripSpans(ast)), `printed:\n${text}`);
      // The parentheses the printer added are now `paren` nodes; printing the parsed tree gives the same text
      // and parses back to exactly that tree.
      assert.equal(printAst(parsed.ast, { width: w }), text);
      assert.deepEqual(stripSpans(parseClean(printAst(parsed.ast, { width: w }), 'reprinted text').ast), stripSpans(parsed.ast));
    }),
    { numRuns: NUM_RUNS },
  );
});

// ---------------------------------------------------------------- (b) idempotent with comments anywhere

type Insert = {
  kind: 'eolLine' | 'eolBlock' | 'ownLine' | 'ownBlock' | 'gapBlock' | 'gapLine' | 'gapNewline' | 'blank';
  at: number;
  indent: number;
};
const insert: fc.Arbitrary<Insert> = fc.record({
  kind: fc.constantFrom('eolLine', 'eolLine', 'eolBlock', 'ownLine', 'ownLine', 'ownBlock', 'gapBlock', 'gapLine', 'gapNewline', 'blank'),
  at: fc.nat(),
  indent: fc.nat({ max: 6 }),
});

/**
 * Puts `// cN` / `/* cN *\/` comments at line ends, on their own lines and between tokens (a line comment between
 * tokens ends the line there), line breaks between tokens, and blank lines. No line break goes after a number: the
 * word after it on the same line is its unit.
 */
function insertComments(text: string, inserts: readonly Insert[]): string {
  let n = 0;
  // Between tokens first (offsets into the original text), from the end so earlier offsets stay valid.
  const tokens = visftLexer().tokenize(text).tokens;
  const gaps = inserts
    .filter((i) => i.kind.startsWith('gap') && tokens.length > 0)
    .map((i) => ({ i, tok: tokens[i.at % tokens.length] }))
    .filter(({ i, tok }) => i.kind === 'gapBlock' || tok.tokenType.name !== 'NumberLiteral')
    .sort((a, b) => b.tok.startOffset - a.tok.startOffset);
  for (const { i, tok } of gaps) {
    const at = tok.startOffset + tok.image.length;
    const nl = '\n' + ' '.repeat(i.indent);
    const what = i.kind === 'gapBlock' ? ` /* c${n++} */` : i.kind === 'gapLine' ? ` // c${n++}${nl}` : nl;
    text = text.slice(0, at) + what + text.slice(at);
  }
  const lines = text.split('\n');
  for (const i of inserts) {
    const k = i.at % lines.length;
    const c = `c${n++}`;
    if (i.kind === 'eolLine' && !lines[k].includes('//')) lines[k] += ` // ${c}`;
    else if (i.kind === 'eolBlock' && !lines[k].includes('//')) lines[k] += ` /* ${c} */`;
    else if (i.kind === 'ownLine') lines.splice(k, 0, ' '.repeat(i.indent) + `// ${c}`);
    else if (i.kind === 'ownBlock') lines.splice(k, 0, ' '.repeat(i.indent) + `/* ${c} */`);
    else if (i.kind === 'blank') lines.splice(k, 0, '');
  }
  return lines.join('\n');
}

test('formatSource: idempotent and keeps every comment, with comments inserted anywhere', () => {
  fc.assert(
    fc.property(fileAst, fc.array(insert, { maxLength: 14 }), width, (ast, inserts, w) => {
      const text = insertComments(printAst(ast), inserts);
      const original = parseClean(text, 'text with comments');
      checkFormat(original, w);
    }),
    { numRuns: NUM_RUNS },
  );
});

// ---------------------------------------------------------------- (c) the shipped .visft files

function visftFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) return visftFiles(p);
    return n.endsWith('.visft') ? [p] : [];
  });
}

test('formatSource on the shipped stdlib and pipelines: idempotent, keeps comments and the AST', async (t) => {
  const files = [...visftFiles(join(root, 'stdlib')), ...visftFiles(join(root, 'pipelines'))];
  for (const path of files) {
    const rel = path.slice(root.length);
    await t.test(rel, (st) => {
      const { parsed, errors } = parse(readFileSync(path, 'utf8'), rel);
      if (errors.length) {
        st.skip(`does not parse (its own tests report that): ${errors[0].split('\n')[0]}`);
        return;
      }
      checkFormat(parsed);
    });
  }
});

// ---------------------------------------------------------------- examples of the layout

function fmt(text: string, width?: number): string {
  return checkFormat(parseClean(text, 'example'), width);
}

test('layout: items, statements, blocks, blank lines', () => {
  const src = [
    'import std.eva_vit',
    'import   "./x.visft"',
    'module m( a : int,b:bool=false ) {',
    '  input x : f32[ B,N ]',
    '',
    '',
    '  param w:[a]{init:ones}',
    '  param v:[a]{init:ones, parts:[q,k],}',
    '  let y=x*2+1',
    '  repeat i in 0..<a { x=f(x) as blocks.{i} }',
    '  if not b {} else if a==1 { y = -y } else { }',
    '  output z = y',
    '}',
    'module g = m(a: 1)',
    'stage s { lr:1e-4',
    '  task t { batch: 8 } export e { at: [5k updates] path: "${OUT:-runs}/a" } w "x.pth" {} }',
    'task empty {}',
    'head h = f(x) on eva.features',
  ].join('\n');
  assert.equal(
    fmt(src),
    [
      'import std.eva_vit',
      'import "./x.visft"',
      '',
      'module m(a: int, b: bool = false) {',
      '  input x: f32[B, N]',
      '',
      '  param w: [a] { init: ones }',
      '  param v: [a] {',
      '    init: ones',
      '    parts: [q, k]',
      '  }',
      '  let y = x * 2 + 1',
      '  repeat i in 0..<a {',
      '    x = f(x) as blocks.{i}',
      '  }',
      '  if not b {} else if a == 1 {',
      '    y = -y',
      '  } else {}',
      '  output z = y',
      '}',
      '',
      'module g = m(a: 1)',
      '',
      'stage s {',
      '  lr: 1e-4',
      '  task t { batch: 8 }',
      '  export e {',
      '    at: [5k updates]',
      '    path: "${OUT:-runs}/a"',
      '  }',
      '  w "x.pth" {}',
      '}',
      '',
      'task empty {}',
      '',
      'head h = f(x) on eva.features',
      '',
    ].join('\n'),
  );
});

test('layout: parentheses are kept where written and only there', () => {
  assert.equal(fmt('task t { a: (1 + 2) * 3  b: 1 + (2 * 3)  c: ((x))  d: -(a.b)  e: not (a < b) }'), [
    'task t {',
    '  a: (1 + 2) * 3',
    '  b: 1 + (2 * 3)',
    '  c: ((x))',
    '  d: -(a.b)',
    '  e: not (a < b)',
    '}',
    '',
  ].join('\n'));
});

test('layout: long calls, lists and parameter lists wrap one item per line', () => {
  const long = 'module m(aaaa: int, bbbb: int, cccc: int) {\n  let x = f(aaaa, bbbb, [cccc, dddd], k: g(1, 2))\n}\n';
  assert.equal(fmt(long, 30), [
    'module m(',
    '  aaaa: int,',
    '  bbbb: int,',
    '  cccc: int,',
    ') {',
    '  let x = f(',
    '    aaaa,',
    '    bbbb,',
    '    [cccc, dddd],',
    '    k: g(1, 2),',
    '  )',
    '}',
    '',
  ].join('\n'));
  assert.equal(fmt('task t { a: [aaaaaaaa, bbbbbbbb, cccccccc] }', 24), ['task t {', '  a: [', '    aaaaaaaa,', '    bbbbbbbb,', '    cccccccc,', '  ]', '}', ''].join('\n'));
});

test('comments: end of line, own line, after `{`, before `}`, inside expressions', () => {
  const src = [
    '// header',
    '',
    '// about m',
    'module m(a: int /* in params */) {   // after brace',
    '  let x = 1      // trailing',
    '',
    '  // before y',
    '  let y = f(a, // inside a call',
    '            x)',
    '  if a {',
    '    y = 2',
    '    // end of then',
    '  } // after then',
    '  else { /* after else */',
    '  }',
    '  // end of body',
    '}',
    'task t { a: 1 /* a */ b { c: 2 } // b',
    '}  // end',
    '// end of file',
  ].join('\n');
  assert.equal(
    fmt(src),
    [
      '// header',
      '',
      '// about m',
      '/* in params */',
      'module m(a: int) { // after brace',
      '  let x = 1 // trailing',
      '',
      '  // before y',
      '  // inside a call',
      '  let y = f(a, x)',
      '  if a {',
      '    y = 2',
      '    // end of then',
      '    // after then',
      '  } else { /* after else */',
      '  }',
      '  // end of body',
      '}',
      '',
      'task t {',
      '  a: 1 /* a */',
      '  b { c: 2 } // b',
      '} // end',
      '// end of file',
      '',
    ].join('\n'),
  );
});

test('paths with consecutive indices (`layers.0.1`: the lexer reads `0.1` as one number) print and parse back', () => {
  const src = 'module m() {\n  param layers.0.1.weight: [2]\n  let y = x.2.3.{i}.4.5 as blocks.0.12\n}\n';
  assert.equal(fmt(src), src);
  const param = parseClean(src, 'example').ast.items[0];
  assert.ok(param.kind === 'module' && param.body?.[0].kind === 'param');
  assert.deepEqual(
    param.body[0].path.segments.map((s) => (s.kind === 'index' ? s.value : s.kind === 'field' ? s.name : s.kind)),
    [0, 1, 'weight'],
  );
});

test('printAst adds the parentheses that precedence and the token grammar need', () => {
  const S = { start: 0, end: 0 };
  const n = (name: string) => ({ kind: 'name' as const, name, span: S });
  const num = (text: string, unit?: string) => ({ kind: 'number' as const, text, value: Number(text), unit, span: S });
  const ast: FileAst = {
    span: S,
    items: [
      {
        kind: 'decl', declKind: 'task', declKindSpan: S, name: 't', nameSpan: S, span: S,
        value: num('2', 'updates'),
        block: {
          span: S,
          entries: [
            { kind: 'property', key: 'a', keySpan: S, span: S, value: { kind: 'binary', op: '*', left: { kind: 'binary', op: '+', left: n('a'), right: n('b'), span: S }, right: n('c'), span: S } },
            { kind: 'property', key: 'b', keySpan: S, span: S, value: { kind: 'binary', op: '-', left: n('a'), right: { kind: 'binary', op: '-', left: n('b'), right: n('c'), span: S }, span: S } },
            { kind: 'property', key: 'c', keySpan: S, span: S, value: { kind: 'member', object: { kind: 'member', object: n('x'), segment: { kind: 'index', value: 0, span: S }, span: S }, segment: { kind: 'index', value: 1, span: S }, span: S } },
            { kind: 'property', key: 'd', keySpan: S, span: S, value: { kind: 'index', object: n('x'), items: [{ kind: 'slice', from: num('2', 'updates'), span: S }], span: S } },
            { kind: 'property', key: 'e', keySpan: S, span: S, value: { kind: 'member', object: num('3'), segment: { kind: 'index', value: 0, span: S }, span: S } },
          ],
        },
      },
    ],
  };
  assert.equal(printAst(ast), ['task t = (2 updates) {', '  a: (a + b) * c', '  b: a - (b - c)', '  c: x.0.1', '  d: x[(2 updates):]', '  e: (3).0', '}', ''].join('\n'));
});
