/**
 * NTFS: identity (label, serial, dirty / hibernated / journal state, as ntfs-3g judges them) and
 * the used-cluster map from $Bitmap, found through the $MFT's own runlist (following $MFT's
 * attribute list when it has one). Everything read is checked (signatures, update sequence fixups,
 * attribute and run bounds, sizes against the volume); anything that does not add up throws
 * `corrupt(...)` so the caller falls back to a sector-by-sector copy instead of trusting a map that
 * could miss data. A volume Windows marked dirty is mapped sector by sector on purpose.
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt, isRescueError } from '../errors.ts';
import { addBitmapRuns, ExtentSet, totalBytes } from './extents.ts';
import { parseVolumeInformation, parseVolumeName, type VolumeInformation } from './ntfs-attrs.ts';
import { checkNtfsBootSector, NTFS_BOOT } from './ntfs-boot.ts';
import { type IndexEntry, parseIndexBlock, parseIndexRoot, sameAsciiName } from './ntfs-index.ts';
import { isEmptyLogPage, parseRestartPage, type RestartPage, restartPageSize } from './ntfs-logfile.ts';
import { ATTR, ATTR_FLAGS, type FileRecord } from './ntfs-record.ts';
import {
  loadStream,
  NTFS_RECORD,
  type NtfsVolume,
  openNtfsVolume,
  readNtfsBoot,
  readRecord,
  readStream,
  streamSize,
} from './ntfs-volume.ts';
import type { FilesystemModule, FsIdentity, UsedMap } from './types.ts';

/** $Boot is 8 KiB (16 sectors of 512) whatever the cluster size; it holds the boot code. */
const BOOT_FILE_BYTES = 8192;
/** Bitmap bytes read per request: 4 MiB covers 128 GiB of 4 KiB clusters. */
const BITMAP_CHUNK = 4 * 1024 * 1024;
/** The root directory of a Windows system volume has a few index blocks; this is plenty. */
const MAX_ROOT_INDEX_BLOCKS = 16384;
/** "hibr" up to Windows 7, "HIBR" from Windows 8 (hibernation and Fast Startup alike). */
const HIBERNATED_SIGNATURES: readonly string[] = ['hibr', 'HIBR'];
const HIBERFILE_NAME = 'hiberfil.sys';

export { NTFS_RECORD } from './ntfs-volume.ts';

async function readSystemRecord(vol: NtfsVolume, n: number, what: string): Promise<FileRecord> {
  const rec = await readRecord(vol, n, what);
  if (!rec.header.inUse || rec.header.baseRecord !== 0) throw corrupt(what, 'is not an in-use base record');
  return rec;
}

interface VolumeFacts {
  label: string;
  info: VolumeInformation;
}

async function readVolumeFile(vol: NtfsVolume): Promise<VolumeFacts> {
  const rec = await readSystemRecord(vol, NTFS_RECORD.VOLUME, '$Volume');
  const nameStream = await loadStream(
    vol,
    NTFS_RECORD.VOLUME,
    rec,
    ATTR.VOLUME_NAME,
    '',
    '$Volume $VOLUME_NAME',
  );
  const infoStream = await loadStream(
    vol,
    NTFS_RECORD.VOLUME,
    rec,
    ATTR.VOLUME_INFORMATION,
    '',
    '$Volume $VOLUME_INFORMATION',
  );
  if (!infoStream?.resident) throw corrupt('$Volume', 'has no resident $VOLUME_INFORMATION');
  if (nameStream && !nameStream.resident) throw corrupt('$Volume', '$VOLUME_NAME is not resident');
  return {
    label: nameStream?.resident ? parseVolumeName(nameStream.resident) : '',
    info: parseVolumeInformation(infoStream.resident),
  };
}

