/**
 * Used maps as the manifest stores them (unsigned LEB128 varints, alternately the gap since the
 * previous extent's end and the extent's length, base64), and the window arithmetic shared by the
 * backup (which bytes make up a chunk) and the reader (where a byte of a region sits in a chunk).
 */
import { RescueError } from '../errors.ts';
import { internal } from './failures.ts';
import type { Extent } from './types.ts';

const VARINT_MAX_BYTES = 8; // 7 bits each: 56 bits cover every safe integer
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function usedMapCorrupt(image: string, why: string): RescueError {
  return new RescueError(
    'E_MANIFEST_CORRUPT',
    `${image}: a used map in the manifest is damaged: ${why}`,
    'The image cannot be restored without its used maps; restore from another copy of the image.',
    { image, why },
  );
}

function pushVarint(out: number[], v: number): void {
  let x = v;
  while (x >= 0x80) {
    out.push((x % 0x80) | 0x80);
    x = Math.floor(x / 0x80);
  }
  out.push(x);
}

/**
 * Extents must be sorted and non-overlapping (a UsedMap's are); touching extents are merged, so the
 * text is canonical: decodeUsedMap(encodeUsedMap(x)) is x merged.
 */
export function encodeUsedMap(extents: readonly Extent[]): string {
  const bytes: number[] = [];
  let pos = 0;
  let pendingStart = -1;
  let pendingEnd = -1;
  let prevEnd = 0;
  const flush = () => {
    if (pendingStart < 0) return;
    pushVarint(bytes, pendingStart - prevEnd);
    pushVarint(bytes, pendingEnd - pendingStart);
    prevEnd = pendingEnd;
  };
  for (const e of extents) {
    if (!Number.isSafeInteger(e.start) || !Number.isSafeInteger(e.length) || e.start < pos || e.length < 0)
      throw internal(`encodeUsedMap: extents not sorted/non-overlapping at ${e.start}+${e.length}`);
    if (e.length === 0) continue;
    if (e.start === pendingEnd) {
      pendingEnd += e.length;
    } else {
      flush();
      pendingStart = e.start;
      pendingEnd = e.start + e.length;
    }
    pos = e.start + e.length;
  }
  flush();
  return Buffer.from(bytes).toString('base64');
}

/** Parses and validates a used map: extents non-empty, separated, sorted and inside the region. */
export function decodeUsedMap(text: string, regionSize: number, image = 'image'): Extent[] {
  if (typeof text !== 'string' || text.length % 4 !== 0 || !BASE64_RE.test(text))
    throw usedMapCorrupt(image, 'not base64');
  const b = Buffer.from(text, 'base64');
  const out: Extent[] = [];
  let i = 0;
  const next = (): number => {
    let v = 0;
    let mul = 1;
    for (let n = 0; n < VARINT_MAX_BYTES; n++) {
      if (i >= b.length) throw usedMapCorrupt(image, 'ends inside a number');
      const byte = b[i++];
      v += (byte & 0x7f) * mul;
      if ((byte & 0x80) === 0) {
        if (!Number.isSafeInteger(v)) throw usedMapCorrupt(image, 'number too large');
        return v;
      }
      mul *= 0x80;
    }
    throw usedMapCorrupt(image, 'number too long');
  };
  let end = 0;
  while (i < b.length) {
    const gap = next();
    const length = next();
    if (length === 0) throw usedMapCorrupt(image, `empty extent after byte ${end}`);
    if (gap === 0 && out.length > 0) throw usedMapCorrupt(image, `extents touch at byte ${end}`);
    const start = end + gap;
    end = start + length;
    if (!Number.isSafeInteger(end) || end > regionSize)
      throw usedMapCorrupt(image, `extent ${start}+${length} lies outside the region (${regionSize} bytes)`);
    out.push({ start, length });
  }
  return out;
}

/** One window of a region that holds used bytes: what a chunk is made of. */
export interface WindowPlan {
  windowStart: number;
  /** Sum of the extents' lengths = the chunk's raw length. */
  rawLength: number;
  /** Used byte ranges of the window, relative to the region's start, in order. */
  extents: Extent[];
}

/**
 * The windows of a region that hold used bytes, in order, with the extents clipped to each window.
 * A backup reads `extents` of each plan, concatenates them and encodes that as the chunk.
 */
