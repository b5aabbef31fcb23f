/**
 * Volumes in states a rescue tool meets and a lab rarely does: a crashed ext4 whose journal still
 * holds the newest bitmaps, a dirty exFAT, leftovers of earlier partitioning, two extended
 * partitions, labels with trailing blanks, unusual page sizes.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspectDisk } from '../../rescue/engine/devices/inventory.ts';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { detectFilesystem, usedMapOf } from '../../rescue/engine/filesystems/detect.ts';
import { readPartitionTable } from '../../rescue/engine/partitions/table.ts';
import { uncovered } from '../fixtures/ext.ts';
import { blkidExport, makeTempDir, pseudoRandomBytes, run, sparseFile } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('rescue-odd-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function analyse(path: string) {
  const src = await FileSource.open(path);
  try {
    const id = await detectFilesystem(src);
    return { id, map: await usedMapOf(src, id) };
  } finally {
    await src.close();
  }
}

describe('unclean filesystems are copied whole, never from stale bitmaps', () => {
  it('ext4 whose journal needs recovery (image taken while mounted, after an fsync)', async () => {
    const img = await sparseFile(join(dir, 'crash.img'), 64 * MiB);
    await run('mkfs.ext4', ['-q', '-F', img]);
    const mnt = join(dir, 'mnt');
    await fsp.mkdir(mnt, { recursive: true });
    await run('mount', ['-o', 'loop', img, mnt]);
    const crashed = join(dir, 'crashed.img');
    try {
      const h = await fsp.open(join(mnt, 'newfile'), 'w');
      await h.write(pseudoRandomBytes(3 * MiB, 9));
      await h.sync();
      await h.close();
      // What a power cut leaves: the committed journal, the on-disk bitmaps not yet updated.
      await run('cp', ['--sparse=always', img, crashed]);
    } finally {
      await run('umount', [mnt]);
    }
    const { id, map } = await analyse(crashed);
    expect(id.warnings?.join(' ')).toMatch(/recovery/);
    expect(map.method).toBe('sector-by-sector');
    expect(map.reason).toMatch(/e2fsck/);
    // What e2fsck makes of it: every block it then calls used is inside our (whole) map.
    const replayed = join(dir, 'replayed.img');
    await run('cp', ['--sparse=always', crashed, replayed]);
    await run('e2fsck', ['-f', '-y', replayed], { allowFail: true });
    const after = await analyse(replayed);
    expect(after.map.method).toBe('allocation');
    expect(uncovered(after.map.extents, map.extents)).toBe(0);
  });

  it('exFAT marked dirty', async () => {
    const img = await sparseFile(join(dir, 'dirty.img'), 32 * MiB);
    await run('mkfs.exfat', [img]);
    const h = await fsp.open(img, 'r+');
    // VolumeFlags bit 1 (VolumeDirty) at byte 106; the boot checksum skips bytes 106, 107 and 112.
    await h.write(Buffer.from([0x02]), 0, 1, 106);
    await h.close();
    const { map } = await analyse(img);
    expect(map.method).toBe('sector-by-sector');
    expect(map.reason).toMatch(/dirty/);
  });
});

describe('partition tables as Linux reads them', () => {
  it('a whole-disk FAT32 over a disk that once had a GPT is the FAT, not the old GPT', async () => {
    const img = await sparseFile(join(dir, 'reformatted.img'), 128 * MiB);
    await run('sgdisk', ['-n1:2048:+60M', '-n2:0:0', img]);
    const h = await fsp.open(img, 'r+');
    await h.write(Buffer.alloc(MiB), 0, MiB, 0);
    await h.close();
    await run('mkfs.vfat', ['-I', '-F', '32', img]);
    const disk = await inspectDisk(img);
    expect(disk.table).toBe('none');
    expect(disk.fs?.type).toBe((await blkidExport(img)).TYPE);
    expect(disk.findings.map((f) => f.code)).toContain('GPT_STALE_IGNORED');
  });

  it('logical partitions of a second extended partition are read, numbered on as partx does', async () => {
    const img = await sparseFile(join(dir, 'two-extended.img'), 64 * MiB);
    const sector = (entries: [number, number, number][]) => {
      const b = Buffer.alloc(512);
      entries.forEach(([type, first, count], i) => {
        const o = 446 + i * 16;
        b[o + 4] = type;
        b.writeUInt32LE(first, o + 8);
        b.writeUInt32LE(count, o + 12);
      });
      b[510] = 0x55;
      b[511] = 0xaa;
      return b;
    };
    const h = await fsp.open(img, 'r+');
    await h.write(
      sector([
        [0x05, 2048, 40960],
        [0x05, 43008, 40960],
      ]),
      0,
      512,
      0,
    );
    await h.write(sector([[0x83, 2048, 16384]]), 0, 512, 2048 * 512);
    await h.write(sector([[0x83, 2048, 16384]]), 0, 512, 43008 * 512);
    await h.close();
    const partx = (await run('partx', ['--show', '-g', '-o', 'NR,START,SECTORS', img])).stdout
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).map(Number));
    const src = await FileSource.open(img);
    const table = await readPartitionTable(src);
    await src.close();
    expect(table.partitions.map((p) => [p.number, p.start / 512, p.size / 512])).toEqual(partx);
  });
});

describe('identity details as blkid shows them', () => {
  it('labels lose their trailing blanks (ext4, swap)', async () => {
    const e = await sparseFile(join(dir, 'label.img'), 16 * MiB);
    await run('mkfs.ext4', ['-q', '-F', '-L', 'abc  ', e]);
    expect((await analyse(e)).id.label).toBe((await blkidExport(e)).LABEL);
    const s = await sparseFile(join(dir, 'swaplabel.img'), 16 * MiB);
    await run('mkswap', ['-L', 'sw  ', s]);
    expect((await analyse(s)).id.label).toBe((await blkidExport(s)).LABEL);
  });

  it('swap with 32 KiB pages', async () => {
    const s = await sparseFile(join(dir, 'swap32k.img'), 16 * MiB);
    await run('mkswap', ['-p', '32768', s]);
    const { id, map } = await analyse(s);
    expect(id.type).toBe('swap');
    expect(id.uuid).toBe((await blkidExport(s)).UUID);
    expect(map.usedBytes).toBe(32768);
  });
});
