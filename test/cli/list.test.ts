import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildLab, type LabDisk } from '../../rescue/cli/lab.ts';
import type { Inventory } from '../../rescue/engine/devices/inventory.ts';
import { blkidExport, makeTempDir, run } from '../fixtures/lab.ts';
import { sfdiskJson } from '../fixtures/partitions.ts';

const CLI = join(import.meta.dirname, '../../rescue/cli/main.ts');

function rescue(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

let dir: string;
let lab: LabDisk[];
beforeAll(async () => {
  dir = await makeTempDir('rescue-list-');
  lab = await buildLab(join(dir, 'lab'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('rescue list on image files', () => {
  it('agrees with sfdisk --json and blkid for every disk and partition of the lab', async () => {
    const r = rescue(['list', '--json', ...lab.map((d) => d.path)]);
    expect(r.code, r.stderr).toBe(0);
    const inv = JSON.parse(r.stdout) as Inventory;
    expect(inv.disks).toHaveLength(lab.length);
    let checkedFs = 0;
    for (const disk of inv.disks) {
      const st = await fsp.stat(disk.path);
      expect(disk.size).toBe(st.size);
      expect(disk.kind).toBe('image');
      if (disk.table === 'none') {
        const b = await blkidExport(disk.path);
        expect(disk.fs?.type).toBe(b.TYPE);
        expect(disk.fs?.label).toBe(b.LABEL);
        expect(disk.fs?.uuid).toBe(b.UUID);
        checkedFs++;
        continue;
      }
      const sf = (await sfdiskJson(disk.path))!;
      expect(disk.table).toBe(sf.label === 'dos' ? 'mbr' : 'gpt');
      const ss = sf.sectorsize ?? 512;
      expect(disk.partitions.map((p) => p.number)).toEqual(
        sf.partitions.map((p) => Number(/(\d+)$/.exec(p.node)![1])),
      );
      for (const [i, p] of disk.partitions.entries()) {
        const s = sf.partitions[i];
        expect(p.start).toBe(s.start * ss);
        expect(p.size).toBe(s.size * ss);
        expect(p.type).toBe(s.type);
        if (s.uuid) expect(p.uuid).toBe(s.uuid);
        if (s.name) expect(p.name).toBe(s.name);
        if (p.kind === 'extended') continue;
        const b = await blkidExport(disk.path, 'utf8', { offset: p.start, size: p.size });
        expect(p.fs?.type, `${disk.path} partition ${p.number}`).toBe(b.TYPE ?? 'unknown');
        if (b.TYPE) {
          expect(p.fs?.label).toBe(b.LABEL);
          expect(p.fs?.uuid).toBe(b.UUID);
          checkedFs++;
        }
        expect(p.fs!.usedBytes).toBeGreaterThan(0);
        expect(p.fs!.usedBytes).toBeLessThanOrEqual(p.size);
      }
    }
    // FAT16, ext4, swap, ext2, FAT32, NTFS, ext4, LUKS, exFAT, FAT12
    expect(checkedFs).toBe(10);
  });

  it('prints a table people can read', () => {
    const r = rescue(['list', lab[1].path]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/GPT/);
    expect(r.stdout).toMatch(/Windows/);
    expect(r.stdout).toMatch(/encrypted \(LUKS\)/);
  });

  it('reports a missing disk with its error code and remedy, and bad usage with exit code 2', () => {
    const missing = rescue(['list', join(dir, 'nope.img')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/does not exist \[E_NOT_FOUND\]/);
    expect(missing.stderr).toMatch(/what to do:/);
    expect(missing.stderr).not.toMatch(/at .*\.ts:\d+/);
    const bad = rescue(['list', '--frobnicate']);
    expect(bad.code).toBe(2);
  });

  it('lists a truncated image with findings instead of failing', async () => {
    const cut = join(dir, 'cut.img');
    await fsp.copyFile(lab[1].path, cut);
    await fsp.truncate(cut, 600 * 1024 * 1024);
    const r = rescue(['list', '--json', cut]);
    expect(r.code, r.stderr).toBe(0);
    const disk = (JSON.parse(r.stdout) as Inventory).disks[0];
    expect(disk.table).toBe('gpt');
    expect(disk.findings.length).toBeGreaterThan(0);
    const beyond = disk.partitions.filter((p) => p.start + p.size > disk.size);
    expect(beyond.length).toBeGreaterThan(0);
    for (const p of beyond) expect(p.fs?.usedMethod).toBe('sector-by-sector');
  });
});

describe('rescue list on this machine', () => {
  it('shows the real disks as lsblk does', async () => {
    const r = rescue(['list', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const inv = JSON.parse(r.stdout) as Inventory;
    const lsblk = JSON.parse(
      (await run('lsblk', ['-b', '-J', '-p', '-o', 'NAME,SIZE,TYPE,FSTYPE,LABEL,UUID,LOG-SEC'])).stdout,
    ) as {
      blockdevices: {
        name: string;
        size: number;
        type: string;
        fstype: string | null;
        label: string | null;
        uuid: string | null;
        'log-sec': number;
      }[];
    };
    // ram/zram disks and empty devices are left out of `rescue list` on purpose.
    const disks = lsblk.blockdevices.filter(
      (d) => d.type === 'disk' && Number(d.size) > 0 && !/\/(z?ram)\d+$/.test(d.name),
    );
    expect(disks.length).toBeGreaterThan(0);
    for (const d of disks) {
      const ours = inv.disks.find((x) => x.path === d.name);
      expect(ours, `${d.name} missing from rescue list`).toBeDefined();
      expect(ours!.size).toBe(Number(d.size));
      expect(ours!.sectorSize).toBe(Number(d['log-sec']));
      expect(ours!.kind).toBe('device');
      // This sandbox forbids opening its own root disk (EPERM even for root): lsblk then has no
      // FSTYPE either, and we must say why instead of failing the whole listing.
      if (ours!.error) {
        expect(ours!.table).toBe('unknown');
        expect(d.fstype).toBeNull();
        continue;
      }
      if (d.fstype && ours!.table === 'none') {
        expect(ours!.fs?.type).toBe(d.fstype);
        expect(ours!.fs?.uuid ?? null).toBe(d.uuid);
        expect(ours!.fs?.label ?? null).toBe(d.label);
      }
    }
  });
});
