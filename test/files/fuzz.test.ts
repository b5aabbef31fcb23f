/**
 * Damaged metadata: random byte mutations of real images' inode tables, directory blocks, extent
 * and indirect blocks (ext), MFT records and INDX blocks (NTFS, both raw — the update sequence
 * catches them — and re-protected so that the mutation reaches the parsers), FATs and directory
 * clusters (FAT, exFAT). Opening and walking the whole tree must end in success or a RescueError:
 * never another exception, never a hang. Pure codecs get random bytes too.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { exfatLayout, parseExfatBootSector } from '../../rescue/engine/filesystems/exfat-boot.ts';
import { fatLayout, parseFatBootSector } from '../../rescue/engine/filesystems/fat-bpb.ts';
import { parseExfatDirectory } from '../../rescue/engine/filesystems/files/exfat-dir.ts';
import {
  ibodyXattr,
  parseDirBlock,
  parseExtentNode,
  parseInode,
} from '../../rescue/engine/filesystems/files/ext-inode.ts';
import { parseFatDirectory } from '../../rescue/engine/filesystems/files/fat-dir.ts';
import { openVolumeFiles } from '../../rescue/engine/filesystems/files/index.ts';
import { lznt1Decompress } from '../../rescue/engine/filesystems/files/lznt1.ts';
import { parseNtfsBootSector } from '../../rescue/engine/filesystems/ntfs-boot.ts';
import {
  applyFixups,
  listAttributes,
  parseFileRecord,
  protectRecord,
} from '../../rescue/engine/filesystems/ntfs-record.ts';
import { decodeRunlist } from '../../rescue/engine/filesystems/ntfs-runlist.ts';
import { fillExfat, mkfsExfat, withExfatMount } from '../fixtures/exfat.ts';
import { fillFat, mkfsFat } from '../fixtures/fat.ts';
import { walkBounded } from '../fixtures/files.ts';
import { makeTempDir, pseudoRandomBytes, run, sparseFile } from '../fixtures/lab.ts';
import { makeNtfs, withNtfsMount } from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;
/** A run that takes longer than this is taken for a hang. */
const RUN_LIMIT_MS = 10_000;
let dir: string;

interface Target {
  /** Byte ranges worth damaging. */
  ranges: [number, number][];
  /** Multi-sector records (MFT records, INDX blocks) to re-protect after mutating: [start, size]. */
  records?: [number, number, string][];
}

interface Image {
  name: string;
  type: string;
  bytes: Buffer;
  target: Target;
}

const images: Image[] = [];

async function extImage(type: 'ext2' | 'ext4', args: string[]): Promise<Image> {
  const src = join(dir, `${type}-src`);
  await fsp.rm(src, { recursive: true, force: true });
  await fsp.mkdir(join(src, 'd/e/f'), { recursive: true });
  await fsp.mkdir(join(src, 'many'));
  for (let i = 0; i < 120; i++)
    await fsp.writeFile(join(src, 'many', `a fairly long file name ${i}`), `${i}`);
  await fsp.writeFile(join(src, 'd/e/f/deep.txt'), 'deep');
  await fsp.writeFile(join(src, 'mid.bin'), pseudoRandomBytes(300 * 1024, 1));
  await fsp.symlink('d/e', join(src, 'link'));
  await fsp.symlink(`${'./'.repeat(40)}mid.bin`, join(src, 'slow-link'));
  const h = await fsp.open(join(src, 'islands.bin'), 'w');
  for (let i = 0; i < 200; i++) await h.write(Buffer.alloc(1024, i + 1), 0, 1024, i * 2048);
  await h.close();
  const image = join(dir, `${type}.img`);
  await sparseFile(image, 4 * MiB);
  await run(`mkfs.${type}`, ['-q', '-F', '-b', '1024', '-N', '256', ...args, '-d', src, image]);
  await run('e2fsck', ['-fyD', image], { allowFail: true });
  const dump = (await run('dumpe2fs', [image])).stdout;
  const table = Number(/Inode table at (\d+)-/.exec(dump)?.[1]);
  const inodeSize = Number(/Inode size:\s+(\d+)/.exec(dump)?.[1]);
  const ranges: [number, number][] = [[table * 1024, 160 * inodeSize]];
  for (const path of ['/', '/d', '/d/e', '/d/e/f', '/many', '/mid.bin', '/islands.bin', '/slow-link']) {
    const stat = (await run('debugfs', ['-R', `stat ${path}`, image])).stdout;
    const meta = [...stat.matchAll(/\((?:ETB\d+|IND|DIND|TIND)\):(\d+)/g)].map((m) => Number(m[1]));
    const isDirOrLink = path !== '/mid.bin' && path !== '/islands.bin';
    const blocks = isDirOrLink
      ? (await run('debugfs', ['-R', `blocks ${path}`, image])).stdout
          .trim()
          .split(/\s+/)
          .filter(Boolean)
          .map(Number)
      : [];
    for (const b of [...meta, ...blocks]) ranges.push([b * 1024, 1024]);
  }
  return { name: `${type} ${args.join(' ')}`, type, bytes: await fsp.readFile(image), target: { ranges } };
}

