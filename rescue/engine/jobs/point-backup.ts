/**
 * Incremental and differential backups (manual 2.9): a new point of an existing chain that stores
 * only the windows whose data changed — since the last point (incremental) or since the full
 * (differential) — and refers to the earlier point for every window that did not. The source is
 * found from the chain's manifest (or --source) and recognised by its identity.
 */
import { promises as fsp } from 'node:fs';
import { basename } from 'node:path';
import { FileSource } from '../devices/source.ts';
import { isRescueError, RescueError } from '../errors.ts';
import { totalBytes } from '../filesystems/extents.ts';
import { DAMAGE } from '../image/check.ts';
import {
  BackupChain,
  type ChainPoint,
  decodeUsedMap,
  ENTRY_FLAGS,
  IMAGE_EXTENSION,
  type ImageReader,
  type IndexEntry,
  keepPreviousLayout,
  type ManifestDisk,
  makePatch,
  validateComment,
} from '../image/index.ts';
import { ImageWriter } from '../image/writer.ts';
import { readPartitionTable } from '../partitions/table.ts';
import type { PartitionTable } from '../partitions/types.ts';
import {
  type BackupResult,
  checkNewImage,
  completeImage,
  copyRegions,
  type DeltaMaker,
  type ReuseLookup,
} from './backup.ts';
import type { JobContext } from './job.ts';
import { type PlannedRegion, planDiskRegions } from './regions.ts';
import { examineSource, manifestDisk, type SourceDisk } from './sources.ts';

export interface PointBackupRequest {
  type: 'incremental' | 'differential';
  /** Any file of the chain. */
  image: string;
  /** Source disks in the order of the image's disks, when their paths changed. */
  sources?: string[];
  password?: string;
  /** Back up a disk that does not look like the chain's source anyway. */
  force?: boolean;
  comment?: string;
  check?: boolean;
  allowMounted?: boolean;
  tool: string;
}

export interface PointBackupResult extends BackupResult {
  type: 'incremental' | 'differential';
  sequence: number;
  /** The point it builds on. */
  base: { sequence: number; type: string; path: string };
  /** Used bytes found unchanged and referenced instead of stored. */
  unchangedBytes: number;
  /** Used bytes stored in this point. */
  changedBytes: number;
  /** Of the changed bytes: those of windows stored as delta records (patches of an earlier point). */
  deltaBytes: number;
}

/** A window is stored as a delta record only when its patch is at most 1/DELTA_WORTH of it. */
const DELTA_WORTH = 4;

/**
 * The record a base point's entry stands on that a new delta record can patch: the entry's own
 * record; a reference's holder's; a delta record's base. Undefined for zero chunks and points that
 * could not be opened.
 */
function plainRecordOf(
  chain: BackupChain,
  pointId: string,
  e: IndexEntry,
): { id: string; reader: ImageReader; entry: IndexEntry } | undefined {
  let id = pointId;
  let entry = e;
  for (let hops = 0; hops < 3; hops++) {
    if (entry.flags & ENTRY_FLAGS.ZERO) return undefined;
    if (!(entry.flags & (ENTRY_FLAGS.OTHER_POINT | ENTRY_FLAGS.DELTA))) {
      const reader = chain.point(id)?.reader;
      return reader ? { id, reader, entry } : undefined;
    }
    const holder = chain.point(entry.pointId)?.reader;
    const j = holder ? holder.chunkNumber(entry) : -1;
    if (!holder || j < 0) return undefined;
    id = entry.pointId;
    entry = holder.entries[j];
  }
  return undefined;
}

/** "NAME-3-incremental" for the third point of the chain whose full is NAME.rimg. */
export function pointFileBase(fullPath: string, sequence: number, type: string): string {
  return `${basename(fullPath, IMAGE_EXTENSION)}-${sequence}-${type}`;
}

/** What differs between the chain's disk and the disk about to be backed up, in words. */
export function identityProblems(
  recorded: ManifestDisk,
  table: PartitionTable,
  facts: { serial?: string },
  regions: PlannedRegion[],
): string[] {
  const out: string[] = [];
  const was = recorded.source;
  if (was.serial && facts.serial && was.serial !== facts.serial)
    out.push(`its serial number is ${facts.serial}, the chain's disk had ${was.serial}`);
  const rt = recorded.table;
  if (rt && rt.kind !== table.kind)
    out.push(
      `it has a ${table.kind.toUpperCase()} partition table, the chain's disk had ${rt.kind.toUpperCase()}`,
    );
  else if (rt?.diskId && table.diskId && rt.diskId.toLowerCase() !== table.diskId.toLowerCase())
    out.push(`its disk identifier is ${table.diskId}, the chain's disk had ${rt.diskId}`);
  for (const r of recorded.regions) {
    if (r.kind !== 'partition') continue;
    const now = regions.find((x) => x.kind === 'partition' && x.partition === r.partition);
    if (!now) {
      out.push(`it has no partition ${r.partition}`);
      continue;
    }
    const oldUuid = r.fs?.uuid;
    const newUuid = now.fs?.uuid;
    if (oldUuid && newUuid && oldUuid.toLowerCase() !== newUuid.toLowerCase())
      out.push(
        `partition ${r.partition} holds the ${now.fs?.type} filesystem ${newUuid}, the chain's had ${oldUuid}`,
      );
    else if (r.fs?.type && now.fs?.type && r.fs.type !== now.fs.type)
      out.push(`partition ${r.partition} holds ${now.fs.type}, the chain's held ${r.fs.type}`);
  }
  return out;
}

