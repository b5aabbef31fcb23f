/**
 * NTFS boot sector ($Boot, sector 0; a copy lives in the last sector of the volume).
 * Pure codec: bytes in, a checked description of the volume geometry out.
 */
import { corrupt } from '../errors.ts';

export const NTFS_BOOT = {
  SIZE: 512,
  OEM_ID: 'NTFS    ',
  OFF_OEM_ID: 0x03,
  OFF_BYTES_PER_SECTOR: 0x0b,
  OFF_SECTORS_PER_CLUSTER: 0x0d,
  OFF_RESERVED_SECTORS: 0x0e,
  OFF_FATS: 0x10,
  OFF_ROOT_ENTRIES: 0x11,
  OFF_SECTORS16: 0x13,
  OFF_SECTORS_PER_FAT: 0x16,
  OFF_LARGE_SECTORS: 0x20,
  OFF_TOTAL_SECTORS: 0x28,
  OFF_MFT_LCN: 0x30,
  OFF_MFTMIRR_LCN: 0x38,
  OFF_CLUSTERS_PER_MFT_RECORD: 0x40,
  OFF_CLUSTERS_PER_INDEX_BLOCK: 0x44,
  OFF_SERIAL: 0x48,
  OFF_END_MARKER: 0x1fe,
  END_MARKER: 0xaa55,
} as const;

/** Windows formats clusters up to 2 MiB (Windows 10 1709+); nothing larger exists. */
export const NTFS_MAX_CLUSTER_SIZE = 2 * 1024 * 1024;
/** MFT records and index blocks: 1 KiB / 4 KiB in practice; fixups need a multiple of 512. */
const MIN_RECORD_SIZE = 512;
const MAX_RECORD_SIZE = 64 * 1024;

