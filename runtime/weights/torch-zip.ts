// PyTorch checkpoints (torch.save): the zip format (torch >= 1.6: `<archive>/data.pkl`, `<archive>/data/<key>`,
// `<archive>/byteorder`, `<archive>/version`) and, for old files, the legacy format (pickles back to back
// followed by the raw storages). Reading never executes anything: see pickle.ts and the allowlist below.

import { FileSource, readFileHead, writeFileAtomic, type ByteSource } from './io.js';
import { PickleError, PickleWriter, PyDict, PyOpaque, UnsafePickleError, describe, isTuple, unpickle, type PyCallable } from './pickle.js';
import { readSafetensors, tensorEntries, WeightsFormatError, type TensorDict } from './safetensors.js';
import {
  contiguousStrides,
  isDType,
  itemSize,
  materializeView,
  numel,
  shapeString,
  tensorBytes,
  tensorFromBytes,
  type DType,
  type HostTensor,
} from './tensor.js';
import { ZipReader, writeZip } from './zip.js';

export { UnsafePickleError, PickleError, PyDict, PyOpaque } from './pickle.js';

// ---- the allowlist -------------------------------------------------------------------------------------------

const STORAGE_DTYPE: Record<string, DType> = {
  FloatStorage: 'f32',
  HalfStorage: 'f16',
  BFloat16Storage: 'bf16',
  DoubleStorage: 'f64',
  LongStorage: 'i64',
  IntStorage: 'i32',
  ByteStorage: 'u8',
  BoolStorage: 'bool',
};
/** Storage types torch has that visft cannot hold, with the dtype to name in the error. */
const OTHER_STORAGES: Record<string, string> = {
  CharStorage: 'int8',
  ShortStorage: 'int16',
  ComplexFloatStorage: 'complex64',
  ComplexDoubleStorage: 'complex128',
  QInt8Storage: 'qint8',
  QUInt8Storage: 'quint8',
  QInt32Storage: 'qint32',
  QUInt4x2Storage: 'quint4x2',
  QUInt2x4Storage: 'quint2x4',
};
const TORCH_DTYPE: Record<string, DType> = {
  float32: 'f32',
  float: 'f32',
  float16: 'f16',
  half: 'f16',
  bfloat16: 'bf16',
  float64: 'f64',
  double: 'f64',
  int64: 'i64',
  long: 'i64',
  int32: 'i32',
  int: 'i32',
  uint8: 'u8',
  bool: 'bool',
};
const DTYPE_STORAGE: Record<DType, string> = {
  f32: 'FloatStorage',
  f16: 'HalfStorage',
  bf16: 'BFloat16Storage',
  f64: 'DoubleStorage',
  i64: 'LongStorage',
  i32: 'IntStorage',
  u8: 'ByteStorage',
  bool: 'BoolStorage',
};

/** The class named in a persistent id: a typed storage (dtype) or torch.UntypedStorage (bytes). */
interface StorageType {
  readonly kind: 'storage-type';
  readonly name: string;
  readonly dtype: DType;
  readonly untyped: boolean;
}

interface TorchDTypeValue {
  readonly kind: 'torch-dtype';
  readonly name: string;
  readonly dtype: DType;
}

/** A storage named by a persistent id; its bytes are read on first use and shared by every view. */
class StorageRef {
  handedOut = false;
  private cached: Uint8Array | undefined;
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly numel: number,
    private readonly load: () => Uint8Array,
  ) {}
  bytes(): Uint8Array {
    this.cached ??= this.load();
    return this.cached;
  }
}

export function isHostTensor(x: unknown): x is HostTensor {
  if (typeof x !== 'object' || x === null) return false;
  const t = x as Partial<HostTensor>;
  return isDType(t.dtype) && Array.isArray(t.shape) && ArrayBuffer.isView(t.data);
}

function callable(module: string, name: string, call: (args: readonly unknown[]) => unknown): PyCallable {
  return { kind: 'callable', module, name, call };
}

