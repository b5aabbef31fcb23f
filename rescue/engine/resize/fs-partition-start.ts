/**
 * Fields inside a filesystem that record where its partition starts on the disk. Windows' boot
 * code (NTFS, FAT) finds its volume through them on BIOS machines, and chkdsk / fsck.exfat compare
 * them, so they follow a partition that moved. Pure patch functions on sector bytes plus a small
 * I/O wrapper.
 */
import type { BlockSource } from '../devices/source.ts';
import { corrupt, RescueError } from '../errors.ts';
import {
  EXFAT_BOOT,
  exfatBootChecksum,
  looksLikeExfat,
  parseExfatBootSector,
  verifyExfatBootRegion,
  writeExfatChecksumSector,
} from '../filesystems/exfat-boot.ts';
import { FAT_BOOT, fatBootSectorProblem, isFat32Layout, parseFatBootSector } from '../filesystems/fat-bpb.ts';
import { checkNtfsBootSector } from '../filesystems/ntfs-boot.ts';

/** NTFS keeps the FAT-era "hidden sectors" field of the BPB at the same place as FAT. */
export const HIDDEN_SECTORS_OFFSET = 0x1c;
const U32_MAX = 0xffffffff;

/** Sets the 32-bit hidden-sectors field of a FAT or NTFS boot sector (in place). */
export function patchHiddenSectors(sector: Buffer, startSector: number): void {
  sector.writeUInt32LE(startSector, HIDDEN_SECTORS_OFFSET);
}

/** Sets PartitionOffset in the main boot sector of an exFAT boot region (12 sectors) and its checksum. */
export function patchExfatRegion(region: Buffer, bytesPerSector: number, startSector: number): void {
  region.writeBigUInt64LE(BigInt(startSector), EXFAT_BOOT.OFF_PARTITION_OFFSET);
  const sum = exfatBootChecksum(region, bytesPerSector);
  region.set(writeExfatChecksumSector(sum, bytesPerSector), EXFAT_BOOT.CHECKSUM_SECTOR * bytesPerSector);
}

async function write(src: BlockSource, offset: number, data: Uint8Array): Promise<void> {
  if (!src.write)
    throw new RescueError('E_READ_ONLY', `${src.path} is read-only`, 'This is a bug; please report it.');
  await src.write(offset, data);
}

export type PartitionStartResult = { changed: string[]; skipped: string[] };

/** NTFS: hidden sectors in the boot sector and in its backup in the sector after the volume. */
export async function setNtfsPartitionStart(
  src: BlockSource,
  startSector: number,
): Promise<PartitionStartResult> {
  const res: PartitionStartResult = { changed: [], skipped: [] };
  const head = await src.read(0, 512);
  const check = checkNtfsBootSector(head);
  if (!check.ok) throw corrupt('NTFS boot sector', check.why);
  const { bytesPerSector: bps, totalSectors } = check.boot;
  if (startSector > U32_MAX) {
    res.skipped.push(`the partition starts at sector ${startSector}, beyond the 32-bit hidden-sectors field`);
    return res;
  }
  const primary = await src.read(0, bps);
  patchHiddenSectors(primary, startSector);
  await write(src, 0, primary);
  res.changed.push('boot sector');
  const backupAt = totalSectors * bps;
  if (backupAt + bps > src.size) {
    res.skipped.push(`the backup boot sector at byte ${backupAt} lies past the partition`);
    return res;
  }
  const backup = await src.read(backupAt, bps);
  if (checkNtfsBootSector(backup).ok) {
    patchHiddenSectors(backup, startSector);
    await write(src, backupAt, backup);
    res.changed.push('backup boot sector');
  } else {
    // A missing backup is rebuilt from the primary, as chkdsk would.
    await write(src, backupAt, primary);
    res.changed.push('backup boot sector (rewritten from the primary; it was not valid)');
  }
  return res;
}

/** FAT12/16/32: hidden sectors in the boot sector, and in FAT32's backup boot sector. */
export async function setFatPartitionStart(
  src: BlockSource,
  startSector: number,
): Promise<PartitionStartResult> {
  const res: PartitionStartResult = { changed: [], skipped: [] };
  const primary = await src.read(0, FAT_BOOT.SIZE);
  const bs = parseFatBootSector(primary);
  const problem = fatBootSectorProblem(bs);
  if (problem) throw corrupt('FAT boot sector', problem);
  if (startSector > U32_MAX) {
    res.skipped.push(`the partition starts at sector ${startSector}, beyond the 32-bit hidden-sectors field`);
    return res;
  }
  patchHiddenSectors(primary, startSector);
  await write(src, 0, primary);
  res.changed.push('boot sector');
  if (isFat32Layout(bs) && bs.backupBootSector !== 0 && bs.backupBootSector !== 0xffff) {
    const at = bs.backupBootSector * bs.bytesPerSector;
    if (bs.backupBootSector < bs.reservedSectors && at + FAT_BOOT.SIZE <= src.size) {
      const backup = await src.read(at, FAT_BOOT.SIZE);
      if (backup.readUInt16LE(FAT_BOOT.OFF_SIGNATURE) === FAT_BOOT.SIGNATURE) {
        patchHiddenSectors(backup, startSector);
        await write(src, at, backup);
        res.changed.push('backup boot sector');
      } else {
        res.skipped.push(`no backup boot sector at sector ${bs.backupBootSector}`);
      }
    }
  }
  return res;
}

/** exFAT: PartitionOffset in the main and backup boot regions, each with its boot checksum redone. */
export async function setExfatPartitionStart(
  src: BlockSource,
  startSector: number,
): Promise<PartitionStartResult> {
  const res: PartitionStartResult = { changed: [], skipped: [] };
  const head = await src.read(0, EXFAT_BOOT.SIZE);
  if (!looksLikeExfat(head)) throw corrupt('exFAT boot sector', 'no "EXFAT   " name and signature');
  const bs = parseExfatBootSector(head);
  if (bs.bytesPerSectorShift < 9 || bs.bytesPerSectorShift > 12)
    throw corrupt('exFAT boot sector', `BytesPerSectorShift ${bs.bytesPerSectorShift}`);
  const bps = 2 ** bs.bytesPerSectorShift;
  const regionBytes = EXFAT_BOOT.REGION_SECTORS * bps;
  const main = await src.read(0, regionBytes);
  verifyExfatBootRegion(main, bps);
  patchExfatRegion(main, bps, startSector);
  await write(src, 0, main);
  res.changed.push('main boot region');
  const backup = await src.read(regionBytes, regionBytes);
  let backupOk = true;
  try {
    verifyExfatBootRegion(backup, bps);
  } catch {
    backupOk = false;
  }
  if (backupOk) {
    patchExfatRegion(backup, bps, startSector);
    await write(src, regionBytes, backup);
    res.changed.push('backup boot region');
  } else {
    // The backup region is a copy of the main one by definition; rebuild a damaged one.
    await write(src, regionBytes, main);
    res.changed.push('backup boot region (rewritten from the main one; its checksum was wrong)');
  }
  return res;
}
