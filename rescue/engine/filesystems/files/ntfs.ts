/**
 * Files on NTFS: MFT records through the $MFT runlist (itself possibly continued through an
 * attribute list), directories through their $I30 index ($INDEX_ROOT and every in-use INDX block
 * of $INDEX_ALLOCATION, walked whole rather than searched, so no collation table is needed), file
 * contents from the unnamed $DATA attribute: resident, non-resident with sparse runs, split over
 * extension records by $ATTRIBUTE_LIST, or LZNT1-compressed. Encrypted files and reparse points
 * that redirect the data (WOF/CompactOS, deduplication) are refused with E_FS_UNSUPPORTED_FILE;
 * junctions and symbolic links are reported as 'other' and never followed.
 */
import type { BlockSource } from '../../devices/source.ts';
import { corrupt, RescueError } from '../../errors.ts';
import type { MftRef } from '../ntfs-attrs.ts';
import { INDEX_ENTRY, parseIndexBlock, parseIndexRoot } from '../ntfs-index.ts';
import { ATTR, ATTR_FLAGS, type FileRecord, listAttributes } from '../ntfs-record.ts';
import {
  loadStream,
  NTFS_RECORD,
  type NtfsStream,
  type NtfsVolume,
  openNtfsVolume,
  type PackedStreamReader,
  readRecord,
  readStream,
  streamSize,
} from '../ntfs-volume.ts';
import type { VolumeFiles } from './index.ts';
import { lznt1Decompress } from './lznt1.ts';
import { type FileTree, fromFiletime, type TreeNode, treeFiles, upcaseName } from './tree.ts';

/** Records below this one hold the system files ($MFT … and reserved ones). */
const FIRST_USER_RECORD = 16;
const FILE_NAME_NAMESPACE_DOS = 2;
/** Directory indexes larger than this are not read (System32 needs a few MiB). */
const MAX_INDEX_BYTES = 256 * 1024 * 1024;
/** Index blocks are read this many bytes at a time. */
const INDEX_READ_CHUNK = 1024 * 1024;
const MAX_REPARSE_BYTES = 16 * 1024;
const STANDARD_INFORMATION_OFF_MTIME = 0x08;
const REPARSE_TAG_NAME_SURROGATE = 0x20000000;
const INDEXED_FILE_NAME = ATTR.FILE_NAME;
const DIR_CACHE = 64;

interface NtfsNode extends TreeNode {
  record: number;
  rec: FileRecord;
  data?: NtfsStream;
  reparseTag?: number;
}

interface DirEntry {
  name: string;
  namespace: number;
  ref: MftRef;
}

function unsupported(what: string, why: string): RescueError {
  return new RescueError(
    'E_FS_UNSUPPORTED_FILE',
    `${what} cannot be read: ${why}`,
    'Read it from the running Windows system that owns it.',
  );
}

/** LCN of every cluster of [vcn, vcn + count), null where sparse. */
function clusterMap(s: NtfsStream, vcn: number, count: number, what: string): (number | null)[] {
  const out: (number | null)[] = [];
  for (const r of s.runs) {
    if (out.length === count) break;
    const want = vcn + out.length;
    if (r.vcn + r.length <= want) continue;
    if (r.vcn > want) throw corrupt(what, `no run covers cluster ${want}`);
    const n = Math.min(r.vcn + r.length - want, count - out.length);
    for (let i = 0; i < n; i++) out.push(r.lcn === null ? null : r.lcn + (want - r.vcn) + i);
  }
  if (out.length < count) throw corrupt(what, `its runs end before cluster ${vcn + count}`);
  return out;
}

