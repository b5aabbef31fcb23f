/**
 * Restore jobs. Four shapes, all through the same verified chunk path:
 *  - a whole disk (or system) image onto a disk or image file of the same or larger size: the
 *    lead-in (boot code, the gap after the MBR) is written back, the partition table is rewritten
 *    for the target's size (the GPT backup goes to the real end), then every partition's used data;
 *  - one partition of an image onto a plain target (the target *is* the partition: filesystem at 0);
 *  - one partition into partition M of a disk;
 *  - one partition into unallocated space of a disk (a new partition is made there).
 * Safety first: the image is opened (password checked) and every refusal — target in use, target
 * holding the image, target too small — happens before the first byte is written.
 */
import { promises as fsp } from 'node:fs';
import { assertNotInUse, deviceUsage } from '../devices/discovery.ts';
import { FileSource } from '../devices/source.ts';
import { splitDevNumber } from '../devices/sysfs.ts';
import { RescueError } from '../errors.ts';
import type { Extent } from '../filesystems/extents.ts';
import {
  BackupChain,
  type ChainPoint,
  decodeUsedMap,
  type IndexEntry,
  type Manifest,
  type ManifestDisk,
  type ManifestRegion,
  UsedLayout,
} from '../image/index.ts';
import { isUrl } from '../image/storage.ts';
import { randomGuid } from '../partitions/guid.ts';
import { readPartitionTable } from '../partitions/table.ts';
import type { Partition, PartitionTable } from '../partitions/types.ts';
import { applyDiskWrites, planPartitionTableWrite } from '../partitions/write.ts';
import {
  assertEditApplicable,
  type DiskEdit,
  fitRegion,
  isEditing,
  lazyScratch,
  planDiskEdit,
  previewDiskEdit,
  type RegionWriter,
  writeFitted,
  writePlannedPartitions,
} from '../resize/edit.ts';
import { describePlan, type EditOptions, newIdsWarnings, type PlannedPartition } from '../resize/layout.ts';
import { type JobContext, ProgressMeter } from './job.ts';
import { storageOverlap } from './storage-overlap.ts';

/** Bytes of chunks read and verified ahead of the writes. */
const IN_FLIGHT_BYTES = 24 * 1024 * 1024;
const MiB = 1024 * 1024;

export interface RestoreRequest {
  image: string;
  password?: string;
  /** Which point of the image's backup chain: its number, 'latest', or (undefined) the image's own. */
  point?: number | 'latest';
  /** Disk, partition device or image file. */
  target: string;
  /** Restore into this partition of `target` (DISK:M). */
  targetPartition?: number;
  /** Restore into unallocated space of `target` (a new partition). */
  toFree?: boolean;
  /** Which disk of a multi-disk image (0-based). */
  disk?: number;
  /** Which partition of the image (its number on the source disk). */
  partition?: number;
  /** Write every byte of every region, unused ones as zeros; the target must not be smaller than the source. */
  sectorBySector?: boolean;
  /** Lay a GPT disk image out as MBR (at most 4 partitions). */
  tableKind?: 'mbr' | 'gpt';
  /** Edit partitions (manual 5.7): copy (default), fill, shrink, manual layout; align; new ids. */
  edit?: EditOptions;
  /** Only plan: return the layout a disk restore would produce (`plan`), write nothing. */
  preview?: boolean;
}

export interface RestoreResult {
  target: string;
  mode: 'disk' | 'partition' | 'into-partition' | 'free-space';
  bytesWritten: number;
  seconds: number;
  partition?: number;
  warnings: string[];
  /** What edit-partitions did (or, for a preview, would do), one line per partition, then notes. */
  plan?: string[];
  /** Edit partitions: where each partition went and what was done to its filesystem (disk restores). */
  layout?: PlannedPartition[];
}

/**
 * What a restore reads from: an opened image point, or (clone) a live source disk presented the
 * same way — a manifest, one index entry per window that holds used bytes, and verified raw bytes.
 */
