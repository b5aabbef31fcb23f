/**
 * Which filesystem is on a volume, and which bytes of it hold data. Probing order matters and
 * follows blkid's priorities: RAID superblocks (which may sit at the end of a member that also
 * looks like a plain filesystem), then containers and boot-sector filesystems by their specific
 * OEM ids, then ext/swap/LVM by their magic. FAT comes after NTFS, exFAT and BitLocker because its
 * boot sector has no unique magic.
 */
import type { BlockSource } from '../devices/source.ts';
import { isRescueError, RescueError } from '../errors.ts';
import { bitlocker, probeBitLocker } from './bitlocker.ts';
import { exfat } from './exfat.ts';
import { ext } from './ext.ts';
import { totalBytes } from './extents.ts';
import { fat } from './fat.ts';
import { luks } from './luks.ts';
import { lvm } from './lvm.ts';
import { findMdSuperblock, md } from './md.ts';
import { ntfs } from './ntfs.ts';
import { swap } from './swap.ts';
import type { FilesystemModule, FsIdentity, FsType, UsedMap } from './types.ts';

/** Enough for every magic we look for at the start: md 1.2 at 4 KiB, swap with 64 KiB pages. */
export const PROBE_HEAD_BYTES = 68 * 1024;

const ORDER: readonly FilesystemModule[] = [luks, bitlocker, ntfs, exfat, fat, ext, swap, lvm];

const MODULE_BY_TYPE: Partial<Record<FsType, FilesystemModule>> = {
  ext2: ext,
  ext3: ext,
  ext4: ext,
  ntfs,
  vfat: fat,
  exfat,
  swap,
  swsuspend: swap,
  crypto_LUKS: luks,
  BitLocker: bitlocker,
  LVM2_member: lvm,
  linux_raid_member: md,
};

/** Why a type is copied sector by sector, in words. */
const NO_MAP_REASON: Partial<Record<FsType, string>> = {
  crypto_LUKS: 'encrypted (LUKS): free space cannot be told from data',
  BitLocker: 'encrypted (BitLocker): free space cannot be told from data',
  LVM2_member: 'LVM physical volume: its logical volumes are copied whole',
  linux_raid_member: 'software-RAID member: copied whole',
  jbd: 'external ext journal device: copied whole',
  unknown: 'no known filesystem',
};

export function moduleFor(type: FsType): FilesystemModule | undefined {
  return MODULE_BY_TYPE[type];
}

/**
 * Identifies the filesystem on `src`. Never throws for unrecognised or damaged contents: the
 * result is then type "unknown" with the reason among the warnings. Throws only when the source
 * itself cannot be read.
 */
export async function detectFilesystem(src: BlockSource): Promise<FsIdentity> {
  if (src.size === 0) return { type: 'unknown', size: 0, warnings: ['empty'] };
  const found = await findMdSuperblock(src).catch(rethrowIoOnly);
  if (found) return md.identify(src);
  const head = await src.read(0, Math.min(src.size, PROBE_HEAD_BYTES));
  // BitLocker To Go hides behind a decoy FAT boot sector: it must be settled before FAT is probed.
  if (await probeBitLocker(src, head).catch(rethrowIoOnly)) return bitlocker.identify(src);
  const problems: string[] = [];
  for (const mod of ORDER) {
    let matches = false;
    try {
      matches = mod.probe(head, src.size);
    } catch {
      matches = false;
    }
    if (!matches) continue;
    try {
      return await mod.identify(src);
    } catch (e) {
      rethrowIoOnly(e);
      problems.push((e as Error).message);
    }
  }
  return { type: 'unknown', size: src.size, warnings: problems.length ? problems : undefined };
}

/** I/O failures of the source are real errors; damaged metadata is a finding. */
function rethrowIoOnly(e: unknown): undefined {
  if (
    isRescueError(e) &&
    ['E_READ', 'E_SHORT_READ', 'E_OPEN', 'E_PERMISSION', 'E_NOT_FOUND'].includes(e.code)
  )
    throw e;
  if (!isRescueError(e)) throw e;
  return undefined;
}

export function sectorBySector(size: number, reason: string): UsedMap {
  return {
    method: 'sector-by-sector',
    extents: size > 0 ? [{ start: 0, length: size }] : [],
    usedBytes: size,
    reason,
  };
}

/**
 * The bytes to copy for the volume on `src`: the filesystem's allocation map where we can read
 * it, everything otherwise — with the reason, so that the job can say so.
 */
export async function usedMapOf(
  src: BlockSource,
  identity?: FsIdentity,
  signal?: AbortSignal,
): Promise<UsedMap> {
  const id = identity ?? (await detectFilesystem(src));
  const mod = moduleFor(id.type);
  if (!mod?.usedMap)
    return sectorBySector(src.size, NO_MAP_REASON[id.type] ?? `${id.type}: no allocation map reader`);
  let map: UsedMap;
  try {
    map = await mod.usedMap(src, signal);
  } catch (e) {
    if (signal?.aborted) throw e;
    if (!isRescueError(e)) throw e;
    return sectorBySector(
      src.size,
      `${id.type} metadata could not be used (${e.message}); copying every sector`,
    );
  }
  // A filesystem smaller than its partition: the rest of the partition is not the filesystem's,
  // but nothing in it is lost either — it was never reachable through the filesystem.
  if (map.extents.some((x) => x.start < 0 || x.start + x.length > src.size)) {
    throw new RescueError(
      'E_INTERNAL',
      `used map of ${src.path} leaves the volume`,
      'This is a bug; please report it.',
    );
  }
  return { ...map, usedBytes: totalBytes(map.extents) };
}
