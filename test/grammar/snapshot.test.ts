// The committed grammar artefacts must match the parser: grammar changes show in review.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VisftParser } from '../../grammar/parser.js';
import { cstDts, serializedGrammarJson } from '../../grammar/snapshot.js';
import { AstBuilder } from '../../compiler/frontend/cst-to-ast.js';
import { grammarHtml } from '../../bin/commands/grammar.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const hint = 'run `npm run grammar:snapshot` and commit the result';

test('grammar/grammar.json matches the parser', () => {
  assert.equal(readFileSync(root + 'grammar/grammar.json', 'utf8'), serializedGrammarJson(), hint);
});

test('grammar/cst.d.ts matches the parser', () => {
  assert.equal(readFileSync(root + 'grammar/cst.d.ts', 'utf8'), cstDts(), hint);
});

test('the grammar passes chevrotain validations (no ambiguities, no left recursion)', () => {
  assert.doesNotThrow(() => new VisftParser({ validate: true }));
});

test('the AST visitor has a method for every grammar rule and no others', () => {
  // validateVisitor runs in the constructor and throws on a missing or extra method.
  assert.doesNotThrow(() => new AstBuilder(() => {}));
});

test('railroad diagrams are self-contained HTML (work offline)', () => {
  const html = grammarHtml();
  assert.match(html, /<svg|railroad|diagrams/i);
  assert.doesNotMatch(html, /<script src=|<link rel='stylesheet' href=|https?:\/\/unpkg/);
  for (const rule of ['file', 'moduleDecl', 'declaration', 'expression']) assert.ok(html.includes(rule), `diagram for ${rule}`);
});
