/**
 * exFAT: identity as blkid reports it and the used map from the allocation bitmap(s) found in the
 * root directory, plus everything in front of the cluster heap (boot regions and FATs).
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt, isRescueError } from '../errors.ts';
import {
  EXFAT_BOOT,
  EXFAT_FAT,
  EXFAT_LIMITS,
  type ExfatBootSector,
  type ExfatLayout,
  type ExfatRootEntries,
  exfatLayout,
  looksLikeExfat,
  parseExfatBootSector,
  scanExfatRootEntries,
  verifyExfatBootRegion,
} from './exfat-boot.ts';
import { addBitmapRuns, ExtentSet, totalBytes } from './extents.ts';
import { formatVolumeSerial } from './fat-bpb.ts';
import type { FilesystemModule, FsIdentity, UsedMap } from './types.ts';

/** Bitmaps are read in slices of at most this many bytes. */
const READ_CHUNK = 4 * 1024 * 1024;
/** FAT entries are read a page at a time while walking chains. */
const FAT_PAGE = 64 * 1024;

export interface ExfatVolume {
  boot: ExfatBootSector;
  layout: ExfatLayout;
}

/** The boot sector, its layout and the main boot region's checksum, checked against the source's size. */
export async function openExfatVolume(src: BlockSource): Promise<ExfatVolume> {
  if (src.size < EXFAT_BOOT.SIZE) throw corrupt('exFAT volume', `${src.path} is only ${src.size} bytes`);
  const boot = parseExfatBootSector(await src.read(0, EXFAT_BOOT.SIZE));
  // Check the shift before trusting it to size the boot-region read.
  const layout = exfatLayout(boot);
  const regionBytes = layout.bytesPerSector * EXFAT_BOOT.REGION_SECTORS;
  if (regionBytes > src.size) throw corrupt('exFAT volume', `${src.path} is smaller than the boot region`);
  verifyExfatBootRegion(await src.read(0, regionBytes), layout.bytesPerSector);
  if (layout.volumeBytes > src.size) {
    throw corrupt(
      'exFAT volume',
      `the boot sector claims ${layout.volumeBytes} bytes but ${src.path} has only ${src.size} (truncated image or damaged boot sector)`,
      { volumeBytes: layout.volumeBytes, sourceBytes: src.size },
    );
  }
  return { boot, layout };
}

/** Follows FAT chains of one FAT copy, one cached page of entries at a time. */
export class ExfatChainWalker {
  private page = -1;
  private bytes: Buffer = Buffer.alloc(0);
  private readonly src: BlockSource;
  private readonly layout: ExfatLayout;
  private readonly base: number;

  constructor(src: BlockSource, layout: ExfatLayout) {
    this.src = src;
    this.layout = layout;
    this.base = layout.fatStart + layout.activeFat * layout.fatBytes;
  }

  async entry(n: number): Promise<number> {
    const off = n * EXFAT_FAT.ENTRY_SIZE;
    const page = Math.floor(off / FAT_PAGE);
    if (page !== this.page) {
      const start = page * FAT_PAGE;
      this.bytes = await this.src.read(this.base + start, Math.min(FAT_PAGE, this.layout.fatBytes - start));
      this.page = page;
    }
    return this.bytes.readUInt32LE(off - page * FAT_PAGE);
  }

  private valid(n: number): boolean {
    return n >= EXFAT_LIMITS.FIRST_CLUSTER && n <= this.layout.clusterCount + 1;
  }

