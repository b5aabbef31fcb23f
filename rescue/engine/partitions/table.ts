/**
 * Reading a disk's partition table: decides GPT / MBR / none the way Linux does, numbers partitions
 * like the kernel, reports everything odd as findings. Only an unreadable sector 0 throws.
 */
import type { BlockSource } from '../devices/source.ts';
import { isRescueError, RescueError } from '../errors.ts';
import {
  entriesCrcMatches,
  GPT,
  type GptEntry,
  type GptHeader,
  type GptHeaderProblem,
  parseGptEntries,
  parseGptHeader,
  validateGptHeader,
} from './gpt.ts';
import { hasBootSignature, interpretEbr, isExtendedType, MBR, type Mbr, MbrType, parseMbr } from './mbr.ts';
import { gptTypeName, mbrTypeName } from './type-names.ts';
import type { Finding, FindingSeverity, Partition, PartitionTable } from './types.ts';

export const TABLE_LIMITS = {
  /** More logical partitions than this is not a real disk (libfdisk stops at 56). */
  MAX_LOGICALS: 128,
  /** EBRs visited, including empty ones, before we call the chain hostile. */
  MAX_EBRS: 256,
} as const;

/** Sector sizes tried when the protective MBR is there but no GPT header is at LBA 1 for the given size. */
const PROBE_SECTOR_SIZES = [512, 4096, 1024, 2048] as const;

export interface ReadPartitionTableOptions {
  /** Logical sector size; default the source's. A GPT written with another size is still found. */
  sectorSize?: number;
}

export interface GptDetail {
  header: GptHeader;
  source: 'primary' | 'backup';
  entries: Array<{ index: number; entry: GptEntry }>;
}

/** The table plus the raw structures it came from, for tools that need more than the summary. */
export interface PartitionTableDetail {
  table: PartitionTable;
  /** Sector 0 decoded when it carries the 55 AA signature. */
  mbr?: Mbr;
  gpt?: GptDetail;
  ebrs: Array<{ lba: number; ebr: Mbr }>;
}

export async function readPartitionTable(
  src: BlockSource,
  opts: ReadPartitionTableOptions = {},
): Promise<PartitionTable> {
  return (await inspectPartitionTable(src, opts)).table;
}

class Findings {
  readonly list: Finding[] = [];
  add(severity: FindingSeverity, code: string, message: string): void {
    this.list.push({ severity, code, message });
  }
}

type HeaderRead =
  | { state: 'valid'; header: GptHeader; entries: Uint8Array }
  | { state: 'absent'; message: string }
  | {
      state: 'invalid';
      code: GptHeaderProblem['code'] | 'ENTRIES_CRC' | 'UNREADABLE';
      message: string;
      header?: GptHeader;
    };

function readErrorMessage(e: unknown): string {
  return isRescueError(e) ? e.message : String(e);
}

async function readGptHeaderAt(src: BlockSource, lba: bigint, sectorSize: number): Promise<HeaderRead> {
  const diskSectors = BigInt(Math.floor(src.size / sectorSize));
  if (lba < 1n || lba >= diskSectors) return { state: 'absent', message: `LBA ${lba} is outside the disk` };
  let raw: Buffer;
  try {
    raw = await src.read(Number(lba) * sectorSize, sectorSize);
  } catch (e) {
    return {
      state: 'invalid',
      code: 'UNREADABLE',
      message: `cannot read LBA ${lba}: ${readErrorMessage(e)}`,
    };
  }
  const problem = validateGptHeader(raw, lba, diskSectors, sectorSize);
  if (problem?.code === 'SIGNATURE') return { state: 'absent', message: problem.message };
  const header = parseGptHeader(raw);
  if (problem) return { state: 'invalid', code: problem.code, message: problem.message, header };
  // validateGptHeader bounded the array to MAX_ENTRY_ARRAY_BYTES and to the disk.
  const length = header.entryCount * header.entrySize;
  let entries: Buffer;
  try {
    entries = await src.read(Number(header.entriesLba) * sectorSize, length);
  } catch (e) {
    return {
      state: 'invalid',
      code: 'UNREADABLE',
      message: `cannot read the entry array at LBA ${header.entriesLba}: ${readErrorMessage(e)}`,
      header,
    };
  }
  if (!entriesCrcMatches(header, entries)) {
    return {
      state: 'invalid',
      code: 'ENTRIES_CRC',
      message: 'the partition entry array does not match its CRC32',
      header,
    };
  }
  return { state: 'valid', header, entries };
}