export interface RestoreSource {
  readonly manifest: Manifest;
  readonly entries: IndexEntry[];
  readonly windowSize: number;
  /** Files and devices the restore reads from: never a target. */
  readonly files: string[];
  /** A short description for messages ("the image …", "the source disk …"). */
  readonly path: string;
  /** A disk being cloned (not an image): a target reaching its bytes is refused as E_TARGET_IS_SOURCE. */
  readonly live?: boolean;
  readChunk(entry: IndexEntry): Promise<Buffer>;
  /** Told when a chunk from readChunk has been written and is not used any more (buffer reuse). */
  release?(chunk: Buffer): void;
  readRegion(regionId: number, offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/** A disk of the manifest with its table made explicit (an image may record none). */
export type RestoreDisk = ManifestDisk & { table: PartitionTable };

interface Target {
  path: string;
  src: FileSource;
  created: boolean;
  /** Run when the restore ends, before the target is closed (removes scratch files). */
  onClose?: () => Promise<void>;
}

export function manifestDisks(reader: RestoreSource): RestoreDisk[] {
  return reader.manifest.disks.map((d) => ({
    ...d,
    table: d.table ?? { kind: 'none', sectorSize: d.source.sectorSize, partitions: [], findings: [] },
  }));
}

/** A region's used extents; a region without a used map is used throughout. */
function usedExtents(r: ManifestRegion): Extent[] {
  return r.usedMap === undefined ? [{ start: 0, length: r.size }] : decodeUsedMap(r.usedMap, r.size);
}

function pickDisk(reader: RestoreSource, req: RestoreRequest): RestoreDisk {
  const disks = manifestDisks(reader);
  if (req.disk !== undefined) {
    const d = disks.find((x) => x.index === req.disk);
    if (!d) {
      throw new RescueError(
        'E_NO_SUCH_DISK',
        `The image holds ${disks.length} disk(s); there is no disk ${req.disk}`,
        '`rescue info IMAGE` lists the disks of an image.',
      );
    }
    return d;
  }
  if (disks.length > 1 && req.partition === undefined) {
    throw new RescueError(
      'E_CHOOSE_DISK',
      `The image holds ${disks.length} disks; one is restored at a time`,
      'Choose one with --disk N (`rescue info IMAGE` lists them).',
    );
  }
  if (req.partition !== undefined && disks.length > 1) {
    const withPart = disks.filter((d) => d.regions.some((r) => r.partition === req.partition));
    if (withPart.length === 1) return withPart[0];
    throw new RescueError(
      'E_CHOOSE_DISK',
      `Several disks of the image have a partition ${req.partition}`,
      'Add --disk N.',
    );
  }
  return disks[0];
}

function pickPartitionRegion(disk: RestoreDisk, req: RestoreRequest, image: string): ManifestRegion {
  const parts = disk.regions.filter(
    (r) => r.kind === 'partition' || (r.kind === 'disk' && disk.table.kind === 'none'),
  );
  if (req.partition !== undefined) {
    const r = parts.find((x) => x.partition === req.partition);
    if (!r) {
      throw new RescueError(
        'E_NO_SUCH_PARTITION',
        `${image} holds no partition ${req.partition} (it has: ${parts.map((x) => x.partition ?? 'whole disk').join(', ')})`,
        '`rescue info IMAGE` lists the partitions of an image.',
      );
    }
    return r;
  }
  if (parts.length !== 1) {
    throw new RescueError(
      'E_CHOOSE_PARTITION',
      `${image} holds ${parts.length} partitions; say which one to restore`,
      'Add --partition N (`rescue info IMAGE` lists them).',
    );
  }
  return parts[0];
}

/** Bytes a region needs at its destination: the filesystem's size, or all of it when copied whole. */
export function regionNeed(r: ManifestRegion, sectorBySector: boolean): number {
  if (sectorBySector || r.usedMethod !== 'allocation' || !r.fs?.size) return r.size;
  return Math.min(r.size, r.fs.size);
}

async function openTarget(path: string, createSize: number | undefined): Promise<Target> {
  const st = await fsp.stat(path).catch(() => undefined);
  if (!st) {
    if (createSize === undefined) {
      throw new RescueError(
        'E_NOT_FOUND',
        `${path} does not exist`,
        'Name an existing disk, partition or image file.',
      );
    }
    // A new image file: a virtual disk as large as the source was.
    const h = await fsp.open(path, 'wx');
    await h.truncate(createSize);
    await h.close();
    return { path, src: await FileSource.open(path, { writable: true }), created: true };
  }
  return { path, src: await FileSource.open(path, { writable: true }), created: false };
}

/**
 * Runs `fn` on an open target and closes it; a target file this restore created and could not
 * finish is removed: half a disk is worse than none.
 */
async function usingTarget<T>(target: Target, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (target.created) await fsp.rm(target.path, { force: true });
    throw e;
  } finally {
    await target.onClose?.();
    await target.src.close();
  }
}

/** Whether an image URL's host is this machine (loopback, or one of its own addresses). */
async function servedByThisMachine(url: string): Promise<boolean> {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  const { lookup } = await import('node:dns/promises');
  const { networkInterfaces } = await import('node:os');
  const own = new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((i) => i?.address),
  );
  const addrs = await lookup(host, { all: true }).catch(() => [{ address: host }]);
  return addrs.some((a) => a.address.startsWith('127.') || a.address === '::1' || own.has(a.address));
}

