/**
 * Values of the NTFS attributes the engine reads: $ATTRIBUTE_LIST (0x20), $FILE_NAME (0x30),
 * $VOLUME_NAME (0x60), $VOLUME_INFORMATION (0x70). Pure codec, every read bounds-checked.
 */
import { corrupt } from '../errors.ts';

function view(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** An MFT reference: 48-bit record number + 16-bit sequence number that detects reuse. */
export interface MftRef {
  record: number;
  sequence: number;
}

export function readMftRef(b: Buffer, off: number): MftRef {
  const v = b.readBigUInt64LE(off);
  return { record: Number(v & 0xffffffffffffn), sequence: Number(v >> 48n) };
}

export const ATTRIBUTE_LIST_ENTRY = {
  OFF_TYPE: 0x00,
  OFF_LENGTH: 0x04,
  OFF_NAME_LENGTH: 0x06,
  OFF_NAME_OFFSET: 0x07,
  OFF_LOWEST_VCN: 0x08,
  OFF_REFERENCE: 0x10,
  OFF_INSTANCE: 0x18,
  MIN_SIZE: 0x1a,
} as const;

export interface AttributeListEntry {
  type: number;
  name: string;
  lowestVcn: number;
  ref: MftRef;
  instance: number;
}

/**
 * $ATTRIBUTE_LIST: where each attribute (extent) of a file lives when they do not fit in one
 * record. Bounded by the value length; an entry that overruns is corruption.
 */
export function parseAttributeList(value: Uint8Array, what = '$ATTRIBUTE_LIST'): AttributeListEntry[] {
  const b = view(value);
  const out: AttributeListEntry[] = [];
  let off = 0;
  while (off + ATTRIBUTE_LIST_ENTRY.MIN_SIZE <= b.length) {
    const length = b.readUInt16LE(off + ATTRIBUTE_LIST_ENTRY.OFF_LENGTH);
    if (length < ATTRIBUTE_LIST_ENTRY.MIN_SIZE || off + length > b.length) {
      throw corrupt(what, `entry at ${off} has length ${length}`);
    }
    const nameLength = b[off + ATTRIBUTE_LIST_ENTRY.OFF_NAME_LENGTH];
    const nameOffset = b[off + ATTRIBUTE_LIST_ENTRY.OFF_NAME_OFFSET];
    if (nameLength > 0 && nameOffset + nameLength * 2 > length)
      throw corrupt(what, `name of entry at ${off} overruns it`);
    const vcn = b.readBigInt64LE(off + ATTRIBUTE_LIST_ENTRY.OFF_LOWEST_VCN);
    if (vcn < 0n || vcn > BigInt(Number.MAX_SAFE_INTEGER))
      throw corrupt(what, `entry at ${off} starts at VCN ${vcn}`);
    out.push({
      type: b.readUInt32LE(off + ATTRIBUTE_LIST_ENTRY.OFF_TYPE),
      name: nameLength > 0 ? b.toString('utf16le', off + nameOffset, off + nameOffset + nameLength * 2) : '',
      lowestVcn: Number(vcn),
      ref: readMftRef(b, off + ATTRIBUTE_LIST_ENTRY.OFF_REFERENCE),
      instance: b.readUInt16LE(off + ATTRIBUTE_LIST_ENTRY.OFF_INSTANCE),
    });
    off += length;
  }
  return out;
}

export const FILE_NAME = {
  OFF_PARENT: 0x00,
  OFF_ALLOCATED_SIZE: 0x28,
  OFF_DATA_SIZE: 0x30,
  OFF_FILE_ATTRIBUTES: 0x38,
  OFF_NAME_LENGTH: 0x40,
  OFF_NAMESPACE: 0x41,
  OFF_NAME: 0x42,
  NAMESPACE_POSIX: 0,
  NAMESPACE_WIN32: 1,
  NAMESPACE_DOS: 2,
  NAMESPACE_WIN32_AND_DOS: 3,
} as const;

export interface FileName {
  parent: MftRef;
  /** Sizes as of the last directory entry update (may lag behind the $DATA attribute). */
  allocatedSize: bigint;
  dataSize: bigint;
  fileAttributes: number;
  namespace: number;
  name: string;
}

export function parseFileName(value: Uint8Array, what = '$FILE_NAME'): FileName {
  const b = view(value);
  if (b.length < FILE_NAME.OFF_NAME) throw corrupt(what, `value of ${b.length} bytes is too short`);
  const nameLength = b[FILE_NAME.OFF_NAME_LENGTH];
  if (FILE_NAME.OFF_NAME + nameLength * 2 > b.length) throw corrupt(what, 'name overruns the value');
  return {
    parent: readMftRef(b, FILE_NAME.OFF_PARENT),
    allocatedSize: b.readBigInt64LE(FILE_NAME.OFF_ALLOCATED_SIZE),
    dataSize: b.readBigInt64LE(FILE_NAME.OFF_DATA_SIZE),
    fileAttributes: b.readUInt32LE(FILE_NAME.OFF_FILE_ATTRIBUTES),
    namespace: b[FILE_NAME.OFF_NAMESPACE],
    name: b.toString('utf16le', FILE_NAME.OFF_NAME, FILE_NAME.OFF_NAME + nameLength * 2),
  };
}

/** $VOLUME_NAME is bare UTF-16LE without a terminator. */
export function parseVolumeName(value: Uint8Array): string {
  return view(value).toString('utf16le', 0, value.length & ~1);
}

export const VOLUME_INFORMATION = {
  OFF_MAJOR: 0x08,
  OFF_MINOR: 0x09,
  OFF_FLAGS: 0x0a,
  SIZE: 0x0c,
  FLAG_DIRTY: 0x0001,
  FLAG_RESIZE_LOG_FILE: 0x0002,
  FLAG_UPGRADE_ON_MOUNT: 0x0004,
  FLAG_MODIFIED_BY_CHKDSK: 0x8000,
} as const;

export interface VolumeInformation {
  major: number;
  minor: number;
  flags: number;
  dirty: boolean;
}

export function parseVolumeInformation(value: Uint8Array, what = '$VOLUME_INFORMATION'): VolumeInformation {
  if (value.length < VOLUME_INFORMATION.SIZE)
    throw corrupt(what, `value of ${value.length} bytes is too short`);
  const b = view(value);
  const flags = b.readUInt16LE(VOLUME_INFORMATION.OFF_FLAGS);
  return {
    major: b[VOLUME_INFORMATION.OFF_MAJOR],
    minor: b[VOLUME_INFORMATION.OFF_MINOR],
    flags,
    dirty: (flags & VOLUME_INFORMATION.FLAG_DIRTY) !== 0,
  };
}
