/**
 * Issue #4's incremental goal: after ~1 % of the data of a 4 GiB filesystem changed, an incremental
 * backup must take ≤ 1/5 of the full backup's time and ≤ 3 % of its size.
 *   cd /work/main && node_modules/.bin/node bench/incremental.ts [--quick] [--repeat N] [--keep]
 *
 * For ext4 and NTFS (4 GiB each, filled like bench/backup-vs-partclone.ts; 1 GiB with --quick):
 * a full backup (`rescue backup disk FSIMG`, normal compression), then ~1 % of the used bytes is
 * changed through the real driver (part of a random file overwritten in place, a file appended
 * to, a new file, a few small files deleted), then `rescue backup incremental` (and, for
 * information, `rescue backup differential`). Page caches are dropped before every measured step
 * (root). The incremental is verified: restored to a new file, its used bytes equal the changed
 * source's (sha256), fsck clean. Every incremental run is its own point (made, measured, removed).
 *
 * Not a test: prints a table and PASS/MISS per goal; exits 0 unless something is broken.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import {
  Broken,
  benchOptions,
  buildFs,
  canDropCaches,
  dropCaches,
  type FsKind,
  floor,
  GiB,
  hasGnuTime,
  MiB,
  measure,
  mountFs,
  must,
  runBench,
  type Timed,
  tryRun,
  usedDigest,
  usedExtents,
} from './lib.ts';

const { quick: QUICK, keep: KEEP, repeat: REPEAT, cli: CLI, volume: CONFIG } = benchOptions();
const GOALS = { speed: 5, size: 0.03 } as const;
const NODE = process.execPath;

interface Result {
  fs: FsKind;
  usedBytes: number;
  changedBytes: number;
  full: Timed & { bytes: number };
  incremental: Timed & { bytes: number };
  readFloor: Timed;
  differential: Timed & { bytes: number };
  checks: string[];
}

async function fileBytes(dir: string, prefix: string): Promise<number> {
  let n = 0;
  for (const e of await fsp.readdir(dir)) if (e.startsWith(prefix)) n += (await fsp.stat(join(dir, e))).size;
  return n;
}

/** Changes about `budget` bytes of the filesystem through its driver; returns the bytes written. */
async function change(fs: FsKind, img: string, mnt: string, budget: number): Promise<number> {
  const m = await mountFs(fs, img, mnt, false);
  let written = 0;
  try {
    // Overwrite a stretch in the middle of a random file, in place.
    const victim = await fsp.open(join(m.mnt, 'random-0.bin'), 'r+');
    const stretch = Math.floor(budget * 0.5);
    await victim.write(randomBytes(stretch), 0, stretch, 40 * MiB);
    await victim.close();
    written += stretch;
    // Append to a copied file, add a new one.
    const append = Math.floor(budget * 0.2);
    await fsp.appendFile(join(m.mnt, 'random-0.bin'), randomBytes(append));
    written += append;
    const fresh = budget - stretch - append;
    await fsp.writeFile(join(m.mnt, 'new-file.bin'), randomBytes(fresh));
    written += fresh;
    // Delete a few small files of the /usr copy.
    const usr = join(m.mnt, 'usr-copy/usr/share');
    const dirs = (await fsp.readdir(usr)).sort().slice(0, 3);
    for (const d of dirs) await fsp.rm(join(usr, d), { recursive: true, force: true });
  } finally {
    await m.unmount();
  }
  return written;
}

async function timedBackup(args: string[], log: string): Promise<Timed> {
  dropCaches();
  return measure(NODE, [CLI, ...args, '--yes'], { log });
}

