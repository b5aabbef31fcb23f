/**
 * System backup (manual 2.2, for Linux too): the partitions an installed OS needs to boot are
 * found and taken together; restoring the image to an empty disk lays out just those partitions
 * where they were, with clean filesystems and identical files.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imagePath, rescue } from '../fixtures/cli.ts';
import { inspectDiskFiles, MBR_DISK, makeDisk, sfdiskDump, sfdiskPartitions } from '../fixtures/disks.ts';
import { makeTempDir, sha256 } from '../fixtures/lab.ts';
import { LINUX_UEFI, makeSystemDisk, WINDOWS_BIOS, WINDOWS_UEFI } from '../fixtures/systems.ts';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('rescue-system-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function systemRoundTrip(
  plan: typeof LINUX_UEFI,
  expected: number[],
  explain: RegExp[],
  extra: string[] = [],
) {
  const disk = await makeSystemDisk(plan, dir);
  const r = await rescue([
    'backup',
    'system',
    disk,
    '--to',
    dir,
    '--name',
    plan.file.replace('.img', ''),
    ...extra,
    '--yes',
  ]);
  expect(r.code, r.stderr).toBe(0);
  for (const re of explain) expect(r.stderr).toMatch(re);
  const img = imagePath(r);
  const info = JSON.parse((await rescue(['info', img, '--json'])).stdout);
  expect(info.kind).toBe('system');
  const taken = info.disks[0].regions
    .filter((x: { kind: string }) => x.kind === 'partition')
    .map((x: { partition: number }) => x.partition);
  expect(taken).toEqual(expected);
  if (extra.includes('--sector-by-sector')) {
    for (const x of info.disks[0].regions.filter((y: { kind: string }) => y.kind === 'partition'))
      expect(x.usedMethod).toBe('sector-by-sector');
  }

  const target = join(dir, `restored-${plan.file}`);
  const rr = await rescue(['restore', img, '--to', target, '--yes']);
  expect(rr.code, rr.stderr).toBe(0);
  const before = await sfdiskPartitions(disk);
  const after = await sfdiskPartitions(target);
  // Only the system's partitions, each where it was, with its type (and GPT identity).
  const keep = before.filter((p) => expected.includes(Number(/(\d+)$/.exec(p.node)![1])));
  expect(after.map((p) => [p.start, p.size, p.type, p.uuid, p.name])).toEqual(
    keep.map((p) => [p.start, p.size, p.type, p.uuid, p.name]),
  );
  const original = await inspectDiskFiles(disk);
  const restored = await inspectDiskFiles(target);
  for (const [node, p] of restored) {
    expect(p.fsck, `${node} ${p.fs}`).toBe('clean');
    expect(p.files, `${node} ${p.fs}`).toEqual(original.get(node)!.files);
  }
  expect(restored.size).toBeGreaterThan(0);
}

describe('rescue backup system', () => {
  it('UEFI Linux: ESP, /boot and root from fstab — not swap, not /home', async () => {
    await systemRoundTrip(
      LINUX_UEFI,
      [1, 2, 3],
      [/Debian GNU\/Linux 12/, /mounted at \/boot\b/, /EFI system partition/],
    );
  });

  it('sector by sector: the same partitions, each copied whole', async () => {
    await systemRoundTrip(
      { ...LINUX_UEFI, file: 'linux-sbs.img' },
      [1, 2, 3],
      [/Debian GNU\/Linux 12/],
      ['--sector-by-sector'],
    );
  });

  it('UEFI Windows: ESP, MSR, Windows and its recovery partition — not the data partition', async () => {
    await systemRoundTrip(WINDOWS_UEFI, [1, 2, 3, 4], [/bootmgfw\.efi/i, /Microsoft reserved/, /recovery/]);
  });

  it('BIOS Windows: the active "System Reserved" partition and Windows', async () => {
    await systemRoundTrip(WINDOWS_BIOS, [1, 2], [/System Reserved|bootmgr/]);
  });

  it('restored to its original disk: only the system partitions are overwritten, the data partition survives', async () => {
    const disk = await makeSystemDisk({ ...WINDOWS_UEFI, file: 'win-again.img' }, dir);
    const r = await rescue(['backup', 'system', disk, '--to', dir, '--name', 'win-again', '--yes']);
    expect(r.code, r.stderr).toBe(0);
    const img = imagePath(r);
    const before = await inspectDiskFiles(disk);
    const layout = await sfdiskDump(disk);
    const parts = await sfdiskPartitions(disk);
    // Windows breaks: its partition is overwritten with garbage; the data partition holds newer work.
    const h = await fsp.open(disk, 'r+');
    await h.write(Buffer.alloc(4 * 1024 * 1024, 0x5a), 0, 4 * 1024 * 1024, parts[2].start * 512);
    await h.close();
    const dataBefore = await sha256OfRange(disk, parts[4].start * 512, parts[4].size * 512);
    const rr = await rescue(['restore', img, '--to', disk, '--yes']);
    expect(rr.code, rr.stderr).toBe(0);
    expect(rr.stderr).toMatch(/original layout/);
    expect(await sfdiskDump(disk)).toBe(layout);
    expect(await sha256OfRange(disk, parts[4].start * 512, parts[4].size * 512)).toBe(dataBefore);
    const after = await inspectDiskFiles(disk);
    for (const [node, p] of after) {
      expect(p.fsck, node).toBe('clean');
      expect(p.files, node).toEqual(before.get(node)!.files);
    }
  });

  it('a disk without an operating system is refused with the reason', async () => {
    const disk = await makeDisk(MBR_DISK, dir);
    const r = await rescue(['backup', 'system', disk, '--to', dir, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[E_NO_SYSTEM_FOUND\]/);
  });
});

async function sha256OfRange(path: string, start: number, length: number): Promise<string> {
  const h = await fsp.open(path, 'r');
  const buf = Buffer.alloc(length);
  await h.read(buf, 0, length, start);
  await h.close();
  return sha256(buf);
}
