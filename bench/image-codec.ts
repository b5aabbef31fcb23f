/**
 * Throughput of the image chunk codec and of whole-image write/read on this machine.
 *   node bench/image-codec.ts [MiB=256] [inFlight=4]
 * Data: "compressible" = real files from /usr (binaries, libraries, text — zstd -3 ratio ≈ 0.5),
 * "random" = crypto random bytes. Writes go to $RESCUE_BENCH_DIR or the OS temp dir.
 * Not a timed test: it prints MB/s (raw bytes per second) for each combination.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChunkCodec, type Compression, ImageReader } from '../rescue/engine/image/index.ts';
import { IMAGE_TEST_HOOKS } from '../rescue/engine/image/internal.ts';
import { ImageWriter } from '../rescue/engine/image/writer.ts';
import { appendRegions, manifestFor } from '../test/fixtures/image.ts';

const MIB = 1024 * 1024;
const size = Number(process.argv[2] ?? 256) * MIB;
const inFlight = Number(process.argv[3] ?? 4);
const WINDOW = 4 * MIB;

async function corpus(bytes: number): Promise<Buffer> {
  const out = Buffer.alloc(bytes);
  let at = 0;
  const walk = async (dir: string): Promise<void> => {
    let ents: import('node:fs').Dirent[];
    try {
      ents = await fsp.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      if (at >= bytes) return;
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const b = await fsp.readFile(p).catch(() => Buffer.alloc(0));
        at += b.copy(out, at, 0, Math.min(b.length, bytes - at));
      }
    }
  };
  for (const d of ['/usr/lib', '/usr/share', '/usr/bin']) await walk(d);
  if (at < bytes) throw new Error(`only ${at} bytes of corpus`);
  return out;
}

function mbps(bytes: number, ms: number): string {
  return (bytes / 1e6 / (ms / 1000)).toFixed(0).padStart(5);
}

async function codecOnly(
  data: Buffer,
  compression: Compression,
  key?: Buffer,
): Promise<[string, string, number]> {
  const codec = new ChunkCodec({ imageId: randomBytes(16), compression, key });
  const n = data.length / WINDOW;
  const encoded: Awaited<ReturnType<ChunkCodec['encode']>>[] = new Array(n);
  let t = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        const i = next++;
        encoded[i] = await codec.encode(0, i * WINDOW, data.subarray(i * WINDOW, (i + 1) * WINDOW));
      }
    }),
  );
  const enc = performance.now() - t;
  const stored = encoded.reduce((s, c) => s + c.payload.length, 0);
  t = performance.now();
  next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        const i = next++;
        const c = encoded[i];
        await codec.decode(
          {
            regionId: 0,
            flags: c.flags,
            windowStart: c.windowStart,
            rawLength: c.rawLength,
            storedLength: c.payload.length,
            payloadOffset: 0,
            pointId: '',
            sha256: c.sha256,
          },
          c.payload,
        );
      }
    }),
  );
  const dec = performance.now() - t;
  return [mbps(data.length, enc), mbps(data.length, dec), stored / data.length];
}

async function wholeImage(
  data: Buffer,
  compression: Compression,
  password?: string,
): Promise<[string, string]> {
  const dir = await fsp.mkdtemp(join(process.env.RESCUE_BENCH_DIR ?? tmpdir(), 'rescue-bench-'));
  try {
    const regions = [{ id: 0, data }];
    let t = performance.now();
    const w = await ImageWriter.create({
      dir,
      name: 'bench',
      compression,
      password,
      tool: 'bench',
      windowSize: WINDOW,
      [IMAGE_TEST_HOOKS]: password ? { scrypt: { logN: 10, r: 8, p: 1 } } : {},
    });
    await appendRegions(w, regions, inFlight);
    const { firstFile } = await w.finish(manifestFor(regions));
    const write = performance.now() - t;
    t = performance.now();
    const r = await ImageReader.open(firstFile, { password });
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < r.entries.length) await r.readChunk(r.entries[next++]);
      }),
    );
    await r.close();
    const read = performance.now() - t;
    return [mbps(data.length, write), mbps(data.length, read)];
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

const sets: [string, Buffer][] = [
  ['compressible', await corpus(size)],
  ['random', randomBytes(size)],
];

/** The peer in the same run: the zstd CLI (-3 -T0 and -12 -T0) on the same bytes, from a file in the page cache. */
async function zstdReference(data: Buffer, level: number): Promise<string> {
  const dir = await fsp.mkdtemp(join(process.env.RESCUE_BENCH_DIR ?? tmpdir(), 'rescue-bench-'));
  try {
    const f = join(dir, 'data');
    await fsp.writeFile(f, data);
    const t = performance.now();
    const r = spawnSync('zstd', ['-q', `-${level}`, '-T0', '-c', f], {
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    if (r.status !== 0) return '  n/a';
    return mbps(data.length, performance.now() - t);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
for (const [label, data] of sets) {
  console.log(
    `zstd CLI on ${label}: -3 -T0 ${await zstdReference(data, 3)} MB/s, -12 -T0 ${await zstdReference(data, 12)} MB/s`,
  );
}
console.log(
  `${size / MIB} MiB per run, window 4 MiB, ${inFlight} chunks in flight, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4}`,
);
console.log('data          compression password | codec enc  dec  ratio | image write  read (MB/s)');
for (const [label, data] of sets) {
  for (const compression of ['none', 'normal', 'high'] as Compression[]) {
    for (const password of [undefined, 'benchmark']) {
      const key = password ? randomBytes(32) : undefined;
      const [enc, dec, ratio] = await codecOnly(data, compression, key);
      const [wr, rd] = await wholeImage(data, compression, password);
      console.log(
        `${label.padEnd(13)} ${compression.padEnd(11)} ${(password ? 'yes' : 'no').padEnd(8)} | ${enc} ${dec}  ${ratio.toFixed(3)} | ${wr} ${rd}`,
      );
    }
  }
}
