/** The pure FAT codecs: BPB round trips, FAT type by cluster count, validation, 12-bit packing. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRescueError } from '../../rescue/engine/errors.ts';
import {
  decodeFatLabel,
  FAT_BOOT,
  type FatBootSector,
  fatEntry,
  fatLayout,
  formatVolumeSerial,
  parseFatBootSector,
  parseFsInfo,
  scanForVolumeLabel,
  setFatEntry,
  writeFatBootSector,
} from '../../rescue/engine/filesystems/fat-bpb.ts';

/** A FAT12/16 BPB whose data area holds exactly `clusters` clusters of one sector. */
function fat16Bpb(clusters: number, over: Partial<FatBootSector> = {}): FatBootSector {
  const fatSectors = Math.ceil(((clusters + 2) * 2) / 512);
  const rootEntries = 512;
  const total = 1 + 2 * fatSectors + 32 + clusters;
  return {
    jump: [0xeb, 0x3c, 0x90],
    oemName: 'mkfs.fat',
    bytesPerSector: 512,
    sectorsPerCluster: 1,
    reservedSectors: 1,
    numFats: 2,
    rootEntries,
    totalSectors16: total < 0x10000 ? total : 0,
    media: 0xf8,
    fatSize16: fatSectors,
    sectorsPerTrack: 32,
    heads: 64,
    hiddenSectors: 0,
    totalSectors32: total < 0x10000 ? 0 : total,
    fatSize32: 0,
    extFlags: 0,
    fsVersion: 0,
    rootCluster: 0,
    fsInfoSector: 0,
    backupBootSector: 0,
    driveNumber: 0x80,
    state: 0,
    bootSignature: 0x29,
    serial: 0x1234abcd,
    label: Buffer.from('NO NAME    '),
    fsTypeString: 'FAT16   ',
    signature: FAT_BOOT.SIGNATURE,
    ...over,
  };
}

function fat32Bpb(clusters: number, over: Partial<FatBootSector> = {}): FatBootSector {
  const fatSectors = Math.ceil(((clusters + 2) * 4) / 512);
  return {
    ...fat16Bpb(10),
    rootEntries: 0,
    reservedSectors: 32,
    fatSize16: 0,
    fatSize32: fatSectors,
    totalSectors16: 0,
    totalSectors32: 32 + 2 * fatSectors + clusters,
    rootCluster: 2,
    fsInfoSector: 1,
    backupBootSector: 6,
    fsTypeString: 'FAT32   ',
    ...over,
  };
}

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

describe('FAT type by cluster count (Microsoft rule), not by the type string', () => {
  it('4084 clusters is FAT12, 4085 is FAT16, 65524 is FAT16', () => {
    expect(fatLayout(fat16Bpb(4084, { fsTypeString: 'FAT16   ' })).type).toBe(12);
    expect(fatLayout(fat16Bpb(4085, { fsTypeString: 'FAT12   ' })).type).toBe(16);
    expect(fatLayout(fat16Bpb(65524)).type).toBe(16);
  });
  it('65525 clusters in the FAT12/16 layout is corrupt; the FAT32 layout is FAT32 even when small', () => {
    expectCorrupt(() => fatLayout(fat16Bpb(65525)));
    const small32 = fatLayout(fat32Bpb(5000));
    expect(small32.type).toBe(32);
    expect(small32.clusterCount).toBe(5000);
    expect(fatLayout(fat32Bpb(70000)).type).toBe(32);
  });
  it('computes offsets', () => {
    const l = fatLayout(fat16Bpb(10000));
    expect(l.fatStart).toBe(512);
    expect(l.rootDirStart).toBe(512 + 2 * l.fatBytes);
    expect(l.rootDirBytes).toBe(512 * 32);
    expect(l.dataStart).toBe(l.rootDirStart + l.rootDirBytes);
    expect(l.clusterCount).toBe(10000);
    expect(l.volumeBytes).toBe(l.dataStart + 10000 * 512);
  });
});

