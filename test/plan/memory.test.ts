// The memory plan: properties on random schedules (no two values live at once overlap, alignment, sizes,
// whole-run values never share, aliases share, no kernel binds one arena both ways, determinism) and examples.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { PORTABLE_TARGET, type Kernel } from '../../compiler/codegen/types.js';
import {
  checkPlanFits,
  formatPlan,
  planMemory,
  PlanDoesNotFitError,
  PlanError,
  stepsFromKernels,
  type MemoryPlan,
  type PlanInput,
  type PlanLimits,
  type PlanStep,
  type PlanValue,
  type ValueKind,
} from '../../compiler/plan/memory.js';

const NUM_RUNS = 300;

interface Case {
  input: PlanInput;
  limits: PlanLimits;
  maxArenaBytes?: number;
}

const kernelArb = fc.record({
  reads: fc.array(fc.nat(), { maxLength: 3 }),
  writes: fc.integer({ min: 1, max: 2 }),
  outputs: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  sizes: fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 2, maxLength: 2 }),
  rewrite: fc.option(fc.nat(), { nil: undefined }),
  alias: fc.option(fc.record({ pick: fc.nat(), shrink: fc.integer({ min: 0, max: 100 }), output: fc.boolean() }), { nil: undefined }),
});

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    inputs: fc.array(fc.integer({ min: 1, max: 3000 }), { maxLength: 3 }),
    params: fc.array(fc.integer({ min: 1, max: 3000 }), { maxLength: 3 }),
    kernels: fc.array(kernelArb, { maxLength: 24 }),
    alignment: fc.constantFrom(4, 16, 64, 256),
    maxArenaBytes: fc.option(fc.integer({ min: 3072, max: 16384 }), { nil: undefined }),
    aliasesAsMap: fc.boolean(),
    unusedTemp: fc.boolean(),
  })
  .map((r) => {
    const values: PlanValue[] = [];
    const aliases = new Map<number, number>();
    const rootOf = (id: number): number => aliases.get(id) ?? values.find((v) => v.id === id)?.aliasOf ?? id;
    const root = (id: number): number => {
      let cur = id;
      for (let next = rootOf(cur); next !== cur; next = rootOf(cur)) cur = next;
      return cur;
    };
    const bytes = (id: number): number => values.find((v) => v.id === id)!.bytes!;
    let next = 0;
    const add = (kind: ValueKind, b: number, aliasOf?: number): number => {
      const id = next++;
      if (aliasOf !== undefined && r.aliasesAsMap) {
        aliases.set(id, aliasOf);
        values.push({ id, bytes: b, kind });
      } else values.push({ id, bytes: b, kind, ...(aliasOf !== undefined ? { aliasOf } : {}) });
      return id;
    };
    const available: number[] = [];
    for (const b of r.inputs) available.push(add('input', b));
    for (const b of r.params) available.push(add('param', b));
    const written: number[] = []; // temps and outputs written so far
    const steps: PlanStep[] = [];
    for (const [ki, k] of r.kernels.entries()) {
      const reads = available.length ? [...new Set(k.reads.map((p) => available[p % available.length]))] : [];
      const readRoots = new Set(reads.map(root));
      const writes: number[] = [];
      for (let w = 0; w < k.writes; w++) writes.push(add(k.outputs[w] ? 'output' : 'temp', k.sizes[w]));
      if (k.rewrite !== undefined && written.length) {
        const t = written[k.rewrite % written.length];
        if (!readRoots.has(root(t))) writes.push(t);
      }
      steps.push({ name: `k${ki}`, reads, writes });
      for (const w of writes.slice(0, k.writes)) (available.push(w), written.push(w));
      if (k.alias && written.length) {
        const of = written[k.alias.pick % written.length];
        const b = Math.floor((bytes(of) * k.alias.shrink) / 100);
        available.push(add(k.alias.output ? 'output' : 'temp', b, of));
      }
    }
    if (r.unusedTemp) add('temp', 100);
    const limits: PlanLimits = { minStorageBufferOffsetAlignment: r.alignment, maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 30 };
    const input: PlanInput = { values, schedule: steps, ...(r.aliasesAsMap ? { aliases } : {}) };
    return { input, limits, ...(r.maxArenaBytes !== undefined ? { maxArenaBytes: r.maxArenaBytes } : {}) };
  });

