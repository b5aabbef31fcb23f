/**
 * Opens an image (any of its volume files) and verifies everything that is not chunk data before
 * returning: header, volume headers, volume count and sizes, trailer, key check, index and
 * manifest (sha256 from the trailer, GCM, zstd, shape), and that the index tiles the record area
 * and matches the used maps exactly. Chunks are verified as they are read.
 */

import { basename } from 'node:path';
import { isRescueError, type RescueError } from '../errors.ts';
import { ChunkCodec, openMetadata } from './codec.ts';
import { applyPatch, patchProblem } from './delta.ts';
import {
  type ChunkContext,
  chunkCorrupt,
  headerCorrupt,
  imageIncomplete,
  imageNotFound,
  imageRead,
  indexCorrupt,
  manifestCorrupt,
  notAnImage,
  passwordRequired,
  pointRequired,
  recordCorrupt,
  regionNotFound,
  regionRange,
  trailerCorrupt,
  volumeMismatch,
  volumeMissing,
  volumeTruncated,
  wrongPassword,
} from './failures.ts';
import { deriveKey, keyMatches, scryptParamsAcceptable, validatePassword } from './keys.ts';
import {
  hasHeaderMagic,
  hasVolumeMagic,
  parseHeader,
  parseIndex,
  parseRecordHeader,
  parseTrailer,
  parseVolumeHeader,
  sha256,
  sha256Async,
} from './layout.ts';
import { manifestProblem, type RegionInfo, regionInfos } from './manifest.ts';
import { openRead, type PathInfo, type ReadHandle, statPath } from './storage.ts';
import {
  COMPRESSION_LEVEL,
  type Compression,
  ENTRY_FLAGS,
  ENTRY_FLAGS_MASK,
  GCM_OVERHEAD,
  HEADER,
  type ImageHeader,
  INDEX_AAD_WINDOW,
  INDEX_ENTRY_SIZE,
  type IndexEntry,
  MANIFEST_AAD_WINDOW,
  MAX_MANIFEST_BYTES,
  type Manifest,
  METADATA_REGION_ID,
  PARTIAL_SUFFIX,
  RECORD_HEADER,
  TRAILER,
  type Trailer,
  VOLUME_HEADER,
} from './types.ts';
import { VolumeLayout, volumeFileName } from './volumes.ts';

export interface ImageReaderOptions {
  password?: string;
  /**
   * Chain support: returns the opened image of an earlier point that holds chunks this image
   * references (flag OTHER_POINT). Without it such chunks throw E_POINT_REQUIRED.
   */
  resolvePoint?: (pointId: string) => Promise<ImageReader>;
  /** Called when the reader is closed (a chain closes the earlier points it opened). */
  onClose?: () => Promise<void>;
}

/** What a tolerant open (used by checkImage) could not verify. */
export interface OpenDamage {
  index?: RescueError;
  manifest?: RescueError;
}

const MAX_OPEN_HANDLES = 16;
const CHUNK_CACHE = 8;

function errnoOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

async function statOrNull(path: string, image = path): Promise<PathInfo | null> {
  try {
    return await statPath(path);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT' || errnoOf(e) === 'ENOTDIR') return null;
    throw imageRead(image, path, 0, (e as Error).message);
  }
}

