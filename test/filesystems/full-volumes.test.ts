/**
 * Volumes filled to the last cluster, then holed and filled again: the allocation maps are at
 * their densest and most fragmented. partclone's exact used map (its -D domain log) is the oracle
 * for every type, and a copy of only our extents must check clean and read back bit-identical.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { usedMapOf } from '../../rescue/engine/filesystems/detect.ts';
import { fsckExfat, mkfsExfat, readBackExfat, withExfatMount } from '../fixtures/exfat.ts';
import { hashTree, mkfsExt, withMounted } from '../fixtures/ext.ts';
import { bytesNotCovered, fsckFat, mkfsFat, mtools, partcloneDomain, readBackFat } from '../fixtures/fat.ts';
import { copyUsedExtents, makeTempDir, pseudoRandomBytes, run, sha256 } from '../fixtures/lab.ts';
import { makeNtfs, readTree, withNtfsMount } from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;
let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('rescue-full-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Writes one file; false (and no file left) when the volume is full. */
type Put = (name: string, data: Buffer) => Promise<boolean>;
type Remove = (name: string) => Promise<void>;

/**
 * Fills until the volume refuses, removes every third file, then fills the holes with bigger files
 * until it refuses again. Returns name → sha256 of the files that remain.
 */
async function fillToBrim(put: Put, remove: Remove, seed: number): Promise<Map<string, string>> {
  const kept = new Map<string, string>();
  let n = 0;
  const round = async (minSize: number, spread: number) => {
    for (let misses = 0; misses < 3 && n < 5000; n++) {
      const data = pseudoRandomBytes(minSize + ((n * 7919 + seed) % spread), seed + n);
      const name = `f${String(n).padStart(4, '0')}.bin`;
      if (await put(name, data)) kept.set(name, sha256(data));
      else misses++;
    }
  };
  await round(1024, 300 * 1024);
  const names = [...kept.keys()];
  for (let i = 0; i < names.length; i += 3) {
    await remove(names[i]);
    kept.delete(names[i]);
  }
  await round(200 * 1024, 600 * 1024);
  return kept;
}

function dirPut(root: string): Put {
  return async (name, data) => {
    try {
      await fsp.writeFile(join(root, name), data);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
      await fsp.rm(join(root, name), { force: true });
      return false;
    }
  };
}

async function checkMap(img: string, partcloneTool: string) {
  const src = await FileSource.open(img);
  const map = await usedMapOf(src);
  await src.close();
  expect(map.method).toBe('allocation');
  const domain = await partcloneDomain(partcloneTool, img, `${img}.domain`);
  expect(domain.length).toBeGreaterThan(0);
  expect(bytesNotCovered(domain, map.extents)).toBe(0);
  const theirs = domain.reduce((s, e) => s + e.length, 0);
  // Metadata we always include (a backup boot sector, a partial last cluster) is all we add.
  expect(map.usedBytes - theirs).toBeLessThanOrEqual(64 * 1024);
  const copy = `${img}.copy`;
  await copyUsedExtents(img, map.extents, copy, (await fsp.stat(img)).size);
  return { copy, ours: map.usedBytes, theirs };
}

describe('full volumes', () => {
  it('ext4', async () => {
    const img = join(dir, 'ext4.img');
    await mkfsExt(img, 48 * MiB, 'ext4', ['-b', '1024']);
    const mnt = join(dir, 'mnt-ext');
    const kept = await withMounted(img, mnt, (m) => fillToBrim(dirPut(m), (n) => fsp.rm(join(m, n)), 1));
    const { copy, ours, theirs } = await checkMap(img, 'partclone.extfs');
    expect((await run('e2fsck', ['-f', '-n', copy], { allowFail: true })).code).toBe(0);
    expect(await withMounted(copy, mnt, (m) => hashTree(m), true)).toEqual(kept);
    console.log(`full ext4: ${kept.size} files, ours ${ours} B, partclone ${theirs} B`);
  });

  it('NTFS', async () => {
    const { image: img } = await makeNtfs(join(dir, 'ntfs.img'), { size: 48 * MiB, clusterSize: 4096 });
    const mnt = join(dir, 'mnt-ntfs');
    const { value: kept } = await withNtfsMount(img, mnt, (m) =>
      fillToBrim(dirPut(m), (n) => fsp.rm(join(m, n)), 2),
    );
    const { copy, ours, theirs } = await checkMap(img, 'partclone.ntfs');
    expect((await run('ntfsfix', ['-n', copy], { allowFail: true })).code).toBe(0);
    const { value: back } = await withNtfsMount(copy, mnt, (m) => readTree(m), { readOnly: true });
    expect(back.files).toEqual(kept);
    console.log(`full NTFS: ${kept.size} files, ours ${ours} B, partclone ${theirs} B`);
  });

  it('exFAT', async () => {
    const img = join(dir, 'exfat.img');
    await mkfsExfat(img, { sizeBytes: 48 * MiB, clusterSize: '4K' });
    const kept = await withExfatMount(img, {}, (m) => fillToBrim(dirPut(m), (n) => fsp.rm(join(m, n)), 3));
    const { copy, ours, theirs } = await checkMap(img, 'partclone.exfat');
    expect((await fsckExfat(copy)).code).toBe(0);
    expect(await readBackExfat(copy)).toEqual(kept);
    console.log(`full exFAT: ${kept.size} files, ours ${ours} B, partclone ${theirs} B`);
  });

  it('FAT16', async () => {
    const img = join(dir, 'fat16.img');
    await mkfsFat(img, { sizeBytes: 48 * MiB, fatBits: 16, sectorsPerCluster: 4 });
    const staging = join(dir, 'staging');
    await fsp.mkdir(staging, { recursive: true });
    const put: Put = async (name, data) => {
      await fsp.writeFile(join(staging, name), data);
      const r = await run('mcopy', ['-i', img, join(staging, name), `::${name}`], {
        allowFail: true,
        env: { MTOOLS_SKIP_CHECK: '1' },
      });
      await fsp.rm(join(staging, name));
      if (r.code === 0) return true;
      await run('mdel', ['-i', img, `::${name}`], { allowFail: true, env: { MTOOLS_SKIP_CHECK: '1' } });
      return false;
    };
    const kept = await fillToBrim(put, async (n) => void (await mtools('mdel', ['-i', img, `::${n}`])), 4);
    const { copy, ours, theirs } = await checkMap(img, 'partclone.fat');
    expect((await fsckFat(copy)).code).toBe(0);
    expect(await readBackFat(copy, join(dir, 'fat-out'))).toEqual(kept);
    console.log(`full FAT16: ${kept.size} files, ours ${ours} B, partclone ${theirs} B`);
  });
});
