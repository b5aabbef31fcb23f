/**
 * The restart pages at the start of NTFS's journal ($LogFile): they say whether Windows closed the
 * volume cleanly. Two copies (at 0 and at one system page), each multi-sector protected; the one
 * with the higher LSN is current. Pure codec: parse and write.
 */
import { corrupt } from '../errors.ts';
import { applyFixups, NTFS_FIXUP_STRIDE, protectRecord } from './ntfs-record.ts';

export const RESTART_PAGE = {
  MAGIC: 'RSTR',
  /** Written by chkdsk over a restart page it dealt with. */
  CHKD_MAGIC: 'CHKD',
  OFF_USA_OFFSET: 0x04,
  OFF_USA_COUNT: 0x06,
  OFF_CHKDSK_LSN: 0x08,
  OFF_SYSTEM_PAGE_SIZE: 0x10,
  OFF_LOG_PAGE_SIZE: 0x14,
  OFF_RESTART_AREA: 0x18,
  OFF_MINOR: 0x1a,
  OFF_MAJOR: 0x1c,
  HEADER_SIZE: 0x1e,
} as const;

export const RESTART_AREA = {
  OFF_CURRENT_LSN: 0x00,
  OFF_LOG_CLIENTS: 0x08,
  OFF_CLIENT_FREE_LIST: 0x0a,
  OFF_CLIENT_IN_USE_LIST: 0x0c,
  OFF_FLAGS: 0x0e,
  OFF_SEQ_NUMBER_BITS: 0x10,
  OFF_LENGTH: 0x14,
  OFF_CLIENT_ARRAY: 0x16,
  OFF_FILE_SIZE: 0x18,
  OFF_LOG_RECORD_HEADER_LENGTH: 0x24,
  OFF_LOG_PAGE_DATA_OFFSET: 0x26,
  OFF_OPEN_COUNT: 0x28,
  SIZE: 0x30,
  FLAG_VOLUME_IS_CLEAN: 0x0002,
  NO_CLIENT: 0xffff,
} as const;

export const LOG_CLIENT = {
  SIZE: 0xa0,
  OFF_OLDEST_LSN: 0x00,
  OFF_RESTART_LSN: 0x08,
  OFF_PREV: 0x10,
  OFF_NEXT: 0x12,
  OFF_NAME_LENGTH: 0x1c,
  OFF_NAME: 0x20,
} as const;

export interface RestartPage {
  chkdsk: boolean;
  systemPageSize: number;
  logPageSize: number;
  major: number;
  minor: number;
  /** current_lsn of the restart area (chkdsk_lsn for a CHKD page): the newer page wins. */
  lsn: bigint;
  clientInUseList: number;
  clientFreeList: number;
  logClients: number;
  flags: number;
  /** The journal has no open client, or says it was closed cleanly. */
  clean: boolean;
}

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** Page size a restart page claims, from its first 512 bytes; undefined when it is not one. */
export function restartPageSize(head: Uint8Array): number | undefined {
  if (head.length < RESTART_PAGE.HEADER_SIZE) return undefined;
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  const magic = b.toString('latin1', 0, 4);
  if (magic !== RESTART_PAGE.MAGIC && magic !== RESTART_PAGE.CHKD_MAGIC) return undefined;
  const size = b.readUInt32LE(RESTART_PAGE.OFF_SYSTEM_PAGE_SIZE);
  return isPow2(size) && size >= NTFS_FIXUP_STRIDE && size <= 65536 ? size : undefined;
}

/** True for a journal page never written since the log was emptied (mkntfs, ntfs-3g reset). */
export function isEmptyLogPage(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0xff && head[1] === 0xff && head[2] === 0xff && head[3] === 0xff;
}

/** Parses one whole restart page (fixups undone on a copy); anything inconsistent is corrupt. */
export function parseRestartPage(raw: Uint8Array, what = '$LogFile restart page'): RestartPage {
  const size = restartPageSize(raw);
  if (size === undefined) throw corrupt(what, 'not a restart page');
  if (raw.length < size) throw corrupt(what, 'page is truncated');
  const b = Buffer.from(raw.subarray(0, size));
  const chkdsk = b.toString('latin1', 0, 4) === RESTART_PAGE.CHKD_MAGIC;
  // chkdsk may leave its page without update sequence protection.
  if (!(chkdsk && b.readUInt16LE(RESTART_PAGE.OFF_USA_COUNT) === 0))
    applyFixups(b, b.toString('latin1', 0, 4), what);
  const logPageSize = b.readUInt32LE(RESTART_PAGE.OFF_LOG_PAGE_SIZE);
  if (!isPow2(logPageSize) || logPageSize < NTFS_FIXUP_STRIDE)
    throw corrupt(what, `log page size ${logPageSize}`);
  const ra = b.readUInt16LE(RESTART_PAGE.OFF_RESTART_AREA);
  if (ra & 7 || ra < RESTART_PAGE.HEADER_SIZE || ra + RESTART_AREA.SIZE > size) {
    throw corrupt(what, `restart area at ${ra}`);
  }
  const logClients = b.readUInt16LE(ra + RESTART_AREA.OFF_LOG_CLIENTS);
  const clientFreeList = b.readUInt16LE(ra + RESTART_AREA.OFF_CLIENT_FREE_LIST);
  const clientInUseList = b.readUInt16LE(ra + RESTART_AREA.OFF_CLIENT_IN_USE_LIST);
  for (const idx of [clientFreeList, clientInUseList]) {
    if (idx !== RESTART_AREA.NO_CLIENT && idx >= logClients)
      throw corrupt(what, `log client index ${idx} of ${logClients}`);
  }
  const flags = b.readUInt16LE(ra + RESTART_AREA.OFF_FLAGS);
  return {
    chkdsk,
    systemPageSize: size,
    logPageSize,
    major: b.readInt16LE(RESTART_PAGE.OFF_MAJOR),
    minor: b.readInt16LE(RESTART_PAGE.OFF_MINOR),
    lsn: chkdsk
      ? b.readBigInt64LE(RESTART_PAGE.OFF_CHKDSK_LSN)
      : b.readBigInt64LE(ra + RESTART_AREA.OFF_CURRENT_LSN),
    clientInUseList,
    clientFreeList,
    logClients,
    flags,
    clean: clientInUseList === RESTART_AREA.NO_CLIENT || (flags & RESTART_AREA.FLAG_VOLUME_IS_CLEAN) !== 0,
  };
}

