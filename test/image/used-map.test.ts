import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRescueError } from '../../rescue/engine/errors.ts';
import type { Extent } from '../../rescue/engine/filesystems/extents.ts';
import {
  decodeUsedMap,
  encodeUsedMap,
  keepPreviousLayout,
  UsedLayout,
  windowsOf,
} from '../../rescue/engine/image/index.ts';

/** Sorted, separated, non-empty extents from (gap, length) pairs; the first gap may be 0. */
const extentsArb = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 1, max: 2 ** 40 })), {
    maxLength: 60,
  })
  .map((pairs) => {
    const out: Extent[] = [];
    let end = 0;
    for (const [gap, length] of pairs) {
      const start = end + (out.length > 0 ? gap + 1 : gap);
      out.push({ start, length });
      end = start + length;
    }
    return out;
  });

const smallExtentsArb = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 1, max: 20_000 })), {
    maxLength: 30,
  })
  .map((pairs) => {
    const out: Extent[] = [];
    let end = 0;
    for (const [gap, length] of pairs) {
      const start = end + (out.length > 0 ? gap + 1 : gap);
      out.push({ start, length });
      end = start + length;
    }
    return out;
  });

function endOf(ex: Extent[]): number {
  return ex.length ? ex[ex.length - 1].start + ex[ex.length - 1].length : 0;
}

