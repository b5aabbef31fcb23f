/**
 * Issue #3, "Failure behaviour (each one tested)": every failure end to end through the command
 * line on real disk images (mkfs on sparse files, real loop devices, a real tmpfs, a real kernel
 * I/O error), asserting the exit code, the error code in brackets, that the message names the
 * image (and for a damaged chunk: the chunk and its disk offset), and what the target holds
 * afterwards — byte for byte.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extfs, type LabDiskPlan, type VolumeMaker } from '../../rescue/cli/lab.ts';
import { decodeUsedMap, ENTRY_FLAGS, ImageReader, UsedLayout } from '../../rescue/engine/image/index.ts';
import { manifestDisks } from '../../rescue/engine/jobs/restore.ts';
import { type CliResult, imagePath, rescue } from '../fixtures/cli.ts';
import { LoopLab } from '../fixtures/devices.ts';
import { makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, pseudoRandomBytes, run, sparseFile } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
const CLI = join(import.meta.dirname, '../../rescue/cli/main.ts');
const PATTERN = 0xa5;

/** ext4 holding one file of the given bytes (and a README), so its disk offset can be found. */
function ext4With(label: string, blob: Buffer): VolumeMaker {
  return async (path, size, work) => {
    const src = join(work, `src-${label}`);
    await fsp.mkdir(join(src, 'data'), { recursive: true });
    await fsp.writeFile(join(src, 'README.txt'), `${label}: test volume\n`);
    await fsp.writeFile(join(src, 'data', 'blob.bin'), blob);
    await sparseFile(path, size);
    await run('mkfs.ext4', ['-q', '-F', '-L', label, '-d', src, path]);
  };
}

const SMALL_BLOB = pseudoRandomBytes(16 * MiB, 0x5eed);
const SMALL_DISK: LabDiskPlan = {
  file: 'small.img',
  description: 'MBR, one ext4 partition with 16 MiB of random data',
  size: 48 * MiB,
  sfdisk: 'label: dos\nstart=1MiB, type=83',
  volumes: [ext4With('small', SMALL_BLOB)],
};

// More than 2 × 50 MiB of incompressible data: a --split 50M image has at least three volumes.
const BIG_DISK: LabDiskPlan = {
  file: 'big.img',
  description: 'MBR, one ext4 partition with 125 MiB of random data',
  size: 200 * MiB,
  sfdisk: 'label: dos\nstart=1MiB, type=83',
  volumes: [(path, size, work) => ext4With('big', randomBytes(125 * MiB))(path, size, work)],
};

const GPT5_DISK: LabDiskPlan = {
  file: 'gpt5.img',
  description: 'GPT with five partitions',
  size: 64 * MiB,
  sfdisk: ['label: gpt', ...Array.from({ length: 5 }, () => 'size=8MiB, type=L')].join('\n'),
  volumes: [extfs('ext2', 'one', 64 * 1024), undefined, undefined, undefined, undefined],
};

let dir: string;
let small: string;
let smallImg: string;
let smallSize: number;
let blobDiskOffset: number;

async function fileSha(path: string): Promise<string> {
  const h = createHash('sha256');
  const f = await fsp.open(path, 'r');
  try {
    for await (const chunk of f.createReadStream()) h.update(chunk as Buffer);
  } finally {
    await f.close();
  }
  return h.digest('hex');
}

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const f = await fsp.open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await f.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await f.close();
  }
}

/** A target that already holds something recognisable: `size` bytes of 0xA5. */
async function patternFile(path: string, size: number): Promise<string> {
  const f = await fsp.open(path, 'wx');
  try {
    const block = Buffer.alloc(4 * MiB, PATTERN);
    for (let o = 0; o < size; o += block.length) await f.write(block, 0, Math.min(block.length, size - o), o);
  } finally {
    await f.close();
  }
  return path;
}

/** Every file below `root`, as paths relative to it. */
async function filesBelow(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(root, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(join(e.parentPath, e.name).slice(root.length + 1));
  }
  return out.sort();
}

/**
 * A refusal: the exit code, the error line `rescue: MESSAGE [CODE]` on stderr naming every text in
 * `names`, a remedy, and no stack trace.
 */
function expectFailure(r: CliResult, code: string, names: string[]): string {
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(1);
  const line = r.stderr.split('\n').find((l) => l.startsWith('rescue: ') && l.endsWith(` [${code}]`));
  expect(line, r.stderr).toBeDefined();
  for (const n of names) expect(line).toContain(n);
  expect(r.stderr).toMatch(/\n {2}what to do: \S/);
  expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  return line!;
}

