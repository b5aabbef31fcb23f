/**
 * Writes one image (one backup point): header, chunk records in (region, window) order, index,
 * manifest, trailer — spread over volume files when split.
 *
 * Crash safety: everything goes to NAME.rimg.partial, NAME.rimg.2.partial, …; only when the trailer
 * is on disk is the header finalised (total length and volume count, which a reader requires), every
 * volume fsynced and renamed, the first volume last, and the directory fsynced. A crash at any
 * point leaves *.partial files or a first volume whose header says "incomplete", never a file that
 * looks complete.
 *
 * Throughput: appends are collected into batches of about 8 MiB and written with one positional
 * writev while the next batch fills (one write in flight), so the caller's encoders, the disk and
 * this thread overlap. Memory is bounded by two batches plus the index (80 bytes per chunk).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, type Stats } from 'node:fs';
import { join } from 'node:path';
import { RescueError } from '../errors.ts';
import { ChunkCodec, sealMetadata } from './codec.ts';
import {
  commentTooLong,
  destinationFull,
  destinationInvalid,
  imageExists,
  imageWrite,
  internal,
  nameInvalid,
  optionInvalid,
  splitTooSmall,
} from './failures.ts';
import { IMAGE_TEST_HOOKS, type ImageTestHooks } from './internal.ts';
import { deriveKey, keyCheck, validatePassword } from './keys.ts';
import {
  ID_BYTES,
  serializeHeader,
  serializeRecordHeader,
  serializeTrailer,
  serializeVolumeHeader,
  sha256,
  validWindowSize,
  writeIndexEntry,
} from './layout.ts';
import { manifestProblem, regionInfos } from './manifest.ts';
import {
  COMPRESSION_ALGO,
  COMPRESSION_LEVEL,
  type Compression,
  DEFAULT_WINDOW_SIZE,
  ENTRY_FLAGS,
  type EncodedChunk,
  FAT_MAX_FILE_BYTES,
  FORMAT_VERSION,
  GCM_OVERHEAD,
  HEADER,
  type ImageHeader,
  INDEX_AAD_WINDOW,
  INDEX_ENTRY_SIZE,
  type IndexEntry,
  KDF,
  KDF_SALT_BYTES,
  MANIFEST_AAD_WINDOW,
  MAX_COMMENT_CHARS,
  MAX_NAME_BYTES,
  type Manifest,
  type ManifestOptions,
  METADATA_REGION_ID,
  MIN_SPLIT_BYTES,
  type PointType,
  RECORD_HEADER,
  SCRYPT_DEFAULTS,
  TRAILER,
  VOLUME_HEADER,
} from './types.ts';
import { destinationIsFat, imageFileName, partialName, VolumeLayout, volumeFileName } from './volumes.ts';

export interface ImageWriterOptions {
  /** Existing directory; files are dir/NAME.rimg, dir/NAME.rimg.2 … */
  dir: string;
  /** File base name: no '/', no NUL, ≤ 200 bytes. */
  name: string;
  compression: Compression;
  password?: string;
  /** ≥ 50 MiB; undefined = not split unless the destination is FAT (then 4 GiB − 1). */
  splitBytes?: number;
  /** Default 2 MiB (DEFAULT_WINDOW_SIZE). */
  windowSize?: number;
  point?: {
    type: PointType;
    parentId?: Buffer;
    chainId?: Buffer;
    /** Position in the chain (1 = the full); required for incremental and differential points. */
    sequence?: number;
  };
  /** "rescue 0.1.0" */
  tool: string;
  [IMAGE_TEST_HOOKS]?: ImageTestHooks;
}

export interface FinishResult {
  /** Final paths of the volume files, volume 1 first. */
  files: string[];
  firstFile: string;
  /** Sum of the volume files' sizes. */
  storedBytes: number;
}

/** What the caller says of an image; the writer fills in the point and its own options. */
export type ManifestInput = Omit<Manifest, 'point' | 'options'> &
  Partial<Pick<Manifest, 'point'>> & { options?: Partial<ManifestOptions> };

