/**
 * Crash safety and a full destination: kill -9 in the middle of a backup (and between the volume
 * renames) never leaves a file that opens as a complete image; ENOSPC removes the partial files.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkImage, ImageReader, ImageWriter } from '../../rescue/engine/image/index.ts';
import {
  appendRegions,
  manifestFor,
  regionData,
  rejectsWith,
  type TestRegion,
  writerOptions,
} from '../fixtures/image.ts';
import { makeTempDir, run } from '../fixtures/lab.ts';

const CHILD = join(import.meta.dirname, '../fixtures/image-writer-child.ts');
let root: string;

beforeAll(async () => {
  root = await makeTempDir('rescue-image-crash-');
});
afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

/** Runs the child writer until it prints `line`, then SIGKILLs it. */
async function killWhen(dir: string, name: string, mode: string, line: string): Promise<void> {
  const child = spawn(process.execPath, [CHILD, dir, name, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code, sig) => resolve(sig ? -1 : code)),
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes(line)) resolve();
    });
    child.on('exit', () => reject(new Error(`child exited before "${line}": ${out}\n${err}`)));
  });
  child.kill('SIGKILL');
  expect(await exited).toBe(-1);
}

describe('crash safety', () => {
  it('kill -9 while chunks are appended leaves only *.partial files, which open as E_IMAGE_INCOMPLETE', async () => {
    const dir = join(root, 'append');
    await fsp.mkdir(dir);
    await killWhen(dir, 'img', 'append', 'appending');
    const files = (await fsp.readdir(dir)).sort();
    expect(files.length).toBeGreaterThanOrEqual(2); // split: several volumes were started
    expect(files.every((f) => f.endsWith('.partial'))).toBe(true);
    const sizes = await Promise.all(files.map(async (f) => (await fsp.stat(join(dir, f))).size));
    expect(sizes[0]).toBeGreaterThan(4096); // data had reached the disk
    for (const f of files) {
      const e = await rejectsWith(ImageReader.open(join(dir, f), { password: 'pw' }), 'E_IMAGE_INCOMPLETE');
      expect(e.message).toMatch(/interrupted backup/);
    }
    await rejectsWith(ImageReader.open(join(dir, 'img.rimg'), { password: 'pw' }), 'E_IMAGE_INCOMPLETE');
    const report = await checkImage(join(dir, 'img.rimg.partial'), { password: 'pw' });
    expect(report.ok).toBe(false);
    expect(report.points[0].problems[0].code).toBe('E_IMAGE_INCOMPLETE');
    // Renamed by hand, the first volume still says it was never finished.
    await fsp.rename(join(dir, 'img.rimg.partial'), join(dir, 'img.rimg'));
    const e = await rejectsWith(
      ImageReader.open(join(dir, 'img.rimg'), { password: 'pw' }),
      'E_IMAGE_INCOMPLETE',
    );
    expect(e.message).toMatch(/never finalised/);
    // A new backup of the same name replaces the stale partial files.
    await fsp.rm(join(dir, 'img.rimg'));
    const regions: TestRegion[] = [{ id: 0, data: regionData(100_000, 3) }];
    const w = await ImageWriter.create(writerOptions({ dir, name: 'img', regions }));
    await appendRegions(w, regions);
    await w.finish(manifestFor(regions));
    await (await ImageReader.open(join(dir, 'img.rimg'))).close();
  });

  it('kill -9 between the volume renames: volume 1 is renamed last, so nothing opens as complete', async () => {
    const dir = join(root, 'rename');
    await fsp.mkdir(dir);
    await killWhen(dir, 'img', 'rename', 'renaming');
    const files = (await fsp.readdir(dir)).sort();
    expect(files).toContain('img.rimg.partial');
    expect(files).toContain('img.rimg.2');
    expect(files).not.toContain('img.rimg');
    await rejectsWith(ImageReader.open(join(dir, 'img.rimg.2'), { password: 'pw' }), 'E_IMAGE_INCOMPLETE');
    await rejectsWith(ImageReader.open(join(dir, 'img.rimg'), { password: 'pw' }), 'E_IMAGE_INCOMPLETE');
  });
});

describe('destination full', () => {
  it('ENOSPC → E_DESTINATION_FULL naming the file and bytes written; the partial files are removed', async () => {
    if (process.getuid?.() !== 0) return expect.fail('needs root to mount a tmpfs');
    const mnt = join(root, 'small');
    await fsp.mkdir(mnt);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
    try {
      for (const split of [undefined, 3_000_000]) {
        const regions: TestRegion[] = [{ id: 0, data: regionData(16 * 1024 * 1024, 5, 'random') }];
        const w = await ImageWriter.create(
          writerOptions({
            dir: mnt,
            name: 'big',
            regions,
            splitBytes: split,
            hooks: { minSplitBytes: 8192 },
          }),
        );
        const e = await rejectsWith(
          (async () => {
            await appendRegions(w, regions);
            await w.finish(manifestFor(regions));
          })(),
          'E_DESTINATION_FULL',
        );
        expect(e.message).toContain(join(mnt, 'big.rimg'));
        expect(e.message).toMatch(/after \d+ bytes/);
        expect(e.details?.written).toBeGreaterThan(5 * 1024 * 1024);
        expect(await fsp.readdir(mnt)).toEqual([]);
        // The writer is dead: further use repeats the error, abort is harmless.
        await rejectsWith(
          w.append({
            regionId: 9,
            windowStart: 0,
            rawLength: 1,
            flags: 1,
            sha256: Buffer.alloc(32),
            payload: Buffer.alloc(0),
          }),
          'E_DESTINATION_FULL',
        );
        await w.abort();
      }
    } finally {
      await run('umount', [mnt]);
    }
  });
});
