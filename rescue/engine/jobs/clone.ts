/**
 * Clone jobs (manual ch. 6): a disk, a partition, or the partitions an installed system needs,
 * copied straight onto another disk, partition or unallocated space — no intermediate image.
 *
 * The source disk is presented to the restore as a live RestoreSource: the manifest a backup
 * would have written (regions with their used maps), one index entry per window holding used
 * bytes, and chunks read from the disk on demand. So a clone goes through the very pipeline of a
 * restore: the same refusals before the first write (target in use, target too small, the target
 * being the source under any name), the same layout rules (the GPT backup at the target's end,
 * a system clone laying out just the system's partitions, onto a smaller disk when they fit), the
 * same used-block writes with read-ahead.
 *
 * Verification: an image carries a sha256 per chunk that the restore checks before writing; a live
 * disk carries none, so a clone verifies the other end instead (on by default): the sha256 of every
 * window is taken as it is read from the source, and after the target is flushed its cached pages
 * are dropped and every written byte is read back from the target and compared.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import { FileSource, SliceSource } from '../devices/source.ts';
import { isRescueError, RescueError } from '../errors.ts';
import type { Extent } from '../filesystems/extents.ts';
import { type IndexEntry, type Manifest, UsedLayout, type WindowPlan, windowsOf } from '../image/index.ts';
import { loadFfiRs } from '../native.ts';
import { readPartitionTable } from '../partitions/table.ts';
import type { PartitionTable } from '../partitions/types.ts';
import { serializePartitionTable } from '../partitions/write.ts';
import { isEditing } from '../resize/edit.ts';
import { type JobContext, ProgressMeter } from './job.ts';
import { type PlannedRegion, planDiskRegions } from './regions.ts';
import { type RestoreRequest, type RestoreResult, type RestoreSource, restoreFrom } from './restore.ts';
import { examineSource, manifestDisk, type SourceDisk } from './sources.ts';
import { findSystemPartitions } from './system.ts';

const MiB = 1024 * 1024;
/** Bytes per chunk of the live source: the unit of reading, hashing and verifying. */
const CLONE_WINDOW = 4 * MiB;
/** Windows read back from the target at once while verifying. */
const VERIFY_IN_FLIGHT = 4;

export interface CloneRequest {
  kind: 'disk' | 'partition' | 'system';
  /** Disk (or image file) to clone from; for a partition clone also a partition device or a bare filesystem image. */
  source: string;
  /** Partition number on `source` (partition clones of a disk). */
  sourcePartition?: number;
  /** Disk, partition device or image file; a file that does not exist is created (a new disk image). */
  target: string;
  /** Clone into this partition of `target` (partition clones). */
  targetPartition?: number;
  /** Clone into unallocated space of `target`: a new partition is made there (partition clones). */
  toFree?: boolean;
  /** Copy every byte, used or not (the target must not be smaller than the source). */
  sectorBySector?: boolean;
  /** Clone filesystems that are mounted read-write (their contents may be inconsistent). */
  allowMounted?: boolean;
  /** Read every written byte back from the target and compare it with the source (default on). */
  verify?: boolean;
  /** Edit partitions on the target (manual 6.2/6.3): fill, shrink, layout, align, new ids — as for a restore. */
  edit?: RestoreRequest['edit'];
  /** Only plan: analyse the source and return the layout the clone would produce (`plan`); write nothing. */
  preview?: boolean;
  /** Recorded in the live manifest as the writing tool. */
  tool?: string;
  /** @internal Test seam: runs after the target is written and flushed, before it is verified. */
  beforeVerify?: () => Promise<void>;
}

export interface CloneResult extends RestoreResult {
  source: string;
  kind: CloneRequest['kind'];
  /** Bytes read back from the target and found equal to the source (0 without verification). */
  verifiedBytes: number;
  /** Seconds the verification took (included in `seconds`). */
  verifySeconds: number;
}

/** Where a region of the source landed on the target, and which bytes there the table owns. */
interface Placement {
  region: PlannedRegion;
  at: number;
  /** Disk ranges of the target rewritten by the partition table after the region was copied. */
  mask: Extent[];
}

