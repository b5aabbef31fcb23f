/**
 * rescue restore IMAGE --to TARGET | --to DISK:M | --to-free DISK  [--point N|latest] [--partition N] [--disk N]
 *   [--password-file F] [--sector-by-sector] [--table mbr]
 *   [--fill | --shrink | --layout SPEC] [--align] [--new-ids] [--scratch DIR] --yes
 */
import { stat } from 'node:fs/promises';
import { inventory } from '../../engine/devices/inventory.ts';
import { type RestoreRequest, type RestoreResult, runRestore } from '../../engine/jobs/restore.ts';
import type { EditOptions } from '../../engine/resize/layout.ts';
import { parseCommand, parseDiskPartition, pointOption, readPasswordFile } from '../args.ts';
import { confirmTyped } from '../confirm.ts';
import { describeEditOptions, EDIT_OPTIONS, parseEditOptions } from '../edit-options.ts';
import { formatBytes, UsageError } from '../output.ts';
import { createReporter } from '../progress.ts';

const OPTIONS = {
  to: { type: 'string' },
  'to-free': { type: 'string' },
  partition: { type: 'string' },
  disk: { type: 'string' },
  point: { type: 'string' },
  'password-file': { type: 'string' },
  'sector-by-sector': { type: 'boolean' },
  table: { type: 'string' },
  ...EDIT_OPTIONS,
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  no: { type: 'boolean' },
} as const;

function intOption(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`${what} takes a number`);
  return Number(text);
}

/** What is on the target now, in words, so the person knows exactly what will be overwritten. */
async function describeTarget(path: string, partition?: number): Promise<string> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return `${path}: a new image file will be created`;
  try {
    const [d] = (await inventory([path])).disks;
    const who = [
      d.model && `"${d.model}"`,
      d.serial && `serial ${d.serial}`,
      formatBytes(d.size),
      d.kind === 'image' ? 'image file' : d.transport,
    ]
      .filter(Boolean)
      .join(', ');
    const parts = d.partitions
      .filter((p) => partition === undefined || p.number === partition)
      .map(
        (p) =>
          `    ${p.number}: ${formatBytes(p.size)} ${p.fs?.type ?? ''}${p.fs?.label ? ` "${p.fs.label}"` : ''}`,
      );
    const now =
      d.table === 'none'
        ? `    ${d.fs?.type && d.fs.type !== 'unknown' ? `${d.fs.type} over the whole disk` : 'no partition table'}`
        : parts.join('\n');
    return `${path}  (${who})\n  now holds:\n${now || '    nothing recognisable'}`;
  } catch {
    return `${path}`;
  }
}

export async function restoreCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const parsed = parseCommand(argv, OPTIONS);
  const v = parsed.values;
  if (parsed.positionals.length !== 1) throw new UsageError('rescue restore takes one IMAGE');
  if (!v.to === !v['to-free'])
    throw new UsageError('say where to restore: --to TARGET, --to DISK:M or --to-free DISK');
  if (v.table !== undefined && v.table !== 'mbr' && v.table !== 'gpt')
    throw new UsageError('--table is mbr or gpt');
  const req: RestoreRequest = {
    image: parsed.positionals[0],
    target: '',
    partition: intOption(v.partition, '--partition'),
    disk: intOption(v.disk, '--disk'),
    point: pointOption(v.point),
    password: v['password-file'] ? await readPasswordFile(v['password-file']) : undefined,
    sectorBySector: !!v['sector-by-sector'],
    tableKind: v.table as RestoreRequest['tableKind'],
    edit: parseEditOptions(v),
  };
  if (v['to-free']) {
    req.target = v['to-free'];
    req.toFree = true;
  } else {
    const { disk, partition } = parseDiskPartition(v.to!);
    const whole = await stat(v.to!).catch(() => undefined);
    // "/dev/disk/by-id/x:1" style names exist; a path that exists as given is never split.
    if (partition !== undefined && !whole) {
      req.target = disk;
      req.targetPartition = partition;
    } else {
      req.target = v.to!;
    }
  }
  return confirmAndRun({
    summary: `Restore ${req.image}`,
    target: req.target,
    targetPartition: req.targetPartition,
    toFree: req.toFree,
    edit: req.edit,
    flags: v,
    signal,
    preview: () => runRestore({ ...req, preview: true }, { signal, emit: () => {} }),
    run: (reporter) => runRestore(req, reporter),
    done: (r) =>
      `Restored ${formatBytes(r.bytesWritten)} to ${r.target}${r.partition ? ` partition ${r.partition}` : ''} in ${r.seconds.toFixed(1)} s`,
  });
}

/**
 * What restore and clone share after their arguments: the typed confirmation naming the target
 * (with the edit-partitions plan, previewed first so that its refusals come before the question),
 * the job with progress, warnings, and the result (a JSON `done` line with --json).
 */
export async function confirmAndRun<R extends RestoreResult>(o: {
  summary: string;
  target: string;
  targetPartition?: number;
  toFree?: boolean;
  edit?: EditOptions;
  flags: { yes?: boolean; no?: boolean; json?: boolean };
  signal: AbortSignal;
  preview: () => Promise<R>;
  run: (reporter: ReturnType<typeof createReporter>) => Promise<R>;
  done: (r: R) => string;
}): Promise<number> {
  let plan = '';
  if (o.edit) {
    const lines = (await o.preview()).plan ?? [];
    plan = `\n  partitions: ${describeEditOptions(o.edit)}${lines.map((l) => `\n    ${l}`).join('')}`;
  }
  const what =
    o.targetPartition !== undefined
      ? `partition ${o.targetPartition} of this disk will be overwritten`
      : o.toFree
        ? 'a new partition will be created in its free space'
        : 'this will be overwritten';
  await confirmTyped(
    `${o.summary}\n  to ${await describeTarget(o.target, o.targetPartition)}\n  — ${what}.${plan}`,
    'yes',
    o.flags,
  );
  const reporter = createReporter({ json: !!o.flags.json, signal: o.signal });
  try {
    const r = await o.run(reporter);
    reporter.close();
    if (o.flags.json) {
      process.stderr.write(`${JSON.stringify({ type: 'done', ...r })}\n`);
      return 0;
    }
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
    process.stderr.write(`${o.done(r)}\n`);
    return 0;
  } finally {
    reporter.close();
  }
}