/** Compressed streams are expanded one compression unit at a time; encrypted ones are refused. */
const readPacked: PackedStreamReader = async (vol, s, offset, length, what) => {
  if (s.flags & ATTR_FLAGS.ENCRYPTED) throw unsupported(what, 'it is encrypted (EFS)');
  const cs = vol.boot.clusterSize;
  // NTFS compresses in units of 2^compressionUnit clusters (16 in practice), clusters ≤ 4 KiB.
  if (s.compressionUnit === 0 || s.compressionUnit > 8 || cs > 4096)
    throw unsupported(what, `compression unit 2^${s.compressionUnit} of ${cs}-byte clusters`);
  const unitClusters = 1 << s.compressionUnit;
  const unitBytes = unitClusters * cs;
  const out = Buffer.alloc(length);
  const end = offset + length;
  const totalClusters = Math.ceil(s.allocatedSize / cs);
  for (let u = Math.floor(offset / unitBytes); u * unitBytes < end; u++) {
    const firstVcn = u * unitClusters;
    const count = Math.min(unitClusters, totalClusters - firstVcn);
    if (count <= 0) throw corrupt(what, `compression unit ${u} lies beyond the allocation`);
    const lcns = clusterMap(s, firstVcn, count, what);
    const stored = lcns.filter((l) => l !== null) as number[];
    let unit: Buffer;
    if (stored.length === 0) {
      unit = Buffer.alloc(unitBytes);
    } else {
      const raw = Buffer.alloc(stored.length * cs);
      for (let i = 0; i < stored.length; ) {
        let j = i + 1;
        while (j < stored.length && stored[j] === stored[j - 1] + 1) j++;
        (await vol.src.read(stored[i] * cs, (j - i) * cs)).copy(raw, i * cs);
        i = j;
      }
      if (stored.length === unitClusters) {
        unit = raw;
      } else {
        // A compressed unit keeps its data in the first clusters; the rest is a sparse tail.
        if (lcns.slice(0, stored.length).some((l) => l === null))
          throw corrupt(what, `compression unit ${u} has a hole before its data`);
        unit = lznt1Decompress(raw, unitBytes, `${what}, compression unit ${u}`);
      }
    }
    const unitStart = u * unitBytes;
    const from = Math.max(offset, unitStart);
    const to = Math.min(end, unitStart + unitBytes);
    unit.copy(out, from - offset, from - unitStart, to - unitStart);
  }
  if (s.initializedSize < end) out.fill(0, Math.max(0, s.initializedSize - offset));
  return out;
};

class NtfsTree implements FileTree<NtfsNode> {
  readonly followsSymlinks = false;
  private readonly vol: NtfsVolume;
  private readonly dirs = new Map<number, DirEntry[]>();

  constructor(vol: NtfsVolume) {
    this.vol = vol;
  }

  async root(): Promise<NtfsNode> {
    return this.node({ record: NTFS_RECORD.ROOT, sequence: 0 }, 'root directory');
  }

  /** The file a directory entry points to, with its kind, size and modification time. */
  private async node(ref: MftRef, what: string): Promise<NtfsNode> {
    const rec = await readRecord(this.vol, ref.record, what);
    if (!rec.header.inUse || rec.header.baseRecord !== 0)
      throw corrupt(what, `record ${ref.record} is not an in-use base record`);
    if (ref.sequence !== 0 && ref.sequence !== rec.header.sequence)
      throw corrupt(what, `the directory entry is stale (record ${ref.record} was reused)`);
    const node: NtfsNode = {
      record: ref.record,
      rec,
      kind: rec.header.isDirectory ? 'dir' : 'file',
      size: 0,
    };
    for (const a of listAttributes(rec, what)) {
      if (
        a.type === ATTR.STANDARD_INFORMATION &&
        !a.nonResident &&
        a.value.length >= STANDARD_INFORMATION_OFF_MTIME + 8
      ) {
        const mtime = fromFiletime(a.value.readBigInt64LE(STANDARD_INFORMATION_OFF_MTIME));
        if (mtime) node.mtime = mtime;
      }
    }
    const reparse = await loadStream(
      this.vol,
      ref.record,
      rec,
      ATTR.REPARSE_POINT,
      '',
      `${what} $REPARSE_POINT`,
    );
    if (reparse) {
      const size = streamSize(reparse);
      if (size < 4 || size > MAX_REPARSE_BYTES) throw corrupt(what, `reparse point of ${size} bytes`);
      node.reparseTag = (await readStream(this.vol, reparse, 0, 4, `${what} $REPARSE_POINT`)).readUInt32LE(0);
      // Junctions, symbolic links and mount points name another path: not followed.
      if (node.reparseTag & REPARSE_TAG_NAME_SURROGATE) node.kind = 'other';
    }
    if (node.kind === 'file') {
      node.data = await loadStream(this.vol, ref.record, rec, ATTR.DATA, '', `${what} $DATA`);
      node.size = node.data ? streamSize(node.data) : 0;
    }
    return node;
  }

