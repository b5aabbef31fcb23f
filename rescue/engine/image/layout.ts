/**
 * Pure codecs for the fixed-size structures of the image format: the image header, volume headers,
 * chunk record headers, index entries and the trailer. No I/O. Parsers check every field they
 * read and throw RescueErrors naming the image; they never read past the buffer they are given.
 */
import { createHash } from 'node:crypto';
import { crc32c } from '../filesystems/crc.ts';
import {
  headerCorrupt,
  indexCorrupt,
  notAnImage,
  formatVersion as tooNew,
  trailerCorrupt,
} from './failures.ts';
import {
  COMPRESSION_ALGO,
  FORMAT_VERSION,
  HEADER,
  type ImageHeader,
  INDEX_ENTRY_SIZE,
  type IndexEntry,
  KDF,
  KDF_SALT_BYTES,
  MAX_WINDOW_SIZE,
  MIN_WINDOW_SIZE,
  POINT_TYPES,
  RECORD_HEADER,
  type RecordHeader,
  TRAILER,
  type Trailer,
  VOLUME_HEADER,
  type VolumeHeader,
  WINDOW_ALIGNMENT,
} from './types.ts';

export const ID_BYTES = 16;
const SHA_BYTES = 32;
const ZERO_ID = Buffer.alloc(ID_BYTES);

export function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

/**
 * sha256 in libuv's thread pool (WebCrypto digest runs there), so several chunks hash in parallel
 * with each other and with zstd instead of queueing on the main thread.
 */
export async function sha256Async(data: Uint8Array): Promise<Buffer> {
  return Buffer.from(await globalThis.crypto.subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>));
}

/** u64 as a JS number; -1 when it does not fit in 2^53 (no valid offset or size does). */
function readU64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v);
}

function writeU64(buf: Buffer, off: number, v: number): void {
  buf.writeBigUInt64LE(BigInt(v), off);
}

function sealSha(buf: Buffer, shaOffset: number): void {
  sha256(buf.subarray(0, shaOffset)).copy(buf, shaOffset);
}

function shaMatches(buf: Buffer, shaOffset: number): boolean {
  return sha256(buf.subarray(0, shaOffset)).equals(buf.subarray(shaOffset, shaOffset + SHA_BYTES));
}

export function isZeroId(id: Buffer): boolean {
  return id.equals(ZERO_ID);
}

export function validWindowSize(w: number): boolean {
  return Number.isInteger(w) && w >= MIN_WINDOW_SIZE && w <= MAX_WINDOW_SIZE && w % WINDOW_ALIGNMENT === 0;
}

// ---------------------------------------------------------------------------------------------
// Image header

export function serializeHeader(h: ImageHeader): Buffer {
  const b = Buffer.alloc(HEADER.SIZE);
  b.write(HEADER.MAGIC, 0, 'latin1');
  b.writeUInt16LE(h.version, 8);
  b.writeUInt16LE(HEADER.SIZE, 10);
  b.writeUInt32LE(h.encrypted ? HEADER.FLAG_ENCRYPTED : 0, 12);
  h.imageId.copy(b, 16, 0, ID_BYTES);
  h.parentId.copy(b, 32, 0, ID_BYTES);
  h.chainId.copy(b, 48, 0, ID_BYTES);
  b.writeUInt8(POINT_TYPES.indexOf(h.pointType), 64);
  b.writeUInt8(h.compressionAlgo, 65);
  b.writeUInt8(h.compressionLevel, 66);
  b.writeUInt8(h.kdf, 67);
  b.writeUInt32LE(h.windowSize, 68);
  writeU64(b, 72, h.created);
  b.writeUInt8(h.scrypt.logN, 80);
  b.writeUInt8(h.scrypt.r, 81);
  b.writeUInt8(h.scrypt.p, 82);
  h.salt.copy(b, 88, 0, KDF_SALT_BYTES);
  h.keyCheck.copy(b, 120, 0, SHA_BYTES);
  b.write(utf8Prefix(h.tool, HEADER.TOOL_BYTES), 152, 'utf8');
  writeU64(b, 216, h.totalLength);
  b.writeUInt32LE(h.volumeCount, 224);
  writeU64(b, 232, h.volumeLimit);
  sealSha(b, HEADER.SHA_OFFSET);
  return b;
}

