/** `rescue list [--json] [DISK-OR-IMAGE …]` — like the manual's `AMBackup /l`, for people and scripts. */
import { parseArgs } from 'node:util';
import { watchBlockDevices } from '../../engine/devices/hotplug.ts';
import { type DiskReport, type FsReport, inventory } from '../../engine/devices/inventory.ts';
import { formatBytes, UsageError } from '../output.ts';

export async function listCommand(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (parsed.values.watch && parsed.positionals.length > 0) {
    throw new UsageError('--watch lists every disk of the machine; give no DISK-OR-IMAGE with it');
  }
  const inv = await inventory(parsed.positionals);
  if (parsed.values.json) {
    process.stdout.write(`${JSON.stringify(inv, null, parsed.values.watch ? undefined : 2)}\n`);
  } else {
    process.stdout.write(renderInventory(inv.disks));
  }
  if (parsed.values.watch) await watch(!!parsed.values.json);
  return 0;
}

/**
 * Follows disks being plugged in and out until Ctrl-C: one line per event (a JSON object per line
 * with --json), and the new disk's listing when a whole disk appears or changes.
 */
async function watch(json: boolean): Promise<void> {
  const stop = new AbortController();
  const done = new Promise<void>((resolve) => {
    const onSignal = () => {
      stop.abort();
      resolve();
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  let queue = Promise.resolve();
  const how = await watchBlockDevices(
    (e) => {
      queue = queue.then(async () => {
        if (json) {
          process.stdout.write(`${JSON.stringify({ event: e })}\n`);
        } else {
          const verb = { add: 'added', remove: 'removed', change: 'changed' }[e.action];
          process.stdout.write(`${e.action === 'remove' ? '-' : '+'} ${e.devnode} ${verb} (${e.devtype})\n`);
        }
        if (e.devtype !== 'disk' || e.action === 'remove') return;
        try {
          const inv = await inventory([e.devnode]);
          process.stdout.write(json ? `${JSON.stringify(inv)}\n` : renderInventory(inv.disks));
        } catch (err) {
          // A disk that vanished again or cannot be read is reported, the watch goes on.
          process.stderr.write(`rescue: ${e.devnode}: ${(err as Error).message}\n`);
        }
      });
    },
    { signal: stop.signal },
  );
  process.stderr.write(
    how.mode === 'udev'
      ? `Watching for disks (libudev, ${how.source} events). Ctrl-C to stop.\n`
      : `Watching for disks by polling sysfs (${how.reason}). Ctrl-C to stop.\n`,
  );
  await done;
  await queue;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, watch: { type: 'boolean' } },
  });
}

function fsCells(fs: FsReport | undefined): string[] {
  if (!fs) return ['', '', '', ''];
  const used =
    fs.usedMethod === 'allocation' ? formatBytes(fs.usedBytes) : `all (${formatBytes(fs.usedBytes)})`;
  const free = fs.freeBytes !== undefined ? formatBytes(fs.freeBytes) : '';
  const type = fs.version && ['vfat'].includes(fs.type) ? `${fs.type} (${fs.version})` : fs.type;
  return [type, fs.label ?? '', used, free];
}

function table(rows: string[][], indent: string): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows
    .map(
      (r) =>
        indent +
        r
          .map((cell, c) => cell.padEnd(widths[c]))
          .join('  ')
          .trimEnd(),
    )
    .join('\n');
}

export function renderInventory(disks: DiskReport[]): string {
  const out: string[] = [];
  for (const d of disks) {
    const facts = [
      formatBytes(d.size),
      d.kind === 'image' ? 'image file' : (d.transport ?? ''),
      d.model ? `"${d.model}"` : '',
      d.serial ? `serial ${d.serial}` : '',
      d.table === 'none'
        ? 'no partition table'
        : d.table === 'unknown'
          ? ''
          : `${d.table.toUpperCase()}${d.diskId ? ` ${d.diskId}` : ''}`,
      d.sectorSize !== 512 ? `${d.sectorSize}-byte sectors` : '',
    ].filter(Boolean);
    out.push(`${d.path}  ${facts.join(', ')}`);
    if (d.error) out.push(`  cannot read it: ${d.error.message} [${d.error.code}] — ${d.error.remedy}`);
    if (d.inUse) out.push(`  in use: ${d.inUseReasons?.join('; ')}`);
    for (const f of d.findings) out.push(`  ${f.severity}: ${f.message}`);
    const rows: string[][] = [['#', 'start', 'size', 'type', 'fs', 'label', 'used', 'free']];
    if (d.fs) rows.push(['-', '0', formatBytes(d.size), 'whole disk', ...fsCells(d.fs)]);
    for (const p of d.partitions) {
      const type = `${p.typeName}${p.bootable ? ' *' : ''}`;
      rows.push([String(p.number), formatBytes(p.start), formatBytes(p.size), type, ...fsCells(p.fs)]);
    }
    if (rows.length > 1) out.push(table(rows, '  '));
    const notes: string[] = [];
    for (const p of d.partitions) {
      if (p.inUse) notes.push(`  ${p.number}: in use — ${p.inUseReasons?.join('; ')}`);
      if (p.fs?.usedMethod === 'sector-by-sector' && p.fs.reason)
        notes.push(`  ${p.number}: copied sector by sector — ${p.fs.reason}`);
      for (const w of p.fs?.warnings ?? []) notes.push(`  ${p.number}: ${w}`);
    }
    if (d.fs?.reason && d.fs.usedMethod === 'sector-by-sector')
      notes.push(`  copied sector by sector — ${d.fs.reason}`);
    for (const w of d.fs?.warnings ?? []) notes.push(`  ${w}`);
    out.push(...notes, '');
  }
  if (disks.length === 0) out.push('No disks found.', '');
  return `${out.join('\n')}`;
}
