/**
 * Pure codecs for exFAT: the main boot sector, the boot-region checksum, and the root-directory
 * entries we need (allocation bitmap, up-case table, volume label). Field names and rules follow
 * Microsoft's "exFAT file system specification".
 */
import { corrupt } from '../errors.ts';

export const EXFAT_BOOT = {
  SIZE: 512,
  OFF_JUMP: 0,
  JUMP: [0xeb, 0x76, 0x90],
  OFF_NAME: 3,
  NAME: 'EXFAT   ',
  OFF_MUST_BE_ZERO: 11,
  MUST_BE_ZERO_LENGTH: 53,
  OFF_PARTITION_OFFSET: 64,
  OFF_VOLUME_LENGTH: 72,
  OFF_FAT_OFFSET: 80,
  OFF_FAT_LENGTH: 84,
  OFF_CLUSTER_HEAP_OFFSET: 88,
  OFF_CLUSTER_COUNT: 92,
  OFF_ROOT_CLUSTER: 96,
  OFF_SERIAL: 100,
  OFF_REVISION: 104,
  OFF_VOLUME_FLAGS: 106,
  OFF_BYTES_PER_SECTOR_SHIFT: 108,
  OFF_SECTORS_PER_CLUSTER_SHIFT: 109,
  OFF_NUMBER_OF_FATS: 110,
  OFF_DRIVE_SELECT: 111,
  OFF_PERCENT_IN_USE: 112,
  OFF_SIGNATURE: 510,
  SIGNATURE: 0xaa55,
  /** Boot sector, 8 extended boot sectors, OEM parameters, reserved: checksummed by sector 11. */
  CHECKSUMMED_SECTORS: 11,
  CHECKSUM_SECTOR: 11,
  REGION_SECTORS: 12,
  /** Main boot region, then the backup boot region: the FAT may start no earlier. */
  MIN_FAT_OFFSET: 24,
} as const;

export const EXFAT_FLAGS = {
  ACTIVE_FAT: 0x1,
  VOLUME_DIRTY: 0x2,
  MEDIA_FAILURE: 0x4,
  CLEAR_TO_ZERO: 0x8,
} as const;

export const EXFAT_LIMITS = {
  MIN_SECTOR_SHIFT: 9,
  MAX_SECTOR_SHIFT: 12,
  /** Clusters are at most 32 MiB. */
  MAX_CLUSTER_SHIFT: 25,
  FIRST_CLUSTER: 2,
  /** Cluster numbers stop at 0xFFFFFFF6. */
  MAX_CLUSTER_COUNT: 0xfffffff5,
  /** Directories are at most 256 MiB. */
  MAX_DIR_BYTES: 256 * 1024 * 1024,
  DIR_ENTRY_SIZE: 32,
  LABEL_MAX_CHARS: 11,
} as const;

export const EXFAT_FAT = {
  FREE: 0,
  BAD: 0xfffffff7,
  END_OF_CHAIN: 0xffffffff,
  ENTRY_SIZE: 4,
} as const;

export const EXFAT_ENTRY = {
  END_OF_DIRECTORY: 0x00,
  ALLOCATION_BITMAP: 0x81,
  UPCASE_TABLE: 0x82,
  VOLUME_LABEL: 0x83,
  IN_USE: 0x80,
  OFF_TYPE: 0,
  /** Allocation bitmap: bit 0 of BitmapFlags selects the first (0) or second (1) bitmap. */
  OFF_BITMAP_FLAGS: 1,
  OFF_LABEL_CHARS: 1,
  OFF_LABEL: 2,
  OFF_FIRST_CLUSTER: 20,
  OFF_DATA_LENGTH: 24,
} as const;

export interface ExfatBootSector {
  jump: number[];
  fileSystemName: string;
  /** True when bytes 11..63 (the BPB area of FAT) are all zero, as they must be. */
  mustBeZeroOk: boolean;
  partitionOffset: bigint;
  /** In sectors. */
  volumeLength: bigint;
  fatOffset: number;
  fatLength: number;
  clusterHeapOffset: number;
  clusterCount: number;
  firstClusterOfRootDirectory: number;
  volumeSerialNumber: number;
  revisionMajor: number;
  revisionMinor: number;
  volumeFlags: number;
  bytesPerSectorShift: number;
  sectorsPerClusterShift: number;
  numberOfFats: number;
  driveSelect: number;
  percentInUse: number;
  signature: number;
}