/** A batch is written once it holds this many bytes or buffers. */
const FLUSH_BYTES = 8 * 1024 * 1024;
const FLUSH_BUFFERS = 512;
/** Linux IOV_MAX. */
const IOV_MAX = 1024;
const MAX_U32 = 0xffffffff;
const FULL_MASK = ENTRY_FLAGS.ZERO | ENTRY_FLAGS.STORED_RAW;

interface Volume {
  number: number;
  partial: string;
  final: string;
  handle: fsp.FileHandle | null;
  /** Inode of the file we created: a rename must move our file, not one someone put in its place. */
  ino: number;
}

function errnoOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** Comments are kept up to MAX_COMMENT_CHARS characters (manual 3.7); callers check early with this. */
export function validateComment(comment: string | undefined): void {
  if (typeof comment === 'string' && [...comment].length > MAX_COMMENT_CHARS)
    throw commentTooLong([...comment].length, MAX_COMMENT_CHARS);
}

/** The image file's base name: one path component, at most MAX_NAME_BYTES of UTF-8. */
export function validateImageName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw nameInvalid(String(name), 'it is empty');
  if (name.includes('/')) throw nameInvalid(name, "it contains '/'");
  if (name.includes('\0')) throw nameInvalid(name, 'it contains a NUL character');
  if (name === '.' || name === '..') throw nameInvalid(name, 'it is a directory name');
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES)
    throw nameInvalid(name, `it is longer than ${MAX_NAME_BYTES} bytes`);
}

/** Existing files that belong to an image of this name (NAME.rimg, NAME.rimg.N). */
async function existingImageFiles(dir: string, name: string): Promise<string[]> {
  const base = imageFileName(name);
  const out: string[] = [];
  for (const e of await fsp.readdir(dir)) {
    if (e === base) out.push(e);
    else if (e.startsWith(`${base}.`) && /^[0-9]+$/.test(e.slice(base.length + 1))) out.push(e);
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return false;
    throw e;
  }
}

export class ImageWriter {
  readonly imageId: Buffer;
  readonly codec: ChunkCodec;
  /** Path of the first volume as it will be named when finished. */
  readonly path: string;
  readonly windowSize: number;
  readonly volumeLimit: number;

  private readonly opts: ImageWriterOptions;
  private readonly header: ImageHeader;
  private readonly layout: VolumeLayout;
  private readonly volumes: Volume[] = [];
  private readonly sequence: number | undefined;
  private readonly flushBytes: number;
  private readonly hooks: ImageTestHooks;

  /** Logical bytes appended (written or pending). */
  private pos = 0;
  /** Logical bytes handed to the filesystem. */
  private flushedPos = 0;
  /** Bytes the filesystem accepted into the volume files (for "failed after N bytes"). */
  private fileBytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private inflight: Promise<void> | null = null;
  private failure: RescueError | null = null;
  private state: 'open' | 'finishing' | 'finished' | 'aborted' = 'open';
  /** The removal of the partial files once the writer is dead; awaited before anyone is told. */
  private cleaning: Promise<void> = Promise.resolve();

  private index = Buffer.alloc(INDEX_ENTRY_SIZE * 1024);
  private count = 0;
  private lastRegion = -1;
  private lastWindow = -1;
  private chunkBytes = 0;
  private readonly renamed: string[] = [];

  private constructor(
    opts: ImageWriterOptions,
    header: ImageHeader,
    codec: ChunkCodec,
    layout: VolumeLayout,
    sequence: number | undefined,
  ) {
    this.opts = opts;
    this.header = header;
    this.imageId = header.imageId;
    this.codec = codec;
    this.layout = layout;
    this.windowSize = header.windowSize;
    this.volumeLimit = header.volumeLimit;
    this.path = join(opts.dir, imageFileName(opts.name));
    this.sequence = sequence;
    this.hooks = opts[IMAGE_TEST_HOOKS] ?? {};
    this.flushBytes = this.hooks.flushBytes ?? FLUSH_BYTES;
  }

