/**
 * NTFS multi-sector records (FILE records of the $MFT, INDX blocks of directories): the update
 * sequence fixups, the FILE record header and bounded attribute iteration. Pure codec.
 */
import { corrupt } from '../errors.ts';

/** Fixups protect every 512 bytes of a record, whatever the sector size. */
export const NTFS_FIXUP_STRIDE = 512;

export const FILE_RECORD = {
  MAGIC: 'FILE',
  /** Written by chkdsk over a record whose fixups failed. */
  BAD_MAGIC: 'BAAD',
  OFF_USA_OFFSET: 0x04,
  OFF_USA_COUNT: 0x06,
  OFF_LSN: 0x08,
  OFF_SEQUENCE: 0x10,
  OFF_LINK_COUNT: 0x12,
  OFF_ATTRS_OFFSET: 0x14,
  OFF_FLAGS: 0x16,
  OFF_BYTES_IN_USE: 0x18,
  OFF_BYTES_ALLOCATED: 0x1c,
  OFF_BASE_RECORD: 0x20,
  OFF_NEXT_INSTANCE: 0x28,
  /** Only in NTFS 3.1 records (attributes start at 0x38 or later then). */
  OFF_RECORD_NUMBER: 0x2c,
  HEADER_SIZE_31: 0x30,
  FLAG_IN_USE: 0x0001,
  FLAG_DIRECTORY: 0x0002,
} as const;

export const ATTR = {
  STANDARD_INFORMATION: 0x10,
  ATTRIBUTE_LIST: 0x20,
  FILE_NAME: 0x30,
  OBJECT_ID: 0x40,
  SECURITY_DESCRIPTOR: 0x50,
  VOLUME_NAME: 0x60,
  VOLUME_INFORMATION: 0x70,
  DATA: 0x80,
  INDEX_ROOT: 0x90,
  INDEX_ALLOCATION: 0xa0,
  BITMAP: 0xb0,
  REPARSE_POINT: 0xc0,
  END: 0xffffffff,
} as const;

export const ATTR_FLAGS = {
  COMPRESSED: 0x0001,
  ENCRYPTED: 0x4000,
  SPARSE: 0x8000,
} as const;

const ATTR_HEADER = {
  OFF_TYPE: 0x00,
  OFF_LENGTH: 0x04,
  OFF_NON_RESIDENT: 0x08,
  OFF_NAME_LENGTH: 0x09,
  OFF_NAME_OFFSET: 0x0a,
  OFF_FLAGS: 0x0c,
  OFF_INSTANCE: 0x0e,
  // resident
  OFF_VALUE_LENGTH: 0x10,
  OFF_VALUE_OFFSET: 0x14,
  RESIDENT_SIZE: 0x18,
  // non-resident
  OFF_LOWEST_VCN: 0x10,
  OFF_HIGHEST_VCN: 0x18,
  OFF_MAPPING_PAIRS_OFFSET: 0x20,
  OFF_COMPRESSION_UNIT: 0x22,
  OFF_ALLOCATED_SIZE: 0x28,
  OFF_DATA_SIZE: 0x30,
  OFF_INITIALIZED_SIZE: 0x38,
  NON_RESIDENT_SIZE: 0x40,
} as const;

/** Reads a signed 64-bit field that must be a non-negative exact number. */
export function readSafeU64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigInt64LE(off);
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(what, `value ${v} out of range`);
  return Number(v);
}

function view(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Undoes the update sequence protection in place: the last two bytes of every 512-byte stride
 * must hold the record's update sequence number (else the record was torn by an interrupted
 * write: corruption); the saved originals from the array go back in their place.
 */
export function applyFixups(rec: Uint8Array, magic: string, what: string): void {
  const buf = view(rec);
  if (buf.length < NTFS_FIXUP_STRIDE || buf.length % NTFS_FIXUP_STRIDE !== 0) {
    throw corrupt(what, `record size ${buf.length} is not a multiple of ${NTFS_FIXUP_STRIDE}`);
  }
  const m = buf.toString('latin1', 0, 4);
  if (m !== magic) {
    throw corrupt(
      what,
      m === FILE_RECORD.BAD_MAGIC
        ? 'marked BAAD (a torn write chkdsk found)'
        : `bad signature ${JSON.stringify(m)}`,
    );
  }
  const usaOffset = buf.readUInt16LE(FILE_RECORD.OFF_USA_OFFSET);
  const usaCount = buf.readUInt16LE(FILE_RECORD.OFF_USA_COUNT);
  const strides = buf.length / NTFS_FIXUP_STRIDE;
  if (usaCount !== strides + 1)
    throw corrupt(what, `update sequence count ${usaCount}, expected ${strides + 1}`);
  if (usaOffset & 1 || usaOffset < 8 || usaOffset + usaCount * 2 > NTFS_FIXUP_STRIDE - 2) {
    throw corrupt(what, `update sequence array at ${usaOffset} is misplaced`);
  }
  const usn = buf.readUInt16LE(usaOffset);
  for (let i = 0; i < strides; i++) {
    const end = (i + 1) * NTFS_FIXUP_STRIDE - 2;
    if (buf.readUInt16LE(end) !== usn) {
      throw corrupt(what, `update sequence mismatch in its sector ${i} (torn write)`);
    }
  }
  for (let i = 0; i < strides; i++) {
    const end = (i + 1) * NTFS_FIXUP_STRIDE - 2;
    buf.writeUInt16LE(buf.readUInt16LE(usaOffset + 2 + i * 2), end);
  }
}

