/**
 * An opened NTFS volume: the boot sector, the full runlist of $MFT (following $MFT's own attribute
 * list when it has one), MFT records read through it, attributes joined over all their extents
 * (through $ATTRIBUTE_LIST into extension records) and stream contents read through their runs.
 * Shared by the used-map module (ntfs.ts) and the file reader (files/ntfs.ts). Everything read is
 * checked (signatures, update sequence fixups, attribute and run bounds, sizes against the volume);
 * anything that does not add up throws `corrupt(...)`.
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt, RescueError } from '../errors.ts';
import { parseAttributeList } from './ntfs-attrs.ts';
import { NTFS_BOOT, type NtfsBootSector, parseNtfsBootSector } from './ntfs-boot.ts';
import {
  ATTR,
  ATTR_FLAGS,
  type FileRecord,
  listAttributes,
  type NonResidentAttribute,
  type NtfsAttribute,
  parseFileRecord,
} from './ntfs-record.ts';
import { type DataRun, decodeRunlist, runlistClusters } from './ntfs-runlist.ts';

/** System files by MFT record number. */
export const NTFS_RECORD = {
  MFT: 0,
  MFTMIRR: 1,
  LOGFILE: 2,
  VOLUME: 3,
  ATTRDEF: 4,
  ROOT: 5,
  BITMAP: 6,
  BOOT: 7,
} as const;

/** ntfs-3g's own limit for an attribute list. */
const MAX_ATTRIBUTE_LIST = 0x40000;

/** Contents of one attribute (all its extents), resident or through its runlist. */
export interface NtfsStream {
  resident: Buffer | null;
  runs: DataRun[];
  flags: number;
  /** log2 of the compression unit in clusters (0 for resident and uncompressed streams). */
  compressionUnit: number;
  allocatedSize: number;
  dataSize: number;
  initializedSize: number;
}

/**
 * Reads `length` bytes at `offset` of a non-resident compressed or encrypted stream (the bounds
 * are already checked).
 */
export type PackedStreamReader = (
  vol: NtfsVolume,
  s: NtfsStream,
  offset: number,
  length: number,
  what: string,
) => Promise<Buffer>;

export interface NtfsVolume {
  src: BlockSource;
  boot: NtfsBootSector;
  /** Bytes the filesystem spans: its sectors plus the backup boot sector after them (if present). */
  size: number;
  backupBootPresent: boolean;
  mft: NtfsStream;
  /** Reads compressed and encrypted streams; without it, reading them is refused as corrupt. */
  readPacked?: PackedStreamReader;
}

/** Reads the boot sector and works out how much of the source the filesystem spans. */
export async function readNtfsBoot(
  src: BlockSource,
): Promise<{ boot: NtfsBootSector; size: number; backupBootPresent: boolean }> {
  if (src.size < NTFS_BOOT.SIZE) throw corrupt('NTFS boot sector', 'the volume is smaller than one sector');
  const boot = parseNtfsBootSector(await src.read(0, NTFS_BOOT.SIZE));
  const sectorsBytes = boot.totalSectors * boot.bytesPerSector;
  if (sectorsBytes > src.size) {
    throw new RescueError(
      'E_FS_BEYOND_PARTITION',
      `The NTFS volume claims ${sectorsBytes} bytes but ${src.path} has only ${src.size}`,
      'The partition was shrunk without shrinking the filesystem, or the image is truncated. Use a ' +
        'sector-by-sector backup, or repair the partition table.',
      { claimed: sectorsBytes, size: src.size },
    );
  }
  // The sector count excludes the backup boot sector, which Windows puts right after the last one.
  const backupBootPresent = sectorsBytes + boot.bytesPerSector <= src.size;
  return { boot, size: sectorsBytes + (backupBootPresent ? boot.bytesPerSector : 0), backupBootPresent };
}

export function checkRunsInVolume(runs: readonly DataRun[], boot: NtfsBootSector, what: string): void {
  for (const r of runs) {
    if (r.lcn !== null && r.lcn + r.length > boot.clusterCount) {
      throw corrupt(
        what,
        `run of ${r.length} clusters at cluster ${r.lcn} lies beyond the volume (${boot.clusterCount} clusters)`,
      );
    }
  }
}

export function streamSize(s: NtfsStream): number {
  return s.resident ? s.resident.length : s.dataSize;
}

function residentStream(value: Buffer, flags: number): NtfsStream {
  return {
    resident: value,
    runs: [],
    flags,
    compressionUnit: 0,
    allocatedSize: 0,
    dataSize: value.length,
    initializedSize: value.length,
  };
}

function nonResidentStream(first: NonResidentAttribute, runs: DataRun[]): NtfsStream {
  return {
    resident: null,
    runs,
    flags: first.flags,
    compressionUnit: first.compressionUnit,
    allocatedSize: first.allocatedSize,
    dataSize: first.dataSize,
    initializedSize: first.initializedSize,
  };
}

