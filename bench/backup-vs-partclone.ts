/**
 * Issue #3's speed and memory goals, measured against partclone + zstd in the same run.
 *   cd /work/main && node_modules/.bin/node bench/backup-vs-partclone.ts
 *     [--quick] [--repeat N] [--keep] [--rescue OTHER-CHECKOUT]
 *
 * Builds a sparse ext4 and a sparse NTFS filesystem (4 GiB each; 1 GiB with --quick), fills each
 * with copies of /usr/share, /usr/bin (and /usr/lib when there is room) plus random data, then for
 * each filesystem measures:
 *   - our backup (`rescue backup disk FSIMG --compress normal`): wall time, peak RSS, image size;
 *   - the peer: `partclone.<fs> -c | zstd -T0 -3`: wall time, image size (and, for information,
 *     the same with partclone's CRC32 checksums off, -a0);
 *   - the bound: only the used bytes (our used map), concatenated, through `zstd -T0 -3`, and its
 *     restore counterpart, `zstd -d` of that stream into a file — what zstd alone costs here;
 *   - the floor: reading the used bytes and nothing else;
 *   - our restore (`rescue restore IMAGE --to NEWFILE`) against `zstd -d | partclone.<fs> -r`.
 * Every step runs N times (default 3; ours and the peer alternate who goes first); the best counts.
 * Page caches are dropped before every measured step when we may (root); otherwise ours and the
 * peer run in alternating order with warm caches. Every file that is written is fsynced by all
 * sides (our writer and restore do; `sync FILE` is added to the peer's and the bound's pipelines).
 * Both restores are verified (used-byte digest against the source, fsck, sample files' sha256 on a
 * read-only mount): a benchmark of a broken restore is worthless.
 *
 * Not a test: it prints a table and PASS/MISS per goal, and exits 0 unless something is broken.
 * Needs root (loop mount, FUSE), partclone, zstd, e2fsprogs, ntfs-3g; /usr/bin/time for peak RSS
 * (polls /proc/PID/status VmHWM otherwise). Scratch space: $RESCUE_BENCH_DIR, else the OS temp
 * dir, else <repo>/.bench-tmp — whichever has room; removed at the end unless --keep.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import type { Extent } from '../rescue/engine/filesystems/extents.ts';
import {
  Broken,
  benchOptions,
  buildFs,
  canDropCaches,
  dropCaches,
  type FsKind,
  floor,
  forEachUsedWindow,
  GiB,
  hasGnuTime,
  imageFilesBytes,
  MiB,
  measure,
  must,
  q,
  runBench,
  type Timed,
  timedShell,
  usedDigest,
  usedExtents,
  verifyCopy,
  waitExit,
} from './lib.ts';

/** `--rescue DIR`: run the CLI of another checkout (A/B of a patch against the same peer run). */
const {
  quick: QUICK,
  keep: KEEP,
  repeat: REPEAT,
  rescueRoot: RESCUE_ROOT,
  cli: CLI,
  volume: CONFIG,
} = benchOptions();
const NODE = process.execPath;
/** Scratch needed at the peak: the filesystem, three compressed copies, two restored copies. */
const SCRATCH_NEEDED = QUICK ? 3 * GiB : 12 * GiB;

const GOALS = { backupSpeed: 2, imageSize: 1.02, restoreSpeed: 4, rssMiB: 256 } as const;

interface FsResult {
  fs: FsKind;
  usedBytes: number;
  mapSeconds: number;
  peerUsedBytes?: number;
  runs: number;
  ours: Timed & { imageBytes: number };
  peer: Timed & { imageBytes: number };
  /** partclone without its CRC32 checksums (-a0): informational. */
  peerNoCrc: Timed;
  bound: Timed & { bytes: number };
  /** zstd -d of the bound's stream into a file, fsynced: the restore's counterpart of the bound. */
  restoreBound: Timed;
  floor: Timed;
  oursRestore: Timed;
  peerRestore: Timed;
  checks: string[];
  peerNotes: string[];
}