function headerFinding(f: Findings, which: 'PRIMARY' | 'BACKUP', lba: bigint, r: HeaderRead): void {
  const where = `${which === 'PRIMARY' ? 'primary' : 'backup'} GPT header at LBA ${lba}`;
  if (r.state === 'absent') {
    f.add('error', `GPT_${which}_MISSING`, `No ${where}: ${r.message}`);
  } else if (r.state === 'invalid') {
    const code =
      r.code === 'UNREADABLE'
        ? 'UNREADABLE'
        : r.code === 'HEADER_CRC' || r.code === 'ENTRIES_CRC'
          ? r.code
          : 'INVALID';
    f.add('error', `GPT_${which}_${code}`, `The ${where} is unusable: ${r.message}`);
  }
}

function sameGeometry(a: GptHeader, b: GptHeader): string[] {
  const diffs: string[] = [];
  if (a.diskGuid !== b.diskGuid) diffs.push(`disk GUID ${a.diskGuid} vs ${b.diskGuid}`);
  if (a.firstUsableLba !== b.firstUsableLba)
    diffs.push(`first usable LBA ${a.firstUsableLba} vs ${b.firstUsableLba}`);
  if (a.lastUsableLba !== b.lastUsableLba)
    diffs.push(`last usable LBA ${a.lastUsableLba} vs ${b.lastUsableLba}`);
  if (a.entryCount !== b.entryCount || a.entrySize !== b.entrySize) {
    diffs.push(`entry array ${a.entryCount}×${a.entrySize} vs ${b.entryCount}×${b.entrySize}`);
  }
  if (a.entriesCrc32 !== b.entriesCrc32) diffs.push('the partition entries differ');
  if (a.alternateLba !== b.myLba || b.alternateLba !== a.myLba) {
    diffs.push(`they do not point at each other (AlternateLBA ${a.alternateLba} / ${b.alternateLba})`);
  }
  return diffs;
}

interface GptFound {
  sectorSize: number;
  header: GptHeader;
  source: 'primary' | 'backup';
  entries: Uint8Array;
}

interface GptProbe {
  found?: GptFound;
  /** Some GPT signature was seen (even if unusable). */
  evidence: boolean;
  findings: Findings;
}