/** `rescue check` lists the damage on stdout (`  [CODE] MESSAGE`) and exits 1. */
function expectCheckDamage(r: CliResult, code: string, names: string[]): void {
  expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(1);
  const line = r.stdout.split('\n').find((l) => l.startsWith(`  [${code}] `));
  expect(line, r.stdout).toBeDefined();
  for (const n of names) expect(line).toContain(n);
  expect(r.stdout).toMatch(/: DAMAGED\n$/);
}

/** Target-side refusals name the target; the image is named in the summary printed before. */
function expectSummaryNames(r: CliResult, image: string, target: string): void {
  expect(r.stderr).toContain(`Restore ${image}\n  to ${target}`);
}

async function backup(args: string[]): Promise<string> {
  const r = await rescue(['backup', ...args, '--yes']);
  expect(r.code, r.stderr).toBe(0);
  return imagePath(r);
}

/** A copy of an image (all its volumes) in a folder of its own, to damage without harming others. */
async function copyImage(img: string, folder: string): Promise<string> {
  const to = join(dir, folder);
  await fsp.mkdir(to);
  for (const f of await fsp.readdir(join(img, '..'))) {
    if (f.startsWith(basename(img))) await fsp.copyFile(join(img, '..', f), join(to, f));
  }
  return join(to, basename(img));
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-failures-');
  small = await makeDisk(SMALL_DISK, dir);
  smallSize = (await fsp.stat(small)).size;
  const bytes = await fsp.readFile(small);
  blobDiskOffset = bytes.indexOf(SMALL_BLOB.subarray(0, 64));
  expect(blobDiskOffset).toBeGreaterThan(MiB);
  smallImg = await backup(['disk', small, '--to', dir, '--name', 'small']);
});

