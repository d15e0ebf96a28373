// Declaration checks, driven by the schema table: known kinds and keys, value types, references to the
// right kinds, and the rules that span a stage (task probabilities, ordering, exports within the run).
import type { Block, Decl, Expr, NestedBlock, Property } from '../ast.js';
import { closest, didYouMean } from '../frontend/diagnostics.js';
import { checkModuleArgs, exprKey, type ModuleSig } from './modules.js';
import { DATASET_FORMATS, DECL_KINDS, DECLS, type BlockSpec, type DeclKind } from './schema.js';
import { checkCall, checkRef, checkValue, constNumber, durationValue, describe, namesOfKinds, syntaxErrorWithin, unparen, type Ctx } from './values.js';

export function checkDecl(d: Decl, ctx: Ctx, signatureOf: (name: string) => ModuleSig | undefined): void {
  const spec = (DECLS as Record<string, (typeof DECLS)[DeclKind]>)[d.declKind];
  if (!spec) {
    const kinds = [...DECL_KINDS, 'module', 'import'];
    ctx.diags.error('VF2006', ctx.file, d.declKindSpan, `unknown declaration kind '${d.declKind}' (${DECL_KINDS.join(', ')}, module, import)${didYouMean(d.declKind, kinds)}`);
    return;
  }
  const kind = d.declKind as DeclKind;
  checkHeadValue(d, kind, spec.value, ctx, signatureOf);
  checkOn(d, kind, spec.on, ctx, signatureOf);
  checkBlock(d.block, spec.block, ctx, d, `${kind} '${d.name}'`);
  if (kind === 'stage') checkStage(d, ctx);
}

const FORMS: Record<DeclKind, string> = {
  backbone: 'backbone NAME = MODULE(param: value, ...) { ... }',
  lora: 'lora NAME on BACKBONE { ... }',
  head: 'head NAME = MODULE(...) on BACKBONE.OUTPUT { ... }',
  dataset: 'dataset NAME = FORMAT(...) { ... }',
  task: 'task NAME { head: ..., dataset: ... }',
  stage: 'stage NAME { ... }',
};

function checkHeadValue(d: Decl, kind: DeclKind, want: 'module' | 'dataset-format' | 'none', ctx: Ctx, signatureOf: (name: string) => ModuleSig | undefined): void {
  if (want === 'none') {
    if (d.value) ctx.diags.error('VF3014', ctx.file, d.value.span, `a ${kind} takes no '= ...': write \`${FORMS[kind]}\``);
    return;
  }
  if (!d.value) {
    ctx.diags.error('VF3014', ctx.file, d.nameSpan, `a ${kind} needs '= ...': write \`${FORMS[kind]}\``);
    return;
  }
  if (want === 'dataset-format') {
    checkCall(d.value, DATASET_FORMATS, ctx);
    return;
  }
  const v = unparen(d.value);
  const callee = v.kind === 'call' ? unparen(v.callee) : v;
  if (callee.kind !== 'name') {
    ctx.diags.error('VF3014', ctx.file, v.span, `expected a module instance: \`${FORMS[kind]}\`, found ${describe(v)}`);
    return;
  }
  const sym = ctx.scope.get(callee.name);
  if (!sym || sym.kind !== 'module') {
    const modules = namesOfKinds(ctx.scope, ['module']);
    if (sym) ctx.diags.error('VF3004', ctx.file, callee.span, `'${callee.name}' is a ${sym.kind}, but a module is needed here`);
    else ctx.diags.error('VF4001', ctx.file, callee.span, `no module named '${callee.name}'${didYouMean(callee.name, modules)}${modules.length ? '' : ` (no module is in scope here: imports are not transitive; does this file need \`import std.${kind === 'head' ? 'heads' : 'eva_vit'}\`?)`}`);
    return;
  }
  const sig = signatureOf(callee.name);
  if (sig) checkModuleArgs(v.kind === 'call' ? v : undefined, sig, ctx, { allowInputs: false });
}

function checkOn(d: Decl, kind: DeclKind, want: 'backbone' | 'backbone-output' | 'none', ctx: Ctx, signatureOf: (name: string) => ModuleSig | undefined): void {
  if (want === 'none') {
    if (d.on) ctx.diags.error('VF3014', ctx.file, d.on.span, `a ${kind} takes no 'on ...': write \`${FORMS[kind]}\``);
    return;
  }
  if (!d.on) {
    ctx.diags.error('VF3014', ctx.file, d.nameSpan, `a ${kind} needs 'on ${want === 'backbone' ? 'BACKBONE' : 'BACKBONE.OUTPUT'}': write \`${FORMS[kind]}\``);
    return;
  }
  const on = unparen(d.on);
  if (on.kind === 'error') return;
  if (want === 'backbone') {
    checkRef(on, ['backbone'], ctx);
    return;
  }
  if (on.kind !== 'member' || unparen(on.object).kind !== 'name' || on.segment.kind !== 'field') {
    ctx.diags.error('VF3003', ctx.file, on.span, `expected BACKBONE.OUTPUT (such as eva.features), found ${describe(on)}`);
    return;
  }
  const base = unparen(on.object);
  if (!checkRef(base, ['backbone'], ctx) || base.kind !== 'name') return;
  const backbone = ctx.scope.get(base.name);
  const value = backbone?.kind === 'backbone' ? backbone.node.value : undefined;
  const call = value ? unparen(value) : undefined;
  const callee = call?.kind === 'call' ? unparen(call.callee) : call;
  const sig = callee?.kind === 'name' ? signatureOf(callee.name) : undefined;
  if (sig && !sig.outputs.includes(on.segment.name)) {
    ctx.diags.error('VF2005', ctx.file, on.segment.span, `backbone '${base.name}' has no output '${on.segment.name}' (${sig.outputs.join(', ')})${didYouMean(on.segment.name, sig.outputs)}`);
  }
}