describe('BPB validation', () => {
  const bad: [string, Partial<FatBootSector>, RegExp][] = [
    ['no signature', { signature: 0 }, /signature/],
    ['no jump and no type string', { jump: [0, 0, 0], fsTypeString: 'XXXXXXXX' }, /jump/],
    ['bytes per sector 256', { bytesPerSector: 256 }, /bytes per sector/],
    ['bytes per sector 8192', { bytesPerSector: 8192 }, /bytes per sector/],
    ['bytes per sector 1000', { bytesPerSector: 1000 }, /bytes per sector/],
    ['sectors per cluster 0', { sectorsPerCluster: 0 }, /sectors per cluster/],
    ['sectors per cluster 3', { sectorsPerCluster: 3 }, /sectors per cluster/],
    ['no reserved sectors', { reservedSectors: 0 }, /reserved/],
    ['no FATs', { numFats: 0 }, /no FAT copies/],
    ['bad media', { media: 0x12 }, /media/],
    ['no total sectors', { totalSectors16: 0, totalSectors32: 0 }, /total sector count/],
    ['no root entries on FAT16', { rootEntries: 0 }, /no root directory entries/],
    ['FAT too small', { fatSize16: 2 }, /too small/],
    ['FATs larger than the volume', { fatSize16: 12000 }, /fill the whole volume/],
  ];
  it.each(bad)('%s → corrupt', (_name, over, why) => {
    expectCorrupt(() => fatLayout(fat16Bpb(20000, over)));
    expect(() => fatLayout(fat16Bpb(20000, over))).toThrow(why);
  });
  const bad32: [string, Partial<FatBootSector>, RegExp][] = [
    ['root cluster 0', { rootCluster: 0 }, /root directory cluster/],
    ['root cluster past the end', { rootCluster: 5000000 }, /root directory cluster/],
    ['fixed root entries on FAT32', { rootEntries: 512 }, /fixed root entries/],
    ['FSInfo outside the reserved area', { fsInfoSector: 40 }, /FSInfo/],
    ['backup boot outside the reserved area', { backupBootSector: 32 }, /backup boot/],
    ['FAT32 FAT size 0', { fatSize32: 0 }, /FAT size is 0/],
  ];
  it.each(bad32)('FAT32: %s → corrupt', (_name, over, why) => {
    expectCorrupt(() => fatLayout(fat32Bpb(100000, over)));
    expect(() => fatLayout(fat32Bpb(100000, over))).toThrow(why);
  });
  it('accepts 0xFFFF as "no FSInfo / no backup"', () => {
    const l = fatLayout(fat32Bpb(100000, { fsInfoSector: 0xffff, backupBootSector: 0xffff }));
    expect(l.fsInfoSector).toBe(0);
    expect(l.backupBootSector).toBe(0);
  });
  it('reads serial and label at the FAT12/16 and FAT32 offsets', () => {
    const s16 = writeFatBootSector(fat16Bpb(5000, { serial: 0xdeadbeef, label: Buffer.from('LABEL16    ') }));
    expect(s16.readUInt32LE(39)).toBe(0xdeadbeef);
    expect(s16.toString('latin1', 43, 54)).toBe('LABEL16    ');
    const s32 = writeFatBootSector(
      fat32Bpb(70000, { serial: 0x01020304, label: Buffer.from('LABEL32    ') }),
    );
    expect(s32.readUInt32LE(67)).toBe(0x01020304);
    expect(s32.toString('latin1', 71, 82)).toBe('LABEL32    ');
    expect(s32.toString('latin1', 82, 90)).toBe('FAT32   ');
  });
});