async function benchFs(fs: FsKind, work: string): Promise<Result> {
  const dir = join(work, fs);
  await fsp.mkdir(dir);
  process.stderr.write(`${fs}: building a ${CONFIG.fsBytes / GiB} GiB filesystem…\n`);
  const built = await buildFs(fs, dir, CONFIG);
  const { usedBytes } = await usedExtents(built.img);
  const images = join(dir, 'images');
  await fsp.mkdir(images);
  const log = join(dir, 'log');

  // Full backups: the best of N (each into its own folder; the last one is kept as the chain).
  const fulls: Timed[] = [];
  for (let i = 0; i < REPEAT; i++) {
    await fsp.rm(join(images, 'chain'), { recursive: true, force: true });
    fulls.push(await timedBackup(['backup', 'disk', built.img, '--to', images, '--name', 'chain'], log));
  }
  const full = fulls.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  const chainDir = join(images, 'chain');
  const fullImage = join(chainDir, 'chain.rimg');
  const fullBytes = await fileBytes(chainDir, 'chain.rimg');

  process.stderr.write(`${fs}: changing ~1 % of ${usedBytes} used bytes…\n`);
  const changedBytes = await change(fs, built.img, join(dir, 'mnt'), Math.floor(usedBytes * 0.01));

  const incs: (Timed & { bytes: number })[] = [];
  for (let i = 0; i < REPEAT; i++) {
    const t = await timedBackup(['backup', 'incremental', fullImage], log);
    incs.push({ ...t, bytes: await fileBytes(chainDir, 'chain-2-incremental') });
    if (i < REPEAT - 1) await fsp.rm(join(chainDir, 'chain-2-incremental.rimg'));
  }
  const incremental = incs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  // The floor: reading the changed source's used bytes cold and nothing else. An incremental must
  // read them all (that is how it finds the changes), so full/floor caps its speed-up.
  const floors: Timed[] = [];
  for (let i = 0; i < REPEAT; i++) {
    dropCaches();
    floors.push(await floor(built.img, (await usedExtents(built.img)).extents));
  }
  const readFloor = floors.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  const d = await timedBackup(['backup', 'differential', fullImage], log);
  const differential = { ...d, bytes: await fileBytes(chainDir, 'chain-3-differential') };

  // Verify the incremental: restored, its used bytes are the changed source's.
  const checks: string[] = [];
  const restored = join(dir, 'restored.img');
  must(NODE, [CLI, 'restore', join(chainDir, 'chain-2-incremental.rimg'), '--to', restored, '--yes']);
  const { extents } = await usedExtents(built.img);
  const same = (await usedDigest(built.img, extents)) === (await usedDigest(restored, extents));
  const fsck = fs === 'ext4' ? tryRun('e2fsck', ['-fn', restored]) : tryRun('ntfsfix', ['-n', restored]);
  checks.push(
    `${fs}: incremental restored — used bytes ${same ? 'identical to the changed source' : 'DIFFER from the changed source'}, ${fs === 'ext4' ? 'e2fsck -fn' : 'ntfsfix -n'} ${fsck.code === 0 ? 'clean' : `exit ${fsck.code}`}`,
  );
  if (!same || fsck.code !== 0) throw new Broken(checks.join('\n'));
  await fsp.rm(restored);
  return {
    fs,
    usedBytes,
    changedBytes,
    full: { ...full, bytes: fullBytes },
    incremental,
    readFloor,
    differential,
    checks,
  };
}

function report(results: Result[]): void {
  const col = (s: string) => s.padEnd(26);
  const row = (label: string, cells: string[]) => `${label.padEnd(34)}${cells.map(col).join('')}`;
  const mb = (n: number) => `${(n / 1e6).toFixed(0)} MB`;
  const lines = [
    row(
      '',
      results.map((r) => r.fs),
    ),
    row(
      'used data / changed',
      results.map(
        (r) =>
          `${mb(r.usedBytes)} / ${mb(r.changedBytes)} (${((100 * r.changedBytes) / r.usedBytes).toFixed(1)} %)`,
      ),
    ),
    row(
      'full backup',
      results.map((r) => `${r.full.seconds.toFixed(2)} s  ${mb(r.full.bytes)}`),
    ),
    row(
      'incremental',
      results.map((r) => `${r.incremental.seconds.toFixed(2)} s  ${mb(r.incremental.bytes)}`),
    ),
    row(
      'differential',
      results.map((r) => `${r.differential.seconds.toFixed(2)} s  ${mb(r.differential.bytes)}`),
    ),
    row(
      'floor: read the used bytes',
      results.map(
        (r) =>
          `${r.readFloor.seconds.toFixed(2)} s  (cap ${(r.full.seconds / r.readFloor.seconds).toFixed(2)}×)`,
      ),
    ),
    row(
      `speed full/incremental ≥${GOALS.speed}`,
      results.map((r) => {
        const x = r.full.seconds / r.incremental.seconds;
        return `${x.toFixed(2)}×  ${x >= GOALS.speed ? 'PASS' : 'MISS'}`;
      }),
    ),
    row(
      `size incremental/full ≤${GOALS.size * 100} %`,
      results.map((r) => {
        const x = r.incremental.bytes / r.full.bytes;
        return `${(100 * x).toFixed(2)} %  ${x <= GOALS.size ? 'PASS' : 'MISS'}`;
      }),
    ),
    row(
      'peak RSS incremental',
      results.map((r) => `${r.incremental.rssMiB?.toFixed(0) ?? '?'} MiB`),
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n\n${results.flatMap((r) => r.checks).join('\n')}\n`);
  process.stdout.write(
    `Best of ${REPEAT}. Page caches ${canDropCaches ? 'dropped before every measured step' : 'NOT dropped (no permission)'}. ` +
      `Peak RSS by ${hasGnuTime ? 'GNU time' : 'polling VmHWM'}. ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(2)} at the end.` +
      `${QUICK ? ' QUICK run (1 GiB filesystems): smoke test only.' : ''}\n`,
  );
}

runBench(
  'incremental',
  { needed: QUICK ? 4 * GiB : 12 * GiB, keep: KEEP, tools: ['mkfs.ext4', 'mkfs.ntfs', 'ntfs-3g'] },
  async (work) => {
    const results: Result[] = [];
    for (const fs of ['ext4', 'ntfs'] as const) results.push(await benchFs(fs, work));
    report(results);
  },
);
