/**
 * GUID Partition Table (UEFI spec, chapter "GUID Partition Table (GPT) Disk Layout"). Pure codecs:
 * header and entry parse/serialize, CRCs, header validation, and the assembly of a whole GPT
 * (protective MBR, primary and backup headers and entry arrays) as a list of writes.
 *
 * Disk layout (LBA = logical sector): 0 protective MBR, 1 primary header, 2.. primary entry array,
 * …partitions…, backup entry array, last LBA backup header. All integers little endian. LBAs are
 * 64-bit and kept as bigint in the raw structures so that any header round-trips; the reader turns
 * them into numbers only after checking they are inside the disk.
 */
import { corrupt, RescueError } from '../errors.ts';
import { crc32 } from './crc32.ts';
import type { DiskWrite } from './disk-write.ts';
import { isGuid, isZeroGuid, readGuid, writeGuid } from './guid.ts';
import { CHS_GEOMETRY, CHS_MAX_CYLINDER, MBR, type Mbr, MbrType, makeMbrEntry, serializeMbr } from './mbr.ts';

export const GPT = {
  /** "EFI PART" */
  SIGNATURE: 0x5452415020494645n,
  REVISION_1_0: 0x00010000,
  /** Size of the defined header fields; HeaderSize may be larger (up to a sector), never smaller. */
  HEADER_SIZE: 92,
  ENTRY_SIZE: 128,
  DEFAULT_ENTRY_COUNT: 128,
  /** Partition name: 36 UTF-16LE code units. */
  NAME_UNITS: 36,
  PRIMARY_HEADER_LBA: 1,
  PRIMARY_ENTRIES_LBA: 2,
  /**
   * We refuse entry arrays larger than this (32768 entries of 128 bytes). Real tables use 16 KiB;
   * the cap keeps a hostile header from making us allocate gigabytes.
   */
  MAX_ENTRY_ARRAY_BYTES: 4 * 1024 * 1024,
} as const;

/** Offsets inside the header. */
const H = {
  SIGNATURE: 0,
  REVISION: 8,
  HEADER_SIZE: 12,
  HEADER_CRC: 16,
  RESERVED: 20,
  MY_LBA: 24,
  ALTERNATE_LBA: 32,
  FIRST_USABLE: 40,
  LAST_USABLE: 48,
  DISK_GUID: 56,
  ENTRIES_LBA: 72,
  ENTRY_COUNT: 80,
  ENTRY_SIZE: 84,
  ENTRIES_CRC: 88,
} as const;

/** Offsets inside an entry. */
const E = {
  TYPE_GUID: 0,
  UNIQUE_GUID: 16,
  FIRST_LBA: 32,
  LAST_LBA: 40,
  ATTRIBUTES: 48,
  NAME: 56,
} as const;

/** Attribute bits with names (UEFI); bits 48..63 belong to the partition type. */
export const GptAttribute = {
  REQUIRED_PARTITION: 0n,
  NO_BLOCK_IO_PROTOCOL: 1n,
  LEGACY_BIOS_BOOTABLE: 2n,
  /** Microsoft basic data: read-only, shadow copy, hidden, no drive letter. */
  MS_READ_ONLY: 60n,
  MS_SHADOW_COPY: 61n,
  MS_HIDDEN: 62n,
  MS_NO_DRIVE_LETTER: 63n,
} as const;

/**
 * Attribute bits spelled as sfdisk prints them ("RequiredPartition LegacyBIOSBootable GUID:60,63"),
 * for people. Like sfdisk, bits 3..47 (reserved by UEFI) are not shown.
 */
export function describeGptAttributes(attributes: bigint): string {
  const words: string[] = [];
  if (attributes & (1n << GptAttribute.REQUIRED_PARTITION)) words.push('RequiredPartition');
  if (attributes & (1n << GptAttribute.NO_BLOCK_IO_PROTOCOL)) words.push('NoBlockIOProtocol');
  if (attributes & (1n << GptAttribute.LEGACY_BIOS_BOOTABLE)) words.push('LegacyBIOSBootable');
  const typeBits: number[] = [];
  for (let bit = 48; bit < 64; bit++) if (attributes & (1n << BigInt(bit))) typeBits.push(bit);
  if (typeBits.length > 0) words.push(`GUID:${typeBits.join(',')}`);
  return words.join(' ');
}

