/**
 * Robustness: random byte mutations of the boot sector, FSInfo, FATs and root directory of real small
 * volumes. identify/usedMap either succeed with well-formed extents or throw RescueError — never
 * another exception, never a hang. Truncated images are refused with RescueError.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { fat } from '../../rescue/engine/filesystems/fat.ts';
import { fatLayout, parseFatBootSector } from '../../rescue/engine/filesystems/fat-bpb.ts';
import { fillFat, mkfsFat } from '../fixtures/fat.ts';
import { identifyAndMap, makeTempDir } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
const images: Record<string, { bytes: Buffer; metaEnd: number; rootAt: number }> = {};

beforeAll(async () => {
  dir = await makeTempDir('rescue-fatfuzz-');
  for (const [key, bits, size] of [
    ['FAT12', 12, 2 * MiB],
    ['FAT16', 16, 16 * MiB],
    ['FAT32', 32, 40 * MiB],
  ] as const) {
    const img = join(dir, `${key}.img`);
    await mkfsFat(img, { sizeBytes: size, fatBits: bits, sectorsPerCluster: 1, label: key });
    await fillFat(img, dir, { seed: bits, rounds: 3, clusterBytes: 512 });
    const bytes = await fsp.readFile(img);
    const layout = fatLayout(parseFatBootSector(bytes));
    const rootAt = layout.type === 32 ? layout.dataStart : layout.rootDirStart;
    images[key] = { bytes, metaEnd: layout.dataStart, rootAt };
  }
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function outcome(src: BufferSource): Promise<'ok' | 'refused'> {
  return identifyAndMap(fat, src);
}

describe.each(['FAT12', 'FAT16', 'FAT32'])('%s under random mutation', (key) => {
  it('identify/usedMap succeed well-formed or throw RescueError', async () => {
    const { bytes, metaEnd, rootAt } = images[key];
    const where = fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: 0, max: 511 }) },
      { weight: 3, arbitrary: fc.integer({ min: 512, max: metaEnd - 1 }) },
      { weight: 2, arbitrary: fc.integer({ min: rootAt, max: rootAt + 1023 }) },
    );
    const counts = { ok: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(where, fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        async (muts) => {
          const saved = muts.map(([off]) => [off, bytes[off]] as const);
          for (const [off, v] of muts) bytes[off] = v;
          try {
            counts[await outcome(new BufferSource(bytes))]++;
          } finally {
            for (const [off, v] of saved.reverse()) bytes[off] = v;
          }
        },
      ),
      { numRuns: 400 },
    );
    // Both paths were exercised.
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.refused).toBeGreaterThan(0);
  });

  it('refuses a truncated image with RescueError', async () => {
    const { bytes } = images[key];
    for (const len of [0, 100, 511, 4096, Math.floor(bytes.length / 2), bytes.length - 512]) {
      const src = new BufferSource(bytes.subarray(0, len));
      await expect(fat.identify(src)).rejects.toSatisfy(isRescueError);
      await expect(fat.usedMap!(src)).rejects.toSatisfy(isRescueError);
    }
  });

  it('probe never throws and accepts the intact volume', () => {
    const { bytes } = images[key];
    expect(fat.probe(bytes.subarray(0, 69632), bytes.length)).toBe(true);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1024 }), (head) => {
        expect(typeof fat.probe(Buffer.from(head), head.length)).toBe('boolean');
      }),
    );
  });
});