/** Finds the header to use, with findings about the other one. */
async function probeGpt(src: BlockSource, preferred: number, tryOtherSizes: boolean): Promise<GptProbe> {
  const sizes = [preferred, ...(tryOtherSizes ? PROBE_SECTOR_SIZES.filter((s) => s !== preferred) : [])];
  for (const ss of sizes) {
    if (src.size < ss * 3) continue;
    const f = new Findings();
    const diskSectors = BigInt(Math.floor(src.size / ss));
    const lastLba = diskSectors - 1n;
    const primary = await readGptHeaderAt(src, 1n, ss);
    const atEnd = await readGptHeaderAt(src, lastLba, ss);
    if (primary.state === 'absent' && atEnd.state === 'absent') continue;
    if (ss !== preferred) {
      f.add(
        'warning',
        'GPT_SECTOR_SIZE',
        `The GPT was written for ${ss}-byte sectors but the disk reports ${preferred}-byte sectors; it was ` +
          `read with ${ss}-byte sectors (an image of a disk with another sector size?)`,
      );
    }
    if (primary.state === 'valid') {
      const h = primary.header;
      const alt = h.alternateLba;
      if (alt >= diskSectors) {
        f.add(
          'error',
          'GPT_BACKUP_BEYOND_END',
          `The backup GPT header should be at LBA ${alt}, but the disk has only ${diskSectors} sectors: ` +
            'the disk or image is smaller than when the table was written (truncated image?)',
        );
      } else {
        const backup = alt === lastLba ? atEnd : await readGptHeaderAt(src, alt, ss);
        if (alt !== lastLba) {
          f.add(
            'warning',
            'GPT_BACKUP_NOT_AT_END',
            `The backup GPT header is at LBA ${alt}, not at the last LBA ${lastLba}: the disk or image was ` +
              'enlarged after partitioning; the space after it is unusable until the backup is moved to the end',
          );
        }
        if (backup.state === 'valid') {
          const diffs = sameGeometry(h, backup.header);
          if (diffs.length > 0) {
            f.add(
              'warning',
              'GPT_BACKUP_MISMATCH',
              `Primary and backup GPT headers disagree: ${diffs.join('; ')}`,
            );
          }
        } else {
          headerFinding(f, 'BACKUP', alt, backup);
        }
      }
      return {
        found: { sectorSize: ss, header: h, source: 'primary', entries: primary.entries },
        evidence: true,
        findings: f,
      };
    }
    headerFinding(f, 'PRIMARY', 1n, primary);
    let backup = atEnd;
    let backupLba = lastLba;
    // A damaged primary on an enlarged image: its AlternateLBA may still say where the backup is.
    const hinted = primary.state === 'invalid' ? primary.header?.alternateLba : undefined;
    if (
      backup.state !== 'valid' &&
      hinted !== undefined &&
      hinted !== lastLba &&
      hinted > 1n &&
      hinted < lastLba
    ) {
      const there = await readGptHeaderAt(src, hinted, ss);
      if (there.state === 'valid') {
        backup = there;
        backupLba = hinted;
      }
    }
    if (backup.state === 'valid') {
      f.add(
        'warning',
        'GPT_USING_BACKUP',
        `The partitions were read from the backup GPT header at LBA ${backupLba} because the primary is unusable`,
      );
      if (backupLba !== lastLba) {
        f.add(
          'warning',
          'GPT_BACKUP_NOT_AT_END',
          `The backup GPT header is at LBA ${backupLba}, not at the last LBA ${lastLba}: the disk or image was enlarged`,
        );
      }
      return {
        found: { sectorSize: ss, header: backup.header, source: 'backup', entries: backup.entries },
        evidence: true,
        findings: f,
      };
    }
    headerFinding(f, 'BACKUP', backupLba, backup);
    return { evidence: true, findings: f };
  }
  return { evidence: false, findings: new Findings() };
}

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function mbrTypeString(type: number): string {
  return type.toString(16);
}

interface Span {
  number: number;
  first: number;
  /** Exclusive, in sectors. */
  end: number;
}

/** Reports each partition that starts before the furthest end seen so far (one finding per overlap). */
function checkOverlaps(f: Findings, code: string, spans: Span[], label: string): void {
  const sorted = [...spans].sort((a, b) => a.first - b.first || a.number - b.number);
  let reach: Span | undefined;
  for (const s of sorted) {
    if (reach && s.first < reach.end) {
      f.add('error', code, `${label} ${s.number} overlaps ${label.toLowerCase()} ${reach.number}`);
    }
    if (!reach || s.end > reach.end) reach = s;
  }
}