/** True when the first bytes carry the image magic (cheap sniffing, no validation). */
export function hasHeaderMagic(b: Buffer): boolean {
  return b.length >= 8 && b.toString('latin1', 0, 8) === HEADER.MAGIC;
}

export function hasVolumeMagic(b: Buffer): boolean {
  return b.length >= 8 && b.toString('latin1', 0, 8) === VOLUME_HEADER.MAGIC;
}

/** Cuts a UTF-8 text to at most `max` bytes without splitting a character. */
export function utf8Prefix(text: string, max: number): string {
  const b = Buffer.from(text, 'utf8');
  if (b.length <= max) return text;
  let end = max;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return b.toString('utf8', 0, end);
}

export function parseHeader(b: Buffer, image: string): ImageHeader {
  if (!hasHeaderMagic(b)) throw notAnImage(image, 'the image magic RSCUIMG1 is missing');
  if (b.length < HEADER.SIZE) throw headerCorrupt(image, `only ${b.length} of ${HEADER.SIZE} bytes`);
  const version = b.readUInt16LE(8);
  const headerLength = b.readUInt16LE(10);
  // Every version keeps magic, version and header length in place and the sha256 in the header's
  // last 32 bytes. A header of another length cannot be verified here; a v1-sized one can, so a
  // flipped version byte reads as damage, not as "too new".
  if (version > FORMAT_VERSION && headerLength !== HEADER.SIZE) throw tooNew(image, version);
  if (!shaMatches(b, HEADER.SHA_OFFSET)) throw headerCorrupt(image, 'checksum mismatch');
  if (version > FORMAT_VERSION) throw tooNew(image, version);
  const bad = (why: string) => headerCorrupt(image, why);
  if (version !== FORMAT_VERSION) throw bad(`version ${version}`);
  if (headerLength !== HEADER.SIZE) throw bad(`header length ${headerLength}`);
  const flags = b.readUInt32LE(12);
  if ((flags & ~HEADER.FLAG_ENCRYPTED) !== 0) throw bad(`unknown flags ${flags}`);
  const pointIndex = b.readUInt8(64);
  if (pointIndex >= POINT_TYPES.length) throw bad(`point type ${pointIndex}`);
  const compressionAlgo = b.readUInt8(65);
  if (compressionAlgo !== COMPRESSION_ALGO.NONE && compressionAlgo !== COMPRESSION_ALGO.ZSTD)
    throw bad(`compression ${compressionAlgo}`);
  const kdf = b.readUInt8(67);
  const encrypted = (flags & HEADER.FLAG_ENCRYPTED) !== 0;
  if (kdf !== (encrypted ? KDF.SCRYPT : KDF.NONE)) throw bad(`KDF ${kdf} with encryption ${encrypted}`);
  const windowSize = b.readUInt32LE(68);
  if (!validWindowSize(windowSize)) throw bad(`window size ${windowSize}`);
  const created = readU64(b, 72);
  const totalLength = readU64(b, 216);
  const volumeLimit = readU64(b, 232);
  if (created < 0 || totalLength < 0 || volumeLimit < 0) throw bad('a 64-bit field is out of range');
  const toolEnd = b.indexOf(0, 152);
  const tool = b.toString('utf8', 152, toolEnd < 0 || toolEnd > 216 ? 216 : toolEnd);
  return {
    version,
    headerLength,
    encrypted,
    imageId: Buffer.from(b.subarray(16, 32)),
    parentId: Buffer.from(b.subarray(32, 48)),
    chainId: Buffer.from(b.subarray(48, 64)),
    pointType: POINT_TYPES[pointIndex],
    compressionAlgo,
    compressionLevel: b.readUInt8(66),
    kdf,
    windowSize,
    created,
    scrypt: { logN: b.readUInt8(80), r: b.readUInt8(81), p: b.readUInt8(82) },
    salt: Buffer.from(b.subarray(88, 88 + KDF_SALT_BYTES)),
    keyCheck: Buffer.from(b.subarray(120, 120 + SHA_BYTES)),
    tool,
    totalLength,
    volumeCount: b.readUInt32LE(224),
    volumeLimit,
  };
}