export interface NtfsBootSector {
  bytesPerSector: number;
  sectorsPerCluster: number;
  clusterSize: number;
  /** Sectors of the volume, not counting the backup boot sector that follows them. */
  totalSectors: number;
  /** Whole clusters: the units $Bitmap has one bit for. */
  clusterCount: number;
  mftLcn: number;
  mftMirrLcn: number;
  mftRecordSize: number;
  indexBlockSize: number;
  serial: bigint;
  /** The serial as blkid prints it (UUID=…): 16 upper-case hex digits. */
  serialHex: string;
  hasEndMarker: boolean;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/**
 * Sectors per cluster is a byte: 1..128 as is; above 128 it is a negative exponent
 * (0xF8 → 2^(256-248) = 256 sectors), which is how clusters beyond 64 KiB are written.
 */
export function decodeSectorsPerCluster(v: number): number | undefined {
  if (v >= 1 && v <= 0x80) return isPowerOfTwo(v) ? v : undefined;
  if (v > 0x80) {
    const shift = 256 - v;
    return shift <= 20 ? 2 ** shift : undefined;
  }
  return undefined;
}

/**
 * Record/index-block size byte (signed): positive = that many clusters, negative = 2^-v bytes
 * (0xF6 = -10 → 1024 bytes).
 */
export function decodeClustersPerRecord(v: number, clusterSize: number): number | undefined {
  const s = v > 0x7f ? v - 0x100 : v;
  if (s > 0) return s * clusterSize;
  if (s < 0 && s >= -31) return 2 ** -s;
  return undefined;
}

export function formatNtfsSerial(serial: bigint): string {
  return serial.toString(16).toUpperCase().padStart(16, '0');
}

export type BootCheck = { ok: true; boot: NtfsBootSector } | { ok: false; why: string };

/** Checks everything the boot sector alone can tell; never throws. */
export function checkNtfsBootSector(b: Uint8Array): BootCheck {
  if (b.length < NTFS_BOOT.SIZE) return { ok: false, why: 'shorter than one sector' };
  const buf = Buffer.from(b.buffer, b.byteOffset, NTFS_BOOT.SIZE);
  if (buf.toString('latin1', NTFS_BOOT.OFF_OEM_ID, NTFS_BOOT.OFF_OEM_ID + 8) !== NTFS_BOOT.OEM_ID) {
    return { ok: false, why: 'no "NTFS    " OEM id' };
  }
  const bytesPerSector = buf.readUInt16LE(NTFS_BOOT.OFF_BYTES_PER_SECTOR);
  if (!isPowerOfTwo(bytesPerSector) || bytesPerSector < 256 || bytesPerSector > 4096) {
    return { ok: false, why: `bytes per sector ${bytesPerSector}` };
  }
  const spcByte = buf[NTFS_BOOT.OFF_SECTORS_PER_CLUSTER];
  const sectorsPerCluster = decodeSectorsPerCluster(spcByte);
  if (sectorsPerCluster === undefined)
    return { ok: false, why: `sectors per cluster byte 0x${spcByte.toString(16)}` };
  const clusterSize = sectorsPerCluster * bytesPerSector;
  if (clusterSize > NTFS_MAX_CLUSTER_SIZE) return { ok: false, why: `cluster size ${clusterSize}` };
  // The FAT-era BPB fields are zero on NTFS; Windows and ntfs-3g both insist on it.
  if (
    buf.readUInt16LE(NTFS_BOOT.OFF_RESERVED_SECTORS) !== 0 ||
    buf[NTFS_BOOT.OFF_FATS] !== 0 ||
    buf.readUInt16LE(NTFS_BOOT.OFF_ROOT_ENTRIES) !== 0 ||
    buf.readUInt16LE(NTFS_BOOT.OFF_SECTORS16) !== 0 ||
    buf.readUInt16LE(NTFS_BOOT.OFF_SECTORS_PER_FAT) !== 0 ||
    buf.readUInt32LE(NTFS_BOOT.OFF_LARGE_SECTORS) !== 0
  ) {
    return { ok: false, why: 'FAT fields of the BIOS parameter block are not zero' };
  }
  const total = buf.readBigInt64LE(NTFS_BOOT.OFF_TOTAL_SECTORS);
  const mftLcn = buf.readBigInt64LE(NTFS_BOOT.OFF_MFT_LCN);
  const mirrLcn = buf.readBigInt64LE(NTFS_BOOT.OFF_MFTMIRR_LCN);
  // 2^53 bytes is 8 PiB: beyond it byte offsets stop being exact JavaScript numbers.
  const maxSectors = BigInt(Math.floor(Number.MAX_SAFE_INTEGER / bytesPerSector));
  if (total <= 0n || total > maxSectors) return { ok: false, why: `total sectors ${total}` };
  const totalSectors = Number(total);
  const clusterCount = Math.floor(totalSectors / sectorsPerCluster);
  if (clusterCount < 1) return { ok: false, why: 'the volume is smaller than one cluster' };
  if (mftLcn <= 0n || mftLcn >= BigInt(clusterCount)) return { ok: false, why: `$MFT LCN ${mftLcn}` };
  if (mirrLcn <= 0n || mirrLcn >= BigInt(clusterCount)) return { ok: false, why: `$MFTMirr LCN ${mirrLcn}` };
  const mftRecordSize = decodeClustersPerRecord(buf[NTFS_BOOT.OFF_CLUSTERS_PER_MFT_RECORD], clusterSize);
  if (
    mftRecordSize === undefined ||
    !isPowerOfTwo(mftRecordSize) ||
    mftRecordSize < MIN_RECORD_SIZE ||
    mftRecordSize > MAX_RECORD_SIZE
  ) {
    return {
      ok: false,
      why: `MFT record size byte 0x${buf[NTFS_BOOT.OFF_CLUSTERS_PER_MFT_RECORD].toString(16)}`,
    };
  }
  const indexBlockSize = decodeClustersPerRecord(buf[NTFS_BOOT.OFF_CLUSTERS_PER_INDEX_BLOCK], clusterSize);
  if (
    indexBlockSize === undefined ||
    !isPowerOfTwo(indexBlockSize) ||
    indexBlockSize < MIN_RECORD_SIZE ||
    indexBlockSize > MAX_RECORD_SIZE
  ) {
    return {
      ok: false,
      why: `index block size byte 0x${buf[NTFS_BOOT.OFF_CLUSTERS_PER_INDEX_BLOCK].toString(16)}`,
    };
  }
  const serial = buf.readBigUInt64LE(NTFS_BOOT.OFF_SERIAL);
  return {
    ok: true,
    boot: {
      bytesPerSector,
      sectorsPerCluster,
      clusterSize,
      totalSectors,
      clusterCount,
      mftLcn: Number(mftLcn),
      mftMirrLcn: Number(mirrLcn),
      mftRecordSize,
      indexBlockSize,
      serial,
      serialHex: formatNtfsSerial(serial),
      hasEndMarker: buf.readUInt16LE(NTFS_BOOT.OFF_END_MARKER) === NTFS_BOOT.END_MARKER,
    },
  };
}

/** True when the sector carries the NTFS OEM id and a geometry that makes sense. */
export function isNtfsBootSector(b: Uint8Array): boolean {
  return checkNtfsBootSector(b).ok;
}

export function parseNtfsBootSector(b: Uint8Array): NtfsBootSector {
  const r = checkNtfsBootSector(b);
  if (!r.ok) throw corrupt('NTFS boot sector', r.why);
  return r.boot;
}
