/**
 * Pure codecs for FAT12/16/32: the boot sector (BPB + extended BPB), the FAT32 FSInfo sector,
 * FAT entries (12-bit packing included) and the bits of directory entries we need (volume label).
 * Layout rules follow Microsoft's "FAT: General Overview of On-Disk Format" (v1.03).
 */
import { corrupt } from '../errors.ts';

export const FAT_BOOT = {
  SIZE: 512,
  OFF_JUMP: 0,
  OFF_OEM_NAME: 3,
  OFF_BYTES_PER_SECTOR: 11,
  OFF_SECTORS_PER_CLUSTER: 13,
  OFF_RESERVED_SECTORS: 14,
  OFF_NUM_FATS: 16,
  OFF_ROOT_ENTRIES: 17,
  OFF_TOTAL_SECTORS_16: 19,
  OFF_MEDIA: 21,
  OFF_FAT_SIZE_16: 22,
  OFF_SECTORS_PER_TRACK: 24,
  OFF_HEADS: 26,
  OFF_HIDDEN_SECTORS: 28,
  OFF_TOTAL_SECTORS_32: 32,
  /** Extended BPB of FAT12/16 starts at 36, that of FAT32 at 64 (after the FAT32 fields). */
  EXT_BPB_FAT16: 36,
  EXT_BPB_FAT32: 64,
  OFF32_FAT_SIZE: 36,
  OFF32_EXT_FLAGS: 40,
  OFF32_FS_VERSION: 42,
  OFF32_ROOT_CLUSTER: 44,
  OFF32_FSINFO_SECTOR: 48,
  OFF32_BACKUP_BOOT_SECTOR: 50,
  /** Offsets inside the extended BPB. */
  EXT_DRIVE_NUMBER: 0,
  /** "Reserved1" in Microsoft's document; Linux and Windows NT keep the dirty flag (bit 0) there. */
  EXT_STATE: 1,
  EXT_BOOT_SIGNATURE: 2,
  EXT_SERIAL: 3,
  EXT_LABEL: 7,
  EXT_FS_TYPE: 18,
  OFF_SIGNATURE: 510,
  SIGNATURE: 0xaa55,
  LABEL_LENGTH: 11,
  /** 0x29: serial, label and fs-type string present; 0x28: serial only (DOS 3.4). */
  EXT_SIG_FULL: 0x29,
  EXT_SIG_SERIAL_ONLY: 0x28,
  STATE_DIRTY: 0x01,
} as const;

export const FAT_LIMITS = {
  /** Microsoft: fewer than 4085 clusters is FAT12, fewer than 65525 is FAT16, otherwise FAT32. */
  FAT12_MAX_CLUSTERS: 4084,
  FAT16_MAX_CLUSTERS: 65524,
  /** Cluster numbers run 2..0x0FFFFFF6, so at most 0x0FFFFFF5 clusters. */
  FAT32_MAX_CLUSTERS: 0x0ffffff5,
  /** Directories hold at most 65536 entries of 32 bytes. */
  MAX_DIR_BYTES: 65536 * 32,
  DIR_ENTRY_SIZE: 32,
  FIRST_CLUSTER: 2,
} as const;

export const FAT_ENTRY = {
  MASK32: 0x0fffffff,
  BAD: { 12: 0xff7, 16: 0xfff7, 32: 0x0ffffff7 },
  /** Values at or above this end a chain. */
  EOC_MIN: { 12: 0xff8, 16: 0xfff8, 32: 0x0ffffff8 },
  /** FAT[1]: bit set = volume cleanly unmounted / no I/O error (FAT16 and FAT32 only). */
  CLEAN_BIT: { 16: 0x8000, 32: 0x08000000 },
  NO_IO_ERROR_BIT: { 16: 0x4000, 32: 0x04000000 },
} as const;

export const FSINFO = {
  OFF_LEAD_SIG: 0,
  LEAD_SIG: 0x41615252,
  OFF_STRUCT_SIG: 484,
  STRUCT_SIG: 0x61417272,
  OFF_FREE_COUNT: 488,
  OFF_NEXT_FREE: 492,
  OFF_TRAIL_SIG: 508,
  TRAIL_SIG: 0xaa550000,
  UNKNOWN: 0xffffffff,
} as const;

