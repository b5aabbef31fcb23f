/**
 * Which parts of a disk an image holds ("regions"), and how a region's used map is walked in
 * windows. Backup plans regions from a live disk; restore reads the same shapes from a manifest.
 */
import type { BlockSource } from '../devices/source.ts';
import { SliceSource } from '../devices/source.ts';
import { RescueError } from '../errors.ts';
import { detectFilesystem, sectorBySector, usedMapOf } from '../filesystems/detect.ts';
import type { Extent } from '../filesystems/extents.ts';
import type { FsIdentity } from '../filesystems/types.ts';
import type { RegionKind, WindowPlan } from '../image/index.ts';
import type { PartitionTable } from '../partitions/types.ts';

/** The lead-in (MBR, GPT, the gap after the MBR where GRUB's core.img lives) is copied up to this. */
export const MAX_LEAD_IN = 16 * 1024 * 1024;

export interface PlannedRegion {
  id: number;
  disk: number;
  kind: RegionKind;
  /** Bytes from the start of the disk. */
  start: number;
  size: number;
  /** Partition number (Linux numbering) for kind 'partition'. */
  partition?: number;
  fs?: FsIdentity;
  usedMethod: 'allocation' | 'sector-by-sector';
  reason?: string;
  /** Used byte ranges relative to the region's start. */
  extents: Extent[];
  usedBytes: number;
}

export interface PlanOptions {
  diskIndex: number;
  firstRegionId: number;
  /** Partition numbers to take; undefined = every partition. */
  partitions?: number[];
  /** Copy every byte of every region. */
  sectorBySector: boolean;
  /** Also take the lead-in and the GPT backup area (disk and system images). */
  layout: boolean;
  signal?: AbortSignal;
  /** Told about each region as it is analysed (for progress and logs). */
  onRegion?: (r: PlannedRegion) => void;
}

function whole(
  size: number,
  reason: string,
): Pick<PlannedRegion, 'usedMethod' | 'reason' | 'extents' | 'usedBytes'> {
  const map = sectorBySector(size, reason);
  return { usedMethod: map.method, reason: map.reason, extents: map.extents, usedBytes: map.usedBytes };
}

async function analysedRegion(
  src: BlockSource,
  base: Omit<PlannedRegion, 'usedMethod' | 'extents' | 'usedBytes'>,
  sectorByRequest: boolean,
  signal?: AbortSignal,
): Promise<PlannedRegion> {
  const slice = new SliceSource(src, base.start, base.size, `${src.path}@${base.start}`);
  const fs = await detectFilesystem(slice);
  if (sectorByRequest) return { ...base, fs, ...whole(base.size, 'sector-by-sector backup was requested') };
  const map = await usedMapOf(slice, fs, signal);
  return {
    ...base,
    fs,
    usedMethod: map.method,
    ...(map.reason ? { reason: map.reason } : {}),
    extents: map.extents,
    usedBytes: map.usedBytes,
  };
}

/** The regions of one disk for a backup. */
export async function planDiskRegions(
  src: BlockSource,
  table: PartitionTable,
  opts: PlanOptions,
): Promise<PlannedRegion[]> {
  const out: PlannedRegion[] = [];
  let id = opts.firstRegionId;
  const push = (r: PlannedRegion) => {
    out.push(r);
    opts.onRegion?.(r);
  };
  const disk = opts.diskIndex;
  // A whole disk sector by sector (or a disk without a table) is one region; a system backup
  // sector by sector (chosen partitions) takes those partitions whole, plus the layout.
  if (opts.layout && (table.kind === 'none' || (opts.sectorBySector && opts.partitions === undefined))) {
    if (opts.partitions !== undefined) {
      throw new RescueError(
        'E_NO_PARTITIONS',
        `${src.path} has no partition table`,
        'Back up the whole disk instead.',
      );
    }
    const base = { id: id++, disk, kind: 'disk' as const, start: 0, size: src.size };
    push(
      opts.sectorBySector
        ? { ...base, ...whole(src.size, 'sector-by-sector backup was requested') }
        : await analysedRegion(src, base, false, opts.signal),
    );
    return out;
  }
  const parts = table.partitions.filter((p) => p.kind !== 'extended');
  if (opts.partitions) {
    for (const n of opts.partitions) {
      if (!parts.some((p) => p.number === n)) {
        const have = parts.map((p) => p.number).join(', ') || 'none';
        throw new RescueError(
          'E_NO_SUCH_PARTITION',
          `${src.path} has no partition ${n} (it has: ${have})`,
          'Use `rescue list` to see the partitions and their numbers.',
        );
      }
    }
  }
  if (opts.layout) {
    const first = parts.length > 0 ? Math.min(...parts.map((p) => p.start)) : Math.min(src.size, 1024 * 1024);
    const leadIn = Math.min(first, MAX_LEAD_IN, src.size);
    if (leadIn > 0)
      push({
        id: id++,
        disk,
        kind: 'lead-in',
        start: 0,
        size: leadIn,
        ...whole(leadIn, 'partition tables and boot code'),
      });
  }
  for (const p of parts) {
    if (opts.partitions && !opts.partitions.includes(p.number)) continue;
    opts.signal?.throwIfAborted();
    if (p.start + p.size > src.size) {
      throw new RescueError(
        'E_PARTITION_BEYOND_DISK',
        `Partition ${p.number} of ${src.path} ends beyond the disk (${p.start + p.size} > ${src.size} bytes)`,
        'The disk or image is truncated, or the partition table is damaged: `rescue list` shows the findings.',
      );
    }
    push(
      await analysedRegion(
        src,
        { id: id++, disk, kind: 'partition', start: p.start, size: p.size, partition: p.number },
        opts.sectorBySector,
        opts.signal,
      ),
    );
  }
  if (opts.layout && table.kind === 'gpt' && table.gpt) {
    const ss = table.sectorSize;
    const arraySectors = Math.ceil((table.gpt.entryCount * table.gpt.entrySize) / ss);
    const start = (table.gpt.backupHeaderLba - arraySectors) * ss;
    const end = (table.gpt.backupHeaderLba + 1) * ss;
    if (start > 0 && end <= src.size) {
      push({
        id: id++,
        disk,
        kind: 'gpt-backup',
        start,
        size: end - start,
        ...whole(end - start, 'GPT backup'),
      });
    }
  }
  return out;
}

/** Reads a window's used bytes from the region's source, concatenated in order. */
export async function readWindow(region: BlockSource, w: WindowPlan): Promise<Buffer> {
  const first = w.extents[0].start;
  const last = w.extents[w.extents.length - 1];
  const span = await region.read(first, last.start + last.length - first);
  if (w.extents.length === 1) return span;
  const out = Buffer.allocUnsafe(w.rawLength);
  let o = 0;
  for (const r of w.extents) {
    span.copy(out, o, r.start - first, r.start - first + r.length);
    o += r.length;
  }
  return out;
}
