/** What a partition table says, in bytes, numbered as Linux numbers partitions. */
export interface Partition {
  /** 1-4 for MBR primaries (by slot), 5… for logical partitions in chain order, GPT entry index + 1. */
  number: number;
  /** Bytes from the start of the disk. */
  start: number;
  /** Bytes. */
  size: number;
  /** As sfdisk prints it: GPT type GUID in upper case, MBR type in lower-case hex without leading zero ("83", "7", "c"). */
  type: string;
  /** Human name of the type ("Linux filesystem", "EFI System", "HPFS/NTFS/exFAT"). */
  typeName: string;
  /** MBR: primary / extended / logical. GPT: always "gpt". */
  kind: 'primary' | 'extended' | 'logical' | 'gpt';
  /** GPT unique partition GUID (upper case). */
  uuid?: string;
  /** GPT partition name. */
  name?: string;
  /** GPT attribute bits as a decimal string (64-bit). */
  attributes?: string;
  /** MBR boot flag (0x80). */
  bootable?: boolean;
  /** MBR logical partitions: bytes from the start of the disk to the EBR that describes this partition. */
  ebrStart?: number;
}

export type FindingSeverity = 'error' | 'warning' | 'info';

/** Something wrong or notable about a table; never thrown, always reported. */
export interface Finding {
  severity: FindingSeverity;
  /** Stable code, e.g. GPT_PRIMARY_HEADER_CRC, GPT_BACKUP_MISMATCH, MBR_OVERLAP, GPT_HYBRID_MBR. */
  code: string;
  message: string;
}

export interface PartitionTable {
  kind: 'gpt' | 'mbr' | 'none';
  /** Logical sector size the table was read with. */
  sectorSize: number;
  /** GPT disk GUID (upper case) or MBR disk signature as 8 lower-case hex digits (sfdisk's "0x…" without 0x). */
  diskId?: string;
  partitions: Partition[];
  findings: Finding[];
  /** GPT only: the geometry of the header that was used, in LBAs, so a writer can reproduce the table. */
  gpt?: GptGeometry;
}

export interface GptGeometry {
  firstUsableLba: number;
  lastUsableLba: number;
  /** Where the primary entry array starts (2 on every disk we have seen). */
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  /** Where the backup header is (AlternateLBA of the primary); not the last LBA when a disk image was enlarged. */
  backupHeaderLba: number;
}