/** Index entries of the root directory, B+tree nodes in any order; bounded by the allocation. */
async function rootDirectoryEntries(vol: NtfsVolume): Promise<IndexEntry[]> {
  const rec = await readSystemRecord(vol, NTFS_RECORD.ROOT, 'root directory');
  if (!rec.header.isDirectory) throw corrupt('root directory', 'record 5 is not a directory');
  const rootStream = await loadStream(
    vol,
    NTFS_RECORD.ROOT,
    rec,
    ATTR.INDEX_ROOT,
    '$I30',
    'root $INDEX_ROOT',
  );
  if (!rootStream?.resident) throw corrupt('root directory', 'has no resident $INDEX_ROOT');
  const root = parseIndexRoot(rootStream.resident, 'root $INDEX_ROOT');
  const entries = [...root.node.entries];
  const alloc = await loadStream(
    vol,
    NTFS_RECORD.ROOT,
    rec,
    ATTR.INDEX_ALLOCATION,
    '$I30',
    'root $INDEX_ALLOCATION',
  );
  if (!alloc) return entries;
  const bs = root.blockSize;
  if (bs < 512 || bs & (bs - 1) || bs > 65536) throw corrupt('root $INDEX_ROOT', `index block size ${bs}`);
  const blocks = Math.floor(streamSize(alloc) / bs);
  if (blocks > MAX_ROOT_INDEX_BLOCKS)
    throw corrupt('root directory', `${blocks} index blocks is more than expected`);
  const bitmapStream = await loadStream(vol, NTFS_RECORD.ROOT, rec, ATTR.BITMAP, '$I30', 'root $BITMAP');
  const inUse = bitmapStream
    ? await readStream(
        vol,
        bitmapStream,
        0,
        Math.min(streamSize(bitmapStream), Math.ceil(blocks / 8)),
        'root $BITMAP',
      )
    : null;
  // Index blocks smaller than a cluster are addressed in 512-byte units, larger ones in clusters.
  const vcnUnit = bs >= vol.boot.clusterSize ? vol.boot.clusterSize : 512;
  for (let i = 0; i < blocks; i++) {
    if (inUse && !(i >> 3 < inUse.length && inUse[i >> 3] & (1 << (i & 7)))) continue;
    const raw = await readStream(vol, alloc, i * bs, bs, 'root $INDEX_ALLOCATION');
    const block = parseIndexBlock(raw, bs, `root index block ${i}`);
    if (block.vcn !== (i * bs) / vcnUnit)
      throw corrupt(`root index block ${i}`, `says it is at VCN ${block.vcn}`);
    entries.push(...block.node.entries);
  }
  return entries;
}

interface HiberfileCheck {
  present: boolean;
  /** First four bytes of hiberfil.sys, as Latin-1 text. */
  signature?: string;
  hibernated: boolean;
}

/**
 * Mirrors the check ntfs-3g makes before a read-write mount: find hiberfil.sys in the root
 * directory and look at its first bytes. "hibr" (Windows up to 7) or "HIBR" (8 and later, also
 * written by Fast Startup) means Windows means to resume from it.
 */
async function checkHiberfile(vol: NtfsVolume): Promise<HiberfileCheck> {
  const entry = (await rootDirectoryEntries(vol)).find(
    (e) => e.key && sameAsciiName(e.key.name, HIBERFILE_NAME),
  );
  if (!entry) return { present: false, hibernated: false };
  const rec = await readRecord(vol, entry.ref.record, HIBERFILE_NAME);
  if (
    !rec.header.inUse ||
    rec.header.baseRecord !== 0 ||
    (entry.ref.sequence !== 0 && entry.ref.sequence !== rec.header.sequence)
  ) {
    // A stale directory entry: the file it named is gone.
    return { present: false, hibernated: false };
  }
  const data = await loadStream(vol, entry.ref.record, rec, ATTR.DATA, '', `${HIBERFILE_NAME} $DATA`);
  if (!data || streamSize(data) < 4) return { present: true, signature: '', hibernated: false };
  const sig = (await readStream(vol, data, 0, 4, `${HIBERFILE_NAME} $DATA`)).toString('latin1');
  return { present: true, signature: sig, hibernated: HIBERNATED_SIGNATURES.includes(sig) };
}