/**
 * Where files were only deleted since the base point, its used ranges are recorded again (see
 * keepPreviousLayout), so those windows can still be referenced instead of stored anew.
 */
function keepPreviousLayouts(regions: PlannedRegion[], recorded: ManifestDisk, windowSize: number): void {
  for (const r of regions) {
    if (r.usedMethod !== 'allocation') continue;
    const was = recorded.regions.find(
      (x) =>
        x.id === r.id &&
        x.kind === r.kind &&
        x.start === r.start &&
        x.size === r.size &&
        x.partition === r.partition,
    );
    if (!was) continue;
    const previous =
      was.usedMap === undefined ? [{ start: 0, length: was.size }] : decodeUsedMap(was.usedMap, was.size);
    r.extents = keepPreviousLayout(r.extents, previous, windowSize);
    r.usedBytes = totalBytes(r.extents);
  }
}

function baseOf(chain: BackupChain, type: PointBackupRequest['type']): ChainPoint & { reader: ImageReader } {
  const base = type === 'differential' ? chain.full : chain.latest;
  if (!base) {
    throw new RescueError(
      'E_POINT_UNUSABLE',
      `The backup chain of ${chain.named.path} has no full backup`,
      'Make a new full backup (`rescue backup disk|partition|system`).',
    );
  }
  const s = chain.status(base);
  if (!s.usable || !base.reader) {
    throw new RescueError(
      'E_POINT_UNUSABLE',
      `A ${type} backup builds on point ${base.sequence} (${base.type}) of ${basename(chain.named.path)}, which cannot be used: ${s.why}`,
      'Make a new full backup instead, or put the missing files of the chain back in the folder.',
    );
  }
  return base as ChainPoint & { reader: ImageReader };
}

