// Lexical scopes as a stack of maps: `define` binds in the innermost frame, `set` rebinds the nearest
// binding (or defines one). Used by the module checker (what a name is) and the lowering (its value).
export class Scopes<T> {
  private readonly frames: Map<string, T>[] = [new Map()];

  push(): void {
    this.frames.push(new Map());
  }

  pop(): void {
    this.frames.pop();
  }

  get(name: string): T | undefined {
    for (let i = this.frames.length - 1; i >= 0; i--) {
      const v = this.frames[i].get(name);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  inInnermost(name: string): boolean {
    return this.frames[this.frames.length - 1].has(name);
  }

  define(name: string, v: T): void {
    this.frames[this.frames.length - 1].set(name, v);
  }

  set(name: string, v: T): void {
    for (let i = this.frames.length - 1; i >= 0; i--) {
      if (this.frames[i].has(name)) {
        this.frames[i].set(name, v);
        return;
      }
    }
    this.define(name, v);
  }

  /** Every bound name, for suggestions. */
  all(): string[] {
    return this.frames.flatMap((f) => [...f.keys()]);
  }
}
