/**
 * Backups kept on the PXE server, restored over HTTP: the server's /pxe/images/ routes (the same
 * code `rescue pxe serve --images` mounts) on loopback, a real backup chain (full + incremental, the
 * full one split into two volumes) made by the CLI, and the engine reading it by URL — listing,
 * `rescue info`, and `rescue restore` of the incremental point. The oracle: the same restore from the
 * local folder gives a byte-identical disk, and its files are those of the moment of the backup
 * (read through the kernel's ext4 driver). curl checks ranges and that nothing outside the shared
 * folder is served.
 */
import { promises as fsp } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageRoutes } from '../../pxe/http.ts';
import { extfs, GPT_TYPE } from '../../rescue/cli/lab.ts';
import { listImages } from '../../rescue/server/images.ts';
import { withPartitionMounted, writeRandom } from '../fixtures/chain.ts';
import { imagePath, rescue } from '../fixtures/cli.ts';
import { inspectDiskFiles, makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, run, sha256 } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
const PLAN = {
  file: 'office.img',
  description: 'GPT: ext4',
  size: 200 * MiB,
  sfdisk: ['label: gpt', `start=1MiB, type=${GPT_TYPE.linux}, name="root"`].join('\n'),
  volumes: [extfs('ext4', 'root', 8 * MiB)],
};

let dir: string;
let images: string;
let base: string;
let close: () => Promise<void>;
let full: string;
let incremental: string;
let treeAtIncremental: Awaited<ReturnType<typeof inspectDiskFiles>>;
let ranges = 0;

async function cli(args: string[]) {
  const r = await rescue(args);
  expect(r.code, r.stderr).toBe(0);
  return r;
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-http-images-');
  images = join(dir, 'shared');
  await fsp.mkdir(images);
  const disk = await makeDisk(PLAN, dir);
  // Incompressible data, so that the full image needs two 50 MiB volumes.
  await withPartitionMounted(disk, 1, 'ext4', (m) => writeRandom(join(m, 'big.bin'), 70 * MiB, 1));
  full = imagePath(
    await cli(['backup', 'disk', disk, '--to', images, '--name', 'office', '--split', '50M', '--yes']),
  );
  await withPartitionMounted(disk, 1, 'ext4', (m) => writeRandom(join(m, 'later/new.bin'), 3 * MiB, 2));
  treeAtIncremental = await inspectDiskFiles(disk);
  incremental = imagePath(await cli(['backup', 'incremental', full, '--yes']));
  // Something outside the shared folder that a symbolic link inside points at.
  await fsp.writeFile(join(dir, 'secret.txt'), 'not for the network\n');
  await fsp.symlink(join(dir, 'secret.txt'), join(images, 'office', 'leak.txt'));

  const app = new Hono();
  // Counts the byte ranges asked for: the restore must really read over HTTP.
  app.use('*', async (c, next) => {
    if (c.req.header('range')) ranges++;
    await next();
  });
  imageRoutes(app, [images]);
  const server = createAdaptorServer({ fetch: app.fetch });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/pxe/images/`;
  close = () => new Promise((r) => server.close(() => r()));
}, 300_000);

afterAll(async () => {
  await close?.();
  await fsp.rm(dir, { recursive: true, force: true });
});

const url = (local: string) => `${base}shared/${local.slice(images.length + 1)}`;

describe('backups shared over HTTP by the PXE server', () => {
  it('lists the folders and files, answers ranges, and serves nothing outside the folder', async () => {
    const top = JSON.parse((await run('curl', ['-sf', base])).stdout);
    expect(top.entries).toEqual([{ name: 'shared', type: 'dir' }]);
    const listing = JSON.parse((await run('curl', ['-sf', `${base}shared/office/`])).stdout);
    const names = listing.entries.map((e: { name: string }) => e.name).sort();
    expect(names).toEqual(expect.arrayContaining(['office.rimg', 'office.rimg.2']));
    const local = await fsp.readFile(full);
    const part = await run('curl', ['-sf', '-r', '1000-1999', url(full)], {});
    expect(sha256(Buffer.from(part.stdout, 'latin1'))).toBe(sha256(local.subarray(1000, 2000)));
    // Names with spaces and percent signs, as sent encoded.
    await fsp.writeFile(join(images, 'notes 100%.txt'), 'odd name\n');
    expect((await run('curl', ['-sf', `${base}shared/notes%20100%25.txt`])).stdout).toBe('odd name\n');
    for (const bad of [
      'office/leak.txt',
      'office%2F..%2F..%2Fsecret.txt',
      '%2e%2e/%2e%2e/secret.txt',
      '..%2Fsecret.txt',
      'office/..%2F..%2Fsecret.txt',
      'nothing.rimg',
    ]) {
      const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}shared/${bad}`]);
      expect(r.stdout, bad).toBe('404');
    }
    expect(
      (await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}other/x`])).stdout,
    ).toBe('404');
  });

  it('finds the same chain by URL as in the folder', async () => {
    const remote = await listImages([base]);
    const localList = await listImages([images]);
    expect(remote.unreadable).toEqual([]);
    expect(remote.chains).toHaveLength(1);
    const strip = (p: string) => p.replace(images, '').replace(`${base}shared`, '');
    expect(remote.chains[0].points.map((p) => ({ ...p, path: strip(p.path) }))).toEqual(
      localList.chains[0].points.map((p) => ({ ...p, path: strip(p.path) })),
    );
    expect(remote.chains[0].folder).toBe(`${base}shared/office/`);
    const info = JSON.parse((await cli(['info', url(incremental), '--json'])).stdout);
    expect(info.chain).toHaveLength(2);
    expect(info.point.type).toBe('incremental');
    expect(info.files).toEqual([url(incremental)]);
  });

  it('restores the incremental point from the URL exactly as from the folder', async () => {
    const fromUrl = join(dir, 'from-url.img');
    const fromFolder = join(dir, 'from-folder.img');
    const before = ranges;
    await cli(['restore', url(incremental), '--to', fromUrl, '--yes']);
    // 70 MiB of data in 4 MiB blocks, from two points' files.
    expect(ranges - before).toBeGreaterThan(17);
    await cli(['restore', incremental, '--to', fromFolder, '--yes']);
    const a = await fsp.readFile(fromUrl);
    const b = await fsp.readFile(fromFolder);
    expect(a.length).toBe(b.length);
    expect(sha256(a)).toBe(sha256(b));
    expect(await inspectDiskFiles(fromUrl)).toEqual(treeAtIncremental);
  });

  it('refuses to restore onto an existing disk an image this machine serves itself (it might live there)', async () => {
    const target = join(dir, 'existing.img');
    await fsp.writeFile(target, Buffer.alloc(0));
    await fsp.truncate(target, 200 * MiB);
    const r = await rescue(['restore', url(full), '--to', target, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('is served by this machine');
    expect(r.stderr).toContain('[E_TARGET_HOLDS_IMAGE]');
  });
});