  /**
   * Checks every option and derives the key before anything is created; refuses to overwrite an
   * existing image; writes the header into NAME.rimg.partial.
   */
  static async create(opts: ImageWriterOptions): Promise<ImageWriter> {
    const hooks = opts[IMAGE_TEST_HOOKS] ?? {};
    validateImageName(opts.name);
    if (!(opts.compression in COMPRESSION_LEVEL))
      throw optionInvalid('compression', `"${opts.compression}" is not none, normal or high`);
    const windowSize = opts.windowSize ?? DEFAULT_WINDOW_SIZE;
    if (!validWindowSize(windowSize))
      throw optionInvalid('windowSize', `${windowSize} (a multiple of 512 from 4 KiB to 256 MiB)`);
    if (typeof opts.tool !== 'string') throw optionInvalid('tool', 'must be text');
    if (opts.password !== undefined) validatePassword(opts.password);

    const pointType = opts.point?.type ?? 'full';
    const imageId = randomBytes(ID_BYTES);
    let parentId = Buffer.alloc(ID_BYTES);
    let chainId = imageId;
    let sequence = opts.point?.sequence;
    if (pointType === 'full') {
      if (opts.point?.parentId && !opts.point.parentId.equals(parentId))
        throw optionInvalid('point.parentId', 'a full point has no parent');
      sequence ??= 1;
    } else if (pointType === 'incremental' || pointType === 'differential') {
      const p = opts.point?.parentId;
      const c = opts.point?.chainId;
      if (!Buffer.isBuffer(p) || p.length !== ID_BYTES)
        throw optionInvalid('point.parentId', 'must be 16 bytes');
      if (!Buffer.isBuffer(c) || c.length !== ID_BYTES)
        throw optionInvalid('point.chainId', 'must be 16 bytes');
      parentId = Buffer.from(p);
      chainId = Buffer.from(c);
    } else {
      throw optionInvalid('point.type', `"${String(pointType)}"`);
    }
    if (sequence !== undefined && (!Number.isSafeInteger(sequence) || sequence < 1))
      throw optionInvalid('point.sequence', String(sequence));

    let st: Stats;
    try {
      st = await fsp.stat(opts.dir);
    } catch (e) {
      throw destinationInvalid(
        opts.dir,
        errnoOf(e) === 'ENOENT' ? 'it does not exist' : (e as Error).message,
      );
    }
    if (!st.isDirectory()) throw destinationInvalid(opts.dir, 'it is not a directory');
    let clash: string[];
    let onFat: boolean;
    try {
      clash = await existingImageFiles(opts.dir, opts.name);
      onFat = await destinationIsFat(opts.dir, hooks.mountinfo);
    } catch (e) {
      throw destinationInvalid(opts.dir, (e as Error).message);
    }

    let limit = 0;
    if (opts.splitBytes !== undefined) {
      const min = hooks.minSplitBytes ?? MIN_SPLIT_BYTES;
      if (!Number.isSafeInteger(opts.splitBytes) || opts.splitBytes < min)
        throw splitTooSmall(opts.splitBytes, min);
      // A volume must hold the whole image header plus some payload after its volume header.
      limit = Math.max(opts.splitBytes, HEADER.SIZE + VOLUME_HEADER.SIZE);
    }
    if (onFat) {
      limit = limit === 0 ? FAT_MAX_FILE_BYTES : Math.min(limit, FAT_MAX_FILE_BYTES);
    }

    if (clash.length > 0) throw imageExists(join(opts.dir, clash.sort()[0]));

    let key: Buffer | undefined;
    const scrypt = hooks.scrypt ?? SCRYPT_DEFAULTS;
    let salt: Buffer = Buffer.alloc(KDF_SALT_BYTES);
    let check: Buffer = Buffer.alloc(32);
    if (opts.password !== undefined) {
      salt = randomBytes(KDF_SALT_BYTES);
      key = await deriveKey(opts.password, salt, scrypt);
      check = keyCheck(key, imageId);
    }
    const level = COMPRESSION_LEVEL[opts.compression];
    const header: ImageHeader = {
      version: FORMAT_VERSION,
      headerLength: HEADER.SIZE,
      encrypted: key !== undefined,
      imageId,
      parentId,
      chainId,
      pointType,
      compressionAlgo: level > 0 ? COMPRESSION_ALGO.ZSTD : COMPRESSION_ALGO.NONE,
      compressionLevel: level,
      kdf: key ? KDF.SCRYPT : KDF.NONE,
      windowSize,
      created: Date.now(),
      scrypt: key ? scrypt : { logN: 0, r: 0, p: 0 },
      salt,
      keyCheck: check,
      tool: opts.tool,
      totalLength: 0,
      volumeCount: 0,
      volumeLimit: limit,
    };
    const codec = new ChunkCodec({ imageId, compression: opts.compression, key });
    const w = new ImageWriter(opts, header, codec, new VolumeLayout(limit), sequence);
    w.push(serializeHeader(header));
    await w.kick(true);
    return w;
  }

