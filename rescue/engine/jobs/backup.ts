/**
 * Backup jobs: whole disks (one or several into one image), chosen partitions, or the partitions
 * an installed system needs to boot. Reads only the used blocks (or every sector on request or
 * where a filesystem cannot be read), compresses/encrypts chunks in parallel, writes them in order.
 */
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { type BlockSource, FileSource, SliceSource } from '../devices/source.ts';
import { isRescueError, RescueError } from '../errors.ts';
import {
  type Compression,
  checkImage,
  type EncodedChunk,
  type Extent,
  type FinishResult,
  ImageWriter,
  type IndexEntry,
  isAllZero,
  type ManifestInput,
  sha256Async,
  validateComment,
  validateImageName,
  windowsOf,
  zeroSha256,
} from '../image/index.ts';
import { readPartitionTable } from '../partitions/table.ts';
import { type JobContext, ProgressMeter } from './job.ts';
import { planDiskRegions, readWindow } from './regions.ts';
import { type BackupSourceSpec, examineSource, manifestDisk, type SourceDisk } from './sources.ts';
import { findSystemPartitions } from './system.ts';

/** Bytes of chunks being read/compressed/encrypted at once: enough to keep both cores and the disk busy. */
const IN_FLIGHT_BYTES = 12 * 1024 * 1024;

export type { BackupSourceSpec } from './sources.ts';

export interface BackupRequest {
  kind: 'disk' | 'partition' | 'system';
  sources: BackupSourceSpec[];
  /** Destination folder. */
  destination: string;
  /** Task name: names the folder (when `folder`) and the image files. */
  name?: string;
  /** Create a folder named after the task in the destination (manual 3.8; default on). */
  folder?: boolean;
  compression: Compression;
  password?: string;
  splitBytes?: number;
  sectorBySector?: boolean;
  comment?: string;
  /** Check the image when it is written (manual 3.8). */
  check?: boolean;
  /** Back up partitions that are mounted read-write (their contents may be inconsistent). */
  allowMounted?: boolean;
  tool: string;
}

export interface BackupResult {
  imageId: string;
  firstFile: string;
  files: string[];
  usedBytes: number;
  storedBytes: number;
  seconds: number;
  regions: number;
  warnings: string[];
}