/** Every refusal that must come before the first write. */
async function assertSafeTarget(targetPath: string, reader: RestoreSource): Promise<void> {
  const st = await fsp.stat(targetPath).catch(() => undefined);
  if (!st) return;
  // An image read over HTTP from another machine cannot be on this machine's disks; one this
  // machine serves itself might be, and that cannot be told from here: refused.
  const remote = reader.files.filter(isUrl);
  for (const f of remote) {
    if (await servedByThisMachine(f))
      throw new RescueError(
        'E_TARGET_HOLDS_IMAGE',
        `${f} is served by this machine, perhaps from ${targetPath}`,
        'Restore from the folder the image is in (its path on this machine), not over the network.',
        { source: f, target: targetPath },
      );
  }
  const files = reader.files.filter((f) => !isUrl(f));
  // The same bytes under another name: a device node, a partition of the disk (or the disk of a
  // partition), a loop device over the file or partition.
  for (const f of files) {
    const why = await storageOverlap(f, targetPath);
    if (why && reader.live) {
      throw new RescueError(
        'E_TARGET_IS_SOURCE',
        `Cannot clone onto the source: ${why}`,
        'Choose a target disk other than the source (`rescue list` shows the disks).',
        { source: f, target: targetPath },
      );
    }
    if (why) {
      throw new RescueError(
        'E_TARGET_HOLDS_IMAGE',
        `${targetPath} holds the image being restored: ${why}`,
        'Copy the image to another disk first, or restore to another disk.',
      );
    }
  }
  const real = await fsp.realpath(targetPath);
  for (const f of files) {
    if ((await fsp.realpath(f).catch(() => f)) === real) {
      throw new RescueError(
        'E_TARGET_HOLDS_IMAGE',
        `${targetPath} is the image itself`,
        'Choose another target.',
      );
    }
  }
  if (st.isBlockDevice()) {
    const target = splitDevNumber(st.rdev);
    const usage = await deviceUsage(targetPath, { exclusiveCheck: false });
    const devices = [
      usage.disk,
      ...(usage.kind === 'disk' ? (usage.disk?.partitions ?? []) : [usage.partition]),
    ].filter((x) => x !== undefined);
    for (const f of files) {
      const fst = await fsp.stat(f);
      const holder = splitDevNumber(fst.dev);
      const onTarget =
        (holder.major === target.major && holder.minor === target.minor) ||
        (usage.kind === 'disk' && devices.some((d) => d.major === holder.major && d.minor === holder.minor));
      if (onTarget) {
        throw new RescueError(
          'E_TARGET_HOLDS_IMAGE',
          `${targetPath} holds the image being restored (${f})`,
          'Copy the image to another disk (or a network share) first, or restore to another disk.',
        );
      }
    }
  }
  await assertNotInUse(targetPath);
}

/** How a region is named in messages: "partition 3", or "the filesystem" for a disk without a table. */
function regionName(r: ManifestRegion): string {
  return r.partition !== undefined ? `partition ${r.partition}` : 'the filesystem';
}

function tooSmall(target: string, have: number, need: number, what: string): RescueError {
  return new RescueError(
    'E_TARGET_TOO_SMALL',
    `${target} has ${have} bytes; ${what} needs ${need}`,
    'Choose a larger target. (Shrinking onto a smaller disk comes with the edit-partitions options.)',
    { have, need },
  );
}

export async function runRestore(req: RestoreRequest, ctx: JobContext): Promise<RestoreResult> {
  const t0 = performance.now();
  return restoreFrom(await openPointSource(req.image, req.password, req.point), req, ctx, t0);
}

/**
 * The point of a backup chain to restore (default: the point of the file named) as a RestoreSource
 * that reads the chunks it keeps in earlier points; its `files` are every file it needs.
 */
export async function openPointSource(
  image: string,
  password: string | undefined,
  point?: number | 'latest',
): Promise<RestoreSource & { point: ChainPoint }> {
  const chain = await BackupChain.open(image, { password });
  try {
    const p = chain.select(point);
    const r = p.reader;
    return {
      point: p,
      manifest: r.manifest,
      entries: r.entries,
      windowSize: r.windowSize,
      files: chain.filesOf(p),
      path: r.path,
      readChunk: (e) => r.readChunk(e),
      readRegion: (id, offset, length) => r.readRegion(id, offset, length),
      close: () => chain.close(),
    };
  } catch (e) {
    await chain.close();
    throw e;
  }
}

/**
 * The restore proper, from an opened source (image point or live disk); closes it at the end.
 * `req.image` names the source in messages.
 */
export async function restoreFrom(
  reader: RestoreSource,
  req: RestoreRequest,
  ctx: JobContext,
  t0 = performance.now(),
): Promise<RestoreResult> {
  try {
    const disk = pickDisk(reader, req);
    const warnings: string[] = [];
    const partitionMode = req.partition !== undefined || req.targetPartition !== undefined || req.toFree;
    const kind = reader.manifest.kind;
    assertEditApplicable(req.edit, {
      sectorBySector: !!req.sectorBySector,
      partitionRestore: !!partitionMode || kind === 'partition',
    });
    if (req.preview && (partitionMode || kind === 'partition')) {
      return { target: req.target, mode: 'partition', bytesWritten: 0, seconds: 0, warnings: [], plan: [] };
    }
    if (!partitionMode && kind === 'partition') {
      return await restoreRegionToRaw(reader, disk, pickPartitionRegion(disk, req, req.image), req, ctx, t0);
    }
    if (partitionMode && !req.targetPartition && !req.toFree) {
      return await restoreRegionToRaw(reader, disk, pickPartitionRegion(disk, req, req.image), req, ctx, t0);
    }
    if (req.targetPartition !== undefined || req.toFree) {
      return await restoreIntoDisk(reader, disk, pickPartitionRegion(disk, req, req.image), req, ctx, t0);
    }
    return await restoreDisk(reader, disk, req, ctx, t0, warnings);
  } finally {
    await reader.close();
  }
}

