/**
 * Damaged NTFS volumes: random byte mutations of the boot sector and of the first MFT records of
 * a real image, and truncated images. identify()/usedMap() must either succeed with a well-formed
 * result or throw a RescueError — never another exception, never hang.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BlockSource, BufferSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError, RescueError } from '../../rescue/engine/errors.ts';
import { totalBytes } from '../../rescue/engine/filesystems/extents.ts';
import { ntfs } from '../../rescue/engine/filesystems/ntfs.ts';
import { parseNtfsBootSector } from '../../rescue/engine/filesystems/ntfs-boot.ts';
import { assertWellFormedExtents, makeTempDir, pseudoRandomBytes } from '../fixtures/lab.ts';
import { forgeLogFile, makeNtfs, withNtfsMount } from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;

/** The image with byte patches laid over it, without copying all of it per case. */
class PatchedSource implements BlockSource {
  readonly path = '<patched>';
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 512;
  readonly writable = false;
  private readonly base: BufferSource;
  private readonly patches: readonly { offset: number; value: number }[];
  constructor(base: Buffer, patches: readonly { offset: number; value: number }[]) {
    this.base = new BufferSource(base);
    this.patches = patches;
  }
  get size(): number {
    return this.base.size;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    const b = await this.base.read(offset, length);
    for (const p of this.patches)
      if (p.offset >= offset && p.offset < offset + length) b[p.offset - offset] = p.value;
    return b;
  }
  async close(): Promise<void> {}
}

let dir: string;
let image: Buffer;
let mftStart: number;
let recordSize: number;
let logStart: number;

beforeAll(async () => {
  dir = await makeTempDir('rescue-ntfs-fuzz-');
  const img = await makeNtfs(join(dir, 'small.img'), { size: 16 * MiB, clusterSize: 4096, label: 'Fuzz' });
  await withNtfsMount(img.image, join(dir, 'mnt'), async (mnt) => {
    await fsp.writeFile(
      join(mnt, 'hiberfil.sys'),
      Buffer.concat([Buffer.from('HIBR'), pseudoRandomBytes(8192, 3)]),
    );
    await fsp.mkdir(join(mnt, 'docs'));
    for (let i = 0; i < 40; i++)
      await fsp.writeFile(join(mnt, `docs/${i}.txt`), pseudoRandomBytes(100 + i * 300, i + 1));
    await fsp.writeFile(join(mnt, 'big.bin'), pseudoRandomBytes(2 * MiB, 99));
  });
  // An open journal, so the restart page parser is on the path the mutations take.
  logStart = await forgeLogFile(img.image, { clean: false });
  image = await fsp.readFile(img.image);
  const boot = parseNtfsBootSector(image);
  mftStart = boot.mftLcn * boot.clusterSize;
  recordSize = boot.mftRecordSize;
});

afterAll(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

/** Runs identify and usedMap; returns how each ended, failing on anything but a RescueError. */
async function exercise(src: BlockSource): Promise<{ identified: boolean; mapped: boolean }> {
  const out = { identified: false, mapped: false };
  try {
    const id = await ntfs.identify(src);
    expect(id.type).toBe('ntfs');
    expect(id.size).toBeLessThanOrEqual(src.size);
    out.identified = true;
  } catch (e) {
    if (!isRescueError(e)) throw e;
  }
  try {
    const map = await ntfs.usedMap!(src);
    assertWellFormedExtents(map.extents, src.size);
    expect(map.usedBytes).toBe(totalBytes(map.extents));
    out.mapped = true;
  } catch (e) {
    if (!isRescueError(e)) throw e;
  }
  return out;
}

const patches = (start: number, length: number) =>
  fc.array(
    fc.record({
      offset: fc.integer({ min: start, max: start + length - 1 }),
      value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 0xff, 0x7f, 0x80, 0x01)),
    }),
    { minLength: 1, maxLength: 8 },
  );