  /** Logical bytes so far (header, records, pending or written), for progress. */
  get bytesWritten(): number {
    return this.pos;
  }

  get chunkCount(): number {
    return this.count;
  }

  /** Appends one chunk; chunks must come in ascending (region id, window start) order. */
  async append(chunk: EncodedChunk): Promise<void> {
    await this.assertOpen();
    const { regionId, windowStart, rawLength, flags, payload } = chunk;
    this.checkOrder(regionId, windowStart);
    const where = `region ${regionId}, window ${windowStart}`;
    if (!Number.isInteger(rawLength) || rawLength < 1 || rawLength > this.windowSize)
      throw this.bug(`append: raw length ${rawLength} (${where})`);
    const delta = (flags & ENTRY_FLAGS.DELTA) !== 0;
    if ((flags & ~(FULL_MASK | ENTRY_FLAGS.DELTA)) !== 0 || (delta && flags & ENTRY_FLAGS.ZERO))
      throw this.bug(`append: flags ${flags} (${where})`);
    if (!Buffer.isBuffer(chunk.sha256) || chunk.sha256.length !== 32)
      throw this.bug(`append: sha256 (${where})`);
    const overhead = this.codec.encrypted ? GCM_OVERHEAD : 0;
    if (delta) {
      if (this.header.pointType === 'full') throw this.bug('append: a delta record in a full point');
      if (!/^[0-9a-f]{32}$/.test(chunk.pointId ?? '') || chunk.pointId === this.imageId.toString('hex'))
        throw this.bug(`append: delta base point "${chunk.pointId}" (${where})`);
      if (payload.length <= overhead || payload.length > rawLength + overhead)
        throw this.bug(`append: delta payload of ${payload.length} bytes for ${rawLength} (${where})`);
    } else if (chunk.pointId) {
      throw this.bug(`append: a point id without the delta flag (${where})`);
    } else if (flags & ENTRY_FLAGS.ZERO) {
      if (payload.length !== 0) throw this.bug(`append: zero chunk with payload (${where})`);
    } else if (flags & ENTRY_FLAGS.STORED_RAW) {
      if (payload.length !== rawLength + overhead)
        throw this.bug(`append: stored-raw payload of ${payload.length} bytes for ${rawLength} (${where})`);
    } else if (payload.length <= overhead || payload.length >= rawLength + overhead) {
      throw this.bug(`append: compressed payload of ${payload.length} bytes for ${rawLength} (${where})`);
    }
    const recordHeader = serializeRecordHeader(
      { regionId, windowStart, rawLength, storedLength: payload.length, flags },
      Buffer.allocUnsafe(RECORD_HEADER.SIZE),
    );
    const payloadOffset = this.pos + RECORD_HEADER.SIZE;
    this.push(recordHeader);
    if (payload.length > 0) this.push(payload);
    this.chunkBytes += RECORD_HEADER.SIZE + payload.length;
    this.addEntry({
      regionId,
      flags,
      windowStart,
      rawLength,
      storedLength: payload.length,
      payloadOffset,
      pointId: delta ? chunk.pointId! : '',
      sha256: chunk.sha256,
    });
    this.lastRegion = regionId;
    this.lastWindow = windowStart;
    if (this.pendingBytes >= this.flushBytes || this.pending.length >= FLUSH_BUFFERS) await this.kick(false);
  }