/** Writes the used data of `regions` to `target`, each at `at(region)`; verified chunk by chunk. */
async function writeRegions(
  reader: RestoreSource,
  target: FileSource,
  regions: { region: ManifestRegion; at: number }[],
  ctx: JobContext,
  sectorBySector: boolean,
  phase = 'restore',
): Promise<number> {
  const plans = regions.map(({ region, at }) => ({
    region,
    at,
    layout: new UsedLayout(usedExtents(region), region.size),
    entries: reader.entries.filter((e) => e.regionId === region.id),
  }));
  const total = plans.reduce(
    (n, p) => n + (sectorBySector ? p.region.size : (p.region.usedBytes ?? p.region.size)),
    0,
  );
  const meter = new ProgressMeter(ctx, phase, total);
  let written = 0;
  for (const p of plans) {
    const windowSize = reader.windowSize;
    const pending: { entry: IndexEntry; data: Promise<Buffer> }[] = [];
    let zeroedUpTo = 0;
    const zeroFill = async (upTo: number) => {
      // Sector-by-sector restore: the gaps between used ranges become zeros on the target.
      while (sectorBySector && zeroedUpTo < upTo) {
        const n = Math.min(4 * MiB, upTo - zeroedUpTo);
        await target.write(p.at + zeroedUpTo, Buffer.alloc(n));
        zeroedUpTo += n;
        written += n;
        meter.add(n);
      }
    };
    const flush = async () => {
      const { entry, data } = pending.shift()!;
      const raw = await data;
      const runs = p.layout.pieces(entry.windowStart, entry.windowStart + windowSize);
      let o = 0;
      for (const r of runs) {
        await zeroFill(r.start);
        await target.write(p.at + r.start, raw.subarray(o, o + r.length));
        o += r.length;
        written += r.length;
        meter.add(r.length);
        zeroedUpTo = Math.max(zeroedUpTo, r.start + r.length);
      }
      if (o !== raw.length) {
        throw new RescueError(
          'E_CHUNK_CORRUPT',
          `${reader.files[0]}: chunk for region ${p.region.id} at ${entry.windowStart} holds ${raw.length} bytes, its used map ${o}`,
          'The image is damaged: run `rescue check` on it.',
        );
      }
      reader.release?.(raw);
    };
    for (const entry of p.entries) {
      ctx.signal.throwIfAborted();
      const data = reader.readChunk(entry);
      // A chunk read ahead may fail before flush() awaits it: mark the rejection as handled here
      // (flush still sees it, in order) so Node does not kill the process with a stack trace.
      data.catch(() => {});
      pending.push({ entry, data });
      if (pending.length >= Math.max(6, Math.round(IN_FLIGHT_BYTES / windowSize))) await flush();
    }
    try {
      while (pending.length > 0) await flush();
    } finally {
      await Promise.allSettled(pending.map((x) => x.data));
    }
    await zeroFill(p.region.size);
  }
  meter.finish();
  await target.sync();
  return written;
}

async function restoreRegionToRaw(
  reader: RestoreSource,
  _disk: RestoreDisk,
  region: ManifestRegion,
  req: RestoreRequest,
  ctx: JobContext,
  t0: number,
): Promise<RestoreResult> {
  await assertSafeTarget(req.target, reader);
  const target = await openTarget(req.target, region.size);
  const scratch = lazyScratch(req.edit?.scratch);
  target.onClose = scratch.close;
  return usingTarget(target, async () => {
    const fit = await fitRegion(region, target.src.size, {
      edit: req.edit,
      sectorBySector: !!req.sectorBySector,
      sectorSize: target.src.logicalSectorSize,
      scratch: scratch.get,
      write: regionWriter(reader, ctx, !!req.sectorBySector),
      ctx,
      where: req.target,
      tooSmall: (n) => tooSmall(req.target, target.src.size, n, regionName(region)),
    });
    ctx.emit({
      type: 'phase',
      phase: 'restore',
      message: `Restoring ${regionName(region)} to ${req.target}`,
    });
    const bytes = await writeFitted(fit, target.src, req.target, 0, target.src.size, ctx);
    return {
      target: req.target,
      mode: 'partition',
      bytesWritten: bytes,
      seconds: (performance.now() - t0) / 1000,
      warnings: [],
    };
  });
}

