/**
 * The one error type of the engine. `code` is stable (scripts and docs/errors.md rely on it),
 * `message` is for people, `remedy` says what to do about it. No stack traces reach users.
 */
export class RescueError extends Error {
  readonly code: string;
  readonly remedy: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, remedy: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'RescueError';
    this.code = code;
    this.remedy = remedy;
    this.details = details;
  }
}

export function isRescueError(e: unknown): e is RescueError {
  return e instanceof RescueError;
}

/** Shorthand for metadata that does not make sense: the caller falls back or reports it. */
export function corrupt(what: string, why: string, details?: Record<string, unknown>): RescueError {
  return new RescueError(
    'E_METADATA_CORRUPT',
    `${what}: ${why}`,
    'The on-disk structure is damaged or not what it claims to be. Run the filesystem check tool ' +
      '(fsck / chkdsk) or take a sector-by-sector backup.',
    details,
  );
}
