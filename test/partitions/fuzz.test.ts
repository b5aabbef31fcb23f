/**
 * Hostile input: random mutations of real tables captured from sfdisk / sgdisk / parted images, with
 * and without the GPT CRCs fixed up afterwards (so the mutations get past the checksums and reach the
 * deeper checks), and CRC-valid headers with arbitrary fields. The reader must never throw, never
 * read outside the disk, and always finish quickly.
 */

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { crc32 } from '../../rescue/engine/partitions/crc32.ts';
import {
  GPT,
  type GptHeader,
  parseGptHeader,
  serializeGptHeader,
  withHeaderCrc,
} from '../../rescue/engine/partitions/gpt.ts';
import { inspectPartitionTable, readPartitionTable } from '../../rescue/engine/partitions/table.ts';
import type { PartitionTable } from '../../rescue/engine/partitions/types.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';
import { captureRegions, makeDiskImage, SparseMemorySource } from '../fixtures/partitions.ts';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
let dir: string;
const corpus: Array<{ name: string; source: SparseMemorySource }> = [];

/** A SparseMemorySource that records reads outside the disk instead of hiding them behind findings. */
class WatchedSource extends SparseMemorySource {
  outOfBounds = 0;
  reads = 0;
  override async read(offset: number, length: number): Promise<Buffer> {
    this.reads++;
    if (offset < 0 || length < 0 || offset + length > this.size) this.outOfBounds++;
    return super.read(offset, length);
  }
}

function watched(s: SparseMemorySource): WatchedSource {
  const c = s.clone();
  return new WatchedSource(c.size, c.regions, c.logicalSectorSize, c.path);
}

/** Recomputes both GPT headers' CRCs over whatever the (mutated) arrays now hold, if they are plausible. */
function fixGptCrcs(src: SparseMemorySource): void {
  const sectors = new Map<number, Buffer>();
  for (const [at, b] of src.regions)
    for (let o = 0; o + 512 <= b.length; o += 512) sectors.set(at + o, b.subarray(o, o + 512));
  for (const headerAt of [512, src.size - 512]) {
    const raw = sectors.get(headerAt);
    if (!raw) continue;
    const h = parseGptHeader(raw);
    const len = h.entryCount * h.entrySize;
    if (h.entriesLba > 1n << 40n || len > GPT.MAX_ENTRY_ARRAY_BYTES) continue;
    const at = Number(h.entriesLba) * 512;
    const array = Buffer.alloc(len);
    for (let o = 0; o < len; o += 512) sectors.get(at + o)?.copy(array, o, 0, Math.min(512, len - o));
    let fixed: GptHeader = { ...h, entriesCrc32: crc32(array) };
    if (h.headerSize >= GPT.HEADER_SIZE && h.headerSize <= 512) fixed = withHeaderCrc(fixed);
    serializeGptHeader(fixed, 512).copy(raw, 0, 0, Math.min(512, Math.max(h.headerSize, GPT.HEADER_SIZE)));
  }
}

function checkInvariants(t: PartitionTable): void {
  expect(['gpt', 'mbr', 'none']).toContain(t.kind);
  const numbers = new Set<number>();
  for (const p of t.partitions) {
    expect(Number.isSafeInteger(p.start) && p.start >= 0).toBe(true);
    expect(Number.isSafeInteger(p.size) && p.size >= 0).toBe(true);
    expect(numbers.has(p.number)).toBe(false);
    numbers.add(p.number);
  }
  for (const f of t.findings) expect(f.code).toMatch(/^[A-Z0-9_]+$/);
}