  /**
   * The clusters of a chain starting at `first`: exactly `count` of them when given (a chain ending
   * early is corrupt; an unchained run, FAT entry 0, is taken as contiguous as the NoFatChain rule
   * would), else up to the end-of-chain mark but no more than `max`.
   */
  async chain(what: string, first: number, opts: { count?: number; max: number }): Promise<number[]> {
    if (!this.valid(first))
      throw corrupt(`exFAT ${what}`, `first cluster ${first} is outside 2..${this.layout.clusterCount + 1}`);
    const limit = opts.count ?? opts.max;
    if (opts.count !== undefined && (await this.entry(first)) === EXFAT_FAT.FREE) {
      if (first + opts.count - 1 > this.layout.clusterCount + 1)
        throw corrupt(`exFAT ${what}`, 'runs past the cluster heap');
      return Array.from({ length: opts.count }, (_, i) => first + i);
    }
    const out: number[] = [];
    const seen = new Set<number>();
    let c = first;
    for (;;) {
      if (seen.has(c)) throw corrupt(`exFAT ${what}`, `cluster chain loops at cluster ${c}`);
      seen.add(c);
      out.push(c);
      if (out.length >= limit) {
        if (opts.count === undefined && (await this.entry(c)) !== EXFAT_FAT.END_OF_CHAIN) {
          throw corrupt(`exFAT ${what}`, `cluster chain is longer than ${opts.max} clusters`);
        }
        return out;
      }
      const next = await this.entry(c);
      if (next === EXFAT_FAT.END_OF_CHAIN) {
        if (opts.count !== undefined)
          throw corrupt(`exFAT ${what}`, `cluster chain ends after ${out.length} of ${opts.count} clusters`);
        return out;
      }
      if (!this.valid(next))
        throw corrupt(`exFAT ${what}`, `cluster ${c} links to invalid cluster 0x${next.toString(16)}`);
      c = next;
    }
  }
}

function clusterOffset(layout: ExfatLayout, n: number): number {
  return layout.heapStart + (n - EXFAT_LIMITS.FIRST_CLUSTER) * layout.clusterBytes;
}

/** Reads the root directory until its end marker; returns its critical entries and its clusters. */
async function readRoot(src: BlockSource, layout: ExfatLayout, walker: ExfatChainWalker) {
  const max = Math.min(layout.clusterCount, Math.ceil(EXFAT_LIMITS.MAX_DIR_BYTES / layout.clusterBytes));
  const clusters = await walker.chain('root directory', layout.rootCluster, { max });
  const entries: ExfatRootEntries = { bitmaps: [], ended: false };
  for (const c of clusters) {
    if (entries.ended) break;
    scanExfatRootEntries(await src.read(clusterOffset(layout, c), layout.clusterBytes), entries);
  }
  return { entries, clusters };
}

function probe(head: Buffer, _size: number): boolean {
  if (!looksLikeExfat(head)) return false;
  try {
    return parseExfatBootSector(head).mustBeZeroOk;
  } catch {
    return false;
  }
}

async function identify(src: BlockSource): Promise<FsIdentity> {
  const { boot, layout } = await openExfatVolume(src);
  const warnings: string[] = [];
  let entries: ExfatRootEntries | undefined;
  try {
    ({ entries } = await readRoot(src, layout, new ExfatChainWalker(src, layout)));
  } catch (e) {
    // The boot region is sound, so this is exFAT; say what is wrong instead of "unknown".
    if (!isRescueError(e)) throw e;
    warnings.push(`The root directory could not be read for the volume label: ${e.message}`);
  }
  if (layout.dirty)
    warnings.push(
      'The exFAT volume was not cleanly unmounted (VolumeDirty set); run fsck.exfat / chkdsk first.',
    );
  if (layout.mediaFailure) warnings.push('The exFAT volume records media failures (MediaFailure set).');
  const id: FsIdentity = {
    type: 'exfat',
    version: `${boot.revisionMajor}.${boot.revisionMinor}`,
    uuid: formatVolumeSerial(boot.volumeSerialNumber),
    blockSize: layout.clusterBytes,
    size: layout.volumeBytes,
    state: {
      dirty: layout.dirty,
      mediaFailure: layout.mediaFailure,
      activeFat: layout.activeFat,
      percentInUse: boot.percentInUse,
      clusterCount: layout.clusterCount,
    },
  };
  // blkid trims trailing whitespace and drops an empty label.
  const label = entries?.label?.replace(/[ \t\n\v\f\r]+$/, '');
  if (label) id.label = label;
  if (warnings.length) id.warnings = warnings;
  return id;
}

