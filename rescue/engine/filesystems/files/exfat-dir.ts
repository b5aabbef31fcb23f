/**
 * Pure codec for exFAT directory entry sets: a File entry (0x85), its Stream Extension (0xC0) and
 * File Name entries (0xC1), checked by the set checksum as the specification (§6.3.3) requires.
 * Other entries (allocation bitmap, up-case table, label, GUID, vendor extensions) are skipped.
 */
import { corrupt } from '../../errors.ts';
import { EXFAT_LIMITS } from '../exfat-boot.ts';
import { fromDosDateTime } from './tree.ts';

export const EXFAT_SET = {
  FILE: 0x85,
  STREAM: 0xc0,
  NAME: 0xc1,
  IN_USE: 0x80,
  OFF_SECONDARY_COUNT: 1,
  OFF_SET_CHECKSUM: 2,
  OFF_ATTRIBUTES: 4,
  OFF_MODIFIED: 12,
  OFF_MODIFIED_10MS: 21,
  OFF_MODIFIED_UTC: 24,
  OFF_FLAGS: 1,
  OFF_NAME_LENGTH: 3,
  OFF_VALID_DATA_LENGTH: 8,
  OFF_FIRST_CLUSTER: 20,
  OFF_DATA_LENGTH: 24,
  OFF_NAME_CHARS: 2,
  CHARS_PER_NAME_ENTRY: 15,
  ATTR_DIRECTORY: 0x10,
  FLAG_NO_FAT_CHAIN: 0x02,
  MIN_SECONDARY: 2,
  MAX_SECONDARY: 18,
} as const;

export interface ExfatDirEntry {
  name: string;
  attributes: number;
  isDirectory: boolean;
  firstCluster: number;
  dataLength: number;
  validDataLength: number;
  /** The clusters are consecutive and the FAT holds no chain for them. */
  noFatChain: boolean;
  mtime?: Date;
}

/** The set checksum: every byte of the set except the checksum field itself. */
export function entrySetChecksum(set: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < set.length; i++) {
    if (i === EXFAT_SET.OFF_SET_CHECKSUM || i === EXFAT_SET.OFF_SET_CHECKSUM + 1) continue;
    sum = ((sum & 1 ? 0x8000 : 0) + (sum >> 1) + set[i]) & 0xffff;
  }
  return sum;
}

function u64(b: Buffer, off: number, what: string): number {
  const v = b.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(what, 'length is beyond 2^53');
  return Number(v);
}

/** The UTC offset field: bit 7 says it is valid, the low 7 bits are a signed count of 15 minutes. */
function utcOffsetMinutes(v: number): number {
  if (!(v & 0x80)) return 0;
  const q = v & 0x7f;
  return (q >= 0x40 ? q - 0x80 : q) * 15;
}

/** File entry sets of a whole directory's bytes, up to the end-of-directory entry. */
export function parseExfatDirectory(bytes: Uint8Array, what: string): ExfatDirEntry[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = EXFAT_LIMITS.DIR_ENTRY_SIZE;
  const out: ExfatDirEntry[] = [];
  for (let off = 0; off + size <= b.length; ) {
    const type = b[off];
    if (type === 0) break;
    if (type !== EXFAT_SET.FILE) {
      off += size;
      continue;
    }
    const secondary = b[off + EXFAT_SET.OFF_SECONDARY_COUNT];
    const where = `${what}, entry set at ${off}`;
    if (secondary < EXFAT_SET.MIN_SECONDARY || secondary > EXFAT_SET.MAX_SECONDARY)
      throw corrupt(where, `secondary count ${secondary}`);
    const end = off + (secondary + 1) * size;
    if (end > b.length) throw corrupt(where, 'runs past the end of the directory');
    const set = b.subarray(off, end);
    if (entrySetChecksum(set) !== set.readUInt16LE(EXFAT_SET.OFF_SET_CHECKSUM))
      throw corrupt(where, 'set checksum does not match');
    const stream = set.subarray(size, 2 * size);
    if (stream[0] !== EXFAT_SET.STREAM) throw corrupt(where, 'no stream extension after the file entry');
    const nameLength = stream[EXFAT_SET.OFF_NAME_LENGTH];
    const nameEntries = Math.ceil(nameLength / EXFAT_SET.CHARS_PER_NAME_ENTRY);
    if (nameLength === 0 || nameEntries > secondary - 1)
      throw corrupt(where, `name of ${nameLength} characters`);
    const units: number[] = [];
    for (let k = 0; k < nameEntries; k++) {
      const e = set.subarray((2 + k) * size, (3 + k) * size);
      if (e[0] !== EXFAT_SET.NAME) throw corrupt(where, `entry ${2 + k} is not a file name entry`);
      for (let i = 0; i < EXFAT_SET.CHARS_PER_NAME_ENTRY && units.length < nameLength; i++)
        units.push(e.readUInt16LE(EXFAT_SET.OFF_NAME_CHARS + i * 2));
    }
    const attributes = set.readUInt16LE(EXFAT_SET.OFF_ATTRIBUTES);
    const stamp = set.readUInt32LE(EXFAT_SET.OFF_MODIFIED);
    const entry: ExfatDirEntry = {
      name: String.fromCharCode(...units),
      attributes,
      isDirectory: (attributes & EXFAT_SET.ATTR_DIRECTORY) !== 0,
      firstCluster: stream.readUInt32LE(EXFAT_SET.OFF_FIRST_CLUSTER),
      dataLength: u64(stream, EXFAT_SET.OFF_DATA_LENGTH, where),
      validDataLength: u64(stream, EXFAT_SET.OFF_VALID_DATA_LENGTH, where),
      noFatChain: (stream[EXFAT_SET.OFF_FLAGS] & EXFAT_SET.FLAG_NO_FAT_CHAIN) !== 0,
    };
    const mtime = fromDosDateTime(
      stamp >>> 16,
      stamp & 0xffff,
      Math.min(set[EXFAT_SET.OFF_MODIFIED_10MS], 199) * 10,
      utcOffsetMinutes(set[EXFAT_SET.OFF_MODIFIED_UTC]),
    );
    if (mtime) entry.mtime = mtime;
    out.push(entry);
    off = end;
  }
  return out;
}
