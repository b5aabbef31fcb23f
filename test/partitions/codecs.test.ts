/**
 * The pure codecs: known vectors from the specifications, and fast-check round trips
 * (parse ∘ serialize = identity) for MBR sectors, GPT headers, GPT entries and whole tables.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BufferSource } from '../../rescue/engine/devices/source.ts';
import { crc32 } from '../../rescue/engine/partitions/crc32.ts';
import {
  buildGpt,
  GPT,
  type GptEntry,
  type GptHeader,
  headerCrcOf,
  parseGptEntries,
  parseGptEntry,
  parseGptHeader,
  serializeGptEntries,
  serializeGptEntry,
  serializeGptHeader,
  validateGptHeader,
  withHeaderCrc,
} from '../../rescue/engine/partitions/gpt.ts';
import { guidToBytes, readGuid } from '../../rescue/engine/partitions/guid.ts';
import {
  buildMbr,
  decodeChs,
  encodeChs,
  lbaToChs,
  MBR,
  type Mbr,
  parseMbr,
  serializeMbr,
} from '../../rescue/engine/partitions/mbr.ts';
import { readPartitionTable } from '../../rescue/engine/partitions/table.ts';
import type { Partition, PartitionTable } from '../../rescue/engine/partitions/types.ts';
import { serializePartitionTable } from '../../rescue/engine/partitions/write.ts';

const MiB = 1024 * 1024;

/** Applies writes to a zeroed in-memory disk. */
function diskWith(
  size: number,
  writes: ReadonlyArray<{ offset: number; bytes: Uint8Array }>,
  sectorSize = 512,
) {
  const bytes = Buffer.alloc(size);
  for (const w of writes) bytes.set(w.bytes, w.offset);
  return new BufferSource(bytes, '<test>', sectorSize);
}

const guidArb = fc.uuid({ version: [1, 2, 3, 4, 5] }).map((u) => u.toUpperCase());
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const chsArb = fc.record({
  cylinder: fc.integer({ min: 0, max: 1023 }),
  head: fc.integer({ min: 0, max: 255 }),
  sector: fc.integer({ min: 0, max: 63 }),
});
const mbrEntryArb = fc.record({
  status: fc.integer({ min: 0, max: 255 }),
  firstChs: chsArb,
  type: fc.integer({ min: 0, max: 255 }),
  lastChs: chsArb,
  firstLba: u32,
  sectors: u32,
});
const mbrArb: fc.Arbitrary<Mbr> = fc.record({
  bootCode: fc.uint8Array({ minLength: MBR.BOOT_CODE_SIZE, maxLength: MBR.BOOT_CODE_SIZE }),
  diskSignature: u32,
  reserved: fc.integer({ min: 0, max: 0xffff }),
  entries: fc.array(mbrEntryArb, { minLength: 4, maxLength: 4 }),
  bootSignature: fc.integer({ min: 0, max: 0xffff }),
});
/** Names: any UTF-16 code units except NUL (NUL ends a name), up to 36 of them. */
const nameArb = fc
  .array(fc.integer({ min: 1, max: 0xffff }), { maxLength: GPT.NAME_UNITS })
  .map((units) => String.fromCharCode(...units));
const gptEntryArb: fc.Arbitrary<GptEntry> = fc.record({
  typeGuid: guidArb,
  uniqueGuid: guidArb,
  firstLba: u64,
  lastLba: u64,
  attributes: u64,
  name: nameArb,
});
const gptHeaderArb: fc.Arbitrary<GptHeader> = fc.record({
  signature: u64,
  revision: u32,
  headerSize: u32,
  headerCrc32: u32,
  reserved: u32,
  myLba: u64,
  alternateLba: u64,
  firstUsableLba: u64,
  lastUsableLba: u64,
  diskGuid: guidArb,
  entriesLba: u64,
  entryCount: u32,
  entrySize: u32,
  entriesCrc32: u32,
});

