/** Parsing of the values the CLI takes: sizes, DISK:N, password files. */
import { readFile } from 'node:fs/promises';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { RescueError } from '../engine/errors.ts';
import { UsageError } from './output.ts';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** "700M", "4G", "650MB", "1.5GiB", "52428800" → bytes. K/M/G/T alone are binary (KiB…), KB/MB… decimal. */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new UsageError(`${what}: "${text}" is not a size (examples: 700M, 4G, 650MB)`);
  return Math.floor(Number(m[1]) * unit);
}

/** "DISK:N" → { disk, partition }; "/dev/sda" → { disk }. The last ":<digits>" is the partition. */
export function parseDiskPartition(text: string): { disk: string; partition?: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  if (!m?.[1]) return { disk: text };
  return { disk: m[1], partition: Number(m[2]) };
}

/** --point N | latest */
export function pointOption(text: string | undefined): number | 'latest' | undefined {
  if (text === undefined || text === 'latest') return text;
  if (!/^[1-9]\d*$/.test(text))
    throw new UsageError('--point takes a point number (see `rescue info`) or "latest"');
  return Number(text);
}

/** The password is the file's content without one trailing newline. */
export async function readPasswordFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new RescueError(
      'E_PASSWORD_FILE',
      `Cannot read the password file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      'Give a readable file that holds the password on its first line.',
    );
  }
  return text.replace(/\r?\n$/, '');
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs with positionals allowed and its errors turned into usage errors. */
export function parseCommand<T extends Options>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, allowPositionals: true, strict: true, options });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}
