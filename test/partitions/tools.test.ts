/**
 * Tables written by the real tools (sfdisk, sgdisk, parted) on sparse images, read by us and
 * compared field by field with `sfdisk --json`; tables written by us, accepted by `sfdisk --verify`
 * and `sgdisk -v` and read back by sfdisk as what we meant; re-serializing a tool's table gives the
 * tool's bytes.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { randomGuid } from '../../rescue/engine/partitions/guid.ts';
import { MBR, parseMbr } from '../../rescue/engine/partitions/mbr.ts';
import { inspectPartitionTable, readPartitionTable } from '../../rescue/engine/partitions/table.ts';
import type { Partition, PartitionTable } from '../../rescue/engine/partitions/types.ts';
import { applyDiskWrites, serializePartitionTable } from '../../rescue/engine/partitions/write.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';
import {
  applyWritesToFile,
  expectSameAsSfdisk,
  makeDiskImage,
  readBytes,
  sfdiskJson,
  sfdiskVerify,
  sgdiskVerify,
} from '../fixtures/partitions.ts';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
let dir: string;

beforeAll(async () => {
  dir = await makeTempDir('rescue-partitions-');
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

/** sfdisk -d without the lines that name the file. */
async function sfdiskDump(path: string): Promise<string> {
  const { stdout } = await run('sfdisk', ['-d', path]);
  return stdout
    .split('\n')
    .filter((l) => !l.startsWith('device:'))
    .map((l) => l.replace(/^\S+?(\d+) :/, 'p$1 :'))
    .join('\n');
}

/** Writes our serialization of `table` onto a blank image of `size` bytes. */
async function rewrite(
  table: PartitionTable,
  path: string,
  size: number,
  bootCode?: Uint8Array,
): Promise<void> {
  await sparseFile(path, size);
  await applyWritesToFile(path, serializePartitionTable(table, size, { bootCode }));
}

const MBR_SCRIPT = `label: dos
label-id: 0x1234abcd
start=2048, size=8M, type=83, bootable
size=8M, type=7
size=40M, type=5
size=4M, type=83
size=4M, type=82
size=4M, type=ef, bootable
size=2M, type=c
size=3M, type=8e
size=, type=fd
`;

const GPT_SCRIPT = `label: gpt
label-id: 01234567-89AB-CDEF-0123-456789ABCDEF
size=4M, type=U, name="EFI system partition", uuid=AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE
size=8M, type=L, name="root", attrs="LegacyBIOSBootable"
size=8M, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, attrs="RequiredPartition NoBlockIOProtocol GUID:48,60,63"
size=4M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Ünïcødé ✓"
size=, type=E6D6D379-F507-44C2-A23C-238F2A3DF928
`;

