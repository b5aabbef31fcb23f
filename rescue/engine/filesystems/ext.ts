/**
 * ext2/3/4: identity and the used-block map from the block bitmaps, with the conservative rules
 * that keep the map from ever missing a block: every group's own metadata (superblock and GDT
 * copies, reserved GDT, bitmaps, inode tables) is always included; BLOCK_UNINIT groups hold only
 * metadata; a bitmap whose checksum or free count does not add up counts its whole group as used.
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt, RescueError } from '../errors.ts';
import {
  BG_FLAGS,
  blockBitmapChecksumOk,
  COMPAT,
  csumSeed,
  EXT_SUPERBLOCK_OFFSET,
  EXT_SUPERBLOCK_SIZE,
  type ExtSuperblock,
  extVersion,
  formatUuid,
  type GroupDesc,
  groupDescChecksumOk,
  groupHasSuper,
  hasFeature,
  hasMagic,
  INCOMPAT,
  metadataCsum,
  parseGroupDesc,
  parseSuperblock,
  RO_COMPAT,
  STATE,
  superblockChecksumOk,
} from './ext-codec.ts';
import { addBitmapRuns, ExtentSet, totalBytes } from './extents.ts';
import type { FilesystemModule, FsIdentity, UsedMap } from './types.ts';

/** Bitmaps of neighbouring groups are usually adjacent (flex_bg): read them in runs up to this size. */
const MAX_COALESCED_READ = 1024 * 1024;

export interface ExtLayout {
  sb: ExtSuperblock;
  groups: number;
  descsPerBlock: number;
  descs: GroupDesc[];
  warnings: string[];
}

async function readSuperblock(src: BlockSource): Promise<ExtSuperblock> {
  if (src.size < EXT_SUPERBLOCK_OFFSET + EXT_SUPERBLOCK_SIZE)
    throw corrupt('ext superblock', 'the volume is too small');
  return parseSuperblock(await src.read(EXT_SUPERBLOCK_OFFSET, EXT_SUPERBLOCK_SIZE));
}

function checkGeometry(sb: ExtSuperblock, srcSize: number): void {
  const bs = sb.blockSize;
  if (sb.blocksPerGroup === 0 || sb.clustersPerGroup === 0 || sb.inodesPerGroup === 0) {
    throw corrupt('ext superblock', 'zero blocks or inodes per group');
  }
  const ratio = sb.clusterSize / bs;
  if (sb.clustersPerGroup > bs * 8 || sb.blocksPerGroup !== sb.clustersPerGroup * ratio) {
    throw corrupt('ext superblock', `blocks per group ${sb.blocksPerGroup} does not fit one bitmap block`);
  }
  if (sb.blocksCount <= sb.firstDataBlock || sb.firstDataBlock > 1) {
    throw corrupt('ext superblock', `block count ${sb.blocksCount} / first data block ${sb.firstDataBlock}`);
  }
  if (sb.blocksCount * bs > srcSize) {
    throw new RescueError(
      'E_FS_BEYOND_PARTITION',
      `The ext filesystem claims ${sb.blocksCount * bs} bytes but its partition has only ${srcSize}`,
      'The partition was shrunk without shrinking the filesystem, or the image is truncated. Use a ' +
        'sector-by-sector backup, or repair the partition table.',
    );
  }
  if (sb.descSize < 32 || sb.descSize > bs || (sb.descSize & (sb.descSize - 1)) !== 0) {
    throw corrupt('ext superblock', `group descriptor size ${sb.descSize}`);
  }
  const inodeSize = sb.inodeSize;
  if (inodeSize < 128 || inodeSize > bs || (inodeSize & (inodeSize - 1)) !== 0) {
    throw corrupt('ext superblock', `inode size ${inodeSize}`);
  }
}