interface LogFileCheck {
  /** Never written since it was emptied (mkntfs, ntfs-3g): clean. */
  empty: boolean;
  page?: RestartPage;
}

/**
 * Reads the restart pages of $LogFile, as ntfs-3g does before a read-write mount: an open log
 * client without the "volume is clean" flag means Windows did not close the volume.
 */
async function checkLogFile(vol: NtfsVolume): Promise<LogFileCheck> {
  const rec = await readSystemRecord(vol, NTFS_RECORD.LOGFILE, '$LogFile');
  const data = await loadStream(vol, NTFS_RECORD.LOGFILE, rec, ATTR.DATA, '', '$LogFile $DATA');
  if (!data) throw corrupt('$LogFile', 'has no $DATA attribute');
  const size = streamSize(data);
  if (size < 2 * 4096) throw corrupt('$LogFile', `is only ${size} bytes`);
  const head = await readStream(vol, data, 0, 512, '$LogFile');
  if (isEmptyLogPage(head)) return { empty: true };
  const pageSize = restartPageSize(head);
  if (pageSize === undefined || 2 * pageSize > size)
    throw corrupt('$LogFile', 'does not start with a restart page');
  let current: RestartPage | undefined;
  for (const at of [0, pageSize]) {
    try {
      const page = parseRestartPage(
        await readStream(vol, data, at, pageSize, '$LogFile'),
        `$LogFile restart page at ${at}`,
      );
      if (!current || page.lsn > current.lsn) current = page;
    } catch (e) {
      // One good copy is enough: that is why there are two.
      if (!isRescueError(e)) throw e;
    }
  }
  if (!current) throw corrupt('$LogFile', 'neither restart page is valid');
  return { empty: false, page: current };
}

const WARN = {
  dirty:
    'The NTFS volume is marked dirty: Windows found a problem or did not finish a disk check. Run ' +
    '"chkdsk /f" on it in Windows (or boot Windows once and let it check the disk) before imaging. ' +
    'Until then its allocation bitmap cannot be trusted, so a backup copies it sector by sector and ' +
    'keeps the inconsistency.',
  hibernated:
    'Windows is hibernated on this volume, or was shut down with Fast Startup (hiberfil.sys starts ' +
    'with "hibr"/"HIBR"): Windows will resume from its saved memory, which expects the disk exactly ' +
    'as it is now. Writing to the volume from outside (restoring onto it, mounting it read-write) ' +
    'can lose data when Windows resumes; ntfs-3g refuses to mount it read-write. A backup taken now ' +
    'holds the hibernated state. To get a clean one, boot Windows and shut it down fully ' +
    '(Shift + Shut down, or turn Fast Startup off) first.',
  unclean:
    'Windows did not close this NTFS volume cleanly (power loss, a crash or a forced shutdown): its ' +
    'journal ($LogFile) holds changes Windows replays when it next mounts the volume. ntfs-3g ' +
    'either refuses to mount it read-write or, by default, empties the journal to do so, losing ' +
    'those changes. Boot Windows once and shut it down normally for a clean backup.',
  backupBootMissing:
    'The backup boot sector (the sector after the last NTFS sector) is outside the partition: the ' +
    'partition is one sector short of what Windows creates.',
} as const;

function describeFailure(e: unknown): string {
  return isRescueError(e) ? e.message : String(e);
}

