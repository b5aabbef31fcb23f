/**
 * Pure codecs for the ext2/3/4 superblock and block-group descriptors, with the checksums ext4
 * keeps over them. Offsets and flags are those of the kernel's fs/ext4/ext4.h.
 */
import { corrupt } from '../errors.ts';
import { crc16Update, crc32cUpdate } from './crc.ts';

export const EXT_SUPERBLOCK_OFFSET = 1024;
export const EXT_SUPERBLOCK_SIZE = 1024;
export const EXT_MAGIC = 0xef53;

export const COMPAT = {
  HAS_JOURNAL: 0x4,
  RESIZE_INODE: 0x10,
  DIR_INDEX: 0x20,
  SPARSE_SUPER2: 0x200,
} as const;
export const INCOMPAT = {
  FILETYPE: 0x2,
  RECOVER: 0x4,
  JOURNAL_DEV: 0x8,
  META_BG: 0x10,
  EXTENTS: 0x40,
  BIT64: 0x80,
  MMP: 0x100,
  FLEX_BG: 0x200,
  CSUM_SEED: 0x2000,
  ENCRYPT: 0x10000,
} as const;
export const RO_COMPAT = {
  SPARSE_SUPER: 0x1,
  LARGE_FILE: 0x2,
  BTREE_DIR: 0x4,
  HUGE_FILE: 0x8,
  GDT_CSUM: 0x10,
  DIR_NLINK: 0x20,
  EXTRA_ISIZE: 0x40,
  BIGALLOC: 0x200,
  METADATA_CSUM: 0x400,
} as const;
export const BG_FLAGS = { INODE_UNINIT: 0x1, BLOCK_UNINIT: 0x2, INODE_ZEROED: 0x4 } as const;
export const STATE = { VALID: 0x1, ERROR: 0x2, ORPHANS: 0x4 } as const;

export interface ExtSuperblock {
  inodesCount: number;
  blocksCount: number;
  freeBlocksCount: number;
  firstDataBlock: number;
  blockSize: number;
  clusterSize: number;
  blocksPerGroup: number;
  clustersPerGroup: number;
  inodesPerGroup: number;
  state: number;
  revLevel: number;
  inodeSize: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  uuid: Uint8Array;
  volumeName: string;
  reservedGdtBlocks: number;
  descSize: number;
  firstMetaBg: number;
  backupBgs: [number, number];
  checksumSeed: number;
  storedChecksum: number;
  /** The 1024 raw bytes, for checksum verification. */
  raw: Uint8Array;
}

export function hasMagic(head: Uint8Array): boolean {
  const off = EXT_SUPERBLOCK_OFFSET + 0x38;
  return head.length >= off + 2 && (head[off] | (head[off + 1] << 8)) === EXT_MAGIC;
}

function u64(lo: number, hi: number): number {
  return hi * 0x1_0000_0000 + lo;
}

