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
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  promises as fsp,
  lstatSync,
  readdirSync,
  readFileSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { FileSource } from '../rescue/engine/devices/source.ts';
import { detectFilesystem, usedMapOf } from '../rescue/engine/filesystems/detect.ts';
import type { Extent } from '../rescue/engine/filesystems/extents.ts';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const ROOT = resolve(import.meta.dirname, '..');
const argv = process.argv.slice(2);
/** `--rescue DIR`: run the CLI of another checkout (A/B of a patch against the same peer run). */
const RESCUE_ROOT = argv.includes('--rescue') ? resolve(argv[argv.indexOf('--rescue') + 1]) : ROOT;
const CLI = join(RESCUE_ROOT, 'rescue/cli/main.ts');
const NODE = process.execPath;
const GNU_TIME = '/usr/bin/time';
const READ_WINDOW = 4 * MiB;

const QUICK = argv.includes('--quick');
const KEEP = argv.includes('--keep');
/** Runs of every measured step; the best counts. `--repeat N`; default 3 (1 with --quick). */
const REPEAT = argv.includes('--repeat')
  ? Math.max(1, Math.floor(Number(argv[argv.indexOf('--repeat') + 1])) || 1)
  : QUICK
    ? 1
    : 3;
const CONFIG = QUICK
  ? { fsBytes: 1 * GiB, copyBudget: 200 * MiB, randomFiles: 1, randomFileBytes: 100 * MiB }
  : { fsBytes: 4 * GiB, copyBudget: 1.2 * GiB, randomFiles: 3, randomFileBytes: 100 * MiB };
/** Scratch needed at the peak: the filesystem, three compressed copies, two restored copies. */
const SCRATCH_NEEDED = QUICK ? 3 * GiB : 12 * GiB;

const GOALS = { backupSpeed: 2, imageSize: 1.02, restoreSpeed: 4, rssMiB: 256 } as const;

type FsKind = 'ext4' | 'ntfs';

interface Timed {
  seconds: number;
  /** Peak resident set of our process (MiB), when measured. */
  rssMiB?: number;
}

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

// ————————————————————————————————————————— processes

class Broken extends Error {}

function must(cmd: string, args: string[], cwd?: string): string {
  const what = `${cmd} ${args.length > 8 ? `${args.slice(0, 8).join(' ')} …` : args.join(' ')}`;
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, cwd });
  if (r.error) throw new Broken(`${what}: ${r.error.message}`);
  if (r.status !== 0) throw new Broken(`${what} → exit ${r.status}\n${r.stderr}${r.stdout}`.trim());
  return r.stdout;
}

function tryRun(cmd: string, args: string[]): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function waitExit(child: ChildProcess): Promise<number> {
  return new Promise((done, fail) => {
    if (child.exitCode !== null) return done(child.exitCode);
    child.once('error', fail);
    child.once('exit', (code, sig) => done(code ?? (sig ? 128 : -1)));
  });
}

const hasGnuTime = existsSync(GNU_TIME);

/**
 * Runs a command to completion: wall time, and peak RSS of the command (GNU time's %M, or the
 * highest VmHWM seen while polling /proc when GNU time is missing).
 */
async function measure(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; log: string },
): Promise<Timed> {
  const timeFile = `${opts.log}.time`;
  const full = hasGnuTime ? [GNU_TIME, '-f', '%e %M', '-o', timeFile, cmd, ...args] : [cmd, ...args];
  const log = await fsp.open(opts.log, 'a');
  const t0 = performance.now();
  const child = spawn(full[0], full.slice(1), {
    env: opts.env ?? process.env,
    stdio: ['ignore', log.fd, log.fd],
  });
  let hwmKiB = 0;
  const poll = hasGnuTime
    ? undefined
    : setInterval(() => {
        try {
          const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
          if (m) hwmKiB = Math.max(hwmKiB, Number(m[1]));
        } catch {
          // exited between polls
        }
      }, 20);
  const code = await waitExit(child);
  const seconds = (performance.now() - t0) / 1000;
  if (poll) clearInterval(poll);
  await log.close();
  if (code !== 0) {
    const tail = (await fsp.readFile(opts.log, 'utf8')).split('\n').slice(-15).join('\n');
    throw new Broken(`${cmd} ${args.join(' ')} → exit ${code}\n${tail}`);
  }
  if (hasGnuTime) {
    const [, kib] = (await fsp.readFile(timeFile, 'utf8')).trim().split('\n').pop()!.split(' ');
    hwmKiB = Number(kib);
  }
  return { seconds, rssMiB: hwmKiB > 0 ? hwmKiB / 1024 : undefined };
}

