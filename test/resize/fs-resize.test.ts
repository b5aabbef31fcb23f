/**
 * Filesystem resizing on real filesystems (mkfs on sparse files, placed at a partition offset
 * inside a disk-image file). Oracles: the filesystems' own checkers (e2fsck -f -n, ntfsresize's
 * consistency check, fsck.fat -n, fsck.exfat -n), their info tools for the new size (dumpe2fs,
 * ntfsinfo, minfo), and every file's sha256 read back through an independent reader (read-only
 * loop mount, ntfs-3g, mtools).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource, SliceSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { detectFilesystem } from '../../rescue/engine/filesystems/detect.ts';
import { FAT_ENTRY, type FatLayout } from '../../rescue/engine/filesystems/fat-bpb.ts';
import type { FsIdentity } from '../../rescue/engine/filesystems/types.ts';
import { countUsed, FAT_TYPE_CLUSTERS, planFatResize } from '../../rescue/engine/resize/fs-fat-resize.ts';
import {
  type FsTarget,
  maximumSize,
  minimumSize,
  resizeFilesystem,
  resizeSupport,
  setPartitionStart,
} from '../../rescue/engine/resize/fs-resize.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';
import {
  buildResizeLab,
  type FsKind,
  fsck,
  hashes,
  loopsUnder,
  MiB,
  mkfs,
  populate,
  readHashes,
  reportedSize,
  sampleFiles,
  withLoop,
} from '../fixtures/resize.ts';

let dir: string;

beforeAll(async () => {
  dir = await makeTempDir('rescue-fsresize-');
});
afterAll(async () => {
  const left = await loopsUnder(dir);
  await fsp.rm(dir, { recursive: true, force: true });
  expect(left).toEqual([]);
});

async function identify(t: FsTarget): Promise<FsIdentity> {
  const f = await FileSource.open(t.path);
  try {
    return await detectFilesystem(new SliceSource(f, t.offset, t.size));
  } finally {
    await f.close();
  }
}

async function errorOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (isRescueError(e)) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('expected a RescueError');
}

/** The filesystem is clean, reports `size` bytes and every file reads back unchanged. */
async function expectIntact(
  kind: FsKind,
  t: FsTarget,
  want: Map<string, string>,
  size?: number,
): Promise<void> {
  const check = await fsck(kind, t);
  expect(check.code, check.out).toBe(0);
  if (size !== undefined) expect(await reportedSize(kind, t)).toBe(size);
  expect(await readHashes(kind, t, want.keys(), dir)).toEqual(want);
  expect(await loopsUnder(dir)).toEqual([]);
}

describe('resizeSupport', () => {
  it('says what can be resized and why not', () => {
    expect(resizeSupport({ type: 'ext4', version: 'has_journal extent 64bit flex_bg' })).toEqual({
      grow: true,
      shrink: true,
    });
    expect(resizeSupport({ type: 'ext4', version: 'has_journal extent bigalloc' })).toMatchObject({
      grow: false,
      shrink: false,
      why: expect.stringContaining('bigalloc'),
    });
    expect(resizeSupport({ type: 'ntfs', version: '3.1' })).toEqual({ grow: true, shrink: true });
    expect(resizeSupport({ type: 'ntfs', state: { hibernated: true } }).why).toMatch(/hibernated/);
    expect(resizeSupport({ type: 'ntfs', state: { dirty: true } }).why).toMatch(/chkdsk/);
    expect(resizeSupport({ type: 'vfat', version: 'FAT32' })).toMatchObject({ grow: true, shrink: true });
    expect(resizeSupport({ type: 'vfat', version: 'FAT16', blockSize: 2048 }).why).toMatch(/65524 clusters/);
    for (const type of ['exfat', 'swap', 'crypto_LUKS', 'BitLocker', 'LVM2_member', 'unknown'] as const) {
      const s = resizeSupport({ type });
      expect(s.grow || s.shrink, type).toBe(false);
      expect(s.why, type).toBeTruthy();
    }
    expect(resizeSupport(undefined)).toMatchObject({ grow: false, shrink: false });
  });
});

