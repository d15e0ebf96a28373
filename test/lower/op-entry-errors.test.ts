// `visft compile --op`: every bad request is a LowerError or ShapeError that names the op and what is wrong.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ShapeError } from '../../compiler/ir/rules/shape.js';
import { LowerError } from '../../compiler/lower/ops.js';
import { compileOp } from '../../compiler/lower/op-entry.js';

const shapes = (o: Record<string, number[]>) => new Map(Object.entries(o));
const refused = (f: () => unknown, message: RegExp) => assert.throws(f, (e: unknown) => (e instanceof LowerError || e instanceof ShapeError) && message.test(e.message));
const ms = { value: [1, 23, 2, 8], sampling_locations: [1, 9, 2, 2, 3, 2], attention_weights: [1, 9, 2, 2, 3] };

test('unknown ops, inputs and attributes, and missing inputs are named', () => {
  refused(() => compileOp('atention', shapes({}), [], false), /^unknown op 'atention' \(ops: .*attention, msdeform_attn/);
  refused(() => compileOp('attention', shapes({ q: [1, 2, 5, 8], k: [1, 2, 6, 8] }), [], false), /--op attention needs --shape v=\.\.\./);
  refused(() => compileOp('attention', shapes({ q: [1, 2, 5, 8], k: [1, 2, 6, 8], v: [1, 2, 6, 8], mask2: [1] }), [], false), /op attention has no input 'mask2' \(inputs: q, k, v, mask\)/);
  refused(() => compileOp('attention', shapes({ q: [1, 2, 5, 8], k: [1, 2, 6, 8], v: [1, 2, 6, 8] }), ['levels=3'], false), /op attention has no attribute 'levels' \(attributes: scale\)/);
  refused(() => compileOp('attention', shapes({ q: [1, 2, 5, 8], k: [1, 2, 6, 8], v: [1, 2, 6, 8] }), ['scale'], false), /--attr takes KEY=VALUE, got 'scale'/);
});

test('attention and msdeform_attn shapes that do not fit say which', () => {
  refused(() => compileOp('attention', shapes({ q: [1, 2, 5, 8], k: [1, 2, 6, 7], v: [1, 2, 6, 12] }), [], false), /attention: q \[1, 2, 5, 8\], k \[1, 2, 6, 7\], v \[1, 2, 6, 12\] do not fit/);
  refused(() => compileOp('attention', shapes({ q: [2, 5, 8], k: [2, 6, 8], v: [2, 6, 8] }), [], false), /attention takes q, k, v as \[B, H, S, D\]/);
  refused(() => compileOp('msdeform_attn', shapes(ms), [], false), /msdeform_attn needs levels, .*--attr levels=64x64,32x32,16x16/);
  refused(() => compileOp('msdeform_attn', shapes({ ...ms, value: [1, 30, 2, 8] }), ['levels=5x3,2x4'], false), /value \[1, 30, 2, 8\] must be \[N, 23, M, Dh\] for levels \[\[5,3\],\[2,4\]\]/);
  refused(() => compileOp('msdeform_attn', shapes({ ...ms, sampling_locations: [1, 9, 2, 1, 3, 2] }), ['levels=5x3,2x4'], false), /sampling_locations \[1, 9, 2, 1, 3, 2\] must be \[N, Lq, M, L, P, 2\]/);
});

test('a well-formed request compiles, one level given as HxW included', () => {
  const one = compileOp('msdeform_attn', shapes({ value: [1, 12, 2, 8], sampling_locations: [1, 9, 2, 1, 3, 2], attention_weights: [1, 9, 2, 1, 3] }), ['levels=3x4'], true);
  assert.deepEqual(one.graph.outputs.map((o) => o.name), ['output', 'd:value', 'd:sampling_locations', 'd:attention_weights']);
  const att = compileOp('attention', shapes({ q: [1, 2, 5, 8], k: [1, 2, 6, 8], v: [1, 2, 6, 12] }), ['scale=0.5'], true);
  assert.deepEqual(att.graph.node(att.graph.outputs[0].node).shape, [1, 2, 5, 12]);
});

test('--shape d:output is accepted with --vjp when it is the output shape, and refused with the reason otherwise', () => {
  const qkv = { q: [1, 2, 5, 8], k: [1, 2, 6, 8], v: [1, 2, 6, 12] };
  const withSeed = compileOp('attention', shapes({ ...qkv, 'd:output': [1, 2, 5, 12] }), [], true);
  const without = compileOp('attention', shapes(qkv), [], true);
  assert.deepEqual(withSeed.graph.inputs.map((i) => [i.name, withSeed.graph.node(i.node).shape]), without.graph.inputs.map((i) => [i.name, without.graph.node(i.node).shape]));
  refused(() => compileOp('attention', shapes({ ...qkv, 'd:output': [1, 2, 5, 8] }), [], true), /--shape d:output=1x2x5x8: the output 'output' is 1x2x5x12, and its gradient has its shape/);
  refused(() => compileOp('attention', shapes({ ...qkv, 'd:out': [1, 2, 5, 12] }), [], true), /--shape d:out: no output 'out' \(outputs: output\)/);
  refused(() => compileOp('attention', shapes({ ...qkv, 'd:output': [1, 2, 5, 12] }), [], false), /--shape d:output: a gradient input exists only with --vjp/);
});
