/**
 * Files on ext2/3/4: inodes through the group descriptors, data through extent trees (any depth)
 * or classic block maps (direct, indirect, double and triple indirect), inline data, directories
 * read linearly (htree index blocks are skipped as the kernel's linear scan skips them), fast and
 * slow symbolic links. Inode and extent-block checksums are verified under metadata_csum.
 */
import type { BlockSource } from '../../devices/source.ts';
import { corrupt, RescueError } from '../../errors.ts';
import { type ExtLayout, readExtLayout } from '../ext.ts';
import { BG_FLAGS, csumSeed, hasFeature, INCOMPAT, metadataCsum, RO_COMPAT } from '../ext-codec.ts';
import {
  EXT_DIRECT_BLOCKS,
  EXT_ROOT_INODE,
  type ExtDirEntry,
  type ExtentNode,
  type ExtInode,
  extentBlockChecksumOk,
  I_BLOCK_BYTES,
  INODE_FLAGS,
  ibodyXattr,
  inodeChecksumOk,
  inodeCsumSeed,
  parseDirBlock,
  parseExtentNode,
  parseInode,
} from './ext-inode.ts';
import type { VolumeFiles } from './index.ts';
import { type FileTree, MAX_SYMLINK_TARGET, type TreeNode, treeFiles } from './tree.ts';

/** Directories larger than this are not read (a million long names fit in far less). */
const MAX_DIR_BYTES = 256 * 1024 * 1024;
/** Data is read in pieces of at most this many bytes. */
const READ_CHUNK = 4 * 1024 * 1024;
/** Tree blocks (extent nodes, indirect blocks) one mapping may read: far above any real file's need. */
const MAX_MAP_BLOCKS = 1 << 20;
const INODE_CACHE = 4096;
const DIR_CACHE = 64;
/** Logical block numbers are 32-bit. */
const MAX_LOGICAL_BLOCKS = 2 ** 32;

interface ExtNode extends TreeNode {
  ino: number;
  inode: ExtInode;
}

/** A piece of a file: `length` blocks from logical block `logical` at physical block `physical`. */
interface Run {
  logical: number;
  physical: number;
  length: number;
}

function unsupported(what: string, why: string): RescueError {
  return new RescueError(
    'E_FS_UNSUPPORTED_FILE',
    `${what} cannot be read: ${why}`,
    'Read it from the running system that owns it.',
  );
}

class ExtTree implements FileTree<ExtNode> {
  readonly followsSymlinks = true;
  private readonly src: BlockSource;
  private readonly layout: ExtLayout;
  private readonly bs: number;
  private readonly csum: boolean;
  private readonly seed: number;
  private readonly fileType: boolean;
  private readonly inodes = new Map<number, ExtNode>();
  private readonly dirs = new Map<number, ExtDirEntry[]>();

  constructor(src: BlockSource, layout: ExtLayout) {
    this.src = src;
    this.layout = layout;
    this.bs = layout.sb.blockSize;
    this.csum = metadataCsum(layout.sb);
    this.seed = csumSeed(layout.sb);
    this.fileType = hasFeature(layout.sb, 'incompat', INCOMPAT.FILETYPE);
  }

  root(): Promise<ExtNode> {
    return this.node(EXT_ROOT_INODE, '/');
  }