function plan(c: Case): MemoryPlan {
  return planMemory(c.input, c.limits, c.maxArenaBytes !== undefined ? { maxArenaBytes: c.maxArenaBytes } : {});
}

/** The plan's invariants, computed independently of the planner. */
function checkInvariants(c: Case, p: MemoryPlan): void {
  const { values, schedule } = c.input;
  const steps = schedule as PlanStep[];
  const aliasOf = new Map<number, number>(c.input.aliases ?? []);
  for (const v of values) if (v.aliasOf !== undefined) aliasOf.set(v.id, v.aliasOf);
  const root = (id: number): number => (aliasOf.has(id) ? root(aliasOf.get(id)!) : id);
  const byId = new Map(values.map((v) => [v.id, v]));
  const alignment = Math.max(4, c.limits.minStorageBufferOffsetAlignment);
  const maxArena = Math.min(c.limits.maxBufferSize, c.maxArenaBytes ?? Infinity);

  // Lifetimes and whole-run classes, from the schedule.
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  steps.forEach((s, i) => {
    for (const id of [...s.reads, ...s.writes]) {
      const r = root(id);
      if (!first.has(r)) first.set(r, i);
      last.set(r, i);
    }
  });
  const whole = new Set<number>();
  for (const v of values) if (v.kind !== 'temp') whole.add(root(v.id));

  assert.equal(p.peakBytes, p.arenas.reduce((s, a) => s + a.size, 0));
  assert.ok(p.peakBytes >= p.liveBytesPeak);
  for (const a of p.arenas) assert.ok(a.size <= maxArena, `arena ${a.label} of ${a.size} over ${maxArena}`);

  for (const v of values) {
    const r = root(v.id);
    const needed = whole.has(r) || first.has(r);
    const pl = p.placement.get(v.id);
    if (!needed) {
      assert.equal(pl, undefined, `unused temp %${v.id} got storage`);
      continue;
    }
    assert.ok(pl, `%${v.id} has no placement`);
    assert.equal(pl.offset % alignment, 0, `%${v.id} offset ${pl.offset} not aligned to ${alignment}`);
    assert.ok(pl.size >= v.bytes! && pl.size >= 4 && pl.size % 4 === 0, `%${v.id} size ${pl.size} for ${v.bytes} bytes`);
    assert.ok(pl.offset + pl.size <= p.arenas[pl.arena].size, `%${v.id} runs past its arena`);
    if (r !== v.id) {
      const rp = p.placement.get(r)!;
      assert.deepEqual([pl.arena, pl.offset], [rp.arena, rp.offset], `alias %${v.id} does not share %${r}'s storage`);
      assert.ok(pl.size <= rp.size);
    }
  }

  // No two storage classes overlap unless both are temps with disjoint lifetimes.
  const roots = [...new Set(values.map((v) => root(v.id)))].filter((r) => p.placement.has(r));
  for (let i = 0; i < roots.length; i++) {
    for (let j = i + 1; j < roots.length; j++) {
      const a = p.placement.get(roots[i])!;
      const b = p.placement.get(roots[j])!;
      if (a.arena !== b.arena || a.offset + a.size <= b.offset || b.offset + b.size <= a.offset) continue;
      const [ra, rb] = [roots[i], roots[j]];
      assert.ok(!whole.has(ra) && !whole.has(rb), `whole-run %${whole.has(ra) ? ra : rb} overlaps %${whole.has(ra) ? rb : ra}`);
      const disjoint = last.get(ra)! < first.get(rb)! || last.get(rb)! < first.get(ra)!;
      assert.ok(disjoint, `temps %${ra} [${first.get(ra)},${last.get(ra)}] and %${rb} [${first.get(rb)},${last.get(rb)}] overlap in arena ${a.arena} while both live`);
    }
  }

  // No kernel binds one arena read-only and writable (a WebGPU usage-scope conflict).
  steps.forEach((s, i) => {
    const ro = new Set(s.reads.map((id) => p.placement.get(id)!.arena));
    for (const id of s.writes) assert.ok(!ro.has(p.placement.get(id)!.arena), `kernel ${i} reads and writes arena ${p.placement.get(id)!.arena}`);
  });
  for (const v of values) assert.ok(byId.has(v.id));
}

