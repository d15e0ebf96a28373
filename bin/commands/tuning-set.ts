// `--set JSON` (visft compile, run, train, profile, bench): Target.tuning choices applied over the tuning profile's, to see what a
// program or the bench rows would take with them; checked as a profile's choices are, a bad one a usage error.
import type { Target } from '../../compiler/codegen/types.js';
import { validateTuning } from '../../runtime/tune/tuning-schema.js';
import { UsageError } from './errors.js';

/** The choices of `--set`, or undefined without it; with `backend` cpu (run, train: the float64 reference) a usage error. */
export function tuningSetArg(value: string | undefined, backend?: string): Target['tuning'] {
  if (value === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (e) {
    throw new UsageError(`--set takes kernel choices as JSON (e.g. '{"flashDirect": true}'), not '${value}': ${(e as Error).message}`);
  }
  const why = validateTuning(parsed);
  if (why) throw new UsageError(`--set: ${why.startsWith('.') ? `tuning${why}` : why}`);
  if (backend === 'cpu') throw new UsageError('--set chooses GPU kernels; --backend cpu runs the float64 reference, which has none');
  return parsed as Target['tuning'];
}

/** The line naming the choices set (over the profile when there is one). */
export const tuningSetLine = (set: Target['tuning'], overProfile: boolean): string => `kernel choices set${overProfile ? ' over the profile' : ''}: ${JSON.stringify(set)}`;