describe('NTFS on damaged images', () => {
  it('the undamaged image works (so the properties below test damage, not a broken fixture)', async () => {
    const src = new BufferSource(image);
    const id = await ntfs.identify(src);
    expect(id).toMatchObject({
      label: 'Fuzz',
      state: { hibernated: true, dirty: false, logfileClean: false },
    });
    expect(await exercise(src)).toEqual({ identified: true, mapped: true });
  });

  it('random mutations of the boot sector', async () => {
    let mapped = 0;
    await fc.assert(
      fc.asyncProperty(patches(0, 512), async (p) => {
        if ((await exercise(new PatchedSource(image, p))).mapped) mapped++;
      }),
      { numRuns: 300 },
    );
    // Many boot sector bytes (boot code, serial) do not matter: some cases must still map.
    expect(mapped).toBeGreaterThan(0);
  });

  it('random mutations of the first 16 MFT records ($MFT, $MFTMirr, $Volume, root, $Bitmap …)', async () => {
    let failed = 0;
    await fc.assert(
      fc.asyncProperty(patches(mftStart, 16 * recordSize), async (p) => {
        const r = await exercise(new PatchedSource(image, p));
        if (!r.mapped) failed++;
      }),
      { numRuns: 400 },
    );
    expect(failed).toBeGreaterThan(0);
  });

  it('random mutations of the $LogFile restart pages', async () => {
    let identified = 0;
    await fc.assert(
      fc.asyncProperty(patches(logStart, 8192), async (p) => {
        if ((await exercise(new PatchedSource(image, p))).identified) identified++;
      }),
      { numRuns: 200 },
    );
    // The journal is not needed for the identity: a damaged one costs a warning, not the result.
    expect(identified).toBe(200);
  });

  it('mutations concentrated on attribute headers of $MFT and $Bitmap records', async () => {
    // Headers and runlists live in the first ~0x180 bytes of a record: hit them densely.
    const rec0 = fc.array(
      fc.record({
        offset: fc.oneof(
          fc.integer({ min: mftStart + 0x14, max: mftStart + 0x1a0 }),
          fc.integer({ min: mftStart + 6 * recordSize + 0x14, max: mftStart + 6 * recordSize + 0x1a0 }),
        ),
        value: fc.integer({ min: 0, max: 255 }),
      }),
      { minLength: 1, maxLength: 3 },
    );
    await fc.assert(
      fc.asyncProperty(rec0, async (p) => {
        await exercise(new PatchedSource(image, p));
      }),
      { numRuns: 400 },
    );
  });
});

describe('NTFS on truncated images', () => {
  it.each([
    ['half the volume', () => image.length / 2],
    ['all but 4 KiB', () => image.length - 4096],
    ['100 bytes', () => 100],
    ['nothing', () => 0],
  ])('%s → RescueError from identify and usedMap', async (_name, len) => {
    const src = new BufferSource(image.subarray(0, len()));
    await expect(ntfs.identify(src)).rejects.toBeInstanceOf(RescueError);
    await expect(ntfs.usedMap!(src)).rejects.toBeInstanceOf(RescueError);
  });

  it('missing only the backup boot sector: usable, with a warning', async () => {
    const src = new BufferSource(image.subarray(0, image.length - 512));
    const id = await ntfs.identify(src);
    expect(id.size).toBe(image.length - 512);
    expect(id.warnings?.join(' ')).toMatch(/backup boot sector/);
    const map = await ntfs.usedMap!(src);
    assertWellFormedExtents(map.extents, src.size);
    const full = await ntfs.usedMap!(new BufferSource(image));
    expect(map.usedBytes).toBe(full.usedBytes - 512);
  });

  it('usedMap stops when its signal is aborted', async () => {
    await expect(ntfs.usedMap!(new BufferSource(image), AbortSignal.abort())).rejects.toHaveProperty(
      'name',
      'AbortError',
    );
  });

  it('probe rejects non-NTFS bytes and accepts the real boot sector', () => {
    expect(ntfs.probe(image.subarray(0, 69632), image.length)).toBe(true);
    expect(ntfs.probe(Buffer.alloc(69632), image.length)).toBe(false);
    expect(ntfs.probe(Buffer.alloc(10), 10)).toBe(false);
  });
});
