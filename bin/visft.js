#!/usr/bin/env node
// Entry point of the `visft` command: runs the compiled CLI (dist/ is built by `npm ci` through `prepare`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../dist/bin/cli.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('visft: not built yet: run `npm ci` (or `npm run build`) in the visft folder\n');
  process.exit(2);
}
// `visft ... | head` closes the pipe early: that is the reader's choice, not an error to trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => process.exit(e.code === 'EPIPE' ? 0 : 1));
}
const { main } = await import(cli);
process.exitCode = await main(process.argv.slice(2));
