/**
 * Damaged tables give findings, never exceptions: corrupted GPT headers and entry arrays, truncated
 * and enlarged images, overlapping and hybrid MBRs, EBR loops. Where sfdisk / sgdisk have an opinion
 * they are the oracle; where they give up (truncated GPT) we say what we do instead.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource, FileSource } from '../../rescue/engine/devices/source.ts';
import { RescueError } from '../../rescue/engine/errors.ts';
import { crc32 } from '../../rescue/engine/partitions/crc32.ts';
import {
  GPT,
  parseGptEntry,
  parseGptHeader,
  serializeGptEntry,
  serializeGptHeader,
  withHeaderCrc,
} from '../../rescue/engine/partitions/gpt.ts';
import { buildMbr, MBR, parseMbr, serializeMbr } from '../../rescue/engine/partitions/mbr.ts';
import { inspectPartitionTable, readPartitionTable } from '../../rescue/engine/partitions/table.ts';
import type { PartitionTable } from '../../rescue/engine/partitions/types.ts';
import {
  applyDiskWrites,
  planPartitionTableWrite,
  serializePartitionTable,
} from '../../rescue/engine/partitions/write.ts';
import { makeTempDir, run } from '../fixtures/lab.ts';
import {
  applyWritesToFile,
  expectSameAsSfdisk,
  makeDiskImage,
  readBytes,
  sfdiskJson,
  sfdiskVerify,
  sgdiskVerify,
  writeBytes,
} from '../fixtures/partitions.ts';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await makeTempDir('rescue-partitions-findings-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function read(path: string): Promise<PartitionTable> {
  const src = await FileSource.open(path);
  try {
    return await readPartitionTable(src);
  } finally {
    await src.close();
  }
}

const codes = (t: PartitionTable) => t.findings.map((f) => f.code);

const GPT_SCRIPT = `label: gpt
size=8M, type=U, name="esp"
size=8M, type=L, name="root"
size=8M, type=S
size=, type=L, name="home"
`;
const MBR_SCRIPT = `label: dos
size=8M, type=83
size=8M, type=7
size=4M, type=83
size=40M, type=5
size=4M, type=83
size=4M, type=82
size=4M, type=83
size=4M, type=c
`;

async function gptImage(): Promise<string> {
  return makeDiskImage(join(dir, `gpt-${n++}.img`), SIZE, GPT_SCRIPT);
}
async function mbrImage(): Promise<string> {
  return makeDiskImage(join(dir, `mbr-${n++}.img`), SIZE, MBR_SCRIPT);
}

/** Flips one byte at `offset` of a file. */
async function flip(path: string, offset: number): Promise<void> {
  const b = await readBytes(path, offset, 1);
  b[0] ^= 0x5a;
  await writeBytes(path, offset, b);
}

/** Changes entries of both GPT arrays and fixes every CRC, as a buggy (but careful) tool would. */
async function patchGptEntries(path: string, mutate: (array: Buffer) => void): Promise<void> {
  const size = (await fsp.stat(path)).size;
  for (const headerAt of [512, size - 512]) {
    const h = parseGptHeader(await readBytes(path, headerAt, 512));
    const len = h.entryCount * h.entrySize;
    const array = await readBytes(path, Number(h.entriesLba) * 512, len);
    mutate(array);
    await writeBytes(path, Number(h.entriesLba) * 512, array);
    const fixed = withHeaderCrc({ ...h, entriesCrc32: crc32(array) });
    await writeBytes(path, headerAt, serializeGptHeader(fixed, 512));
  }
}