async function ntfsImage(): Promise<Image> {
  const image = join(dir, 'ntfs.img');
  await makeNtfs(image, { size: 16 * MiB, clusterSize: 4096 });
  await withNtfsMount(image, join(dir, 'mnt-ntfs'), async (m) => {
    await fsp.mkdir(join(m, 'many'));
    for (let i = 0; i < 150; i++)
      await fsp.writeFile(join(m, 'many', `a fairly long file name ${i}`), `${i}`);
    await fsp.mkdir(join(m, 'd/e/f'), { recursive: true });
    await fsp.writeFile(join(m, 'd/e/f/deep.txt'), 'deep');
    await fsp.writeFile(join(m, 'mid.bin'), pseudoRandomBytes(300 * 1024, 2));
    await fsp.mkdir(join(m, 'packed'));
    await run('setfattr', ['-n', 'system.ntfs_attrib_be', '-v', '0x00000800', join(m, 'packed')]);
    await fsp.writeFile(join(m, 'packed/text.txt'), 'compressible text\n'.repeat(20_000));
    const h = await fsp.open(join(m, 'islands.bin'), 'w');
    for (let i = 0; i < 200; i++) await h.write(Buffer.alloc(4096, i + 1), 0, 4096, i * 8192);
    await h.close();
  });
  const bytes = await fsp.readFile(image);
  const boot = parseNtfsBootSector(bytes);
  const rs = boot.mftRecordSize;
  const rec0 = parseFileRecord(bytes.subarray(boot.mftLcn * boot.clusterSize), rs, 'record 0');
  const data = listAttributes(rec0, 'record 0').find((a) => a.type === 0x80);
  if (!data?.nonResident) throw new Error('unexpected $MFT');
  const runs = decodeRunlist(data.mappingPairs, 0, '$MFT');
  const ranges: [number, number][] = [];
  const records: [number, number, string][] = [];
  const recordsPerCluster = boot.clusterSize / rs;
  let n = 0;
  for (const r of runs) {
    for (let c = 0; c < r.length && n < 256; c++) {
      for (let k = 0; k < recordsPerCluster; k++, n++) {
        const at = ((r.lcn as number) + c) * boot.clusterSize + k * rs;
        ranges.push([at, rs]);
        records.push([at, rs, 'FILE']);
      }
    }
  }
  // INDX blocks, found by their signature (independent of the reader under test).
  for (let at = 0; at + 4096 <= bytes.length; at += 4096) {
    if (bytes.toString('latin1', at, at + 4) === 'INDX') {
      ranges.push([at, 4096]);
      records.push([at, 4096, 'INDX']);
    }
  }
  return { name: 'ntfs', type: 'ntfs', bytes, target: { ranges, records } };
}

async function fatImage(): Promise<Image> {
  const image = join(dir, 'fat16.img');
  await mkfsFat(image, { sizeBytes: 8 * MiB, fatBits: 16, sectorsPerCluster: 1 });
  await fillFat(image, join(dir, 'fat-work'), { seed: 3, rounds: 4, clusterBytes: 512, manyFiles: 40 });
  const bytes = await fsp.readFile(image);
  const l = fatLayout(parseFatBootSector(bytes));
  return {
    name: 'fat16',
    type: 'vfat',
    bytes,
    target: { ranges: [[l.fatStart, l.dataStart + 128 * 1024 - l.fatStart]] },
  };
}