async function timedShell(script: string, log: string): Promise<Timed> {
  const r = await measure('bash', ['-o', 'pipefail', '-c', script], { log });
  return { seconds: r.seconds };
}

const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

// ————————————————————————————————————————— caches

let canDropCaches: boolean | undefined;

/** Writes back dirty pages, then drops the page cache (root only). */
function dropCaches(): boolean {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    canDropCaches = true;
  } catch {
    canDropCaches = false;
  }
  return canDropCaches;
}

// ————————————————————————————————————————— building the filesystems

/** Apparent size of regular files under `path` (symlinks and specials count 0), memoised. */
function sizeTree(path: string, memo: Map<string, number>): number {
  const known = memo.get(path);
  if (known !== undefined) return known;
  let total = 0;
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    memo.set(path, 0);
    return 0;
  }
  if (st.isFile()) total = st.size;
  else if (st.isDirectory()) {
    let names: string[] = [];
    try {
      names = readdirSync(path);
    } catch {
      // unreadable: counted as empty and not copied
    }
    for (const n of names) total += sizeTree(join(path, n), memo);
  }
  memo.set(path, total);
  return total;
}

/** Paths under /usr whose files add up to at most `budget` bytes: whole trees where they fit. */
function chooseCopies(budget: number): { paths: string[]; bytes: number; files: string[] } {
  const memo = new Map<string, number>();
  const paths: string[] = [];
  let left = budget;
  const take = (path: string) => {
    if (left < 64 * 1024) return;
    const size = sizeTree(path, memo);
    if (size <= left) {
      paths.push(path);
      left -= size;
      return;
    }
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(path);
    } catch {
      return;
    }
    if (!st.isDirectory()) return;
    for (const n of readdirSync(path).sort()) take(join(path, n));
  };
  for (const root of ['/usr/share', '/usr/bin', '/usr/lib']) take(root);
  // Regular files of the chosen trees, for sampling.
  const files: string[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.isFile() && st.size >= 4096) files.push(p);
    else if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(p, n));
  };
  for (const p of paths) walk(p);
  return { paths, bytes: budget - left, files };
}

function inMountinfo(mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === mnt);
}

interface Mounted {
  mnt: string;
  unmount(): Promise<void>;
}

const liveMounts = new Set<Mounted>();

