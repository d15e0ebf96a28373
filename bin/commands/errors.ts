/** A user-facing failure of a command (bad arguments, unwritable output): printed as `visft: message`, exit 2. */
export class UsageError extends Error {}