describe('GPT damage', () => {
  it('bad primary header CRC: the backup is used, partitions unchanged, and a rewrite repairs it', async () => {
    const img = await gptImage();
    const before = await read(img);
    await flip(img, 512 + 60); // inside the disk GUID, CRC no longer matches
    const table = await read(img);
    expect(codes(table)).toEqual(['GPT_PRIMARY_HEADER_CRC', 'GPT_USING_BACKUP']);
    expect(table.partitions).toEqual(before.partitions);
    expect(table.diskId).toBe(before.diskId);
    expectSameAsSfdisk(table, await sfdiskJson(img)); // sfdisk falls back to the backup too
    expect((await sgdiskVerify(img)).ok).toBe(false);
    await applyWritesToFile(img, serializePartitionTable(table, SIZE));
    expect(codes(await read(img))).toEqual([]);
    expect((await sgdiskVerify(img)).ok).toBe(true);
  });

  it('bad primary entry array CRC: the backup is used', async () => {
    const img = await gptImage();
    const before = await read(img);
    await flip(img, 1024 + 128 + 40); // entry 2's first LBA
    const table = await read(img);
    expect(codes(table)).toEqual(['GPT_PRIMARY_ENTRIES_CRC', 'GPT_USING_BACKUP']);
    expect(table.partitions).toEqual(before.partitions);
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });

  it('bad backup header: the primary is used and the backup reported', async () => {
    const img = await gptImage();
    await flip(img, SIZE - 512 + 60);
    const table = await read(img);
    expect(codes(table)).toEqual(['GPT_BACKUP_HEADER_CRC']);
    expect(table.findings[0].severity).toBe('error');
    expect(table.partitions.length).toBe(4);
    const v = await sgdiskVerify(img);
    expect(v.ok).toBe(false);
    expect(v.output).toMatch(/Backup header: ERROR/);
  });

  it('primary and backup that disagree', async () => {
    const img = await gptImage();
    const backupAt = SIZE - 512;
    const h = parseGptHeader(await readBytes(img, backupAt, 512));
    await writeBytes(
      img,
      backupAt,
      serializeGptHeader(withHeaderCrc({ ...h, diskGuid: '11111111-2222-3333-4444-555555555555' }), 512),
    );
    const table = await read(img);
    expect(codes(table)).toEqual(['GPT_BACKUP_MISMATCH']);
    expect(table.findings[0].message).toMatch(/disk GUID/);
  });

  it('both headers destroyed: shown as sfdisk shows it, the protective partition alone, with an error', async () => {
    const img = await gptImage();
    await flip(img, 512 + 60);
    await flip(img, SIZE - 512 + 60);
    const table = await read(img);
    expect(table.kind).toBe('mbr');
    expect(codes(table)).toEqual(['GPT_PRIMARY_HEADER_CRC', 'GPT_BACKUP_HEADER_CRC', 'GPT_NO_VALID_HEADER']);
    expectSameAsSfdisk(table, await sfdiskJson(img));
    expect(table.partitions[0]).toMatchObject({ type: 'ee', typeName: 'GPT', start: 512, size: SIZE - 512 });
  });

  it('image truncated: backup missing, the partitions that still fit are read, the cut one is flagged', async () => {
    const img = await gptImage();
    await fsp.truncate(img, SIZE - 4 * MiB);
    const table = await read(img);
    expect(table.kind).toBe('gpt');
    expect(codes(table)).toEqual([
      'GPT_BACKUP_BEYOND_END',
      'GPT_PMBR_SIZE_MISMATCH',
      'GPT_PARTITION_BEYOND_DISK',
    ]);
    expect(table.findings.find((f) => f.code === 'GPT_PARTITION_BEYOND_DISK')?.message).toMatch(
      /partition 4/,
    );
    expect(table.partitions.length).toBe(4);
    // sfdisk (libfdisk) refuses such a GPT altogether and shows the protective MBR instead.
    expect((await sfdiskJson(img))?.label).toBe('dos');
  });

  it('image enlarged: backup not at the end, reported; rewriting for the new size moves it there', async () => {
    const img = await gptImage();
    const before = await read(img);
    const bigger = SIZE + 32 * MiB;
    const bootCode = Buffer.alloc(MBR.BOOT_CODE_SIZE, 0xeb);
    await writeBytes(img, 0, bootCode);
    await fsp.truncate(img, bigger);
    const table = await read(img);
    expect(codes(table)).toEqual(['GPT_BACKUP_NOT_AT_END', 'GPT_PMBR_SIZE_MISMATCH']);
    expect(table.findings[0].severity).toBe('warning');
    expect(table.gpt?.backupHeaderLba).toBe(SIZE / 512 - 1);
    expect(table.partitions).toEqual(before.partitions);
    expectSameAsSfdisk(table, await sfdiskJson(img));

    const disk = await FileSource.open(img, { writable: true });
    await applyDiskWrites(disk, await planPartitionTableWrite(disk, table));
    await disk.close();
    const moved = await read(img);
    expect((await readBytes(img, 0, MBR.BOOT_CODE_SIZE)).equals(bootCode)).toBe(true);
    expect(moved.findings).toEqual([]);
    expect(moved.gpt?.backupHeaderLba).toBe(bigger / 512 - 1);
    expect(moved.gpt?.lastUsableLba).toBe(bigger / 512 - 34);
    expect(moved.partitions).toEqual(before.partitions);
    expect((await sgdiskVerify(img)).ok).toBe(true);
    expect((await sfdiskJson(img))?.lastlba).toBe(bigger / 512 - 34);
  });

  it('image enlarged and primary damaged: the backup is found where the primary said it was', async () => {
    const img = await gptImage();
    const before = await read(img);
    await fsp.truncate(img, SIZE + 32 * MiB);
    await flip(img, 512 + 60);
    const table = await read(img);
    expect(codes(table)).toEqual([
      'GPT_PRIMARY_HEADER_CRC',
      'GPT_USING_BACKUP',
      'GPT_BACKUP_NOT_AT_END',
      'GPT_PMBR_SIZE_MISMATCH',
    ]);
    expect(table.partitions).toEqual(before.partitions);
  });

  it('partitions outside the usable range and overlapping: sgdisk sees problems, we report them', async () => {
    const img = await gptImage();
    const h = parseGptHeader(await readBytes(img, 512, 512));
    await patchGptEntries(img, (array) => {
      const e1 = parseGptEntry(array, 0);
      serializeGptEntry({ ...e1, firstLba: 20n }, array, 0); // before FirstUsableLBA 2048
      const e3 = parseGptEntry(array, 256);
      serializeGptEntry({ ...e3, firstLba: e3.firstLba - 100n }, array, 256); // into partition 2
      const e4 = parseGptEntry(array, 384);
      serializeGptEntry({ ...e4, lastLba: h.lastUsableLba + 1n }, array, 384); // onto the backup array
    });
    const table = await read(img);
    expect(codes(table)).toEqual([
      'GPT_PARTITION_OUTSIDE_USABLE',
      'GPT_PARTITION_OUTSIDE_USABLE',
      'GPT_OVERLAP',
    ]);
    expect(table.findings[2].message).toBe('GPT partition 3 overlaps gpt partition 2');
    const v = await sgdiskVerify(img);
    expect(v.ok).toBe(false);
    expect(v.output).toMatch(/overlap/);
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });

  it('a partition that ends before it starts is left out and reported', async () => {
    const img = await gptImage();
    await patchGptEntries(img, (array) => {
      const e = parseGptEntry(array, 128);
      serializeGptEntry({ ...e, lastLba: e.firstLba - 1n }, array, 128);
    });
    const table = await read(img);
    expect(codes(table)).toEqual(['GPT_PARTITION_ENDS_BEFORE_START']);
    expect(table.partitions.map((p) => p.number)).toEqual([1, 3, 4]);
  });

  it('hybrid MBR made by sgdisk -h: the GPT is used and the hybrid reported', async () => {
    const img = await gptImage();
    await run('sgdisk', ['-h', '1:3', img]);
    const table = await read(img);
    expect(codes(table)).toEqual(['GPT_HYBRID_MBR']);
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });

  it('a GPT without its protective MBR is still read, with a warning', async () => {
    const img = await gptImage();
    await writeBytes(img, 0, Buffer.alloc(512));
    const table = await read(img);
    expect(table.kind).toBe('gpt');
    expect(codes(table)).toEqual(['GPT_NO_PROTECTIVE_MBR']);
    expect(table.partitions.length).toBe(4);
    expect(await sfdiskJson(img)).toBeUndefined(); // libfdisk needs the protective MBR
  });

  it('an MBR written over a GPT that was not wiped: MBR used, stale GPT reported', async () => {
    const img = await gptImage();
    const { writes } = buildMbr(
      {
        diskSignature: 0x1234,
        primaries: [{ slot: 1, type: 0x83, firstLba: 2048, sectors: 8192 }],
        logicals: [],
      },
      SIZE,
      512,
    );
    await applyWritesToFile(img, writes);
    const table = await read(img);
    expect(table.kind).toBe('mbr');
    expect(codes(table)).toEqual(['MBR_STALE_GPT']);
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });
});