/**
 * A source disk as a RestoreSource. Chunks are read on demand (the restore asks up to six ahead,
 * so reading the source overlaps writing the target), into window buffers the restore hands back
 * when it has written them; with `hashing`, each chunk's sha256 is taken as it passes and kept for
 * the verification.
 */
class LiveSource implements RestoreSource {
  readonly manifest: Manifest;
  readonly entries: IndexEntry[];
  readonly windowSize = CLONE_WINDOW;
  readonly files: string[];
  readonly path: string;
  readonly live = true;
  readonly disk: SourceDisk;
  private readonly hashing: boolean;
  /** Reads the source; its window buffers come back from the restore when written, and are reused. */
  readonly reader: DiskReader;
  private readonly layouts = new Map<number, UsedLayout>();
  private readonly regions = new Map<number, PlannedRegion>();
  /** sha256 of each window as it was read, by "regionId:windowStart". */
  readonly hashes = new Map<string, Buffer>();

  constructor(
    disk: SourceDisk,
    kind: CloneRequest['kind'],
    opts: { hashing: boolean; tool: string; reader: DiskReader },
  ) {
    this.disk = disk;
    this.hashing = opts.hashing;
    this.reader = opts.reader;
    this.files = [disk.spec.path];
    this.path = `the source disk ${disk.spec.path}`;
    this.entries = [];
    for (const r of disk.regions) {
      this.regions.set(r.id, r);
      this.layouts.set(r.id, new UsedLayout(r.extents, r.size));
      for (const w of windowsOf(r.extents, CLONE_WINDOW)) {
        this.entries.push({
          regionId: r.id,
          flags: 0,
          windowStart: w.windowStart,
          rawLength: w.rawLength,
          storedLength: w.rawLength,
          payloadOffset: 0,
          pointId: '',
          // Filled in as the window is read when verifying: a live disk has no stored hash.
          sha256: Buffer.alloc(0),
        });
      }
    }
    const id = randomBytes(16).toString('hex');
    const usedBytes = disk.regions.reduce((n, r) => n + r.usedBytes, 0);
    this.manifest = {
      format: 1,
      tool: opts.tool,
      created: new Date().toISOString(),
      kind,
      name: `clone of ${disk.spec.path}`,
      comment: '',
      point: { id, type: 'full', parent: null, chain: id, sequence: 1 },
      options: {
        compression: 'none',
        level: 0,
        encrypted: false,
        sectorBySector: disk.regions.every((r) => r.usedMethod === 'sector-by-sector'),
        split: null,
        window: CLONE_WINDOW,
      },
      disks: [manifestDisk(disk)],
      stats: { usedBytes, storedBytes: 0, chunks: this.entries.length, seconds: 0 },
    };
  }

  region(id: number): PlannedRegion {
    const r = this.regions.get(id);
    if (!r) {
      throw new RescueError(
        'E_REGION_NOT_FOUND',
        `The clone of ${this.disk.spec.path} has no region ${id}`,
        'This is a bug; please report it.',
      );
    }
    return r;
  }

  /** The window of a region as the backup would chunk it. */
  plan(regionId: number, windowStart: number): WindowPlan {
    const layout = this.layouts.get(regionId)!;
    const extents = [...layout.pieces(windowStart, windowStart + CLONE_WINDOW)];
    return { windowStart, rawLength: extents.reduce((n, e) => n + e.length, 0), extents };
  }

  slice(regionId: number): SliceSource {
    const r = this.region(regionId);
    return new SliceSource(this.disk.src, r.start, r.size, `${this.disk.spec.path}@${r.start}`);
  }

  /** A window's used bytes as they are on the source now, into `buf`. */
  readRaw(entry: IndexEntry, buf: Buffer): Promise<Buffer> {
    const r = this.region(entry.regionId);
    const where = `${r.kind}${r.partition ? ` ${r.partition}` : ''}`;
    return readWindowInto(
      this.reader,
      buf,
      r.start,
      this.plan(entry.regionId, entry.windowStart),
      (offset, why) =>
        new RescueError(
          'E_SOURCE_READ',
          `Cannot read ${this.disk.spec.path} at byte ${offset} (${where}): ${why}`,
          'The source disk is failing at that spot. Copy it with a tool that skips bad sectors (ddrescue) to a healthy disk first.',
          { offset },
        ),
    );
  }

