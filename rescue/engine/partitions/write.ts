/**
 * Turning a PartitionTable (bytes, as the reader returns it or a planner edits it) into the writes
 * that put it on a disk of a given size. Restore and clone use this to lay out a target disk, and to
 * move a GPT's backup to the real end of a larger disk: read → serialize for the new size → apply.
 */
import type { BlockSource } from '../devices/source.ts';
import { RescueError } from '../errors.ts';
import type { DiskWrite } from './disk-write.ts';
import { buildGpt, GPT, type GptEntry } from './gpt.ts';
import { isGuid } from './guid.ts';
import { buildMbr, MBR, parseMbr } from './mbr.ts';
import type { Partition, PartitionTable } from './types.ts';

export type { DiskWrite } from './disk-write.ts';

export interface SerializeTableOptions {
  /** Sector size of the target; default the table's. Partition offsets must be multiples of it. */
  sectorSize?: number;
  /** 440 bytes of boot code for the MBR or the protective MBR (keep GRUB's boot.img, Windows' MBR code). */
  bootCode?: Uint8Array;
  /** GPT: disk signature for the protective MBR (an MBR table takes its own from table.diskId). */
  protectiveMbrSignature?: number;
  /** GPT: defaults come from table.gpt when it was read with the same sector size, else the standard layout. */
  firstUsableLba?: number;
  /** GPT: default the largest the target disk allows (just before the backup entry array). */
  lastUsableLba?: number;
  entryCount?: number;
}

function invalid(message: string, remedy = 'Fix the partition layout.'): RescueError {
  return new RescueError('E_TABLE_INVALID', message, remedy);
}

function toSectors(p: Partition, sectorSize: number): { first: number; sectors: number } {
  if (!Number.isSafeInteger(p.start) || !Number.isSafeInteger(p.size) || p.start < 0 || p.size <= 0) {
    throw invalid(`partition ${p.number} has an invalid position (${p.start} + ${p.size} bytes)`);
  }
  if (p.start % sectorSize !== 0 || p.size % sectorSize !== 0) {
    throw invalid(
      `partition ${p.number} (${p.start} + ${p.size} bytes) is not aligned to ${sectorSize}-byte sectors`,
      'Move or resize the partition to whole sectors of the target disk.',
    );
  }
  return { first: p.start / sectorSize, sectors: p.size / sectorSize };
}

function mbrType(p: Partition): number {
  const t = /^[0-9a-fA-F]{1,2}$/.test(p.type) ? Number.parseInt(p.type, 16) : Number.NaN;
  if (!(t >= 1 && t <= 0xff)) throw invalid(`partition ${p.number} has MBR type "${p.type}"`);
  return t;
}

/**
 * The writes that put `table` on a disk of `diskSizeBytes`. GPT: protective MBR, both headers and
 * entry arrays, backup at the target's last LBA. MBR: the MBR and the EBR chain. 'none': no writes.
 * Throws E_TABLE_INVALID when the table cannot be written as asked (does not fit, overlaps, …).
 */
