/**
 * Backups on attached disks (a USB stick, a second internal disk): the rescue system has no
 * automounter, so on request every partition that is not mounted or in use and holds a filesystem
 * we can read is mounted **read-only** in a private folder and searched for images. Partitions that
 * hold images stay mounted (their images are read from there, and a disk holding the image being
 * restored is thereby never offered as a target); the others are unmounted at once. Everything is
 * unmounted when the server stops.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { DiskReport } from '../engine/devices/inventory.ts';
import { type ImageChain, listImages } from './images.ts';

const run = promisify(execFile);

/** Read-only mount commands per filesystem: the kernel's driver, else the FUSE one. */
const MOUNTS: Record<string, string[][]> = {
  ext2: [['mount', '-t', 'ext2', '-o', 'ro']],
  ext3: [['mount', '-t', 'ext3', '-o', 'ro,noload']],
  ext4: [['mount', '-t', 'ext4', '-o', 'ro,noload']],
  ntfs: [
    ['mount', '-t', 'ntfs3', '-o', 'ro'],
    ['ntfs-3g', '-o', 'ro'],
  ],
  exfat: [
    ['mount', '-t', 'exfat', '-o', 'ro'],
    ['mount.exfat-fuse', '-o', 'ro'],
  ],
  vfat: [['mount', '-t', 'vfat', '-o', 'ro']],
};

export interface AttachedScan {
  chains: (ImageChain & { disk: string; partition: number })[];
  /** Partitions that could not be looked at, and why. */
  skipped: { disk: string; partition: number; why: string }[];
}

export class AttachedDisks {
  private readonly root = join(tmpdir(), `rescue-attached-${process.pid}`);
  /** Mounted partition device → mount folder. */
  private readonly mounted = new Map<string, string>();
  private readonly only: Set<string> | undefined;

  /** `only`: search just these disks (a lab, or tests that must not touch other tests' disks). */
  constructor(only?: string[]) {
    this.only = only && only.length > 0 ? new Set(only) : undefined;
  }

  async scan(disks: DiskReport[]): Promise<AttachedScan> {
    const out: AttachedScan = { chains: [], skipped: [] };
    await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
    for (const d of disks) {
      if (this.only && !this.only.has(d.path)) continue;
      for (const p of d.partitions) {
        const dev = p.devicePath;
        const type = p.fs?.type;
        if (!dev || !type || !MOUNTS[type]) continue;
        let dir = this.mounted.get(dev);
        if (!dir) {
          if (p.inUse) continue; // mounted by someone else: its mount point is theirs
          dir = join(this.root, dev.replace(/\//g, '_'));
          await fsp.mkdir(dir, { recursive: true });
          const why = await this.mount(type, dev, dir);
          if (why) {
            out.skipped.push({ disk: d.path, partition: p.number, why });
            await fsp.rmdir(dir).catch(() => undefined);
            continue;
          }
        }
        const found = await listImages([dir]);
        if (found.chains.length === 0) {
          await this.unmount(dev, dir);
          continue;
        }
        this.mounted.set(dev, dir);
        for (const c of found.chains) out.chains.push({ ...c, disk: d.path, partition: p.number });
      }
    }
    return out;
  }

  private async mount(type: string, dev: string, dir: string): Promise<string | null> {
    let last = '';
    for (const [cmd, ...args] of MOUNTS[type]) {
      try {
        await run(cmd, [...args, dev, dir], { timeout: 30_000 });
        return null;
      } catch (e) {
        last = `${(e as { stderr?: string }).stderr ?? (e as Error).message}`.trim();
      }
    }
    return `cannot be mounted read-only (${type}): ${last}`;
  }

  private async unmount(dev: string, dir: string): Promise<void> {
    await run('umount', [dir]).catch(() => run('fusermount', ['-u', dir]).catch(() => undefined));
    await fsp.rmdir(dir).catch(() => undefined);
    this.mounted.delete(dev);
  }

  async close(): Promise<void> {
    for (const [dev, dir] of [...this.mounted]) await this.unmount(dev, dir);
    await fsp.rm(this.root, { recursive: true, force: true }).catch(() => undefined);
  }
}