  /**
   * Incremental/differential points: a window whose data is unchanged and stays in an older image
   * of the chain. Only an index entry is written (flag OTHER_POINT, the holder's point id, and the
   * payload position in that image).
   */
  async appendReference(entry: IndexEntry): Promise<void> {
    await this.assertOpen();
    if (this.header.pointType === 'full') throw this.bug('appendReference: a full point holds all its data');
    this.checkOrder(entry.regionId, entry.windowStart);
    if (!/^[0-9a-f]{32}$/.test(entry.pointId) || entry.pointId === this.imageId.toString('hex'))
      throw this.bug(`appendReference: point id "${entry.pointId}"`);
    if (
      !(entry.flags & ENTRY_FLAGS.OTHER_POINT) ||
      (entry.flags & ~(FULL_MASK | ENTRY_FLAGS.OTHER_POINT | ENTRY_FLAGS.DELTA)) !== 0
    )
      throw this.bug(`appendReference: flags ${entry.flags}`);
    if (entry.rawLength < 1 || entry.rawLength > this.windowSize)
      throw this.bug('appendReference: raw length');
    this.addEntry({ ...entry, sha256: Buffer.from(entry.sha256) });
    this.lastRegion = entry.regionId;
    this.lastWindow = entry.windowStart;
  }

  /**
   * Writes index, manifest and trailer, finalises the header, fsyncs and renames (first volume
   * last), fsyncs the directory. On failure the partial files are removed.
   */
  async finish(input: ManifestInput): Promise<FinishResult> {
    await this.assertOpen();
    this.state = 'finishing';
    try {
      return await this.finishInner(input);
    } catch (e) {
      // A write error has already started the cleanup (and set the state); anything else has not.
      if (!this.failure) {
        this.state = 'aborted';
        this.cleaning = this.cleanup();
      }
      await this.cleaning;
      throw e;
    }
  }

  /** Stops writing and removes every file this writer created. Safe to call more than once. */
  async abort(): Promise<void> {
    if (this.state === 'finished') return;
    if (this.state === 'aborted') {
      await this.cleaning;
      return;
    }
    this.state = 'aborted';
    this.cleaning = this.cleanup();
    await this.cleaning;
  }

  // -------------------------------------------------------------------------------------------

  /** A misuse by the caller (a bug), naming the image. */
  private bug(what: string): RescueError {
    return internal(`${this.path}: ${what}`, { image: this.path });
  }

  private async assertOpen(): Promise<void> {
    if (this.failure) {
      await this.cleaning;
      throw this.failure;
    }
    if (this.state !== 'open') throw this.bug(`image writer used after it was ${this.state}`);
  }

  private checkOrder(regionId: number, windowStart: number): void {
    if (!Number.isInteger(regionId) || regionId < 0 || regionId >= METADATA_REGION_ID)
      throw this.bug(`append: region id ${regionId}`);
    if (!Number.isSafeInteger(windowStart) || windowStart < 0 || windowStart % this.windowSize !== 0)
      throw this.bug(`append: window start ${windowStart} is not a multiple of ${this.windowSize}`);
    if (regionId < this.lastRegion || (regionId === this.lastRegion && windowStart <= this.lastWindow))
      throw this.bug(
        `append: region ${regionId} window ${windowStart} after region ${this.lastRegion} window ${this.lastWindow}: ` +
          'chunks must come in (region, window) order',
      );
  }

  private addEntry(e: IndexEntry): void {
    if (this.count >= MAX_U32) throw this.bug('more than 2^32-1 chunks in one image');
    if ((this.count + 1) * INDEX_ENTRY_SIZE > this.index.length) {
      const bigger = Buffer.alloc(this.index.length * 2);
      this.index.copy(bigger, 0, 0, this.count * INDEX_ENTRY_SIZE);
      this.index = bigger;
    }
    writeIndexEntry(this.index, this.count * INDEX_ENTRY_SIZE, e);
    this.count++;
  }

