/**
 * rescue backup disk SRC… | partition DISK:N… | system DISK  --to DIR [options] --yes
 * rescue backup incremental|differential IMAGE [--source DISK]… [--force] --yes
 * stdout's last line is the path of the image's first file; progress goes to stderr.
 */
import { type BackupRequest, type BackupSourceSpec, runBackup } from '../../engine/jobs/backup.ts';
import { parseCommand, parseDiskPartition, parseSize, readPasswordFile } from '../args.ts';
import { formatBytes, UsageError } from '../output.ts';
import { createReporter } from '../progress.ts';
import { TOOL } from '../version.ts';

const OPTIONS = {
  to: { type: 'string' },
  name: { type: 'string' },
  compress: { type: 'string' },
  'password-file': { type: 'string' },
  split: { type: 'string' },
  'sector-by-sector': { type: 'boolean' },
  comment: { type: 'string' },
  check: { type: 'boolean' },
  'no-folder': { type: 'boolean' },
  'allow-mounted': { type: 'boolean' },
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  no: { type: 'boolean' },
} as const;

const POINT_OPTIONS = {
  source: { type: 'string', multiple: true },
  force: { type: 'boolean' },
  'password-file': { type: 'string' },
  comment: { type: 'string' },
  check: { type: 'boolean' },
  'allow-mounted': { type: 'boolean' },
  json: { type: 'boolean' },
  yes: { type: 'boolean' },
  no: { type: 'boolean' },
} as const;

async function pointBackupCommand(
  type: 'incremental' | 'differential',
  argv: string[],
  signal: AbortSignal,
): Promise<number> {
  const parsed = parseCommand(argv, POINT_OPTIONS);
  const v = parsed.values;
  if (parsed.positionals.length !== 1)
    throw new UsageError(`rescue backup ${type} takes one IMAGE (any file of the backup chain)`);
  if (v.no) {
    process.stderr.write('rescue: backup not started (--no)\n');
    return 3;
  }
  const { runPointBackup } = await import('../../engine/jobs/point-backup.ts');
  const reporter = createReporter({ json: !!v.json, signal });
  try {
    const r = await runPointBackup(
      {
        type,
        image: parsed.positionals[0],
        sources: v.source,
        force: !!v.force,
        password: v['password-file'] ? await readPasswordFile(v['password-file']) : undefined,
        comment: v.comment,
        check: !!v.check,
        allowMounted: !!v['allow-mounted'],
        tool: TOOL,
      },
      reporter,
    );
    reporter.close();
    if (v.json) {
      process.stderr.write(`${JSON.stringify({ ...r, pointType: r.type, type: 'done' })}\n`);
    } else {
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stderr.write(
        `Point ${r.sequence} (${type}, on top of point ${r.base.sequence}): ${formatBytes(r.changedBytes)} changed of ${formatBytes(r.usedBytes)}${r.deltaBytes > 0 ? ` (${formatBytes(r.deltaBytes)} of it in windows stored as patches)` : ''}, stored in ${formatBytes(r.storedBytes)}; ${r.seconds.toFixed(1)} s\n`,
      );
    }
    process.stdout.write(`${r.firstFile}\n`);
    return 0;
  } finally {
    reporter.close();
  }
}

export async function backupCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const [kind, ...rest] = argv;
  if (kind === 'incremental' || kind === 'differential') return pointBackupCommand(kind, rest, signal);
  if (kind !== 'disk' && kind !== 'partition' && kind !== 'system') {
    throw new UsageError(
      'say what to back up: rescue backup disk|partition|system|incremental|differential …',
    );
  }
  const parsed = parseCommand(rest, OPTIONS);
  const v = parsed.values;
  if (parsed.positionals.length === 0) throw new UsageError(`rescue backup ${kind}: name what to back up`);
  if (!v.to) throw new UsageError('--to DIR is required: the folder that receives the image');
  if (v.no) {
    process.stderr.write('rescue: backup not started (--no)\n');
    return 3;
  }
  const compression = (v.compress ?? 'normal') as BackupRequest['compression'];
  if (!['none', 'normal', 'high'].includes(compression))
    throw new UsageError('--compress is none, normal or high');
  let sources: BackupSourceSpec[];
  if (kind === 'partition') {
    const byDisk = new Map<string, number[]>();
    for (const p of parsed.positionals) {
      const { disk, partition } = parseDiskPartition(p);
      if (partition === undefined)
        throw new UsageError(`"${p}" is not DISK:N (a partition number after the disk)`);
      byDisk.set(disk, [...(byDisk.get(disk) ?? []), partition]);
    }
    sources = [...byDisk].map(([path, partitions]) => ({ path, partitions }));
  } else {
    if (kind === 'system' && parsed.positionals.length !== 1)
      throw new UsageError('rescue backup system takes one disk');
    sources = parsed.positionals.map((path) => ({ path }));
  }
  const req: BackupRequest = {
    kind,
    sources,
    destination: v.to,
    name: v.name,
    folder: !v['no-folder'],
    compression,
    password: v['password-file'] ? await readPasswordFile(v['password-file']) : undefined,
    splitBytes: v.split ? parseSize(v.split, '--split') : undefined,
    sectorBySector: !!v['sector-by-sector'],
    comment: v.comment,
    check: !!v.check,
    allowMounted: !!v['allow-mounted'],
    tool: TOOL,
  };
  const reporter = createReporter({ json: !!v.json, signal });
  try {
    const r = await runBackup(req, reporter);
    reporter.close();
    const ratio =
      r.usedBytes > 0 ? ` (${((100 * r.storedBytes) / r.usedBytes).toFixed(0)}% of the data)` : '';
    if (v.json) {
      process.stderr.write(`${JSON.stringify({ type: 'done', ...r })}\n`);
    } else {
      process.stderr.write(
        `Backed up ${formatBytes(r.usedBytes)} in ${r.seconds.toFixed(1)} s into ${r.files.length} file(s), ${formatBytes(r.storedBytes)}${ratio}\n`,
      );
    }
    process.stdout.write(`${r.firstFile}\n`);
    return 0;
  } finally {
    reporter.close();
  }
}
