// The source excerpt under a diagnostic: a long line (a minified one, or a binary file's first "line" of control
// characters) is shown as a window of at most SHOWN displayed columns around the caret, and the caret stands under
// the character the diagnostic points at.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { renderDiagnostic, SHOWN } from '../../compiler/frontend/diagnostics.js';
import { SourceFile } from '../../compiler/frontend/source.js';

/** How a character displays in an excerpt (control characters as `\xNN`). */
const shownAs = (s: string): string => s.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

/** The excerpt line and the caret line of a one-line file's diagnostic at [from, from + len). */
function excerpt(line: string, from: number, len: number): { shown: string; caret: string } {
  const file = new SourceFile('f.visft', `${line}\nnext`);
  const out = renderDiagnostic({ code: 'VF1001', severity: 'error', message: 'm', file, span: { start: from, end: from + len } });
  const [, shownLine, caretLine] = out.split('\n');
  assert.ok(shownLine.startsWith(' 1 | ') && caretLine.startsWith('   | '), out);
  return { shown: shownLine.slice(5), caret: caretLine.slice(5) };
}

const lineChars = fc.constantFrom('a', 'b', ' ', '\t', '\u0001', '\u007f', '\u001b', 'é', '€', '😀');

test('excerpt: at most SHOWN columns, the caret under its character, a short line whole', () => {
  fc.assert(
    fc.property(fc.array(lineChars, { maxLength: 400 }), fc.nat(), fc.nat({ max: 40 }), (chars, at, len) => {
      const line = chars.join('');
      const from = line.length === 0 ? 0 : at % (line.length + 1);
      const { shown, caret } = excerpt(line, from, len);
      const cutLeft = shown.startsWith('…');
      const cutRight = shown.endsWith('…');
      const body = shown.slice(cutLeft ? 1 : 0, cutRight ? -1 : undefined);
      assert.ok(body.length <= SHOWN, `excerpt of ${body.length} columns`);
      if (shownAs(line).length <= SHOWN) assert.equal(shown, shownAs(line), 'a line that fits is shown whole');
      else assert.ok(body.length >= SHOWN - 8, `a long line's window is full: ${body.length} columns`);
      // The caret starts under the character at `from`, or just past the line's end, and ends by the excerpt's end.
      const pad = caret.indexOf('^');
      assert.ok(pad >= 0 && /^[ \t]*$/.test(caret.slice(0, pad)) && /^\^+$/.test(caret.slice(pad)), caret);
      assert.ok(caret.length <= shown.length + 1, `caret past the excerpt:\n${shown}\n${caret}`);
      const at0 = line.slice(from, from + 1);
      if (at0 === '') assert.equal(pad, shown.length);
      else if (!/[\udc00-\udfff]/.test(at0)) assert.equal(shown.slice(pad, pad + shownAs(at0).length), shownAs(at0));
    }),
  );
});

test("excerpt: a binary file's line of control characters stays short", () => {
  const elf = '\u007fELF\u0002\u0001\u0001' + '\u0000'.repeat(9) + '\u0003\u0000>\u0000' + '\u0001\u0000'.repeat(600);
  const { shown, caret } = excerpt(elf, 24, 1);
  assert.ok(shown.length <= SHOWN + 2, `${shown.length} columns`);
  assert.equal(shown.slice(caret.indexOf('^'), caret.indexOf('^') + 4), shownAs(elf[24]));
});
