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
  runBench,
  type Timed,
  usedDigest,
  usedExtents,
  verifyCopy,
} from './lib.ts';

const {
  argv,
  quick: QUICK,
  keep: KEEP,
  repeat: REPEAT,
  rescueRoot: RESCUE_ROOT,
  cli: CLI,
  volume: CONFIG,
} = benchOptions();
const NODE = process.execPath;
/** Scratch at the peak: the source and three clones per filesystem (sparse: used bytes count). */
const SCRATCH_NEEDED = QUICK ? 2 * GiB : 8 * GiB;
const GOALS = { cloneSpeed: 1.5 } as const;

interface FsResult {
  fs: FsKind;
  usedBytes: number;
  peerUsedBytes?: number;
  runs: number;
  ours: Timed;
  oursVerify: Timed;
  peer: Timed;
  floor: Timed;
  checks: string[];
  peerNotes: string[];
}

/** "Space in use: 1.6 GB = 390625 Blocks" and "Block size: 4096 Byte" from partclone's log. */
async function partcloneUsed(log: string): Promise<number | undefined> {
  const text = await fsp.readFile(log, 'utf8').catch(() => '');
  const blocks = /Space in use:.*?=\s*(\d+)\s*Blocks/.exec(text);
  const size = /Block size:\s*(\d+)\s*Byte/.exec(text);
  return blocks && size ? Number(blocks[1]) * Number(size[1]) : undefined;
}

/** The fastest run; the highest peak RSS of all runs. */
function best(runs: Timed[]): Timed {
  const fastest = runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  const rss = runs.map((r) => r.rssMiB).filter((x): x is number => x !== undefined);
  return rss.length > 0 ? { ...fastest, rssMiB: Math.max(...rss) } : fastest;
}

/** A fresh sparse target of `size` bytes (made before the clock starts, for every side). */
async function freshTarget(path: string, size: number): Promise<void> {
  await fsp.rm(path, { force: true });
  const h = await fsp.open(path, 'wx');
  await h.truncate(size);
  await h.close();
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
  const tool = fs === 'ext4' ? 'partclone.extfs' : 'partclone.ntfs';
  const logs = join(dir, 'logs');
  await fsp.mkdir(logs);
  const pcLog = join(logs, 'partclone.log');
  const targets = {
    ours: join(dir, 'clone-ours.img'),
    oursVerify: join(dir, 'clone-ours-verify.img'),
    peer: join(dir, 'clone-peer.img'),
  };
  const steps: Record<keyof typeof targets, (run: number) => Promise<Timed>> = {
    ours: async (run) => {
      say(`our clone --no-verify (${run + 1}/${REPEAT})…`);
      await freshTarget(targets.ours, CONFIG.fsBytes);
      dropCaches();
      return measure(NODE, [CLI, 'clone', 'partition', img, targets.ours, '--no-verify', '--yes'], {
        log: join(logs, `ours-${run}.log`),
      });
    },
    oursVerify: async (run) => {
      say(`our clone, verified (${run + 1}/${REPEAT})…`);
      await freshTarget(targets.oursVerify, CONFIG.fsBytes);
      dropCaches();
      return measure(NODE, [CLI, 'clone', 'partition', img, targets.oursVerify, '--yes'], {
        log: join(logs, `ours-verify-${run}.log`),
      });
    },
    peer: async (run) => {
      say(`${tool} -b (${run + 1}/${REPEAT})…`);
      await freshTarget(targets.peer, CONFIG.fsBytes);
      dropCaches();
      return measure(tool, ['-b', '-L', pcLog, '-s', img, '-O', targets.peer], {
        log: join(logs, `peer-${run}.log`),
      });
    },
  };
  const runs: Record<keyof typeof targets, Timed[]> = { ours: [], oursVerify: [], peer: [] };
  const order = ['ours', 'peer', 'oursVerify'] as const;
  for (let run = 0; run < REPEAT; run++) {
    // The order rotates per run and filesystem: no side always meets another's leftovers.
    const shift = (run + (fs === 'ext4' ? 0 : 1)) % order.length;
    for (const k of [...order.slice(shift), ...order.slice(0, shift)]) runs[k].push(await steps[k](run));
  }
  say('floor: reading the used bytes…');
  const floorRuns: Timed[] = [];
  for (let run = 0; run < REPEAT; run++) {
    dropCaches();
    floorRuns.push(await floor(img, map.extents));
  }

  say('verifying the clones…');
  const mnt = join(dir, 'check.mnt');
  const checks: string[] = [];
  for (const [what, target] of [
    ['--no-verify', targets.ours],
    ['verified', targets.oursVerify],
  ] as const) {
    const v = await verifyCopy(fs, target, built, sourceDigest, map.extents, mnt);
    if (v.problems.length > 0)
      throw new Broken(`${fs}: our clone (${what}) is broken: ${v.problems.join('; ')}`);
    checks.push(
      `ours ${what}: used bytes identical, ${fs === 'ext4' ? 'e2fsck -fn' : 'ntfsfix -n'} clean, ${v.notes.join(', ')}`,
    );
  }
  const pv = await verifyCopy(fs, targets.peer, built, sourceDigest, map.extents, mnt);
  if (pv.problems.some((x) => /sample files differ/.test(x)))
    throw new Broken(`${fs}: the peer's clone is broken: ${pv.problems.join('; ')}`);

  const result: FsResult = {
    fs,
    usedBytes: map.usedBytes,
    peerUsedBytes: await partcloneUsed(pcLog),
    runs: REPEAT,
    ours: best(runs.ours),
    oursVerify: best(runs.oursVerify),
    peer: best(runs.peer),
    floor: best(floorRuns),
    checks,
    peerNotes: [...pv.problems, ...pv.notes],
  };
  if (!KEEP) await fsp.rm(dir, { recursive: true, force: true });
  return result;
}

