// One line for a file-system failure (bin/commands/errors.ts fileErrorLine): what visft was doing and why, for
// real failures of Node's fs calls, naming the file asked for when an atomic write's temporary file fails.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileErrorLine } from '../../bin/commands/errors.js';
import { writeFileAtomic } from '../../runtime/weights/io.js';

const dir = mkdtempSync(join(tmpdir(), 'visft-file-errors-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const caught = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  assert.fail('expected a failure');
};

test('reads: no such file, a folder', () => {
  assert.equal(fileErrorLine(caught(() => readFileSync(join(dir, 'w.pth')))), `cannot read ${join(dir, 'w.pth')}: no such file`);
  // Node names no path for reading a folder: the reason still comes first.
  assert.match(fileErrorLine(caught(() => readFileSync(dir))) ?? '', /^a folder \(EISDIR/);
});

test('atomic writes (all of visft\'s) name the file asked for, not their temporary', () => {
  const out = join(dir, 'missing', 'o.safetensors');
  assert.equal(fileErrorLine(caught(() => writeFileAtomic(out, (sink) => sink.write(new Uint8Array(4))))), `cannot write ${out}: its folder does not exist`);
  assert.equal(fileErrorLine(caught(() => writeFileAtomic(dir, (sink) => sink.write(new Uint8Array(4))))), `cannot write ${dir}: a folder`);
});

test('anything but a file-system error is not one', () => {
  assert.equal(fileErrorLine(new Error('boom')), undefined);
  assert.equal(fileErrorLine('text'), undefined);
});