export interface RestartPageFields {
  systemPageSize: number;
  /** Usable bytes of the journal (sets seq_number_bits the way NTFS derives it). */
  fileSize: number;
  currentLsn: bigint;
  /** Open client 0 and no clean flag = "Windows did not close the volume". */
  clean: boolean;
  major?: number;
  minor?: number;
}

/**
 * A version 1.1 restart page with one log client ("NTFS"), protected by fixups. The inverse of
 * parseRestartPage for the fields that matter; fixtures use it to forge an unclean journal.
 */
export function writeRestartPage(f: RestartPageFields): Buffer {
  const size = f.systemPageSize;
  const b = Buffer.alloc(size);
  const usaCount = size / NTFS_FIXUP_STRIDE + 1;
  const ra = (RESTART_PAGE.HEADER_SIZE + usaCount * 2 + 7) & ~7;
  b.write(RESTART_PAGE.MAGIC, 0, 'latin1');
  b.writeUInt16LE(RESTART_PAGE.HEADER_SIZE, RESTART_PAGE.OFF_USA_OFFSET);
  b.writeUInt16LE(usaCount, RESTART_PAGE.OFF_USA_COUNT);
  b.writeUInt32LE(size, RESTART_PAGE.OFF_SYSTEM_PAGE_SIZE);
  b.writeUInt32LE(4096, RESTART_PAGE.OFF_LOG_PAGE_SIZE);
  b.writeUInt16LE(ra, RESTART_PAGE.OFF_RESTART_AREA);
  b.writeInt16LE(f.minor ?? 1, RESTART_PAGE.OFF_MINOR);
  b.writeInt16LE(f.major ?? 1, RESTART_PAGE.OFF_MAJOR);
  const clientArray = 0x40;
  b.writeBigInt64LE(f.currentLsn, ra + RESTART_AREA.OFF_CURRENT_LSN);
  b.writeUInt16LE(1, ra + RESTART_AREA.OFF_LOG_CLIENTS);
  b.writeUInt16LE(RESTART_AREA.NO_CLIENT, ra + RESTART_AREA.OFF_CLIENT_FREE_LIST);
  b.writeUInt16LE(0, ra + RESTART_AREA.OFF_CLIENT_IN_USE_LIST);
  b.writeUInt16LE(f.clean ? RESTART_AREA.FLAG_VOLUME_IS_CLEAN : 0, ra + RESTART_AREA.OFF_FLAGS);
  b.writeUInt32LE(67 - Math.floor(Math.log2(f.fileSize) + 1), ra + RESTART_AREA.OFF_SEQ_NUMBER_BITS);
  b.writeUInt16LE(clientArray + LOG_CLIENT.SIZE, ra + RESTART_AREA.OFF_LENGTH);
  b.writeUInt16LE(clientArray, ra + RESTART_AREA.OFF_CLIENT_ARRAY);
  b.writeBigInt64LE(BigInt(f.fileSize), ra + RESTART_AREA.OFF_FILE_SIZE);
  b.writeUInt16LE(0x30, ra + RESTART_AREA.OFF_LOG_RECORD_HEADER_LENGTH);
  b.writeUInt16LE(0x40, ra + RESTART_AREA.OFF_LOG_PAGE_DATA_OFFSET);
  const c = ra + clientArray;
  b.writeBigInt64LE(f.currentLsn, c + LOG_CLIENT.OFF_OLDEST_LSN);
  b.writeBigInt64LE(f.currentLsn, c + LOG_CLIENT.OFF_RESTART_LSN);
  b.writeUInt16LE(RESTART_AREA.NO_CLIENT, c + LOG_CLIENT.OFF_PREV);
  b.writeUInt16LE(RESTART_AREA.NO_CLIENT, c + LOG_CLIENT.OFF_NEXT);
  b.writeUInt32LE(8, c + LOG_CLIENT.OFF_NAME_LENGTH);
  b.write('NTFS', c + LOG_CLIENT.OFF_NAME, 'utf16le');
  b.writeUInt16LE(1, RESTART_PAGE.HEADER_SIZE);
  protectRecord(b);
  return b;
}
