// Random MSDeformAttn geometry for property tests (fast-check): batch, queries, heads, head dim, points and
// levels within the bounds a test gives, and a seed for its tensors.
import fc from 'fast-check';

export interface MsCase {
  readonly n: number;
  readonly lq: number;
  readonly m: number;
  readonly dh: number;
  readonly p: number;
  readonly levels: [number, number][];
  readonly seed: number;
}

type Range = readonly [number, number];

/** Each field within its [min, max]; a level's height and width within `side`, up to `levels` levels. */
export function msGeometry(b: { readonly lq: Range; readonly m: Range; readonly dh: Range; readonly p: Range; readonly side: number; readonly levels: number }): fc.Arbitrary<MsCase> {
  const int = ([min, max]: Range) => fc.integer({ min, max });
  return fc.record({
    n: int([1, 2]),
    lq: int(b.lq),
    m: int(b.m),
    dh: int(b.dh),
    p: int(b.p),
    levels: fc.array(fc.tuple(int([1, b.side]), int([1, b.side])), { minLength: 1, maxLength: b.levels }),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  });
}
