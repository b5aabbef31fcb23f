import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoopLab, partitionedImage } from '../fixtures/devices.ts';
import { makeTempDir } from '../fixtures/lab.ts';

const CLI = join(import.meta.dirname, '../../rescue/cli/main.ts');

let dir: string;
const lab = new LoopLab();
beforeAll(async () => {
  dir = await makeTempDir('rescue-watch-');
});
afterAll(async () => {
  await lab.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Resolves once `pattern` has appeared in what `read()` returns, or rejects after `ms`. */
async function waitFor(read: () => string, pattern: RegExp, ms = 20_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = pattern.exec(read());
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; got:\n${read()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('rescue list --watch', () => {
  it('reports a disk and its partitions as they are plugged in and out, and stops on SIGINT', async () => {
    const img = await partitionedImage(join(dir, 'stick.img'), 64, [20, 20]);
    const child = spawn(process.execPath, [CLI, 'list', '--watch', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor(() => err, /Watching for disks/);
      const dev = await lab.attach(img, 2);
      const name = dev.replace('/dev/', '');
      await waitFor(() => out, new RegExp(`"action":"add","name":"${name}p2"`));
      // The listing that follows an event on the whole disk shows its two partitions.
      await waitFor(() => out, new RegExp(`"path":"${dev}".*"partitions":\\[\\{"number":1.*\\{"number":2`));
      await lab.detach(dev);
      await waitFor(() => out, new RegExp(`"action":"remove","name":"${name}p1"`));
      for (const line of out.trim().split('\n')) JSON.parse(line); // every line is JSON
    } finally {
      child.kill('SIGINT');
    }
    expect(await exited).toBe(0);
  });

  it('refuses disk arguments with --watch', async () => {
    const child = spawn(process.execPath, [CLI, 'list', '--watch', '/dev/null'], { stdio: 'ignore' });
    expect(await new Promise((resolve) => child.on('exit', resolve))).toBe(2);
  });
});