function report(results: FsResult[]): void {
  const col = 28;
  const rows: [string, ...string[]][] = [];
  const row = (label: string, f: (r: FsResult) => string) => rows.push([label, ...results.map(f)]);
  const mbps = (r: FsResult, t: Timed) => (r.usedBytes / 1e6 / t.seconds).toFixed(0);
  const speed = (r: FsResult, t: Timed) => `${t.seconds.toFixed(1)} s  ${mbps(r, t)} MB/s`;
  const rss = (t: Timed) => (t.rssMiB === undefined ? '?' : `${t.rssMiB.toFixed(0)} MiB`);
  const ratio = (r: FsResult, t: Timed, goal: boolean) => {
    const x = r.peer.seconds / t.seconds;
    return `${x.toFixed(2)}×${goal ? `  ${x >= GOALS.cloneSpeed ? 'PASS' : 'MISS'}` : ''}`;
  };
  row('used data (our map)', (r) => `${(r.usedBytes / GiB).toFixed(2)} GiB`);
  row('used data (partclone)', (r) => (r.peerUsedBytes ? `${(r.peerUsedBytes / GiB).toFixed(2)} GiB` : '?'));
  row('runs (best of; order rotates)', (r) => String(r.runs));
  row('clone ours --no-verify', (r) => speed(r, r.ours));
  row('clone peer: partclone -b', (r) => speed(r, r.peer));
  row(`speed ours/peer ≥${GOALS.cloneSpeed} (like for like)`, (r) => ratio(r, r.ours, true));
  row('clone ours, verified (default)', (r) => speed(r, r.oursVerify));
  row('  speed verified/peer', (r) => ratio(r, r.oursVerify, false));
  row('  cost of the read-back', (r) => `+${(r.oursVerify.seconds - r.ours.seconds).toFixed(1)} s`);
  row('  floor: read used bytes', (r) => speed(r, r.floor));
  row('peak RSS ours', (r) => `${rss(r.ours)} (verified ${rss(r.oursVerify)})`);
  row('peak RSS peer', (r) => rss(r.peer));
  const labelWidth = Math.max(...rows.map((r) => r[0].length)) + 2;
  const out = [
    `${''.padEnd(labelWidth)}${results.map((r) => r.fs.padEnd(col)).join('')}`,
    ...rows.map(
      ([label, ...cells]) => `${label.padEnd(labelWidth)}${cells.map((c) => c.padEnd(col)).join('')}`,
    ),
  ];
  process.stdout.write(`\n${out.join('\n')}\n\n`);
  for (const r of results) {
    process.stdout.write(`${r.fs}: ${r.checks.join('; ')}\n`);
    process.stdout.write(`${r.fs}: peer clone — ${r.peerNotes.join(', ')}\n`);
  }
  process.stdout.write(
    `MB/s are of used data (10^6 bytes/s). Page caches ${canDropCaches ? 'dropped before every measured step' : 'NOT dropped (no permission)'}. ` +
      `Peak RSS by ${hasGnuTime ? 'GNU time (max RSS)' : 'polling VmHWM'}. ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(2)} at the end` +
      ` (other work on the machine skews both sides). ${QUICK ? 'QUICK run (1 GiB filesystems): smoke test only.' : ''}\n`,
  );
}

runBench(
  'clone-vs-partclone',
  {
    needed: SCRATCH_NEEDED,
    keep: KEEP,
    tools: ['partclone.extfs', 'partclone.ntfs', 'mkfs.ext4', 'mkfs.ntfs', 'ntfs-3g'],
  },
  async (work) => {
    process.stderr.write(`rescue: ${RESCUE_ROOT}; scratch: ${work}\n`);
    const results: FsResult[] = [];
    for (const fs of argv.includes('--fs')
      ? [argv[argv.indexOf('--fs') + 1] as FsKind]
      : (['ext4', 'ntfs'] as const))
      results.push(await benchFs(fs, work));
    report(results);
  },
);