describe('MBR damage', () => {
  async function patchEntry(
    img: string,
    slot: number,
    patch: (e: ReturnType<typeof parseMbr>['entries'][0]) => void,
    at = 0,
  ) {
    const mbr = parseMbr(await readBytes(img, at, 512));
    patch(mbr.entries[slot]);
    await writeBytes(img, at, serializeMbr(mbr));
  }

  it('overlapping primary entries: reported, and sfdisk --verify agrees', async () => {
    const img = await mbrImage();
    await patchEntry(img, 1, (e) => {
      e.firstLba -= 1000;
    });
    const table = await read(img);
    expect(codes(table)).toEqual(['MBR_OVERLAP']);
    expect(table.findings[0].message).toBe('Partition 2 overlaps partition 1');
    const v = await sfdiskVerify(img);
    expect(v.ok).toBe(false);
    expect(v.output).toMatch(/overlap/i);
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });

  it('a primary inside the extended partition overlaps the logical partitions', async () => {
    const img = await mbrImage();
    const t0 = await read(img);
    const l6 = t0.partitions.find((p) => p.number === 6)!;
    await patchEntry(img, 2, (e) => {
      e.firstLba = l6.start / 512;
      e.sectors = 100;
    });
    const table = await read(img);
    expect(codes(table)).toEqual(['MBR_OVERLAP', 'MBR_OVERLAP']);
    expect(table.findings.map((f) => f.message)).toEqual([
      'Partition 6 overlaps partition 3',
      'Partition 3 overlaps extended partition 4',
    ]);
  });

  it('a partition starting at sector 0', async () => {
    const img = await mbrImage();
    await patchEntry(img, 0, (e) => {
      e.firstLba = 0;
    });
    const table = await read(img);
    expect(codes(table)).toEqual(['MBR_PARTITION_AT_ZERO']);
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });

  it('a partition beyond the end of a truncated image', async () => {
    const img = await mbrImage();
    await fsp.truncate(img, 40 * MiB);
    const table = await read(img);
    expect(codes(table)).toEqual(['MBR_PARTITION_BEYOND_DISK', 'MBR_PARTITION_BEYOND_DISK']);
    expect(table.findings.map((f) => f.message.split(' (')[0])).toEqual(['Partition 4', 'Partition 8']);
    // sfdisk --verify says "No errors detected" here: it does not compare an MBR with the disk size.
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });

  it('an EBR chain that loops back: cut at the loop, every logical partition listed once, fast', async () => {
    const img = await mbrImage();
    const detail = await inspectPartitionTable(await FileSource.open(img));
    const ext = detail.table.partitions.find((p) => p.kind === 'extended')!;
    const [, second, , last] = detail.ebrs;
    // The last EBR links back to the second one.
    await patchEntry(
      img,
      1,
      (e) => {
        e.type = 0x05;
        e.firstLba = second.lba - ext.start / 512;
        e.sectors = 2048;
      },
      last.lba * 512,
    );
    const started = Date.now();
    const table = await read(img);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(codes(table)).toEqual(['MBR_EBR_LOOP']);
    expect(table.partitions.filter((p) => p.kind === 'logical').map((p) => p.number)).toEqual([5, 6, 7, 8]);
    // libfdisk follows the loop until its 60-entry limit: its first logical partitions are ours.
    const sf = (await sfdiskJson(img))!;
    expect(sf.partitions.length).toBeGreaterThan(8);
    const ours = table.partitions.map((p) => [p.start / 512, p.size / 512]);
    expect(sf.partitions.slice(0, ours.length).map((p) => [p.start, p.size])).toEqual(ours);
  });

  it('an EBR linking to itself, and one linking outside the extended partition', async () => {
    const img = await mbrImage();
    const detail = await inspectPartitionTable(await FileSource.open(img));
    const ext = detail.table.partitions.find((p) => p.kind === 'extended')!;
    const first = detail.ebrs[0];
    await patchEntry(img, 1, (e) => (e.firstLba = 0), first.lba * 512);
    expect(codes(await read(img))).toEqual(['MBR_EBR_LOOP']);
    await patchEntry(img, 1, (e) => (e.firstLba = ext.size / 512 + 10), first.lba * 512);
    const table = await read(img);
    expect(codes(table)).toEqual(['MBR_EBR_OUTSIDE_EXTENDED']);
    expect(table.partitions.filter((p) => p.kind === 'logical').length).toBe(1);
  });

  it('a logical partition reaching outside the extended partition: sfdisk --verify agrees', async () => {
    const img = await mbrImage();
    const detail = await inspectPartitionTable(await FileSource.open(img));
    const last = detail.ebrs.at(-1)!;
    await patchEntry(img, 0, (e) => (e.sectors += 45000), last.lba * 512);
    const table = await read(img);
    expect(codes(table)).toEqual(['MBR_LOGICAL_OUTSIDE_EXTENDED']);
    expect((await sfdiskVerify(img)).ok).toBe(false);
    expectSameAsSfdisk(table, await sfdiskJson(img));
  });

  it('more than 128 logical partitions: the chain is cut', async () => {
    const logicals = Array.from({ length: 140 }, (_, i) => ({
      type: 0x83,
      firstLba: 4096 + i * 16 + 1,
      sectors: 15,
    }));
    const { writes } = buildMbr(
      {
        diskSignature: 1,
        primaries: [{ slot: 1, type: 0x05, firstLba: 4096, sectors: 140 * 16 + 100 }],
        logicals,
      },
      8 * MiB,
      512,
    );
    const disk = Buffer.alloc(8 * MiB);
    for (const w of writes) disk.set(w.bytes, w.offset);
    const table = await readPartitionTable(new BufferSource(disk));
    expect(codes(table)).toEqual(['MBR_TOO_MANY_LOGICALS']);
    expect(table.partitions.length).toBe(1 + 128);
  });
});