async function exfatImage(): Promise<Image> {
  const image = join(dir, 'exfat.img');
  await mkfsExfat(image, { sizeBytes: 8 * MiB, clusterSize: '4K' });
  await withExfatMount(image, {}, (m) =>
    fillExfat(m, { seed: 4, rounds: 4, clusterBytes: 4096, manyFiles: 40 }),
  );
  const bytes = await fsp.readFile(image);
  const l = exfatLayout(parseExfatBootSector(bytes));
  return {
    name: 'exfat',
    type: 'exfat',
    bytes,
    target: {
      ranges: [
        [l.fatStart, 4096],
        [l.heapStart, 512 * 1024],
      ],
    },
  };
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-files-fuzz-');
  images.push(await extImage('ext4', ['-O', '^metadata_csum']));
  images.push(await extImage('ext4', []));
  images.push(await extImage('ext2', []));
  images.push(await ntfsImage());
  images.push(await fatImage());
  images.push(await exfatImage());
});
afterAll(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

/** Opens and walks; 'ok' or the RescueError code. Anything else propagates. */
async function openAndWalk(img: Image): Promise<string> {
  const work = (async () => {
    try {
      const files = await openVolumeFiles(new BufferSource(img.bytes), img.type);
      if (!files) throw new Error('no reader');
      await walkBounded(files, 300, 6);
      await files.stat('/link/e/f/deep.txt');
      return 'ok';
    } catch (e) {
      if (!isRescueError(e)) throw e;
      return e.code;
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${img.name}: no answer within ${RUN_LIMIT_MS} ms`)),
      RUN_LIMIT_MS,
    );
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const mutation = fc.record({
  range: fc.nat(),
  offset: fc.nat(),
  value: fc.integer({ min: 0, max: 255 }),
});

describe('reading files on damaged images', () => {
  it('the undamaged images read fine', async () => {
    for (const img of images) expect(await openAndWalk(img), img.name).toBe('ok');
  });

  it('random mutations of metadata end in success or a RescueError', async () => {
    const outcomes = new Map<string, number>();
    for (const img of images) {
      const { ranges, records } = img.target;
      await fc.assert(
        fc.asyncProperty(
          fc.array(mutation, { minLength: 1, maxLength: 8 }),
          fc.boolean(),
          async (muts, reprotect) => {
            const saved: [number, Buffer][] = [];
            const touch = (at: number, len: number) =>
              saved.push([at, Buffer.from(img.bytes.subarray(at, at + len))]);
            try {
              for (const m of muts) {
                const [start, len] = ranges[m.range % ranges.length];
                const at = start + (m.offset % len);
                // Not the signature or the update sequence array's own position and size (bytes 0..7).
                const rec =
                  reprotect && records ? records.find(([s, l]) => at >= s + 8 && at < s + l) : undefined;
                if (rec) {
                  // Undo the fixups, damage, redo them: the record passes its update-sequence check.
                  const [s, l, magic] = rec;
                  touch(s, l);
                  const view = img.bytes.subarray(s, s + l);
                  try {
                    applyFixups(view, magic, 'fuzz');
                  } catch {
                    img.bytes[at] = m.value;
                    continue;
                  }
                  view[at - s] = m.value;
                  protectRecord(view);
                } else {
                  touch(at, 1);
                  img.bytes[at] = m.value;
                }
              }
              const code = await openAndWalk(img);
              outcomes.set(`${img.name}: ${code}`, (outcomes.get(`${img.name}: ${code}`) ?? 0) + 1);
            } finally {
              for (let i = saved.length - 1; i >= 0; i--) saved[i][1].copy(img.bytes, saved[i][0]);
            }
          },
        ),
        { numRuns: Number(process.env.FUZZ_RUNS ?? (img.type === 'ntfs' ? 300 : 150)) },
      );
    }
    if (process.env.FUZZ_REPORT) console.log(outcomes);
    // Both outcomes occur: the mutations do reach the parsers, and not everything is refused.
    const keys = [...outcomes.keys()];
    for (const img of images) {
      expect(
        keys.some((k) => k.startsWith(`${img.name}: E_`)),
        `${img.name} ${keys}`,
      ).toBe(true);
    }
    expect(keys.filter((k) => k.endsWith(': ok')).length).toBeGreaterThanOrEqual(4);
  });
});

describe('pure codecs on random bytes', () => {
  const bytes = fc.uint8Array({ minLength: 0, maxLength: 4096 });
  const onlyRescueErrors = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      if (!isRescueError(e)) throw e;
    }
  };
  it('LZNT1, ext inodes / extent nodes / directory blocks, FAT and exFAT directories', () => {
    fc.assert(
      fc.property(bytes, fc.integer({ min: 0, max: 65536 }), (b, n) => {
        onlyRescueErrors(() => lznt1Decompress(b, n));
        onlyRescueErrors(() => parseExtentNode(b, 'fuzz'));
        onlyRescueErrors(() => parseDirBlock(b, n % 2 === 0, 4096, 'fuzz'));
        onlyRescueErrors(() => {
          const size = [128, 256, 512][n % 3];
          const ino = parseInode(b, size, 'fuzz');
          ibodyXattr(ino, size, 'data', 'fuzz');
        });
        onlyRescueErrors(() => parseFatDirectory(b, n % 2 === 0));
        onlyRescueErrors(() => parseExfatDirectory(b, 'fuzz'));
      }),
      { numRuns: 2000 },
    );
  });
  it('LZNT1 on chunks with valid headers and random tokens', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 600 }), { maxLength: 6 }), (chunks) => {
        const parts = chunks.map((c) => {
          const h = Buffer.alloc(2);
          h.writeUInt16LE(0xb000 | (c.length - 1));
          return Buffer.concat([h, c]);
        });
        onlyRescueErrors(() => {
          const out = lznt1Decompress(Buffer.concat(parts), 65536);
          expect(out.length).toBe(65536);
        });
      }),
      { numRuns: 1000 },
    );
  });
});
