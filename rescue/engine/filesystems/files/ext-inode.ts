/**
 * Pure codecs for what reading files on ext2/3/4 needs beyond the superblock: inodes (and their
 * metadata_csum checksum), extent-tree nodes, directory blocks, and the in-inode extended
 * attributes that hold the rest of inline data. Offsets are those of the kernel's fs/ext4/ext4.h,
 * ext4_extents.h and xattr.h.
 */
import { corrupt } from '../../errors.ts';
import { crc32cUpdate } from '../crc.ts';

export const EXT_ROOT_INODE = 2;
/** i_block: 15 32-bit words, 60 bytes. */
export const I_BLOCK_BYTES = 60;
export const GOOD_OLD_INODE_SIZE = 128;
export const EXT_DIRECT_BLOCKS = 12;

export const INODE = {
  OFF_MODE: 0x00,
  OFF_SIZE_LO: 0x04,
  OFF_MTIME: 0x10,
  OFF_DTIME: 0x14,
  OFF_LINKS: 0x1a,
  OFF_BLOCKS_LO: 0x1c,
  OFF_FLAGS: 0x20,
  OFF_BLOCK: 0x28,
  OFF_GENERATION: 0x64,
  OFF_FILE_ACL_LO: 0x68,
  OFF_SIZE_HIGH: 0x6c,
  OFF_BLOCKS_HIGH: 0x74,
  OFF_FILE_ACL_HIGH: 0x76,
  OFF_CHECKSUM_LO: 0x7c,
  OFF_EXTRA_ISIZE: 0x80,
  OFF_CHECKSUM_HI: 0x82,
  OFF_MTIME_EXTRA: 0x88,
} as const;

export const S_IFMT = 0xf000;
export const S_IF = {
  FIFO: 0x1000,
  CHR: 0x2000,
  DIR: 0x4000,
  BLK: 0x6000,
  REG: 0x8000,
  LNK: 0xa000,
  SOCK: 0xc000,
} as const;

export const INODE_FLAGS = {
  COMPR: 0x4,
  ENCRYPT: 0x800,
  INDEX: 0x1000,
  HUGE_FILE: 0x40000,
  EXTENTS: 0x80000,
  EA_INODE: 0x200000,
  INLINE_DATA: 0x10000000,
  CASEFOLD: 0x40000000,
} as const;

export interface ExtInode {
  mode: number;
  kind: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  linksCount: number;
  flags: number;
  /** i_blocks in its raw units (512-byte sectors, or fs blocks with HUGE_FILE_FL). */
  blocks: number;
  fileAcl: number;
  generation: number;
  extraIsize: number;
  mtime: Date;
  /** The 60 bytes of i_block: block map, extent root, fast symlink target or inline data. */
  iBlock: Buffer;
  /** The whole on-disk inode, for inline-data extended attributes. */
  raw: Buffer;
}

function kindOf(mode: number): ExtInode['kind'] {
  switch (mode & S_IFMT) {
    case S_IF.REG:
      return 'file';
    case S_IF.DIR:
      return 'dir';
    case S_IF.LNK:
      return 'symlink';
    default:
      return 'other';
  }
}

/** Parses one inode of `inodeSize` bytes (a copy is kept). */
export function parseInode(bytes: Uint8Array, inodeSize: number, what: string): ExtInode {
  if (bytes.length < inodeSize || inodeSize < GOOD_OLD_INODE_SIZE) throw corrupt(what, 'inode is truncated');
  const b = Buffer.from(bytes.subarray(0, inodeSize));
  let extraIsize = 0;
  if (inodeSize > GOOD_OLD_INODE_SIZE) {
    extraIsize = b.readUInt16LE(INODE.OFF_EXTRA_ISIZE);
    if (extraIsize & 3 || GOOD_OLD_INODE_SIZE + extraIsize > inodeSize)
      throw corrupt(what, `extra inode size ${extraIsize}`);
  }
  const mode = b.readUInt16LE(INODE.OFF_MODE);
  const size = b.readUInt32LE(INODE.OFF_SIZE_HIGH) * 0x1_0000_0000 + b.readUInt32LE(INODE.OFF_SIZE_LO);
  if (!Number.isSafeInteger(size)) throw corrupt(what, `size ${size} is beyond 2^53`);
  let seconds = b.readInt32LE(INODE.OFF_MTIME);
  let ms = 0;
  if (extraIsize >= INODE.OFF_MTIME_EXTRA + 4 - GOOD_OLD_INODE_SIZE) {
    const extra = b.readUInt32LE(INODE.OFF_MTIME_EXTRA);
    // Two epoch bits extend the signed 32-bit seconds past 2038; the rest are nanoseconds.
    seconds += (extra & 3) * 0x1_0000_0000;
    ms = Math.floor((extra >>> 2) / 1e6);
  }
  return {
    mode,
    kind: kindOf(mode),
    size,
    linksCount: b.readUInt16LE(INODE.OFF_LINKS),
    flags: b.readUInt32LE(INODE.OFF_FLAGS),
    blocks: b.readUInt16LE(INODE.OFF_BLOCKS_HIGH) * 0x1_0000_0000 + b.readUInt32LE(INODE.OFF_BLOCKS_LO),
    fileAcl: b.readUInt16LE(INODE.OFF_FILE_ACL_HIGH) * 0x1_0000_0000 + b.readUInt32LE(INODE.OFF_FILE_ACL_LO),
    generation: b.readUInt32LE(INODE.OFF_GENERATION),
    extraIsize,
    mtime: new Date(seconds * 1000 + Math.min(ms, 999)),
    iBlock: b.subarray(INODE.OFF_BLOCK, INODE.OFF_BLOCK + I_BLOCK_BYTES),
    raw: b,
  };
}

