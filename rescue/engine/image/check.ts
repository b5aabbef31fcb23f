/**
 * `rescue check`: verifies every chunk of an image, its index, manifest, header and trailer, and
 * reports per-chunk verdicts. Damage is reported, never thrown; only "cannot even start" (no such
 * file, no or wrong password) and cancellation throw.
 *
 * When the index itself is damaged, the chunk records are walked instead (the record headers
 * exist for this): every payload's GCM tag, zstd frame and length are still verified, only the
 * sha256 (kept in the index) cannot be.
 */
import { isRescueError, type RescueError } from '../errors.ts';
import { aadFor, decrypt, unzstd } from './codec.ts';
import { patchProblem } from './delta.ts';
import { cancelled, chunkCorrupt } from './failures.ts';
import { parseRecordHeader } from './layout.ts';
import { ImageReader } from './reader.ts';
import {
  type CheckProblem,
  type CheckReport,
  ENTRY_FLAGS,
  HEADER,
  type IndexEntry,
  RECORD_HEADER,
} from './types.ts';

export interface CheckOptions {
  password?: string;
  signal?: AbortSignal;
  /** Stored bytes verified so far and in all. */
  onProgress?: (done: number, total: number) => void;
  /** Chunks verified in parallel (default 4). */
  concurrency?: number;
}

/** Codes that mean "the image is damaged or incomplete": reported, not thrown. */
export const DAMAGE = new Set([
  'E_NOT_AN_IMAGE',
  'E_IMAGE_INCOMPLETE',
  'E_VOLUME_MISSING',
  'E_VOLUME_TRUNCATED',
  'E_VOLUME_MISMATCH',
  'E_HEADER_CORRUPT',
  'E_TRAILER_CORRUPT',
  'E_INDEX_CORRUPT',
  'E_MANIFEST_CORRUPT',
  'E_CHUNK_CORRUPT',
  'E_RECORD_CORRUPT',
  'E_IMAGE_READ',
  'E_FORMAT_VERSION',
]);

function problemOf(e: RescueError): CheckProblem {
  const d = e.details ?? {};
  const p: CheckProblem = { code: e.code, message: e.message };
  if (typeof d.chunk === 'number') p.chunk = d.chunk;
  if (typeof d.region === 'number') p.region = d.region;
  if (typeof d.windowStart === 'number') p.windowStart = d.windowStart;
  if (typeof d.diskOffset === 'number') p.diskOffset = d.diskOffset;
  return p;
}

function isDamage(e: unknown): e is RescueError {
  return isRescueError(e) && DAMAGE.has(e.code);
}

export async function checkImage(path: string, opts: CheckOptions = {}): Promise<CheckReport> {
  const report: CheckReport = { ok: true, image: path, points: [], chunks: 0, bytes: 0 };
  let reader: ImageReader;
  try {
    reader = await ImageReader.openWith(path, { password: opts.password }, true);
  } catch (e) {
    if (!isDamage(e)) throw e;
    report.ok = false;
    report.points.push({ id: '', type: 'unknown', ok: false, problems: [problemOf(e)] });
    return report;
  }
  report.image = reader.path;
  const problems: CheckProblem[] = [];
  try {
    if (reader.damage.index) problems.push(problemOf(reader.damage.index));
    if (reader.damage.manifest) problems.push(problemOf(reader.damage.manifest));
    if (reader.damage.index) await walkRecords(reader, opts, report, problems);
    else await verifyEntries(reader, opts, report, problems);
  } finally {
    await reader.close();
  }
  const ok = problems.length === 0;
  report.ok = ok;
  report.points.push({
    id: reader.header.imageId.toString('hex'),
    type: reader.header.pointType,
    ok,
    problems,
  });
  return report;
}

