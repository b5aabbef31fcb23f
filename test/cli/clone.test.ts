/**
 * `rescue clone` as scripts run it: the command forms (disk, SRC:N → TARGET:M, --to-free, a plain
 * target), the confirmation (--yes, --no, none), --json events, usage errors and a refusal with
 * its code — the engine's results themselves are proven in test/jobs/clone.test.ts.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rescue } from '../fixtures/cli.ts';
import {
  inspectDiskFiles,
  inspectPartition,
  MBR_DISK,
  makeDisk,
  sfdiskDump,
  sfdiskPartitions,
} from '../fixtures/disks.ts';
import { makeTempDir, run, sha256, sparseFile } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
let mbr: string;
let mbrFiles: Awaited<ReturnType<typeof inspectDiskFiles>>;

beforeAll(async () => {
  dir = await makeTempDir('rescue-clone-cli-');
  mbr = await makeDisk(MBR_DISK, dir);
  mbrFiles = await inspectDiskFiles(mbr);
}, 60_000);
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function fileSha(path: string): Promise<string> {
  return sha256(await fsp.readFile(path));
}

describe('rescue clone', () => {
  it('disk SRC TARGET --yes: the summary names the target, the result is the same disk', async () => {
    const target = await sparseFile(join(dir, 'disk.img'), MBR_DISK.size);
    const r = await rescue(['clone', 'disk', mbr, target, '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`Clone ${mbr}`);
    expect(r.stderr).toContain(target);
    expect(r.stderr).toMatch(/this will be overwritten/);
    expect(r.stderr).toMatch(/Cloned .* read back and verified/);
    expect(await sfdiskDump(target)).toBe(await sfdiskDump(mbr));
    const got = await inspectDiskFiles(target);
    for (const [node, p] of got) {
      expect(p.fsck).toBe('clean');
      expect(p.files).toEqual(mbrFiles.get(node)!.files);
    }
  });

  it('partition SRC:N TARGET:M, SRC:N --to-free TARGET and SRC:N FILE (--json)', async () => {
    const ext2 = [...mbrFiles.values()].find((p) => p.fs === 'ext2')!.files;
    const disk = await sparseFile(join(dir, 'parts.img'), 400 * MiB);
    await run('sfdisk', ['-q', disk], { input: 'label: gpt\nsize=20MiB\nsize=160MiB\n' });

    const into = await rescue(['clone', 'partition', `${mbr}:6`, `${disk}:2`, '--yes']);
    expect(into.code, into.stderr).toBe(0);
    expect(into.stderr).toMatch(/partition 2 of this disk will be overwritten/);
    const free = await rescue(['clone', 'partition', `${mbr}:6`, '--to-free', disk, '--yes', '--json']);
    expect(free.code, free.stderr).toBe(0);
    const events = free.stderr
      .trim()
      .split('\n')
      .map(
        (l) => JSON.parse(l) as { type: string; phase?: string; verifiedBytes?: number; partition?: number },
      );
    expect(events[0].type).toBe('confirm');
    expect(events.some((e) => e.type === 'progress' && e.phase === 'verify')).toBe(true);
    const done = events.at(-1)!;
    expect(done.type).toBe('done');
    expect(done.partition).toBe(3);
    expect(done.verifiedBytes).toBeGreaterThan(0);
    const parts = await sfdiskPartitions(disk);
    expect(parts).toHaveLength(3);
    for (const p of parts.slice(1)) {
      const got = await inspectPartition(disk, p.start * 512, p.size * 512, 'ext2');
      expect(got.fsck).toBe('clean');
      expect(got.files).toEqual(ext2);
    }

    const plain = join(dir, 'plain.img');
    const raw = await rescue(['clone', 'partition', `${mbr}:6`, plain, '--yes', '--no-verify']);
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stderr).not.toMatch(/verified/);
    expect((await inspectPartition(plain, 0, (await fsp.stat(plain)).size, 'ext2')).files).toEqual(ext2);
  });

  it('refuses the source as target with its code; --no and a missing --yes change nothing', async () => {
    const before = await fileSha(mbr);
    const same = await rescue(['clone', 'disk', mbr, mbr, '--yes']);
    expect(same.code).toBe(1);
    expect(same.stderr).toMatch(/\[E_TARGET_IS_SOURCE\]/);
    const target = await sparseFile(join(dir, 'untouched.img'), MBR_DISK.size);
    const no = await rescue(['clone', 'disk', mbr, target, '--no']);
    expect(no.code).toBe(3);
    const ask = await rescue(['clone', 'disk', mbr, target]);
    expect(ask.code).toBe(1);
    expect(ask.stderr).toMatch(/\[E_CONFIRMATION_REQUIRED\]/);
    expect((await fsp.readFile(target)).every((b) => b === 0)).toBe(true);
    expect(await fileSha(mbr)).toBe(before);
  });

  it('usage errors exit 2', async () => {
    for (const args of [
      ['clone'],
      ['clone', 'volume', mbr, mbr],
      ['clone', 'disk', mbr],
      ['clone', 'disk', mbr, '--to-free', mbr],
      ['clone', 'partition', `${mbr}:6`],
      ['clone', 'disk', mbr, join(dir, 'x.img'), '--verify', '--no-verify'],
    ]) {
      const r = await rescue([...args, '--yes']);
      expect(r.code, args.join(' ')).toBe(2);
    }
  });
});
