/**
 * Files on exFAT: the root directory through the FAT, other directories and files through their
 * stream extension (contiguous when NoFatChain is set, else the FAT chain), bytes past
 * ValidDataLength read as zeros. Names are matched without regard to case.
 */
import type { BlockSource } from '../../devices/source.ts';
import { corrupt } from '../../errors.ts';
import { ExfatChainWalker, openExfatVolume } from '../exfat.ts';
import { EXFAT_FAT, EXFAT_LIMITS, type ExfatLayout } from '../exfat-boot.ts';
import { ClusterChains } from './clusters.ts';
import { type ExfatDirEntry, parseExfatDirectory } from './exfat-dir.ts';
import type { VolumeFiles } from './index.ts';
import { type FileTree, type TreeNode, treeFiles, upcaseName } from './tree.ts';

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
  private readonly layout: ExfatLayout;
  private readonly chains: ClusterChains;
  private readonly dirs = new Map<number, ExfatDirEntry[]>();

  constructor(src: BlockSource, layout: ExfatLayout) {
    this.layout = layout;
    const fat = new ExfatChainWalker(src, layout);
    this.chains = new ClusterChains({
      src,
      start: layout.heapStart,
      clusterBytes: layout.clusterBytes,
      clusterCount: layout.clusterCount,
      entry: (n) => fat.entry(n),
      endsChain: (v) => v === EXFAT_FAT.END_OF_CHAIN,
    });
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
      clusters = await this.chains.chain(dir.firstCluster, what, { max });
    } else {
      if (dir.dataLength > EXFAT_LIMITS.MAX_DIR_BYTES || dir.dataLength === 0)
        throw corrupt(what, `directory of ${dir.dataLength} bytes`);
      const count = Math.ceil(dir.dataLength / clusterBytes);
      clusters = await this.chains.chain(dir.firstCluster, what, {
        count,
        max: count,
        contiguous: dir.noFatChain,
      });
    }
    const list = parseExfatDirectory(await this.chains.read(clusters, clusters.length * clusterBytes), what);
    if (this.dirs.size >= DIR_CACHE) this.dirs.clear();
    this.dirs.set(dir.firstCluster, list);
    return list;
  }

  private toNode(e: ExfatDirEntry): ExfatNode {
    const what = `exFAT directory entry ${e.name}`;
    if (e.validDataLength > e.dataLength)
      throw corrupt(what, `valid data length ${e.validDataLength} exceeds data length ${e.dataLength}`);
    if (e.dataLength > 0 && !this.chains.valid(e.firstCluster))
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
    const clusters = await this.chains.chain(
      node.firstCluster,
      `exFAT file at cluster ${node.firstCluster}`,
      {
        count,
        max: count,
        contiguous: node.noFatChain,
      },
    );
    return this.chains.read(clusters, node.size, node.validDataLength);
  }
}

export async function openExfatFiles(src: BlockSource): Promise<VolumeFiles> {
  const { layout } = await openExfatVolume(src);
  return treeFiles(new ExfatTree(src, layout));
}
