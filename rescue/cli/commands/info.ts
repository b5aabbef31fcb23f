/**
 * rescue info IMAGE [--point N|latest] [--json] [--password-file F] — like `AMBackup /l /s image`:
 * the point's disks, partitions and options, and its backup chain with every point's time, type,
 * file and whether it can be restored.
 */
import { statSync } from 'node:fs';
import { BackupChain, type ChainPoint } from '../../engine/image/index.ts';
import { manifestDisks, type RestoreDisk } from '../../engine/jobs/restore.ts';
import { parseCommand, pointOption, readPasswordFile } from '../args.ts';
import { formatBytes, UsageError } from '../output.ts';

function fileBytes(p: ChainPoint): number | null {
  if (!p.reader) return null;
  return p.reader.files.reduce((n, f) => n + (statSync(f, { throwIfNoEntry: false })?.size ?? 0), 0);
}

function chainRows(chain: BackupChain) {
  return chain.points.map((p: ChainPoint) => {
    const s = chain.status(p);
    return {
      sequence: p.sequence,
      type: p.type,
      created: p.created,
      file: p.path,
      id: p.id,
      parent: p.parent,
      fileBytes: fileBytes(p),
      usable: s.usable,
      why: s.why ?? null,
      needs: s.needs.map((id) => chain.point(id)?.sequence ?? id),
    };
  });
}

export async function infoCommand(argv: string[]): Promise<number> {
  const parsed = parseCommand(argv, {
    json: { type: 'boolean' },
    point: { type: 'string' },
    'password-file': { type: 'string' },
  } as const);
  if (parsed.positionals.length !== 1) throw new UsageError('rescue info takes one IMAGE');
  const password = parsed.values['password-file']
    ? await readPasswordFile(parsed.values['password-file'])
    : undefined;
  const chain = await BackupChain.open(parsed.positionals[0], { password });
  try {
    const which = pointOption(parsed.values.point);
    const point = chain.find(which);
    if (!point.reader) throw point.damage!;
    const reader = point.reader;
    const m = reader.manifest;
    const disks = manifestDisks(reader);
    const rows = chainRows(chain);
    if (parsed.values.json) {
      process.stdout.write(
        `${JSON.stringify({ image: parsed.positionals[0], files: reader.files, ...m, chain: rows, missing: chain.missing }, null, 2)}\n`,
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
        m.point.type === 'full'
          ? `Data:     ${formatBytes(m.stats.usedBytes ?? 0)} stored in ${formatBytes(m.stats.storedBytes ?? 0)}`
          : `Data:     ${formatBytes(m.stats.usedBytes ?? 0)}; this point stores the changed part in ${formatBytes(m.stats.storedBytes ?? 0)}, the rest is kept in earlier points`,
      );
    if (chain.points.length > 1 || chain.missing.length > 0) {
      lines.push('', 'Backup chain:');
      for (const r of rows) {
        const when = r.created.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
        const size = r.fileBytes !== null ? formatBytes(r.fileBytes) : '?';
        const state = r.usable ? 'restorable' : `NOT restorable: ${r.why}`;
        lines.push(
          `  ${r.sequence === m.point.sequence ? '*' : ' '} ${String(r.sequence).padStart(2)}  ${r.type.padEnd(12)} ${when}  ${size.padStart(9)}  ${r.file}  ${state}`,
        );
      }
      for (const x of chain.missing)
        lines.push(`     ?  MISSING      point ${x.id}, which ${x.parentOf.length} later point(s) build on`);
    }
    for (const d of disks) lines.push('', ...renderDisk(d));
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  } finally {
    await chain.close();
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
