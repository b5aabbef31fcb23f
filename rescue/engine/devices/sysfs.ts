import { promises as fsp } from 'node:fs';

/**
 * Small readers for the kernel's sysfs and the pure rules that interpret what they read. Every
 * reader takes full paths so that discovery can run on a fake tree (tests) as well as on /sys.
 */

const SYS_DEV_BLOCK = '/sys/dev/block';

/** The kernel's "size" (and "start") files count 512-byte units whatever the logical sector size. */
export const SYSFS_SECTOR = 512;

/** A sysfs attribute as trimmed text, or undefined when it is absent or unreadable. */
export async function readSysString(path: string): Promise<string | undefined> {
  try {
    return (await fsp.readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** A sysfs attribute as a finite number, or undefined when it is absent, unreadable or not a number. */
export async function readSysNumber(path: string): Promise<number | undefined> {
  const text = await readSysString(path);
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** A binary sysfs attribute (VPD pages), or undefined. */
export async function readSysBytes(path: string): Promise<Buffer | undefined> {
  try {
    return await fsp.readFile(path);
  } catch {
    return undefined;
  }
}

/** Names in a sysfs directory, or none when it is absent. */
export async function readSysDir(path: string): Promise<string[]> {
  try {
    return await fsp.readdir(path);
  } catch {
    return [];
  }
}

/** Where a sysfs symlink points (resolved), or undefined. */
export async function resolveSysLink(path: string): Promise<string | undefined> {
  try {
    return await fsp.realpath(path);
  } catch {
    return undefined;
  }
}

/** major/minor out of a stat().rdev, as glibc's gnu_dev_major/minor split it. */
export function splitDevNumber(rdev: number): { major: number; minor: number } {
  const r = BigInt(rdev);
  const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn));
  const minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
  return { major, minor };
}

/** "8:17" (the sysfs `dev` file, the mountinfo field) → numbers; undefined if it is not that. */
export function parseDevNumber(text: string): { major: number; minor: number } | undefined {
  const m = /^(\d+):(\d+)$/.exec(text.trim());
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]) };
}

export function devKey(major: number, minor: number): string {
  return `${major}:${minor}`;
}

/**
 * Size and sector sizes of an open block device. The kernel's "size" file is always in 512-byte
 * units, whatever the logical sector size.
 */
export async function blockDeviceGeometry(
  rdev: number,
  sysDevBlock = SYS_DEV_BLOCK,
): Promise<{ size: number; logical: number; physical: number }> {
  const { major, minor } = splitDevNumber(rdev);
  const dir = `${sysDevBlock}/${major}:${minor}`;
  const sectors512 = (await readSysNumber(`${dir}/size`)) ?? 0;
  // Partitions have no queue/ of their own: their parent's applies.
  const logical =
    (await readSysNumber(`${dir}/queue/logical_block_size`)) ??
    (await readSysNumber(`${dir}/../queue/logical_block_size`)) ??
    512;
  const physical =
    (await readSysNumber(`${dir}/queue/physical_block_size`)) ??
    (await readSysNumber(`${dir}/../queue/physical_block_size`)) ??
    logical;
  return { size: sectors512 * SYSFS_SECTOR, logical, physical };
}

export const TRANSPORTS = [
  'usb',
  'nvme',
  'sata',
  'scsi',
  'virtio',
  'mmc',
  'loop',
  'md',
  'dm',
  'unknown',
] as const;
export type Transport = (typeof TRANSPORTS)[number];

/**
 * The bus a disk hangs on, from its kernel name and where /sys/block/NAME resolves to, e.g.
 * /sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb.
 * Order matters: a USB–SATA bridge shows a SCSI host under /usb…, a SATA disk a SCSI host under
 * /ata…, and virtio-scsi a SCSI host under /virtio…; the outermost bus that a person would name wins,
 * except that a SCSI host under virtio is reported as scsi (it behaves like one).
 */
export function transportFromSysPath(
  name: string,
  devicePath: string,
  hints: { dm?: boolean; md?: boolean } = {},
): Transport {
  if (hints.dm) return 'dm';
  if (hints.md) return 'md';
  if (/^loop\d+$/.test(name)) return 'loop';
  const p = `${devicePath}/`;
  if (/\/usb\d+\//.test(p)) return 'usb';
  if (/\/nvme(?:-subsystem|-fabrics)?\//.test(p) || /\/nvme\d+/.test(p)) return 'nvme';
  if (/\/ata\d+\//.test(p)) return 'sata';
  if (/\/mmc_host\//.test(p) || /\/mmc\d+\//.test(p)) return 'mmc';
  if (/\/host\d+\/(?:target|rport|port-|session)/.test(p)) return 'scsi';
  if (/\/virtio\d+\//.test(p)) return 'virtio';
  if (/^dm-\d+$/.test(name)) return 'dm';
  if (/^md\d+$/.test(name) || /^md_/.test(name)) return 'md';
  return 'unknown';
}

/**
 * Unit serial number out of SCSI VPD page 0x80 (/sys/…/device/vpd_pg80): 4-byte header whose last
 * two bytes are the page length, then ASCII padded with spaces. Undefined when it is not that page.
 */
export function parseVpdSerial(page: Uint8Array): string | undefined {
  if (page.length < 4 || page[1] !== 0x80) return undefined;
  const len = (page[2] << 8) | page[3];
  const end = Math.min(page.length, 4 + len);
  let s = '';
  for (let i = 4; i < end; i++) {
    const c = page[i];
    if (c === 0) break;
    if (c < 0x20 || c > 0x7e) return undefined;
    s += String.fromCharCode(c);
  }
  s = s.trim();
  return s === '' ? undefined : s;
}

/** Kernel name → device node: the kernel writes '/' as '!' in sysfs names (cciss!c0d0). */
export function devNodeOf(name: string): string {
  return `/dev/${name.replaceAll('!', '/')}`;
}
