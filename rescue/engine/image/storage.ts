/**
 * Where image files are read from: a local path, or an http(s):// URL — the image folders a PXE
 * server shares with the machines it booted (`rescue pxe serve --images`), so a network-booted rescue
 * system restores straight from the server with no share to mount. Reading only: backups are written
 * to local paths.
 *
 * Over HTTP a file is read by byte ranges in 4 MiB blocks (a few kept, the next one fetched ahead, as
 * restores read forward), a missing file is a 404, and a folder answers with a JSON listing
 * (`{"entries": [{"name", "type": "file"|"dir", "size"}]}`) when asked for `application/json`.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname, join as joinLocal } from 'node:path';

export interface ReadHandle {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  stat(): Promise<{ size: number }>;
  close(): Promise<void>;
}

export interface PathInfo {
  size: number;
  isFile(): boolean;
  isDirectory(): boolean;
}

export interface DirEntry {
  name: string;
  isFile(): boolean;
  isDirectory(): boolean;
}

export function isUrl(path: string): boolean {
  return /^https?:\/\//i.test(path);
}

/** `dir` + `name`, for folders that are URLs too (path.join would fold "http://" into "http:/"). */
export function joinPath(dir: string, name: string): string {
  if (!isUrl(dir)) return joinLocal(dir, name);
  return `${dir.endsWith('/') ? dir : `${dir}/`}${name.split('/').map(encodeURIComponent).join('/')}`;
}

/** The folder part of a path or URL. */
export function folderOf(path: string): string {
  if (!isUrl(path)) return dirname(path);
  const u = new URL(path);
  u.pathname = u.pathname.replace(/[^/]*$/, '');
  u.search = '';
  return u.toString();
}

/** The last part of a path or URL, decoded. */
export function nameOf(path: string): string {
  if (!isUrl(path)) return basename(path);
  return decodeURIComponent(new URL(path).pathname.replace(/\/$/, '').split('/').pop() ?? '');
}

class NotFound extends Error {
  readonly code = 'ENOENT';
}

const TIMEOUT_MS = 30_000;
const RETRIES = 3;

async function http(url: string, init: RequestInit = {}): Promise<Response> {
  let last: unknown;
  for (let attempt = 0; attempt < RETRIES; attempt++) {
    try {
      return await fetch(url, { ...init, signal: AbortSignal.timeout(TIMEOUT_MS) });
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    }
  }
  throw new Error(`cannot reach ${url}: ${(last as Error)?.message ?? last}`);
}

/** Size and kind, or null when there is nothing there. */
export async function statPath(path: string): Promise<PathInfo | null> {
  if (!isUrl(path)) {
    try {
      return await fsp.stat(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw e;
    }
  }
  const r = await http(path, { method: 'HEAD' });
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  const size = Number(r.headers.get('content-length') ?? '0');
  const dir = path.endsWith('/');
  return { size, isFile: () => !dir, isDirectory: () => dir };
}

export async function listFolder(dir: string): Promise<DirEntry[]> {
  if (!isUrl(dir)) return fsp.readdir(dir, { withFileTypes: true });
  const url = dir.endsWith('/') ? dir : `${dir}/`;
  const r = await http(url, { headers: { accept: 'application/json' } });
  if (r.status === 404) throw new NotFound(`${url}: not found`);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  const body = (await r.json()) as { entries?: { name?: unknown; type?: unknown }[] };
  return (body.entries ?? [])
    .filter((e) => typeof e.name === 'string' && !e.name.includes('/') && e.name !== '..' && e.name !== '.')
    .map((e) => ({
      name: e.name as string,
      isFile: () => e.type === 'file',
      isDirectory: () => e.type === 'dir',
    }));
}

export async function openRead(path: string): Promise<ReadHandle> {
  if (!isUrl(path)) return fsp.open(path, 'r');
  const st = await statPath(path);
  if (!st) throw new NotFound(`${path}: not found (HTTP 404)`);
  return new HttpFile(path, st.size);
}

const BLOCK = 4 * 1024 * 1024;
const KEEP = 6;

class HttpFile implements ReadHandle {
  private readonly url: string;
  private readonly size: number;
  private readonly blocks = new Map<number, Promise<Buffer>>();

  constructor(url: string, size: number) {
    this.url = url;
    this.size = size;
  }

  async stat(): Promise<{ size: number }> {
    return { size: this.size };
  }

  async close(): Promise<void> {
    this.blocks.clear();
  }

  private fetchBlock(b: number): Promise<Buffer> {
    const from = b * BLOCK;
    const to = Math.min(this.size, from + BLOCK) - 1;
    const p = (async () => {
      const r = await http(this.url, { headers: { range: `bytes=${from}-${to}` } });
      if (r.status !== 206 && !(r.status === 200 && from === 0 && to === this.size - 1))
        throw new Error(`${this.url}: HTTP ${r.status} for bytes ${from}-${to}`);
      const data = Buffer.from(await r.arrayBuffer());
      if (data.length !== to - from + 1)
        throw new Error(`${this.url}: ${data.length} bytes came for ${to - from + 1} (the file changed?)`);
      return data;
    })();
    p.catch(() => this.blocks.delete(b));
    return p;
  }

  private block(b: number): Promise<Buffer> {
    let p = this.blocks.get(b);
    if (p) {
      this.blocks.delete(b); // most recently used last
    } else p = this.fetchBlock(b);
    this.blocks.set(b, p);
    // Restores read forward: have the next block on its way.
    if ((b + 1) * BLOCK < this.size && !this.blocks.has(b + 1))
      this.blocks.set(b + 1, this.fetchBlock(b + 1));
    while (this.blocks.size > KEEP) {
      const oldest = this.blocks.keys().next().value as number;
      this.blocks.delete(oldest);
    }
    return p;
  }

  async read(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }> {
    if (position >= this.size || length <= 0) return { bytesRead: 0 };
    const n = Math.min(length, this.size - position);
    let done = 0;
    while (done < n) {
      const pos = position + done;
      const b = Math.floor(pos / BLOCK);
      const data = await this.block(b);
      const from = pos - b * BLOCK;
      const take = Math.min(n - done, data.length - from);
      data.copy(buffer, offset + done, from, from + take);
      done += take;
    }
    return { bytesRead: n };
  }
}
