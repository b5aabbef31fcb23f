/**
 * Files on exFAT: the root directory through the FAT, other directories and files through their
 * stream extension (contiguous when NoFatChain is set, else the FAT chain), bytes past
 * ValidDataLength read as zeros. Names are matched without regard to case.
 */
import type { BlockSource } from '../../devices/source.ts';
import { corrupt } from '../../errors.ts';
import {
  EXFAT_BOOT,
  EXFAT_FAT,
  EXFAT_LIMITS,
  type ExfatLayout,
  exfatLayout,
  parseExfatBootSector,
  verifyExfatBootRegion,
} from '../exfat-boot.ts';
import { type ExfatDirEntry, parseExfatDirectory } from './exfat-dir.ts';
import type { VolumeFiles } from './index.ts';
import { type FileTree, type TreeNode, treeFiles, upcaseName } from './tree.ts';

const FAT_PAGE = 64 * 1024;
const READ_CHUNK = 4 * 1024 * 1024;
const DIR_CACHE = 64;

interface ExfatNode extends TreeNode {
  isRoot: boolean;
  firstCluster: number;
  /** Bytes allocated to the stream (DataLength); `size` is the same for files. */
  dataLength: number;
  validDataLength: number;
  noFatChain: boolean;
}

class ExfatTree implements FileTree<ExfatNode> {
  readonly followsSymlinks = false;
  private readonly src: BlockSource;
  private readonly layout: ExfatLayout;
  private page = -1;
  private pageBytes: Buffer = Buffer.alloc(0);
  private readonly dirs = new Map<number, ExfatDirEntry[]>();

  constructor(src: BlockSource, layout: ExfatLayout) {
    this.src = src;
    this.layout = layout;
  }

  private async entry(n: number): Promise<number> {
    const off = n * EXFAT_FAT.ENTRY_SIZE;
    const page = Math.floor(off / FAT_PAGE);
    if (page !== this.page) {
      const start = page * FAT_PAGE;
      const base = this.layout.fatStart + this.layout.activeFat * this.layout.fatBytes;
      this.pageBytes = await this.src.read(base + start, Math.min(FAT_PAGE, this.layout.fatBytes - start));
      this.page = page;
    }
    return this.pageBytes.readUInt32LE(off - page * FAT_PAGE);
  }

  private valid(c: number): boolean {
    return c >= EXFAT_LIMITS.FIRST_CLUSTER && c <= this.layout.clusterCount + 1;
  }

  private async clusters(
    first: number,
    what: string,
    opts: { count?: number; max: number; noFatChain?: boolean },
  ): Promise<number[]> {
    const last = this.layout.clusterCount + 1;
    if (!this.valid(first)) throw corrupt(what, `first cluster ${first} is outside 2..${last}`);
    if (opts.noFatChain) {
      const count = opts.count ?? 0;
      if (first + count - 1 > last) throw corrupt(what, 'runs past the cluster heap');
      return Array.from({ length: count }, (_, i) => first + i);
    }
    const limit = opts.count ?? opts.max;
    const out = [first];
    let c = first;
    while (out.length < limit) {
      const next = await this.entry(c);
      if (next === EXFAT_FAT.END_OF_CHAIN) {
        if (opts.count !== undefined)
          throw corrupt(what, `cluster chain ends after ${out.length} of ${opts.count} clusters`);
        return out;
      }
      if (!this.valid(next))
        throw corrupt(what, `cluster ${c} links to invalid cluster 0x${next.toString(16)}`);
      out.push(next);
      c = next;
    }
    if (opts.count === undefined && (await this.entry(c)) !== EXFAT_FAT.END_OF_CHAIN)
      throw corrupt(what, `cluster chain is longer than ${opts.max} clusters (it may loop)`);
    return out;
  }

  /** `length` bytes from the clusters; bytes from `valid` on are zeros. */
  private async readClusters(clusters: number[], length: number, valid = length): Promise<Buffer> {
    const { clusterBytes, heapStart } = this.layout;
    const out = Buffer.alloc(length);
    const end = Math.min(length, valid);
    for (let i = 0; i < clusters.length && i * clusterBytes < end; ) {
      let j = i + 1;
      while (
        j < clusters.length &&
        clusters[j] === clusters[j - 1] + 1 &&
        (j - i + 1) * clusterBytes <= READ_CHUNK
      )
        j++;
      const bytes = Math.min((j - i) * clusterBytes, end - i * clusterBytes);
      const data = await this.src.read(
        heapStart + (clusters[i] - EXFAT_LIMITS.FIRST_CLUSTER) * clusterBytes,
        bytes,
      );
      data.copy(out, i * clusterBytes);
      i = j;
    }
    return out;
  }

