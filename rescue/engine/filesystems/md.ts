/**
 * Linux software-RAID members. Superblocks 1.1 and 1.2 sit at 0 and 4 KiB; 1.0 and 0.90 near the
 * end of the device, so a RAID1 member with them also looks like a plain filesystem at offset 0 —
 * md must be probed first, as blkid does.
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt } from '../errors.ts';
import { formatUuid } from './ext-codec.ts';
import type { FilesystemModule, FsIdentity } from './types.ts';

const MD_MAGIC = 0xa92b4efc;

export interface MdLocation {
  offset: number;
  version: '0.90' | '1.0' | '1.1' | '1.2';
}

/** Candidate superblock offsets for a device of `size` bytes, in the order blkid tries them. */
export function mdCandidates(size: number): MdLocation[] {
  const sectors = Math.floor(size / 512);
  const out: MdLocation[] = [];
  if (sectors >= 128) out.push({ offset: ((sectors & ~127) - 128) * 512, version: '0.90' });
  if (sectors >= 16) out.push({ offset: ((sectors - 16) & ~7) * 512, version: '1.0' });
  out.push({ offset: 0, version: '1.1' }, { offset: 4096, version: '1.2' });
  return out.filter((c) => c.offset >= 0 && c.offset + 4096 <= size);
}

function check(b: Buffer, loc: MdLocation): boolean {
  if (loc.version === '0.90') return b.readUInt32LE(0) === MD_MAGIC || b.readUInt32BE(0) === MD_MAGIC;
  return b.readUInt32LE(0) === MD_MAGIC && b.readUInt32LE(4) === 1;
}

export async function findMdSuperblock(
  src: BlockSource,
): Promise<{ loc: MdLocation; sb: Buffer } | undefined> {
  for (const loc of mdCandidates(src.size)) {
    const sb = await src.read(loc.offset, 4096);
    if (check(sb, loc)) return { loc, sb };
  }
  return undefined;
}

export const md: FilesystemModule = {
  probe(head, size) {
    // Only the superblocks at the start can be seen in the head; detect.ts also checks the tail.
    return mdCandidates(size).some(
      (loc) =>
        loc.offset + 4096 <= head.length &&
        check(Buffer.from(head.buffer, head.byteOffset + loc.offset, 4096), loc),
    );
  },
  async identify(src: BlockSource): Promise<FsIdentity> {
    const found = await findMdSuperblock(src);
    if (!found) throw corrupt('md superblock', 'magic missing');
    const { loc, sb } = found;
    const id: FsIdentity = { type: 'linux_raid_member', version: loc.version, size: src.size };
    if (loc.version === '0.90') {
      // 0.90 keeps the uuid in words 5 and 13-15 of the superblock.
      const u = Buffer.concat([sb.subarray(0x14, 0x18), sb.subarray(0x34, 0x40)]);
      id.uuid = formatUuid(u);
    } else {
      id.uuid = formatUuid(sb.subarray(16, 32));
      const name = sb.subarray(32, 64);
      const end = name.indexOf(0);
      const label = name.subarray(0, end < 0 ? 32 : end).toString('utf8');
      if (label) id.label = label;
    }
    return id;
  },
};
