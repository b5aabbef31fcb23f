/**
 * Backup chains: a full point and the incremental and differential points made after it, each its
 * own image file in the same folder, tied together by the header's chain id and parent id.
 *
 * `openChain` finds every point of the chain of any of its files, opens each one (header, index,
 * manifest — never trusting a damaged one), orders them, and says for every point whether it can
 * be restored: an incremental needs its parent (and so every earlier point back to the full), a
 * differential needs only its full. A point's reader resolves the chunks it keeps in earlier points.
 */
import { basename } from 'node:path';
import { isRescueError, RescueError } from '../errors.ts';
import { type CheckOptions, checkImage, DAMAGE } from './check.ts';
import { ImageReader, readImageHeader } from './reader.ts';
import { folderOf, joinPath, listFolder } from './storage.ts';
import {
  type CheckProblem,
  type CheckReport,
  ENTRY_FLAGS,
  IMAGE_EXTENSION,
  type ImageHeader,
  type IndexEntry,
  type PointType,
  RECORD_HEADER,
} from './types.ts';

export interface ChainPoint {
  /** First volume file. */
  path: string;
  id: string;
  type: PointType;
  /** Parent point id (null for the full). */
  parent: string | null;
  /** ISO time the point was made. */
  created: string;
  /** 1 = the full, counting up in the order the points were made. */
  sequence: number;
  /** Open when its files are intact. */
  reader?: ImageReader;
  /** Why it could not be opened. */
  damage?: RescueError;
}

/** A point named as a parent whose file is not in the folder. */
export interface MissingPoint {
  id: string;
  /** Points that name it as their parent. */
  parentOf: string[];
}

export interface PointStatus {
  usable: boolean;
  /** Why not, in words ("point 2 (incremental) is missing"). */
  why?: string;
  /** Ids of the earlier points this one needs (nearest first). */
  needs: string[];
}

export interface OpenChainOptions {
  password?: string;
}

function describe(p: ChainPoint): string {
  return `point ${p.sequence} (${p.type}, ${p.created.replace('T', ' ').slice(0, 19)})`;
}

export class BackupChain {
  readonly chainId: string;
  readonly dir: string;
  /** Every point found, in the order they were made. */
  readonly points: ChainPoint[];
  /** The point whose file was named. */
  readonly named: ChainPoint;
  readonly missing: MissingPoint[];
  private readonly byId: Map<string, ChainPoint>;

  private constructor(chainId: string, dir: string, points: ChainPoint[], named: ChainPoint) {
    this.chainId = chainId;
    this.dir = dir;
    this.points = points;
    this.named = named;
    this.byId = new Map(points.map((p) => [p.id, p]));
    const missing = new Map<string, string[]>();
    for (const p of points) {
      if (p.parent && !this.byId.has(p.parent))
        missing.set(p.parent, [...(missing.get(p.parent) ?? []), p.id]);
    }
    this.missing = [...missing].map(([id, parentOf]) => ({ id, parentOf }));
  }

