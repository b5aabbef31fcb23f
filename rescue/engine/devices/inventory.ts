/**
 * What is on a disk, in one structure: the device facts from sysfs, the partition table, and for
 * every partition its filesystem identity and used bytes. This is what `rescue list` prints and
 * what the UI's disk cards show; the JSON shape is a contract (docs/cli.md).
 */
import { promises as fsp } from 'node:fs';
import { isRescueError } from '../errors.ts';
import { detectFilesystem, usedMapOf } from '../filesystems/detect.ts';
import type { FsIdentity } from '../filesystems/types.ts';
import { readPartitionTable } from '../partitions/table.ts';
import type { Finding, Partition } from '../partitions/types.ts';
import { type BlockDevice, type Partition as DevicePartition, listBlockDevices } from './discovery.ts';
import { type BlockSource, FileSource, SliceSource } from './source.ts';

export interface FsReport {
  /** blkid's spelling: ext4, ntfs, vfat, exfat, swap, crypto_LUKS, BitLocker, LVM2_member, … or "unknown". */
  type: string;
  label?: string;
  uuid?: string;
  version?: string;
  blockSize?: number;
  /** Bytes the filesystem spans. */
  size?: number;
  /** Bytes a backup of this volume copies: its allocated blocks, or every byte when sector-by-sector. */
  usedBytes: number;
  /** size − usedBytes, when the filesystem's size is known and it is read by allocation. */
  freeBytes?: number;
  usedMethod: 'allocation' | 'sector-by-sector';
  /** Why sector-by-sector, or which groups were taken whole. */
  reason?: string;
  warnings?: string[];
  state?: Record<string, boolean | string | number>;
}

export interface PartitionReport extends Partition {
  /** The kernel's device node for this partition, when the disk is a block device the kernel partitioned. */
  devicePath?: string;
  fs?: FsReport;
  mounts?: string[];
  inUse?: boolean;
  inUseReasons?: string[];
}

export interface DiskReport {
  path: string;
  /** 'device' for a block device, 'image' for a regular file read as a disk. */
  kind: 'device' | 'image';
  size: number;
  sectorSize: number;
  physicalSectorSize: number;
  /** 'unknown' only together with `error`: the disk could not be read. */
  table: 'gpt' | 'mbr' | 'none' | 'unknown';
  /** Set when a discovered device could not be read (permissions, I/O error); the sysfs facts remain. */
  error?: { code: string; message: string; remedy: string };
  diskId?: string;
  findings: Finding[];
  partitions: PartitionReport[];
  /** A filesystem on the whole disk (no partition table): USB sticks formatted raw, floppies, VM disks. */
  fs?: FsReport;
  model?: string;
  vendor?: string;
  serial?: string;
  transport?: string;
  rotational?: boolean;
  removable?: boolean;
  readOnly?: boolean;
  backingFile?: string;
  mounts?: string[];
  inUse?: boolean;
  inUseReasons?: string[];
}

export interface Inventory {
  disks: DiskReport[];
}

async function fsReport(src: BlockSource): Promise<FsReport> {
  let id: FsIdentity;
  try {
    id = await detectFilesystem(src);
  } catch (e) {
    if (!isRescueError(e)) throw e;
    return { type: 'unknown', usedBytes: src.size, usedMethod: 'sector-by-sector', reason: e.message };
  }
  let map: Awaited<ReturnType<typeof usedMapOf>>;
  try {
    map = await usedMapOf(src, id);
  } catch (e) {
    if (!isRescueError(e)) throw e;
    map = { method: 'sector-by-sector', extents: [], usedBytes: src.size, reason: e.message };
  }
  const r: FsReport = { type: id.type, usedBytes: map.usedBytes, usedMethod: map.method };
  if (id.label !== undefined) r.label = id.label;
  if (id.uuid !== undefined) r.uuid = id.uuid;
  if (id.version !== undefined) r.version = id.version;
  if (id.blockSize !== undefined) r.blockSize = id.blockSize;
  if (id.size !== undefined) r.size = id.size;
  if (id.size !== undefined && map.method === 'allocation')
    r.freeBytes = Math.max(0, id.size - map.usedBytes);
  if (map.reason) r.reason = map.reason;
  if (id.warnings?.length) r.warnings = id.warnings;
  if (id.state) r.state = id.state;
  return r;
}

