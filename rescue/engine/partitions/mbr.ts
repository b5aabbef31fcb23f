/**
 * The classic PC partition table: the 512-byte master boot record and the extended boot records
 * (EBRs) that chain logical partitions inside an extended partition. Pure codecs, no I/O.
 *
 * Layout of the sector (also of every EBR, whose boot code is normally zero):
 *   0..439 boot code, 440..443 disk signature (LE), 444..445 reserved (usually 0),
 *   446..509 four 16-byte entries, 510..511 = 55 AA.
 * Entry: status (0x80 = active), CHS of first sector (3 bytes), type, CHS of last sector (3 bytes),
 *   first LBA (LE32), number of sectors (LE32).
 */
import { corrupt, RescueError } from '../errors.ts';
import type { DiskWrite } from './disk-write.ts';

export const MBR = {
  SIZE: 512,
  BOOT_CODE_SIZE: 440,
  DISK_SIGNATURE_OFFSET: 440,
  RESERVED_OFFSET: 444,
  TABLE_OFFSET: 446,
  ENTRY_SIZE: 16,
  ENTRY_COUNT: 4,
  BOOT_SIGNATURE_OFFSET: 510,
  /** 55 AA on disk, read as a little-endian 16-bit value. */
  BOOT_SIGNATURE: 0xaa55,
  STATUS_ACTIVE: 0x80,
  STATUS_INACTIVE: 0x00,
  /** LBA fields are 32 bits: an MBR cannot describe anything at or past 2^32 sectors. */
  MAX_LBA: 0xffffffff,
} as const;

/** Offsets inside one 16-byte entry. */
const ENTRY = {
  STATUS: 0,
  FIRST_CHS: 1,
  TYPE: 4,
  LAST_CHS: 5,
  FIRST_LBA: 8,
  SECTORS: 12,
} as const;

export const MbrType = {
  EMPTY: 0x00,
  FAT12: 0x01,
  FAT16_SMALL: 0x04,
  EXTENDED: 0x05,
  FAT16: 0x06,
  NTFS: 0x07,
  FAT32: 0x0b,
  FAT32_LBA: 0x0c,
  FAT16_LBA: 0x0e,
  EXTENDED_LBA: 0x0f,
  LINUX_SWAP: 0x82,
  LINUX: 0x83,
  LINUX_EXTENDED: 0x85,
  LINUX_LVM: 0x8e,
  GPT_PROTECTIVE: 0xee,
  EFI_SYSTEM: 0xef,
  LINUX_RAID: 0xfd,
} as const;

/** The three type codes Linux (and libfdisk) follow as extended-partition containers. */
export function isExtendedType(type: number): boolean {
  return type === MbrType.EXTENDED || type === MbrType.EXTENDED_LBA || type === MbrType.LINUX_EXTENDED;
}

/** Cylinder/head/sector address; sector counts from 1. Bijective with the 3 bytes on disk. */
export interface Chs {
  cylinder: number;
  head: number;
  sector: number;
}

export interface MbrEntry {
  status: number;
  firstChs: Chs;
  type: number;
  lastChs: Chs;
  /** Absolute for the MBR; in an EBR relative to the EBR (logical) or to the extended start (link). */
  firstLba: number;
  sectors: number;
}

export interface Mbr {
  bootCode: Uint8Array;
  diskSignature: number;
  reserved: number;
  entries: MbrEntry[];
  /** The raw 16-bit value at 510; a table is only meaningful when it equals MBR.BOOT_SIGNATURE. */
  bootSignature: number;
}

/** The geometry every modern tool pretends disks have when it fills in CHS fields. */
export const CHS_GEOMETRY = { heads: 255, sectorsPerTrack: 63 } as const;
export const CHS_MAX_CYLINDER = 1023;

export function decodeChs(bytes: Uint8Array, offset: number): Chs {
  const head = bytes[offset];
  const sec = bytes[offset + 1];
  const cyl = bytes[offset + 2];
  return { head, sector: sec & 0x3f, cylinder: cyl | ((sec & 0xc0) << 2) };
}

