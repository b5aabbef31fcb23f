/** A byte range, relative to the first byte of the filesystem (or disk) it belongs to. */
export interface Extent {
  start: number;
  length: number;
}

/**
 * Collects byte ranges in any order and yields them sorted, merged and clipped to a limit.
 * Used maps are built with it so that "too much" is harmless and overlaps never double count.
 */
export class ExtentSet {
  private items: Extent[] = [];
  private readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  add(start: number, length: number): void {
    if (!(length > 0)) return;
    let s = Math.max(0, start);
    let e = Math.min(this.limit, start + length);
    if (!Number.isFinite(s) || !Number.isFinite(e) || e <= s) return;
    s = Math.floor(s);
    e = Math.ceil(e);
    const last = this.items[this.items.length - 1];
    // Bitmaps are walked in order: extending the last run keeps the list short without a sort.
    if (last && s >= last.start && s <= last.start + last.length) {
      last.length = Math.max(last.length, e - last.start);
      return;
    }
    this.items.push({ start: s, length: e - s });
  }

  /** Sorted, non-overlapping, adjacent runs merged. */
  extents(): Extent[] {
    const sorted = this.items.slice().sort((a, b) => a.start - b.start);
    const out: Extent[] = [];
    for (const x of sorted) {
      const last = out[out.length - 1];
      if (last && x.start <= last.start + last.length) {
        last.length = Math.max(last.length, x.start + x.length - last.start);
      } else {
        out.push({ start: x.start, length: x.length });
      }
    }
    this.items = out.map((x) => ({ ...x }));
    return out;
  }
}

export function totalBytes(extents: readonly Extent[]): number {
  let n = 0;
  for (const e of extents) n += e.length;
  return n;
}

/**
 * Adds every run of set bits of an allocation bitmap (LSB-first within each byte, as ext, NTFS and
 * exFAT all store them) as `unitBytes`-sized units starting at `base`. Bits beyond `units` are ignored.
 */
export function addBitmapRuns(
  set: ExtentSet,
  bitmap: Uint8Array,
  units: number,
  unitBytes: number,
  base: number,
  firstUnit = 0,
): number {
  let used = 0;
  let runStart = -1;
  const n = Math.min(units, bitmap.length * 8);
  let i = 0;
  while (i < n) {
    const byte = bitmap[i >> 3];
    // Whole bytes of 0x00 / 0xff are the common case: step over them at once.
    if ((i & 7) === 0 && i + 8 <= n && (byte === 0 || byte === 0xff)) {
      if (byte === 0xff) {
        if (runStart < 0) runStart = i;
        used += 8;
      } else if (runStart >= 0) {
        set.add(base + (firstUnit + runStart) * unitBytes, (i - runStart) * unitBytes);
        runStart = -1;
      }
      i += 8;
      continue;
    }
    const bit = (byte >> (i & 7)) & 1;
    if (bit) {
      if (runStart < 0) runStart = i;
      used++;
    } else if (runStart >= 0) {
      set.add(base + (firstUnit + runStart) * unitBytes, (i - runStart) * unitBytes);
      runStart = -1;
    }
    i++;
  }
  if (runStart >= 0) set.add(base + (firstUnit + runStart) * unitBytes, (n - runStart) * unitBytes);
  return used;
}