  private async entries(dir: NtfsNode): Promise<DirEntry[]> {
    const cached = this.dirs.get(dir.record);
    if (cached) return cached;
    const what = `directory (MFT record ${dir.record})`;
    const vol = this.vol;
    const rootStream = await loadStream(
      vol,
      dir.record,
      dir.rec,
      ATTR.INDEX_ROOT,
      '$I30',
      `${what} $INDEX_ROOT`,
    );
    if (!rootStream?.resident) throw corrupt(what, 'has no resident $INDEX_ROOT');
    const root = parseIndexRoot(rootStream.resident, `${what} $INDEX_ROOT`);
    if (root.indexedType !== INDEXED_FILE_NAME)
      throw corrupt(what, `index of attribute type 0x${root.indexedType.toString(16)}`);
    const raw = [...root.node.entries];
    const alloc = await loadStream(
      vol,
      dir.record,
      dir.rec,
      ATTR.INDEX_ALLOCATION,
      '$I30',
      `${what} $INDEX_ALLOCATION`,
    );
    if (alloc) {
      const bs = root.blockSize;
      if (bs < 512 || bs & (bs - 1) || bs > 65536) throw corrupt(what, `index block size ${bs}`);
      const size = streamSize(alloc);
      if (size > MAX_INDEX_BYTES || size > vol.boot.clusterCount * vol.boot.clusterSize)
        throw corrupt(what, `index of ${size} bytes`);
      if (
        alloc.resident ||
        alloc.runs.some((r) => r.lcn === null) ||
        alloc.flags & (ATTR_FLAGS.COMPRESSED | ATTR_FLAGS.ENCRYPTED)
      )
        throw corrupt(what, '$INDEX_ALLOCATION is resident, sparse, compressed or encrypted');
      const blocks = Math.floor(size / bs);
      const bitmapStream = await loadStream(vol, dir.record, dir.rec, ATTR.BITMAP, '$I30', `${what} $BITMAP`);
      const inUse = bitmapStream
        ? await readStream(
            vol,
            bitmapStream,
            0,
            Math.min(streamSize(bitmapStream), Math.ceil(blocks / 8)),
            `${what} $BITMAP`,
          )
        : null;
      // Index blocks smaller than a cluster are numbered in 512-byte units, larger ones in clusters.
      const vcnUnit = bs >= vol.boot.clusterSize ? vol.boot.clusterSize : 512;
      const perChunk = Math.max(1, Math.floor(INDEX_READ_CHUNK / bs));
      for (let first = 0; first < blocks; first += perChunk) {
        const n = Math.min(perChunk, blocks - first);
        const used = (i: number) =>
          !inUse || (i >> 3 < inUse.length && (inUse[i >> 3] & (1 << (i & 7))) !== 0);
        let any = false;
        for (let i = first; i < first + n && !any; i++) any = used(i);
        if (!any) continue;
        const chunk = await readStream(vol, alloc, first * bs, n * bs, `${what} $INDEX_ALLOCATION`);
        for (let i = first; i < first + n; i++) {
          if (!used(i)) continue;
          const block = parseIndexBlock(
            chunk.subarray((i - first) * bs, (i - first + 1) * bs),
            bs,
            `${what} index block ${i}`,
          );
          if (block.vcn !== (i * bs) / vcnUnit)
            throw corrupt(`${what} index block ${i}`, `says it is at VCN ${block.vcn}`);
          raw.push(...block.node.entries);
        }
      }
    }
    const out: DirEntry[] = [];
    for (const e of raw) {
      if (e.flags & INDEX_ENTRY.FLAG_END || !e.key) continue;
      out.push({ name: e.key.name, namespace: e.key.namespace, ref: e.ref });
    }
    if (this.dirs.size >= DIR_CACHE) this.dirs.clear();
    this.dirs.set(dir.record, out);
    return out;
  }

  async lookup(dir: NtfsNode, name: string): Promise<NtfsNode | undefined> {
    const list = await this.entries(dir);
    const up = upcaseName(name);
    // POSIX-namespace names may differ only in case: an exact match wins.
    const hit = list.find((e) => e.name === name) ?? list.find((e) => upcaseName(e.name) === up);
    return hit ? this.node(hit.ref, name) : undefined;
  }

  /** Win32/POSIX names; DOS 8.3 aliases and the system files ($MFT …, records below 16) are hidden, as ntfs-3g hides them. */
  async list(dir: NtfsNode): Promise<string[]> {
    return (await this.entries(dir))
      .filter((e) => e.namespace !== FILE_NAME_NAMESPACE_DOS && e.ref.record >= FIRST_USER_RECORD)
      .map((e) => e.name);
  }

  async readLink(): Promise<string> {
    throw corrupt('NTFS', 'reparse points are not read as symbolic links');
  }

  async read(node: NtfsNode): Promise<Buffer> {
    const what = `file (MFT record ${node.record})`;
    if (node.reparseTag !== undefined)
      throw unsupported(
        what,
        `its data is behind reparse point tag 0x${node.reparseTag.toString(16)} (e.g. CompactOS/WOF compression or deduplication)`,
      );
    if (!node.data) return Buffer.alloc(0);
    return readStream(this.vol, node.data, 0, node.size, what);
  }
}

export async function openNtfsFiles(src: BlockSource): Promise<VolumeFiles> {
  const tree = new NtfsTree(await openNtfsVolume(src, readPacked));
  const root = await tree.root();
  if (root.kind !== 'dir') throw corrupt('NTFS root directory', 'record 5 is not a directory');
  return treeFiles(tree);
}
