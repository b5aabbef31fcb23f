/** LUKS1/LUKS2 containers: identity from the header; contents are ciphertext, copied whole. */
import type { BlockSource } from '../devices/source.ts';
import { corrupt } from '../errors.ts';
import type { FilesystemModule, FsIdentity } from './types.ts';

const MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]); // "LUKS\xba\xbe"

function cstr(b: Uint8Array): string {
  const end = b.indexOf(0);
  return Buffer.from(b.subarray(0, end < 0 ? b.length : end)).toString('utf8');
}

export const luks: FilesystemModule = {
  probe(head) {
    return head.length >= 592 && MAGIC.equals(head.subarray(0, 6));
  },
  async identify(src: BlockSource): Promise<FsIdentity> {
    const h = await src.read(0, Math.min(src.size, 4096));
    if (h.length < 592 || !MAGIC.equals(h.subarray(0, 6))) throw corrupt('LUKS header', 'magic missing');
    const version = h.readUInt16BE(6);
    const id: FsIdentity = { type: 'crypto_LUKS', version: String(version), size: src.size };
    // Both versions keep the UUID string at byte 168; only LUKS2 has a label (byte 24, 48 bytes).
    const uuid = cstr(h.subarray(168, 208));
    if (uuid) id.uuid = uuid;
    if (version === 2) {
      const label = cstr(h.subarray(24, 72));
      if (label) id.label = label;
    }
    return id;
  },
};