function gptPartitions(
  found: GptFound,
  entries: ReadonlyArray<{ index: number; entry: GptEntry }>,
  diskSectors: number,
  f: Findings,
): Partition[] {
  const { header, sectorSize } = found;
  const out: Partition[] = [];
  const spans: Span[] = [];
  const first = header.firstUsableLba;
  const last = header.lastUsableLba;
  for (const { index, entry } of entries) {
    const number = index + 1;
    if (entry.firstLba > entry.lastLba) {
      f.add(
        'error',
        'GPT_PARTITION_ENDS_BEFORE_START',
        `GPT partition ${number} ends (LBA ${entry.lastLba}) before it starts (LBA ${entry.firstLba}); it is ignored`,
      );
      continue;
    }
    const startBytes = entry.firstLba * BigInt(sectorSize);
    const endBytes = (entry.lastLba + 1n) * BigInt(sectorSize);
    if (endBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      f.add(
        'error',
        'GPT_PARTITION_BEYOND_DISK',
        `GPT partition ${number} lies at LBA ${entry.firstLba}..${entry.lastLba}, far beyond the disk; it is ignored`,
      );
      continue;
    }
    if (entry.lastLba >= BigInt(diskSectors)) {
      f.add(
        'error',
        'GPT_PARTITION_BEYOND_DISK',
        `GPT partition ${number} ends at LBA ${entry.lastLba}, beyond the disk's last LBA ${diskSectors - 1}`,
      );
    } else if (entry.firstLba < first || entry.lastLba > last) {
      f.add(
        'error',
        'GPT_PARTITION_OUTSIDE_USABLE',
        `GPT partition ${number} (LBA ${entry.firstLba}..${entry.lastLba}) is outside the usable range ${first}..${last}`,
      );
    }
    spans.push({ number, first: Number(entry.firstLba), end: Number(entry.lastLba) + 1 });
    out.push({
      number,
      start: Number(startBytes),
      size: Number(endBytes - startBytes),
      type: entry.typeGuid,
      typeName: gptTypeName(entry.typeGuid),
      kind: 'gpt',
      uuid: entry.uniqueGuid,
      name: entry.name,
      attributes: entry.attributes.toString(),
    });
  }
  checkOverlaps(f, 'GPT_OVERLAP', spans, 'GPT partition');
  return out;
}

/** Boot sectors of filesystems written straight onto a disk also end in 55 AA. */
function looksLikeFilesystemBootSector(sector: Uint8Array): string | undefined {
  const text = (off: number, len: number) => Buffer.from(sector.subarray(off, off + len)).toString('latin1');
  if (text(3, 8) === 'NTFS    ') return 'NTFS';
  if (text(3, 8) === 'EXFAT   ') return 'exFAT';
  const bytesPerSector = sector[11] | (sector[12] << 8);
  const validBps =
    bytesPerSector >= 512 && bytesPerSector <= 4096 && (bytesPerSector & (bytesPerSector - 1)) === 0;
  if (validBps && (text(54, 5) === 'FAT12' || text(54, 5) === 'FAT16' || text(82, 5) === 'FAT32'))
    return 'FAT';
  return undefined;
}

interface MbrRead {
  partitions: Partition[];
  ebrs: Array<{ lba: number; ebr: Mbr }>;
}

