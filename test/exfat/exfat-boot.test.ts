/**
 * The pure exFAT codecs (boot sector, boot checksum, layout validation) and the used map on
 * synthetic volumes with layouts mkfs.exfat cannot make: TexFAT's two FATs and bitmaps, unchained
 * and fragmented bitmaps, multi-cluster root directories, damaged chains.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { exfat } from '../../rescue/engine/filesystems/exfat.ts';
import {
  EXFAT_BOOT,
  type ExfatBootSector,
  exfatBootChecksum,
  exfatLayout,
  parseExfatBootSector,
  verifyExfatBootRegion,
  writeExfatBootSector,
} from '../../rescue/engine/filesystems/exfat-boot.ts';
import type { UsedMap } from '../../rescue/engine/filesystems/types.ts';
import {
  buildSyntheticExfat,
  mkfsExfat,
  type SyntheticExfat,
  type SyntheticImage,
} from '../fixtures/exfat.ts';
import { assertWellFormedExtents, makeTempDir } from '../fixtures/lab.ts';

function expectCorrupt(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    expect(isRescueError(e)).toBe(true);
    expect((e as { code: string }).code).toBe('E_METADATA_CORRUPT');
    return;
  }
  throw new Error('expected a corrupt() error');
}

async function expectRejectCorrupt(p: Promise<unknown>, why?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(isRescueError(e), String(e)).toBe(true);
    expect((e as { code: string }).code).toBe('E_METADATA_CORRUPT');
    if (why) expect((e as Error).message).toMatch(why);
    return;
  }
  throw new Error('expected a corrupt() rejection');
}

describe('boot checksum on a real mkfs.exfat volume', () => {
  let dir: string;
  let region: Buffer;
  beforeAll(async () => {
    dir = await makeTempDir('rescue-exfatboot-');
    const img = join(dir, 'e.img');
    await mkfsExfat(img, { sizeBytes: 16 * 1024 * 1024, clusterSize: '4K', label: 'Chk' });
    const h = await fsp.open(img, 'r');
    region = Buffer.alloc(24 * 512);
    await h.read(region, 0, region.length, 0);
    await h.close();
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('verifies the main and the backup region', () => {
    const sum = verifyExfatBootRegion(region, 512);
    expect(verifyExfatBootRegion(region.subarray(12 * 512), 512)).toBe(sum);
    expect(exfatBootChecksum(region, 512)).toBe(region.readUInt32LE(11 * 512));
  });
  it('ignores VolumeFlags and PercentInUse, catches any other change', () => {
    for (const off of [106, 107, 112]) {
      const r = Buffer.from(region);
      r[off] ^= 0xff;
      expect(() => verifyExfatBootRegion(r, 512)).not.toThrow();
    }
    for (const off of [
      0,
      3,
      72,
      100,
      300,
      511,
      512,
      5 * 512 + 17,
      10 * 512 + 511,
      11 * 512,
      11 * 512 + 300,
    ]) {
      const r = Buffer.from(region);
      r[off] ^= 0x01;
      expectCorrupt(() => verifyExfatBootRegion(r, 512));
    }
  });
});

function sampleBoot(over: Partial<ExfatBootSector> = {}): ExfatBootSector {
  return {
    jump: [0xeb, 0x76, 0x90],
    fileSystemName: EXFAT_BOOT.NAME,
    mustBeZeroOk: true,
    partitionOffset: 2048n,
    volumeLength: 131072n,
    fatOffset: 2048,
    fatLength: 128,
    clusterHeapOffset: 4096,
    clusterCount: 15872,
    firstClusterOfRootDirectory: 5,
    volumeSerialNumber: 0xcafe1234,
    revisionMajor: 1,
    revisionMinor: 0,
    volumeFlags: 0,
    bytesPerSectorShift: 9,
    sectorsPerClusterShift: 3,
    numberOfFats: 1,
    driveSelect: 0x80,
    percentInUse: 3,
    signature: EXFAT_BOOT.SIGNATURE,
    ...over,
  };
}

describe('boot sector codec and layout validation', () => {
  it('parse(write(x)) = x', () => {
    const u8 = fc.integer({ min: 0, max: 255 });
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    fc.assert(
      fc.property(
        fc.record({
          partitionOffset: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
          volumeLength: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
          fatOffset: u32,
          fatLength: u32,
          clusterHeapOffset: u32,
          clusterCount: u32,
          firstClusterOfRootDirectory: u32,
          volumeSerialNumber: u32,
          revisionMajor: u8,
          revisionMinor: u8,
          volumeFlags: fc.integer({ min: 0, max: 0xffff }),
          bytesPerSectorShift: u8,
          sectorsPerClusterShift: u8,
          numberOfFats: u8,
          driveSelect: u8,
          percentInUse: u8,
        }),
        (r) => {
          const bs = sampleBoot(r);
          expect(parseExfatBootSector(writeExfatBootSector(bs))).toEqual(bs);
        },
      ),
      { numRuns: 300 },
    );
  });
  it('derives byte offsets', () => {
    const l = exfatLayout(sampleBoot());
    expect(l).toMatchObject({
      bytesPerSector: 512,
      clusterBytes: 4096,
      volumeBytes: 131072 * 512,
      fatStart: 2048 * 512,
      fatBytes: 128 * 512,
      heapStart: 4096 * 512,
      clusterCount: 15872,
      rootCluster: 5,
      activeFat: 0,
      dirty: false,
    });
    expect(exfatLayout(sampleBoot({ volumeFlags: 2 })).dirty).toBe(true);
    expect(
      exfatLayout(sampleBoot({ volumeFlags: 1, numberOfFats: 2, clusterHeapOffset: 4096 })).activeFat,
    ).toBe(1);
    expect(exfatLayout(sampleBoot({ volumeFlags: 1 })).activeFat).toBe(0);
  });
  const bad: [string, Partial<ExfatBootSector>, RegExp][] = [
    ['wrong name', { fileSystemName: 'NTFS    ' }, /file system name/],
    ['no signature', { signature: 0 }, /signature/],
    ['BPB bytes not zero', { mustBeZeroOk: false }, /not zero/],
    ['sector shift 8', { bytesPerSectorShift: 8 }, /BytesPerSectorShift/],
    ['sector shift 13', { bytesPerSectorShift: 13 }, /BytesPerSectorShift/],
    ['cluster above 32 MiB', { sectorsPerClusterShift: 17 }, /above 32 MiB/],
    ['no FAT', { numberOfFats: 0 }, /NumberOfFats/],
    ['three FATs', { numberOfFats: 3 }, /NumberOfFats/],
    ['revision 2.0', { revisionMajor: 2 }, /revision/],
    ['FAT inside the boot regions', { fatOffset: 12 }, /overlaps the boot regions/],
    ['FAT length 0', { fatLength: 0 }, /FatLength is 0/],
    ['heap overlapping the FAT', { clusterHeapOffset: 2100 }, /overlaps the FAT/],
    ['no clusters', { clusterCount: 0 }, /ClusterCount 0/],
    ['heap beyond the volume', { clusterCount: 16000 }, /beyond VolumeLength/],
    ['FAT too small', { fatLength: 8 }, /too small/],
    ['root cluster 1', { firstClusterOfRootDirectory: 1 }, /root directory cluster/],
    ['root cluster past the end', { firstClusterOfRootDirectory: 15874 }, /root directory cluster/],
    ['absurd volume length', { volumeLength: 2n ** 63n }, /absurdly large/],
  ];
  it.each(bad)('%s → corrupt', (_n, over, why) => {
    expectCorrupt(() => exfatLayout(sampleBoot(over)));
    expect(() => exfatLayout(sampleBoot(over))).toThrow(why);
  });
});

/** Clusters (2-based) whose bytes lie entirely inside the map. */
function coveredClusters(map: UsedMap, img: SyntheticImage, clusterCount: number): Set<number> {
  const out = new Set<number>();
  for (let c = 2; c < clusterCount + 2; c++) {
    const s = img.heapStart + (c - 2) * img.clusterBytes;
    if (map.extents.some((e) => e.start <= s && e.start + e.length >= s + img.clusterBytes)) out.add(c);
  }
  return out;
}

