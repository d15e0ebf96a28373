// The README's quickstart is two commands, and CI runs the test one.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const readme = readFileSync(root + 'README.md', 'utf8');

test('the quickstart is exactly two commands, and .ci/run calls the test one', () => {
  const section = readme.split('## Quickstart')[1]?.split('\n## ')[0] ?? '';
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const commands = block.split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter(Boolean);
  assert.equal(commands.length, 2, `quickstart commands: ${JSON.stringify(commands)}`);
  const testCommand = commands.find((c) => /\btest\b/.test(c));
  assert.ok(testCommand, 'one command runs the tests');
  const ci = readFileSync(root + '.ci/run', 'utf8');
  assert.ok(ci.includes(testCommand), `.ci/run must run the README's test command: ${testCommand}`);
});