describe('memory plan properties', () => {
  test('random schedules: no live overlap, aligned, sized, whole-run values alone, aliases shared, no read/write arena conflict', () => {
    fc.assert(
      fc.property(caseArb, (c) => checkInvariants(c, plan(c))),
      { numRuns: NUM_RUNS },
    );
  });

  test('deterministic: the same plan twice, and for the values listed in another order', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const a = plan(c);
        const b = plan(c);
        assert.deepEqual(b, a);
        const shuffled: Case = { ...c, input: { ...c.input, values: [...c.input.values].reverse() } };
        const s = plan(shuffled);
        assert.deepEqual(s.placement, a.placement);
        assert.equal(formatPlan(s), formatPlan(a));
      }),
      { numRuns: 100 },
    );
  });

  test('temps reuse memory: the allocation never exceeds the sum of all values', () => {
    fc.assert(
      fc.property(caseArb, (c) => {
        const p = plan(c);
        const sum = [...p.placement.entries()].filter(([id, _]) => p.values.get(id)!.root === id).reduce((s, [, pl]) => s + pl.size + p.alignment, 0);
        assert.ok(p.peakBytes <= sum, `${p.peakBytes} > ${sum}`);
      }),
      { numRuns: 100 },
    );
  });
});

const LIMITS: PlanLimits = { minStorageBufferOffsetAlignment: 256, maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 24 };

function chain(): PlanInput {
  // x (input) → t1 → t2 → t3 → y (output), each 1000 bytes; w a param read by the first kernel.
  const values: PlanValue[] = [
    { id: 0, bytes: 1000, kind: 'input', name: 'x' },
    { id: 1, bytes: 1000, kind: 'param', name: 'w' },
    { id: 2, bytes: 1000, kind: 'temp' },
    { id: 3, bytes: 1000, kind: 'temp' },
    { id: 4, bytes: 1000, kind: 'temp' },
    { id: 5, bytes: 1000, kind: 'output', name: 'y' },
  ];
  const schedule: PlanStep[] = [
    { name: 'add', reads: [0, 1], writes: [2] },
    { name: 'scale', reads: [2], writes: [3] },
    { name: 'scale', reads: [3], writes: [4] },
    { name: 'scale', reads: [4], writes: [5] },
  ];
  return { values, schedule };
}

