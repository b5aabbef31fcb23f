/**
 * Clone without an intermediate image (issue #4): disks made by the real mkfs tools are cloned
 * disk → disk, partition → DISK:M / free space / a plain target, system → a smaller disk, and
 * sector by sector; the results are checked with sfdisk, each filesystem's own fsck and the sha256
 * of every file read through the real drivers. The refusals (onto the source under any name, onto
 * a disk with a mounted filesystem, onto a target too small) leave the target untouched, and the
 * read-back verification catches a byte the target did not keep.
 */
import { existsSync, promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRescueError, type RescueError } from '../../rescue/engine/errors.ts';
import { type CloneRequest, type CloneResult, runClone } from '../../rescue/engine/jobs/clone.ts';
import type { JobContext, JobEvent } from '../../rescue/engine/jobs/job.ts';
import { LoopLab } from '../fixtures/devices.ts';
import {
  type DiskFiles,
  GPT_DISK,
  inspectDiskFiles,
  inspectPartition,
  labPair,
  MBR_DISK,
  makeDisk,
  sfdiskDump,
  sfdiskPartitions,
} from '../fixtures/disks.ts';
import { EDIT_MBR } from '../fixtures/edit.ts';
import { makeTempDir, pseudoRandomBytes, run, sha256, sparseFile } from '../fixtures/lab.ts';
import { LINUX_UEFI, makeSystemDisk } from '../fixtures/systems.ts';

const MiB = 1024 * 1024;
let dir: string;
let gpt: string;
let mbr: string;
let gptFiles: DiskFiles;
let mbrFiles: DiskFiles;

beforeAll(async () => {
  dir = await makeTempDir('rescue-clone-');
  ({ gpt, mbr, gptFiles, mbrFiles } = await labPair(dir));
}, 120_000);
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function context(events: JobEvent[] = []): JobContext {
  return { signal: new AbortController().signal, emit: (e) => events.push(e) };
}

function clone(req: CloneRequest, events?: JobEvent[]): Promise<CloneResult> {
  return runClone(req, context(events));
}

async function refusal(req: CloneRequest): Promise<RescueError> {
  const e = await clone(req).then(
    () => undefined,
    (x: unknown) => x,
  );
  if (!isRescueError(e)) throw new Error(`expected a RescueError, got ${String(e)}`);
  return e;
}

async function fileSha(path: string): Promise<string> {
  return sha256(await fsp.readFile(path));
}

/** A target disk that is not empty: every byte a pattern, so stale data would show. */
async function usedTarget(name: string, size: number): Promise<string> {
  const path = join(dir, name);
  const h = await fsp.open(path, 'w');
  const block = pseudoRandomBytes(MiB, size);
  for (let at = 0; at < size; at += MiB) await h.write(block, 0, Math.min(MiB, size - at), at);
  await h.close();
  return path;
}

async function expectSameDisk(original: string, cloned: string, originalFiles: typeof gptFiles) {
  expect(await sfdiskDump(cloned)).toBe(await sfdiskDump(original));
  const got = await inspectDiskFiles(cloned);
  expect([...got.keys()]).toEqual([...originalFiles.keys()]);
  for (const [node, p] of got) {
    expect(p.fsck, `${node} (${p.fs})`).toBe('clean');
    expect(p.files, `${node} (${p.fs})`).toEqual(originalFiles.get(node)!.files);
  }
}

describe('disk clone, same size', () => {
  it('GPT (ESP FAT32 + ext4 + NTFS + exFAT) onto a disk full of other data', async () => {
    const target = await usedTarget('gpt-clone.img', GPT_DISK.size);
    const events: JobEvent[] = [];
    const r = await clone({ kind: 'disk', source: gpt, target }, events);
    expect(r.mode).toBe('disk');
    // Every byte written was read back and compared (verification is on by default).
    expect(r.verifiedBytes).toBe(r.bytesWritten);
    expect(events.some((e) => e.type === 'phase' && e.phase === 'verify')).toBe(true);
    await expectSameDisk(gpt, target, gptFiles);
    const v = await run('sgdisk', ['-v', target], { allowFail: true });
    expect(v.stdout).toMatch(/No problems found/);
  });

  it('MBR with logical partitions; the boot code of sector 0 comes along', async () => {
    const target = await usedTarget('mbr-clone.img', MBR_DISK.size);
    await clone({ kind: 'disk', source: mbr, target });
    await expectSameDisk(mbr, target, mbrFiles);
    const head = async (p: string) => (await fsp.readFile(p)).subarray(0, 446);
    expect((await head(target)).equals(await head(mbr))).toBe(true);
  });

  it('sector by sector: the clone is byte-identical (GPT and MBR)', async () => {
    for (const [src, size] of [
      [gpt, GPT_DISK.size],
      [mbr, MBR_DISK.size],
    ] as const) {
      const target = await usedTarget('sbs-clone.img', size);
      const r = await clone({ kind: 'disk', source: src, target, sectorBySector: true });
      expect(r.bytesWritten).toBe(size);
      expect(await fileSha(target), src).toBe(await fileSha(src));
      await fsp.rm(target);
    }
  });

  it('onto a larger disk: the GPT backup goes to the real end', async () => {
    const target = await sparseFile(join(dir, 'gpt-larger.img'), 800 * MiB);
    await clone({ kind: 'disk', source: gpt, target });
    await expectSameDisk(gpt, target, gptFiles);
    expect((await run('sgdisk', ['-v', target], { allowFail: true })).stdout).toMatch(/No problems found/);
  });
});

