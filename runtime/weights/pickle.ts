// A safe pickle reader (and a minimal writer) for the subset of Python objects a torch state dict is made of.
//
// Nothing in a pickle is ever executed. GLOBAL / STACK_GLOBAL / INST names are looked up in a caller-supplied
// resolver at the moment they are read; the resolver returns a JS stand-in (implemented here, in JS) or refuses,
// and a refusal aborts the whole load before any later opcode runs. REDUCE / NEWOBJ / BUILD only ever apply
// those stand-ins. Memory use is bounded by the input: every length is checked against the bytes left.

/** A Python dict / OrderedDict. Keys are JS primitives (str, int) or frozen arrays (tuples). */
export class PyDict extends Map<unknown, unknown> {
  /** Instance attributes set by BUILD (e.g. a state dict's `_metadata`). */
  declare attrs: Map<unknown, unknown> | undefined;
}

/** A Python set / frozenset. */
export class PySet extends Set<unknown> {}

/** Tuples are frozen JS arrays; lists are ordinary arrays. */
export function isTuple(x: unknown): x is readonly unknown[] {
  return Array.isArray(x) && Object.isFrozen(x);
}

/** A Python global the resolver allowed, implemented in JS. */
export interface PyCallable {
  readonly kind: 'callable';
  readonly module: string;
  readonly name: string;
  /** REDUCE / NEWOBJ: build the object from its arguments (never runs Python). */
  call(args: readonly unknown[]): unknown;
}

/** A global the caller asked to keep as inert data (opt-in; see allowOpaque in the torch loader). */
export class PyOpaque {
  args: readonly unknown[] | undefined;
  state: unknown;
  constructor(readonly module: string, readonly name: string) {}
  toString(): string {
    return `<${this.module}.${this.name}>`;
  }
}

export class PickleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PickleError';
  }
}

/** Thrown when a pickle names a global that is not allowed. The file is not loaded. */
export class UnsafePickleError extends PickleError {
  constructor(readonly file: string, readonly module: string, readonly global: string) {
    super(`refusing to load ${file}: it references ${module}.${global}, which a state dict never needs; visft never executes pickled code`);
    this.name = 'UnsafePickleError';
  }
}

export interface UnpickleOptions {
  /** Used in messages. */
  file: string;
  /** Resolves an allowed global to a value or throws (normally UnsafePickleError). */
  findGlobal(module: string, name: string): unknown;
  /** Resolves a persistent id (BINPERSID / PERSID); absent: persistent ids are an error. */
  persistentLoad?(pid: unknown): unknown;
}

const MAX_NUMBER = Number.MAX_SAFE_INTEGER;

function tuple(items: unknown[]): readonly unknown[] {
  return Object.freeze(items);
}

function bigToValue(v: bigint): number | bigint {
  return v >= -BigInt(MAX_NUMBER) && v <= BigInt(MAX_NUMBER) ? Number(v) : v;
}

/** Little-endian two's complement, as LONG1/LONG4 store ints. */
function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  if (bytes[bytes.length - 1] & 0x80) v -= 1n << BigInt(bytes.length * 8);
  return bigToValue(v);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

/** Python's raw-unicode-escape: latin-1 text where \uXXXX and \UXXXXXXXX stand for other code points. */
function rawUnicodeEscape(s: string): string {
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (m, u4: string | undefined, u8: string | undefined) => {
    const cp = parseInt(u4 ?? u8 ?? '', 16);
    return cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
  });
}

function isPrimitiveKey(k: unknown): boolean {
  return k === null || ['string', 'number', 'bigint', 'boolean'].includes(typeof k) || isTuple(k);
}

/**
 * Reads one pickle starting at `start`. Returns the value and the offset just after its STOP opcode
 * (the legacy torch format stores several pickles back to back).
 */