export function parseExfatBootSector(sector: Uint8Array): ExfatBootSector {
  if (sector.length < EXFAT_BOOT.SIZE) throw corrupt('exFAT boot sector', `only ${sector.length} bytes`);
  const b = Buffer.from(sector.buffer, sector.byteOffset, EXFAT_BOOT.SIZE);
  let mustBeZeroOk = true;
  for (let i = 0; i < EXFAT_BOOT.MUST_BE_ZERO_LENGTH; i++) {
    if (b[EXFAT_BOOT.OFF_MUST_BE_ZERO + i] !== 0) mustBeZeroOk = false;
  }
  return {
    jump: [b[0], b[1], b[2]],
    fileSystemName: b.toString('latin1', EXFAT_BOOT.OFF_NAME, EXFAT_BOOT.OFF_NAME + 8),
    mustBeZeroOk,
    partitionOffset: b.readBigUInt64LE(EXFAT_BOOT.OFF_PARTITION_OFFSET),
    volumeLength: b.readBigUInt64LE(EXFAT_BOOT.OFF_VOLUME_LENGTH),
    fatOffset: b.readUInt32LE(EXFAT_BOOT.OFF_FAT_OFFSET),
    fatLength: b.readUInt32LE(EXFAT_BOOT.OFF_FAT_LENGTH),
    clusterHeapOffset: b.readUInt32LE(EXFAT_BOOT.OFF_CLUSTER_HEAP_OFFSET),
    clusterCount: b.readUInt32LE(EXFAT_BOOT.OFF_CLUSTER_COUNT),
    firstClusterOfRootDirectory: b.readUInt32LE(EXFAT_BOOT.OFF_ROOT_CLUSTER),
    volumeSerialNumber: b.readUInt32LE(EXFAT_BOOT.OFF_SERIAL),
    revisionMinor: b[EXFAT_BOOT.OFF_REVISION],
    revisionMajor: b[EXFAT_BOOT.OFF_REVISION + 1],
    volumeFlags: b.readUInt16LE(EXFAT_BOOT.OFF_VOLUME_FLAGS),
    bytesPerSectorShift: b[EXFAT_BOOT.OFF_BYTES_PER_SECTOR_SHIFT],
    sectorsPerClusterShift: b[EXFAT_BOOT.OFF_SECTORS_PER_CLUSTER_SHIFT],
    numberOfFats: b[EXFAT_BOOT.OFF_NUMBER_OF_FATS],
    driveSelect: b[EXFAT_BOOT.OFF_DRIVE_SELECT],
    percentInUse: b[EXFAT_BOOT.OFF_PERCENT_IN_USE],
    signature: b.readUInt16LE(EXFAT_BOOT.OFF_SIGNATURE),
  };
}

