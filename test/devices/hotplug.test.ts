import { existsSync, promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BlockEvent,
  type BlockSnapshotEntry,
  diffBlockSnapshots,
  type WatchOptions,
  type WatchResult,
  watchBlockDevices,
} from '../../rescue/engine/devices/hotplug.ts';
import { LoopLab, partitionedImage } from '../fixtures/devices.ts';
import { makeTempDir } from '../fixtures/lab.ts';

/*
 * Attach and detach a loop device with two partitions while a watcher runs, in each mode. Other
 * people's loop devices produce events too: only events naming our device count.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, pred: () => boolean, timeoutMs = 8000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

interface Session {
  result: WatchResult;
  events: BlockEvent[];
  errors: unknown[];
  stop: () => void;
}

async function watch(opts: Omit<WatchOptions, 'signal'>): Promise<Session> {
  const ac = new AbortController();
  const events: BlockEvent[] = [];
  const errors: unknown[] = [];
  const result = await watchBlockDevices((e) => events.push(e), {
    ...opts,
    signal: ac.signal,
    onError: (e) => errors.push(e),
  });
  return { result, events, errors, stop: () => ac.abort() };
}

const has = (events: BlockEvent[], action: string, name: string) =>
  events.some((e) => e.action === action && e.name === name);

/** Attach → expect adds for both partitions; detach → expect removes, after the detach. */
async function exercise(
  lab: LoopLab,
  image: string,
  s: Session,
): Promise<{ name: string; ours: BlockEvent[] }> {
  const dev = await lab.attach(image, 2);
  const name = basename(dev);
  const mine = (e: BlockEvent) => e.name === name || e.name.startsWith(`${name}p`);
  await waitFor(
    `add events for ${name}p1/p2 (${s.result.mode})`,
    () => has(s.events, 'add', `${name}p1`) && has(s.events, 'add', `${name}p2`),
  );
  const beforeDetach = s.events.length;
  await lab.detach(dev);
  await waitFor(`remove events for ${name}p1/p2 (${s.result.mode})`, () => {
    const after = s.events.slice(beforeDetach);
    return has(after, 'remove', `${name}p1`) && has(after, 'remove', `${name}p2`);
  });
  return { name, ours: s.events.filter(mine) };
}