describe('known vectors', () => {
  it('CRC-32 is the IEEE one GPT uses', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  it('GUIDs are mixed-endian: the EFI System type GUID as stored on disk', () => {
    const disk = Buffer.from('28732ac11ff8d211ba4b00a0c93ec93b', 'hex');
    expect(readGuid(disk, 0)).toBe('C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
    expect(Buffer.from(guidToBytes('c12a7328-f81f-11d2-ba4b-00a0c93ec93b')).equals(disk)).toBe(true);
  });

  it('CHS like sfdisk: 255 heads, 63 sectors, FE FF FF past cylinder 1023', () => {
    const bytes = new Uint8Array(3);
    // sfdisk's partition at 2048..18431 on a 64 MiB image: 20 21 00 .. 25 24 01
    encodeChs(lbaToChs(2048), bytes, 0);
    expect(Buffer.from(bytes).toString('hex')).toBe('202100');
    encodeChs(lbaToChs(18431), bytes, 0);
    expect(Buffer.from(bytes).toString('hex')).toBe('252401');
    encodeChs(lbaToChs(1024 * 255 * 63), bytes, 0);
    expect(Buffer.from(bytes).toString('hex')).toBe('feffff');
    encodeChs(lbaToChs(1024 * 255 * 63 - 1), bytes, 0);
    expect(decodeChs(bytes, 0)).toEqual({ cylinder: 1023, head: 254, sector: 63 });
  });
});

describe('round trips (fast-check)', () => {
  it('MBR: parse ∘ serialize = identity on any decoded MBR', () => {
    fc.assert(
      fc.property(mbrArb, (mbr) => {
        expect(parseMbr(serializeMbr(mbr))).toEqual(mbr);
      }),
      { numRuns: 500 },
    );
  });

  it('MBR: serialize ∘ parse = identity on any 512 bytes (nothing is lost in decoding)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), (sector) => {
        expect(Buffer.from(serializeMbr(parseMbr(sector))).equals(Buffer.from(sector))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('GPT header: parse ∘ serialize = identity, and the CRC we compute validates', () => {
    fc.assert(
      fc.property(gptHeaderArb, (h) => {
        expect(parseGptHeader(serializeGptHeader(h))).toEqual(h);
        const withCrc = withHeaderCrc({ ...h, headerSize: GPT.HEADER_SIZE });
        const raw = serializeGptHeader(withCrc, 512);
        expect(headerCrcOf(raw, GPT.HEADER_SIZE)).toBe(withCrc.headerCrc32);
      }),
      { numRuns: 500 },
    );
  });

  it('GPT header: serialize ∘ parse = identity on any 92 bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 92, maxLength: 92 }), (raw) => {
        expect(Buffer.from(serializeGptHeader(parseGptHeader(raw))).equals(Buffer.from(raw))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('GPT entry: parse ∘ serialize = identity (names incl. lone surrogates)', () => {
    fc.assert(
      fc.property(gptEntryArb, (e) => {
        const buf = Buffer.alloc(GPT.ENTRY_SIZE);
        serializeGptEntry(e, buf, 0);
        expect(parseGptEntry(buf, 0)).toEqual(e);
      }),
      { numRuns: 500 },
    );
  });

  it('GPT entry array: used slots come back with their index', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ index: fc.integer({ min: 0, max: 255 }), entry: gptEntryArb }), {
          selector: (p) => p.index,
          maxLength: 20,
        }),
        fc.constantFrom(128, 256),
        (parts, entrySize) => {
          const array = serializeGptEntries(parts, 256, entrySize);
          expect(array.length).toBe(256 * entrySize);
          const sorted = [...parts].sort((a, b) => a.index - b.index);
          expect(parseGptEntries(array, 256, entrySize)).toEqual(sorted);
        },
      ),
      { numRuns: 200 },
    );
  });
});