// ---------------------------------------------------------------------------------------------
// Volume header

export function serializeVolumeHeader(v: VolumeHeader): Buffer {
  const b = Buffer.alloc(VOLUME_HEADER.SIZE);
  b.write(VOLUME_HEADER.MAGIC, 0, 'latin1');
  v.imageId.copy(b, 8, 0, ID_BYTES);
  b.writeUInt32LE(v.volume, 24);
  writeU64(b, 32, v.logicalOffset);
  writeU64(b, 40, v.volumeLimit);
  sealSha(b, VOLUME_HEADER.SHA_OFFSET);
  return b;
}

export function parseVolumeHeader(b: Buffer, image: string, file: string): VolumeHeader {
  if (!hasVolumeMagic(b)) throw headerCorrupt(image, 'the volume magic RSCUVOL1 is missing', file);
  if (b.length < VOLUME_HEADER.SIZE) throw headerCorrupt(image, `only ${b.length} bytes`, file);
  if (!shaMatches(b, VOLUME_HEADER.SHA_OFFSET)) throw headerCorrupt(image, 'checksum mismatch', file);
  const logicalOffset = readU64(b, 32);
  const volumeLimit = readU64(b, 40);
  if (logicalOffset < 0 || volumeLimit < 0)
    throw headerCorrupt(image, 'a 64-bit field is out of range', file);
  return {
    imageId: Buffer.from(b.subarray(8, 24)),
    volume: b.readUInt32LE(24),
    logicalOffset,
    volumeLimit,
  };
}

// ---------------------------------------------------------------------------------------------
// Chunk record header

export function serializeRecordHeader(r: RecordHeader, into = Buffer.alloc(RECORD_HEADER.SIZE)): Buffer {
  into.write(RECORD_HEADER.MAGIC, 0, 'latin1');
  into.writeUInt32LE(r.regionId, 4);
  writeU64(into, 8, r.windowStart);
  into.writeUInt32LE(r.rawLength, 16);
  into.writeUInt32LE(r.storedLength, 20);
  into.writeUInt32LE(r.flags, 24);
  into.writeUInt32LE(crc32c(into.subarray(0, RECORD_HEADER.CRC_OFFSET)), RECORD_HEADER.CRC_OFFSET);
  return into;
}

/** The record header as read, or why it is not one. */
export function parseRecordHeader(b: Buffer): RecordHeader | string {
  if (b.length < RECORD_HEADER.SIZE) return 'too short';
  if (b.toString('latin1', 0, 4) !== RECORD_HEADER.MAGIC) return 'magic CHNK missing';
  if (crc32c(b.subarray(0, RECORD_HEADER.CRC_OFFSET)) !== b.readUInt32LE(RECORD_HEADER.CRC_OFFSET))
    return 'crc32c mismatch';
  const windowStart = readU64(b, 8);
  if (windowStart < 0) return 'window start out of range';
  return {
    regionId: b.readUInt32LE(4),
    windowStart,
    rawLength: b.readUInt32LE(16),
    storedLength: b.readUInt32LE(20),
    flags: b.readUInt32LE(24),
  };
}

// ---------------------------------------------------------------------------------------------
// Index entries

