// Key transforms and the strict weight match: every missing, unexpected and wrongly-shaped key is reported at
// once, lists are capped with a count, near misses get "did you mean", and nothing missing is ever accepted
// silently.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  applyKeyRules,
  didYouMean,
  dropKeys,
  editDistance,
  EVA_CLIP_E_RULES,
  evaClipEVisual,
  globToRegExp,
  matchesGlob,
  matchWeights,
  stripPrefix,
  WeightMismatchError,
} from '../../runtime/weights/keymap.js';
import { zeros, type HostTensor } from '../../runtime/weights/tensor.js';

const RUNS = Number(process.env.VISFT_WEIGHTS_RUNS ?? 300);

function dict(entries: [string, number[]][]): Map<string, HostTensor> {
  return new Map(entries.map(([k, shape]) => [k, zeros('f32', shape)]));
}

test('globs: * matches any characters including dots; everything else is literal', () => {
  assert.ok(matchesGlob('visual.blocks.3.attn.head.weight', 'visual.*head*'));
  assert.ok(matchesGlob('text', 'text*'));
  assert.ok(matchesGlob('a.b', 'a.b'));
  assert.ok(!matchesGlob('axb', 'a.b'), '. is literal');
  assert.ok(!matchesGlob('a.bc', 'a.b'), 'anchored');
  assert.ok(matchesGlob('x(1)+[y]?', 'x(1)+[y]?'), 'regex metacharacters are literal');
  assert.ok(matchesGlob('multi\nline', 'multi*'));
  fc.assert(
    fc.property(fc.string(), fc.string(), fc.string(), (a, b, c) => matchesGlob(a + b + c, `${a.replace(/\*/g, '')}*${c.replace(/\*/g, '')}`) || a.includes('*') || c.includes('*')),
    { numRuns: RUNS },
  );
  fc.assert(fc.property(fc.string(), (s) => globToRegExp(s.replace(/\*/g, '')).test(s.replace(/\*/g, ''))), { numRuns: RUNS });
});

test('strip_prefix removes the prefix where present, keeps other keys, refuses collisions', () => {
  const m = stripPrefix(dict([['visual.a', [1]], ['b', [2]], ['visualx', [3]]]), 'visual.');
  assert.deepEqual([...m.keys()], ['a', 'b', 'visualx']);
  assert.throws(() => stripPrefix(dict([['visual.a', [1]], ['a', [1]]]), 'visual.'), /maps both "visual\.a" and "a" to "a"/);
});

test('drop removes keys matching any pattern and reports them', () => {
  const { kept, dropped } = dropKeys(dict([['a.head.w', [1]], ['a.w', [1]], ['logit_scale', []]]), ['*head*', 'logit*']);
  assert.deepEqual([...kept.keys()], ['a.w']);
  assert.deepEqual(dropped, ['a.head.w', 'logit_scale']);
});

test('the EVA-CLIP-E preset: drop text*/logit*, drop visual.* with head or cls_token, strip visual.', () => {
  const keys = [
    'text.transformer.resblocks.0.attn.in_proj_weight',
    'text_projection',
    'logit_scale',
    'visual.cls_token',
    'visual.head.weight',
    'visual.blocks.0.attn.qkv.weight',
    'visual.blocks.0.attn.q_bias',
    'visual.norm.bias',
    'visual.pos_embed',
    'other.head.weight',
  ];
  const out = evaClipEVisual(dict(keys.map((k) => [k, [1]])));
  assert.deepEqual([...out.keys()], ['blocks.0.attn.qkv.weight', 'blocks.0.attn.q_bias', 'norm.bias', 'pos_embed', 'other.head.weight']);
  assert.deepEqual([...applyKeyRules(dict(keys.map((k) => [k, [1]])), EVA_CLIP_E_RULES).keys()], [...out.keys()]);
});

test('matchWeights succeeds with the tensors in model order, honouring allow_missing globs', () => {
  const loaded = dict([['b', [2]], ['a', [1, 3]]]);
  const r = matchWeights(
    [
      { path: 'a', shape: [1, 3] },
      { path: 'b', shape: [2] },
      { path: 'blocks.0.attn.qkv.lora_A', shape: [4, 4] },
    ],
    loaded,
    { allowMissing: ['*.lora_*'] },
  );
  assert.ok(r.ok);
  assert.deepEqual([...r.tensors.keys()], ['a', 'b']);
  assert.deepEqual(r.allowedMissing, ['blocks.0.attn.qkv.lora_A']);
  assert.equal(r.tensors.get('a'), loaded.get('a'));
});

