/**
 * How the logical stream is laid over volume files. With a limit L, volume 1 holds logical bytes
 * [0, L) and volume k ≥ 2 holds the next L − 128 bytes after its 128-byte volume header, so every
 * volume but the last is exactly L bytes and the position of any logical byte is arithmetic.
 */
import { promises as fsp } from 'node:fs';
import { parseMountinfo } from '../devices/mountinfo.ts';
import { IMAGE_EXTENSION, PARTIAL_SUFFIX, VOLUME_HEADER } from './types.ts';

export function volumeFileName(base: string, volume: number): string {
  return volume === 1 ? base : `${base}.${volume}`;
}

export function partialName(file: string): string {
  return file + PARTIAL_SUFFIX;
}

/** "NAME.rimg" for a name. */
export function imageFileName(name: string): string {
  return name + IMAGE_EXTENSION;
}

export class VolumeLayout {
  /** 0 = not split. */
  readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  private get payloadPerVolume(): number {
    return this.limit - VOLUME_HEADER.SIZE;
  }

  /** Logical offset of the first byte volume `v` carries. */
  logicalStart(v: number): number {
    if (v === 1) return 0;
    return this.limit + (v - 2) * this.payloadPerVolume;
  }

  /** Logical bytes volume `v` can carry (Infinity when not split). */
  capacity(v: number): number {
    if (this.limit === 0) return Number.POSITIVE_INFINITY;
    return v === 1 ? this.limit : this.payloadPerVolume;
  }

  /** Bytes before the first logical byte inside volume file `v`. */
  headerBytes(v: number): number {
    return v === 1 ? 0 : VOLUME_HEADER.SIZE;
  }

  /** Which volume holds logical byte `pos`. */
  volumeOf(pos: number): number {
    if (this.limit === 0 || pos < this.limit) return 1;
    return 2 + Math.floor((pos - this.limit) / this.payloadPerVolume);
  }

  /** Where logical byte `pos` sits in its volume file. */
  fileOffset(pos: number): { volume: number; offset: number } {
    const volume = this.volumeOf(pos);
    return { volume, offset: this.headerBytes(volume) + pos - this.logicalStart(volume) };
  }

  volumeCount(total: number): number {
    if (total <= 0) return 0;
    return this.volumeOf(total - 1);
  }

  /** Size of volume file `v` of an image of `total` logical bytes. */
  fileSize(v: number, total: number): number {
    const start = this.logicalStart(v);
    const carried = Math.min(this.capacity(v), total - start);
    return this.headerBytes(v) + carried;
  }
}

const MSDOS_SUPER_MAGIC = 0x4d44;
/** Mount types whose files are limited to 4 GiB − 1 bytes. */
const FAT_FS_TYPES = new Set(['vfat', 'msdos', 'fat', 'umsdos', 'fuse.fusefat', 'fuseblk.fusefat']);

/**
 * Whether `dir` (a real, absolute path) lies on a FAT mount per /proc/self/mountinfo text: the
 * mount with the longest mount point that contains `dir` decides.
 */
export function isFatMount(mountinfo: string, dir: string): boolean {
  let best: { len: number; fat: boolean } | null = null;
  for (const m of parseMountinfo(mountinfo)) {
    const mp = m.mountPoint;
    const inside = mp === '/' || dir === mp || dir.startsWith(mp.endsWith('/') ? mp : `${mp}/`);
    if (!inside) continue;
    if (!best || mp.length >= best.len) best = { len: mp.length, fat: FAT_FS_TYPES.has(m.fsType) };
  }
  return best?.fat ?? false;
}

/** statfs first (exact for the kernel's FAT), mountinfo for FUSE-mounted FAT. */
export async function destinationIsFat(dir: string, mountinfoText?: string): Promise<boolean> {
  const real = await fsp.realpath(dir);
  if (mountinfoText === undefined) {
    try {
      const st = await fsp.statfs(real);
      if (st.type === MSDOS_SUPER_MAGIC) return true;
    } catch {
      // statfs unsupported here: mountinfo decides
    }
  }
  let text = mountinfoText;
  if (text === undefined) {
    try {
      text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
    } catch {
      return false;
    }
  }
  return isFatMount(text, real);
}
