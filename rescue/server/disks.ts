/**
 * The disk list the UI shows, kept fresh cheaply: the machine's block devices (and the image files
 * given to `rescue serve --disk`) are inspected again only when something changed — a disk came or
 * went or changed size (sysfs), something was mounted or unmounted, swap changed, an image file was
 * written — or after a minute, not on every poll of every open screen.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { snapshotBlockDevices } from '../engine/devices/hotplug.ts';
import { type DiskReport, inventory } from '../engine/devices/inventory.ts';

const MAX_AGE_MS = 60_000;

/**
 * The rescue system's own root: the loop device its initrd mounts under /run/boot/ (docs/boot.md).
 * Nothing a person could back up or restore onto — not listed. (The boot medium itself stays listed,
 * shown in use.)
 */
function isRescueSystemImage(d: DiskReport): boolean {
  const mounts = d.mounts ?? [];
  return d.backingFile !== undefined && mounts.length > 0 && mounts.every((m) => m.startsWith('/run/boot/'));
}

export class DiskList {
  private readonly extra: string[];
  private cached: { key: string; at: number; disks: Promise<DiskReport[]> } | undefined;

  constructor(extra: string[] = []) {
    this.extra = extra;
  }

  private async key(): Promise<string> {
    const h = createHash('sha256');
    for (const [name, e] of await snapshotBlockDevices())
      h.update(`${name}:${e.dev}:${e.size}:${e.readOnly}\n`);
    h.update(await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
    h.update(await fsp.readFile('/proc/swaps', 'utf8').catch(() => ''));
    for (const p of this.extra) {
      const st = await fsp.stat(p).catch(() => undefined);
      h.update(`${p}:${st?.size}:${st?.mtimeMs}\n`);
    }
    return h.digest('hex');
  }

  async disks(): Promise<DiskReport[]> {
    const key = await this.key();
    const now = Date.now();
    if (!this.cached || this.cached.key !== key || now - this.cached.at > MAX_AGE_MS) {
      const disks = this.load();
      const forget = () => {
        if (this.cached?.disks === disks) this.cached = undefined;
      };
      // A list read while the machine changed (a disk detached mid-read) answers this call only:
      // it is kept only if the machine still looks as it did before the read.
      disks.then(async () => {
        if ((await this.key()) !== key) forget();
      }, forget);
      this.cached = { key, at: now, disks };
    }
    return this.cached.disks;
  }

  private async load(): Promise<DiskReport[]> {
    const devices = (await inventory()).disks.filter((d) => !isRescueSystemImage(d));
    const seen = new Set(devices.map((d) => d.path));
    const files: DiskReport[] = [];
    for (const p of this.extra) {
      const real = await fsp.realpath(p).catch(() => p);
      if (seen.has(real) || seen.has(p)) continue;
      files.push(...(await inventory([p])).disks);
    }
    // The files the server was told about first: they are what a lab or test works with.
    return [...files, ...devices];
  }
}