function le32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** The per-inode seed of metadata_csum: crc32c(fs seed, inode number, generation). */
export function inodeCsumSeed(fsSeed: number, ino: number, generation: number): number {
  return crc32cUpdate(crc32cUpdate(fsSeed, le32(ino)), le32(generation));
}

/** True when the inode's metadata_csum checksum matches (the kernel's ext4_inode_csum_verify). */
export function inodeChecksumOk(raw: Buffer, inodeSize: number, inodeSeed: number): boolean {
  const zero = new Uint8Array(2);
  let c = crc32cUpdate(inodeSeed, raw, 0, INODE.OFF_CHECKSUM_LO);
  c = crc32cUpdate(c, zero);
  c = crc32cUpdate(c, raw, INODE.OFF_CHECKSUM_LO + 2, GOOD_OLD_INODE_SIZE);
  let hasHi = false;
  if (inodeSize > GOOD_OLD_INODE_SIZE) {
    const extra = raw.readUInt16LE(INODE.OFF_EXTRA_ISIZE);
    c = crc32cUpdate(c, raw, GOOD_OLD_INODE_SIZE, INODE.OFF_CHECKSUM_HI);
    let next = INODE.OFF_CHECKSUM_HI;
    if (GOOD_OLD_INODE_SIZE + extra >= INODE.OFF_CHECKSUM_HI + 2) {
      hasHi = true;
      c = crc32cUpdate(c, zero);
      next += 2;
    }
    c = crc32cUpdate(c, raw, next, inodeSize);
  }
  const lo = raw.readUInt16LE(INODE.OFF_CHECKSUM_LO);
  if (!hasHi) return (c & 0xffff) === lo;
  return c >>> 0 === ((raw.readUInt16LE(INODE.OFF_CHECKSUM_HI) << 16) | lo) >>> 0;
}

export const EXTENT = {
  MAGIC: 0xf30a,
  HEADER_SIZE: 12,
  ENTRY_SIZE: 12,
  /** The kernel's EXT4_MAX_EXTENT_DEPTH. */
  MAX_DEPTH: 5,
  /** ee_len above this marks an uninitialised (preallocated, reads as zeros) extent. */
  INIT_MAX_LEN: 32768,
} as const;

export interface ExtentLeaf {
  block: number;
  length: number;
  start: number;
  uninit: boolean;
}

export interface ExtentIndex {
  block: number;
  leaf: number;
}

export interface ExtentNode {
  depth: number;
  max: number;
  leaves: ExtentLeaf[];
  indexes: ExtentIndex[];
}

/** One extent-tree node (the 60-byte root in the inode or a tree block). */
export function parseExtentNode(bytes: Uint8Array, what: string): ExtentNode {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < EXTENT.HEADER_SIZE) throw corrupt(what, 'extent header is truncated');
  if (b.readUInt16LE(0) !== EXTENT.MAGIC) throw corrupt(what, 'extent header magic 0xF30A missing');
  const entries = b.readUInt16LE(2);
  const max = b.readUInt16LE(4);
  const depth = b.readUInt16LE(6);
  if (depth > EXTENT.MAX_DEPTH) throw corrupt(what, `extent tree depth ${depth}`);
  if (entries > max || EXTENT.HEADER_SIZE + max * EXTENT.ENTRY_SIZE > b.length)
    throw corrupt(what, `extent node with ${entries} of ${max} entries does not fit`);
  const node: ExtentNode = { depth, max, leaves: [], indexes: [] };
  for (let i = 0; i < entries; i++) {
    const off = EXTENT.HEADER_SIZE + i * EXTENT.ENTRY_SIZE;
    const block = b.readUInt32LE(off);
    if (depth === 0) {
      let length = b.readUInt16LE(off + 4);
      const uninit = length > EXTENT.INIT_MAX_LEN;
      if (uninit) length -= EXTENT.INIT_MAX_LEN;
      if (length === 0) throw corrupt(what, `extent ${i} has length 0`);
      const start = b.readUInt16LE(off + 6) * 0x1_0000_0000 + b.readUInt32LE(off + 8);
      node.leaves.push({ block, length, start, uninit });
    } else {
      node.indexes.push({ block, leaf: b.readUInt16LE(off + 8) * 0x1_0000_0000 + b.readUInt32LE(off + 4) });
    }
  }
  return node;
}