function usageFields(u: { mounts: { mountPoint: string }[]; inUse: boolean; inUseReasons: string[] }) {
  return { mounts: u.mounts.map((m) => m.mountPoint), inUse: u.inUse, inUseReasons: u.inUseReasons };
}

/** Reads one disk (block device or image file). `device` adds what sysfs knows about it. */
export async function inspectDisk(path: string, device?: BlockDevice): Promise<DiskReport> {
  const src = await FileSource.open(path);
  try {
    const table = await readPartitionTable(src);
    const report: DiskReport = {
      path,
      kind: src.isBlockDevice ? 'device' : 'image',
      size: src.size,
      sectorSize: table.sectorSize,
      physicalSectorSize: src.physicalSectorSize,
      table: table.kind,
      findings: table.findings,
      partitions: [],
    };
    if (table.diskId !== undefined) report.diskId = table.diskId;
    if (device) Object.assign(report, deviceFacts(device));
    if (table.kind === 'none') {
      report.fs = await fsReport(src);
      if (report.fs.type === 'unknown' && report.fs.usedMethod === 'sector-by-sector') {
        report.fs.reason = 'no partition table and no filesystem recognised';
      }
      return report;
    }
    for (const p of table.partitions) {
      const pr: PartitionReport = { ...p };
      const devPart: DevicePartition | undefined = device?.partitions.find((d) => d.number === p.number);
      if (devPart) Object.assign(pr, { devicePath: devPart.path, ...usageFields(devPart) });
      if (p.kind !== 'extended') {
        try {
          const slice = new SliceSource(src, p.start, p.size, `${path}:${p.number}`);
          pr.fs = await fsReport(slice);
        } catch (e) {
          if (!isRescueError(e)) throw e;
          pr.fs = { type: 'unknown', usedBytes: p.size, usedMethod: 'sector-by-sector', reason: e.message };
        }
      }
      report.partitions.push(pr);
    }
    return report;
  } finally {
    await src.close();
  }
}

/**
 * The disks named in `paths` (devices or image files), or every block device of this machine
 * when none are named.
 */
export async function inventory(paths: string[] = []): Promise<Inventory> {
  const needDevices = paths.length === 0 || (await anyBlockDevice(paths));
  const devices = needDevices ? await listBlockDevices() : [];
  const byPath = new Map<string, BlockDevice>();
  for (const d of devices) byPath.set(d.path, d);
  const targets = paths.length > 0 ? paths : devices.map((d) => d.path);
  const disks: DiskReport[] = [];
  for (const p of targets) {
    const real = await fsp.realpath(p).catch(() => p);
    const device = byPath.get(real);
    try {
      disks.push(await inspectDisk(p, device));
    } catch (e) {
      // A disk the user named must be readable; one we found ourselves is still worth showing.
      if (paths.length > 0 || !device || !isRescueError(e)) throw e;
      disks.push(unreadableDisk(device, e));
    }
  }
  return { disks };
}

async function anyBlockDevice(paths: string[]): Promise<boolean> {
  for (const p of paths) {
    const st = await fsp.stat(p).catch(() => undefined);
    if (st?.isBlockDevice()) return true;
  }
  return false;
}

function unreadableDisk(
  device: BlockDevice,
  e: { code: string; message: string; remedy: string },
): DiskReport {
  return {
    path: device.path,
    kind: 'device',
    size: device.size,
    sectorSize: device.logicalSectorSize,
    physicalSectorSize: device.physicalSectorSize,
    table: 'unknown',
    error: { code: e.code, message: e.message, remedy: e.remedy },
    findings: [],
    partitions: device.partitions.map((p) => ({
      number: p.number,
      start: p.start,
      size: p.size,
      type: '',
      typeName: 'unknown (disk not readable)',
      kind: p.number > 4 ? 'logical' : 'primary',
      devicePath: p.path,
      ...usageFields(p),
    })),
    ...deviceFacts(device),
  };
}

/** What sysfs knows about a disk, in the report's terms. */
function deviceFacts(device: BlockDevice): Partial<DiskReport> {
  return {
    model: device.model,
    vendor: device.vendor,
    serial: device.serial,
    transport: device.transport,
    rotational: device.rotational,
    removable: device.removable,
    readOnly: device.readOnly,
    backingFile: device.backingFile,
    ...usageFields(device),
  };
}