/** zstd -T0 -3 over only the used bytes, into a file that is then fsynced. */
async function bound(img: string, extents: Extent[], out: string): Promise<Timed & { bytes: number }> {
  const t0 = performance.now();
  const z = spawn('zstd', ['-q', '-T0', '-3', '-o', out], { stdio: ['pipe', 'ignore', 'inherit'] });
  const exited = waitExit(z);
  await forEachUsedWindow(img, extents, async (raw) => {
    if (!z.stdin!.write(raw)) await new Promise((r) => z.stdin!.once('drain', r));
  });
  z.stdin!.end();
  const code = await exited;
  if (code !== 0) throw new Broken(`zstd (bound) exited with ${code}`);
  must('sync', [out]);
  return { seconds: (performance.now() - t0) / 1000, bytes: (await fsp.stat(out)).size };
}

function partcloneTool(fs: FsKind): string {
  return fs === 'ext4' ? 'partclone.extfs' : 'partclone.ntfs';
}

/** "Space in use: 1.6 GB = 390625 Blocks" and "Block size: 4096 Byte" from partclone's log. */
async function partcloneUsed(log: string): Promise<number | undefined> {
  const text = await fsp.readFile(log, 'utf8').catch(() => '');
  const blocks = /Space in use:.*?=\s*(\d+)\s*Blocks/.exec(text);
  const size = /Block size:\s*(\d+)\s*Byte/.exec(text);
  return blocks && size ? Number(blocks[1]) * Number(size[1]) : undefined;
}

/** The fastest run; the highest peak RSS of all runs. */
function best<T extends Timed>(runs: T[]): T {
  const fastest = runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  const rss = runs.map((r) => r.rssMiB).filter((x): x is number => x !== undefined);
  return rss.length > 0 ? { ...fastest, rssMiB: Math.max(...rss) } : fastest;
}

/** `n` runs of ours and the peer, alternating who goes first; the best of each. */
async function pairs(
  n: number,
  oursFirst: (run: number) => boolean,
  ours: (run: number) => Promise<Timed>,
  peer: (run: number) => Promise<Timed>,
): Promise<{ ours: Timed; peer: Timed }> {
  const o: Timed[] = [];
  const p: Timed[] = [];
  for (let run = 0; run < n; run++) {
    if (oursFirst(run)) {
      o.push(await ours(run));
      p.push(await peer(run));
    } else {
      p.push(await peer(run));
      o.push(await ours(run));
    }
  }
  return { ours: best(o), peer: best(p) };
}

