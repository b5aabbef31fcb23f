/**
 * The Range header of the PXE server's file answers (boot files, shared backups), a parser of what
 * any machine on the network sends: for every header — well-formed ranges, suffixes, open ends, and
 * random bytes — the answer is 200 with the whole file, 206 with exactly the bytes asked for (and a
 * matching Content-Range), or 416; never an error or a wrong slice. (Other range units get 416 too,
 * not the whole file as RFC 9110 would have it: no boot firmware or our reader sends them.)
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendFile } from '../../pxe/http.ts';
import { makeTempDir } from '../fixtures/lab.ts';

const SIZE = 5000;
let dir: string;
let data: Buffer;
const app = new Hono();

beforeAll(async () => {
  dir = await makeTempDir('rescue-range-');
  data = Buffer.from(Array.from({ length: SIZE }, (_, i) => (i * 7 + 3) & 0xff));
  await fsp.writeFile(join(dir, 'f.bin'), data);
  app.get('/f', (c) => sendFile(c, join(dir, 'f.bin')));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** What RFC 9110 says a single byte range means for a file of SIZE bytes, or undefined (→ 416). */
function expected(header: string): { start: number; end: number } | undefined | 'whole' {
  // An empty header is no header (fetch trims whitespace); anything not one "bytes=" range is
  // refused with 416 (this server does not fall back to the whole file for other units).
  if (header.trim() === '') return 'whole';
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  const suffix = m[1] === '';
  const start = suffix ? Math.max(0, SIZE - Number(m[2])) : Number(m[1]);
  const end = suffix || m[2] === '' ? SIZE - 1 : Math.min(SIZE - 1, Number(m[2]));
  // A zero-length suffix ("bytes=-0") selects nothing: unsatisfiable, like a start past the end.
  return start >= SIZE || start > end ? undefined : { start, end };
}

async function check(header: string): Promise<void> {
  const r = await app.request('/f', { headers: { range: header } });
  const want = expected(header);
  if (want === undefined) {
    expect(r.status, header).toBe(416);
    expect(r.headers.get('content-range')).toBe(`bytes */${SIZE}`);
    return;
  }
  const body = Buffer.from(await r.arrayBuffer());
  if (want === 'whole') {
    expect(r.status).toBe(200);
    expect(body.equals(data)).toBe(true);
    return;
  }
  expect(r.status, header).toBe(206);
  expect(r.headers.get('content-range')).toBe(`bytes ${want.start}-${want.end}/${SIZE}`);
  expect(Number(r.headers.get('content-length'))).toBe(want.end - want.start + 1);
  expect(body.equals(data.subarray(want.start, want.end + 1)), header).toBe(true);
}

describe('Range answers of sendFile', () => {
  it('no Range: the whole file', async () => {
    const r = await app.request('/f');
    expect(r.status).toBe(200);
    expect(Buffer.from(await r.arrayBuffer()).equals(data)).toBe(true);
  });

  it('well-formed ranges, suffixes and open ends give exactly those bytes (or 416 past the end)', async () => {
    const n = fc.integer({ min: 0, max: SIZE + 50 });
    const header = fc.oneof(
      fc.tuple(n, n).map(([a, b]) => `bytes=${a}-${b}`),
      n.map((a) => `bytes=${a}-`),
      n.map((b) => `bytes=-${b}`),
    );
    await fc.assert(fc.asyncProperty(header, check), { numRuns: 300 });
  });

  it('anything else is refused with 416 (an empty header is none), never a crash', async () => {
    const junk = fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.string({ maxLength: 20 }).map((s) => `bytes=${s}`),
      fc.constantFrom('bytes=0-1,5-9', 'bytes=-', 'bytes=1-2-3', 'items=0-5', 'bytes=0x10-20', 'bytes= 5-9'),
    );
    await fc.assert(
      fc.asyncProperty(
        junk.filter((h) => /^[\x20-\x7e]*$/.test(h)),
        check,
      ),
      { numRuns: 300 },
    );
  });
});
