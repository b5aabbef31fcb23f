import { constants, promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import { RescueError } from '../errors.ts';
import { type Holder, type Usage, type UsageTables, usageOf } from './holders.ts';
import { type MountEntry, parseMountinfo, parseProcSwaps } from './mountinfo.ts';
import {
  devKey,
  devNodeOf,
  parseDevNumber,
  parseVpdSerial,
  readSysBytes,
  readSysDir,
  readSysNumber,
  readSysString,
  resolveSysLink,
  SYSFS_SECTOR,
  splitDevNumber,
  type Transport,
  transportFromSysPath,
} from './sysfs.ts';

export type { Holder, HolderKind, Mount, Usage } from './holders.ts';
export type { Transport } from './sysfs.ts';

/**
 * Block-device discovery from sysfs, the way lsblk does it without udev: /sys/block lists the
 * disks, their directories hold the partitions, /proc/self/mountinfo and /proc/swaps say what is
 * mounted, holders/ links say what is stacked on top. The rescue system may run without udevd, so
 * nothing here depends on the udev database.
 */

export interface Partition extends Usage {
  /** Kernel name: sda1, nvme0n1p2, loop3p1. */
  name: string;
  /** /dev node. */
  path: string;
  /** Partition number from sysfs "partition" (the slot in the partition table). */
  number: number;
  major: number;
  minor: number;
  /** Byte offset on the disk (sysfs "start" × 512). */
  start: number;
  /** Bytes (sysfs "size" × 512). */
  size: number;
  readOnly: boolean;
}

export interface BlockDevice extends Usage {
  /** Kernel name: sda, nvme0n1, vda, mmcblk0, loop3, dm-0, md127. */
  name: string;
  /** /dev node. */
  path: string;
  major: number;
  minor: number;
  /** Bytes (sysfs "size" × 512). */
  size: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  rotational: boolean;
  removable: boolean;
  readOnly: boolean;
  model: string | undefined;
  vendor: string | undefined;
  serial: string | undefined;
  /** World-wide id (naa.…, eui.…, t10.…) when the device reports one. */
  wwid: string | undefined;
  transport: Transport;
  /** For loop devices: the file behind it, as the kernel recorded it. */
  backingFile: string | undefined;
  partitions: Partition[];
}

/** Resolves a path to the block device number it names, or undefined if it is not a block device. */
export type DevNumberResolver = (path: string) => Promise<{ major: number; minor: number } | undefined>;

export interface DiscoveryOptions {
  /** Default /sys; tests point it at a fake tree. */
  sysRoot?: string;
  /** Default /proc; mounts are read from <procRoot>/self/mountinfo, swap from <procRoot>/swaps. */
  procRoot?: string;
  /** Also list ram/zram disks and loop devices with nothing attached (size 0). */
  includeAll?: boolean;
  /** How to turn /dev paths from /proc/swaps and mount sources into numbers; default stat(). */
  devNumberOf?: DevNumberResolver;
}

export const statDevNumber: DevNumberResolver = async (path) => {
  try {
    const st = await fsp.stat(path);
    return st.isBlockDevice() ? splitDevNumber(st.rdev) : undefined;
  } catch {
    return undefined;
  }
};

function byKernelName(a: { name: string }, b: { name: string }): number {
  return a.name.localeCompare(b.name, 'en', { numeric: true });
}

/** ram0…, zram0…: memory, not disks a person would back up or overwrite. */
function isRamDisk(name: string): boolean {
  return /^(?:ram|zram)\d+$/.test(name);
}

/**
 * A /dev path → a sysfs name when stat() cannot resolve it (a fake tree, or a node that udev never
 * created): /dev/sda1 → sda1, /dev/mapper/vg-root → the dm-N whose dm/name is vg-root.
 */
async function devNumberByName(sysRoot: string, path: string): Promise<string | undefined> {
  let name: string | undefined;
  if (path.startsWith('/dev/mapper/')) {
    const mapName = path.slice('/dev/mapper/'.length);
    for (const n of await readSysDir(`${sysRoot}/block`)) {
      if ((await readSysString(`${sysRoot}/block/${n}/dm/name`)) === mapName) name = n;
    }
  } else if (path.startsWith('/dev/')) {
    name = path.slice('/dev/'.length).replaceAll('/', '!');
  }
  if (name === undefined) return undefined;
  const text = await readSysString(`${sysRoot}/class/block/${name}/dev`);
  const num = text === undefined ? undefined : parseDevNumber(text);
  return num ? devKey(num.major, num.minor) : undefined;
}

async function resolveDevKey(
  sysRoot: string,
  path: string,
  resolver: DevNumberResolver,
): Promise<string | undefined> {
  const num = await resolver(path);
  if (num) return devKey(num.major, num.minor);
  return devNumberByName(sysRoot, path);
}

async function readUsageTables(
  sysRoot: string,
  procRoot: string,
  resolver: DevNumberResolver,
): Promise<UsageTables> {
  const mountText = (await readSysString(`${procRoot}/self/mountinfo`)) ?? '';
  const mountsByDev = new Map<string, MountEntry[]>();
  const add = (key: string, e: MountEntry) => {
    const list = mountsByDev.get(key);
    if (list) list.push(e);
    else mountsByDev.set(key, [e]);
  };
  for (const e of parseMountinfo(mountText)) {
    if (e.major !== 0) {
      add(devKey(e.major, e.minor), e);
    } else if (e.source.startsWith('/dev/')) {
      // btrfs (and other multi-device filesystems) report an anonymous 0:N device: fall back to
      // the mount source so that a mounted btrfs partition is not mistaken for a free one.
      const key = await resolveDevKey(sysRoot, e.source, resolver);
      if (key !== undefined) add(key, e);
    }
  }
  const swapDevs = new Set<string>();
  for (const s of parseProcSwaps((await readSysString(`${procRoot}/swaps`)) ?? '')) {
    if (s.type !== 'partition') continue;
    const key = await resolveDevKey(sysRoot, s.path, resolver);
    if (key !== undefined) swapDevs.add(key);
  }
  return { sysRoot, mountsByDev, swapDevs };
}

/** Walks up from a USB mass-storage disk to the USB device (the directory with idVendor) for its serial. */
async function usbDeviceSerial(devicePath: string, sysRoot: string): Promise<string | undefined> {
  let dir = devicePath;
  for (let i = 0; i < 16 && dir.startsWith(sysRoot) && dir !== sysRoot; i++) {
    if ((await readSysString(`${dir}/idVendor`)) !== undefined)
      return (await readSysString(`${dir}/serial`)) || undefined;
    dir = dirname(dir);
  }
  return undefined;
}

async function readSerial(
  dir: string,
  transport: Transport,
  devicePath: string | undefined,
  sysRoot: string,
) {
  const nonEmpty = (s: string | undefined) => (s === undefined || s === '' ? undefined : s);
  // device/serial: NVMe controllers, MMC cards, some SCSI drivers. serial: virtio-blk.
  const direct =
    nonEmpty(await readSysString(`${dir}/device/serial`)) ?? nonEmpty(await readSysString(`${dir}/serial`));
  if (direct) return direct;
  if (transport === 'usb' && devicePath) {
    const usb = await usbDeviceSerial(devicePath, sysRoot);
    if (usb) return usb;
  }
  const vpd = await readSysBytes(`${dir}/device/vpd_pg80`);
  const fromVpd = vpd ? parseVpdSerial(vpd) : undefined;
  if (fromVpd) return fromVpd;
  return nonEmpty(await readSysString(`${dir}/wwid`)) ?? nonEmpty(await readSysString(`${dir}/device/wwid`));
}

async function readPartitions(tables: UsageTables, diskDir: string, diskName: string): Promise<Partition[]> {
  const parts: Partition[] = [];
  for (const entry of await readSysDir(diskDir)) {
    // The kernel names partitions after their disk (sda1, nvme0n1p1, loop3p1); this skips queue/,
    // holders/ … without a stat each.
    if (!entry.startsWith(diskName)) continue;
    const pdir = `${diskDir}/${entry}`;
    const number = await readSysNumber(`${pdir}/partition`);
    if (number === undefined) continue;
    const devText = await readSysString(`${pdir}/dev`);
    const num = devText === undefined ? undefined : parseDevNumber(devText);
    if (!num) continue;
    const usage = await usageOf(tables, entry, pdir, devKey(num.major, num.minor));
    parts.push({
      name: entry,
      path: devNodeOf(entry),
      number,
      major: num.major,
      minor: num.minor,
      start: ((await readSysNumber(`${pdir}/start`)) ?? 0) * SYSFS_SECTOR,
      size: ((await readSysNumber(`${pdir}/size`)) ?? 0) * SYSFS_SECTOR,
      readOnly: (await readSysNumber(`${pdir}/ro`)) === 1,
      ...usage,
    });
  }
  return parts.sort((a, b) => a.number - b.number);
}

async function readDisk(
  tables: UsageTables,
  name: string,
  includeAll: boolean,
): Promise<BlockDevice | undefined> {
  const sysRoot = tables.sysRoot;
  const dir = `${sysRoot}/block/${name}`;
  if (!includeAll && isRamDisk(name)) return undefined;
  const devText = await readSysString(`${dir}/dev`);
  const num = devText === undefined ? undefined : parseDevNumber(devText);
  if (!num) return undefined;
  const size = ((await readSysNumber(`${dir}/size`)) ?? 0) * SYSFS_SECTOR;
  const backingFile = (await readSysString(`${dir}/loop/backing_file`)) || undefined;
  // An unattached loop device is a free slot, not a disk (losetup -f hands these out).
  if (!includeAll && /^loop\d+$/.test(name) && size === 0) return undefined;

  const devicePath = await resolveSysLink(dir);
  const hints = {
    dm: (await readSysString(`${dir}/dm/name`)) !== undefined,
    md: (await readSysDir(`${dir}/md`)).length > 0,
  };
  const transport = transportFromSysPath(name, devicePath ?? dir, hints);
  const logical = (await readSysNumber(`${dir}/queue/logical_block_size`)) ?? 512;
  const physical = (await readSysNumber(`${dir}/queue/physical_block_size`)) ?? logical;
  const model =
    (await readSysString(`${dir}/device/model`)) || (await readSysString(`${dir}/device/name`)) || undefined;
  const usage = await usageOf(tables, name, dir, devKey(num.major, num.minor));
  const partitions = await readPartitions(tables, dir, name);
  const partReasons = partitions.flatMap((p) => p.inUseReasons.map((r) => `${p.name} ${r}`));
  const inUseReasons = [...usage.inUseReasons, ...partReasons];
  return {
    name,
    path: devNodeOf(name),
    major: num.major,
    minor: num.minor,
    size,
    logicalSectorSize: logical,
    physicalSectorSize: physical,
    rotational: (await readSysNumber(`${dir}/queue/rotational`)) === 1,
    removable: (await readSysNumber(`${dir}/removable`)) === 1,
    readOnly: (await readSysNumber(`${dir}/ro`)) === 1,
    model,
    vendor: (await readSysString(`${dir}/device/vendor`)) || undefined,
    serial: await readSerial(dir, transport, devicePath, sysRoot),
    wwid: (await readSysString(`${dir}/wwid`)) || (await readSysString(`${dir}/device/wwid`)) || undefined,
    transport,
    backingFile,
    partitions,
    mounts: usage.mounts,
    swap: usage.swap,
    holders: usage.holders,
    inUse: inUseReasons.length > 0,
    inUseReasons,
  };
}

/** The disks of this machine (or of the tree at `opts.sysRoot`), with partitions and what holds them. */
export async function listBlockDevices(opts: DiscoveryOptions = {}): Promise<BlockDevice[]> {
  const sysRoot = opts.sysRoot ?? '/sys';
  const procRoot = opts.procRoot ?? '/proc';
  const tables = await readUsageTables(sysRoot, procRoot, opts.devNumberOf ?? statDevNumber);
  const disks: BlockDevice[] = [];
  for (const name of await readSysDir(`${sysRoot}/block`)) {
    const disk = await readDisk(tables, name, opts.includeAll ?? false);
    if (disk) disks.push(disk);
  }
  return disks.sort(byKernelName);
}

/** What a path turned out to be, and everything that holds it. */
export interface DeviceUsage extends Usage {
  path: string;
  kind: 'disk' | 'partition' | 'image-file';
  /** The disk itself, or the disk the partition belongs to; for an image file, undefined. */
  disk: BlockDevice | undefined;
  partition: Partition | undefined;
}

export interface UsageOptions extends DiscoveryOptions {
  /**
   * Also ask the kernel: an exclusive open (O_EXCL) of a block device fails with EBUSY while any
   * filesystem, swap, dm/md or other exclusive user has it — in every mount namespace, which the
   * mount table of ours cannot see. Default true. Holds the device for an instant.
   */
  exclusiveCheck?: boolean;
}

async function kernelSaysBusy(path: string): Promise<boolean> {
  try {
    const h = await fsp.open(path, constants.O_RDONLY | constants.O_EXCL);
    await h.close();
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EBUSY';
  }
}

function notFound(path: string, why: string): RescueError {
  return new RescueError(
    'E_DEVICE_NOT_FOUND',
    `${path}: ${why}`,
    'Check the device name (the device list shows what is attached) and that the disk is still connected.',
    { path },
  );
}

/**
 * Usage of a disk, a partition or an image file. For a disk, the reasons include those of its
 * partitions. An image file is in use while a loop device is attached to it (writing to it behind
 * the loop device's back would corrupt whatever reads through the loop).
 */
export async function deviceUsage(path: string, opts: UsageOptions = {}): Promise<DeviceUsage> {
  let st: Awaited<ReturnType<typeof fsp.stat>>;
  try {
    st = await fsp.stat(path);
  } catch (e) {
    throw notFound(path, `cannot be opened (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const disks = await listBlockDevices({ ...opts, includeAll: true });
  if (st.isFile()) {
    const real = await fsp.realpath(path);
    const loops = disks.filter((d) => d.backingFile !== undefined && d.backingFile === real);
    const inUseReasons = loops.map((d) =>
      d.inUseReasons.length > 0
        ? `attached as loop device ${d.path}, which is ${d.inUseReasons.join('; ')}`
        : `attached as loop device ${d.path}`,
    );
    return {
      path,
      kind: 'image-file',
      disk: undefined,
      partition: undefined,
      mounts: [],
      swap: false,
      holders: [],
      inUse: inUseReasons.length > 0,
      inUseReasons,
    };
  }
  if (!st.isBlockDevice()) throw notFound(path, 'is neither a block device nor an image file');
  const { major, minor } = splitDevNumber(st.rdev);
  const busy = (opts.exclusiveCheck ?? true) && (await kernelSaysBusy(path));
  const withKernel = (u: Usage): Usage => {
    if (!busy || u.inUse) return u;
    const why =
      'busy: the kernel refuses exclusive access (mounted in another namespace or open by another program)';
    return { ...u, inUse: true, inUseReasons: [...u.inUseReasons, why] };
  };
  for (const disk of disks) {
    if (disk.major === major && disk.minor === minor) {
      const u = withKernel(disk);
      return { path, kind: 'disk', disk, partition: undefined, ...pickUsage(u) };
    }
    for (const partition of disk.partitions) {
      if (partition.major === major && partition.minor === minor) {
        const u = withKernel(partition);
        return { path, kind: 'partition', disk, partition, ...pickUsage(u) };
      }
    }
  }
  throw notFound(path, `block device ${major}:${minor} is not listed in sysfs`);
}

function pickUsage(u: Usage): Usage {
  return { mounts: u.mounts, swap: u.swap, holders: u.holders, inUse: u.inUse, inUseReasons: u.inUseReasons };
}

/** True if anything holds the device (or, for a disk, any of its partitions); see deviceUsage. */
export async function isInUse(path: string, opts: UsageOptions = {}): Promise<boolean> {
  return (await deviceUsage(path, opts)).inUse;
}

/** The dm/md devices stacked on this device (for a disk: also on its partitions). */
export async function holdersOf(path: string, opts: UsageOptions = {}): Promise<Holder[]> {
  const u = await deviceUsage(path, { ...opts, exclusiveCheck: false });
  if (u.kind === 'disk' && u.disk) return [...u.disk.holders, ...u.disk.partitions.flatMap((p) => p.holders)];
  return u.holders;
}

/** The safety rule in one call: throws E_DEVICE_IN_USE naming every reason. */
export async function assertNotInUse(path: string, opts: UsageOptions = {}): Promise<DeviceUsage> {
  const u = await deviceUsage(path, opts);
  if (u.inUse) {
    throw new RescueError(
      'E_DEVICE_IN_USE',
      `${path} is in use: ${u.inUseReasons.join('; ')}`,
      'Unmount its filesystems, turn off its swap (swapoff) and close what is stacked on it (LVM, ' +
        'dm-crypt, RAID), or choose another disk.',
      { path, reasons: u.inUseReasons },
    );
  }
  return u;
}
