/**
 * Delta patches (rescue/engine/image/delta.ts): property tests against the plain oracle — the new
 * raw bytes gathered from the new used map — and hostile patches.
 */
import { describe, expect, it } from 'vitest';
import { applyPatch, makePatch, patchProblem } from '../../rescue/engine/image/delta.ts';
import type { Extent } from '../../rescue/engine/image/types.ts';

function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

/** Random sorted, non-touching extents inside [ws, ws + W). */
function randomPieces(r: () => number, ws: number, W: number): Extent[] {
  const out: Extent[] = [];
  let at = ws + Math.floor(r() * 4096);
  while (at < ws + W) {
    const len = Math.min(ws + W - at, 1 + Math.floor(r() * 40000));
    out.push({ start: at, length: len });
    at += len + 1 + Math.floor(r() * 20000);
  }
  return out;
}

function gather(win: Buffer, pieces: Extent[], ws: number): Buffer {
  return Buffer.concat(pieces.map((p) => win.subarray(p.start - ws, p.start - ws + p.length)));
}

const W = 256 * 1024;

describe('delta patches', () => {
  it('apply(make(base → new)) gives exactly the new raw bytes, for changed contents and changed used maps', () => {
    const made = { same: 0, moved: 0 };
    for (let seed = 1; seed <= 60; seed++) {
      const r = rng(seed);
      const ws = W * Math.floor(r() * 8);
      const before = Buffer.alloc(W);
      for (let i = 0; i < W; i++) before[i] = Math.floor(r() * 256);
      const after = Buffer.from(before);
      // A few scattered edits of various sizes.
      const edits = Math.floor(r() * 12);
      for (let k = 0; k < edits; k++) {
        const at = Math.floor(r() * W);
        const n = Math.min(W - at, 1 + Math.floor(r() * 3000));
        for (let i = 0; i < n; i++) after[at + i] = Math.floor(r() * 256);
      }
      const basePieces = randomPieces(r, ws, W);
      // Half the time the used map changes too (blocks allocated or freed in the window).
      const newPieces = seed % 2 === 0 ? randomPieces(r, ws, W) : basePieces;
      const base = { raw: gather(before, basePieces, ws), pieces: basePieces };
      const raw = gather(after, newPieces, ws);
      const patch = makePatch(base, raw, newPieces, ws, W, raw.length);
      if (!patch) continue; // larger than the raw bytes: a whole chunk is stored instead
      expect(patchProblem(patch, W)).toBeNull();
      const got = applyPatch(patch, base, newPieces, ws, W);
      expect(Buffer.isBuffer(got) && got.equals(raw), `seed ${seed}`).toBe(true);
      made[seed % 2 === 0 ? 'moved' : 'same']++;
    }
    // Both kinds were really exercised.
    expect(made.same).toBeGreaterThan(20);
    expect(made.moved).toBeGreaterThan(10);
  });

  it('holds only the changed bytes: 100 bytes changed in 256 KiB → a patch of about 100 bytes; too big → null', () => {
    const r = rng(7);
    const before = Buffer.alloc(W);
    for (let i = 0; i < W; i++) before[i] = Math.floor(r() * 256);
    const after = Buffer.from(before);
    for (let i = 0; i < 100; i++) after[5000 + i] ^= 0x5a;
    const pieces = [{ start: 0, length: W }];
    const patch = makePatch({ raw: before, pieces }, after, pieces, 0, W, W / 4)!;
    expect(patch.length).toBe(8 + 8 + 100);
    expect(makePatch({ raw: before, pieces }, after, pieces, 0, W, 100)).toBeNull();
    // Nothing changed at all: an empty patch (no runs) still reproduces the bytes.
    const empty = makePatch({ raw: before, pieces }, before, pieces, 0, W, W)!;
    expect(empty.length).toBe(8);
    expect((applyPatch(empty, { raw: before, pieces }, pieces, 0, W) as Buffer).equals(before)).toBe(true);
  });

  it('malformed patches are reported, never thrown or applied outside the window', () => {
    const r = rng(99);
    const before = Buffer.alloc(W, 7);
    const pieces = [{ start: 0, length: W }];
    const after = Buffer.from(before);
    after.fill(1, 100, 200);
    after.fill(2, 9000, 9100);
    const good = makePatch({ raw: before, pieces }, after, pieces, 0, W, W)!;
    expect(patchProblem(Buffer.from('nope'), W)).toMatch(/not a delta patch/);
    for (let k = 0; k < 2000; k++) {
      const bad = Buffer.from(good);
      const n = 1 + Math.floor(r() * 4);
      for (let j = 0; j < n; j++) bad[Math.floor(r() * bad.length)] = Math.floor(r() * 256);
      const cut = r() < 0.2 ? bad.subarray(0, Math.floor(r() * bad.length)) : bad;
      const res = applyPatch(cut, { raw: before, pieces }, pieces, 0, W);
      // Either refused with a reason, or some bytes of the window's size (the reader's sha256
      // check decides); never an exception.
      expect(typeof res === 'string' || res.length === W).toBe(true);
    }
    const header = Buffer.alloc(16);
    Buffer.from('RDP1').copy(header);
    header.writeUInt32LE(1, 4);
    header.writeUInt32LE(W - 2, 8);
    header.writeUInt32LE(4, 12);
    expect(patchProblem(Buffer.concat([header, Buffer.alloc(4)]), W)).toMatch(/out of place/);
  });
});
