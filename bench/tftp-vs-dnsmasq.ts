/**
 * Issue #7's TFTP goal: our TFTP server against dnsmasq's on the same files, the same client and
 * the same options, in the same run (goal: ≥ 1.0× dnsmasq's throughput).
 *
 *   node bench/tftp-vs-dnsmasq.ts [--repeat N]      (or npm run bench:tftp; needs root for port 69)
 *
 * dnsmasq (Debian's dnsmasq-base, DNS and DHCP off) serves on 127.0.0.1:69, ours on 127.0.0.1:6969;
 * the client is curl. Scenarios: one 64 MiB file with blksize 1468 (what iPXE asks on Ethernet), the
 * same with the RFC 1350 default of 512-byte blocks, and 20 clients at once fetching 8 MiB each.
 * Every download is compared with the source by sha256. Best of N per scenario.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { TftpServer } from '../pxe/tftp/server.ts';

const run = promisify(execFile);
const { values } = parseArgs({ options: { repeat: { type: 'string' } } });
const REPEAT = Number(values.repeat ?? 3);
const MiB = 1024 * 1024;
const GOAL = 1.0;

const dir = mkdtempSync(join(tmpdir(), 'rescue-bench-tftp-'));
const root = join(dir, 'root');
const out = join(dir, 'out');
mkdirSync(root);
mkdirSync(out);
const big = randomBytes(64 * MiB);
const small = randomBytes(8 * MiB);
writeFileSync(join(root, 'big.bin'), big);
writeFileSync(join(root, 'small.bin'), small);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const want = { 'big.bin': sha(big), 'small.bin': sha(small) };

async function fetchAll(
  port: number,
  file: 'big.bin' | 'small.bin',
  clients: number,
  blksize?: number,
): Promise<number> {
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, (_, i) =>
      run('curl', [
        '-s',
        '-S',
        '--max-time',
        '300',
        ...(blksize ? ['--tftp-blksize', String(blksize)] : []),
        '-o',
        join(out, `${port}-${i}.bin`),
        `tftp://127.0.0.1:${port}/${file}`,
      ]),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  for (let i = 0; i < clients; i++) {
    const got = sha(readFileSync(join(out, `${port}-${i}.bin`)));
    if (got !== want[file]) throw new Error(`port ${port}: download ${i} of ${file} differs from the source`);
  }
  return seconds;
}

let dnsmasq: ChildProcess | undefined;
const ours = new TftpServer({ root, address: '127.0.0.1', port: 6969, maxBlksize: 65464 });
try {
  dnsmasq = spawn(
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--port=0',
      '--enable-tftp',
      `--tftp-root=${root}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--tftp-max=100',
      '--quiet-tftp',
      '--conf-file=/dev/null',
      '--user=root',
      `--pid-file=${join(dir, 'dnsmasq.pid')}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  dnsmasq.stderr?.on('data', (d) => {
    err += d;
  });
  await new Promise((r) => setTimeout(r, 500));
  if (dnsmasq.exitCode !== null) throw new Error(`dnsmasq did not start: ${err}`);
  await ours.start();
  const version = (await run('dnsmasq', ['--version'])).stdout.split('\n')[0];
  process.stdout.write(`TFTP: rescue vs ${version}; curl client; best of ${REPEAT}\n\n`);
  const scenarios = [
    { name: '64 MiB, blksize 1468', file: 'big.bin', clients: 1, blksize: 1468, bytes: 64 * MiB },
    { name: '64 MiB, 512-byte blocks', file: 'big.bin', clients: 1, blksize: undefined, bytes: 64 * MiB },
    {
      name: '20 clients × 8 MiB, blksize 1468',
      file: 'small.bin',
      clients: 20,
      blksize: 1468,
      bytes: 160 * MiB,
    },
  ] as const;
  process.stdout.write(
    '| scenario | dnsmasq | rescue | ratio (dnsmasq time / ours) | goal ≥ 1.0 |\n| --- | --- | --- | --- | --- |\n',
  );
  for (const s of scenarios) {
    let theirs = Number.POSITIVE_INFINITY;
    let mine = Number.POSITIVE_INFINITY;
    for (let i = 0; i < REPEAT; i++) {
      theirs = Math.min(theirs, await fetchAll(69, s.file, s.clients, s.blksize));
      mine = Math.min(mine, await fetchAll(6969, s.file, s.clients, s.blksize));
    }
    const mbs = (t: number) => `${t.toFixed(2)} s (${(s.bytes / MiB / t).toFixed(0)} MiB/s)`;
    const ratio = theirs / mine;
    process.stdout.write(
      `| ${s.name} | ${mbs(theirs)} | ${mbs(mine)} | ${ratio.toFixed(2)}× | ${ratio >= GOAL ? 'PASS' : 'MISS'} |\n`,
    );
  }
} finally {
  dnsmasq?.kill('SIGTERM');
  await ours.close();
  rmSync(dir, { recursive: true, force: true });
}
