// JSON with object keys sorted: the same content gives the same bytes (tuning profiles on disk, and tunings
// compared by their text).
export function canonicalJson(v: unknown, indent?: number): string {
  const sort = (x: unknown): unknown =>
    Array.isArray(x) ? x.map(sort) : x && typeof x === 'object' ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort((x as Record<string, unknown>)[k])])) : x;
  return JSON.stringify(sort(v), null, indent);
}
