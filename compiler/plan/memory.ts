// The memory plan: where every value of a kernel schedule lives on the GPU.
//
// Values are grouped into storage classes (a value and the values that alias it, e.g. reshapes, share one
// storage). Parameters, inputs and outputs live for the whole run; temps live from the first kernel that
// touches them to the last (inclusive, through aliases). Storage classes are packed into arenas (one GPU
// buffer each) at offsets aligned to minStorageBufferOffsetAlignment:
//
// - `param` arenas hold the parameters (uploaded once, reused across runs), `io` arenas the inputs and
//   outputs, `temp` arenas the temps, packed greedy-by-size with best fit so that temps whose lifetimes do
//   not intersect reuse the same bytes.
// - WebGPU forbids a buffer bound both read-only and writable in one dispatch (a usage-scope conflict, even
//   for disjoint ranges). So a kernel's read-only values and its written values must sit in different
//   buffers: within each role, storage classes are coloured (greedy, deterministic) so that no kernel reads
//   one colour-mate and writes another; each colour gets its own arena(s). A chain of kernels ping-pongs
//   between two temp arenas.
// - Every binding stays under maxStorageBufferBindingSize and every arena under maxBufferSize (or a smaller
//   `maxArenaBytes`); a group that outgrows one arena continues in another.
//
// Everything is deterministic: the same values and schedule give the same plan.
import type { Kernel, Target } from '../codegen/types.js';

export type ValueKind = 'input' | 'param' | 'output' | 'temp';

/** A value to store. Structurally compatible with codegen/schedule.ts's ValueInfo (`bytes`). */
export interface PlanValue {
  readonly id: number;
  /** Byte size of the value (`byteSize` is accepted as a synonym). */
  readonly bytes?: number;
  readonly byteSize?: number;
  readonly kind: ValueKind;
  /** The input, parameter or output name, for messages and `--emit plan`. */
  readonly name?: string;
  /** This value shares the storage of another (reshape); its size must not exceed that storage's. */
  readonly aliasOf?: number;
  /** Element type in storage (default f32); used by the executor for upload and readback. */
  readonly dtype?: 'f32' | 'f16';
  /** The tensor's shape, for messages. */
  readonly shape?: readonly number[];
}

/** One kernel of the schedule: the values it binds read-only, and those it writes (read_write). */
export interface PlanStep {
  readonly name?: string;
  readonly reads: readonly number[];
  readonly writes: readonly number[];
}

export interface PlanInput {
  readonly values: readonly PlanValue[];
  /** The kernels in execution order (Kernel's bindings: 'read' → reads, 'read_write' → writes). */
  readonly schedule: readonly (PlanStep | Kernel)[];
  /** alias → the value whose storage it shares (as codegen/schedule.ts returns them). */
  readonly aliases?: ReadonlyMap<number, number>;
}

export type PlanLimits = Pick<Target['limits'], 'minStorageBufferOffsetAlignment' | 'maxStorageBufferBindingSize' | 'maxBufferSize'>;

export interface PlanOptions {
  /** Cap each arena below maxBufferSize (e.g. to keep single allocations small). */
  readonly maxArenaBytes?: number;
}

export type ArenaRole = 'param' | 'io' | 'temp';

export interface Arena {
  readonly size: number;
  readonly role: ArenaRole;
  /** `params`, `io`, `temps`, `temps.1`, `temps.1+1`, ...: role, colour, and continuation arenas. */
  readonly label: string;
}

export interface Placement {
  readonly arena: number;
  readonly offset: number;
  /** Bytes bound for the value: its byte size rounded up to a multiple of 4 (at least 4). */
  readonly size: number;
}

/** What the plan knows about a value (placed values and their aliases). */
export interface PlannedValue {
  readonly id: number;
  readonly kind: ValueKind;
  readonly bytes: number;
  readonly name?: string;
  readonly dtype: 'f32' | 'f16';
  /** The value that owns the storage (itself when not an alias). */
  readonly root: number;
  /** First and last schedule steps (inclusive) the storage is live; whole run for params/inputs/outputs. */
  readonly first: number;
  readonly last: number;
  /** Whether the storage lives for the whole run (param/input/output in its class). */
  readonly wholeRun: boolean;
}