async function mbrPartitions(src: BlockSource, mbr: Mbr, sectorSize: number, f: Findings): Promise<MbrRead> {
  const diskSectors = Math.floor(src.size / sectorSize);
  const partitions: Partition[] = [];
  const ebrs: Array<{ lba: number; ebr: Mbr }> = [];
  const spans: Span[] = [];
  const containers: Span[] = [];
  const beyond = (number: number, first: number, sectors: number) => {
    if (first + sectors > diskSectors) {
      f.add(
        'error',
        'MBR_PARTITION_BEYOND_DISK',
        `Partition ${number} (sectors ${first}..${first + sectors - 1}) ends beyond the disk (${diskSectors} sectors)`,
      );
    }
  };
  // Linux (msdos_partition) walks every extended partition's chain, numbering on from 5.
  const extendeds: { number: number; first: number; sectors: number }[] = [];
  mbr.entries.forEach((e, i) => {
    if (e.sectors === 0) return;
    const number = i + 1;
    const isExt = isExtendedType(e.type);
    if (e.firstLba === 0) {
      f.add('error', 'MBR_PARTITION_AT_ZERO', `Partition ${number} starts at sector 0, on top of the MBR`);
    }
    beyond(number, e.firstLba, e.sectors);
    if (isExt) {
      if (extendeds.length > 0) {
        f.add(
          'warning',
          'MBR_EXTRA_EXTENDED',
          `Partition ${number} is a second extended partition; Linux reads its logical partitions too, but most other systems do not`,
        );
      }
      if (e.firstLba !== 0) extendeds.push({ number, first: e.firstLba, sectors: e.sectors });
      containers.push({ number, first: e.firstLba, end: e.firstLba + e.sectors });
    } else {
      spans.push({ number, first: e.firstLba, end: e.firstLba + e.sectors });
    }
    partitions.push({
      number,
      start: e.firstLba * sectorSize,
      size: e.sectors * sectorSize,
      type: mbrTypeString(e.type),
      typeName: mbrTypeName(e.type),
      kind: isExt ? 'extended' : 'primary',
      bootable: e.status === MBR.STATUS_ACTIVE,
    });
  });

  let logicals = 0;
  let hops = 0;
  const visited = new Set<number>();
  for (const extended of extendeds) {
    if (logicals >= TABLE_LIMITS.MAX_LOGICALS || hops >= TABLE_LIMITS.MAX_EBRS) break;
    const extStart = extended.first;
    const extEnd = extStart + extended.sectors;
    let ebrLba = extStart;
    for (;;) {
      if (hops++ >= TABLE_LIMITS.MAX_EBRS) {
        f.add(
          'error',
          'MBR_EBR_CHAIN_TOO_LONG',
          `The chain of extended boot records is longer than ${TABLE_LIMITS.MAX_EBRS}; the rest is ignored`,
        );
        break;
      }
      if (visited.has(ebrLba)) {
        f.add(
          'error',
          'MBR_EBR_LOOP',
          `The chain of extended boot records loops back to sector ${ebrLba}; it was cut there`,
        );
        break;
      }
      visited.add(ebrLba);
      if (ebrLba >= diskSectors) {
        f.add(
          'error',
          'MBR_EBR_BEYOND_DISK',
          `An extended boot record should be at sector ${ebrLba}, beyond the disk`,
        );
        break;
      }
      let ebr: Mbr;
      try {
        ebr = parseMbr(await src.read(ebrLba * sectorSize, MBR.SIZE));
      } catch (e) {
        f.add(
          'error',
          'MBR_EBR_UNREADABLE',
          `Cannot read the extended boot record at sector ${ebrLba}: ${readErrorMessage(e)}`,
        );
        break;
      }
      if (!hasBootSignature(ebr)) {
        // The kernel stops here too; libfdisk would read on and "correct" it on write.
        f.add(
          'warning',
          'MBR_EBR_BAD_SIGNATURE',
          `The extended boot record at sector ${ebrLba} has no 55 AA signature; the chain ends there`,
        );
        break;
      }
      ebrs.push({ lba: ebrLba, ebr });
      const content = interpretEbr(ebr);
      if (content.extraLogicals > 0 || content.extraLinks > 0) {
        f.add(
          'warning',
          'MBR_EBR_EXTRA_ENTRIES',
          `The extended boot record at sector ${ebrLba} has extra entries; they are ignored`,
        );
      }
      if (content.logical) {
        if (logicals >= TABLE_LIMITS.MAX_LOGICALS) {
          f.add(
            'error',
            'MBR_TOO_MANY_LOGICALS',
            `More than ${TABLE_LIMITS.MAX_LOGICALS} logical partitions; the rest is ignored`,
          );
          break;
        }
        const l = content.logical;
        const number = 5 + logicals++;
        const first = ebrLba + l.firstLba;
        if (l.firstLba === 0) {
          f.add(
            'error',
            'MBR_LOGICAL_OVERLAPS_EBR',
            `Logical partition ${number} starts on its own extended boot record (sector ${ebrLba})`,
          );
        }
        if (first < extStart || first + l.sectors > extEnd) {
          f.add(
            'error',
            'MBR_LOGICAL_OUTSIDE_EXTENDED',
            `Logical partition ${number} (sectors ${first}..${first + l.sectors - 1}) is not inside extended partition ${extended.number} (${extStart}..${extEnd - 1})`,
          );
        }
        beyond(number, first, l.sectors);
        spans.push({ number, first, end: first + l.sectors });
        partitions.push({
          number,
          start: first * sectorSize,
          size: l.sectors * sectorSize,
          type: mbrTypeString(l.type),
          typeName: mbrTypeName(l.type),
          kind: 'logical',
          bootable: l.status === MBR.STATUS_ACTIVE,
          ebrStart: ebrLba * sectorSize,
        });
      }
      if (!content.next) break;
      const next = extStart + content.next.firstLba;
      if (next < extStart || next >= extEnd) {
        f.add(
          'error',
          'MBR_EBR_OUTSIDE_EXTENDED',
          `The extended boot record at sector ${ebrLba} links to sector ${next}, outside extended partition ${extended.number}; the chain ends there`,
        );
        break;
      }
      ebrLba = next;
    }
  }
  checkOverlaps(f, 'MBR_OVERLAP', spans, 'Partition');
  // A primary partition inside the extended container collides with the logical partitions' space.
  for (const c of containers) {
    for (const s of spans) {
      if (s.number <= 4 && s.first < c.end && c.first < s.end) {
        f.add('error', 'MBR_OVERLAP', `Partition ${s.number} overlaps extended partition ${c.number}`);
      }
    }
  }
  if (diskSectors > MBR.MAX_LBA + 1) {
    f.add(
      'info',
      'MBR_DISK_TOO_LARGE',
      `An MBR can only describe the first ${MBR.MAX_LBA + 1} sectors; the rest of this disk cannot be partitioned without GPT`,
    );
  }
  return { partitions, ebrs };
}