async function ntfsIdentify(src: BlockSource): Promise<FsIdentity> {
  const { boot, size, backupBootPresent } = await readNtfsBoot(src);
  const warnings: string[] = [];
  const state: Record<string, boolean | string | number> = {};
  const id: FsIdentity = {
    type: 'ntfs',
    uuid: boot.serialHex,
    blockSize: boot.clusterSize,
    size,
    warnings,
    state,
  };
  if (!backupBootPresent) warnings.push(WARN.backupBootMissing);
  else {
    const backup = await src.read(boot.totalSectors * boot.bytesPerSector, NTFS_BOOT.SIZE);
    if (!checkNtfsBootSector(backup).ok) {
      warnings.push('The backup boot sector at the end of the volume is not a valid NTFS boot sector.');
    }
  }
  let vol: NtfsVolume;
  try {
    vol = await openNtfsVolume(src);
  } catch (e) {
    if (!isRescueError(e)) throw e;
    warnings.push(
      `The $MFT could not be read (${describeFailure(e)}): label, dirty and hibernation state are unknown.`,
    );
    return id;
  }
  try {
    const facts = await readVolumeFile(vol);
    if (facts.label.trimEnd()) id.label = facts.label.trimEnd();
    id.version = `${facts.info.major}.${facts.info.minor}`;
    state.dirty = facts.info.dirty;
    state.volumeFlags = facts.info.flags;
    if (facts.info.dirty) warnings.push(WARN.dirty);
  } catch (e) {
    if (!isRescueError(e)) throw e;
    warnings.push(`$Volume could not be read (${describeFailure(e)}): label and dirty state are unknown.`);
  }
  let hibernated = false;
  try {
    const h = await checkHiberfile(vol);
    hibernated = h.hibernated;
    state.hibernated = h.hibernated;
    if (h.signature !== undefined) state.hiberfileSignature = h.signature;
    if (h.hibernated) warnings.push(WARN.hibernated);
  } catch (e) {
    if (!isRescueError(e)) throw e;
    warnings.push(
      `The root directory could not be searched for hiberfil.sys (${describeFailure(e)}): hibernation state is unknown.`,
    );
  }
  try {
    const log = await checkLogFile(vol);
    state.logfileClean = log.empty || !!log.page?.clean;
    if (log.page) state.logfileVersion = `${log.page.major}.${log.page.minor}`;
    // Hibernation (and Fast Startup) leave the journal open too; its warning already says it all.
    if (!state.logfileClean && !hibernated) warnings.push(WARN.unclean);
  } catch (e) {
    if (!isRescueError(e)) throw e;
    warnings.push(
      `The journal ($LogFile) could not be read (${describeFailure(e)}): whether Windows closed the volume cleanly is unknown.`,
    );
  }
  return id;
}

/** True when the bit for `cluster` is set in a bitmap chunk starting at cluster `first`. */
function bitSet(chunk: Uint8Array, first: number, cluster: number): boolean {
  const i = cluster - first;
  return ((chunk[i >> 3] >> (i & 7)) & 1) === 1;
}

/**
 * The used map straight from $Bitmap, whatever the volume's state (what `partclone.ntfs --force`
 * would copy). `ntfs.usedMap` is the careful default.
 */
export async function ntfsAllocationMap(src: BlockSource, signal?: AbortSignal): Promise<UsedMap> {
  return allocationMap(await openNtfsVolume(src), signal);
}

/**
 * A volume marked dirty is one Windows itself no longer trusts (corruption found, chkdsk pending):
 * its $Bitmap may miss clusters that files use, so it is copied whole, as Clonezilla does when
 * partclone refuses such a volume.
 */