async function readHead(path: string, length: number): Promise<Buffer> {
  const h = await openRead(path);
  try {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await h.read(buf, done, length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  } finally {
    await h.close();
  }
}

/** The volume files of one image with a small pool of open handles and positional reads. */
class VolumeFiles {
  readonly image: string;
  readonly paths: string[];
  readonly layout: VolumeLayout;
  readonly total: number;
  private readonly handles = new Map<number, { h: Promise<ReadHandle>; refs: number }>();

  constructor(image: string, paths: string[], layout: VolumeLayout, total: number) {
    this.image = image;
    this.paths = paths;
    this.layout = layout;
    this.total = total;
  }

  private async acquire(v: number): Promise<ReadHandle> {
    let slot = this.handles.get(v);
    if (slot) {
      // Most recently used last.
      this.handles.delete(v);
      this.handles.set(v, slot);
    } else {
      if (this.handles.size >= MAX_OPEN_HANDLES) {
        for (const [k, s] of this.handles) {
          if (s.refs === 0) {
            this.handles.delete(k);
            s.h.then((h) => h.close()).catch(() => undefined);
            break;
          }
        }
      }
      const h = openRead(this.paths[v - 1]);
      h.catch(() => undefined);
      slot = { h, refs: 0 };
      this.handles.set(v, slot);
    }
    slot.refs++;
    try {
      return await slot.h;
    } catch (e) {
      slot.refs--;
      this.handles.delete(v);
      throw imageRead(this.image, this.paths[v - 1], 0, (e as Error).message);
    }
  }

  private release(v: number): void {
    const s = this.handles.get(v);
    if (s) s.refs--;
  }

  /** Logical bytes [pos, pos+length), across volume boundaries. */
  async read(pos: number, length: number): Promise<Buffer> {
    if (pos < 0 || length < 0 || pos + length > this.total)
      throw indexCorrupt(
        this.image,
        `a read of ${length} bytes at ${pos} lies outside the image (${this.total})`,
      );
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { volume, offset } = this.layout.fileOffset(pos + done);
      const room = this.layout.logicalStart(volume) + this.layout.capacity(volume) - (pos + done);
      const n = Math.min(length - done, room);
      const file = this.paths[volume - 1];
      const h = await this.acquire(volume);
      try {
        let got = 0;
        while (got < n) {
          let r: number;
          try {
            ({ bytesRead: r } = await h.read(out, done + got, n - got, offset + got));
          } catch (e) {
            throw imageRead(this.image, file, offset + got, (e as Error).message);
          }
          if (r === 0) {
            const size = (await h.stat()).size;
            throw volumeTruncated(this.image, volume, file, size, this.layout.fileSize(volume, this.total));
          }
          got += r;
        }
      } finally {
        this.release(volume);
      }
      done += n;
    }
    return out;
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    for (const s of all) await s.h.then((h) => h.close()).catch(() => undefined);
  }
}

/** Finds the first volume from any volume file; also says which volume the named file claims to be. */
/**
 * The first volume's path and the image header of any volume file, without the password and without
 * reading the rest (chain discovery). Throws like open() for a file that is no finished image.
 */
export async function readImageHeader(path: string): Promise<{ path: string; header: ImageHeader }> {
  const { base, header } = await locateHeader(path);
  return { path: base, header };
}

/** locate() plus the first volume's finished header. */
async function locateHeader(path: string): Promise<{ base: string; volume: number; header: ImageHeader }> {
  const named = await locate(path);
  const base = named.base;
  let head: Buffer;
  try {
    head = await readHead(base, HEADER.SIZE);
  } catch (e) {
    throw imageRead(base, base, 0, (e as Error).message);
  }
  const header = parseHeader(head, base);
  if (header.totalLength === 0 || header.volumeCount === 0)
    throw imageIncomplete(base, 'its header was never finalised (the backup did not finish)');
  return { ...named, header };
}

async function locate(path: string): Promise<{ base: string; volume: number }> {
  const st = await statOrNull(path);
  if (!st) {
    if (await statOrNull(path + PARTIAL_SUFFIX))
      throw imageIncomplete(path, `only ${basename(path)}${PARTIAL_SUFFIX} exists`);
    throw imageNotFound(path);
  }
  if (path.endsWith(PARTIAL_SUFFIX))
    throw imageIncomplete(path, 'its name ends in .partial: the backup writing it did not finish');
  if (!st.isFile()) throw notAnImage(path, 'not a regular file');
  let head: Buffer;
  try {
    head = await readHead(path, VOLUME_HEADER.SIZE);
  } catch (e) {
    throw imageRead(path, path, 0, (e as Error).message);
  }
  if (hasHeaderMagic(head)) return { base: path, volume: 1 };
  if (hasVolumeMagic(head)) {
    const vh = parseVolumeHeader(head, path, path);
    const suffix = `.${vh.volume}`;
    if (vh.volume < 2 || !path.endsWith(suffix))
      throw notAnImage(path, `volume ${vh.volume} of an image, but not named NAME.rimg${suffix}`);
    const base = path.slice(0, -suffix.length);
    if (!(await statOrNull(base))) {
      if (await statOrNull(base + PARTIAL_SUFFIX))
        throw imageIncomplete(base, `only ${basename(base)}${PARTIAL_SUFFIX} exists`);
      throw volumeMissing(base, 1, base);
    }
    return { base, volume: vh.volume };
  }
  throw notAnImage(path, 'neither the image magic RSCUIMG1 nor the volume magic RSCUVOL1 is there');
}

