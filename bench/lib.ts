/**
 * What the benchmarks share: running and timing commands (wall time, peak RSS), dropping page
 * caches, building a filesystem full of real data (copies of /usr plus random files) on a sparse
 * file, mounting it, reading its used bytes, and finding scratch space.
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
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { FileSource } from '../rescue/engine/devices/source.ts';
import { detectFilesystem, usedMapOf } from '../rescue/engine/filesystems/detect.ts';
import type { Extent } from '../rescue/engine/filesystems/extents.ts';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
export const REPO = resolve(import.meta.dirname, '..');
export const GNU_TIME = '/usr/bin/time';
export const READ_WINDOW = 4 * MiB;

export type FsKind = 'ext4' | 'ntfs';

export interface Timed {
  seconds: number;
  /** Peak resident set of our process (MiB), when measured. */
  rssMiB?: number;
}

/** What a test volume holds: `randomFiles` files of `randomFileBytes` plus `copyBudget` of /usr. */
export interface VolumeConfig {
  fsBytes: number;
  copyBudget: number;
  randomFiles: number;
  randomFileBytes: number;
}

// ————————————————————————————————————————— processes

export class Broken extends Error {}

export function must(cmd: string, args: string[], cwd?: string): string {
  const what = `${cmd} ${args.length > 8 ? `${args.slice(0, 8).join(' ')} …` : args.join(' ')}`;
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, cwd });
  if (r.error) throw new Broken(`${what}: ${r.error.message}`);
  if (r.status !== 0) throw new Broken(`${what} → exit ${r.status}\n${r.stderr}${r.stdout}`.trim());
  return r.stdout;
}

export function tryRun(cmd: string, args: string[]): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

export function waitExit(child: ChildProcess): Promise<number> {
  return new Promise((done, fail) => {
    if (child.exitCode !== null) return done(child.exitCode);
    child.once('error', fail);
    child.once('exit', (code, sig) => done(code ?? (sig ? 128 : -1)));
  });
}

export const hasGnuTime = existsSync(GNU_TIME);

/**
 * Runs a command to completion: wall time, and peak RSS of the command (GNU time's %M, or the
 * highest VmHWM seen while polling /proc when GNU time is missing).
 */
