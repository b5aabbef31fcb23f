/**
 * NTFS directory indexes: $INDEX_ROOT (resident B+tree root), INDX blocks of $INDEX_ALLOCATION
 * and the index entries in both, whose keys are $FILE_NAME values. Pure codec.
 */
import { corrupt } from '../errors.ts';
import { type FileName, type MftRef, parseFileName, readMftRef } from './ntfs-attrs.ts';
import { applyFixups } from './ntfs-record.ts';

export const INDEX_ROOT = {
  OFF_INDEXED_TYPE: 0x00,
  OFF_COLLATION: 0x04,
  OFF_BLOCK_SIZE: 0x08,
  OFF_CLUSTERS_PER_BLOCK: 0x0c,
  OFF_HEADER: 0x10,
} as const;

export const INDEX_HEADER = {
  OFF_ENTRIES: 0x00,
  OFF_LENGTH: 0x04,
  OFF_ALLOCATED: 0x08,
  OFF_FLAGS: 0x0c,
  SIZE: 0x10,
  /** The node has children in $INDEX_ALLOCATION. */
  FLAG_LARGE: 0x01,
} as const;

export const INDX_BLOCK = {
  MAGIC: 'INDX',
  OFF_VCN: 0x10,
  OFF_HEADER: 0x18,
} as const;

export const INDEX_ENTRY = {
  OFF_REFERENCE: 0x00,
  OFF_LENGTH: 0x08,
  OFF_KEY_LENGTH: 0x0a,
  OFF_FLAGS: 0x0c,
  OFF_KEY: 0x10,
  FLAG_NODE: 0x01,
  FLAG_END: 0x02,
} as const;

export interface IndexEntry {
  ref: MftRef;
  flags: number;
  /** The $FILE_NAME key; absent on the END entry. */
  key?: FileName;
  /** VCN of the child block holding the keys that sort before this one. */
  childVcn?: number;
}

export interface IndexNode {
  flags: number;
  entries: IndexEntry[];
}

function view(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Entries of one node whose INDEX_HEADER is at `headerOff`; everything bounded by `buf`. */
function parseIndexNode(buf: Buffer, headerOff: number, what: string): IndexNode {
  if (headerOff + INDEX_HEADER.SIZE > buf.length) throw corrupt(what, 'index header overruns');
  const entriesOff = buf.readUInt32LE(headerOff + INDEX_HEADER.OFF_ENTRIES);
  const length = buf.readUInt32LE(headerOff + INDEX_HEADER.OFF_LENGTH);
  const flags = buf[headerOff + INDEX_HEADER.OFF_FLAGS];
  const end = headerOff + length;
  if (entriesOff < INDEX_HEADER.SIZE || entriesOff & 7 || length < entriesOff || end > buf.length) {
    throw corrupt(what, `index header: entries at ${entriesOff}, length ${length}`);
  }
  const entries: IndexEntry[] = [];
  let off = headerOff + entriesOff;
  // Every entry takes at least 16 bytes, so this ends within (length / 16) steps.
  while (off + INDEX_ENTRY.OFF_KEY <= end) {
    const entryLength = buf.readUInt16LE(off + INDEX_ENTRY.OFF_LENGTH);
    const keyLength = buf.readUInt16LE(off + INDEX_ENTRY.OFF_KEY_LENGTH);
    const eflags = buf.readUInt16LE(off + INDEX_ENTRY.OFF_FLAGS);
    const minLength = INDEX_ENTRY.OFF_KEY + (eflags & INDEX_ENTRY.FLAG_NODE ? 8 : 0);
    if (entryLength < minLength || entryLength & 7 || off + entryLength > end) {
      throw corrupt(what, `index entry at ${off - headerOff} has length ${entryLength}`);
    }
    const entry: IndexEntry = { ref: readMftRef(buf, off + INDEX_ENTRY.OFF_REFERENCE), flags: eflags };
    if (eflags & INDEX_ENTRY.FLAG_NODE) {
      const vcn = buf.readBigInt64LE(off + entryLength - 8);
      if (vcn < 0n || vcn > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(what, `child VCN ${vcn}`);
      entry.childVcn = Number(vcn);
    }
    if (!(eflags & INDEX_ENTRY.FLAG_END)) {
      if (INDEX_ENTRY.OFF_KEY + keyLength > entryLength - (eflags & INDEX_ENTRY.FLAG_NODE ? 8 : 0)) {
        throw corrupt(what, `key of index entry at ${off - headerOff} overruns it`);
      }
      entry.key = parseFileName(
        buf.subarray(off + INDEX_ENTRY.OFF_KEY, off + INDEX_ENTRY.OFF_KEY + keyLength),
        what,
      );
    }
    entries.push(entry);
    if (eflags & INDEX_ENTRY.FLAG_END) return { flags, entries };
    off += entryLength;
  }
  throw corrupt(what, 'index node has no end entry');
}

export interface IndexRoot {
  indexedType: number;
  collation: number;
  blockSize: number;
  node: IndexNode;
}

export function parseIndexRoot(value: Uint8Array, what = '$INDEX_ROOT'): IndexRoot {
  const b = view(value);
  if (b.length < INDEX_ROOT.OFF_HEADER + INDEX_HEADER.SIZE) throw corrupt(what, 'value is too short');
  return {
    indexedType: b.readUInt32LE(INDEX_ROOT.OFF_INDEXED_TYPE),
    collation: b.readUInt32LE(INDEX_ROOT.OFF_COLLATION),
    blockSize: b.readUInt32LE(INDEX_ROOT.OFF_BLOCK_SIZE),
    node: parseIndexNode(b, INDEX_ROOT.OFF_HEADER, what),
  };
}

export interface IndexBlock {
  vcn: number;
  node: IndexNode;
}

/** One INDX block of `blockSize` bytes: fixups undone (on a copy) and entries parsed. */
export function parseIndexBlock(raw: Uint8Array, blockSize: number, what = 'INDX block'): IndexBlock {
  if (raw.length < blockSize) throw corrupt(what, 'block is truncated');
  const b = Buffer.from(raw.subarray(0, blockSize));
  applyFixups(b, INDX_BLOCK.MAGIC, what);
  const vcn = b.readBigInt64LE(INDX_BLOCK.OFF_VCN);
  if (vcn < 0n || vcn > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(what, `VCN ${vcn}`);
  return { vcn: Number(vcn), node: parseIndexNode(b, INDX_BLOCK.OFF_HEADER, what) };
}

/** Case-insensitive for ASCII only: enough to find system names such as hiberfil.sys exactly. */
export function sameAsciiName(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x >= 0x61 && x <= 0x7a) x -= 0x20;
    if (y >= 0x61 && y <= 0x7a) y -= 0x20;
    if (x !== y) return false;
  }
  return true;
}