async function ntfsUsedMap(src: BlockSource, signal?: AbortSignal): Promise<UsedMap> {
  signal?.throwIfAborted();
  const vol = await openNtfsVolume(src);
  const whole = (reason: string): UsedMap => ({
    method: 'sector-by-sector',
    extents: [{ start: 0, length: vol.size }],
    usedBytes: vol.size,
    reason,
  });
  const { info } = await readVolumeFile(vol);
  if (info.dirty) {
    return whole(
      'the NTFS volume is marked dirty (chkdsk pending), so its allocation bitmap cannot be trusted; ' +
        'run "chkdsk /f" in Windows to allow a used-space backup',
    );
  }
  // Hibernation, Fast Startup and crashes leave changes in the journal that are not yet in $Bitmap
  // and $MFT on disk; Windows replays them on its next start. A map from the stale $Bitmap could
  // miss clusters the replay makes part of files, so such volumes are copied whole.
  if ((await checkHiberfile(vol)).hibernated) {
    return whole(
      'Windows is hibernated or was shut down with Fast Startup, so the on-disk allocation bitmap may ' +
        'be stale; for a used-space backup start Windows and shut it down fully (Shift + Shut down), ' +
        'or turn Fast Startup off',
    );
  }
  const log = await checkLogFile(vol);
  if (!(log.empty || log.page?.clean)) {
    return whole(
      'the NTFS journal ($LogFile) was not closed cleanly (a crash or power loss), so the on-disk ' +
        'allocation bitmap may be stale; start Windows once and shut it down to allow a used-space backup',
    );
  }
  return allocationMap(vol, signal);
}

async function allocationMap(vol: NtfsVolume, signal?: AbortSignal): Promise<UsedMap> {
  const { boot } = vol;
  const cs = boot.clusterSize;
  const rec = await readSystemRecord(vol, NTFS_RECORD.BITMAP, '$Bitmap');
  const bitmap = await loadStream(vol, NTFS_RECORD.BITMAP, rec, ATTR.DATA, '', '$Bitmap $DATA');
  if (!bitmap) throw corrupt('$Bitmap', 'has no $DATA attribute');
  const need = Math.ceil(boot.clusterCount / 8);
  if (streamSize(bitmap) < need || (!bitmap.resident && bitmap.initializedSize < need)) {
    throw corrupt(
      '$Bitmap',
      `holds ${streamSize(bitmap)} bytes, the volume's ${boot.clusterCount} clusters need ${need}`,
    );
  }
  if (
    bitmap.flags & (ATTR_FLAGS.COMPRESSED | ATTR_FLAGS.ENCRYPTED | ATTR_FLAGS.SPARSE) ||
    bitmap.runs.some((r) => r.lcn === null)
  ) {
    throw corrupt('$Bitmap', 'is compressed, encrypted or sparse');
  }

  const set = new ExtentSet(vol.size);
  // The clusters that must be in use on any NTFS volume: if the bitmap says otherwise it is not
  // describing this volume, and a map built from it could miss everything.
  const mustBeUsed = [0, boot.mftLcn, ...bitmap.runs.map((r) => r.lcn as number)];
  for (let byte = 0; byte < need; byte += BITMAP_CHUNK) {
    signal?.throwIfAborted();
    const n = Math.min(BITMAP_CHUNK, need - byte);
    const chunk = await readStream(vol, bitmap, byte, n, '$Bitmap $DATA');
    const firstCluster = byte * 8;
    const units = Math.min(n * 8, boot.clusterCount - firstCluster);
    for (const c of mustBeUsed) {
      if (c >= firstCluster && c < firstCluster + units && !bitSet(chunk, firstCluster, c)) {
        throw corrupt('$Bitmap', `marks cluster ${c}, which holds system files, as free`);
      }
    }
    addBitmapRuns(set, chunk, units, cs, 0, firstCluster);
  }
  // Belt and braces: the structures this map was read through, and both boot sectors.
  for (const s of [vol.mft, bitmap])
    for (const r of s.runs) if (r.lcn !== null) set.add(r.lcn * cs, r.length * cs);
  set.add(0, Math.max(BOOT_FILE_BYTES, cs));
  if (vol.backupBootPresent) set.add(boot.totalSectors * boot.bytesPerSector, boot.bytesPerSector);
  const extents = set.extents();
  return { method: 'allocation', extents, usedBytes: totalBytes(extents) };
}

export const ntfs: FilesystemModule = {
  probe(head) {
    return checkNtfsBootSector(head).ok;
  },
  identify: ntfsIdentify,
  usedMap: ntfsUsedMap,
};