/** Properties and nested blocks against a block spec: unknown, duplicate, missing and mistyped entries. */
function checkBlock(block: Block | undefined, spec: BlockSpec, ctx: Ctx, owner: { nameSpan: { start: number; end: number }; name?: string }, what = ''): void {
  const entries = block?.entries ?? [];
  const seen = new Map<string, Property | NestedBlock>();
  const keys = [...Object.keys(spec.props), ...Object.keys(spec.blocks ?? {})];
  for (const e of entries) {
    if (spec.keyed) {
      checkKeyedEntry(e, spec.keyed, ctx, seen);
      continue;
    }
    const prop = spec.props[e.key];
    const nested = spec.blocks?.[e.key];
    if (!prop && !nested) {
      ctx.diags.error('VF3001', ctx.file, e.keySpan, `unknown ${e.kind === 'nested' ? 'block' : 'property'} '${e.key}'${what ? ` in ${what}` : ''}${didYouMean(e.key, keys)}`);
      continue;
    }
    if (e.kind === 'property') {
      if (!prop) {
        ctx.diags.error('VF3003', ctx.file, e.keySpan, `'${e.key}' is a block: write \`${e.key}${nested?.label !== 'none' ? ' NAME' : ''} { ... }\``);
        continue;
      }
      if (seen.has(e.key)) ctx.diags.error('VF3005', ctx.file, e.keySpan, `'${e.key}' is set twice`);
      seen.set(e.key, e);
      checkValue(e.value, prop.type, ctx);
      continue;
    }
    if (!nested) {
      ctx.diags.error('VF3003', ctx.file, e.keySpan, `'${e.key}' is a property: write \`${e.key}: value\``);
      continue;
    }
    const id = `${e.key} ${e.label ?? ''}`;
    if (seen.has(id) || (!nested.repeatable && seen.has(e.key))) ctx.diags.error('VF3005', ctx.file, e.labelSpan ?? e.keySpan, `'${id.trim()}' appears twice`);
    seen.set(id, e);
    seen.set(e.key, e);
    if (nested.label === 'none') {
      if (e.label !== undefined) ctx.diags.error('VF3014', ctx.file, e.labelSpan ?? e.keySpan, `'${e.key}' takes no name: write \`${e.key} { ... }\``);
    } else if (e.label === undefined) {
      if (nested.label.required) ctx.diags.error('VF3014', ctx.file, e.keySpan, `'${e.key}' needs a name: \`${e.key} NAME { ... }\``);
    } else if (nested.label.refers !== 'any') {
      checkRef({ kind: 'name', name: e.label, span: e.labelSpan ?? e.keySpan }, [nested.label.refers], ctx);
    }
    checkBlock(e.block, nested.spec, ctx, { nameSpan: e.keySpan, name: e.key }, `'${e.key}${e.label ? ' ' + e.label : ''}'`);
  }
  for (const [key, p] of Object.entries(spec.props)) {
    // A misspelt key already has its "did you mean"; saying it is missing too would be noise.
    const misspelt = entries.some((e) => !spec.props[e.key] && !spec.blocks?.[e.key] && closest(e.key, keys) === key);
    if (p.required && !seen.has(key) && !misspelt && !syntaxErrorIn(block, ctx)) {
      ctx.diags.error('VF3002', ctx.file, owner.nameSpan, `missing '${key}' (${p.doc})${what ? ` in ${what}` : ''}`);
    }
  }
}