export const GptType = {
  UNUSED: '00000000-0000-0000-0000-000000000000',
  EFI_SYSTEM: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  BIOS_BOOT: '21686148-6449-6E6F-744E-656564454649',
  MICROSOFT_RESERVED: 'E3C9E316-0B5C-4DB8-817D-F92DF00215AE',
  MICROSOFT_BASIC_DATA: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  WINDOWS_RECOVERY: 'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC',
  LINUX_FILESYSTEM: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  LINUX_SWAP: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  LINUX_LVM: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  LINUX_RAID: 'A19D880F-05FC-4D3B-A006-743F0F84911E',
  LINUX_ROOT_X86_64: '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
} as const;

export interface GptHeader {
  signature: bigint;
  revision: number;
  headerSize: number;
  headerCrc32: number;
  reserved: number;
  myLba: bigint;
  alternateLba: bigint;
  firstUsableLba: bigint;
  lastUsableLba: bigint;
  diskGuid: string;
  entriesLba: bigint;
  entryCount: number;
  entrySize: number;
  entriesCrc32: number;
}

export interface GptEntry {
  typeGuid: string;
  uniqueGuid: string;
  firstLba: bigint;
  /** Inclusive. */
  lastLba: bigint;
  attributes: bigint;
  /** Up to 36 UTF-16 code units; decoded code unit by code unit so odd surrogates survive a round trip. */
  name: string;
}

const U64_MAX = (1n << 64n) - 1n;

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes the 92 defined bytes of a header; no validation (see validateGptHeader). */
export function parseGptHeader(bytes: Uint8Array): GptHeader {
  if (bytes.length < GPT.HEADER_SIZE)
    throw corrupt('GPT header', `needs ${GPT.HEADER_SIZE} bytes, got ${bytes.length}`);
  const v = view(bytes);
  return {
    signature: v.getBigUint64(H.SIGNATURE, true),
    revision: v.getUint32(H.REVISION, true),
    headerSize: v.getUint32(H.HEADER_SIZE, true),
    headerCrc32: v.getUint32(H.HEADER_CRC, true),
    reserved: v.getUint32(H.RESERVED, true),
    myLba: v.getBigUint64(H.MY_LBA, true),
    alternateLba: v.getBigUint64(H.ALTERNATE_LBA, true),
    firstUsableLba: v.getBigUint64(H.FIRST_USABLE, true),
    lastUsableLba: v.getBigUint64(H.LAST_USABLE, true),
    diskGuid: readGuid(bytes, H.DISK_GUID),
    entriesLba: v.getBigUint64(H.ENTRIES_LBA, true),
    entryCount: v.getUint32(H.ENTRY_COUNT, true),
    entrySize: v.getUint32(H.ENTRY_SIZE, true),
    entriesCrc32: v.getUint32(H.ENTRIES_CRC, true),
  };
}

function checkU64(what: string, value: bigint): void {
  if (value < 0n || value > U64_MAX) throw corrupt('GPT', `${what} ${value} does not fit in 64 bits`);
}

function checkU32(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw corrupt('GPT', `${what} ${value} does not fit in 32 bits`);
  }
}

/**
 * The header as stored: 92 defined bytes, zero up to `length` (a whole sector when writing). The CRC
 * field is written as given — use withHeaderCrc first when building a header.
 */