/** The restore's verified region writer, for the edit-partitions code. */
function regionWriter(reader: RestoreSource, ctx: JobContext, sbs: boolean): RegionWriter {
  return (target, items, phase) => writeRegions(reader, target, items, ctx, sbs, phase);
}

const GPT_TO_MBR: Record<string, number> = {
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 0xef,
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 0x07,
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 0x83,
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 0x82,
  'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC': 0x27,
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 0x8e,
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 0xfd,
  '21686148-6449-6E6F-744E-656564454649': 0xef,
  'E3C9E316-0B5C-4DB8-817D-F92DF00215AE': 0x0c,
};
const MBR_TO_GPT: Record<string, string> = {
  ef: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  '7': 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  b: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  c: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  e: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  '6': 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  '83': '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  '82': '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  '27': 'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC',
  '8e': 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  fd: 'A19D880F-05FC-4D3B-A006-743F0F84911E',
};

/** A partition entry's type as the other table kind spells it. */
function convertType(type: string, from: PartitionTable['kind'], to: PartitionTable['kind']): string {
  if (from === to) return type;
  if (to === 'mbr') return (GPT_TO_MBR[type.toUpperCase()] ?? 0x83).toString(16);
  return MBR_TO_GPT[type.toLowerCase()] ?? '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
}

/** GPT → MBR for a restore: only primaries, at most four, nothing past 2 TiB. */
export function gptAsMbr(table: PartitionTable, image: string): PartitionTable {
  const parts = table.partitions;
  if (parts.length > 4) {
    throw new RescueError(
      'E_MBR_TOO_MANY_PARTITIONS',
      `${image} is a GPT disk with ${parts.length} partitions, but an MBR disk holds only 4 primary partitions, and primary partitions are not converted to logical ones automatically`,
      'Restore the disk as GPT (the default — leave out --table mbr), or restore the partitions you need one by one.',
      { partitions: parts.length },
    );
  }
  const limit = 2 ** 32 * table.sectorSize;
  const beyond = parts.find((p) => p.start + p.size > limit);
  if (beyond) {
    throw new RescueError(
      'E_MBR_TOO_LARGE',
      `Partition ${beyond.number} of ${image} ends past 2 TiB, which an MBR cannot describe`,
      'Restore the disk as GPT (the default).',
    );
  }
  return {
    kind: 'mbr',
    sectorSize: table.sectorSize,
    diskId: randomDiskSignature(),
    findings: [],
    partitions: parts.map((p, i) => ({
      number: i + 1,
      start: p.start,
      size: p.size,
      type: convertType(p.type, 'gpt', 'mbr'),
      typeName: p.typeName,
      kind: 'primary',
      bootable: p.type.toUpperCase() === 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B' ? false : i === 0,
    })),
  };
}

function randomDiskSignature(): string {
  return Math.floor(Math.random() * 0xffffffff)
    .toString(16)
    .padStart(8, '0');
}