export class ImageReader {
  readonly path: string;
  readonly header: ImageHeader;
  readonly manifest: Manifest;
  readonly entries: IndexEntry[];
  readonly files: string[];
  readonly trailer: Trailer;
  readonly codec: ChunkCodec;
  /** Filled only by a tolerant open (checkImage): damage that did not stop the open. */
  readonly damage: OpenDamage;

  private readonly volumes: VolumeFiles;
  private readonly regions: Map<number, RegionInfo>;
  private readonly byRegion = new Map<number, { from: number; to: number }>();
  private readonly cache = new Map<number, Promise<Buffer>>();
  private readonly resolvePoint: ImageReaderOptions['resolvePoint'];
  private readonly onClose: ImageReaderOptions['onClose'];

  private constructor(init: {
    path: string;
    header: ImageHeader;
    manifest: Manifest;
    entries: IndexEntry[];
    trailer: Trailer;
    codec: ChunkCodec;
    volumes: VolumeFiles;
    regions: Map<number, RegionInfo>;
    damage: OpenDamage;
    resolvePoint: ImageReaderOptions['resolvePoint'];
    onClose?: ImageReaderOptions['onClose'];
  }) {
    this.path = init.path;
    this.header = init.header;
    this.manifest = init.manifest;
    this.entries = init.entries;
    this.trailer = init.trailer;
    this.codec = init.codec;
    this.volumes = init.volumes;
    this.files = init.volumes.paths;
    this.regions = init.regions;
    this.damage = init.damage;
    this.resolvePoint = init.resolvePoint;
    this.onClose = init.onClose;
    for (let i = 0; i < this.entries.length; i++) {
      const r = this.entries[i].regionId;
      const span = this.byRegion.get(r);
      if (span) span.to = i + 1;
      else this.byRegion.set(r, { from: i, to: i + 1 });
    }
  }

  /** Bytes of disk space one chunk covers. */
  get windowSize(): number {
    return this.header.windowSize;
  }

  static async open(path: string, opts: ImageReaderOptions = {}): Promise<ImageReader> {
    return ImageReader.openWith(path, opts, false);
  }

  /**
   * @internal checkImage: index or manifest damage is recorded in `damage` instead of thrown
   * (then `entries` is empty or `manifest` is a stub).
   */
  static async openWith(path: string, opts: ImageReaderOptions, tolerant: boolean): Promise<ImageReader> {
    const named = await locateHeader(path);
    const { base, header } = named;
    const image = base;
    const layout = new VolumeLayout(header.volumeLimit);
    if (header.volumeLimit !== 0 && header.volumeLimit < HEADER.SIZE + VOLUME_HEADER.SIZE)
      throw headerCorrupt(image, `volume size limit ${header.volumeLimit}`);
    if (
      header.totalLength < HEADER.SIZE + TRAILER.SIZE ||
      layout.volumeCount(header.totalLength) !== header.volumeCount
    )
      throw headerCorrupt(image, `${header.volumeCount} volumes for ${header.totalLength} bytes`);

    const paths: string[] = [];
    for (let v = 1; v <= header.volumeCount; v++) {
      const file = volumeFileName(base, v);
      paths.push(file);
      const st = await statOrNull(file, image);
      if (!st) throw volumeMissing(image, v, file);
      const expected = layout.fileSize(v, header.totalLength);
      if (st.size < expected) throw volumeTruncated(image, v, file, st.size, expected);
      if (st.size > expected)
        throw volumeMismatch(image, v, file, `it has ${st.size} bytes, ${expected} were written`);
      if (v === 1) continue;
      let vhBytes: Buffer;
      try {
        vhBytes = await readHead(file, VOLUME_HEADER.SIZE);
      } catch (e) {
        throw imageRead(image, file, 0, (e as Error).message);
      }
      const vh = parseVolumeHeader(vhBytes, image, file);
      if (!vh.imageId.equals(header.imageId)) throw volumeMismatch(image, v, file, 'its image id differs');
      if (
        vh.volume !== v ||
        vh.logicalOffset !== layout.logicalStart(v) ||
        vh.volumeLimit !== header.volumeLimit
      )
        throw headerCorrupt(image, `volume number ${vh.volume}, offset ${vh.logicalOffset}`, file);
    }
    // A stale NAME.rimg.N of an earlier, longer image (volumes ≤ count were checked above).
    if (named.volume > header.volumeCount)
      throw volumeMismatch(image, named.volume, path, `the image has only ${header.volumeCount} volumes`);
    const volumes = new VolumeFiles(image, paths, layout, header.totalLength);
    try {
      return await ImageReader.openRest(image, header, volumes, opts, tolerant);
    } catch (e) {
      await volumes.close();
      throw e;
    }
  }