describe('FAT resize planner (pure)', () => {
  /** A FAT32-like layout with `clusters` clusters of one sector and a FAT with room for `fatEntries`. */
  function layout(type: 12 | 16 | 32, clusters: number, fatSectors: number): FatLayout {
    const rootDirBytes = type === 32 ? 0 : 512 * 32;
    const reservedBytes = (type === 32 ? 32 : 1) * 512;
    const fatBytes = fatSectors * 512;
    const dataStart = reservedBytes + 2 * fatBytes + rootDirBytes;
    return {
      type,
      bytesPerSector: 512,
      sectorsPerCluster: 1,
      clusterBytes: 512,
      totalSectors: dataStart / 512 + clusters,
      volumeBytes: dataStart + clusters * 512,
      reservedBytes,
      numFats: 2,
      fatStart: reservedBytes,
      fatBytes,
      rootDirStart: reservedBytes + 2 * fatBytes,
      rootDirBytes,
      rootEntries: rootDirBytes / 32,
      dataStart,
      clusterCount: clusters,
      rootCluster: type === 32 ? 2 : 0,
      fsInfoSector: type === 32 ? 1 : 0,
      backupBootSector: type === 32 ? 6 : 0,
      mirroring: true,
      activeFat: 0,
    };
  }

  it('maps every used cluster to one distinct cluster inside the new range, moving only into free ones', () => {
    const clusters = 70_000;
    const fatSectors = Math.ceil(((clusters + 2) * 4) / 512);
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 2, max: clusters + 1 }), { maxLength: 3000 }),
        fc.integer({ min: 66_000, max: 140_000 }),
        (usedList, newClusters) => {
          const l = layout(32, clusters, fatSectors);
          const entries = new Uint32Array(clusters + 2);
          for (const c of usedList) entries[c] = FAT_ENTRY.EOC_MIN[32];
          const used = countUsed(entries, 32);
          const newTotal = l.dataStart / 512 + newClusters;
          let plan: ReturnType<typeof planFatResize>;
          try {
            plan = planFatResize(l, entries, newTotal);
          } catch (e) {
            // Only a size below what the used clusters need may be refused.
            expect(isRescueError(e) && e.code).toBe('E_RESIZE_FAILED');
            expect(used).toBeGreaterThan(newClusters - 2);
            return;
          }
          const moved = new Map(plan.moves);
          const seen = new Set<number>();
          for (let c = 2; c <= clusters + 1; c++) {
            if (entries[c] === 0) continue;
            const n = (moved.get(c) ?? c) - plan.shift;
            expect(n).toBeGreaterThanOrEqual(2);
            expect(n).toBeLessThanOrEqual(plan.newClusterCount + 1);
            expect(seen.has(n)).toBe(false);
            seen.add(n);
          }
          for (const [, to] of plan.moves) if (to <= clusters + 1) expect(entries[to]).toBe(0);
          // The FAT holds the new cluster count.
          expect(plan.newFatSectors * 128).toBeGreaterThanOrEqual(plan.newClusterCount + 2);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('never changes the FAT type', () => {
    const l16 = layout(16, 30_000, 128);
    const entries = new Uint32Array(30_002);
    expect(() => planFatResize(l16, entries, l16.dataStart / 512 + FAT_TYPE_CLUSTERS[16].max + 1000)).toThrow(
      /cannot have more than 65524 clusters/,
    );
    expect(() => planFatResize(l16, entries, l16.dataStart / 512 + 4000)).toThrow(/at least 4085 clusters/);
  });
});

describe('ext4 inside a disk image', () => {
  let t: FsTarget;
  let want: Map<string, string>;
  let fs: FsIdentity;
  let estimate: number;

  beforeAll(async () => {
    const lab = await buildResizeLab(join(dir), 'ext4', {
      diskSize: 400 * MiB,
      offset: MiB,
      partSize: 300 * MiB,
      fsSize: 128 * MiB,
      fillerBytes: 60 * MiB,
      seed: 1,
    });
    t = lab.target;
    want = hashes(lab.files);
    fs = await identify(t);
    expect(fs.type).toBe('ext4');
    estimate = await withLoop(t, async (dev) => {
      // resize2fs -P insists on a check newer than the last mount (the lab filled it mounted):
      // when both fell in the same second it passes, otherwise it refuses.
      await run('e2fsck', ['-fp', dev]);
      const r = await run('resize2fs', ['-P', dev]);
      return Number(/minimum size of the filesystem: (\d+)/.exec(r.stdout)?.[1]) * 4096;
    });
  });

  it('reports a minimum above resize2fs -P, in whole MiB, below the current size', async () => {
    const min = await minimumSize(t, fs);
    expect(min % MiB).toBe(0);
    expect(min).toBeGreaterThan(estimate);
    expect(min).toBeLessThan(128 * MiB);
  });

  it('refuses to shrink below the minimum with E_RESIZE_FAILED and leaves the filesystem intact', async () => {
    const e = await errorOf(resizeFilesystem(t, fs, estimate - 8 * MiB));
    expect(e.code).toBe('E_RESIZE_FAILED');
    expect(e.message).toMatch(/resize2fs/);
    await expectIntact('ext4', t, want, 128 * MiB);
  });

  it('shrinks to the minimum, then grows to the whole partition', async () => {
    const min = await minimumSize(t, fs);
    await resizeFilesystem(t, fs, min);
    await expectIntact('ext4', t, want, min);
    await resizeFilesystem(t, fs, 300 * MiB);
    await expectIntact('ext4', t, want, 300 * MiB);
    const max = await maximumSize(t, fs);
    expect(max).toBeGreaterThanOrEqual(16 * 1024 * 1024 * MiB);
  });
});