  async node(ino: number, what: string): Promise<ExtNode> {
    const cached = this.inodes.get(ino);
    if (cached) return cached;
    const { sb, descs, groups } = this.layout;
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > sb.inodesCount)
      throw corrupt(what, `inode number ${ino} is outside 1..${sb.inodesCount}`);
    const group = Math.floor((ino - 1) / sb.inodesPerGroup);
    const index = (ino - 1) % sb.inodesPerGroup;
    if (group >= groups) throw corrupt(what, `inode ${ino} is in group ${group} of ${groups}`);
    const gd = descs[group];
    if ((this.csum || hasFeature(sb, 'ro', RO_COMPAT.GDT_CSUM)) && gd.flags & BG_FLAGS.INODE_UNINIT) {
      throw corrupt(what, `inode ${ino} lies in group ${group}, whose inode table is not initialised`);
    }
    const raw = await this.src.read(gd.inodeTable * this.bs + index * sb.inodeSize, sb.inodeSize);
    const where = `${what} (inode ${ino})`;
    const inode = parseInode(raw, sb.inodeSize, where);
    if (this.csum && !inodeChecksumOk(inode.raw, sb.inodeSize, this.inodeSeed(ino, inode))) {
      throw corrupt(where, 'inode checksum does not match');
    }
    if (inode.linksCount === 0 || inode.mode === 0) throw corrupt(where, 'the inode is not in use');
    const node: ExtNode = { ino, inode, kind: inode.kind, size: inode.size, mtime: inode.mtime };
    if (this.inodes.size >= INODE_CACHE) this.inodes.clear();
    this.inodes.set(ino, node);
    return node;
  }

  private inodeSeed(ino: number, inode: ExtInode): number {
    return inodeCsumSeed(this.seed, ino, inode.generation);
  }

  private checkBlocks(start: number, count: number, what: string): void {
    const { sb } = this.layout;
    if (start < 1 || start < sb.firstDataBlock || start + count > sb.blocksCount) {
      throw corrupt(what, `blocks ${start}..${start + count - 1} lie outside the filesystem`);
    }
  }

  /** Where logical blocks [first, end) of the node are; holes and uninitialised extents are left out. */
  private async mapBlocks(node: ExtNode, first: number, end: number, what: string): Promise<Run[]> {
    if (node.inode.flags & INODE_FLAGS.EXTENTS) return this.extentRuns(node, first, end, what);
    return this.blockMapRuns(node, first, end, what);
  }

  private async extentRuns(node: ExtNode, first: number, end: number, what: string): Promise<Run[]> {
    const runs: Run[] = [];
    const seed = this.inodeSeed(node.ino, node.inode);
    let reads = 0;
    const visit = async (n: ExtentNode, depth: number | undefined, lo: number, hi: number): Promise<void> => {
      if (depth !== undefined && n.depth !== depth)
        throw corrupt(what, `extent node at depth ${n.depth}, expected ${depth}`);
      if (n.depth === 0) {
        let prevEnd = lo;
        for (const e of n.leaves) {
          if (e.block < prevEnd || e.block + e.length > hi)
            throw corrupt(what, `extent at logical block ${e.block} overlaps or lies outside its index`);
          prevEnd = e.block + e.length;
          const s = Math.max(e.block, first);
          const t = Math.min(e.block + e.length, end);
          if (s >= t) continue;
          this.checkBlocks(e.start, e.length, what);
          if (!e.uninit) runs.push({ logical: s, physical: e.start + (s - e.block), length: t - s });
        }
        return;
      }
      for (let i = 0; i < n.indexes.length; i++) {
        const ix = n.indexes[i];
        const next = i + 1 < n.indexes.length ? n.indexes[i + 1].block : hi;
        if (ix.block < lo || next <= ix.block || next > hi)
          throw corrupt(what, `extent index at logical block ${ix.block} is out of order`);
        if (next <= first || ix.block >= end) continue;
        if (++reads > MAX_MAP_BLOCKS) throw corrupt(what, 'the extent tree is too large');
        this.checkBlocks(ix.leaf, 1, what);
        const blk = await this.src.read(ix.leaf * this.bs, this.bs);
        const child = parseExtentNode(blk, `${what}, extent block ${ix.leaf}`);
        if (this.csum && !extentBlockChecksumOk(blk, child, seed))
          throw corrupt(what, `checksum of extent block ${ix.leaf} does not match`);
        await visit(child, n.depth - 1, ix.block, next);
      }
    };
    await visit(parseExtentNode(node.inode.iBlock, `${what}, extent root`), undefined, 0, MAX_LOGICAL_BLOCKS);
    return runs;
  }

  private async blockMapRuns(node: ExtNode, first: number, end: number, what: string): Promise<Run[]> {
    const perBlock = this.bs / 4;
    const runs: Run[] = [];
    let reads = 0;
    const push = (logical: number, physical: number): void => {
      this.checkBlocks(physical, 1, what);
      const last = runs[runs.length - 1];
      if (last && last.logical + last.length === logical && last.physical + last.length === physical)
        last.length++;
      else runs.push({ logical, physical, length: 1 });
    };
    const walk = async (ptr: number, level: number, base: number): Promise<void> => {
      if (++reads > MAX_MAP_BLOCKS) throw corrupt(what, 'the block map is too large');
      this.checkBlocks(ptr, 1, what);
      const blk = await this.src.read(ptr * this.bs, this.bs);
      const span = perBlock ** (level - 1);
      for (let j = 0; j < perBlock; j++) {
        const b = base + j * span;
        if (b >= end) break;
        if (b + span <= first) continue;
        const p = blk.readUInt32LE(j * 4);
        if (p === 0) continue;
        if (level === 1) push(b, p);
        else await walk(p, level - 1, b);
      }
    };
    const ib = node.inode.iBlock;
    for (let i = 0; i < EXT_DIRECT_BLOCKS && i < end; i++) {
      const p = ib.readUInt32LE(i * 4);
      if (i >= first && p !== 0) push(i, p);
    }
    let base = EXT_DIRECT_BLOCKS;
    for (let level = 1; level <= 3; level++) {
      const span = perBlock ** level;
      const p = ib.readUInt32LE((EXT_DIRECT_BLOCKS + level - 1) * 4);
      if (p !== 0 && base < end && base + span > first) await walk(p, level, base);
      base += span;
    }
    return runs;
  }

  /** The first `length` bytes of the node's data (length ≤ its size). */
  private async readData(node: ExtNode, length: number, what: string): Promise<Buffer> {
    if (node.inode.flags & INODE_FLAGS.INLINE_DATA) {
      const extra = ibodyXattr(node.inode, this.layout.sb.inodeSize, 'data', what) ?? Buffer.alloc(0);
      const all = Buffer.concat([node.inode.iBlock, extra]);
      if (length > all.length) throw corrupt(what, `inline data holds ${all.length} of ${length} bytes`);
      return all.subarray(0, length);
    }
    const out = Buffer.alloc(length);
    const bs = this.bs;
    const blocks = Math.ceil(length / bs);
    for (const r of await this.mapBlocks(node, 0, blocks, what)) {
      for (let done = 0; done < r.length; ) {
        const n = Math.min(r.length - done, Math.max(1, Math.floor(READ_CHUNK / bs)));
        const at = (r.logical + done) * bs;
        const bytes = Math.min(n * bs, length - at);
        const data = await this.src.read((r.physical + done) * bs, bytes);
        data.copy(out, at);
        done += n;
      }
    }
    return out;
  }

  private async entries(dir: ExtNode, what: string): Promise<ExtDirEntry[]> {
    const cached = this.dirs.get(dir.ino);
    if (cached) return cached;
    if (dir.inode.flags & INODE_FLAGS.ENCRYPT)
      throw unsupported(what, 'the directory is encrypted (fscrypt)');
    const out: ExtDirEntry[] = [];
    if (dir.inode.flags & INODE_FLAGS.INLINE_DATA) {
      // The first four bytes of i_block are the parent's inode number ('..'); entries follow.
      out.push(...parseDirBlock(dir.inode.iBlock.subarray(4, I_BLOCK_BYTES), this.fileType, 0, what));
      const extra = ibodyXattr(dir.inode, this.layout.sb.inodeSize, 'data', what);
      if (extra && extra.length > 0) out.push(...parseDirBlock(extra, this.fileType, 0, what));
    } else {
      if (dir.size > MAX_DIR_BYTES) throw corrupt(what, `directory of ${dir.size} bytes`);
      const bs = this.bs;
      for (const r of await this.mapBlocks(dir, 0, Math.ceil(dir.size / bs), what)) {
        for (let done = 0; done < r.length; ) {
          const n = Math.min(r.length - done, Math.max(1, Math.floor(READ_CHUNK / bs)));
          const data = await this.src.read((r.physical + done) * bs, n * bs);
          for (let k = 0; k < n; k++) {
            const block = data.subarray(k * bs, (k + 1) * bs);
            out.push(...parseDirBlock(block, this.fileType, bs, `${what}, block ${r.logical + done + k}`));
          }
          done += n;
        }
      }
    }
    const live = out.filter((e) => !isDotName(e.name));
    if (this.dirs.size >= DIR_CACHE) this.dirs.clear();
    this.dirs.set(dir.ino, live);
    return live;
  }

  async lookup(dir: ExtNode, name: string): Promise<ExtNode | undefined> {
    const want = Buffer.from(name, 'utf8');
    const hit = (await this.entries(dir, `directory inode ${dir.ino}`)).find((e) => e.name.equals(want));
    return hit ? this.node(hit.inode, name) : undefined;
  }

  async list(dir: ExtNode): Promise<string[]> {
    return (await this.entries(dir, `directory inode ${dir.ino}`)).map((e) => e.name.toString('utf8'));
  }

  async readLink(node: ExtNode): Promise<string> {
    const what = `symbolic link (inode ${node.ino})`;
    const ino = node.inode;
    if (ino.flags & INODE_FLAGS.ENCRYPT) throw unsupported(what, 'the link is encrypted (fscrypt)');
    if (node.size > MAX_SYMLINK_TARGET) throw corrupt(what, `target of ${node.size} bytes`);
    let target: Buffer;
    if (this.isFastSymlink(ino)) {
      if (node.size > I_BLOCK_BYTES) throw corrupt(what, `fast link of ${node.size} bytes`);
      target = ino.iBlock.subarray(0, node.size);
    } else {
      target = await this.readData(node, node.size, what);
    }
    return target.toString('utf8');
  }

  /** The kernel's ext4_inode_is_fast_symlink: the target sits in i_block when no block is allocated. */
  private isFastSymlink(ino: ExtInode): boolean {
    if (ino.flags & INODE_FLAGS.EA_INODE) return ino.size > 0 && ino.size < I_BLOCK_BYTES;
    if (ino.flags & INODE_FLAGS.INLINE_DATA) return false;
    const eaBlocks = ino.fileAcl !== 0 ? this.layout.sb.clusterSize / 512 : 0;
    return ino.blocks - eaBlocks === 0;
  }

  async read(node: ExtNode): Promise<Buffer> {
    const what = `file (inode ${node.ino})`;
    if (node.inode.flags & INODE_FLAGS.ENCRYPT) throw unsupported(what, 'the file is encrypted (fscrypt)');
    if (node.inode.flags & INODE_FLAGS.COMPR) throw unsupported(what, 'the file uses ext2 compression');
    return this.readData(node, node.size, what);
  }
}

function isDotName(name: Buffer): boolean {
  return (
    (name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)
  );
}

export async function openExtFiles(src: BlockSource): Promise<VolumeFiles> {
  const tree = new ExtTree(src, await readExtLayout(src));
  const root = await tree.root();
  if (root.kind !== 'dir') throw corrupt('ext root directory', 'inode 2 is not a directory');
  return treeFiles(tree);
}