  async readChunk(entry: IndexEntry): Promise<Buffer> {
    const raw = await this.readRaw(entry, await this.reader.acquire());
    if (this.hashing) {
      // On the main thread, which mostly waits for I/O: WebCrypto in the thread pool would copy
      // every chunk first and take a thread from the reads and writes.
      entry.sha256 = createHash('sha256').update(raw).digest();
      this.hashes.set(`${entry.regionId}:${entry.windowStart}`, entry.sha256);
    }
    return raw;
  }

  release(chunk: Buffer): void {
    this.reader.release(chunk);
  }

  async readRegion(regionId: number, offset: number, length: number): Promise<Buffer> {
    return this.slice(regionId).read(offset, length);
  }

  /** The restore closes its source when it is done; the clone still needs it to verify. */
  async close(): Promise<void> {}
}

/** Offsets and lengths of direct reads are rounded to this (no disk has larger logical sectors). */
const DIRECT_ALIGN = 4096;

type ReadFailure = (offset: number, why: string) => RescueError;

/**
 * Reads of a disk or image file that bypass the page cache when the system allows it (O_DIRECT):
 * a clone reads every used byte once, and filling the page cache with a whole disk only costs
 * (on virtual machines dearly: memory the host must hand over page by page) and evicts everything
 * else. O_DIRECT wants buffers whose address is aligned to the logical sector; JavaScript cannot
 * ask for that, so each buffer is made a little larger and the offset the kernel accepts is
 * found by trying (EINVAL otherwise). Where O_DIRECT is not possible (tmpfs, some FUSE and network
 * filesystems, an odd-sized image file), reads go through the page cache as usual.
 */
class DiskReader {
  readonly path: string;
  private handle: fsp.FileHandle;
  private direct: boolean;
  private readonly free: Buffer[] = [];
  /** The aligned view of each buffer, by its memory: chunks handed out are views into these. */
  private readonly views = new Map<ArrayBufferLike, Buffer>();
  private readonly retired: fsp.FileHandle[] = [];
  private switching: Promise<void> | undefined;

  private constructor(path: string, handle: fsp.FileHandle, direct: boolean) {
    this.path = path;
    this.handle = handle;
    this.direct = direct;
  }

  static async open(path: string): Promise<DiskReader> {
    const st = await fsp.stat(path);
    if (st.isBlockDevice() || (st.isFile() && st.size % DIRECT_ALIGN === 0)) {
      const h = await fsp.open(path, constants.O_RDONLY | constants.O_DIRECT).catch(() => undefined);
      if (h) return new DiskReader(path, h, true);
    }
    return new DiskReader(path, await fsp.open(path, 'r'), false);
  }

  /** True while reads bypass the page cache. */
  get bypassesCache(): boolean {
    return this.direct;
  }

  /** A buffer for up to CLONE_WINDOW bytes (plus the rounding of a direct read). */
  async acquire(): Promise<Buffer> {
    const reused = this.free.pop();
    if (reused) return reused;
    const room = CLONE_WINDOW + 2 * DIRECT_ALIGN;
    const big = Buffer.allocUnsafeSlow(room + DIRECT_ALIGN);
    let view: Buffer = big.subarray(0, room);
    if (this.direct) {
      let found: Buffer | undefined;
      for (let o = 0; o < DIRECT_ALIGN && !found; o += 16) {
        const ok = await this.handle.read(big, o, DIRECT_ALIGN, 0).then(
          () => true,
          () => false,
        );
        if (ok) found = big.subarray(o, o + room);
      }
      if (found) view = found;
      else await this.fallBack();
    }
    this.views.set(big.buffer, view);
    return view;
  }

  /** Takes back a buffer (or a chunk that is a view into one) for reuse. */
  release(chunk: Buffer): void {
    const view = this.views.get(chunk.buffer);
    if (view) this.free.push(view);
  }

  /** Switches to reads through the page cache, once, whoever asks first. */
  private fallBack(): Promise<void> {
    this.switching ??= (async () => {
      this.direct = false;
      // Reads still running on the direct handle finish there; it is closed with the reader.
      this.retired.push(this.handle);
      this.handle = await fsp.open(this.path, 'r');
    })();
    return this.switching;
  }

