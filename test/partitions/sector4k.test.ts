/**
 * 4096-byte logical sectors (4Kn disks). sfdisk 2.38 has no --sector-size option and sgdisk takes
 * the sector size from the device, so the tools run on loop devices made with
 * `losetup --sector-size 4096`; the kernel then presents the image as a 4Kn disk.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { randomGuid } from '../../rescue/engine/partitions/guid.ts';
import { inspectPartitionTable, readPartitionTable } from '../../rescue/engine/partitions/table.ts';
import type { Partition, PartitionTable } from '../../rescue/engine/partitions/types.ts';
import { serializePartitionTable } from '../../rescue/engine/partitions/write.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';
import {
  applyWritesToFile,
  expectSameAsSfdisk,
  hasLoopDevices,
  makeDiskImage,
  readBytes,
  sfdiskJson,
  sfdiskVerify,
  sgdiskVerify,
  withLoopDevice,
} from '../fixtures/partitions.ts';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const SS = 4096;
let dir: string;
const loops = await hasLoopDevices();

beforeAll(async () => {
  dir = await makeTempDir('rescue-partitions-4k-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function readFile(path: string, sectorSize?: number): Promise<PartitionTable> {
  const src = await FileSource.open(path);
  try {
    return await readPartitionTable(src, { sectorSize });
  } finally {
    await src.close();
  }
}

const codes = (t: PartitionTable) => t.findings.map((f) => f.code);

describe.skipIf(!loops)('4096-byte sectors through loop devices', () => {
  it('GPT by sfdisk on a 4Kn loop device: found in the plain file too (sector size probed)', async () => {
    const img = await makeDiskImage(
      join(dir, 'sfdisk-4k.img'),
      SIZE,
      'label: gpt\nsize=4M, type=U, name="esp"\nsize=16M, type=L, attrs="GUID:60"\nsize=, type=S\n',
      { sectorSize: SS },
    );
    const sf = await withLoopDevice(img, SS, async (dev) => {
      // Through the device, the source reports 4096-byte sectors itself.
      const src = await FileSource.open(dev);
      expect(src.logicalSectorSize).toBe(SS);
      const viaDevice = await readPartitionTable(src);
      await src.close();
      expect(viaDevice.findings).toEqual([]);
      const json = await sfdiskJson(dev);
      expectSameAsSfdisk(viaDevice, json);
      return json;
    });
    // A plain image file says 512; the GPT is found at 4096 all the same, with a warning.
    const probed = await readFile(img);
    expect(probed.sectorSize).toBe(SS);
    expect(codes(probed)).toEqual(['GPT_SECTOR_SIZE']);
    expectSameAsSfdisk(probed, sf);
    // Told the sector size, no warning.
    expect(codes(await readFile(img, SS))).toEqual([]);
    // sfdisk itself misreads the file as an MBR disk with one "ee" partition.
    expect((await sfdiskJson(img))?.label).toBe('dos');
  });

  it('GPT by sgdisk with names and attributes on a 4Kn loop device', async () => {
    const img = join(dir, 'sgdisk-4k.img');
    await sparseFile(img, SIZE);
    const sf = await withLoopDevice(img, SS, async (dev) => {
      await run('sgdisk', [
        '-n',
        '1:0:+8M',
        '-t',
        '1:ef00',
        '-c',
        '1:EFI',
        '-n',
        '2:0:+16M',
        '-t',
        '2:8300',
        '-c',
        '2:root ✓',
        '-A',
        '2:set:2',
        '-n',
        '7:0:+4M',
        '-t',
        '7:0700',
        '-A',
        '7:set:62',
        dev,
      ]);
      expect((await sgdiskVerify(dev)).ok).toBe(true);
      return sfdiskJson(dev);
    });
    const table = await readFile(img, SS);
    expect(table.findings).toEqual([]);
    expectSameAsSfdisk(table, sf);
    expect(table.gpt).toMatchObject({ entriesLba: 2, firstUsableLba: 6, lastUsableLba: SIZE / SS - 6 });
    // Rewritten by us for the same disk: the same bytes, protective MBR included.
    const copy = join(dir, 'sgdisk-4k-copy.img');
    await sparseFile(copy, SIZE);
    await applyWritesToFile(copy, serializePartitionTable(table, SIZE));
    expect((await readBytes(copy, 0, 6 * SS)).equals(await readBytes(img, 0, 6 * SS))).toBe(true);
    expect(
      (await readBytes(copy, SIZE - 5 * SS, 5 * SS)).equals(await readBytes(img, SIZE - 5 * SS, 5 * SS)),
    ).toBe(true);
  });

  it('GPT written by us for 4096-byte sectors: sfdisk --verify, sgdisk -v and sfdisk --json agree', async () => {
    const partitions: Partition[] = [1, 2, 3].map((n) => ({
      number: n,
      kind: 'gpt',
      start: n * 8 * MiB,
      size: 8 * MiB,
      type: n === 1 ? 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B' : '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
      typeName: '',
      uuid: randomGuid(),
      name: `part ${n}`,
      attributes: n === 3 ? (1n << 63n).toString() : '0',
    }));
    const plan: PartitionTable = {
      kind: 'gpt',
      sectorSize: SS,
      diskId: randomGuid(),
      partitions,
      findings: [],
    };
    const img = join(dir, 'ours-4k.img');
    await sparseFile(img, SIZE);
    await applyWritesToFile(img, serializePartitionTable(plan, SIZE));
    await withLoopDevice(img, SS, async (dev) => {
      const v1 = await sfdiskVerify(dev);
      expect(v1.ok, v1.output).toBe(true);
      const v2 = await sgdiskVerify(dev);
      expect(v2.ok, v2.output).toBe(true);
      expectSameAsSfdisk(
        { ...plan, gpt: { firstUsableLba: 6, lastUsableLba: SIZE / SS - 6 } as PartitionTable['gpt'] },
        await sfdiskJson(dev),
      );
    });
  });

  it('MBR with logical partitions by sfdisk on a 4Kn loop device, rewritten byte for byte', async () => {
    const img = await makeDiskImage(
      join(dir, 'mbr-4k.img'),
      SIZE,
      'label: dos\nsize=8M, type=83\nsize=8M, type=7\nsize=, type=5\nsize=8M, type=82\nsize=8M, type=83, bootable\nsize=, type=83\n',
      { sectorSize: SS },
    );
    const sf = await withLoopDevice(img, SS, (dev) => sfdiskJson(dev));
    const detail = await inspectPartitionTable(await FileSource.open(img), { sectorSize: SS });
    expect(detail.table.findings).toEqual([]);
    expect(detail.ebrs.length).toBe(3);
    expectSameAsSfdisk(detail.table, sf);
    const copy = join(dir, 'mbr-4k-copy.img');
    await sparseFile(copy, SIZE);
    await applyWritesToFile(copy, serializePartitionTable(detail.table, SIZE));
    for (const at of [0, ...detail.ebrs.map((e) => e.lba * SS)]) {
      expect((await readBytes(copy, at, 512)).equals(await readBytes(img, at, 512)), `sector at ${at}`).toBe(
        true,
      );
    }
    await withLoopDevice(copy, SS, async (dev) => expect((await sfdiskVerify(dev)).ok).toBe(true));
  });

  it('a 512-byte GPT moved to a 4Kn disk: re-serialized in 4096-byte units', async () => {
    const img = await makeDiskImage(
      join(dir, 'gpt-512.img'),
      SIZE,
      'label: gpt\nsize=8M, type=U\nsize=16M, type=L, name="data"\n',
    );
    const table = await readFile(img);
    const target = join(dir, 'gpt-to-4k.img');
    await sparseFile(target, SIZE);
    await applyWritesToFile(target, serializePartitionTable(table, SIZE, { sectorSize: SS }));
    const back = await readFile(target, SS);
    expect(back.findings).toEqual([]);
    expect(back.partitions).toEqual(table.partitions);
    await withLoopDevice(target, SS, async (dev) => expect((await sgdiskVerify(dev)).ok).toBe(true));
  });
});

it.runIf(!loops)('4Kn tests need loop devices (losetup) and were skipped', () => {
  expect(loops).toBe(false);
});