/**
 * The inverse of applyFixups: saves the last two bytes of every stride in the array and writes
 * the update sequence number over them. `usn` defaults to the one already in the array.
 */
export function protectRecord(rec: Uint8Array, usn?: number): void {
  const buf = view(rec);
  const usaOffset = buf.readUInt16LE(FILE_RECORD.OFF_USA_OFFSET);
  const strides = buf.length / NTFS_FIXUP_STRIDE;
  const seq = usn ?? buf.readUInt16LE(usaOffset);
  buf.writeUInt16LE(seq, usaOffset);
  for (let i = 0; i < strides; i++) {
    const end = (i + 1) * NTFS_FIXUP_STRIDE - 2;
    buf.writeUInt16LE(buf.readUInt16LE(end), usaOffset + 2 + i * 2);
    buf.writeUInt16LE(seq, end);
  }
}

export interface FileRecordHeader {
  sequence: number;
  linkCount: number;
  attrsOffset: number;
  flags: number;
  inUse: boolean;
  isDirectory: boolean;
  bytesInUse: number;
  bytesAllocated: number;
  /** Record number of the base record when this is an extension record, 0 for a base record. */
  baseRecord: number;
  baseSequence: number;
  /** Present in NTFS 3.1 records only. */
  recordNumber?: number;
}

export interface FileRecord {
  header: FileRecordHeader;
  /** The record with fixups undone. */
  bytes: Buffer;
}

/** Copies, un-fixes and checks one FILE record of `recordSize` bytes. */
export function parseFileRecord(raw: Uint8Array, recordSize: number, what: string): FileRecord {
  if (raw.length < recordSize) throw corrupt(what, 'record is truncated');
  const bytes = Buffer.from(raw.subarray(0, recordSize));
  applyFixups(bytes, FILE_RECORD.MAGIC, what);
  const attrsOffset = bytes.readUInt16LE(FILE_RECORD.OFF_ATTRS_OFFSET);
  const flags = bytes.readUInt16LE(FILE_RECORD.OFF_FLAGS);
  const bytesInUse = bytes.readUInt32LE(FILE_RECORD.OFF_BYTES_IN_USE);
  const bytesAllocated = bytes.readUInt32LE(FILE_RECORD.OFF_BYTES_ALLOCATED);
  if (bytesAllocated !== recordSize)
    throw corrupt(what, `allocated size ${bytesAllocated}, expected ${recordSize}`);
  if (bytesInUse > recordSize || bytesInUse < attrsOffset + 4)
    throw corrupt(what, `bytes in use ${bytesInUse}`);
  const usaEnd =
    bytes.readUInt16LE(FILE_RECORD.OFF_USA_OFFSET) + bytes.readUInt16LE(FILE_RECORD.OFF_USA_COUNT) * 2;
  if (attrsOffset & 7 || attrsOffset < usaEnd || attrsOffset < 0x2a) {
    throw corrupt(what, `first attribute at ${attrsOffset}`);
  }
  const baseRef = bytes.readBigUInt64LE(FILE_RECORD.OFF_BASE_RECORD);
  const header: FileRecordHeader = {
    sequence: bytes.readUInt16LE(FILE_RECORD.OFF_SEQUENCE),
    linkCount: bytes.readUInt16LE(FILE_RECORD.OFF_LINK_COUNT),
    attrsOffset,
    flags,
    inUse: (flags & FILE_RECORD.FLAG_IN_USE) !== 0,
    isDirectory: (flags & FILE_RECORD.FLAG_DIRECTORY) !== 0,
    bytesInUse,
    bytesAllocated,
    baseRecord: Number(baseRef & 0xffffffffffffn),
    baseSequence: Number(baseRef >> 48n),
  };
  if (attrsOffset >= FILE_RECORD.HEADER_SIZE_31)
    header.recordNumber = bytes.readUInt32LE(FILE_RECORD.OFF_RECORD_NUMBER);
  return { header, bytes };
}

interface AttributeCommon {
  type: number;
  /** Offset of the attribute inside its record. */
  offset: number;
  length: number;
  name: string;
  flags: number;
  instance: number;
}

export interface ResidentAttribute extends AttributeCommon {
  nonResident: false;
  value: Buffer;
}

