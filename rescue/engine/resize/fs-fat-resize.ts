/**
 * Our own FAT12/16/32 resizer. fatresize (libparted) cannot be used: it aborts on image files and
 * on loop devices without a partition table, it cannot resize a FAT32 volume with 512-byte
 * clusters at all (every Windows ESP of 100 MiB: "GNU Parted cannot resize this partition to this
 * size"), it silently converts FAT32 to FAT16 when shrinking below ~256 MiB, and it rewrites the
 * boot sector (OEM name, label "NO NAME", hidden sectors = 0).
 *
 * The method keeps the cluster size and never shrinks the FAT (a FAT larger than the cluster count
 * needs is legal), so the data area stays where it is:
 *  - shrinking moves the used clusters past the new end into free clusters below it;
 *  - growing only rewrites the BPB when the FAT has room for the new clusters; otherwise the FATs
 *    grow by a whole number of clusters `shift`, the clusters they now cover (and, on FAT12/16, the
 *    fixed root directory behind them) are moved, and every cluster number drops by `shift`.
 * In both cases each cluster gets one new number: the FAT is rebuilt from the old one under that
 * numbering, and the directory entries (including "." and "..") and the FAT32 root cluster that name
 * a first cluster are patched. The FAT type never changes: the cluster count stays inside the range
 * Microsoft's rule assigns to it (FAT12 ≤ 4084, FAT16 4085…65524, FAT32 ≥ 65525 clusters).
 *
 * Data is first copied into clusters that are free in the old filesystem, so an abort or a failure
 * before the metadata phase leaves the volume as it was. The metadata phase (directories, root
 * region, FATs, FSInfo, boot sectors) is short and not interrupted; it is not crash-safe.
 */
import type { BlockSource } from '../devices/source.ts';
import { RescueError } from '../errors.ts';
import {
  FAT_BOOT,
  FAT_DIRENT,
  FAT_ENTRY,
  FAT_LIMITS,
  type FatBootSector,
  type FatLayout,
  type FatType,
  FSINFO,
  fatBytesFor,
  fatEntry,
  fatLayout,
  isFat32Layout,
  parseFatBootSector,
  parseFsInfo,
  setFatEntry,
  writeFatBootSector,
} from '../filesystems/fat-bpb.ts';

/** Cluster-count ranges by type (Microsoft's FAT type rule); a resize keeps the count inside them. */
export const FAT_TYPE_CLUSTERS: Record<FatType, { min: number; max: number }> = {
  12: { min: 1, max: FAT_LIMITS.FAT12_MAX_CLUSTERS },
  16: { min: FAT_LIMITS.FAT12_MAX_CLUSTERS + 1, max: FAT_LIMITS.FAT16_MAX_CLUSTERS },
  32: { min: FAT_LIMITS.FAT16_MAX_CLUSTERS + 1, max: FAT_LIMITS.FAT32_MAX_CLUSTERS },
};

/** The whole FAT is held in memory (twice while it is rebuilt): refuse beyond this many clusters. */
export const FAT_RESIZE_MAX_CLUSTERS = 32 * 1024 * 1024;
/** Cluster data is copied in pieces of at most this size. */
const COPY_CHUNK = 4 * 1024 * 1024;

function unclean(why: string): RescueError {
  return new RescueError(
    'E_RESIZE_UNCLEAN',
    `The FAT filesystem is inconsistent: ${why}`,
    'Repair it first (fsck.fat -a, or chkdsk /f in Windows), then try again.',
  );
}

function failed(why: string): RescueError {
  return new RescueError(
    'E_RESIZE_FAILED',
    `Resizing the FAT filesystem failed: ${why}`,
    'Choose a size at least as large as minimumSize() reports; the filesystem was not changed.',
  );
}

/** The type's lowest cluster count, or the volume's own count when it is already below it. */
function typeMinClusters(layout: FatLayout): number {
  return Math.min(FAT_TYPE_CLUSTERS[layout.type].min, layout.clusterCount);
}

/** The FAT as numbers: entry n for n in 0 … clusterCount+1. */
export function decodeFat(fatBytes: Uint8Array, layout: FatLayout): Uint32Array {
  const n = layout.clusterCount + FAT_LIMITS.FIRST_CLUSTER;
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = fatEntry(fatBytes, layout.type, i);
  return out;
}