  /**
   * `length` bytes from `offset` into `buf` (from acquire()); returns the view of `buf` that holds
   * them. A direct read covers the aligned span around them; at the end of the disk it may come
   * back short, as long as it holds what was asked for.
   */
  async read(buf: Buffer, offset: number, length: number, failed: ReadFailure): Promise<Buffer> {
    if (this.switching) await this.switching;
    if (this.direct) {
      const from = Math.floor(offset / DIRECT_ALIGN) * DIRECT_ALIGN;
      const to = Math.ceil((offset + length) / DIRECT_ALIGN) * DIRECT_ALIGN;
      const need = offset + length - from;
      let done = 0;
      try {
        while (done < need) {
          const { bytesRead } = await this.handle.read(buf, done, to - from - done, from + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw failed(from + done, (e as Error).message);
        // The kernel refuses this direct read after all: read through the page cache from now on.
        await this.fallBack();
        return this.read(buf, offset, length, failed);
      }
      if (done < need) throw failed(from + done, 'it ends there (it shrank while in use)');
      return buf.subarray(offset - from, offset - from + length);
    }
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.handle.read(buf, done, length - done, offset + done));
      } catch (e) {
        throw failed(offset + done, (e as Error).message);
      }
      if (n === 0) throw failed(offset + done, 'it ends there (it shrank while in use)');
      done += n;
    }
    return buf.subarray(0, length);
  }

  async close(): Promise<void> {
    await this.switching?.catch(() => {});
    for (const h of this.retired) await h.close().catch(() => {});
    await this.handle.close();
  }
}

/**
 * The used bytes of a window, concatenated: one read of the span from the first used byte to the
 * last (gaps inside a window cost less to read than to seek over), then the pieces moved together
 * in place. `base` is the region's offset on the disk or file.
 */
async function readWindowInto(
  reader: DiskReader,
  buf: Buffer,
  base: number,
  plan: WindowPlan,
  failed: ReadFailure,
): Promise<Buffer> {
  if (plan.extents.length === 0) return buf.subarray(0, 0);
  const first = plan.extents[0].start;
  const last = plan.extents[plan.extents.length - 1];
  const span = await reader.read(buf, base + first, last.start + last.length - first, failed);
  let o = 0;
  for (const e of plan.extents) {
    if (e.start - first !== o) span.copyWithin(o, e.start - first, e.start - first + e.length);
    o += e.length;
  }
  return span.subarray(0, o);
}

function sourceMounted(e: unknown, source: string): unknown {
  if (!isRescueError(e) || e.code !== 'E_SOURCE_MOUNTED') return e;
  const problems = (e.details?.problems as string[] | undefined) ?? [];
  return new RescueError(
    'E_SOURCE_MOUNTED',
    `Cannot clone ${source} consistently: ${problems.join('; ')}`,
    'Unmount it (or remount it read-only) first — from the rescue system nothing needs to be mounted. ' +
      'To take the risk of a torn copy anyway, pass --allow-mounted.',
    e.details,
  );
}

function checkShape(req: CloneRequest): void {
  const bad = (msg: string) =>
    new RescueError('E_CLONE_REQUEST', msg, 'See `rescue help` for the clone forms.');
  if (req.kind !== 'partition') {
    if (req.sourcePartition !== undefined || req.targetPartition !== undefined || req.toFree)
      throw bad(`A ${req.kind} clone takes whole disks, not partitions`);
  }
  if (req.targetPartition !== undefined && req.toFree)
    throw bad('Clone into partition M of the target or into its free space, not both');
}