describe('tables made by sfdisk', () => {
  it('MBR: primaries, an extended partition and five logical partitions read as sfdisk reads them', async () => {
    const img = await makeDiskImage(join(dir, 'sfdisk-mbr.img'), SIZE, MBR_SCRIPT);
    const table = await read(img);
    expect(table.findings).toEqual([]);
    expectSameAsSfdisk(table, await sfdiskJson(img));
    expect(table.partitions.map((p) => `${p.number}:${p.kind}`)).toEqual([
      '1:primary',
      '2:primary',
      '3:extended',
      '4:primary',
      '5:logical',
      '6:logical',
      '7:logical',
      '8:logical',
      '9:logical',
    ]);
    expect(table.partitions.find((p) => p.number === 2)?.typeName).toBe('HPFS/NTFS/exFAT');
    expect(table.partitions.find((p) => p.number === 5)?.typeName).toBe('Linux swap / Solaris');

    // Our serialization of what we read is byte for byte what sfdisk wrote: MBR and every EBR.
    const copy = join(dir, 'sfdisk-mbr-copy.img');
    await rewrite(table, copy, SIZE);
    const detail = await inspectPartitionTable(await FileSource.open(img));
    expect(detail.ebrs.length).toBe(5);
    for (const at of [0, ...detail.ebrs.map((e) => e.lba * 512)]) {
      expect((await readBytes(copy, at, 512)).toString('hex'), `sector at ${at}`).toBe(
        (await readBytes(img, at, 512)).toString('hex'),
      );
    }
    expect((await sfdiskVerify(copy)).ok).toBe(true);
  });

  it('GPT: names, attributes, fixed GUIDs read as sfdisk reads them; rewritten byte for byte', async () => {
    const img = await makeDiskImage(join(dir, 'sfdisk-gpt.img'), SIZE, GPT_SCRIPT);
    const table = await read(img);
    expect(table.findings).toEqual([]);
    expectSameAsSfdisk(table, await sfdiskJson(img));
    const p1 = table.partitions[0];
    expect(p1).toMatchObject({
      number: 1,
      uuid: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE',
      typeName: 'EFI System',
    });
    expect(table.partitions[2].attributes).toBe(
      ((1n << 0n) | (1n << 1n) | (1n << 48n) | (1n << 60n) | (1n << 63n)).toString(),
    );
    expect(table.partitions[3].name).toBe('Ünïcødé ✓');

    const copy = join(dir, 'sfdisk-gpt-copy.img');
    await rewrite(table, copy, SIZE);
    // Primary header + entries, and backup entries + header, are identical to sfdisk's.
    expect((await readBytes(copy, 512, 33 * 512)).equals(await readBytes(img, 512, 33 * 512))).toBe(true);
    expect(
      (await readBytes(copy, SIZE - 33 * 512, 33 * 512)).equals(
        await readBytes(img, SIZE - 33 * 512, 33 * 512),
      ),
    ).toBe(true);
    // The protective MBR says the same (sfdisk writes FF FF FF as ending CHS, we the real CHS as sgdisk does).
    const theirs = parseMbr(await readBytes(img, 0, 512));
    const ours = parseMbr(await readBytes(copy, 0, 512));
    expect(ours.entries.map((e) => [e.type, e.firstLba, e.sectors])).toEqual(
      theirs.entries.map((e) => [e.type, e.firstLba, e.sectors]),
    );
    expect((await sfdiskVerify(copy)).ok).toBe(true);
    expect((await sgdiskVerify(copy)).ok).toBe(true);
    expect(await sfdiskDump(copy)).toBe(await sfdiskDump(img));
  });
});

describe('tables made by sgdisk', () => {
  it('GPT with 40 partitions, names, attributes and slot 128, read as sfdisk reads them', async () => {
    const img = join(dir, 'sgdisk.img');
    await sparseFile(img, SIZE);
    const args = ['-o', '-U', 'F00DF00D-0000-4000-8000-00000000CAFE'];
    for (let i = 1; i <= 40; i++) {
      args.push('-n', `${i}:0:+1M`, '-t', `${i}:${['8300', '0700', 'ef00', '8200', '8e00'][i % 5]}`);
      if (i % 3 === 0) args.push('-c', `${i}:part ${i} — ünï`);
      if (i % 4 === 0) args.push('-A', `${i}:set:${[0, 2, 60, 62][i % 16 === 0 ? 3 : (i / 4) % 3]}`);
    }
    args.push(
      '-n',
      '128:0:+2M',
      '-t',
      '128:8301',
      '-c',
      '128:last slot',
      '-A',
      '128:set:63',
      '-A',
      '128:set:1',
    );
    await run('sgdisk', [...args, img]);
    const table = await read(img);
    expect(table.findings).toEqual([]);
    expect(table.partitions.length).toBe(41);
    expect(table.partitions.at(-1)?.number).toBe(128);
    expectSameAsSfdisk(table, await sfdiskJson(img));
    // Round trip: same bytes everywhere sgdisk wrote, protective MBR included (same CHS rule).
    const copy = join(dir, 'sgdisk-copy.img');
    await rewrite(table, copy, SIZE);
    expect((await readBytes(copy, 0, 34 * 512)).equals(await readBytes(img, 0, 34 * 512))).toBe(true);
    expect(
      (await readBytes(copy, SIZE - 33 * 512, 33 * 512)).equals(
        await readBytes(img, SIZE - 33 * 512, 33 * 512),
      ),
    ).toBe(true);
    expect((await sgdiskVerify(copy)).ok).toBe(true);
  });
});