/** Where group-descriptor block `i` lives (e2fsprogs' ext2fs_descriptor_block_loc2 for the primary copy). */
function descriptorBlock(sb: ExtSuperblock, i: number, descsPerBlock: number): number {
  // The primary GDT follows the block holding the superblock (byte 1024) — block 1 with 1 KiB
  // blocks even under bigalloc, where the first data block is 0.
  if (!hasFeature(sb, 'incompat', INCOMPAT.META_BG) || i < sb.firstMetaBg)
    return primarySuperblockBlock(sb) + 1 + i;
  const group = i * descsPerBlock;
  return groupFirstBlock(sb, group) + (groupHasSuper(sb, group) ? 1 : 0);
}

function primarySuperblockBlock(sb: ExtSuperblock): number {
  return Math.floor(1024 / sb.blockSize);
}

function groupFirstBlock(sb: ExtSuperblock, g: number): number {
  return sb.firstDataBlock + g * sb.blocksPerGroup;
}

export async function readExtLayout(src: BlockSource): Promise<ExtLayout> {
  const sb = await readSuperblock(src);
  const warnings: string[] = [];
  if (!superblockChecksumOk(sb)) throw corrupt('ext superblock', 'checksum mismatch');
  if (hasFeature(sb, 'incompat', INCOMPAT.JOURNAL_DEV)) {
    throw new RescueError(
      'E_FS_UNSUPPORTED',
      'This is an external ext journal device, not a filesystem',
      'It is copied sector by sector.',
    );
  }
  checkGeometry(sb, src.size);
  const bs = sb.blockSize;
  const groups = Math.ceil((sb.blocksCount - sb.firstDataBlock) / sb.blocksPerGroup);
  const descsPerBlock = bs / sb.descSize;
  const gdtBlocks = Math.ceil(groups / descsPerBlock);
  const seed = csumSeed(sb);

  const descs: GroupDesc[] = [];
  for (let i = 0; i < gdtBlocks; i++) {
    const blk = descriptorBlock(sb, i, descsPerBlock);
    if (blk >= sb.blocksCount)
      throw corrupt('ext group descriptors', `descriptor block ${blk} is beyond the filesystem`);
    const buf = await src.read(blk * bs, bs);
    for (let j = 0; j < descsPerBlock && descs.length < groups; j++) {
      const g = descs.length;
      const off = j * sb.descSize;
      if (!groupDescChecksumOk(sb, g, buf, off, seed)) {
        // Without a trustworthy descriptor we do not know where this group's inode table is.
        throw corrupt('ext group descriptors', `checksum of group ${g} does not match`);
      }
      const gd = parseGroupDesc(buf, off, sb.descSize);
      const itBlocks = inodeTableBlocks(sb);
      for (const [what, b, n] of [
        ['block bitmap', gd.blockBitmap, 1],
        ['inode bitmap', gd.inodeBitmap, 1],
        ['inode table', gd.inodeTable, itBlocks],
      ] as const) {
        if (b < sb.firstDataBlock || b + n > sb.blocksCount) {
          throw corrupt(
            'ext group descriptors',
            `group ${g}'s ${what} at block ${b} lies outside the filesystem`,
          );
        }
      }
      descs.push(gd);
    }
  }
  if (hasFeature(sb, 'incompat', INCOMPAT.RECOVER)) {
    warnings.push(
      'The journal needs recovery: the filesystem was not unmounted cleanly. Files written last may be incomplete.',
    );
  } else if (!(sb.state & STATE.VALID)) {
    warnings.push('The filesystem was not unmounted cleanly (state not clean).');
  }
  if (sb.state & STATE.ERROR) warnings.push('The kernel recorded errors on this filesystem: run e2fsck.');
  return { sb, groups, descsPerBlock, descs, warnings };
}

function inodeTableBlocks(sb: ExtSuperblock): number {
  return Math.ceil((sb.inodesPerGroup * sb.inodeSize) / sb.blockSize);
}