  /**
   * Opens the chain of `file` (any volume of any point). A point whose files are damaged is kept
   * with its `damage`; a wrong password, or a file that is no image at all, throws.
   */
  static async open(file: string, opts: OpenChainOptions = {}): Promise<BackupChain> {
    const first = await readImageHeader(file);
    const chainId = first.header.chainId.toString('hex');
    const dir = folderOf(first.path);
    const found: { path: string; header: ImageHeader }[] = [];
    const names = (await listFolder(dir)).map((e) => e.name);
    for (const name of names.sort()) {
      if (!name.endsWith(IMAGE_EXTENSION)) continue;
      const path = joinPath(dir, name);
      if (path === first.path) {
        found.push(first);
        continue;
      }
      const h = await readImageHeader(path).catch(() => undefined);
      if (h && h.header.chainId.toString('hex') === chainId) found.push(h);
    }
    found.sort((a, b) => a.header.created - b.header.created || a.path.localeCompare(b.path));
    const points: ChainPoint[] = [];
    const byId = new Map<string, ChainPoint>();
    try {
      for (const [i, f] of found.entries()) {
        const id = f.header.imageId.toString('hex');
        const parent = f.header.parentId.toString('hex');
        const p: ChainPoint = {
          path: f.path,
          id,
          type: f.header.pointType,
          parent: f.header.pointType === 'full' ? null : parent,
          created: new Date(f.header.created).toISOString(),
          sequence: i + 1,
        };
        try {
          p.reader = await ImageReader.open(f.path, {
            password: opts.password,
            resolvePoint: async (want) => {
              const holder = byId.get(want);
              if (!holder?.reader)
                throw new RescueError(
                  'E_POINT_UNUSABLE',
                  `${basename(f.path)} keeps part of its data in the backup point ${want}, which is ${holder ? 'damaged' : 'missing'}`,
                  'Put every file of the backup chain back in one folder (`rescue info` lists them), or restore another point.',
                );
              return holder.reader;
            },
          });
          p.sequence = p.reader.manifest.point.sequence || p.sequence;
          p.created = p.reader.manifest.created || p.created;
        } catch (e) {
          if (!isRescueError(e) || !DAMAGE.has(e.code)) throw e;
          p.damage = e;
        }
        points.push(p);
        byId.set(id, p);
      }
    } catch (e) {
      await Promise.allSettled(points.map((p) => p.reader?.close()));
      throw e;
    }
    points.sort((a, b) => a.sequence - b.sequence || a.created.localeCompare(b.created));
    const named = points.find((p) => p.path === first.path)!;
    return new BackupChain(chainId, dir, points, named);
  }

  point(id: string): ChainPoint | undefined {
    return this.byId.get(id);
  }

  get full(): ChainPoint | undefined {
    return this.points.find((p) => p.type === 'full');
  }

  get latest(): ChainPoint {
    return this.points[this.points.length - 1];
  }

  /** Whether a point can be restored, and what it needs. */
  status(p: ChainPoint): PointStatus {
    const needs: string[] = [];
    if (p.damage) return { usable: false, why: `${describe(p)} is damaged: ${p.damage.message}`, needs };
    let cur = p;
    for (let hops = 0; cur.parent !== null && hops <= this.points.length; hops++) {
      needs.push(cur.parent);
      const parent = this.byId.get(cur.parent);
      if (!parent)
        return {
          usable: false,
          why: `the ${cur.type === 'differential' ? 'full backup' : 'earlier point'} it builds on (${cur.parent}) is missing`,
          needs,
        };
      if (parent.damage)
        return { usable: false, why: `${describe(parent)}, which it builds on, is damaged`, needs };
      cur = parent;
    }
    if (cur.type !== 'full') return { usable: false, why: 'its chain has no full backup', needs };
    return { usable: true, needs };
  }

  /** The point `which` names: a sequence number, 'latest', or (undefined) the named point. */
  find(which?: number | 'latest'): ChainPoint {
    let p: ChainPoint | undefined;
    if (which === undefined) p = this.named;
    else if (which === 'latest') p = this.latest;
    else p = this.points.find((x) => x.sequence === which);
    if (!p) {
      throw new RescueError(
        'E_NO_SUCH_POINT',
        `The backup chain of ${basename(this.named.path)} has no point ${which} (it has ${this.points
          .map((x) => x.sequence)
          .join(', ')})`,
        '`rescue info IMAGE` lists the points of a chain.',
      );
    }
    return p;
  }

  /**
   * The point `which` names (see find), which must be restorable: throws its own damage, or
   * E_POINT_UNUSABLE saying which earlier point is missing or damaged.
   */
  select(which?: number | 'latest'): ChainPoint & { reader: ImageReader } {
    const p = this.find(which);
    // Its own damage keeps its own code (truncated, missing volume …).
    if (p.damage) throw p.damage;
    const s = this.status(p);
    if (!s.usable || !p.reader) {
      throw new RescueError(
        'E_POINT_UNUSABLE',
        `${describe(p)} of ${basename(this.named.path)} cannot be restored: ${s.why}`,
        'Put every file of the backup chain back in one folder (`rescue info IMAGE` lists them), or choose a point that does not need the missing one (--point N).',
        { point: p.sequence },
      );
    }
    return p as ChainPoint & { reader: ImageReader };
  }

