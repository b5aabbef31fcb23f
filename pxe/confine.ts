/**
 * The one rule for what the PXE server hands out from a folder (TFTP boot files, HTTP-shared
 * backups): a relative path is followed only inside its root — no `..`, and no symbolic link that
 * leads out (the real path is checked). A root that does not exist is the caller's error (throws).
 */
import { realpath } from 'node:fs/promises';
import { join } from 'node:path';

export type Confined = { real: string } | { refused: 'dotdot' | 'escapes' | 'missing' };

export async function confine(root: string, rel: string): Promise<Confined> {
  const parts = rel.split('/').filter((p) => p !== '');
  if (parts.includes('..')) return { refused: 'dotdot' };
  const base = await realpath(root);
  const real = await realpath(join(base, ...parts)).catch(() => undefined);
  if (!real) return { refused: 'missing' };
  if (real !== base && !real.startsWith(`${base}/`)) return { refused: 'escapes' };
  return { real };
}
