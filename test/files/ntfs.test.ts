/**
 * Reading files on real NTFS images written by ntfs-3g. Oracle: the same volume mounted read-only
 * through ntfs-3g (names, types, sizes, sha256 of every file) and the hashes of what was written;
 * ntfsinfo confirms the structures under test are there (compressed and sparse $DATA, an
 * $ATTRIBUTE_LIST, $INDEX_ALLOCATION).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { isRescueError } from '../../rescue/engine/errors.ts';
import { openVolumeFiles, type VolumeFiles } from '../../rescue/engine/filesystems/files/index.ts';
import { walkRealTree, walkVolume } from '../fixtures/files.ts';
import { makeTempDir, pseudoRandomBytes, run, sha256 } from '../fixtures/lab.ts';
import { makeNtfs, populateNtfs, withNtfsMount } from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;
let dir: string;
const opened: FileSource[] = [];

beforeAll(async () => {
  dir = await makeTempDir('rescue-files-ntfs-');
});
afterAll(async () => {
  for (const s of opened) await s.close();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

async function open(image: string): Promise<VolumeFiles> {
  const src = await FileSource.open(image);
  opened.push(src);
  const files = await openVolumeFiles(src, 'ntfs');
  if (!files) throw new Error('no NTFS reader');
  return files;
}

async function ntfsinfo(image: string, path: string): Promise<string> {
  return (await run('ntfsinfo', ['-v', '-F', path, image])).stdout;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (!isRescueError(e)) throw e;
    return e.code;
  }
}

/** A directory with enough entries that its index needs INDX blocks. */
async function bigDirectory(mnt: string, expected: Map<string, string>): Promise<void> {
  await fsp.mkdir(join(mnt, 'Big Directory'));
  for (let i = 0; i < 400; i++) {
    const rel = `Big Directory/Entry with a long name number ${i}.txt`;
    await fsp.writeFile(join(mnt, rel), `${i}\n`);
    expected.set(rel, sha256(Buffer.from(`${i}\n`)));
  }
}

/** A sparse file of 400 islands: 800 runs, far more than one MFT record holds. */
async function islands(mnt: string, expected: Map<string, string>): Promise<void> {
  const logical = Buffer.alloc(400 * 8192);
  const h = await fsp.open(join(mnt, 'islands.bin'), 'w');
  for (let i = 0; i < 400; i++) {
    const piece = Buffer.alloc(4096, (i % 255) + 1);
    await h.write(piece, 0, piece.length, i * 8192);
    piece.copy(logical, i * 8192);
  }
  await h.close();
  expected.set('islands.bin', sha256(logical.subarray(0, 399 * 8192 + 4096)));
}

/** Junction and CompactOS-style reparse points, written as ntfs-3g's reparse-data attribute. */
function junctionReparse(target: string): Buffer {
  const sub = Buffer.from(`\\??\\${target}\0`, 'utf16le');
  const print = Buffer.from(`${target}\0`, 'utf16le');
  const body = Buffer.alloc(8 + sub.length + print.length);
  body.writeUInt16LE(0, 0);
  body.writeUInt16LE(sub.length - 2, 2);
  body.writeUInt16LE(sub.length, 4);
  body.writeUInt16LE(print.length - 2, 6);
  sub.copy(body, 8);
  print.copy(body, 8 + sub.length);
  const head = Buffer.alloc(8);
  head.writeUInt32LE(0xa0000003, 0); // IO_REPARSE_TAG_MOUNT_POINT
  head.writeUInt16LE(body.length, 4);
  return Buffer.concat([head, body]);
}

function wofReparse(): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0x80000017, 0); // IO_REPARSE_TAG_WOF
  b.writeUInt16LE(16, 4);
  b.writeUInt32LE(1, 8); // WOF_EXTERNAL_INFO: version 1, provider 2 (file)
  b.writeUInt32LE(2, 12);
  b.writeUInt32LE(1, 16); // FILE_PROVIDER_EXTERNAL_INFO_V1: version 1, XPRESS4K
  return b;
}

