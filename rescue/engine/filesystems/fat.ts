/**
 * FAT12/16/32: identity as blkid reports it, and the used map from the FATs themselves
 * (a cluster is in use when its FAT entry is non-zero and not the bad-cluster marker).
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt, isRescueError } from '../errors.ts';
import { addBitmapRuns, ExtentSet, totalBytes } from './extents.ts';
import {
  bootSectorLabel,
  decodeFatLabel,
  FAT_BOOT,
  FAT_ENTRY,
  FAT_LIMITS,
  type FatBootSector,
  type FatLayout,
  fatBootSectorProblem,
  fatBytesFor,
  fatEntry,
  fatLayout,
  formatVolumeSerial,
  hasSerial,
  parseFatBootSector,
  parseFsInfo,
  scanForVolumeLabel,
} from './fat-bpb.ts';
import type { FilesystemModule, FsIdentity, UsedMap } from './types.ts';

/** FAT32 FATs can reach hundreds of MiB: stream them in slices this big. */
const FAT_READ_CHUNK = 4 * 1024 * 1024;

interface FatVolume {
  boot: FatBootSector;
  layout: FatLayout;
}

async function openVolume(src: BlockSource): Promise<FatVolume> {
  if (src.size < FAT_BOOT.SIZE) throw corrupt('FAT volume', `${src.path} is only ${src.size} bytes`);
  const boot = parseFatBootSector(await src.read(0, FAT_BOOT.SIZE));
  const layout = fatLayout(boot);
  if (layout.volumeBytes > src.size) {
    throw corrupt(
      'FAT volume',
      `the boot sector claims ${layout.volumeBytes} bytes but ${src.path} has only ${src.size} (truncated image or damaged boot sector)`,
      { volumeBytes: layout.volumeBytes, sourceBytes: src.size },
    );
  }
  return { boot, layout };
}

/** One FAT entry read straight from the disk; for walking short chains (the FAT32 root directory). */
async function readEntry(src: BlockSource, layout: FatLayout, copy: number, n: number): Promise<number> {
  const base = layout.fatStart + copy * layout.fatBytes;
  if (layout.type === 12) {
    // Read the whole 3-byte pair so fatEntry can pick the right nibbles of entry n.
    const pair = n & ~1;
    const bytes = await src.read(base + pair + (pair >> 1), 3);
    return fatEntry(bytes, 12, n - pair);
  }
  const width = layout.type / 8;
  return fatEntry(await src.read(base + n * width, width), layout.type, 0);
}

/** blkid looks for the label only in the root directory; FAT32's is a cluster chain. */
async function findRootLabel(src: BlockSource, { layout }: FatVolume): Promise<Uint8Array | undefined> {
  if (layout.type !== 32) {
    const scan = scanForVolumeLabel(
      await src.read(layout.rootDirStart, layout.rootEntries * FAT_LIMITS.DIR_ENTRY_SIZE),
    );
    return 'found' in scan ? scan.found : undefined;
  }
  const maxClusters = Math.ceil(FAT_LIMITS.MAX_DIR_BYTES / layout.clusterBytes);
  const seen = new Set<number>();
  let c = layout.rootCluster;
  while (
    c >= FAT_LIMITS.FIRST_CLUSTER &&
    c <= layout.clusterCount + 1 &&
    !seen.has(c) &&
    seen.size < maxClusters
  ) {
    seen.add(c);
    const scan = scanForVolumeLabel(
      await src.read(
        layout.dataStart + (c - FAT_LIMITS.FIRST_CLUSTER) * layout.clusterBytes,
        layout.clusterBytes,
      ),
    );
    if ('found' in scan) return scan.found;
    if (scan.ended) return undefined;
    c = await readEntry(src, layout, layout.mirroring ? 0 : layout.activeFat, c);
  }
  return undefined;
}

/** Dirty = the boot-sector state flag (Linux, Windows NT) or a cleared "clean" bit in FAT[1] (FAT16/32). */
async function dirtyFlags(
  src: BlockSource,
  { boot, layout }: FatVolume,
): Promise<{ dirty: boolean; ioError: boolean }> {
  let dirty = (boot.state & FAT_BOOT.STATE_DIRTY) !== 0;
  let ioError = false;
  if (layout.type !== 12) {
    const fat1 = await readEntry(src, layout, layout.mirroring ? 0 : layout.activeFat, 1);
    if ((fat1 & FAT_ENTRY.CLEAN_BIT[layout.type]) === 0) dirty = true;
    if ((fat1 & FAT_ENTRY.NO_IO_ERROR_BIT[layout.type]) === 0) ioError = true;
  }
  return { dirty, ioError };
}

function probe(head: Buffer, _size: number): boolean {
  if (head.length < FAT_BOOT.SIZE) return false;
  try {
    return fatBootSectorProblem(parseFatBootSector(head)) === undefined;
  } catch {
    return false;
  }
}

