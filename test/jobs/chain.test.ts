/**
 * Issue #4's proof for backup chains: a disk (ext4 + NTFS) is changed between points — files
 * added, appended to, deleted — and every point of full → incremental → incremental →
 * differential restores to exactly the file tree of its moment (read through the real drivers,
 * fsck clean). Missing points make exactly the later incrementals unusable; another disk is
 * refused as the source of a chain.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extfs, GPT_TYPE, ntfsfs } from '../../rescue/cli/lab.ts';
import { ENTRY_FLAGS, ImageReader, type IndexEntry } from '../../rescue/engine/image/index.ts';
import { appendRandom, withPartitionMounted, writeRandom } from '../fixtures/chain.ts';
import { imagePath, rescue } from '../fixtures/cli.ts';
import { filesOf, inspectDiskFiles, inspectPartition, makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, sha256 } from '../fixtures/lab.ts';
import { LINUX_UEFI, makeSystemDisk } from '../fixtures/systems.ts';

async function sha256File(p: string): Promise<string> {
  return sha256(await fsp.readFile(p));
}

const MiB = 1024 * 1024;
type Tree = Awaited<ReturnType<typeof inspectDiskFiles>>;

const PLAN = {
  file: 'disk.img',
  description: 'GPT: ext4 + NTFS',
  size: 260 * MiB,
  sfdisk: [
    'label: gpt',
    `start=1MiB, size=128MiB, type=${GPT_TYPE.linux}, name="root"`,
    `type=${GPT_TYPE.basicData}, name="data"`,
  ].join('\n'),
  volumes: [extfs('ext4', 'root', 12 * MiB), ntfsfs('Data', 12 * MiB)],
};

let dir: string;
let disk: string;
const trees: Tree[] = [];
const points: string[] = [];

async function cli(args: string[]) {
  const r = await rescue(args);
  expect(r.code, r.stderr).toBe(0);
  return r;
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-chain-');
  disk = await makeDisk(PLAN, dir);
  await fsp.mkdir(join(dir, 'images'));
  trees.push(await inspectDiskFiles(disk));
  points.push(
    imagePath(await cli(['backup', 'disk', disk, '--to', join(dir, 'images'), '--name', 'pc', '--yes'])),
  );

  // Moment 1: new files on both, one appended to.
  await withPartitionMounted(disk, 1, 'ext4', async (m) => {
    await writeRandom(join(m, 'new/one.bin'), 3 * MiB, 11);
    await appendRandom(join(m, 'new/one.bin'), 5000, 12);
  });
  await withPartitionMounted(disk, 2, 'ntfs', async (m) => {
    await writeRandom(join(m, 'docs/report.bin'), 2 * MiB, 13);
  });
  trees.push(await inspectDiskFiles(disk));
  points.push(imagePath(await cli(['backup', 'incremental', points[0], '--yes'])));

  // Moment 2: a deletion and an append on ext4, an append on NTFS.
  await withPartitionMounted(disk, 1, 'ext4', async (m) => {
    const victims = (await fsp.readdir(m)).filter((n) => n !== 'lost+found' && n !== 'new');
    await fsp.rm(join(m, victims[0]), { recursive: true });
    await appendRandom(join(m, 'new/one.bin'), 1 * MiB, 14);
  });
  await withPartitionMounted(disk, 2, 'ntfs', async (m) => {
    await appendRandom(join(m, 'docs/report.bin'), 300_000, 15);
  });
  trees.push(await inspectDiskFiles(disk));
  points.push(imagePath(await cli(['backup', 'incremental', points[1], '--yes'])));

  // Moment 3: more changes, then a differential (everything since the full).
  await withPartitionMounted(disk, 1, 'ext4', async (m) => {
    await writeRandom(join(m, 'new/two.bin'), 1 * MiB, 16);
  });
  await withPartitionMounted(disk, 2, 'ntfs', async (m) => {
    await fsp.rm(join(m, 'docs/report.bin'));
    await writeRandom(join(m, 'docs/final.bin'), 1 * MiB, 17);
  });
  trees.push(await inspectDiskFiles(disk));
  points.push(imagePath(await cli(['backup', 'differential', points[2], '--yes'])));
}, 300_000);

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('full → incremental → incremental → differential', () => {
  it('the moments really differ, and every one was clean', () => {
    for (const t of trees) for (const p of t.values()) expect(p.fsck).toBe('clean');
    const sigs = trees.map((t) => JSON.stringify(filesOf(t)));
    expect(new Set(sigs).size).toBe(4);
  });

  it('names the points after the full and stores only what changed', async () => {
    expect(points.map((p) => p.split('/').pop())).toEqual([
      'pc.rimg',
      'pc-2-incremental.rimg',
      'pc-3-incremental.rimg',
      'pc-4-differential.rimg',
    ]);
    const sizes = await Promise.all(points.map(async (p) => (await fsp.stat(p)).size));
    // Each later point holds its changed windows only: far less than the full.
    for (const s of sizes.slice(1)) expect(s).toBeLessThan(sizes[0] / 2);
    // The differential holds every change since the full: more than the first incremental.
    expect(sizes[3]).toBeGreaterThan(sizes[1]);
  });

  it('info shows the chain with times and types; check passes every point', async () => {
    const info = JSON.parse((await cli(['info', points[3], '--json'])).stdout);
    expect(info.point.type).toBe('differential');
    expect(
      info.chain.map((p: { sequence: number; type: string; usable: boolean }) => [
        p.sequence,
        p.type,
        p.usable,
      ]),
    ).toEqual([
      [1, 'full', true],
      [2, 'incremental', true],
      [3, 'incremental', true],
      [4, 'differential', true],
    ]);
    expect(info.chain[3].needs).toEqual([1]);
    expect(info.chain[2].needs).toEqual([2, 1]);
    const check = await cli(['check', points[1]]);
    expect(check.stdout).toMatch(/point 4 \(differential\).*intact/);
  });

  for (const k of [0, 1, 2, 3]) {
    it(`restoring point ${k + 1} gives exactly the file tree of its moment`, async () => {
      const out = join(dir, `restored-${k + 1}.img`);
      // Point k+1 selected two ways: by its own file, and by number from another file of the chain.
      const args = k % 2 === 0 ? [points[k]] : [points[0], '--point', String(k + 1)];
      await cli(['restore', ...args, '--to', out, '--yes']);
      expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(trees[k]));
      await fsp.rm(out);
    });
  }

  it('--point latest is the differential', async () => {
    const out = join(dir, 'latest.img');
    await cli(['restore', points[0], '--point', 'latest', '--to', out, '--yes']);
    expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(trees[3]));
    await fsp.rm(out);
  });
});

describe('merge', () => {
  it('full + incrementals → one new full image that restores like the last of them; originals untouched', async () => {
    const before = await Promise.all(points.map(async (p) => sha256(await fsp.readFile(p))));
    const out = join(dir, 'merged');
    await fsp.mkdir(out);
    const r = await cli(['merge', points[0], '--point', '3', '--to', out, '--yes']);
    const merged = imagePath(r);
    expect(merged).toBe(join(out, 'pc-merged.rimg'));
    const info = JSON.parse((await cli(['info', merged, '--json'])).stdout);
    expect(info.point.type).toBe('full');
    expect(info.chain).toHaveLength(1);
    expect(info.comment).toMatch(/merged from points 1, 2, 3/);
    expect((await rescue(['check', merged])).code).toBe(0);
    const disk3 = join(dir, 'merged.img');
    await cli(['restore', merged, '--to', disk3, '--yes']);
    expect(filesOf(await inspectDiskFiles(disk3))).toEqual(filesOf(trees[2]));
    await fsp.rm(disk3);
    const after = await Promise.all(points.map(async (p) => sha256(await fsp.readFile(p))));
    expect(after).toEqual(before);
  });

  it("a chain with a differential point is refused with the manual's reason", async () => {
    const out = join(dir, 'merged2');
    await fsp.mkdir(out);
    const r = await rescue(['merge', points[1], '--to', out, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_MERGE_DIFFERENTIAL/);
    expect(r.stderr).toMatch(/only a full backup and the incremental backups after it/);
    expect(await fsp.readdir(out)).toEqual([]);
  });
});

describe('an encrypted chain', () => {
  it('keeps the password: incremental, restore and merge (re-encrypted) need it; a wrong one is refused', async () => {
    const pw = join(dir, 'pw');
    await fsp.writeFile(pw, 'chain secret\n');
    const bad = join(dir, 'bad-pw');
    await fsp.writeFile(bad, 'not it\n');
    const imgDir = join(dir, 'enc');
    await fsp.mkdir(imgDir);
    const full = imagePath(
      await cli([
        'backup',
        'partition',
        `${disk}:1`,
        '--to',
        imgDir,
        '--name',
        'root',
        '--password-file',
        pw,
        '--yes',
      ]),
    );
    await withPartitionMounted(disk, 1, 'ext4', async (m) => {
      await writeRandom(join(m, 'enc/secret.bin'), 512 * 1024, 21);
    });
    const wrong = await rescue(['backup', 'incremental', full, '--password-file', bad, '--yes']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/E_WRONG_PASSWORD/);
    const inc = imagePath(await cli(['backup', 'incremental', full, '--password-file', pw, '--yes']));
    const info = JSON.parse((await cli(['info', inc, '--json', '--password-file', pw])).stdout);
    expect(info.options.encrypted).toBe(true);
    // Metadata windows changed a little: stored as encrypted patches, applied on restore.
    const incReader = await ImageReader.open(inc, { password: 'chain secret' });
    expect(incReader.entries.some((e) => e.flags & ENTRY_FLAGS.DELTA)).toBe(true);
    await incReader.close();
    const part = join(dir, 'root.img');
    await cli(['restore', inc, '--to', part, '--password-file', pw, '--yes']);
    const now = (await inspectDiskFiles(disk)).get('1')!;
    const restored = await inspectPartition(part, 0, (await fsp.stat(part)).size, 'ext4');
    expect(restored.fsck).toBe('clean');
    expect(Object.fromEntries(restored.files)).toEqual(Object.fromEntries(now.files));
    const merged = imagePath(await cli(['merge', inc, '--to', imgDir, '--password-file', pw, '--yes']));
    const part2 = join(dir, 'root2.img');
    await cli(['restore', merged, '--to', part2, '--password-file', pw, '--yes']);
    expect(await sha256File(part2)).toBe(await sha256File(part));
    const noPw = await rescue(['info', merged]);
    expect(noPw.stderr).toMatch(/E_PASSWORD_REQUIRED/);
  });
});

describe('a system chain', () => {
  it('an incremental of a system backup takes the same partitions and restores the system of its moment', async () => {
    const sys = await makeSystemDisk({ ...LINUX_UEFI, file: 'linux.img' }, dir);
    const imgDir = join(dir, 'sys');
    await fsp.mkdir(imgDir);
    const full = imagePath(await cli(['backup', 'system', sys, '--to', imgDir, '--name', 'linux', '--yes']));
    // A kernel update on /boot and a new file in /home (not part of the system).
    await withPartitionMounted(sys, 2, 'ext4', async (m) => {
      await writeRandom(join(m, 'vmlinuz-6.1.0-14-amd64'), 600 * 1024, 31);
    });
    await withPartitionMounted(sys, 5, 'ext4', async (m) => {
      await writeRandom(join(m, 'user/new.bin'), 100 * 1024, 32);
    });
    const inc = imagePath(await cli(['backup', 'incremental', full, '--yes']));
    const info = JSON.parse((await cli(['info', inc, '--json'])).stdout);
    expect(info.kind).toBe('system');
    const parts = info.disks[0].regions.filter((r: { kind: string }) => r.kind === 'partition');
    expect(parts.map((r: { partition: number }) => r.partition)).toEqual([1, 2, 3]);
    const out = join(dir, 'sys-restored.img');
    await cli(['restore', inc, '--to', out, '--yes']);
    const now = await inspectDiskFiles(sys);
    const restored = await inspectDiskFiles(out);
    expect([...restored.keys()]).toEqual(['1', '2', '3']);
    for (const node of ['1', '2', '3']) {
      expect(restored.get(node)!.fsck).toBe('clean');
      expect(Object.fromEntries(restored.get(node)!.files)).toEqual(Object.fromEntries(now.get(node)!.files));
    }
    expect([...restored.get('2')!.files.keys()]).toContain('vmlinuz-6.1.0-14-amd64');
    await fsp.rm(out);
  });
});

describe('a missing point', () => {
  it('makes the later incrementals unusable; the differential still restores', async () => {
    const hidden = `${points[1]}.away`;
    await fsp.rename(points[1], hidden);
    try {
      const info = JSON.parse((await cli(['info', points[0], '--json'])).stdout);
      const state = info.chain.map((p: { sequence: number; usable: boolean }) => [p.sequence, p.usable]);
      expect(state).toEqual([
        [1, true],
        [3, false],
        [4, true],
      ]);
      expect(info.missing).toHaveLength(1);
      const check = await rescue(['check', points[0]]);
      expect(check.code).toBe(1);
      expect(check.stdout).toMatch(/point 3 \(incremental\).*CANNOT BE RESTORED/);
      expect(check.stdout).toMatch(/MISSING/);
      const bad = await rescue(['restore', points[2], '--to', join(dir, 'x.img'), '--yes']);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/E_POINT_UNUSABLE/);
      expect(bad.stderr).toMatch(/missing/);
      await expect(fsp.stat(join(dir, 'x.img'))).rejects.toThrow();
      const out = join(dir, 'diff.img');
      await cli(['restore', points[3], '--to', out, '--yes']);
      expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(trees[3]));
      await fsp.rm(out);
    } finally {
      await fsp.rename(hidden, points[1]);
    }
  });
});

describe('a damaged point', () => {
  it('makes the later incrementals unusable (check names the damage); the full and the differential still restore', async () => {
    const copy = `${points[1]}.orig`;
    await fsp.copyFile(points[1], copy);
    try {
      // Flip a byte inside a chunk that point 2 stores and point 3 refers to.
      const r2 = await ImageReader.open(points[1]);
      const r3 = await ImageReader.open(points[2]);
      const id2 = r2.header.imageId.toString('hex');
      const ref = r3.entries.find((e) => e.flags & ENTRY_FLAGS.OTHER_POINT && e.pointId === id2);
      expect(ref).toBeDefined();
      const own = r2.entries[r2.chunkNumber(ref!)];
      await r2.close();
      await r3.close();
      const at = own.payloadOffset + Math.floor(own.storedLength / 2);
      const h = await fsp.open(points[1], 'r+');
      const b = Buffer.alloc(1);
      await h.read(b, 0, 1, at);
      b[0] ^= 0xff;
      await h.write(b, 0, 1, at);
      await h.close();
      const check = await rescue(['check', points[3]]);
      expect(check.code, check.stdout).toBe(1);
      expect(check.stdout).toMatch(/point 2 \(incremental\).*DAMAGED/);
      expect(check.stdout).toMatch(/E_CHUNK_CORRUPT/);
      expect(check.stdout).toMatch(
        /point 3 \(incremental\)[^\n]*intact, but CANNOT BE RESTORED\n\s+cannot be restored: point 2 \(incremental\), which it builds on, has a damaged chunk it needs/,
      );
      expect(check.stdout).toMatch(/point 4 \(differential\)[^\n]*intact\n\s+can be restored/);
      // Point 2 itself cannot be restored either; the restore of point 3 meets the damaged chunk
      // and stops; the differential does not need it.
      expect(check.stdout).toMatch(
        /point 2 \(incremental\)[^\n]*DAMAGED\n(?:\s+\[.*\n)+\s+cannot be restored: its own chunk/,
      );
      const bad = await rescue(['restore', points[2], '--to', join(dir, 'y.img'), '--yes']);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/E_CHUNK_CORRUPT/);
      const out = join(dir, 'diff2.img');
      await cli(['restore', points[3], '--to', out, '--yes']);
      expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(trees[3]));
      await fsp.rm(out);
    } finally {
      await fsp.rename(copy, points[1]);
    }
  });
});

describe('the source of a chain', () => {
  it('another disk is refused (identity), unless forced', async () => {
    const other = await makeDisk({ ...PLAN, file: 'other.img' }, dir);
    const r = await rescue(['backup', 'incremental', points[0], '--source', other, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_SOURCE_MISMATCH/);
    expect(r.stderr).toMatch(/disk identifier|filesystem/);
    const n = (await fsp.readdir(join(dir, 'images', 'pc'))).length;
    expect(n).toBe(4);
    const forced = await rescue(['backup', 'incremental', points[0], '--source', other, '--force', '--yes']);
    expect(forced.code, forced.stderr).toBe(0);
    const out = join(dir, 'forced.img');
    await cli(['restore', imagePath(forced), '--to', out, '--yes']);
    expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(await inspectDiskFiles(other)));
    await fsp.rm(imagePath(forced));
  });

  it('nothing changed: the new point says so and stores next to nothing', async () => {
    // The disk changed since the last point (the encrypted test wrote to it): catch up first.
    const first = imagePath(await cli(['backup', 'incremental', points[0], '--yes']));
    const r = await cli(['backup', 'incremental', points[0], '--yes']);
    expect(r.stderr).toMatch(/: 0 B changed of [\d.]+ MiB/);
    const file = imagePath(r);
    expect((await fsp.stat(file)).size).toBeLessThan(64 * 1024);
    await fsp.rm(file);
    await fsp.rm(first);
  });

  it('a password for a chain that is not encrypted is not used (said), so the chain stays consistent', async () => {
    const pw = join(dir, 'stray-pw');
    await fsp.writeFile(pw, 'not needed\n');
    const r = await cli(['backup', 'incremental', points[0], '--password-file', pw, '--yes']);
    expect(r.stderr).toMatch(/not encrypted, so the new point is not either/);
    const info = JSON.parse((await cli(['info', imagePath(r), '--json'])).stdout);
    expect(info.options.encrypted).toBe(false);
    await fsp.rm(imagePath(r));
  });

  it('a source that is gone is reported with the way out (--source)', async () => {
    const moved = join(dir, 'moved.img');
    await fsp.rename(disk, moved);
    try {
      const r = await rescue(['backup', 'incremental', points[0], '--yes']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/E_SOURCE_NOT_FOUND/);
      expect(r.stderr).toMatch(/--source/);
      const ok = await rescue(['backup', 'differential', points[0], '--source', moved, '--yes']);
      expect(ok.code, ok.stderr).toBe(0);
      await fsp.rm(imagePath(ok));
    } finally {
      await fsp.rename(moved, disk);
    }
  });
});

describe('small changes inside a window: delta records', () => {
  // A few bytes rewritten in place in a big file: the changed windows are stored as patches of
  // the earlier point's record, not whole.
  const SMALL = {
    file: 'small.img',
    description: 'GPT: ext4',
    size: 64 * MiB,
    sfdisk: ['label: gpt', `start=1MiB, type=${GPT_TYPE.linux}, name="root"`].join('\n'),
    volumes: [extfs('ext4', 'root', 2 * MiB)],
  };
  const poke = (at: number, seed: number) =>
    withPartitionMounted(small, 1, 'ext4', async (m) => {
      const h = await fsp.open(join(m, 'big.bin'), 'r+');
      await h.write(Buffer.alloc(300, seed), 0, 300, at);
      await h.close();
    });
  let small: string;
  let sdir: string;
  const strees: Tree[] = [];
  const spoints: string[] = [];

  beforeAll(async () => {
    sdir = await makeTempDir('rescue-delta-');
    small = await makeDisk(SMALL, sdir);
    await withPartitionMounted(small, 1, 'ext4', (m) => writeRandom(join(m, 'big.bin'), 8 * MiB, 21));
    strees.push(await inspectDiskFiles(small));
    spoints.push(imagePath(await cli(['backup', 'disk', small, '--to', sdir, '--name', 's', '--yes'])));
    await poke(3 * MiB + 1000, 1);
    strees.push(await inspectDiskFiles(small));
    spoints.push(imagePath(await cli(['backup', 'incremental', spoints[0], '--yes'])));
    await poke(3 * MiB + 500_000, 2); // the same window again
    strees.push(await inspectDiskFiles(small));
    spoints.push(imagePath(await cli(['backup', 'incremental', spoints[1], '--yes'])));
    // Nothing changed in the file: its window is referenced (a reference to a delta record).
    await withPartitionMounted(small, 1, 'ext4', (m) => writeRandom(join(m, 'other.bin'), 1000, 22));
    strees.push(await inspectDiskFiles(small));
    spoints.push(imagePath(await cli(['backup', 'incremental', spoints[2], '--yes'])));
  }, 300_000);

  afterAll(async () => {
    await fsp.rm(sdir, { recursive: true, force: true });
  });

  it('stores patches of the earlier record (against the full even on top of a delta), references them later', async () => {
    const [full, inc1, inc2, inc3] = await Promise.all(spoints.map((p) => ImageReader.open(p)));
    try {
      const fullId = full.header.imageId.toString('hex');
      const inc2Id = inc2.header.imageId.toString('hex');
      const deltas1 = inc1.entries.filter((e) => e.flags & ENTRY_FLAGS.DELTA);
      const deltas2 = inc2.entries.filter((e) => e.flags & ENTRY_FLAGS.DELTA);
      expect(deltas1.length).toBeGreaterThan(0);
      expect(deltas2.length).toBeGreaterThan(0);
      // The second change is patched against the full's record, not against point 2's patch.
      for (const e of [...deltas1, ...deltas2]) expect(e.pointId).toBe(fullId);
      expect(deltas1.every((e) => e.storedLength < 4096)).toBe(true);
      // Each point stores a few KiB, far less than one 2 MiB window of random data.
      for (const p of spoints.slice(1)) expect((await fsp.stat(p)).size).toBeLessThan(256 * 1024);
      const refToDelta = inc3.entries.filter(
        (e) => e.flags & ENTRY_FLAGS.OTHER_POINT && e.flags & ENTRY_FLAGS.DELTA,
      );
      expect(refToDelta.length).toBeGreaterThan(0);
      for (const e of refToDelta) expect(e.pointId).toBe(inc2Id);
    } finally {
      for (const r of [full, inc1, inc2, inc3]) await r.close();
    }
  });

  it('every point restores to exactly its moment; check verifies the patches; merge restores like the last point', async () => {
    for (let k = 0; k < spoints.length; k++) {
      const out = join(sdir, `r${k}.img`);
      await cli(['restore', spoints[k], '--to', out, '--yes']);
      expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(strees[k]));
      await fsp.rm(out);
    }
    const check = await rescue(['check', spoints[3]]);
    expect(check.code, check.stdout).toBe(0);
    const mdir = join(sdir, 'merged');
    await fsp.mkdir(mdir);
    const merged = imagePath(await cli(['merge', spoints[0], '--to', mdir, '--yes']));
    const mr = await ImageReader.open(merged);
    expect(mr.entries.some((e) => e.flags & (ENTRY_FLAGS.DELTA | ENTRY_FLAGS.OTHER_POINT))).toBe(false);
    await mr.close();
    const out = join(sdir, 'merged.img');
    await cli(['restore', merged, '--to', out, '--yes']);
    expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(strees[3]));
    await fsp.rm(out);
  });

  it('a damaged patch makes exactly the points that need it unusable; a later patch against the full does not', async () => {
    const copy = `${spoints[1]}.orig`;
    await fsp.copyFile(spoints[1], copy);
    try {
      // A window that point 2 patched and point 3 patched again (against the full).
      const r1 = await ImageReader.open(spoints[1]);
      const r2 = await ImageReader.open(spoints[2]);
      const again = (x: IndexEntry) => {
        const j = r2.chunkNumber(x);
        return (
          j >= 0 &&
          (r2.entries[j].flags & (ENTRY_FLAGS.DELTA | ENTRY_FLAGS.OTHER_POINT)) === ENTRY_FLAGS.DELTA
        );
      };
      const e = r1.entries.find((x) => x.flags === ENTRY_FLAGS.DELTA && again(x));
      await r1.close();
      await r2.close();
      expect(e).toBeDefined();
      const at = e!.payloadOffset + Math.floor(e!.storedLength / 2);
      const h = await fsp.open(spoints[1], 'r+');
      const b = Buffer.alloc(1);
      await h.read(b, 0, 1, at);
      b[0] ^= 0xff;
      await h.write(b, 0, 1, at);
      await h.close();
      const check = await rescue(['check', spoints[3]]);
      expect(check.code, check.stdout).toBe(1);
      expect(check.stdout).toMatch(/point 2 \(incremental\)[^\n]*DAMAGED/);
      expect(check.stdout).toMatch(/E_CHUNK_CORRUPT/);
      // Points 3 and 4 need the full's record of that window and point 3's patch, not point 2's.
      expect(check.stdout).toMatch(/point 3 \(incremental\)[^\n]*intact\n\s+can be restored/);
      expect(check.stdout).toMatch(/point 4 \(incremental\)[^\n]*intact\n\s+can be restored/);
      const out = join(sdir, 'after-damage.img');
      await cli(['restore', spoints[3], '--to', out, '--yes']);
      expect(filesOf(await inspectDiskFiles(out))).toEqual(filesOf(strees[3]));
      await fsp.rm(out);
      const bad = await rescue(['restore', spoints[1], '--to', join(sdir, 'bad.img'), '--yes']);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/E_CHUNK_CORRUPT/);
    } finally {
      await fsp.rename(copy, spoints[1]);
    }
  });
});
