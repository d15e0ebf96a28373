// JSON in the layout of Python's json.dump with default arguments (", " and ": " separators, one line), which
// is how create_input_files writes the caption and word-map files: demo files then match real ones byte for byte
// in form. Only what those files hold is supported: integers, finite floats, ASCII strings, lists and dicts.

export type PyJson = number | string | PyJson[] | { [key: string]: PyJson };

export function pythonJson(value: PyJson): string {
  const parts: string[] = [];
  write(value, parts);
  return parts.join('');
}

function write(value: PyJson, out: string[]): void {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`pythonJson: ${value} has no JSON form`);
    out.push(Number.isInteger(value) ? String(value) : pyFloat(value));
  } else if (typeof value === 'string') {
    out.push(JSON.stringify(value));
  } else if (Array.isArray(value)) {
    out.push('[');
    value.forEach((v, i) => {
      if (i) out.push(', ');
      write(v, out);
    });
    out.push(']');
  } else {
    out.push('{');
    Object.entries(value).forEach(([k, v], i) => {
      if (i) out.push(', ');
      out.push(JSON.stringify(k), ': ');
      write(v, out);
    });
    out.push('}');
  }
}

/**
 * Python's repr of a non-integer float: both languages print the shortest round-trip digits, and agree on the
 * notation for magnitudes in [1e-4, 1e16) (outside it their exponent forms differ, and these files never need it).
 */
function pyFloat(x: number): string {
  const m = Math.abs(x);
  if (m < 1e-4 || m >= 1e16) throw new Error(`pythonJson: ${x} is outside the range written without an exponent`);
  return String(x);
}