  /** Every volume file of a point and of the points it needs. */
  filesOf(p: ChainPoint): string[] {
    const ids = [p.id, ...this.status(p).needs];
    return ids.flatMap((id) => this.byId.get(id)?.reader?.files ?? []);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.points.map((p) => p.reader?.close()));
  }
}

export interface ChainCheckOptions extends CheckOptions {
  /** Check only this point and the points it needs (default: every point of the chain). */
  point?: number | 'latest';
}

/**
 * Checks every point of the chain of `file` (or one point and what it needs): every chunk of each
 * image, that each reference to an earlier point names a chunk that point really holds, and which
 * points a missing or damaged one makes unusable. ok only when everything checked is intact.
 */
export async function checkChain(file: string, opts: ChainCheckOptions = {}): Promise<CheckReport> {
  let chain: BackupChain;
  try {
    chain = await BackupChain.open(file, { password: opts.password });
  } catch (e) {
    // Not even a header to go by: the single-image check reports why.
    if (isRescueError(e) && DAMAGE.has(e.code)) return checkImage(file, opts);
    throw e;
  }
  try {
    let points = chain.points;
    if (opts.point !== undefined) {
      const want = chain.find(opts.point);
      const ids = new Set([want.id, ...chain.status(want).needs]);
      points = points.filter((p) => ids.has(p.id));
    }
    const total = { done: 0, all: 0 };
    for (const p of points) {
      for (const e of p.reader?.entries ?? [])
        if (!(e.flags & ENTRY_FLAGS.OTHER_POINT)) total.all += RECORD_HEADER.SIZE + e.storedLength;
    }
    const report: CheckReport = { ok: true, image: chain.named.path, points: [], chunks: 0, bytes: 0 };
    // What is damaged, per point: everything (index, manifest, volumes …) or some chunks.
    const damaged = new Map<string, 'all' | Set<string>>();
    const mark = (id: string, x: CheckProblem) => {
      if (x.code === 'E_RECORD_CORRUPT') return; // the data is still read and verified
      const known = damaged.get(id);
      if (known === 'all') return;
      if (
        (x.code === 'E_CHUNK_CORRUPT' || x.code === 'E_INDEX_CORRUPT') &&
        x.region !== undefined &&
        x.windowStart !== undefined
      )
        damaged.set(id, (known ?? new Set<string>()).add(`${x.region}:${x.windowStart}`));
      else damaged.set(id, 'all');
    };
    const hit = (id: string, key: string) => {
      const d = damaged.get(id);
      return d === 'all' || (d?.has(key) ?? false);
    };
    for (const p of points) {
      const base = total.done;
      const one = await checkImage(p.path, {
        ...opts,
        onProgress: (done) => opts.onProgress?.(base + done, total.all),
      });
      total.done = base + one.bytes;
      report.chunks += one.chunks;
      report.bytes += one.bytes;
      const problems = one.points.flatMap((x) => x.problems);
      if (p.reader) {
        problems.push(...referenceProblems(chain, p.reader));
        problems.push(...(await deltaProblems(chain, p.reader, problems, hit)));
      }
      for (const x of problems) mark(p.id, x);
      report.points.push({
        id: p.id,
        type: p.type,
        ok: problems.length === 0,
        problems,
        sequence: p.sequence,
        file: p.path,
      });
    }
    for (const r of report.points) {
      const p = chain.point(r.id)!;
      const s = chain.status(p);
      r.usable = s.usable;
      if (!s.usable) {
        r.why = s.why;
        continue;
      }
      // Usable unless a chunk it needs — its own or one it refers to — is damaged.
      for (const e of p.reader?.entries ?? []) {
        const key = `${e.regionId}:${e.windowStart}`;
        const bad = holdersOf(chain, p.id, e).find((id) => hit(id, key));
        if (bad === undefined) continue;
        if (bad === p.id) {
          r.why =
            damaged.get(p.id) === 'all'
              ? 'its own image is damaged'
              : `its own chunk (region ${e.regionId}, window at ${e.windowStart}) is damaged`;
        } else {
          const h = chain.point(bad);
          r.why = `point ${h?.sequence} (${h?.type}), which it builds on, has a damaged chunk it needs (region ${e.regionId}, window at ${e.windowStart})`;
        }
        r.usable = false;
        break;
      }
      if (r.usable && damaged.get(p.id) === 'all') {
        r.usable = false;
        r.why = 'its own image is damaged';
      }
    }
    report.missing = chain.missing;
    report.ok = report.points.every((r) => r.ok && r.usable) && chain.missing.length === 0;
    return report;
  } finally {
    await chain.close();
  }
}