export interface TorchLoadOptions {
  /**
   * Globals to keep as inert placeholders (PyOpaque) instead of refusing the file, as `module.name` or
   * `module.*` (e.g. 'omegaconf.*' for the config an mmf checkpoint carries). Nothing is executed either way.
   * Globals of modules such as os, subprocess, builtins or torch are refused regardless.
   */
  allowOpaque?: readonly string[];
  /** Check each storage's CRC-32 (default true). */
  verifyCrc?: boolean;
}

/** Modules whose globals are refused even when allowOpaque names them: they only appear in malicious pickles. */
const NEVER_OPAQUE = /^(os|posix|nt|subprocess|sys|builtins|__builtin__|shutil|socket|importlib|pickle|_pickle|marshal|runpy|code|codeop|ctypes|pty|webbrowser|operator|functools|types|io|_io|signal|multiprocessing|threading|asyncio|torch)(\.|$)/;

function matchesOpaque(module: string, name: string, patterns: readonly string[]): boolean {
  if (NEVER_OPAQUE.test(module)) return false;
  return patterns.some((p) => p === `${module}.${name}` || (p.endsWith('.*') && (module === p.slice(0, -2) || module.startsWith(p.slice(0, -1)))));
}

function intArg(x: unknown, what: string, file: string): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new PickleError(`${file}: ${what} is ${describe(x)}, not a non-negative integer`);
  return x;
}

function intTupleArg(x: unknown, what: string, file: string): number[] {
  if (!Array.isArray(x)) throw new PickleError(`${file}: tensor ${what} is ${describe(x)}, not a tuple`);
  return x.map((v, i) => intArg(v, `${what}[${i}]`, file));
}

/**
 * Bytes that views may expand to beyond their storages in one load: a stride-0 (expanded) view of a tiny storage
 * could otherwise ask for any amount of memory. torch keeps such views lazy; visft materialises them.
 */
interface ExpandBudget {
  left: number;
}

function newBudget(fileSize: number): ExpandBudget {
  return { left: 4 * fileSize + 256 * 2 ** 20 };
}

function rebuildTensor(budget: ExpandBudget, file: string, storage: unknown, offsetArg: unknown, sizeArg: unknown, strideArg: unknown, dtypeOverride?: DType): HostTensor {
  if (!(storage instanceof StorageRef)) throw new PickleError(`${file}: tensor storage is ${describe(storage)}, not a storage`);
  const offset = intArg(offsetArg, 'tensor storage offset', file);
  const shape = intTupleArg(sizeArg, 'size', file);
  const strides = intTupleArg(strideArg, 'stride', file);
  let dtype = storage.dtype;
  let storageNumel = storage.numel;
  if (dtypeOverride !== undefined && dtypeOverride !== dtype) {
    if (dtype !== 'u8') throw new PickleError(`${file}: a ${dtypeOverride} tensor over a ${dtype} storage`);
    const bytes = storage.numel;
    if (bytes % itemSize(dtypeOverride) !== 0) throw new PickleError(`${file}: storage of ${bytes} bytes does not hold whole ${dtypeOverride} elements`);
    dtype = dtypeOverride;
    storageNumel = bytes / itemSize(dtypeOverride);
  }
  let n: number;
  try {
    n = numel(shape);
  } catch (e) {
    throw new PickleError(`${file}: ${(e as Error).message}`);
  }
  const contiguous = contiguousStrides(shape);
  const isContiguous = shape.every((d, k) => d === 1 || strides[k] === contiguous[k]) && strides.length === shape.length;
  const extra = Math.max(0, (n - storageNumel) * itemSize(dtype));
  if (extra > budget.left) {
    throw new WeightsFormatError(file, `a view of storage ${storage.key} (shape ${shapeString(shape)}, stride ${shapeString(strides)}) would expand to ${n * itemSize(dtype)} bytes, far more than the file holds; refusing (corrupt or malicious file?)`);
  }
  budget.left -= extra;
  try {
    if (!storage.handedOut && offset === 0 && n === storageNumel && isContiguous && n > 0) {
      // The tensor is its whole storage: use the bytes in place (the first time; later users get copies).
      storage.handedOut = true;
      return tensorFromBytes(dtype, shape, storage.bytes(), { copy: false });
    }
    return materializeView(dtype, storage.bytes(), storageNumel, offset, shape, strides);
  } catch (e) {
    if (e instanceof WeightsFormatError || e instanceof PickleError) throw e;
    throw new PickleError(`${file}: storage ${storage.key}: ${(e as Error).message}`);
  }
}