/** Arbitrary valid GPT tables: disjoint, sector-aligned partitions in arbitrary slots. */
function gptTableArb(sectorSize: number): fc.Arbitrary<{ table: PartitionTable; diskSize: number }> {
  return fc
    .record({
      diskSectors: fc.integer({ min: 200, max: 1 << 22 }),
      diskId: guidArb,
      cuts: fc.uniqueArray(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 16 }),
      slots: fc.uniqueArray(fc.integer({ min: 1, max: 160 }), { minLength: 16, maxLength: 16 }),
      entries: fc.array(fc.record({ type: guidArb, uuid: guidArb, attrs: u64, name: nameArb }), {
        minLength: 8,
        maxLength: 8,
      }),
    })
    .map(({ diskSectors, diskId, cuts, slots, entries }) => {
      const arraySectors = Math.ceil((Math.max(128, ...slots) * 128) / sectorSize);
      const first = 2 + arraySectors;
      const last = diskSectors - 2 - arraySectors;
      const points = [...new Set(cuts.map((c) => first + Math.floor(c * (last - first + 1))))].sort(
        (a, b) => a - b,
      );
      const partitions: Partition[] = [];
      for (let i = 0; i + 1 < points.length && partitions.length < entries.length; i += 2) {
        const e = entries[partitions.length];
        partitions.push({
          number: slots[partitions.length],
          start: points[i] * sectorSize,
          size: (points[i + 1] - points[i]) * sectorSize,
          type: e.type,
          typeName: '',
          kind: 'gpt',
          uuid: e.uuid,
          name: e.name,
          attributes: e.attrs.toString(),
        });
      }
      partitions.sort((a, b) => a.number - b.number);
      const entryCount = Math.max(128, ...partitions.map((p) => p.number));
      const table: PartitionTable = {
        kind: 'gpt',
        sectorSize,
        diskId,
        partitions,
        findings: [],
        gpt: {
          firstUsableLba: 2 + Math.ceil((entryCount * 128) / sectorSize),
          lastUsableLba: diskSectors - 2 - Math.ceil((entryCount * 128) / sectorSize),
          entriesLba: 2,
          entryCount,
          entrySize: 128,
          backupHeaderLba: diskSectors - 1,
        },
      };
      return { table, diskSize: diskSectors * sectorSize };
    });
}

/** Arbitrary valid MBR tables with primaries, an extended partition and logical partitions. */
const mbrTableArb: fc.Arbitrary<{ table: PartitionTable; diskSize: number }> = fc
  .record({
    diskSectors: fc.integer({ min: 4096, max: 1 << 24 }),
    diskId: u32,
    primaryTypes: fc.array(fc.constantFrom(0x83, 0x07, 0x0c, 0x82, 0xef, 0x8e), {
      minLength: 0,
      maxLength: 3,
    }),
    extendedType: fc.constantFrom(0x05, 0x0f, 0x85),
    extSlot: fc.integer({ min: 1, max: 4 }),
    logicals: fc.array(
      fc.record({
        type: fc.constantFrom(0x83, 0x07, 0x82, 0xfd),
        gap: fc.integer({ min: 1, max: 64 }),
        size: fc.integer({ min: 1, max: 5000 }),
        boot: fc.boolean(),
      }),
      { maxLength: 20 },
    ),
    boot: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
  })
  .map(({ diskSectors, diskId, primaryTypes, extendedType, extSlot, logicals, boot }) => {
    const partitions: Partition[] = [];
    let cursor = 2048;
    const slots = [1, 2, 3, 4].filter((s) => s !== extSlot);
    primaryTypes.forEach((type, i) => {
      const size = 2048 + ((type * 131 + i * 977) % 4096);
      partitions.push({
        number: slots[i],
        start: cursor * 512,
        size: size * 512,
        type: type.toString(16),
        typeName: '',
        kind: 'primary',
        bootable: boot[i],
      });
      cursor += size;
    });
    const extStart = cursor;
    let c = extStart;
    const ls: Partition[] = [];
    logicals.forEach((l, i) => {
      const ebr = c;
      const start = ebr + l.gap;
      ls.push({
        number: 5 + i,
        start: start * 512,
        size: l.size * 512,
        type: l.type.toString(16),
        typeName: '',
        kind: 'logical',
        bootable: l.boot,
        ebrStart: ebr * 512,
      });
      c = start + l.size;
    });
    const extSize = Math.max(c - extStart, 1) + 7;
    partitions.push({
      number: extSlot,
      start: extStart * 512,
      size: extSize * 512,
      type: extendedType.toString(16),
      typeName: '',
      kind: 'extended',
      bootable: false,
    });
    partitions.sort((a, b) => a.number - b.number);
    partitions.push(...ls);
    const table: PartitionTable = {
      kind: 'mbr',
      sectorSize: 512,
      diskId: diskId.toString(16).padStart(8, '0'),
      partitions,
      findings: [],
    };
    return { table, diskSize: Math.max(diskSectors, extStart + extSize) * 512 };
  });