async function restoreDisk(
  reader: RestoreSource,
  disk: RestoreDisk,
  req: RestoreRequest,
  ctx: JobContext,
  t0: number,
  warnings: string[],
): Promise<RestoreResult> {
  const sbs = !!req.sectorBySector;
  let table = disk.table;
  const kind = reader.manifest.kind;
  const regions = disk.regions;
  const dataRegions = regions.filter((r) => r.kind === 'partition' || r.kind === 'disk');
  // A system image holds only the system's partitions: the new table lists just those.
  if (kind === 'system') {
    const keep = new Set(dataRegions.map((r) => r.partition));
    table = { ...table, partitions: table.partitions.filter((p) => keep.has(p.number)) };
  }
  if (req.tableKind === 'mbr' && table.kind === 'gpt') table = gptAsMbr(table, req.image);
  const gptTail = table.kind === 'gpt' ? 33 * table.sectorSize : 0;
  const ends = dataRegions.map((r) => r.start + (r.kind === 'disk' ? r.size : regionNeed(r, sbs)));
  const need = sbs ? disk.source.size : Math.max(0, ...ends) + gptTail;
  const edit: EditOptions = req.edit ?? { mode: 'copy' };
  const diskRegion = regions.find((r) => r.kind === 'disk');
  // Partitions are laid out by the edit-partitions planner (a plain copy by default); an image
  // holding the disk as one region (sector by sector, or no table) only takes new ids from it.
  const planTable = table.kind !== 'none' && (!diskRegion || !!edit.newIds);
  const write = regionWriter(reader, ctx, sbs);
  const readRegion = (id: number, offset: number, length: number) => reader.readRegion(id, offset, length);
  if (req.preview) {
    const size = await existingSize(req.target, disk.source.size);
    const plan = planTable
      ? await previewDiskEdit({
          table,
          regions,
          targetPath: req.target,
          targetSize: size,
          edit,
          sectorBySector: sbs,
          readRegion,
        })
      : undefined;
    const plan0 = plan
      ? describePlan(plan, { estimated: edit.mode === 'shrink' || edit.mode === 'layout' })
      : [];
    return { target: req.target, mode: 'disk', bytesWritten: 0, seconds: 0, warnings: [], plan: plan0 };
  }
  await assertSafeTarget(req.target, reader);
  const target = await openTarget(req.target, disk.source.size);
  const scratch = lazyScratch(edit.scratch);
  target.onClose = scratch.close;
  return usingTarget(target, async () => {
    if (kind === 'system' && !target.created && !req.tableKind) {
      if (isEditing(req.edit)) {
        // Manual 5.2: the original location is restored in place, where nothing can be edited.
        if (keepsOriginalLayout(await readPartitionTable(target.src), disk)) {
          throw new RescueError(
            'E_EDIT_NOT_APPLICABLE',
            `${req.target} still holds this system's partitions where they were: the system is restored into them in place, and partitions are not edited then`,
            'Leave out --fill/--shrink/--layout/--align/--new-ids to restore in place (other partitions of the disk stay), or restore to another disk.',
          );
        }
      } else {
        const inPlace = await restoreSystemInPlace(reader, disk, target.src, ctx, sbs);
        if (inPlace !== undefined) {
          return {
            target: req.target,
            mode: 'disk',
            bytesWritten: inPlace,
            seconds: (performance.now() - t0) / 1000,
            warnings: [
              ...warnings,
              'restored into the partitions of the original layout; the other partitions of the disk were not touched',
            ],
          };
        }
      }
    }
    if (table.kind === 'none' && diskRegion && (edit.mode === 'fill' || edit.mode === 'shrink')) {
      // A disk that is one filesystem (no table): it grows to, or shrinks into, the target.
      const fit = await fitRegion(diskRegion, target.src.size, {
        edit,
        sectorBySector: sbs,
        sectorSize: disk.source.sectorSize,
        scratch: scratch.get,
        write,
        ctx,
        where: req.target,
        tooSmall: (n) => tooSmall(req.target, target.src.size, n, 'this disk image'),
      });
      const bytes = await writeFitted(fit, target.src, req.target, 0, target.src.size, ctx);
      return {
        target: req.target,
        mode: 'disk',
        bytesWritten: bytes,
        seconds: (performance.now() - t0) / 1000,
        warnings,
      };
    }
    let planned: DiskEdit | undefined;
    if (planTable) {
      planned = await planDiskEdit({
        table,
        regions,
        targetPath: req.target,
        targetSize: target.src.size,
        edit,
        sectorBySector: sbs,
        ctx,
        write,
        scratch: scratch.get,
        readRegion,
      });
      table = planned.plan.table;
      // A plain copy only mentions what it had to change (a shortened last partition).
      if (!isEditing(req.edit)) warnings.push(...planned.plan.notes);
      if (edit.newIds) warnings.push(...newIdsWarnings(table.kind));
    }
    if ((!planned || diskRegion) && target.src.size < need)
      throw tooSmall(req.target, target.src.size, need, 'this disk image');
    ctx.emit({
      type: 'phase',
      phase: 'layout',
      message: `Writing boot code and the ${table.kind.toUpperCase()} partition table`,
    });
    let written = 0;
    const leadIn = regions.find((r) => r.kind === 'lead-in');
    if (leadIn) written += await writeRegions(reader, target.src, [{ region: leadIn, at: 0 }], ctx, false);
    if (table.kind !== disk.table.kind && disk.table.kind === 'gpt') {
      // Laid out as MBR now: the old GPT headers and arrays must not survive to confuse tools.
      const ss = table.sectorSize;
      await target.src.write(ss, Buffer.alloc(33 * ss));
      await target.src.write(target.src.size - 33 * ss, Buffer.alloc(33 * ss));
    }
    if (diskRegion)
      written += await writeRegions(reader, target.src, [{ region: diskRegion, at: 0 }], ctx, sbs);
    // A whole-disk copy onto a disk of the same size already holds its own table, byte for byte.
    const tableCopied = diskRegion?.size === target.src.size && table === disk.table;
    if (table.kind !== 'none' && !tableCopied) {
      const writes = await planPartitionTableWrite(target.src, table, { sectorSize: table.sectorSize });
      await applyDiskWrites(target.src, writes);
    }
    if (planned && !diskRegion) {
      written += await writePlannedPartitions(planned, target.src, req.target, write, ctx, regions);
    } else {
      ctx.emit({ type: 'phase', phase: 'restore', message: `Restoring ${dataRegions.length} partition(s)` });
      const parts = dataRegions.filter((r) => r.kind === 'partition');
      written += await writeRegions(
        reader,
        target.src,
        parts.map((r) => ({ region: r, at: r.start })),
        ctx,
        sbs,
      );
    }
    await target.src.sync();
    await rereadPartitions(req.target);
    return {
      target: req.target,
      mode: 'disk',
      bytesWritten: written,
      seconds: (performance.now() - t0) / 1000,
      warnings,
      ...(planned && isEditing(req.edit)
        ? { plan: describePlan(planned.plan), layout: planned.plan.partitions }
        : {}),
    };
  });
}