export function serializeGptHeader(h: GptHeader, length: number = GPT.HEADER_SIZE): Buffer {
  if (length < GPT.HEADER_SIZE) throw corrupt('GPT header', `cannot fit in ${length} bytes`);
  for (const [what, value] of [
    ['revision', h.revision],
    ['header size', h.headerSize],
    ['header CRC', h.headerCrc32],
    ['reserved field', h.reserved],
    ['entry count', h.entryCount],
    ['entry size', h.entrySize],
    ['entries CRC', h.entriesCrc32],
  ] as const) {
    checkU32(what, value);
  }
  for (const [what, value] of [
    ['signature', h.signature],
    ['MyLBA', h.myLba],
    ['AlternateLBA', h.alternateLba],
    ['FirstUsableLBA', h.firstUsableLba],
    ['LastUsableLBA', h.lastUsableLba],
    ['PartitionEntryLBA', h.entriesLba],
  ] as const) {
    checkU64(what, value);
  }
  const out = Buffer.alloc(length);
  const v = view(out);
  v.setBigUint64(H.SIGNATURE, h.signature, true);
  v.setUint32(H.REVISION, h.revision, true);
  v.setUint32(H.HEADER_SIZE, h.headerSize, true);
  v.setUint32(H.HEADER_CRC, h.headerCrc32, true);
  v.setUint32(H.RESERVED, h.reserved, true);
  v.setBigUint64(H.MY_LBA, h.myLba, true);
  v.setBigUint64(H.ALTERNATE_LBA, h.alternateLba, true);
  v.setBigUint64(H.FIRST_USABLE, h.firstUsableLba, true);
  v.setBigUint64(H.LAST_USABLE, h.lastUsableLba, true);
  writeGuid(out, H.DISK_GUID, h.diskGuid);
  v.setBigUint64(H.ENTRIES_LBA, h.entriesLba, true);
  v.setUint32(H.ENTRY_COUNT, h.entryCount, true);
  v.setUint32(H.ENTRY_SIZE, h.entrySize, true);
  v.setUint32(H.ENTRIES_CRC, h.entriesCrc32, true);
  return out;
}

/**
 * CRC32 of the first HeaderSize bytes of the stored header with the CRC field taken as zero. `raw`
 * must hold at least HeaderSize bytes (the sector the header came from).
 */
export function headerCrcOf(raw: Uint8Array, headerSize: number): number {
  if (headerSize < GPT.HEADER_SIZE || headerSize > raw.length) {
    throw corrupt('GPT header', `HeaderSize ${headerSize} outside ${GPT.HEADER_SIZE}..${raw.length}`);
  }
  const copy = Uint8Array.from(raw.subarray(0, headerSize));
  view(copy).setUint32(H.HEADER_CRC, 0, true);
  return crc32(copy);
}

/** The same header with its CRC computed over HeaderSize bytes (extra bytes past 92 are zero). */
export function withHeaderCrc(h: GptHeader): GptHeader {
  const raw = serializeGptHeader(h, Math.max(h.headerSize, GPT.HEADER_SIZE));
  return { ...h, headerCrc32: headerCrcOf(raw, h.headerSize) };
}

export function parseGptEntry(bytes: Uint8Array, offset: number): GptEntry {
  if (offset < 0 || offset + GPT.ENTRY_SIZE > bytes.length)
    throw corrupt('GPT entry', `outside the entry array`);
  const v = view(bytes);
  let name = '';
  for (let i = 0; i < GPT.NAME_UNITS; i++) {
    const unit = v.getUint16(offset + E.NAME + i * 2, true);
    if (unit === 0) break;
    name += String.fromCharCode(unit);
  }
  return {
    typeGuid: readGuid(bytes, offset + E.TYPE_GUID),
    uniqueGuid: readGuid(bytes, offset + E.UNIQUE_GUID),
    firstLba: v.getBigUint64(offset + E.FIRST_LBA, true),
    lastLba: v.getBigUint64(offset + E.LAST_LBA, true),
    attributes: v.getBigUint64(offset + E.ATTRIBUTES, true),
    name,
  };
}

export function isUnusedGptEntry(bytes: Uint8Array, offset: number): boolean {
  return isZeroGuid(bytes, offset + E.TYPE_GUID);
}