export async function measure(
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

export async function timedShell(script: string, log: string): Promise<Timed> {
  const r = await measure('bash', ['-o', 'pipefail', '-c', script], { log });
  return { seconds: r.seconds };
}

export const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

// ————————————————————————————————————————— caches

export let canDropCaches: boolean | undefined;

/** Writes back dirty pages, then drops the page cache (root only). */
export function dropCaches(): boolean {
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
export function sizeTree(path: string, memo: Map<string, number>): number {
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
export function chooseCopies(budget: number): { paths: string[]; bytes: number; files: string[] } {
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

export function inMountinfo(mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === mnt);
}

export interface Mounted {
  mnt: string;
  unmount(): Promise<void>;
}

export const liveMounts = new Set<Mounted>();

export async function mountFs(fs: FsKind, img: string, mnt: string, readOnly: boolean): Promise<Mounted> {
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

export async function sha256File(path: string): Promise<string> {
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

export interface Built {
  img: string;
  samples: Map<string, string>;
  copiedBytes: number;
}

export async function buildFs(fs: FsKind, dir: string, config: VolumeConfig): Promise<Built> {
  const img = join(dir, `${fs}.img`);
  const h = await fsp.open(img, 'wx');
  await h.truncate(config.fsBytes);
  await h.close();
  if (fs === 'ext4') must('mkfs.ext4', ['-q', '-F', '-L', 'bench', img]);
  else must('mkfs.ntfs', ['-q', '-F', '-f', '-L', 'bench', img]);
  const chosen = chooseCopies(config.copyBudget);
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
    for (let i = 0; i < config.randomFiles; i++) {
      const f = join(m.mnt, `random-${i}.bin`);
      must('dd', [
        'if=/dev/urandom',
        `of=${f}`,
        'bs=1M',
        `count=${config.randomFileBytes / MiB}`,
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

export async function usedExtents(
  img: string,
): Promise<{ extents: Extent[]; usedBytes: number; seconds: number }> {
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
export async function forEachUsedWindow(
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

/** Reading the used bytes and nothing else: the I/O floor of any backup. */
export async function floor(img: string, extents: Extent[]): Promise<Timed> {
  const t0 = performance.now();
  await forEachUsedWindow(img, extents, () => {});
  return { seconds: (performance.now() - t0) / 1000 };
}

export async function usedDigest(img: string, extents: Extent[]): Promise<string> {
  const h = createHash('sha256');
  await forEachUsedWindow(img, extents, (raw) => {
    h.update(raw);
  });
  return h.digest('hex');
}

/** Offset of the first used byte where two images differ. */
export async function firstDifference(a: string, b: string, extents: Extent[]): Promise<number | undefined> {
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

export async function imageFilesBytes(dir: string): Promise<{ bytes: number; first: string }> {
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

export function scratchRoot(needed: number): string {
  const candidates = [process.env.RESCUE_BENCH_DIR, tmpdir(), join(REPO, '.bench-tmp')].filter(
    (x): x is string => !!x,
  );
  for (const c of candidates) {
    const probe = existsSync(c) ? c : dirname(c);
    try {
      const st = statfsSync(probe);
      if (st.bavail * st.bsize >= needed) return c;
    } catch {
      // not there: try the next
    }
  }
  throw new Broken(
    `no scratch space with ${needed / GiB} GiB free among ${candidates.join(', ')}; set RESCUE_BENCH_DIR`,
  );
}

/**
 * A copy or cloned filesystem against its source: used bytes (sha256; where they first differ),
 * its fsck, and the sample files' sha256 on a read-only mount. Returns problems (empty = good).
 */
export async function verifyCopy(
  fs: FsKind,
  copy: string,
  built: Built,
  expectDigest: string,
  extents: Extent[],
  mnt: string,
): Promise<{ problems: string[]; notes: string[] }> {
  const problems: string[] = [];
  const notes: string[] = [];
  const digest = await usedDigest(copy, extents);
  if (digest !== expectDigest) {
    const at = await firstDifference(built.img, copy, extents);
    const size = (await fsp.stat(built.img)).size;
    const lastSector = at !== undefined && at >= size - 512;
    const what = fs === 'ntfs' ? 'the last sector: the NTFS backup boot sector' : 'the last sector';
    problems.push(`the used bytes differ from the source from byte ${at}${lastSector ? ` (${what})` : ''}`);
  }
  const fsck = fs === 'ext4' ? tryRun('e2fsck', ['-fn', copy]) : tryRun('ntfsfix', ['-n', copy]);
  if (fsck.code !== 0 || /BAD|FAILED|corrupt/i.test(fsck.out)) {
    const line = fsck.out
      .split('\n')
      .filter((l) => /BAD|FAILED|error|corrupt/i.test(l))
      .slice(0, 2)
      .join(' / ');
    problems.push(`${fs === 'ext4' ? 'e2fsck -fn' : 'ntfsfix -n'}: exit ${fsck.code} ${line}`.trim());
  }
  const m = await mountFs(fs, copy, mnt, true);
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

/**
 * A benchmark's main: needs root; makes a scratch folder (`needed` bytes free somewhere), runs
 * `body` in it, unmounts what is left mounted and removes the folder (unless `keep`). Exit code 0,
 * or 1 with the message when something is broken.
 */
export function runBench(
  name: string,
  opts: { needed: number; keep: boolean; tools?: string[] },
  body: (work: string) => Promise<void>,
): void {
  const main = async (): Promise<number> => {
    if (process.getuid?.() !== 0) {
      process.stderr.write(`${name}: needs root (loop mounts, FUSE, drop_caches)\n`);
      return 1;
    }
    for (const tool of opts.tools ?? []) {
      if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
        process.stderr.write(`${name}: ${tool} is missing (sh scripts/host-setup.sh)\n`);
        return 1;
      }
    }
    const root = scratchRoot(opts.needed);
    await fsp.mkdir(root, { recursive: true });
    const work = await fsp.mkdtemp(join(root, `rescue-${name}-`));
    try {
      await body(work);
      return 0;
    } finally {
      for (const m of [...liveMounts]) await m.unmount().catch(() => {});
      if (!opts.keep) await fsp.rm(work, { recursive: true, force: true });
      else process.stderr.write(`kept ${work}\n`);
    }
  };
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`${name}: ${e instanceof Broken ? e.message : (e as Error).stack}\n`);
      process.exitCode = 1;
    },
  );
}

/**
 * The options every benchmark takes: `--quick` (1 GiB volumes, one run), `--repeat N` (runs of each
 * measured step, the best counts; default 3), `--keep` (keep the scratch folder), `--rescue DIR`
 * (the CLI of another checkout, for an A/B of a patch against the same peer run); and the volume
 * every benchmark builds (4 GiB with ~1.5 GiB of /usr copies and random files).
 */
export function benchOptions(argv = process.argv.slice(2)) {
  const quick = argv.includes('--quick');
  const rescueRoot = argv.includes('--rescue') ? resolve(argv[argv.indexOf('--rescue') + 1]) : REPO;
  return {
    argv,
    quick,
    keep: argv.includes('--keep'),
    repeat: argv.includes('--repeat')
      ? Math.max(1, Math.floor(Number(argv[argv.indexOf('--repeat') + 1])) || 1)
      : quick
        ? 1
        : 3,
    rescueRoot,
    cli: join(rescueRoot, 'rescue/cli/main.ts'),
    volume: (quick
      ? { fsBytes: 1 * GiB, copyBudget: 200 * MiB, randomFiles: 1, randomFileBytes: 100 * MiB }
      : {
          fsBytes: 4 * GiB,
          copyBudget: 1.2 * GiB,
          randomFiles: 3,
          randomFileBytes: 100 * MiB,
        }) as VolumeConfig,
  };
}