describe('NTFS files against an ntfs-3g mount of the same image', () => {
  it('4 KiB clusters: resident, fragmented, sparse, LZNT1-compressed files, a 400-entry index, deep paths', async () => {
    const image = join(dir, 'main.img');
    await makeNtfs(image, { size: 64 * MiB, clusterSize: 4096 });
    const expected = new Map<string, string>();
    await withNtfsMount(image, join(dir, 'mnt'), async (m) => {
      for (const [k, v] of await populateNtfs(m, {
        seed: 3,
        scale: 0.4,
        clusterSize: 4096,
        compressed: true,
      }))
        expected.set(k, v);
      await bigDirectory(m, expected);
      await islands(m, expected);
      // Words from a small vocabulary: short back references at every position of every chunk.
      const vocab =
        'alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi'.split(' ');
      const noise = pseudoRandomBytes(60_000, 7);
      const words = Buffer.from(Array.from(noise, (b) => vocab[b % vocab.length]).join(' '));
      await fsp.writeFile(join(m, 'compressed/words.txt'), words);
      expected.set('compressed/words.txt', sha256(words));
      await fsp.mkdir(join(m, 'Mixed Case'));
      await fsp.writeFile(join(m, 'Mixed Case/ReadMe.TXT'), 'case\n');
    });
    const oracle = (await withNtfsMount(image, join(dir, 'mnt'), (m) => walkRealTree(m), { readOnly: true }))
      .value;
    expect(await ntfsinfo(image, '/compressed/text.txt')).toMatch(/COMPRESSED/);
    expect(await ntfsinfo(image, '/sparse.bin')).toMatch(/SPARSE/);
    expect(await ntfsinfo(image, '/islands.bin')).toContain('$ATTRIBUTE_LIST');
    expect(await ntfsinfo(image, '/Big Directory')).toContain('$INDEX_ALLOCATION');
    expect(Number(/Total runs: (\d+)/.exec(await ntfsinfo(image, '/frag/filler.bin'))?.[1])).toBeGreaterThan(
      3,
    );

    const files = await open(image);
    const ours = await walkVolume(files);
    expect(ours).toEqual(oracle);
    for (const [rel, sum] of expected) expect(ours.get(`/${rel}`)?.sha256, rel).toBe(sum);

    // Case-insensitive lookups, with the stored spelling in listings.
    expect(await files.stat('/MIXED case/readme.txt')).toMatchObject({ type: 'file', size: 5 });
    expect(await files.readdir('/mixed CASE')).toEqual(['ReadMe.TXT']);
    expect(await files.stat('/big directory/ENTRY WITH A LONG NAME NUMBER 399.TXT')).toMatchObject({
      size: 4,
    });
    expect(await files.stat('/deep/A/B/C/D/LEAF.TXT')).toMatchObject({ type: 'file' });
    expect(await files.stat('/nothing/here')).toBeUndefined();
    expect(await files.stat('/one-byte.txt/below')).toBeUndefined();
    // System files are hidden from listings but are not files a caller trips over.
    expect(await files.readdir('/')).not.toContain('$MFT');
    expect(await codeOf(files.readFile('/big1.bin'))).toBe('ok');
    expect(await codeOf(files.readFile('/big1.bin', { maxBytes: 1024 }))).toBe('E_FILE_TOO_LARGE');
    expect(await codeOf(files.readFile('/deep'))).toBe('E_NOT_A_FILE');
    expect(await codeOf(files.readdir('/one-byte.txt'))).toBe('E_NOT_A_DIRECTORY');
    const st = await files.stat('/one-byte.txt');
    const real = (
      await withNtfsMount(image, join(dir, 'mnt'), (m) => fsp.stat(join(m, 'one-byte.txt')), {
        readOnly: true,
      })
    ).value;
    expect(st?.mtime?.getTime()).toBe(Math.floor(real.mtimeMs));
  });

  it('an $ATTRIBUTE_LIST on a fragmented non-sparse file; junctions are "other", CompactOS files refused', async () => {
    const image = join(dir, 'attrlist.img');
    await makeNtfs(image, { size: 32 * MiB, clusterSize: 4096 });
    let holey: Buffer = Buffer.alloc(0);
    await withNtfsMount(image, join(dir, 'mnt2'), async (m) => {
      // Fill all but ~2.8 MiB, then with one-cluster files; every other one goes: the next file
      // can only be written into single-cluster holes.
      const st = await fsp.statfs(m);
      await fsp.writeFile(join(m, 'ballast'), Buffer.alloc(st.bavail * st.bsize - 700 * 4096));
      await fsp.mkdir(join(m, 'spacers'));
      let n = 0;
      for (; ; n++) {
        try {
          await fsp.writeFile(join(m, `spacers/${n}`), pseudoRandomBytes(4096, n + 1));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
          await fsp.rm(join(m, `spacers/${n}`), { force: true });
          break;
        }
      }
      for (let i = 0; i < n; i += 2) await fsp.unlink(join(m, `spacers/${i}`));
      holey = pseudoRandomBytes((Math.floor(n / 2) - 20) * 4096, 99);
      await fsp.writeFile(join(m, 'holey.bin'), holey);
      await fsp.unlink(join(m, 'ballast'));
      await fsp.mkdir(join(m, 'Junction'));
      await run('setfattr', [
        '-n',
        'system.ntfs_reparse_data',
        '-v',
        `0x${junctionReparse('C:\\Users').toString('hex')}`,
        join(m, 'Junction'),
      ]);
      await fsp.writeFile(join(m, 'compact.dll'), 'not really compressed');
      await run('setfattr', [
        '-n',
        'system.ntfs_reparse_data',
        '-v',
        `0x${wofReparse().toString('hex')}`,
        join(m, 'compact.dll'),
      ]);
    });
    const info = await ntfsinfo(image, '/holey.bin');
    expect(info).toContain('$ATTRIBUTE_LIST');
    expect(info).not.toMatch(/SPARSE/);
    expect(Number(/Total runs: (\d+)/.exec(info)?.[1])).toBeGreaterThan(100);
    const skip = (rel: string) => rel === '/Junction' || rel === '/compact.dll';
    const oracle = (
      await withNtfsMount(image, join(dir, 'mnt2'), (m) => walkRealTree(m, skip), { readOnly: true })
    ).value;
    const files = await open(image);
    expect(await walkVolume(files, skip)).toEqual(oracle);
    expect(sha256(await files.readFile('/holey.bin'))).toBe(sha256(holey));
    expect(await files.stat('/Junction')).toMatchObject({ type: 'other' });
    expect(await files.stat('/Junction/Public')).toBeUndefined();
    expect(await codeOf(files.readdir('/Junction'))).toBe('E_NOT_A_DIRECTORY');
    expect(await files.stat('/compact.dll')).toMatchObject({ type: 'file', size: 21 });
    expect(await codeOf(files.readFile('/compact.dll'))).toBe('E_FS_UNSUPPORTED_FILE');
  });

  it('64 KiB clusters: index blocks smaller than a cluster (VCNs in 512-byte units)', async () => {
    const image = join(dir, 'big-clusters.img');
    await makeNtfs(image, { size: 48 * MiB, clusterSize: 65536 });
    const expected = new Map<string, string>();
    await withNtfsMount(image, join(dir, 'mnt3'), async (m) => {
      await bigDirectory(m, expected);
      const data = pseudoRandomBytes(300_000, 4);
      await fsp.writeFile(join(m, 'data.bin'), data);
      expected.set('data.bin', sha256(data));
    });
    expect(await ntfsinfo(image, '/Big Directory')).toContain('$INDEX_ALLOCATION');
    const oracle = (await withNtfsMount(image, join(dir, 'mnt3'), (m) => walkRealTree(m), { readOnly: true }))
      .value;
    const ours = await walkVolume(await open(image));
    expect(ours).toEqual(oracle);
    for (const [rel, sum] of expected) expect(ours.get(`/${rel}`)?.sha256).toBe(sum);
  });
});