export function encodeChs(chs: Chs, bytes: Uint8Array, offset: number): void {
  bytes[offset] = chs.head & 0xff;
  bytes[offset + 1] = (chs.sector & 0x3f) | ((chs.cylinder >> 2) & 0xc0);
  bytes[offset + 2] = chs.cylinder & 0xff;
}

/**
 * CHS of an LBA with the 255/63 geometry. Past cylinder 1023 CHS cannot say it, and like sfdisk we
 * write the conventional "too far" value 1023/254/63 (bytes FE FF FF).
 */
export function lbaToChs(
  lba: number,
  geometry: { heads: number; sectorsPerTrack: number } = CHS_GEOMETRY,
): Chs {
  const perCylinder = geometry.heads * geometry.sectorsPerTrack;
  const cylinder = Math.floor(lba / perCylinder);
  if (cylinder > CHS_MAX_CYLINDER) {
    return { cylinder: CHS_MAX_CYLINDER, head: geometry.heads - 1, sector: geometry.sectorsPerTrack };
  }
  const inCylinder = lba % perCylinder;
  return {
    cylinder,
    head: Math.floor(inCylinder / geometry.sectorsPerTrack),
    sector: (inCylinder % geometry.sectorsPerTrack) + 1,
  };
}

export function emptyMbrEntry(): MbrEntry {
  return {
    status: 0,
    firstChs: { cylinder: 0, head: 0, sector: 0 },
    type: 0,
    lastChs: { cylinder: 0, head: 0, sector: 0 },
    firstLba: 0,
    sectors: 0,
  };
}

export function isEmptyMbrEntry(e: MbrEntry): boolean {
  return e.sectors === 0;
}

/**
 * An entry with CHS fields computed from absolute positions. `firstLba` is what goes into the
 * entry (maybe relative); `absoluteFirst` is where it really is on the disk (CHS is always absolute).
 */
export function makeMbrEntry(
  type: number,
  firstLba: number,
  sectors: number,
  opts: { bootable?: boolean; absoluteFirst?: number } = {},
): MbrEntry {
  const abs = opts.absoluteFirst ?? firstLba;
  return {
    status: opts.bootable ? MBR.STATUS_ACTIVE : MBR.STATUS_INACTIVE,
    firstChs: lbaToChs(abs),
    type,
    lastChs: lbaToChs(abs + Math.max(sectors, 1) - 1),
    firstLba,
    sectors,
  };
}

export function parseMbrEntry(bytes: Uint8Array, offset: number): MbrEntry {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    status: bytes[offset + ENTRY.STATUS],
    firstChs: decodeChs(bytes, offset + ENTRY.FIRST_CHS),
    type: bytes[offset + ENTRY.TYPE],
    lastChs: decodeChs(bytes, offset + ENTRY.LAST_CHS),
    firstLba: view.getUint32(offset + ENTRY.FIRST_LBA, true),
    sectors: view.getUint32(offset + ENTRY.SECTORS, true),
  };
}

function checkU32(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > MBR.MAX_LBA) {
    throw corrupt('MBR entry', `${what} ${value} does not fit in 32 bits`);
  }
}

export function serializeMbrEntry(entry: MbrEntry, bytes: Uint8Array, offset: number): void {
  checkU32('first LBA', entry.firstLba);
  checkU32('sector count', entry.sectors);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  bytes[offset + ENTRY.STATUS] = entry.status & 0xff;
  encodeChs(entry.firstChs, bytes, offset + ENTRY.FIRST_CHS);
  bytes[offset + ENTRY.TYPE] = entry.type & 0xff;
  encodeChs(entry.lastChs, bytes, offset + ENTRY.LAST_CHS);
  view.setUint32(offset + ENTRY.FIRST_LBA, entry.firstLba, true);
  view.setUint32(offset + ENTRY.SECTORS, entry.sectors, true);
}