/** Metadata every group owns, wherever flex_bg put it, plus the superblock/GDT copies inside the group. */
function addGroupMetadata(set: ExtentSet, layout: ExtLayout, g: number): void {
  const { sb, descsPerBlock } = layout;
  const bs = sb.blockSize;
  const first = groupFirstBlock(sb, g);
  const metaBg = hasFeature(sb, 'incompat', INCOMPAT.META_BG);
  if (groupHasSuper(sb, g)) {
    const gdtBlocks = Math.ceil(layout.groups / descsPerBlock);
    const oldGdt = metaBg ? Math.min(sb.firstMetaBg, gdtBlocks) : gdtBlocks;
    // Group 0 also owns block 0 (the boot area) and everything up to its superblock's block.
    const sbBlock = g === 0 ? primarySuperblockBlock(sb) : first;
    const start = g === 0 ? 0 : first;
    set.add(start * bs, (sbBlock - start + 1 + oldGdt + sb.reservedGdtBlocks) * bs);
  }
  if (metaBg) {
    const metaGroup = Math.floor(g / descsPerBlock);
    const idx = g % descsPerBlock;
    if (metaGroup >= sb.firstMetaBg && (idx === 0 || idx === 1 || idx === descsPerBlock - 1)) {
      set.add((first + (groupHasSuper(sb, g) ? 1 : 0)) * bs, bs);
    }
  }
  const gd = layout.descs[g];
  set.add(gd.blockBitmap * bs, bs);
  set.add(gd.inodeBitmap * bs, bs);
  set.add(gd.inodeTable * bs, inodeTableBlocks(sb) * bs);
}

function popcount(bitmap: Uint8Array, bits: number): number {
  let n = 0;
  const full = bits >> 3;
  for (let i = 0; i < full; i++) {
    let v = bitmap[i];
    v = v - ((v >> 1) & 0x55);
    v = (v & 0x33) + ((v >> 2) & 0x33);
    n += (v + (v >> 4)) & 0x0f;
  }
  for (let i = full * 8; i < bits; i++) n += (bitmap[i >> 3] >> (i & 7)) & 1;
  return n;
}

async function extUsedMap(src: BlockSource, signal?: AbortSignal): Promise<UsedMap> {
  const layout = await readExtLayout(src);
  const { sb, groups, descs } = layout;
  const bs = sb.blockSize;
  const fsBytes = sb.blocksCount * bs;
  // After a crash the journal holds newer bitmaps than the disk does (e2fsck or the next mount
  // replays it): a map from the on-disk bitmaps can miss blocks of files that were fsynced.
  if (hasFeature(sb, 'incompat', INCOMPAT.RECOVER) || sb.state & STATE.ERROR) {
    return {
      method: 'sector-by-sector',
      extents: [{ start: 0, length: fsBytes }],
      usedBytes: fsBytes,
      reason: hasFeature(sb, 'incompat', INCOMPAT.RECOVER)
        ? 'the ext journal needs recovery (not unmounted cleanly), so the on-disk block bitmaps may be stale; run e2fsck (it replays the journal) to allow a used-space backup'
        : 'the kernel recorded errors on this ext filesystem, so its block bitmaps cannot be trusted; run e2fsck to allow a used-space backup',
    };
  }
  const set = new ExtentSet(fsBytes);
  const seed = csumSeed(sb);
  const ratio = sb.clusterSize / bs;
  const clustersTotal = Math.ceil((sb.blocksCount - sb.firstDataBlock) / ratio);
  const suspicious: number[] = [];

  // Group metadata first: it is the part a BLOCK_UNINIT bitmap would only imply.
  for (let g = 0; g < groups; g++) addGroupMetadata(set, layout, g);

  // Initialised bitmaps, read in runs of adjacent blocks.
  const wanted = [];
  for (let g = 0; g < groups; g++) {
    const uninit =
      (metadataCsum(sb) || hasFeature(sb, 'ro', RO_COMPAT.GDT_CSUM)) &&
      descs[g].flags & BG_FLAGS.BLOCK_UNINIT;
    if (!uninit) wanted.push(g);
  }
  wanted.sort((a, b) => descs[a].blockBitmap - descs[b].blockBitmap);
  let i = 0;
  while (i < wanted.length) {
    signal?.throwIfAborted();
    let j = i + 1;
    while (
      j < wanted.length &&
      descs[wanted[j]].blockBitmap === descs[wanted[j - 1]].blockBitmap + 1 &&
      (j - i + 1) * bs <= MAX_COALESCED_READ
    ) {
      j++;
    }
    const run = await src.read(descs[wanted[i]].blockBitmap * bs, (j - i) * bs);
    for (let k = i; k < j; k++) {
      const g = wanted[k];
      const bitmap = run.subarray((k - i) * bs, (k - i + 1) * bs);
      const clustersInGroup = Math.min(sb.clustersPerGroup, clustersTotal - g * sb.clustersPerGroup);
      const groupBase = groupFirstBlock(sb, g) * bs;
      const used = popcount(bitmap, clustersInGroup);
      const claimedUsed = clustersInGroup - descs[g].freeBlocks;
      if (!blockBitmapChecksumOk(sb, descs[g], bitmap, seed) || used < claimedUsed) {
        // The bitmap and its descriptor disagree: keep the whole group rather than guess.
        suspicious.push(g);
        set.add(groupBase, clustersInGroup * sb.clusterSize);
        continue;
      }
      addBitmapRuns(set, bitmap, clustersInGroup, sb.clusterSize, groupBase);
    }
    i = j;
  }
  const extents = set.extents();
  const map: UsedMap = { method: 'allocation', extents, usedBytes: totalBytes(extents) };
  if (suspicious.length > 0) {
    map.reason = `block bitmaps of group(s) ${suspicious.slice(0, 8).join(', ')}${suspicious.length > 8 ? ' …' : ''} did not match their checksums or free counts; those groups are copied whole`;
  }
  return map;
}