/** The size of an existing target, or what a new image file would get. */
async function existingSize(path: string, createSize: number): Promise<number> {
  const st = await fsp.stat(path).catch(() => undefined);
  if (!st) return createSize;
  const src = await FileSource.open(path);
  try {
    return src.size;
  } finally {
    await src.close();
  }
}

/** The disk still has the system's partitions exactly where they were (same table kind). */
function keepsOriginalLayout(current: PartitionTable, disk: RestoreDisk): boolean {
  if (current.kind !== disk.table.kind || current.sectorSize !== disk.table.sectorSize) return false;
  const parts = disk.regions.filter((r) => r.kind === 'partition');
  return (
    parts.length > 0 &&
    parts.every((r) =>
      current.partitions.some((p) => p.number === r.partition && p.start === r.start && p.size === r.size),
    )
  );
}

/**
 * A system image going back to its own disk (manual 5.2, "original location"): when the disk
 * still has partitions exactly where the system's were, only those are overwritten, plus the MBR
 * boot code (and on MBR disks the boot loader's gap after the MBR); data partitions next to the
 * system survive. Returns undefined when the layout differs (then the disk is laid out anew).
 */
async function restoreSystemInPlace(
  reader: RestoreSource,
  disk: RestoreDisk,
  target: FileSource,
  ctx: JobContext,
  sbs: boolean,
): Promise<number | undefined> {
  const current = await readPartitionTable(target);
  if (!keepsOriginalLayout(current, disk)) return undefined;
  const parts = disk.regions.filter((r) => r.kind === 'partition');
  ctx.emit({
    type: 'phase',
    phase: 'restore',
    message: 'The disk still has the original layout: restoring the system partitions in place',
  });
  const leadIn = disk.regions.find((r) => r.kind === 'lead-in');
  let written = 0;
  if (leadIn) {
    const raw = await reader.readRegion(leadIn.id, 0, leadIn.size);
    // Boot code only: the disk's own table (and signature) stay as they are.
    await target.write(0, raw.subarray(0, 440));
    written += 440;
    if (disk.table.kind === 'mbr' && leadIn.size > 512) {
      const firstPartition = Math.min(...current.partitions.map((p) => p.start));
      const gapEnd = Math.min(leadIn.size, firstPartition);
      if (gapEnd > 512) {
        await target.write(512, raw.subarray(512, gapEnd));
        written += gapEnd - 512;
      }
    }
  }
  written += await writeRegions(
    reader,
    target,
    parts.map((r) => ({ region: r, at: r.start })),
    ctx,
    sbs,
  );
  return written;
}

/** Asks the kernel to re-read a disk's partition table after we rewrote it (block devices only). */
async function rereadPartitions(path: string): Promise<void> {
  const st = await fsp.stat(path).catch(() => undefined);
  if (!st?.isBlockDevice()) return;
  const { execFile } = await import('node:child_process');
  await new Promise<void>((done) => execFile('partx', ['-u', path], () => done()));
}

/** Gaps of the table, in bytes, 1 MiB aligned, between `first` and `last` (exclusive). */
export function freeGaps(
  partitions: readonly Partition[],
  first: number,
  last: number,
): { start: number; size: number }[] {
  const used = partitions
    .filter((p) => p.kind !== 'logical')
    .map((p) => ({ start: p.start, end: p.start + p.size }))
    .sort((a, b) => a.start - b.start);
  const gaps: { start: number; size: number }[] = [];
  let pos = first;
  for (const u of [...used, { start: last, end: last }]) {
    const s = Math.ceil(pos / MiB) * MiB;
    if (u.start > s) gaps.push({ start: s, size: u.start - s });
    pos = Math.max(pos, u.end);
  }
  return gaps;
}