export interface MemoryPlan {
  readonly arenas: Arena[];
  readonly placement: Map<number, Placement>;
  /** Bytes the plan allocates: the sum of the arena sizes. */
  readonly peakBytes: number;
  /** The most bytes live at any one step (a lower bound for any plan of this schedule). */
  readonly liveBytesPeak: number;
  readonly alignment: number;
  readonly steps: number;
  readonly stepNames: readonly string[];
  readonly values: Map<number, PlannedValue>;
  /** Temps that no kernel touches: they get no storage. */
  readonly unused: readonly number[];
}

export class PlanError extends Error {
  override name = 'PlanError';
}

/** The plan cannot run on a device: an arena, a binding or the alignment is over the device's limits. */
export class PlanDoesNotFitError extends PlanError {
  override name = 'PlanDoesNotFitError';
}

const MiB = 1024 * 1024;

/** `12.5 MiB`, `1.00 GiB`, `512 B`. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < MiB) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / (1024 * MiB)).toFixed(2)} GiB`;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

function bytesOf(v: PlanValue): number {
  const b = v.bytes ?? v.byteSize;
  if (b === undefined || !Number.isSafeInteger(b) || b < 0) throw new PlanError(`value %${v.id} has no valid byte size (${String(b)})`);
  return b;
}

/** A value in messages: `%59 f32[16, 5329, 15360]`, with its name where it has one (`%0 (image) f32[...]`). */
function label(v: { id: number; name?: string; shape?: readonly number[]; dtype?: string }): string {
  return `%${v.id}${v.name ? ` (${v.name})` : ''}${v.shape ? ` ${v.dtype ?? 'f32'}[${v.shape.join(', ')}]` : ''}`;
}

/** Why a value cannot be bound: over maxStorageBufferBindingSize (the memory plan, and the schedule before it). */
export function overBindingMessage(v: { id: number; name?: string; shape?: readonly number[]; dtype?: string }, bytes: number, limit: number): string {
  return `value ${label(v)} needs ${bytes} bytes (${formatBytes(bytes)}), over the device's maxStorageBufferBindingSize ${limit} (${formatBytes(limit)}): every tensor must fit in one binding (a smaller batch or input)`;
}

/** A kernel schedule as plan steps: 'read' bindings are reads, 'read_write' bindings writes. */
export function stepsFromKernels(kernels: readonly Kernel[]): PlanStep[] {
  return kernels.map((k) => ({
    name: k.name,
    reads: k.bindings.filter((b) => b.access === 'read').map((b) => b.value),
    writes: k.bindings.filter((b) => b.access === 'read_write').map((b) => b.value),
  }));
}

function asStep(s: PlanStep | Kernel): PlanStep {
  return 'bindings' in s ? stepsFromKernels([s])[0] : s;
}

const ROLE_OF: Record<ValueKind, ArenaRole> = { param: 'param', input: 'io', output: 'io', temp: 'temp' };
const ROLE_RANK: Record<ArenaRole, number> = { param: 0, io: 1, temp: 2 };
const ROLE_LABEL: Record<ArenaRole, string> = { param: 'params', io: 'io', temp: 'temps' };

interface StorageClass {
  root: number;
  members: number[];
  role: ArenaRole;
  size: number; // bytes reserved (multiple of 4, >= 4)
  first: number;
  last: number;
  used: boolean;
  color: number;
}

/**
 * Plans the storage of a kernel schedule for a device's limits (a Target, or just its limits).
 * Throws PlanError for an inconsistent schedule or a value over maxStorageBufferBindingSize.
 */