/** The source disk, examined and planned: which regions a clone copies, with their used maps. */
async function planSource(req: CloneRequest, ctx: JobContext, warnings: string[]): Promise<SourceDisk> {
  if (!(await fsp.stat(req.source).catch(() => undefined))) {
    throw new RescueError(
      'E_NOT_FOUND',
      `${req.source} does not exist`,
      'Name an existing disk, partition or image file (`rescue list` shows the disks).',
    );
  }
  const partitions = req.sourcePartition !== undefined ? [req.sourcePartition] : undefined;
  const { problems, facts } = await examineSource(req.source, partitions, !!req.allowMounted).catch(
    (e: unknown) => {
      throw sourceMounted(e, req.source);
    },
  );
  warnings.push(...problems);
  const src = await FileSource.open(req.source);
  try {
    const table = await readPartitionTable(src);
    const disk: SourceDisk = {
      index: 0,
      spec: { path: req.source, partitions },
      src,
      table,
      regions: [],
      facts,
    };
    const sbs = !!req.sectorBySector;
    let take = partitions;
    if (req.kind === 'system') {
      const found = await findSystemPartitions(src, table);
      take = found.partitions;
      for (const line of found.explanation) ctx.emit({ type: 'log', level: 'info', message: line });
    }
    if (req.kind === 'partition' && req.sourcePartition === undefined && table.kind !== 'none') {
      throw new RescueError(
        'E_CHOOSE_PARTITION',
        `${req.source} has a partition table with ${table.partitions.length} partition(s); say which one to clone`,
        'Name it as SOURCE:N (`rescue list` shows the numbers).',
      );
    }
    // A partition clone of a bare filesystem (a partition device, a filesystem image) takes the
    // whole source as the one region; a disk clone also takes the layout (lead-in, GPT backup).
    const layout = req.kind !== 'partition' || req.sourcePartition === undefined;
    disk.regions = await planDiskRegions(src, table, {
      diskIndex: 0,
      firstRegionId: 0,
      partitions: take,
      sectorBySector: sbs,
      layout,
      signal: ctx.signal,
      onRegion: (r) => {
        if (r.kind === 'partition' && r.usedMethod === 'sector-by-sector' && !sbs) {
          const msg = `${req.source} partition ${r.partition}: copied sector by sector — ${r.reason}`;
          warnings.push(msg);
          ctx.emit({ type: 'log', level: 'warn', message: msg });
        }
      },
    });
    return disk;
  } catch (e) {
    await src.close();
    throw e;
  }
}

export async function runClone(req: CloneRequest, ctx: JobContext): Promise<CloneResult> {
  const t0 = performance.now();
  checkShape(req);
  const verify = req.verify ?? true;
  const warnings: string[] = [];
  ctx.emit({
    type: 'phase',
    phase: 'analyse',
    message: `Reading the partition table and filesystems of ${req.source}`,
  });
  const disk = await planSource(req, ctx, warnings);
  let reader: DiskReader | undefined;
  try {
    reader = await DiskReader.open(req.source);
    const live = new LiveSource(disk, req.kind, {
      hashing: verify && !req.preview && !resizes(req.edit),
      tool: req.tool ?? 'rescue',
      reader,
    });
    const dataRegion = disk.regions.find((r) => r.kind === 'partition' || r.kind === 'disk');
    const restoreReq: RestoreRequest = {
      image: req.source,
      target: req.target,
      targetPartition: req.targetPartition,
      toFree: req.toFree,
      partition: req.kind === 'partition' ? dataRegion?.partition : undefined,
      sectorBySector: !!req.sectorBySector,
      // Naming the table kind lays the target out anew: a system clone never goes "in place" onto
      // a disk that happens to have the same layout (that is for restoring to the original disk).
      tableKind: req.kind !== 'partition' && disk.table.kind !== 'none' ? disk.table.kind : undefined,
      edit: req.edit,
      preview: req.preview,
    };
    const result = await restoreFrom(live, restoreReq, ctx, t0);
    if (req.preview)
      return { ...result, source: req.source, kind: req.kind, verifiedBytes: 0, verifySeconds: 0 };
    let verifiedBytes = 0;
    let verifySeconds = 0;
    const resized = result.layout?.some((p) => p.action === 'grow' || p.action === 'shrink');
    if (verify && (resizes(req.edit) || resized)) {
      // A grown or shrunk filesystem differs from the source by design: what was written can no
      // longer be compared with what was read (its own checker ran before and after resizing).
      warnings.push('the target was not read back: resized filesystems differ from the source by design');
    } else if (verify) {
      await req.beforeVerify?.();
      const v0 = performance.now();
      const v = await verifyTarget(live, req.target, result, ctx);
      verifiedBytes = v.bytes;
      warnings.push(...v.warnings);
      verifySeconds = (performance.now() - v0) / 1000;
    }
    return {
      ...result,
      warnings: [...warnings, ...result.warnings],
      seconds: (performance.now() - t0) / 1000,
      source: req.source,
      kind: req.kind,
      verifiedBytes,
      verifySeconds,
    };
  } finally {
    await reader?.close();
    await disk.src.close();
  }
}

