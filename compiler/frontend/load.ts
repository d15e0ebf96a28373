// Loading a program: read and parse the named files and, transitively, what they import (`std.NAME` from
// stdlib/, strings relative to the importing file). Missing files and cycles are reported at the import.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, relative, resolve, isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ImportDecl } from '../ast.js';
import { Diagnostics, didYouMean } from './diagnostics.js';
import { decodeSource, parseSource, type Parsed } from './parse.js';
import { SourceFile } from './source.js';

/** The stdlib folder shipped with visft (dist/compiler/frontend → repo root). */
export const STDLIB_DIR = fileURLToPath(new URL('../../../stdlib/', import.meta.url));

export interface LoadedFile extends Parsed {
  readonly absPath: string;
  /** The files this one imports, in order, each with the import that named it. */
  readonly imports: { decl: ImportDecl; file: LoadedFile }[];
}

export class Program {
  readonly diags = new Diagnostics();
  readonly files = new Map<string, LoadedFile | null>();
  private readonly inProgress: string[] = [];

  /** Loads a file named by the user (a command-line path); returns undefined when it cannot be read. */
  loadRoot(path: string): LoadedFile | undefined {
    const abs = resolve(path);
    const got = this.read(abs, path);
    if (typeof got === 'string') {
      this.diags.error('VF2008', new SourceFile(path, ''), { start: 0, end: 0 }, got);
      return undefined;
    }
    return this.load(abs, path, got);
  }

  /** The name a file is shown under: relative to the working directory when inside it. */
  static displayPath(abs: string): string {
    const rel = relative(process.cwd(), abs);
    return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
  }

  private read(abs: string, shown: string): Uint8Array | string {
    try {
      if (statSync(abs).isDirectory()) return `'${shown}' is a directory, not a .visft file (to check the files in it: visft check ${shown.replace(/\/$/, '')}/*.visft)`;
      return readFileSync(abs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return code === 'ENOENT' ? `file '${shown}' does not exist` : `cannot read '${shown}' (${code ?? String(e)})`;
    }
  }

  private load(abs: string, shown: string, bytes: Uint8Array): LoadedFile | undefined {
    if (this.files.has(abs)) return this.files.get(abs) ?? undefined;
    const source = decodeSource(shown, bytes, this.diags);
    if (!source) {
      this.files.set(abs, null);
      return undefined;
    }
    const parsed = parseSource(source, this.diags);
    const loaded: LoadedFile = { ...parsed, absPath: abs, imports: [] };
    this.files.set(abs, loaded);
    this.inProgress.push(abs);
    for (const item of parsed.ast.items) {
      if (item.kind !== 'import') continue;
      const target = this.resolveImport(loaded, item);
      if (!target) continue;
      if (this.inProgress.includes(target)) {
        const cycle = [...this.inProgress.slice(this.inProgress.indexOf(target)), target].map(Program.displayPath).join(' → ');
        this.diags.error('VF2002', source, item.targetSpan, `import cycle: ${cycle}`);
        continue;
      }
      const shownTarget = Program.displayPath(target);
      const got = this.files.has(target) ? null : this.read(target, shownTarget);
      if (typeof got === 'string') {
        this.diags.error('VF2001', source, item.targetSpan, got);
        continue;
      }
      const file = got === null ? this.files.get(target) : this.load(target, shownTarget, got);
      if (file) loaded.imports.push({ decl: item, file });
    }
    this.inProgress.pop();
    return loaded;
  }

  private resolveImport(from: LoadedFile, decl: ImportDecl): string | undefined {
    if (!decl.isStd) {
      if (!decl.target.endsWith('.visft')) {
        this.diags.error('VF2001', from.file, decl.targetSpan, `imports name .visft files: '${decl.target}' does not end in .visft`);
        return undefined;
      }
      return resolve(dirname(from.absPath), decl.target);
    }
    const parts = decl.target.split('.').slice(1);
    const available = stdlibModules();
    if (parts.length > 1 && available.includes(parts[0])) {
      this.diags.error('VF2003', from.file, decl.targetSpan, `an import names a whole stdlib file, not a name inside it: write \`import std.${parts[0]}\``);
      return undefined;
    }
    if (parts.length !== 1 || !available.includes(parts[0])) {
      const name = parts.join('.');
      this.diags.error('VF2003', from.file, decl.targetSpan, `there is no stdlib module '${name}' (available: ${available.join(', ')})${didYouMean(name, available)}`);
      return undefined;
    }
    return resolve(STDLIB_DIR, `${parts[0]}.visft`);
  }
}

let stdlibNames: string[] | undefined;
/** The names importable as `std.NAME`. */
export function stdlibModules(): string[] {
  if (!stdlibNames) {
    try {
      stdlibNames = readdirSync(STDLIB_DIR).filter((f) => f.endsWith('.visft')).map((f) => f.slice(0, -6)).sort();
    } catch {
      stdlibNames = [];
    }
  }
  return stdlibNames;
}