/** Serialises `bs` over a copy of `base` (boot code kept) or zeros; the inverse of parseExfatBootSector. */
export function writeExfatBootSector(bs: ExfatBootSector, base?: Uint8Array): Buffer {
  const b = Buffer.alloc(EXFAT_BOOT.SIZE);
  if (base) b.set(base.subarray(0, EXFAT_BOOT.SIZE));
  b.set(bs.jump.slice(0, 3), EXFAT_BOOT.OFF_JUMP);
  b.write(bs.fileSystemName.padEnd(8, ' ').slice(0, 8), EXFAT_BOOT.OFF_NAME, 8, 'latin1');
  if (bs.mustBeZeroOk)
    b.fill(0, EXFAT_BOOT.OFF_MUST_BE_ZERO, EXFAT_BOOT.OFF_MUST_BE_ZERO + EXFAT_BOOT.MUST_BE_ZERO_LENGTH);
  b.writeBigUInt64LE(bs.partitionOffset, EXFAT_BOOT.OFF_PARTITION_OFFSET);
  b.writeBigUInt64LE(bs.volumeLength, EXFAT_BOOT.OFF_VOLUME_LENGTH);
  b.writeUInt32LE(bs.fatOffset, EXFAT_BOOT.OFF_FAT_OFFSET);
  b.writeUInt32LE(bs.fatLength, EXFAT_BOOT.OFF_FAT_LENGTH);
  b.writeUInt32LE(bs.clusterHeapOffset, EXFAT_BOOT.OFF_CLUSTER_HEAP_OFFSET);
  b.writeUInt32LE(bs.clusterCount, EXFAT_BOOT.OFF_CLUSTER_COUNT);
  b.writeUInt32LE(bs.firstClusterOfRootDirectory, EXFAT_BOOT.OFF_ROOT_CLUSTER);
  b.writeUInt32LE(bs.volumeSerialNumber >>> 0, EXFAT_BOOT.OFF_SERIAL);
  b[EXFAT_BOOT.OFF_REVISION] = bs.revisionMinor;
  b[EXFAT_BOOT.OFF_REVISION + 1] = bs.revisionMajor;
  b.writeUInt16LE(bs.volumeFlags, EXFAT_BOOT.OFF_VOLUME_FLAGS);
  b[EXFAT_BOOT.OFF_BYTES_PER_SECTOR_SHIFT] = bs.bytesPerSectorShift;
  b[EXFAT_BOOT.OFF_SECTORS_PER_CLUSTER_SHIFT] = bs.sectorsPerClusterShift;
  b[EXFAT_BOOT.OFF_NUMBER_OF_FATS] = bs.numberOfFats;
  b[EXFAT_BOOT.OFF_DRIVE_SELECT] = bs.driveSelect;
  b[EXFAT_BOOT.OFF_PERCENT_IN_USE] = bs.percentInUse;
  b.writeUInt16LE(bs.signature, EXFAT_BOOT.OFF_SIGNATURE);
  return b;
}

/** True when the sector carries the exFAT name and signature (what a probe can test cheaply). */
export function looksLikeExfat(sector: Uint8Array): boolean {
  if (sector.length < EXFAT_BOOT.SIZE) return false;
  const b = Buffer.from(sector.buffer, sector.byteOffset, EXFAT_BOOT.SIZE);
  return (
    b.toString('latin1', EXFAT_BOOT.OFF_NAME, EXFAT_BOOT.OFF_NAME + 8) === EXFAT_BOOT.NAME &&
    b.readUInt16LE(EXFAT_BOOT.OFF_SIGNATURE) === EXFAT_BOOT.SIGNATURE
  );
}

/**
 * The boot checksum over the first 11 sectors of a boot region, skipping VolumeFlags and
 * PercentInUse (which change without the region being rewritten).
 */
export function exfatBootChecksum(region: Uint8Array, bytesPerSector: number): number {
  const n = bytesPerSector * EXFAT_BOOT.CHECKSUMMED_SECTORS;
  if (region.length < n) throw corrupt('exFAT boot region', `only ${region.length} of ${n} bytes`);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    if (i === 106 || i === 107 || i === EXFAT_BOOT.OFF_PERCENT_IN_USE) continue;
    sum = (((sum & 1) << 31) | (sum >>> 1)) + region[i];
    sum >>>= 0;
  }
  return sum;
}

/** The checksum sector: the checksum repeated over the whole sector. */
export function writeExfatChecksumSector(checksum: number, bytesPerSector: number): Buffer {
  const b = Buffer.alloc(bytesPerSector);
  for (let off = 0; off < bytesPerSector; off += 4) b.writeUInt32LE(checksum >>> 0, off);
  return b;
}

/** Throws corrupt() unless every 32-bit word of sector 11 equals the checksum of sectors 0..10. */
export function verifyExfatBootRegion(region: Uint8Array, bytesPerSector: number): number {
  const need = bytesPerSector * EXFAT_BOOT.REGION_SECTORS;
  if (region.length < need) throw corrupt('exFAT boot region', `only ${region.length} of ${need} bytes`);
  const sum = exfatBootChecksum(region, bytesPerSector);
  const b = Buffer.from(region.buffer, region.byteOffset, need);
  const at = bytesPerSector * EXFAT_BOOT.CHECKSUM_SECTOR;
  for (let off = 0; off < bytesPerSector; off += 4) {
    const stored = b.readUInt32LE(at + off);
    if (stored !== sum) {
      throw corrupt(
        'exFAT boot region',
        `checksum mismatch (computed 0x${sum.toString(16)}, stored 0x${stored.toString(16)})`,
      );
    }
  }
  return sum;
}

