import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ChunkCodec,
  checkImage,
  DEFAULT_WINDOW_SIZE,
  ENTRY_FLAGS,
  ImageReader,
  ImageWriter,
  isFatMount,
} from '../../rescue/engine/image/index.ts';
import { IMAGE_TEST_HOOKS } from '../../rescue/engine/image/internal.ts';
import { parseHeader } from '../../rescue/engine/image/layout.ts';
import {
  appendRegions,
  FAST_SCRYPT,
  manifestFor,
  randomExtents,
  regionData,
  rejectsWith,
  restoredView,
  type TestRegion,
  writerOptions,
  writeTestImage,
} from '../fixtures/image.ts';
import { makeTempDir } from '../fixtures/lab.ts';

const W = 64 * 1024;
let dir: string;

/** Lead-in copied whole, a partition with a used map, a partition of zeros, a random one. */
function testRegions(seed: number): TestRegion[] {
  const part = regionData(2 * 1024 * 1024 + 3 * 512, seed);
  const zeros = regionData(512 * 1024, seed, 'zero');
  const rnd = regionData(300 * 1024, seed + 1, 'random');
  return [
    { id: 0, kind: 'lead-in', data: regionData(128 * 1024, seed + 2) },
    { id: 1, data: part, extents: randomExtents(part.length, seed) },
    { id: 3, data: zeros, extents: [{ start: 4096, length: 200 * 1024 }] },
    { id: 7, kind: 'gpt-backup', data: rnd },
  ];
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-image-rt-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function expectSameRegions(reader: ImageReader, regions: TestRegion[]): Promise<void> {
  for (const r of regions) {
    const got = await reader.readRegion(r.id, 0, r.data.length);
    expect(got.equals(restoredView(r.data, r.extents)), `region ${r.id}`).toBe(true);
  }
}

describe('image round trips', () => {
  const cases = [
    { compression: 'none', password: undefined, split: undefined },
    { compression: 'normal', password: undefined, split: undefined },
    { compression: 'high', password: undefined, split: undefined },
    { compression: 'none', password: 'pässwörd', split: undefined },
    { compression: 'normal', password: 'correct horse battery staple', split: 200_000 },
    { compression: 'high', password: 'x', split: 150_000 },
    { compression: 'normal', password: undefined, split: 100_000 },
  ] as const;

  for (const [i, c] of cases.entries()) {
    it(`${c.compression}, ${c.password ? 'encrypted' : 'plain'}, ${c.split ? `split at ${c.split}` : 'one file'}`, async () => {
      const regions = testRegions(100 + i);
      const name = `rt${i}`;
      const res = await writeTestImage({
        dir,
        name,
        regions,
        compression: c.compression,
        password: c.password,
        windowSize: W,
        splitBytes: c.split,
        hooks: { minSplitBytes: 8192 },
      });
      const listing = (await fsp.readdir(dir)).filter((f) => f.startsWith(`${name}.`)).sort();
      expect(listing.some((f) => f.endsWith('.partial'))).toBe(false);
      expect(res.firstFile).toBe(join(dir, `${name}.rimg`));
      let total = 0;
      for (const [v, f] of res.files.entries()) {
        expect(f).toBe(v === 0 ? join(dir, `${name}.rimg`) : join(dir, `${name}.rimg.${v + 1}`));
        const size = (await fsp.stat(f)).size;
        if (c.split) expect(size).toBeLessThanOrEqual(c.split);
        if (c.split && v < res.files.length - 1) expect(size).toBe(c.split);
        total += size;
      }
      expect(total).toBe(res.storedBytes);
      if (c.split) expect(res.files.length).toBeGreaterThan(2);
      else expect(res.files.length).toBe(1);

      // Open through the last volume too: every volume file leads to the image.
      const reader = await ImageReader.open(res.files[res.files.length - 1], { password: c.password });
      try {
        expect(reader.files).toEqual(res.files);
        expect(reader.header.encrypted).toBe(!!c.password);
        expect(reader.manifest.options).toMatchObject({
          compression: c.compression,
          level: { none: 0, normal: 3, high: 12 }[c.compression],
          encrypted: !!c.password,
          split: c.split ?? null,
          window: W,
        });
        expect(reader.manifest.point).toMatchObject({ type: 'full', parent: null, sequence: 1 });
        expect(reader.manifest.point.id).toBe(reader.header.imageId.toString('hex'));
        expect(reader.manifest.point.chain).toBe(reader.manifest.point.id);
        expect(reader.manifest.comment).toBe('test image');
        expect(reader.manifest.stats.chunks).toBe(reader.entries.length);
        const flags = reader.entries.map((e) => e.flags);
        expect(flags.some((f) => f & ENTRY_FLAGS.ZERO)).toBe(true);
        expect(flags.some((f) => !(f & ENTRY_FLAGS.ZERO) && f & ENTRY_FLAGS.STORED_RAW)).toBe(true);
        if (c.compression !== 'none') expect(flags.some((f) => f === 0)).toBe(true);
        else expect(flags.every((f) => f & (ENTRY_FLAGS.ZERO | ENTRY_FLAGS.STORED_RAW))).toBe(true);
        await expectSameRegions(reader, regions);
      } finally {
        await reader.close();
      }
      const report = await checkImage(res.firstFile, { password: c.password });
      expect(report.ok).toBe(true);
      expect(report.points).toHaveLength(1);
      expect(report.points[0].problems).toEqual([]);
    });
  }

  it('readRegion at random offsets equals the restored source (fast-check)', async () => {
    const regions = testRegions(7);
    const res = await writeTestImage({ dir, name: 'random-access', regions, windowSize: W, password: 'pw' });
    const reader = await ImageReader.open(res.firstFile, { password: 'pw' });
    try {
      const views = new Map(regions.map((r) => [r.id, restoredView(r.data, r.extents)]));
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...regions.map((r) => r.id)),
          fc.nat(),
          fc.nat(3 * W),
          async (id, a, len) => {
            const view = views.get(id)!;
            const offset = a % view.length;
            const length = Math.min(len, view.length - offset);
            const got = await reader.readRegion(id, offset, length);
            expect(got.equals(view.subarray(offset, offset + length))).toBe(true);
          },
        ),
        { numRuns: 150 },
      );
      await rejectsWith(reader.readRegion(2, 0, 1), 'E_REGION_NOT_FOUND');
      await rejectsWith(reader.readRegion(1, regions[1].data.length - 10, 11), 'E_BAD_RANGE');
    } finally {
      await reader.close();
    }
  });

  it('keeps an encrypted image free of plaintext (data and manifest)', async () => {
    const marker = Buffer.from('PLAINTEXT-MARKER-0123456789-'.repeat(4000));
    const regions: TestRegion[] = [
      { id: 0, data: Buffer.concat([marker, Buffer.alloc(65536 - (marker.length % 65536))]) },
    ];
    for (const [name, password, compression] of [
      ['clear', undefined, 'none'],
      ['secret', 'hunter2', 'none'],
    ] as const) {
      const w = await ImageWriter.create(
        writerOptions({ dir, name, regions, password, compression, windowSize: W }),
      );
      await appendRegions(w, regions);
      const m = manifestFor(regions, 'COMMENT-MARKER');
      const { firstFile } = await w.finish(m);
      const bytes = await fsp.readFile(firstFile);
      const found = bytes.includes('PLAINTEXT-MARKER');
      expect(found).toBe(!password);
      if (password) expect(bytes.includes('/dev/test')).toBe(false);
    }
  });

  it('default window is 2 MiB and windows cover a region bigger than one window', async () => {
    const MiB = 1024 * 1024;
    const data = regionData(4 * MiB + 4096, 3);
    const regions: TestRegion[] = [{ id: 5, data }];
    const w = await ImageWriter.create({
      ...writerOptions({ dir, name: 'default-window', regions }),
      windowSize: undefined,
    });
    expect(w.windowSize).toBe(DEFAULT_WINDOW_SIZE);
    expect(DEFAULT_WINDOW_SIZE).toBe(2 * MiB);
    await appendRegions(w, regions);
    const { firstFile } = await w.finish(manifestFor(regions));
    const r = await ImageReader.open(firstFile);
    expect(r.entries.map((e) => e.windowStart)).toEqual([0, 2, 4].map((x) => x * MiB));
    expect(r.entries.map((e) => e.rawLength)).toEqual([2 * MiB, 2 * MiB, 4096]);
    expect((await r.readRegion(5, 2 * MiB - 10, 20)).equals(data.subarray(2 * MiB - 10, 2 * MiB + 10))).toBe(
      true,
    );
    await r.close();
  });

  it('a finished header records the final length and volume count; the key check stays in the header', async () => {
    const regions = testRegions(9);
    const res = await writeTestImage({
      dir,
      name: 'hdr',
      regions,
      splitBytes: 120_000,
      hooks: { minSplitBytes: 8192 },
      password: 'k',
    });
    const h = parseHeader(await fsp.readFile(res.firstFile), res.firstFile);
    expect(h.volumeCount).toBe(res.files.length);
    expect(h.totalLength).toBe(res.storedBytes - 128 * (res.files.length - 1));
    expect(h.volumeLimit).toBe(120_000);
    expect(h.scrypt).toEqual(FAST_SCRYPT);
    expect(h.kdf).toBe(1);
  });
});