/** What the reader adds that a planner's table need not have. */
function comparable(t: PartitionTable) {
  return {
    ...t,
    partitions: t.partitions.map(({ typeName: _n, ...p }) => p),
  };
}

/** Only the sectors the writes touch, so multi-GiB virtual disks stay cheap. */
function sparseDisk(
  size: number,
  writes: ReadonlyArray<{ offset: number; bytes: Uint8Array }>,
  sectorSize: number,
) {
  const regions = new Map<number, Buffer>();
  for (const w of writes) regions.set(w.offset, Buffer.from(w.bytes));
  return {
    path: '<sparse>',
    size,
    logicalSectorSize: sectorSize,
    physicalSectorSize: sectorSize,
    writable: false,
    async read(offset: number, length: number) {
      if (offset + length > size) throw new Error('beyond end');
      const out = Buffer.alloc(length);
      for (const [at, b] of regions) {
        const from = Math.max(at, offset);
        const to = Math.min(at + b.length, offset + length);
        if (from < to) b.copy(out, from - offset, from - at, to - at);
      }
      return out;
    },
    async close() {},
  };
}

describe('whole tables: read ∘ serialize = identity (fast-check)', () => {
  for (const sectorSize of [512, 4096]) {
    it(`GPT with ${sectorSize}-byte sectors`, async () => {
      await fc.assert(
        fc.asyncProperty(gptTableArb(sectorSize), async ({ table, diskSize }) => {
          const writes = serializePartitionTable(table, diskSize);
          const back = await readPartitionTable(sparseDisk(diskSize, writes, sectorSize));
          expect(back.findings).toEqual([]);
          expect(comparable(back)).toEqual(comparable(table));
          // Serializing what we read gives the very same bytes.
          const again = serializePartitionTable(back, diskSize);
          expect(again.map((w) => [w.offset, w.bytes.toString('hex')])).toEqual(
            writes.map((w) => [w.offset, w.bytes.toString('hex')]),
          );
        }),
        { numRuns: 150 },
      );
    });
  }

  it('MBR with primaries, an extended partition and logical partitions', async () => {
    await fc.assert(
      fc.asyncProperty(mbrTableArb, async ({ table, diskSize }) => {
        const writes = serializePartitionTable(table, diskSize);
        const back = await readPartitionTable(sparseDisk(diskSize, writes, 512));
        expect(back.findings).toEqual([]);
        expect(comparable(back)).toEqual(comparable(table));
      }),
      { numRuns: 200 },
    );
  });
});

