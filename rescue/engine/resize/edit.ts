/**
 * Edit partitions during a restore or clone: measuring, shrinking and growing filesystems around
 * the pure layout planner (layout.ts).
 *
 * A filesystem that must get smaller than it is in the image cannot be written to its new place
 * first (it does not fit there), so its used data is first written into a sparse file in a scratch
 * folder — exactly the bytes a restore would write —, measured there (resize2fs -P, ntfsresize
 * --info …), shrunk there with its own tool, and only then copied, used blocks only, to the
 * target. Everything that can fail (not enough scratch space, a minimum too large, a resize tool
 * refusing) happens before the first byte reaches the target. Growing is done in place on the
 * target after the data is written.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource } from '../devices/source.ts';
import { RescueError } from '../errors.ts';
import { detectFilesystem, usedMapOf } from '../filesystems/detect.ts';
import { fatLayout, parseFatBootSector } from '../filesystems/fat-bpb.ts';
import type { FsIdentity } from '../filesystems/types.ts';
import type { ManifestRegion } from '../image/types.ts';
import { type JobContext, ProgressMeter } from '../jobs/job.ts';
import type { PartitionTable } from '../partitions/types.ts';
import { maximumTotalSectors } from './fs-fat-resize.ts';
import {
  minimumSize,
  resizeFilesystem,
  resizeSupport,
  safetyMargin,
  setPartitionStart,
} from './fs-resize.ts';
import {
  alignDown,
  describePlan,
  type EditOptions,
  formatSize,
  fsSpan,
  type LayoutPlan,
  type PlannedPartition,
  planLayout,
} from './layout.ts';

const MiB = 1024 * 1024;
const COPY_PIECE = 4 * MiB;
/** Kept free in the scratch folder beyond the estimate (tools' own files, journals, rounding). */
const SCRATCH_MARGIN = 64 * MiB;
/** Filesystems with a "hidden sectors" field that names the partition's start. */
const HIDDEN_SECTORS_TYPES = new Set(['ntfs', 'vfat', 'exfat']);

/** Writes the used data of regions (verified chunk by chunk) to `target` at `at`: the restore's own writer. */
export type RegionWriter = (
  target: FileSource,
  items: { region: ManifestRegion; at: number }[],
  phase: string,
) => Promise<number>;

function log(ctx: JobContext, message: string, level: 'info' | 'warn' = 'info'): void {
  ctx.emit({ type: 'log', level, message });
}

function fsName(r: ManifestRegion): string {
  return `${r.fs?.type ?? 'unknown'}${r.fs?.label ? ` "${r.fs.label}"` : ''}`;
}

/** True when the edit options change anything at all (a plain restore otherwise). */
export function isEditing(edit: EditOptions | undefined): edit is EditOptions {
  return !!edit && (edit.mode !== 'copy' || !!edit.align || !!edit.newIds);
}