describe('disk clone with edited partitions', () => {
  it('onto a smaller disk with shrinking (--shrink): clean filesystems, the same files', async () => {
    const target = await sparseFile(join(dir, 'gpt-smaller.img'), 500 * MiB);
    const r = await clone({ kind: 'disk', source: gpt, target, edit: { mode: 'shrink' } });
    // Shrunk and moved filesystems differ from the source by design: no read-back, and it says so.
    expect(r.verifiedBytes).toBe(0);
    expect(r.warnings.join('\n')).toMatch(/not read back/);
    const got = await inspectDiskFiles(target);
    expect([...got.keys()]).toEqual([...gptFiles.keys()]);
    for (const [node, p] of got) {
      expect(p.fsck, `${node} (${p.fs})`).toBe('clean');
      expect(p.files, `${node} (${p.fs})`).toEqual(gptFiles.get(node)!.files);
    }
  });
});

describe('partition clone', () => {
  it('into partition M of another disk (SRC:N → DISK:M); the partition takes the source type', async () => {
    const target = await sparseFile(join(dir, 'other.img'), 400 * MiB);
    await run('sfdisk', ['-q', target], { input: 'label: gpt\nsize=50MiB\nsize=200MiB\n' });
    const r = await clone({ kind: 'partition', source: gpt, sourcePartition: 2, target, targetPartition: 2 });
    expect(r.mode).toBe('into-partition');
    expect(r.verifiedBytes).toBeGreaterThan(0);
    const [, p2] = await sfdiskPartitions(target);
    const got = await inspectPartition(target, p2.start * 512, p2.size * 512, 'ext4');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual([...gptFiles.values()].find((p) => p.fs === 'ext4')!.files);
    expect(p2.type).toBe('0FC63DAF-8483-4772-8E79-3D69D8477DE4');
  });

  it('into unallocated space (--to-free): a new partition is made there', async () => {
    const target = await sparseFile(join(dir, 'free.img'), 400 * MiB);
    await run('sfdisk', ['-q', target], { input: 'label: gpt\nsize=50MiB\n' });
    const r = await clone({ kind: 'partition', source: gpt, sourcePartition: 3, target, toFree: true });
    expect(r.mode).toBe('free-space');
    const parts = await sfdiskPartitions(target);
    expect(parts).toHaveLength(2);
    expect(parts[1].size * 512).toBe(200 * MiB);
    expect(parts[1].type).toBe('EBD0A0A2-B9E5-4433-87C0-68B6B72699C7');
    const got = await inspectPartition(target, parts[1].start * 512, parts[1].size * 512, 'ntfs');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual([...gptFiles.values()].find((p) => p.fs === 'ntfs')!.files);
  });

  it('onto a plain target (the target is the partition), from a logical partition of an MBR disk', async () => {
    const target = join(dir, 'ext2-alone.img');
    const r = await clone({ kind: 'partition', source: mbr, sourcePartition: 6, target });
    expect(r.mode).toBe('partition');
    const got = await inspectPartition(target, 0, (await fsp.stat(target)).size, 'ext2');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual([...mbrFiles.values()].find((p) => p.fs === 'ext2')!.files);
    // The clone of a bare filesystem (no partition table) back onto a partition of a disk.
    const disk = await sparseFile(join(dir, 'one-part.img'), 200 * MiB);
    await run('sfdisk', ['-q', disk], { input: 'label: dos\nsize=160MiB, type=83\n' });
    await clone({ kind: 'partition', source: target, target: disk, targetPartition: 1 });
    const [p1] = await sfdiskPartitions(disk);
    const again = await inspectPartition(disk, p1.start * 512, p1.size * 512, 'ext2');
    expect(again.fsck).toBe('clean');
    expect(again.files).toEqual(got.files);
  });
});