/** Stands for a tensor while scanning a pickle whose storages cannot be read yet. */
const DEFERRED_TENSOR: HostTensor = Object.freeze({ dtype: 'u8', shape: [0], data: new Uint8Array(0) }) as HostTensor;

function makeFindGlobal(file: string, opts: TorchLoadOptions, budget: ExpandBudget, scan = false): (module: string, name: string) => unknown {
  const opaque = opts.allowOpaque ?? [];
  const rebuild = scan
    ? (): HostTensor => DEFERRED_TENSOR
    : (f: string, st: unknown, o: unknown, sz: unknown, sd: unknown, dt?: DType): HostTensor => rebuildTensor(budget, f, st, o, sz, sd, dt);
  return (module, name) => {
    if (module === 'collections' && name === 'OrderedDict') {
      return callable(module, name, (args) => {
        const d = new PyDict();
        const items = args[0];
        if (args.length > 1) throw new PickleError(`${file}: OrderedDict called with ${args.length} arguments`);
        if (items !== undefined && items !== null) {
          if (!Array.isArray(items)) throw new PickleError(`${file}: OrderedDict called with ${describe(items)}`);
          for (const kv of items) {
            if (!Array.isArray(kv) || kv.length !== 2) throw new PickleError(`${file}: OrderedDict item is not a pair`);
            d.set(kv[0], kv[1]);
          }
        }
        return d;
      });
    }
    if (module === 'torch._utils') {
      if (name === '_rebuild_tensor_v2') {
        return callable(module, name, (a) => {
          if (a.length < 6 || a.length > 7) throw new PickleError(`${file}: _rebuild_tensor_v2 called with ${a.length} arguments`);
          return rebuild(file, a[0], a[1], a[2], a[3]);
        });
      }
      if (name === '_rebuild_tensor_v3') {
        return callable(module, name, (a) => {
          if (a.length < 7 || a.length > 8) throw new PickleError(`${file}: _rebuild_tensor_v3 called with ${a.length} arguments`);
          const dt = a[6] as TorchDTypeValue;
          if (typeof dt !== 'object' || dt === null || dt.kind !== 'torch-dtype') throw new PickleError(`${file}: _rebuild_tensor_v3 dtype is ${describe(dt)}`);
          return rebuild(file, a[0], a[1], a[2], a[3], dt.dtype);
        });
      }
      if (name === '_rebuild_parameter' || name === '_rebuild_parameter_with_state') {
        return callable(module, name, (a) => {
          if (!isHostTensor(a[0])) throw new PickleError(`${file}: ${name} of ${describe(a[0])}`);
          return a[0];
        });
      }
    }
    if (module === 'torch' && name === 'Size') {
      return callable(module, name, (a) => {
        const dims = a[0] ?? [];
        return Object.freeze(intTupleArg(dims, 'torch.Size', file));
      });
    }
    if (module === 'torch' || module === 'torch.cuda') {
      const dt = STORAGE_DTYPE[name];
      if (dt) return { kind: 'storage-type', name: `${module}.${name}`, dtype: dt, untyped: false } satisfies StorageType;
      if (OTHER_STORAGES[name]) {
        throw new WeightsFormatError(file, `it holds ${OTHER_STORAGES[name]} tensors (${module}.${name}), which visft does not support (f32, f16, bf16, f64, i64, i32, u8, bool)`);
      }
    }
    if (module === 'torch' && TORCH_DTYPE[name]) return { kind: 'torch-dtype', name: `torch.${name}`, dtype: TORCH_DTYPE[name] } satisfies TorchDTypeValue;
    if ((module === 'torch' || module === 'torch.storage') && name === 'UntypedStorage') {
      return { kind: 'storage-type', name: `${module}.${name}`, dtype: 'u8', untyped: true } satisfies StorageType;
    }
    if (module === '_codecs' && name === 'encode') {
      // How protocol 2 spells a bytes object: _codecs.encode(text, 'latin1'). Pure data.
      return callable(module, name, (a) => {
        const [text, encoding] = a;
        if (typeof text !== 'string' || (encoding !== 'latin1' && encoding !== 'latin-1')) throw new UnsafePickleError(file, module, name);
        const out = new Uint8Array(text.length);
        for (let i = 0; i < text.length; i++) {
          const c = text.charCodeAt(i);
          if (c > 255) throw new PickleError(`${file}: _codecs.encode of a non-latin1 string`);
          out[i] = c;
        }
        return out;
      });
    }
    if (matchesOpaque(module, name, opaque)) return new PyOpaque(module, name);
    throw new UnsafePickleError(file, module, name);
  };
}