test('matchWeights reports all missing, unexpected and wrongly-shaped keys together', () => {
  const expected = [
    { path: 'pos_embed', shape: [1, 257, 8] },
    { path: 'blocks.0.attn.qkv.weight', shape: [24, 8] },
    { path: 'blocks.0.norm1.weight', shape: [8] },
    { path: 'norm.weight', shape: [8] },
    { path: 'blocks.0.mlp.fc1.weight', shape: [32, 8] },
  ];
  const loaded = dict([
    ['pos_embed', [1, 257, 8]],
    ['blocks.0.attn.qkv.weigth', [24, 8]], // typo
    ['blocks.0.norm1.weight', [16]], // wrong shape
    ['rel_pos_bias.table', [3, 3]], // unexpected
  ]);
  const r = matchWeights(expected, loaded, { file: 'eva_vit_g.pth' });
  assert.ok(!r.ok);
  const e = r.error;
  assert.ok(e instanceof WeightMismatchError);
  assert.deepEqual(e.missing, ['blocks.0.attn.qkv.weight', 'norm.weight', 'blocks.0.mlp.fc1.weight']);
  assert.deepEqual(e.unexpected, ['blocks.0.attn.qkv.weigth', 'rel_pos_bias.table']);
  assert.deepEqual(e.wrongShape, [{ name: 'blocks.0.norm1.weight', expected: [8], actual: [16] }]);
  assert.equal(e.suggestions.get('blocks.0.attn.qkv.weight'), 'blocks.0.attn.qkv.weigth');
  assert.equal(
    e.message,
    [
      'the weights in eva_vit_g.pth do not match the model:',
      '  3 missing (the model has them, the file does not):',
      '    blocks.0.attn.qkv.weight [24, 8]  (did you mean "blocks.0.attn.qkv.weigth"?)',
      '    norm.weight [8]',
      '    blocks.0.mlp.fc1.weight [32, 8]',
      '  2 unexpected (in the file, not in the model):',
      '    blocks.0.attn.qkv.weigth [24, 8]',
      '    rel_pos_bias.table [3, 3]',
      '  1 wrongly shaped:',
      '    blocks.0.norm1.weight: the model expects [8], the file has [16]',
      '  visft never runs with missing weights: list keys that are meant to be absent in allow_missing',
      '  drop keys the model does not use with a drop rule',
    ].join('\n'),
  );
});

test('long lists are capped with a count, and a shared prefix gets a strip_prefix hint', () => {
  const expected = Array.from({ length: 40 }, (_, i) => ({ path: `blocks.${i}.attn.qkv.weight`, shape: [24, 8] }));
  const loaded = dict(expected.map((e) => [`visual.${e.path}`, [24, 8]]));
  const r = matchWeights(expected, loaded, { maxListed: 5 });
  assert.ok(!r.ok);
  const msg = r.error.message;
  assert.equal(r.error.missing.length, 40, 'every key is in the error object');
  assert.equal(r.error.unexpected.length, 40);
  assert.match(msg, /40 missing/);
  assert.match(msg, /… and 35 more/);
  assert.match(msg, /blocks\.0\.attn\.qkv\.weight \[24, 8\]  \(did you mean "visual\.blocks\.0\.attn\.qkv\.weight"\?\)/);
  assert.match(msg, /hint: 40 of the missing keys are in the file under the prefix "visual\.": add strip_prefix "visual\."/);
  assert.equal(msg.split('\n').filter((l) => l.startsWith('    ') && !l.includes('more')).length, 10, '5 shown per list');
});

test('a file lacking the model\'s prefix is hinted too', () => {
  const r = matchWeights([{ path: 'backbone.a.w', shape: [1] }, { path: 'backbone.b.w', shape: [1] }], dict([['a.w', [1]], ['b.w', [1]]]));
  assert.ok(!r.ok);
  assert.match(r.error.message, /2 of the missing keys are in the file without the prefix "backbone\."/);
});

test('nothing missing is ever accepted silently (property)', () => {
  const name = fc.stringMatching(/^[a-c]{1,2}(\.[a-c]{1,2}){0,2}$/);
  fc.assert(
    fc.property(fc.uniqueArray(name, { maxLength: 8 }), fc.uniqueArray(name, { maxLength: 8 }), (exp, have) => {
      const expected = exp.map((p) => ({ path: p, shape: [1] }));
      const loaded = dict(have.map((k) => [k, [1]]));
      const r = matchWeights(expected, loaded);
      const missing = exp.filter((p) => !have.includes(p));
      const unexpected = have.filter((k) => !exp.includes(k));
      if (missing.length === 0 && unexpected.length === 0) {
        assert.ok(r.ok);
        assert.equal(r.tensors.size, exp.length);
      } else {
        assert.ok(!r.ok);
        assert.deepEqual(r.error.missing, missing);
        assert.deepEqual(r.error.unexpected, unexpected);
      }
    }),
    { numRuns: RUNS },
  );
});

test('did-you-mean and edit distance', () => {
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('abc', 'abc'), 0);
  assert.equal(editDistance('abc', 'abcdef', 2), Infinity);
  assert.equal(didYouMean('norm.weight', ['norm.bias', 'nrom.weight']), 'nrom.weight');
  assert.equal(didYouMean('norm.weight', ['fc.bias']), undefined);
  assert.equal(didYouMean('a.w', ['model.a.w', 'x.model.a.w']), 'model.a.w');
  fc.assert(
    fc.property(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 }), (a, b) => editDistance(a, b) === editDistance(b, a) && editDistance(a, b) <= Math.max(a.length, b.length)),
    { numRuns: RUNS },
  );
});