export async function runPointBackup(req: PointBackupRequest, ctx: JobContext): Promise<PointBackupResult> {
  const t0 = performance.now();
  validateComment(req.comment);
  const chain = await BackupChain.open(req.image, { password: req.password });
  const disks: SourceDisk[] = [];
  try {
    const base = baseOf(chain, req.type);
    const m = base.reader.manifest;
    const full = chain.full!;
    if (req.sources && req.sources.length > m.disks.length) {
      throw new RescueError(
        'E_BAD_SOURCE',
        `The chain's images hold ${m.disks.length} disk(s); ${req.sources.length} sources were given`,
        'Give one --source per disk of the image, in the order `rescue info` lists them.',
      );
    }
    const warnings: string[] = [];
    // A point has the chain's options: encrypted exactly when the full is.
    if (req.password !== undefined && !m.options.encrypted)
      warnings.push(
        'the backup chain is not encrypted, so the new point is not either (the password was not used)',
      );
    const password = m.options.encrypted ? req.password : undefined;
    ctx.emit({
      type: 'phase',
      phase: 'analyse',
      message: `${req.type} backup on top of point ${base.sequence} (${base.type}): reading the source`,
    });
    let nextRegion = 0;
    for (const [index, recorded] of m.disks.entries()) {
      const path = req.sources?.[index] ?? recorded.source.path;
      if (!(await fsp.stat(path).catch(() => undefined))) {
        throw new RescueError(
          'E_SOURCE_NOT_FOUND',
          `The chain's source disk ${path} is not there`,
          'If the disk has another name now, give it with --source DISK (`rescue list` shows the disks).',
        );
      }
      const partitions =
        m.kind === 'disk'
          ? undefined
          : recorded.regions.filter((r) => r.kind === 'partition').map((r) => r.partition!);
      const { problems, facts } = await examineSource(path, partitions, !!req.allowMounted);
      warnings.push(...problems);
      const src = await FileSource.open(path);
      const disk: SourceDisk = {
        index,
        spec: { path, partitions },
        src,
        table: await readPartitionTable(src),
        regions: [],
        facts,
      };
      disks.push(disk);
      disk.regions = await planDiskRegions(src, disk.table, {
        diskIndex: index,
        firstRegionId: nextRegion,
        partitions,
        sectorBySector: m.options.sectorBySector,
        layout: m.kind !== 'partition',
        signal: ctx.signal,
      });
      nextRegion += disk.regions.length;
      keepPreviousLayouts(disk.regions, recorded, m.options.window);
      const differs = identityProblems(recorded, disk.table, facts, disk.regions);
      if (differs.length > 0) {
        if (!req.force) {
          throw new RescueError(
            'E_SOURCE_MISMATCH',
            `${path} does not look like the disk this backup chain was made of: ${differs.join('; ')}`,
            'Give the right disk with --source DISK, or make a new full backup of this one. (--force adds it to the chain anyway; only the changed data is stored either way.)',
            { differences: differs },
          );
        }
        warnings.push(...differs.map((d) => `${path}: ${d} (forced)`));
      }
    }

    const sequence = chain.latest.sequence + 1;
    const writer = await ImageWriter.create({
      dir: chain.dir,
      name: pointFileBase(full.path, sequence, req.type),
      compression: m.options.compression,
      password,
      splitBytes: m.options.split ?? undefined,
      windowSize: m.options.window,
      point: {
        type: req.type,
        parentId: Buffer.from(base.id, 'hex'),
        chainId: Buffer.from(chain.chainId, 'hex'),
        sequence,
      },
      tool: req.tool,
    });
    const regions = disks.flatMap((d) => d.regions);
    const total = regions.reduce((n, r) => n + r.usedBytes, 0);
    const known = new Map<string, IndexEntry>();
    for (const e of base.reader.entries) known.set(`${e.regionId}:${e.windowStart}`, e);
    let unchangedBytes = 0;
    const reuse: ReuseLookup = (regionId, windowStart, rawLength, sha256) => {
      const e = known.get(`${regionId}:${windowStart}`);
      if (!e || e.rawLength !== rawLength || !e.sha256.equals(sha256)) return undefined;
      unchangedBytes += rawLength;
      // A window that was and is all zeros is unchanged, but costs nothing to store again.
      if (e.flags & ENTRY_FLAGS.ZERO) return undefined;
      // A reference names the point holding the record (a delta record's own point, too).
      const holder = e.flags & ENTRY_FLAGS.OTHER_POINT ? e.pointId : base.id;
      return { ...e, flags: e.flags | ENTRY_FLAGS.OTHER_POINT, pointId: holder };
    };
    let deltaBytes = 0;
    let baseUnreadable = false;
    const delta: DeltaMaker = async (regionId, windowStart, raw, sha256, extents) => {
      const e = known.get(`${regionId}:${windowStart}`);
      const plain = e && plainRecordOf(chain, base.id, e);
      if (!plain) return undefined;
      let baseRaw: Buffer;
      try {
        baseRaw = await plain.reader.readChunk(plain.entry);
      } catch (err) {
        // A damaged base record: this window is stored whole, so the new point does not need it.
        if (!isRescueError(err) || !DAMAGE.has(err.code)) throw err;
        baseUnreadable = true;
        return undefined;
      }
      const W = writer.windowSize;
      const pieces = plain.reader.region(regionId)?.layout.pieces(windowStart, windowStart + W);
      if (!pieces) return undefined;
      const patch = makePatch(
        { raw: baseRaw, pieces: [...pieces] },
        raw,
        extents,
        windowStart,
        W,
        Math.floor(raw.length / DELTA_WORTH),
      );
      if (!patch) return undefined;
      deltaBytes += raw.length;
      return writer.codec.encodePatch(regionId, windowStart, raw.length, sha256, patch, plain.id);
    };
    const finished = await completeImage(writer, ctx, t0, total, {
      message: `Comparing ${total} bytes with point ${base.sequence}`,
      copy: (meter) => copyRegions(disks, writer, meter, ctx.signal, reuse, delta),
      manifest: () => ({
        tool: req.tool,
        kind: m.kind,
        name: m.name,
        comment: req.comment ?? '',
        options: { sectorBySector: m.options.sectorBySector },
        disks: disks.map((d) => manifestDisk(d)),
      }),
    });
    if (baseUnreadable)
      warnings.push(
        `an earlier point of the chain has a damaged chunk; the windows it held were stored whole in the new point (run rescue check ${basename(full.path)})`,
      );
    if (req.check) await checkNewImage(finished.firstFile, password, ctx);
    return {
      imageId: writer.imageId.toString('hex'),
      firstFile: finished.firstFile,
      files: finished.files,
      usedBytes: total,
      storedBytes: finished.storedBytes,
      seconds: (performance.now() - t0) / 1000,
      regions: regions.length,
      warnings,
      type: req.type,
      sequence,
      base: { sequence: base.sequence, type: base.type, path: base.path },
      unchangedBytes,
      changedBytes: total - unchangedBytes,
      deltaBytes,
    };
  } finally {
    for (const d of disks) await d.src.close().catch(() => {});
    await chain.close();
  }
}