describe('edge cases and chains', () => {
  it('an image without chunks (nothing used) round-trips', async () => {
    const regions: TestRegion[] = [{ id: 0, data: Buffer.alloc(8192), extents: [] }];
    for (const password of [undefined, 'p']) {
      const w = await ImageWriter.create(
        writerOptions({ dir, name: `empty-${!!password}`, regions, password }),
      );
      const { firstFile } = await w.finish(manifestFor(regions));
      const r = await ImageReader.open(firstFile, { password });
      expect(r.entries).toEqual([]);
      expect((await r.readRegion(0, 0, 8192)).equals(Buffer.alloc(8192))).toBe(true);
      await r.close();
      expect((await checkImage(firstFile, { password })).ok).toBe(true);
    }
  });

  it('an incremental point references unchanged windows of its parent (OTHER_POINT) and reads through it', async () => {
    const data = regionData(8 * W, 31);
    const full = await writeTestImage({
      dir,
      name: 'chain-full',
      regions: [{ id: 1, data }],
      windowSize: W,
      password: 'a',
    });
    const parent = await ImageReader.open(full.firstFile, { password: 'a' });
    const changed = Buffer.from(data);
    changed.fill(0x5a, 3 * W + 100, 3 * W + 5000);
    const w = await ImageWriter.create({
      ...writerOptions({ dir, name: 'chain-inc', regions: [], windowSize: W, password: 'b' }),
      point: {
        type: 'incremental',
        parentId: parent.header.imageId,
        chainId: parent.header.imageId,
        sequence: 2,
      },
    });
    const parentId = parent.header.imageId.toString('hex');
    for (const e of parent.entries) {
      if (e.windowStart === 3 * W)
        await w.append(await w.codec.encode(1, e.windowStart, changed.subarray(3 * W, 4 * W)));
      else await w.appendReference({ ...e, flags: e.flags | ENTRY_FLAGS.OTHER_POINT, pointId: parentId });
    }
    const inc = await w.finish(manifestFor([{ id: 1, data: changed }]));
    const alone = await ImageReader.open(inc.firstFile, { password: 'b' });
    expect(alone.manifest.point).toMatchObject({
      type: 'incremental',
      parent: parentId,
      chain: parentId,
      sequence: 2,
    });
    await rejectsWith(alone.readRegion(1, 0, W), 'E_POINT_REQUIRED');
    expect((await alone.readRegion(1, 3 * W, W)).equals(changed.subarray(3 * W, 4 * W))).toBe(true);
    await alone.close();
    const r = await ImageReader.open(inc.firstFile, { password: 'b', resolvePoint: async () => parent });
    expect((await r.readRegion(1, 0, changed.length)).equals(changed)).toBe(true);
    await r.close();
    await parent.close();
    const report = await checkImage(inc.firstFile, { password: 'b' });
    expect(report.ok).toBe(true);
    expect(report.chunks).toBe(1);
  });
});