function addClusters(set: ExtentSet, layout: ExfatLayout, clusters: readonly number[]): void {
  for (const c of clusters) set.add(clusterOffset(layout, c), layout.clusterBytes);
}

async function usedMap(src: BlockSource, signal?: AbortSignal): Promise<UsedMap> {
  const { layout } = await openExfatVolume(src);
  if (layout.dirty) {
    // exFAT has no journal: a volume removed while dirty may have directory entries whose clusters
    // never reached the allocation bitmap. fsck.exfat would add them; we copy everything instead.
    return {
      method: 'sector-by-sector',
      extents: [{ start: 0, length: layout.volumeBytes }],
      usedBytes: layout.volumeBytes,
      reason:
        'the exFAT volume is marked dirty (removed without ejecting), so its allocation bitmap may be ' +
        'incomplete; run fsck.exfat (or chkdsk) on it to allow a used-space backup',
    };
  }
  const walker = new ExfatChainWalker(src, layout);
  const set = new ExtentSet(layout.volumeBytes);
  // Main and backup boot regions, the FAT(s) and whatever alignment padding lies before the heap.
  set.add(0, layout.heapStart);
  const { entries, clusters: rootClusters } = await readRoot(src, layout, walker);
  addClusters(set, layout, rootClusters);
  const needed = Math.ceil(layout.clusterCount / 8);
  const present = new Set(entries.bitmaps.map((b) => b.index));
  if (!present.has(layout.activeFat)) {
    throw corrupt('exFAT root directory', `no allocation bitmap ${layout.activeFat + 1} (the active one)`);
  }
  // Both bitmaps of a TexFAT volume: the inactive one may describe the state being committed.
  for (const bm of entries.bitmaps) {
    signal?.throwIfAborted();
    if (bm.dataLength < needed) {
      throw corrupt(
        'exFAT allocation bitmap',
        `${bm.dataLength} bytes cannot cover ${layout.clusterCount} clusters (needs ${needed})`,
      );
    }
    const count = Math.ceil(bm.dataLength / layout.clusterBytes);
    const clusters = await walker.chain('allocation bitmap', bm.firstCluster, { count, max: count });
    addClusters(set, layout, clusters);
    // Walk the bitmap in runs of consecutive clusters, each read in slices.
    let bitmapByte = 0;
    for (let i = 0; i < clusters.length && bitmapByte < needed; ) {
      let j = i + 1;
      while (j < clusters.length && clusters[j] === clusters[j - 1] + 1) j++;
      const runStart = clusterOffset(layout, clusters[i]);
      const runBytes = Math.min((j - i) * layout.clusterBytes, needed - bitmapByte);
      for (let done = 0; done < runBytes; done += READ_CHUNK) {
        signal?.throwIfAborted();
        const n = Math.min(READ_CHUNK, runBytes - done);
        const bytes = await src.read(runStart + done, n);
        const firstUnit = (bitmapByte + done) * 8;
        addBitmapRuns(
          set,
          bytes,
          Math.min(n * 8, layout.clusterCount - firstUnit),
          layout.clusterBytes,
          layout.heapStart,
          firstUnit,
        );
      }
      bitmapByte += runBytes;
      i = j;
    }
  }
  if (entries.upcase && entries.upcase.dataLength > 0) {
    const count = Math.ceil(entries.upcase.dataLength / layout.clusterBytes);
    addClusters(
      set,
      layout,
      await walker.chain('up-case table', entries.upcase.firstCluster, { count, max: count }),
    );
  }
  // Sectors past the last cluster: outside the heap but inside the volume. partclone copies them.
  const heapEnd = layout.heapStart + layout.clusterCount * layout.clusterBytes;
  set.add(heapEnd, layout.volumeBytes - heapEnd);
  const extents = set.extents();
  return { method: 'allocation', extents, usedBytes: totalBytes(extents) };
}

export const exfat: FilesystemModule = { probe, identify, usedMap };
