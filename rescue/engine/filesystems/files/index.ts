/**
 * Read-only access to the files inside an unmounted filesystem: used to find installed operating
 * systems (which partitions Windows or Linux needs to boot) and to explore images. Nothing is ever
 * written; every structure read is bounds-checked, and damaged metadata is a RescueError
 * (E_METADATA_CORRUPT), never a crash or a hang.
 */
import type { BlockSource } from '../../devices/source.ts';
import { openExfatFiles } from './exfat.ts';
import { openExtFiles } from './ext.ts';
import { openFatFiles } from './fat.ts';
import { openNtfsFiles } from './ntfs.ts';

export { DEFAULT_MAX_FILE_BYTES, MAX_SYMLINK_FOLLOWS } from './tree.ts';

export interface FileStat {
  type: 'file' | 'dir' | 'symlink' | 'other';
  /** Bytes of the file (of the link target text for a symlink; 0 or the index size for a directory). */
  size: number;
  mtime?: Date;
  /** The link's target, as stored (symlinks only). */
  target?: string;
}

export interface VolumeFiles {
  /**
   * '/'-separated path from the volume's root; undefined when it does not exist (or a component
   * on the way is not a directory). Symbolic links are followed on the way but not at the end.
   */
  stat(path: string): Promise<FileStat | undefined>;
  /** Names in a directory, without '.' and '..'. Follows a symbolic link at the end. */
  readdir(path: string): Promise<string[]>;
  /** A regular file's contents; larger than `maxBytes` (default 16 MiB) → E_FILE_TOO_LARGE. */
  readFile(path: string, opts?: { maxBytes?: number }): Promise<Buffer>;
}

/** Filesystem types (as blkid names them) whose files can be read. */
export const FILE_READABLE_TYPES = ['ext2', 'ext3', 'ext4', 'ntfs', 'vfat', 'exfat'] as const;

/**
 * Opens the filesystem of type `fsType` on `src` for reading files; undefined for types whose
 * files cannot be read (swap, LUKS, unknown …). Throws RescueError when the filesystem's own
 * structures (superblock, boot sector, $MFT) are unusable.
 */
export async function openVolumeFiles(src: BlockSource, fsType: string): Promise<VolumeFiles | undefined> {
  switch (fsType) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return openExtFiles(src);
    case 'ntfs':
      return openNtfsFiles(src);
    case 'vfat':
      return openFatFiles(src);
    case 'exfat':
      return openExfatFiles(src);
    default:
      return undefined;
  }
}
