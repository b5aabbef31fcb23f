/**
 * Label and serial rules against blkid on hand-edited copies of real volumes: blkid (since
 * util-linux 2.32, like Windows) takes LABEL from the root-directory entry only and reports the
 * boot-sector copy as LABEL_FATBOOT, which we expose as state.bootLabel.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource } from '../../rescue/engine/devices/source.ts';
import { fat } from '../../rescue/engine/filesystems/fat.ts';
import { fatLayout, parseFatBootSector } from '../../rescue/engine/filesystems/fat-bpb.ts';
import { blkidExport, mkfsFat } from '../fixtures/fat.ts';
import { makeTempDir, sparseFile } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;

interface LabelCase {
  name: string;
  /** 11 bytes for the root entry; null removes it. */
  root: string | null;
  rootAttr?: number;
  /** Put the label behind a long-name entry and a file entry. */
  afterOtherEntries?: boolean;
  boot: string;
  bootSignature?: number;
}

const CASES: LabelCase[] = [
  { name: 'root and boot labels differ', root: 'ROOTLBL    ', boot: 'BOOTLBL    ' },
  { name: 'no root label entry', root: null, boot: 'BOOTLBL    ' },
  { name: '"NO NAME" in the root directory is a real label', root: 'NO NAME    ', boot: 'BOOTLBL    ' },
  { name: '"NO NAME" in the boot sector means none', root: 'ROOTLBL    ', boot: 'NO NAME    ' },
  { name: 'deleted root label entry', root: '\xe5OOTLBL    ', boot: 'BOOTLBL    ' },
  { name: 'root label starting with 0x05 (stands for 0xE5)', root: '\x05OOTLBL    ', boot: 'BOOTLBL    ' },
  { name: 'label after other entries', root: 'LATE LABEL ', afterOtherEntries: true, boot: 'BOOTLBL    ' },
  { name: 'lower case and inner spaces', root: 'a b c      ', boot: 'BOOTLBL    ' },
  { name: 'all spaces', root: '           ', boot: 'BOOTLBL    ' },
  {
    name: 'volume label with the directory bit is not a label',
    root: 'DIRLABEL   ',
    rootAttr: 0x18,
    boot: 'BOOTLBL    ',
  },
  {
    name: 'boot signature 0x28: serial but no boot label',
    root: 'ROOTLBL    ',
    boot: 'BOOTLBL    ',
    bootSignature: 0x28,
  },
  { name: 'no extended boot signature', root: 'ROOTLBL    ', boot: 'BOOTLBL    ', bootSignature: 0 },
];

let dir: string;
const bases: Record<string, { bytes: Buffer; size: number }> = {};

beforeAll(async () => {
  dir = await makeTempDir('rescue-fatlabel-');
  for (const [key, bits, size] of [
    ['FAT16', 16, 16 * MiB],
    ['FAT32', 32, 40 * MiB],
  ] as const) {
    const img = join(dir, `${key}.img`);
    await mkfsFat(img, { sizeBytes: size, fatBits: bits, sectorsPerCluster: 1, label: 'BOOTLBL' });
    const layout = fatLayout(parseFatBootSector(await fsp.readFile(img).then((b) => b.subarray(0, 512))));
    const head = (await fsp.readFile(img)).subarray(0, layout.dataStart + 8 * layout.clusterBytes);
    bases[key] = { bytes: Buffer.from(head), size };
  }
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe.each(['FAT16', 'FAT32'])('%s label and serial match blkid', (key) => {
  it.each(CASES)('$name', async (c) => {
    const { size } = bases[key];
    const bytes = Buffer.from(bases[key].bytes);
    const bs = parseFatBootSector(bytes);
    const layout = fatLayout(bs);
    const ext = layout.type === 32 ? 64 : 36;
    bytes.write(c.boot, ext + 7, 11, 'latin1');
    bytes[ext + 2] = c.bootSignature ?? 0x29;
    const rootAt = layout.type === 32 ? layout.dataStart : layout.rootDirStart;
    bytes.fill(0, rootAt, rootAt + 4 * 32);
    let at = rootAt;
    if (c.afterOtherEntries) {
      bytes.write('AAAAAAAAAAA', at, 'latin1');
      bytes[at + 11] = 0x0f;
      bytes.write('FILE    TXT', at + 32, 'latin1');
      bytes[at + 43] = 0x20;
      bytes.writeUInt16LE(3, at + 32 + 26);
      at += 64;
    }
    if (c.root !== null) {
      bytes.write(c.root, at, 11, 'latin1');
      bytes[at + 11] = c.rootAttr ?? 0x08;
    }
    const img = join(dir, `${key}-case.img`);
    await sparseFile(img, size);
    const h = await fsp.open(img, 'r+');
    await h.write(bytes, 0, bytes.length, 0);
    await h.close();

    const id = await fat.identify(
      new BufferSource(Buffer.concat([bytes, Buffer.alloc(size - bytes.length)])),
    );
    const blk = await blkidExport(img, 'latin1');
    expect(blk.TYPE).toBe('vfat');
    expect(id.label).toBe(blk.LABEL);
    expect(id.uuid).toBe(blk.UUID);
    expect(id.state?.bootLabel).toBe(blk.LABEL_FATBOOT);
  });
});
