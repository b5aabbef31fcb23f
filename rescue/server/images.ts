/**
 * Backup images found in folders (attached disks' mount points, a network share, the folders given
 * to `rescue serve --images`): every `.rimg` first volume, grouped into backup chains by the chain
 * id in its header. Only headers are read (no password needed); a file that is not a finished
 * image is listed with the reason.
 */
import { isRescueError } from '../engine/errors.ts';
import { BackupChain, IMAGE_EXTENSION, readImageHeader } from '../engine/image/index.ts';
import { type DirEntry, folderOf, joinPath, listFolder, statPath } from '../engine/image/storage.ts';

export interface ImagePoint {
  path: string;
  imageId: string;
  type: 'full' | 'incremental' | 'differential';
  created: string;
  encrypted: boolean;
  /** Bytes of all its volume files. */
  bytes: number;
}

export interface ImageChain {
  chainId: string;
  folder: string;
  /** Oldest first. */
  points: ImagePoint[];
}

export interface ImageListing {
  chains: ImageChain[];
  /** Files named like images that are not (interrupted backups, damage), with the reason. */
  unreadable: { path: string; code: string; message: string }[];
}

const MAX_DEPTH = 3;
const MAX_FILES = 5000;

async function* rimgFiles(dir: string, depth: number, budget: { left: number }): AsyncGenerator<string> {
  let entries: DirEntry[];
  try {
    entries = await listFolder(dir);
  } catch {
    return;
  }
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    if (budget.left-- <= 0) return;
    const p = joinPath(dir, e.name);
    if (e.isFile() && e.name.endsWith(IMAGE_EXTENSION)) yield p;
    else if (e.isDirectory() && depth < MAX_DEPTH && !e.name.startsWith('.'))
      yield* rimgFiles(p, depth + 1, budget);
  }
}

async function volumeBytes(first: string, count: number): Promise<number> {
  let n = 0;
  for (let v = 1; v <= count; v++) {
    const st = await statPath(v === 1 ? first : `${first}.${v}`).catch(() => undefined);
    n += st?.size ?? 0;
  }
  return n;
}

export async function listImages(folders: string[]): Promise<ImageListing> {
  const chains = new Map<string, ImageChain>();
  const unreadable: ImageListing['unreadable'] = [];
  const budget = { left: MAX_FILES };
  for (const folder of folders) {
    for await (const path of rimgFiles(folder, 0, budget)) {
      try {
        const { header } = await readImageHeader(path);
        const chainId = header.chainId.toString('hex');
        const point: ImagePoint = {
          path,
          imageId: header.imageId.toString('hex'),
          type: header.pointType,
          created: new Date(header.created).toISOString(),
          encrypted: header.encrypted,
          bytes: await volumeBytes(path, header.volumeCount),
        };
        const key = `${chainId}:${folderOf(path)}`;
        const chain = chains.get(key) ?? { chainId, folder: folderOf(path), points: [] };
        if (!chain.points.some((p) => p.imageId === point.imageId)) chain.points.push(point);
        chains.set(key, chain);
      } catch (e) {
        if (!isRescueError(e)) throw e;
        unreadable.push({ path, code: e.code, message: e.message });
      }
    }
  }
  const list = [...chains.values()];
  for (const c of list) c.points.sort((a, b) => a.created.localeCompare(b.created));
  list.sort((a, b) =>
    b.points[b.points.length - 1].created.localeCompare(a.points[a.points.length - 1].created),
  );
  return { chains: list, unreadable };
}

export interface ImageInfo {
  path: string;
  kind: 'disk' | 'partition' | 'system';
  name: string;
  comment: string;
  created: string;
  encrypted: boolean;
  compression: string;
  /** The point shown: its number in the chain. */
  sequence: number;
  disks: {
    index: number;
    source: { path: string; model: string | null; serial: string | null; size: number };
    table: 'gpt' | 'mbr' | null;
    partitions: {
      number: number;
      start: number;
      size: number;
      fs: string | null;
      label: string | null;
      usedBytes: number | null;
    }[];
  }[];
  chain: {
    sequence: number;
    type: string;
    created: string;
    file: string;
    usable: boolean;
    why: string | null;
  }[];
}

/** What a restore wizard shows of an image: its disks and partitions, and every point of its chain. */
export async function imageInfo(
  path: string,
  password?: string,
  point?: number | 'latest',
): Promise<ImageInfo> {
  const chain = await BackupChain.open(path, { password });
  try {
    const p = chain.find(point);
    if (!p.reader) throw p.damage!;
    const m = p.reader.manifest;
    return {
      path: p.path,
      kind: m.kind,
      name: m.name,
      comment: m.comment,
      created: m.created,
      encrypted: m.options.encrypted,
      compression: m.options.compression,
      sequence: p.sequence,
      disks: m.disks.map((d) => ({
        index: d.index,
        source: {
          path: d.source.path,
          model: d.source.model ?? null,
          serial: d.source.serial ?? null,
          size: d.source.size,
        },
        table: d.table?.kind === 'gpt' ? 'gpt' : d.table?.kind === 'mbr' ? 'mbr' : null,
        partitions: d.regions
          .filter((r) => r.kind === 'partition' || r.kind === 'disk')
          .map((r) => ({
            number: r.partition ?? 0,
            start: r.start,
            size: r.size,
            fs: r.fs?.type ?? null,
            label: r.fs?.label ?? null,
            usedBytes: r.usedBytes ?? null,
          })),
      })),
      chain: chain.points.map((q) => {
        const s = chain.status(q);
        return {
          sequence: q.sequence,
          type: q.type,
          created: q.created,
          file: q.path,
          usable: s.usable,
          why: s.why ?? null,
        };
      }),
    };
  } finally {
    await chain.close();
  }
}
