// docs/diagnostics.md lists every diagnostic code with its meaning, and nothing else.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CODES } from '../../compiler/frontend/diagnostics.js';

const doc = readFileSync(fileURLToPath(new URL('../../../docs/diagnostics.md', import.meta.url)), 'utf8');

test('every diagnostic code is documented with its meaning', () => {
  for (const [code, meaning] of Object.entries(CODES)) {
    const row = doc.split('\n').find((l) => l.startsWith(`| ${code} |`));
    assert.ok(row, `docs/diagnostics.md has no row for ${code}`);
    assert.ok(row.includes(meaning), `${code}: the row should give the meaning '${meaning}'`);
  }
});

test('docs/diagnostics.md documents no code that does not exist', () => {
  const documented = [...doc.matchAll(/^\| (VF\d{4}) \|/gm)].map((m) => m[1]);
  for (const code of documented) assert.ok(code in CODES, `${code} is documented but not defined`);
  assert.equal(new Set(documented).size, documented.length, 'each code once');
});
