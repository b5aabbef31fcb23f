/**
 * BitLocker volumes, as libblkid recognises them: Vista ("\xEB\x52\x90-FVE-FS-"), Windows 7 and
 * later ("\xEB\x58\x90-FVE-FS-", metadata offset at byte 176) and BitLocker To Go
 * ("\xEB\x58\x90MSWIN4.1", metadata offset at byte 440) — the last one carries a decoy FAT boot
 * sector, so it must be caught before FAT is probed, and only when the FVE metadata block it points
 * at really starts with "-FVE-FS-". Contents are ciphertext: copied whole.
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt } from '../errors.ts';
import type { FilesystemModule, FsIdentity } from './types.ts';

const FVE = Buffer.from('-FVE-FS-', 'latin1');
const MAGIC = {
  vista: Buffer.from('\xeb\x52\x90-FVE-FS-', 'latin1'),
  win7: Buffer.from('\xeb\x58\x90-FVE-FS-', 'latin1'),
  togo: Buffer.from('\xeb\x58\x90MSWIN4.1', 'latin1'),
} as const;
const METADATA_OFFSET_AT = { win7: 176, togo: 440 } as const;

export type BitLockerKind = 'vista' | 'win7' | 'togo';

function kindOf(head: Uint8Array): BitLockerKind | undefined {
  if (head.length < 512) return undefined;
  for (const kind of ['vista', 'win7', 'togo'] as const) {
    if (Buffer.from(head.buffer, head.byteOffset, 11).equals(MAGIC[kind])) return kind;
  }
  return undefined;
}

/** The BitLocker flavour on `src`, or undefined. Reads the FVE metadata block for Win7 / To Go. */
export async function probeBitLocker(src: BlockSource, head: Uint8Array): Promise<BitLockerKind | undefined> {
  const kind = kindOf(head);
  if (!kind || kind === 'vista') return kind;
  const offset = Number(
    Buffer.from(head.buffer, head.byteOffset, 512).readBigUInt64LE(METADATA_OFFSET_AT[kind]),
  );
  if (!Number.isSafeInteger(offset) || offset <= 0 || offset + FVE.length > src.size) return undefined;
  const sig = await src.read(offset, FVE.length);
  return sig.equals(FVE) ? kind : undefined;
}

export const bitlocker: FilesystemModule = {
  probe(head) {
    // Vista and Windows 7 headers are specific enough on their own; detect.ts runs probeBitLocker
    // (which also confirms To Go) before any boot-sector filesystem is tried.
    const kind = kindOf(head);
    return kind === 'vista' || kind === 'win7';
  },
  async identify(src: BlockSource): Promise<FsIdentity> {
    const head = await src.read(0, Math.min(src.size, 512));
    const kind = await probeBitLocker(src, head);
    if (!kind) throw corrupt('BitLocker', 'no BitLocker header or FVE metadata');
    return {
      type: 'BitLocker',
      version: { vista: 'Vista', win7: '7+', togo: 'To Go' }[kind],
      size: src.size,
      warnings: ['encrypted with BitLocker: copied sector by sector; keep the recovery key at hand'],
    };
  },
};
