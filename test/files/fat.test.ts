/**
 * Reading files on FAT12/16/32 images written by mtools and exFAT images written by exfat-fuse.
 * Oracles: the source tree copied in (names incl. long and Unicode ones, sha256 of contents), the
 * hashes of the fragmenting fill, and for FAT the tree mtools itself copies back out (mcopy -s);
 * for exFAT the read-only exfat-fuse mount of the same image.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { exfatLayout, parseExfatBootSector } from '../../rescue/engine/filesystems/exfat-boot.ts';
import { EXFAT_SET, entrySetChecksum } from '../../rescue/engine/filesystems/files/exfat-dir.ts';
import { openVolumeFiles, type VolumeFiles } from '../../rescue/engine/filesystems/files/index.ts';
import { fillExfat, fsckExfat, mkfsExfat, withExfatMount } from '../fixtures/exfat.ts';
import { fillFat, mkfsFat, mtools } from '../fixtures/fat.ts';
import { type TreeMap, walkRealTree, walkVolume } from '../fixtures/files.ts';
import { makeTempDir, pseudoRandomBytes, run, sha256 } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
let tree: string;
const opened: FileSource[] = [];

async function open(image: string, type: string): Promise<VolumeFiles> {
  const src = await FileSource.open(image);
  opened.push(src);
  const files = await openVolumeFiles(src, type);
  if (!files) throw new Error(`no reader for ${type}`);
  return files;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (!isRescueError(e)) throw e;
    return e.code;
  }
}

/** Names FAT must keep: 8.3 in either case, long, with spaces, Unicode; a multi-cluster directory. */
async function buildTree(root: string): Promise<void> {
  const put = async (rel: string, data: Buffer | string) => {
    await fsp.mkdir(join(root, rel, '..'), { recursive: true });
    await fsp.writeFile(join(root, rel), data);
  };
  await put('EFI/Microsoft/Boot/bootmgfw.efi', pseudoRandomBytes(20_000, 1));
  await put('EFI/debian/grubx64.efi', pseudoRandomBytes(9000, 2));
  await put('EFI/BOOT/BOOTX64.EFI', pseudoRandomBytes(7000, 3));
  await put('readme.txt', 'lower-case 8.3 name\n');
  await put('UPPER.TXT', 'upper-case 8.3 name\n');
  await put('ReadMe2.Txt', 'mixed case needs a long name\n');
  await put('empty.txt', '');
  await put(
    'Long Directory Name With Spaces/sub dir/deeper/a file with a very long name, longer than 13 characters × 3.txt',
    'x\n',
  );
  await put('Ünïcødé dïr/файл 文件.txt', 'unicode\n');
  await put('a/b/c/d/e/f/g/h/deep.txt', 'deep\n');
  await put('data/random.bin', pseudoRandomBytes(300_000, 4));
  for (let i = 0; i < 300; i++) await put(`many/file number ${i}.txt`, `${i}\n`);
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-files-fat-');
  tree = join(dir, 'tree');
  await buildTree(tree);
});
afterAll(async () => {
  for (const s of opened) await s.close();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

/** Entries of `sub` (the source tree, the fill's hashes) must appear in `ours` exactly. */
function expectContains(ours: TreeMap, sub: TreeMap): void {
  for (const [k, v] of sub) {
    if (k === '/') continue;
    if (v.type === 'dir') expect(ours.get(k)?.type, k).toBe('dir');
    else expect(ours.get(k), k).toEqual(v);
  }
}

describe('FAT files (mtools)', () => {
  for (const v of [
    { bits: 12, size: 8 * MiB, spc: 4, label: 'FAT12' },
    { bits: 16, size: 32 * MiB, spc: 4, label: 'FAT16' },
    { bits: 32, size: 64 * MiB, spc: 1, label: 'FAT32 (512-byte clusters)' },
  ] as const) {
    it(`${v.label}: long names, subdirectories, fragmented files, against the source and mtools' copy-out`, async () => {
      const image = join(dir, `fat${v.bits}.img`);
      await mkfsFat(image, { sizeBytes: v.size, fatBits: v.bits, sectorsPerCluster: v.spc });
      await run('mcopy', ['-s', '-i', image, ...(await fsp.readdir(tree)).map((n) => join(tree, n)), '::/'], {
        env: { MTOOLS_SKIP_CHECK: '1' },
      });
      const hashes = await fillFat(image, join(dir, `work${v.bits}`), {
        seed: v.bits,
        rounds: 6,
        clusterBytes: 512 * v.spc,
      });
      const files = await open(image, 'vfat');
      const ours = await walkVolume(files);
      expectContains(ours, await walkRealTree(tree));
      for (const [rel, sum] of hashes) expect(ours.get(`/${rel}`)?.sha256, rel).toBe(sum);
      const out = join(dir, `out${v.bits}`);
      await fsp.mkdir(out);
      await mtools('mcopy', ['-s', '-n', '-i', image, '::/*', out]);
      expect(ours).toEqual(await walkRealTree(out));

      expect(await files.stat('/efi/MICROSOFT/boot/BootMgFw.EFI')).toMatchObject({
        type: 'file',
        size: 20_000,
      });
      // The 8.3 alias of a long name works too, as on Windows.
      const short = (await mtools('mdir', ['-i', image, '::/']).then((r) => r.stdout)).match(
        /^(LONGDI~\d)/m,
      )?.[1];
      expect(short).toBeDefined();
      expect(await files.readdir(`/${short}/sub dir`)).toEqual(['deeper']);
      expect(await files.readdir('/')).toEqual(
        expect.arrayContaining(['readme.txt', 'UPPER.TXT', 'ReadMe2.Txt']),
      );
      expect(await files.stat('/nothing')).toBeUndefined();
      expect(await files.stat('/readme.txt/x')).toBeUndefined();
      expect(await codeOf(files.readFile('/data'))).toBe('E_NOT_A_FILE');
      expect(await codeOf(files.readdir('/readme.txt'))).toBe('E_NOT_A_DIRECTORY');
      expect(await codeOf(files.readFile('/data/random.bin', { maxBytes: 299_999 }))).toBe(
        'E_FILE_TOO_LARGE',
      );
      expect((await files.readFile('/empty.txt')).length).toBe(0);
    });
  }
});

/**
 * exfat-fuse never sets NoFatChain on files nor keeps ValidDataLength short, so two files written
 * first (hence contiguous) get both in their directory entries, with the set checksum redone;
 * fsck.exfat then checks the volume is still consistent.
 */
async function markContiguous(
  image: string,
  names: Record<string, { validDataLength?: number }>,
): Promise<number> {
  const img = await fsp.readFile(image);
  const l = exfatLayout(parseExfatBootSector(img));
  const rootAt = l.heapStart + (l.rootCluster - 2) * l.clusterBytes;
  let patched = 0;
  for (let off = rootAt; off < rootAt + l.clusterBytes; off += 32) {
    if (img[off] !== EXFAT_SET.FILE) continue;
    const name = img.toString('utf16le', off + 66, off + 66 + img[off + 32 + EXFAT_SET.OFF_NAME_LENGTH] * 2);
    const want = names[name];
    if (!want) continue;
    img[off + 32 + EXFAT_SET.OFF_FLAGS] |= EXFAT_SET.FLAG_NO_FAT_CHAIN;
    if (want.validDataLength !== undefined)
      img.writeBigUInt64LE(BigInt(want.validDataLength), off + 32 + EXFAT_SET.OFF_VALID_DATA_LENGTH);
    const count = img[off + EXFAT_SET.OFF_SECONDARY_COUNT] + 1;
    img.writeUInt16LE(
      entrySetChecksum(img.subarray(off, off + count * 32)),
      off + EXFAT_SET.OFF_SET_CHECKSUM,
    );
    patched++;
  }
  await fsp.writeFile(image, img);
  return patched;
}

describe('exFAT files (exfat-fuse)', () => {
  it('contiguous (NoFatChain) and FAT-chained files, short ValidDataLength, long and Unicode names, against the mount', async () => {
    const image = join(dir, 'exfat.img');
    await mkfsExfat(image, { sizeBytes: 64 * MiB, clusterSize: '4K' });
    const contiguous = pseudoRandomBytes(40_000, 1);
    const tail = pseudoRandomBytes(50_000, 2);
    await withExfatMount(image, {}, async (m) => {
      await fsp.writeFile(join(m, 'contiguous.bin'), contiguous);
      await fsp.writeFile(join(m, 'short-valid.bin'), tail);
    });
    expect(
      await markContiguous(image, { 'contiguous.bin': {}, 'short-valid.bin': { validDataLength: 5 } }),
    ).toBe(2);
    const hashes = await withExfatMount(image, {}, async (m) => {
      await run('cp', ['-r', tree, join(m, 'copied')]);
      return fillExfat(m, { seed: 5, rounds: 6, clusterBytes: 4096, manyFiles: 150 });
    });
    expect((await fsckExfat(image)).code).toBe(0);
    // exfat-fuse returns the stale bytes past ValidDataLength; the specification (and Windows,
    // and the Linux kernel) read them as zeros: that file is checked against the specification.
    const skip = (rel: string) => rel === '/short-valid.bin';
    const oracle = await withExfatMount(image, { readOnly: true }, (m) => walkRealTree(m, skip));
    const files = await open(image, 'exfat');
    const ours = await walkVolume(files, skip);
    expect(ours).toEqual(oracle);
    expect(ours.get('/contiguous.bin')?.sha256).toBe(sha256(contiguous));
    const expectedTail = Buffer.alloc(tail.length);
    tail.copy(expectedTail, 0, 0, 5);
    expect(sha256(await files.readFile('/short-valid.bin'))).toBe(sha256(expectedTail));
    const source = await walkRealTree(tree);
    expectContains(ours, new Map([...source].map(([k, v]) => [k === '/' ? '/copied' : `/copied${k}`, v])));
    for (const [rel, sum] of hashes) expect(ours.get(`/${rel}`)?.sha256, rel).toBe(sum);
    expect(await files.stat('/COPIED/ÜNÏCØDÉ DÏR/ФАЙЛ 文件.TXT')).toMatchObject({ type: 'file', size: 8 });
    expect(await files.stat('/nothing')).toBeUndefined();
    expect(await codeOf(files.readdir('/copied/readme.txt'))).toBe('E_NOT_A_DIRECTORY');
  });
});
