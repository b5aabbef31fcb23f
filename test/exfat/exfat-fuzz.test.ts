/**
 * Robustness: random byte mutations of a real small exFAT volume's boot sector (with the checksum
 * repaired, so the layout checks are reached), raw boot region, FAT, root directory and allocation
 * bitmap. identify/usedMap either succeed with well-formed extents or throw RescueError.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource } from '../../rescue/engine/devices/source.ts';
import { exfat } from '../../rescue/engine/filesystems/exfat.ts';
import {
  exfatBootChecksum,
  exfatLayout,
  parseExfatBootSector,
  writeExfatChecksumSector,
} from '../../rescue/engine/filesystems/exfat-boot.ts';
import { fillExfat, mkfsExfat, withExfatMount } from '../fixtures/exfat.ts';
import { identifyAndMap, makeTempDir } from '../fixtures/lab.ts';

let dir: string;
let bytes: Buffer;
let regions: { fat: number; root: number; bitmap: number; cluster: number };

beforeAll(async () => {
  dir = await makeTempDir('rescue-exfatfuzz-');
  const img = join(dir, 'e.img');
  await mkfsExfat(img, { sizeBytes: 16 * 1024 * 1024, clusterSize: '512', label: 'Fuzz' });
  await withExfatMount(img, {}, (mnt) =>
    fillExfat(mnt, { seed: 7, rounds: 4, clusterBytes: 512, manyFiles: 20 }),
  );
  bytes = await fsp.readFile(img);
  const layout = exfatLayout(parseExfatBootSector(bytes));
  const at = (c: number) => layout.heapStart + (c - 2) * layout.clusterBytes;
  // mkfs.exfat puts the bitmap in cluster 2 and the root directory after the up-case table.
  regions = {
    fat: layout.fatStart,
    root: at(layout.rootCluster),
    bitmap: at(2),
    cluster: layout.clusterBytes,
  };
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function outcome(src: BufferSource): Promise<'ok' | 'refused'> {
  return identifyAndMap(exfat, src);
}

/** Applies mutations, optionally repairs the main boot checksum, runs, and restores the bytes. */
async function tryMutations(muts: [number, number][], fixChecksum: boolean) {
  const touched = new Set(muts.map(([o]) => o));
  if (fixChecksum) for (let i = 11 * 512; i < 12 * 512; i++) touched.add(i);
  const saved = [...touched].map((o) => [o, bytes[o]] as const);
  for (const [off, v] of muts) bytes[off] = v;
  if (fixChecksum) bytes.set(writeExfatChecksumSector(exfatBootChecksum(bytes, 512), 512), 11 * 512);
  try {
    return await outcome(new BufferSource(bytes));
  } finally {
    for (const [off, v] of saved) bytes[off] = v;
  }
}

const value = fc.integer({ min: 0, max: 255 });

describe('exFAT under random mutation', () => {
  it('the intact volume is accepted', async () => {
    expect(await outcome(new BufferSource(bytes))).toBe('ok');
    expect(exfat.probe(bytes.subarray(0, 69632), bytes.length)).toBe(true);
  });

  it('boot sector fields (checksum repaired)', async () => {
    const counts = { ok: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 64, max: 112 }), value), { minLength: 1, maxLength: 4 }),
        async (m) => {
          counts[await tryMutations(m, true)]++;
        },
      ),
      { numRuns: 400 },
    );
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.refused).toBeGreaterThan(0);
  });

  it('raw boot region bytes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 24 * 512 - 1 }), value), { minLength: 1, maxLength: 6 }),
        async (m) => {
          await tryMutations(m, false);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('FAT, root directory and allocation bitmap bytes', async () => {
    const counts = { ok: 0, refused: 0 };
    const where = fc.oneof(
      fc.integer({ min: regions.fat, max: regions.fat + 4095 }),
      fc.integer({ min: regions.root, max: regions.root + regions.cluster - 1 }),
      fc.integer({ min: regions.bitmap, max: regions.bitmap + regions.cluster - 1 }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(where, value), { minLength: 1, maxLength: 8 }), async (m) => {
        counts[await tryMutations(m, false)]++;
      }),
      { numRuns: 400 },
    );
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.refused).toBeGreaterThan(0);
  });

  it('probe never throws', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1024 }), (head) => {
        expect(typeof exfat.probe(Buffer.from(head), head.length)).toBe('boolean');
      }),
    );
  });
});
