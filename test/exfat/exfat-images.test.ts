/**
 * Real exFAT volumes made by mkfs.exfat and filled through exfat-fuse with interleaved writes and
 * deletes. The used map must equal dump.exfat's count, match partclone's exact map, and be enough
 * on its own: a copy holding only our extents passes fsck.exfat and gives back every file.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { exfat } from '../../rescue/engine/filesystems/exfat.ts';
import { exfatLayout, parseExfatBootSector } from '../../rescue/engine/filesystems/exfat-boot.ts';
import { totalBytes } from '../../rescue/engine/filesystems/extents.ts';
import {
  dumpExfat,
  fillExfat,
  fsckExfat,
  type MkfsExfatOptions,
  mkfsExfat,
  readBackExfat,
  withExfatMount,
} from '../fixtures/exfat.ts';
import { blkidExport, bytesNotCovered, partcloneDomain } from '../fixtures/fat.ts';
import { assertWellFormedExtents, copyUsedExtents, makeTempDir } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;

interface Case extends MkfsExfatOptions {
  name: string;
  clusterBytes: number;
  rounds: number;
  manyFiles?: number;
}

const CASES: Case[] = [
  {
    name: '64 MiB, 4 KiB clusters',
    sizeBytes: 64 * MiB,
    clusterSize: '4K',
    clusterBytes: 4096,
    label: 'Small',
    rounds: 12,
    manyFiles: 120,
  },
  {
    name: '96 MiB, 512-byte clusters (multi-cluster bitmap)',
    sizeBytes: 96 * MiB,
    clusterSize: '512',
    clusterBytes: 512,
    label: 'Tiny Clust',
    rounds: 12,
    manyFiles: 40,
  },
  {
    name: '128 MiB, 32 KiB clusters, Unicode label',
    sizeBytes: 128 * MiB,
    clusterSize: '32K',
    clusterBytes: 32768,
    label: 'Ünïcödé Vol',
    rounds: 10,
  },
  {
    name: '256 MiB, 128 KiB clusters, no label',
    sizeBytes: 256 * MiB,
    clusterSize: '128K',
    clusterBytes: 131072,
    rounds: 8,
  },
  {
    name: '64 MiB, 4096-byte sectors',
    sizeBytes: 64 * MiB,
    clusterSize: '4K',
    clusterBytes: 4096,
    sectorSize: 4096,
    label: 'Four K',
    rounds: 10,
  },
];

const dirs: string[] = [];
const figures: string[] = [];

afterAll(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  if (figures.length)
    console.log(`exFAT used bytes (ours / dump.exfat / partclone -D):\n${figures.join('\n')}`);
});

/** FAT links n → m with m ≠ n+1 in FAT copy 0: proof the interleaved writes fragmented files. */
async function fragmentLinks(img: string): Promise<number> {
  const src = await FileSource.open(img);
  try {
    const layout = exfatLayout(parseExfatBootSector(await src.read(0, 512)));
    const fat = await src.read(layout.fatStart, (layout.clusterCount + 2) * 4);
    let n = 0;
    for (let c = 2; c < layout.clusterCount + 2; c++) {
      const v = fat.readUInt32LE(c * 4);
      if (v >= 2 && v < layout.clusterCount + 2 && v !== c + 1) n++;
    }
    return n;
  } finally {
    await src.close();
  }
}

describe('exfat module on real mkfs.exfat + exfat-fuse volumes', () => {
  it.each(CASES)('$name', async (c) => {
    const dir = await makeTempDir('rescue-exfat-');
    dirs.push(dir);
    const img = join(dir, 'fs.img');
    await mkfsExfat(img, c);
    const files = await withExfatMount(img, {}, (mnt) =>
      fillExfat(mnt, {
        seed: c.sizeBytes / MiB + c.clusterBytes,
        rounds: c.rounds,
        clusterBytes: c.clusterBytes,
        manyFiles: c.manyFiles,
      }),
    );
    expect(await fragmentLinks(img)).toBeGreaterThan(0);

    const src = await FileSource.open(img);
    let id: Awaited<ReturnType<typeof exfat.identify>>;
    let map: Awaited<ReturnType<NonNullable<typeof exfat.usedMap>>>;
    try {
      expect(exfat.probe(await src.read(0, 69632), src.size)).toBe(true);
      id = await exfat.identify(src);
      map = await exfat.usedMap!(src);
    } finally {
      await src.close();
    }

    const blk = await blkidExport(img);
    expect(id.type).toBe(blk.TYPE);
    expect(id.version).toBe(blk.VERSION);
    expect(id.uuid).toBe(blk.UUID);
    expect(id.label).toBe(blk.LABEL);
    expect(id.label).toBe(c.label);
    expect(id.blockSize).toBe(c.clusterBytes);
    expect(id.state?.dirty).toBe(false);

    const dump = await dumpExfat(img);
    expect(id.size).toBe(dump.volumeSectors * dump.sectorBytes);
    expect(dump.sectorBytes).toBe(c.sectorSize ?? 512);
    assertWellFormedExtents(map.extents, id.size!);
    expect(map.method).toBe('allocation');
    expect(map.usedBytes).toBe(totalBytes(map.extents));
    const heap = dump.heapOffsetSectors * dump.sectorBytes;
    const tail = id.size! - heap - dump.clusterCount * dump.clusterBytes;
    const dumpUsed = heap + (dump.clusterCount - dump.freeClusters) * dump.clusterBytes + tail;
    expect(map.usedBytes).toBe(dumpUsed);

    // partclone reads the same bitmap through its own libexfat: its exact map must be inside ours.
    const pc = await partcloneDomain('partclone.exfat', img, join(dir, 'domain.log'));
    expect(pc.length).toBeGreaterThan(0);
    expect(bytesNotCovered(pc, map.extents)).toBe(0);
    const pcBytes = totalBytes(pc);
    expect(map.usedBytes - pcBytes).toBeLessThanOrEqual(c.clusterBytes);
    figures.push(`  ${c.name}: ${map.usedBytes} / ${dumpUsed} / ${pcBytes} (${files.size} files)`);

    const copy = join(dir, 'copy.img');
    await copyUsedExtents(img, map.extents, copy, c.sizeBytes);
    await fsp.rm(img);
    const fsck = await fsckExfat(copy);
    expect(fsck.code, fsck.output).toBe(0);
    expect(fsck.output).toMatch(/clean/);
    const back = await readBackExfat(copy);
    expect(back.size).toBe(files.size);
    for (const [path, hash] of files) expect(back.get(path), path).toBe(hash);
  });
});