/** Parses the superblock (the 1024 bytes that start at byte 1024 of the filesystem). */
export function parseSuperblock(raw: Uint8Array): ExtSuperblock {
  if (raw.length < EXT_SUPERBLOCK_SIZE) throw corrupt('ext superblock', 'shorter than 1024 bytes');
  const b = Buffer.from(raw.buffer, raw.byteOffset, EXT_SUPERBLOCK_SIZE);
  if (b.readUInt16LE(0x38) !== EXT_MAGIC) throw corrupt('ext superblock', 'magic 0xEF53 missing');
  const featureIncompat = b.readUInt32LE(0x60);
  const is64 = (featureIncompat & INCOMPAT.BIT64) !== 0;
  const logBlock = b.readUInt32LE(0x18);
  const logCluster = b.readUInt32LE(0x1c);
  // ext4 allows 1 KiB..64 KiB blocks; anything else is not an ext filesystem we can trust.
  if (logBlock > 6) throw corrupt('ext superblock', `block size 2^${logBlock + 10} is out of range`);
  const featureRoCompat = b.readUInt32LE(0x64);
  const bigalloc = (featureRoCompat & RO_COMPAT.BIGALLOC) !== 0;
  if (bigalloc && (logCluster < logBlock || logCluster > 29)) {
    throw corrupt('ext superblock', `cluster size 2^${logCluster + 10} is out of range`);
  }
  const revLevel = b.readUInt32LE(0x4c);
  const descSizeField = b.readUInt16LE(0xfe);
  return {
    inodesCount: b.readUInt32LE(0x00),
    blocksCount: u64(b.readUInt32LE(0x04), is64 ? b.readUInt32LE(0x150) : 0),
    freeBlocksCount: u64(b.readUInt32LE(0x0c), is64 ? b.readUInt32LE(0x158) : 0),
    firstDataBlock: b.readUInt32LE(0x14),
    blockSize: 1024 << logBlock,
    clusterSize: bigalloc ? 1024 * 2 ** logCluster : 1024 << logBlock,
    blocksPerGroup: b.readUInt32LE(0x20),
    clustersPerGroup: bigalloc ? b.readUInt32LE(0x24) : b.readUInt32LE(0x20),
    inodesPerGroup: b.readUInt32LE(0x28),
    state: b.readUInt16LE(0x3a),
    revLevel,
    inodeSize: revLevel >= 1 ? b.readUInt16LE(0x58) : 128,
    featureCompat: b.readUInt32LE(0x5c),
    featureIncompat,
    featureRoCompat,
    uuid: Uint8Array.from(b.subarray(0x68, 0x78)),
    volumeName: decodeCString(b.subarray(0x78, 0x88)),
    reservedGdtBlocks: b.readUInt16LE(0xce),
    descSize: is64 ? descSizeField : 32,
    firstMetaBg: b.readUInt32LE(0x104),
    backupBgs: [b.readUInt32LE(0x24c), b.readUInt32LE(0x250)],
    checksumSeed: b.readUInt32LE(0x270),
    storedChecksum: b.readUInt32LE(0x3fc),
    raw: Uint8Array.from(b),
  };
}

function decodeCString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return Buffer.from(bytes.subarray(0, end < 0 ? bytes.length : end)).toString('utf8');
}

export function hasFeature(sb: ExtSuperblock, kind: 'compat' | 'incompat' | 'ro', flag: number): boolean {
  const v =
    kind === 'compat' ? sb.featureCompat : kind === 'incompat' ? sb.featureIncompat : sb.featureRoCompat;
  return (v & flag) !== 0;
}

/** Which of ext2 / ext3 / ext4 blkid would call it (libblkid's ext.c rules). */
export function extVersion(sb: ExtSuperblock): 'ext2' | 'ext3' | 'ext4' {
  const ext3RoUnsupported = ~(RO_COMPAT.SPARSE_SUPER | RO_COMPAT.LARGE_FILE | RO_COMPAT.BTREE_DIR);
  const ext3IncompatUnsupported = ~(INCOMPAT.FILETYPE | INCOMPAT.RECOVER | INCOMPAT.META_BG);
  const beyondExt3 =
    (sb.featureRoCompat & ext3RoUnsupported) !== 0 || (sb.featureIncompat & ext3IncompatUnsupported) !== 0;
  if (beyondExt3) return 'ext4';
  return hasFeature(sb, 'compat', COMPAT.HAS_JOURNAL) ? 'ext3' : 'ext2';
}

