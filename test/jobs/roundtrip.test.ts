/**
 * The proof of issue #3: disks made by real mkfs tools go through backup → restore and come back
 * with the same partition table (sfdisk -d), clean filesystems (each one's own fsck) and every
 * file bit-identical (read through the real drivers).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imagePath, rescue } from '../fixtures/cli.ts';
import {
  type DiskFiles,
  inspectDiskFiles,
  inspectPartition,
  labPair,
  sfdiskDump,
  sfdiskPartitions,
} from '../fixtures/disks.ts';
import { dumpe2fsUsed } from '../fixtures/ext.ts';
import { makeTempDir, run, sha256, sparseFile } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
let gpt: string;
let mbr: string;
let gptFiles: DiskFiles;
let mbrFiles: DiskFiles;

beforeAll(async () => {
  dir = await makeTempDir('rescue-roundtrip-');
  ({ gpt, mbr, gptFiles, mbrFiles } = await labPair(dir));
}, 120_000);
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function backup(args: string[]): Promise<string> {
  const r = await rescue(['backup', ...args, '--yes']);
  expect(r.code, r.stderr).toBe(0);
  const img = imagePath(r);
  expect(img).toMatch(/\.rimg$/);
  await fsp.access(img);
  return img;
}

async function restore(args: string[]) {
  const r = await rescue(['restore', ...args, '--yes']);
  expect(r.code, r.stderr).toBe(0);
  return r;
}

async function expectSameDisk(original: string, restored: string, originalFiles: typeof gptFiles) {
  expect(await sfdiskDump(restored)).toBe(await sfdiskDump(original));
  const got = await inspectDiskFiles(restored);
  expect([...got.keys()]).toEqual([...originalFiles.keys()]);
  for (const [node, p] of got) {
    expect(p.fsck, `${node} (${p.fs})`).toBe('clean');
    expect(p.files, `${node} (${p.fs})`).toEqual(originalFiles.get(node)!.files);
  }
}

describe('disk backup and restore', () => {
  it('GPT (ESP FAT32 + ext4 + NTFS + exFAT) into a new image file, checked after backup', async () => {
    const img = await backup(['disk', gpt, '--to', dir, '--name', 'gpt-normal', '--check']);
    expect(img).toBe(join(dir, 'gpt-normal', 'gpt-normal.rimg'));
    expect((await rescue(['check', img])).code).toBe(0);
    const target = join(dir, 'gpt-restored.img');
    await restore([img, '--to', target]);
    expect((await fsp.stat(target)).size).toBe((await fsp.stat(gpt)).size);
    await expectSameDisk(gpt, target, gptFiles);
  });

  it('GPT onto a larger disk: same partitions, the backup GPT moved to the real end', async () => {
    const img = await backup(['disk', gpt, '--to', dir, '--name', 'gpt-larger', '--compress', 'none']);
    const target = await sparseFile(join(dir, 'larger.img'), 900 * MiB);
    await restore([img, '--to', target]);
    await expectSameDisk(gpt, target, gptFiles);
    const v = await run('sgdisk', ['-v', target], { allowFail: true });
    expect(v.stdout).toMatch(/No problems found/);
  });

  it('MBR with logical partitions (FAT16 primary, FAT16 and ext2 logicals)', async () => {
    const img = await backup(['disk', mbr, '--to', dir, '--name', 'mbr']);
    const target = join(dir, 'mbr-restored.img');
    await restore([img, '--to', target]);
    await expectSameDisk(mbr, target, mbrFiles);
    // The boot code and disk signature of sector 0 came back too.
    const a = Buffer.alloc(446);
    const b = Buffer.alloc(446);
    const fa = await fsp.open(mbr, 'r');
    const fb = await fsp.open(target, 'r');
    await fa.read(a, 0, 446, 0);
    await fb.read(b, 0, 446, 0);
    await fa.close();
    await fb.close();
    expect(b.equals(a)).toBe(true);
  });

  it('encrypted, split and highly compressed', async () => {
    const pw = join(dir, 'pw.txt');
    await fsp.writeFile(pw, 'correct horse battery staple\n');
    const img = await backup([
      'disk',
      gpt,
      '--to',
      dir,
      '--name',
      'gpt-secret',
      '--compress',
      'high',
      '--password-file',
      pw,
      '--split',
      '50M',
    ]);
    const info = await rescue(['info', img, '--json', '--password-file', pw]);
    expect(info.code, info.stderr).toBe(0);
    const manifest = JSON.parse(info.stdout);
    // More than 50 MiB of (random) data at 50 MiB per volume: at least two volume files.
    expect(manifest.files.length).toBeGreaterThanOrEqual(2);
    for (const f of manifest.files.slice(0, -1)) expect((await fsp.stat(f)).size).toBe(50 * MiB);
    expect(manifest.options.encrypted).toBe(true);
    expect(manifest.options.compression).toBe('high');
    expect((await rescue(['check', img, '--password-file', pw])).code).toBe(0);
    const target = join(dir, 'gpt-secret-restored.img');
    await restore([img, '--to', target, '--password-file', pw]);
    await expectSameDisk(gpt, target, gptFiles);
  });

  it('two disks in one image, restored one at a time', async () => {
    const img = await backup(['disk', gpt, mbr, '--to', dir, '--name', 'two-disks']);
    const info = await rescue(['info', img, '--json']);
    expect(JSON.parse(info.stdout).disks).toHaveLength(2);
    const refused = await rescue(['restore', img, '--to', join(dir, 'which.img'), '--yes']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/E_CHOOSE_DISK/);
    const target = join(dir, 'second.img');
    await restore([img, '--disk', '1', '--to', target]);
    await expectSameDisk(mbr, target, mbrFiles);
  });
});

describe('comments', () => {
  it('up to 1024 characters are kept and shown; 1025 are refused before anything is read', async () => {
    const long = 'é'.repeat(1025);
    const r = await rescue([
      'backup',
      'disk',
      mbr,
      '--to',
      dir,
      '--name',
      'too-long',
      '--comment',
      long,
      '--yes',
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[E_COMMENT_TOO_LONG\]/);
    await expect(fsp.access(join(dir, 'too-long'))).rejects.toThrow();
    const img = await backup(['disk', mbr, '--to', dir, '--name', 'commented', '--comment', long.slice(1)]);
    expect(JSON.parse((await rescue(['info', img, '--json'])).stdout).comment).toBe(long.slice(1));
  });
});

describe('sector by sector', () => {
  it('a sector-by-sector disk image restores to a byte-identical disk, and --json streams progress events', async () => {
    const r = await rescue([
      'backup',
      'disk',
      mbr,
      '--to',
      dir,
      '--name',
      'mbr-sbs',
      '--sector-by-sector',
      '--json',
      '--yes',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const events = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; bytesDone?: number; bytesTotal?: number });
    const progress = events.filter((e) => e.type === 'progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)!.bytesDone).toBe(progress.at(-1)!.bytesTotal);
    expect(progress.at(-1)!.bytesTotal).toBe((await fsp.stat(mbr)).size);
    const target = join(dir, 'mbr-sbs.img');
    await restore([imagePath(r), '--to', target, '--sector-by-sector']);
    expect(await fileSha(target)).toBe(await fileSha(mbr));
  });

  it('a sector-by-sector restore of a used-blocks image writes zeros where nothing was used', async () => {
    const img = await backup(['partition', `${mbr}:6`, '--to', dir, '--name', 'ext2-sbs']);
    const target = join(dir, 'ext2-dirty.img');
    const size = (await sfdiskPartitions(mbr)).find((p) => p.node.endsWith('6'))!.size * 512;
    await fsp.writeFile(target, Buffer.alloc(size, 0x77));
    await restore([img, '--to', target, '--sector-by-sector']);
    // Every block dumpe2fs calls free is zero now; the old 0x77 filler is gone from all of them.
    const bytes = await fsp.readFile(target);
    const { used } = await dumpe2fsUsed(target);
    let pos = 0;
    for (const e of [...used, { start: size, length: 0 }]) {
      const gap = bytes.subarray(pos, e.start);
      expect(
        gap.every((b) => b === 0),
        `free bytes ${pos}..${e.start}`,
      ).toBe(true);
      pos = e.start + e.length;
    }
    const got = await inspectPartition(target, 0, size, 'ext2');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual([...mbrFiles.values()].find((p) => p.fs === 'ext2')!.files);
  });
});

describe('partition images', () => {
  it('into an existing, larger partition of another disk (DISK:M)', async () => {
    const img = await backup(['partition', `${gpt}:2`, '--to', dir, '--name', 'root-part']);
    const target = await sparseFile(join(dir, 'other.img'), 400 * MiB);
    await run('sfdisk', ['-q', target], { input: 'label: gpt\nsize=50MiB\nsize=200MiB\n' });
    await restore([img, '--to', `${target}:2`]);
    const [, p2] = await sfdiskPartitions(target);
    const got = await inspectPartition(target, p2.start * 512, p2.size * 512, 'ext4');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual([...gptFiles.values()].find((p) => p.fs === 'ext4')!.files);
    // The partition now has the image's partition type.
    expect(p2.type).toBe('0FC63DAF-8483-4772-8E79-3D69D8477DE4');
  });

  it('into unallocated space: a new partition is made there', async () => {
    const img = await backup(['partition', `${gpt}:3`, '--to', dir, '--name', 'ntfs-part']);
    const target = await sparseFile(join(dir, 'free.img'), 400 * MiB);
    await run('sfdisk', ['-q', target], { input: 'label: gpt\nsize=50MiB\n' });
    await restore([img, '--to-free', target]);
    const parts = await sfdiskPartitions(target);
    expect(parts).toHaveLength(2);
    expect(parts[1].size * 512).toBe(200 * MiB);
    expect(parts[1].type).toBe('EBD0A0A2-B9E5-4433-87C0-68B6B72699C7');
    const got = await inspectPartition(target, parts[1].start * 512, parts[1].size * 512, 'ntfs');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual([...gptFiles.values()].find((p) => p.fs === 'ntfs')!.files);
  });

  it('onto a plain target: the target is the partition (filesystem at offset 0)', async () => {
    const img = await backup(['partition', `${mbr}:5`, `${mbr}:6`, '--to', dir, '--name', 'logicals']);
    const target = join(dir, 'ext2-alone.img');
    await restore([img, '--partition', '6', '--to', target]);
    const got = await inspectPartition(target, 0, (await fsp.stat(target)).size, 'ext2');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual([...mbrFiles.values()].find((p) => p.fs === 'ext2')!.files);
  });
});

async function fileSha(path: string): Promise<string> {
  return sha256(await fsp.readFile(path));
}
