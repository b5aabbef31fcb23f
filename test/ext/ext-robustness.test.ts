import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource, FileSource } from '../../rescue/engine/devices/source.ts';
import { ext } from '../../rescue/engine/filesystems/ext.ts';
import { dumpe2fsUsed, fillTree, mkfsExt, uncovered, withMounted } from '../fixtures/ext.ts';
import { copyUsedExtents, identifyAndMap, makeTempDir, run } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
let small: Buffer;
let smallCsum: Buffer;

beforeAll(async () => {
  dir = await makeTempDir('rescue-ext-fuzz-');
  const a = join(dir, 'plain.img');
  await mkfsExt(a, 16 * MiB, 'ext2', ['-b', '1024', '-g', '2048', '-N', '512']);
  await withMounted(a, join(dir, 'mnt'), (m) => fillTree(m, 7, 0.25));
  small = await fsp.readFile(a);
  const b = join(dir, 'csum.img');
  await mkfsExt(b, 16 * MiB, 'ext4', [
    '-b',
    '1024',
    '-g',
    '2048',
    '-N',
    '512',
    '-O',
    'metadata_csum,flex_bg',
  ]);
  await withMounted(b, join(dir, 'mnt'), (m) => fillTree(m, 8, 0.25));
  smallCsum = await fsp.readFile(b);
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function analyse(bytes: Buffer): Promise<'ok' | 'refused'> {
  return identifyAndMap(ext, new BufferSource(bytes));
}

describe('ext on damaged metadata', () => {
  it('random byte mutations of the superblock, descriptors and bitmaps never crash or hang', async () => {
    for (const base of [small, smallCsum]) {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(fc.integer({ min: 0, max: 96 * 1024 - 1 }), fc.integer({ min: 0, max: 255 })), {
            minLength: 1,
            maxLength: 24,
          }),
          async (mutations) => {
            const bytes = Buffer.from(base);
            for (const [off, val] of mutations) bytes[off] = val;
            await analyse(bytes);
          },
        ),
        { numRuns: 250 },
      );
    }
  });

  it('a truncated filesystem is a typed error', async () => {
    for (const len of [0, 1500, 2048, 8192, 1 * MiB]) {
      await expect(analyse(small.subarray(0, len))).resolves.toBe('refused');
    }
  });

  it('a block bitmap whose checksum is wrong makes its whole group count as used', async () => {
    // Group 1's bitmap zeroed: the bitmap claims the group is empty.
    const { before, map } = await withZeroedBitmap('bad-bitmap.img', smallCsum, 1);
    expect(map.reason).toMatch(/group\(s\) 1\b/);
    expect(uncovered(before.used, map.extents)).toBe(0);
  });

  it('a zeroed bitmap on ext2 (no checksums) disagrees with the free count and keeps its group', async () => {
    const { img, bitmapBlock, before, map } = await withZeroedBitmap('bad-bitmap2.img', small, 0);
    expect(map.reason).toMatch(/group\(s\) 0\b/);
    expect(uncovered(before.used, map.extents)).toBe(0);
    // And the copy still checks clean against the original's metadata (restore the bitmap first).
    const copy = `${img}.copy`;
    await copyUsedExtents(img, map.extents, copy, small.length);
    const hc = await fsp.open(copy, 'r+');
    await hc.write(small, bitmapBlock * 1024, 1024, bitmapBlock * 1024);
    await hc.close();
    const fsck = await run('e2fsck', ['-f', '-n', copy], { allowFail: true });
    expect(fsck.code, fsck.stdout).toBe(0);
  });

  it('a corrupted group descriptor on a checksummed filesystem is refused, not guessed', async () => {
    const bytes = Buffer.from(smallCsum);
    bytes[2 * 1024 + 0x08] ^= 0x40; // group 0's inode table location, in the GDT at block 2
    await expect(analyse(bytes)).resolves.toBe('refused');
  });
});

/** Writes `base` to a new image, zeroes the block bitmap of `group` (1 KiB blocks) and maps it. */
async function withZeroedBitmap(name: string, base: Buffer, group: number) {
  const img = join(dir, name);
  await fsp.writeFile(img, base);
  const out = (await run('dumpe2fs', [img])).stdout;
  const m = new RegExp(`^Group ${group}:[\\s\\S]*?Block bitmap at (\\d+)`, 'm').exec(out);
  const bitmapBlock = Number(m![1]);
  const before = await dumpe2fsUsed(img);
  const h = await fsp.open(img, 'r+');
  await h.write(Buffer.alloc(1024), 0, 1024, bitmapBlock * 1024);
  await h.close();
  const src = await FileSource.open(img);
  const map = await ext.usedMap!(src);
  await src.close();
  return { img, bitmapBlock, before, map };
}
