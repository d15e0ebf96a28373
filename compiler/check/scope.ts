// The top-level scope of a file: its own declarations and modules plus those of the files it imports.
import type { Decl, ModuleDecl } from '../ast.js';
import type { Diagnostics } from '../frontend/diagnostics.js';
import type { LoadedFile } from '../frontend/load.js';
import { DECL_KINDS, type DeclKind } from './schema.js';

export type Symbol =
  | { readonly kind: 'module'; readonly node: ModuleDecl; readonly file: LoadedFile }
  | { readonly kind: DeclKind; readonly node: Decl; readonly file: LoadedFile };

export type Scope = Map<string, Symbol>;

function where(sym: Symbol): string {
  const { line, col } = sym.file.file.position(sym.node.nameSpan.start);
  return `${sym.file.file.path}:${line}:${col}`;
}

/** Declarations made in the file itself, in order, reporting a name declared twice at the second. */
export function ownSymbols(file: LoadedFile, diags: Diagnostics): Scope {
  const own: Scope = new Map();
  for (const item of file.ast.items) {
    if (item.kind === 'import') continue;
    let sym: Symbol;
    if (item.kind === 'module') sym = { kind: 'module', node: item, file };
    else if ((DECL_KINDS as string[]).includes(item.declKind)) sym = { kind: item.declKind as DeclKind, node: item, file };
    else continue; // unknown kinds are reported by the declaration checker
    const prior = own.get(sym.node.name);
    if (prior) diags.error('VF2004', file.file, sym.node.nameSpan, `'${sym.node.name}' is already declared at ${where(prior)}`);
    else own.set(sym.node.name, sym);
  }
  return own;
}

/** The scope a file's names resolve in: imported symbols first, then the file's own (which must not clash). */
export function fileScope(file: LoadedFile, symbolsOf: (f: LoadedFile) => Scope, diags: Diagnostics): Scope {
  const scope: Scope = new Map();
  for (const { decl, file: imported } of file.imports) {
    for (const [name, sym] of symbolsOf(imported)) {
      const prior = scope.get(name);
      if (prior && prior.node !== sym.node) diags.error('VF2004', file.file, decl.targetSpan, `this import brings a second '${name}' (the first is at ${where(prior)})`);
      else scope.set(name, sym);
    }
  }
  for (const [name, sym] of symbolsOf(file)) {
    const prior = scope.get(name);
    if (prior && prior.node !== sym.node) diags.error('VF2004', file.file, sym.node.nameSpan, `'${name}' is already declared at ${where(prior)} (imported)`);
    scope.set(name, sym);
  }
  return scope;
}
