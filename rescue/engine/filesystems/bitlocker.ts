/** BitLocker volumes: recognised by the boot sector's "-FVE-FS-" OEM id; ciphertext, copied whole. */
import type { BlockSource } from '../devices/source.ts';
import type { FilesystemModule, FsIdentity } from './types.ts';

const OEM = '-FVE-FS-';

export const bitlocker: FilesystemModule = {
  probe(head) {
    return (
      head.length >= 512 &&
      head.subarray(3, 11).toString('latin1') === OEM &&
      head[510] === 0x55 &&
      head[511] === 0xaa
    );
  },
  async identify(src: BlockSource): Promise<FsIdentity> {
    return {
      type: 'BitLocker',
      size: src.size,
      warnings: ['encrypted with BitLocker: copied sector by sector; keep the recovery key at hand'],
    };
  },
};