describe('BPB codec round trip', () => {
  const u8 = fc.integer({ min: 0, max: 0xff });
  const u16 = fc.integer({ min: 0, max: 0xffff });
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  const text8 = fc.string({ minLength: 8, maxLength: 8, unit: fc.constantFrom(...'ABCDEFGH01 .'.split('')) });
  it('parse(write(x)) = x', () => {
    fc.assert(
      fc.property(
        fc.record({
          jump: fc.tuple(u8, u8, u8),
          oemName: text8,
          bytesPerSector: u16,
          sectorsPerCluster: u8,
          reservedSectors: u16,
          numFats: u8,
          rootEntries: u16,
          totalSectors16: u16,
          media: u8,
          fat32: fc.boolean(),
          fatSize16: fc.integer({ min: 1, max: 0xffff }),
          sectorsPerTrack: u16,
          heads: u16,
          hiddenSectors: u32,
          totalSectors32: u32,
          fatSize32: u32,
          extFlags: u16,
          fsVersion: u16,
          rootCluster: u32,
          fsInfoSector: u16,
          backupBootSector: u16,
          driveNumber: u8,
          state: u8,
          bootSignature: u8,
          serial: u32,
          label: fc.uint8Array({ minLength: 11, maxLength: 11 }),
          fsTypeString: text8,
          signature: u16,
        }),
        (r) => {
          const { fat32, ...rest } = r;
          const bs: FatBootSector = fat32
            ? { ...rest, jump: [...r.jump], fatSize16: 0 }
            : {
                ...rest,
                jump: [...r.jump],
                fatSize32: 0,
                extFlags: 0,
                fsVersion: 0,
                rootCluster: 0,
                fsInfoSector: 0,
                backupBootSector: 0,
              };
          const parsed = parseFatBootSector(writeFatBootSector(bs));
          expect({ ...parsed, label: [...parsed.label] }).toEqual({ ...bs, label: [...bs.label] });
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('FAT entries', () => {
  it('packs FAT12 entries as Microsoft documents (odd entry = high 12 bits)', () => {
    const fat = new Uint8Array(6);
    setFatEntry(fat, 12, 0, 0xabc);
    setFatEntry(fat, 12, 1, 0xdef);
    setFatEntry(fat, 12, 2, 0x123);
    setFatEntry(fat, 12, 3, 0x456);
    expect([...fat]).toEqual([0xbc, 0xfa, 0xde, 0x23, 0x61, 0x45]);
    expect([0, 1, 2, 3].map((n) => fatEntry(fat, 12, n))).toEqual([0xabc, 0xdef, 0x123, 0x456]);
  });
  it('FAT12/16/32 set/get round trip leaves the neighbours alone', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(12 as const, 16 as const, 32 as const),
        fc.array(fc.integer({ min: 0, max: 0x0fffffff }), { minLength: 1, maxLength: 64 }),
        fc.uint8Array({ minLength: 300, maxLength: 300 }),
        (type, values, noise) => {
          const mask = type === 12 ? 0xfff : type === 16 ? 0xffff : 0x0fffffff;
          const fat = Uint8Array.from(noise);
          values.forEach((v, n) => {
            setFatEntry(fat, type, n, v);
          });
          values.forEach((v, n) => {
            expect(fatEntry(fat, type, n)).toBe(v & mask);
          });
          if (type === 32)
            values.forEach((_, n) => {
              expect(fat[n * 4 + 3] & 0xf0).toBe(noise[n * 4 + 3] & 0xf0);
            });
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('labels, serials, FSInfo', () => {
  it('formats serials as blkid does', () => {
    expect(formatVolumeSerial(0x078a67e7)).toBe('078A-67E7');
    expect(formatVolumeSerial(0xebe9b09a)).toBe('EBE9-B09A');
    expect(formatVolumeSerial(0)).toBe('0000-0000');
  });
  it('trims labels as blkid does', () => {
    expect(decodeFatLabel(Buffer.from('A B        '))).toBe('A B');
    expect(decodeFatLabel(Buffer.from('           '))).toBeUndefined();
    expect(decodeFatLabel(Buffer.from('AB\0CDEFGHIJ'))).toBe('AB');
  });
  it('scans root entries like blkid: skips deleted, long-name and clustered entries', () => {
    const e = (name: string, attr: number, cluster = 0) => {
      const b = Buffer.alloc(32);
      b.write(name, 0, 11, 'latin1');
      b[11] = attr;
      b.writeUInt16LE(cluster, 26);
      return b;
    };
    const dir = Buffer.concat([
      e('\xe5OLDLABEL  ', 0x08),
      e('LFN        ', 0x0f),
      e('FILE    TXT', 0x20, 5),
      e('WEIRD      ', 0x08, 7),
      e('\x05ABEL      ', 0x08),
      e('LATER      ', 0x08),
    ]);
    const scan = scanForVolumeLabel(dir);
    expect('found' in scan && Buffer.from(scan.found).toString('latin1')).toBe('\xe5ABEL      ');
    expect(
      scanForVolumeLabel(
        Buffer.concat([e('FILE    TXT', 0x20, 5), Buffer.alloc(32), e('LATE       ', 0x08)]),
      ),
    ).toEqual({ ended: true });
    expect(scanForVolumeLabel(e('FILE    TXT', 0x20, 5))).toEqual({ ended: false });
  });
  it('parses FSInfo', () => {
    const b = Buffer.alloc(512);
    b.writeUInt32LE(0x41615252, 0);
    b.writeUInt32LE(0x61417272, 484);
    b.writeUInt32LE(1234, 488);
    b.writeUInt32LE(99, 492);
    b.writeUInt32LE(0xaa550000, 508);
    expect(parseFsInfo(b)).toEqual({
      leadSignatureOk: true,
      structSignatureOk: true,
      trailSignatureOk: true,
      freeCount: 1234,
      nextFree: 99,
    });
    expectCorrupt(() => parseFsInfo(b.subarray(0, 100)));
  });
});