describe('memory plan examples', () => {
  test('a chain ping-pongs between two temp arenas and reuses storage', () => {
    const p = planMemory(chain(), LIMITS);
    const [t1, t2, t3] = [2, 3, 4].map((id) => p.placement.get(id)!);
    assert.deepEqual(t1, t3, 't1 and t3 never live together: same storage');
    assert.notEqual(t1.arena, t2.arena, 'a kernel reads t1 and writes t2: different arenas');
    assert.deepEqual(
      p.arenas.map((a) => [a.label, a.role, a.size]),
      [
        ['params', 'param', 1000],
        ['io', 'io', 2024],
        ['temps', 'temp', 1000],
        ['temps.1', 'temp', 1000],
      ],
    );
    assert.equal(p.peakBytes, 5024);
    checkInvariants({ input: chain(), limits: LIMITS }, p);
  });

  test('inputs and outputs that one kernel reads and writes go to different io arenas', () => {
    const p = planMemory(
      {
        values: [
          { id: 0, bytes: 64, kind: 'input' },
          { id: 1, bytes: 64, kind: 'output' },
        ],
        schedule: [{ reads: [0], writes: [1] }],
      },
      LIMITS,
    );
    assert.notEqual(p.placement.get(0)!.arena, p.placement.get(1)!.arena);
  });

  test('Kernel objects work as the schedule, and aliases from a map share storage', () => {
    const k = (name: string, reads: number[], write: number): Kernel => ({
      name,
      wgsl: '',
      workgroupSize: [64, 1, 1],
      dispatch: [1, 1, 1],
      bindings: [...reads.map((value) => ({ value, access: 'read' as const })), { value: write, access: 'read_write' }],
      nodes: [write],
    });
    const kernels = [k('a', [0], 1), k('b', [2], 3)];
    assert.deepEqual(stepsFromKernels(kernels)[0], { name: 'a', reads: [0], writes: [1] });
    const p = planMemory(
      {
        values: [
          { id: 0, bytes: 40, kind: 'input' },
          { id: 1, bytes: 40, kind: 'temp' },
          { id: 3, bytes: 40, kind: 'output' },
        ],
        schedule: kernels,
        aliases: new Map([[2, 1]]),
      },
      LIMITS,
    );
    assert.deepEqual(p.placement.get(2), p.placement.get(1));
    assert.equal(p.values.get(2)!.root, 1);
    assert.deepEqual([p.values.get(1)!.first, p.values.get(1)!.last], [0, 1], 'the alias extends the lifetime');
  });

  test('an alias that is an output makes its storage live for the whole run', () => {
    const p = planMemory(
      {
        values: [
          { id: 0, bytes: 40, kind: 'input' },
          { id: 1, bytes: 40, kind: 'temp' },
          { id: 2, bytes: 40, kind: 'output', aliasOf: 1 },
          { id: 3, bytes: 40, kind: 'temp' },
          { id: 4, bytes: 40, kind: 'output' },
        ],
        schedule: [
          { reads: [0], writes: [1] },
          { reads: [0], writes: [3] },
          { reads: [3], writes: [4] },
        ],
      },
      LIMITS,
    );
    assert.equal(p.arenas[p.placement.get(1)!.arena].role, 'io');
    assert.equal(p.values.get(1)!.wholeRun, true);
  });

  test('big temps spill into more arenas under maxArenaBytes', () => {
    const values: PlanValue[] = [{ id: 0, bytes: 4, kind: 'input' }];
    const schedule: PlanStep[] = [];
    for (let i = 1; i <= 4; i++) values.push({ id: i, bytes: 3000, kind: 'temp' });
    values.push({ id: 5, bytes: 4, kind: 'output' });
    schedule.push({ reads: [0], writes: [1, 2, 3, 4] }, { reads: [1, 2, 3, 4], writes: [5] });
    const p = planMemory({ values, schedule }, LIMITS, { maxArenaBytes: 7000 });
    assert.deepEqual(
      p.arenas.filter((a) => a.role === 'temp').map((a) => [a.label, a.size]),
      [
        ['temps', 6072],
        ['temps+1', 6072],
      ],
    );
  });

  test('a value over maxStorageBufferBindingSize is an error naming it', () => {
    assert.throws(
      () => planMemory({ values: [{ id: 7, bytes: 2000, kind: 'temp', name: 'big' }], schedule: [{ reads: [], writes: [7] }] }, { ...LIMITS, maxStorageBufferBindingSize: 1024 }),
      (e: unknown) => e instanceof PlanError && /value %7 \(big\) needs 2000 bytes \(2\.0 KiB\), over the device's maxStorageBufferBindingSize 1024 \(1\.0 KiB\): every tensor must fit in one binding/.test(e.message),
    );
  });

  test('schedule errors: read before write, read and write of one storage, unknown value, alias cycle', () => {
    const v = (id: number, kind: ValueKind = 'temp'): PlanValue => ({ id, bytes: 16, kind });
    assert.throws(() => planMemory({ values: [v(0), v(1)], schedule: [{ reads: [0], writes: [1] }] }, LIMITS), /temp %0 is read by kernel 0 .* before any kernel writes it/);
    assert.throws(() => planMemory({ values: [v(0, 'input'), { ...v(1), aliasOf: 0 }], schedule: [{ reads: [0], writes: [1] }] }, LIMITS), /reads %0 read-only and writes storage it shares/);
    assert.throws(() => planMemory({ values: [v(0, 'input')], schedule: [{ reads: [0], writes: [9] }] }, LIMITS), /binds %9, which is not in the value list/);
    assert.throws(() => planMemory({ values: [{ ...v(0), aliasOf: 1 }, { ...v(1), aliasOf: 0 }], schedule: [] }, LIMITS), /cycle/);
    assert.throws(() => planMemory({ values: [v(0, 'input'), { ...v(1), bytes: 32, aliasOf: 0 }], schedule: [] }, LIMITS), /needs 32 bytes but aliases %0, which has only 16/);
  });

  test('checkPlanFits: a plan for a bigger device does not fit a smaller one, with the sizes in the message', () => {
    const big: PlanLimits = { minStorageBufferOffsetAlignment: 256, maxStorageBufferBindingSize: 1 << 30, maxBufferSize: 2 ** 31 };
    const p = planMemory(
      {
        values: [
          { id: 0, bytes: 200 * 1024 * 1024, kind: 'param', name: 'w' },
          { id: 1, bytes: 200 * 1024 * 1024, kind: 'param' },
        ],
        schedule: [],
      },
      big,
    );
    checkPlanFits(p, big);
    assert.throws(
      () => checkPlanFits(p, PORTABLE_TARGET),
      (e: unknown) =>
        e instanceof PlanDoesNotFitError &&
        /the plan needs 400\.0 MiB/.test(e.message) &&
        /arena 0 'params' needs 400\.0 MiB but the device allows 256\.0 MiB per buffer \(maxBufferSize\)/.test(e.message) &&
        /value %0 \(w\) needs 209715200 bytes \(200\.0 MiB\), over the device's maxStorageBufferBindingSize 134217728 \(128\.0 MiB\)/.test(e.message),
    );
    const coarse = planMemory(chain(), { ...LIMITS, minStorageBufferOffsetAlignment: 16 });
    assert.throws(() => checkPlanFits(coarse, PORTABLE_TARGET), /aligns offsets to 16 bytes but the device needs multiples of 256/);
    checkPlanFits(planMemory(chain(), PORTABLE_TARGET), { ...LIMITS, minStorageBufferOffsetAlignment: 16 });
  });

  test('formatPlan lists arenas, placements with lifetimes, and the peak', () => {
    const text = formatPlan(planMemory(chain(), LIMITS));
    assert.equal(
      text,
      [
        'memory plan: 4 arena(s), 4.9 KiB (5024 bytes), offsets aligned to 256, 4 kernel(s)',
        'arena 0 params: 1000 bytes (1000 B)',
        'arena 1 io: 2024 bytes (2.0 KiB)',
        'arena 2 temps: 1000 bytes (1000 B)',
        'arena 3 temps.1: 1000 bytes (1000 B)',
        '  %1 (w) param: arena 0 @ 0, 1000 bytes, whole run',
        '  %0 (x) input: arena 1 @ 0, 1000 bytes, whole run',
        '  %5 (y) output: arena 1 @ 1024, 1000 bytes, whole run',
        '  %2 temp: arena 2 @ 0, 1000 bytes, k0..k1',
        '  %4 temp: arena 2 @ 0, 1000 bytes, k2..k3',
        '  %3 temp: arena 3 @ 0, 1000 bytes, k1..k2',
        'peak: 4.9 KiB allocated (5024 bytes); at most 4.9 KiB live at once',
        '',
      ].join('\n'),
    );
  });
});