describe('checkImage', () => {
  it('reports progress up to the total and can be cancelled', async () => {
    const regions = testRegions(21);
    const res = await writeTestImage({ dir, name: 'progress', regions, windowSize: W });
    const seen: [number, number][] = [];
    const report = await checkImage(res.firstFile, {
      onProgress: (d, t) => seen.push([d, t]),
      concurrency: 3,
    });
    expect(report.ok).toBe(true);
    expect(seen.length).toBe(report.chunks);
    const total = seen[0][1];
    expect(seen.every(([, t]) => t === total)).toBe(true);
    expect(seen.map(([d]) => d)).toEqual([...seen.map(([d]) => d)].sort((a, b) => a - b));
    expect(seen[seen.length - 1][0]).toBe(total);
    expect(report.bytes).toBe(total);
    const ac = new AbortController();
    const cancelled = checkImage(res.firstFile, {
      signal: ac.signal,
      onProgress: (d) => {
        if (d > 0) ac.abort();
      },
    });
    await rejectsWith(cancelled, 'E_CANCELLED');
  });
});

describe('writer rules', () => {
  it('refuses to overwrite an image (or any of its volumes)', async () => {
    const regions = testRegions(11);
    await writeTestImage({ dir, name: 'exists', regions });
    await rejectsWith(ImageWriter.create(writerOptions({ dir, name: 'exists', regions })), 'E_IMAGE_EXISTS');
    await fsp.writeFile(join(dir, 'stale.rimg.4'), 'x');
    const e = await rejectsWith(
      ImageWriter.create(writerOptions({ dir, name: 'stale', regions })),
      'E_IMAGE_EXISTS',
    );
    expect(e.message).toContain('stale.rimg.4');
  });

  it('validates name, split size, window size, password and destination before creating anything', async () => {
    const o = writerOptions({ dir, name: 'v', regions: [] });
    await rejectsWith(ImageWriter.create({ ...o, name: 'a/b' }), 'E_IMAGE_NAME_INVALID');
    await rejectsWith(ImageWriter.create({ ...o, name: 'a\0b' }), 'E_IMAGE_NAME_INVALID');
    await rejectsWith(ImageWriter.create({ ...o, name: 'é'.repeat(101) }), 'E_IMAGE_NAME_INVALID');
    await rejectsWith(ImageWriter.create({ ...o, name: '' }), 'E_IMAGE_NAME_INVALID');
    // Without the test hook the 50 MiB minimum applies.
    const { [IMAGE_TEST_HOOKS]: _, ...plain } = o;
    await rejectsWith(
      ImageWriter.create({ ...plain, splitBytes: 50 * 1024 * 1024 - 1 }),
      'E_SPLIT_TOO_SMALL',
    );
    await rejectsWith(ImageWriter.create({ ...o, windowSize: 1000 }), 'E_IMAGE_OPTION_INVALID');
    await rejectsWith(ImageWriter.create({ ...o, password: '' }), 'E_PASSWORD_INVALID');
    await rejectsWith(ImageWriter.create({ ...o, password: 'a'.repeat(65) }), 'E_PASSWORD_INVALID');
    await rejectsWith(ImageWriter.create({ ...o, dir: join(dir, 'nope') }), 'E_DESTINATION_INVALID');
    await rejectsWith(ImageWriter.create({ ...o, point: { type: 'incremental' } }), 'E_IMAGE_OPTION_INVALID');
    expect((await fsp.readdir(dir)).filter((f) => f.startsWith('v.'))).toEqual([]);
    // 64 characters are fine, even when they are 4-byte UTF-8 each.
    const w = await ImageWriter.create({ ...o, name: 'emoji', password: '🔑'.repeat(64) });
    await w.abort();
    expect((await fsp.readdir(dir)).filter((f) => f.startsWith('emoji.'))).toEqual([]);
  });

  it('splits automatically at 4 GiB − 1 on a FAT destination', async () => {
    const real = await fsp.realpath(dir);
    const mountinfo = [
      '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
      `40 22 8:17 / ${real} rw,relatime shared:9 - vfat /dev/sdb1 rw,fmask=0022`,
    ].join('\n');
    expect(isFatMount(mountinfo, real)).toBe(true);
    expect(isFatMount(mountinfo, `${real}x`)).toBe(false);
    expect(isFatMount(mountinfo, '/srv')).toBe(false);
    const regions = testRegions(12);
    const w = await ImageWriter.create(writerOptions({ dir, name: 'fat', regions, hooks: { mountinfo } }));
    expect(w.volumeLimit).toBe(4 * 1024 ** 3 - 1);
    await appendRegions(w, regions);
    const res = await w.finish(manifestFor(regions));
    const r = await ImageReader.open(res.firstFile);
    expect(r.manifest.options.split).toBe(4 * 1024 ** 3 - 1);
    await r.close();
    // A smaller user split stays; a larger one is capped.
    const w2 = await ImageWriter.create({
      ...writerOptions({ dir, name: 'fat2', regions, hooks: { mountinfo } }),
      splitBytes: 8 * 1024 ** 3,
    });
    expect(w2.volumeLimit).toBe(4 * 1024 ** 3 - 1);
    await w2.abort();
  });

  it('refuses chunks out of order and a manifest that does not match the chunks, removing the partial files', async () => {
    const regions = testRegions(13);
    const w = await ImageWriter.create(writerOptions({ dir, name: 'order', regions }));
    const c1 = await w.codec.encode(1, W, regions[1].data.subarray(0, 100));
    const c0 = await w.codec.encode(1, 0, regions[1].data.subarray(0, 100));
    await w.append(c1);
    await rejectsWith(w.append(c0), 'E_INTERNAL');
    await w.abort();
    expect((await fsp.readdir(dir)).filter((f) => f.startsWith('order.'))).toEqual([]);

    const w2 = await ImageWriter.create(writerOptions({ dir, name: 'mismatch', regions }));
    await appendRegions(w2, regions.slice(0, 2));
    const e = await rejectsWith(w2.finish(manifestFor(regions)), 'E_INTERNAL');
    expect(e.message).toMatch(/region 3 window 0 holds \d+ used bytes but no chunk/);
    expect((await fsp.readdir(dir)).filter((f) => f.startsWith('mismatch.'))).toEqual([]);

    const w3 = await ImageWriter.create(writerOptions({ dir, name: 'comment', regions }));
    await appendRegions(w3, regions);
    await rejectsWith(w3.finish(manifestFor(regions, 'c'.repeat(1025))), 'E_COMMENT_TOO_LONG');
    expect((await fsp.readdir(dir)).filter((f) => f.startsWith('comment.'))).toEqual([]);
  });

  it('the codec is safe to run concurrently and detects every kind of payload damage', async () => {
    const key = Buffer.alloc(32, 7);
    for (const compression of ['none', 'normal'] as const) {
      for (const k of [undefined, key]) {
        const codec = new ChunkCodec({ imageId: Buffer.alloc(16, 1), compression, key: k });
        const raws = Array.from({ length: 16 }, (_, i) => regionData(W, i));
        const enc = await Promise.all(raws.map((r, i) => codec.encode(2, i * W, r)));
        const entries = enc.map((c) => ({
          regionId: c.regionId,
          flags: c.flags,
          windowStart: c.windowStart,
          rawLength: c.rawLength,
          storedLength: c.payload.length,
          payloadOffset: 0,
          pointId: '',
          sha256: c.sha256,
        }));
        const dec = await Promise.all(enc.map((c, i) => codec.decode(entries[i], c.payload)));
        for (const [i, d] of dec.entries()) expect(d.equals(raws[i])).toBe(true);
        // Any single flipped bit of a payload is caught.
        for (const i of [0, 5, 9]) {
          const p = Buffer.from(enc[i].payload);
          p[(p.length * 3) >> 2] ^= 0x10;
          const e = await rejectsWith(
            codec.decode(entries[i], p, { image: 'img', chunk: i }),
            'E_CHUNK_CORRUPT',
          );
          expect(e.message).toContain(`chunk ${i} (region 2, window at ${i * W}`);
          expect(e.message).toMatch(k ? /AES-GCM/ : compression === 'none' ? /sha256/ : /zstd|sha256/);
        }
        // The AAD binds a payload to its window: moved to another window it does not decode.
        if (k) {
          const moved = { ...entries[1], windowStart: entries[2].windowStart };
          await rejectsWith(codec.decode(moved, enc[1].payload), 'E_CHUNK_CORRUPT');
        }
      }
    }
  });
});