/** Decodes the first 512 bytes of `sector`. Never validates: see hasBootSignature and the reader. */
export function parseMbr(sector: Uint8Array): Mbr {
  if (sector.length < MBR.SIZE) throw corrupt('MBR', `needs ${MBR.SIZE} bytes, got ${sector.length}`);
  const view = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  const entries: MbrEntry[] = [];
  for (let i = 0; i < MBR.ENTRY_COUNT; i++)
    entries.push(parseMbrEntry(sector, MBR.TABLE_OFFSET + i * MBR.ENTRY_SIZE));
  return {
    bootCode: Uint8Array.from(sector.subarray(0, MBR.BOOT_CODE_SIZE)),
    diskSignature: view.getUint32(MBR.DISK_SIGNATURE_OFFSET, true),
    reserved: view.getUint16(MBR.RESERVED_OFFSET, true),
    entries,
    bootSignature: view.getUint16(MBR.BOOT_SIGNATURE_OFFSET, true),
  };
}

/** 512 bytes. Missing entries are written empty; boot code shorter than 440 bytes is zero-padded. */
export function serializeMbr(mbr: Mbr): Buffer {
  if (mbr.entries.length > MBR.ENTRY_COUNT)
    throw corrupt('MBR', `${mbr.entries.length} entries, at most 4 fit`);
  if (mbr.bootCode.length > MBR.BOOT_CODE_SIZE) {
    throw corrupt('MBR', `boot code of ${mbr.bootCode.length} bytes, at most ${MBR.BOOT_CODE_SIZE} fit`);
  }
  const out = Buffer.alloc(MBR.SIZE);
  out.set(mbr.bootCode, 0);
  out.writeUInt32LE(mbr.diskSignature >>> 0, MBR.DISK_SIGNATURE_OFFSET);
  out.writeUInt16LE(mbr.reserved & 0xffff, MBR.RESERVED_OFFSET);
  mbr.entries.forEach((e, i) => {
    serializeMbrEntry(e, out, MBR.TABLE_OFFSET + i * MBR.ENTRY_SIZE);
  });
  out.writeUInt16LE(mbr.bootSignature & 0xffff, MBR.BOOT_SIGNATURE_OFFSET);
  return out;
}

export function hasBootSignature(mbr: Mbr): boolean {
  return mbr.bootSignature === MBR.BOOT_SIGNATURE;
}

/** What one EBR says, the way libfdisk and the kernel read it. */
export interface EbrContent {
  /** The logical partition, relative to this EBR (first entry with a non-zero size and type that is not extended). */
  logical?: MbrEntry;
  /** The link to the next EBR, relative to the start of the outermost extended partition. */
  next?: MbrEntry;
  /** Further data entries we ignore (libfdisk: "Ignoring extra data"). */
  extraLogicals: number;
  /** Further links we ignore (libfdisk: "Extra link pointer"). */
  extraLinks: number;
}

export function interpretEbr(ebr: Mbr): EbrContent {
  const out: EbrContent = { extraLogicals: 0, extraLinks: 0 };
  for (const e of ebr.entries) {
    if (e.sectors === 0) continue;
    if (isExtendedType(e.type)) {
      if (out.next) out.extraLinks++;
      else out.next = e;
    } else if (e.type !== MbrType.EMPTY) {
      if (out.logical) out.extraLogicals++;
      else out.logical = e;
    }
  }
  return out;
}

/** One logical partition as the EBR writer needs it, all in absolute LBAs. */
export interface LogicalSpec {
  ebrLba: number;
  firstLba: number;
  sectors: number;
  type: number;
  bootable?: boolean;
}

/**
 * The EBR at `logical.ebrLba`: entry 1 = the logical partition relative to the EBR; entry 2 = the
 * link to the next EBR relative to the extended start, covering the next EBR up to the end of the
 * next logical partition (what fdisk and sfdisk write); entries 3 and 4 empty.
 */
