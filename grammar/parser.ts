// The .visft grammar as a chevrotain CstParser. Rules are class properties, so a misspelt subrule is a type
// error; the parser builds a concrete syntax tree with error recovery on, and `cst-to-ast` turns it into
// the AST. The grammar parses a permissive superset (any word as a declaration kind or property key);
// the checks narrow it and suggest near misses.
import { CstParser, type CstNode, type IToken, type IRecognitionException } from 'chevrotain';
import * as T from './tokens.js';

const UNITS = /^[A-Za-z_]/;

export class VisftParser extends CstParser {
  constructor(options: { validate?: boolean } = {}) {
    super(T.ALL_TOKENS, { recoveryEnabled: true, nodeLocationTracking: 'full', maxLookahead: 3, skipValidations: !options.validate });
    this.performSelfAnalysis();
  }

  // ------------------------------------------------------------ file

  file = this.RULE('file', () => {
    this.MANY(() =>
      this.OR([
        { ALT: () => this.SUBRULE(this.importDecl) },
        { ALT: () => this.SUBRULE(this.moduleDecl) },
        { ALT: () => this.SUBRULE(this.declaration) },
      ]),
    );
  });

  importDecl = this.RULE('importDecl', () => {
    this.CONSUME(T.Import);
    this.OR([{ ALT: () => this.CONSUME(T.StringLiteral) }, { ALT: () => this.SUBRULE(this.dottedName) }]);
  });

  dottedName = this.RULE('dottedName', () => {
    this.CONSUME(T.Identifier);
    this.MANY(() => {
      this.CONSUME(T.Dot);
      this.CONSUME2(T.Identifier);
    });
  });

