/**
 * Edit partitions, end to end: disks made by the real mkfs tools are backed up, then restored
 * with --shrink onto smaller disks, --fill onto larger ones, a manual --layout, --align and
 * --new-ids. Judged by independent tools: sfdisk/sgdisk for the table, each filesystem's own fsck,
 * every file's sha256 read through the real drivers, dumpe2fs/ntfsinfo/minfo for filesystem sizes.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRescueError, type RescueError } from '../../rescue/engine/errors.ts';
import { runBackup } from '../../rescue/engine/jobs/backup.ts';
import { type RestoreRequest, runRestore } from '../../rescue/engine/jobs/restore.ts';
import type { EditOptions } from '../../rescue/engine/resize/layout.ts';
import { rescue } from '../fixtures/cli.ts';
import { inspectDiskFiles, inspectPartition, makeDisk, sfdiskPartitions } from '../fixtures/disks.ts';
import {
  EDIT_GPT,
  EDIT_MBR,
  hiddenSectors,
  lastSectorSignature,
  MiB,
  patternTarget,
  recordingContext,
  toolFsSize,
} from '../fixtures/edit.ts';
import { makeTempDir, run, sha256, sparseFile } from '../fixtures/lab.ts';
import { sfdiskJson, sgdiskVerify } from '../fixtures/partitions.ts';

type Inspection = Awaited<ReturnType<typeof inspectDiskFiles>>;

let dir: string;
let scratch: string;
let gpt: string;
let mbr: string;
let gptImg: string;
let mbrImg: string;
let gptFiles: Inspection;
let mbrFiles: Inspection;
/** Filesystem sizes of the source partitions, by node ("1", "2" …). */
const gptSizes = new Map<string, number>();

async function backup(disk: string, name: string): Promise<string> {
  const r = await runBackup(
    { kind: 'disk', sources: [{ path: disk }], destination: dir, name, compression: 'normal', tool: 'test' },
    recordingContext(),
  );
  return r.firstFile;
}

async function restore(
  image: string,
  target: string,
  edit: EditOptions | undefined,
  extra: Partial<RestoreRequest> = {},
) {
  const ctx = recordingContext();
  const r = await runRestore({ image, target, edit: edit && { scratch, ...edit }, ...extra }, ctx);
  // Every scratch file is gone again.
  expect(await fsp.readdir(scratch)).toEqual([]);
  return { r, ctx };
}

async function refused(p: Promise<unknown>): Promise<RescueError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(isRescueError(e), String(e)).toBe(true);
  return e as RescueError;
}

async function fileSha(path: string): Promise<string> {
  return sha256(await fsp.readFile(path));
}

