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
import { ClusterChains } from './clusters.ts';
import { type FatDirEntry, parseFatDirectory } from './fat-dir.ts';
import type { VolumeFiles } from './index.ts';
import { type FileTree, type TreeNode, treeFiles, upcaseName } from './tree.ts';

/** FAT entries are read a page at a time (a multiple of 3 bytes and 4 bytes: FAT12 pairs stay whole). */
const FAT_PAGE = 48 * 1024;
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
  private readonly chains: ClusterChains;
  private page = -1;
  private pageBytes: Buffer = Buffer.alloc(0);
  private readonly dirs = new Map<string, FatDirEntry[]>();

  constructor(src: BlockSource, layout: FatLayout) {
    this.src = src;
    this.layout = layout;
    this.fatBase = layout.fatStart + (layout.mirroring ? 0 : layout.activeFat) * layout.fatBytes;
    const eoc = FAT_ENTRY.EOC_MIN[layout.type];
    this.chains = new ClusterChains({
      src,
      start: layout.dataStart,
      clusterBytes: layout.clusterBytes,
      clusterCount: layout.clusterCount,
      entry: (n) => this.entry(n),
      endsChain: (v) => v >= eoc,
    });
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
      const clusters = await this.chains.chain(dir.firstCluster, `directory at cluster ${dir.firstCluster}`, {
        max,
      });
      bytes = await this.chains.read(clusters, clusters.length * layout.clusterBytes);
    }
    const list = parseFatDirectory(bytes, layout.type === 32);
    if (this.dirs.size >= DIR_CACHE) this.dirs.clear();
    this.dirs.set(dir.id, list);
    return list;
  }

  private toNode(e: FatDirEntry): FatNode {
    const what = `FAT directory entry ${e.name}`;
    if (e.isDirectory) {
      if (!this.chains.valid(e.firstCluster))
        throw corrupt(what, `directory starts at cluster ${e.firstCluster}`);
    } else if (e.size > 0 && !this.chains.valid(e.firstCluster)) {
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
    const clusters = await this.chains.chain(node.firstCluster, `file at cluster ${node.firstCluster}`, {
      count,
      max: count,
    });
    return this.chains.read(clusters, node.size);
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