/** Writes one entry into `bytes` at `offset` (128 bytes; the name is zero-padded). */
export function serializeGptEntry(e: GptEntry, bytes: Uint8Array, offset: number): void {
  if (offset < 0 || offset + GPT.ENTRY_SIZE > bytes.length)
    throw corrupt('GPT entry', 'outside the entry array');
  if (e.name.length > GPT.NAME_UNITS) {
    throw new RescueError(
      'E_TABLE_INVALID',
      `GPT partition name "${e.name}" is ${e.name.length} UTF-16 units long; at most ${GPT.NAME_UNITS} fit`,
      'Shorten the partition name.',
    );
  }
  checkU64('first LBA', e.firstLba);
  checkU64('last LBA', e.lastLba);
  checkU64('attributes', e.attributes);
  const v = view(bytes);
  bytes.fill(0, offset, offset + GPT.ENTRY_SIZE);
  writeGuid(bytes, offset + E.TYPE_GUID, e.typeGuid);
  writeGuid(bytes, offset + E.UNIQUE_GUID, e.uniqueGuid);
  v.setBigUint64(offset + E.FIRST_LBA, e.firstLba, true);
  v.setBigUint64(offset + E.LAST_LBA, e.lastLba, true);
  v.setBigUint64(offset + E.ATTRIBUTES, e.attributes, true);
  for (let i = 0; i < e.name.length; i++) v.setUint16(offset + E.NAME + i * 2, e.name.charCodeAt(i), true);
}

/** Every used entry of an array, with its 0-based slot. Unused = type GUID all zero (UEFI). */
export function parseGptEntries(
  array: Uint8Array,
  entryCount: number,
  entrySize: number,
): Array<{ index: number; entry: GptEntry }> {
  if (entrySize < GPT.ENTRY_SIZE || entryCount * entrySize > array.length) {
    throw corrupt(
      'GPT entry array',
      `${entryCount} entries of ${entrySize} bytes do not fit in ${array.length} bytes`,
    );
  }
  const out: Array<{ index: number; entry: GptEntry }> = [];
  for (let i = 0; i < entryCount; i++) {
    const off = i * entrySize;
    if (isUnusedGptEntry(array, off)) continue;
    out.push({ index: i, entry: parseGptEntry(array, off) });
  }
  return out;
}

/** The whole entry array: `entryCount` slots of `entrySize` bytes, unused slots zero. */
export function serializeGptEntries(
  entries: ReadonlyArray<{ index: number; entry: GptEntry }>,
  entryCount: number,
  entrySize: number = GPT.ENTRY_SIZE,
): Buffer {
  if (!isValidEntrySize(entrySize)) throw corrupt('GPT', `entry size ${entrySize} is not 128 × 2^n`);
  if (!Number.isInteger(entryCount) || entryCount < 1 || entryCount * entrySize > GPT.MAX_ENTRY_ARRAY_BYTES) {
    throw corrupt('GPT', `entry count ${entryCount} out of range`);
  }
  const out = Buffer.alloc(entryCount * entrySize);
  const seen = new Set<number>();
  for (const { index, entry } of entries) {
    if (!Number.isInteger(index) || index < 0 || index >= entryCount) {
      throw new RescueError(
        'E_TABLE_INVALID',
        `GPT partition ${index + 1} does not fit in an array of ${entryCount} entries`,
        'Use a larger entry array or renumber the partition.',
      );
    }
    if (seen.has(index)) {
      throw new RescueError(
        'E_TABLE_INVALID',
        `GPT partition ${index + 1} is given twice`,
        'Number partitions uniquely.',
      );
    }
    seen.add(index);
    serializeGptEntry(entry, out, index * entrySize);
  }
  return out;
}

/** UEFI: SizeOfPartitionEntry = 128 × 2^n. We accept up to 4096 bytes per entry. */
export function isValidEntrySize(size: number): boolean {
  for (let s = GPT.ENTRY_SIZE; s <= 4096; s *= 2) if (s === size) return true;
  return false;
}

export function entryArraySectors(entryCount: number, entrySize: number, sectorSize: number): number {
  return Math.ceil((entryCount * entrySize) / sectorSize);
}