/** Every partition of `original` is on `restored` with its filesystem clean and every file identical. */
async function expectSameFiles(restored: string, original: Inspection): Promise<Inspection> {
  const got = await inspectDiskFiles(restored);
  expect([...got.keys()]).toEqual([...original.keys()]);
  for (const [node, p] of got) {
    expect(p.fs, node).toBe(original.get(node)!.fs);
    expect(p.fsck, `${node} (${p.fs})`).toBe('clean');
    expect(p.files, `${node} (${p.fs})`).toEqual(original.get(node)!.files);
  }
  return got;
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-edit-');
  scratch = join(dir, 'scratch');
  await fsp.mkdir(scratch);
  gpt = await makeDisk(EDIT_GPT, dir);
  mbr = await makeDisk(EDIT_MBR, dir);
  gptFiles = await inspectDiskFiles(gpt);
  mbrFiles = await inspectDiskFiles(mbr);
  // The oracles must have seen every filesystem, else the comparisons below prove little.
  expect([...gptFiles.values()].map((p) => p.fs)).toEqual(['vfat', 'ext4', 'ntfs', 'exfat']);
  expect([...mbrFiles.values()].map((p) => p.fs)).toEqual(['vfat', 'ext4', 'ntfs']);
  for (const p of [...gptFiles.values(), ...mbrFiles.values()]) {
    expect(p.fsck).toBe('clean');
    expect(p.files.size).toBeGreaterThan(0);
  }
  for (const p of await sfdiskPartitions(gpt)) {
    const fs = gptFiles.get(p.node)?.fs;
    if (fs && fs !== 'exfat') gptSizes.set(p.node, await toolFsSize(gpt, p.start * 512, p.size * 512, fs));
  }
  gptImg = await backup(gpt, 'gpt');
  mbrImg = await backup(mbr, 'mbr');
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('--shrink', () => {
  it('GPT onto a smaller disk: every partition present, fsck clean, every file identical, filesystems really smaller', async () => {
    const target = await sparseFile(join(dir, 'gpt-small.img'), 260 * MiB);
    const { r, ctx } = await restore(gptImg, target, { mode: 'shrink' });
    const phases = ctx.events.filter((e) => e.type === 'phase').map((e) => (e as { phase: string }).phase);
    for (const ph of ['analyse', 'shrink', 'restore']) expect(phases).toContain(ph);
    expect(r.plan!.join('\n')).toMatch(/partition 2 \(ext4 "root"\): 160\.0 MiB → .*filesystem shrunk/);
    expect(ctx.logs().join('\n')).toMatch(/partition 4 keeps its size: no Debian tool resizes exFAT/);

    const parts = await sfdiskPartitions(target);
    expect(parts.map((p) => p.node)).toEqual(['1', '2', '3', '4', '5']);
    expect((await sgdiskVerify(target)).ok).toBe(true);
    await expectSameFiles(target, gptFiles);
    const source = await sfdiskPartitions(gpt);
    for (const [i, p] of parts.entries()) {
      const fs = gptFiles.get(p.node)?.fs;
      if (fs === 'exfat' || fs === undefined) {
        // exFAT and swap cannot be resized: they keep their size (and move down).
        expect(p.size).toBe(source[i].size);
        continue;
      }
      const size = await toolFsSize(target, p.start * 512, p.size * 512, fs);
      expect(size, `${p.node} ${fs}`).toBeLessThan(gptSizes.get(p.node)!);
      expect(size).toBeLessThanOrEqual(p.size * 512);
    }
    // Moved NTFS and FAT boot sectors name their new start (Windows boots through it).
    expect(parts[2].start).not.toBe(source[2].start);
    expect(await hiddenSectors(target, parts[2].start * 512)).toBe(parts[2].start);
    // The ESP stays where it was: its boot sector is left as the source had it.
    expect(parts[0].start).toBe(source[0].start);
    expect(await hiddenSectors(target, parts[0].start * 512)).toBe(
      await hiddenSectors(gpt, source[0].start * 512),
    );
  });

  it('refused when the data does not fit, with the exact bytes missing, before anything is written; that much more fits', async () => {
    const target = await patternTarget(dir, 'gpt-tiny.img', 160 * MiB);
    const before = await fileSha(target);
    const e = await refused(restore(gptImg, target, { mode: 'shrink' }));
    expect(e.code).toBe('E_SHRINK_DOES_NOT_FIT');
    const m = /: (\d+) bytes \(([\d.]+) MiB\) are missing/.exec(e.message);
    expect(m, e.message).not.toBeNull();
    const missing = Number(m![1]);
    expect(missing).toBe((e.details as { missing: number }).missing);
    expect(e.message).not.toMatch(/at least/);
    expect(Math.abs(missing / MiB - Number(m![2]))).toBeLessThan(0.06);
    expect(e.message).toMatch(/partitions that keep their size: 4 .*5 /);
    expect(await fileSha(target)).toBe(before);
    expect(await fsp.readdir(scratch)).toEqual([]);

    // The figure is exact: a target that many bytes larger takes the disk.
    const enough = await sparseFile(join(dir, 'gpt-just-enough.img'), 160 * MiB + missing);
    await restore(gptImg, enough, { mode: 'shrink' });
    await expectSameFiles(enough, gptFiles);

    // Far too small: refused at once from the image's own figures, nothing copied to measure.
    const tiny = await patternTarget(dir, 'gpt-40.img', 40 * MiB);
    const ctx = recordingContext();
    const e2 = await refused(
      runRestore({ image: gptImg, target: tiny, edit: { mode: 'shrink', scratch } }, ctx),
    );
    expect(e2.code).toBe('E_SHRINK_DOES_NOT_FIT');
    expect(e2.message).toMatch(/at least \d+ bytes \([\d.]+ MiB\) are missing/);
    expect(ctx.events.some((x) => x.type === 'phase' && x.phase === 'shrink')).toBe(false);
  });

  it('MBR with logical partitions, the first at sector 63: --shrink --align onto a smaller disk', async () => {
    const target = await sparseFile(join(dir, 'mbr-small.img'), 200 * MiB);
    await restore(mbrImg, target, { mode: 'shrink', align: true });
    const parts = await sfdiskPartitions(target);
    expect(parts.map((p) => p.node)).toEqual(['1', '2', '5', '6']);
    for (const p of parts.filter((x) => x.node !== '2')) expect((p.start * 512) % MiB, p.node).toBe(0);
    expect((await sfdiskJson(target))!.id).toBe('0x0ddba11a');
    await expectSameFiles(target, mbrFiles);
    const p1 = parts[0];
    const p6 = parts[3];
    expect(await hiddenSectors(target, p1.start * 512)).toBe(p1.start);
    expect(await hiddenSectors(target, p6.start * 512)).toBe(p6.start);
  });
});

describe('--fill', () => {
  it('GPT onto a larger disk: filesystems grew to their partitions, stay clean, files identical, GPT backup at the real end', async () => {
    const target = await sparseFile(join(dir, 'gpt-large.img'), 800 * MiB);
    const { ctx } = await restore(gptImg, target, { mode: 'fill' });
    const phases = ctx.events.filter((e) => e.type === 'phase').map((e) => (e as { phase: string }).phase);
    expect(phases).toContain('grow');
    const parts = await sfdiskPartitions(target);
    const source = await sfdiskPartitions(gpt);
    expect((await sgdiskVerify(target)).ok).toBe(true);
    expect(await lastSectorSignature(target)).toBe('EFI PART');
    await expectSameFiles(target, gptFiles);
    for (const [i, p] of parts.entries()) {
      const fs = gptFiles.get(p.node)?.fs;
      if (fs === 'exfat' || fs === undefined) {
        expect(p.size).toBe(source[i].size);
        continue;
      }
      const size = await toolFsSize(target, p.start * 512, p.size * 512, fs);
      expect(p.size).toBeGreaterThan(source[i].size);
      expect(size, `${p.node} ${fs}`).toBeGreaterThan(gptSizes.get(p.node)!);
      // Grown to the partition, less the filesystem's own rounding (a block, a cluster and NTFS's backup boot sector).
      expect(p.size * 512 - size, `${p.node} ${fs}`).toBeLessThan(8 * 1024);
    }
    // What is left at the end of the disk is less than a MiB per partition.
    const end = Math.max(...parts.map((p) => p.start + p.size)) * 512;
    expect(800 * MiB - end).toBeLessThan(5 * MiB);
  });

  it('MBR (FAT16 at sector 63, logicals) onto a larger disk with --align: FAT16 grows only as far as FAT16 can', async () => {
    const target = await sparseFile(join(dir, 'mbr-large.img'), 600 * MiB);
    const { ctx } = await restore(mbrImg, target, { mode: 'fill', align: true });
    const parts = await sfdiskPartitions(target);
    expect(parts.map((p) => p.node)).toEqual(['1', '2', '5', '6']);
    for (const p of parts.filter((x) => x.node !== '2')) expect((p.start * 512) % MiB, p.node).toBe(0);
    await expectSameFiles(target, mbrFiles);
    const fat = await toolFsSize(target, parts[0].start * 512, parts[0].size * 512, 'vfat');
    expect(fat).toBeGreaterThan(100 * MiB);
    expect(fat).toBeLessThanOrEqual(parts[0].size * 512);
    // FAT16 with 2 KiB clusters ends below 65525 clusters (128 MiB): the rest went to the others.
    expect(fat).toBeLessThan(130 * MiB);
    expect(ctx.logs().join('\n')).not.toMatch(/error/i);
    for (const [i, fs] of [
      [2, 'ext4'],
      [3, 'ntfs'],
    ] as const) {
      const size = await toolFsSize(target, parts[i].start * 512, parts[i].size * 512, fs);
      expect(parts[i].size * 512 - size).toBeLessThan(8 * 1024);
    }
    expect(await hiddenSectors(target, parts[0].start * 512)).toBe(parts[0].start);
  });
});

describe('--layout, --new-ids and partition restores', () => {
  it('a manual layout through the CLI: the plan is shown before, sizes honoured, files identical', async () => {
    const target = await sparseFile(join(dir, 'gpt-layout.img'), 500 * MiB);
    const r = await rescue([
      'restore',
      gptImg,
      '--to',
      target,
      '--layout',
      '2=120M,3=fill',
      '--scratch',
      scratch,
      '--yes',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const confirm = r.stderr.slice(0, r.stderr.indexOf('partition 5'));
    expect(confirm).toMatch(/partitions: manual layout 2=120M,3=fill/);
    expect(confirm).toMatch(/partition 2 \(ext4 "root"\): 160\.0 MiB → ≈ 120\.0 MiB/);
    const parts = await sfdiskPartitions(target);
    const source = await sfdiskPartitions(gpt);
    expect(parts[1].size * 512).toBe(120 * MiB);
    // 100 MiB more disk and 40 MiB taken from partition 2 go to partition 3.
    expect(parts[2].size * 512).toBeGreaterThan(source[2].size * 512 + 139 * MiB);
    expect(parts[3].size).toBe(source[3].size);
    expect(parts[4].size).toBe(source[4].size);
    await expectSameFiles(target, gptFiles);
    expect(await toolFsSize(target, parts[1].start * 512, parts[1].size * 512, 'ext4')).toBe(120 * MiB);
  });

  it('--new-ids: new disk and partition GUIDs, new MBR signature; filesystem UUIDs unchanged; the warning explains boot entries', async () => {
    const target = join(dir, 'gpt-ids.img');
    const { r } = await restore(gptImg, target, { mode: 'copy', newIds: true });
    const before = (await sfdiskJson(gpt))!;
    const after = (await sfdiskJson(target))!;
    expect(after.id).not.toBe(before.id);
    for (const [i, p] of after.partitions.entries()) {
      expect(p.uuid).not.toBe(before.partitions[i].uuid);
      expect([p.start, p.size]).toEqual([before.partitions[i].start, before.partitions[i].size]);
    }
    const fsUuid = async (disk: string, p: { start: number; size: number }) =>
      (
        await run('blkid', [
          '-p',
          '-o',
          'value',
          '-s',
          'UUID',
          '-O',
          String(p.start * 512),
          '-S',
          String(p.size * 512),
          disk,
        ])
      ).stdout.trim();
    expect(await fsUuid(target, after.partitions[1])).toBe(await fsUuid(gpt, before.partitions[1]));
    expect(r.warnings.join('\n')).toMatch(/bcdboot/);
    expect(r.warnings.join('\n')).toMatch(/PARTUUID=/);
    expect(r.warnings.join('\n')).toMatch(/UUID= and LABEL= entries keep working/);
    await expectSameFiles(target, gptFiles);

    const mbrTarget = join(dir, 'mbr-ids.img');
    await restore(mbrImg, mbrTarget, { mode: 'copy', newIds: true });
    const id = (await sfdiskJson(mbrTarget))!.id;
    expect(id).toMatch(/^0x[0-9a-f]{8}$/);
    expect(id).not.toBe('0x0ddba11a');
  });

  it('one partition: --shrink into a smaller plain target, --fill into a larger partition of another disk', async () => {
    const small = await sparseFile(join(dir, 'root-small.img'), 100 * MiB);
    await restore(gptImg, small, { mode: 'shrink' }, { partition: 2 });
    const root = await inspectPartition(small, 0, 100 * MiB, 'ext4');
    expect(root.fsck).toBe('clean');
    expect(root.files).toEqual(gptFiles.get('2')!.files);
    expect(await toolFsSize(small, 0, 100 * MiB, 'ext4')).toBeLessThanOrEqual(100 * MiB);

    const disk = await sparseFile(join(dir, 'other-disk.img'), 400 * MiB);
    await run('sfdisk', ['--quiet', disk], { input: 'label: gpt\nstart=1MiB, size=300MiB\n' });
    await restore(gptImg, disk, { mode: 'fill' }, { partition: 3, targetPartition: 1 });
    const [p] = await sfdiskPartitions(disk);
    const win = await inspectPartition(disk, p.start * 512, p.size * 512, 'ntfs');
    expect(win.fsck).toBe('clean');
    expect(win.files).toEqual(gptFiles.get('3')!.files);
    expect(p.size * 512 - (await toolFsSize(disk, p.start * 512, p.size * 512, 'ntfs'))).toBeLessThan(
      8 * 1024,
    );
    expect(await hiddenSectors(disk, p.start * 512)).toBe(p.start);
  });

  it('a disk without a partition table (one ext4 over the whole disk) grows with --fill and shrinks with --shrink', async () => {
    const files = join(dir, 'bare-files');
    await fsp.mkdir(files);
    await fsp.writeFile(join(files, 'a.txt'), 'a whole-disk filesystem\n'.repeat(1000));
    await fsp.writeFile(join(files, 'b.bin'), Buffer.alloc(3 * MiB, 7));
    const bare = await sparseFile(join(dir, 'bare.img'), 48 * MiB);
    await run('mkfs.ext4', ['-q', '-F', '-L', 'bare', '-d', files, bare]);
    const original = await inspectPartition(bare, 0, 48 * MiB, 'ext4');
    const img = await backup(bare, 'bare');
    const larger = await sparseFile(join(dir, 'bare-larger.img'), 96 * MiB);
    await restore(img, larger, { mode: 'fill' });
    expect(await toolFsSize(larger, 0, 96 * MiB, 'ext4')).toBe(96 * MiB);
    const grown = await inspectPartition(larger, 0, 96 * MiB, 'ext4');
    expect(grown.fsck).toBe('clean');
    expect(grown.files).toEqual(original.files);
    const smaller = await sparseFile(join(dir, 'bare-smaller.img'), 32 * MiB);
    await restore(img, smaller, { mode: 'shrink' });
    expect(await toolFsSize(smaller, 0, 32 * MiB, 'ext4')).toBeLessThanOrEqual(32 * MiB);
    const shrunk = await inspectPartition(smaller, 0, 32 * MiB, 'ext4');
    expect(shrunk.fsck).toBe('clean');
    expect(shrunk.files).toEqual(original.files);
  });

  it('refusals before anything is written: five GPT partitions as MBR, sector by sector with --fill, bad layouts, --layout for one partition', async () => {
    const target = await patternTarget(dir, 'untouched.img', 64 * MiB);
    const before = await fileSha(target);
    const attempts: [RestoreRequest, string, RegExp][] = [
      [
        { image: gptImg, target, tableKind: 'mbr', edit: { mode: 'shrink', scratch } },
        'E_MBR_TOO_MANY_PARTITIONS',
        /5 partitions.*only 4 primary partitions/,
      ],
      [
        { image: gptImg, target, sectorBySector: true, edit: { mode: 'fill' } },
        'E_EDIT_NOT_APPLICABLE',
        /sector-by-sector/,
      ],
      [
        { image: gptImg, target, edit: { mode: 'layout', layout: '2=10M' } },
        'E_LAYOUT_TOO_SMALL',
        /partition 2 cannot be 10\.0 MiB/,
      ],
      [
        { image: gptImg, target, edit: { mode: 'layout', layout: '7=10M' } },
        'E_LAYOUT_INVALID',
        /no partition 7/,
      ],
      [
        { image: gptImg, target, partition: 2, edit: { mode: 'layout', layout: '2=10M' } },
        'E_EDIT_NOT_APPLICABLE',
        /--layout applies to whole-disk restores/,
      ],
    ];
    for (const [req, code, words] of attempts) {
      const e = await refused(runRestore(req, recordingContext()));
      expect(e.code, e.message).toBe(code);
      expect(e.message).toMatch(words);
    }
    expect(await fileSha(target)).toBe(before);
    const usage = await rescue(['restore', gptImg, '--to', target, '--fill', '--shrink', '--yes']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--fill and --shrink cannot be combined/);
    expect(await fileSha(target)).toBe(before);
  });
});