export function formatUuid(u: Uint8Array): string {
  const h = Buffer.from(u).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

export function metadataCsum(sb: ExtSuperblock): boolean {
  return hasFeature(sb, 'ro', RO_COMPAT.METADATA_CSUM);
}

/** The seed every metadata_csum checksum starts from. */
export function csumSeed(sb: ExtSuperblock): number {
  if (hasFeature(sb, 'incompat', INCOMPAT.CSUM_SEED)) return sb.checksumSeed >>> 0;
  return crc32cUpdate(0xffffffff, sb.uuid);
}

/** True when the superblock carries no checksum or the checksum matches. */
export function superblockChecksumOk(sb: ExtSuperblock): boolean {
  if (!metadataCsum(sb)) return true;
  return crc32cUpdate(0xffffffff, sb.raw, 0, 0x3fc) === sb.storedChecksum >>> 0;
}

export interface GroupDesc {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  freeBlocks: number;
  flags: number;
  blockBitmapCsum: number;
  checksum: number;
}

export function parseGroupDesc(b: Buffer, off: number, descSize: number): GroupDesc {
  const wide = descSize >= 64;
  return {
    blockBitmap: u64(b.readUInt32LE(off), wide ? b.readUInt32LE(off + 0x20) : 0),
    inodeBitmap: u64(b.readUInt32LE(off + 0x04), wide ? b.readUInt32LE(off + 0x24) : 0),
    inodeTable: u64(b.readUInt32LE(off + 0x08), wide ? b.readUInt32LE(off + 0x28) : 0),
    freeBlocks: b.readUInt16LE(off + 0x0c) + (wide ? b.readUInt16LE(off + 0x2c) * 0x10000 : 0),
    flags: b.readUInt16LE(off + 0x12),
    blockBitmapCsum: b.readUInt16LE(off + 0x18) + (wide ? b.readUInt16LE(off + 0x38) * 0x10000 : 0),
    checksum: b.readUInt16LE(off + 0x1e),
  };
}

/**
 * Whether a group descriptor's checksum is right. Filesystems with neither metadata_csum nor
 * uninit_bg have no descriptor checksum: true.
 */
export function groupDescChecksumOk(
  sb: ExtSuperblock,
  group: number,
  b: Buffer,
  off: number,
  seed: number,
): boolean {
  const groupLe = Buffer.alloc(4);
  groupLe.writeUInt32LE(group >>> 0);
  const size = sb.descSize;
  const stored = b.readUInt16LE(off + 0x1e);
  if (metadataCsum(sb)) {
    let c = crc32cUpdate(seed, groupLe);
    c = crc32cUpdate(c, b, off, off + 0x1e);
    c = crc32cUpdate(c, new Uint8Array(2));
    c = crc32cUpdate(c, b, off + 0x20, off + size);
    return (c & 0xffff) === stored;
  }
  if (hasFeature(sb, 'ro', RO_COMPAT.GDT_CSUM)) {
    let c = crc16Update(0xffff, sb.uuid);
    c = crc16Update(c, groupLe);
    c = crc16Update(c, b, off, off + 0x1e);
    if (size > 0x20) c = crc16Update(c, b, off + 0x20, off + size);
    return c === stored;
  }
  return true;
}

/** metadata_csum covers each initialised block bitmap; the high half exists only in 64-byte descriptors. */
export function blockBitmapChecksumOk(
  sb: ExtSuperblock,
  gd: GroupDesc,
  bitmap: Uint8Array,
  seed: number,
): boolean {
  if (!metadataCsum(sb)) return true;
  const c = crc32cUpdate(seed, bitmap, 0, Math.min(bitmap.length, sb.clustersPerGroup / 8));
  return sb.descSize >= 64
    ? c >>> 0 === gd.blockBitmapCsum >>> 0
    : (c & 0xffff) === (gd.blockBitmapCsum & 0xffff);
}

/** Groups that hold a superblock backup (and with it, without meta_bg, a GDT copy). */
export function groupHasSuper(sb: ExtSuperblock, group: number): boolean {
  if (group === 0) return true;
  if (hasFeature(sb, 'compat', COMPAT.SPARSE_SUPER2))
    return group === sb.backupBgs[0] || group === sb.backupBgs[1];
  if (group <= 1 || !hasFeature(sb, 'ro', RO_COMPAT.SPARSE_SUPER)) return true;
  if (!(group & 1)) return false;
  return isPowerOf(group, 3) || isPowerOf(group, 5) || isPowerOf(group, 7);
}

function isPowerOf(n: number, base: number): boolean {
  let x = base;
  while (x < n) x *= base;
  return x === n;
}