function isUsed(v: number, type: FatType): boolean {
  return v !== 0 && v !== FAT_ENTRY.BAD[type];
}

/** Used clusters (allocated, not bad) of a FAT. */
export function countUsed(entries: Uint32Array, type: FatType): number {
  let used = 0;
  for (let c = FAT_LIMITS.FIRST_CLUSTER; c < entries.length; c++) if (isUsed(entries[c], type)) used++;
  return used;
}

/**
 * Smallest total sector count the volume can be shrunk to with `extraClusters` of free space left:
 * the metadata stays as it is, the used clusters (plus the extra ones) must fit and the cluster
 * count must stay inside its type's range.
 */
export function minimumTotalSectors(layout: FatLayout, used: number, extraClusters = 0): number {
  const metaSectors = layout.dataStart / layout.bytesPerSector;
  const clusters = Math.max(
    used + extraClusters,
    typeMinClusters(layout),
    // An empty volume still needs somewhere to put its root directory.
    1,
  );
  return metaSectors + Math.min(clusters, layout.clusterCount) * layout.sectorsPerCluster;
}

export interface FatResizePlan {
  newTotalSectors: number;
  /** FAT size in sectors after the resize (never below the old one). */
  newFatSectors: number;
  /** Clusters the metadata area grew by: new number = physical old-numbered cluster − shift. */
  shift: number;
  newClusterCount: number;
  /** Cluster moves in the old numbering, ascending by source; a target may lie past the old end. */
  moves: Array<[from: number, to: number]>;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** How many FAT entries `sectors` sectors of FAT hold. */
function fatCapacity(type: FatType, sectors: number, bps: number): number {
  const bytes = sectors * bps;
  if (type === 12) return Math.floor((bytes * 2) / 3);
  return Math.floor(bytes / (type / 8));
}

/**
 * Pure planning: the new FAT size, cluster count, shift and the cluster moves that bring every used
 * cluster into the new cluster range. Throws E_RESIZE_FAILED when the used clusters do not fit and
 * E_RESIZE_UNSUPPORTED when the size would need another FAT type.
 */
export function planFatResize(
  layout: FatLayout,
  entries: Uint32Array,
  newTotalSectors: number,
): FatResizePlan {
  const bps = layout.bytesPerSector;
  const spc = layout.sectorsPerCluster;
  const reserved = layout.reservedBytes / bps;
  const rootSectors = layout.rootDirBytes / bps;
  const oldFat = layout.fatBytes / bps;
  const meta = (fatSectors: number) => reserved + layout.numFats * fatSectors + rootSectors;
  // The FAT grows in steps that move the data area by whole clusters, so old clusters map onto new ones.
  const step = spc / gcd(layout.numFats, spc);
  let fatSectors = oldFat;
  let clusters = 0;
  for (let round = 0; ; round++) {
    if (round > 64) throw failed('the FAT size does not converge (a bug)');
    clusters = Math.floor((newTotalSectors - meta(fatSectors)) / spc);
    if (clusters < 1) {
      throw failed(`${newTotalSectors} sectors leave no room for clusters after the FATs`);
    }
    if (fatCapacity(layout.type, fatSectors, bps) >= clusters + FAT_LIMITS.FIRST_CLUSTER) break;
    const need = Math.ceil(fatBytesFor(layout.type, clusters + FAT_LIMITS.FIRST_CLUSTER) / bps);
    fatSectors = oldFat + Math.ceil((need - oldFat) / step) * step;
  }
  const range = FAT_TYPE_CLUSTERS[layout.type];
  if (clusters > range.max) {
    throw new RescueError(
      'E_RESIZE_UNSUPPORTED',
      `FAT${layout.type} cannot have more than ${range.max} clusters; ${newTotalSectors * bps} bytes would give ${clusters} of ${layout.clusterBytes} bytes`,
      `Choose at most ${maximumTotalSectors(layout) * bps} bytes for this filesystem, or re-create it as FAT32.`,
    );
  }
  if (clusters < typeMinClusters(layout)) {
    throw failed(
      `FAT${layout.type} needs at least ${range.min} clusters (Microsoft's type rule); ${newTotalSectors * bps} bytes give ${clusters}`,
    );
  }
  const shift = (layout.numFats * (fatSectors - oldFat)) / spc;
  const first = FAT_LIMITS.FIRST_CLUSTER + shift;
  const last = clusters + FAT_LIMITS.FIRST_CLUSTER - 1 + shift;
  const oldLast = layout.clusterCount + FAT_LIMITS.FIRST_CLUSTER - 1;
  const sources: number[] = [];
  for (let c = FAT_LIMITS.FIRST_CLUSTER; c <= oldLast; c++) {
    if ((c < first || c > last) && isUsed(entries[c], layout.type)) sources.push(c);
  }
  const moves: Array<[number, number]> = [];
  let t = first;
  for (const s of sources) {
    while (t <= last && t <= oldLast && entries[t] !== 0) t++;
    if (t > last) {
      const used = countUsed(entries, layout.type);
      throw failed(
        `${used} used clusters do not fit into ${clusters}; the smallest size is ${minimumTotalSectors(layout, used) * bps} bytes`,
      );
    }
    moves.push([s, t]);
    t++;
  }
  return { newTotalSectors, newFatSectors: fatSectors, shift, newClusterCount: clusters, moves };
}

/** Largest total sector count the volume can grow to without changing its FAT type. */
export function maximumTotalSectors(layout: FatLayout): number {
  const bps = layout.bytesPerSector;
  const spc = layout.sectorsPerCluster;
  const max = FAT_TYPE_CLUSTERS[layout.type].max;
  const reserved = layout.reservedBytes / bps;
  const rootSectors = layout.rootDirBytes / bps;
  const oldFat = layout.fatBytes / bps;
  const step = spc / gcd(layout.numFats, spc);
  const need = Math.ceil(fatBytesFor(layout.type, max + FAT_LIMITS.FIRST_CLUSTER) / bps);
  const fatSectors = need <= oldFat ? oldFat : oldFat + Math.ceil((need - oldFat) / step) * step;
  return reserved + layout.numFats * fatSectors + rootSectors + max * spc;
}

/** A directory entry that names a first cluster: where it is (old numbering) and what it names. */
interface ClusterRef {
  /** The directory cluster holding the entry, or 0 for the fixed FAT12/16 root directory. */
  dirCluster: number;
  /** Byte offset of the entry inside that cluster (or the root region). */
  offset: number;
  value: number;
}

/** Follows a cluster chain in memory; throws unclean() on loops, free links or out-of-range numbers. */
function chainOf(
  entries: Uint32Array,
  type: FatType,
  start: number,
  maxLength: number,
  what: string,
): number[] {
  const last = entries.length - 1;
  const out: number[] = [];
  const seen = new Set<number>();
  let c = start;
  for (;;) {
    if (c < FAT_LIMITS.FIRST_CLUSTER || c > last)
      throw unclean(`${what} runs to cluster ${c}, outside 2…${last}`);
    if (seen.has(c)) throw unclean(`${what} loops at cluster ${c}`);
    seen.add(c);
    out.push(c);
    if (out.length > maxLength) throw unclean(`${what} is longer than ${maxLength} clusters`);
    const v = entries[c];
    if (v >= FAT_ENTRY.EOC_MIN[type]) return out;
    if (!isUsed(v, type) || v > last) {
      throw unclean(
        `${what} continues from cluster ${c} to ${v === 0 ? 'a free cluster' : `invalid entry ${v}`}`,
      );
    }
    c = v;
  }
}

const DOT = Buffer.from('.          ', 'latin1');
const DOTDOT = Buffer.from('..         ', 'latin1');

function entryCluster(dir: Buffer, off: number, type: FatType): number {
  const lo = dir.readUInt16LE(off + FAT_DIRENT.OFF_CLUSTER_LOW);
  // On FAT12/16 the high word belongs to OS/2 extended attributes, not to the cluster number.
  const hi = type === 32 ? dir.readUInt16LE(off + FAT_DIRENT.OFF_CLUSTER_HIGH) : 0;
  return ((hi << 16) | lo) >>> 0;
}

interface DirScan {
  refs: ClusterRef[];
  subdirs: number[];
}

/** The entries of one directory's bytes (a cluster or the fixed root) that name clusters. */
function scanDirectory(bytes: Buffer, dirCluster: number, type: FatType, into: DirScan): boolean {
  for (let off = 0; off + FAT_LIMITS.DIR_ENTRY_SIZE <= bytes.length; off += FAT_LIMITS.DIR_ENTRY_SIZE) {
    const first = bytes[off + FAT_DIRENT.OFF_NAME];
    if (first === FAT_DIRENT.END) return true;
    if (first === FAT_DIRENT.DELETED) continue;
    const attr = bytes[off + FAT_DIRENT.OFF_ATTR];
    if ((attr & FAT_DIRENT.ATTR_MASK) === FAT_DIRENT.ATTR_LONG_NAME) continue;
    if (attr & FAT_DIRENT.ATTR_VOLUME_ID) continue;
    const value = entryCluster(bytes, off, type);
    if (value === 0) continue;
    into.refs.push({ dirCluster, offset: off, value });
    const name = bytes.subarray(off, off + 11);
    const dotEntry = name.equals(DOT) || name.equals(DOTDOT);
    if (attr & FAT_DIRENT.ATTR_DIRECTORY && !dotEntry) into.subdirs.push(value);
  }
  return false;
}

export interface FatResizeOptions {
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface FatVolumeFacts {
  boot: FatBootSector;
  layout: FatLayout;
  bootSector: Buffer;
}

export async function readFatVolume(dev: BlockSource): Promise<FatVolumeFacts> {
  const bootSector = await dev.read(0, FAT_BOOT.SIZE);
  const boot = parseFatBootSector(bootSector);
  const layout = fatLayout(boot);
  if (layout.volumeBytes > dev.size) {
    throw new RescueError(
      'E_FS_BEYOND_PARTITION',
      `The FAT filesystem spans ${layout.volumeBytes} bytes but its partition has ${dev.size}`,
      'Give the whole range the filesystem occupies; shrink it there, then shrink the partition.',
    );
  }
  if (layout.clusterCount > FAT_RESIZE_MAX_CLUSTERS) {
    throw new RescueError(
      'E_RESIZE_UNSUPPORTED',
      `The FAT filesystem has ${layout.clusterCount} clusters; rescue resizes FAT volumes of up to ${FAT_RESIZE_MAX_CLUSTERS}`,
      'Keep this filesystem at its size.',
    );
  }
  return { boot, layout, bootSector };
}

export async function readFatEntries(dev: BlockSource, layout: FatLayout): Promise<Uint32Array> {
  const copy = layout.mirroring ? 0 : layout.activeFat;
  const fat = await dev.read(layout.fatStart + copy * layout.fatBytes, layout.fatBytes);
  return decodeFat(fat, layout);
}

/** What the minimum depends on: the layout and the used clusters. */
export async function fatUsage(dev: BlockSource): Promise<{ layout: FatLayout; used: number }> {
  const { layout } = await readFatVolume(dev);
  return { layout, used: countUsed(await readFatEntries(dev, layout), layout.type) };
}

/**
 * Resizes the FAT volume on `dev` (opened writable, `dev.size` ≥ newSize) to ⌊newSize / sector⌋
 * sectors. The caller checks it before and after (fsck.fat).
 */
export async function resizeFat(
  dev: BlockSource,
  newSize: number,
  opts: FatResizeOptions = {},
): Promise<void> {
  const { signal, log } = opts;
  const { boot, layout, bootSector } = await readFatVolume(dev);
  const bps = layout.bytesPerSector;
  const newTotal = Math.floor(newSize / bps);
  if (newTotal * bps > dev.size)
    throw failed(`${newSize} bytes is more than the ${dev.size} bytes available`);
  if (newTotal === layout.totalSectors) {
    log?.('fat: the filesystem already has this size');
    return;
  }
  const type = layout.type;
  const entries = await readFatEntries(dev, layout);
  const plan = planFatResize(layout, entries, newTotal);
  log?.(
    `fat: FAT${type} ${layout.totalSectors} → ${newTotal} sectors, ${layout.clusterCount} → ${plan.newClusterCount} clusters, ` +
      `FAT ${layout.fatBytes / bps} → ${plan.newFatSectors} sectors, ${plan.moves.length} clusters to move`,
  );

  // Every reference to a first cluster, from the directory tree (read before anything is written).
  const maxDirClusters = Math.ceil(FAT_LIMITS.MAX_DIR_BYTES / layout.clusterBytes) + 1;
  const scan: DirScan = { refs: [], subdirs: [] };
  const dirClusters: number[] = [];
  let rootRegion: Buffer | undefined;
  if (type === 32) {
    scan.subdirs.push(layout.rootCluster);
  } else {
    rootRegion = await dev.read(layout.rootDirStart, layout.rootDirBytes);
    scanDirectory(rootRegion, 0, type, scan);
  }
  const visited = new Set<number>();
  for (let i = 0; i < scan.subdirs.length; i++) {
    const start = scan.subdirs[i];
    if (visited.has(start)) continue;
    visited.add(start);
    if (visited.size > entries.length) throw unclean('more directories than clusters');
    if (signal?.aborted) throw abortedError();
    const chain = chainOf(entries, type, start, maxDirClusters, `directory at cluster ${start}`);
    for (const c of chain) {
      dirClusters.push(c);
      const bytes = await dev.read(layout.dataStart + (c - 2) * layout.clusterBytes, layout.clusterBytes);
      if (scanDirectory(bytes, c, type, scan)) break;
    }
  }

  const moved = new Map<number, number>(plan.moves);
  const newNumber = (c: number) => (moved.get(c) ?? c) - plan.shift;
  const oldLast = layout.clusterCount + 1;

  // Copy phase: only clusters that are free in the old filesystem are written.
  await copyClusters(dev, layout, plan.moves, signal);
  if (signal?.aborted) throw abortedError();

  // New FAT under the new numbering.
  const newFatBytes = plan.newFatSectors * bps;
  const fat = Buffer.alloc(newFatBytes);
  setFatEntry(fat, type, 0, entries[0]);
  setFatEntry(fat, type, 1, entries[1]);
  const newFirst = 2 + plan.shift;
  const newLastOld = plan.newClusterCount + 1 + plan.shift;
  for (let c = 2; c <= oldLast; c++) {
    const v = entries[c];
    if (v === 0) continue;
    if (v === FAT_ENTRY.BAD[type]) {
      // Moves only target free clusters, so a bad cluster inside the new range keeps its place.
      if (c >= newFirst && c <= newLastOld) setFatEntry(fat, type, c - plan.shift, v);
      continue;
    }
    let nv = v;
    if (v >= 2 && v <= oldLast) {
      if (!isUsed(entries[v], type)) throw unclean(`cluster ${c} links to free cluster ${v}`);
      nv = newNumber(v);
    } else if (v < FAT_ENTRY.EOC_MIN[type] && v > oldLast && v !== FAT_ENTRY.BAD[type]) {
      // Reserved values (FAT32 0x0FFFFFF0…6 and the like) are kept as they are.
      nv = v;
    }
    setFatEntry(fat, type, newNumber(c), nv);
  }

  // Directory entries: patched where the directory's cluster now physically is.
  const byDir = new Map<number, ClusterRef[]>();
  for (const r of scan.refs) {
    if (r.value < 2 || r.value > oldLast || !isUsed(entries[r.value], type)) {
      throw unclean(`a directory entry names cluster ${r.value}, which is not in use`);
    }
    if (newNumber(r.value) === r.value) continue;
    const list = byDir.get(r.dirCluster) ?? [];
    list.push(r);
    byDir.set(r.dirCluster, list);
  }
  const patch = (buf: Buffer, ref: ClusterRef) => {
    const nv = newNumber(ref.value);
    buf.writeUInt16LE(nv & 0xffff, ref.offset + FAT_DIRENT.OFF_CLUSTER_LOW);
    if (type === 32) buf.writeUInt16LE(nv >>> 16, ref.offset + FAT_DIRENT.OFF_CLUSTER_HIGH);
  };
  for (const [dirCluster, refs] of byDir) {
    if (dirCluster === 0) continue;
    const phys = moved.get(dirCluster) ?? dirCluster;
    const at = layout.dataStart + (phys - 2) * layout.clusterBytes;
    const bytes = await dev.read(at, layout.clusterBytes);
    for (const r of refs) patch(bytes, r);
    await write(dev, at, bytes);
  }
  const newRootStart = layout.fatStart + layout.numFats * newFatBytes;
  if (rootRegion) {
    for (const r of byDir.get(0) ?? []) patch(rootRegion, r);
    if (byDir.has(0) || newRootStart !== layout.rootDirStart) await write(dev, newRootStart, rootRegion);
  }
  for (let k = 0; k < layout.numFats; k++) await write(dev, layout.fatStart + k * newFatBytes, fat);

  // FSInfo (and its backup) keep their hints right, or fsck reports a wrong free count.
  let free = 0;
  let firstFree = FSINFO.UNKNOWN as number;
  for (let n = 2; n < plan.newClusterCount + 2; n++) {
    if (fatEntry(fat, type, n) === 0) {
      free++;
      if (firstFree === FSINFO.UNKNOWN) firstFree = n;
    }
  }
  if (type === 32 && layout.fsInfoSector) {
    const places = [layout.fsInfoSector];
    if (layout.backupBootSector) places.push(layout.backupBootSector + layout.fsInfoSector);
    for (const s of places) {
      if ((s + 1) * bps > layout.reservedBytes) continue;
      const sector = await dev.read(s * bps, FAT_BOOT.SIZE);
      const info = parseFsInfo(sector);
      if (!info.leadSignatureOk || !info.structSignatureOk) continue;
      sector.writeUInt32LE(free, FSINFO.OFF_FREE_COUNT);
      sector.writeUInt32LE(firstFree, FSINFO.OFF_NEXT_FREE);
      await write(dev, s * bps, sector);
    }
  }

  // The boot sector last: until it is written, the BPB still describes the old geometry.
  const fat32 = isFat32Layout(boot);
  const nb: FatBootSector = { ...boot };
  if (!fat32 && newTotal < 0x10000) {
    nb.totalSectors16 = newTotal;
    nb.totalSectors32 = 0;
  } else {
    nb.totalSectors16 = 0;
    nb.totalSectors32 = newTotal;
  }
  if (fat32) {
    nb.fatSize32 = plan.newFatSectors;
    nb.rootCluster = newNumber(layout.rootCluster);
  } else {
    nb.fatSize16 = plan.newFatSectors;
  }
  const newBoot = writeFatBootSector(nb, bootSector);
  await write(dev, 0, newBoot);
  if (fat32 && layout.backupBootSector) await write(dev, layout.backupBootSector * bps, newBoot);
  await flush(dev);
  log?.(`fat: resized to ${newTotal * bps} bytes (${free} of ${plan.newClusterCount} clusters free)`);
}

function abortedError(): RescueError {
  return new RescueError(
    'E_CANCELLED',
    'Resizing the FAT filesystem was cancelled',
    'Run it again when you want to.',
  );
}

async function write(dev: BlockSource, offset: number, data: Uint8Array): Promise<void> {
  if (!dev.write)
    throw new RescueError('E_READ_ONLY', `${dev.path} is read-only`, 'This is a bug; please report it.');
  await dev.write(offset, data);
}

async function flush(dev: BlockSource): Promise<void> {
  const s = dev as BlockSource & { sync?: () => Promise<void> };
  if (typeof s.sync === 'function') await s.sync();
}

/** Copies moved clusters, coalescing runs where both source and target are consecutive. */
async function copyClusters(
  dev: BlockSource,
  layout: FatLayout,
  moves: ReadonlyArray<[number, number]>,
  signal?: AbortSignal,
): Promise<void> {
  const cb = layout.clusterBytes;
  const maxRun = Math.max(1, Math.floor(COPY_CHUNK / cb));
  for (let i = 0; i < moves.length; ) {
    let n = 1;
    while (
      i + n < moves.length &&
      n < maxRun &&
      moves[i + n][0] === moves[i][0] + n &&
      moves[i + n][1] === moves[i][1] + n
    ) {
      n++;
    }
    if (signal?.aborted) throw abortedError();
    const data = await dev.read(layout.dataStart + (moves[i][0] - 2) * cb, n * cb);
    await write(dev, layout.dataStart + (moves[i][1] - 2) * cb, data);
    i += n;
  }
}