// ————————————————————————————————————————— verification

let fadvise: ((fd: number) => number) | null | undefined;

/**
 * posix_fadvise(POSIX_FADV_DONTNEED) through ffi-rs: after an fsync it drops the cached pages of a
 * file or block device, so that what is read next comes from the device, not from memory.
 */
async function loadFadvise(): Promise<((fd: number) => number) | null> {
  if (fadvise !== undefined) return fadvise;
  try {
    const ffi = await loadFfiRs();
    ffi.open({ library: 'rescue-libc', path: '' });
    const T = ffi.DataType;
    const POSIX_FADV_DONTNEED = 4;
    fadvise = (fd: number) =>
      ffi.load({
        library: 'rescue-libc',
        funcName: 'posix_fadvise',
        retType: T.I32,
        paramsType: [T.I32, T.I64, T.I64, T.I32],
        paramsValue: [fd, 0, 0, POSIX_FADV_DONTNEED],
      }) as number;
  } catch {
    fadvise = null;
  }
  return fadvise;
}

/** Flushes `path` and drops its cached pages; false when the pages could not be dropped. */
async function dropCachedPages(path: string): Promise<boolean> {
  const h = await fsp.open(path, 'r');
  try {
    await h.sync();
    const f = await loadFadvise();
    return f !== null && f(h.fd) === 0;
  } finally {
    await h.close();
  }
}

/** The byte ranges a partition table occupies on a disk of `size` bytes (boot code excluded). */
function tableMask(table: PartitionTable, size: number): Extent[] {
  if (table.kind === 'none') return [];
  let writes: ReturnType<typeof serializePartitionTable>;
  try {
    writes = serializePartitionTable(table, size, { sectorSize: table.sectorSize });
  } catch {
    // Cannot say where the table lies: mask the first and last MiB, where GPT and MBR keep it.
    return [
      { start: 440, length: MiB - 440 },
      { start: Math.max(0, size - MiB), length: Math.min(MiB, size) },
    ];
  }
  return writes.map((w) =>
    // The boot code in front of the table came from the source and must be there.
    w.offset === 0
      ? { start: 440, length: Math.max(0, w.bytes.length - 440) }
      : { start: w.offset, length: w.bytes.length },
  );
}

function mismatch(target: string, offset: number, what: string): RescueError {
  return new RescueError(
    'E_VERIFY_MISMATCH',
    `${target}: byte ${offset} (${what}) differs from the source after the clone`,
    'The target did not keep what was written to it: it may be failing, or be a counterfeit drive that ' +
      'reports more capacity than it has. Clone to another disk.',
    { offset },
  );
}

function describeRegion(r: PlannedRegion): string {
  if (r.kind === 'partition') return `partition ${r.partition}`;
  if (r.kind === 'lead-in') return 'boot code before the first partition';
  return r.kind === 'disk' ? 'the disk' : r.kind;
}

/**
 * Whether these edit options may resize filesystems (then the clone cannot be compared with its
 * source). --align, --new-ids and a plain copy only move partitions or change ids: verified, with
 * the moved partitions compared at their new places.
 */
function resizes(edit: CloneRequest['edit']): boolean {
  return isEditing(edit) && edit.mode !== 'copy';
}

/** Where each copied region lies on the target now, read from the target's own table. */
/**
 * Bytes of a filesystem that the restore rewrites on purpose once its data is on the target
 * (resize/edit.ts, finishOne): the partition start that NTFS, FAT and exFAT record in their boot
 * sectors (and backups) when the partition moved, and NTFS's boot sector copy in the partition's
 * last sector when the partition has another size. In target disk offsets.
 */