async function mapOf(s: SyntheticExfat) {
  const img = buildSyntheticExfat(s);
  const src = new BufferSource(img.bytes);
  const id = await exfat.identify(src);
  const map = await exfat.usedMap!(src);
  assertWellFormedExtents(map.extents, img.volumeBytes);
  // Boot regions, FAT(s) and the slack after the heap are always in.
  expect(map.extents[0]).toMatchObject({ start: 0 });
  expect(map.extents[0].length).toBeGreaterThanOrEqual(img.heapStart);
  const last = map.extents[map.extents.length - 1];
  expect(last.start + last.length).toBe(img.volumeBytes);
  return { img, id, map, clusters: coveredClusters(map, img, s.clusterCount) };
}

const base: SyntheticExfat = {
  sectorShift: 9,
  clusterShift: 0,
  clusterCount: 10000,
  numberOfFats: 1,
  rootClusters: [2],
  bitmaps: [{ index: 0, clusters: [3, 4, 5], chained: true, used: [10, 11, 12, 4000, 9000, 10001] }],
  label: 'Synthetic',
};

describe('used map on synthetic volumes', () => {
  it('reads a 3-cluster chained bitmap: exactly the marked clusters', async () => {
    const { id, clusters } = await mapOf(base);
    expect([...clusters].sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 10, 11, 12, 4000, 9000, 10001]);
    expect(id).toMatchObject({
      type: 'exfat',
      label: 'Synthetic',
      uuid: '1234-ABCD',
      blockSize: 512,
      version: '1.0',
    });
  });
  it('reads a fragmented bitmap through its FAT chain', async () => {
    const { clusters } = await mapOf({
      ...base,
      bitmaps: [{ index: 0, clusters: [40, 7, 300], chained: true, used: [8, 5000, 9999] }],
    });
    expect([...clusters].sort((a, b) => a - b)).toEqual([2, 7, 8, 40, 300, 5000, 9999]);
  });
  it('takes an unchained bitmap (FAT entry 0) as contiguous', async () => {
    const { clusters } = await mapOf({
      ...base,
      bitmaps: [{ index: 0, clusters: [20, 21, 22], chained: false, used: [6000, 9500] }],
    });
    expect([...clusters].sort((a, b) => a - b)).toEqual([2, 20, 21, 22, 6000, 9500]);
  });
  it('TexFAT: takes the union of both bitmaps and follows the active FAT', async () => {
    const { clusters, id } = await mapOf({
      ...base,
      numberOfFats: 2,
      activeFat: 1,
      rootClusters: [2, 50],
      paddingEntries: 20,
      bitmaps: [
        { index: 0, clusters: [3, 4, 5], chained: true, used: [100, 101] },
        { index: 1, clusters: [6, 7, 8], chained: true, used: [200, 7777] },
      ],
      // FAT 0 is stale for the root directory's second cluster; FAT 1 is the active one.
      fatOverrides: [{ cluster: 2, value: 0xffffffff, fat: 0 }],
    });
    expect([...clusters].sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7, 8, 50, 100, 101, 200, 7777]);
    expect(id.state?.activeFat).toBe(1);
  });
  it('finds the bitmap entry in the second cluster of a fragmented root directory', async () => {
    const { clusters } = await mapOf({ ...base, rootClusters: [2, 900, 60], paddingEntries: 30 });
    expect(clusters.has(900)).toBe(true);
    expect(clusters.has(60)).toBe(true);
    expect(clusters.has(4000)).toBe(true);
  });
  it('reports the dirty flag', async () => {
    const { id } = await mapOf({ ...base, dirty: true });
    expect(id.state?.dirty).toBe(true);
    expect(id.warnings?.join(' ')).toMatch(/not cleanly unmounted/);
  });
  it('works with 4096-byte sectors and 8 sectors per cluster', async () => {
    const { clusters, id } = await mapOf({
      ...base,
      sectorShift: 12,
      clusterShift: 3,
      clusterCount: 3000,
      bitmaps: [{ index: 0, clusters: [3], chained: true, used: [2999, 3001] }],
    });
    expect([...clusters].sort((a, b) => a - b)).toEqual([2, 3, 2999, 3001]);
    expect(id.blockSize).toBe(32768);
  });

  const broken: [string, Partial<SyntheticExfat>, RegExp][] = [
    [
      'bitmap shorter than ClusterCount bits',
      { bitmaps: [{ index: 0, clusters: [3], chained: true, used: [], dataLength: 1000 }] },
      /cannot cover/,
    ],
    [
      'bitmap chain ends early',
      {
        bitmaps: [{ index: 0, clusters: [3, 4, 5], chained: true, used: [] }],
        fatOverrides: [{ cluster: 4, value: 0xffffffff }],
      },
      /ends after 2 of 3/,
    ],
    [
      'bitmap chain loops',
      {
        bitmaps: [{ index: 0, clusters: [3, 4, 5], chained: true, used: [] }],
        fatOverrides: [{ cluster: 4, value: 3 }],
      },
      /loops/,
    ],
    ['root chain loops', { rootClusters: [2, 60], fatOverrides: [{ cluster: 60, value: 2 }] }, /loops/],
    [
      'root chain points to a free cluster number 0',
      { rootClusters: [2, 60], fatOverrides: [{ cluster: 2, value: 0 }] },
      /invalid cluster/,
    ],
    [
      'root chain points past the heap',
      { rootClusters: [2, 60], fatOverrides: [{ cluster: 2, value: 20000 }] },
      /invalid cluster/,
    ],
    ['no allocation bitmap', { bitmaps: [] }, /no allocation bitmap/],
    ['active bitmap missing on TexFAT', { numberOfFats: 2, activeFat: 1 }, /no allocation bitmap 2/],
    [
      'bitmap first cluster 0',
      { bitmaps: [{ index: 0, clusters: [0], chained: false, used: [] }] },
      /outside/,
    ],
  ];
  it.each(broken)('%s → corrupt', async (_n, over, why) => {
    const img = buildSyntheticExfat({ ...base, ...over });
    await expectRejectCorrupt(exfat.usedMap!(new BufferSource(img.bytes)), why);
  });

  it('identify still names a volume whose root directory chain is broken, with a warning', async () => {
    const img = buildSyntheticExfat({
      ...base,
      rootClusters: [2, 60],
      fatOverrides: [{ cluster: 60, value: 2 }],
    });
    const id = await exfat.identify(new BufferSource(img.bytes));
    expect(id.type).toBe('exfat');
    expect(id.uuid).toBe('1234-ABCD');
    expect(id.label).toBeUndefined();
    expect(id.warnings?.join(' ')).toMatch(/root directory could not be read.*loops/);
  });

  it('refuses a truncated image and a damaged boot region', async () => {
    const img = buildSyntheticExfat(base);
    for (const len of [0, 100, 512, 12 * 512, 24 * 512, img.bytes.length - 512]) {
      const src = new BufferSource(img.bytes.subarray(0, len));
      await expect(exfat.identify(src)).rejects.toSatisfy(isRescueError);
      await expect(exfat.usedMap!(src)).rejects.toSatisfy(isRescueError);
    }
    const bad = Buffer.from(img.bytes);
    bad[EXFAT_BOOT.OFF_CLUSTER_COUNT] ^= 1;
    await expectRejectCorrupt(exfat.identify(new BufferSource(bad)), /checksum/);
  });
});