function defaultName(kind: string, now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${kind}-backup-${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())}-${p(now.getHours())}${p(now.getMinutes())}`;
}

export function validateTaskName(name: string): void {
  // It names the image files (the image module's rule) and a folder people browse to.
  validateImageName(name);
  if (
    !name ||
    name.length > 200 ||
    /[/\\\0]/.test(name) ||
    name === '.' ||
    name === '..' ||
    name.startsWith('.')
  ) {
    throw new RescueError(
      'E_BAD_NAME',
      `"${name}" cannot be a task name`,
      'Use 1–200 characters without / or \\, not starting with a dot.',
    );
  }
}

export async function runBackup(req: BackupRequest, ctx: JobContext): Promise<BackupResult> {
  const t0 = performance.now();
  const warnings: string[] = [];
  if (req.sources.length === 0)
    throw new RescueError('E_NO_SOURCE', 'Nothing to back up', 'Name at least one disk or partition.');
  validateComment(req.comment);
  const name = req.name ?? defaultName(req.kind);
  validateTaskName(name);
  const destRoot = resolve(req.destination);
  const destStat = await fsp.stat(destRoot).catch(() => undefined);
  if (!destStat?.isDirectory()) {
    throw new RescueError(
      'E_DESTINATION_NOT_FOUND',
      `The destination folder ${destRoot} does not exist`,
      'Create it, or mount the disk or share that should hold the image.',
    );
  }

  ctx.emit({ type: 'phase', phase: 'analyse', message: 'Reading partition tables and filesystems' });
  const disks: SourceDisk[] = [];
  try {
    let nextRegion = 0;
    for (const [index, spec] of req.sources.entries()) {
      const { problems, facts } = await examineSource(spec.path, spec.partitions, !!req.allowMounted);
      warnings.push(...problems);
      const src = await FileSource.open(spec.path);
      const disk: SourceDisk = {
        index,
        spec,
        src,
        table: await readPartitionTable(src),
        regions: [],
        facts,
      };
      disks.push(disk);
      let partitions = spec.partitions;
      if (req.kind === 'system') {
        const found = await findSystemPartitions(src, disk.table);
        partitions = found.partitions;
        for (const line of found.explanation) ctx.emit({ type: 'log', level: 'info', message: line });
      }
      disk.regions = await planDiskRegions(src, disk.table, {
        diskIndex: index,
        firstRegionId: nextRegion,
        partitions,
        sectorBySector: !!req.sectorBySector,
        layout: req.kind !== 'partition',
        signal: ctx.signal,
        onRegion: (r) => {
          if (r.kind === 'partition' && r.usedMethod === 'sector-by-sector' && !req.sectorBySector) {
            const msg = `${spec.path} partition ${r.partition}: copied sector by sector — ${r.reason}`;
            warnings.push(msg);
            ctx.emit({ type: 'log', level: 'warn', message: msg });
          }
        },
      });
      nextRegion += disk.regions.length;
    }

    const folder = req.folder ?? true;
    const dir = folder ? join(destRoot, name) : destRoot;
    await fsp.mkdir(dir, { recursive: true });
    const writer = await ImageWriter.create({
      dir,
      name,
      compression: req.compression,
      password: req.password,
      splitBytes: req.splitBytes,
      tool: req.tool,
    });
    const regions = disks.flatMap((d) => d.regions);
    const total = regions.reduce((n, r) => n + r.usedBytes, 0);
    const finished = await completeImage(writer, ctx, t0, total, {
      message: `Copying ${total} bytes`,
      copy: (meter) => copyRegions(disks, writer, meter, ctx.signal),
      manifest: () => ({
        tool: req.tool,
        kind: req.kind,
        name,
        comment: req.comment ?? '',
        options: { sectorBySector: !!req.sectorBySector },
        disks: disks.map((d) => manifestDisk(d)),
      }),
    });
    const result: BackupResult = {
      imageId: writer.imageId.toString('hex'),
      firstFile: finished.firstFile,
      files: finished.files,
      usedBytes: total,
      storedBytes: finished.storedBytes,
      seconds: (performance.now() - t0) / 1000,
      regions: regions.length,
      warnings,
    };
    if (req.check) await checkNewImage(finished.firstFile, req.password, ctx);
    return result;
  } finally {
    for (const d of disks) await d.src.close().catch(() => {});
  }
}

/**
 * Fills a new image (`copy`, with a progress meter over `usedBytes`), then writes its index and
 * manifest (stats filled in) and finalises it; on any failure its partial files are removed.
 */
export async function completeImage(
  writer: ImageWriter,
  ctx: JobContext,
  t0: number,
  usedBytes: number,
  job: {
    message: string;
    phase?: string;
    copy: (meter: ProgressMeter) => Promise<void>;
    manifest: () => Omit<ManifestInput, 'format' | 'created' | 'stats'>;
  },
): Promise<FinishResult> {
  const phase = job.phase ?? 'backup';
  try {
    ctx.emit({ type: 'phase', phase, message: job.message });
    const meter = new ProgressMeter(ctx, phase, usedBytes);
    await job.copy(meter);
    meter.finish();
    ctx.emit({ type: 'phase', phase: 'finish', message: 'Writing the index and closing the image' });
    return await writer.finish({
      ...job.manifest(),
      format: 1,
      created: new Date().toISOString(),
      stats: {
        usedBytes,
        storedBytes: writer.bytesWritten,
        chunks: 0,
        seconds: (performance.now() - t0) / 1000,
      },
    });
  } catch (e) {
    await writer.abort().catch(() => {});
    throw e;
  }
}

/** "Check the image after the backup" (manual 3.8): E_CHECK_FAILED unless every chunk verifies. */
export async function checkNewImage(
  file: string,
  password: string | undefined,
  ctx: JobContext,
): Promise<void> {
  ctx.emit({ type: 'phase', phase: 'check', message: `Checking ${file}` });
  const report = await checkImage(file, { password, signal: ctx.signal });
  if (!report.ok) {
    throw new RescueError(
      'E_CHECK_FAILED',
      `The new image ${file} did not pass its check: ${report.points
        .flatMap((p) => p.problems.map((x) => x.message))
        .slice(0, 3)
        .join('; ')}`,
      'The destination may be failing or full of errors: write the image to another disk.',
    );
  }
}

/**
 * Incremental and differential points: the index entry of an earlier point that holds exactly
 * these raw bytes for this window (to be referenced instead of stored), or undefined.
 */
export type ReuseLookup = (
  regionId: number,
  windowStart: number,
  rawLength: number,
  sha256: Buffer,
) => IndexEntry | undefined;

/**
 * Incremental and differential points: a changed window as a delta record (a patch of an earlier
 * point's record for it), or undefined when a whole chunk is better. `extents` are the window's
 * used ranges (region-relative) that `raw` was read from.
 */
export type DeltaMaker = (
  regionId: number,
  windowStart: number,
  raw: Buffer,
  sha256: Buffer,
  extents: readonly Extent[],
) => Promise<EncodedChunk | undefined>;

type Encoded = { chunk: EncodedChunk; rawLength: number } | { reference: IndexEntry; rawLength: number };

/**
 * Reads windows in order, encodes up to IN_FLIGHT_BYTES of them concurrently (zstd and AES run in the
 * thread pool), and appends the results strictly in order.
 */
export async function copyRegions(
  disks: SourceDisk[],
  writer: ImageWriter,
  meter: ProgressMeter,
  signal: AbortSignal,
  reuse?: ReuseLookup,
  delta?: DeltaMaker,
): Promise<void> {
  const pending: Promise<Encoded>[] = [];
  const inFlight = Math.max(3, Math.round(IN_FLIGHT_BYTES / writer.windowSize));
  const drainOne = async () => {
    const item = await pending.shift()!;
    if ('chunk' in item) await writer.append(item.chunk);
    else await writer.appendReference(item.reference);
    meter.add(item.rawLength);
  };
  const encode = async (
    regionId: number,
    windowStart: number,
    raw: Buffer,
    extents: Extent[],
  ): Promise<Encoded> => {
    if (reuse) {
      // Zero windows are asked about too (so the caller can count them unchanged) but never
      // referenced: a zero chunk stores nothing.
      const zero = isAllZero(raw);
      const sha256 = zero ? zeroSha256(raw.length) : await sha256Async(raw);
      const reference = reuse(regionId, windowStart, raw.length, sha256);
      if (reference && !zero) return { reference, rawLength: raw.length };
      const patched = !zero && delta ? await delta(regionId, windowStart, raw, sha256, extents) : undefined;
      if (patched) return { chunk: patched, rawLength: raw.length };
      return {
        chunk: await writer.codec.encode(regionId, windowStart, raw, zero ? undefined : sha256),
        rawLength: raw.length,
      };
    }
    return { chunk: await writer.codec.encode(regionId, windowStart, raw), rawLength: raw.length };
  };
  try {
    for (const d of disks) {
      for (const r of d.regions) {
        const region: BlockSource = new SliceSource(d.src, r.start, r.size, `${d.spec.path}@${r.start}`);
        for (const w of windowsOf(r.extents, writer.windowSize)) {
          signal.throwIfAborted();
          // Reads are not awaited here: up to `inFlight` windows are read and encoded at once, so
          // the disk always has the next reads queued (one read at a time left it idle between
          // them, measured 2× the read floor for an incremental of NTFS).
          const raw = readWindow(region, w).catch((e: unknown) => {
            if (isRescueError(e) && e.code === 'E_READ') {
              // The disk offset that failed (FileSource reports it), not the start of the window.
              const at = typeof e.details?.offset === 'number' ? e.details.offset : r.start + w.windowStart;
              throw new RescueError(
                'E_SOURCE_READ',
                `Cannot read ${d.spec.path} at byte ${at} (${r.kind}${r.partition ? ` ${r.partition}` : ''}): ${e.message}`,
                'The source disk is failing at that spot. Copy it with a tool that skips bad sectors (ddrescue) to a healthy disk, then back up that copy.',
                { offset: at },
              );
            }
            throw e;
          });
          const encoded = raw.then((bytes) => encode(r.id, w.windowStart, bytes, w.extents));
          // Observed now, awaited in order later: a failure must not surface as an unhandled rejection.
          encoded.catch(() => {});
          pending.push(encoded);
          if (pending.length >= inFlight) await drainOne();
        }
      }
    }
    while (pending.length > 0) await drainOne();
  } catch (e) {
    // Let in-flight encodes settle so nothing rejects unobserved.
    await Promise.allSettled(pending);
    throw e;
  }
}