/**
 * Reads `length` bytes at `offset` of a stream: through its runs for non-resident data (sparse runs
 * and bytes past the initialized size read as zeros, as NTFS defines them). Compressed and
 * encrypted streams go to the volume's `readPacked`; without one, reading them is refused.
 */
export async function readStream(
  vol: NtfsVolume,
  s: NtfsStream,
  offset: number,
  length: number,
  what: string,
): Promise<Buffer> {
  if (offset < 0 || length < 0 || offset + length > streamSize(s)) {
    throw corrupt(what, `read of ${length} bytes at ${offset} is beyond its ${streamSize(s)} bytes`);
  }
  if (s.resident) return Buffer.from(s.resident.subarray(offset, offset + length));
  if (s.flags & (ATTR_FLAGS.COMPRESSED | ATTR_FLAGS.ENCRYPTED)) {
    if (vol.readPacked) return vol.readPacked(vol, s, offset, length, what);
    throw corrupt(what, 'is compressed or encrypted');
  }
  const out = Buffer.alloc(length);
  const cs = vol.boot.clusterSize;
  const end = Math.min(offset + length, s.initializedSize);
  let pos = offset;
  for (const r of s.runs) {
    if (pos >= end) break;
    const runStart = r.vcn * cs;
    const runEnd = (r.vcn + r.length) * cs;
    if (runEnd <= pos) continue;
    if (runStart > pos) throw corrupt(what, `no run covers byte ${pos}`);
    const stop = Math.min(runEnd, end);
    if (r.lcn !== null) {
      const data = await vol.src.read(r.lcn * cs + (pos - runStart), stop - pos);
      data.copy(out, pos - offset);
    }
    pos = stop;
  }
  if (pos < end) throw corrupt(what, `its runs end at byte ${pos}, before byte ${end}`);
  return out;
}

/** Reads and checks MFT record `n` through the $MFT runlist known so far. */
export async function readRecord(vol: NtfsVolume, n: number, what: string): Promise<FileRecord> {
  const rs = vol.boot.mftRecordSize;
  if (!Number.isSafeInteger(n) || n < 0 || (n + 1) * rs > vol.mft.initializedSize) {
    throw corrupt(
      what,
      `MFT record ${n} is beyond the $MFT (${Math.floor(vol.mft.initializedSize / rs)} records)`,
    );
  }
  const rec = parseFileRecord(await readStream(vol, vol.mft, n * rs, rs, '$MFT'), rs, what);
  // mkntfs formats spare records with number 0: only a record in use must name itself.
  if (rec.header.inUse && rec.header.recordNumber !== undefined && rec.header.recordNumber !== n) {
    throw corrupt(what, `MFT record ${n} says it is record ${rec.header.recordNumber}`);
  }
  return rec;
}

/**
 * Finds the attribute `type`/`name` of the file whose base record is `rec` (number `recNo`) and
 * joins its extents, following $ATTRIBUTE_LIST into extension records when there is one.
 * `onRuns` sees the runs after every extent: loading $MFT itself needs them to reach its own
 * extension records.
 */