export function unpickle(data: Uint8Array, opts: UnpickleOptions, start = 0): { value: unknown; end: number } {
  const file = opts.file;
  let pos = start;
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);

  const fail = (msg: string): never => {
    throw new PickleError(`${file}: corrupt pickle at byte ${pos}: ${msg}`);
  };
  const need = (n: number): void => {
    if (n < 0 || pos + n > data.length) fail(`needs ${n} more bytes but the pickle ends at byte ${data.length}`);
  };
  const u8 = (): number => {
    need(1);
    return data[pos++];
  };
  const u16 = (): number => {
    need(2);
    const v = dv.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = (): number => {
    need(4);
    const v = dv.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const i32 = (): number => {
    need(4);
    const v = dv.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(MAX_NUMBER)) fail(`length ${v} is too large`);
    return Number(v);
  };
  const bytes = (n: number): Uint8Array => {
    need(n);
    const b = data.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const line = (): string => {
    const nl = data.indexOf(0x0a, pos);
    if (nl < 0) fail('unterminated text line');
    const s = latin1.decode(data.subarray(pos, nl));
    pos = nl + 1;
    return s;
  };
  const str = (n: number): string => {
    const b = bytes(n);
    try {
      return utf8.decode(b);
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  // `frame.cur` is the stack above the innermost MARK; MARK saves it in `marks` and starts an empty one.
  const frame = { cur: [] as unknown[] };
  const push = (v: unknown): void => {
    frame.cur.push(v);
  };
  const popF = (): unknown => {
    if (frame.cur.length === 0) fail('stack underflow');
    return frame.cur.pop();
  };
  const topF = (): unknown => {
    if (frame.cur.length === 0) fail('stack underflow');
    return frame.cur[frame.cur.length - 1];
  };
  const mark = (): void => {
    marks.push(frame.cur);
    frame.cur = [];
  };
  const popToMark = (): unknown[] => {
    const items = frame.cur;
    const prev = marks.pop();
    if (prev === undefined) return fail('no MARK on the stack');
    frame.cur = prev;
    return items;
  };

  const resolve = (module: string, name: string): unknown => opts.findGlobal(module, name);
  const call = (fn: unknown, args: unknown, how: string): unknown => {
    if (!Array.isArray(args)) fail(`${how} arguments are not a tuple`);
    if (typeof fn === 'object' && fn !== null && (fn as PyCallable).kind === 'callable') return (fn as PyCallable).call(args as unknown[]);
    if (fn instanceof PyOpaque) {
      const o = new PyOpaque(fn.module, fn.name);
      o.args = args as unknown[];
      return o;
    }
    return fail(`${how} of something that is not an allowed global (${describe(fn)})`);
  };
  const setItem = (d: unknown, k: unknown, v: unknown): void => {
    if (d instanceof PyDict) {
      if (!isPrimitiveKey(k)) fail(`unsupported dict key ${describe(k)}`);
      d.set(k, v);
    } else if (d instanceof PyOpaque) {
      // e.g. a dict subclass kept opaque: ignore its items
    } else fail(`SETITEM on ${describe(d)}`);
  };
  const appendTo = (l: unknown, items: unknown[]): void => {
    if (Array.isArray(l) && !Object.isFrozen(l)) l.push(...items);
    else if (l instanceof PyOpaque) {
      // list subclass kept opaque
    } else fail(`APPEND on ${describe(l)}`);
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) fail(`memo entry ${i} is not set`);
    return memo.get(i);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) fail(`unsupported pickle protocol ${v}`);
        break;
      }
      case 0x95: // FRAME: 8-byte frame length, then the frame's opcodes inline
        u64();
        break;
      case 0x2e: { // STOP
        if (marks.length !== 0) fail('MARK left on the stack at STOP');
        const v = popF();
        return { value: v, end: pos };
      }
      case 0x28: mark(); break; // MARK
      case 0x30: popF(); break; // POP
      case 0x31: popToMark(); break; // POP_MARK
      case 0x32: push(topF()); break; // DUP
      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: push(decodeLong(bytes(u8()))); break; // LONG1
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0) fail('negative LONG4 length');
        push(decodeLong(bytes(n)));
        break;
      }
      case 0x49: { // INT (text): "01"/"00" are True/False in protocol 0
        const s = line().trim();
        if (s === '01') push(true);
        else if (s === '00') push(false);
        else if (/^[-+]?\d+$/.test(s)) push(bigToValue(BigInt(s)));
        else fail(`bad INT ${JSON.stringify(s)}`);
        break;
      }
      case 0x4c: { // LONG (text)
        const s = line().trim().replace(/L$/, '');
        if (!/^[-+]?\d+$/.test(s)) fail(`bad LONG ${JSON.stringify(s)}`);
        push(bigToValue(BigInt(s)));
        break;
      }
      case 0x46: { // FLOAT (text)
        const s = line().trim();
        const special: Record<string, number> = { inf: Infinity, '-inf': -Infinity, nan: NaN, '-nan': NaN };
        const v = Object.hasOwn(special, s.toLowerCase()) ? special[s.toLowerCase()] : /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s) ? Number(s) : undefined;
        if (v === undefined) fail(`bad FLOAT ${JSON.stringify(s)}`);
        push(v);
        break;
      }
      case 0x47: { // BINFLOAT, big-endian
        need(8);
        push(dv.getFloat64(pos, false));
        pos += 8;
        break;
      }
      case 0x8c: push(str(u8())); break; // SHORT_BINUNICODE
      case 0x58: push(str(u32())); break; // BINUNICODE
      case 0x8d: push(str(u64())); break; // BINUNICODE8
      case 0x56: push(rawUnicodeEscape(line())); break; // UNICODE (protocol 0, raw-unicode-escape)
      case 0x55: push(latin1.decode(bytes(u8()))); break; // SHORT_BINSTRING (py2 str)
      case 0x54: { // BINSTRING
        const n = i32();
        if (n < 0) fail('negative BINSTRING length');
        push(latin1.decode(bytes(n)));
        break;
      }
      case 0x53: { // STRING (quoted repr)
        const s = line().trim();
        const q = s[0];
        if ((q !== "'" && q !== '"') || s[s.length - 1] !== q || s.length < 2) fail('bad STRING');
        push(s.slice(1, -1));
        break;
      }
      case 0x43: push(bytes(u8()).slice()); break; // SHORT_BINBYTES
      case 0x42: push(bytes(u32()).slice()); break; // BINBYTES
      case 0x8e: push(bytes(u64()).slice()); break; // BINBYTES8
      case 0x96: push(bytes(u64()).slice()); break; // BYTEARRAY8
      case 0x29: push(tuple([])); break; // EMPTY_TUPLE
      case 0x74: push(tuple(popToMark())); break; // TUPLE
      case 0x85: push(tuple([popF()])); break; // TUPLE1
      case 0x86: { // TUPLE2
        const b = popF();
        const a = popF();
        push(tuple([a, b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = popF();
        const b = popF();
        const a = popF();
        push(tuple([a, b, c]));
        break;
      }
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x6c: push(popToMark()); break; // LIST
      case 0x61: { // APPEND
        const v = popF();
        appendTo(topF(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popToMark();
        appendTo(topF(), items);
        break;
      }
      case 0x7d: push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { // DICT
        const items = popToMark();
        if (items.length % 2) fail('DICT with an odd number of items');
        const d = new PyDict();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        push(d);
        break;
      }
      case 0x73: { // SETITEM
        const v = popF();
        const k = popF();
        setItem(topF(), k, v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popToMark();
        if (items.length % 2) fail('SETITEMS with an odd number of items');
        const d = topF();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        break;
      }
      case 0x8f: push(new PySet()); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popToMark();
        const s = topF();
        if (!(s instanceof PySet)) fail('ADDITEMS on a non-set');
        for (const it of items) (s as PySet).add(it);
        break;
      }
      case 0x91: push(new PySet(popToMark())); break; // FROZENSET
      case 0x71: memo.set(u8(), topF()); break; // BINPUT
      case 0x72: memo.set(u32(), topF()); break; // LONG_BINPUT
      case 0x70: { // PUT
        const s = line();
        if (!/^\d+$/.test(s)) fail('bad PUT index');
        memo.set(Number(s), topF());
        break;
      }
      case 0x94: memo.set(memo.size, topF()); break; // MEMOIZE
      case 0x68: push(memoGet(u8())); break; // BINGET
      case 0x6a: push(memoGet(u32())); break; // LONG_BINGET
      case 0x67: { // GET
        const s = line();
        if (!/^\d+$/.test(s)) fail('bad GET index');
        push(memoGet(Number(s)));
        break;
      }
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line();
        const name = line();
        push(resolve(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = popF();
        const module = popF();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        push(resolve(module as string, name as string));
        break;
      }
      case 0x69: { // INST "module\nname\n", args from MARK
        const module = line();
        const name = line();
        const cls = resolve(module, name);
        push(call(cls, popToMark(), 'INST'));
        break;
      }
      case 0x6f: { // OBJ: MARK cls args...
        const items = popToMark();
        if (items.length === 0) fail('OBJ without a class');
        push(call(items[0], items.slice(1), 'OBJ'));
        break;
      }
      case 0x52: { // REDUCE
        const args = popF();
        const fn = popF();
        push(call(fn, args, 'REDUCE'));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = popF();
        const cls = popF();
        push(call(cls, args, 'NEWOBJ'));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = popF();
        const args = popF();
        const cls = popF();
        if (kwargs instanceof PyDict && kwargs.size > 0) fail('NEWOBJ_EX with keyword arguments is not supported');
        push(call(cls, args, 'NEWOBJ_EX'));
        break;
      }
      case 0x62: { // BUILD
        const state = popF();
        const obj = topF();
        build(obj, state);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = popF();
        if (!opts.persistentLoad) fail('persistent id in a pickle that should have none');
        push(opts.persistentLoad!(pid));
        break;
      }
      case 0x50: { // PERSID (text)
        const pid = line();
        if (!opts.persistentLoad) fail('persistent id in a pickle that should have none');
        push(opts.persistentLoad!(pid));
        break;
      }
      case 0x82:
      case 0x83:
      case 0x84:
        fail('EXT opcodes (the copyreg extension registry) are not supported');
        break;
      case 0x97:
        fail('out-of-band buffers (NEXT_BUFFER) are not supported');
        break;
      case 0x98: break; // READONLY_BUFFER: no-op on our bytes
      default:
        pos--;
        fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }

  function build(obj: unknown, state: unknown): void {
    if (obj instanceof PyDict) {
      // OrderedDict with instance attributes (state dicts carry `_metadata`): state is a dict or (dict, slots).
      const dictState = isTuple(state) ? state[0] : state;
      if (dictState === null) return;
      if (!(dictState instanceof PyDict)) fail(`BUILD state for a dict is ${describe(dictState)}`);
      obj.attrs ??= new Map();
      for (const [k, v] of dictState as PyDict) obj.attrs.set(k, v);
      return;
    }
    if (obj instanceof PyOpaque) {
      obj.state = state;
      return;
    }
    if (typeof obj === 'object' && obj !== null && 'dtype' in obj && 'shape' in obj && 'data' in obj) {
      // A tensor with Python attributes (a Parameter subclass): keep the tensor, drop the attributes.
      return;
    }
    fail(`BUILD on ${describe(obj)}`);
  }
}

export function describe(x: unknown): string {
  if (x === null) return 'None';
  if (Array.isArray(x)) return isTuple(x) ? 'a tuple' : 'a list';
  if (x instanceof PyDict) return 'a dict';
  if (x instanceof PySet) return 'a set';
  if (x instanceof Uint8Array) return 'bytes';
  if (x instanceof PyOpaque) return `an opaque ${x.module}.${x.name}`;
  if (typeof x === 'object' && (x as PyCallable).kind === 'callable') return `${(x as PyCallable).module}.${(x as PyCallable).name}`;
  if (typeof x === 'object' && 'dtype' in x && 'shape' in x) return 'a tensor';
  return `a ${typeof x === 'number' ? (Number.isInteger(x) ? 'int' : 'float') : typeof x}`;
}

// ---- writer --------------------------------------------------------------------------------------------------

/** Builds protocol-2 pickles opcode by opcode (what torch.save writes by default). */
export class PickleWriter {
  private parts: Uint8Array[] = [];
  private size = 0;
  private readonly enc = new TextEncoder();

  private raw(b: Uint8Array): this {
    this.parts.push(b);
    this.size += b.byteLength;
    return this;
  }
  private op(...codes: number[]): this {
    return this.raw(Uint8Array.from(codes));
  }
  proto(v = 2): this {
    return this.op(0x80, v);
  }
  stop(): this {
    return this.op(0x2e);
  }
  mark(): this {
    return this.op(0x28);
  }
  none(): this {
    return this.op(0x4e);
  }
  bool(v: boolean): this {
    return this.op(v ? 0x88 : 0x89);
  }
  int(v: number | bigint): this {
    if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new Error(`pickle: ${v} is not an integer`);
    const b = BigInt(v);
    if (b >= 0n && b < 256n) return this.op(0x4b, Number(b));
    if (b >= 0n && b < 65536n) return this.op(0x4d, Number(b) & 0xff, Number(b) >> 8);
    if (b >= -(2n ** 31n) && b < 2n ** 31n) {
      const out = new Uint8Array(5);
      out[0] = 0x4a;
      new DataView(out.buffer).setInt32(1, Number(b), true);
      return this.raw(out);
    }
    // LONG1: minimal little-endian two's complement
    const bytes: number[] = [];
    let x = b;
    for (;;) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
      const signBit = (bytes[bytes.length - 1] & 0x80) !== 0;
      if ((x === 0n && !signBit) || (x === -1n && signBit)) break;
    }
    return this.op(0x8a, bytes.length, ...bytes);
  }
  float(v: number): this {
    const out = new Uint8Array(9);
    out[0] = 0x47;
    new DataView(out.buffer).setFloat64(1, v, false);
    return this.raw(out);
  }
  str(s: string): this {
    const b = this.enc.encode(s);
    const head = new Uint8Array(5);
    head[0] = 0x58;
    new DataView(head.buffer).setUint32(1, b.byteLength, true);
    return this.raw(head).raw(b);
  }
  global(module: string, name: string): this {
    if (/[\n]/.test(module + name)) throw new Error('pickle: bad global name');
    return this.op(0x63).raw(this.enc.encode(`${module}\n${name}\n`));
  }
  emptyTuple(): this {
    return this.op(0x29);
  }
  tuple(): this {
    return this.op(0x74);
  }
  emptyDict(): this {
    return this.op(0x7d);
  }
  setitems(): this {
    return this.op(0x75);
  }
  reduce(): this {
    return this.op(0x52);
  }
  binpersid(): this {
    return this.op(0x51);
  }
  /** A tuple of ints (sizes, strides). */
  intTuple(values: readonly number[]): this {
    if (values.length === 0) return this.emptyTuple();
    this.mark();
    for (const v of values) this.int(v);
    return this.tuple();
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.size);
    let p = 0;
    for (const part of this.parts) {
      out.set(part, p);
      p += part.byteLength;
    }
    return out;
  }
}