  moduleDecl = this.RULE('moduleDecl', () => {
    this.CONSUME(T.Module);
    this.CONSUME(T.Identifier);
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Equals);
          this.SUBRULE(this.expression);
        },
      },
      {
        ALT: () => {
          this.SUBRULE(this.moduleParams);
          this.SUBRULE(this.stmtBlock);
        },
      },
    ]);
  });

  /** Comma-separated, a trailing comma allowed (as the formatter writes wrapped lists). */
  moduleParams = this.RULE('moduleParams', () => {
    this.CONSUME(T.LParen);
    this.OPTION(() => {
      this.SUBRULE(this.moduleParam);
      this.MANY(() => {
        this.CONSUME(T.Comma);
        this.SUBRULE2(this.moduleParam);
      });
      this.OPTION2(() => this.CONSUME2(T.Comma));
    });
    this.CONSUME(T.RParen);
  });

  moduleParam = this.RULE('moduleParam', () => {
    this.CONSUME(T.Identifier);
    this.CONSUME(T.Colon);
    this.SUBRULE(this.typeExpr);
    this.OPTION(() => {
      this.CONSUME(T.Equals);
      this.SUBRULE(this.expression);
    });
  });

  /** `kind name (= value)? (on target)? { ... }?` */
  declaration = this.RULE('declaration', () => {
    this.CONSUME(T.Identifier, { LABEL: 'declKind' });
    this.CONSUME2(T.Identifier, { LABEL: 'name' });
    this.OPTION(() => {
      this.CONSUME(T.Equals);
      this.SUBRULE(this.expression, { LABEL: 'value' });
    });
    this.OPTION2(() => {
      this.CONSUME(T.On);
      this.SUBRULE2(this.expression, { LABEL: 'on' });
    });
    this.OPTION3(() => this.SUBRULE(this.block));
  });

  // ------------------------------------------------------------ property blocks

  /** Entries may be separated by commas when written on one line: `{ init: ones, parts: [q, k, v] }`. */
  block = this.RULE('block', () => {
    this.CONSUME(T.LBrace);
    this.MANY(() => {
      this.SUBRULE(this.entry);
      this.OPTION(() => this.CONSUME(T.Comma));
    });
    this.CONSUME(T.RBrace);
  });

  entry = this.RULE('entry', () => {
    this.CONSUME(T.Identifier, { LABEL: 'key' });
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Colon);
          this.SUBRULE(this.expression);
        },
      },
      {
        ALT: () => {
          this.OPTION(() => this.OR2([{ ALT: () => this.CONSUME2(T.Identifier, { LABEL: 'label' }) }, { ALT: () => this.CONSUME(T.StringLiteral, { LABEL: 'label' }) }]));
          this.SUBRULE(this.block);
        },
      },
    ]);
  });

  // ------------------------------------------------------------ module bodies

  stmtBlock = this.RULE('stmtBlock', () => {
    this.CONSUME(T.LBrace);
    this.MANY(() => this.SUBRULE(this.statement));
    this.CONSUME(T.RBrace);
  });

  statement = this.RULE('statement', () => {
    this.OR([
      { ALT: () => this.SUBRULE(this.inputStmt) },
      { ALT: () => this.SUBRULE(this.paramStmt) },
      { ALT: () => this.SUBRULE(this.letStmt) },
      { ALT: () => this.SUBRULE(this.outputStmt) },
      { ALT: () => this.SUBRULE(this.repeatStmt) },
      { ALT: () => this.SUBRULE(this.ifStmt) },
      { ALT: () => this.SUBRULE(this.assignStmt) },
    ]);
  });

  inputStmt = this.RULE('inputStmt', () => {
    this.CONSUME(T.Input);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.Colon);
    this.SUBRULE(this.typeExpr);
  });

  paramStmt = this.RULE('paramStmt', () => {
    this.CONSUME(T.Param);
    this.SUBRULE(this.path);
    this.CONSUME(T.Colon);
    this.SUBRULE(this.typeExpr);
    this.OPTION(() => this.SUBRULE(this.block));
  });

  letStmt = this.RULE('letStmt', () => {
    this.CONSUME(T.Let);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.Equals);
    this.SUBRULE(this.expression);
  });

  assignStmt = this.RULE('assignStmt', () => {
    this.CONSUME(T.Identifier);
    this.CONSUME(T.Equals);
    this.SUBRULE(this.expression);
  });

  outputStmt = this.RULE('outputStmt', () => {
    this.CONSUME(T.Output);
    this.CONSUME(T.Identifier);
    this.OPTION(() => {
      this.CONSUME(T.Colon);
      this.SUBRULE(this.typeExpr);
    });
    this.OPTION2(() => {
      this.CONSUME(T.Equals);
      this.SUBRULE(this.expression);
    });
  });

  repeatStmt = this.RULE('repeatStmt', () => {
    this.CONSUME(T.Repeat);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.In);
    this.SUBRULE(this.expression);
    this.SUBRULE(this.stmtBlock);
  });

  ifStmt = this.RULE('ifStmt', () => {
    this.CONSUME(T.If);
    this.SUBRULE(this.expression);
    this.SUBRULE(this.stmtBlock, { LABEL: 'then' });
    this.OPTION(() => {
      this.CONSUME(T.Else);
      this.OR([{ ALT: () => this.SUBRULE(this.ifStmt, { LABEL: 'elseIf' }) }, { ALT: () => this.SUBRULE2(this.stmtBlock, { LABEL: 'else' }) }]);
    });
  });

  /** `f32[B, 3, H, W]`, `[width]`, `int` */
  typeExpr = this.RULE('typeExpr', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Identifier);
          this.OPTION(() => this.SUBRULE(this.dims));
        },
      },
      { ALT: () => this.SUBRULE2(this.dims) },
    ]);
  });

  dims = this.RULE('dims', () => {
    this.CONSUME(T.LBracket);
    this.MANY_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE(this.expression) });
    this.CONSUME(T.RBracket);
  });

  /** A parameter path: `blocks.{i}.attn.qkv.weight`. */
  path = this.RULE('path', () => {
    this.CONSUME(T.Identifier);
    this.MANY(() => {
      this.CONSUME(T.Dot);
      this.SUBRULE(this.segment);
    });
  });

  segment = this.RULE('segment', () => {
    this.OR([
      { ALT: () => this.CONSUME(T.Identifier) },
      { ALT: () => this.CONSUME(T.NumberLiteral) },
      { ALT: () => this.CONSUME(T.StarStar) },
      { ALT: () => this.CONSUME(T.Star) },
      {
        ALT: () => {
          this.CONSUME(T.LBrace);
          this.SUBRULE(this.expression);
          this.CONSUME(T.RBrace);
        },
      },
    ]);
  });

  // ------------------------------------------------------------ expressions (lowest precedence first)

  expression = this.RULE('expression', () => {
    this.SUBRULE(this.rangeExpr);
    this.OPTION(() => {
      this.CONSUME(T.As);
      this.SUBRULE(this.path);
    });
  });

  rangeExpr = this.RULE('rangeExpr', () => {
    this.SUBRULE(this.orExpr);
    this.OPTION(() => {
      this.OR([{ ALT: () => this.CONSUME(T.DotDot) }, { ALT: () => this.CONSUME(T.DotDotLess) }]);
      this.SUBRULE2(this.orExpr);
    });
  });

  orExpr = this.RULE('orExpr', () => {
    this.SUBRULE(this.andExpr);
    this.MANY(() => {
      this.CONSUME(T.Or);
      this.SUBRULE2(this.andExpr);
    });
  });

  andExpr = this.RULE('andExpr', () => {
    this.SUBRULE(this.notExpr);
    this.MANY(() => {
      this.CONSUME(T.And);
      this.SUBRULE2(this.notExpr);
    });
  });

  notExpr = this.RULE('notExpr', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Not);
          this.SUBRULE(this.notExpr);
        },
      },
      { ALT: () => this.SUBRULE(this.compareExpr) },
    ]);
  });

  compareExpr = this.RULE('compareExpr', () => {
    this.SUBRULE(this.addExpr);
    this.OPTION(() => {
      this.OR([
        { ALT: () => this.CONSUME(T.EqEq) },
        { ALT: () => this.CONSUME(T.NotEq) },
        { ALT: () => this.CONSUME(T.LessEq) },
        { ALT: () => this.CONSUME(T.GreaterEq) },
        { ALT: () => this.CONSUME(T.Less) },
        { ALT: () => this.CONSUME(T.Greater) },
      ]);
      this.SUBRULE2(this.addExpr);
    });
  });

  addExpr = this.RULE('addExpr', () => {
    this.SUBRULE(this.mulExpr);
    this.MANY(() => {
      this.OR([{ ALT: () => this.CONSUME(T.Plus) }, { ALT: () => this.CONSUME(T.Minus) }]);
      this.SUBRULE2(this.mulExpr);
    });
  });

  mulExpr = this.RULE('mulExpr', () => {
    this.SUBRULE(this.unaryExpr);
    this.MANY(() => {
      this.OR([{ ALT: () => this.CONSUME(T.Star) }, { ALT: () => this.CONSUME(T.Slash) }, { ALT: () => this.CONSUME(T.Percent) }]);
      this.SUBRULE2(this.unaryExpr);
    });
  });

  unaryExpr = this.RULE('unaryExpr', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Minus);
          this.SUBRULE(this.unaryExpr);
        },
      },
      { ALT: () => this.SUBRULE(this.postfixExpr) },
    ]);
  });

  postfixExpr = this.RULE('postfixExpr', () => {
    this.SUBRULE(this.primary);
    this.MANY(() =>
      this.OR([
        {
          ALT: () => {
            this.CONSUME(T.Dot);
            this.SUBRULE(this.segment);
          },
        },
        { ALT: () => this.SUBRULE(this.callArgs) },
        { ALT: () => this.SUBRULE(this.indexArgs) },
      ]),
    );
  });

  callArgs = this.RULE('callArgs', () => {
    this.CONSUME(T.LParen);
    this.OPTION(() => {
      this.SUBRULE(this.arg);
      this.MANY(() => {
        this.CONSUME(T.Comma);
        this.SUBRULE2(this.arg);
      });
      this.OPTION2(() => this.CONSUME2(T.Comma));
    });
    this.CONSUME(T.RParen);
  });

  arg = this.RULE('arg', () => {
    this.OPTION({
      GATE: () => this.LA(2).tokenType === T.Colon,
      DEF: () => {
        this.CONSUME(T.Identifier, { LABEL: 'name' });
        this.CONSUME(T.Colon);
      },
    });
    this.SUBRULE(this.expression);
  });

  indexArgs = this.RULE('indexArgs', () => {
    this.CONSUME(T.LBracket);
    this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE(this.indexItem) });
    this.CONSUME(T.RBracket);
  });

  /** `e`, `a:b`, `a:`, `:b`, `:` */
  indexItem = this.RULE('indexItem', () => {
    this.OR([
      {
        ALT: () => {
          this.SUBRULE(this.expression, { LABEL: 'from' });
          this.OPTION(() => {
            this.CONSUME(T.Colon);
            this.OPTION2(() => this.SUBRULE2(this.expression, { LABEL: 'to' }));
          });
        },
      },
      {
        ALT: () => {
          this.CONSUME2(T.Colon);
          this.OPTION3(() => this.SUBRULE3(this.expression, { LABEL: 'to' }));
        },
      },
    ]);
  });

  primary = this.RULE('primary', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.NumberLiteral);
          // A unit is a word right after the number on the same line that is not itself a property key:
          // `2k updates`, but not `batch: 8` followed by `updates: 100k` on the next line.
          this.OPTION({
            GATE: () => {
              const unit = this.LA(1);
              const num = this.LA(0);
              // ... nor the start of a nested block (`lr: 1e-4 task t { ... }`).
              const next = this.LA(2).tokenType;
              const labelled = (next === T.Identifier || next === T.StringLiteral) && this.LA(2).startLine === unit.startLine && this.LA(3).tokenType === T.LBrace;
              const nestedBlock = next === T.LBrace || labelled;
              return unit.tokenType === T.Identifier && UNITS.test(unit.image) && unit.startLine === num.endLine && next !== T.Colon && !nestedBlock;
            },
            DEF: () => this.CONSUME(T.Identifier, { LABEL: 'unit' }),
          });
        },
      },
      { ALT: () => this.CONSUME(T.StringLiteral) },
      { ALT: () => this.CONSUME(T.True) },
      { ALT: () => this.CONSUME(T.False) },
      { ALT: () => this.CONSUME2(T.Identifier) },
      {
        ALT: () => {
          this.CONSUME(T.LParen);
          this.SUBRULE(this.expression);
          this.CONSUME(T.RParen);
        },
      },
      { ALT: () => this.SUBRULE(this.list) },
    ]);
  });

  list = this.RULE('list', () => {
    this.CONSUME(T.LBracket);
    this.OPTION(() => {
      this.SUBRULE(this.expression);
      this.MANY(() => {
        this.CONSUME(T.Comma);
        this.SUBRULE2(this.expression);
      });
      this.OPTION2(() => this.CONSUME2(T.Comma));
    });
    this.CONSUME(T.RBracket);
  });
}

let parser: VisftParser | undefined;
/** The parser instance is reused: building one runs the grammar analysis, which is the slow part. */
export function visftParser(): VisftParser {
  parser ??= new VisftParser({ validate: process.env.VISFT_VALIDATE_GRAMMAR === '1' });
  return parser;
}

export interface ParseOutput {
  cst: CstNode;
  tokens: IToken[];
  comments: IToken[];
  lexErrors: { offset: number; length: number; message: string }[];
  parseErrors: IRecognitionException[];
}

export function parseText(text: string): ParseOutput {
  const lexed = T.visftLexer().tokenize(text);
  const p = visftParser();
  p.input = lexed.tokens;
  const cst = p.file();
  return {
    cst,
    tokens: lexed.tokens,
    comments: lexed.groups.comments ?? [],
    lexErrors: lexed.errors.map((e) => ({ offset: e.offset, length: e.length, message: e.message })),
    parseErrors: p.errors.slice(),
  };
}