export async function loadStream(
  vol: NtfsVolume,
  recNo: number,
  rec: FileRecord,
  type: number,
  name: string,
  what: string,
  onRuns?: (runs: DataRun[]) => void,
): Promise<NtfsStream | undefined> {
  const attrs = listAttributes(rec, what);
  const listAttr = attrs.find((a) => a.type === ATTR.ATTRIBUTE_LIST);
  const extents: NtfsAttribute[] = [];
  if (!listAttr) {
    for (const a of attrs) if (a.type === type && a.name === name) extents.push(a);
  } else {
    let listValue: Buffer;
    if (listAttr.nonResident) {
      if (listAttr.dataSize > MAX_ATTRIBUTE_LIST)
        throw corrupt(what, `attribute list of ${listAttr.dataSize} bytes`);
      const runs = decodeRunlist(listAttr.mappingPairs, listAttr.lowestVcn, `${what} attribute list`);
      checkRunsInVolume(runs, vol.boot, `${what} attribute list`);
      listValue = await readStream(
        vol,
        nonResidentStream(listAttr, runs),
        0,
        listAttr.dataSize,
        `${what} attribute list`,
      );
    } else {
      listValue = listAttr.value;
    }
    const entries = parseAttributeList(listValue, `${what} attribute list`).filter(
      (e) => e.type === type && e.name === name,
    );
    const records = new Map<number, NtfsAttribute[]>([[recNo, attrs]]);
    const runsSoFar: DataRun[] = [];
    for (const e of entries) {
      let inRecord = records.get(e.ref.record);
      if (!inRecord) {
        const ext = await readRecord(vol, e.ref.record, `${what} extension record ${e.ref.record}`);
        // An extension record names its base; a base record has an all-zero reference there.
        const belongs = ext.header.baseRecord === recNo && (recNo !== 0 || ext.header.baseSequence !== 0);
        if (!ext.header.inUse || !belongs) {
          throw corrupt(what, `extension record ${e.ref.record} does not belong to record ${recNo}`);
        }
        inRecord = listAttributes(ext, `${what} extension record ${e.ref.record}`);
        records.set(e.ref.record, inRecord);
      }
      const found = inRecord.find(
        (a) =>
          a.type === type &&
          a.name === name &&
          a.instance === e.instance &&
          (a.nonResident ? a.lowestVcn : 0) === e.lowestVcn,
      );
      if (!found)
        throw corrupt(
          what,
          `attribute 0x${type.toString(16)} at VCN ${e.lowestVcn} is missing from record ${e.ref.record}`,
        );
      extents.push(found);
      if (onRuns && found.nonResident) {
        runsSoFar.push(...decodeRunlist(found.mappingPairs, found.lowestVcn, what));
        checkRunsInVolume(runsSoFar, vol.boot, what);
        onRuns(runsSoFar.slice());
      }
    }
  }
  if (extents.length === 0) return undefined;
  const first = extents[0];
  if (!first.nonResident) {
    if (extents.length > 1) throw corrupt(what, 'resident attribute with several extents');
    return residentStream(first.value, first.flags);
  }
  const runs: DataRun[] = [];
  let nextVcn = 0;
  for (const a of extents) {
    if (!a.nonResident) throw corrupt(what, 'mixes resident and non-resident extents');
    if (a.lowestVcn !== nextVcn)
      throw corrupt(what, `extent starts at VCN ${a.lowestVcn}, expected ${nextVcn}`);
    const r = decodeRunlist(a.mappingPairs, a.lowestVcn, what);
    if (runlistClusters(r) !== a.highestVcn - a.lowestVcn + 1) {
      throw corrupt(
        what,
        `runs cover ${runlistClusters(r)} clusters, the extent ${a.lowestVcn}..${a.highestVcn}`,
      );
    }
    runs.push(...r);
    nextVcn = a.highestVcn + 1;
  }
  checkRunsInVolume(runs, vol.boot, what);
  if (first.initializedSize > first.dataSize || first.dataSize > first.allocatedSize) {
    throw corrupt(
      what,
      `sizes: initialized ${first.initializedSize}, data ${first.dataSize}, allocated ${first.allocatedSize}`,
    );
  }
  if (nextVcn * vol.boot.clusterSize < first.allocatedSize) {
    throw corrupt(
      what,
      `runs cover ${nextVcn} clusters, fewer than its allocated ${first.allocatedSize} bytes`,
    );
  }
  return nonResidentStream(first, runs);
}

/**
 * Boot sector, then $MFT record 0 and the full runlist of $MFT's $DATA. `readPacked` becomes the
 * volume's reader of compressed and encrypted streams.
 */
export async function openNtfsVolume(src: BlockSource, readPacked?: PackedStreamReader): Promise<NtfsVolume> {
  const { boot, size, backupBootPresent } = await readNtfsBoot(src);
  const rs = boot.mftRecordSize;
  const cs = boot.clusterSize;
  if (boot.mftLcn * cs + rs > boot.totalSectors * boot.bytesPerSector)
    throw corrupt('$MFT', 'record 0 lies beyond the volume');
  const rec0 = parseFileRecord(await src.read(boot.mftLcn * cs, rs), rs, '$MFT record 0');
  if (!rec0.header.inUse) throw corrupt('$MFT record 0', 'is not in use');
  const first = listAttributes(rec0, '$MFT record 0').find(
    (a): a is NonResidentAttribute =>
      a.type === ATTR.DATA && a.name === '' && a.nonResident && a.lowestVcn === 0,
  );
  if (!first) throw corrupt('$MFT record 0', 'has no non-resident $DATA attribute');
  if (first.flags & (ATTR_FLAGS.COMPRESSED | ATTR_FLAGS.ENCRYPTED | ATTR_FLAGS.SPARSE)) {
    throw corrupt('$MFT', 'is compressed, encrypted or sparse');
  }
  const firstRuns = decodeRunlist(first.mappingPairs, 0, '$MFT $DATA');
  checkRunsInVolume(firstRuns, boot, '$MFT $DATA');
  if (firstRuns.length === 0 || firstRuns[0].lcn !== boot.mftLcn) {
    throw corrupt('$MFT $DATA', 'does not start at the cluster the boot sector names');
  }
  const vol: NtfsVolume = { src, boot, size, backupBootPresent, mft: nonResidentStream(first, firstRuns) };
  if (readPacked) vol.readPacked = readPacked;
  const full = await loadStream(vol, NTFS_RECORD.MFT, rec0, ATTR.DATA, '', '$MFT $DATA', (runs) => {
    vol.mft = nonResidentStream(first, runs);
  });
  if (!full || full.resident) throw corrupt('$MFT', 'has no usable $DATA attribute');
  if (full.runs.some((r) => r.lcn === null)) throw corrupt('$MFT $DATA', 'has a sparse run');
  if (full.initializedSize < (NTFS_RECORD.BOOT + 1) * rs)
    throw corrupt('$MFT', 'is too small to hold the system files');
  vol.mft = full;
  return vol;
}
