/**
 * Dirty and hibernated volumes: what identify() reports, checked against what libntfs-3g does
 * with the same image (ntfsinfo's volume flags, ntfs-3g refusing a read-write mount).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { ntfs, ntfsAllocationMap } from '../../rescue/engine/filesystems/ntfs.ts';
import type { FsIdentity } from '../../rescue/engine/filesystems/types.ts';
import { makeTempDir, pseudoRandomBytes, run } from '../fixtures/lab.ts';
import {
  forgeLogFile,
  makeNtfs,
  ntfsinfoVolumeFlags,
  setVolumeFlags,
  withNtfsMount,
} from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;

let dir: string;
let base4k: string;
let base64k: string;
let n = 0;

async function identify(image: string): Promise<FsIdentity> {
  const src = await FileSource.open(image);
  try {
    return await ntfs.identify(src);
  } finally {
    await src.close();
  }
}

async function copyOf(image: string): Promise<string> {
  const p = join(dir, `v${++n}.img`);
  await run('cp', ['--sparse=always', image, p]);
  return p;
}

/** Writes files through ntfs-3g; `files` maps a path to its content. */
async function write(image: string, files: Record<string, Buffer>): Promise<void> {
  await withNtfsMount(image, join(dir, `mnt${++n}`), async (mnt) => {
    for (const [p, data] of Object.entries(files)) {
      await fsp.mkdir(join(mnt, p, '..'), { recursive: true });
      await fsp.writeFile(join(mnt, p), data);
    }
  });
}

/** Mounts read-write as a user would; reports whether ntfs-3g kept it writable and what it said. */
async function rwMount(
  image: string,
  options: string[] = [],
): Promise<{ writable: boolean; stderr: string }> {
  const probe = async (mnt: string): Promise<boolean> => {
    try {
      await fsp.writeFile(join(mnt, 'probe.txt'), 'x');
      return true;
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('EROFS');
      return false;
    }
  };
  const { value, stderr } = await withNtfsMount(image, join(dir, `mnt${++n}`), probe, { options });
  return { writable: value, stderr };
}

function hiberfile(signature: string): Buffer {
  return Buffer.concat([Buffer.from(signature, 'latin1'), pseudoRandomBytes(16 * 1024, 7)]);
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-ntfs-state-');
  base4k = (await makeNtfs(join(dir, 'base4k.img'), { size: 48 * MiB, clusterSize: 4096, label: 'State' }))
    .image;
  base64k = (
    await makeNtfs(join(dir, 'base64k.img'), { size: 96 * MiB, clusterSize: 65536, label: 'State64' })
  ).image;
});