describe('reads through the page cache where direct reads are impossible', () => {
  it('a FAT filesystem image of an odd size (not whole 4 KiB blocks) clones and verifies', async () => {
    const src = join(dir, 'odd.img');
    await sparseFile(src, 16 * MiB + 1536);
    await run('mkfs.vfat', ['-F', '16', '-n', 'ODD', src]);
    await fsp.writeFile(join(dir, 'odd.bin'), pseudoRandomBytes(3 * MiB + 77, 42));
    await run('mcopy', ['-i', src, join(dir, 'odd.bin'), '::odd.bin'], { env: { MTOOLS_SKIP_CHECK: '1' } });
    const target = join(dir, 'odd-clone.img');
    const r = await clone({ kind: 'partition', source: src, target });
    expect(r.verifiedBytes).toBe(r.bytesWritten);
    const got = await inspectPartition(target, 0, (await fsp.stat(target)).size, 'vfat');
    expect(got.fsck).toBe('clean');
    expect(got.files.get('odd.bin')).toBe(sha256(pseudoRandomBytes(3 * MiB + 77, 42)));
  });
});

describe('system clone', () => {
  it('the partitions a Linux needs, onto a smaller disk: only those, each where it was', async () => {
    const disk = await makeSystemDisk(LINUX_UEFI, dir);
    // The system's partitions (ESP, /boot, root) end at 289 MiB of the 400 MiB disk.
    const target = await usedTarget('smaller-ssd.img', 300 * MiB);
    const events: JobEvent[] = [];
    const r = await clone({ kind: 'system', source: disk, target }, events);
    expect(r.mode).toBe('disk');
    expect(events.some((e) => e.type === 'log' && /root filesystem/.test(e.message))).toBe(true);
    const before = await sfdiskPartitions(disk);
    const after = await sfdiskPartitions(target);
    expect(after.map((p) => [p.start, p.size, p.type, p.uuid, p.name])).toEqual(
      before.slice(0, 3).map((p) => [p.start, p.size, p.type, p.uuid, p.name]),
    );
    const original = await inspectDiskFiles(disk);
    const cloned = await inspectDiskFiles(target);
    expect([...cloned.keys()]).toEqual(['1', '2', '3']);
    for (const [node, p] of cloned) {
      expect(p.fsck, `${node} ${p.fs}`).toBe('clean');
      expect(p.files, `${node} ${p.fs}`).toEqual(original.get(node)!.files);
    }
    expect((await run('sgdisk', ['-v', target], { allowFail: true })).stdout).toMatch(/No problems found/);
  });
});

describe('block devices (loop devices standing in for disks)', () => {
  const lab = new LoopLab();
  afterAll(async () => {
    await lab.cleanup();
  });

  it('disk → disk, then partition device → partition device of the same disk (they do not overlap)', async () => {
    const copy = join(dir, 'mbr-dev-source.img');
    await fsp.copyFile(mbr, copy);
    const targetFile = await usedTarget('mbr-dev-target.img', MBR_DISK.size);
    const src = await lab.attach(copy, 1);
    const dst = await lab.attach(targetFile, 0);
    const r = await clone({ kind: 'disk', source: src, target: dst });
    expect(r.verifiedBytes).toBe(r.bytesWritten);
    await lab.detach(dst);
    await expectSameDisk(mbr, targetFile, mbrFiles);
    // FAT16 partition 5 onto partition 6 (the ext2) of the source disk itself.
    expect(existsSync(`/sys/block/${basename(src)}/${basename(src)}p6`)).toBe(true);
    const p = await clone({ kind: 'partition', source: `${src}p5`, target: `${src}p6` });
    expect(p.mode).toBe('partition');
    await lab.detach(src);
    const parts = await sfdiskPartitions(copy);
    const p6 = parts.find((x) => x.node.endsWith('6'))!;
    const got = await inspectPartition(copy, p6.start * 512, p6.size * 512, 'vfat');
    expect(got.fsck).toBe('clean');
    expect(got.files).toEqual(mbrFiles.get('5')!.files);
  });
});