/** Why a header cannot be used; `code` is the suffix of the finding code (…_HEADER_CRC etc.). */
export interface GptHeaderProblem {
  code: 'SIGNATURE' | 'HEADER_SIZE' | 'HEADER_CRC' | 'MY_LBA' | 'ENTRY_GEOMETRY' | 'USABLE_RANGE';
  message: string;
}

/**
 * Checks a header read from sector `lba` of a disk of `diskSectors` sectors (libfdisk and the kernel
 * check the same things). `raw` is the whole sector. Returns the first problem, or undefined.
 * The entry array CRC is checked separately, once the array has been read.
 */
export function validateGptHeader(
  raw: Uint8Array,
  lba: bigint,
  diskSectors: bigint,
  sectorSize: number,
): GptHeaderProblem | undefined {
  const h = parseGptHeader(raw);
  if (h.signature !== GPT.SIGNATURE) return { code: 'SIGNATURE', message: 'no "EFI PART" signature' };
  if (h.headerSize < GPT.HEADER_SIZE || h.headerSize > Math.min(sectorSize, raw.length)) {
    return {
      code: 'HEADER_SIZE',
      message: `HeaderSize ${h.headerSize} is outside ${GPT.HEADER_SIZE}..${sectorSize}`,
    };
  }
  const crc = headerCrcOf(raw, h.headerSize);
  if (crc !== h.headerCrc32) {
    return {
      code: 'HEADER_CRC',
      message: `header CRC32 is 0x${hex32(h.headerCrc32)} but the header sums to 0x${hex32(crc)}`,
    };
  }
  if (h.myLba !== lba) return { code: 'MY_LBA', message: `header at LBA ${lba} says MyLBA is ${h.myLba}` };
  if (!isValidEntrySize(h.entrySize)) {
    return { code: 'ENTRY_GEOMETRY', message: `SizeOfPartitionEntry ${h.entrySize} is not 128 × 2^n` };
  }
  if (h.entryCount < 1 || h.entryCount * h.entrySize > GPT.MAX_ENTRY_ARRAY_BYTES) {
    return {
      code: 'ENTRY_GEOMETRY',
      message: `${h.entryCount} entries of ${h.entrySize} bytes is not a plausible entry array`,
    };
  }
  const arraySectors = BigInt(entryArraySectors(h.entryCount, h.entrySize, sectorSize));
  if (h.entriesLba < 1n || h.entriesLba + arraySectors > diskSectors) {
    return {
      code: 'ENTRY_GEOMETRY',
      message: `entry array at LBA ${h.entriesLba} (${arraySectors} sectors) lies outside the disk of ${diskSectors} sectors`,
    };
  }
  if (h.entriesLba <= lba && lba < h.entriesLba + arraySectors) {
    return { code: 'ENTRY_GEOMETRY', message: `entry array at LBA ${h.entriesLba} overlaps its own header` };
  }
  if (h.firstUsableLba > h.lastUsableLba) {
    return {
      code: 'USABLE_RANGE',
      message: `FirstUsableLBA ${h.firstUsableLba} is after LastUsableLBA ${h.lastUsableLba}`,
    };
  }
  if (h.firstUsableLba <= lba && lba <= h.lastUsableLba) {
    return {
      code: 'USABLE_RANGE',
      message: `usable range ${h.firstUsableLba}..${h.lastUsableLba} contains the header`,
    };
  }
  return undefined;
}

export function entriesCrcMatches(h: GptHeader, array: Uint8Array): boolean {
  return crc32(array.subarray(0, h.entryCount * h.entrySize)) === h.entriesCrc32;
}