afterAll(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

describe('1. a chunk with flipped bytes', () => {
  it('check names the chunk and its disk offset; restore stops there and never writes it', async () => {
    const img = await copyImage(smallImg, 'flipped');
    const reader = await ImageReader.open(img);
    let bad: { chunk: number; payload: number; stored: number; diskOffset?: number };
    let badRuns: { start: number; length: number }[];
    let goodRuns: { start: number; length: number }[];
    try {
      const part = manifestDisks(reader)[0].regions.find((r) => r.kind === 'partition')!;
      const layout = new UsedLayout(decodeUsedMap(part.usedMap!, part.size), part.size);
      const onDisk = (windowStart: number) =>
        [...layout.pieces(windowStart, windowStart + reader.windowSize)].map((r) => ({
          start: part.start + r.start,
          length: r.length,
        }));
      // Chunks of the random file: large, not zero.
      const data = reader.entries
        .map((e, i) => ({ e, i }))
        .filter(({ e }) => e.regionId === part.id && !(e.flags & ENTRY_FLAGS.ZERO) && e.storedLength >= MiB);
      expect(data.length).toBeGreaterThanOrEqual(3);
      const victim = data[Math.floor(data.length / 2)];
      bad = {
        chunk: victim.i,
        payload: victim.e.payloadOffset,
        stored: victim.e.storedLength,
        diskOffset: reader.context(victim.e, victim.i).diskOffset,
      };
      badRuns = onDisk(victim.e.windowStart);
      goodRuns = onDisk(data[0].e.windowStart);
    } finally {
      await reader.close();
    }
    // The disk offset the engine names is the first used byte of that chunk's window.
    expect(bad.diskOffset).toBe(badRuns[0].start);
    // One volume: logical offset = file offset. Flip 16 bytes in the middle of the payload.
    const f = await fsp.open(img, 'r+');
    const at = bad.payload + Math.floor(bad.stored / 2);
    const b = Buffer.alloc(16);
    await f.read(b, 0, 16, at);
    for (let i = 0; i < 16; i++) b[i] ^= 0xff;
    await f.write(b, 0, 16, at);
    await f.close();

    const names = [img, `chunk ${bad.chunk}`, `disk offset ${bad.diskOffset}`];
    const check = await rescue(['check', img]);
    expectCheckDamage(check, 'E_CHUNK_CORRUPT', names);
    const json = JSON.parse((await rescue(['check', img, '--json'])).stdout);
    expect(json.ok).toBe(false);
    expect(json.points[0].problems).toEqual([
      expect.objectContaining({ code: 'E_CHUNK_CORRUPT', chunk: bad.chunk, diskOffset: bad.diskOffset }),
    ]);

    const target = await patternFile(join(dir, 'flipped-target.img'), smallSize);
    const r = await rescue(['restore', img, '--to', target, '--yes']);
    expectFailure(r, 'E_CHUNK_CORRUPT', names);
    // The restore did run (boot sector and an earlier chunk were written) …
    expect((await readAt(target, 0, 512)).equals(await readAt(small, 0, 512))).toBe(true);
    for (const span of goodRuns) {
      expect(
        (await readAt(target, span.start, span.length)).equals(await readAt(small, span.start, span.length)),
      ).toBe(true);
    }
    // … but not one byte of the damaged chunk reached the target.
    for (const span of badRuns) {
      const got = await readAt(target, span.start, span.length);
      expect(got.length).toBe(span.length);
      expect(got.every((x) => x === PATTERN)).toBe(true);
    }
    // A target file the restore had to create is removed when it fails: half a disk is worse than none.
    const fresh = join(dir, 'flipped-new.img');
    expectFailure(await rescue(['restore', img, '--to', fresh, '--yes']), 'E_CHUNK_CORRUPT', names);
    await expect(fsp.access(fresh)).rejects.toThrow();
  });
});

describe('2. a truncated image file', () => {
  it('check and restore fail with E_VOLUME_TRUNCATED; no target is written or created', async () => {
    const img = await copyImage(smallImg, 'truncated');
    const full = (await fsp.stat(img)).size;
    await fsp.truncate(img, full - 300 * 1024);
    const names = [img, `${full - 300 * 1024} bytes`, `${full} were written`];
    expectCheckDamage(await rescue(['check', img]), 'E_VOLUME_TRUNCATED', names);

    const target = await patternFile(join(dir, 'truncated-target.img'), smallSize);
    const before = await fileSha(target);
    expectFailure(await rescue(['restore', img, '--to', target, '--yes']), 'E_VOLUME_TRUNCATED', names);
    expect(await fileSha(target)).toBe(before);
    const fresh = join(dir, 'truncated-new.img');
    expectFailure(await rescue(['restore', img, '--to', fresh, '--yes']), 'E_VOLUME_TRUNCATED', names);
    expect(existsSync(fresh)).toBe(false);
  });

  it('cut inside the header: E_HEADER_CORRUPT saying how much is left; no target is created', async () => {
    const img = await copyImage(smallImg, 'headless');
    await fsp.truncate(img, 1000);
    const names = [img, 'only 1000 of 4096 bytes'];
    expectCheckDamage(await rescue(['check', img]), 'E_HEADER_CORRUPT', names);
    const fresh = join(dir, 'headless-new.img');
    expectFailure(await rescue(['restore', img, '--to', fresh, '--yes']), 'E_HEADER_CORRUPT', names);
    expect(existsSync(fresh)).toBe(false);
  });
});

describe('3 and 6: a split image with a missing volume; kill -9 during a backup', () => {
  let big: string;
  beforeAll(async () => {
    big = await makeDisk(BIG_DISK, dir);
  });

  it('a missing middle volume is named by number; the target is untouched', async () => {
    const img = await backup([
      'disk',
      big,
      '--to',
      dir,
      '--name',
      'split',
      '--compress',
      'none',
      '--split',
      '50M',
    ]);
    const volumes = (await fsp.readdir(join(img, '..'))).sort();
    expect(volumes).toEqual(['split.rimg', 'split.rimg.2', 'split.rimg.3']);
    const second = `${img}.2`;
    await fsp.rename(second, join(dir, 'split.rimg.2.elsewhere'));
    const names = [img, 'volume 2', second];
    expectCheckDamage(await rescue(['check', img]), 'E_VOLUME_MISSING', names);
    // Opened through a later volume, the same.
    expectCheckDamage(await rescue(['check', `${img}.3`]), 'E_VOLUME_MISSING', names);

    const target = await patternFile(join(dir, 'split-target.img'), 16 * MiB);
    const before = await fileSha(target);
    expectFailure(await rescue(['restore', img, '--to', target, '--yes']), 'E_VOLUME_MISSING', names);
    expect(await fileSha(target)).toBe(before);
    const fresh = join(dir, 'split-new.img');
    expectFailure(await rescue(['restore', img, '--to', fresh, '--yes']), 'E_VOLUME_MISSING', names);
    expect(existsSync(fresh)).toBe(false);

    // Put back, the image is whole: the volume was the only thing wrong.
    await fsp.rename(join(dir, 'split.rimg.2.elsewhere'), second);
    expect((await rescue(['check', img])).code).toBe(0);
  });

  it('kill -9 mid-backup leaves only *.partial files that open as E_IMAGE_INCOMPLETE; the next backup replaces them', async () => {
    const dest = join(dir, 'killed');
    await fsp.mkdir(dest);
    const folder = join(dest, 'victim');
    const partial = join(folder, 'victim.rimg.partial');
    let child: ChildProcess | undefined;
    try {
      child = spawn(
        process.execPath,
        [CLI, 'backup', 'disk', big, '--to', dest, '--name', 'victim', '--compress', 'high', '--yes'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      child.stderr?.on('data', (d) => {
        stderr += d;
      });
      let exited = false;
      const gone = new Promise<NodeJS.Signals | null>((resolve) =>
        child!.on('exit', (_code, sig) => {
          exited = true;
          resolve(sig);
        }),
      );
      // Wait until the image is being written (8 MiB of chunks in the .partial), then kill.
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (exited) throw new Error(`backup ended before it could be killed:\n${stderr}`);
        if (Date.now() > deadline) throw new Error(`no growing ${partial}:\n${stderr}`);
        const st = await fsp.stat(partial).catch(() => undefined);
        if (st && st.size >= 8 * MiB) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      child.kill('SIGKILL');
      expect(await gone).toBe('SIGKILL');
    } finally {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    const left = await filesBelow(dest);
    expect(left.length).toBeGreaterThan(0);
    expect(left.filter((f) => !f.endsWith('.partial'))).toEqual([]);

    const incomplete = [partial];
    expectFailure(await rescue(['info', partial]), 'E_IMAGE_INCOMPLETE', incomplete);
    expectCheckDamage(await rescue(['check', partial]), 'E_IMAGE_INCOMPLETE', incomplete);
    // Asked for by its final name, which does not exist: still "interrupted", not "not found".
    const final = join(folder, 'victim.rimg');
    expectFailure(await rescue(['info', final]), 'E_IMAGE_INCOMPLETE', [final]);
    // A .partial renamed by hand is not mistaken for an image: its header was never finalised.
    const renamed = join(dir, 'renamed-by-hand.rimg');
    await fsp.copyFile(partial, renamed);
    expectFailure(await rescue(['info', renamed]), 'E_IMAGE_INCOMPLETE', [renamed]);
    const fresh = join(dir, 'from-partial.img');
    expectFailure(
      await rescue(['restore', partial, '--to', fresh, '--yes']),
      'E_IMAGE_INCOMPLETE',
      incomplete,
    );
    expect(existsSync(fresh)).toBe(false);

    // The same task again: the stale .partial is replaced and a complete image appears.
    const img = await backup(['disk', big, '--to', dest, '--name', 'victim', '--compress', 'none']);
    expect(img).toBe(final);
    expect(await filesBelow(dest)).toEqual(['victim/victim.rimg']);
    expect((await rescue(['check', img])).code).toBe(0);
  });
});

describe('4. a wrong password', () => {
  it('is refused before anything is written; check refuses it too', async () => {
    const right = join(dir, 'right.pw');
    const wrong = join(dir, 'wrong.pw');
    await fsp.writeFile(right, 'Correct Horse\n');
    await fsp.writeFile(wrong, 'correct horse\n');
    const img = await backup(['disk', small, '--to', dir, '--name', 'secret', '--password-file', right]);
    const names = [img];

    const target = await patternFile(join(dir, 'secret-target.img'), smallSize);
    const before = await fileSha(target);
    expectFailure(
      await rescue(['restore', img, '--to', target, '--password-file', wrong, '--yes']),
      'E_WRONG_PASSWORD',
      names,
    );
    expect(await fileSha(target)).toBe(before);
    const fresh = join(dir, 'secret-new.img');
    expectFailure(
      await rescue(['restore', img, '--to', fresh, '--password-file', wrong, '--yes']),
      'E_WRONG_PASSWORD',
      names,
    );
    expect(existsSync(fresh)).toBe(false);
    expectFailure(await rescue(['check', img, '--password-file', wrong]), 'E_WRONG_PASSWORD', names);
    expectFailure(await rescue(['restore', img, '--to', fresh, '--yes']), 'E_PASSWORD_REQUIRED', names);
    expect(existsSync(fresh)).toBe(false);
    // The right one opens it: the refusals above were about the password only.
    expect((await rescue(['check', img, '--password-file', right])).code).toBe(0);
  });
});

describe('5. a full destination', () => {
  it('E_DESTINATION_FULL on an 8 MiB tmpfs, and no image or partial file is left', async () => {
    const mnt = join(dir, 'tmpfs');
    await fsp.mkdir(mnt);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
    try {
      const r = await rescue(['backup', 'disk', small, '--to', mnt, '--name', 'nospace', '--yes']);
      expectFailure(r, 'E_DESTINATION_FULL', [join(mnt, 'nospace', 'nospace.rimg')]);
      expect((await filesBelow(mnt)).filter((f) => /\.rimg|\.partial/.test(f))).toEqual([]);
      // The space is given back too.
      const st = await fsp.statfs(mnt);
      expect(st.bfree * st.bsize).toBeGreaterThan(7 * MiB);
    } finally {
      await run('umount', [mnt]);
    }
  });
});

describe('7. restores refused up front', () => {
  const lab = new LoopLab();
  afterAll(async () => {
    await lab.cleanup();
  });

  it('(a) a disk with a mounted filesystem and (b) the disk holding the image: nothing is written', async () => {
    const backing = join(dir, 'device.img');
    await sparseFile(backing, 96 * MiB);
    await run('sfdisk', ['-q', backing], { input: 'label: dos\nstart=1MiB, type=83\n' });
    const dev = await lab.attach(backing, 1);
    const part = `${dev}p1`;
    await run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', part]);
    const mnt = join(dir, 'device-mnt');
    await lab.mount(part, mnt, ['-o', 'noatime']);
    const firstMiB = await readAt(dev, 0, MiB);

    // (a) The image is elsewhere; the target disk has a mounted partition.
    const a = await rescue(['restore', smallImg, '--to', dev, '--yes']);
    expectFailure(a, 'E_DEVICE_IN_USE', [dev, mnt]);
    expectSummaryNames(a, smallImg, dev);
    expect((await readAt(dev, 0, MiB)).equals(firstMiB)).toBe(true);

    // (b) The image lies on the target disk itself (read-only mount: the device holds still).
    const held = join(mnt, 'held');
    await fsp.mkdir(held);
    await fsp.copyFile(smallImg, join(held, 'small.rimg'));
    await lab.umount(mnt);
    await lab.mount(part, mnt, ['-o', 'ro']);
    const onDisk = join(mnt, 'held', 'small.rimg');
    const whole = await fileSha(dev);
    for (const to of [dev, part]) {
      const b = await rescue(['restore', onDisk, '--to', to, '--yes']);
      expectFailure(b, 'E_TARGET_HOLDS_IMAGE', [to, onDisk, 'holds the image being restored']);
    }
    expect(await fileSha(dev)).toBe(whole);
  });

  it('(c) a target that is too small is left unchanged', async () => {
    const target = await patternFile(join(dir, 'tiny-target.img'), 16 * MiB);
    const before = await fileSha(target);
    const r = await rescue(['restore', smallImg, '--to', target, '--yes']);
    expectFailure(r, 'E_TARGET_TOO_SMALL', [target, String(16 * MiB)]);
    expectSummaryNames(r, smallImg, target);
    expect(await fileSha(target)).toBe(before);
  });

  it('(d) a GPT image with five partitions cannot become MBR: the manual explains why', async () => {
    const gpt5 = await makeDisk(GPT5_DISK, dir);
    const img = await backup(['disk', gpt5, '--to', dir, '--name', 'gpt5']);
    const fresh = join(dir, 'gpt5-as-mbr.img');
    const r = await rescue(['restore', img, '--to', fresh, '--table', 'mbr', '--yes']);
    expectFailure(r, 'E_MBR_TOO_MANY_PARTITIONS', [
      img,
      '5 partitions',
      'only 4 primary partitions',
      'not converted to logical ones automatically',
    ]);
    expect(existsSync(fresh)).toBe(false);
    const target = await patternFile(join(dir, 'gpt5-target.img'), 64 * MiB);
    const before = await fileSha(target);
    expectFailure(
      await rescue(['restore', img, '--to', target, '--table', 'mbr', '--yes']),
      'E_MBR_TOO_MANY_PARTITIONS',
      ['only 4 primary partitions'],
    );
    expect(await fileSha(target)).toBe(before);
  });

  it('(e) --to-free on an MBR disk whose four primary slots are taken', async () => {
    const img = await backup(['partition', `${small}:1`, '--to', dir, '--name', 'part1']);
    const full = await sparseFile(join(dir, 'four-primaries.img'), 256 * MiB);
    await run('sfdisk', ['-q', full], { input: `label: dos\n${'size=10MiB, type=83\n'.repeat(4)}` });
    const before = await fileSha(full);
    const r = await rescue(['restore', img, '--to-free', full, '--yes']);
    expectFailure(r, 'E_NO_FREE_SLOT', [full, '4 primary partition']);
    expectSummaryNames(r, img, full);
    expect(await fileSha(full)).toBe(before);
    // With one slot free the same restore goes through: space was never the problem.
    const three = await sparseFile(join(dir, 'three-primaries.img'), 256 * MiB);
    await run('sfdisk', ['-q', three], { input: `label: dos\n${'size=10MiB, type=83\n'.repeat(3)}` });
    const ok = await rescue(['restore', img, '--to-free', three, '--yes']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain('partition 4');
  });
});

describe('8. confirmation', () => {
  it('without --yes and without a terminal: E_CONFIRMATION_REQUIRED; --no: exit 3; nothing written', async () => {
    const target = await patternFile(join(dir, 'unconfirmed-target.img'), smallSize);
    const before = await fileSha(target);
    const r = await rescue(['restore', smallImg, '--to', target]);
    expectFailure(r, 'E_CONFIRMATION_REQUIRED', []);
    expect(r.stderr).toContain('Add --yes');
    // What would have been overwritten was shown.
    expectSummaryNames(r, smallImg, target);
    expect(await fileSha(target)).toBe(before);
    const no = await rescue(['restore', smallImg, '--to', target, '--no']);
    expect(no.code, no.stderr).toBe(3);
    expect(no.stderr).toContain('nothing was changed');
    expect(await fileSha(target)).toBe(before);
    const fresh = join(dir, 'unconfirmed-new.img');
    expectFailure(await rescue(['restore', smallImg, '--to', fresh]), 'E_CONFIRMATION_REQUIRED', []);
    expect((await rescue(['restore', smallImg, '--to', fresh, '--no'])).code).toBe(3);
    expect(existsSync(fresh)).toBe(false);
  });
});

describe('9. a source that fails to read', () => {
  const lab = new LoopLab();
  afterAll(async () => {
    await lab.cleanup();
  });

  /*
   * A real I/O error without device-mapper: the source disk image lives on btrfs, whose data
   * checksums make the kernel answer EIO for a block whose bytes were changed behind its back.
   */
  it('the backup fails with E_SOURCE_READ naming the source and the offset, and leaves no image', async () => {
    const fsImage = await sparseFile(join(dir, 'btrfs.img'), 256 * MiB);
    await run('mkfs.btrfs', ['-q', '-f', fsImage]);
    const mnt = join(dir, 'btrfs-mnt');
    let dev = await lab.attach(fsImage, 0);
    await lab.mount(dev, mnt);
    const source = join(mnt, 'disk.img');
    await run('cp', ['--sparse=always', small, source]);
    await lab.umount(mnt);
    await lab.detach(dev);

    // A byte of the random file in the middle of the ext4 partition, where only the data copy reads.
    const inBlob = 8 * MiB;
    const pattern = SMALL_BLOB.subarray(inBlob, inBlob + 64);
    const diskBytes = await fsp.readFile(small);
    const x = diskBytes.indexOf(pattern);
    expect(x).toBeGreaterThan(blobDiskOffset);
    const fsBytes = await fsp.readFile(fsImage);
    const where = fsBytes.indexOf(pattern);
    expect(where).toBeGreaterThan(0);
    expect(fsBytes.indexOf(pattern, where + 1)).toBe(-1);
    const f = await fsp.open(fsImage, 'r+');
    await f.write(Buffer.from([fsBytes[where] ^ 0xff]), 0, 1, where);
    await f.close();

    dev = await lab.attach(fsImage, 0);
    await lab.mount(dev, mnt, ['-o', 'ro']);
    // The oracle: the kernel itself reports an I/O error at that block.
    const bad = Math.floor(x / 4096) * 4096;
    const h = await fsp.open(source, 'r');
    await expect(h.read(Buffer.alloc(4096), 0, 4096, bad)).rejects.toMatchObject({ code: 'EIO' });
    await h.close();

    const dest = join(dir, 'eio');
    await fsp.mkdir(dest);
    const r = await rescue(['backup', 'disk', source, '--to', dest, '--name', 'eio', '--yes']);
    expectFailure(r, 'E_SOURCE_READ', [source, `at byte ${bad}`]);
    expect((await filesBelow(dest)).filter((n) => /\.rimg|\.partial/.test(n))).toEqual([]);
  });
});
