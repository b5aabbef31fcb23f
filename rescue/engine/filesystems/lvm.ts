/** LVM2 physical volumes: label "LABELONE" in one of the first four sectors. Copied whole for now. */
import type { BlockSource } from '../devices/source.ts';
import { corrupt } from '../errors.ts';
import type { FilesystemModule, FsIdentity } from './types.ts';

function findLabel(head: Uint8Array): number {
  for (let s = 0; s < 4; s++) {
    const off = s * 512;
    if (head.length < off + 64) break;
    const b = Buffer.from(head.buffer, head.byteOffset + off, 64);
    if (b.toString('latin1', 0, 8) === 'LABELONE' && b.toString('latin1', 24, 32) === 'LVM2 001') return off;
  }
  return -1;
}

export const lvm: FilesystemModule = {
  probe(head) {
    return findLabel(head) >= 0;
  },
  async identify(src: BlockSource): Promise<FsIdentity> {
    const head = await src.read(0, Math.min(src.size, 2048));
    const off = findLabel(head);
    if (off < 0) throw corrupt('LVM label', 'LABELONE missing');
    const raw = head.toString('latin1', off + 32, off + 64);
    // blkid prints the PV UUID in LVM's 6-4-4-4-4-4-6 grouping.
    const parts = [6, 4, 4, 4, 4, 4, 6];
    const groups: string[] = [];
    let pos = 0;
    for (const n of parts) {
      groups.push(raw.slice(pos, pos + n));
      pos += n;
    }
    const uuid = groups.join('-');
    return { type: 'LVM2_member', version: 'LVM2 001', uuid, size: src.size };
  },
};
