#!/usr/bin/env node
// Entry point of the `visft` command: runs the compiled CLI (dist/ is built by `npm ci` through `prepare`).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../dist/bin/cli.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('visft: not built yet: run `npm ci` (or `npm run build`) in the visft folder\n');
  process.exit(2);
}
const { main } = await import(cli);
process.exitCode = await main(process.argv.slice(2));
