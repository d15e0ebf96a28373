// Shared by the golden test and `npm run golden:update`: the list of cases and how each one is run.
// A case is test/golden/cases/NAME.visft, checked as `visft check test/golden/cases/NAME.visft` from the
// repository root; its NAME.expected holds what the command prints (stderr, then stdout) and `exit N`.
// Two cases are generated rather than committed (a file over the size limit, a path that does not exist).
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../bin/cli.js';
import { MAX_SOURCE_BYTES } from '../../compiler/frontend/parse.js';

/** The repository root (this file runs as dist/test/golden/harness.js). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CASES_DIR = join(REPO_ROOT, 'test', 'golden', 'cases');
/** How case files are named on the command line (relative to the repository root, with forward slashes). */
const CASES_REL = 'test/golden/cases';

/**
 * The environment the cases see: env_unset.visft and many_errors.visft rely on VISFT_GOLDEN_UNSET being unset
 * and VISFT_GOLDEN_SET being set; the variables the stdlib and pipelines use are unset so defaults apply.
 */
export const GOLDEN_ENV: { readonly set: Readonly<Record<string, string>>; readonly unset: readonly string[] } = {
  set: { VISFT_GOLDEN_SET: '/data/golden' },
  unset: ['VISFT_GOLDEN_UNSET', 'VISFT_WEIGHTS', 'VISFT_OUT', 'VISFT_DEMO_DATA', 'DATA_PATH'],
};

export interface GoldenCase {
  readonly name: string;
  /** The .expected file holding the output. */
  readonly expectedPath: string;
  /** Runs `visft check` on the case and returns the output in .expected form. */
  run(): Promise<string>;
}

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the CLI's `main` in this process with cwd = repository root and the golden environment, capturing what
 * it writes to stdout and stderr. Restores cwd, environment, writers and process.exitCode afterwards.
 */
export async function runCliInProcess(argv: string[], env: typeof GOLDEN_ENV = GOLDEN_ENV): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const origOut = process.stdout.write;
  const origErr = process.stderr.write;
  const origCwd = process.cwd();
  const saved = new Map<string, string | undefined>();
  for (const k of [...Object.keys(env.set), ...env.unset]) saved.set(k, process.env[k]);
  // The CLI writes strings. Under `node --test` the runner reports to its parent through this process's stdout
  // with binary (serialized) chunks, possibly while `main` awaits: those are passed through, not captured.
  const capture = (sink: string[], original: typeof process.stdout.write, stream: NodeJS.WriteStream) =>
    function (chunk: unknown, encodingOrCb?: unknown, cb?: unknown): boolean {
      if (typeof chunk !== 'string') return (original as (...a: unknown[]) => boolean).call(stream, chunk, encodingOrCb, cb);
      sink.push(chunk);
      const done = typeof encodingOrCb === 'function' ? encodingOrCb : cb;
      if (typeof done === 'function') (done as () => void)();
      return true;
    };
  try {
    for (const k of env.unset) delete process.env[k];
    for (const [k, v] of Object.entries(env.set)) process.env[k] = v;
    process.chdir(REPO_ROOT);
    process.stdout.write = capture(out, origOut, process.stdout) as typeof process.stdout.write;
    process.stderr.write = capture(err, origErr, process.stderr) as typeof process.stderr.write;
    process.exitCode = undefined;
    const code = await main(argv);
    return { code, stdout: out.join(''), stderr: err.join('') };
  } finally {
    process.stdout.write = origOut;
    process.stderr.write = origErr;
    process.exitCode = undefined;
    process.chdir(origCwd);
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** The .expected form of a run: stderr, then stdout, then `exit N`. */
export function formatResult(r: CliResult): string {
  return `${r.stderr}${r.stdout}exit ${r.code}\n`;
}

/** Every case: the committed .visft files (not those under lib/), then the generated ones. */
export function listCases(): GoldenCase[] {
  const files = readdirSync(CASES_DIR)
    .filter((f) => f.endsWith('.visft'))
    .sort();
  const cases: GoldenCase[] = files.map((f) => {
    const name = f.slice(0, -'.visft'.length);
    return {
      name,
      expectedPath: join(CASES_DIR, `${name}.expected`),
      run: async () => formatResult(await runCliInProcess(['check', `${CASES_REL}/${f}`])),
    };
  });
  cases.push(
    {
      // VF1008: a file over the size limit, written to a temporary folder (its path is shown as <tmp>/...).
      name: 'generated_too_large',
      expectedPath: join(CASES_DIR, 'generated_too_large.expected'),
      run: async () => {
        const dir = mkdtempSync(join(tmpdir(), 'visft-golden-'));
        try {
          const path = join(dir, 'too_large.visft');
          const line = '// this line pads the file beyond the size limit of .visft sources.\n';
          writeFileSync(path, line.repeat(Math.ceil((MAX_SOURCE_BYTES + 1) / line.length)));
          return formatResult(await runCliInProcess(['check', path])).split(dir).join('<tmp>');
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    },
    {
      // VF2008: a command-line path that does not exist.
      name: 'generated_missing_file',
      expectedPath: join(CASES_DIR, 'generated_missing_file.expected'),
      run: async () => formatResult(await runCliInProcess(['check', `${CASES_REL}/lib/no_such_case.visft`])),
    },
  );
  return cases;
}

/** A line diff of expected and actual output (LCS based), `-` for expected lines and `+` for actual ones. */
export function lineDiff(expected: string, actual: string): string {
  const a = expected.split('\n');
  const b = actual.split('\n');
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push(`  ${a[i]}`);
      i++;
      j++;
    } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(`+ ${b[j++]}`);
    else out.push(`- ${a[i++]}`);
  }
  return out.join('\n');
}
