/**
 * Linux swap. Its contents are scratch space, so only the signature page (label, UUID) is kept:
 * a restored swap area is valid with the same UUID, and /etc/fstab keeps working. A swap area that
 * holds a hibernation image is different — that image is a system's memory and is copied whole.
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt } from '../errors.ts';
import { formatUuid } from './ext-codec.ts';
import type { FilesystemModule, FsIdentity, UsedMap } from './types.ts';

const PAGE_SIZES = [4096, 8192, 16384, 32768, 65536] as const;
const SWAP_MAGICS = ['SWAPSPACE2', 'SWAP-SPACE'];
const HIBERNATION_MAGICS = ['S1SUSPEND', 'S2SUSPEND', 'ULSUSPEND', 'LINHIB0001'];

function findSignature(head: Uint8Array): { pageSize: number; magic: string } | undefined {
  for (const pageSize of PAGE_SIZES) {
    if (head.length < pageSize) break;
    const sig = Buffer.from(head.subarray(pageSize - 10, pageSize)).toString('latin1');
    for (const m of [...SWAP_MAGICS, ...HIBERNATION_MAGICS]) {
      // The 10-byte field starts with the magic; 9-letter magics are NUL-terminated.
      if (sig.startsWith(m)) return { pageSize, magic: m };
    }
  }
  return undefined;
}

async function readHead(src: BlockSource): Promise<Buffer> {
  return src.read(0, Math.min(src.size, 65536));
}

export const swap: FilesystemModule = {
  probe(head) {
    return findSignature(head) !== undefined;
  },
  async identify(src: BlockSource): Promise<FsIdentity> {
    const head = await readHead(src);
    const sig = findSignature(head);
    if (!sig) throw corrupt('swap', 'no swap signature');
    const hibernation = HIBERNATION_MAGICS.includes(sig.magic);
    // blkid calls a swap area that holds a hibernation image "swsuspend".
    const id: FsIdentity = {
      type: hibernation ? 'swsuspend' : 'swap',
      blockSize: sig.pageSize,
      size: src.size,
      warnings: [],
    };
    if (sig.magic === 'SWAPSPACE2' || hibernation) {
      // struct swap_header_v1_2 after the 1024-byte boot block: version, last_page, nr_badpages, uuid, label.
      const b = head.subarray(1024);
      id.version = String(b.readUInt32LE(0));
      const lastPage = b.readUInt32LE(4);
      if (lastPage > 0) id.size = Math.min(src.size, (lastPage + 1) * sig.pageSize);
      id.uuid = formatUuid(b.subarray(12, 28));
      const label = b.subarray(28, 44);
      const end = label.indexOf(0);
      const text = label
        .subarray(0, end < 0 ? 16 : end)
        .toString('utf8')
        .trimEnd();
      if (text) id.label = text;
    }
    if (hibernation) {
      id.state = { hibernationImage: true };
      id.warnings?.push(
        'holds a Linux hibernation image: it is copied whole; resuming from it after a restore to other hardware is unsafe',
      );
    }
    return id;
  },
  async usedMap(src: BlockSource): Promise<UsedMap> {
    const head = await readHead(src);
    const sig = findSignature(head);
    if (!sig) throw corrupt('swap', 'no swap signature');
    if (sig.magic !== 'SWAPSPACE2') {
      return {
        method: 'sector-by-sector',
        extents: [{ start: 0, length: src.size }],
        usedBytes: src.size,
        reason: 'swap area holds a hibernation image',
      };
    }
    return { method: 'allocation', extents: [{ start: 0, length: sig.pageSize }], usedBytes: sig.pageSize };
  },
};