async function benchFs(fs: FsKind, work: string): Promise<FsResult> {
  const dir = join(work, fs);
  await fsp.mkdir(dir);
  const say = (s: string) => process.stderr.write(`[${fs}] ${s}\n`);
  say(`building a ${CONFIG.fsBytes / GiB} GiB filesystem…`);
  const built = await buildFs(fs, dir, CONFIG);
  const { img } = built;
  const map = await usedExtents(img);
  say(
    `copied ${(built.copiedBytes / MiB).toFixed(0)} MiB of /usr + ${(CONFIG.randomFiles * CONFIG.randomFileBytes) / MiB} MiB random; used map ${(map.usedBytes / GiB).toFixed(2)} GiB`,
  );
  const sourceDigest = await usedDigest(img, map.extents);
  const tool = partcloneTool(fs);
  const logs = join(dir, 'logs');
  await fsp.mkdir(logs);
  const oursDir = join(dir, 'ours');
  await fsp.mkdir(oursDir);
  const pcOut = join(dir, 'peer.pc.zst');
  const pcLog = join(logs, 'partclone-clone.log');

  const oursBackup = async (run: number) => {
    say(`our backup (${run + 1}/${REPEAT})…`);
    const to = join(oursDir, `run-${run}`);
    await fsp.mkdir(to);
    dropCaches();
    return measure(
      NODE,
      [CLI, 'backup', 'disk', img, '--to', to, '--name', 'ours', '--compress', 'normal', '--yes'],
      { log: join(logs, `ours-backup-${run}.log`) },
    );
  };
  const peerBackup = async (run: number) => {
    say(`${tool} -c | zstd -T0 -3 (${run + 1}/${REPEAT})…`);
    await fsp.rm(pcOut, { force: true });
    dropCaches();
    return timedShell(
      `${tool} -c -L ${q(pcLog)} -s ${q(img)} -o - | zstd -q -T0 -3 -o ${q(pcOut)} && sync ${q(pcOut)}`,
      join(logs, `peer-backup-${run}.log`),
    );
  };
  // Who goes first alternates (per filesystem and per run), so that neither side always meets
  // the other's leftovers; the best of the runs counts (interference only ever adds time).
  const oursFirst = (run: number) => (run + (fs === 'ext4' ? 0 : 1)) % 2 === 0;
  const backups = await pairs(REPEAT, oursFirst, oursBackup, peerBackup);
  const oursImage = await imageFilesBytes(join(oursDir, 'run-0', 'ours'));
  const peerBytes = (await fsp.stat(pcOut)).size;
  say(`${tool} -c -a0 | zstd -T0 -3 (no CRC32)…`);
  const noCrcRuns: Timed[] = [];
  const noCrcOut = join(dir, 'peer-a0.pc.zst');
  for (let run = 0; run < REPEAT; run++) {
    await fsp.rm(noCrcOut, { force: true });
    dropCaches();
    noCrcRuns.push(
      await timedShell(
        `${tool} -c -a0 -L ${q(join(logs, 'partclone-a0.log'))} -s ${q(img)} -o - | zstd -q -T0 -3 -o ${q(noCrcOut)} && sync ${q(noCrcOut)}`,
        join(logs, `peer-a0-backup-${run}.log`),
      ),
    );
  }
  await fsp.rm(noCrcOut, { force: true });

  say('bound: used bytes | zstd -T0 -3…');
  const boundRuns: (Timed & { bytes: number })[] = [];
  for (let run = 0; run < REPEAT; run++) {
    dropCaches();
    await fsp.rm(join(dir, 'bound.zst'), { force: true });
    boundRuns.push(await bound(img, map.extents, join(dir, 'bound.zst')));
  }
  const boundR = best(boundRuns);
  say('restore bound: zstd -d of that stream into a file…');
  const unboundRuns: Timed[] = [];
  for (let run = 0; run < REPEAT; run++) {
    await fsp.rm(join(dir, 'unbound.raw'), { force: true });
    dropCaches();
    unboundRuns.push(
      await timedShell(
        `zstd -q -d ${q(join(dir, 'bound.zst'))} -o ${q(join(dir, 'unbound.raw'))} && sync ${q(join(dir, 'unbound.raw'))}`,
        join(logs, `restore-bound-${run}.log`),
      ),
    );
  }
  await fsp.rm(join(dir, 'unbound.raw'));
  await fsp.rm(join(dir, 'bound.zst'));
  const restoreBoundR = best(unboundRuns);
  say('floor: reading the used bytes…');
  const floorRuns: Timed[] = [];
  for (let run = 0; run < REPEAT; run++) {
    dropCaches();
    floorRuns.push(await floor(img, map.extents));
  }
  const floorR = best(floorRuns);

  const oursRestored = join(dir, 'restored-ours.img');
  const peerRestored = join(dir, 'restored-peer.img');
  const oursRestore = async (run: number) => {
    say(`our restore (${run + 1}/${REPEAT})…`);
    await fsp.rm(oursRestored, { force: true });
    dropCaches();
    return measure(NODE, [CLI, 'restore', oursImage.first, '--to', oursRestored, '--yes'], {
      log: join(logs, `ours-restore-${run}.log`),
    });
  };
  const peerRestore = async (run: number) => {
    say(`zstd -d | ${tool} -r (${run + 1}/${REPEAT})…`);
    // partclone restores onto an existing target of at least the source's size.
    await fsp.rm(peerRestored, { force: true });
    const h = await fsp.open(peerRestored, 'wx');
    await h.truncate(CONFIG.fsBytes);
    await h.close();
    dropCaches();
    return timedShell(
      `zstd -d -q -c ${q(pcOut)} | ${tool} -r -L ${q(join(logs, 'partclone-restore.log'))} -s - -O ${q(peerRestored)} && sync ${q(peerRestored)}`,
      join(logs, `peer-restore-${run}.log`),
    );
  };
  const restores = await pairs(REPEAT, oursFirst, oursRestore, peerRestore);

  say('verifying both restores…');
  const ov = await verifyCopy(fs, oursRestored, built, sourceDigest, map.extents, join(dir, 'check.mnt'));
  if (ov.problems.length > 0) throw new Broken(`${fs}: our restore is broken: ${ov.problems.join('; ')}`);
  const pv = await verifyCopy(fs, peerRestored, built, sourceDigest, map.extents, join(dir, 'check.mnt'));
  const peerNotes = [...pv.problems];
  if (pv.problems.some((p) => /sample files differ/.test(p)))
    throw new Broken(`${fs}: the peer's restore is broken: ${pv.problems.join('; ')}`);

  const result: FsResult = {
    fs,
    usedBytes: map.usedBytes,
    mapSeconds: map.seconds,
    peerUsedBytes: await partcloneUsed(pcLog),
    runs: REPEAT,
    ours: { ...backups.ours, imageBytes: oursImage.bytes },
    peer: { ...backups.peer, imageBytes: peerBytes },
    peerNoCrc: best(noCrcRuns),
    bound: boundR,
    restoreBound: restoreBoundR,
    floor: floorR,
    oursRestore: restores.ours,
    peerRestore: restores.peer,
    checks: [
      'used bytes identical to the source',
      fs === 'ext4' ? 'e2fsck -fn clean' : 'ntfsfix -n clean',
      ...ov.notes,
    ],
    peerNotes: [...peerNotes, ...pv.notes],
  };
  if (!KEEP) await fsp.rm(dir, { recursive: true, force: true });
  return result;
}

