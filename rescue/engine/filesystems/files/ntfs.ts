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
import { type MftRef, parseAttributeList } from '../ntfs-attrs.ts';
import { NTFS_BOOT, type NtfsBootSector, parseNtfsBootSector } from '../ntfs-boot.ts';
import { INDEX_ENTRY, parseIndexBlock, parseIndexRoot } from '../ntfs-index.ts';
import {
  ATTR,
  ATTR_FLAGS,
  type FileRecord,
  listAttributes,
  type NonResidentAttribute,
  type NtfsAttribute,
  parseFileRecord,
} from '../ntfs-record.ts';
import { type DataRun, decodeRunlist, runlistClusters } from '../ntfs-runlist.ts';
import type { VolumeFiles } from './index.ts';
import { lznt1Decompress } from './lznt1.ts';
import { type FileTree, fromFiletime, type TreeNode, treeFiles, upcaseName } from './tree.ts';

const RECORD = { MFT: 0, ROOT: 5, BOOT: 7, FIRST_USER: 16 } as const;
const FILE_NAME_NAMESPACE_DOS = 2;
/** ntfs-3g's own limit for an attribute list. */
const MAX_ATTRIBUTE_LIST = 0x40000;
/** Directory indexes larger than this are not read (System32 needs a few MiB). */
const MAX_INDEX_BYTES = 256 * 1024 * 1024;
/** Index blocks are read this many bytes at a time. */
const INDEX_READ_CHUNK = 1024 * 1024;
const MAX_REPARSE_BYTES = 16 * 1024;
const STANDARD_INFORMATION_OFF_MTIME = 0x08;
const REPARSE_TAG_NAME_SURROGATE = 0x20000000;
const INDEXED_FILE_NAME = ATTR.FILE_NAME;
const DIR_CACHE = 64;

interface Stream {
  resident: Buffer | null;
  runs: DataRun[];
  flags: number;
  compressionUnit: number;
  allocatedSize: number;
  dataSize: number;
  initializedSize: number;
}

interface NtfsNode extends TreeNode {
  record: number;
  rec: FileRecord;
  data?: Stream;
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

function streamSize(s: Stream): number {
  return s.resident ? s.resident.length : s.dataSize;
}

function residentStream(value: Buffer, flags: number): Stream {
  return {
    resident: value,
    runs: [],
    flags,
    compressionUnit: 0,
    allocatedSize: 0,
    dataSize: value.length,
    initializedSize: value.length,
  };
}

function nonResidentStream(first: NonResidentAttribute, runs: DataRun[]): Stream {
  return {
    resident: null,
    runs,
    flags: first.flags,
    compressionUnit: first.compressionUnit,
    allocatedSize: first.allocatedSize,
    dataSize: first.dataSize,
    initializedSize: first.initializedSize,
  };
}

class NtfsVolume {
  readonly src: BlockSource;
  readonly boot: NtfsBootSector;
  mft: Stream;

  constructor(src: BlockSource, boot: NtfsBootSector, mft: Stream) {
    this.src = src;
    this.boot = boot;
    this.mft = mft;
  }

  checkRuns(runs: readonly DataRun[], what: string): void {
    for (const r of runs) {
      if (r.lcn !== null && r.lcn + r.length > this.boot.clusterCount)
        throw corrupt(what, `run of ${r.length} clusters at cluster ${r.lcn} lies beyond the volume`);
    }
  }

  async readRecord(n: number, what: string): Promise<FileRecord> {
    const rs = this.boot.mftRecordSize;
    if (!Number.isSafeInteger(n) || n < 0 || (n + 1) * rs > this.mft.initializedSize)
      throw corrupt(what, `MFT record ${n} is beyond the $MFT`);
    const rec = parseFileRecord(await this.readStream(this.mft, n * rs, rs, '$MFT'), rs, what);
    if (rec.header.inUse && rec.header.recordNumber !== undefined && rec.header.recordNumber !== n)
      throw corrupt(what, `MFT record ${n} says it is record ${rec.header.recordNumber}`);
    return rec;
  }