  private push(b: Buffer): void {
    this.pending.push(b);
    this.pendingBytes += b.length;
    this.pos += b.length;
  }

  /**
   * Hands the pending batch to the filesystem. Normally the batch is written in the background
   * while the caller goes on (one write in flight); `wait` waits for it too.
   */
  private async kick(wait: boolean): Promise<void> {
    if (this.inflight) await this.inflight;
    if (this.failure) {
      await this.cleaning;
      throw this.failure;
    }
    if (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      this.inflight = this.writeOut(batch).catch(async (e: unknown) => {
        this.failure = await this.convertWriteError(e);
      });
    }
    if (wait && this.inflight) {
      await this.inflight;
      this.inflight = null;
      if (this.failure) {
        await this.cleaning;
        throw this.failure;
      }
    }
  }

  private async convertWriteError(e: unknown): Promise<RescueError> {
    const vol = this.volumes[this.volumes.length - 1];
    const file = vol ? vol.partial : this.path;
    const code = errnoOf(e);
    const written = this.fileBytes;
    let err: RescueError;
    if (e instanceof RescueError) err = e;
    else if (code === 'ENOSPC' || code === 'EDQUOT') err = destinationFull(this.path, file, written);
    else if (code === 'EFBIG')
      err = imageWrite(
        this.path,
        file,
        written,
        'the file is too large for the destination filesystem; split the image',
      );
    else err = imageWrite(this.path, file, written, (e as Error).message);
    // Set before the cleanup awaits, so that concurrent calls see the real reason.
    this.failure = err;
    // The image is lost either way: remove what was written so no partial file lingers.
    this.state = 'aborted';
    this.cleaning = this.cleanup(true);
    await this.cleaning;
    return err;
  }

  /** Writes buffers at the current flushed position, cutting them at volume boundaries. */
  private async writeOut(bufs: Buffer[]): Promise<void> {
    let batch: Buffer[] = [];
    let batchBytes = 0;
    for (const whole of bufs) {
      let b = whole;
      while (b.length > 0) {
        const at = this.flushedPos + batchBytes;
        const v = this.layout.volumeOf(at);
        const room = this.layout.logicalStart(v) + this.layout.capacity(v) - at;
        if (b.length <= room) {
          batch.push(b);
          batchBytes += b.length;
          break;
        }
        if (room > 0) {
          batch.push(b.subarray(0, room));
          batchBytes += room;
        }
        b = b.subarray(room);
        await this.writeBatch(batch, batchBytes);
        batch = [];
        batchBytes = 0;
      }
    }
    if (batchBytes > 0) await this.writeBatch(batch, batchBytes);
  }

  /** All of `bufs` lies in one volume. */
  private async writeBatch(bufs: Buffer[], bytes: number): Promise<void> {
    const { volume, offset } = this.layout.fileOffset(this.flushedPos);
    const vol = await this.openVolume(volume);
    let list = bufs;
    let position = offset;
    if (volume > 1 && offset === VOLUME_HEADER.SIZE) {
      const vh = serializeVolumeHeader({
        imageId: this.imageId,
        volume,
        logicalOffset: this.flushedPos,
        volumeLimit: this.layout.limit,
      });
      list = [vh, ...bufs];
      position = 0;
    }
    await writevAll(vol.handle!, list, position, (k) => {
      this.fileBytes += k;
    });
    this.flushedPos += bytes;
    const end = this.layout.logicalStart(volume) + this.layout.capacity(volume);
    if (this.flushedPos === end && volume > 1) {
      // Complete: make it durable now. Volume 1 stays open for the header's final form.
      await vol.handle!.sync();
      await vol.handle!.close();
      vol.handle = null;
    } else if (this.flushedPos === end) {
      await vol.handle!.sync();
    }
  }