export const FAT_DIRENT = {
  OFF_NAME: 0,
  OFF_ATTR: 11,
  OFF_CLUSTER_HIGH: 20,
  OFF_CLUSTER_LOW: 26,
  OFF_SIZE: 28,
  ATTR_VOLUME_ID: 0x08,
  ATTR_DIRECTORY: 0x10,
  ATTR_LONG_NAME: 0x0f,
  ATTR_MASK: 0x3f,
  END: 0x00,
  DELETED: 0xe5,
  /** A first name byte of 0x05 stands for 0xE5 (a Kanji lead byte). */
  KANJI_E5: 0x05,
} as const;

export type FatType = 12 | 16 | 32;

export interface FatBootSector {
  jump: number[];
  oemName: string;
  bytesPerSector: number;
  sectorsPerCluster: number;
  reservedSectors: number;
  numFats: number;
  rootEntries: number;
  totalSectors16: number;
  media: number;
  fatSize16: number;
  sectorsPerTrack: number;
  heads: number;
  hiddenSectors: number;
  totalSectors32: number;
  /** FAT32 fields: meaningful only when `fatSize16` is 0 (the FAT32 layout of the BPB). */
  fatSize32: number;
  extFlags: number;
  fsVersion: number;
  rootCluster: number;
  fsInfoSector: number;
  backupBootSector: number;
  /** Extended BPB, at 36 (FAT12/16) or 64 (FAT32). */
  driveNumber: number;
  state: number;
  bootSignature: number;
  serial: number;
  /** Raw 11 bytes, space padded. */
  label: Uint8Array;
  fsTypeString: string;
  signature: number;
}

/** True when the BPB uses the FAT32 layout (BPB_FATSz16 = 0), which moves the extended BPB to 64. */
export function isFat32Layout(bs: Pick<FatBootSector, 'fatSize16'>): boolean {
  return bs.fatSize16 === 0;
}

function ascii(b: Uint8Array, off: number, len: number): string {
  return Buffer.from(b.buffer, b.byteOffset + off, len).toString('latin1');
}

export function parseFatBootSector(sector: Uint8Array): FatBootSector {
  if (sector.length < FAT_BOOT.SIZE) throw corrupt('FAT boot sector', `only ${sector.length} bytes`);
  const b = Buffer.from(sector.buffer, sector.byteOffset, FAT_BOOT.SIZE);
  const fatSize16 = b.readUInt16LE(FAT_BOOT.OFF_FAT_SIZE_16);
  const fat32 = fatSize16 === 0;
  const ext = fat32 ? FAT_BOOT.EXT_BPB_FAT32 : FAT_BOOT.EXT_BPB_FAT16;
  return {
    jump: [b[0], b[1], b[2]],
    oemName: ascii(b, FAT_BOOT.OFF_OEM_NAME, 8),
    bytesPerSector: b.readUInt16LE(FAT_BOOT.OFF_BYTES_PER_SECTOR),
    sectorsPerCluster: b[FAT_BOOT.OFF_SECTORS_PER_CLUSTER],
    reservedSectors: b.readUInt16LE(FAT_BOOT.OFF_RESERVED_SECTORS),
    numFats: b[FAT_BOOT.OFF_NUM_FATS],
    rootEntries: b.readUInt16LE(FAT_BOOT.OFF_ROOT_ENTRIES),
    totalSectors16: b.readUInt16LE(FAT_BOOT.OFF_TOTAL_SECTORS_16),
    media: b[FAT_BOOT.OFF_MEDIA],
    fatSize16,
    sectorsPerTrack: b.readUInt16LE(FAT_BOOT.OFF_SECTORS_PER_TRACK),
    heads: b.readUInt16LE(FAT_BOOT.OFF_HEADS),
    hiddenSectors: b.readUInt32LE(FAT_BOOT.OFF_HIDDEN_SECTORS),
    totalSectors32: b.readUInt32LE(FAT_BOOT.OFF_TOTAL_SECTORS_32),
    fatSize32: fat32 ? b.readUInt32LE(FAT_BOOT.OFF32_FAT_SIZE) : 0,
    extFlags: fat32 ? b.readUInt16LE(FAT_BOOT.OFF32_EXT_FLAGS) : 0,
    fsVersion: fat32 ? b.readUInt16LE(FAT_BOOT.OFF32_FS_VERSION) : 0,
    rootCluster: fat32 ? b.readUInt32LE(FAT_BOOT.OFF32_ROOT_CLUSTER) : 0,
    fsInfoSector: fat32 ? b.readUInt16LE(FAT_BOOT.OFF32_FSINFO_SECTOR) : 0,
    backupBootSector: fat32 ? b.readUInt16LE(FAT_BOOT.OFF32_BACKUP_BOOT_SECTOR) : 0,
    driveNumber: b[ext + FAT_BOOT.EXT_DRIVE_NUMBER],
    state: b[ext + FAT_BOOT.EXT_STATE],
    bootSignature: b[ext + FAT_BOOT.EXT_BOOT_SIGNATURE],
    serial: b.readUInt32LE(ext + FAT_BOOT.EXT_SERIAL),
    label: Uint8Array.from(
      b.subarray(ext + FAT_BOOT.EXT_LABEL, ext + FAT_BOOT.EXT_LABEL + FAT_BOOT.LABEL_LENGTH),
    ),
    fsTypeString: ascii(b, ext + FAT_BOOT.EXT_FS_TYPE, 8),
    signature: b.readUInt16LE(FAT_BOOT.OFF_SIGNATURE),
  };
}

