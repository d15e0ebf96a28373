// Writes grammar/grammar.json and grammar/cst.d.ts from the parser (`npm run grammar:snapshot`).
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cstDts, serializedGrammarJson } from './snapshot.js';

const here = fileURLToPath(new URL('../../grammar/', import.meta.url));
writeFileSync(here + 'grammar.json', serializedGrammarJson());
writeFileSync(here + 'cst.d.ts', cstDts());
console.log('wrote grammar/grammar.json and grammar/cst.d.ts');
