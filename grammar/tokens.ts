// The .visft lexer: token types in match order (longer punctuation before its prefixes, keywords before
// identifiers through `longer_alt`). Comments go to their own group so the formatter can keep them.
import { createToken, Lexer, type TokenType } from 'chevrotain';

export const WhiteSpace = createToken({ name: 'WhiteSpace', pattern: /[ \t\r\n\f\uFEFF]+/, group: Lexer.SKIPPED, line_breaks: true });
export const LineComment = createToken({ name: 'LineComment', pattern: /\/\/[^\n\r]*/, group: 'comments' });
export const BlockComment = createToken({ name: 'BlockComment', pattern: /\/\*[\s\S]*?\*\//, group: 'comments', line_breaks: true });

export const Identifier = createToken({ name: 'Identifier', pattern: /[A-Za-z_][A-Za-z0-9_]*/ });

const keyword = (word: string): TokenType =>
  createToken({ name: word[0].toUpperCase() + word.slice(1), pattern: new RegExp(word), longer_alt: Identifier, label: `'${word}'` });

export const Import = keyword('import');
export const Module = keyword('module');
export const Param = keyword('param');
export const Input = keyword('input');
export const Output = keyword('output');
export const Let = keyword('let');
export const Repeat = keyword('repeat');
export const In = keyword('in');
export const If = keyword('if');
export const Else = keyword('else');
export const True = keyword('true');
export const False = keyword('false');
export const And = keyword('and');
export const Or = keyword('or');
export const Not = keyword('not');
export const On = keyword('on');
export const As = keyword('as');

/** In match order: `input` before `in`, so prefixes never steal a longer keyword. */
export const KEYWORDS = [Import, Module, Param, Input, Output, Let, Repeat, If, Else, True, False, And, Or, Not, On, As, In];
export const KEYWORD_WORDS = KEYWORDS.map((t) => String(t.LABEL).slice(1, -1));

// A number: digits, optional fraction, optional exponent, optional scale suffix (k, M). Right after a `.`
// it is a path index, digits only, so `layers.0.1.weight` is two indices rather than the number 0.1.
const NUMBER = /\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[kM]?/y;
const INDEX = /\d+/y;
export const NumberLiteral = createToken({
  name: 'NumberLiteral',
  pattern: {
    exec: (text: string, offset: number) => {
      const re = text[offset - 1] === '.' && text[offset - 2] !== '.' ? INDEX : NUMBER;
      re.lastIndex = offset;
      return re.exec(text);
    },
  },
  line_breaks: false,
  start_chars_hint: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
  label: 'number',
});
export const StringLiteral = createToken({ name: 'StringLiteral', pattern: /"(?:[^"\\\n\r]|\\.)*"/, label: 'string' });

const punct = (name: string, text: string): TokenType =>
  createToken({ name, pattern: new RegExp(text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')), label: `'${text}'` });

export const DotDotLess = punct('DotDotLess', '..<');
export const DotDot = punct('DotDot', '..');
export const Dot = punct('Dot', '.');
export const EqEq = punct('EqEq', '==');
export const NotEq = punct('NotEq', '!=');
export const LessEq = punct('LessEq', '<=');
export const GreaterEq = punct('GreaterEq', '>=');
export const Less = punct('Less', '<');
export const Greater = punct('Greater', '>');
export const Equals = punct('Equals', '=');
export const StarStar = punct('StarStar', '**');
export const Star = punct('Star', '*');
export const Plus = punct('Plus', '+');
export const Minus = punct('Minus', '-');
export const Slash = punct('Slash', '/');
export const Percent = punct('Percent', '%');
export const LBrace = punct('LBrace', '{');
export const RBrace = punct('RBrace', '}');
export const LParen = punct('LParen', '(');
export const RParen = punct('RParen', ')');
export const LBracket = punct('LBracket', '[');
export const RBracket = punct('RBracket', ']');
export const Comma = punct('Comma', ',');
export const Colon = punct('Colon', ':');

export const ALL_TOKENS: TokenType[] = [
  WhiteSpace, BlockComment, LineComment,
  ...KEYWORDS, Identifier,
  NumberLiteral, StringLiteral,
  DotDotLess, DotDot, Dot, EqEq, NotEq, LessEq, GreaterEq, Less, Greater, Equals,
  StarStar, Star, Plus, Minus, Slash, Percent,
  LBrace, RBrace, LParen, RParen, LBracket, RBracket, Comma, Colon,
];

let lexer: Lexer | undefined;
/** One lexer for the process: building it validates the token set, which costs start-up time. */
export function visftLexer(): Lexer {
  lexer ??= new Lexer(ALL_TOKENS, { positionTracking: 'full', ensureOptimizations: false, skipValidations: process.env.VISFT_VALIDATE_GRAMMAR !== '1' });
  return lexer;
}
