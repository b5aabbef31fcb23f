import type { BlockSource } from '../devices/source.ts';
import type { Extent } from './extents.ts';

/** Filesystem type names as blkid spells them. */
export type FsType =
  | 'ext2'
  | 'ext3'
  | 'ext4'
  | 'ntfs'
  | 'vfat'
  | 'exfat'
  | 'swap'
  | 'swsuspend'
  | 'jbd'
  | 'crypto_LUKS'
  | 'BitLocker'
  | 'LVM2_member'
  | 'linux_raid_member'
  | 'unknown';

export interface FsIdentity {
  type: FsType;
  /** FAT12 / FAT16 / FAT32, ext4 feature level, NTFS 3.1, LUKS version … */
  version?: string;
  label?: string;
  /** As blkid prints it: a UUID, XXXX-XXXX for FAT/exFAT, 16 hex digits for NTFS. */
  uuid?: string;
  /** Allocation unit in bytes (ext block, NTFS/FAT/exFAT cluster). */
  blockSize?: number;
  /** Bytes the filesystem itself spans (may be less than its partition). */
  size?: number;
  /** Conditions a person must know before imaging: dirty, hibernated, needs recovery … */
  warnings?: string[];
  /** Filesystem-specific state for callers that care (ntfs: dirty/hibernated). */
  state?: Record<string, boolean | string | number>;
}

export interface UsedMap {
  /** 'allocation': from the filesystem's own allocation structures. 'sector-by-sector': everything. */
  method: 'allocation' | 'sector-by-sector';
  /** Sorted, non-overlapping byte ranges relative to the filesystem's first byte. */
  extents: Extent[];
  usedBytes: number;
  /** Why the map is sector-by-sector, in words. */
  reason?: string;
}

/** One module per filesystem, all behind this one small interface. */
export interface FilesystemModule {
  /** Cheap test of the magic in the first bytes (at least 68 KiB, fewer when the source is smaller). */
  probe(head: Buffer, size: number): boolean;
  identify(src: BlockSource): Promise<FsIdentity>;
  /** Absent for types whose contents we cannot interpret (encrypted, containers). */
  usedMap?(src: BlockSource, signal?: AbortSignal): Promise<UsedMap>;
}
