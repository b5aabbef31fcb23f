/** rescue info IMAGE [--json] [--password-file F] — like `AMBackup /l /s image`. */
import { ImageReader } from '../../engine/image/index.ts';
import { manifestDisks, type RestoreDisk } from '../../engine/jobs/restore.ts';
import { parseCommand, readPasswordFile } from '../args.ts';
import { formatBytes, UsageError } from '../output.ts';

export async function infoCommand(argv: string[]): Promise<number> {
  const parsed = parseCommand(argv, {
    json: { type: 'boolean' },
    'password-file': { type: 'string' },
  } as const);
  if (parsed.positionals.length !== 1) throw new UsageError('rescue info takes one IMAGE');
  const password = parsed.values['password-file']
    ? await readPasswordFile(parsed.values['password-file'])
    : undefined;
  const reader = await ImageReader.open(parsed.positionals[0], { password });
  try {
    const m = reader.manifest;
    const disks = manifestDisks(reader);
    if (parsed.values.json) {
      process.stdout.write(
        `${JSON.stringify({ image: parsed.positionals[0], files: reader.files, ...m }, null, 2)}\n`,
      );
      return 0;
    }
    const o = m.options;
    const lines = [
      `Image:    ${reader.files[0]}${reader.files.length > 1 ? ` (+${reader.files.length - 1} more volume files)` : ''}`,
      `Task:     ${m.name} (${m.kind} backup) by ${m.tool}`,
      `Point:    ${m.point.sequence ?? 1}, ${m.point.type}, made ${m.created.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}, id ${m.point.id}`,
      `Options:  compression ${o.compression}, ${o.encrypted ? 'encrypted (AES-256-GCM)' : 'not encrypted'}, ${o.split ? `split at ${formatBytes(Number(o.split))}` : 'not split'}, ${o.sectorBySector ? 'sector by sector' : 'used sectors only'}`,
    ];
    if (m.comment) lines.push(`Comment:  ${m.comment}`);
    if (m.stats)
      lines.push(
        `Data:     ${formatBytes(m.stats.usedBytes ?? 0)} stored in ${formatBytes(m.stats.storedBytes ?? 0)}`,
      );
    for (const d of disks) lines.push('', ...renderDisk(d));
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  } finally {
    await reader.close();
  }
}

function renderDisk(d: RestoreDisk): string[] {
  const s = d.source;
  const who = [
    s.model && `"${s.model}"`,
    s.serial && `serial ${s.serial}`,
    formatBytes(s.size),
    d.table.kind === 'none' ? 'no partition table' : d.table.kind.toUpperCase(),
  ]
    .filter(Boolean)
    .join(', ');
  const out = [`Disk ${d.index}: ${s.path} (${who})`];
  for (const r of d.regions) {
    if (r.kind === 'lead-in')
      out.push(`  boot area   ${formatBytes(r.size)} (MBR/GPT and the gap after the MBR)`);
    else if (r.kind === 'gpt-backup') out.push(`  GPT backup  ${formatBytes(r.size)}`);
    else {
      const p = d.table.partitions.find((x) => x.number === r.partition);
      const fs = r.fs ? `${r.fs.type}${r.fs.label ? ` "${r.fs.label}"` : ''}` : '';
      const how =
        r.usedMethod === 'allocation'
          ? `${formatBytes(r.usedBytes ?? r.size)} used`
          : `all ${formatBytes(r.size)} (${r.reason})`;
      out.push(
        `  ${r.kind === 'disk' ? 'whole disk ' : `partition ${String(r.partition).padEnd(2)}`} ${formatBytes(r.size).padEnd(9)} ${(p?.typeName ?? '').padEnd(22)} ${fs.padEnd(20)} ${how}`,
      );
    }
  }
  return out;
}