export function buildEbr(
  logical: LogicalSpec,
  next: LogicalSpec | undefined,
  extendedStartLba: number,
): Buffer {
  const entries = [
    makeMbrEntry(logical.type, logical.firstLba - logical.ebrLba, logical.sectors, {
      bootable: logical.bootable,
      absoluteFirst: logical.firstLba,
    }),
    next
      ? makeMbrEntry(
          MbrType.EXTENDED,
          next.ebrLba - extendedStartLba,
          next.firstLba + next.sectors - next.ebrLba,
          {
            absoluteFirst: next.ebrLba,
          },
        )
      : emptyMbrEntry(),
    emptyMbrEntry(),
    emptyMbrEntry(),
  ];
  return serializeMbr({
    bootCode: new Uint8Array(0),
    diskSignature: 0,
    reserved: 0,
    entries,
    bootSignature: MBR.BOOT_SIGNATURE,
  });
}

export interface MbrLayout {
  diskSignature: number;
  /** 440 bytes of boot loader to keep; zero when absent. */
  bootCode?: Uint8Array;
  /** Slots 1..4; at most one of them extended when there are logical partitions. */
  primaries: ReadonlyArray<{
    slot: number;
    type: number;
    firstLba: number;
    sectors: number;
    bootable?: boolean;
  }>;
  /** In chain order (5, 6, …). `ebrLba` keeps an EBR where it was; by default one is placed before each. */
  logicals: ReadonlyArray<{
    type: number;
    firstLba: number;
    sectors: number;
    bootable?: boolean;
    ebrLba?: number;
  }>;
}

export interface BuiltMbr {
  mbr: Buffer;
  ebrs: Array<{ lba: number; bytes: Buffer }>;
  /** EBRs from the last to the first, the MBR last: the table only points at the chain once it is complete. */
  writes: DiskWrite[];
}

function invalidLayout(message: string, remedy = 'Fix the partition layout.'): RescueError {
  return new RescueError('E_TABLE_INVALID', message, remedy);
}

/**
 * The MBR and every EBR for a layout on a disk of `diskSizeBytes`, CHS filled in, as writes of 512
 * bytes (on disks with larger sectors the rest of each sector is left alone). Throws E_TABLE_INVALID
 * for layouts that cannot be written: overlaps, logical partitions outside the extended one, no
 * room for an EBR, anything past 2^32 sectors or past the disk.
 */