  private static async openRest(
    image: string,
    header: ImageHeader,
    volumes: VolumeFiles,
    opts: ImageReaderOptions,
    tolerant: boolean,
  ): Promise<ImageReader> {
    const total = header.totalLength;
    const trailer = parseTrailer(await volumes.read(total - TRAILER.SIZE, TRAILER.SIZE), image);
    const bad = (why: string) => trailerCorrupt(image, why);
    if (!trailer.imageId.equals(header.imageId)) throw bad('its image id differs from the header');
    if (trailer.totalLength !== total) throw bad(`total length ${trailer.totalLength}, header ${total}`);
    if (trailer.volumeCount !== header.volumeCount) throw bad(`volume count ${trailer.volumeCount}`);
    if (trailer.volumeLimit !== header.volumeLimit) throw bad(`volume size limit ${trailer.volumeLimit}`);
    if (
      trailer.indexOffset < HEADER.SIZE ||
      trailer.manifestOffset !== trailer.indexOffset + trailer.indexLength ||
      trailer.manifestOffset + trailer.manifestLength !== total - TRAILER.SIZE
    )
      throw bad('index and manifest positions do not add up');

    // The key check comes before any encrypted byte is looked at.
    let key: Buffer | undefined;
    if (header.encrypted) {
      if (opts.password === undefined) throw passwordRequired(image);
      validatePassword(opts.password, image);
      if (!scryptParamsAcceptable(header.scrypt))
        throw headerCorrupt(
          image,
          `scrypt parameters 2^${header.scrypt.logN}/${header.scrypt.r}/${header.scrypt.p}`,
        );
      key = await deriveKey(opts.password, header.salt, header.scrypt);
      if (!keyMatches(key, header.imageId, header.keyCheck)) throw wrongPassword(image);
    }
    const compression: Compression =
      header.compressionLevel === 0
        ? 'none'
        : header.compressionLevel >= COMPRESSION_LEVEL.high
          ? 'high'
          : 'normal';
    const codec = new ChunkCodec({ imageId: header.imageId, compression, key });
    const damage: OpenDamage = {};

    let entries: IndexEntry[] = [];
    try {
      entries = await readIndex(image, volumes, trailer, header, key);
    } catch (e) {
      if (!tolerant || !isRescueError(e)) throw e;
      damage.index = e;
    }
    let manifest: Manifest;
    let regions = new Map<number, RegionInfo>();
    try {
      manifest = await readManifest(image, volumes, trailer, header, key);
      regions = regionInfos(manifest, image);
    } catch (e) {
      if (!tolerant || !isRescueError(e)) throw e;
      damage.manifest = e;
      manifest = stubManifest(header);
    }
    if (!damage.index && !damage.manifest) {
      try {
        checkCoverage(image, entries, regions, header.windowSize);
      } catch (e) {
        if (!tolerant || !isRescueError(e)) throw e;
        damage.index = e;
      }
    }
    return new ImageReader({
      path: image,
      header,
      manifest,
      entries,
      trailer,
      codec,
      volumes,
      regions,
      damage,
      resolvePoint: opts.resolvePoint,
      onClose: opts.onClose,
    });
  }