  /**
   * The attribute `type`/`name` of the file whose base record is `rec`, all its extents joined,
   * following $ATTRIBUTE_LIST into extension records. `onRuns` sees the runs after every extent
   * (loading $MFT needs them to reach its own extension records).
   */
  async loadStream(
    recNo: number,
    rec: FileRecord,
    type: number,
    name: string,
    what: string,
    onRuns?: (runs: DataRun[]) => void,
  ): Promise<Stream | undefined> {
    const attrs = listAttributes(rec, what);
    const listAttr = attrs.find((a) => a.type === ATTR.ATTRIBUTE_LIST);
    const extents: NtfsAttribute[] = [];
    if (!listAttr) {
      for (const a of attrs) if (a.type === type && a.name === name) extents.push(a);
    } else {
      let listValue: Buffer;
      if (listAttr.nonResident) {
        if (listAttr.dataSize > MAX_ATTRIBUTE_LIST)
          throw corrupt(what, `attribute list of ${listAttr.dataSize} bytes`);
        const runs = decodeRunlist(listAttr.mappingPairs, listAttr.lowestVcn, `${what} attribute list`);
        this.checkRuns(runs, `${what} attribute list`);
        listValue = await this.readStream(
          nonResidentStream(listAttr, runs),
          0,
          listAttr.dataSize,
          `${what} attribute list`,
        );
      } else {
        listValue = listAttr.value;
      }
      const entries = parseAttributeList(listValue, `${what} attribute list`).filter(
        (e) => e.type === type && e.name === name,
      );
      const records = new Map<number, NtfsAttribute[]>([[recNo, attrs]]);
      const runsSoFar: DataRun[] = [];
      for (const e of entries) {
        let inRecord = records.get(e.ref.record);
        if (!inRecord) {
          const ext = await this.readRecord(e.ref.record, `${what} extension record ${e.ref.record}`);
          const belongs = ext.header.baseRecord === recNo && (recNo !== 0 || ext.header.baseSequence !== 0);
          if (!ext.header.inUse || !belongs)
            throw corrupt(what, `extension record ${e.ref.record} does not belong to record ${recNo}`);
          inRecord = listAttributes(ext, `${what} extension record ${e.ref.record}`);
          records.set(e.ref.record, inRecord);
        }
        const found = inRecord.find(
          (a) =>
            a.type === type &&
            a.name === name &&
            a.instance === e.instance &&
            (a.nonResident ? a.lowestVcn : 0) === e.lowestVcn,
        );
        if (!found)
          throw corrupt(
            what,
            `attribute 0x${type.toString(16)} at VCN ${e.lowestVcn} is missing from record ${e.ref.record}`,
          );
        extents.push(found);
        if (onRuns && found.nonResident) {
          runsSoFar.push(...decodeRunlist(found.mappingPairs, found.lowestVcn, what));
          this.checkRuns(runsSoFar, what);
          onRuns(runsSoFar.slice());
        }
      }
    }
    if (extents.length === 0) return undefined;
    const first = extents[0];
    if (!first.nonResident) {
      if (extents.length > 1) throw corrupt(what, 'resident attribute with several extents');
      return residentStream(first.value, first.flags);
    }
    const runs: DataRun[] = [];
    let nextVcn = 0;
    for (const a of extents) {
      if (!a.nonResident) throw corrupt(what, 'mixes resident and non-resident extents');
      if (a.lowestVcn !== nextVcn)
        throw corrupt(what, `extent starts at VCN ${a.lowestVcn}, expected ${nextVcn}`);
      const r = decodeRunlist(a.mappingPairs, a.lowestVcn, what);
      if (runlistClusters(r) !== a.highestVcn - a.lowestVcn + 1)
        throw corrupt(
          what,
          `runs cover ${runlistClusters(r)} clusters, the extent ${a.lowestVcn}..${a.highestVcn}`,
        );
      runs.push(...r);
      nextVcn = a.highestVcn + 1;
    }
    this.checkRuns(runs, what);
    if (first.initializedSize > first.dataSize || first.dataSize > first.allocatedSize)
      throw corrupt(
        what,
        `sizes: initialized ${first.initializedSize}, data ${first.dataSize}, allocated ${first.allocatedSize}`,
      );
    if (nextVcn * this.boot.clusterSize < first.allocatedSize)
      throw corrupt(
        what,
        `runs cover ${nextVcn} clusters, fewer than its allocated ${first.allocatedSize} bytes`,
      );
    return nonResidentStream(first, runs);
  }