// ---- zip format ----------------------------------------------------------------------------------------------

const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04];
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

function startsWith(head: Uint8Array, magic: readonly number[]): boolean {
  return head.length >= magic.length && magic.every((b, i) => head[i] === b);
}

function storageTypeOf(file: string, x: unknown): StorageType {
  const st = x as StorageType;
  if (typeof st !== 'object' || st === null || st.kind !== 'storage-type') throw new PickleError(`${file}: persistent id names ${describe(x)}, not a storage type`);
  return st;
}

function storageKey(file: string, x: unknown): string {
  if (typeof x === 'string') return x;
  if (typeof x === 'number' && Number.isSafeInteger(x)) return String(x);
  throw new PickleError(`${file}: storage key is ${describe(x)}`);
}

function loadZip(src: ByteSource, opts: TorchLoadOptions): unknown {
  const file = src.name;
  const zip = new ZipReader(src);
  const pkls = zip.entries.filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
  if (pkls.length === 0) {
    throw new WeightsFormatError(file, 'a zip archive but not a torch.save checkpoint: no <archive>/data.pkl entry');
  }
  if (pkls.length > 1) throw new WeightsFormatError(file, `several data.pkl entries (${pkls.map((e) => e.name).join(', ')})`);
  const prefix = pkls[0].name.slice(0, -'data.pkl'.length);
  const byteorder = zip.get(`${prefix}byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(zip.read(byteorder)).trim();
    if (order !== 'little') throw new WeightsFormatError(file, `byteorder is "${order}"; visft reads little-endian checkpoints only`);
  }
  const storages = new Map<string, StorageRef>();
  const persistentLoad = (pid: unknown): unknown => {
    if (!isTuple(pid) || pid.length !== 5 || pid[0] !== 'storage') {
      throw new PickleError(`${file}: unexpected persistent id (torch uses ('storage', type, key, location, numel))`);
    }
    const st = storageTypeOf(file, pid[1]);
    const key = storageKey(file, pid[2]);
    const count = intArg(pid[4], `storage ${key} element count`, file);
    const existing = storages.get(key);
    if (existing) {
      if (existing.dtype !== st.dtype || existing.numel !== count) throw new PickleError(`${file}: storage ${key} is named with two different types or sizes`);
      return existing;
    }
    const entryName = `${prefix}data/${key}`;
    const ref = new StorageRef(key, st.dtype, count, () => {
      const entry = zip.get(entryName);
      if (!entry) throw new WeightsFormatError(file, `storage ${key} is missing (no ${entryName} entry): truncated or corrupt`);
      const want = count * itemSize(st.dtype);
      if (entry.size < want) throw new WeightsFormatError(file, `storage ${key} holds ${entry.size} bytes but ${count} ${st.dtype} elements need ${want}`);
      const bytes = zip.read(entry, { verifyCrc: opts.verifyCrc });
      return bytes.byteLength === want ? bytes : bytes.subarray(0, want);
    });
    storages.set(key, ref);
    return ref;
  };
  const pkl = zip.read(pkls[0]);
  return unpickle(pkl, { file, findGlobal: makeFindGlobal(file, opts, newBudget(src.size)), persistentLoad }).value;
}

// ---- legacy format -------------------------------------------------------------------------------------------

class Cursor {
  constructor(readonly src: ByteSource, public pos: number) {}
  /** Unpickles at the cursor, reading a growing window until the pickle fits. */
  pickle(opts: Parameters<typeof unpickle>[1]): unknown {
    let window = Math.min(this.src.size - this.pos, 1 << 20);
    for (;;) {
      const bytes = this.src.read(this.pos, window);
      try {
        const { value, end } = unpickle(bytes, opts);
        this.pos += end;
        return value;
      } catch (e) {
        const short = e instanceof PickleError && /needs \d+ more bytes|unterminated text line/.test(e.message);
        if (!short || this.pos + window >= this.src.size) throw e;
        window = Math.min(this.src.size - this.pos, window * 4);
      }
    }
  }
}

function loadLegacy(src: ByteSource, opts: TorchLoadOptions): unknown {
  const file = src.name;
  const cur = new Cursor(src, 0);
  const plain = { file, findGlobal: (m: string, n: string): never => { throw new UnsafePickleError(file, m, n); } };
  const magic = cur.pickle(plain);
  if (typeof magic !== 'bigint' || magic !== 0x1950a86a20f9469cfc6cn) throw new WeightsFormatError(file, 'bad legacy torch magic number');
  const protocol = cur.pickle(plain);
  if (protocol !== 1001) throw new WeightsFormatError(file, `legacy torch protocol ${String(protocol)} is not supported`);
  const sysInfo = cur.pickle(plain);
  if (sysInfo instanceof PyDict && sysInfo.get('little_endian') === false) {
    throw new WeightsFormatError(file, 'written on a big-endian machine; visft reads little-endian checkpoints only');
  }
  interface Root { type: StorageType; numel: number; ref?: StorageRef; dataOffset?: number }
  const roots = new Map<string, Root>();
  interface Pending { root: string; offset: number; numel: number; ref: StorageRef }
  const views = new Map<string, Pending>();
  const persistentLoad = (pid: unknown): unknown => {
    if (!isTuple(pid) || pid.length !== 6 || pid[0] !== 'storage') {
      throw new PickleError(`${file}: unexpected persistent id (legacy torch uses ('storage', type, key, location, numel, view))`);
    }
    const st = storageTypeOf(file, pid[1]);
    const key = storageKey(file, pid[2]);
    const count = intArg(pid[4], `storage ${key} element count`, file);
    let root = roots.get(key);
    if (!root) {
      root = { type: st, numel: count };
      roots.set(key, root);
    }
    const r = root;
    r.ref ??= new StorageRef(key, st.dtype, count, () => {
      if (r.dataOffset === undefined) throw new WeightsFormatError(file, `storage ${key} is not in the file`);
      return src.read(r.dataOffset, count * itemSize(st.dtype));
    });
    const view = pid[5];
    if (view === null) return r.ref;
    if (!isTuple(view) || view.length !== 3) throw new PickleError(`${file}: bad storage view ${describe(view)}`);
    const viewKey = storageKey(file, view[0]);
    const off = intArg(view[1], 'view offset', file);
    const size = intArg(view[2], 'view size', file);
    if (off + size > count) throw new WeightsFormatError(file, `storage view ${viewKey} runs past storage ${key}`);
    let v = views.get(viewKey);
    if (!v) {
      const base = r.ref;
      const sz = itemSize(st.dtype);
      v = { root: key, offset: off, numel: size, ref: new StorageRef(viewKey, st.dtype, size, () => base.bytes().subarray(off * sz, (off + size) * sz)) };
      views.set(viewKey, v);
    }
    return v.ref;
  };
  // Pass 1 learns which storages exist (tensors are not built: their data offsets are not known yet).
  const resultStart = cur.pos;
  cur.pickle({ file, findGlobal: makeFindGlobal(file, opts, newBudget(src.size), true), persistentLoad });
  const keys = cur.pickle(plain);
  if (!Array.isArray(keys)) throw new WeightsFormatError(file, 'legacy storage key list is missing');
  // Raw storages follow, in key order: int64 element count, then the elements.
  for (const k of keys) {
    const key = storageKey(file, k);
    const root = roots.get(key);
    if (!root) throw new WeightsFormatError(file, `storage ${key} is listed but never used`);
    const head = src.read(cur.pos, 8);
    const count = new DataView(head.buffer).getBigInt64(0, true);
    if (count !== BigInt(root.numel)) throw new WeightsFormatError(file, `storage ${key} has ${count} elements, ${root.numel} expected`);
    root.dataOffset = cur.pos + 8;
    cur.pos = root.dataOffset + root.numel * itemSize(root.type.dtype);
    if (cur.pos > src.size) throw new WeightsFormatError(file, `storage ${key} runs past the end of the file: truncated?`);
  }
  // Pass 2 builds the tensors.
  for (const r of roots.values()) r.ref = undefined;
  views.clear();
  cur.pos = resultStart;
  return cur.pickle({ file, findGlobal: makeFindGlobal(file, opts, newBudget(src.size)), persistentLoad });
}

// ---- public API ----------------------------------------------------------------------------------------------

/**
 * Loads a torch.save checkpoint (zip or legacy format) and returns the unpickled object: dicts as PyDict (a Map),
 * lists as arrays, tuples as frozen arrays, tensors as HostTensor (views materialised, contiguous).
 * Refuses (UnsafePickleError) any pickle that names a global outside the state-dict allowlist.
 */
export function loadTorch(file: string, opts: TorchLoadOptions = {}): unknown {
  const src = new FileSource(file);
  try {
    const head = src.read(0, Math.min(src.size, 16));
    if (startsWith(head, ZIP_MAGIC)) return loadZip(src, opts);
    if (startsWith(head, LEGACY_MAGIC)) return loadLegacy(src, opts);
    throw new WeightsFormatError(file, 'not a PyTorch checkpoint (neither a torch.save zip archive nor the legacy format)');
  } finally {
    src.close();
  }
}

export interface LoadStateDictOptions extends TorchLoadOptions {
  /**
   * Where the tensor dict is: 'auto' (default) takes the top-level dict if it holds only tensors, else looks
   * inside `state_dict`, `model`, `module` (also nested, as EVA-CLIP and mmf checkpoints do); a string names the
   * top-level key to use.
   */
  key?: 'auto' | string;
}

const CONTAINER_KEYS = ['state_dict', 'model', 'module'];

function findAuto(obj: unknown, depth: number): PyDict | undefined {
  if (!(obj instanceof PyDict) || depth > 4) return undefined;
  if ([...obj.values()].every(isHostTensor)) return obj;
  for (const k of CONTAINER_KEYS) {
    if (obj.has(k)) {
      const found = findAuto(obj.get(k), depth + 1);
      if (found) return found;
    }
  }
  return undefined;
}

function keyList(d: PyDict): string {
  const keys = [...d.keys()].map((k) => JSON.stringify(k));
  return keys.length > 12 ? `${keys.slice(0, 12).join(', ')}, … (${keys.length} in all)` : keys.join(', ');
}

/** Selects the tensor dict of a loaded checkpoint (see LoadStateDictOptions.key). */
export function selectStateDict(obj: unknown, file: string, key: 'auto' | string = 'auto'): Map<string, HostTensor> {
  let dict: PyDict | undefined;
  if (key === 'auto') {
    dict = findAuto(obj, 0);
    if (!dict) {
      if (obj instanceof PyDict) {
        // A dict with some tensors and some other entries: name the offenders.
        const bad = [...obj.entries()].filter(([, v]) => !isHostTensor(v));
        if (obj.size > 0 && bad.length < obj.size && !CONTAINER_KEYS.some((k) => obj.has(k))) {
          const [k, v] = bad[0];
          throw new WeightsFormatError(file, `is not a state dict: entry ${JSON.stringify(k)} is ${describe(v)}, not a tensor (and ${bad.length - 1} more such entries)`);
        }
        throw new WeightsFormatError(file, `no tensor dict found (looked at the top level and in ${CONTAINER_KEYS.join('/')}); top-level keys: ${keyList(obj)}; name the key to use`);
      }
      throw new WeightsFormatError(file, `holds ${describe(obj)}, not a dict of tensors`);
    }
  } else {
    if (!(obj instanceof PyDict)) throw new WeightsFormatError(file, `holds ${describe(obj)}, not a dict with key ${JSON.stringify(key)}`);
    if (!obj.has(key)) throw new WeightsFormatError(file, `has no key ${JSON.stringify(key)}; top-level keys: ${keyList(obj)}`);
    const inner = obj.get(key);
    if (!(inner instanceof PyDict)) throw new WeightsFormatError(file, `entry ${JSON.stringify(key)} is ${describe(inner)}, not a dict of tensors`);
    dict = inner;
  }
  const out = new Map<string, HostTensor>();
  for (const [k, v] of dict) {
    if (typeof k !== 'string') throw new WeightsFormatError(file, `state dict key ${String(k)} is not a string`);
    if (!isHostTensor(v)) throw new WeightsFormatError(file, `is ${describe(v)}, not a tensor`, k);
    out.set(k, v);
  }
  return out;
}

/**
 * The tensors of a checkpoint: a torch.save file (.pth/.pt/.ckpt/.bin, zip or legacy) or a safetensors file,
 * recognised by content, not by name.
 */
export function loadStateDict(file: string, opts: LoadStateDictOptions = {}): Map<string, HostTensor> {
  const head = readFileHead(file);
  if (!startsWith(head, ZIP_MAGIC) && !startsWith(head, LEGACY_MAGIC)) {
    // safetensors starts with a u64 header length and then '{'
    if (head.length >= 9 && head[8] === 0x7b) {
      if (opts.key !== undefined && opts.key !== 'auto') throw new WeightsFormatError(file, `is a safetensors file: it has no key ${JSON.stringify(opts.key)}`);
      return readSafetensors(file).tensors;
    }
  }
  return selectStateDict(loadTorch(file, opts), file, opts.key ?? 'auto');
}

/**
 * Writes tensors as a torch.save zip archive (loadable with torch.load, also with weights_only=True): an
 * OrderedDict of name -> tensor, each tensor with its own contiguous storage. Atomic (temporary file + rename).
 */
export function saveTorchZip(file: string, tensors: TensorDict, opts: { archiveName?: string } = {}): void {
  const archive = opts.archiveName ?? 'archive';
  if (!/^[A-Za-z0-9_.-]+$/.test(archive)) throw new Error(`bad archive name ${JSON.stringify(archive)}`);
  const entries = tensorEntries(tensors);
  const w = new PickleWriter().proto(2);
  w.global('collections', 'OrderedDict').emptyTuple().reduce();
  const storages: Uint8Array[] = [];
  const names = new Set<string>();
  const BATCH = 1000; // pickle batches SETITEMS like Python does
  for (let i = 0; i < entries.length; i++) {
    const [name, t] = entries[i];
    if (names.has(name)) throw new Error(`${file}: duplicate tensor name ${name}`);
    names.add(name);
    if (!isHostTensor(t)) throw new Error(`${file}: "${name}" is not a tensor`);
    const n = numel(t.shape);
    const bytes = tensorBytes(t);
    if (bytes.byteLength !== n * itemSize(t.dtype)) throw new Error(`${file}: tensor "${name}": data does not match ${t.dtype}${shapeString(t.shape)}`);
    if (i % BATCH === 0) w.mark();
    w.str(name);
    w.global('torch._utils', '_rebuild_tensor_v2');
    w.mark();
    // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
    w.mark().str('storage').global('torch', DTYPE_STORAGE[t.dtype]).str(String(storages.length)).str('cpu').int(n).tuple().binpersid();
    w.int(0).intTuple(t.shape).intTuple(contiguousStrides(t.shape)).bool(false);
    w.global('collections', 'OrderedDict').emptyTuple().reduce();
    w.tuple().reduce();
    storages.push(bytes);
    if (i % BATCH === BATCH - 1 || i === entries.length - 1) w.setitems();
  }
  w.stop();
  const enc = new TextEncoder();
  const files = [
    { name: `${archive}/data.pkl`, data: w.bytes() },
    { name: `${archive}/byteorder`, data: enc.encode('little') },
    ...storages.map((data, i) => ({ name: `${archive}/data/${i}`, data })),
    { name: `${archive}/version`, data: enc.encode('3\n') },
  ];
  writeFileAtomic(file, (sink) => writeZip(sink, files, { align: 64 }));
}