  /** Chunk number of an entry (its position in the index), by binary search. */
  chunkNumber(entry: IndexEntry): number {
    const span = this.byRegion.get(entry.regionId);
    if (!span) return -1;
    let lo = span.from;
    let hi = span.to;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.entries[mid].windowStart < entry.windowStart) lo = mid + 1;
      else hi = mid;
    }
    return lo < span.to && this.entries[lo].windowStart === entry.windowStart ? lo : -1;
  }

  /** Where a chunk is, for messages: chunk number, region, window and disk offset. */
  context(entry: IndexEntry, chunk = this.chunkNumber(entry)): ChunkContext {
    const info = this.regions.get(entry.regionId);
    let diskOffset: number | undefined;
    if (info) {
      const first = info.layout.pieces(entry.windowStart, entry.windowStart + this.header.windowSize).next();
      diskOffset = info.region.start + (first.done ? entry.windowStart : first.value.start);
    }
    return {
      image: this.path,
      chunk: chunk >= 0 ? chunk : undefined,
      regionId: entry.regionId,
      windowStart: entry.windowStart,
      diskOffset,
    };
  }

  /**
   * Verified raw bytes of a chunk and its stored payload as kept (compressed, and encrypted when the
   * image is) — wherever in the chain it lives. Merge copies unencrypted payloads without
   * recompressing them.
   */
  async readChunkStored(entry: IndexEntry): Promise<{ raw: Buffer; payload: Buffer }> {
    const { raw, payload } = await this.readChunkChecked(entry);
    return { raw, payload };
  }

  /** Verified raw bytes of a chunk (a zero chunk → zeros of its raw length). */
  async readChunk(entry: IndexEntry): Promise<Buffer> {
    return (await this.readChunkChecked(entry)).raw;
  }

  /**
   * @internal Like readChunk, but also says whether the record header in the stream agrees with
   * the index (its damage does not affect the data, which the index's sha256 verifies).
   */
  async readChunkChecked(
    entry: IndexEntry,
    chunk?: number,
  ): Promise<{ raw: Buffer; recordProblem: RescueError | null; payload: Buffer }> {
    const ctx = this.context(entry, chunk);
    if (entry.flags & ENTRY_FLAGS.OTHER_POINT) {
      const other = await this.pointOf(entry, ctx);
      // The holder must list this very chunk: same window, flags, payload, length and sha256.
      const i = other.chunkNumber(entry);
      const held = i >= 0 ? other.entries[i] : undefined;
      if (
        !held ||
        held.flags !== (entry.flags & ~ENTRY_FLAGS.OTHER_POINT) ||
        held.payloadOffset !== entry.payloadOffset ||
        held.storedLength !== entry.storedLength ||
        held.rawLength !== entry.rawLength ||
        !held.sha256.equals(entry.sha256)
      )
        throw chunkCorrupt(ctx, `the point ${entry.pointId} it refers to holds no such chunk`);
      return other.readChunkChecked(held, i);
    }
    if (entry.flags & ENTRY_FLAGS.ZERO)
      return {
        raw: await this.codec.decode(entry, Buffer.alloc(0), ctx),
        recordProblem: null,
        payload: Buffer.alloc(0),
      };
    const { payload, recordProblem } = await this.readRecord(entry, ctx);
    if (entry.flags & ENTRY_FLAGS.DELTA) {
      const patch = await this.codec.decodePatch(entry, payload, ctx);
      const raw = await this.applyDelta(entry, patch, ctx);
      return { raw, recordProblem, payload };
    }
    const raw = await this.codec.decode(entry, payload, ctx);
    return { raw, recordProblem, payload };
  }

  /**
   * @internal checkImage without the chain: a delta record's own payload verified as far as it can
   * be without its base (GCM, zstd, the patch's structure).
   */
  async checkDeltaRecord(entry: IndexEntry, chunk?: number): Promise<{ recordProblem: RescueError | null }> {
    const ctx = this.context(entry, chunk);
    const { payload, recordProblem } = await this.readRecord(entry, ctx);
    const why = patchProblem(await this.codec.decodePatch(entry, payload, ctx), this.header.windowSize);
    if (why) throw chunkCorrupt(ctx, why);
    return { recordProblem };
  }

  /** The opened point an entry names (a reference's holder, a delta's base). */
  private async pointOf(entry: IndexEntry, ctx: ChunkContext): Promise<ImageReader> {
    if (!this.resolvePoint) throw pointRequired(ctx, entry.pointId);
    const other = await this.resolvePoint(entry.pointId);
    if (other.header.imageId.toString('hex') !== entry.pointId) throw pointRequired(ctx, entry.pointId);
    return other;
  }

  /** A delta record's raw bytes: its base point's record for the window, patched, verified. */
  private async applyDelta(entry: IndexEntry, patch: Buffer, ctx: ChunkContext): Promise<Buffer> {
    const other = await this.pointOf(entry, ctx);
    const i = other.chunkNumber(entry);
    const held = i >= 0 ? other.entries[i] : undefined;
    if (!held || held.flags & (ENTRY_FLAGS.OTHER_POINT | ENTRY_FLAGS.DELTA))
      throw chunkCorrupt(
        ctx,
        `the point ${entry.pointId} holds no record of this window to apply the delta to`,
      );
    const W = this.header.windowSize;
    const baseInfo = other.region(entry.regionId);
    const info = this.regions.get(entry.regionId);
    if (!baseInfo || !info || other.header.windowSize !== W)
      throw chunkCorrupt(ctx, `the point ${entry.pointId} does not have this region`);
    const base = (await other.readChunkChecked(held, i)).raw;
    const end = entry.windowStart + W;
    const raw = applyPatch(
      patch,
      { raw: base, pieces: [...baseInfo.layout.pieces(entry.windowStart, end)] },
      [...info.layout.pieces(entry.windowStart, end)],
      entry.windowStart,
      W,
    );
    if (typeof raw === 'string') throw chunkCorrupt(ctx, `delta: ${raw}`);
    if (raw.length !== entry.rawLength)
      throw chunkCorrupt(ctx, `${raw.length} raw bytes after the delta, the index says ${entry.rawLength}`);
    if (!(await sha256Async(raw)).equals(entry.sha256))
      throw chunkCorrupt(ctx, 'sha256 mismatch (after applying the delta)');
    return raw;
  }

  /** A record's payload, and whether its record header agrees with the index. */
  private async readRecord(
    entry: IndexEntry,
    ctx: ChunkContext,
  ): Promise<{ payload: Buffer; recordProblem: RescueError | null }> {
    const start = entry.payloadOffset - RECORD_HEADER.SIZE;
    if (start < HEADER.SIZE || entry.payloadOffset + entry.storedLength > this.trailer.indexOffset)
      throw chunkCorrupt(ctx, `its payload at ${entry.payloadOffset} lies outside the record area`);
    const bytes = await this.volumes.read(start, RECORD_HEADER.SIZE + entry.storedLength);
    const rec = parseRecordHeader(bytes.subarray(0, RECORD_HEADER.SIZE));
    let recordProblem: RescueError | null = null;
    if (typeof rec === 'string') recordProblem = recordCorrupt(ctx, rec);
    else if (
      rec.regionId !== entry.regionId ||
      rec.windowStart !== entry.windowStart ||
      rec.rawLength !== entry.rawLength ||
      rec.storedLength !== entry.storedLength ||
      rec.flags !== entry.flags
    )
      recordProblem = recordCorrupt(ctx, 'it disagrees with the index');
    return { payload: bytes.subarray(RECORD_HEADER.SIZE), recordProblem };
  }

  /** Bytes [offset, offset+length) of a region as restored; bytes the used map leaves out read as zeros. */
  async readRegion(regionId: number, offset: number, length: number): Promise<Buffer> {
    const info = this.regions.get(regionId);
    if (!info) throw regionNotFound(this.path, regionId);
    const size = info.region.size;
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > size
    )
      throw regionRange(this.path, regionId, offset, length, size);
    const out = Buffer.alloc(length);
    const W = this.header.windowSize;
    const end = offset + length;
    for (let ws = Math.floor(offset / W) * W; ws < end; ws += W) {
      const from = Math.max(offset, ws);
      const to = Math.min(end, ws + W);
      const pieces = [...info.layout.pieces(from, to)];
      if (pieces.length === 0) continue;
      const chunk = this.findChunk(regionId, ws);
      if (chunk < 0) throw indexCorrupt(this.path, `no chunk for region ${regionId} window ${ws}`);
      const raw = await this.cachedChunk(chunk);
      const rawBase = info.layout.usedBefore(ws);
      for (const p of pieces) {
        const at = info.layout.usedBefore(p.start) - rawBase;
        raw.copy(out, p.start - offset, at, at + p.length);
      }
    }
    return out;
  }

  private findChunk(regionId: number, windowStart: number): number {
    return this.chunkNumber({ regionId, windowStart } as IndexEntry);
  }

  private cachedChunk(i: number): Promise<Buffer> {
    let p = this.cache.get(i);
    if (p) {
      this.cache.delete(i);
      this.cache.set(i, p);
      return p;
    }
    p = this.readChunk(this.entries[i]);
    p.catch(() => this.cache.delete(i));
    this.cache.set(i, p);
    if (this.cache.size > CHUNK_CACHE) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }

  /** @internal Raw logical bytes (salvage walk in checkImage). */
  readLogical(pos: number, length: number): Promise<Buffer> {
    return this.volumes.read(pos, length);
  }

  /** @internal Region info (used maps) by id. */
  region(id: number): RegionInfo | undefined {
    return this.regions.get(id);
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.volumes.close();
    await this.onClose?.();
  }
}

