// The torch.load cross-check: the tensors it saves, make_weights.py's describe() form, and asking torch.
// Run directly (`node dist/test/weights/torch-check.js`, python3-torch installed) it regenerates
// test/fixtures/weights/saved_by_visft.pth and saved_by_visft.torch.json, which the test holds.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { saveTorchZip } from '../../runtime/weights/torch-zip.js';
import { fromNumbers, numel, tensorBytes, tensorFromBytes, type HostTensor } from '../../runtime/weights/tensor.js';

const FIX = fileURLToPath(new URL('../../../test/fixtures/weights/', import.meta.url));
const PY = '/usr/bin/python3';
const hasPython = existsSync(PY);

export interface Described {
  dtype: string;
  shape: number[];
  values: (number | string)[];
}

/** The tensor in make_weights.py's describe() form: bit patterns for floats, decimal strings for 64-bit. */
export function describe(t: HostTensor): Described {
  const bytes = tensorBytes(t);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = numel(t.shape);
  const values: (number | string)[] = [];
  for (let i = 0; i < n; i++) {
    switch (t.dtype) {
      case 'f32': values.push(b.readUInt32LE(4 * i)); break;
      case 'f16':
      case 'bf16': values.push(b.readUInt16LE(2 * i)); break;
      case 'f64': values.push(b.readBigUInt64LE(8 * i).toString()); break;
      case 'i64': values.push(b.readBigInt64LE(8 * i).toString()); break;
      case 'i32': values.push(b.readInt32LE(4 * i)); break;
      default: values.push(b[i]);
    }
  }
  return { dtype: t.dtype, shape: t.shape, values };
}

/** All dtypes, special values, a 0-d and an empty tensor: what the torch.load check saves. */
export function torchCheckTensors(): Map<string, HostTensor> {
  return new Map<string, HostTensor>([
    ['visual.blocks.0.attn.qkv.lora_A', fromNumbers('f32', [4, 3], Array.from({ length: 12 }, (_, i) => i / 7 - 0.5))],
    ['visual.blocks.0.attn.qkv.lora_B', fromNumbers('f32', [6, 4], new Array(24).fill(0))],
    ['half', fromNumbers('f16', [6], [1, 2 ** -24, 65504, Infinity, NaN, -0])],
    ['brain', fromNumbers('bf16', [2, 2], [1 + 2 ** -8, -3.5, 1e30, -Infinity])],
    ['double', fromNumbers('f64', [2], [Math.PI, -1e-300])],
    ['long', tensorFromBytes('i64', [2], new Uint8Array(BigInt64Array.of(-(2n ** 62n), 2n ** 40n + 1n).buffer))],
    ['int', fromNumbers('i32', [3], [-(2 ** 31), 0, 2 ** 31 - 1])],
    ['byte', fromNumbers('u8', [2], [0, 255])],
    ['flag', fromNumbers('bool', [3], [1, 0, 1])],
    ['scalar', fromNumbers('f32', [], [2.5])],
    ['empty', fromNumbers('f32', [0, 2], [])],
  ]);
}

/** torch.load's description of a file, or undefined where Python has no torch. */
export function torchDescribe(file: string): Record<string, Described> | undefined {
  if (!hasPython) return undefined;
  const script = [
    'import json, sys, torch',
    `sys.path.insert(0, ${JSON.stringify(FIX)})`,
    'from make_weights import describe',
    'sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)',
    'print(json.dumps({k: describe(v) for k, v in sd.items()}))',
  ].join('\n');
  const r = spawnSync(PY, ['-c', script, file], { encoding: 'utf8' });
  if (r.status !== 0 && /No module named 'torch'/.test(r.stderr)) return undefined;
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, Described>;
}


if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = join(FIX, 'saved_by_visft.pth');
  saveTorchZip(file, torchCheckTensors());
  const seen = torchDescribe(file);
  if (!seen) throw new Error('python3-torch is needed to record what torch.load reads');
  writeFileSync(join(FIX, 'saved_by_visft.torch.json'), JSON.stringify(seen, null, 1) + '\n');
  console.log('wrote saved_by_visft.pth and saved_by_visft.torch.json');
}
