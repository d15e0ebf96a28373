// Arithmetic on compile-time values (shape parameters, constants), shared by the checker, the elaborator
// and the lowering so that `1 + (img_size / patch) * 2` means the same everywhere.
export type Scalar = number | boolean | string;

/** `a op b` on scalars; undefined when the operands do not fit the operator (or divide by zero). */
export function scalarBinary(op: string, a: unknown, b: unknown): Scalar | undefined {
  if (op === 'and' || op === 'or') {
    if (typeof a !== 'boolean' || typeof b !== 'boolean') return undefined;
    return op === 'and' ? a && b : a || b;
  }
  if (op === '==' || op === '!=') {
    if (!isScalar(a) || !isScalar(b)) return undefined;
    return op === '==' ? a === b : a !== b;
  }
  if (typeof a !== 'number' || typeof b !== 'number') return undefined;
  switch (op) {
    case '+': return a + b;
    case '-': return a - b;
    case '*': return a * b;
    case '/': return b === 0 ? undefined : a / b;
    case '%': return b === 0 ? undefined : a % b;
    case '<': return a < b;
    case '<=': return a <= b;
    case '>': return a > b;
    case '>=': return a >= b;
    default: return undefined;
  }
}

/** `-a` or `not a`. */
export function scalarUnary(op: string, a: unknown): Scalar | undefined {
  if (op === '-' && typeof a === 'number') return -a;
  if (op === 'not' && typeof a === 'boolean') return !a;
  return undefined;
}

function isScalar(x: unknown): x is Scalar {
  return typeof x === 'number' || typeof x === 'boolean' || typeof x === 'string';
}