/** metadata_csum of an extent tree block: crc32c over the header and all `max` slots, stored after them. */
export function extentBlockChecksumOk(block: Buffer, node: ExtentNode, inodeSeed: number): boolean {
  const tail = EXTENT.HEADER_SIZE + node.max * EXTENT.ENTRY_SIZE;
  if (tail + 4 > block.length) return false;
  return crc32cUpdate(inodeSeed, block, 0, tail) === block.readUInt32LE(tail);
}

export const DIRENT = {
  OFF_INODE: 0,
  OFF_REC_LEN: 4,
  OFF_NAME_LEN: 6,
  OFF_FILE_TYPE: 7,
  OFF_NAME: 8,
  /** EXT4_DIR_REC_LEN(1): the smallest entry. */
  MIN_REC_LEN: 12,
} as const;

export interface ExtDirEntry {
  inode: number;
  /** The name's bytes: ext names are byte strings, usually UTF-8. */
  name: Buffer;
}

/** rec_len as the kernel decodes it: 64 KiB blocks store 65536 as 0 or 65535. */
function recLen(raw: number, blockSize: number): number {
  if (blockSize < 65536) return raw;
  if (raw === 65535 || raw === 0) return blockSize;
  return (raw & 65532) | ((raw & 3) << 16);
}

/**
 * The live entries (inode ≠ 0) of one directory block, or of one region of inline directory data
 * (`region` bytes long). Entries must tile the region exactly; htree index blocks look like one
 * empty entry covering the block and so are skipped, as the kernel's linear scan skips them.
 */
export function parseDirBlock(
  bytes: Uint8Array,
  fileType: boolean,
  blockSize: number,
  what: string,
): ExtDirEntry[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ExtDirEntry[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + DIRENT.OFF_NAME > b.length) throw corrupt(what, `directory entry at ${off} is truncated`);
    const inode = b.readUInt32LE(off + DIRENT.OFF_INODE);
    const len = recLen(b.readUInt16LE(off + DIRENT.OFF_REC_LEN), blockSize);
    const nameLen = fileType ? b[off + DIRENT.OFF_NAME_LEN] : b.readUInt16LE(off + DIRENT.OFF_NAME_LEN);
    if (len < DIRENT.MIN_REC_LEN || len & 3 || off + len > b.length || DIRENT.OFF_NAME + nameLen > len) {
      throw corrupt(what, `directory entry at ${off}: record length ${len}, name length ${nameLen}`);
    }
    if (inode !== 0 && nameLen > 0) {
      out.push({
        inode,
        name: Buffer.from(b.subarray(off + DIRENT.OFF_NAME, off + DIRENT.OFF_NAME + nameLen)),
      });
    }
    off += len;
  }
  return out;
}

export const XATTR = {
  IBODY_MAGIC: 0xea020000,
  ENTRY_HEADER: 16,
  INDEX_SYSTEM: 7,
} as const;

/**
 * The value of the in-inode extended attribute `system.<name>` (inline data keeps the bytes past
 * the first 60 in `system.data`), or undefined when the inode has none.
 */
export function ibodyXattr(ino: ExtInode, inodeSize: number, name: string, what: string): Buffer | undefined {
  const start = GOOD_OLD_INODE_SIZE + ino.extraIsize;
  if (inodeSize <= GOOD_OLD_INODE_SIZE || start + 4 > inodeSize) return undefined;
  const b = ino.raw;
  if (b.readUInt32LE(start) !== XATTR.IBODY_MAGIC) return undefined;
  const first = start + 4;
  let off = first;
  // Each entry takes at least 16 bytes: the loop ends within the inode.
  while (off + 4 <= inodeSize && b.readUInt32LE(off) !== 0) {
    if (off + XATTR.ENTRY_HEADER > inodeSize)
      throw corrupt(what, 'extended attribute entry overruns the inode');
    const nameLen = b[off];
    const index = b[off + 1];
    const valueOffs = b.readUInt16LE(off + 2);
    const valueInum = b.readUInt32LE(off + 4);
    const valueSize = b.readUInt32LE(off + 8);
    const entryEnd = off + XATTR.ENTRY_HEADER + nameLen;
    if (entryEnd > inodeSize) throw corrupt(what, 'extended attribute name overruns the inode');
    const entryName = b.toString('latin1', off + XATTR.ENTRY_HEADER, entryEnd);
    if (index === XATTR.INDEX_SYSTEM && entryName === name) {
      if (valueInum !== 0) throw corrupt(what, `system.${name} lives in another inode`);
      if (first + valueOffs + valueSize > inodeSize)
        throw corrupt(what, `value of system.${name} overruns the inode`);
      return Buffer.from(b.subarray(first + valueOffs, first + valueOffs + valueSize));
    }
    off = (entryEnd + 3) & ~3;
  }
  return undefined;
}