async function verifyEntries(
  reader: ImageReader,
  opts: CheckOptions,
  report: CheckReport,
  problems: CheckProblem[],
): Promise<void> {
  const own: number[] = [];
  let total = 0;
  reader.entries.forEach((e: IndexEntry, i: number) => {
    if (e.flags & ENTRY_FLAGS.OTHER_POINT) return;
    own.push(i);
    total += RECORD_HEADER.SIZE + e.storedLength;
  });
  let done = 0;
  let next = 0;
  const found: { i: number; p: CheckProblem }[] = [];
  const worker = async () => {
    while (next < own.length) {
      if (opts.signal?.aborted) throw cancelled(reader.path);
      const i = own[next++];
      const e = reader.entries[i];
      try {
        // A delta record's result needs its base point: checkChain applies it; alone, its own
        // payload is verified as far as it can be.
        const { recordProblem } =
          e.flags & ENTRY_FLAGS.DELTA
            ? await reader.checkDeltaRecord(e, i)
            : await reader.readChunkChecked(e, i);
        if (recordProblem) found.push({ i, p: problemOf(recordProblem) });
      } catch (err) {
        if (!isDamage(err)) throw err;
        found.push({ i, p: problemOf(err) });
      }
      report.chunks++;
      done += RECORD_HEADER.SIZE + e.storedLength;
      report.bytes = done;
      opts.onProgress?.(done, total);
    }
  };
  const n = Math.max(1, Math.min(opts.concurrency ?? 4, 16));
  await Promise.all(Array.from({ length: n }, worker));
  found.sort((a, b) => a.i - b.i);
  for (const f of found) problems.push(f.p);
}

/** The index is gone: walk the record headers and verify what can be verified without it. */
async function walkRecords(
  reader: ImageReader,
  opts: CheckOptions,
  report: CheckReport,
  problems: CheckProblem[],
): Promise<void> {
  const end = reader.trailer.indexOffset;
  const total = end - HEADER.SIZE;
  const key = reader.codec.key;
  let pos = HEADER.SIZE;
  let n = 0;
  while (pos < end) {
    if (opts.signal?.aborted) throw cancelled(reader.path);
    if (end - pos < RECORD_HEADER.SIZE) {
      problems.push({
        code: 'E_RECORD_CORRUPT',
        message: `${reader.path}: ${end - pos} stray bytes before the index`,
      });
      return;
    }
    const rec = parseRecordHeader(await reader.readLogical(pos, RECORD_HEADER.SIZE));
    if (typeof rec === 'string' || rec.storedLength > end - pos - RECORD_HEADER.SIZE) {
      const why = typeof rec === 'string' ? rec : 'its stored length runs past the record area';
      problems.push({
        code: 'E_RECORD_CORRUPT',
        message: `${reader.path}: the record header at offset ${pos} (chunk ${n}) is damaged (${why}); the chunks after it cannot be found without the index`,
        chunk: n,
      });
      return;
    }
    const ctx = { image: reader.path, chunk: n, regionId: rec.regionId, windowStart: rec.windowStart };
    const payload = await reader.readLogical(pos + RECORD_HEADER.SIZE, rec.storedLength);
    const why = await verifyWithoutIndex(payload, rec, key, reader.header.imageId, reader.header.windowSize);
    if (why) problems.push(problemOf(chunkCorrupt(ctx, why)));
    pos += RECORD_HEADER.SIZE + rec.storedLength;
    n++;
    report.chunks = n;
    report.bytes = pos - HEADER.SIZE;
    opts.onProgress?.(pos - HEADER.SIZE, total);
  }
}

async function verifyWithoutIndex(
  payload: Buffer,
  rec: { regionId: number; windowStart: number; rawLength: number; flags: number },
  key: Buffer | undefined,
  imageId: Buffer,
  windowSize: number,
): Promise<string | null> {
  if (rec.flags & ENTRY_FLAGS.ZERO) return payload.length === 0 ? null : 'a zero chunk with stored bytes';
  let plain = payload;
  if (key) {
    const p = decrypt(key, aadFor(imageId, rec.regionId, BigInt(rec.windowStart)), payload);
    if (!p) return 'AES-GCM authentication failed';
    plain = p;
  }
  const delta = (rec.flags & ENTRY_FLAGS.DELTA) !== 0;
  if (rec.flags & ENTRY_FLAGS.STORED_RAW) {
    if (delta) return plain.length <= rec.rawLength ? patchProblem(plain, windowSize) : 'wrong length';
    return plain.length === rec.rawLength ? null : 'wrong length';
  }
  try {
    const raw = await unzstd(plain, rec.rawLength);
    if (delta) return patchProblem(raw, windowSize);
    return raw.length === rec.rawLength ? null : `${raw.length} raw bytes, the record says ${rec.rawLength}`;
  } catch (e) {
    return `zstd: ${(e as Error).message}`;
  }
}