/**
 * Serialises the fields of `bs` over `base` (a copy of it; boot code and unknown bytes are kept) or
 * over zeros. parseFatBootSector(writeFatBootSector(x)) gives x back for in-range field values.
 */
export function writeFatBootSector(bs: FatBootSector, base?: Uint8Array): Buffer {
  const b = Buffer.alloc(FAT_BOOT.SIZE);
  if (base) b.set(base.subarray(0, FAT_BOOT.SIZE));
  const fat32 = isFat32Layout(bs);
  const ext = fat32 ? FAT_BOOT.EXT_BPB_FAT32 : FAT_BOOT.EXT_BPB_FAT16;
  b.set(bs.jump.slice(0, 3), FAT_BOOT.OFF_JUMP);
  b.write(bs.oemName.padEnd(8, ' ').slice(0, 8), FAT_BOOT.OFF_OEM_NAME, 8, 'latin1');
  b.writeUInt16LE(bs.bytesPerSector, FAT_BOOT.OFF_BYTES_PER_SECTOR);
  b[FAT_BOOT.OFF_SECTORS_PER_CLUSTER] = bs.sectorsPerCluster;
  b.writeUInt16LE(bs.reservedSectors, FAT_BOOT.OFF_RESERVED_SECTORS);
  b[FAT_BOOT.OFF_NUM_FATS] = bs.numFats;
  b.writeUInt16LE(bs.rootEntries, FAT_BOOT.OFF_ROOT_ENTRIES);
  b.writeUInt16LE(bs.totalSectors16, FAT_BOOT.OFF_TOTAL_SECTORS_16);
  b[FAT_BOOT.OFF_MEDIA] = bs.media;
  b.writeUInt16LE(bs.fatSize16, FAT_BOOT.OFF_FAT_SIZE_16);
  b.writeUInt16LE(bs.sectorsPerTrack, FAT_BOOT.OFF_SECTORS_PER_TRACK);
  b.writeUInt16LE(bs.heads, FAT_BOOT.OFF_HEADS);
  b.writeUInt32LE(bs.hiddenSectors, FAT_BOOT.OFF_HIDDEN_SECTORS);
  b.writeUInt32LE(bs.totalSectors32, FAT_BOOT.OFF_TOTAL_SECTORS_32);
  if (fat32) {
    b.writeUInt32LE(bs.fatSize32, FAT_BOOT.OFF32_FAT_SIZE);
    b.writeUInt16LE(bs.extFlags, FAT_BOOT.OFF32_EXT_FLAGS);
    b.writeUInt16LE(bs.fsVersion, FAT_BOOT.OFF32_FS_VERSION);
    b.writeUInt32LE(bs.rootCluster, FAT_BOOT.OFF32_ROOT_CLUSTER);
    b.writeUInt16LE(bs.fsInfoSector, FAT_BOOT.OFF32_FSINFO_SECTOR);
    b.writeUInt16LE(bs.backupBootSector, FAT_BOOT.OFF32_BACKUP_BOOT_SECTOR);
  }
  b[ext + FAT_BOOT.EXT_DRIVE_NUMBER] = bs.driveNumber;
  b[ext + FAT_BOOT.EXT_STATE] = bs.state;
  b[ext + FAT_BOOT.EXT_BOOT_SIGNATURE] = bs.bootSignature;
  b.writeUInt32LE(bs.serial >>> 0, ext + FAT_BOOT.EXT_SERIAL);
  b.set(bs.label.subarray(0, FAT_BOOT.LABEL_LENGTH), ext + FAT_BOOT.EXT_LABEL);
  b.write(bs.fsTypeString.padEnd(8, ' ').slice(0, 8), ext + FAT_BOOT.EXT_FS_TYPE, 8, 'latin1');
  b.writeUInt16LE(bs.signature, FAT_BOOT.OFF_SIGNATURE);
  return b;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Media descriptor values the Linux kernel and blkid accept. */
export function isValidMedia(media: number): boolean {
  return media === 0xf0 || media >= 0xf8;
}

/**
 * The cheap part of validation, enough to tell a FAT boot sector from an MBR, NTFS or exFAT boot
 * sector: signature, jump (or a FAT magic string) and BPB fields inside their legal ranges.
 * Returns why it is not FAT, or undefined when it looks like FAT.
 */
export function fatBootSectorProblem(bs: FatBootSector): string | undefined {
  if (bs.signature !== FAT_BOOT.SIGNATURE) return 'no 0x55AA signature';
  const jumpOk = (bs.jump[0] === 0xeb && bs.jump[2] === 0x90) || bs.jump[0] === 0xe9;
  if (!jumpOk && !/^(FAT|MSWIN|MSDOS)/.test(bs.fsTypeString)) return 'no x86 jump and no FAT type string';
  if (!isPowerOfTwo(bs.bytesPerSector) || bs.bytesPerSector < 512 || bs.bytesPerSector > 4096) {
    return `bytes per sector ${bs.bytesPerSector} is not 512, 1024, 2048 or 4096`;
  }
  if (!isPowerOfTwo(bs.sectorsPerCluster))
    return `sectors per cluster ${bs.sectorsPerCluster} is not a power of two`;
  if (bs.reservedSectors === 0) return 'no reserved sectors (the boot sector itself is one)';
  if (bs.numFats === 0) return 'no FAT copies';
  if (!isValidMedia(bs.media)) return `media descriptor 0x${bs.media.toString(16)} is invalid`;
  if (bs.totalSectors16 === 0 && bs.totalSectors32 === 0) return 'total sector count is 0';
  if (isFat32Layout(bs) && bs.fatSize32 === 0) return 'FAT size is 0';
  return undefined;
}

export interface FatLayout {
  type: FatType;
  bytesPerSector: number;
  sectorsPerCluster: number;
  clusterBytes: number;
  totalSectors: number;
  /** Bytes the filesystem spans. */
  volumeBytes: number;
  reservedBytes: number;
  numFats: number;
  /** Byte offset of FAT copy 0; copy k is at fatStart + k * fatBytes. */
  fatStart: number;
  fatBytes: number;
  /** Fixed root directory of FAT12/16 (0 bytes on FAT32). */
  rootDirStart: number;
  rootDirBytes: number;
  rootEntries: number;
  /** Byte offset of cluster 2. */
  dataStart: number;
  clusterCount: number;
  /** FAT32 root directory's first cluster (0 on FAT12/16). */
  rootCluster: number;
  fsInfoSector: number;
  backupBootSector: number;
  /** FAT32 ExtFlags: when mirroring is off, only `activeFat` is in use. */
  mirroring: boolean;
  activeFat: number;
}

/** Bytes a FAT needs for `entries` entries. */
export function fatBytesFor(type: FatType, entries: number): number {
  if (type === 12) return Math.ceil((entries * 3) / 2);
  return entries * (type / 8);
}

/**
 * Derives the layout from a boot sector and checks it is self-consistent. The FAT type follows the
 * cluster count as Microsoft specifies (the fs-type string is only a comment); a BPB in the FAT32
 * layout (BPB_FATSz16 = 0, no fixed root directory) is FAT32 as the Linux kernel, dosfstools and
 * blkid treat it, even below 65525 clusters, because it cannot be read any other way.
 */
export function fatLayout(bs: FatBootSector): FatLayout {
  const problem = fatBootSectorProblem(bs);
  if (problem) throw corrupt('FAT boot sector', problem);
  const bps = bs.bytesPerSector;
  const fat32 = isFat32Layout(bs);
  const totalSectors = bs.totalSectors16 !== 0 ? bs.totalSectors16 : bs.totalSectors32;
  const fatSectors = fat32 ? bs.fatSize32 : bs.fatSize16;
  if (fat32 && bs.rootEntries !== 0) {
    throw corrupt('FAT32 boot sector', `${bs.rootEntries} fixed root entries (must be 0 on FAT32)`);
  }
  if (!fat32 && bs.rootEntries === 0) throw corrupt('FAT12/16 boot sector', 'no root directory entries');
  const rootDirSectors = Math.ceil((bs.rootEntries * FAT_LIMITS.DIR_ENTRY_SIZE) / bps);
  const metaSectors = bs.reservedSectors + bs.numFats * fatSectors + rootDirSectors;
  if (metaSectors >= totalSectors) {
    throw corrupt(
      'FAT boot sector',
      `reserved area, FATs and root directory (${metaSectors} sectors) fill the whole volume (${totalSectors} sectors)`,
    );
  }
  const clusterCount = Math.floor((totalSectors - metaSectors) / bs.sectorsPerCluster);
  if (clusterCount < 1) throw corrupt('FAT boot sector', 'no room for a single cluster');
  let type: FatType;
  if (fat32) {
    if (clusterCount > FAT_LIMITS.FAT32_MAX_CLUSTERS)
      throw corrupt('FAT32 boot sector', `${clusterCount} clusters is more than FAT32 can address`);
    type = 32;
  } else if (clusterCount <= FAT_LIMITS.FAT12_MAX_CLUSTERS) {
    type = 12;
  } else if (clusterCount <= FAT_LIMITS.FAT16_MAX_CLUSTERS) {
    type = 16;
  } else {
    throw corrupt(
      'FAT boot sector',
      `${clusterCount} clusters need FAT32, but the BPB has the FAT12/16 layout`,
    );
  }
  const fatBytes = fatSectors * bps;
  const needed = fatBytesFor(type, clusterCount + FAT_LIMITS.FIRST_CLUSTER);
  if (fatBytes < needed) {
    throw corrupt(
      'FAT boot sector',
      `FAT of ${fatBytes} bytes is too small for ${clusterCount} clusters (needs ${needed})`,
    );
  }
  if (fat32) {
    const last = clusterCount + 1;
    if (bs.rootCluster < FAT_LIMITS.FIRST_CLUSTER || bs.rootCluster > last) {
      throw corrupt('FAT32 boot sector', `root directory cluster ${bs.rootCluster} is outside 2..${last}`);
    }
    for (const [what, sector] of [
      ['FSInfo', bs.fsInfoSector],
      ['backup boot', bs.backupBootSector],
    ] as const) {
      if (sector !== 0 && sector !== 0xffff && sector >= bs.reservedSectors) {
        throw corrupt(
          'FAT32 boot sector',
          `${what} sector ${sector} lies outside the ${bs.reservedSectors} reserved sectors`,
        );
      }
    }
  }
  const reservedBytes = bs.reservedSectors * bps;
  const fatStart = reservedBytes;
  const rootDirStart = fatStart + bs.numFats * fatBytes;
  return {
    type,
    bytesPerSector: bps,
    sectorsPerCluster: bs.sectorsPerCluster,
    clusterBytes: bs.sectorsPerCluster * bps,
    totalSectors,
    volumeBytes: totalSectors * bps,
    reservedBytes,
    numFats: bs.numFats,
    fatStart,
    fatBytes,
    rootDirStart,
    rootDirBytes: rootDirSectors * bps,
    rootEntries: bs.rootEntries,
    dataStart: metaSectors * bps,
    clusterCount,
    rootCluster: fat32 ? bs.rootCluster : 0,
    fsInfoSector: fat32 && bs.fsInfoSector !== 0xffff ? bs.fsInfoSector : 0,
    backupBootSector: fat32 && bs.backupBootSector !== 0xffff ? bs.backupBootSector : 0,
    mirroring: !fat32 || (bs.extFlags & 0x80) === 0,
    // An active-FAT number past the last copy is garbage; the kernel ignores ExtFlags, so use copy 0.
    activeFat: fat32 && (bs.extFlags & 0x0f) < bs.numFats ? bs.extFlags & 0x0f : 0,
  };
}

/** Byte offset of cluster `n` (n ≥ 2). */
export function clusterOffset(layout: FatLayout, n: number): number {
  return layout.dataStart + (n - FAT_LIMITS.FIRST_CLUSTER) * layout.clusterBytes;
}

/**
 * Reads entry `n` from FAT bytes starting at entry 0. FAT12 packs two entries in three bytes:
 * an even entry is the low 12 bits of the little-endian 16-bit word at n*1.5, an odd one the high 12.
 */
export function fatEntry(fat: Uint8Array, type: FatType, n: number): number {
  if (type === 12) {
    const off = n + (n >> 1);
    const word = fat[off] | (fat[off + 1] << 8);
    return n & 1 ? word >> 4 : word & 0xfff;
  }
  if (type === 16) {
    const off = n * 2;
    return fat[off] | (fat[off + 1] << 8);
  }
  const off = n * 4;
  return (
    ((fat[off] | (fat[off + 1] << 8) | (fat[off + 2] << 16) | (fat[off + 3] << 24)) >>> 0) & FAT_ENTRY.MASK32
  );
}

/** Writes entry `n`, leaving the neighbouring FAT12 nibble and the top 4 bits of a FAT32 entry alone. */
export function setFatEntry(fat: Uint8Array, type: FatType, n: number, value: number): void {
  if (type === 12) {
    const off = n + (n >> 1);
    const v = value & 0xfff;
    if (n & 1) {
      fat[off] = (fat[off] & 0x0f) | ((v & 0x0f) << 4);
      fat[off + 1] = v >> 4;
    } else {
      fat[off] = v & 0xff;
      fat[off + 1] = (fat[off + 1] & 0xf0) | (v >> 8);
    }
    return;
  }
  if (type === 16) {
    fat[n * 2] = value & 0xff;
    fat[n * 2 + 1] = (value >> 8) & 0xff;
    return;
  }
  const off = n * 4;
  const keep = fat[off + 3] & 0xf0;
  const v = value & FAT_ENTRY.MASK32;
  fat[off] = v & 0xff;
  fat[off + 1] = (v >>> 8) & 0xff;
  fat[off + 2] = (v >>> 16) & 0xff;
  fat[off + 3] = keep | ((v >>> 24) & 0x0f);
}

export interface FsInfo {
  leadSignatureOk: boolean;
  structSignatureOk: boolean;
  trailSignatureOk: boolean;
  /** Last known free cluster count, FSINFO.UNKNOWN when not computed. */
  freeCount: number;
  nextFree: number;
}

export function parseFsInfo(sector: Uint8Array): FsInfo {
  if (sector.length < FAT_BOOT.SIZE) throw corrupt('FAT32 FSInfo sector', `only ${sector.length} bytes`);
  const b = Buffer.from(sector.buffer, sector.byteOffset, FAT_BOOT.SIZE);
  return {
    leadSignatureOk: b.readUInt32LE(FSINFO.OFF_LEAD_SIG) === FSINFO.LEAD_SIG,
    structSignatureOk: b.readUInt32LE(FSINFO.OFF_STRUCT_SIG) === FSINFO.STRUCT_SIG,
    trailSignatureOk: b.readUInt32LE(FSINFO.OFF_TRAIL_SIG) === FSINFO.TRAIL_SIG,
    freeCount: b.readUInt32LE(FSINFO.OFF_FREE_COUNT),
    nextFree: b.readUInt32LE(FSINFO.OFF_NEXT_FREE),
  };
}

export type LabelScan = { found: Uint8Array } | { ended: true } | { ended: false };

/**
 * Looks for the volume-label entry in root-directory bytes the way blkid does: stop at the end
 * marker, skip deleted entries, long-name entries and anything with a cluster, take the first entry
 * with the volume-ID attribute and without the directory attribute. `{ended:false}` means "keep
 * looking in the next cluster".
 */
export function scanForVolumeLabel(dir: Uint8Array): LabelScan {
  const b = Buffer.from(dir.buffer, dir.byteOffset, dir.byteLength);
  for (let off = 0; off + FAT_LIMITS.DIR_ENTRY_SIZE <= b.length; off += FAT_LIMITS.DIR_ENTRY_SIZE) {
    const first = b[off + FAT_DIRENT.OFF_NAME];
    if (first === FAT_DIRENT.END) return { ended: true };
    const attr = b[off + FAT_DIRENT.OFF_ATTR];
    if (first === FAT_DIRENT.DELETED) continue;
    if (
      b.readUInt16LE(off + FAT_DIRENT.OFF_CLUSTER_HIGH) !== 0 ||
      b.readUInt16LE(off + FAT_DIRENT.OFF_CLUSTER_LOW) !== 0
    ) {
      continue;
    }
    if ((attr & FAT_DIRENT.ATTR_MASK) === FAT_DIRENT.ATTR_LONG_NAME) continue;
    if ((attr & (FAT_DIRENT.ATTR_VOLUME_ID | FAT_DIRENT.ATTR_DIRECTORY)) === FAT_DIRENT.ATTR_VOLUME_ID) {
      const name = Uint8Array.from(b.subarray(off, off + FAT_BOOT.LABEL_LENGTH));
      if (name[0] === FAT_DIRENT.KANJI_E5) name[0] = FAT_DIRENT.DELETED;
      return { found: name };
    }
  }
  return { ended: false };
}

const NO_NAME = 'NO NAME    ';

/**
 * An 11-byte label as blkid shows it: up to the first NUL, trailing whitespace trimmed, bytes taken
 * as they are (the OEM code page is unknown, so bytes above 0x7f come out as Latin-1).
 */
export function decodeFatLabel(raw: Uint8Array): string | undefined {
  let bytes = raw.subarray(0, FAT_BOOT.LABEL_LENGTH);
  const nul = bytes.indexOf(0);
  if (nul >= 0) bytes = bytes.subarray(0, nul);
  const s = Buffer.from(bytes)
    .toString('latin1')
    .replace(/[ \t\n\v\f\r]+$/, '');
  return s.length > 0 ? s : undefined;
}

/** The boot-sector label (blkid's LABEL_FATBOOT): only with the 0x29 signature, "NO NAME" means none. */
export function bootSectorLabel(bs: FatBootSector): string | undefined {
  if (bs.bootSignature !== FAT_BOOT.EXT_SIG_FULL) return undefined;
  if (Buffer.from(bs.label).toString('latin1') === NO_NAME) return undefined;
  return decodeFatLabel(bs.label);
}

/** blkid prints FAT and exFAT serials as XXXX-XXXX, upper case. */
export function formatVolumeSerial(serial: number): string {
  const hex = (serial >>> 0).toString(16).toUpperCase().padStart(8, '0');
  return `${hex.slice(0, 4)}-${hex.slice(4)}`;
}

/** blkid reports the FAT12/16 serial only with an extended boot signature; FAT32 always has one. */
export function hasSerial(bs: FatBootSector): boolean {
  if (isFat32Layout(bs)) return true;
  return bs.bootSignature === FAT_BOOT.EXT_SIG_FULL || bs.bootSignature === FAT_BOOT.EXT_SIG_SERIAL_ONLY;
}