async function readIndex(
  image: string,
  volumes: VolumeFiles,
  trailer: Trailer,
  header: ImageHeader,
  key: Buffer | undefined,
): Promise<IndexEntry[]> {
  const stored = await volumes.read(trailer.indexOffset, trailer.indexLength);
  if (!sha256(stored).equals(trailer.indexSha256)) throw indexCorrupt(image, 'sha256 mismatch');
  const expected = trailer.chunkCount * INDEX_ENTRY_SIZE;
  const raw = await openMetadata(stored, header.imageId, INDEX_AAD_WINDOW, key, METADATA_REGION_ID, expected);
  if (typeof raw === 'string') throw indexCorrupt(image, raw);
  const entries = parseIndex(raw, trailer.chunkCount, image);
  validateEntries(image, entries, header, trailer);
  return entries;
}

/** Ordering, flags, lengths, and that this image's records tile [header end, index) exactly. */
function validateEntries(image: string, entries: IndexEntry[], header: ImageHeader, trailer: Trailer): void {
  const W = header.windowSize;
  const own = header.imageId.toString('hex');
  const overhead = header.encrypted ? GCM_OVERHEAD : 0;
  let cursor = HEADER.SIZE;
  let prevRegion = -1;
  let prevWindow = -1;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const bad = (why: string) =>
      indexCorrupt(image, `entry ${i} (region ${e.regionId}, window ${e.windowStart}): ${why}`);
    if ((e.flags & ~ENTRY_FLAGS_MASK) !== 0) throw bad(`unknown flags ${e.flags}`);
    if (e.regionId >= METADATA_REGION_ID) throw bad('region id');
    if (e.regionId < prevRegion || (e.regionId === prevRegion && e.windowStart <= prevWindow))
      throw bad('out of order');
    prevRegion = e.regionId;
    prevWindow = e.windowStart;
    if (e.windowStart % W !== 0) throw bad(`window start is not a multiple of ${W}`);
    if (e.rawLength < 1 || e.rawLength > W) throw bad(`raw length ${e.rawLength}`);
    const zero = (e.flags & ENTRY_FLAGS.ZERO) !== 0;
    const delta = (e.flags & ENTRY_FLAGS.DELTA) !== 0;
    if (e.flags & (ENTRY_FLAGS.OTHER_POINT | ENTRY_FLAGS.DELTA)) {
      if (e.pointId === '' || e.pointId === own) throw bad('refers to another point without naming it');
      if (header.pointType === 'full') throw bad('a full point refers to another point');
      if (delta && zero) throw bad('a delta record flagged zero');
      if (e.flags & ENTRY_FLAGS.OTHER_POINT) continue;
    } else if (e.pointId !== '') throw bad('names a point without the flag');
    if (zero && e.storedLength !== 0) throw bad('a zero chunk with stored bytes');
    if (delta) {
      // A patch is never longer than the raw bytes it produces.
      if (e.storedLength <= overhead || e.storedLength > e.rawLength + overhead)
        throw bad(`stored length ${e.storedLength} of a delta record for raw length ${e.rawLength}`);
    } else if (!zero) {
      const raw = (e.flags & ENTRY_FLAGS.STORED_RAW) !== 0;
      if (
        raw
          ? e.storedLength !== e.rawLength + overhead
          : e.storedLength <= overhead || e.storedLength >= e.rawLength + overhead
      )
        throw bad(`stored length ${e.storedLength} for raw length ${e.rawLength}`);
    }
    if (e.payloadOffset !== cursor + RECORD_HEADER.SIZE)
      throw bad(`payload at ${e.payloadOffset}, expected ${cursor + RECORD_HEADER.SIZE}`);
    cursor = e.payloadOffset + e.storedLength;
  }
  if (cursor !== trailer.indexOffset)
    throw indexCorrupt(image, `the records end at ${cursor}, the index starts at ${trailer.indexOffset}`);
}

