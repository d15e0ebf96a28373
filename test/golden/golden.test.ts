// Golden diagnostics: `visft check` on every test/golden/cases/*.visft prints exactly its .expected file
// (stderr, stdout, `exit N`). After an intended change of messages run `npm run golden:update` and review.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { CODES } from '../../compiler/frontend/diagnostics.js';
import { CASES_DIR, lineDiff, listCases, REPO_ROOT } from './harness.js';

const cases = listCases();

for (const c of cases) {
  test(`golden: ${c.name}`, async () => {
    const shown = relative(REPO_ROOT, c.expectedPath);
    assert.ok(existsSync(c.expectedPath), `${shown} is missing: run \`npm run golden:update\` and review it`);
    const expected = readFileSync(c.expectedPath, 'utf8');
    const actual = await c.run();
    if (actual !== expected) {
      assert.fail(`output of case '${c.name}' differs from ${shown} (- expected, + actual); if the change is intended, run \`npm run golden:update\` and review the diff:\n${lineDiff(expected, actual)}`);
    }
  });
}

test('golden: every .expected file belongs to a case', () => {
  const names = new Set(cases.map((c) => c.name));
  const stale = readdirSync(CASES_DIR).filter((f) => f.endsWith('.expected') && !names.has(f.slice(0, -'.expected'.length)));
  assert.deepEqual(stale, [], 'these .expected files have no case (delete them)');
});

test('golden: there are at least 30 cases and every diagnostic code a .visft input can produce is covered', () => {
  assert.ok(cases.length >= 30, `only ${cases.length} cases`);
  const seen = new Set<string>();
  for (const c of cases) {
    const text = readFileSync(c.expectedPath, 'utf8');
    for (const m of text.matchAll(/^\S.*?:\d+:\d+: (?:error|warning) (VF\d{4}):/gm)) seen.add(m[1]);
  }
  // VF0001 (internal error) must never be producible.
  const wanted = Object.keys(CODES).filter((code) => code !== 'VF0001');
  const missing = wanted.filter((code) => !seen.has(code));
  assert.deepEqual(missing, [], `codes no golden case produces: ${missing.join(', ')}`);
  assert.ok(!seen.has('VF0001'), 'a golden case produced an internal error (VF0001)');
});

test('golden: each case file says what it checks in a first-line comment', () => {
  for (const f of readdirSync(CASES_DIR).filter((x) => x.endsWith('.visft'))) {
    const head = readFileSync(join(CASES_DIR, f)).subarray(0, 3).toString('latin1');
    assert.equal(head, '// ', `${f} should start with a comment saying what it checks`);
  }
});