async function identify(src: BlockSource): Promise<FsIdentity> {
  const vol = await openVolume(src);
  const { boot, layout } = vol;
  const warnings: string[] = [];
  let rootLabel: Uint8Array | undefined;
  try {
    rootLabel = await findRootLabel(src, vol);
  } catch (e) {
    if (!isRescueError(e)) throw e;
    warnings.push(`The root directory could not be read for the volume label: ${e.message}`);
  }
  const { dirty, ioError } = await dirtyFlags(src, vol);
  if (dirty)
    warnings.push('The FAT volume was not cleanly unmounted (dirty flag set); run fsck.fat / chkdsk first.');
  if (ioError) warnings.push('The FAT volume records an earlier disk I/O error.');
  const state: Record<string, boolean | string | number> = {
    dirty,
    ioError,
    clusterCount: layout.clusterCount,
  };
  const bootLabel = bootSectorLabel(boot);
  if (bootLabel !== undefined) state.bootLabel = bootLabel;
  if (layout.type === 32 && layout.fsInfoSector) {
    const info = parseFsInfo(await src.read(layout.fsInfoSector * layout.bytesPerSector, FAT_BOOT.SIZE));
    if (info.leadSignatureOk && info.structSignatureOk && info.freeCount <= layout.clusterCount) {
      state.fsInfoFreeClusters = info.freeCount;
    }
  }
  const id: FsIdentity = {
    type: 'vfat',
    version: `FAT${layout.type}`,
    blockSize: layout.clusterBytes,
    size: layout.volumeBytes,
    state,
  };
  // As blkid (and Windows) do: LABEL is the root-directory entry only; the boot-sector copy is stale
  // after Windows relabels a volume, so it is reported separately (state.bootLabel = LABEL_FATBOOT).
  const label = rootLabel ? decodeFatLabel(rootLabel) : undefined;
  if (label !== undefined) id.label = label;
  if (hasSerial(boot)) id.uuid = formatVolumeSerial(boot.serial);
  if (warnings.length) id.warnings = warnings;
  return id;
}

/** Marks in `used` every cluster whose entry in FAT copy `copy` is non-zero and not "bad". */
async function markFatCopy(
  src: BlockSource,
  layout: FatLayout,
  copy: number,
  used: Uint8Array,
  signal?: AbortSignal,
): Promise<void> {
  const base = layout.fatStart + copy * layout.fatBytes;
  const bad = FAT_ENTRY.BAD[layout.type];
  const last = layout.clusterCount + FAT_LIMITS.FIRST_CLUSTER; // one past the last entry
  // FAT12/16 FATs are at most 6 KiB / 128 KiB: one read. FAT32 entries are 4-byte aligned: slices.
  const entriesPerChunk = layout.type === 32 ? FAT_READ_CHUNK / 4 : last;
  for (let first = 0; first < last; first += entriesPerChunk) {
    signal?.throwIfAborted();
    const end = Math.min(last, first + entriesPerChunk);
    const startByte = layout.type === 32 ? first * 4 : 0;
    const bytes = await src.read(base + startByte, fatBytesFor(layout.type, end) - startByte);
    for (let n = Math.max(first, FAT_LIMITS.FIRST_CLUSTER); n < end; n++) {
      const v = layout.type === 32 ? fatEntry(bytes, 32, n - first) : fatEntry(bytes, layout.type, n);
      if (v !== 0 && v !== bad) {
        const i = n - FAT_LIMITS.FIRST_CLUSTER;
        used[i >> 3] |= 1 << (i & 7);
      }
    }
  }
}

async function usedMap(src: BlockSource, signal?: AbortSignal): Promise<UsedMap> {
  const { layout } = await openVolume(src);
  const set = new ExtentSet(layout.volumeBytes);
  // Boot sector, FSInfo, backup boot sector, every FAT copy and the FAT12/16 root directory.
  set.add(0, layout.dataStart);
  const used = new Uint8Array(Math.ceil(layout.clusterCount / 8));
  // Every copy, not just the first: after a crash between writing copies, or with FAT32 mirroring
  // off, a cluster may be allocated in only one of them, and a used map must never be short.
  for (let copy = 0; copy < layout.numFats; copy++) await markFatCopy(src, layout, copy, used, signal);
  if (layout.type === 32) {
    const i = layout.rootCluster - FAT_LIMITS.FIRST_CLUSTER;
    used[i >> 3] |= 1 << (i & 7);
  }
  addBitmapRuns(set, used, layout.clusterCount, layout.clusterBytes, layout.dataStart);
  // Sectors after the last whole cluster belong to no cluster; partclone copies them and boot
  // managers sometimes hide data there. Less than one cluster: cheap insurance.
  const heapEnd = layout.dataStart + layout.clusterCount * layout.clusterBytes;
  set.add(heapEnd, layout.volumeBytes - heapEnd);
  const extents = set.extents();
  return { method: 'allocation', extents, usedBytes: totalBytes(extents) };
}

export const fat: FilesystemModule = { probe, identify, usedMap };