async function readManifest(
  image: string,
  volumes: VolumeFiles,
  trailer: Trailer,
  header: ImageHeader,
  key: Buffer | undefined,
): Promise<Manifest> {
  const stored = await volumes.read(trailer.manifestOffset, trailer.manifestLength);
  if (!sha256(stored).equals(trailer.manifestSha256)) throw manifestCorrupt(image, 'sha256 mismatch');
  const raw = await openMetadata(
    stored,
    header.imageId,
    MANIFEST_AAD_WINDOW,
    key,
    METADATA_REGION_ID,
    MAX_MANIFEST_BYTES,
  );
  if (typeof raw === 'string') throw manifestCorrupt(image, raw);
  let m: unknown;
  try {
    m = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw manifestCorrupt(image, `not JSON: ${(e as Error).message}`);
  }
  const problem = manifestProblem(m);
  if (problem) throw manifestCorrupt(image, problem);
  const manifest = m as Manifest;
  if (manifest.point.id !== header.imageId.toString('hex'))
    throw manifestCorrupt(image, 'its point id differs from the header');
  if (manifest.point.type !== header.pointType)
    throw manifestCorrupt(image, 'its point type differs from the header');
  if (manifest.options.window !== header.windowSize)
    throw manifestCorrupt(image, 'its window size differs from the header');
  if (manifest.options.encrypted !== header.encrypted)
    throw manifestCorrupt(image, 'its encryption flag differs from the header');
  return manifest;
}