async function mountFs(fs: FsKind, img: string, mnt: string, readOnly: boolean): Promise<Mounted> {
  await fsp.mkdir(mnt, { recursive: true });
  let m: Mounted;
  if (fs === 'ext4') {
    must('mount', ['-o', readOnly ? 'loop,ro,noload' : 'loop', img, mnt]);
    m = {
      mnt,
      unmount: async () => {
        must('umount', [mnt]);
        liveMounts.delete(m);
      },
    };
  } else {
    // no_detach: the ntfs-3g process stays our child, so we can wait for it to finish writing.
    const child = spawn('ntfs-3g', ['-o', readOnly ? 'ro,no_detach' : 'no_detach', img, mnt], {
      stdio: 'ignore',
    });
    const exited = waitExit(child);
    for (let i = 0; !inMountinfo(mnt); i++) {
      if (child.exitCode !== null || i > 200) throw new Broken(`ntfs-3g could not mount ${img}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    m = {
      mnt,
      unmount: async () => {
        must('fusermount', ['-u', mnt]);
        const code = await exited;
        liveMounts.delete(m);
        if (code !== 0) throw new Broken(`ntfs-3g exited with ${code} after unmounting ${img}`);
      },
    };
  }
  liveMounts.add(m);
  return m;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await fsp.open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 * MiB);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

interface Built {
  img: string;
  samples: Map<string, string>;
  copiedBytes: number;
}

async function buildFs(fs: FsKind, dir: string): Promise<Built> {
  const img = join(dir, `${fs}.img`);
  const h = await fsp.open(img, 'wx');
  await h.truncate(CONFIG.fsBytes);
  await h.close();
  if (fs === 'ext4') must('mkfs.ext4', ['-q', '-F', '-L', 'bench', img]);
  else must('mkfs.ntfs', ['-q', '-F', '-f', '-L', 'bench', img]);
  const chosen = chooseCopies(CONFIG.copyBudget);
  const m = await mountFs(fs, img, join(dir, `${fs}.mnt`), false);
  const samples = new Map<string, string>();
  try {
    const dest = join(m.mnt, 'usr-copy');
    await fsp.mkdir(dest);
    for (let i = 0; i < chosen.paths.length; i += 200) {
      // Relative to / : cp 9.1 fails on some absolute --parents sources ("‘usr/share’: No such file").
      const batch = chosen.paths.slice(i, i + 200).map((p) => p.slice(1));
      must('cp', ['-a', '--parents', ...batch, dest], '/');
    }
    for (let i = 0; i < CONFIG.randomFiles; i++) {
      const f = join(m.mnt, `random-${i}.bin`);
      must('dd', [
        'if=/dev/urandom',
        `of=${f}`,
        'bs=1M',
        `count=${CONFIG.randomFileBytes / MiB}`,
        'iflag=fullblock',
        'status=none',
      ]);
      samples.set(`random-${i}.bin`, await sha256File(f));
    }
    // About 20 files spread over the copy, hashed from the originals.
    const step = Math.max(1, Math.floor(chosen.files.length / 20));
    for (let i = 0; i < chosen.files.length; i += step) {
      const f = chosen.files[i];
      samples.set(join('usr-copy', f), await sha256File(f));
    }
  } finally {
    await m.unmount();
  }
  return { img, samples, copiedBytes: chosen.bytes };
}

// ————————————————————————————————————————— measurements

async function usedExtents(img: string): Promise<{ extents: Extent[]; usedBytes: number; seconds: number }> {
  const t0 = performance.now();
  const src = await FileSource.open(img);
  try {
    const map = await usedMapOf(src, await detectFilesystem(src));
    if (map.method !== 'allocation') throw new Broken(`${img}: no allocation map (${map.reason})`);
    return { extents: map.extents, usedBytes: map.usedBytes, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await src.close();
  }
}

/**
 * Reads the used bytes in order, in pieces of at most 4 MiB (small neighbouring extents share one
 * read of the span between them), the next piece read while this one is consumed.
 */
async function forEachUsedWindow(
  img: string,
  extents: Extent[],
  consume: (raw: Buffer) => void | Promise<void>,
): Promise<void> {
  function* pieces(): Generator<Extent[]> {
    let group: Extent[] = [];
    let groupStart = 0;
    for (const e of extents) {
      for (let at = e.start; at < e.start + e.length; ) {
        const len = Math.min(e.start + e.length - at, READ_WINDOW);
        if (group.length > 0 && at + len - groupStart > READ_WINDOW) {
          yield group;
          group = [];
        }
        if (group.length === 0) groupStart = at;
        group.push({ start: at, length: len });
        at += len;
      }
    }
    if (group.length > 0) yield group;
  }
  const src = await FileSource.open(img);
  const read = async (group: Extent[]): Promise<Buffer> => {
    const first = group[0].start;
    const last = group[group.length - 1];
    const span = await src.read(first, last.start + last.length - first);
    if (group.length === 1) return span;
    return Buffer.concat(group.map((g) => span.subarray(g.start - first, g.start - first + g.length)));
  };
  try {
    const it = pieces();
    const next = () => {
      const g = it.next();
      return g.done ? null : read(g.value);
    };
    let ahead = next();
    while (ahead) {
      const raw = await ahead;
      ahead = next();
      await consume(raw);
    }
  } finally {
    await src.close();
  }
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

/** Reading the used bytes and nothing else: the I/O floor of any backup. */
async function floor(img: string, extents: Extent[]): Promise<Timed> {
  const t0 = performance.now();
  await forEachUsedWindow(img, extents, () => {});
  return { seconds: (performance.now() - t0) / 1000 };
}

async function usedDigest(img: string, extents: Extent[]): Promise<string> {
  const h = createHash('sha256');
  await forEachUsedWindow(img, extents, (raw) => {
    h.update(raw);
  });
  return h.digest('hex');
}

/** Offset of the first used byte where two images differ. */
async function firstDifference(a: string, b: string, extents: Extent[]): Promise<number | undefined> {
  const sa = await FileSource.open(a);
  const sb = await FileSource.open(b);
  try {
    for (const e of extents) {
      for (let at = e.start; at < e.start + e.length; at += READ_WINDOW) {
        const n = Math.min(READ_WINDOW, e.start + e.length - at);
        const [x, y] = [await sa.read(at, n), await sb.read(at, n)];
        if (!x.equals(y)) for (let i = 0; i < n; i++) if (x[i] !== y[i]) return at + i;
      }
    }
    return undefined;
  } finally {
    await sa.close();
    await sb.close();
  }
}

async function imageFilesBytes(dir: string): Promise<{ bytes: number; first: string }> {
  let bytes = 0;
  let first = '';
  for (const e of await fsp.readdir(dir)) {
    if (!/\.rimg(\.\d+)?$/.test(e)) continue;
    bytes += (await fsp.stat(join(dir, e))).size;
    if (e.endsWith('.rimg')) first = join(dir, e);
  }
  if (!first) throw new Broken(`no .rimg file in ${dir}`);
  return { bytes, first };
}

/** fsck and sample files of a restored filesystem; returns problems (empty = good). */
async function verifyRestore(
  fs: FsKind,
  restored: string,
  built: Built,
  expectDigest: string,
  extents: Extent[],
  mnt: string,
): Promise<{ problems: string[]; notes: string[] }> {
  const problems: string[] = [];
  const notes: string[] = [];
  const digest = await usedDigest(restored, extents);
  if (digest !== expectDigest) {
    const at = await firstDifference(built.img, restored, extents);
    const size = (await fsp.stat(built.img)).size;
    const lastSector = at !== undefined && at >= size - 512;
    const what = fs === 'ntfs' ? 'the last sector: the NTFS backup boot sector' : 'the last sector';
    problems.push(`the used bytes differ from the source from byte ${at}${lastSector ? ` (${what})` : ''}`);
  }
  const fsck = fs === 'ext4' ? tryRun('e2fsck', ['-fn', restored]) : tryRun('ntfsfix', ['-n', restored]);
  if (fsck.code !== 0 || /BAD|FAILED|corrupt/i.test(fsck.out)) {
    const line = fsck.out
      .split('\n')
      .filter((l) => /BAD|FAILED|error|corrupt/i.test(l))
      .slice(0, 2)
      .join(' / ');
    problems.push(`${fs === 'ext4' ? 'e2fsck -fn' : 'ntfsfix -n'}: exit ${fsck.code} ${line}`.trim());
  }
  const m = await mountFs(fs, restored, mnt, true);
  try {
    let bad = 0;
    for (const [rel, sum] of built.samples) {
      const got = await sha256File(join(m.mnt, rel)).catch(() => 'unreadable');
      if (got !== sum) bad++;
    }
    if (bad > 0) problems.push(`${bad} of ${built.samples.size} sample files differ`);
    else notes.push(`${built.samples.size} sample files match`);
  } finally {
    await m.unmount();
  }
  return { problems, notes };
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
  const built = await buildFs(fs, dir);
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
  const ov = await verifyRestore(fs, oursRestored, built, sourceDigest, map.extents, join(dir, 'check.mnt'));
  if (ov.problems.length > 0) throw new Broken(`${fs}: our restore is broken: ${ov.problems.join('; ')}`);
  const pv = await verifyRestore(fs, peerRestored, built, sourceDigest, map.extents, join(dir, 'check.mnt'));
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

function scratchRoot(): string {
  const candidates = [process.env.RESCUE_BENCH_DIR, tmpdir(), join(ROOT, '.bench-tmp')].filter(
    (x): x is string => !!x,
  );
  for (const c of candidates) {
    const probe = existsSync(c) ? c : dirname(c);
    try {
      const st = statfsSync(probe);
      if (st.bavail * st.bsize >= SCRATCH_NEEDED) return c;
    } catch {
      // not there: try the next
    }
  }
  throw new Broken(
    `no scratch space with ${SCRATCH_NEEDED / GiB} GiB free among ${candidates.join(', ')}; set RESCUE_BENCH_DIR`,
  );
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('backup-vs-partclone: needs root (loop mounts, FUSE, drop_caches)\n');
    return 1;
  }
  for (const tool of ['partclone.extfs', 'partclone.ntfs', 'zstd', 'mkfs.ext4', 'mkfs.ntfs', 'ntfs-3g']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      process.stderr.write(`backup-vs-partclone: ${tool} is missing (sh scripts/host-setup.sh)\n`);
      return 1;
    }
  }
  const root = scratchRoot();
  await fsp.mkdir(root, { recursive: true });
  const work = await fsp.mkdtemp(join(root, 'rescue-bench-'));
  process.stderr.write(
    `rescue: ${RESCUE_ROOT}; scratch: ${work}; ${process.env.UV_THREADPOOL_SIZE ? `UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE}` : 'default thread pool'}\n`,
  );
  try {
    const results: FsResult[] = [];
    for (const fs of ['ext4', 'ntfs'] as const) results.push(await benchFs(fs, work));
    report(results);
    return 0;
  } finally {
    for (const m of [...liveMounts]) await m.unmount().catch(() => {});
    if (!KEEP) await fsp.rm(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`backup-vs-partclone: ${e instanceof Broken ? e.message : (e as Error).stack}\n`);
    process.exitCode = 1;
  },
);