describe('writers refuse what cannot be written', () => {
  const gptTable = (partitions: Partial<Partition>[]): PartitionTable => ({
    kind: 'gpt',
    sectorSize: 512,
    diskId: '11111111-2222-3333-4444-555555555555',
    findings: [],
    partitions: partitions.map((p, i) => ({
      number: i + 1,
      start: 1 * MiB,
      size: 1 * MiB,
      type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
      typeName: '',
      kind: 'gpt',
      uuid: `11111111-2222-3333-4444-55555555555${i}`,
      ...p,
    })),
  });

  it('GPT: overlaps, outside the usable range, unaligned, too long names, missing GUIDs', () => {
    const size = 16 * MiB;
    const code = (t: PartitionTable) => {
      try {
        serializePartitionTable(t, size);
        return 'ok';
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    expect(code(gptTable([{}]))).toBe('ok');
    expect(code(gptTable([{}, { start: 1.5 * MiB }]))).toBe('E_TABLE_INVALID');
    expect(code(gptTable([{ start: 512 * 10 }]))).toBe('E_TABLE_INVALID');
    expect(code(gptTable([{ start: 15.5 * MiB }]))).toBe('E_TABLE_INVALID');
    expect(code(gptTable([{ start: 1 * MiB + 100 }]))).toBe('E_TABLE_INVALID');
    expect(code(gptTable([{ name: 'x'.repeat(37) }]))).toBe('E_TABLE_INVALID');
    expect(code(gptTable([{ uuid: undefined }]))).toBe('E_TABLE_INVALID');
    expect(code(gptTable([{ type: 'nope' }]))).toBe('E_TABLE_INVALID');
  });

  it('MBR: logical outside the extended partition, two extended, past 2^32 sectors', () => {
    const base = (extra: Partition[]): PartitionTable => ({
      kind: 'mbr',
      sectorSize: 512,
      diskId: '12345678',
      findings: [],
      partitions: [
        { number: 1, start: MiB, size: 8 * MiB, type: '83', typeName: '', kind: 'primary' },
        { number: 2, start: 9 * MiB, size: 8 * MiB, type: '5', typeName: '', kind: 'extended' },
        ...extra,
      ],
    });
    const logical = (start: number, size: number): Partition => ({
      number: 5,
      start,
      size,
      type: '83',
      typeName: '',
      kind: 'logical',
    });
    expect(() => serializePartitionTable(base([logical(10 * MiB, MiB)]), 64 * MiB)).not.toThrow();
    expect(() => serializePartitionTable(base([logical(16 * MiB, 2 * MiB)]), 64 * MiB)).toThrow(/not inside/);
    expect(() => serializePartitionTable(base([logical(9 * MiB, MiB)]), 64 * MiB)).toThrow(/not inside/);
    expect(() =>
      buildMbr(
        {
          diskSignature: 1,
          primaries: [
            { slot: 1, type: 5, firstLba: 2048, sectors: 100 },
            { slot: 2, type: 0x0f, firstLba: 4096, sectors: 100 },
          ],
          logicals: [],
        },
        64 * MiB,
        512,
      ),
    ).toThrow(/more than one extended/);
    expect(() =>
      buildMbr(
        {
          diskSignature: 1,
          primaries: [{ slot: 1, type: 0x83, firstLba: 2048, sectors: 2 ** 32 }],
          logicals: [],
        },
        4 * 2 ** 40,
        512,
      ),
    ).toThrow(/2\^32/);
  });

  it('a GPT of a 4Kn disk keeps sector 0 beyond the first 512 bytes and puts the backup at the end', () => {
    const built = buildGpt(
      { diskGuid: '11111111-2222-3333-4444-555555555555', partitions: [] },
      64 * MiB,
      4096,
    );
    const pmbr = built.writes.find((w) => w.offset === 0)!;
    expect(pmbr.bytes.length).toBe(512);
    expect(built.primary.firstUsableLba).toBe(6n);
    expect(built.backup.myLba).toBe(BigInt(64 * 256 - 1));
    expect(built.backup.entriesLba).toBe(BigInt(64 * 256 - 5));
    const disk = diskWith(64 * MiB, built.writes, 4096);
    expect(validateGptHeader(disk.bytes.subarray(4096, 8192), 1n, BigInt(64 * 256), 4096)).toBeUndefined();
  });
});
