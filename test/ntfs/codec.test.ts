/**
 * The pure NTFS codecs: boot sector (checked field by field against ntfsinfo on a real mkntfs
 * volume), update sequence fixups, attribute iteration, runlists, attribute lists, index nodes.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRescueError } from '../../rescue/engine/errors.ts';
import {
  parseAttributeList,
  parseFileName,
  parseVolumeInformation,
} from '../../rescue/engine/filesystems/ntfs-attrs.ts';
import {
  decodeClustersPerRecord,
  decodeSectorsPerCluster,
  isNtfsBootSector,
  parseNtfsBootSector,
} from '../../rescue/engine/filesystems/ntfs-boot.ts';
import { parseIndexBlock, parseIndexRoot } from '../../rescue/engine/filesystems/ntfs-index.ts';
import { parseRestartPage, writeRestartPage } from '../../rescue/engine/filesystems/ntfs-logfile.ts';
import {
  ATTR,
  applyFixups,
  listAttributes,
  parseFileRecord,
  protectRecord,
} from '../../rescue/engine/filesystems/ntfs-record.ts';
import { type DataRun, decodeRunlist, encodeRunlist } from '../../rescue/engine/filesystems/ntfs-runlist.ts';
import { makeTempDir, run } from '../fixtures/lab.ts';
import { makeNtfs } from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;

function expectCorrupt(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    expect(isRescueError(e), String(e)).toBe(true);
    return;
  }
  throw new Error('expected a RescueError');
}

describe('boot sector field encodings', () => {
  it('sectors per cluster: plain powers of two up to 128, above that 2^(256-v)', () => {
    for (let s = 0; s <= 7; s++) expect(decodeSectorsPerCluster(2 ** s)).toBe(2 ** s);
    expect(decodeSectorsPerCluster(0xf8)).toBe(256);
    expect(decodeSectorsPerCluster(0xf4)).toBe(4096);
    expect(decodeSectorsPerCluster(0)).toBeUndefined();
    expect(decodeSectorsPerCluster(3)).toBeUndefined();
    expect(decodeSectorsPerCluster(0x7f)).toBeUndefined();
  });

  it('clusters per record: positive = clusters, negative = 2^-v bytes', () => {
    expect(decodeClustersPerRecord(0xf6, 4096)).toBe(1024);
    expect(decodeClustersPerRecord(0xf4, 65536)).toBe(4096);
    expect(decodeClustersPerRecord(1, 4096)).toBe(4096);
    expect(decodeClustersPerRecord(2, 512)).toBe(1024);
    expect(decodeClustersPerRecord(0, 4096)).toBeUndefined();
  });
});

describe('codecs on a real mkntfs volume', () => {
  let dir: string;
  let image: Buffer;

  beforeAll(async () => {
    dir = await makeTempDir('rescue-ntfs-codec-');
    const img = await makeNtfs(join(dir, 'v.img'), { size: 40 * MiB, clusterSize: 2048, label: 'Codec' });
    image = await fsp.readFile(img.image);
  });
  afterAll(async () => {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('boot sector fields agree with ntfsinfo', async () => {
    const boot = parseNtfsBootSector(image.subarray(0, 512));
    const { stdout } = await run('ntfsinfo', ['-m', join(dir, 'v.img')]);
    const num = (re: RegExp) => Number(stdout.match(re)?.[1]);
    expect(boot.bytesPerSector).toBe(num(/Sector Size:\s*(\d+)/));
    expect(boot.clusterSize).toBe(num(/Cluster Size:\s*(\d+)/));
    expect(boot.clusterSize).toBe(2048);
    expect(boot.indexBlockSize).toBe(num(/Index Block Size:\s*(\d+)/));
    expect(boot.mftRecordSize).toBe(num(/MFT Record Size:\s*(\d+)/));
    expect(boot.clusterCount).toBe(num(/Volume Size in Clusters:\s*(\d+)/));
    expect(boot.mftLcn).toBe(num(/LCN of Data Attribute for FILE_MFT:\s*(\d+)/));
    expect(boot.mftMirrLcn).toBe(num(/LCN of Data Attribute for File_MFTMirr:\s*(\d+)/));
    expect(boot.totalSectors).toBe((40 * MiB) / 512 - 1);
    const blk = await run('blkid', ['-p', '-o', 'value', '-s', 'UUID', join(dir, 'v.img')]);
    expect(boot.serialHex).toBe(blk.stdout.trim());
    expect(boot.hasEndMarker).toBe(true);
    // The backup in the last sector is identical.
    expect(image.subarray(image.length - 512).equals(image.subarray(0, 512))).toBe(true);
  });

  it('$MFT record 0: fixups, attributes, $FILE_NAME, runlist', () => {
    const boot = parseNtfsBootSector(image);
    const at = boot.mftLcn * boot.clusterSize;
    const rec = parseFileRecord(image.subarray(at, at + boot.mftRecordSize), boot.mftRecordSize, 'rec 0');
    expect(rec.header.inUse).toBe(true);
    expect(rec.header.recordNumber).toBe(0);
    const attrs = listAttributes(rec, 'rec 0');
    expect(attrs.map((a) => a.type)).toEqual([
      ATTR.STANDARD_INFORMATION,
      ATTR.FILE_NAME,
      ATTR.DATA,
      ATTR.BITMAP,
    ]);
    const fnAttr = attrs[1];
    if (fnAttr.nonResident) throw new Error('resident $FILE_NAME expected');
    const fn = parseFileName(fnAttr.value);
    expect(fn.name).toBe('$MFT');
    expect(fn.parent.record).toBe(5);
    const data = attrs[2];
    if (!data.nonResident) throw new Error('non-resident $DATA expected');
    const runs = decodeRunlist(data.mappingPairs, 0, '$MFT');
    expect(runs[0].lcn).toBe(boot.mftLcn);
    expect(runs.reduce((n, r) => n + r.length, 0)).toBe(data.highestVcn + 1);
    // Re-encoding the runs gives the same mapping pairs (up to the terminator).
    const enc = encodeRunlist(runs);
    expect(data.mappingPairs.subarray(0, enc.length).equals(enc)).toBe(true);
  });

  it('$Volume: $VOLUME_INFORMATION 3.1 and the root directory index', () => {
    const boot = parseNtfsBootSector(image);
    const rs = boot.mftRecordSize;
    const at = boot.mftLcn * boot.clusterSize;
    const vol = parseFileRecord(image.subarray(at + 3 * rs), rs, 'rec 3');
    const vi = listAttributes(vol, 'rec 3').find((a) => a.type === ATTR.VOLUME_INFORMATION);
    if (!vi || vi.nonResident) throw new Error('no $VOLUME_INFORMATION');
    expect(parseVolumeInformation(vi.value)).toMatchObject({ major: 3, minor: 1, dirty: false });
    const root = parseFileRecord(image.subarray(at + 5 * rs), rs, 'rec 5');
    const ir = listAttributes(root, 'rec 5').find((a) => a.type === ATTR.INDEX_ROOT);
    if (!ir || ir.nonResident) throw new Error('no $INDEX_ROOT');
    expect(ir.name).toBe('$I30');
    const idx = parseIndexRoot(ir.value);
    expect(idx.indexedType).toBe(ATTR.FILE_NAME);
    expect(idx.blockSize).toBe(boot.indexBlockSize);
  });

  it('a torn write (one sector of a record not rewritten) is caught by the fixups', () => {
    const boot = parseNtfsBootSector(image);
    const at = boot.mftLcn * boot.clusterSize;
    const raw = Buffer.from(image.subarray(at, at + boot.mftRecordSize));
    raw.writeUInt16LE(raw.readUInt16LE(510) ^ 1, 510);
    expect(() => parseFileRecord(raw, boot.mftRecordSize, 'rec 0')).toThrow(/update sequence mismatch/);
    raw.write('BAAD', 0, 'latin1');
    expect(() => parseFileRecord(raw, boot.mftRecordSize, 'rec 0')).toThrow(/BAAD/);
  });
});

describe('update sequence fixups', () => {
  const record = fc
    .record({
      strides: fc.integer({ min: 1, max: 8 }),
      usn: fc.integer({ min: 1, max: 0xffff }),
      seed: fc.uint8Array({ minLength: 4096, maxLength: 4096 }),
    })
    .map(({ strides, usn, seed }) => {
      const b = Buffer.from(seed.subarray(0, strides * 512));
      b.write('FILE', 0, 'latin1');
      b.writeUInt16LE(0x30, 4);
      b.writeUInt16LE(strides + 1, 6);
      return { b, usn };
    });

  it('protect then apply restores every byte (property)', () => {
    fc.assert(
      fc.property(record, ({ b, usn }) => {
        const original = Buffer.from(b);
        protectRecord(b, usn);
        for (let i = 1; i <= b.length / 512; i++) expect(b.readUInt16LE(i * 512 - 2)).toBe(usn);
        applyFixups(b, 'FILE', 'r');
        // Bytes outside the update sequence array itself are back as they were.
        const strip = (x: Buffer) =>
          Buffer.concat([x.subarray(0, 0x30), x.subarray(0x30 + 2 + (x.length / 512) * 2)]);
        expect(strip(b).equals(strip(original))).toBe(true);
      }),
    );
  });

  it('any one corrupted sector end is detected (property)', () => {
    fc.assert(
      fc.property(record, fc.nat(), fc.integer({ min: 1, max: 0xffff }), ({ b, usn }, which, xor) => {
        protectRecord(b, usn);
        const s = which % (b.length / 512);
        b.writeUInt16LE(b.readUInt16LE(s * 512 + 510) ^ xor, s * 512 + 510);
        expectCorrupt(() => applyFixups(b, 'FILE', 'r'));
      }),
    );
  });
});

describe('runlists', () => {
  it('decodes hand-made mapping pairs: plain, negative delta, sparse', () => {
    // 0x21: 1 length byte, 2 LCN bytes; then 0x11 with delta -0x10 (0xF0); then 0x01: sparse.
    const pairs = Buffer.from([0x21, 0x18, 0x34, 0x56, 0x11, 0x05, 0xf0, 0x01, 0x07, 0x00]);
    expect(decodeRunlist(pairs, 0, 't')).toEqual([
      { vcn: 0, lcn: 0x5634, length: 0x18 },
      { vcn: 0x18, lcn: 0x5624, length: 5 },
      { vcn: 0x1d, lcn: null, length: 7 },
    ]);
    expect(decodeRunlist(Buffer.from([0x00]), 12, 't')).toEqual([]);
  });

  it('rejects overruns, missing terminators, negative LCNs and zero lengths', () => {
    expectCorrupt(() => decodeRunlist(Buffer.from([0x21, 0x18, 0x34]), 0, 't'));
    expectCorrupt(() => decodeRunlist(Buffer.from([0x11, 0x18, 0x34]), 0, 't'));
    expectCorrupt(() => decodeRunlist(Buffer.from([0x11, 0x01, 0xff, 0x00]), 0, 't'));
    expectCorrupt(() => decodeRunlist(Buffer.from([0x11, 0x00, 0x05, 0x00]), 0, 't'));
    expectCorrupt(() => decodeRunlist(Buffer.from([0x90, 0x00]), 0, 't'));
  });

  it('encode then decode is the identity (property)', () => {
    const runsArb = fc
      .array(
        fc.record({
          length: fc.integer({ min: 1, max: 2 ** 40 }),
          lcn: fc.option(fc.integer({ min: 0, max: 2 ** 44 }), { freq: 4 }),
        }),
        { maxLength: 40 },
      )
      .map((xs) => {
        let vcn = 0;
        return xs.map((x): DataRun => {
          const r = { vcn, lcn: x.lcn, length: x.length };
          vcn += x.length;
          return r;
        });
      });
    fc.assert(
      fc.property(runsArb, (runs) => {
        expect(decodeRunlist(encodeRunlist(runs), 0, 't')).toEqual(runs);
      }),
    );
  });
});

describe('$ATTRIBUTE_LIST', () => {
  it('parses entries with and without names', () => {
    const e = (type: number, vcn: number, ref: number, instance: number, name = '') => {
      const len = (0x1a + name.length * 2 + 7) & ~7;
      const b = Buffer.alloc(len);
      b.writeUInt32LE(type, 0);
      b.writeUInt16LE(len, 4);
      b[6] = name.length;
      b[7] = 0x1a;
      b.writeBigUInt64LE(BigInt(vcn), 8);
      b.writeBigUInt64LE(BigInt(ref) | (3n << 48n), 16);
      b.writeUInt16LE(instance, 24);
      b.write(name, 0x1a, 'utf16le');
      return b;
    };
    const list = parseAttributeList(
      Buffer.concat([e(0x10, 0, 0, 0), e(0x80, 0, 0, 3), e(0x80, 500, 17, 0), e(0xa0, 0, 0, 5, '$I30')]),
    );
    expect(list).toEqual([
      { type: 0x10, name: '', lowestVcn: 0, ref: { record: 0, sequence: 3 }, instance: 0 },
      { type: 0x80, name: '', lowestVcn: 0, ref: { record: 0, sequence: 3 }, instance: 3 },
      { type: 0x80, name: '', lowestVcn: 500, ref: { record: 17, sequence: 3 }, instance: 0 },
      { type: 0xa0, name: '$I30', lowestVcn: 0, ref: { record: 0, sequence: 3 }, instance: 5 },
    ]);
    const bad = e(0x80, 0, 0, 0);
    bad.writeUInt16LE(0x400, 4);
    expectCorrupt(() => parseAttributeList(bad));
  });
});

describe('$LogFile restart pages', () => {
  it('write then parse keeps page size, LSN, version and the clean state (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(512, 1024, 4096, 8192),
        fc.bigInt({ min: 0n, max: 2n ** 62n }),
        fc.boolean(),
        fc.integer({ min: 2 ** 16, max: 2 ** 32 }),
        (systemPageSize, currentLsn, clean, fileSize) => {
          const p = parseRestartPage(writeRestartPage({ systemPageSize, fileSize, currentLsn, clean }));
          expect(p).toMatchObject({
            systemPageSize,
            lsn: currentLsn,
            clean,
            major: 1,
            minor: 1,
            chkdsk: false,
          });
          expect(p.clientInUseList).toBe(0);
        },
      ),
    );
  });

  it('a torn restart page is corrupt', () => {
    const page = writeRestartPage({ systemPageSize: 4096, fileSize: 1 << 22, currentLsn: 5n, clean: false });
    page[2047] ^= 0xff;
    expectCorrupt(() => parseRestartPage(page));
  });
});

describe('codecs never throw anything but RescueError on random bytes', () => {
  const bytes = fc.uint8Array({ minLength: 0, maxLength: 4096 });
  const only = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      if (!isRescueError(e)) throw e;
    }
  };
  it('boot sector, FILE record + attributes, runlist, attribute list, index root/block, $FILE_NAME', () => {
    fc.assert(
      fc.property(bytes, fc.constantFrom(512, 1024, 4096), (b, size) => {
        const buf = Buffer.from(b);
        isNtfsBootSector(buf);
        only(() => parseNtfsBootSector(buf));
        // Give the random record a plausible header so the attribute walk gets exercised too.
        const rec = Buffer.alloc(size);
        buf.copy(rec);
        rec.write('FILE', 0, 'latin1');
        rec.writeUInt16LE(0x30, 4);
        rec.writeUInt16LE(size / 512 + 1, 6);
        protectRecord(rec);
        only(() => listAttributes(parseFileRecord(rec, size, 'r'), 'r'));
        only(() => decodeRunlist(buf, 0, 'r'));
        only(() => parseAttributeList(buf));
        only(() => parseIndexRoot(buf));
        only(() => parseFileName(buf));
        const indx = Buffer.from(rec);
        indx.write('INDX', 0, 'latin1');
        only(() => parseIndexBlock(indx, size));
        const rstr = Buffer.from(rec);
        rstr.write('RSTR', 0, 'latin1');
        rstr.writeUInt32LE(size, 0x10);
        protectRecord(rstr);
        only(() => parseRestartPage(rstr));
      }),
      { numRuns: 2000 },
    );
  });
});
