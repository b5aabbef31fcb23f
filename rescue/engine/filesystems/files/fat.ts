/**
 * Files on FAT12/16/32: the fixed root directory (FAT12/16) or the root cluster chain (FAT32),
 * directories and files through cluster chains of the active FAT. Names are matched without regard
 * to case against the long name and the 8.3 name. Every chain is bounded by the length its entry
 * implies, so a looping or cross-linked FAT ends in E_METADATA_CORRUPT, not a hang.
 */
import type { BlockSource } from '../../devices/source.ts';
import { corrupt } from '../../errors.ts';
import {
  FAT_BOOT,
  FAT_ENTRY,
  FAT_LIMITS,
  type FatLayout,
  fatEntry,
  fatLayout,
  parseFatBootSector,
} from '../fat-bpb.ts';
import { type FatDirEntry, parseFatDirectory } from './fat-dir.ts';
import type { VolumeFiles } from './index.ts';
import { type FileTree, type TreeNode, treeFiles, upcaseName } from './tree.ts';

/** FAT entries are read a page at a time (a multiple of 3 bytes and 4 bytes: FAT12 pairs stay whole). */
const FAT_PAGE = 48 * 1024;
const READ_CHUNK = 4 * 1024 * 1024;
const DIR_CACHE = 64;

interface FatNode extends TreeNode {
  /** 0 for the FAT12/16 fixed root directory and for empty files. */
  firstCluster: number;
  isRoot: boolean;
  /** Key for the directory cache. */
  id: string;
}

class FatTree implements FileTree<FatNode> {
  readonly followsSymlinks = false;
  private readonly src: BlockSource;
  private readonly layout: FatLayout;
  private readonly fatBase: number;
  private page = -1;
  private pageBytes: Buffer = Buffer.alloc(0);
  private readonly dirs = new Map<string, FatDirEntry[]>();

  constructor(src: BlockSource, layout: FatLayout) {
    this.src = src;
    this.layout = layout;
    this.fatBase = layout.fatStart + (layout.mirroring ? 0 : layout.activeFat) * layout.fatBytes;
  }

  private async entry(n: number): Promise<number> {
    const { type } = this.layout;
    // Byte offset of the entry's first byte; FAT12 entries straddle bytes, so read the pair.
    const off = type === 12 ? n + (n >> 1) : n * (type / 8);
    const page = Math.floor(off / FAT_PAGE);
    if (page !== this.page) {
      const start = page * FAT_PAGE;
      // One spare byte so that a FAT12 entry at the end of a page is whole.
      const len = Math.min(FAT_PAGE + 2, this.layout.fatBytes - start);
      this.pageBytes = await this.src.read(this.fatBase + start, len);
      this.page = page;
    }
    const local = off - page * FAT_PAGE;
    if (type === 12) {
      const word = this.pageBytes[local] | (this.pageBytes[local + 1] << 8);
      return n & 1 ? word >> 4 : word & 0xfff;
    }
    return fatEntry(this.pageBytes.subarray(local), type, 0);
  }

  private valid(c: number): boolean {
    return c >= FAT_LIMITS.FIRST_CLUSTER && c <= this.layout.clusterCount + 1;
  }

  /**
   * The chain from `first`: exactly `count` clusters when given (a shorter chain is corrupt), else
   * up to the end-of-chain mark but never more than `max`.
   */
  private async chain(first: number, what: string, opts: { count?: number; max: number }): Promise<number[]> {
    if (!this.valid(first))
      throw corrupt(what, `first cluster ${first} is outside 2..${this.layout.clusterCount + 1}`);
    const eoc = FAT_ENTRY.EOC_MIN[this.layout.type];
    const out = [first];
    const limit = opts.count ?? opts.max;
    let c = first;
    while (out.length < limit) {
      const next = await this.entry(c);
      if (next >= eoc) {
        if (opts.count !== undefined)
          throw corrupt(what, `cluster chain ends after ${out.length} of ${opts.count} clusters`);
        return out;
      }
      if (!this.valid(next))
        throw corrupt(what, `cluster ${c} links to invalid cluster 0x${next.toString(16)}`);
      out.push(next);
      c = next;
    }
    if (opts.count === undefined && (await this.entry(c)) < eoc)
      throw corrupt(what, `cluster chain is longer than ${opts.max} clusters (it may loop)`);
    return out;
  }