describe('used-map codec', () => {
  it('round-trips any sorted, separated extent list (up to 2^46 bytes)', () => {
    fc.assert(
      fc.property(extentsArb, fc.nat(1000), (ex, slack) => {
        const text = encodeUsedMap(ex);
        expect(decodeUsedMap(text, endOf(ex) + slack)).toEqual(ex);
      }),
      { numRuns: 300 },
    );
  });

  it('merges touching extents and skips empty ones, so the text is canonical', () => {
    const text = encodeUsedMap([
      { start: 0, length: 512 },
      { start: 512, length: 512 },
      { start: 2048, length: 0 },
      { start: 4096, length: 100 },
    ]);
    expect(decodeUsedMap(text, 8192)).toEqual([
      { start: 0, length: 1024 },
      { start: 4096, length: 100 },
    ]);
    expect(encodeUsedMap([])).toBe('');
    expect(decodeUsedMap('', 0)).toEqual([]);
  });

  it('refuses unsorted or overlapping input to the encoder', () => {
    expect(() =>
      encodeUsedMap([
        { start: 100, length: 10 },
        { start: 50, length: 10 },
      ]),
    ).toThrow(/not sorted/);
    expect(() =>
      encodeUsedMap([
        { start: 0, length: 100 },
        { start: 50, length: 100 },
      ]),
    ).toThrow(/not sorted/);
  });

  it('rejects maps that leave the region, are not base64, end mid-number or are not canonical', () => {
    const ex = [{ start: 1000, length: 24 }];
    const text = encodeUsedMap(ex);
    const reject = (t: string, size: number, why: RegExp) => {
      try {
        decodeUsedMap(t, size, '/x/img.rimg');
        throw new Error('accepted');
      } catch (e) {
        expect(isRescueError(e) && e.code).toBe('E_MANIFEST_CORRUPT');
        expect((e as Error).message).toMatch(why);
        expect((e as Error).message).toContain('/x/img.rimg');
      }
    };
    reject(text, 1023, /outside the region/);
    reject('!!!!', 10, /not base64/);
    reject('gA==', 10, /ends inside a number/); // 0x80: continuation without end
    reject(
      Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).toString('base64'),
      10,
      /too long/,
    );
    reject(Buffer.from([0, 0]).toString('base64'), 10, /empty extent/);
    reject(Buffer.from([0, 1, 0, 1]).toString('base64'), 10, /touch/);
    reject(
      Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f, 1]).toString('base64'),
      2 ** 53,
      /too large/,
    );
  });

  it('never throws anything but E_MANIFEST_CORRUPT on arbitrary input, and what it accepts is well-formed', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('base64')),
        ),
        fc.nat(2 ** 40),
        (text, size) => {
          let ex: Extent[];
          try {
            ex = decodeUsedMap(text, size);
          } catch (e) {
            expect(isRescueError(e) && e.code).toBe('E_MANIFEST_CORRUPT');
            return;
          }
          let end = -1;
          for (const e of ex) {
            expect(e.length).toBeGreaterThan(0);
            expect(e.start).toBeGreaterThan(end);
            end = e.start + e.length;
            expect(end).toBeLessThanOrEqual(size);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('window arithmetic', () => {
  it('windowsOf cuts extents at window boundaries, loses no byte and skips empty windows', () => {
    fc.assert(
      fc.property(smallExtentsArb, fc.constantFrom(512, 4096, 5000, 65536), (ex, W) => {
        const plans = [...windowsOf(ex, W)];
        let total = 0;
        let prev = -1;
        const bytes: Extent[] = [];
        for (const p of plans) {
          expect(p.windowStart % W).toBe(0);
          expect(p.windowStart).toBeGreaterThan(prev);
          prev = p.windowStart;
          expect(p.rawLength).toBe(p.extents.reduce((n, e) => n + e.length, 0));
          expect(p.rawLength).toBeGreaterThan(0);
          for (const e of p.extents) {
            expect(e.start).toBeGreaterThanOrEqual(p.windowStart);
            expect(e.start + e.length).toBeLessThanOrEqual(p.windowStart + W);
            bytes.push(e);
          }
          total += p.rawLength;
        }
        expect(total).toBe(ex.reduce((n, e) => n + e.length, 0));
        // Re-merging the pieces gives the input back.
        const merged: Extent[] = [];
        for (const e of bytes) {
          const last = merged[merged.length - 1];
          if (last && last.start + last.length === e.start) last.length += e.length;
          else merged.push({ ...e });
        }
        expect(merged).toEqual(ex);
        // UsedLayout agrees with windowsOf.
        const lay = new UsedLayout(ex, endOf(ex));
        expect([...lay.windows(W)]).toEqual(
          plans.map((p) => ({ windowStart: p.windowStart, rawLength: p.rawLength })),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('UsedLayout.usedBefore and pieces match a byte-by-byte model', () => {
    fc.assert(
      fc.property(smallExtentsArb, fc.nat(700_000), fc.nat(100_000), (ex, a, len) => {
        const size = endOf(ex) + 100;
        const lay = new UsedLayout(ex, size);
        const from = Math.min(a, size);
        const to = Math.min(size, from + len);
        const model = (x: number) =>
          ex.reduce((n, e) => n + Math.max(0, Math.min(x, e.start + e.length) - e.start), 0);
        expect(lay.usedBefore(from)).toBe(model(from));
        expect(lay.usedBefore(to)).toBe(model(to));
        const pieces = [...lay.pieces(from, to)];
        expect(pieces.reduce((n, p) => n + p.length, 0)).toBe(model(to) - model(from));
        for (const p of pieces) {
          expect(p.start).toBeGreaterThanOrEqual(from);
          expect(p.start + p.length).toBeLessThanOrEqual(to);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('keepPreviousLayout (incremental points after deletions)', () => {
  const W = 4096;
  /** Byte-level model: the set of used bytes, window by window. */
  const bytes = (ex: Extent[]) => {
    const s = new Set<number>();
    for (const e of ex) for (let i = e.start; i < e.start + e.length; i++) s.add(i);
    return s;
  };
  const inWindow = (s: Set<number>, ws: number) =>
    [...s].filter((b) => b >= ws && b < ws + W).sort((a, b) => a - b);

  it('covers the current map; per window it is the previous map exactly when that holds the current one, else the current', () => {
    fc.assert(
      fc.property(smallExtentsArb, smallExtentsArb, (current, previous) => {
        const out = keepPreviousLayout(current, previous, W);
        // Canonical: sorted, non-empty, separated by at least one byte.
        for (let i = 0; i < out.length; i++) {
          expect(out[i].length).toBeGreaterThan(0);
          if (i > 0) expect(out[i].start).toBeGreaterThan(out[i - 1].start + out[i - 1].length);
        }
        const c = bytes(current);
        const p = bytes(previous);
        const o = bytes(out);
        const windows = new Set([...c, ...p, ...o].map((b) => Math.floor(b / W) * W));
        for (const ws of windows) {
          const cw = inWindow(c, ws);
          const pw = inWindow(p, ws);
          const ow = inWindow(o, ws);
          const subset = cw.every((b) => p.has(b));
          if (cw.length === 0) expect(ow).toEqual([]);
          else expect(ow).toEqual(subset ? pw : cw);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('keeps the freed ranges of a window where a file was deleted, not where a new one was written', () => {
    const previous = [
      { start: 0, length: 3000 },
      { start: 5000, length: 2000 },
    ];
    const current = [
      { start: 0, length: 1000 },
      { start: 5000, length: 500 },
      { start: 6000, length: 2500 },
    ];
    // Window 0: [0,1000) ⊆ previous → previous kept; window 4096: [6000,8192) is partly new → current.
    expect(keepPreviousLayout(current, previous, W)).toEqual([
      { start: 0, length: 3000 },
      { start: 5000, length: 500 },
      { start: 6000, length: 2500 },
    ]);
  });
});