describe('tables made by parted', () => {
  it('msdos with an extended partition whose EBRs are not where sfdisk puts them', async () => {
    const img = join(dir, 'parted-msdos.img');
    await sparseFile(img, SIZE);
    await run('parted', [
      '-s',
      img,
      'mklabel',
      'msdos',
      'mkpart',
      'primary',
      'ext4',
      '1MiB',
      '9MiB',
      'mkpart',
      'extended',
      '9MiB',
      '60MiB',
      'mkpart',
      'logical',
      '10MiB',
      '20MiB',
      'mkpart',
      'logical',
      'linux-swap',
      '21MiB',
      '30MiB',
      'mkpart',
      'logical',
      'fat32',
      '31MiB',
      '40MiB',
      'set',
      '1',
      'boot',
      'on',
    ]);
    const table = await read(img);
    expect(table.findings).toEqual([]);
    expectSameAsSfdisk(table, await sfdiskJson(img));
    // Rewriting keeps parted's EBR positions (CHS differs: parted uses another geometry).
    const copy = join(dir, 'parted-msdos-copy.img');
    await rewrite(table, copy, SIZE);
    expect(await sfdiskDump(copy)).toBe(await sfdiskDump(img));
    const detail = await inspectPartitionTable(await FileSource.open(copy));
    const original = await inspectPartitionTable(await FileSource.open(img));
    expect(detail.ebrs.map((e) => e.lba)).toEqual(original.ebrs.map((e) => e.lba));
    expect((await sfdiskVerify(copy)).ok).toBe(true);
  });

  it('gpt with names and flags', async () => {
    const img = join(dir, 'parted-gpt.img');
    await sparseFile(img, SIZE);
    await run('parted', [
      '-s',
      img,
      'mklabel',
      'gpt',
      'mkpart',
      'root',
      'ext4',
      '1MiB',
      '9MiB',
      'mkpart',
      '"my data"',
      'ntfs',
      '9MiB',
      '20MiB',
      'set',
      '2',
      'msftdata',
      'on',
      'set',
      '1',
      'legacy_boot',
      'on',
      'mkpart',
      'esp',
      'fat32',
      '20MiB',
      '30MiB',
      'set',
      '3',
      'esp',
      'on',
      'set',
      '2',
      'hidden',
      'on',
    ]);
    const table = await read(img);
    expect(table.findings).toEqual([]);
    expectSameAsSfdisk(table, await sfdiskJson(img));
    expect(table.partitions.map((p) => p.name)).toEqual(['root', 'my data', 'esp']);
    const copy = join(dir, 'parted-gpt-copy.img');
    await rewrite(table, copy, SIZE);
    expect(await sfdiskDump(copy)).toBe(await sfdiskDump(img));
    expect((await sgdiskVerify(copy)).ok).toBe(true);
  });
});

