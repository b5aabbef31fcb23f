/**
 * The single binary (build/sea.ts): built from this checkout, it runs without node_modules or the
 * sources — the CLI (version with the git revision, list, a backup that `check` verifies) and the
 * server with the UI it carries inside.
 */
import { execFileSync, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extfs, GPT_TYPE } from '../../rescue/cli/lab.ts';
import { makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, run } from '../fixtures/lab.ts';

const MiB = 1024 * 1024;
let dir: string;
let bin: string;
let disk: string;

beforeAll(async () => {
  dir = await makeTempDir('rescue-sea-');
  bin = join(dir, 'rescue');
  await run(process.execPath, [new URL('../../build/sea.ts', import.meta.url).pathname, '--out', bin]);
  disk = await makeDisk(
    {
      file: 'small.img',
      description: 'GPT: ext4',
      size: 64 * MiB,
      sfdisk: ['label: gpt', `start=1MiB, type=${GPT_TYPE.linux}, name="root"`].join('\n'),
      volumes: [extfs('ext4', 'root', 4 * MiB)],
    },
    dir,
  );
}, 180_000);

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('the rescue binary', () => {
  it('is one file that prints its version and git revision', async () => {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD']).toString().trim();
    // Run from an empty folder: nothing of the checkout is at hand.
    const empty = join(dir, 'empty');
    await fsp.mkdir(empty);
    const out = execFileSync(bin, ['--version'], { cwd: empty }).toString().trim();
    expect(out).toBe(`rescue 0.1.0 (${rev})`);
    expect((await fsp.stat(bin)).size).toBeGreaterThan(50 * MiB);
  });

  it('lists, backs up and checks like the CLI from the sources', async () => {
    const list = JSON.parse(execFileSync(bin, ['list', '--json', disk], { cwd: dir }).toString());
    expect(list.disks[0].partitions[0].fs).toMatchObject({ type: 'ext4', label: 'root' });
    const images = join(dir, 'images');
    await fsp.mkdir(images);
    execFileSync(bin, ['backup', 'disk', disk, '--to', images, '--name', 'small', '--yes'], {
      cwd: dir,
      stdio: 'pipe',
    });
    const check = await run(bin, ['check', join(images, 'small', 'small.rimg')], { allowFail: true });
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });

  it('loads the native add-on from rescue-lib/ beside it (libudev hot-plug), and falls back without it', async () => {
    const watch = async () =>
      (await run('timeout', ['3', bin, 'list', '--watch', '--json'], { allowFail: true })).stderr;
    expect(await watch()).toMatch(/libudev, kernel events/);
    await fsp.rename(join(dir, 'rescue-lib'), join(dir, 'rescue-lib.away'));
    try {
      expect(await watch()).toMatch(/polling sysfs \(the ffi-rs native module could not be loaded/);
    } finally {
      await fsp.rename(join(dir, 'rescue-lib.away'), join(dir, 'rescue-lib'));
    }
  });

  it('serves the API and the UI it carries', async () => {
    const child = spawn(bin, ['serve', '--port', '0'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let text = '';
        const t = setTimeout(() => reject(new Error(`no start: ${text}`)), 20_000);
        child.stdout!.on('data', (b: Buffer) => {
          text += b.toString();
          const m = /listening on (http:\/\/\S+)/.exec(text);
          if (m) {
            clearTimeout(t);
            resolve(m[1]);
          }
        });
      });
      const health = (await (await fetch(`${url}api/health`)).json()) as { ok: boolean };
      expect(health.ok).toBe(true);
      const html = await (await fetch(url)).text();
      expect(html).toContain('/ui/app.js');
      const js = await fetch(`${url}ui/app.js`);
      expect(js.headers.get('content-type')).toContain('javascript');
      expect((await js.text()).length).toBeGreaterThan(20_000);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