export interface NonResidentAttribute extends AttributeCommon {
  nonResident: true;
  lowestVcn: number;
  /** -1 for an empty attribute (no clusters). */
  highestVcn: number;
  compressionUnit: number;
  allocatedSize: number;
  dataSize: number;
  initializedSize: number;
  mappingPairs: Buffer;
}

export type NtfsAttribute = ResidentAttribute | NonResidentAttribute;

/**
 * Every attribute of an un-fixed FILE record, in record order, each bounds-checked against the
 * record's bytes in use. Iteration ends at the 0xFFFFFFFF marker; a record without one, or with an
 * attribute that overruns, is corrupt.
 */
export function listAttributes(rec: FileRecord, what: string): NtfsAttribute[] {
  const buf = rec.bytes;
  const end = rec.header.bytesInUse;
  const out: NtfsAttribute[] = [];
  let off = rec.header.attrsOffset;
  // Each attribute takes at least 24 bytes: the count of steps is bounded by the record size.
  while (off + 4 <= end) {
    const type = buf.readUInt32LE(off);
    if (type === ATTR.END) return out;
    if (off + ATTR_HEADER.RESIDENT_SIZE > end) throw corrupt(what, `attribute at ${off} overruns the record`);
    const length = buf.readUInt32LE(off + ATTR_HEADER.OFF_LENGTH);
    if (length < ATTR_HEADER.RESIDENT_SIZE || length & 7 || off + length > end) {
      throw corrupt(what, `attribute 0x${type.toString(16)} at ${off} has length ${length}`);
    }
    const a = buf.subarray(off, off + length);
    const nonResident = a[ATTR_HEADER.OFF_NON_RESIDENT];
    const nameLength = a[ATTR_HEADER.OFF_NAME_LENGTH];
    const nameOffset = a.readUInt16LE(ATTR_HEADER.OFF_NAME_OFFSET);
    if (nameLength > 0 && nameOffset + nameLength * 2 > length) {
      throw corrupt(what, `name of attribute 0x${type.toString(16)} at ${off} overruns it`);
    }
    const common: AttributeCommon = {
      type,
      offset: off,
      length,
      name: nameLength > 0 ? a.toString('utf16le', nameOffset, nameOffset + nameLength * 2) : '',
      flags: a.readUInt16LE(ATTR_HEADER.OFF_FLAGS),
      instance: a.readUInt16LE(ATTR_HEADER.OFF_INSTANCE),
    };
    if (nonResident === 0) {
      const valueLength = a.readUInt32LE(ATTR_HEADER.OFF_VALUE_LENGTH);
      const valueOffset = a.readUInt16LE(ATTR_HEADER.OFF_VALUE_OFFSET);
      if (
        valueOffset + valueLength > length ||
        (valueLength > 0 && valueOffset < ATTR_HEADER.RESIDENT_SIZE)
      ) {
        throw corrupt(what, `value of attribute 0x${type.toString(16)} at ${off} overruns it`);
      }
      out.push({ ...common, nonResident: false, value: a.subarray(valueOffset, valueOffset + valueLength) });
    } else if (nonResident === 1) {
      if (length < ATTR_HEADER.NON_RESIDENT_SIZE)
        throw corrupt(what, `non-resident attribute at ${off} is too short`);
      const where = `${what}, attribute 0x${type.toString(16)}`;
      const lowestVcn = readSafeU64(a, ATTR_HEADER.OFF_LOWEST_VCN, where);
      const highest = a.readBigInt64LE(ATTR_HEADER.OFF_HIGHEST_VCN);
      if (highest < -1n || highest > BigInt(Number.MAX_SAFE_INTEGER))
        throw corrupt(where, `highest VCN ${highest}`);
      const highestVcn = Number(highest);
      if (highestVcn < lowestVcn - 1) throw corrupt(where, `VCN range ${lowestVcn}..${highestVcn}`);
      const pairsOffset = a.readUInt16LE(ATTR_HEADER.OFF_MAPPING_PAIRS_OFFSET);
      if (pairsOffset < ATTR_HEADER.NON_RESIDENT_SIZE || pairsOffset > length) {
        throw corrupt(where, `mapping pairs at ${pairsOffset}`);
      }
      const allocatedSize = readSafeU64(a, ATTR_HEADER.OFF_ALLOCATED_SIZE, where);
      const dataSize = readSafeU64(a, ATTR_HEADER.OFF_DATA_SIZE, where);
      const initializedSize = readSafeU64(a, ATTR_HEADER.OFF_INITIALIZED_SIZE, where);
      out.push({
        ...common,
        nonResident: true,
        lowestVcn,
        highestVcn,
        compressionUnit: a[ATTR_HEADER.OFF_COMPRESSION_UNIT],
        allocatedSize,
        dataSize,
        initializedSize,
        mappingPairs: a.subarray(pairsOffset, length),
      });
    } else {
      throw corrupt(what, `attribute at ${off} has non-resident flag ${nonResident}`);
    }
    off += length;
  }
  throw corrupt(what, 'attributes run past the bytes in use without an end marker');
}
