/** The fixed-size structures: parse∘serialize = id, and arbitrary bytes never crash a parser. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRescueError } from '../../rescue/engine/errors.ts';
import type { ImageHeader, IndexEntry, Trailer } from '../../rescue/engine/image/index.ts';
import {
  parseHeader,
  parseIndex,
  parseRecordHeader,
  parseTrailer,
  parseVolumeHeader,
  serializeHeader,
  serializeRecordHeader,
  serializeTrailer,
  serializeVolumeHeader,
  writeIndexEntry,
} from '../../rescue/engine/image/layout.ts';

const id = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a));
const b32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a));
const u64 = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const u32 = fc.nat({ max: 0xffffffff });

const headerArb: fc.Arbitrary<ImageHeader> = fc.record({
  version: fc.constant(1),
  headerLength: fc.constant(4096),
  encrypted: fc.boolean(),
  imageId: id,
  parentId: id,
  chainId: id,
  pointType: fc.constantFrom('full', 'incremental', 'differential'),
  compressionAlgo: fc.constantFrom(0, 1),
  compressionLevel: fc.nat(22),
  kdf: fc.constant(0),
  windowSize: fc.integer({ min: 8, max: 512 * 1024 }).map((x) => x * 512),
  created: u64,
  scrypt: fc.record({ logN: fc.nat(255), r: fc.nat(255), p: fc.nat(255) }),
  salt: b32,
  keyCheck: b32,
  tool: fc.string({ maxLength: 20 }).map((s) => s.replace(/\0/g, '')),
  totalLength: u64,
  volumeCount: u32,
  volumeLimit: u64,
});

function expectOnlyRescueErrors(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    expect(isRescueError(e), String(e)).toBe(true);
  }
}

describe('layout codecs', () => {
  it('header round-trips', () => {
    fc.assert(
      fc.property(headerArb, (h0) => {
        const h = { ...h0, kdf: h0.encrypted ? 1 : 0 };
        const back = parseHeader(serializeHeader(h), 'x');
        expect(back).toEqual(h);
      }),
      { numRuns: 200 },
    );
  });

  it('a tool name longer than 64 bytes is cut on a character boundary', () => {
    const h = fc.sample(headerArb, 1)[0];
    const back = parseHeader(serializeHeader({ ...h, kdf: h.encrypted ? 1 : 0, tool: 'ü'.repeat(40) }), 'x');
    expect(back.tool).toBe('ü'.repeat(32));
  });

  it('volume header, record header, trailer and index entries round-trip', () => {
    fc.assert(
      fc.property(id, u32, u64, u64, (imageId, volume, logicalOffset, volumeLimit) => {
        const v = { imageId, volume, logicalOffset, volumeLimit };
        expect(parseVolumeHeader(serializeVolumeHeader(v), 'x', 'y')).toEqual(v);
      }),
    );
    fc.assert(
      fc.property(u32, u64, u32, u32, u32, (regionId, windowStart, rawLength, storedLength, flags) => {
        const r = { regionId, windowStart, rawLength, storedLength, flags };
        expect(parseRecordHeader(serializeRecordHeader(r))).toEqual(r);
      }),
    );
    const trailerArb: fc.Arbitrary<Trailer> = fc.record({
      imageId: id,
      indexOffset: u64,
      indexLength: u64,
      indexSha256: b32,
      manifestOffset: u64,
      manifestLength: u64,
      manifestSha256: b32,
      totalLength: u64,
      volumeCount: u32,
      chunkCount: u32,
      volumeLimit: u64,
    });
    fc.assert(
      fc.property(trailerArb, (t) => {
        expect(parseTrailer(serializeTrailer(t), 'x')).toEqual(t);
      }),
    );
    const entryArb: fc.Arbitrary<IndexEntry> = fc.record({
      regionId: u32,
      flags: u32,
      windowStart: u64,
      rawLength: u32,
      storedLength: u32,
      payloadOffset: u64,
      pointId: fc.oneof(
        fc.constant(''),
        id.filter((b) => b.some((x) => x !== 0)).map((b) => b.toString('hex')),
      ),
      sha256: b32,
    });
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 20 }), (entries) => {
        const buf = Buffer.alloc(entries.length * 80);
        entries.forEach((e, i) => {
          writeIndexEntry(buf, i * 80, e);
        });
        expect(
          parseIndex(buf, entries.length, 'x').map((e) => ({ ...e, sha256: Buffer.from(e.sha256) })),
        ).toEqual(entries);
      }),
    );
  });

  it('arbitrary bytes never crash a parser (only RescueErrors or a reason)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4200 }), fc.boolean(), (bytes, withMagic) => {
        const b = Buffer.from(bytes);
        if (withMagic && b.length >= 8) b.write('RSCUIMG1', 0, 'latin1');
        expectOnlyRescueErrors(() => parseHeader(b, 'x'));
        if (withMagic && b.length >= 8) b.write('RSCUVOL1', 0, 'latin1');
        expectOnlyRescueErrors(() => parseVolumeHeader(b, 'x', 'y'));
        expectOnlyRescueErrors(() => parseTrailer(b.subarray(0, 256), 'x'));
        expectOnlyRescueErrors(() => parseIndex(b, Math.floor(b.length / 80), 'x'));
        const r = parseRecordHeader(b);
        expect(typeof r === 'string' || typeof r === 'object').toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