export interface ExfatLayout {
  bytesPerSector: number;
  clusterBytes: number;
  volumeBytes: number;
  /** Byte offset of FAT copy 0; copy k is at fatStart + k * fatBytes. */
  fatStart: number;
  fatBytes: number;
  numberOfFats: number;
  /** The FAT (and allocation bitmap) in use: 1 only on TexFAT volumes with the ActiveFat flag. */
  activeFat: number;
  heapStart: number;
  clusterCount: number;
  rootCluster: number;
  dirty: boolean;
  mediaFailure: boolean;
}

/** Derives byte offsets from the boot sector and checks them against the specification's ranges. */
export function exfatLayout(bs: ExfatBootSector): ExfatLayout {
  const bad = (why: string) => corrupt('exFAT boot sector', why);
  if (bs.fileSystemName !== EXFAT_BOOT.NAME) throw bad('no "EXFAT   " file system name');
  if (bs.signature !== EXFAT_BOOT.SIGNATURE) throw bad('no 0x55AA signature');
  if (!bs.mustBeZeroOk) throw bad('bytes 11..63 are not zero');
  if (
    bs.bytesPerSectorShift < EXFAT_LIMITS.MIN_SECTOR_SHIFT ||
    bs.bytesPerSectorShift > EXFAT_LIMITS.MAX_SECTOR_SHIFT
  ) {
    throw bad(`BytesPerSectorShift ${bs.bytesPerSectorShift} outside 9..12`);
  }
  if (bs.sectorsPerClusterShift > EXFAT_LIMITS.MAX_CLUSTER_SHIFT - bs.bytesPerSectorShift) {
    throw bad(`cluster size 2^${bs.bytesPerSectorShift + bs.sectorsPerClusterShift} is above 32 MiB`);
  }
  if (bs.numberOfFats !== 1 && bs.numberOfFats !== 2)
    throw bad(`NumberOfFats ${bs.numberOfFats} is not 1 or 2`);
  if (bs.revisionMajor !== 1)
    throw bad(`file system revision ${bs.revisionMajor}.${bs.revisionMinor} is not 1.x`);
  const bps = 2 ** bs.bytesPerSectorShift;
  const spc = 2 ** bs.sectorsPerClusterShift;
  if (bs.volumeLength > BigInt(Number.MAX_SAFE_INTEGER) / BigInt(bps))
    throw bad('VolumeLength is absurdly large');
  const volumeSectors = Number(bs.volumeLength);
  if (bs.fatOffset < EXFAT_BOOT.MIN_FAT_OFFSET)
    throw bad(`FatOffset ${bs.fatOffset} overlaps the boot regions`);
  if (bs.fatLength === 0) throw bad('FatLength is 0');
  const fatsEnd = bs.fatOffset + bs.numberOfFats * bs.fatLength;
  if (bs.clusterHeapOffset < fatsEnd)
    throw bad(`ClusterHeapOffset ${bs.clusterHeapOffset} overlaps the FAT(s) ending at ${fatsEnd}`);
  if (bs.clusterCount === 0 || bs.clusterCount > EXFAT_LIMITS.MAX_CLUSTER_COUNT)
    throw bad(`ClusterCount ${bs.clusterCount} is out of range`);
  const heapEnd = bs.clusterHeapOffset + bs.clusterCount * spc;
  if (heapEnd > volumeSectors) {
    throw bad(`the cluster heap ends at sector ${heapEnd}, beyond VolumeLength ${volumeSectors}`);
  }
  const fatEntriesNeeded = bs.clusterCount + EXFAT_LIMITS.FIRST_CLUSTER;
  if (bs.fatLength * bps < fatEntriesNeeded * EXFAT_FAT.ENTRY_SIZE) {
    throw bad(`FatLength ${bs.fatLength} sectors is too small for ${bs.clusterCount} clusters`);
  }
  const lastCluster = bs.clusterCount + 1;
  if (
    bs.firstClusterOfRootDirectory < EXFAT_LIMITS.FIRST_CLUSTER ||
    bs.firstClusterOfRootDirectory > lastCluster
  ) {
    throw bad(`root directory cluster ${bs.firstClusterOfRootDirectory} is outside 2..${lastCluster}`);
  }
  const activeFat = bs.numberOfFats === 2 && bs.volumeFlags & EXFAT_FLAGS.ACTIVE_FAT ? 1 : 0;
  return {
    bytesPerSector: bps,
    clusterBytes: bps * spc,
    volumeBytes: volumeSectors * bps,
    fatStart: bs.fatOffset * bps,
    fatBytes: bs.fatLength * bps,
    numberOfFats: bs.numberOfFats,
    activeFat,
    heapStart: bs.clusterHeapOffset * bps,
    clusterCount: bs.clusterCount,
    rootCluster: bs.firstClusterOfRootDirectory,
    dirty: (bs.volumeFlags & EXFAT_FLAGS.VOLUME_DIRTY) !== 0,
    mediaFailure: (bs.volumeFlags & EXFAT_FLAGS.MEDIA_FAILURE) !== 0,
  };
}