async function restoreIntoDisk(
  reader: RestoreSource,
  disk: RestoreDisk,
  region: ManifestRegion,
  req: RestoreRequest,
  ctx: JobContext,
  t0: number,
): Promise<RestoreResult> {
  const need = regionNeed(region, !!req.sectorBySector);
  await assertSafeTarget(req.target, reader);
  const target = await openTarget(req.target, undefined);
  const scratch = lazyScratch(req.edit?.scratch);
  target.onClose = scratch.close;
  return usingTarget(target, async () => {
    const table = await readPartitionTable(target.src);
    if (table.kind === 'none') {
      throw new RescueError(
        'E_NO_PARTITION_TABLE',
        `${req.target} has no partition table`,
        'Restore to the whole disk instead (--to DISK), or partition it first.',
      );
    }
    const source = disk.table.partitions.find((p) => p.number === region.partition);
    let at: number;
    let number: number;
    let room: number;
    let newTable: PartitionTable | undefined;
    if (req.targetPartition !== undefined) {
      const p = table.partitions.find((x) => x.number === req.targetPartition);
      if (!p || p.kind === 'extended') {
        throw new RescueError(
          'E_NO_SUCH_PARTITION',
          `${req.target} has no partition ${req.targetPartition}${p ? ' that can hold a filesystem (it is the extended container)' : ''}`,
          '`rescue list` shows the partitions and their numbers.',
        );
      }
      if (p.size < need && req.edit?.mode !== 'shrink')
        throw tooSmall(`${req.target} partition ${p.number}`, p.size, need, regionName(region));
      at = p.start;
      room = p.size;
      number = p.number;
      if (source && p.kind !== 'logical') {
        const type = convertType(source.type, disk.table.kind, table.kind);
        if (type.toUpperCase() !== p.type.toUpperCase()) {
          newTable = {
            ...table,
            partitions: table.partitions.map((x) => (x.number === p.number ? { ...x, type } : x)),
          };
        }
      }
    } else {
      const ss = table.sectorSize;
      const first = table.kind === 'gpt' ? (table.gpt?.firstUsableLba ?? 34) * ss : MiB;
      const last =
        table.kind === 'gpt'
          ? ((table.gpt?.lastUsableLba ?? Math.floor(target.src.size / ss) - 34) + 1) * ss
          : Math.min(target.src.size, 2 ** 32 * ss);
      let size = Math.ceil(need / MiB) * MiB;
      const gaps = freeGaps(table.partitions, first, last);
      let gap = gaps.find((g) => g.size >= size);
      // --shrink: the largest gap, the filesystem shrunk into it; --fill: all of the gap.
      if (!gap && req.edit?.mode === 'shrink' && gaps.length > 0)
        gap = gaps.reduce((a, b) => (b.size > a.size ? b : a));
      if (gap && (req.edit?.mode === 'fill' || gap.size < size)) size = Math.floor(gap.size / MiB) * MiB;
      if (!gap || size <= 0) {
        throw new RescueError(
          'E_NO_FREE_SPACE',
          `${req.target} has no unallocated space of ${size} bytes for ${regionName(region)}`,
          'Free space on that disk (shrink or delete a partition), or restore into an existing partition (--to DISK:M).',
        );
      }
      at = gap.start;
      room = size;
      if (table.kind === 'gpt') {
        const used = new Set(table.partitions.map((p) => p.number));
        number = 1;
        while (used.has(number)) number++;
        if (number > (table.gpt?.entryCount ?? 128)) {
          throw new RescueError(
            'E_NO_FREE_SLOT',
            `${req.target} has no free GPT entry`,
            'Delete a partition first.',
          );
        }
      } else {
        const used = new Set(table.partitions.filter((p) => p.kind !== 'logical').map((p) => p.number));
        number = [1, 2, 3, 4].find((n) => !used.has(n)) ?? 0;
        if (!number) {
          throw new RescueError(
            'E_NO_FREE_SLOT',
            `${req.target} is an MBR disk whose 4 primary partition slots are all taken`,
            'An MBR disk holds only 4 primary partitions and a primary partition is not turned into a logical one automatically: delete a partition, or convert the disk to GPT, then restore.',
          );
        }
      }
      const entry: Partition = {
        number,
        start: at,
        size,
        type: convertType(
          source?.type ?? (table.kind === 'gpt' ? '0FC63DAF-8483-4772-8E79-3D69D8477DE4' : '83'),
          disk.table.kind,
          table.kind,
        ),
        typeName: source?.typeName ?? '',
        kind: table.kind === 'gpt' ? 'gpt' : 'primary',
        ...(table.kind === 'gpt' ? { uuid: randomGuid(), name: source?.name ?? '' } : {}),
      };
      newTable = { ...table, partitions: [...table.partitions, entry].sort((a, b) => a.number - b.number) };
    }
    // Measured and shrunk (on scratch) before the table changes: a refusal leaves the disk as it was.
    const fit = await fitRegion(region, room, {
      edit: req.edit,
      sectorBySector: !!req.sectorBySector,
      sectorSize: table.sectorSize,
      scratch: scratch.get,
      write: regionWriter(reader, ctx, !!req.sectorBySector),
      ctx,
      where: `${req.target} partition ${number}`,
      tooSmall: (n) => tooSmall(`${req.target} partition ${number}`, room, n, regionName(region)),
    });
    if (newTable)
      await applyDiskWrites(
        target.src,
        await planPartitionTableWrite(target.src, newTable, { sectorSize: table.sectorSize }),
      );
    ctx.emit({
      type: 'phase',
      phase: 'restore',
      message: `Restoring ${regionName(region)} into ${req.target} partition ${number}`,
    });
    const bytes = await writeFitted(fit, target.src, req.target, at, room, ctx, {
      start: at,
      sectorSize: table.sectorSize,
      moved: at !== region.start,
    });
    await rereadPartitions(req.target);
    return {
      target: req.target,
      mode: req.toFree ? 'free-space' : 'into-partition',
      partition: number,
      bytesWritten: bytes,
      seconds: (performance.now() - t0) / 1000,
      warnings: [],
    };
  });
}
