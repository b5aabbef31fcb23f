/**
 * Special states of real FAT volumes: bad-cluster markers (left out of the used map, as partclone
 * does; fsck.fat counts them as used), dirty flags (boot-sector state byte, FAT[1] clean bit),
 * probes that must not claim exFAT, and cancellation.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource } from '../../rescue/engine/devices/source.ts';
import { exfat } from '../../rescue/engine/filesystems/exfat.ts';
import { totalBytes } from '../../rescue/engine/filesystems/extents.ts';
import { fat } from '../../rescue/engine/filesystems/fat.ts';
import { fatLayout, parseFatBootSector, setFatEntry } from '../../rescue/engine/filesystems/fat-bpb.ts';
import { mkfsExfat } from '../fixtures/exfat.ts';
import { bytesNotCovered, fillFat, fsckFat, mkfsFat, partcloneDomain, readBackFat } from '../fixtures/fat.ts';
import { copyUsedExtents, makeTempDir } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
const images: Record<string, string> = {};

beforeAll(async () => {
  dir = await makeTempDir('rescue-fatspecial-');
  for (const [key, bits, size] of [
    ['FAT16', 16, 32 * MiB],
    ['FAT32', 32, 64 * MiB],
  ] as const) {
    const img = join(dir, `${key}.img`);
    await mkfsFat(img, { sizeBytes: size, fatBits: bits, sectorsPerCluster: 1, label: key });
    await fillFat(img, dir, { seed: 99, rounds: 4, clusterBytes: 512 });
    images[key] = img;
  }
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function edit(src: string, dst: string, f: (b: Buffer) => void): Promise<Buffer> {
  const b = await fsp.readFile(src);
  f(b);
  await fsp.writeFile(dst, b);
  return b;
}

describe.each(['FAT16', 'FAT32'])('%s special states', (key) => {
  it('leaves bad clusters out, as partclone does, and the copy still checks clean', async () => {
    const img = join(dir, `${key}-bad.img`);
    const bad = [3000, 3001, 7777];
    const bytes = await edit(images[key], img, (b) => {
      const l = fatLayout(parseFatBootSector(b));
      for (let k = 0; k < l.numFats; k++) {
        const copy = b.subarray(l.fatStart + k * l.fatBytes, l.fatStart + (k + 1) * l.fatBytes);
        for (const n of bad) setFatEntry(copy, l.type, n, l.type === 16 ? 0xfff7 : 0x0ffffff7);
      }
      // Keep FSInfo's free count true, or fsck.fat complains about that instead.
      if (l.fsInfoSector) {
        const at = l.fsInfoSector * l.bytesPerSector + 488;
        b.writeUInt32LE(b.readUInt32LE(at) - bad.length, at);
      }
    });
    const l = fatLayout(parseFatBootSector(bytes));
    const map = await fat.usedMap!(new BufferSource(bytes));
    for (const n of bad) {
      const at = l.dataStart + (n - 2) * l.clusterBytes;
      expect(map.extents.some((e) => e.start < at + l.clusterBytes && e.start + e.length > at)).toBe(false);
    }
    const fsck = await fsckFat(img);
    expect(fsck.code, fsck.output).toBe(0);
    const tail = fsck.volumeBytes - (fsck.dataStart + fsck.totalClusters * fsck.clusterBytes);
    expect(map.usedBytes).toBe(fsck.dataStart + (fsck.usedClusters - bad.length) * fsck.clusterBytes + tail);
    const pc = await partcloneDomain('partclone.fat', img, join(dir, `${key}-bad.log`));
    expect(bytesNotCovered(pc, map.extents)).toBe(0);
    expect(totalBytes(pc)).toBe(map.usedBytes);
    const copy = join(dir, `${key}-bad-copy.img`);
    await copyUsedExtents(img, map.extents, copy, bytes.length);
    expect((await fsckFat(copy)).code).toBe(0);
    const back = await readBackFat(copy, join(dir, `${key}-bad-out`));
    expect(back.size).toBeGreaterThan(0);
  });

  it('reports the boot-sector dirty flag that fsck.fat sees', async () => {
    const img = join(dir, `${key}-dirty.img`);
    const bytes = await edit(images[key], img, (b) => {
      b[key === 'FAT32' ? 65 : 37] |= 1;
    });
    const id = await fat.identify(new BufferSource(bytes));
    expect(id.state?.dirty).toBe(true);
    expect(id.warnings?.join(' ')).toMatch(/not cleanly unmounted/);
    const fsck = await fsckFat(img);
    expect(fsck.output).toMatch(/[Dd]irty bit is set/);
    const clean = await fat.identify(new BufferSource(await fsp.readFile(images[key])));
    expect(clean.state?.dirty).toBe(false);
    expect(clean.warnings).toBeUndefined();
  });

  it('reports a cleared "clean shutdown" bit in FAT[1]', async () => {
    const bytes = await fsp.readFile(images[key]);
    const l = fatLayout(parseFatBootSector(bytes));
    const fat0 = bytes.subarray(l.fatStart, l.fatStart + l.fatBytes);
    setFatEntry(fat0, l.type, 1, l.type === 16 ? 0x7fff : 0x07ffffff);
    const id = await fat.identify(new BufferSource(bytes));
    expect(id.state?.dirty).toBe(true);
    setFatEntry(fat0, l.type, 1, l.type === 16 ? 0xbfff : 0x0bffffff);
    const io = await fat.identify(new BufferSource(bytes));
    expect(io.state).toMatchObject({ dirty: false, ioError: true });
  });

  it('stops when cancelled', async () => {
    const src = new BufferSource(await fsp.readFile(images[key]));
    await expect(fat.usedMap!(src, AbortSignal.abort())).rejects.toThrow();
    await expect(exfat.usedMap!(src, AbortSignal.abort())).rejects.toThrow();
  });
});

describe('probes do not claim each other', () => {
  it('fat.probe rejects exFAT, exfat.probe rejects FAT', async () => {
    const img = join(dir, 'ex.img');
    await mkfsExfat(img, { sizeBytes: 16 * MiB, clusterSize: '4K' });
    const ex = (await fsp.readFile(img)).subarray(0, 69632);
    expect(exfat.probe(ex, 16 * MiB)).toBe(true);
    expect(fat.probe(ex, 16 * MiB)).toBe(false);
    for (const key of ['FAT16', 'FAT32']) {
      const head = (await fsp.readFile(images[key])).subarray(0, 69632);
      expect(fat.probe(head, head.length)).toBe(true);
      expect(exfat.probe(head, head.length)).toBe(false);
    }
  });
});