export const ext: FilesystemModule = {
  probe(head) {
    return hasMagic(head);
  },
  async identify(src: BlockSource): Promise<FsIdentity> {
    const sb = await readSuperblock(src);
    const id: FsIdentity = {
      type: hasFeature(sb, 'incompat', INCOMPAT.JOURNAL_DEV) ? 'jbd' : extVersion(sb),
      uuid: formatUuid(sb.uuid),
      blockSize: sb.blockSize,
      size: sb.blocksCount * sb.blockSize,
      version: describeFeatures(sb),
      warnings: [],
      state: {
        clean: (sb.state & STATE.VALID) !== 0 && !hasFeature(sb, 'incompat', INCOMPAT.RECOVER),
        errors: (sb.state & STATE.ERROR) !== 0,
      },
    };
    // blkid drops trailing blanks from labels; so do we.
    if (sb.volumeName.trimEnd()) id.label = sb.volumeName.trimEnd();
    if (hasFeature(sb, 'incompat', INCOMPAT.RECOVER))
      id.warnings?.push('journal needs recovery (not unmounted cleanly)');
    else if (!(sb.state & STATE.VALID)) id.warnings?.push('not unmounted cleanly');
    if (sb.state & STATE.ERROR) id.warnings?.push('the kernel recorded errors: run e2fsck');
    if (!superblockChecksumOk(sb)) id.warnings?.push('superblock checksum mismatch');
    return id;
  },
  usedMap: extUsedMap,
};

function describeFeatures(sb: ExtSuperblock): string {
  const f: string[] = [];
  if (hasFeature(sb, 'compat', COMPAT.HAS_JOURNAL)) f.push('has_journal');
  if (hasFeature(sb, 'incompat', INCOMPAT.EXTENTS)) f.push('extent');
  if (hasFeature(sb, 'incompat', INCOMPAT.BIT64)) f.push('64bit');
  if (hasFeature(sb, 'incompat', INCOMPAT.FLEX_BG)) f.push('flex_bg');
  if (hasFeature(sb, 'incompat', INCOMPAT.META_BG)) f.push('meta_bg');
  if (hasFeature(sb, 'ro', RO_COMPAT.SPARSE_SUPER)) f.push('sparse_super');
  if (hasFeature(sb, 'compat', COMPAT.SPARSE_SUPER2)) f.push('sparse_super2');
  if (hasFeature(sb, 'ro', RO_COMPAT.GDT_CSUM)) f.push('uninit_bg');
  if (hasFeature(sb, 'ro', RO_COMPAT.METADATA_CSUM)) f.push('metadata_csum');
  if (hasFeature(sb, 'ro', RO_COMPAT.BIGALLOC)) f.push('bigalloc');
  return f.join(' ');
}
