/**
 * Reading files on real ext2/3/4 images. Oracles: the source directory mke2fs -d copied from (and
 * for a loop-mounted, kernel-written image, the read-only mount), sha256 of every file; debugfs
 * confirms that the structures under test really are there (extent depth, htree, TIND, inline data).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { openVolumeFiles, type VolumeFiles } from '../../rescue/engine/filesystems/files/index.ts';
import { fillTree, withMounted } from '../fixtures/ext.ts';
import { walkRealTree, walkVolume } from '../fixtures/files.ts';
import { makeTempDir, pseudoRandomBytes, run, sha256, sparseFile } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
const opened: FileSource[] = [];
const noLostFound = (rel: string) => rel === '/lost+found';

async function open(image: string, type: string): Promise<VolumeFiles> {
  const src = await FileSource.open(image);
  opened.push(src);
  const files = await openVolumeFiles(src, type);
  if (!files) throw new Error(`no reader for ${type}`);
  return files;
}

async function debugfs(image: string, request: string): Promise<string> {
  return (await run('debugfs', ['-R', request, image])).stdout;
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

/** A source tree with everything the ext reader has to get right. */
async function buildTree(root: string): Promise<void> {
  const put = async (rel: string, data: Buffer) => {
    await fsp.mkdir(join(root, rel, '..'), { recursive: true });
    await fsp.writeFile(join(root, rel), data);
  };
  await put('a/b/c/d/e/f/g/h/i/j/deep.txt', Buffer.from('eleven levels down\n'));
  for (const n of [0, 1, 59, 60, 61, 4095, 4096, 4097, 1024 * 1024 + 7])
    await put(`sizes/s${n}.bin`, n < 4 ? Buffer.alloc(n, 0x41) : pseudoRandomBytes(n, n));
  await put('etc/fstab', Buffer.from('UUID=1234 / ext4 defaults 0 1\n'));
  await put('usr/lib/os-release', Buffer.from('PRETTY_NAME="Test Linux"\n'));
  await fsp.symlink('../usr/lib/os-release', join(root, 'etc/os-release'));
  await fsp.symlink('/usr/lib/os-release', join(root, 'abs-os-release'));
  await fsp.symlink('a/b/c', join(root, 'fast-dir-link'));
  // A slow symlink (target > 60 bytes, stored in a data block) that still resolves.
  await fsp.symlink(`${'./'.repeat(90)}sizes/s4096.bin`, join(root, 'slow-link'));
  await fsp.symlink('..', join(root, 'a/b/up'));
  await fsp.symlink('does/not/exist', join(root, 'dangling'));
  await fsp.symlink('loop-b', join(root, 'loop-a'));
  await fsp.symlink('loop-a', join(root, 'loop-b'));
  // chain0 → chain1 → … → chain8 → sizes/s1.bin: chainK needs 9 - K follows.
  for (let k = 0; k <= 8; k++)
    await fsp.symlink(k === 8 ? 'sizes/s1.bin' : `chain${k + 1}`, join(root, `chain${k}`));
  await fsp.link(join(root, 'sizes/s61.bin'), join(root, 'hardlink-to-s61'));
  await run('mkfifo', [join(root, 'fifo')]);
  await fsp.mkdir(join(root, 'big dir'));
  for (let i = 0; i < 500; i++)
    await fsp.writeFile(
      join(root, 'big dir', `entry number ${i} with a name long enough to fill blocks`),
      String(i),
    );
  await fsp.writeFile(join(root, 'Ünïcødé файл 文件.txt'), 'unicode\n');
  // 400 islands of one block, every other block: hundreds of extents, a block map full of holes.
  const h = await fsp.open(join(root, 'islands.bin'), 'w');
  for (let i = 0; i < 400; i++) await h.write(Buffer.alloc(1024, (i % 255) + 1), 0, 1024, i * 2048);
  await h.close();
}

let tree: string;