export function serializePartitionTable(
  table: PartitionTable,
  diskSizeBytes: number,
  opts: SerializeTableOptions = {},
): DiskWrite[] {
  const sectorSize = opts.sectorSize ?? table.sectorSize;
  if (table.kind === 'none') return [];
  if (table.kind === 'gpt') {
    if (!table.diskId || !isGuid(table.diskId)) throw invalid(`GPT disk id "${table.diskId}" is not a GUID`);
    const partitions = table.partitions.map((p) => {
      if (p.kind !== 'gpt') throw invalid(`partition ${p.number} is ${p.kind}, not a GPT partition`);
      if (!Number.isInteger(p.number) || p.number < 1)
        throw invalid(`GPT partition number ${p.number} is invalid`);
      if (!isGuid(p.type)) throw invalid(`partition ${p.number} has GPT type "${p.type}"`);
      if (!p.uuid || !isGuid(p.uuid)) {
        throw invalid(
          `partition ${p.number} has no unique GUID`,
          'Give every GPT partition a GUID (randomGuid()).',
        );
      }
      let attributes = 0n;
      if (p.attributes !== undefined) {
        if (!/^\d{1,20}$/.test(p.attributes) || BigInt(p.attributes) >= 1n << 64n) {
          throw invalid(`partition ${p.number} has attributes "${p.attributes}"`);
        }
        attributes = BigInt(p.attributes);
      }
      const { first, sectors } = toSectors(p, sectorSize);
      const entry: GptEntry = {
        typeGuid: p.type.toUpperCase(),
        uniqueGuid: p.uuid.toUpperCase(),
        firstLba: BigInt(first),
        lastLba: BigInt(first + sectors - 1),
        attributes,
        name: p.name ?? '',
      };
      return { index: p.number - 1, entry };
    });
    const sameSectors = table.gpt && table.sectorSize === sectorSize;
    const built = buildGpt(
      {
        diskGuid: table.diskId,
        partitions,
        entryCount:
          opts.entryCount ??
          Math.max(table.gpt?.entryCount ?? GPT.DEFAULT_ENTRY_COUNT, ...partitions.map((p) => p.index + 1)),
        entrySize: table.gpt?.entrySize ?? GPT.ENTRY_SIZE,
        entriesLba: sameSectors ? table.gpt!.entriesLba : undefined,
        firstUsableLba: opts.firstUsableLba ?? (sameSectors ? table.gpt!.firstUsableLba : undefined),
        lastUsableLba: opts.lastUsableLba,
        protectiveMbr: { bootCode: opts.bootCode, diskSignature: opts.protectiveMbrSignature },
      },
      diskSizeBytes,
      sectorSize,
    );
    return built.writes;
  }
  // MBR
  const diskSignature =
    table.diskId && /^[0-9a-fA-F]{1,8}$/.test(table.diskId) ? Number.parseInt(table.diskId, 16) : 0;
  const primaries = [];
  const logicals = [];
  for (const p of table.partitions) {
    const { first, sectors } = toSectors(p, sectorSize);
    if (p.kind === 'primary' || p.kind === 'extended') {
      primaries.push({ slot: p.number, type: mbrType(p), firstLba: first, sectors, bootable: p.bootable });
    } else if (p.kind === 'logical') {
      let ebrLba: number | undefined;
      if (p.ebrStart !== undefined && table.sectorSize === sectorSize && p.ebrStart % sectorSize === 0) {
        ebrLba = p.ebrStart / sectorSize;
      }
      logicals.push({
        number: p.number,
        type: mbrType(p),
        firstLba: first,
        sectors,
        bootable: p.bootable,
        ebrLba,
      });
    } else {
      throw invalid(`partition ${p.number} is a GPT partition in an MBR table`);
    }
  }
  logicals.sort((a, b) => a.number - b.number);
  logicals.forEach((l, i) => {
    if (l.number !== 5 + i)
      throw invalid(`logical partitions must be numbered 5, 6, … without gaps (found ${l.number})`);
  });
  return buildMbr({ diskSignature, bootCode: opts.bootCode, primaries, logicals }, diskSizeBytes, sectorSize)
    .writes;
}

/** Performs a plan's writes in order. The target must be writable; nothing else is checked here. */
export async function applyDiskWrites(target: BlockSource, writes: readonly DiskWrite[]): Promise<void> {
  if (!target.write) {
    throw new RescueError(
      'E_READ_ONLY',
      `${target.path} cannot be written`,
      'This is a bug; please report it.',
    );
  }
  for (const w of writes) await target.write(w.offset, w.bytes);
}

/**
 * The writes that put `table` on `target` as it is now: for its size, keeping the
 * boot code (and a protective MBR's disk signature) already in its sector 0 unless `opts` says
 * otherwise. This is how a GPT's backup is moved to the real end of an enlarged disk or image:
 * `planPartitionTableWrite(disk, await readPartitionTable(disk))`.
 */
export async function planPartitionTableWrite(
  target: BlockSource,
  table: PartitionTable,
  opts: SerializeTableOptions = {},
): Promise<DiskWrite[]> {
  const sector0 = target.size >= MBR.SIZE ? parseMbr(await target.read(0, MBR.SIZE)) : undefined;
  // The table's own sector size: an image file of a 4Kn disk reports 512 but must stay in 4096 units.
  return serializePartitionTable(table, target.size, {
    bootCode: sector0?.bootCode,
    protectiveMbrSignature: sector0?.diskSignature,
    ...opts,
  });
}