describe('refusals: nothing is written', () => {
  const lab = new LoopLab();
  afterAll(async () => {
    await lab.cleanup();
  });

  it('onto the source itself, and onto the source seen through a loop device (whole or a partition)', async () => {
    const before = await fileSha(mbr);
    const same = await refusal({ kind: 'disk', source: mbr, target: mbr });
    expect(same.code).toBe('E_TARGET_IS_SOURCE');
    expect(same.message).toContain(mbr);
    const dev = await lab.attach(mbr, 1);
    expect(existsSync(`/sys/block/${basename(dev)}/${basename(dev)}p6`)).toBe(true);
    const viaLoop = await refusal({ kind: 'disk', source: mbr, target: dev });
    expect(viaLoop.code).toBe('E_TARGET_IS_SOURCE');
    expect(viaLoop.message).toContain(dev);
    expect(viaLoop.message).toContain(`${dev} (a loop device over ${mbr}) is ${mbr} itself`);
    // A partition clone of partition 5 into partition 6 of the same disk, seen through the loop.
    const viaPart = await refusal({ kind: 'partition', source: mbr, sourcePartition: 5, target: `${dev}p6` });
    expect(viaPart.code).toBe('E_TARGET_IS_SOURCE');
    expect(viaPart.message).toContain(
      `${dev}p6 (a partition of loop device ${dev} over ${mbr}) lies inside ${mbr}`,
    );
    // The other way round: the loop device as source, its backing file as target.
    const back = await refusal({ kind: 'disk', source: dev, target: mbr });
    expect(back.code).toBe('E_TARGET_IS_SOURCE');
    await lab.detach(dev);
    expect(await fileSha(mbr)).toBe(before);
  });

  it('onto a disk holding a mounted filesystem (the disk device and its image file)', async () => {
    const backing = await sparseFile(join(dir, 'mounted-target.img'), MBR_DISK.size);
    await run('sfdisk', ['-q', backing], { input: 'label: dos\nstart=1MiB, type=83\n' });
    const dev = await lab.attach(backing, 1);
    await run('mkfs.ext4', ['-q', '-F', `${dev}p1`]);
    const mnt = join(dir, 'mnt');
    await lab.mount(`${dev}p1`, mnt);
    // A clone writes the boot code and table first: they must be as they were.
    const firstMiB = async () => (await fsp.readFile(backing)).subarray(0, MiB);
    const before = await firstMiB();
    for (const target of [dev, backing]) {
      const e = await refusal({ kind: 'disk', source: mbr, target });
      expect(e.code, target).toBe('E_DEVICE_IN_USE');
      expect(e.message).toContain(mnt);
    }
    expect((await firstMiB()).equals(before)).toBe(true);
    await lab.umount(mnt);
    await lab.detach(dev);
  });

  it('a target too small for the partitions (no shrinking asked for)', async () => {
    const target = await usedTarget('too-small.img', 300 * MiB);
    const before = await fileSha(target);
    const e = await refusal({ kind: 'disk', source: gpt, target });
    expect(e.code).toBe('E_TARGET_TOO_SMALL');
    expect(e.message).toContain(target);
    expect(await fileSha(target)).toBe(before);
  });

  it('a source mounted read-write (the copy would be torn), unless allowed', async () => {
    const src = await sparseFile(join(dir, 'busy-source.img'), 32 * MiB);
    await run('mkfs.ext2', ['-q', '-F', src]);
    const dev = await lab.attach(src, 0);
    const mnt = join(dir, 'src-mnt');
    await lab.mount(dev, mnt);
    const target = join(dir, 'busy-clone.img');
    const e = await refusal({ kind: 'partition', source: src, target });
    expect(e.code).toBe('E_SOURCE_MOUNTED');
    expect(e.message).toMatch(/Cannot clone .* consistently/);
    await expect(fsp.stat(target)).rejects.toThrow();
    const r = await clone({ kind: 'partition', source: src, target, allowMounted: true });
    expect(r.warnings.join('\n')).toMatch(/mounted/);
    expect(r.verifiedBytes).toBe(r.bytesWritten);
    await lab.umount(mnt);
    await lab.detach(dev);
  });
});