beforeAll(async () => {
  dir = await makeTempDir('rescue-files-ext-');
  tree = join(dir, 'tree');
  await buildTree(tree);
});
afterAll(async () => {
  for (const s of opened) await s.close();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

describe('ext files: mke2fs -d images against their source tree', () => {
  for (const variant of [
    { type: 'ext4', args: [], label: 'ext4, 4 KiB blocks, metadata_csum' },
    { type: 'ext4', args: ['-b', '1024'], label: 'ext4, 1 KiB blocks (extent tree of depth 2)' },
    { type: 'ext3', args: [], label: 'ext3 (block maps, journal)' },
    { type: 'ext2', args: ['-b', '1024'], label: 'ext2, 1 KiB blocks (double indirect)' },
  ] as const) {
    it(variant.label, async () => {
      const image = join(dir, `${variant.type}${variant.args.join('')}.img`);
      await sparseFile(image, 48 * MiB);
      await run(`mkfs.${variant.type}`, ['-q', '-F', ...variant.args, '-d', tree, image]);
      // -D rebuilds every multi-block directory as an htree, as a live kernel would have made it.
      await run('e2fsck', ['-fyD', image], { allowFail: true });
      expect((await run('e2fsck', ['-fn', image], { allowFail: true })).code).toBe(0);
      const files = await open(image, variant.type);
      const ours = await walkVolume(files, noLostFound);
      expect(ours).toEqual(await walkRealTree(tree, noLostFound));

      const bigDir = await debugfs(image, 'stat "/big dir"');
      expect(bigDir).toMatch(/Flags: 0x[0-9a-f]*1[0-9a-f]{3}\b/); // EXT4_INDEX_FL: an htree
      if (variant.type === 'ext4' && variant.args.length > 0) {
        const levels = (await debugfs(image, 'ex /islands.bin')).match(/^\s*(\d+)\/\s*(\d+)/m);
        expect(Number(levels?.[2])).toBe(2);
      }
      if (variant.type === 'ext2') expect(await debugfs(image, 'stat /islands.bin')).toContain('(DIND)');
      const slow = await debugfs(image, 'stat /slow-link');
      expect(slow).not.toContain('Fast link dest');

      // Paths through symbolic links, '..' after a link, case sensitivity, limits.
      expect((await files.readFile('/etc/os-release')).toString()).toBe('PRETTY_NAME="Test Linux"\n');
      expect((await files.readFile('/abs-os-release')).toString()).toBe('PRETTY_NAME="Test Linux"\n');
      expect(await files.stat('/fast-dir-link/d/e/f/g/h/i/j/deep.txt')).toMatchObject({
        type: 'file',
        size: 19,
      });
      expect(await files.stat('/a/b/up/b/c/d')).toMatchObject({ type: 'dir' });
      expect(await files.stat('/a/b/up/b/up/b/c/../c/d/e')).toMatchObject({ type: 'dir' });
      expect(sha256(await files.readFile('/slow-link'))).toBe(
        sha256(await fsp.readFile(join(tree, 'sizes/s4096.bin'))),
      );
      expect(await files.stat('/slow-link')).toMatchObject({
        type: 'symlink',
        target: `${'./'.repeat(90)}sizes/s4096.bin`,
      });
      expect(await files.stat('/fifo')).toMatchObject({ type: 'other' });
      expect(await files.stat('/A')).toBeUndefined();
      expect(await files.stat('/a/B')).toBeUndefined();
      expect(await files.stat('/nothing')).toBeUndefined();
      expect(await files.stat('/sizes/s1.bin/below-a-file')).toBeUndefined();
      expect(await files.stat('/dangling')).toMatchObject({ type: 'symlink', target: 'does/not/exist' });
      expect(await codeOf(files.readFile('/dangling'))).toBe('E_FILE_NOT_FOUND');
      expect(await codeOf(files.readFile('/loop-a'))).toBe('E_SYMLINK_LOOP');
      expect(await codeOf(files.readFile('/chain1'))).toBe('ok'); // 8 links
      expect(await codeOf(files.readFile('/chain0'))).toBe('E_SYMLINK_LOOP'); // 9 links
      expect(await codeOf(files.readFile('/a'))).toBe('E_NOT_A_FILE');
      expect(await codeOf(files.readFile('/fifo'))).toBe('E_NOT_A_FILE');
      expect(await codeOf(files.readdir('/sizes/s1.bin'))).toBe('E_NOT_A_DIRECTORY');
      expect(await codeOf(files.readdir('/nothing'))).toBe('E_FILE_NOT_FOUND');
      expect(await codeOf(files.readFile('/sizes/s4097.bin', { maxBytes: 4096 }))).toBe('E_FILE_TOO_LARGE');
      expect(await files.readdir('/fast-dir-link/d')).toEqual(['e']);
      const st = await files.stat('/sizes/s4096.bin');
      const real = await fsp.stat(join(tree, 'sizes/s4096.bin'));
      expect(Math.floor((st?.mtime?.getTime() ?? 0) / 1000)).toBe(Math.floor(real.mtimeMs / 1000));
    });
  }

  it('ext2 with 1 KiB blocks: a sparse 66 MiB file whose end needs the triple-indirect block', async () => {
    const src = join(dir, 'tind-src');
    await fsp.mkdir(src);
    const size = 66 * MiB + 4321;
    const pieces = [0, 300 * 1024, 40 * MiB, 65 * MiB, size - 5000].map((at, i) => ({
      at,
      data: pseudoRandomBytes(5000, 100 + i),
    }));
    const h = await fsp.open(join(src, 'sparse.bin'), 'w');
    for (const p of pieces) await h.write(p.data, 0, p.data.length, p.at);
    await h.truncate(size);
    await h.close();
    const image = join(dir, 'tind.img');
    await sparseFile(image, 16 * MiB);
    await run('mkfs.ext2', ['-q', '-F', '-b', '1024', '-d', src, image]);
    expect(await debugfs(image, 'stat /sparse.bin')).toContain('(TIND)');
    const files = await open(image, 'ext2');
    const data = await files.readFile('/sparse.bin', { maxBytes: 80 * MiB });
    expect(sha256(data)).toBe(sha256(await fsp.readFile(join(src, 'sparse.bin'))));
    expect(await codeOf(files.readFile('/sparse.bin'))).toBe('E_FILE_TOO_LARGE');
  });

  it('ext4 with inline_data: files and directories kept in the inode and its extended attributes', async () => {
    const src = join(dir, 'inline-src');
    await fsp.mkdir(join(src, 'tiny'), { recursive: true });
    await fsp.writeFile(join(src, 'ten'), '0123456789');
    await fsp.writeFile(join(src, 'hundred'), pseudoRandomBytes(100, 5));
    await fsp.writeFile(join(src, 'tiny/a'), 'a');
    await fsp.symlink('../ten', join(src, 'tiny/link'));
    const image = join(dir, 'inline.img');
    await sparseFile(image, 16 * MiB);
    await run('mkfs.ext4', ['-q', '-F', '-O', 'inline_data', '-I', '256', '-d', src, image]);
    // mke2fs never spills an inline directory into the inode's extended attribute; the kernel does.
    const mnt = join(dir, 'mnt-inline');
    await withMounted(image, mnt, async (m) => {
      await fsp.mkdir(join(m, 'spill'));
      for (let i = 0; i < 5; i++) await fsp.writeFile(join(m, `spill/name${i}`), `${i}`);
    });
    for (const p of ['/hundred', '/tiny', '/spill'])
      expect(await debugfs(image, `stat ${p}`)).toContain('Size of inline data');
    expect(await debugfs(image, 'stat /hundred')).toContain('Size of inline data: 100');
    expect(await debugfs(image, 'stat /spill')).toMatch(/Size of inline data: (6[1-9]|[7-9]\d|\d{3})/);
    const files = await open(image, 'ext4');
    const oracle = await withMounted(image, mnt, (m) => walkRealTree(m, noLostFound), true);
    expect(await walkVolume(files, noLostFound)).toEqual(oracle);
    expect((await files.readFile('/tiny/link')).toString()).toBe('0123456789');
  });

  it('ext4 written by the kernel through a loop mount: a file spread over hundreds of extents (tree depth 1)', async () => {
    const image = join(dir, 'kernel.img');
    await sparseFile(image, 32 * MiB);
    await run('mkfs.ext4', ['-q', '-F', image]);
    const mnt = join(dir, 'mnt');
    const expected = new Map<string, string>();
    await withMounted(image, mnt, async (m) => {
      for (const [rel, sum] of await fillTree(m, 11, 0.25)) expected.set(`/${rel}`, sum);
      // Fill the volume but for ~1 MiB, then with one-block files; every other one goes: the
      // only free space left is single-block holes, which the next file has to use.
      const st = await fsp.statfs(m);
      await run('fallocate', ['-l', String(st.bavail * st.bsize - 1200 * 1024), join(m, 'ballast')]);
      await fsp.mkdir(join(m, 'spacers'));
      let n = 0;
      for (; ; n++) {
        try {
          await fsp.writeFile(join(m, `spacers/${n}`), pseudoRandomBytes(4096, n + 1));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
          await fsp.rm(join(m, `spacers/${n}`), { force: true });
          break;
        }
      }
      for (let i = 0; i < n; i += 2) await fsp.unlink(join(m, `spacers/${i}`));
      const holey = pseudoRandomBytes((Math.floor(n / 2) - 20) * 4096, 77);
      const h = await fsp.open(join(m, 'holey.bin'), 'w');
      await h.write(holey);
      await h.sync();
      await h.close();
      expected.set('/holey.bin', sha256(holey));
      await fsp.unlink(join(m, 'ballast'));
    });
    const ex = await debugfs(image, 'ex /holey.bin');
    const levels = [...ex.matchAll(/^\s*(\d+)\/\s*(\d+)/gm)];
    expect(Number(levels[0]?.[2])).toBeGreaterThanOrEqual(1);
    expect(levels.length).toBeGreaterThan(50);
    const oracle = await withMounted(image, mnt, (m) => walkRealTree(m, noLostFound), true);
    const files = await open(image, 'ext4');
    const ours = await walkVolume(files, noLostFound);
    expect(ours).toEqual(oracle);
    for (const [rel, sum] of expected) expect(ours.get(rel)?.sha256).toBe(sum);
  });
});