describe('ext4 in a whole image file (no loop device)', () => {
  it('repairs what e2fsck -y can, resizes, and refuses what it cannot repair', async () => {
    const img = join(dir, 'whole-ext4.img');
    await mkfs('ext4', img, 64 * MiB);
    const files = sampleFiles(5, 2 * MiB);
    await populate('ext4', img, dir, files, 0);
    await fsp.truncate(img, 96 * MiB);
    const t = { path: img, offset: 0, size: 96 * MiB };
    const fs = await identify(t);
    // Not cleanly unmounted (an image of a running system): the minimum can still be asked for.
    await run('debugfs', ['-w', '-R', 'ssv state 0', img]);
    expect(await minimumSize(t, fs)).toBeLessThan(64 * MiB);
    // A wrong free-blocks count: e2fsck -f -y corrects it (exit 1), so the resize goes on.
    await run('debugfs', ['-w', '-R', 'ssv free_blocks_count 17', img]);
    const lines: string[] = [];
    await resizeFilesystem(t, fs, 96 * MiB, { log: (l) => lines.push(l) });
    expect(lines.some((l) => /e2fsck repaired/.test(l))).toBe(true);
    await expectIntact('ext4', { path: img, offset: 0, size: 96 * MiB }, hashes(files), 96 * MiB);
    // A superblock e2fsck will not touch without being told which backup to use.
    await run('debugfs', ['-w', '-R', 'ssv first_data_block 7', img]);
    const e = await errorOf(resizeFilesystem(t, fs, 80 * MiB));
    expect(e.code).toBe('E_RESIZE_UNCLEAN');
    expect(e.message).toMatch(/e2fsck/);
  });

  it('resizes ext4 with meta_bg (no resize inode) both ways', async () => {
    const img = join(dir, 'metabg.img');
    await sparseFile(img, 64 * MiB);
    await run('mkfs.ext4', ['-q', '-F', '-b', '1024', '-O', 'meta_bg,^resize_inode', img]);
    const files = sampleFiles(7, 3 * MiB);
    await populate('ext4', img, dir, files, 20 * MiB);
    await fsp.truncate(img, 160 * MiB);
    const t = { path: img, offset: 0, size: 160 * MiB };
    const fs = await identify(t);
    expect(fs.version).toMatch(/meta_bg/);
    const min = await minimumSize(t, fs);
    await resizeFilesystem(t, fs, min);
    // resize2fs truncates a regular file it is given; the range the caller named must stay.
    expect((await fsp.stat(img)).size).toBe(160 * MiB);
    await expectIntact('ext4', t, hashes(files), min);
    await resizeFilesystem(t, fs, 160 * MiB);
    await expectIntact('ext4', t, hashes(files), 160 * MiB);
  });

  it('refuses bigalloc, whose resize2fs support is "not fully tested"', async () => {
    const img = join(dir, 'bigalloc.img');
    await sparseFile(img, 64 * MiB);
    await run('mkfs.ext4', ['-q', '-F', '-O', 'bigalloc', '-C', '16384', img]);
    const t = { path: img, offset: 0, size: 64 * MiB };
    const fs = await identify(t);
    expect(resizeSupport(fs).shrink).toBe(false);
    expect((await errorOf(resizeFilesystem(t, fs, 48 * MiB))).code).toBe('E_RESIZE_UNSUPPORTED');
    expect((await errorOf(minimumSize(t, fs))).code).toBe('E_RESIZE_UNSUPPORTED');
  });

  it('stops with E_CANCELLED when aborted and leaves no loop device', async () => {
    const disk = join(dir, 'abort.disk');
    await sparseFile(disk, 200 * MiB);
    const img = join(dir, 'abort.fs');
    await mkfs('ext4', img, 96 * MiB);
    await run('dd', [`if=${img}`, `of=${disk}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
    const t = { path: disk, offset: MiB, size: 150 * MiB };
    const fs = await identify(t);
    const before = new AbortController();
    before.abort();
    expect((await errorOf(resizeFilesystem(t, fs, 150 * MiB, { signal: before.signal }))).code).toBe(
      'E_CANCELLED',
    );
    // Aborted while e2fsck runs: the child is killed and the loop device detached.
    const during = new AbortController();
    const p = resizeFilesystem(t, fs, 150 * MiB, {
      signal: during.signal,
      log: (l) => {
        if (l.startsWith('e2fsck:')) during.abort();
      },
    });
    expect((await errorOf(p)).code).toBe('E_CANCELLED');
    expect(await loopsUnder(dir)).toEqual([]);
  });
});

describe('NTFS inside a disk image', () => {
  let t: FsTarget;
  let want: Map<string, string>;
  let fs: FsIdentity;

  beforeAll(async () => {
    const lab = await buildResizeLab(dir, 'ntfs', {
      diskSize: 400 * MiB,
      offset: MiB,
      partSize: 300 * MiB,
      fsSize: 128 * MiB,
      fillerBytes: 60 * MiB,
      seed: 2,
    });
    t = lab.target;
    want = hashes(lab.files);
    fs = await identify(t);
    expect(fs.type).toBe('ntfs');
  });

  it('refuses to shrink below the minimum with E_RESIZE_FAILED and leaves the volume clean', async () => {
    const info = await withLoop(t, (dev) => run('ntfsresize', ['--info', '--no-progress-bar', dev]));
    const toolMin = Number(/You might resize at (\d+) bytes/.exec(info.stdout)?.[1]);
    const min = await minimumSize(t, fs);
    expect(min % MiB).toBe(0);
    expect(min).toBeGreaterThan(toolMin);
    expect(min).toBeLessThan(128 * MiB);
    const e = await errorOf(resizeFilesystem(t, fs, toolMin - 4 * MiB));
    expect(e.code).toBe('E_RESIZE_FAILED');
    // Not even marked for chkdsk: ntfsresize --info without --force still accepts it.
    const still = await withLoop(t, (dev) =>
      run('ntfsresize', ['--info', '--no-progress-bar', dev], { allowFail: true }),
    );
    expect(still.code, still.stdout + still.stderr).toBe(0);
    await expectIntact('ntfs', t, want);
  });

  it('shrinks to the minimum with a backup boot sector at the new end', async () => {
    const min = await minimumSize(t, fs);
    await resizeFilesystem(t, fs, min);
    const clusters = Math.floor((min - 512) / 4096);
    await expectIntact('ntfs', t, want, clusters * 4096);
    const f = await FileSource.open(t.path);
    try {
      const boot = await f.read(t.offset, 512);
      const total = Number(boot.readBigInt64LE(0x28));
      expect(total).toBe(clusters * 8);
      expect((await f.read(t.offset + total * 512, 512)).equals(boot)).toBe(true);
    } finally {
      await f.close();
    }
  });

  it('refuses a volume marked for chkdsk (ntfsresize marks it after resizing) with E_RESIZE_UNCLEAN', async () => {
    const e = await errorOf(resizeFilesystem(t, fs, 200 * MiB));
    expect(e.code).toBe('E_RESIZE_UNCLEAN');
    expect(e.message).toMatch(/chkdsk/);
    expect((await errorOf(minimumSize(t, fs))).code).toBe('E_RESIZE_UNCLEAN');
  });

  it('setPartitionStart writes hidden sectors into both boot sectors; ntfs-3g still reads everything', async () => {
    await setPartitionStart(t, fs, 3 * MiB, 512);
    const f = await FileSource.open(t.path);
    try {
      const boot = await f.read(t.offset, 512);
      const total = Number(boot.readBigInt64LE(0x28));
      const backup = await f.read(t.offset + total * 512, 512);
      expect(boot.readUInt32LE(0x1c)).toBe(6144);
      expect(backup.readUInt32LE(0x1c)).toBe(6144);
      expect(backup.equals(boot)).toBe(true);
    } finally {
      await f.close();
    }
    await expectIntact('ntfs', t, want);
  });
});

describe('NTFS in a whole image file (no loop device)', () => {
  it('grows to the end of the file', async () => {
    const img = join(dir, 'whole-ntfs.img');
    await mkfs('ntfs', img, 96 * MiB);
    const files = sampleFiles(6, 2 * MiB);
    await populate('ntfs', img, dir, files, 0);
    await fsp.truncate(img, 200 * MiB);
    const t = { path: img, offset: 0, size: 200 * MiB };
    const fs = await identify(t);
    const lines: string[] = [];
    await resizeFilesystem(t, fs, 200 * MiB, { log: (l) => lines.push(l) });
    expect(lines.some((l) => /attached \/dev\/loop/.test(l))).toBe(false);
    const clusters = Math.floor((200 * MiB - 512) / 4096);
    await expectIntact('ntfs', t, hashes(files), clusters * 4096);
  });
});

describe('FAT32 ESP (512-byte clusters, which fatresize cannot resize)', () => {
  let t: FsTarget;
  let want: Map<string, string>;
  let fs: FsIdentity;

  beforeAll(async () => {
    const lab = await buildResizeLab(dir, 'fat32', {
      diskSize: 400 * MiB,
      offset: MiB,
      partSize: 300 * MiB,
      fsSize: 100 * MiB,
      fillerBytes: 50 * MiB,
      seed: 3,
    });
    t = lab.target;
    want = hashes(lab.files);
    fs = await identify(t);
    expect(fs.type).toBe('vfat');
    expect(fs.version).toBe('FAT32');
  });

  it('reports a minimum that keeps FAT32 at ≥ 65525 clusters and refuses less with E_RESIZE_FAILED', async () => {
    const min = await minimumSize(t, fs);
    expect(min % MiB).toBe(0);
    expect(min).toBeGreaterThan(65_525 * 512);
    expect(min).toBeLessThan(100 * MiB);
    const e = await errorOf(resizeFilesystem(t, fs, 30 * MiB));
    expect(e.code).toBe('E_RESIZE_FAILED');
    expect(e.message).toMatch(/65525 clusters/);
    await expectIntact('fat32', t, want, 100 * MiB);
  });

  it('shrinks to the minimum (moving files and directories), then grows with a larger FAT', async () => {
    const min = await minimumSize(t, fs);
    await resizeFilesystem(t, fs, min);
    await expectIntact('fat32', t, want, min);
    expect((await identify(t)).version).toBe('FAT32');
    // 256 MiB needs a FAT twice as large: the data area moves and every cluster is renumbered.
    await resizeFilesystem(t, fs, 256 * MiB);
    await expectIntact('fat32', t, want, 256 * MiB);
    expect((await identify(t)).label).toBe(fs.label);
    expect((await identify(t)).uuid).toBe(fs.uuid);
  });

  it('repairs a dirty bit with fsck.fat before resizing', async () => {
    const f = await FileSource.open(t.path, { writable: true });
    try {
      const boot = await f.read(t.offset, 512);
      boot[64 + 1] |= 1;
      await f.write(t.offset, boot);
    } finally {
      await f.close();
    }
    expect((await fsck('fat32', t)).code).not.toBe(0);
    await resizeFilesystem(t, fs, 200 * MiB);
    await expectIntact('fat32', t, want, 200 * MiB);
  });

  it('setPartitionStart writes hidden sectors into the boot sector and its backup', async () => {
    await setPartitionStart(t, fs, 2 * MiB, 512);
    const minfo = await run('minfo', ['-i', `${t.path}@@${t.offset}`], { env: { MTOOLS_SKIP_CHECK: '1' } });
    expect(minfo.stdout).toMatch(/hidden sectors: 4096/);
    const f = await FileSource.open(t.path);
    try {
      expect((await f.read(t.offset + 6 * 512, 512)).readUInt32LE(0x1c)).toBe(4096);
    } finally {
      await f.close();
    }
    await expectIntact('fat32', t, want);
  });
});

describe('FAT16 and FAT12', () => {
  it('FAT16: shrinks, grows to its cluster limit, and refuses more with E_RESIZE_UNSUPPORTED untouched', async () => {
    const lab = await buildResizeLab(dir, 'fat16', {
      diskSize: 300 * MiB,
      offset: 2 * MiB,
      partSize: 256 * MiB,
      fsSize: 64 * MiB,
      fillerBytes: 30 * MiB,
      seed: 4,
    });
    const t = lab.target;
    const want = hashes(lab.files);
    const fs = await identify(t);
    expect(fs.version).toBe('FAT16');
    const min = await minimumSize(t, fs);
    await resizeFilesystem(t, fs, min);
    await expectIntact('fat16', t, want, min);
    const max = await maximumSize(t, fs);
    expect(max).toBeLessThan(256 * MiB);
    const e = await errorOf(resizeFilesystem(t, fs, 256 * MiB));
    expect(e.code).toBe('E_RESIZE_UNSUPPORTED');
    await expectIntact('fat16', t, want, min);
    await resizeFilesystem(t, fs, max);
    await expectIntact('fat16', t, want, max);
    expect((await identify(t)).version).toBe('FAT16');
    await setPartitionStart(t, fs, 4 * MiB, 512);
    const minfo = await run('minfo', ['-i', `${t.path}@@${t.offset}`], { env: { MTOOLS_SKIP_CHECK: '1' } });
    expect(minfo.stdout).toMatch(/hidden sectors: 8192/);
    await expectIntact('fat16', t, want);
  });

  it('FAT12: shrinks and grows back', async () => {
    const lab = await buildResizeLab(dir, 'fat12', {
      diskSize: 16 * MiB,
      offset: MiB,
      partSize: 8 * MiB,
      fsSize: 4 * MiB,
      fillerBytes: 2 * MiB,
      seed: 5,
    });
    const t = lab.target;
    const want = hashes(lab.files);
    const fs = await identify(t);
    expect(fs.version).toBe('FAT12');
    await resizeFilesystem(t, fs, 2 * MiB);
    await expectIntact('fat12', t, want, 2 * MiB);
    const max = Math.min(await maximumSize(t, fs), 8 * MiB);
    await resizeFilesystem(t, fs, max);
    await expectIntact('fat12', t, want, Math.floor(max / 512) * 512);
    expect((await identify(t)).version).toBe('FAT12');
  });

  it('FAT16 property: any file set and any size between the minimum and the limit keeps every file', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 0, max: 12 }),
        async (seed, where, fillerMiB) => {
          const sub = await fsp.mkdtemp(join(dir, 'prop-'));
          try {
            const lab = await buildResizeLab(sub, 'fat16', {
              diskSize: 80 * MiB,
              offset: MiB,
              partSize: 64 * MiB,
              fsSize: 32 * MiB,
              fillerBytes: fillerMiB * MiB,
              seed,
            });
            const fs = await identify(lab.target);
            const min = await minimumSize(lab.target, fs);
            const max = Math.min(await maximumSize(lab.target, fs), 64 * MiB);
            const size = Math.floor((min + where * (max - min)) / 512) * 512;
            await resizeFilesystem(lab.target, fs, size);
            await expectIntact('fat16', lab.target, hashes(lab.files), size);
          } finally {
            await fsp.rm(sub, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 4 },
    );
  });
});

describe('exFAT', () => {
  it('is not resized, but setPartitionStart updates PartitionOffset in both boot regions', async () => {
    const img = join(dir, 'x.exfat');
    await sparseFile(img, 64 * MiB);
    await run('mkfs.exfat', ['-L', 'X', img]);
    const t = { path: img, offset: 0, size: 64 * MiB };
    const fs = await identify(t);
    expect(fs.type).toBe('exfat');
    expect((await errorOf(resizeFilesystem(t, fs, 32 * MiB))).code).toBe('E_RESIZE_UNSUPPORTED');
    await setPartitionStart(t, fs, 1 * MiB, 512);
    const b = await fsp.readFile(img);
    expect(b.readBigUInt64LE(64)).toBe(2048n);
    expect(b.readBigUInt64LE(12 * 512 + 64)).toBe(2048n);
    const r = await run('fsck.exfat', ['-n', img], { allowFail: true });
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('leaves ext alone', async () => {
    const img = join(dir, 'noop.ext4');
    await mkfs('ext4', img, 32 * MiB);
    const before = await fsp.readFile(img);
    await setPartitionStart({ path: img, offset: 0, size: 32 * MiB }, { type: 'ext4' }, MiB, 512);
    expect((await fsp.readFile(img)).equals(before)).toBe(true);
  });
});
