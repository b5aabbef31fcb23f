/**
 * Types and constants of the Rescue image format, version 1 (docs/image-format.md).
 * Every number that appears in the format is named here, in one place.
 */
import type { Extent } from '../filesystems/extents.ts';
import type { FsIdentity } from '../filesystems/types.ts';
import type { PartitionTable } from '../partitions/types.ts';

export type { Extent };

export type Compression = 'none' | 'normal' | 'high';

/** zstd level per compression setting; 0 means "not compressed". */
export const COMPRESSION_LEVEL = { none: 0, normal: 3, high: 12 } as const satisfies Record<
  Compression,
  number
>;

export const FORMAT_VERSION = 1;

export const MIB = 1024 * 1024;
/**
 * 2 MiB: the granularity of incremental points (a change costs at least one window, compressed)
 * against compression (every chunk is its own zstd frame). Measured on the 4 GiB benchmark volumes
 * (bench/incremental.ts, backup-vs-partclone.ts): 4 MiB windows made incrementals 2–4× larger
 * (NTFS, deleting files: 25.7 MiB stored vs 5.6 with 1 MiB windows); 1 MiB windows made full ext4
 * images 2 % larger (1.022× partclone+zstd, over issue #3's 1.02 goal); 2 MiB: images +0.5 %
 * (1.010×), incrementals 2.6 % (ext4) / 4.1 % (NTFS) of the full after 1 % changed.
 */
export const DEFAULT_WINDOW_SIZE = 2 * MIB;
/** Bounds of the window size a reader accepts: one chunk is decoded in memory at once. */
export const MIN_WINDOW_SIZE = 4096;
export const MAX_WINDOW_SIZE = 256 * MIB;
/** Windows are cut on sector boundaries so that restores write whole sectors. */
export const WINDOW_ALIGNMENT = 512;

/** Smallest volume size a user may ask for (`--split`). */
export const MIN_SPLIT_BYTES = 50 * MIB;
/** Largest file FAT can hold; volumes on FAT destinations are capped at this. */
export const FAT_MAX_FILE_BYTES = 4 * 1024 * 1024 * 1024 - 1;

export const MAX_COMMENT_CHARS = 1024;
export const MAX_NAME_BYTES = 200;
export const MIN_PASSWORD_CHARS = 1;
export const MAX_PASSWORD_CHARS = 64;

export const IMAGE_EXTENSION = '.rimg';
export const PARTIAL_SUFFIX = '.partial';

export const HEADER = {
  MAGIC: 'RSCUIMG1',
  SIZE: 4096,
  /** sha256 of bytes 0..SHA_OFFSET-1 is stored at SHA_OFFSET. */
  SHA_OFFSET: 4064,
  FLAG_ENCRYPTED: 1,
  TOOL_BYTES: 64,
} as const;

export const VOLUME_HEADER = {
  MAGIC: 'RSCUVOL1',
  SIZE: 128,
  SHA_OFFSET: 96,
} as const;

export const RECORD_HEADER = {
  MAGIC: 'CHNK',
  SIZE: 32,
  CRC_OFFSET: 28,
} as const;

export const INDEX_ENTRY_SIZE = 80;

export const TRAILER = {
  MAGIC: 'RSCUEND1',
  SIZE: 256,
  SHA_OFFSET: 224,
} as const;

/** AES-256-GCM framing of every encrypted payload: nonce ‖ ciphertext ‖ tag. */
export const GCM = { KEY_BYTES: 32, NONCE_BYTES: 12, TAG_BYTES: 16 } as const;
export const GCM_OVERHEAD = GCM.NONCE_BYTES + GCM.TAG_BYTES;

/** Region id and window start used in the AAD of the index and the manifest. */
export const METADATA_REGION_ID = 0xffffffff;
export const INDEX_AAD_WINDOW = 0xffffffffffffffffn;
export const MANIFEST_AAD_WINDOW = 0xfffffffffffffffen;

/**
 * ZERO: all raw bytes are zero, nothing stored. STORED_RAW: the payload is not compressed.
 * OTHER_POINT: the record is in another point of the chain. DELTA: the payload is a patch of the
 * same window of another point (docs/image-format.md, "Delta records").
 */
export const ENTRY_FLAGS = { ZERO: 1, STORED_RAW: 2, OTHER_POINT: 4, DELTA: 8 } as const;
/** Flag bits a version-1 reader knows; others make an index entry invalid. */
export const ENTRY_FLAGS_MASK =
  ENTRY_FLAGS.ZERO | ENTRY_FLAGS.STORED_RAW | ENTRY_FLAGS.OTHER_POINT | ENTRY_FLAGS.DELTA;

export const POINT_TYPES = ['full', 'incremental', 'differential'] as const;
export type PointType = (typeof POINT_TYPES)[number];

export const KDF = { NONE: 0, SCRYPT: 1 } as const;
export const COMPRESSION_ALGO = { NONE: 0, ZSTD: 1 } as const;

export interface ScryptParams {
  /** log2 of the CPU/memory cost N. */
  logN: number;
  r: number;
  p: number;
}
/** N = 2^17, r = 8, p = 1: 128 MiB of memory, about 0.3 s. */
export const SCRYPT_DEFAULTS: ScryptParams = { logN: 17, r: 8, p: 1 };
/** What a reader accepts from a header: bounded so that a hostile header cannot exhaust memory. */
export const SCRYPT_LIMITS = { minLogN: 10, maxLogN: 22, maxR: 32, maxP: 16, maxMemory: 1024 * MIB } as const;
export const KDF_SALT_BYTES = 32;
export const KEY_CHECK_LABEL = 'rescue key check';

