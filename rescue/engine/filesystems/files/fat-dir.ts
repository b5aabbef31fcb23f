/**
 * Pure codec for FAT directory contents: 8.3 entries (with the Windows NT lower-case flags) and
 * the VFAT long-name entries in front of them, checked by sequence number and checksum as Windows
 * and Linux check them (a broken long name falls back to the short one).
 */
import { FAT_DIRENT, FAT_LIMITS } from '../fat-bpb.ts';
import { fromDosDateTime } from './tree.ts';

export const FAT_DIRENT_MORE = {
  OFF_NT_RES: 12,
  OFF_WRITE_TIME: 22,
  OFF_WRITE_DATE: 24,
  /** NTRes bits: the base name / the extension is shown in lower case. */
  LOWER_BASE: 0x08,
  LOWER_EXT: 0x10,
} as const;

export const LFN = {
  OFF_ORDER: 0,
  OFF_CHECKSUM: 13,
  LAST: 0x40,
  ORDER_MASK: 0x1f,
  CHARS_PER_ENTRY: 13,
  /** 255 characters need 20 entries. */
  MAX_ENTRIES: 20,
  /** UTF-16 units of an entry: 5 at 1, 6 at 14, 2 at 28. */
  SLOTS: [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30],
} as const;

export interface FatDirEntry {
  /** The long name when there is a valid one, else the short name as Windows shows it. */
  name: string;
  /** The 8.3 name in upper case with a dot ("README.TXT"). */
  shortName: string;
  attr: number;
  isDirectory: boolean;
  firstCluster: number;
  size: number;
  mtime?: Date;
}

/** The checksum of an 11-byte short name that each of its long-name entries carries. */
export function lfnChecksum(short: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = ((((sum & 1) << 7) | (sum >> 1)) + short[i]) & 0xff;
  return sum;
}

/** Bytes of a short name: ASCII as is, the rest as Latin-1 (the OEM code page is not recorded). */
function shortPart(b: Buffer, start: number, end: number, lower: boolean): string {
  let s = b.toString('latin1', start, end).replace(/ +$/, '');
  if (start === 0 && s.charCodeAt(0) === FAT_DIRENT.KANJI_E5) s = `\u00e5${s.slice(1)}`;
  return lower ? s.toLowerCase() : s;
}

interface PendingLfn {
  checksum: number;
  expect: number;
  units: number[];
}

/**
 * Live entries of directory bytes (a whole directory, so that long names spanning clusters join
 * up), without '.', '..', volume labels and deleted entries; stops at the end-of-directory marker.
 * `fat32` selects whether the high half of the first cluster counts.
 */
export function parseFatDirectory(bytes: Uint8Array, fat32: boolean): FatDirEntry[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: FatDirEntry[] = [];
  let lfn: PendingLfn | undefined;
  for (let off = 0; off + FAT_LIMITS.DIR_ENTRY_SIZE <= b.length; off += FAT_LIMITS.DIR_ENTRY_SIZE) {
    const first = b[off];
    if (first === FAT_DIRENT.END) break;
    const attr = b[off + FAT_DIRENT.OFF_ATTR];
    if (first === FAT_DIRENT.DELETED) {
      lfn = undefined;
      continue;
    }
    if ((attr & FAT_DIRENT.ATTR_MASK) === FAT_DIRENT.ATTR_LONG_NAME) {
      const order = first & LFN.ORDER_MASK;
      const checksum = b[off + LFN.OFF_CHECKSUM];
      if (first & LFN.LAST) {
        lfn =
          order >= 1 && order <= LFN.MAX_ENTRIES
            ? { checksum, expect: order, units: new Array(order * LFN.CHARS_PER_ENTRY).fill(0) }
            : undefined;
      } else if (!lfn || order !== lfn.expect - 1 || checksum !== lfn.checksum) {
        lfn = undefined;
        continue;
      } else {
        lfn.expect = order;
      }
      if (lfn) {
        for (let i = 0; i < LFN.CHARS_PER_ENTRY; i++)
          lfn.units[(order - 1) * LFN.CHARS_PER_ENTRY + i] = b.readUInt16LE(off + LFN.SLOTS[i]);
      }
      continue;
    }
    const pending = lfn;
    lfn = undefined;
    if (attr & FAT_DIRENT.ATTR_VOLUME_ID) continue;
    if (first === 0x2e) {
      const raw = b.toString('latin1', off, off + 11);
      if (raw === '.          ' || raw === '..         ') continue;
    }
    const nt = b[off + FAT_DIRENT_MORE.OFF_NT_RES];
    const base = shortPart(b, off, off + 8, (nt & FAT_DIRENT_MORE.LOWER_BASE) !== 0);
    const ext = shortPart(b, off + 8, off + 11, (nt & FAT_DIRENT_MORE.LOWER_EXT) !== 0);
    const shown = ext ? `${base}.${ext}` : base;
    let name = shown;
    if (pending && pending.expect === 1 && pending.checksum === lfnChecksum(b.subarray(off, off + 11))) {
      const end = pending.units.indexOf(0);
      const units = end < 0 ? pending.units : pending.units.slice(0, end);
      if (units.length > 0) name = String.fromCharCode(...units);
    }
    const high = fat32 ? b.readUInt16LE(off + FAT_DIRENT.OFF_CLUSTER_HIGH) : 0;
    const entry: FatDirEntry = {
      name,
      shortName: shown.toUpperCase(),
      attr,
      isDirectory: (attr & FAT_DIRENT.ATTR_DIRECTORY) !== 0,
      firstCluster: high * 0x10000 + b.readUInt16LE(off + FAT_DIRENT.OFF_CLUSTER_LOW),
      size: b.readUInt32LE(off + FAT_DIRENT.OFF_SIZE),
    };
    const mtime = fromDosDateTime(
      b.readUInt16LE(off + FAT_DIRENT_MORE.OFF_WRITE_DATE),
      b.readUInt16LE(off + FAT_DIRENT_MORE.OFF_WRITE_TIME),
    );
    if (mtime) entry.mtime = mtime;
    out.push(entry);
  }
  return out;
}