function validSectorSize(ss: number): boolean {
  return Number.isInteger(ss) && ss >= 512 && ss <= 65536 && (ss & (ss - 1)) === 0;
}

export async function inspectPartitionTable(
  src: BlockSource,
  opts: ReadPartitionTableOptions = {},
): Promise<PartitionTableDetail> {
  const preferred = opts.sectorSize ?? src.logicalSectorSize;
  if (!validSectorSize(preferred)) {
    throw new RescueError(
      'E_BAD_SECTOR_SIZE',
      `Sector size ${preferred} of ${src.path} is not a power of two between 512 and 65536`,
      'This is a bug; please report it.',
    );
  }
  const f = new Findings();
  const none = (sectorSize = preferred): PartitionTableDetail => ({
    table: { kind: 'none', sectorSize, partitions: [], findings: f.list },
    ebrs: [],
  });
  if (src.size < MBR.SIZE) {
    f.add('info', 'DISK_TOO_SMALL', `${src.path} is ${src.size} bytes, too small for a partition table`);
    return none();
  }
  // The one read that may throw: if sector 0 cannot be read there is nothing to report on.
  const sector0 = await src.read(0, MBR.SIZE);
  const mbr = parseMbr(sector0);
  const signed = hasBootSignature(mbr);
  const protectiveIndex = signed
    ? mbr.entries.findIndex((e) => e.type === MbrType.GPT_PROTECTIVE && e.sectors > 0)
    : -1;
  const others = signed ? mbr.entries.filter((e) => e.sectors > 0 && e.type !== MbrType.GPT_PROTECTIVE) : [];

  const gpt = await probeGpt(src, preferred, protectiveIndex >= 0);
  const mbrDetail = signed ? mbr : undefined;

  // Without a protective MBR a GPT is only believed when sector 0 is not a filesystem's boot
  // sector: a disk reformatted as one big FAT/exFAT/NTFS keeps its old backup GPT at the end.
  const staleGpt =
    gpt.found !== undefined && protectiveIndex < 0 && looksLikeFilesystemBootSector(sector0) !== undefined;
  if (gpt.found && staleGpt) {
    f.add(
      'info',
      'GPT_STALE_IGNORED',
      `A GPT (disk ${gpt.found.header.diskGuid}) left over from earlier partitioning is on the disk, but sector 0 is a filesystem boot sector without a protective MBR; the GPT is ignored, as Linux does`,
    );
  }
  if (gpt.found && !staleGpt && (protectiveIndex >= 0 || others.length === 0)) {
    const { sectorSize, header } = gpt.found;
    f.list.push(...gpt.findings.list);
    const diskSectors = Math.floor(src.size / sectorSize);
    if (protectiveIndex < 0) {
      f.add(
        'warning',
        'GPT_NO_PROTECTIVE_MBR',
        'The disk has a GPT but no protective MBR in sector 0; firmware and Linux may ignore the GPT',
      );
    } else {
      const pe = mbr.entries[protectiveIndex];
      if (others.length > 0) {
        f.add(
          'warning',
          'GPT_HYBRID_MBR',
          `Hybrid MBR: sector 0 lists ${others.length} partition(s) besides the GPT protective entry; the GPT is used, and the two must be kept in sync`,
        );
      } else {
        const expected = Math.min(diskSectors - 1, MBR.MAX_LBA);
        if (pe.sectors !== expected && pe.sectors !== MBR.MAX_LBA) {
          f.add(
            'info',
            'GPT_PMBR_SIZE_MISMATCH',
            `The protective MBR covers ${pe.sectors} sectors, the disk has ${expected} after sector 0 (it will be corrected when the table is written)`,
          );
        }
      }
      if (pe.firstLba !== 1) {
        f.add('warning', 'GPT_PMBR_START', `The protective MBR entry starts at sector ${pe.firstLba}, not 1`);
      }
    }
    const entries = parseGptEntries(gpt.found.entries, header.entryCount, header.entrySize);
    const partitions = gptPartitions(gpt.found, entries, diskSectors, f);
    const table: PartitionTable = {
      kind: 'gpt',
      sectorSize,
      diskId: header.diskGuid,
      partitions,
      findings: f.list,
      gpt: {
        firstUsableLba: Number(header.firstUsableLba),
        lastUsableLba: Number(header.lastUsableLba),
        // Read from the backup, we only know where the backup's array is; the primary's goes at LBA 2.
        entriesLba: gpt.found.source === 'primary' ? Number(header.entriesLba) : GPT.PRIMARY_ENTRIES_LBA,
        entryCount: header.entryCount,
        entrySize: header.entrySize,
        backupHeaderLba: Number(gpt.found.source === 'primary' ? header.alternateLba : header.myLba),
      },
    };
    return { table, mbr: mbrDetail, gpt: { header, source: gpt.found.source, entries }, ebrs: [] };
  }

  if (!signed) {
    if (gpt.evidence) f.list.push(...gpt.findings.list);
    return { ...none(), mbr: undefined };
  }
  const fsName = looksLikeFilesystemBootSector(sector0);
  const badStatus = mbr.entries.find(
    (e) => e.status !== MBR.STATUS_ACTIVE && e.status !== MBR.STATUS_INACTIVE,
  );
  if (fsName || badStatus) {
    f.add(
      'info',
      'MBR_NOT_A_PARTITION_TABLE',
      fsName
        ? `Sector 0 is a ${fsName} boot sector: the filesystem fills the whole disk, there is no partition table`
        : `Sector 0 ends in 55 AA but is not a partition table (boot indicator 0x${badStatus!.status.toString(16)})`,
    );
    return none();
  }
  if (gpt.found) {
    f.add(
      'warning',
      'MBR_STALE_GPT',
      `Besides the MBR partitions, a valid GPT (disk ${gpt.found.header.diskGuid}) is on the disk, left over from earlier partitioning; the MBR is used, as Linux does`,
    );
  } else if (protectiveIndex >= 0) {
    f.list.push(...gpt.findings.list);
    f.add(
      'error',
      'GPT_NO_VALID_HEADER',
      'Sector 0 is a GPT protective MBR but neither GPT header is usable; the protective entry is shown as the only partition (as sfdisk does)',
    );
  }
  const { partitions, ebrs } = await mbrPartitions(src, mbr, preferred, f);
  return {
    table: {
      kind: 'mbr',
      sectorSize: preferred,
      diskId: hex8(mbr.diskSignature),
      partitions,
      findings: f.list,
    },
    mbr,
    ebrs,
  };
}