describe('verification', () => {
  it('reads the target back: a byte the target did not keep fails with its disk offset', async () => {
    const target = await usedTarget('verify.img', GPT_DISK.size);
    const [, , p3] = await sfdiskPartitions(gpt);
    // Byte 3 of the NTFS boot sector ("NTFS    " OEM id) lies in the used map of partition 3.
    const offset = p3.start * 512 + 3;
    const e = await refusal({
      kind: 'disk',
      source: gpt,
      target,
      beforeVerify: async () => {
        const h = await fsp.open(target, 'r+');
        await h.write(Buffer.from([0x58]), 0, 1, offset);
        await h.close();
      },
    });
    expect(e.code).toBe('E_VERIFY_MISMATCH');
    expect(e.details?.offset).toBe(offset);
    expect(e.message).toContain(`byte ${offset} (partition 3)`);
    // Without verification the same damage goes unnoticed: the check is what catches it.
    const r = await clone({
      kind: 'disk',
      source: gpt,
      target,
      verify: false,
      beforeVerify: async () => {
        throw new Error('not called without verification');
      },
    });
    expect(r.verifiedBytes).toBe(0);
  });

  it('a partition that moved: its rewritten partition-start field is allowed for, a byte next to it is not', async () => {
    const target = await sparseFile(join(dir, 'verify-free.img'), 300 * MiB);
    await run('sfdisk', ['-q', target], { input: 'label: gpt\nsize=30MiB\n' });
    // The NTFS of partition 3 lands at 31 MiB (it was at 262 MiB): its hidden-sectors field changes.
    const r = await clone({ kind: 'partition', source: gpt, sourcePartition: 3, target, toFree: true });
    expect(r.verifiedBytes).toBe(r.bytesWritten);
    const [, p2] = await sfdiskPartitions(target);
    const start = p2.start * 512;
    const bytes = async (at: number, n: number) => (await fsp.readFile(target)).subarray(at, at + n);
    expect((await bytes(start + 0x1c, 4)).readUInt32LE(0)).toBe(p2.start);
    await run('sfdisk', ['-q', '--delete', target, '2']);
    const e = await refusal({
      kind: 'partition',
      source: gpt,
      sourcePartition: 3,
      target,
      toFree: true,
      beforeVerify: async () => {
        const h = await fsp.open(target, 'r+');
        await h.write(Buffer.from([0x58]), 0, 1, start + 0x1b);
        await h.close();
      },
    });
    expect(e.code).toBe('E_VERIFY_MISMATCH');
    expect(e.details?.offset).toBe(start + 0x1b);
  });

  it('--align (partitions moved, not resized) is read back at the new places; a changed byte there is caught', async () => {
    const old = await makeDisk(EDIT_MBR, dir);
    // Aligning moves partitions up to 1 MiB later: the target has room for that.
    const target = await sparseFile(join(dir, 'aligned.img'), EDIT_MBR.size + 4 * MiB);
    const r = await clone({ kind: 'disk', source: old, target, edit: { mode: 'copy', align: true } });
    expect(r.warnings.join(' ')).not.toMatch(/not read back/);
    expect(r.verifiedBytes).toBeGreaterThan(0);
    const parts = await sfdiskPartitions(target);
    for (const p of parts.filter((x) => x.type !== '5')) expect((p.start * 512) % MiB).toBe(0);
    const before = await inspectDiskFiles(old);
    const after = await inspectDiskFiles(target);
    for (const [node, p] of after) {
      expect(p.fsck, node).toBe('clean');
      expect(p.files, node).toEqual(before.get(node)!.files);
    }
    // The same clone again, with a byte of the moved first partition changed before the read-back.
    await sparseFile(target, EDIT_MBR.size + 4 * MiB);
    const first = parts[0].start * 512;
    const e = await refusal({
      kind: 'disk',
      source: old,
      target,
      edit: { mode: 'copy', align: true },
      beforeVerify: async () => {
        const h = await fsp.open(target, 'r+');
        await h.write(Buffer.from([0x58]), 0, 1, first + 3);
        await h.close();
      },
    });
    expect(e.code).toBe('E_VERIFY_MISMATCH');
    expect(e.details?.offset).toBe(first + 3);
  });

  it('a partition clone onto a plain target names the offset in the target', async () => {
    const target = join(dir, 'verify-part.img');
    const e = await refusal({
      kind: 'partition',
      source: mbr,
      sourcePartition: 6,
      target,
      beforeVerify: async () => {
        // The ext2 superblock's magic (offset 1024 + 56).
        const h = await fsp.open(target, 'r+');
        await h.write(Buffer.from([0]), 0, 1, 1024 + 56);
        await h.close();
      },
    });
    expect(e.code).toBe('E_VERIFY_MISMATCH');
    expect(e.details?.offset).toBe(1024 + 56);
  });
});
