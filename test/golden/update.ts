// `npm run golden:update`: regenerates every test/golden/cases/*.expected from the current CLI.
// Review the diff (git diff test/golden) before committing: the .expected files are the reviewed output.
import { readFileSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { listCases, REPO_ROOT } from './harness.js';

let changed = 0;
const cases = listCases();
for (const c of cases) {
  const actual = await c.run();
  let before: string | undefined;
  try {
    before = readFileSync(c.expectedPath, 'utf8');
  } catch {
    before = undefined;
  }
  if (before === actual) continue;
  writeFileSync(c.expectedPath, actual);
  changed++;
  process.stdout.write(`${before === undefined ? 'created' : 'updated'} ${relative(REPO_ROOT, c.expectedPath)}\n`);
}
process.stdout.write(`${cases.length} golden cases, ${changed} .expected file${changed === 1 ? '' : 's'} written\n`);