describe('not a partition table, or nothing to read', () => {
  it('filesystems written over the whole disk (FAT, NTFS, exFAT) are not mistaken for an MBR', async () => {
    const cases: Array<[string, string[]]> = [
      ['mkfs.vfat', []],
      ['mkfs.ntfs', ['-F', '-Q', '-q']],
      ['mkfs.exfat', []],
    ];
    for (const [mkfs, args] of cases) {
      const img = join(dir, `whole-${mkfs}.img`);
      await fsp.writeFile(img, '');
      await fsp.truncate(img, 64 * MiB);
      await run(mkfs, [...args, img]);
      const sector0 = await readBytes(img, 0, 512);
      expect(sector0.readUInt16LE(510)).toBe(0xaa55);
      const table = await read(img);
      expect(table.kind, mkfs).toBe('none');
      expect(codes(table), mkfs).toEqual(['MBR_NOT_A_PARTITION_TABLE']);
      // sfdisk calls the FAT one an empty "dos" table; a backup of "no partitions" would lose it.
      expect((await sfdiskJson(img))?.partitions ?? []).toEqual([]);
    }
  });

  it('a blank disk has no table and no findings; a tiny one says so', async () => {
    expect(await readPartitionTable(new BufferSource(Buffer.alloc(MiB)))).toEqual({
      kind: 'none',
      sectorSize: 512,
      partitions: [],
      findings: [],
    });
    expect(codes(await readPartitionTable(new BufferSource(Buffer.alloc(100))))).toEqual(['DISK_TOO_SMALL']);
  });

  it('an unreadable sector 0 is the one thing that throws', async () => {
    const src = new BufferSource(Buffer.alloc(MiB));
    src.read = async () => {
      throw new RescueError('E_READ', 'Read error on <memory> at offset 0: EIO', 'The disk may be failing.');
    };
    await expect(readPartitionTable(src)).rejects.toMatchObject({ code: 'E_READ' });
  });

  it('an unreadable GPT backup is a finding', async () => {
    const img = await gptImage();
    const src = await FileSource.open(img);
    const realRead = src.read.bind(src);
    src.read = async (offset, length) => {
      if (offset >= SIZE - 33 * 512) throw new RescueError('E_READ', `Read error at ${offset}`, 'x');
      return realRead(offset, length);
    };
    const table = await readPartitionTable(src);
    await src.close();
    expect(codes(table)).toEqual(['GPT_BACKUP_UNREADABLE']);
    expect(table.partitions.length).toBe(4);
  });

  it('GPT constants used above match the images sfdisk makes', () => {
    expect(GPT.DEFAULT_ENTRY_COUNT * GPT.ENTRY_SIZE).toBe(32 * 512);
    expect(MBR.TABLE_OFFSET).toBe(446);
  });
});
