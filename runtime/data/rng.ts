// The project's seeded PRNG (demo data, parameter init, training data order): the same seed gives the same values
// on every machine and Node version (Math.random cannot be seeded). Each consumer draws from its own named stream
// so that changing one (say, the number of COCO images, or adding a parameter) leaves the others unchanged.

/** sfc32, seeded from (seed, stream) through a string hash; 32-bit state words, no floating-point state. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream: string) {
    let h = 0x811c9dc5 ^ (seed >>> 0);
    const mix = (x: number) => {
      h = Math.imul(h ^ x, 0x01000193) >>> 0;
      h ^= h >>> 15;
      return h;
    };
    mix(Math.floor(seed / 0x100000000));
    for (let i = 0; i < stream.length; i++) mix(stream.charCodeAt(i));
    this.a = mix(1);
    this.b = mix(2);
    this.c = mix(3);
    this.d = 1;
    for (let i = 0; i < 16; i++) this.nextU32(); // let the state settle away from the seed
  }

  nextU32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 0x100000000;
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }

  /** Uniform integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  chance(p: number): boolean {
    return this.next() < p;
  }
}
