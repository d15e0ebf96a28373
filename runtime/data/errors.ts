// Errors about training data on disk.

/** A data file that is missing or does not hold what its format promises; the message names the file and what is wrong. */
export class DataError extends Error {
  override name = 'DataError';
}