describe('watchBlockDevices', () => {
  const lab = new LoopLab();
  let dir = '';
  let image = '';

  beforeAll(async () => {
    dir = await makeTempDir('rescue-hotplug-');
    image = await partitionedImage(join(dir, 'disk.img'), 48, [16, 16]);
  });

  afterAll(async () => {
    try {
      await lab.cleanup();
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('udev mode: libudev through ffi-rs reports partitions appearing and disappearing', async () => {
    const s = await watch({});
    try {
      expect(s.result.mode).toBe('udev');
      // Without systemd-udevd (this machine) only the kernel source delivers anything.
      expect(s.result.source).toBe(existsSync('/run/udev/control') ? 'udev' : 'kernel');
      expect(s.result.reason).toBeTruthy();
      const { name, ours } = await exercise(lab, image, s);
      for (const e of ours) {
        expect(e.devnode).toBe(`/dev/${e.name}`);
        expect(e.devtype).toBe(e.name === name ? 'disk' : 'partition');
      }
      // The loop disk itself changes (attached, detached) rather than being added.
      expect(has(ours, 'change', name)).toBe(true);
      expect(s.errors).toEqual([]);
    } finally {
      s.stop();
    }
  });

  it.skipIf(existsSync('/run/udev/control'))(
    'the udev source stays silent without systemd-udevd, which is why auto listens to the kernel',
    async () => {
      const silent = await watch({ source: 'udev' });
      const kernel = await watch({ source: 'kernel' });
      try {
        expect(silent.result).toMatchObject({ mode: 'udev', source: 'udev' });
        const { name } = await exercise(lab, image, kernel);
        await sleep(600); // more than two drains of the silent monitor
        expect(silent.events.filter((e) => e.name.startsWith(name))).toEqual([]);
      } finally {
        silent.stop();
        kernel.stop();
      }
    },
  );

  it('poll mode (forced): diffing /sys/class/block finds the same partitions', async () => {
    const s = await watch({ mode: 'poll', pollIntervalMs: 200 });
    try {
      expect(s.result).toEqual({ mode: 'poll', reason: 'polling was requested' });
      const { name, ours } = await exercise(lab, image, s);
      for (const e of ours) {
        expect(e.devnode).toBe(`/dev/${e.name}`);
        expect(e.devtype).toBe(e.name === name ? 'disk' : 'partition');
      }
      // The loop disk's size goes 0 → 48 MiB → 0: a change each time.
      expect(ours.filter((e) => e.name === name && e.action === 'change').length).toBeGreaterThanOrEqual(2);
      expect(s.errors).toEqual([]);
    } finally {
      s.stop();
    }
  });

  it('falls back to polling, saying why, when libudev cannot be loaded', async () => {
    const s = await watch({ libudevPath: '/nonexistent/libudev.so.1', pollIntervalMs: 200 });
    try {
      expect(s.result.mode).toBe('poll');
      expect(s.result.reason).toMatch(
        /^libudev could not be loaded from \/nonexistent\/libudev\.so\.1 \(.*No such file/,
      );
      expect(s.result.reason).toMatch(/polling \/sys\/class\/block every 200 ms instead$/);
      await exercise(lab, image, s);
    } finally {
      s.stop();
    }
    await expect(
      watchBlockDevices(() => {}, {
        signal: AbortSignal.abort(),
        mode: 'udev',
        libudevPath: '/nonexistent/libudev.so.1',
      }),
    ).rejects.toMatchObject({ code: 'E_HOTPLUG_UNAVAILABLE' });
  });

  it('stops delivering after abort', async () => {
    const s = await watch({ mode: 'poll', pollIntervalMs: 100 });
    const u = await watch({});
    s.stop();
    u.stop();
    const dev = await lab.attach(image, 2);
    const name = basename(dev);
    await sleep(500);
    await lab.detach(dev);
    await sleep(300);
    expect(s.events.filter((e) => e.name.startsWith(name))).toEqual([]);
    expect(u.events.filter((e) => e.name.startsWith(name))).toEqual([]);
  });
});

describe('diffBlockSnapshots', () => {
  const e = (
    dev: string,
    size: number,
    devtype: 'disk' | 'partition',
    readOnly = false,
  ): BlockSnapshotEntry => ({
    dev,
    size,
    readOnly,
    devtype,
  });

  it('orders removals partitions-first and additions disks-first, then changes', () => {
    const prev = new Map([
      ['sda', e('8:0', 100, 'disk')],
      ['sda1', e('8:1', 50, 'partition')],
      ['sdb', e('8:16', 10, 'disk')],
      ['sdb1', e('8:17', 5, 'partition')],
      ['loop0', e('7:0', 0, 'disk')],
    ]);
    const next = new Map([
      ['sda', e('8:0', 100, 'disk', true)],
      ['sda1', e('8:1', 50, 'partition')],
      ['loop0', e('7:0', 2048, 'disk')],
      ['loop0p1', e('259:0', 1024, 'partition')],
      ['sdc', e('8:32', 10, 'disk')],
    ]);
    expect(
      diffBlockSnapshots(prev, next).map((x) => `${x.action} ${x.name} ${x.devtype} ${x.devnode}`),
    ).toEqual([
      'remove sdb1 partition /dev/sdb1',
      'remove sdb disk /dev/sdb',
      'add sdc disk /dev/sdc',
      'add loop0p1 partition /dev/loop0p1',
      'change loop0 disk /dev/loop0',
      'change sda disk /dev/sda',
    ]);
    expect(diffBlockSnapshots(next, next)).toEqual([]);
  });
});