async function rewrittenFields(
  src: FileSource,
  region: PlannedRegion,
  at: number,
  room: number,
  moved: boolean,
): Promise<Extent[]> {
  const type = region.usedMethod === 'allocation' ? region.fs?.type : undefined;
  if (type !== 'ntfs' && type !== 'vfat' && type !== 'exfat') return [];
  const boot = await src.read(region.start, 512);
  const out: Extent[] = [];
  const field = (offset: number, length: number) => out.push({ start: at + offset, length });
  if (type === 'exfat') {
    const bps = 2 ** Math.min(12, Math.max(9, boot[0x6c]));
    if (moved) {
      // PartitionOffset and the boot checksum sector, in the main and the backup boot region.
      for (const base of [0, 12 * bps]) {
        field(base + 0x40, 8);
        field(base + 11 * bps, bps);
      }
    }
    return out;
  }
  const bps = boot.readUInt16LE(0x0b) || 512;
  if (moved) field(0x1c, 4);
  if (type === 'ntfs') {
    const volume = Number(boot.readBigUInt64LE(0x28)) * bps;
    if (moved) field(volume + 0x1c, 4);
    if (room !== region.size) field(room - bps, bps);
  } else if (moved && boot.readUInt16LE(0x16) === 0) {
    // FAT32 (no 16-bit FAT size): the backup boot sector's number.
    const backup = boot.readUInt16LE(0x32);
    if (backup > 0 && backup < 0xffff) field(backup * bps + 0x1c, 4);
  }
  return out;
}

/** Where each copied region lies on the target now, read from the target's own table. */
async function placements(live: LiveSource, target: FileSource, result: RestoreResult): Promise<Placement[]> {
  const src = live.disk.src;
  const data = live.disk.regions.filter((r) => r.kind === 'partition' || r.kind === 'disk');
  if (result.mode === 'partition') {
    return Promise.all(
      data.slice(0, 1).map(async (region) => ({
        region,
        at: 0,
        // Onto a plain target the partition start is not rewritten (there is no partition).
        mask: await rewrittenFields(src, region, 0, target.size, false),
      })),
    );
  }
  const table = await readPartitionTable(target);
  const place = async (number: number | undefined, region: PlannedRegion): Promise<Placement> => {
    const p = table.partitions.find((x) => x.number === number);
    if (!p) {
      throw new RescueError(
        'E_VERIFY_MISMATCH',
        `${target.path}: partition ${number} is missing from the target's partition table after the clone (${describeRegion(region)} was copied there)`,
        'The target did not keep what was written to it: it may be failing. Clone to another disk.',
      );
    }
    const planned = result.layout?.find((x) => x.regionId === region.id);
    if (result.mode === 'disk' && p.start !== (planned?.newStart ?? region.start)) {
      // A disk clone keeps every partition where it was, or where the edited layout put it.
      throw new RescueError(
        'E_VERIFY_MISMATCH',
        `${target.path}: partition ${number} starts at byte ${p.start} of the target, but was written at ${planned?.newStart ?? region.start}`,
        'The target did not keep the partition table that was written to it: it may be failing. Clone to another disk.',
        { offset: 0 },
      );
    }
    const mask = await rewrittenFields(src, region, p.start, p.size, p.start !== region.start);
    return { region, at: p.start, mask };
  };
  if (result.mode === 'into-partition' || result.mode === 'free-space') {
    return Promise.all(data.slice(0, 1).map((region) => place(result.partition, region)));
  }
  const mask = tableMask(table, target.size);
  const out: Placement[] = [];
  for (const region of live.disk.regions) {
    if (region.kind === 'lead-in' || region.kind === 'disk') out.push({ region, at: 0, mask });
    else if (region.kind === 'partition') out.push(await place(region.partition, region));
  }
  return out;
}

/** Disk offset of byte `i` of a window's concatenated used bytes. */
function diskOffset(p: Placement, plan: WindowPlan, i: number): number {
  let o = 0;
  for (const e of plan.extents) {
    if (i < o + e.length) return p.at + e.start + (i - o);
    o += e.length;
  }
  return p.at + plan.windowStart;
}

function masked(p: Placement, diskAt: number): boolean {
  return p.mask.some((m) => diskAt >= m.start && diskAt < m.start + m.length);
}