export function planMemory(input: PlanInput, target: Target | PlanLimits, options: PlanOptions = {}): MemoryPlan {
  const limits: PlanLimits = 'limits' in target ? target.limits : target;
  const alignment = Math.max(4, limits.minStorageBufferOffsetAlignment);
  const maxArena = Math.min(limits.maxBufferSize, options.maxArenaBytes ?? Infinity);
  const steps = input.schedule.map(asStep);

  // ---- values and aliases
  const byId = new Map<number, PlanValue>();
  for (const v of input.values) {
    if (!Number.isInteger(v.id)) throw new PlanError(`value id ${String(v.id)} is not an integer`);
    if (byId.has(v.id)) throw new PlanError(`value %${v.id} is listed twice`);
    if (!(v.kind in ROLE_OF)) throw new PlanError(`value %${v.id} has an unknown kind '${String(v.kind)}'`);
    bytesOf(v);
    byId.set(v.id, v);
  }
  const aliasOf = new Map<number, number>();
  for (const v of input.values) if (v.aliasOf !== undefined) aliasOf.set(v.id, v.aliasOf);
  for (const [a, r] of input.aliases ?? []) {
    if (aliasOf.has(a) && aliasOf.get(a) !== r) throw new PlanError(`value %${a} aliases both %${aliasOf.get(a)} and %${r}`);
    aliasOf.set(a, r);
  }
  const rootOf = (id: number): number => {
    let cur = id;
    for (let hops = 0; aliasOf.has(cur); hops++) {
      if (hops > aliasOf.size) throw new PlanError(`aliases of %${id} form a cycle`);
      cur = aliasOf.get(cur)!;
    }
    return cur;
  };
  for (const [a, r] of aliasOf) {
    const root = rootOf(a);
    if (!byId.has(root)) throw new PlanError(`value %${a} aliases %${r}, whose storage owner %${root} is not in the value list`);
  }
  for (const [si, s] of steps.entries()) {
    for (const id of [...s.reads, ...s.writes]) {
      if (!byId.has(id) && !aliasOf.has(id)) throw new PlanError(`kernel ${si} (${s.name ?? 'unnamed'}) binds %${id}, which is not in the value list`);
    }
  }

  // ---- storage classes, kinds and sizes
  const classes = new Map<number, StorageClass>();
  const ids = [...new Set([...byId.keys(), ...aliasOf.keys()])].sort((a, b) => a - b);
  for (const id of ids) {
    const root = rootOf(id);
    let c = classes.get(root);
    if (!c) {
      const rv = byId.get(root)!;
      c = { root, members: [], role: ROLE_OF[rv.kind], size: 0, first: Infinity, last: -Infinity, used: false, color: 0 };
      classes.set(root, c);
    }
    c.members.push(id);
    const v = byId.get(id);
    if (v && ROLE_RANK[ROLE_OF[v.kind]] < ROLE_RANK[c.role]) c.role = ROLE_OF[v.kind];
  }
  for (const c of classes.values()) {
    const rootBytes = bytesOf(byId.get(c.root)!);
    for (const m of c.members) {
      const v = byId.get(m);
      if (v && m !== c.root && bytesOf(v) > rootBytes) {
        throw new PlanError(`value ${label(v)} needs ${bytesOf(v)} bytes but aliases %${c.root}, which has only ${rootBytes}`);
      }
    }
    c.size = Math.max(4, alignUp(rootBytes, 4));
    if (c.size > limits.maxStorageBufferBindingSize) {
      const v = byId.get(c.root)!;
      throw new PlanError(overBindingMessage(v, rootBytes, limits.maxStorageBufferBindingSize));
    }
  }

  // ---- liveness (inclusive step ranges, through aliases)
  const firstWrite = new Map<number, number>();
  for (const [si, s] of steps.entries()) {
    for (const id of s.writes) {
      const c = classes.get(rootOf(id))!;
      if (!firstWrite.has(c.root)) firstWrite.set(c.root, si);
    }
    for (const id of [...s.reads, ...s.writes]) {
      const c = classes.get(rootOf(id))!;
      c.used = true;
      c.first = Math.min(c.first, si);
      c.last = Math.max(c.last, si);
    }
    const written = new Set(s.writes.map(rootOf));
    for (const id of s.reads) {
      if (written.has(rootOf(id))) {
        throw new PlanError(`kernel ${si} (${s.name ?? 'unnamed'}) reads %${id} read-only and writes storage it shares (%${rootOf(id)}); WebGPU forbids binding one range both ways`);
      }
    }
  }
  for (const c of classes.values()) {
    if (c.role !== 'temp' || !c.used) continue;
    const w = firstWrite.get(c.root);
    if (w === undefined || w > c.first) {
      throw new PlanError(`temp %${c.root} is read by kernel ${c.first} (${steps[c.first].name ?? 'unnamed'}) before any kernel writes it`);
    }
  }
  const wholeRun = (c: StorageClass): boolean => c.role !== 'temp';
  for (const c of classes.values()) {
    if (wholeRun(c)) {
      c.first = 0;
      c.last = Math.max(0, steps.length - 1);
    }
  }

  // ---- colouring: no kernel reads a class and writes another of the same role and colour
  const conflicts = new Map<number, Set<number>>();
  const edge = (a: number, b: number) => {
    if (!conflicts.has(a)) conflicts.set(a, new Set());
    conflicts.get(a)!.add(b);
  };
  for (const s of steps) {
    const r = [...new Set(s.reads.map(rootOf))];
    const w = [...new Set(s.writes.map(rootOf))];
    for (const a of r) {
      for (const b of w) {
        if (a !== b && classes.get(a)!.role === classes.get(b)!.role) (edge(a, b), edge(b, a));
      }
    }
  }
  const order = [...classes.values()].sort((a, b) => (a.used === b.used ? 0 : a.used ? -1 : 1) || a.first - b.first || a.root - b.root);
  const colored = new Set<number>();
  for (const c of order) {
    const taken = new Set<number>();
    for (const n of conflicts.get(c.root) ?? []) if (colored.has(n)) taken.add(classes.get(n)!.color);
    let color = 0;
    while (taken.has(color)) color++;
    c.color = color;
    colored.add(c.root);
  }

  // ---- packing, per (role, colour) group
  const groups = new Map<string, StorageClass[]>();
  for (const c of classes.values()) {
    if (c.role === 'temp' && !c.used) continue;
    const key = `${ROLE_RANK[c.role]}:${String(c.color).padStart(6, '0')}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(c);
  }
  const arenas: Arena[] = [];
  const placeOf = new Map<number, Placement>();
  for (const key of [...groups.keys()].sort()) {
    const members = groups.get(key)!;
    const { role, color } = members[0];
    const base = color === 0 ? ROLE_LABEL[role] : `${ROLE_LABEL[role]}.${color}`;
    const packed = role === 'temp' ? packIntervals(members, alignment, maxArena) : packSequential(members, alignment, maxArena);
    const first = arenas.length;
    packed.sizes.forEach((size, k) => arenas.push({ size, role, label: k === 0 ? base : `${base}+${k}` }));
    for (const [root, p] of packed.at) placeOf.set(root, { arena: first + p.arena, offset: p.offset, size: classes.get(root)!.size });
  }

  // ---- results
  const placement = new Map<number, Placement>();
  const values = new Map<number, PlannedValue>();
  const unused: number[] = [];
  for (const id of ids) {
    const root = rootOf(id);
    const c = classes.get(root)!;
    const v = byId.get(id) ?? byId.get(root)!;
    const bytes = byId.has(id) ? bytesOf(byId.get(id)!) : bytesOf(byId.get(root)!);
    const info: PlannedValue = {
      id,
      kind: byId.get(id)?.kind ?? byId.get(root)!.kind,
      bytes,
      ...(v.name !== undefined && byId.has(id) ? { name: v.name } : {}),
      dtype: v.dtype ?? byId.get(root)!.dtype ?? 'f32',
      root,
      first: c.used || wholeRun(c) ? c.first : -1,
      last: c.used || wholeRun(c) ? c.last : -1,
      wholeRun: wholeRun(c),
    };
    values.set(id, info);
    const p = placeOf.get(root);
    if (p) placement.set(id, { arena: p.arena, offset: p.offset, size: Math.max(4, alignUp(bytes, 4)) });
    else unused.push(id);
  }
  const liveBytesPeak = livePeak([...classes.values()].filter((c) => placeOf.has(c.root)), steps.length);
  return {
    arenas,
    placement,
    peakBytes: arenas.reduce((s, a) => s + a.size, 0),
    liveBytesPeak,
    alignment,
    steps: steps.length,
    stepNames: steps.map((s, i) => s.name ?? `kernel ${i}`),
    values,
    unused,
  };
}

function livePeak(cs: StorageClass[], n: number): number {
  const delta = new Array<number>(Math.max(1, n) + 1).fill(0);
  for (const c of cs) {
    delta[c.first] += c.size;
    delta[c.last + 1] -= c.size;
  }
  let cur = 0;
  let peak = 0;
  for (const d of delta) {
    cur += d;
    peak = Math.max(peak, cur);
  }
  return peak;
}

interface Packed {
  sizes: number[];
  at: Map<number, { arena: number; offset: number }>;
}

function overArena(c: StorageClass, maxArena: number): never {
  throw new PlanError(`value %${c.root} needs ${c.size} bytes, over the largest arena the device allows (${maxArena} bytes)`);
}

/** Whole-run values: one after another, continuing in a new arena when one is full. Ordered by id. */
function packSequential(cs: StorageClass[], alignment: number, maxArena: number): Packed {
  const sizes: number[] = [];
  const at = new Map<number, { arena: number; offset: number }>();
  let cursor = 0;
  for (const c of [...cs].sort((a, b) => a.root - b.root)) {
    if (c.size > maxArena) overArena(c, maxArena);
    let offset = alignUp(cursor, alignment);
    if (sizes.length === 0 || offset + c.size > maxArena) {
      sizes.push(0);
      offset = 0;
    }
    at.set(c.root, { arena: sizes.length - 1, offset });
    cursor = offset + c.size;
    sizes[sizes.length - 1] = cursor;
  }
  return { sizes, at };
}

/**
 * Temps: greedy by size (largest first; ties by first use, then id), each at the best-fitting aligned gap
 * among the temps already placed whose lifetimes intersect its own, in the first arena that has room.
 */
function packIntervals(cs: StorageClass[], alignment: number, maxArena: number): Packed {
  const sorted = [...cs].sort((a, b) => b.size - a.size || a.first - b.first || a.root - b.root);
  const placed: { c: StorageClass; offset: number }[][] = [];
  const at = new Map<number, { arena: number; offset: number }>();
  for (const c of sorted) {
    if (c.size > maxArena) overArena(c, maxArena);
    let done = false;
    for (let ai = 0; ai < placed.length && !done; ai++) {
      const offset = bestFit(placed[ai], c, alignment, maxArena);
      if (offset !== undefined) {
        insertByOffset(placed[ai], { c, offset });
        at.set(c.root, { arena: ai, offset });
        done = true;
      }
    }
    if (!done) {
      placed.push([{ c, offset: 0 }]);
      at.set(c.root, { arena: placed.length - 1, offset: 0 });
    }
  }
  const sizes = placed.map((list) => list.reduce((m, p) => Math.max(m, p.offset + p.c.size), 0));
  return { sizes, at };
}

/** Keeps an arena's placed temps sorted by offset (binary search; equal offsets keep placement order). */
function insertByOffset(list: { c: StorageClass; offset: number }[], item: { c: StorageClass; offset: number }): void {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid].offset <= item.offset) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, item);
}

/** The best-fitting aligned offset for `c` among the temps of an arena (sorted by offset) live with it. */
function bestFit(arena: { c: StorageClass; offset: number }[], c: StorageClass, alignment: number, maxArena: number): number | undefined {
  let best: number | undefined;
  let bestGap = Infinity;
  let cursor = 0;
  for (const p of arena) {
    if (p.c.first > c.last || c.first > p.c.last) continue; // not live at the same time
    const start = alignUp(cursor, alignment);
    if (start + c.size <= p.offset) {
      const gap = p.offset - start;
      if (gap < bestGap) (best = start), (bestGap = gap);
    }
    cursor = Math.max(cursor, p.offset + p.c.size);
  }
  if (best !== undefined) return best;
  const tail = alignUp(cursor, alignment);
  return tail + c.size <= maxArena ? tail : undefined;
}

/** Throws PlanDoesNotFitError when the plan cannot run on the target's device. */
export function checkPlanFits(plan: MemoryPlan, target: Target | PlanLimits): void {
  const limits: PlanLimits = 'limits' in target ? target.limits : target;
  const problems: string[] = [];
  const needAlign = Math.max(4, limits.minStorageBufferOffsetAlignment);
  if (plan.alignment % needAlign !== 0) {
    problems.push(`the plan aligns offsets to ${plan.alignment} bytes but the device needs multiples of ${needAlign} (minStorageBufferOffsetAlignment); plan again for this device`);
  }
  for (const [i, a] of plan.arenas.entries()) {
    if (a.size > limits.maxBufferSize) {
      problems.push(`arena ${i} '${a.label}' needs ${formatBytes(a.size)} but the device allows ${formatBytes(limits.maxBufferSize)} per buffer (maxBufferSize)`);
    }
  }
  let worst: [number, Placement] | undefined;
  for (const [id, p] of plan.placement) if (p.size > limits.maxStorageBufferBindingSize && (!worst || p.size > worst[1].size)) worst = [id, p];
  if (worst) {
    const v = plan.values.get(worst[0]);
    problems.push(overBindingMessage({ ...v, id: worst[0] }, worst[1].size, limits.maxStorageBufferBindingSize));
  }
  if (problems.length > 0) {
    throw new PlanDoesNotFitError(`the plan needs ${formatBytes(plan.peakBytes)} in ${plan.arenas.length} arena(s) and does not fit the device: ${problems.join('; ')}`);
  }
}

/** Text for `--emit plan`: arenas, then each value's arena, offset, size and lifetime, then the peak. */
export function formatPlan(plan: MemoryPlan): string {
  const out: string[] = [];
  out.push(`memory plan: ${plan.arenas.length} arena(s), ${formatBytes(plan.peakBytes)} (${plan.peakBytes} bytes), offsets aligned to ${plan.alignment}, ${plan.steps} kernel(s)`);
  for (const [i, a] of plan.arenas.entries()) out.push(`arena ${i} ${a.label}: ${a.size} bytes (${formatBytes(a.size)})`);
  const rows = [...plan.values.values()].sort((a, b) => {
    const pa = plan.placement.get(a.id);
    const pb = plan.placement.get(b.id);
    return (pa?.arena ?? Infinity) - (pb?.arena ?? Infinity) || (pa?.offset ?? 0) - (pb?.offset ?? 0) || a.id - b.id;
  });
  const life = (v: PlannedValue): string => {
    if (v.wholeRun) return 'whole run';
    if (v.first < 0) return 'unused';
    return v.first === v.last ? `k${v.first}` : `k${v.first}..k${v.last}`;
  };
  for (const v of rows) {
    const p = plan.placement.get(v.id);
    const where = p ? `arena ${p.arena} @ ${p.offset}, ${p.size} bytes` : 'no storage';
    const alias = v.root !== v.id ? ` alias of %${v.root}` : '';
    out.push(`  %${v.id}${v.name ? ` (${v.name})` : ''} ${v.kind}${alias}: ${where}, ${life(v)}`);
  }
  out.push(`peak: ${formatBytes(plan.peakBytes)} allocated (${plan.peakBytes} bytes); at most ${formatBytes(plan.liveBytesPeak)} live at once`);
  return out.join('\n') + '\n';
}
