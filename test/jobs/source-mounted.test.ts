/** A backup refuses a source whose filesystem is mounted read-write: the copy could be torn. */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imagePath, rescue } from '../fixtures/cli.ts';
import { LoopLab } from '../fixtures/devices.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';

let dir: string;
const lab = new LoopLab();
beforeAll(async () => {
  dir = await makeTempDir('rescue-srcmount-');
});
afterAll(async () => {
  await lab.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('backup of a mounted source', () => {
  it('is refused while mounted read-write, allowed read-only or with --allow-mounted', async () => {
    const img = await sparseFile(join(dir, 'live.img'), 64 * 1024 * 1024);
    await run('mkfs.ext4', ['-q', '-F', img]);
    const dev = await lab.attach(img, 0);
    const mnt = join(dir, 'mnt');
    await lab.mount(dev, mnt);
    for (const source of [dev, img]) {
      const r = await rescue(['backup', 'disk', source, '--to', dir, '--name', 'refused', '--yes']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/\[E_SOURCE_MOUNTED\]/);
      expect(r.stderr).toContain(mnt);
    }
    await expect(fsp.access(join(dir, 'refused'))).rejects.toThrow();
    const forced = await rescue([
      'backup',
      'disk',
      dev,
      '--to',
      dir,
      '--name',
      'forced',
      '--allow-mounted',
      '--yes',
    ]);
    expect(forced.code, forced.stderr).toBe(0);
    await fsp.access(imagePath(forced));
    await lab.umount(mnt);
    await lab.mount(dev, mnt, ['-o', 'ro']);
    const ro = await rescue(['backup', 'disk', dev, '--to', dir, '--name', 'readonly', '--yes']);
    expect(ro.code, ro.stderr).toBe(0);
  });
});