  /**
   * `length` bytes at `offset` of a stream: sparse runs and bytes past the initialized size read
   * as zeros; compressed streams are expanded one compression unit at a time.
   */
  async readStream(s: Stream, offset: number, length: number, what: string): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > streamSize(s))
      throw corrupt(what, `read of ${length} bytes at ${offset} is beyond its ${streamSize(s)} bytes`);
    if (s.resident) return Buffer.from(s.resident.subarray(offset, offset + length));
    if (s.flags & ATTR_FLAGS.ENCRYPTED) throw unsupported(what, 'it is encrypted (EFS)');
    if (s.flags & ATTR_FLAGS.COMPRESSED) return this.readCompressed(s, offset, length, what);
    const out = Buffer.alloc(length);
    const cs = this.boot.clusterSize;
    const end = Math.min(offset + length, s.initializedSize);
    let pos = offset;
    for (const r of s.runs) {
      if (pos >= end) break;
      const runStart = r.vcn * cs;
      const runEnd = (r.vcn + r.length) * cs;
      if (runEnd <= pos) continue;
      if (runStart > pos) throw corrupt(what, `no run covers byte ${pos}`);
      const stop = Math.min(runEnd, end);
      if (r.lcn !== null)
        (await this.src.read(r.lcn * cs + (pos - runStart), stop - pos)).copy(out, pos - offset);
      pos = stop;
    }
    if (pos < end) throw corrupt(what, `its runs end at byte ${pos}, before byte ${end}`);
    return out;
  }

  /** LCN of every cluster of [vcn, vcn + count), null where sparse. */
  private clusterMap(s: Stream, vcn: number, count: number, what: string): (number | null)[] {
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

  private async readCompressed(s: Stream, offset: number, length: number, what: string): Promise<Buffer> {
    const cs = this.boot.clusterSize;
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
      const lcns = this.clusterMap(s, firstVcn, count, what);
      const stored = lcns.filter((l) => l !== null) as number[];
      let unit: Buffer;
      if (stored.length === 0) {
        unit = Buffer.alloc(unitBytes);
      } else {
        const raw = Buffer.alloc(stored.length * cs);
        for (let i = 0; i < stored.length; ) {
          let j = i + 1;
          while (j < stored.length && stored[j] === stored[j - 1] + 1) j++;
          (await this.src.read(stored[i] * cs, (j - i) * cs)).copy(raw, i * cs);
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
  }
}

async function openVolume(src: BlockSource): Promise<NtfsVolume> {
  if (src.size < NTFS_BOOT.SIZE) throw corrupt('NTFS boot sector', 'the volume is smaller than one sector');
  const boot = parseNtfsBootSector(await src.read(0, NTFS_BOOT.SIZE));
  const volumeBytes = boot.totalSectors * boot.bytesPerSector;
  if (volumeBytes > src.size) {
    throw new RescueError(
      'E_FS_BEYOND_PARTITION',
      `The NTFS volume claims ${volumeBytes} bytes but ${src.path} has only ${src.size}`,
      'The partition was shrunk without shrinking the filesystem, or the image is truncated.',
    );
  }
  const rs = boot.mftRecordSize;
  const cs = boot.clusterSize;
  if (boot.mftLcn * cs + rs > volumeBytes) throw corrupt('$MFT', 'record 0 lies beyond the volume');
  const rec0 = parseFileRecord(await src.read(boot.mftLcn * cs, rs), rs, '$MFT record 0');
  if (!rec0.header.inUse) throw corrupt('$MFT record 0', 'is not in use');
  const first = listAttributes(rec0, '$MFT record 0').find(
    (a): a is NonResidentAttribute =>
      a.type === ATTR.DATA && a.name === '' && a.nonResident && a.lowestVcn === 0,
  );
  if (!first) throw corrupt('$MFT record 0', 'has no non-resident $DATA attribute');
  if (first.flags & (ATTR_FLAGS.COMPRESSED | ATTR_FLAGS.ENCRYPTED | ATTR_FLAGS.SPARSE))
    throw corrupt('$MFT', 'is compressed, encrypted or sparse');
  const firstRuns = decodeRunlist(first.mappingPairs, 0, '$MFT $DATA');
  const vol = new NtfsVolume(src, boot, nonResidentStream(first, firstRuns));
  vol.checkRuns(firstRuns, '$MFT $DATA');
  if (firstRuns.length === 0 || firstRuns[0].lcn !== boot.mftLcn)
    throw corrupt('$MFT $DATA', 'does not start at the cluster the boot sector names');
  const full = await vol.loadStream(RECORD.MFT, rec0, ATTR.DATA, '', '$MFT $DATA', (runs) => {
    vol.mft = nonResidentStream(first, runs);
  });
  if (!full || full.resident) throw corrupt('$MFT', 'has no usable $DATA attribute');
  if (full.runs.some((r) => r.lcn === null)) throw corrupt('$MFT $DATA', 'has a sparse run');
  if (full.initializedSize < (RECORD.BOOT + 1) * rs)
    throw corrupt('$MFT', 'is too small to hold the system files');
  vol.mft = full;
  return vol;
}

class NtfsTree implements FileTree<NtfsNode> {
  readonly followsSymlinks = false;
  private readonly vol: NtfsVolume;
  private readonly dirs = new Map<number, DirEntry[]>();

  constructor(vol: NtfsVolume) {
    this.vol = vol;
  }

  async root(): Promise<NtfsNode> {
    return this.node({ record: RECORD.ROOT, sequence: 0 }, 'root directory');
  }

  /** The file a directory entry points to, with its kind, size and modification time. */
  private async node(ref: MftRef, what: string): Promise<NtfsNode> {
    const rec = await this.vol.readRecord(ref.record, what);
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
    const reparse = await this.vol.loadStream(
      ref.record,
      rec,
      ATTR.REPARSE_POINT,
      '',
      `${what} $REPARSE_POINT`,
    );
    if (reparse) {
      const size = streamSize(reparse);
      if (size < 4 || size > MAX_REPARSE_BYTES) throw corrupt(what, `reparse point of ${size} bytes`);
      node.reparseTag = (await this.vol.readStream(reparse, 0, 4, `${what} $REPARSE_POINT`)).readUInt32LE(0);
      // Junctions, symbolic links and mount points name another path: not followed.
      if (node.reparseTag & REPARSE_TAG_NAME_SURROGATE) node.kind = 'other';
    }
    if (node.kind === 'file') {
      node.data = await this.vol.loadStream(ref.record, rec, ATTR.DATA, '', `${what} $DATA`);
      node.size = node.data ? streamSize(node.data) : 0;
    }
    return node;
  }

  private async entries(dir: NtfsNode): Promise<DirEntry[]> {
    const cached = this.dirs.get(dir.record);
    if (cached) return cached;
    const what = `directory (MFT record ${dir.record})`;
    const vol = this.vol;
    const rootStream = await vol.loadStream(
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
    const alloc = await vol.loadStream(
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
      const bitmapStream = await vol.loadStream(dir.record, dir.rec, ATTR.BITMAP, '$I30', `${what} $BITMAP`);
      const inUse = bitmapStream
        ? await vol.readStream(
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
        const chunk = await vol.readStream(alloc, first * bs, n * bs, `${what} $INDEX_ALLOCATION`);
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
      .filter((e) => e.namespace !== FILE_NAME_NAMESPACE_DOS && e.ref.record >= RECORD.FIRST_USER)
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
    return this.vol.readStream(node.data, 0, node.size, what);
  }
}

export async function openNtfsFiles(src: BlockSource): Promise<VolumeFiles> {
  const tree = new NtfsTree(await openVolume(src));
  const root = await tree.root();
  if (root.kind !== 'dir') throw corrupt('NTFS root directory', 'record 5 is not a directory');
  return treeFiles(tree);
}