/** Whether a syntax error was reported inside the block: entries may have been lost, so "missing" would be an echo. */
function syntaxErrorIn(block: Block | undefined, ctx: Ctx): boolean {
  return block !== undefined && syntaxErrorWithin(block.span, ctx);
}

function checkKeyedEntry(e: Property | NestedBlock, keyed: NonNullable<BlockSpec['keyed']>, ctx: Ctx, seen: Map<string, unknown>): void {
  if (e.kind !== 'property') {
    ctx.diags.error('VF3003', ctx.file, e.keySpan, `expected \`NAME: value\` here, found a block`);
    return;
  }
  if (seen.has(e.key)) ctx.diags.error('VF3005', ctx.file, e.keySpan, `'${e.key}' is set twice`);
  seen.set(e.key, e);
  checkRef({ kind: 'name', name: e.key, span: e.keySpan }, keyed.keyKinds, ctx);
  checkValue(e.value, keyed.value, ctx);
}

// ------------------------------------------------------------------ stage rules

function props(block: Block | undefined): Map<string, Property> {
  const out = new Map<string, Property>();
  for (const e of block?.entries ?? []) if (e.kind === 'property' && !out.has(e.key)) out.set(e.key, e);
  return out;
}

function nestedBlocks(block: Block | undefined, key: string): NestedBlock[] {
  return (block?.entries ?? []).filter((e): e is NestedBlock => e.kind === 'nested' && e.key === key);
}

function listItems(e: Expr | undefined): Expr[] {
  if (!e) return [];
  const u = unparen(e);
  return u.kind === 'list' ? [...u.items] : [u];
}

/** The tasks a stage runs: its `tasks` list, else its `task NAME { }` blocks, else its `mix` keys. */
export function stageTasks(stage: Decl): string[] {
  const p = props(stage.block);
  const listed = listItems(p.get('tasks')?.value).map(unparen).filter((x) => x.kind === 'name').map((x) => (x as { name: string }).name);
  if (listed.length) return listed;
  const blocks = nestedBlocks(stage.block, 'task').map((b) => b.label).filter((l): l is string => l !== undefined);
  if (blocks.length) return blocks;
  return nestedBlocks(stage.block, 'mix').flatMap((m) => m.block.entries.map((e) => e.key));
}

