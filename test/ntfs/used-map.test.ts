/**
 * Real NTFS volumes (mkntfs, filled through ntfs-3g) against independent oracles: blkid for the
 * identity, ntfsinfo / partclone for the used space, and the strongest check — only our used
 * extents copied into a zeroed file must still be a clean volume whose every file reads back
 * bit-identical through ntfs-3g.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { ntfs } from '../../rescue/engine/filesystems/ntfs.ts';
import type { UsedMap } from '../../rescue/engine/filesystems/types.ts';
import { assertWellFormedExtents, copyUsedExtents, makeTempDir, run } from '../fixtures/lab.ts';
import {
  blkid,
  makeNtfs,
  type NtfsImage,
  ntfsinfoUsage,
  partcloneUsedBlocks,
  populateNtfs,
  readTree,
  withNtfsMount,
} from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;

interface Case {
  name: string;
  size: number;
  clusterSize: number;
  label: string;
  scale: number;
  compressed: boolean;
  partclone?: boolean;
  sectorSize?: number;
}

const CASES: Case[] = [
  {
    name: '4 KiB clusters, 128 MiB',
    size: 128 * MiB,
    clusterSize: 4096,
    label: 'Rescue NTFS',
    scale: 1,
    compressed: true,
    partclone: true,
  },
  {
    name: '512 B clusters, 64 MiB',
    size: 64 * MiB,
    clusterSize: 512,
    label: 'tiny clusters',
    scale: 0.4,
    compressed: true,
  },
  {
    name: '64 KiB clusters, 256 MiB',
    size: 256 * MiB,
    clusterSize: 65536,
    label: 'Große Cluster',
    scale: 1,
    compressed: false,
  },
  // 4Kn: 4096-byte sectors, so the backup boot sector is 4 KiB too.
  {
    name: '4 KiB sectors (4Kn), 64 MiB',
    size: 64 * MiB,
    clusterSize: 4096,
    sectorSize: 4096,
    label: '4Kn',
    scale: 0.4,
    compressed: true,
  },
  // 0xF8 in the boot sector: 2^(256-248) sectors per cluster, the encoding for clusters > 64 KiB.
  {
    name: '128 KiB clusters, 256 MiB',
    size: 256 * MiB,
    clusterSize: 131072,
    label: 'x',
    scale: 0.5,
    compressed: false,
  },
];

describe.each(CASES)('NTFS $name', (c) => {
  let dir: string;
  let img: NtfsImage;
  let expected: Map<string, string>;
  let map: UsedMap;

  beforeAll(async () => {
    dir = await makeTempDir('rescue-ntfs-');
    img = await makeNtfs(join(dir, 'vol.img'), {
      size: c.size,
      clusterSize: c.clusterSize,
      label: c.label,
      sectorSize: c.sectorSize,
    });
    ({ value: expected } = await withNtfsMount(img.image, join(dir, 'mnt'), (mnt) =>
      populateNtfs(mnt, {
        seed: c.clusterSize,
        scale: c.scale,
        clusterSize: c.clusterSize,
        compressed: c.compressed,
      }),
    ));
    const src = await FileSource.open(img.image);
    try {
      map = await ntfs.usedMap!(src);
    } finally {
      await src.close();
    }
  });

  afterAll(async () => {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('the fixture holds what the test claims: fragmented, sparse and compressed files', async () => {
    const runsOf = async (path: string) => {
      const { stdout } = await run('ntfsinfo', ['-v', '-F', path, img.image]);
      const data = stdout.slice(stdout.indexOf('Dumping attribute $DATA'));
      return {
        flags: Number.parseInt(data.match(/Attribute flags:\s*0x([0-9a-f]+)/i)?.[1] ?? 'x', 16),
        runs: data.split('\n').filter((l) => /^\s+0x[0-9a-f]+\s+(0x[0-9a-f]+|<HOLE>)\s+0x/i.test(l)).length,
      };
    };
    expect((await runsOf('/frag/filler.bin')).runs).toBeGreaterThanOrEqual(4);
    expect((await runsOf('/sparse.bin')).flags & 0x8000).toBe(0x8000);
    if (c.compressed) expect((await runsOf('/compressed/text.txt')).flags & 0x0001).toBe(0x0001);
  });

  it('identifies the volume as blkid does', async () => {
    const src = await FileSource.open(img.image);
    const id = await ntfs.identify(src);
    await src.close();
    const b = await blkid(img.image);
    expect(b.TYPE).toBe('ntfs');
    expect(id.type).toBe('ntfs');
    expect(id.uuid).toBe(b.UUID);
    expect(id.label).toBe(b.LABEL);
    expect(id.label).toBe(c.label);
    expect(id.blockSize).toBe(c.clusterSize);
    // mkntfs counts every sector but the last, which holds the backup boot sector.
    expect(id.size).toBe(c.size);
    expect(id.version).toBe('3.1');
    expect(id.state).toMatchObject({ dirty: false, hibernated: false });
    expect(id.warnings).toEqual([]);
    expect(ntfs.probe(await fsp.readFile(img.image).then((b) => b.subarray(0, 69632)), c.size)).toBe(true);
  });

  it('maps at least what libntfs-3g counts as used, and hardly more', async () => {
    assertWellFormedExtents(map.extents, c.size);
    expect(map.method).toBe('allocation');
    const u = await ntfsinfoUsage(img.image);
    expect(u.clusterSize).toBe(c.clusterSize);
    const oracle = (u.clusters - u.free) * u.clusterSize;
    const extra = map.usedBytes - oracle;
    console.log(
      `[ntfs ${c.name}] ours ${map.usedBytes} B in ${map.extents.length} extents; ntfsinfo ${oracle} B ` +
        `(${u.clusters - u.free} clusters); extra ${extra} B`,
    );
    expect(extra).toBeGreaterThanOrEqual(0);
    // Only the backup boot sector lies outside the clusters $Bitmap describes.
    expect(extra).toBe(c.sectorSize ?? 512);
    if (c.partclone) {
      const p = await partcloneUsedBlocks(img.image);
      console.log(
        `[ntfs ${c.name}] partclone.ntfs: ${p.used} blocks of ${p.blockSize} B = ${p.used * p.blockSize} B`,
      );
      expect(map.usedBytes).toBeGreaterThanOrEqual(p.used * p.blockSize);
      expect(map.usedBytes - p.used * p.blockSize).toBe(c.sectorSize ?? 512);
    }
  });

  it('a copy of only the used extents is a clean volume with every file bit-identical', async () => {
    const copy = join(dir, 'copy.img');
    await copyUsedExtents(img.image, map.extents, copy, c.size);
    const fix = await run('ntfsfix', ['-n', copy], { allowFail: true });
    expect(fix.code, fix.stdout + fix.stderr).toBe(0);
    expect(fix.stdout).toContain('processed successfully');
    const { value: tree } = await withNtfsMount(copy, join(dir, 'mnt-copy'), readTree, { readOnly: true });
    expect(tree.files.size).toBe(expected.size);
    for (const [path, hash] of expected) expect(tree.files.get(path), path).toBe(hash);
    // Same cluster usage as the original, as libntfs-3g sees it.
    expect(await ntfsinfoUsage(copy)).toEqual(await ntfsinfoUsage(img.image));
    await fsp.rm(copy);
  });

  it.runIf(c.clusterSize === 4096)('the copy check would notice a map that dropped data', async () => {
    // Drop the largest extent that is not system metadata: some file must then read back wrong.
    const victim = map.extents.slice(1).reduce((a, b) => (b.length > a.length ? b : a));
    const copy = join(dir, 'bad.img');
    await copyUsedExtents(
      img.image,
      map.extents.filter((e) => e !== victim),
      copy,
      c.size,
    );
    // Noticed one way or another: ntfs-3g cannot mount it (the $MFT was dropped), a directory
    // that lost its index fails with EIO, or some file reads back wrong.
    let wrong: number;
    try {
      ({ value: wrong } = await withNtfsMount(
        copy,
        join(dir, 'mnt-bad'),
        async (mnt) => {
          try {
            const tree = await readTree(mnt);
            return [...expected].filter(([p, h]) => tree.files.get(p) !== h).length;
          } catch (e) {
            expect((e as NodeJS.ErrnoException).code).toBe('EIO');
            return Number.POSITIVE_INFINITY;
          }
        },
        { readOnly: true },
      ));
    } catch (e) {
      expect(String(e)).toMatch(/exited with \d+ before mounting/);
      wrong = Number.POSITIVE_INFINITY;
    }
    expect(wrong).toBeGreaterThan(0);
    await fsp.rm(copy);
  });
});