describe('tables we write from a plan', () => {
  it('GPT: accepted by sfdisk --verify and sgdisk -v, and sfdisk reads what we meant', async () => {
    const diskId = randomGuid();
    const names = ['EFI', 'Microsoft reserved', 'Windows', 'Linux root', 'swap', '', 'x'.repeat(36)];
    const types = [
      'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
      'E3C9E316-0B5C-4DB8-817D-F92DF00215AE',
      'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
      '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
      '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
      '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
      'A19D880F-05FC-4D3B-A006-743F0F84911E',
    ];
    const partitions: Partition[] = names.map((name, i) => ({
      number: [1, 2, 3, 4, 5, 9, 77][i],
      start: (1 + i * 8) * MiB,
      size: 8 * MiB - (i === 6 ? 512 : 0),
      type: types[i],
      typeName: '',
      kind: 'gpt',
      uuid: randomGuid(),
      name,
      attributes: [0n, 1n, (1n << 63n) | (1n << 62n), 4n, 0n, 7n, 1n << 50n][i].toString(),
    }));
    const plan: PartitionTable = { kind: 'gpt', sectorSize: 512, diskId, partitions, findings: [] };
    const img = join(dir, 'ours-gpt.img');
    await sparseFile(img, SIZE);
    const target = await FileSource.open(img, { writable: true });
    await applyDiskWrites(target, serializePartitionTable(plan, SIZE));
    await target.close();
    const v1 = await sfdiskVerify(img);
    expect(v1.ok, v1.output).toBe(true);
    const v2 = await sgdiskVerify(img);
    expect(v2.ok, v2.output).toBe(true);
    const sf = await sfdiskJson(img);
    expect(sf?.firstlba).toBe(34);
    expect(sf?.lastlba).toBe(SIZE / 512 - 34);
    expectSameAsSfdisk(
      { ...plan, gpt: { firstUsableLba: 34, lastUsableLba: SIZE / 512 - 34 } as PartitionTable['gpt'] },
      sf,
    );
    expect(await read(img)).toMatchObject({ kind: 'gpt', diskId, findings: [] });
  });

  it('MBR with logical partitions: accepted by sfdisk --verify, read back as planned', async () => {
    const part = (
      number: number,
      kind: Partition['kind'],
      startMiB: number,
      sizeMiB: number,
      type: string,
      bootable = false,
    ) =>
      ({
        number,
        kind,
        start: startMiB * MiB,
        size: sizeMiB * MiB,
        type,
        typeName: '',
        bootable,
      }) as Partition;
    const plan: PartitionTable = {
      kind: 'mbr',
      sectorSize: 512,
      diskId: 'deadbeef',
      findings: [],
      partitions: [
        part(1, 'primary', 1, 10, '7', true),
        part(2, 'extended', 11, 50, 'f'),
        part(4, 'primary', 61, 3, 'ef'),
        part(5, 'logical', 12, 10, '83'),
        part(6, 'logical', 23, 5, '82'),
        part(7, 'logical', 28.5, 10, '83', true),
        part(8, 'logical', 40, 21, '8e'),
      ],
    };
    const img = join(dir, 'ours-mbr.img');
    await sparseFile(img, SIZE);
    const bootCode = Buffer.alloc(MBR.BOOT_CODE_SIZE, 0x90);
    await applyWritesToFile(img, serializePartitionTable(plan, SIZE, { bootCode }));
    const v = await sfdiskVerify(img);
    expect(v.ok, v.output).toBe(true);
    expectSameAsSfdisk(plan, await sfdiskJson(img));
    expect((await readBytes(img, 0, MBR.BOOT_CODE_SIZE)).equals(bootCode)).toBe(true);
    const back = await read(img);
    expect(back.findings).toEqual([]);
    expect(back.partitions.map(({ typeName: _t, ebrStart: _e, ...p }) => p)).toEqual(
      plan.partitions.map(({ typeName: _t, ...p }) => p),
    );
  });

  it('an extended partition without logical partitions gets an empty first EBR', async () => {
    const img = join(dir, 'ours-empty-ext.img');
    await sparseFile(img, SIZE);
    await fsp.writeFile(img, Buffer.alloc(512, 0xaa), { flag: 'r+' });
    const plan: PartitionTable = {
      kind: 'mbr',
      sectorSize: 512,
      diskId: '00000001',
      findings: [],
      partitions: [{ number: 1, kind: 'extended', start: MiB, size: 8 * MiB, type: '5', typeName: '' }],
    };
    // Garbage where the EBR goes must not survive as a chain.
    await applyWritesToFile(img, [{ offset: MiB, bytes: Buffer.alloc(512, 0x55), what: 'garbage' }]);
    await applyWritesToFile(img, serializePartitionTable(plan, SIZE));
    expect((await sfdiskVerify(img)).ok).toBe(true);
    expectSameAsSfdisk(plan, await sfdiskJson(img));
  });

  it('CHS past cylinder 1023 is FE FF FF exactly as sfdisk writes it (10 GiB sparse image)', async () => {
    const big = 10 * 1024 * MiB;
    const img = await makeDiskImage(
      join(dir, 'sfdisk-big.img'),
      big,
      'label: dos\nsize=9G, type=83\nsize=, type=7\n',
    );
    const table = await read(img);
    const copy = join(dir, 'big-copy.img');
    await rewrite(table, copy, big);
    expect((await readBytes(copy, 0, 512)).equals(await readBytes(img, 0, 512))).toBe(true);
  });

  it('a GPT on a 3 TiB sparse image: protective MBR capped at 2^32 - 1 sectors, sgdisk agrees', async () => {
    const size = 3 * 1024 * 1024 * MiB;
    const img = join(dir, 'huge.img');
    const plan: PartitionTable = {
      kind: 'gpt',
      sectorSize: 512,
      diskId: randomGuid(),
      findings: [],
      partitions: [
        {
          number: 1,
          kind: 'gpt',
          start: MiB,
          size: size - 2 * MiB,
          type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
          typeName: '',
          uuid: randomGuid(),
          name: 'all',
          attributes: '0',
        },
      ],
    };
    await rewrite(plan, img, size);
    const pmbr = parseMbr(await readBytes(img, 0, 512));
    expect(pmbr.entries[0].sectors).toBe(0xffffffff);
    expect(Buffer.from([pmbr.entries[0].lastChs.head]).toString('hex')).toBe('ff');
    const v = await sgdiskVerify(img);
    expect(v.ok, v.output).toBe(true);
    expectSameAsSfdisk(
      { ...plan, gpt: { firstUsableLba: 34, lastUsableLba: size / 512 - 34 } as PartitionTable['gpt'] },
      await sfdiskJson(img),
    );
    await fsp.rm(img);
  });
});