/**
 * The points whose records a window's data is made of: its own record; a reference's holder (and
 * what that record needs); a delta record and its base point's record.
 */
function holdersOf(chain: BackupChain, pointId: string, e: IndexEntry, depth = 0): string[] {
  const refers = (e.flags & (ENTRY_FLAGS.OTHER_POINT | ENTRY_FLAGS.DELTA)) !== 0;
  const own = e.flags & ENTRY_FLAGS.OTHER_POINT ? [] : [pointId];
  if (!refers || depth > 64) return own;
  const holder = chain.point(e.pointId)?.reader;
  const j = holder ? holder.chunkNumber(e) : -1;
  const held = holder && j >= 0 ? holder.entries[j] : undefined;
  return [...own, ...(held ? holdersOf(chain, e.pointId, held, depth + 1) : [e.pointId])];
}

/**
 * Applies every delta record of a point whose own payload and base record are intact (checkImage
 * verifies a delta's payload alone; only with its base can the result's sha256 be checked).
 */
async function deltaProblems(
  chain: BackupChain,
  reader: ImageReader,
  known: CheckProblem[],
  hit: (id: string, key: string) => boolean,
): Promise<CheckProblem[]> {
  const out: CheckProblem[] = [];
  const already = new Set(known.map((x) => `${x.region}:${x.windowStart}`));
  const self = reader.header.imageId.toString('hex');
  for (let i = 0; i < reader.entries.length; i++) {
    const e = reader.entries[i];
    if ((e.flags & (ENTRY_FLAGS.DELTA | ENTRY_FLAGS.OTHER_POINT)) !== ENTRY_FLAGS.DELTA) continue;
    const key = `${e.regionId}:${e.windowStart}`;
    if (already.has(key) || !chain.point(e.pointId)?.reader) continue;
    if (holdersOf(chain, self, e).some((id) => hit(id, key))) continue; // the base's own damage
    try {
      await reader.readChunk(e);
    } catch (err) {
      if (!isRescueError(err) || !DAMAGE.has(err.code)) throw err;
      out.push({
        code: err.code,
        message: err.message,
        chunk: i,
        region: e.regionId,
        windowStart: e.windowStart,
      });
    }
  }
  return out;
}

/** Each reference must name a point of the chain that holds exactly that chunk. */
function referenceProblems(chain: BackupChain, reader: ImageReader): CheckProblem[] {
  const out: CheckProblem[] = [];
  reader.entries.forEach((e, i) => {
    if (!(e.flags & ENTRY_FLAGS.OTHER_POINT)) return;
    const holder = chain.point(e.pointId)?.reader;
    if (!holder) return; // reported as a missing or damaged point
    const j = holder.chunkNumber(e);
    const h = j >= 0 ? holder.entries[j] : undefined;
    if (
      !h ||
      h.flags !== (e.flags & ~ENTRY_FLAGS.OTHER_POINT) ||
      h.payloadOffset !== e.payloadOffset ||
      h.storedLength !== e.storedLength ||
      !h.sha256.equals(e.sha256)
    ) {
      out.push({
        code: 'E_INDEX_CORRUPT',
        message: `${reader.path}: chunk ${i} (region ${e.regionId}, window ${e.windowStart}) refers to point ${e.pointId}, which holds no such chunk`,
        chunk: i,
        region: e.regionId,
        windowStart: e.windowStart,
      });
    }
  });
  return out;
}