  /** Reads the clusters in order, joining runs of consecutive clusters into one read. */
  private async readClusters(clusters: number[], length: number): Promise<Buffer> {
    const { clusterBytes, dataStart } = this.layout;
    const out = Buffer.alloc(length);
    for (let i = 0; i < clusters.length && i * clusterBytes < length; ) {
      let j = i + 1;
      while (
        j < clusters.length &&
        clusters[j] === clusters[j - 1] + 1 &&
        (j - i + 1) * clusterBytes <= READ_CHUNK
      )
        j++;
      const bytes = Math.min((j - i) * clusterBytes, length - i * clusterBytes);
      const data = await this.src.read(
        dataStart + (clusters[i] - FAT_LIMITS.FIRST_CLUSTER) * clusterBytes,
        bytes,
      );
      data.copy(out, i * clusterBytes);
      i = j;
    }
    return out;
  }

  async root(): Promise<FatNode> {
    return { kind: 'dir', size: 0, firstCluster: this.layout.rootCluster, isRoot: true, id: 'root' };
  }

  private async entries(dir: FatNode): Promise<FatDirEntry[]> {
    const cached = this.dirs.get(dir.id);
    if (cached) return cached;
    const { layout } = this;
    let bytes: Buffer;
    if (dir.isRoot && layout.type !== 32) {
      bytes = await this.src.read(layout.rootDirStart, layout.rootEntries * FAT_LIMITS.DIR_ENTRY_SIZE);
    } else {
      const max = Math.min(layout.clusterCount, Math.ceil(FAT_LIMITS.MAX_DIR_BYTES / layout.clusterBytes));
      const clusters = await this.chain(dir.firstCluster, `directory at cluster ${dir.firstCluster}`, {
        max,
      });
      bytes = await this.readClusters(clusters, clusters.length * layout.clusterBytes);
    }
    const list = parseFatDirectory(bytes, layout.type === 32);
    if (this.dirs.size >= DIR_CACHE) this.dirs.clear();
    this.dirs.set(dir.id, list);
    return list;
  }

  private toNode(e: FatDirEntry): FatNode {
    const what = `FAT directory entry ${e.name}`;
    if (e.isDirectory) {
      if (!this.valid(e.firstCluster)) throw corrupt(what, `directory starts at cluster ${e.firstCluster}`);
    } else if (e.size > 0 && !this.valid(e.firstCluster)) {
      throw corrupt(what, `file of ${e.size} bytes starts at cluster ${e.firstCluster}`);
    }
    const node: FatNode = {
      kind: e.isDirectory ? 'dir' : 'file',
      size: e.isDirectory ? 0 : e.size,
      firstCluster: e.firstCluster,
      isRoot: false,
      id: `c${e.firstCluster}`,
    };
    if (e.mtime) node.mtime = e.mtime;
    return node;
  }

  async lookup(dir: FatNode, name: string): Promise<FatNode | undefined> {
    const list = await this.entries(dir);
    const exact = list.find((e) => e.name === name);
    if (exact) return this.toNode(exact);
    const up = upcaseName(name);
    const hit = list.find((e) => upcaseName(e.name) === up || e.shortName === up);
    return hit ? this.toNode(hit) : undefined;
  }

  async list(dir: FatNode): Promise<string[]> {
    return (await this.entries(dir)).map((e) => e.name);
  }

  async readLink(): Promise<string> {
    throw corrupt('FAT', 'has no symbolic links');
  }

  async read(node: FatNode): Promise<Buffer> {
    if (node.size === 0) return Buffer.alloc(0);
    const count = Math.ceil(node.size / this.layout.clusterBytes);
    const clusters = await this.chain(node.firstCluster, `file at cluster ${node.firstCluster}`, {
      count,
      max: count,
    });
    return this.readClusters(clusters, node.size);
  }
}

export async function openFatFiles(src: BlockSource): Promise<VolumeFiles> {
  if (src.size < FAT_BOOT.SIZE) throw corrupt('FAT volume', `${src.path} is only ${src.size} bytes`);
  const layout = fatLayout(parseFatBootSector(await src.read(0, FAT_BOOT.SIZE)));
  if (layout.volumeBytes > src.size) {
    throw corrupt(
      'FAT volume',
      `the boot sector claims ${layout.volumeBytes} bytes but ${src.path} has only ${src.size}`,
    );
  }
  return treeFiles(new FatTree(src, layout));
}