export function hex32(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

export interface GptLayout {
  diskGuid: string;
  /** 0-based slots; slot i is partition number i + 1. */
  partitions: ReadonlyArray<{ index: number; entry: GptEntry }>;
  /** Default: 128, or more if a partition's slot needs it. */
  entryCount?: number;
  entrySize?: number;
  /** Default: right after the primary entry array (34 with 512-byte sectors, 6 with 4096). */
  firstUsableLba?: number;
  /** Default: right before the backup entry array. */
  lastUsableLba?: number;
  /** Default 2. */
  entriesLba?: number;
  /** Protective MBR: keep a boot loader's code (GRUB's boot.img on BIOS/GPT disks) and signature. */
  protectiveMbr?: { bootCode?: Uint8Array; diskSignature?: number };
}

export interface BuiltGpt {
  primary: GptHeader;
  backup: GptHeader;
  entries: Buffer;
  protectiveMbr: Buffer;
  /** In the order UEFI asks for: backup entries, backup header, primary entries, primary header, MBR. */
  writes: DiskWrite[];
}

function invalid(message: string, remedy = 'Fix the partition layout.'): RescueError {
  return new RescueError('E_TABLE_INVALID', message, remedy);
}

/** The protective MBR: one 0xEE entry from LBA 1 over the whole disk (capped at 2^32 - 1 sectors). */
export function buildProtectiveMbr(
  diskSectors: number,
  opts: { bootCode?: Uint8Array; diskSignature?: number } = {},
): Buffer {
  const size = Math.min(diskSectors - 1, MBR.MAX_LBA);
  const entry = makeMbrEntry(MbrType.GPT_PROTECTIVE, 1, size);
  // UEFI: the ending CHS is that of the last sector, or FF FF FF when CHS cannot express it.
  if (Math.floor(size / (CHS_GEOMETRY.heads * CHS_GEOMETRY.sectorsPerTrack)) > CHS_MAX_CYLINDER) {
    entry.lastChs = { cylinder: CHS_MAX_CYLINDER, head: 0xff, sector: 0x3f };
  }
  const mbr: Mbr = {
    bootCode: opts.bootCode ?? new Uint8Array(0),
    diskSignature: opts.diskSignature ?? 0,
    reserved: 0,
    entries: [entry],
    bootSignature: MBR.BOOT_SIGNATURE,
  };
  return serializeMbr(mbr);
}

/**
 * Everything that makes a consistent GPT on a disk of `diskSizeBytes`: protective MBR, primary
 * header and entries at the front, backup entries and header at the real last LBA, CRCs filled in,
 * MyLBA/AlternateLBA pointing at each other. Throws E_TABLE_INVALID for a layout that cannot be
 * written (partition outside the usable range, overlaps, bad GUIDs, too long names).
 */
export function buildGpt(layout: GptLayout, diskSizeBytes: number, sectorSize: number): BuiltGpt {
  if (!Number.isInteger(sectorSize) || sectorSize < 512 || (sectorSize & (sectorSize - 1)) !== 0) {
    throw invalid(`sector size ${sectorSize} is not a power of two ≥ 512`);
  }
  if (!Number.isSafeInteger(diskSizeBytes) || diskSizeBytes < 0)
    throw invalid(`disk size ${diskSizeBytes} is invalid`);
  if (!isGuid(layout.diskGuid)) throw invalid(`disk GUID "${layout.diskGuid}" is not a GUID`);
  const entrySize = layout.entrySize ?? GPT.ENTRY_SIZE;
  const maxIndex = layout.partitions.reduce((m, p) => Math.max(m, p.index), -1);
  const entryCount = layout.entryCount ?? Math.max(GPT.DEFAULT_ENTRY_COUNT, maxIndex + 1);
  if (!isValidEntrySize(entrySize)) throw invalid(`GPT entry size ${entrySize} is not 128 × 2^n`);
  if (!Number.isInteger(entryCount) || entryCount < 1 || entryCount * entrySize > GPT.MAX_ENTRY_ARRAY_BYTES) {
    throw invalid(`GPT entry count ${entryCount} is out of range`);
  }
  const diskSectors = Math.floor(diskSizeBytes / sectorSize);
  const arraySectors = entryArraySectors(entryCount, entrySize, sectorSize);
  const entriesLba = layout.entriesLba ?? GPT.PRIMARY_ENTRIES_LBA;
  const backupHeaderLba = diskSectors - 1;
  const backupEntriesLba = backupHeaderLba - arraySectors;
  const minFirst = entriesLba + arraySectors;
  const maxLast = backupEntriesLba - 1;
  const firstUsable = layout.firstUsableLba ?? minFirst;
  const lastUsable = layout.lastUsableLba ?? maxLast;
  if (entriesLba < GPT.PRIMARY_ENTRIES_LBA)
    throw invalid(`GPT entry array cannot start at LBA ${entriesLba}`);
  if (firstUsable < minFirst || lastUsable > maxLast || firstUsable > lastUsable) {
    throw invalid(
      `GPT usable range ${firstUsable}..${lastUsable} does not fit between the entry arrays ` +
        `(${minFirst}..${maxLast}) of a disk of ${diskSectors} sectors`,
      'The disk is too small for this layout.',
    );
  }
  const sorted = [...layout.partitions].sort((a, b) => (a.entry.firstLba < b.entry.firstLba ? -1 : 1));
  let prev: { index: number; entry: GptEntry } | undefined;
  for (const p of sorted) {
    const { firstLba, lastLba, typeGuid } = p.entry;
    if (typeGuid === GptType.UNUSED)
      throw invalid(`GPT partition ${p.index + 1} has the all-zero (unused) type`);
    if (firstLba > lastLba) throw invalid(`GPT partition ${p.index + 1} ends before it starts`);
    if (firstLba < BigInt(firstUsable) || lastLba > BigInt(lastUsable)) {
      throw invalid(
        `GPT partition ${p.index + 1} (LBA ${firstLba}..${lastLba}) is outside the usable range ${firstUsable}..${lastUsable}`,
        'The target disk is too small, or the partition must be moved or shrunk.',
      );
    }
    if (prev && firstLba <= prev.entry.lastLba) {
      throw invalid(`GPT partitions ${prev.index + 1} and ${p.index + 1} overlap`);
    }
    prev = p;
  }
  const entries = serializeGptEntries(layout.partitions, entryCount, entrySize);
  const entriesCrc32 = crc32(entries);
  const common = {
    signature: GPT.SIGNATURE,
    revision: GPT.REVISION_1_0,
    headerSize: GPT.HEADER_SIZE,
    headerCrc32: 0,
    reserved: 0,
    firstUsableLba: BigInt(firstUsable),
    lastUsableLba: BigInt(lastUsable),
    diskGuid: layout.diskGuid.toUpperCase(),
    entryCount,
    entrySize,
    entriesCrc32,
  };
  const primary = withHeaderCrc({
    ...common,
    myLba: BigInt(GPT.PRIMARY_HEADER_LBA),
    alternateLba: BigInt(backupHeaderLba),
    entriesLba: BigInt(entriesLba),
  });
  const backup = withHeaderCrc({
    ...common,
    myLba: BigInt(backupHeaderLba),
    alternateLba: BigInt(GPT.PRIMARY_HEADER_LBA),
    entriesLba: BigInt(backupEntriesLba),
  });
  // The arrays are padded to whole sectors so that stale bytes after the last entry are cleared.
  const paddedEntries = Buffer.alloc(arraySectors * sectorSize);
  paddedEntries.set(entries, 0);
  const protectiveMbr = buildProtectiveMbr(diskSectors, layout.protectiveMbr);
  const writes: DiskWrite[] = [
    { offset: backupEntriesLba * sectorSize, bytes: paddedEntries, what: 'GPT backup entry array' },
    {
      offset: backupHeaderLba * sectorSize,
      bytes: serializeGptHeader(backup, sectorSize),
      what: 'GPT backup header',
    },
    { offset: entriesLba * sectorSize, bytes: paddedEntries, what: 'GPT primary entry array' },
    {
      offset: GPT.PRIMARY_HEADER_LBA * sectorSize,
      bytes: serializeGptHeader(primary, sectorSize),
      what: 'GPT primary header',
    },
    // Only the 512 bytes of the MBR: on 4Kn disks the rest of sector 0 is left as it was.
    { offset: 0, bytes: protectiveMbr, what: 'protective MBR' },
  ];
  return { primary, backup, entries, protectiveMbr, writes };
}