/** Refusals that depend only on the request's shape. */
export function assertEditApplicable(
  edit: EditOptions | undefined,
  shape: { sectorBySector: boolean; partitionRestore: boolean },
): void {
  if (!isEditing(edit)) return;
  if (shape.sectorBySector && (edit.mode !== 'copy' || edit.align)) {
    throw new RescueError(
      'E_EDIT_NOT_APPLICABLE',
      'A sector-by-sector restore copies the disk exactly as it was: partitions cannot be resized, moved or aligned',
      'Leave out --sector-by-sector to edit partitions, or leave out --fill/--shrink/--layout/--align.',
    );
  }
  if (shape.partitionRestore && (edit.mode === 'layout' || edit.newIds)) {
    throw new RescueError(
      'E_EDIT_NOT_APPLICABLE',
      `${edit.mode === 'layout' ? '--layout' : '--new-ids'} applies to whole-disk restores and clones, not to one partition`,
      'For one partition use --fill (grow it to its partition) or --shrink (fit it into a smaller one).',
    );
  }
  if (edit.mode === 'layout' && !edit.layout?.trim()) {
    throw new RescueError(
      'E_LAYOUT_INVALID',
      'The manual layout is empty',
      'Give it as N=SIZE,… (docs/cli.md).',
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Scratch space

/** The scratch folder and the sparse files in it; close() removes every file it made. */
export class ScratchSpace {
  readonly dir: string;
  private readonly files = new Set<string>();
  private reserved = 0;
  private counter = 0;

  private constructor(dir: string) {
    this.dir = dir;
  }

  static async open(dir: string | undefined): Promise<ScratchSpace> {
    const d = dir ?? tmpdir();
    const st = await fsp.stat(d).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new RescueError(
        'E_SCRATCH_INVALID',
        `The scratch folder ${d} does not exist or is not a folder`,
        'Give an existing folder with --scratch DIR (on a disk other than the target).',
      );
    }
    return new ScratchSpace(d);
  }

  /** Refuses when the folder cannot hold `bytes` more than what is already reserved. */
  async reserve(bytes: number, what: string): Promise<void> {
    let free: number;
    try {
      const s = await fsp.statfs(this.dir);
      free = s.bavail * s.bsize;
    } catch (e) {
      throw new RescueError(
        'E_SCRATCH_INVALID',
        `Cannot tell the free space of the scratch folder ${this.dir}: ${(e as Error).message}`,
        'Give another folder with --scratch DIR.',
      );
    }
    const need = this.reserved + bytes + SCRATCH_MARGIN;
    // What is already written counts against `free` as well; `reserved` stays an upper bound.
    const used = await this.bytesOnDisk();
    if (free + used < need) {
      throw new RescueError(
        'E_SCRATCH_SPACE',
        `Shrinking needs about ${formatSize(need)} in the scratch folder ${this.dir} for ${what}, but only ${formatSize(free + used)} is free`,
        'Give a folder with more free space with --scratch DIR (any local disk other than the target; the space is freed again at the end).',
        { need, free: free + used },
      );
    }
    this.reserved += bytes;
  }

  private async bytesOnDisk(): Promise<number> {
    let n = 0;
    for (const f of this.files) {
      const st = await fsp.stat(f).catch(() => undefined);
      if (st) n += st.blocks * 512;
    }
    return n;
  }

  /** A new sparse file of `size` bytes. */
  async create(tag: string, size: number): Promise<string> {
    const path = join(
      this.dir,
      `rescue-scratch-${process.pid}-${Date.now().toString(36)}-${this.counter++}-${tag}.img`,
    );
    const h = await fsp.open(path, 'wx', 0o600);
    this.files.add(path);
    try {
      await h.truncate(size);
    } finally {
      await h.close();
    }
    return path;
  }

  async remove(path: string): Promise<void> {
    await fsp.rm(path, { force: true });
    this.files.delete(path);
  }

  async close(): Promise<void> {
    for (const f of [...this.files]) await this.remove(f);
  }
}

/** A scratch space made on first use (copy and fill never need one); close() is safe either way. */
export function lazyScratch(dir: string | undefined): {
  get(): Promise<ScratchSpace>;
  close(): Promise<void>;
} {
  let made: Promise<ScratchSpace> | undefined;
  return {
    get: () => {
      made ??= ScratchSpace.open(dir);
      return made;
    },
    close: async () => {
      const s = await made?.catch(() => undefined);
      await s?.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One filesystem on its way to the target

/**
 * One region's filesystem: written as it is, or materialized in the scratch folder, measured and
 * shrunk there, then copied. `fsSize` is what it spans on the target.
 */
export class RegionCopy {
  readonly region: ManifestRegion;
  readonly need: number;
  private scratchPath: string | undefined;
  private shrunkTo: number | undefined;
  private readonly scratch: ScratchSpace | undefined;
  private readonly write: RegionWriter;
  private readonly ctx: JobContext;

  /** Without a scratch space the filesystem can only be written as it is. */
  constructor(region: ManifestRegion, write: RegionWriter, ctx: JobContext, scratch?: ScratchSpace) {
    this.region = region;
    this.need = fsSpan(region, false);
    this.scratch = scratch;
    this.write = write;
    this.ctx = ctx;
  }

  get fs(): FsIdentity {
    if (!this.region.fs) throw new RescueError('E_INTERNAL', 'region without a filesystem', 'Report it.');
    return this.region.fs;
  }

  get what(): string {
    return `partition ${this.region.partition ?? '(whole disk)'} (${fsName(this.region)})`;
  }

  /** Writes the used data into a sparse scratch file (once), exactly as a restore would write it. */
  async materialize(): Promise<string> {
    if (this.scratchPath) return this.scratchPath;
    if (!this.scratch) throw new RescueError('E_INTERNAL', 'no scratch space to shrink in', 'Report it.');
    const path = await this.scratch.create(`r${this.region.id}`, this.region.size);
    this.scratchPath = path;
    this.ctx.emit({
      type: 'phase',
      phase: 'analyse',
      message: `Copying ${this.what} to the scratch folder to measure how small it can get`,
    });
    const dst = await FileSource.open(path, { writable: true });
    try {
      await this.write(dst, [{ region: this.region, at: 0 }], 'analyse');
    } finally {
      await dst.close();
    }
    return path;
  }

  /** The smallest this filesystem can be shrunk to (bytes), measured on the scratch copy. */
  async minimum(signal: AbortSignal): Promise<number> {
    const path = await this.materialize();
    const min = await minimumSize({ path, offset: 0, size: this.need }, this.fs, { signal });
    log(
      this.ctx,
      `${this.what}: ${formatSize(this.region.usedBytes ?? this.need)} used, can be shrunk to ${formatSize(min)}`,
    );
    return min;
  }

  /** Shrinks the scratch copy to `size` bytes (before anything is written to the target). */
  async shrink(size: number, signal: AbortSignal): Promise<void> {
    const path = await this.materialize();
    this.ctx.emit({
      type: 'phase',
      phase: 'shrink',
      message: `Shrinking ${this.what} from ${formatSize(this.need)} to ${formatSize(size)}`,
    });
    await resizeFilesystem({ path, offset: 0, size: this.region.size }, this.fs, size, {
      signal,
      log: (line) => log(this.ctx, `${this.what}: ${line}`),
    });
    // Blocks the tool moved out of the cut-off end are freed in the scratch folder at once.
    await fsp.truncate(path, size);
    this.shrunkTo = size;
  }

  get shrunk(): boolean {
    return this.shrunkTo !== undefined;
  }

  /** Writes the filesystem to `target` at `at`; `room` bytes are its partition there. */
  async writeTo(target: FileSource, at: number, room: number, signal: AbortSignal): Promise<number> {
    if (this.shrunkTo === undefined) return this.write(target, [{ region: this.region, at }], 'restore');
    return copyUsed(
      this.scratchPath!,
      target,
      at,
      Math.min(room, this.shrunkTo),
      this.what,
      this.ctx,
      signal,
    );
  }

  async close(): Promise<void> {
    if (this.scratchPath) await this.scratch?.remove(this.scratchPath);
    this.scratchPath = undefined;
  }
}

/**
 * Copies the used blocks of the (shrunk) filesystem in `path` to `target` at `at`, as our own
 * filesystem modules map them — the same maps a backup trusts.
 */
async function copyUsed(
  path: string,
  target: FileSource,
  at: number,
  limit: number,
  what: string,
  ctx: JobContext,
  signal: AbortSignal,
): Promise<number> {
  const src = await FileSource.open(path);
  try {
    const id = await detectFilesystem(src);
    const map = await usedMapOf(src, id, signal);
    if (map.method !== 'allocation')
      log(
        ctx,
        `${what}: the shrunk filesystem's map could not be read (${map.reason}); copying all of it`,
        'warn',
      );
    const extents =
      map.method === 'allocation' ? map.extents : [{ start: 0, length: Math.min(limit, src.size) }];
    const beyond = extents.find((x) => x.start + x.length > limit);
    if (beyond) {
      throw new RescueError(
        'E_RESIZE_FAILED',
        `${what}: after shrinking, the filesystem still uses bytes up to ${beyond.start + beyond.length}, past its new partition (${limit} bytes)`,
        'Nothing was written for this partition. Check the filesystem on the source (fsck / chkdsk) and try again, or restore to a larger disk.',
      );
    }
    const total = extents.reduce((n, x) => n + x.length, 0);
    const meter = new ProgressMeter(ctx, 'restore', total);
    let written = 0;
    for (const x of extents) {
      for (let o = 0; o < x.length; o += COPY_PIECE) {
        signal.throwIfAborted();
        const n = Math.min(COPY_PIECE, x.length - o);
        await target.write(at + x.start + o, await src.read(x.start + o, n));
        written += n;
        meter.add(n);
      }
    }
    meter.finish();
    return written;
  } finally {
    await src.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Whole disks

export interface DiskEditInput {
  table: PartitionTable;
  regions: readonly ManifestRegion[];
  targetPath: string;
  targetSize: number;
  edit: EditOptions;
  sectorBySector: boolean;
  ctx: JobContext;
  write: RegionWriter;
  scratch: () => Promise<ScratchSpace>;
  /** Reads bytes of a region from the image or source disk (FAT boot sectors for grow limits). */
  readRegion: (regionId: number, offset: number, length: number) => Promise<Buffer>;
}

export interface DiskEdit {
  plan: LayoutPlan;
  /** Regions shrunk on scratch, by region id. */
  copies: Map<number, RegionCopy>;
}

/** FAT32 needs at least this many clusters (Microsoft's type rule). */
const FAT32_MIN_CLUSTERS = 65525;

/**
 * A conservative lower bound of a filesystem's minimum, from the manifest alone: what is used,
 * less what shrinking may drop (ext inode tables and bitmaps of removed groups — an eighth of the
 * filesystem covers inode ratios down to 2 KiB —, a sixteenth elsewhere), never below FAT32's
 * cluster minimum, plus the safety margin minimumSize() adds to every tool's figure. Used to refuse
 * at once when even these do not fit, before hours of copying to measure the real minimums.
 */
export function minimumLowerBound(r: ManifestRegion): number {
  const size = fsSpan(r, false);
  const used = r.usedBytes ?? size;
  const droppable = r.fs?.type?.startsWith('ext') ? size / 8 : size / 16;
  let raw = Math.max(0, Math.floor(used - droppable));
  if (r.fs?.type === 'vfat' && r.fs.version === 'FAT32' && r.fs.blockSize)
    raw = Math.max(raw, FAT32_MIN_CLUSTERS * r.fs.blockSize);
  const bound = Math.min(size, raw + safetyMargin(raw, size));
  return Number.isFinite(bound) ? Math.max(MiB, bound) : MiB;
}

/**
 * How large each filesystem can grow without changing its format: FAT12/16 cluster counts (from
 * the boot sector in the image), 32-bit ext block numbers, 2^32 − 1 NTFS clusters.
 */
export async function growLimits(
  regions: readonly ManifestRegion[],
  readRegion: DiskEditInput['readRegion'],
): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const r of regions) {
    if (r.kind !== 'partition' || r.partition === undefined || r.usedMethod !== 'allocation' || !r.fs)
      continue;
    const fs = r.fs;
    if (fs.type.startsWith('ext') && fs.blockSize && !(fs.version ?? '').split(/\s+/).includes('64bit'))
      out.set(r.partition, (2 ** 32 - 1) * fs.blockSize);
    else if (fs.type === 'ntfs' && fs.blockSize) out.set(r.partition, (2 ** 32 - 1) * fs.blockSize);
    else if (fs.type === 'vfat') {
      try {
        const layout = fatLayout(parseFatBootSector(await readRegion(r.id, 0, 512)));
        out.set(r.partition, maximumTotalSectors(layout) * layout.bytesPerSector);
      } catch {
        // A boot sector we cannot read: the filesystem keeps its size rather than fail to grow later.
        out.set(r.partition, fsSpan(r, false));
      }
    }
  }
  return out;
}

function planBase(input: Omit<DiskEditInput, 'ctx' | 'write' | 'scratch'>, maximums?: Map<number, number>) {
  return {
    table: input.table,
    regions: input.regions,
    targetSize: input.targetSize,
    edit: input.edit,
    support: resizeSupport,
    sectorBySector: input.sectorBySector,
    target: input.targetPath,
    maximums,
  };
}

function lowerBounds(input: Omit<DiskEditInput, 'ctx' | 'write' | 'scratch'>): Map<number, number> {
  const estimates = new Map<number, number>();
  for (const r of input.regions) {
    if (r.kind !== 'partition' || r.partition === undefined || r.usedMethod !== 'allocation') continue;
    if (!input.sectorBySector && resizeSupport(r.fs).shrink) estimates.set(r.partition, minimumLowerBound(r));
  }
  return estimates;
}

/**
 * The plan without measuring anything (for the confirmation shown before a restore): shrunk sizes
 * come from lower bounds of the minimums and are final only once the restore measured them.
 */
export async function previewDiskEdit(
  input: Omit<DiskEditInput, 'ctx' | 'write' | 'scratch'>,
): Promise<LayoutPlan> {
  const { edit } = input;
  const grows = edit.mode === 'fill' || edit.mode === 'layout';
  const base = planBase(input, grows ? await growLimits(input.regions, input.readRegion) : undefined);
  if (edit.mode !== 'shrink' && edit.mode !== 'layout') return planLayout(base);
  return planLayout({ ...base, minimums: lowerBounds(input), estimated: true });
}

/**
 * Plans the layout; for shrinking, measures the minimum of each filesystem the plan shrinks (on
 * scratch copies) and plans again until every shrunk one is measured, then shrinks the copies.
 * Nothing is written to the target.
 */
export async function planDiskEdit(input: DiskEditInput): Promise<DiskEdit> {
  const { ctx, edit } = input;
  const grows = edit.mode === 'fill' || edit.mode === 'layout';
  const base = planBase(input, grows ? await growLimits(input.regions, input.readRegion) : undefined);
  const copies = new Map<number, RegionCopy>();
  if (isEditing(edit)) {
    ctx.emit({ type: 'phase', phase: 'analyse', message: `Planning the partition layout (${edit.mode})` });
  }
  if (edit.mode !== 'shrink' && edit.mode !== 'layout') {
    const plan = planLayout(base);
    logPlan(ctx, plan, isEditing(edit));
    return { plan, copies };
  }
  const regionOf = (partition: number) =>
    input.regions.find((r) => r.kind === 'partition' && r.partition === partition);
  const estimates = lowerBounds(input);
  // Refuses at once (with "at least … missing") when even the lower bounds do not fit.
  let plan = planLayout({ ...base, minimums: estimates, estimated: true });
  const measured = new Map<number, number>();
  try {
    for (let round = 0; round <= input.regions.length; round++) {
      const toMeasure = plan.partitions.filter((p) => p.action === 'shrink' && !measured.has(p.partition));
      if (toMeasure.length === 0) break;
      const regions = toMeasure.map((p) => regionOf(p.partition)!);
      const bytes = regions.reduce((n, r) => n + (r.usedBytes ?? r.size), 0);
      const largest = Math.max(...regions.map((r) => r.usedBytes ?? r.size));
      // The copies, plus what a tool may move inside the largest one while shrinking it.
      const scratch = await input.scratch();
      await scratch.reserve(bytes + (round === 0 ? largest : 0), `${regions.length} partition(s)`);
      for (const r of regions) {
        const copy = new RegionCopy(r, input.write, ctx, scratch);
        copies.set(r.id, copy);
        measured.set(r.partition!, await copy.minimum(ctx.signal));
      }
      // Measured minimums where known, lower bounds for the rest (which the next round measures if shrunk).
      const mins = new Map([...estimates, ...measured]);
      const estimated = [...estimates.keys()].some((n) => !measured.has(n));
      plan = planLayout({ ...base, minimums: mins, estimated });
    }
    if (plan.partitions.some((p) => p.action === 'shrink' && !measured.has(p.partition)))
      throw new RescueError('E_INTERNAL', 'a partition would be shrunk unmeasured', 'Report it.');
    logPlan(ctx, plan, true);
    for (const p of plan.partitions) {
      if (p.action !== 'shrink') continue;
      await copies.get(p.regionId!)!.shrink(p.fsSize, ctx.signal);
    }
    // Copies measured but not shrunk in the end are written from the image as usual.
    for (const [id, copy] of copies) {
      if (!copy.shrunk) {
        await copy.close();
        copies.delete(id);
      }
    }
    return { plan, copies };
  } catch (e) {
    for (const copy of copies.values()) await copy.close();
    throw e;
  }
}

function logPlan(ctx: JobContext, plan: LayoutPlan, editing: boolean): void {
  if (!editing) {
    for (const n of plan.notes) log(ctx, n);
    return;
  }
  for (const line of describePlan(plan)) log(ctx, line);
}

/**
 * Writes every planned partition's data to the target: from the image at its new start, or the
 * shrunk scratch copy; then grows filesystems (fill) and updates the hidden-sectors field of moved
 * NTFS/FAT/exFAT boot sectors. Returns bytes written.
 */
export async function writePlannedPartitions(
  edit: DiskEdit,
  target: FileSource,
  targetPath: string,
  write: RegionWriter,
  ctx: JobContext,
  regions: readonly ManifestRegion[],
): Promise<number> {
  const { plan, copies } = edit;
  const byId = new Map(regions.map((r) => [r.id, r]));
  const withData = plan.partitions.filter((p) => p.regionId !== undefined && byId.has(p.regionId));
  ctx.emit({ type: 'phase', phase: 'restore', message: `Restoring ${withData.length} partition(s)` });
  let written = await write(
    target,
    withData
      .filter((p) => !copies.has(p.regionId!))
      .map((p) => ({ region: byId.get(p.regionId!)!, at: p.newStart })),
    'restore',
  );
  for (const p of withData) {
    const copy = copies.get(p.regionId!);
    if (copy) written += await copy.writeTo(target, p.newStart, p.newSize, ctx.signal);
  }
  await target.sync();
  await finishPartitions(target, withData, byId, targetPath, plan.table.sectorSize, ctx);
  return written;
}

/** Grow (fill) and hidden sectors (moved), on the target, after its data is written and synced. */
async function finishPartitions(
  target: FileSource,
  parts: PlannedPartition[],
  byId: Map<number, ManifestRegion>,
  targetPath: string,
  sectorSize: number,
  ctx: JobContext,
): Promise<void> {
  for (const p of parts) {
    await finishOne(target, targetPath, byId.get(p.regionId!)!, ctx, {
      start: p.newStart,
      size: p.newSize,
      sectorSize,
      moved: p.newStart !== p.oldStart,
      changed: p.action !== 'none' || p.newSize !== p.oldSize,
      grow: p.action === 'grow' ? { from: p.oldFsSize, to: p.fsSize } : undefined,
    });
  }
}

/**
 * After a filesystem's data is on the target: the partition start in its boot sector (moved
 * NTFS/FAT/exFAT) first — so that the copies a resize tool makes of the boot sector carry it —,
 * then growing, then NTFS's backup boot sector in the partition's last sector.
 */
async function finishOne(
  target: FileSource,
  targetPath: string,
  r: ManifestRegion,
  ctx: JobContext,
  p: {
    start: number;
    size: number;
    sectorSize: number;
    moved: boolean;
    /** Moved, resized or in a partition of another size: NTFS's last-sector copy is checked. */
    changed: boolean;
    grow?: { from: number; to: number };
  },
): Promise<void> {
  const what = `partition ${r.partition ?? ''} (${fsName(r)})`;
  const t = { path: targetPath, offset: p.start, size: p.size };
  const known = r.usedMethod === 'allocation' && r.fs !== undefined;
  if (p.moved && known && HIDDEN_SECTORS_TYPES.has(r.fs!.type)) {
    await setPartitionStart(t, r.fs!, p.start, p.sectorSize, { log: (line) => log(ctx, line) });
    log(ctx, `${what}: boot sector updated for its new start`);
  }
  if (p.grow) {
    ctx.emit({
      type: 'phase',
      phase: 'grow',
      message: `Growing ${what} from ${formatSize(p.grow.from)} to ${formatSize(p.grow.to)}`,
    });
    await resizeFilesystem(t, r.fs!, p.grow.to, {
      signal: ctx.signal,
      log: (line) => log(ctx, `${what}: ${line}`),
    });
  }
  if (p.changed && known && r.fs!.type === 'ntfs') await mirrorNtfsBootSector(target, p.start, p.size);
}

/**
 * NTFS keeps a copy of its boot sector after the volume's last sector; Windows, chkdsk and
 * ntfs-3g look for it in the partition's last sector. When the volume ends earlier (a size in
 * whole clusters, a partition grown by alignment), that sector gets the copy as well: it lies
 * outside the volume, so nothing of the filesystem is overwritten.
 */
export async function mirrorNtfsBootSector(target: FileSource, start: number, size: number): Promise<void> {
  const boot = await target.read(start, 512);
  if (boot.toString('latin1', 3, 11) !== 'NTFS    ') return;
  const bps = boot.readUInt16LE(0x0b);
  if (!(bps >= 512 && bps <= 4096 && (bps & (bps - 1)) === 0) || size % bps !== 0) return;
  const volumeSectors = Number(boot.readBigUInt64LE(0x28));
  const last = size / bps - 1;
  if (last < volumeSectors) return;
  const full = await target.read(start, bps);
  const there = await target.read(start + last * bps, bps);
  if (!there.equals(full)) {
    await target.write(start + last * bps, full);
    await target.sync();
  }
}

// ---------------------------------------------------------------------------------------------
// One partition into a given room

export interface FitResult {
  copy: RegionCopy;
  /** Bytes the filesystem will span. */
  fsSize: number;
  action: 'none' | 'grow' | 'shrink';
}

/**
 * Decides how one filesystem goes into `room` bytes: as it is (it fits), shrunk on scratch
 * (--shrink, when its minimum fits), grown afterwards (--fill). Refusals come from here, before
 * the target is touched. `tooSmall` words the refusal when shrinking was not asked for.
 */
export async function fitRegion(
  region: ManifestRegion,
  room: number,
  opts: {
    edit: EditOptions | undefined;
    sectorBySector: boolean;
    sectorSize: number;
    scratch: () => Promise<ScratchSpace>;
    write: RegionWriter;
    ctx: JobContext;
    where: string;
    tooSmall: (need: number) => RescueError;
  },
): Promise<FitResult> {
  const need = fsSpan(region, opts.sectorBySector);
  const ability =
    region.usedMethod === 'allocation' && !opts.sectorBySector ? resizeSupport(region.fs) : undefined;
  const fitted = alignDown(room, opts.sectorSize);
  const mode = opts.edit?.mode;
  if (need <= room) {
    const copy = new RegionCopy(region, opts.write, opts.ctx);
    if (mode === 'fill' && fitted > need) {
      if (ability?.grow) return { copy, fsSize: fitted, action: 'grow' };
      log(
        opts.ctx,
        `partition ${region.partition ?? ''} keeps its ${formatSize(need)} filesystem: ${ability?.why ?? 'it cannot be grown'}`,
        'warn',
      );
    }
    return { copy, fsSize: need, action: 'none' };
  }
  if (mode !== 'shrink') throw opts.tooSmall(need);
  if (!ability?.shrink) {
    throw new RescueError(
      'E_SHRINK_DOES_NOT_FIT',
      `Partition ${region.partition ?? ''} (${fsName(region)}, ${formatSize(need)}) does not fit into ${opts.where} (${formatSize(room)}) and cannot be shrunk: ${ability?.why ?? region.reason ?? 'it is copied sector by sector'}; ${need - room} bytes (${formatSize(need - room)}) are missing`,
      'Choose a larger partition or disk.',
      { missing: need - room, have: room, need },
    );
  }
  const lower = minimumLowerBound(region);
  if (lower > fitted) throw shrinkMissing(region, opts.where, room, lower, true);
  const scratch = await opts.scratch();
  const copy = new RegionCopy(region, opts.write, opts.ctx, scratch);
  try {
    const used = region.usedBytes ?? region.size;
    await scratch.reserve(2 * used, `partition ${region.partition ?? ''}`);
    const min = await copy.minimum(opts.ctx.signal);
    if (min > fitted) throw shrinkMissing(region, opts.where, room, min, false);
    log(
      opts.ctx,
      `partition ${region.partition ?? ''} (${fsName(region)}): ${formatSize(need)} → ${formatSize(fitted)}`,
    );
    await copy.shrink(fitted, opts.ctx.signal);
    return { copy, fsSize: fitted, action: 'shrink' };
  } catch (e) {
    await copy.close();
    throw e;
  }
}

function shrinkMissing(region: ManifestRegion, where: string, room: number, min: number, estimated: boolean) {
  const missing = min - room;
  return new RescueError(
    'E_SHRINK_DOES_NOT_FIT',
    `Partition ${region.partition ?? ''} (${fsName(region)}) cannot be shrunk into ${where}: its filesystem needs ${estimated ? 'at least ' : ''}${formatSize(min)}, the room is ${formatSize(room)}; ${estimated ? 'at least ' : ''}${missing} bytes (${formatSize(missing)}) are missing`,
    'Choose a larger partition or disk, or delete data from the source and back it up again.',
    { missing, have: room, need: min, estimated },
  );
}

/** Writes a fitted filesystem at `at` and grows it when planned; updates hidden sectors when `partitionStart` is given. */
export async function writeFitted(
  fit: FitResult,
  target: FileSource,
  targetPath: string,
  at: number,
  room: number,
  ctx: JobContext,
  partitionStart?: { start: number; sectorSize: number; moved: boolean },
): Promise<number> {
  const written = await fit.copy.writeTo(target, at, room, ctx.signal);
  await target.sync();
  await finishOne(target, targetPath, fit.copy.region, ctx, {
    start: at,
    size: room,
    sectorSize: partitionStart?.sectorSize ?? target.logicalSectorSize,
    moved: !!partitionStart?.moved,
    changed: !!partitionStart?.moved || fit.action !== 'none' || room !== fit.copy.region.size,
    grow: fit.action === 'grow' ? { from: fit.copy.need, to: fit.fsSize } : undefined,
  });
  return written;
}