function checkStage(stage: Decl, ctx: Ctx): void {
  const p = props(stage.block);
  const tasks = stageTasks(stage);
  const taskBlocks = nestedBlocks(stage.block, 'task');

  // mix: probabilities of the stage's tasks, summing to 1
  for (const mix of nestedBlocks(stage.block, 'mix')) {
    let sum = 0;
    for (const e of mix.block.entries) {
      if (e.kind !== 'property') continue;
      sum += constNumber(e.value) ?? 0;
      if (taskBlocks.length && !taskBlocks.some((b) => b.label === e.key) && ctx.scope.get(e.key)?.kind === 'task') {
        ctx.diags.error('VF3011', ctx.file, e.keySpan, `task '${e.key}' is mixed but has no \`task ${e.key} { ... }\` block in stage '${stage.name}'`);
      }
    }
    if (mix.block.entries.length && Math.abs(sum - 1) > 1e-6) {
      ctx.diags.error('VF3007', ctx.file, mix.keySpan, `task probabilities sum to ${+sum.toFixed(6)}, not 1`);
    }
  }
  if (p.get('runs') && unparen(p.get('runs')!.value).kind === 'name' && (unparen(p.get('runs')!.value) as { name: string }).name === 'per_task' && nestedBlocks(stage.block, 'mix').length) {
    ctx.diags.error('VF3014', ctx.file, nestedBlocks(stage.block, 'mix')[0].keySpan, '`runs: per_task` trains each task in its own run: a `mix` has no meaning here');
  }

  // the stage's length, for checkpoint and export bounds
  const stageUpdates = p.get('updates') ? durationValue(p.get('updates')!.value) : undefined;
  const longest = Math.max(
    stageUpdates ?? 0,
    ...taskBlocks.map((b) => {
      const u = b.block.entries.find((e): e is Property => e.kind === 'property' && e.key === 'updates');
      return u ? (durationValue(u.value) ?? 0) : 0;
    }),
  );
  if (longest > 0) {
    for (const ex of nestedBlocks(stage.block, 'export')) {
      const at = ex.block.entries.find((e): e is Property => e.kind === 'property' && e.key === 'at');
      for (const item of listItems(at?.value)) {
        const v = durationValue(item);
        if (v !== undefined && v > longest) ctx.diags.error('VF3010', ctx.file, item.span, `export at update ${v} is after the stage ends (${longest} updates)`);
      }
    }
    const ck = p.get('checkpoint');
    const v = ck ? durationValue(ck.value) : undefined;
    if (ck && v !== undefined && v > longest) ctx.diags.error('VF3010', ctx.file, ck.value.span, `checkpoint interval ${v} is longer than the stage (${longest} updates)`);
  } else if (!p.get('updates') && (!taskBlocks.length || taskBlocks.some((b) => !b.block.entries.some((e) => e.key === 'updates')))) {
    // (an `updates` that is present but invalid has its own error)
    ctx.diags.error('VF3002', ctx.file, stage.nameSpan, `missing 'updates': stage '${stage.name}' needs a length (\`updates: 100k\`, or per task)`);
  }

  // train and freeze must not overlap
  const trained = new Map(listItems(p.get('train')?.value).map((x) => [exprKey(x), x] as const));
  for (const f of listItems(p.get('freeze')?.value)) {
    if (trained.has(exprKey(f))) ctx.diags.error('VF3012', ctx.file, f.span, `'${exprKey(f)}' is both trained and frozen in stage '${stage.name}'`);
  }
  if (p.get('train') && trained.size === 0) ctx.diags.error('VF3015', ctx.file, p.get('train')!.value.span, `nothing trains in stage '${stage.name}'`);

  // init: HEAD: STAGE.TASK, where STAGE is another stage that runs TASK
  for (const init of nestedBlocks(stage.block, 'init')) {
    for (const e of init.block.entries) {
      if (e.kind !== 'property') continue;
      const v = unparen(e.value);
      const from = v.kind === 'member' ? unparen(v.object) : v;
      if (!checkRef(from, ['stage'], ctx) || from.kind !== 'name') continue;
      if (from.name === stage.name) ctx.diags.error('VF3008', ctx.file, from.span, `stage '${stage.name}' cannot initialise from itself`);
      const source = ctx.scope.get(from.name);
      if (v.kind === 'member' && v.segment.kind === 'field' && source?.kind === 'stage') {
        const theirs = stageTasks(source.node);
        // A real task of another stage is not a typo: no "did you mean" for it.
        const typo = ctx.scope.get(v.segment.name)?.kind === 'task' ? '' : didYouMean(v.segment.name, theirs);
        if (!theirs.includes(v.segment.name)) ctx.diags.error('VF3011', ctx.file, v.segment.span, `stage '${from.name}' runs no task '${v.segment.name}' (it runs: ${theirs.join(', ') || 'none'})${typo}`);
      }
    }
  }
  void tasks;
}

/** `after` must not form a cycle among the stages of a file's scope; reported once per cycle. */
export function checkStageOrder(stages: Decl[], ctx: Ctx): void {
  const after = new Map<string, Expr[]>();
  for (const s of stages) after.set(s.name, listItems(props(s.block).get('after')?.value));
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, trail: string[]): void => {
    if (state.get(name) === 'done') return;
    state.set(name, 'visiting');
    for (const dep of after.get(name) ?? []) {
      const u = unparen(dep);
      if (u.kind !== 'name' || !after.has(u.name)) continue;
      if (state.get(u.name) === 'visiting') {
        ctx.diags.error('VF3008', ctx.file, u.span, `stage ordering cycle: ${[...trail, name, u.name].slice([...trail, name].indexOf(u.name)).join(' → ')}`);
        continue;
      }
      visit(u.name, [...trail, name]);
    }
    state.set(name, 'done');
  };
  for (const s of stages) visit(s.name, []);
}