afterAll(async () => {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

describe('NTFS dirty flag', () => {
  it('a fresh volume is clean and not hibernated, with no warnings', async () => {
    const id = await identify(base4k);
    expect(id.state).toMatchObject({ dirty: false, hibernated: false, volumeFlags: 0 });
    expect(id.warnings).toEqual([]);
    expect(await ntfsinfoVolumeFlags(base4k)).toBe(0);
  });

  it('ntfsfix marks the volume dirty (to force chkdsk); identify reports it, ntfsfix -d clears it', async () => {
    const img = await copyOf(base4k);
    await run('ntfsfix', [img]);
    expect(await ntfsinfoVolumeFlags(img)).toBe(1);
    // Without --force, libntfs-3g tools refuse a volume scheduled for a check.
    const plain = await run('ntfsinfo', ['-m', img], { allowFail: true });
    expect(plain.code).not.toBe(0);
    let id = await identify(img);
    expect(id.state).toMatchObject({ dirty: true, hibernated: false, volumeFlags: 1 });
    expect(id.warnings?.join(' ')).toMatch(/dirty.*chkdsk/s);
    await run('ntfsfix', ['-d', img]);
    id = await identify(img);
    expect(id.state?.dirty).toBe(false);
    expect(await ntfsinfoVolumeFlags(img)).toBe(0);
  });

  it('a dirty volume is mapped sector by sector; ntfsAllocationMap still reads its bitmap', async () => {
    const img = await copyOf(base4k);
    await setVolumeFlags(img, 0x0001);
    const src = await FileSource.open(img);
    try {
      const map = await ntfs.usedMap!(src);
      expect(map.method).toBe('sector-by-sector');
      expect(map.extents).toEqual([{ start: 0, length: 48 * MiB }]);
      expect(map.reason).toMatch(/dirty/);
      const forced = await ntfsAllocationMap(src);
      expect(forced.method).toBe('allocation');
      expect(forced.usedBytes).toBeLessThan(map.usedBytes / 4);
    } finally {
      await src.close();
    }
  });

  it('flags patched through our own record codec (fixups redone) read back in libntfs-3g', async () => {
    const img = await copyOf(base4k);
    await setVolumeFlags(img, 0x0001);
    expect(await ntfsinfoVolumeFlags(img)).toBe(1);
    expect((await identify(img)).state?.dirty).toBe(true);
    const fix = await run('ntfsfix', ['-n', img], { allowFail: true });
    expect(fix.stdout + fix.stderr).not.toMatch(/mismatch|corrupt/i);
    await setVolumeFlags(img, 0);
    expect(await ntfsinfoVolumeFlags(img)).toBe(0);
    expect((await identify(img)).state?.dirty).toBe(false);
  });
});

describe('NTFS hibernation (hiberfil.sys in the root directory)', () => {
  it.each(['HIBR', 'hibr'])('"%s" → hibernated, and ntfs-3g refuses to mount read-write', async (sig) => {
    const img = await copyOf(base4k);
    await write(img, { 'hiberfil.sys': hiberfile(sig), 'Windows/notepad.exe': pseudoRandomBytes(5000, 1) });
    const id = await identify(img);
    expect(id.state).toMatchObject({ hibernated: true, dirty: false, hiberfileSignature: sig });
    const warning = id.warnings?.find((w) => w.includes('hibernated')) ?? '';
    expect(warning).toMatch(/Fast Startup/);
    expect(warning).toMatch(/ntfs-3g refuses to mount it read-write/);
    const m = await rwMount(img);
    expect(m.writable).toBe(false);
    expect(m.stderr).toMatch(/Windows is hibernated/);
  });

  it('"wake" (resumed) → not hibernated, and ntfs-3g mounts it read-write', async () => {
    const img = await copyOf(base4k);
    await write(img, { 'hiberfil.sys': hiberfile('wake') });
    const id = await identify(img);
    expect(id.state).toMatchObject({ hibernated: false, hiberfileSignature: 'wake' });
    expect(id.warnings).toEqual([]);
    const m = await rwMount(img);
    expect(m.writable).toBe(true);
    expect(m.stderr).not.toMatch(/hibernated/);
  });

  it('a hiberfil.sys outside the root directory does not count', async () => {
    const img = await copyOf(base4k);
    await write(img, { 'backup/hiberfil.sys': hiberfile('HIBR') });
    const id = await identify(img);
    expect(id.state?.hibernated).toBe(false);
    expect((await rwMount(img)).writable).toBe(true);
  });

  it('dirty and hibernated together give both warnings', async () => {
    const img = await copyOf(base4k);
    await write(img, { 'hiberfil.sys': hiberfile('HIBR') });
    await setVolumeFlags(img, 0x0001);
    const id = await identify(img);
    expect(id.state).toMatchObject({ hibernated: true, dirty: true });
    expect(id.warnings).toHaveLength(2);
  });

  it.each([
    ['4 KiB', () => base4k],
    ['64 KiB (index blocks smaller than a cluster)', () => base64k],
  ])('found in a root directory big enough for index blocks (%s clusters)', async (_name, base) => {
    const img = await copyOf(base());
    const files: Record<string, Buffer> = { 'hiberfil.sys': hiberfile('HIBR') };
    // Names on both sides of "hiberfil.sys" so it ends up in a B+tree leaf block, not the root.
    for (let i = 0; i < 300; i++)
      files[`${i % 2 ? 'a' : 'z'}-file-with-a-long-name-${i}.txt`] = Buffer.from(`${i}`);
    await write(img, files);
    const info = await run('ntfsinfo', ['-i', '5', img]);
    expect(info.stdout).toContain('$INDEX_ALLOCATION');
    const id = await identify(img);
    expect(id.state).toMatchObject({ hibernated: true, hiberfileSignature: 'HIBR' });
    expect((await rwMount(img)).stderr).toMatch(/Windows is hibernated/);
  });
});

describe('NTFS journal ($LogFile restart pages)', () => {
  it('mkntfs leaves an empty journal: clean', async () => {
    const id = await identify(base4k);
    expect(id.state?.logfileClean).toBe(true);
    expect(id.state?.logfileVersion).toBeUndefined();
  });

  it('open log client without the clean flag → unclean, as ntfs-3g judges it', async () => {
    const img = await copyOf(base4k);
    await forgeLogFile(img, { clean: false });
    const id = await identify(img);
    expect(id.state).toMatchObject({
      logfileClean: false,
      logfileVersion: '1.1',
      dirty: false,
      hibernated: false,
    });
    expect(id.warnings?.join(' ')).toMatch(/did not close this NTFS volume cleanly/);
    // With norecover ntfs-3g refuses read-write; by default it empties the journal and goes on.
    const strict = await rwMount(await copyOf(img), ['norecover']);
    expect(strict.writable).toBe(false);
    expect(strict.stderr).toMatch(/unclean file system/);
    const lax = await rwMount(img);
    expect(lax.stderr).toMatch(/unclean file system[\s\S]*Fixing/);
    expect((await identify(img)).state?.logfileClean).toBe(true);
  });

  it('the same with the clean flag → clean, and ntfs-3g mounts read-write', async () => {
    const img = await copyOf(base4k);
    await forgeLogFile(img, { clean: true });
    const id = await identify(img);
    expect(id.state).toMatchObject({ logfileClean: true, logfileVersion: '1.1' });
    expect(id.warnings).toEqual([]);
    const m = await rwMount(img);
    expect(m.writable).toBe(true);
  });

  it('a torn first restart page: the second copy decides (unclean), and ntfs-3g refuses too', async () => {
    const img = await copyOf(base4k);
    await forgeLogFile(img, { clean: false, tearFirst: true });
    expect((await identify(img)).state?.logfileClean).toBe(false);
    expect((await rwMount(img, ['norecover'])).writable).toBe(false);
  });

  it('hibernated with an open journal: one warning, the hibernation one', async () => {
    const img = await copyOf(base4k);
    await write(img, { 'hiberfil.sys': hiberfile('HIBR') });
    await forgeLogFile(img, { clean: false });
    const id = await identify(img);
    expect(id.state).toMatchObject({ hibernated: true, logfileClean: false });
    expect(id.warnings).toHaveLength(1);
    expect(id.warnings?.[0]).toMatch(/hibernated/);
  });
});