  async root(): Promise<ExfatNode> {
    return {
      kind: 'dir',
      size: 0,
      isRoot: true,
      firstCluster: this.layout.rootCluster,
      dataLength: 0,
      validDataLength: 0,
      noFatChain: false,
    };
  }

  private async entries(dir: ExfatNode): Promise<ExfatDirEntry[]> {
    const cached = this.dirs.get(dir.firstCluster);
    if (cached) return cached;
    const { clusterBytes, clusterCount } = this.layout;
    const what = `exFAT directory at cluster ${dir.firstCluster}`;
    let clusters: number[];
    if (dir.isRoot) {
      const max = Math.min(clusterCount, Math.ceil(EXFAT_LIMITS.MAX_DIR_BYTES / clusterBytes));
      clusters = await this.clusters(dir.firstCluster, what, { max });
    } else {
      if (dir.dataLength > EXFAT_LIMITS.MAX_DIR_BYTES || dir.dataLength === 0)
        throw corrupt(what, `directory of ${dir.dataLength} bytes`);
      const count = Math.ceil(dir.dataLength / clusterBytes);
      clusters = await this.clusters(dir.firstCluster, what, {
        count,
        max: count,
        noFatChain: dir.noFatChain,
      });
    }
    const list = parseExfatDirectory(await this.readClusters(clusters, clusters.length * clusterBytes), what);
    if (this.dirs.size >= DIR_CACHE) this.dirs.clear();
    this.dirs.set(dir.firstCluster, list);
    return list;
  }

  private toNode(e: ExfatDirEntry): ExfatNode {
    const what = `exFAT directory entry ${e.name}`;
    if (e.validDataLength > e.dataLength)
      throw corrupt(what, `valid data length ${e.validDataLength} exceeds data length ${e.dataLength}`);
    if (e.dataLength > 0 && !this.valid(e.firstCluster))
      throw corrupt(what, `${e.dataLength} bytes starting at cluster ${e.firstCluster}`);
    const node: ExfatNode = {
      kind: e.isDirectory ? 'dir' : 'file',
      size: e.isDirectory ? 0 : e.dataLength,
      isRoot: false,
      firstCluster: e.firstCluster,
      dataLength: e.dataLength,
      validDataLength: e.validDataLength,
      noFatChain: e.noFatChain,
    };
    if (e.mtime) node.mtime = e.mtime;
    return node;
  }

  async lookup(dir: ExfatNode, name: string): Promise<ExfatNode | undefined> {
    const list = await this.entries(dir);
    const up = upcaseName(name);
    const hit = list.find((e) => e.name === name) ?? list.find((e) => upcaseName(e.name) === up);
    return hit ? this.toNode(hit) : undefined;
  }

  async list(dir: ExfatNode): Promise<string[]> {
    return (await this.entries(dir)).map((e) => e.name);
  }

  async readLink(): Promise<string> {
    throw corrupt('exFAT', 'has no symbolic links');
  }

  async read(node: ExfatNode): Promise<Buffer> {
    if (node.size === 0) return Buffer.alloc(0);
    const count = Math.ceil(node.dataLength / this.layout.clusterBytes);
    const clusters = await this.clusters(node.firstCluster, `exFAT file at cluster ${node.firstCluster}`, {
      count,
      max: count,
      noFatChain: node.noFatChain,
    });
    return this.readClusters(clusters, node.size, node.validDataLength);
  }
}

export async function openExfatFiles(src: BlockSource): Promise<VolumeFiles> {
  if (src.size < EXFAT_BOOT.SIZE) throw corrupt('exFAT volume', `${src.path} is only ${src.size} bytes`);
  const layout = exfatLayout(parseExfatBootSector(await src.read(0, EXFAT_BOOT.SIZE)));
  const regionBytes = layout.bytesPerSector * EXFAT_BOOT.REGION_SECTORS;
  if (regionBytes > src.size) throw corrupt('exFAT volume', `${src.path} is smaller than the boot region`);
  verifyExfatBootRegion(await src.read(0, regionBytes), layout.bytesPerSector);
  if (layout.volumeBytes > src.size) {
    throw corrupt(
      'exFAT volume',
      `the boot sector claims ${layout.volumeBytes} bytes but ${src.path} has only ${src.size}`,
    );
  }
  return treeFiles(new ExfatTree(src, layout));
}