/** Caps on what a reader decompresses from the index and the manifest. */
export const MAX_MANIFEST_BYTES = 256 * MIB;
export const MAX_CHUNK_COUNT = 0xffffffff;

/** The fixed part of the 4096-byte header at logical offset 0. */
export interface ImageHeader {
  version: number;
  headerLength: number;
  encrypted: boolean;
  imageId: Buffer;
  parentId: Buffer;
  chainId: Buffer;
  pointType: PointType;
  /** 0 none, 1 zstd. */
  compressionAlgo: number;
  compressionLevel: number;
  kdf: number;
  windowSize: number;
  /** ms since the epoch. */
  created: number;
  scrypt: ScryptParams;
  salt: Buffer;
  keyCheck: Buffer;
  tool: string;
  /** 0 while the image is being written (set when it is finished). */
  totalLength: number;
  /** 0 while the image is being written. */
  volumeCount: number;
  /** 0 = not split. */
  volumeLimit: number;
}

export interface VolumeHeader {
  imageId: Buffer;
  /** 2, 3, … (the first volume starts with the image header instead). */
  volume: number;
  /** Logical offset of the first byte after the volume header. */
  logicalOffset: number;
  volumeLimit: number;
}

export interface RecordHeader {
  regionId: number;
  windowStart: number;
  rawLength: number;
  storedLength: number;
  flags: number;
}

export interface Trailer {
  imageId: Buffer;
  indexOffset: number;
  indexLength: number;
  indexSha256: Buffer;
  manifestOffset: number;
  manifestLength: number;
  manifestSha256: Buffer;
  totalLength: number;
  volumeCount: number;
  chunkCount: number;
  volumeLimit: number;
}

export interface IndexEntry {
  regionId: number;
  flags: number;
  /** Bytes from the region's start; a multiple of the window size. */
  windowStart: number;
  rawLength: number;
  /** Payload bytes (incl. nonce and tag when encrypted); 0 for a zero chunk. */
  storedLength: number;
  /** Logical offset of the payload (after its record header) in the image holding it. */
  payloadOffset: number;
  /** Hex id of the point holding the payload; '' = this image. */
  pointId: string;
  sha256: Buffer;
}

export interface EncodedChunk {
  regionId: number;
  windowStart: number;
  rawLength: number;
  flags: number;
  sha256: Buffer;
  /** nonce+ciphertext+tag, or the zstd frame, or the raw bytes; empty for a zero chunk. */
  payload: Buffer;
  /** Flag DELTA only: the point holding the record the patch applies to. */
  pointId?: string;
}

// ---------------------------------------------------------------------------------------------
// Manifest (JSON)

export interface ManifestPoint {
  /** Hex image id. */
  id: string;
  type: PointType;
  /** Hex id of the parent point; null for a full. */
  parent: string | null;
  /** Hex id of the chain's full point. */
  chain: string;
  /** 1 for the full, then counting up along the chain. */
  sequence: number;
}

export interface ManifestOptions {
  compression: Compression;
  level: number;
  encrypted: boolean;
  sectorBySector: boolean;
  /** Volume size limit in bytes, or null when not split. */
  split: number | null;
  window: number;
}

export interface DiskSourceInfo {
  path: string;
  model?: string;
  serial?: string;
  size: number;
  sectorSize: number;
  physicalSectorSize: number;
  transport?: string;
}

export type RegionKind = 'lead-in' | 'partition' | 'gpt-backup' | 'disk';

export interface ManifestRegion {
  /** Unique within the image; chunks refer to it. */
  id: number;
  kind: RegionKind;
  /** Bytes from the start of the disk. */
  start: number;
  size: number;
  /** Partition number (as Linux numbers them) for kind "partition". */
  partition?: number;
  fs?: FsIdentity;
  usedMethod?: 'allocation' | 'sector-by-sector';
  /** Why the region is copied sector by sector, in words. */
  reason?: string | null;
  usedBytes?: number;
  /** encodeUsedMap() of the used extents; absent = the whole region is used. */
  usedMap?: string;
}

export interface ManifestDisk {
  index: number;
  source: DiskSourceInfo;
  table: PartitionTable | null;
  regions: ManifestRegion[];
}

export interface ManifestStats {
  usedBytes: number;
  /** Bytes of this image's chunk records (record headers and payloads). */
  storedBytes: number;
  chunks: number;
  seconds: number;
}

export interface Manifest {
  format: number;
  tool: string;
  /** ISO 8601. */
  created: string;
  kind: 'disk' | 'partition' | 'system';
  name: string;
  comment: string;
  point: ManifestPoint;
  options: ManifestOptions;
  disks: ManifestDisk[];
  stats: ManifestStats;
}

// ---------------------------------------------------------------------------------------------
// Check

export interface CheckProblem {
  code: string;
  message: string;
  /** Chunk number (position in the index). */
  chunk?: number;
  region?: number;
  windowStart?: number;
  diskOffset?: number;
}

export interface CheckPointReport {
  id: string;
  type: PointType | 'unknown';
  ok: boolean;
  problems: CheckProblem[];
  /** Chain checks: the point's number, file, and whether it can be restored (and why not). */
  sequence?: number;
  file?: string;
  usable?: boolean;
  why?: string;
}

export interface CheckReport {
  ok: boolean;
  image: string;
  points: CheckPointReport[];
  /** Chunks verified (of this image). */
  chunks: number;
  /** Stored bytes read and verified. */
  bytes: number;
  /** Chain checks: points named as parents whose files are not there. */
  missing?: { id: string; parentOf: string[] }[];
}