/** The index must list exactly the windows the used maps say hold data, with their raw lengths. */
function checkCoverage(
  image: string,
  entries: IndexEntry[],
  regions: Map<number, RegionInfo>,
  W: number,
): void {
  let i = 0;
  for (const id of [...regions.keys()].sort((a, b) => a - b)) {
    const info = regions.get(id)!;
    for (const w of info.layout.windows(W)) {
      const e = entries[i];
      if (!e || e.regionId !== id || e.windowStart !== w.windowStart)
        throw indexCorrupt(
          image,
          `no chunk for region ${id} window ${w.windowStart}, which holds used bytes`,
        );
      if (e.rawLength !== w.rawLength)
        throw indexCorrupt(
          image,
          `chunk ${i} (region ${id}, window ${w.windowStart}) has ${e.rawLength} bytes, the used map ${w.rawLength}`,
        );
      i++;
    }
  }
  if (i < entries.length)
    throw indexCorrupt(
      image,
      `chunk ${i} (region ${entries[i].regionId}, window ${entries[i].windowStart}) lies outside every used map`,
    );
}

function stubManifest(header: ImageHeader): Manifest {
  return {
    format: 1,
    tool: header.tool,
    created: new Date(header.created).toISOString(),
    kind: 'disk',
    name: '',
    comment: '',
    point: {
      id: header.imageId.toString('hex'),
      type: header.pointType,
      parent: null,
      chain: header.chainId.toString('hex'),
      sequence: 0,
    },
    options: {
      compression: 'normal',
      level: header.compressionLevel,
      encrypted: header.encrypted,
      sectorBySector: false,
      split: header.volumeLimit || null,
      window: header.windowSize,
    },
    disks: [],
    stats: { usedBytes: 0, storedBytes: 0, chunks: 0, seconds: 0 },
  };
}