  private async openVolume(n: number): Promise<Volume> {
    const have = this.volumes[n - 1];
    if (have) return have;
    if (n !== this.volumes.length + 1) throw this.bug(`volume ${n} opened out of order`);
    const final = volumeFileName(this.path, n);
    const partial = partialName(final);
    // A .partial of the same name is what an interrupted earlier backup left behind.
    await fsp.rm(partial, { force: true });
    const vol: Volume = { number: n, partial, final, handle: null, ino: 0 };
    this.volumes.push(vol);
    vol.handle = await fsp.open(partial, 'wx');
    vol.ino = (await vol.handle.stat()).ino;
    return vol;
  }

  private async finishInner(input: ManifestInput): Promise<FinishResult> {
    const manifest = this.finalManifest(input);
    this.checkCoverage(manifest);
    const json = Buffer.from(JSON.stringify(manifest), 'utf8');

    const indexRaw = this.index.subarray(0, this.count * INDEX_ENTRY_SIZE);
    const key = this.codec.key;
    const index = await sealMetadata(indexRaw, this.imageId, INDEX_AAD_WINDOW, key, METADATA_REGION_ID);
    const manifestStored = await sealMetadata(
      json,
      this.imageId,
      MANIFEST_AAD_WINDOW,
      key,
      METADATA_REGION_ID,
    );
    const indexOffset = this.pos;
    this.push(index);
    const manifestOffset = this.pos;
    this.push(manifestStored);
    const totalLength = this.pos + TRAILER.SIZE;
    const volumeCount = this.layout.volumeCount(totalLength);
    this.push(
      serializeTrailer({
        imageId: this.imageId,
        indexOffset,
        indexLength: index.length,
        indexSha256: sha256(index),
        manifestOffset,
        manifestLength: manifestStored.length,
        manifestSha256: sha256(manifestStored),
        totalLength,
        volumeCount,
        chunkCount: this.count,
        volumeLimit: this.layout.limit,
      }),
    );
    await this.kick(true);
    if (this.flushedPos !== totalLength || this.volumes.length !== volumeCount)
      throw this.bug(
        `finish: wrote ${this.flushedPos} of ${totalLength} bytes, ${this.volumes.length} volumes`,
      );

    try {
      const first = this.volumes[0];
      const header = serializeHeader({ ...this.header, totalLength, volumeCount });
      await writevAll(first.handle!, [header], 0);
      for (const v of this.volumes) {
        if (!v.handle) continue;
        await v.handle.sync();
        await v.handle.close();
        v.handle = null;
      }
      for (const v of [...this.volumes.slice(1).reverse(), first]) {
        const st = await fsp.lstat(v.partial);
        if (st.ino !== v.ino) throw imageExists(v.partial);
        if (await exists(v.final)) throw imageExists(v.final);
        await this.hooks.beforeRename?.(v.final);
        await fsp.rename(v.partial, v.final);
        this.renamed.push(v.final);
      }
    } catch (e) {
      if (e instanceof RescueError) throw e;
      throw await this.convertWriteError(e);
    }
    this.state = 'finished';
    await fsyncDir(this.opts.dir);
    const files = this.volumes.map((v) => v.final);
    let storedBytes = 0;
    for (let n = 1; n <= volumeCount; n++) storedBytes += this.layout.fileSize(n, totalLength);
    return { files, firstFile: files[0], storedBytes };
  }

  private finalManifest(input: ManifestInput): Manifest {
    validateComment(input?.comment);
    const h = this.header;
    const sequence = input.point?.sequence ?? this.sequence;
    if (sequence === undefined)
      throw optionInvalid(
        'point.sequence',
        'an incremental or differential point needs its position in the chain',
      );
    const level = COMPRESSION_LEVEL[this.opts.compression];
    const manifest: Manifest = {
      ...input,
      format: FORMAT_VERSION,
      tool: input.tool ?? this.opts.tool,
      point: {
        id: h.imageId.toString('hex'),
        type: h.pointType,
        parent: h.pointType === 'full' ? null : h.parentId.toString('hex'),
        chain: h.chainId.toString('hex'),
        sequence,
      },
      options: {
        compression: this.opts.compression,
        level,
        encrypted: h.encrypted,
        sectorBySector: input.options?.sectorBySector ?? false,
        split: this.layout.limit === 0 ? null : this.layout.limit,
        window: this.windowSize,
      },
      stats: { ...input.stats, storedBytes: this.chunkBytes, chunks: this.count },
    };
    const problem = manifestProblem(manifest);
    if (problem) throw optionInvalid('manifest', problem);
    return manifest;
  }