// ————————————————————————————————————————— report

function mbps(bytes: number, seconds: number): number {
  return bytes / 1e6 / seconds;
}

function verdict(ok: boolean): string {
  return ok ? 'PASS' : 'MISS';
}

function report(results: FsResult[]): void {
  const col = 26;
  const rows: [string, ...string[]][] = [];
  const row = (label: string, f: (r: FsResult) => string) => rows.push([label, ...results.map(f)]);
  const s = (t: number) => `${t.toFixed(1)} s`;
  const MB = (b: number) => `${(b / 1e6).toFixed(0)} MB`;
  row(
    'used data (our map)',
    (r) => `${(r.usedBytes / GiB).toFixed(2)} GiB (map ${r.mapSeconds.toFixed(2)} s)`,
  );
  row('used data (partclone)', (r) => (r.peerUsedBytes ? `${(r.peerUsedBytes / GiB).toFixed(2)} GiB` : '?'));
  row('runs (best of; order alternates)', (r) => String(r.runs));
  const speed = (r: FsResult, t: Timed) => `${s(t.seconds)}  ${mbps(r.usedBytes, t.seconds).toFixed(0)} MB/s`;
  row('backup ours', (r) => speed(r, r.ours));
  row('backup peer', (r) => speed(r, r.peer));
  row(`backup speed ours/peer ≥${GOALS.backupSpeed}`, (r) => {
    const x = r.peer.seconds / r.ours.seconds;
    return `${x.toFixed(2)}×  ${verdict(x >= GOALS.backupSpeed)}`;
  });
  row('  peer without CRC32 (-a0)', (r) => speed(r, r.peerNoCrc));
  row('  bound: used bytes|zstd -3', (r) => speed(r, r.bound));
  row('  ceiling: peer/bound', (r) => `${(r.peer.seconds / r.bound.seconds).toFixed(2)}×`);
  row('  floor: read used bytes', (r) => speed(r, r.floor));
  row('image ours', (r) => MB(r.ours.imageBytes));
  row('image peer', (r) => MB(r.peer.imageBytes));
  row(`image size ours/peer ≤${GOALS.imageSize}`, (r) => {
    const x = r.ours.imageBytes / r.peer.imageBytes;
    return `${x.toFixed(3)}  ${verdict(x <= GOALS.imageSize)}`;
  });
  row(
    '  bound size',
    (r) => `${MB(r.bound.bytes)} (ours ${(r.ours.imageBytes / r.bound.bytes).toFixed(3)}×)`,
  );
  row('restore ours', (r) => speed(r, r.oursRestore));
  row('restore peer', (r) => speed(r, r.peerRestore));
  row(`restore speed ours/peer ≥${GOALS.restoreSpeed}`, (r) => {
    const x = r.peerRestore.seconds / r.oursRestore.seconds;
    return `${x.toFixed(2)}×  ${verdict(x >= GOALS.restoreSpeed)}`;
  });
  row('  bound: zstd -d to a file', (r) => speed(r, r.restoreBound));
  row('  ceiling: peer/bound', (r) => `${(r.peerRestore.seconds / r.restoreBound.seconds).toFixed(2)}×`);
  const rss = (t: Timed) => (t.rssMiB === undefined ? '?' : `${t.rssMiB.toFixed(0)} MiB`);
  row(`peak RSS backup ≤${GOALS.rssMiB} MiB`, (r) =>
    r.ours.rssMiB === undefined ? '?' : `${rss(r.ours)}  ${verdict(r.ours.rssMiB <= GOALS.rssMiB)}`,
  );
  row(`peak RSS restore ≤${GOALS.rssMiB} MiB`, (r) =>
    r.oursRestore.rssMiB === undefined
      ? '?'
      : `${rss(r.oursRestore)}  ${verdict(r.oursRestore.rssMiB <= GOALS.rssMiB)}`,
  );
  const labelWidth = Math.max(...rows.map((r) => r[0].length)) + 2;
  const out = [
    `${''.padEnd(labelWidth)}${results.map((r) => r.fs.padEnd(col)).join('')}`,
    ...rows.map(
      ([label, ...cells]) => `${label.padEnd(labelWidth)}${cells.map((c) => c.padEnd(col)).join('')}`,
    ),
  ];
  process.stdout.write(`\n${out.join('\n')}\n\n`);
  for (const r of results) {
    process.stdout.write(`${r.fs}: our restore verified — ${r.checks.join(', ')}\n`);
    process.stdout.write(`${r.fs}: peer restore — ${r.peerNotes.join(', ')}\n`);
  }
  process.stdout.write(
    `MB/s are of used data (10^6 bytes/s). Page caches ${canDropCaches ? 'dropped before every measured step' : 'NOT dropped (no permission): warm caches, ours and peer alternate who goes first'}. ` +
      `Peak RSS by ${hasGnuTime ? 'GNU time (max RSS)' : 'polling VmHWM'}. ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(2)} at the end` +
      ` (other work on the machine skews both sides). ${QUICK ? 'QUICK run (1 GiB filesystems): smoke test only.' : ''}\n`,
  );
}

// ————————————————————————————————————————— main

runBench(
  'backup-vs-partclone',
  {
    needed: SCRATCH_NEEDED,
    keep: KEEP,
    tools: ['partclone.extfs', 'partclone.ntfs', 'zstd', 'mkfs.ext4', 'mkfs.ntfs', 'ntfs-3g'],
  },
  async (work) => {
    process.stderr.write(
      `rescue: ${RESCUE_ROOT}; scratch: ${work}; ${process.env.UV_THREADPOOL_SIZE ? `UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE}` : 'default thread pool'}\n`,
    );
    const results: FsResult[] = [];
    for (const fs of ['ext4', 'ntfs'] as const) results.push(await benchFs(fs, work));
    report(results);
  },
);
