/**
 * Delta records: a window that changed only a little since an earlier point is stored as a patch of
 * that point's record for the same window instead of as a whole chunk.
 *
 * The patch works on the window's disk space (W bytes from the window start): the base chunk's raw
 * bytes are put back where its used map says they lie (the rest reads as zeros), the patch's literal
 * runs overwrite their places, and the new raw bytes are gathered from the new used map. So a patch
 * holds only the bytes that really changed, even when the used map itself changed (blocks allocated
 * or freed in the window). The result is verified against the entry's sha256 by the reader.
 *
 * Patch bytes (before compression and encryption, little-endian):
 *   "RDP1" · u32 run count n · n × (u32 offset in the window, u32 length) · the runs' bytes in order
 * Runs are ascending, do not overlap or touch, lie inside the window and are not empty.
 */
import type { Extent } from './types.ts';

const MAGIC = Buffer.from('RDP1', 'latin1');
const HEAD = 8;
const RUN = 8;
/** Equal bytes between two differences shorter than this are carried as literals (a run costs 8). */
const MERGE_GAP = 16;
/** Compared in blocks with memcmp first; only differing blocks are looked at byte by byte. */
const BLOCK = 256;

/** A window's disk space with `raw` put back at `pieces` (region-relative, inside the window). */
function scatter(
  raw: Buffer,
  pieces: readonly Extent[],
  windowStart: number,
  windowSize: number,
): Buffer | string {
  const win = Buffer.alloc(windowSize);
  let at = 0;
  for (const p of pieces) {
    const off = p.start - windowStart;
    if (off < 0 || off + p.length > windowSize) return 'a used range lies outside the window';
    if (at + p.length > raw.length) return 'the base chunk is shorter than its used map';
    raw.copy(win, off, at, at + p.length);
    at += p.length;
  }
  if (at !== raw.length) return 'the base chunk is longer than its used map';
  return win;
}

/**
 * The patch turning the base window into `raw` (the new used bytes at `pieces`), or null when it
 * would not be worth it: larger than `limit` bytes.
 */
export function makePatch(
  base: { raw: Buffer; pieces: readonly Extent[] },
  raw: Buffer,
  pieces: readonly Extent[],
  windowStart: number,
  windowSize: number,
  limit: number,
): Buffer | null {
  const win = scatter(base.raw, base.pieces, windowStart, windowSize);
  if (typeof win === 'string') return null;
  const runs: { start: number; end: number }[] = [];
  let literal = 0;
  const add = (s: number, e: number): boolean => {
    const last = runs[runs.length - 1];
    if (last && s - last.end < MERGE_GAP) {
      literal += e - last.end;
      last.end = e;
    } else {
      runs.push({ start: s, end: e });
      literal += e - s;
    }
    return HEAD + runs.length * RUN + literal <= limit;
  };
  // The window as it is now: the base's bytes with the new used bytes put in their places.
  const now = Buffer.from(win);
  let at = 0;
  for (const p of pieces) {
    const off = p.start - windowStart;
    if (off < 0 || off + p.length > windowSize || at + p.length > raw.length) return null;
    raw.copy(now, off, at, at + p.length);
    at += p.length;
  }
  for (const p of pieces) {
    const off = p.start - windowStart;
    for (let b = off; b < off + p.length; b += BLOCK) {
      const e = Math.min(b + BLOCK, off + p.length);
      if (now.compare(win, b, e, b, e) === 0) continue;
      let i = b;
      while (i < e) {
        if (now[i] === win[i]) {
          i++;
          continue;
        }
        let j = i + 1;
        while (j < e && now[j] !== win[j]) j++;
        if (!add(i, j)) return null;
        i = j;
      }
    }
  }
  const out = Buffer.allocUnsafe(HEAD + runs.length * RUN + literal);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(runs.length, 4);
  let lit = HEAD + runs.length * RUN;
  runs.forEach((r, k) => {
    out.writeUInt32LE(r.start, HEAD + k * RUN);
    out.writeUInt32LE(r.end - r.start, HEAD + k * RUN + 4);
    now.copy(out, lit, r.start, r.end);
    lit += r.end - r.start;
  });
  return out;
}

/** Checks a patch's structure; the reason when it is malformed. */
export function patchProblem(patch: Buffer, windowSize: number): string | null {
  if (patch.length < HEAD || !patch.subarray(0, 4).equals(MAGIC)) return 'not a delta patch';
  const n = patch.readUInt32LE(4);
  if (HEAD + n * RUN > patch.length) return `a patch of ${patch.length} bytes cannot hold ${n} runs`;
  let literal = 0;
  let prevEnd = -1;
  for (let k = 0; k < n; k++) {
    const off = patch.readUInt32LE(HEAD + k * RUN);
    const len = patch.readUInt32LE(HEAD + k * RUN + 4);
    if (len === 0 || off + len > windowSize || off <= prevEnd) return `patch run ${k} is out of place`;
    prevEnd = off + len;
    literal += len;
  }
  if (HEAD + n * RUN + literal !== patch.length) return 'the patch runs do not add up to its length';
  return null;
}

/**
 * The new raw bytes: the base window with the patch applied, gathered at `pieces`. A string says why
 * the patch does not apply (the caller still verifies the result's sha256).
 */
export function applyPatch(
  patch: Buffer,
  base: { raw: Buffer; pieces: readonly Extent[] },
  pieces: readonly Extent[],
  windowStart: number,
  windowSize: number,
): Buffer | string {
  const bad = patchProblem(patch, windowSize);
  if (bad) return bad;
  const win = scatter(base.raw, base.pieces, windowStart, windowSize);
  if (typeof win === 'string') return win;
  const n = patch.readUInt32LE(4);
  let lit = HEAD + n * RUN;
  for (let k = 0; k < n; k++) {
    const off = patch.readUInt32LE(HEAD + k * RUN);
    const len = patch.readUInt32LE(HEAD + k * RUN + 4);
    patch.copy(win, off, lit, lit + len);
    lit += len;
  }
  let total = 0;
  for (const p of pieces) total += p.length;
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (const p of pieces) {
    const off = p.start - windowStart;
    if (off < 0 || off + p.length > windowSize) return 'a used range lies outside the window';
    win.copy(out, at, off, off + p.length);
    at += p.length;
  }
  return out;
}
