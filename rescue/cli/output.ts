/** Formatting shared by CLI commands: sizes as people read them, errors with their remedy. */
import { isRescueError } from '../engine/errors.ts';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${UNITS[u]}`;
}

/** Prints an error for people (never a stack trace) and returns the exit code. */
export function reportError(e: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  if (isRescueError(e)) {
    stderr.write(`rescue: ${e.message} [${e.code}]\n  what to do: ${e.remedy}\n`);
    return 1;
  }
  const msg = e instanceof Error ? e.message : String(e);
  stderr.write(
    `rescue: internal error: ${msg}\n  what to do: this is a bug; run with RESCUE_DEBUG=1 and report the output.\n`,
  );
  if (process.env.RESCUE_DEBUG && e instanceof Error) stderr.write(`${e.stack}\n`);
  return 70;
}

export class UsageError extends Error {}