/** First disk offset where `a` (source) and `b` (target) differ outside the mask, or -1. */
function firstDifference(p: Placement, plan: WindowPlan, a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      const at = diskOffset(p, plan, i);
      if (!masked(p, at)) return at;
    }
  }
  return -1;
}

/**
 * Reads every copied window back from the target (its cache dropped first) and compares its
 * sha256 with the one taken from the source; windows the table shares are compared byte by byte
 * outside the table's sectors. Throws E_VERIFY_MISMATCH naming the first differing disk offset.
 */
async function verifyTarget(
  live: LiveSource,
  targetPath: string,
  result: RestoreResult,
  ctx: JobContext,
): Promise<{ bytes: number; warnings: string[] }> {
  const warnings: string[] = [];
  const target = await FileSource.open(targetPath);
  const reader = await DiskReader.open(targetPath);
  try {
    // Direct reads come from the device; otherwise the cached pages must go first.
    if (!reader.bypassesCache && !(await dropCachedPages(targetPath))) {
      warnings.push(
        `the cached pages of ${targetPath} could not be dropped: verification may have read them from memory`,
      );
    }
    const places = await placements(live, target, result);
    const work = places.flatMap((p) =>
      live.entries.filter((e) => e.regionId === p.region.id).map((entry) => ({ p, entry })),
    );
    const total = work.reduce((n, w) => n + w.entry.rawLength, 0);
    ctx.emit({ type: 'phase', phase: 'verify', message: `Verifying ${total} bytes on ${targetPath}` });
    const meter = new ProgressMeter(ctx, 'verify', total);
    const readBack = (p: Placement, plan: WindowPlan, buf: Buffer) =>
      readWindowInto(
        reader,
        buf,
        p.at,
        plan,
        (offset, why) =>
          new RescueError(
            'E_READ',
            `Cannot read ${targetPath} back at byte ${offset} (${describeRegion(p.region)}): ${why}`,
            'The target disk fails to read what was just written to it: it may be failing. Clone to another disk.',
            { offset },
          ),
      );
    const check = async ({ p, entry }: (typeof work)[number]): Promise<void> => {
      const plan = live.plan(entry.regionId, entry.windowStart);
      const hash = live.hashes.get(`${entry.regionId}:${entry.windowStart}`);
      const shared = p.mask.some((m) =>
        plan.extents.some((e) => p.at + e.start < m.start + m.length && m.start < p.at + e.start + e.length),
      );
      if (hash && !shared) {
        const buf = await reader.acquire();
        try {
          const digest = createHash('sha256')
            .update(await readBack(p, plan, buf))
            .digest();
          if (digest.equals(hash)) return;
        } finally {
          reader.release(buf);
        }
      }
      // A mismatch (or a window the table shares, or one never hashed): find the exact byte.
      const [tbuf, sbuf] = [await reader.acquire(), await live.reader.acquire()];
      let at: number;
      try {
        at = firstDifference(p, plan, await live.readRaw(entry, sbuf), await readBack(p, plan, tbuf));
      } finally {
        reader.release(tbuf);
        live.reader.release(sbuf);
      }
      if (at >= 0) throw mismatch(targetPath, at, describeRegion(p.region));
      if (hash && !shared) {
        // The source reads the same as the target now, but not as it read during the copy.
        throw new RescueError(
          'E_SOURCE_CHANGED',
          `${live.disk.spec.path} changed while it was cloned (${describeRegion(p.region)}, around byte ${p.region.start + entry.windowStart})`,
          'Something wrote to the source during the clone: unmount it (or boot the rescue system) and clone again.',
        );
      }
    };
    const pending: Promise<void>[] = [];
    try {
      for (const w of work) {
        ctx.signal.throwIfAborted();
        const job = check(w).then(() => meter.add(w.entry.rawLength));
        job.catch(() => {});
        pending.push(job);
        if (pending.length >= VERIFY_IN_FLIGHT) await pending.shift();
      }
      while (pending.length > 0) await pending.shift();
    } finally {
      await Promise.allSettled(pending);
    }
    meter.finish();
    return { bytes: total, warnings };
  } finally {
    await reader.close();
    await target.close();
  }
}