async function readWithin(src: WatchedSource): Promise<PartitionTable> {
  const started = performance.now();
  const table = await readPartitionTable(src);
  expect(performance.now() - started).toBeLessThan(2000);
  expect(src.outOfBounds).toBe(0);
  // Bounded work: sector 0, GPT probes, at most 256 EBRs.
  expect(src.reads).toBeLessThan(300);
  checkInvariants(table);
  return table;
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-partitions-fuzz-');
  const gptRanges = [
    { offset: 0, length: 34 * 512 },
    { offset: SIZE - 33 * 512, length: 33 * 512 },
  ];
  const mbr = await makeDiskImage(
    join(dir, 'mbr.img'),
    SIZE,
    'label: dos\nsize=4M, type=83, bootable\nsize=50M, type=f\nsize=4M, type=7\nsize=4M, type=82\nsize=4M, type=83\nsize=4M, type=c\n',
  );
  const detail = await inspectPartitionTable(await FileSource.open(mbr));
  corpus.push({
    name: 'sfdisk MBR with logical partitions',
    source: await captureRegions(mbr, [
      { offset: 0, length: 512 },
      ...detail.ebrs.map((e) => ({ offset: e.lba * 512, length: 512 })),
    ]),
  });
  const gpt = await makeDiskImage(
    join(dir, 'gpt.img'),
    SIZE,
    'label: gpt\nsize=4M, type=U, name="esp"\nsize=8M, type=L, attrs="LegacyBIOSBootable"\nsize=8M, type=S\nsize=, type=L, name="rest"\n',
  );
  corpus.push({ name: 'sfdisk GPT', source: await captureRegions(gpt, gptRanges) });
  const hybrid = join(dir, 'hybrid.img');
  await sparseFile(hybrid, SIZE);
  await run('sgdisk', [
    '-n',
    '1:2048:+4M',
    '-t',
    '1:ef00',
    '-n',
    '2:0:+8M',
    '-t',
    '2:0700',
    '-n',
    '3:0:+8M',
    '-h',
    '1:2',
    hybrid,
  ]);
  corpus.push({ name: 'sgdisk hybrid GPT', source: await captureRegions(hybrid, gptRanges) });
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** A mutation: at a random place of a random captured region, a byte, or a 32/64-bit field value. */
const mutationArb = fc.record({
  region: fc.nat(),
  offset: fc.nat(),
  width: fc.constantFrom(1, 4, 8),
  value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  special: fc.constantFrom('random', 'zero', 'ones', 'small'),
});

describe('random mutations of captured tables never crash, hang or read out of bounds', () => {
  it('sfdisk MBR, sfdisk GPT, sgdisk hybrid GPT', async () => {
    expect(corpus.length).toBe(3);
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: corpus.length - 1 }),
        fc.array(mutationArb, { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        async (which, mutations, fixCrcs) => {
          const src = watched(corpus[which].source);
          const regions = [...src.regions.values()];
          for (const m of mutations) {
            const region = regions[m.region % regions.length];
            // Bias toward the interesting bytes: MBR entries, GPT header fields and entry arrays.
            const offset = (m.offset % Math.max(1, region.length - 8)) & ~(m.width - 1);
            const value =
              m.special === 'zero'
                ? 0n
                : m.special === 'ones'
                  ? (1n << 64n) - 1n
                  : m.special === 'small'
                    ? m.value % 300n
                    : m.value;
            if (m.width === 1) region[offset] = Number(value & 0xffn);
            else if (m.width === 4) region.writeUInt32LE(Number(value & 0xffffffffn), offset);
            else region.writeBigUInt64LE(value, offset);
          }
          if (fixCrcs) fixGptCrcs(src);
          const table = await readWithin(src);
          for (const f of table.findings) seen.set(f.code, (seen.get(f.code) ?? 0) + 1);
        },
      ),
      { numRuns: 3000 },
    );
    // The fuzzer reached deep checks, not only "bad CRC".
    for (const code of ['GPT_PRIMARY_HEADER_CRC', 'GPT_USING_BACKUP', 'MBR_OVERLAP', 'GPT_OVERLAP']) {
      expect(
        seen.get(code) ?? 0,
        `finding ${code} never produced; seen: ${[...seen.keys()].join(' ')}`,
      ).toBeGreaterThan(0);
    }
  });

  it('CRC-valid GPT headers with arbitrary fields, and arbitrary sector 0', async () => {
    const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    const small = fc.bigInt({ min: 0n, max: 200_000n });
    const lba = fc.oneof(u64, small);
    const header = fc.record({
      revision: fc.constantFrom(0x10000, 0, 0xffffffff),
      headerSize: fc.oneof(fc.constantFrom(92, 512, 91, 513, 0), fc.nat()),
      alternateLba: lba,
      firstUsableLba: lba,
      lastUsableLba: lba,
      entriesLba: lba,
      entryCount: fc.oneof(fc.constantFrom(0, 1, 128, 4096, 32768, 32769, 0xffffffff), fc.nat()),
      entrySize: fc.oneof(fc.constantFrom(0, 1, 128, 256, 4096, 8192, 0xffffffff), fc.nat()),
    });
    await fc.assert(
      fc.asyncProperty(
        header,
        fc.uint8Array({ minLength: 512, maxLength: 512 }),
        fc.boolean(),
        fc.boolean(),
        async (h, sector0, protective, atEnd) => {
          const full: GptHeader = {
            signature: GPT.SIGNATURE,
            headerCrc32: 0,
            reserved: 0,
            myLba: atEnd ? BigInt(SIZE / 512 - 1) : 1n,
            diskGuid: '01234567-89AB-CDEF-0123-456789ABCDEF',
            entriesCrc32: 0,
            ...h,
          };
          const raw = serializeGptHeader(full, 512);
          if (full.headerSize >= 92 && full.headerSize <= 512) {
            raw.writeUInt32LE(withHeaderCrc(full).headerCrc32, 16);
          }
          const s0 = Buffer.from(sector0);
          if (protective) {
            s0[446 + 4] = 0xee;
            s0.writeUInt32LE(1, 446 + 8);
            s0.writeUInt32LE(SIZE / 512 - 1, 446 + 12);
            s0.writeUInt16LE(0xaa55, 510);
          }
          const regions = new Map<number, Buffer>([
            [0, s0],
            [atEnd ? SIZE - 512 : 512, raw],
          ]);
          await readWithin(new WatchedSource(SIZE, regions));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('arbitrary bytes in sector 0 and the EBR area with a valid-looking extended partition', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ minLength: 512, maxLength: 512 }), { minLength: 1, maxLength: 16 }),
        fc.array(fc.nat({ max: 4096 }), { minLength: 16, maxLength: 16 }),
        async (sectors, lbas) => {
          const regions = new Map<number, Buffer>();
          sectors.forEach((s, i) => {
            const b = Buffer.from(s);
            b.writeUInt16LE(0xaa55, 510);
            for (let e = 0; e < 4; e++) {
              b[446 + e * 16] &= 0x80; // valid boot indicators, so the MBR is taken as one
              if (e < 2 && i % 2 === 0) b[446 + e * 16 + 4] = [0x05, 0x0f, 0x85, 0x83][(lbas[i] + e) % 4];
              b.writeUInt32LE(lbas[(i + e) % 16], 446 + e * 16 + 8);
            }
            regions.set(i === 0 ? 0 : (1 + lbas[i]) * 512, b);
          });
          // keep regions disjoint
          const keys = [...regions.keys()].sort((a, b) => a - b);
          for (let i = 1; i < keys.length; i++) if (keys[i] === keys[i - 1]) regions.delete(keys[i]);
          await readWithin(new WatchedSource(8 * MiB, regions));
        },
      ),
      { numRuns: 2000 },
    );
  });
});