export function writeIndexEntry(b: Buffer, off: number, e: IndexEntry): void {
  b.writeUInt32LE(e.regionId, off);
  b.writeUInt32LE(e.flags, off + 4);
  writeU64(b, off + 8, e.windowStart);
  b.writeUInt32LE(e.rawLength, off + 16);
  b.writeUInt32LE(e.storedLength, off + 20);
  writeU64(b, off + 24, e.payloadOffset);
  if (e.pointId === '') b.fill(0, off + 32, off + 48);
  else Buffer.from(e.pointId, 'hex').copy(b, off + 32, 0, ID_BYTES);
  e.sha256.copy(b, off + 48, 0, SHA_BYTES);
}

/**
 * Entries of a decompressed index. The sha256 fields are views into `b` (no copy per entry).
 * Checks only what one entry can say about itself; ordering and coverage are the reader's job.
 */
export function parseIndex(b: Buffer, count: number, image: string): IndexEntry[] {
  if (b.length !== count * INDEX_ENTRY_SIZE)
    throw indexCorrupt(image, `${b.length} bytes for ${count} entries of ${INDEX_ENTRY_SIZE} bytes`);
  const out: IndexEntry[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const off = i * INDEX_ENTRY_SIZE;
    const windowStart = readU64(b, off + 8);
    const payloadOffset = readU64(b, off + 24);
    if (windowStart < 0 || payloadOffset < 0) throw indexCorrupt(image, `entry ${i}: offset out of range`);
    const point = b.subarray(off + 32, off + 48);
    out[i] = {
      regionId: b.readUInt32LE(off),
      flags: b.readUInt32LE(off + 4),
      windowStart,
      rawLength: b.readUInt32LE(off + 16),
      storedLength: b.readUInt32LE(off + 20),
      payloadOffset,
      pointId: isZeroId(point) ? '' : point.toString('hex'),
      sha256: b.subarray(off + 48, off + 80),
    };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Trailer

export function serializeTrailer(t: Trailer): Buffer {
  const b = Buffer.alloc(TRAILER.SIZE);
  b.write(TRAILER.MAGIC, 0, 'latin1');
  t.imageId.copy(b, 8, 0, ID_BYTES);
  writeU64(b, 24, t.indexOffset);
  writeU64(b, 32, t.indexLength);
  t.indexSha256.copy(b, 40, 0, SHA_BYTES);
  writeU64(b, 72, t.manifestOffset);
  writeU64(b, 80, t.manifestLength);
  t.manifestSha256.copy(b, 88, 0, SHA_BYTES);
  writeU64(b, 120, t.totalLength);
  b.writeUInt32LE(t.volumeCount, 128);
  b.writeUInt32LE(t.chunkCount, 132);
  writeU64(b, 136, t.volumeLimit);
  sealSha(b, TRAILER.SHA_OFFSET);
  return b;
}

export function parseTrailer(b: Buffer, image: string): Trailer {
  if (b.length !== TRAILER.SIZE) throw trailerCorrupt(image, `${b.length} bytes`);
  if (b.toString('latin1', 0, 8) !== TRAILER.MAGIC) throw trailerCorrupt(image, 'magic RSCUEND1 missing');
  if (!shaMatches(b, TRAILER.SHA_OFFSET)) throw trailerCorrupt(image, 'checksum mismatch');
  const nums = [24, 32, 72, 80, 120, 136].map((o) => readU64(b, o));
  if (nums.some((n) => n < 0)) throw trailerCorrupt(image, 'a 64-bit field is out of range');
  const [indexOffset, indexLength, manifestOffset, manifestLength, totalLength, volumeLimit] = nums;
  return {
    imageId: Buffer.from(b.subarray(8, 24)),
    indexOffset,
    indexLength,
    indexSha256: Buffer.from(b.subarray(40, 72)),
    manifestOffset,
    manifestLength,
    manifestSha256: Buffer.from(b.subarray(88, 120)),
    totalLength,
    volumeCount: b.readUInt32LE(128),
    chunkCount: b.readUInt32LE(132),
    volumeLimit,
  };
}