export function buildMbr(layout: MbrLayout, diskSizeBytes: number, sectorSize: number): BuiltMbr {
  if (!Number.isInteger(sectorSize) || sectorSize < MBR.SIZE || (sectorSize & (sectorSize - 1)) !== 0) {
    throw invalidLayout(`sector size ${sectorSize} is not a power of two >= 512`);
  }
  const diskSectors = Math.floor(diskSizeBytes / sectorSize);
  const seen = new Set<number>();
  const spans: Array<{ what: string; first: number; end: number }> = [];
  const checkRange = (what: string, first: number, sectors: number) => {
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(sectors) || first < 1 || sectors < 1) {
      throw invalidLayout(`${what} has an invalid position (sector ${first}, ${sectors} sectors)`);
    }
    if (first + sectors > diskSectors) {
      throw invalidLayout(
        `${what} ends beyond the disk (${diskSectors} sectors)`,
        'The target disk is too small.',
      );
    }
    if (first + sectors - 1 > MBR.MAX_LBA) {
      throw invalidLayout(
        `${what} reaches past sector 2^32 - 1, which an MBR cannot describe`,
        'Use GPT for this disk.',
      );
    }
  };
  let extended: { slot: number; first: number; sectors: number } | undefined;
  for (const p of layout.primaries) {
    if (!Number.isInteger(p.slot) || p.slot < 1 || p.slot > MBR.ENTRY_COUNT || seen.has(p.slot)) {
      throw invalidLayout(`primary partition slot ${p.slot} is not a free slot 1..4`);
    }
    seen.add(p.slot);
    checkRange(`partition ${p.slot}`, p.firstLba, p.sectors);
    if (!Number.isInteger(p.type) || p.type < 1 || p.type > 0xff)
      throw invalidLayout(`partition ${p.slot} has type ${p.type}`);
    if (isExtendedType(p.type)) {
      if (extended) throw invalidLayout('more than one extended partition');
      extended = { slot: p.slot, first: p.firstLba, sectors: p.sectors };
    } else {
      spans.push({ what: `partition ${p.slot}`, first: p.firstLba, end: p.firstLba + p.sectors });
    }
  }
  if (layout.logicals.length > 0 && !extended)
    throw invalidLayout('logical partitions need an extended partition');

  const ebrs: Array<{ lba: number; bytes: Buffer }> = [];
  if (extended) {
    const ext = extended;
    for (const s of spans) {
      if (s.first < ext.first + ext.sectors && ext.first < s.end) {
        throw invalidLayout(`${s.what} overlaps extended partition ${ext.slot}`);
      }
    }
    const specs: LogicalSpec[] = [];
    layout.logicals.forEach((l, i) => {
      const what = `logical partition ${5 + i}`;
      checkRange(what, l.firstLba, l.sectors);
      if (!Number.isInteger(l.type) || l.type < 1 || l.type > 0xff || isExtendedType(l.type)) {
        throw invalidLayout(`${what} has type ${l.type}`);
      }
      if (l.firstLba <= ext.first || l.firstLba + l.sectors > ext.first + ext.sectors) {
        throw invalidLayout(`${what} is not inside extended partition ${ext.slot}`);
      }
      let ebrLba: number;
      if (i === 0) {
        // The chain starts at the first sector of the extended partition, always.
        if (l.ebrLba !== undefined && l.ebrLba !== ext.first) {
          throw invalidLayout(
            `the first EBR must be at the start of the extended partition (${ext.first}), not ${l.ebrLba}`,
          );
        }
        ebrLba = ext.first;
      } else if (l.ebrLba !== undefined) {
        ebrLba = l.ebrLba;
      } else {
        const gap = layout.logicals[0].firstLba - ext.first;
        const prev = specs[i - 1];
        ebrLba = Math.max(l.firstLba - gap, prev.firstLba + prev.sectors);
      }
      if (!Number.isSafeInteger(ebrLba) || ebrLba < ext.first || ebrLba >= l.firstLba) {
        throw invalidLayout(`no room for the EBR of ${what} between the previous partition and its start`);
      }
      spans.push({ what, first: l.firstLba, end: l.firstLba + l.sectors });
      spans.push({ what: `the EBR of ${what}`, first: ebrLba, end: ebrLba + 1 });
      specs.push({ ebrLba, firstLba: l.firstLba, sectors: l.sectors, type: l.type, bootable: l.bootable });
    });
    specs.forEach((spec, i) => {
      ebrs.push({ lba: spec.ebrLba, bytes: buildEbr(spec, specs[i + 1], ext.first) });
    });
    if (specs.length === 0) {
      // An extended partition without logicals still gets an (empty) first EBR, so stale bytes there
      // cannot be read as a chain.
      ebrs.push({
        lba: ext.first,
        bytes: serializeMbr({
          bootCode: new Uint8Array(0),
          diskSignature: 0,
          reserved: 0,
          entries: [],
          bootSignature: MBR.BOOT_SIGNATURE,
        }),
      });
    }
  }
  const sorted = [...spans].sort((a, b) => a.first - b.first);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].first < sorted[i - 1].end)
      throw invalidLayout(`${sorted[i].what} overlaps ${sorted[i - 1].what}`);
  }
  const entries: MbrEntry[] = [emptyMbrEntry(), emptyMbrEntry(), emptyMbrEntry(), emptyMbrEntry()];
  for (const p of layout.primaries) {
    entries[p.slot - 1] = makeMbrEntry(p.type, p.firstLba, p.sectors, { bootable: p.bootable });
  }
  const mbr = serializeMbr({
    bootCode: layout.bootCode ?? new Uint8Array(0),
    diskSignature: layout.diskSignature,
    reserved: 0,
    entries,
    bootSignature: MBR.BOOT_SIGNATURE,
  });
  const writes: DiskWrite[] = [...ebrs]
    .reverse()
    .map((e) => ({ offset: e.lba * sectorSize, bytes: e.bytes, what: `EBR at sector ${e.lba}` }));
  writes.push({ offset: 0, bytes: mbr, what: 'MBR' });
  return { mbr, ebrs, writes };
}
