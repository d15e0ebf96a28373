// The front end's entry point: load files with their imports, then run every check on every file once.
// A check that crashes becomes a diagnostic at the file's start, never a stack trace.
import type { Decl } from '../ast.js';
import type { Diagnostics } from '../frontend/diagnostics.js';
import { Program, type LoadedFile } from '../frontend/load.js';
import type { SourceFile } from '../frontend/source.js';
import { checkDecl, checkStageOrder } from './declarations.js';
import { checkModule, moduleSignature, type ModuleSig } from './modules.js';
import { fileScope, ownSymbols, type Scope, type Symbol } from './scope.js';
import type { Ctx } from './values.js';
import { resolvePipeline, type ResolvedPipeline } from '../resolve/pipeline.js';

export interface CheckResult {
  readonly program: Program;
  readonly roots: LoadedFile[];
  readonly scopes: Map<LoadedFile, Scope>;
  /** Each root file's resolution, when the checks found no error (selectors are matched here). */
  readonly resolved: Map<LoadedFile, ResolvedPipeline>;
}

export function checkFiles(paths: readonly string[], env: NodeJS.ProcessEnv = process.env): CheckResult {
  const program = new Program();
  const roots = paths.map((p) => program.loadRoot(p)).filter((f): f is LoadedFile => f !== undefined);
  const own = new Map<LoadedFile, Scope>();
  const scopes = new Map<LoadedFile, Scope>();
  const symbolsOf = (f: LoadedFile): Scope => {
    if (!own.has(f)) own.set(f, ownSymbols(f, program.diags));
    return own.get(f)!;
  };
  const scopeOf = (f: LoadedFile): Scope => {
    if (!scopes.has(f)) scopes.set(f, fileScope(f, symbolsOf, program.diags));
    return scopes.get(f)!;
  };
  const files = [...program.files.values()].filter((f): f is LoadedFile => f !== null);
  for (const file of files) {
    const scope = scopeOf(file);
    const ctx: Ctx = { file: file.file, scope, diags: program.diags, env };
    const sigCache = new Map<string, ModuleSig | undefined>();
    const signatureOf = (name: string): ModuleSig | undefined => {
      if (!sigCache.has(name)) {
        const sym = scope.get(name);
        sigCache.set(name, sym?.kind === 'module' ? moduleSignature(sym, (s: Extract<Symbol, { kind: 'module' }>) => scopeOf(s.file)) : undefined);
      }
      return sigCache.get(name);
    };
    try {
      for (const item of file.ast.items) {
        if (item.kind === 'module') checkModule(item, ctx, signatureOf);
        else if (item.kind === 'decl') checkDecl(item, ctx, signatureOf);
      }
      checkStageOrder(file.ast.items.filter((i): i is Decl => i.kind === 'decl' && i.declKind === 'stage'), ctx);
    } catch (e) {
      program.diags.error('VF0001', file.file, { start: 0, end: 0 }, `internal error while checking this file (please report it): ${(e as Error).message}`);
    }
  }
  dropEchoes(program.diags);
  const resolved = new Map<LoadedFile, ResolvedPipeline>();
  if (program.diags.errorCount === 0) {
    for (const root of roots) {
      try {
        resolved.set(root, resolvePipeline(root, scopeOf(root), scopeOf, program.diags));
      } catch (e) {
        program.diags.error('VF0001', root.file, { start: 0, end: 0 }, `internal error while resolving this file (please report it): ${(e as Error).message}`);
      }
    }
  }
  return { program, roots, scopes, resolved };
}

/**
 * On a line with a lexical or syntax error the parser recovered by dropping or inventing tokens, so what the
 * checks say about that line is mostly an echo of the syntax error: keep only the syntax error there.
 */
function dropEchoes(diags: Diagnostics): void {
  const broken = new Map<SourceFile, Set<number>>();
  for (const d of diags.list) {
    if (!/^VF100[1-4]$/.test(d.code)) continue;
    if (!broken.has(d.file)) broken.set(d.file, new Set());
    broken.get(d.file)!.add(d.file.position(d.span.start).line);
  }
  if (broken.size === 0) return;
  for (let i = diags.list.length - 1; i >= 0; i--) {
    const d = diags.list[i];
    if (d.code >= 'VF2' && broken.get(d.file)?.has(d.file.position(d.span.start).line)) diags.list.splice(i, 1);
  }
}