export interface ExfatBitmapEntry {
  /** 0 = first allocation bitmap, 1 = second (TexFAT). */
  index: number;
  firstCluster: number;
  dataLength: number;
}

export interface ExfatRootEntries {
  bitmaps: ExfatBitmapEntry[];
  upcase?: { firstCluster: number; dataLength: number };
  /** UTF-16 code units as stored, CharacterCount of them (at most 11). */
  label?: string;
  /** True once the end-of-directory entry was seen. */
  ended: boolean;
}

function dataLength(b: Buffer, off: number, what: string): number {
  const v = b.readBigUInt64LE(off + EXFAT_ENTRY.OFF_DATA_LENGTH);
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    throw corrupt(`exFAT ${what} entry`, 'DataLength is absurdly large');
  return Number(v);
}

/**
 * Scans directory-entry bytes for the critical primary entries of the root directory, adding to
 * `into` (a root directory spans clusters: call once per cluster until `ended`).
 */
export function scanExfatRootEntries(dir: Uint8Array, into: ExfatRootEntries): ExfatRootEntries {
  const b = Buffer.from(dir.buffer, dir.byteOffset, dir.byteLength);
  for (
    let off = 0;
    off + EXFAT_LIMITS.DIR_ENTRY_SIZE <= b.length && !into.ended;
    off += EXFAT_LIMITS.DIR_ENTRY_SIZE
  ) {
    const type = b[off + EXFAT_ENTRY.OFF_TYPE];
    if (type === EXFAT_ENTRY.END_OF_DIRECTORY) {
      into.ended = true;
    } else if (type === EXFAT_ENTRY.ALLOCATION_BITMAP) {
      into.bitmaps.push({
        index: b[off + EXFAT_ENTRY.OFF_BITMAP_FLAGS] & 1,
        firstCluster: b.readUInt32LE(off + EXFAT_ENTRY.OFF_FIRST_CLUSTER),
        dataLength: dataLength(b, off, 'allocation bitmap'),
      });
    } else if (type === EXFAT_ENTRY.UPCASE_TABLE && !into.upcase) {
      into.upcase = {
        firstCluster: b.readUInt32LE(off + EXFAT_ENTRY.OFF_FIRST_CLUSTER),
        dataLength: dataLength(b, off, 'up-case table'),
      };
    } else if (type === EXFAT_ENTRY.VOLUME_LABEL && into.label === undefined) {
      const chars = Math.min(b[off + EXFAT_ENTRY.OFF_LABEL_CHARS], EXFAT_LIMITS.LABEL_MAX_CHARS);
      into.label = b.toString(
        'utf16le',
        off + EXFAT_ENTRY.OFF_LABEL,
        off + EXFAT_ENTRY.OFF_LABEL + chars * 2,
      );
    }
  }
  return into;
}