export function* windowsOf(extents: readonly Extent[], windowSize: number): Generator<WindowPlan> {
  let cur: WindowPlan | null = null;
  for (const e of extents) {
    let s = e.start;
    const end = e.start + e.length;
    while (s < end) {
      const ws = Math.floor(s / windowSize) * windowSize;
      const pieceEnd = Math.min(end, ws + windowSize);
      if (cur && cur.windowStart !== ws) {
        yield cur;
        cur = null;
      }
      if (!cur) cur = { windowStart: ws, rawLength: 0, extents: [] };
      cur.extents.push({ start: s, length: pieceEnd - s });
      cur.rawLength += pieceEnd - s;
      s = pieceEnd;
    }
  }
  if (cur) yield cur;
}

/**
 * Position lookups in a region's used map: how many used bytes lie before an offset, and which
 * extents intersect a range. Binary searches; no per-byte work.
 */
export class UsedLayout {
  readonly size: number;
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;
  /** Used bytes before extent i. */
  private readonly before: Float64Array;

  constructor(extents: readonly Extent[], size: number) {
    this.size = size;
    const n = extents.length;
    this.starts = new Float64Array(n);
    this.ends = new Float64Array(n);
    this.before = new Float64Array(n);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      this.starts[i] = extents[i].start;
      this.ends[i] = extents[i].start + extents[i].length;
      this.before[i] = sum;
      sum += extents[i].length;
    }
  }

  static whole(size: number): UsedLayout {
    return new UsedLayout(size > 0 ? [{ start: 0, length: size }] : [], size);
  }

  get extentCount(): number {
    return this.starts.length;
  }

  /** Index of the first extent ending after x (= extentCount when none does). */
  private firstEndingAfter(x: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** Used bytes in [0, x). */
  usedBefore(x: number): number {
    const i = this.firstEndingAfter(x);
    if (i >= this.starts.length)
      return i === 0 ? 0 : this.before[i - 1] + (this.ends[i - 1] - this.starts[i - 1]);
    return this.before[i] + Math.max(0, x - this.starts[i]);
  }

  /** Used pieces of [from, to), clipped. */
  *pieces(from: number, to: number): Generator<Extent> {
    for (let i = this.firstEndingAfter(from); i < this.starts.length && this.starts[i] < to; i++) {
      const s = Math.max(from, this.starts[i]);
      const e = Math.min(to, this.ends[i]);
      if (e > s) yield { start: s, length: e - s };
    }
  }

  /** Window starts (ascending) of the windows holding used bytes, and their raw lengths. */
  *windows(windowSize: number): Generator<{ windowStart: number; rawLength: number }> {
    let cur = -1;
    let len = 0;
    for (let i = 0; i < this.starts.length; i++) {
      let s = this.starts[i];
      const end = this.ends[i];
      while (s < end) {
        const ws = Math.floor(s / windowSize) * windowSize;
        const pe = Math.min(end, ws + windowSize);
        if (ws !== cur) {
          if (cur >= 0) yield { windowStart: cur, rawLength: len };
          cur = ws;
          len = 0;
        }
        len += pe - s;
        s = pe;
      }
    }
    if (cur >= 0) yield { windowStart: cur, rawLength: len };
  }
}

/** Whether every byte of `inner` lies in `outer` (both sorted, non-overlapping). */
function covered(inner: readonly Extent[], outer: readonly Extent[]): boolean {
  let j = 0;
  for (const e of inner) {
    let at = e.start;
    const end = e.start + e.length;
    while (at < end) {
      while (j < outer.length && outer[j].start + outer[j].length <= at) j++;
      if (j >= outer.length || outer[j].start > at) return false;
      at = Math.min(end, outer[j].start + outer[j].length);
    }
  }
  return true;
}

/**
 * Incremental points: the used map to record for a region whose previous point recorded
 * `previous`. In every window where the blocks used now are a subset of those used before (files
 * were deleted or shrunk, nothing new allocated), the previous window's ranges are kept — freed
 * blocks still hold their old bytes, so the window can still match its previous chunk and be
 * referenced instead of stored again. A used map may include too much, never too little: the
 * result always covers `current`. Windows with no used bytes now stay empty.
 */
export function keepPreviousLayout(
  current: readonly Extent[],
  previous: readonly Extent[],
  windowSize: number,
): Extent[] {
  const prev = new Map<number, Extent[]>();
  for (const w of windowsOf(previous, windowSize)) prev.set(w.windowStart, w.extents);
  const out: Extent[] = [];
  const push = (e: Extent) => {
    const last = out[out.length - 1];
    if (last && last.start + last.length >= e.start) {
      last.length = Math.max(last.length, e.start + e.length - last.start);
    } else out.push({ start: e.start, length: e.length });
  };
  for (const w of windowsOf(current, windowSize)) {
    const p = prev.get(w.windowStart);
    for (const e of p && covered(w.extents, p) ? p : w.extents) push(e);
  }
  return out;
}
