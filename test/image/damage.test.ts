/**
 * Every kind of damage to an image is detected with its own error, naming the image (and for
 * chunks the chunk number, region, window and disk offset), and checkImage reports it.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRescueError } from '../../rescue/engine/errors.ts';
import {
  type CheckReport,
  checkImage,
  ENTRY_FLAGS,
  type FinishResult,
  ImageReader,
  VolumeLayout,
} from '../../rescue/engine/image/index.ts';
import { serializeVolumeHeader } from '../../rescue/engine/image/layout.ts';
import {
  flipByte,
  randomExtents,
  regionData,
  rejectsWith,
  restoredView,
  type TestRegion,
  writeTestImage,
} from '../fixtures/image.ts';
import { makeTempDir } from '../fixtures/lab.ts';

const W = 32 * 1024;
let root: string;
let n = 0;

function regionsFor(seed: number): TestRegion[] {
  const part = regionData(1024 * 1024, seed);
  return [
    { id: 0, kind: 'lead-in', data: regionData(64 * 1024, seed + 1), start: 0 },
    { id: 2, data: part, extents: randomExtents(part.length, seed), start: 1024 * 1024 },
  ];
}

interface Built {
  res: FinishResult;
  regions: TestRegion[];
  password?: string;
  /** Offsets taken from an intact open. */
  indexOffset: number;
  manifestOffset: number;
  total: number;
  limit: number;
  payloads: {
    payloadOffset: number;
    storedLength: number;
    flags: number;
    regionId: number;
    windowStart: number;
  }[];
}

const built = new Map<string, Built>();

async function build(
  key: string,
  opts: { password?: string; split?: number; compression?: 'none' | 'normal' },
) {
  const dir = join(root, key);
  await fsp.mkdir(dir);
  const regions = regionsFor(key.length * 31);
  const res = await writeTestImage({
    dir,
    name: 'img',
    regions,
    password: opts.password,
    compression: opts.compression ?? 'normal',
    windowSize: W,
    splitBytes: opts.split,
    hooks: { minSplitBytes: 8192 },
  });
  const r = await ImageReader.open(res.firstFile, { password: opts.password });
  const b: Built = {
    res,
    regions,
    password: opts.password,
    indexOffset: r.trailer.indexOffset,
    manifestOffset: r.trailer.manifestOffset,
    total: r.header.totalLength,
    limit: r.header.volumeLimit,
    payloads: r.entries.map((e) => ({ ...e })),
  };
  await r.close();
  built.set(key, b);
}

/** A fresh copy of an image's files in its own directory. */
async function copyOf(key: string): Promise<{ files: string[]; first: string; b: Built }> {
  const b = built.get(key)!;
  const dir = join(root, `copy${n++}`);
  await fsp.mkdir(dir);
  const files: string[] = [];
  for (const f of b.res.files) {
    const to = join(dir, basename(f));
    await fsp.copyFile(f, to);
    files.push(to);
  }
  return { files, first: files[0], b };
}

/** Flips one byte at a logical offset of the image stream. */
async function flipLogical(files: string[], b: Built, pos: number, mask = 0x04): Promise<void> {
  const { volume, offset } = new VolumeLayout(b.limit).fileOffset(pos);
  await flipByte(files[volume - 1], offset, mask);
}

function onlyProblem(report: CheckReport) {
  expect(report.ok).toBe(false);
  expect(report.points).toHaveLength(1);
  expect(report.points[0].ok).toBe(false);
  return report.points[0].problems;
}