  /** The chunks must be exactly the windows the used maps say hold data, with their raw lengths. */
  private checkCoverage(manifest: Manifest): void {
    let infos: ReturnType<typeof regionInfos>;
    try {
      infos = regionInfos(manifest, this.path);
    } catch (e) {
      throw optionInvalid('manifest', (e as Error).message);
    }
    const ids = [...infos.keys()].sort((a, b) => a - b);
    let i = 0;
    const at = (k: number) => {
      const off = k * INDEX_ENTRY_SIZE;
      return {
        region: this.index.readUInt32LE(off),
        window: Number(this.index.readBigUInt64LE(off + 8)),
        raw: this.index.readUInt32LE(off + 16),
      };
    };
    for (const id of ids) {
      const info = infos.get(id)!;
      for (const w of info.layout.windows(this.windowSize)) {
        const e = i < this.count ? at(i) : null;
        if (!e || e.region !== id || e.window !== w.windowStart)
          throw this.bug(
            `finish: region ${id} window ${w.windowStart} holds ${w.rawLength} used bytes but no chunk was appended for it` +
              (e ? ` (next chunk: region ${e.region} window ${e.window})` : ''),
          );
        if (e.raw !== w.rawLength)
          throw this.bug(
            `finish: region ${id} window ${w.windowStart}: the used map has ${w.rawLength} bytes, the chunk ${e.raw}`,
          );
        i++;
      }
    }
    if (i < this.count) {
      const e = at(i);
      throw this.bug(`finish: a chunk for region ${e.region} window ${e.window} that no used map covers`);
    }
  }

  /** Closes and removes what this writer created (partials, and finals of an unfinished rename). */
  private async cleanup(fromWriteError = false): Promise<void> {
    if (!fromWriteError && this.inflight) {
      try {
        await this.inflight;
      } catch {
        // reported elsewhere
      }
    }
    for (const v of this.volumes) {
      if (v.handle) {
        await v.handle.close().catch(() => undefined);
        v.handle = null;
      }
      await fsp.rm(v.partial, { force: true }).catch(() => undefined);
    }
    // Volumes 2..n renamed but not volume 1: without it they are useless; do not leave them.
    if (!this.renamed.includes(this.path)) {
      for (const f of this.renamed) await fsp.rm(f, { force: true }).catch(() => undefined);
    }
  }
}

async function writevAll(
  handle: fsp.FileHandle,
  bufs: Buffer[],
  position: number,
  onWritten?: (bytes: number) => void,
): Promise<void> {
  let list = bufs.filter((b) => b.length > 0);
  let pos = position;
  while (list.length > 0) {
    const part = list.length > IOV_MAX ? list.slice(0, IOV_MAX) : list;
    let { bytesWritten } = await handle.writev(part, pos);
    if (bytesWritten === 0) throw Object.assign(new Error('write returned 0 bytes'), { code: 'EIO' });
    onWritten?.(bytesWritten);
    pos += bytesWritten;
    let k = 0;
    while (k < list.length && bytesWritten >= list[k].length) {
      bytesWritten -= list[k].length;
      k++;
    }
    list = list.slice(k);
    if (bytesWritten > 0) list[0] = list[0].subarray(bytesWritten);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let h: fsp.FileHandle | null = null;
  try {
    h = await fsp.open(dir, 'r');
    await h.sync();
  } catch {
    // Some filesystems (FUSE, network) refuse fsync on a directory; the renames are done.
  } finally {
    await h?.close().catch(() => undefined);
  }
}