beforeAll(async () => {
  root = await makeTempDir('rescue-image-damage-');
  await build('plain', {});
  await build('secret', { password: 'open sesame' });
  await build('split', { split: 60_000 });
  await build('other', { split: 60_000 });
  await build('rawsecret', { password: 'pw', compression: 'none' });
  await build('raw', { compression: 'none' });
});
afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe('damaged images', () => {
  it('header: a flipped byte anywhere → E_HEADER_CORRUPT, also in the version field', async () => {
    for (const at of [20, 8, 68, 300, 4064]) {
      const { first, b } = await copyOf('plain');
      await flipByte(first, at);
      const e = await rejectsWith(ImageReader.open(first, { password: b.password }), 'E_HEADER_CORRUPT');
      expect(e.message).toContain(first);
      const probs = onlyProblem(await checkImage(first, {}));
      expect(probs.map((p) => p.code)).toEqual(['E_HEADER_CORRUPT']);
    }
  });

  it('a newer format version (with a valid checksum) → E_FORMAT_VERSION', async () => {
    const { first } = await copyOf('plain');
    const h = await fsp.readFile(first);
    h.writeUInt16LE(2, 8);
    createHash('sha256').update(h.subarray(0, 4064)).digest().copy(h, 4064);
    await fsp.writeFile(first, h);
    const e = await rejectsWith(ImageReader.open(first), 'E_FORMAT_VERSION');
    expect(e.message).toContain('version 2');
  });

  for (const key of ['plain', 'secret', 'raw'] as const) {
    it(`${key}: a flipped payload byte → E_CHUNK_CORRUPT naming chunk, region, window and disk offset`, async () => {
      const { first, files, b } = await copyOf(key);
      const k = b.payloads.findIndex((p) => p.regionId === 2 && p.storedLength > 100 && p.windowStart > 0);
      const target = b.payloads[k];
      await flipLogical(files, b, target.payloadOffset + (target.storedLength >> 1));
      const r = await ImageReader.open(first, { password: b.password });
      try {
        // Every other chunk still reads; this one never returns bytes.
        const e = await rejectsWith(r.readChunk(r.entries[k]), 'E_CHUNK_CORRUPT');
        const region = b.regions.find((x) => x.id === 2)!;
        const firstUsed = region.extents!.find((x) => x.start + x.length > target.windowStart)!;
        const diskOffset = region.start! + Math.max(firstUsed.start, target.windowStart);
        expect(e.details).toMatchObject({
          image: first,
          chunk: k,
          region: 2,
          windowStart: target.windowStart,
          diskOffset,
        });
        expect(e.message).toContain(first);
        expect(e.message).toContain(
          `chunk ${k} (region 2, window at ${target.windowStart}, disk offset ${diskOffset})`,
        );
        expect(e.message).toMatch({ secret: /AES-GCM/, plain: /zstd|sha256/, raw: /sha256 mismatch/ }[key]);
        await rejectsWith(r.readRegion(2, target.windowStart, 10), 'E_CHUNK_CORRUPT');
        await r.readChunk(r.entries[k - 1]);
        await r.readChunk(r.entries[k + 1]);
      } finally {
        await r.close();
      }
      const probs = onlyProblem(await checkImage(first, { password: b.password }));
      expect(probs).toHaveLength(1);
      expect(probs[0]).toMatchObject({
        code: 'E_CHUNK_CORRUPT',
        chunk: k,
        region: 2,
        windowStart: target.windowStart,
      });
      expect(probs[0].diskOffset).toBeGreaterThan(1024 * 1024);
    });
  }

  it('stored-raw encrypted payloads swapped between windows → E_CHUNK_CORRUPT (AAD binds the window)', async () => {
    const { first, files, b } = await copyOf('rawsecret');
    const full = b.payloads.filter((p) => p.regionId === 0 && p.storedLength === W + 28);
    expect(full.length).toBeGreaterThanOrEqual(2);
    const [p, q] = full;
    const bytes = await fsp.readFile(files[0]);
    const a = Buffer.from(bytes.subarray(p.payloadOffset, p.payloadOffset + p.storedLength));
    bytes.copy(bytes, p.payloadOffset, q.payloadOffset, q.payloadOffset + q.storedLength);
    a.copy(bytes, q.payloadOffset);
    await fsp.writeFile(files[0], bytes);
    const probs = onlyProblem(await checkImage(first, { password: b.password }));
    expect(probs.map((x) => x.code)).toEqual(['E_CHUNK_CORRUPT', 'E_CHUNK_CORRUPT']);
    expect(probs.every((x) => /AES-GCM/.test(x.message))).toBe(true);
  });

  it('a damaged record header → the data still verifies and reads; checkImage reports E_RECORD_CORRUPT', async () => {
    const { first, files, b } = await copyOf('plain');
    const k = 3;
    await flipLogical(files, b, b.payloads[k].payloadOffset - 32 + 5); // region id byte
    const r = await ImageReader.open(first);
    const region0 = b.regions[0];
    const data = await r.readRegion(0, 0, region0.data.length);
    expect(data.equals(region0.data)).toBe(true);
    await r.close();
    const probs = onlyProblem(await checkImage(first, {}));
    expect(probs).toHaveLength(1);
    expect(probs[0]).toMatchObject({ code: 'E_RECORD_CORRUPT', chunk: k, region: b.payloads[k].regionId });
    expect(probs[0].message).toContain('crc32c');
  });

  it('index: a flipped byte → E_INDEX_CORRUPT; checkImage walks the records instead and still finds bad chunks', async () => {
    const { first, files, b } = await copyOf('plain');
    await flipLogical(files, b, b.indexOffset + 7);
    const e = await rejectsWith(ImageReader.open(first), 'E_INDEX_CORRUPT');
    expect(e.message).toContain(first);
    let probs = onlyProblem(await checkImage(first, {}));
    expect(probs.map((p) => p.code)).toEqual(['E_INDEX_CORRUPT']);
    // Also damage a compressed payload: found by the record walk (zstd checksum).
    const k = b.payloads.findIndex((p) => p.flags === 0);
    await flipLogical(files, b, b.payloads[k].payloadOffset + 40);
    const report = await checkImage(first, {});
    probs = onlyProblem(report);
    expect(probs.map((p) => p.code)).toEqual(['E_INDEX_CORRUPT', 'E_CHUNK_CORRUPT']);
    expect(probs[1]).toMatchObject({
      chunk: k,
      region: b.payloads[k].regionId,
      windowStart: b.payloads[k].windowStart,
    });
    expect(report.chunks).toBe(b.payloads.length);
  });

  it('manifest: a flipped byte → E_MANIFEST_CORRUPT; checkImage still verifies every chunk', async () => {
    for (const key of ['plain', 'secret']) {
      const { first, files, b } = await copyOf(key);
      await flipLogical(files, b, b.manifestOffset + 20);
      await rejectsWith(ImageReader.open(first, { password: b.password }), 'E_MANIFEST_CORRUPT');
      const report = await checkImage(first, { password: b.password });
      expect(onlyProblem(report).map((p) => p.code)).toEqual(['E_MANIFEST_CORRUPT']);
      expect(report.chunks).toBe(b.payloads.length);
    }
  });

  it('trailer: a flipped byte → E_TRAILER_CORRUPT', async () => {
    for (const at of [3, 30, 130, 240]) {
      const { first, files, b } = await copyOf('split');
      await flipLogical(files, b, b.total - 256 + at);
      const e = await rejectsWith(ImageReader.open(first), 'E_TRAILER_CORRUPT');
      expect(e.message).toContain(first);
      expect(onlyProblem(await checkImage(files[1], {})).map((p) => p.code)).toEqual(['E_TRAILER_CORRUPT']);
    }
  });

  it('volume header of volume 2: a flipped byte → E_HEADER_CORRUPT naming that file', async () => {
    const { first, files } = await copyOf('split');
    await flipByte(files[1], 30);
    const e = await rejectsWith(ImageReader.open(first), 'E_HEADER_CORRUPT');
    expect(e.message).toContain(files[1]);
    expect(e.message).toContain(first);
  });

  it('truncated files → E_VOLUME_TRUNCATED with the volume number', async () => {
    {
      const { first } = await copyOf('plain');
      const size = (await fsp.stat(first)).size;
      await fsp.truncate(first, size - 1000);
      const e = await rejectsWith(ImageReader.open(first), 'E_VOLUME_TRUNCATED');
      expect(e.details).toMatchObject({ volume: 1, size: size - 1000, expected: size });
      expect(onlyProblem(await checkImage(first, {})).map((p) => p.code)).toEqual(['E_VOLUME_TRUNCATED']);
    }
    {
      const { first, files } = await copyOf('split');
      const last = files[files.length - 1];
      await fsp.truncate(last, (await fsp.stat(last)).size - 1);
      const e = await rejectsWith(ImageReader.open(first), 'E_VOLUME_TRUNCATED');
      expect(e.details).toMatchObject({ volume: files.length, file: last });
      await fsp.truncate(files[1], 5000);
      const e2 = await rejectsWith(ImageReader.open(last), 'E_VOLUME_TRUNCATED');
      expect(e2.details).toMatchObject({ volume: 2 });
      expect(e2.message).toContain(basename(files[1]));
    }
  });

  it('a missing middle volume → E_VOLUME_MISSING naming its number, whichever volume is opened', async () => {
    const { first, files } = await copyOf('split');
    expect(files.length).toBeGreaterThanOrEqual(4);
    await fsp.rm(files[1]);
    for (const f of [first, files[2], files[files.length - 1]]) {
      const e = await rejectsWith(ImageReader.open(f), 'E_VOLUME_MISSING');
      expect(e.details).toMatchObject({ volume: 2, file: files[1] });
      expect(e.message).toContain('volume 2');
    }
    expect(onlyProblem(await checkImage(files[2], {})).map((p) => p.code)).toEqual(['E_VOLUME_MISSING']);
    // The first volume missing is found from any other volume too.
    const c2 = await copyOf('split');
    await fsp.rm(c2.first);
    const e = await rejectsWith(ImageReader.open(c2.files[2]), 'E_VOLUME_MISSING');
    expect(e.details).toMatchObject({ volume: 1 });
  });

  it('a volume of another image, or bytes appended → E_VOLUME_MISMATCH', async () => {
    const mine = await copyOf('split');
    const theirs = built.get('other')!;
    // Volume 2 is full-size in both images, so only its image id tells them apart.
    await fsp.copyFile(theirs.res.files[1], mine.files[1]);
    const e = await rejectsWith(ImageReader.open(mine.first), 'E_VOLUME_MISMATCH');
    expect(e.message).toMatch(/volume 2 .* image id differs/);
    const c = await copyOf('plain');
    await fsp.appendFile(c.first, 'extra');
    await rejectsWith(ImageReader.open(c.first), 'E_VOLUME_MISMATCH');
    // A stale volume beyond the image's count, left by an earlier, longer image of the same name.
    const s = await copyOf('split');
    const k = s.files.length + 1;
    const stale = `${s.first}.${k}`;
    const vh = serializeVolumeHeader({
      imageId: Buffer.alloc(16, 9),
      volume: k,
      logicalOffset: 1,
      volumeLimit: 60_000,
    });
    await fsp.writeFile(stale, Buffer.concat([vh, Buffer.alloc(1000)]));
    const e2 = await rejectsWith(ImageReader.open(stale), 'E_VOLUME_MISMATCH');
    expect(e2.message).toContain(`only ${k - 1} volumes`);
    // A volume file renamed to another number.
    await fsp.rename(stale, `${s.first}.${k + 1}`);
    const e3 = await rejectsWith(ImageReader.open(`${s.first}.${k + 1}`), 'E_NOT_AN_IMAGE');
    expect(e3.message).toContain(`volume ${k} of an image`);
    // Opening the image itself ignores such leftovers.
    await (await ImageReader.open(s.first)).close();
  });

  it('passwords: wrong → E_WRONG_PASSWORD at open, before the index or any chunk is touched', async () => {
    const { first, files, b } = await copyOf('secret');
    await rejectsWith(ImageReader.open(first), 'E_PASSWORD_REQUIRED');
    await rejectsWith(ImageReader.open(first, { password: 'open sesamE' }), 'E_WRONG_PASSWORD');
    await rejectsWith(ImageReader.open(first, { password: 'y'.repeat(65) }), 'E_PASSWORD_INVALID');
    // Destroy every chunk payload and the index: the verdict is still "wrong password", which
    // proves that nothing past the header and trailer was needed to reach it.
    for (const p of b.payloads) if (p.storedLength > 0) await flipLogical(files, b, p.payloadOffset + 1);
    await flipLogical(files, b, b.indexOffset + 1);
    const e = await rejectsWith(ImageReader.open(first, { password: 'wrong' }), 'E_WRONG_PASSWORD');
    expect(e.message).toContain(first);
    await rejectsWith(checkImage(first, { password: 'wrong' }), 'E_WRONG_PASSWORD');
    // NFC and NFD spellings of the same password are the same password.
    const nfc = await copyOf('secret');
    await (await ImageReader.open(nfc.first, { password: 'open sesame'.normalize('NFD') })).close();
  });

  it('not an image, no such file, or a .partial name', async () => {
    const dir = join(root, 'misc');
    await fsp.mkdir(dir);
    const junk = join(dir, 'junk.rimg');
    await fsp.writeFile(junk, regionData(10_000, 1, 'random'));
    await rejectsWith(ImageReader.open(junk), 'E_NOT_AN_IMAGE');
    await rejectsWith(ImageReader.open(dir), 'E_NOT_AN_IMAGE');
    await rejectsWith(ImageReader.open(join(dir, 'none.rimg')), 'E_IMAGE_NOT_FOUND');
    await rejectsWith(checkImage(join(dir, 'none.rimg'), {}), 'E_IMAGE_NOT_FOUND');
    const partial = join(dir, 'p.rimg.partial');
    await fsp.copyFile(built.get('plain')!.res.firstFile, partial);
    await rejectsWith(ImageReader.open(partial), 'E_IMAGE_INCOMPLETE');
    const e = await rejectsWith(ImageReader.open(join(dir, 'p.rimg')), 'E_IMAGE_INCOMPLETE');
    expect(e.message).toMatch(/interrupted backup/);
  });

  it('random byte flips anywhere: every read either fails with a RescueError or returns exactly the source', async () => {
    for (const key of ['plain', 'secret', 'split', 'raw']) {
      const b = built.get(key)!;
      const views = b.regions.map((r) => restoredView(r.data, r.extents));
      const sizes = await Promise.all(b.res.files.map(async (f) => (await fsp.stat(f)).size));
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(fc.nat(), fc.nat(), fc.integer({ min: 1, max: 255 })), {
            minLength: 1,
            maxLength: 3,
          }),
          async (flips) => {
            const { files, first } = await copyOf(key);
            for (const [v, off, mask] of flips) {
              const vi = v % files.length;
              await flipByte(files[vi], off % sizes[vi], mask);
            }
            let reader: ImageReader;
            try {
              reader = await ImageReader.open(first, { password: b.password });
            } catch (e) {
              expect(isRescueError(e), String(e)).toBe(true);
              return;
            }
            try {
              for (const [i, r] of b.regions.entries()) {
                try {
                  const got = await reader.readRegion(r.id, 0, r.data.length);
                  expect(got.equals(views[i])).toBe(true);
                } catch (e) {
                  expect(isRescueError(e) && e.code, String(e)).toBe('E_CHUNK_CORRUPT');
                }
              }
            } finally {
              await reader.close();
            }
            await fsp.rm(join(first, '..'), { recursive: true });
          },
        ),
        { numRuns: 40 },
      );
    }
  });

  it('flags of a zero chunk are honoured and verified', async () => {
    const b = built.get('plain')!;
    const r = await ImageReader.open(b.res.firstFile);
    const zero = r.entries.find((e) => e.flags & ENTRY_FLAGS.ZERO);
    if (zero) {
      expect(zero.storedLength).toBe(0);
      expect((await r.readChunk(zero)).equals(Buffer.alloc(zero.rawLength))).toBe(true);
      await rejectsWith(r.readChunk({ ...zero, sha256: Buffer.alloc(32) }), 'E_CHUNK_CORRUPT');
    }
    await r.close();
  });
});
