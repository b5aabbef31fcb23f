/**
 * Which partitions an installed system needs to boot (manual 2.2, done for Linux too): the
 * partitions holding Windows or a Linux root, the EFI system partition with their loaders, the MSR
 * and Windows recovery partition next to a Windows, the "System Reserved" boot partition of a
 * BIOS Windows, the BIOS-boot partition of a GRUB on GPT, and what a Linux /etc/fstab mounts at
 * /boot, /boot/efi, /efi, /usr and /var.
 */
import { type BlockSource, SliceSource } from '../devices/source.ts';
import { isRescueError, RescueError } from '../errors.ts';
import { detectFilesystem } from '../filesystems/detect.ts';
import { openVolumeFiles } from '../filesystems/files/index.ts';
import { detectOs, espBootEntries, parseFstab } from '../filesystems/files/os-detect.ts';
import type { FsIdentity } from '../filesystems/types.ts';
import type { Partition, PartitionTable } from '../partitions/types.ts';

export const GPT_TYPES = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  msr: 'E3C9E316-0B5C-4DB8-817D-F92DF00215AE',
  winRecovery: 'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC',
  biosBoot: '21686148-6449-6E6F-744E-656564454649',
  xbootldr: 'BC13C2FF-59E6-4262-A352-B275FD6F7172',
} as const;

/** Mount points whose filesystems a Linux needs to boot. */
const LINUX_BOOT_MOUNTS = new Set(['/', '/boot', '/boot/efi', '/efi', '/usr', '/var']);

export interface SystemPartitions {
  partitions: number[];
  /** One line per partition taken (or notable one left out), in words. */
  explanation: string[];
  systems: { os: 'windows' | 'linux'; name: string; partition: number }[];
}

interface Looked {
  p: Partition;
  id: FsIdentity;
  os?: { os: 'windows' | 'linux'; name: string; details: Record<string, string> };
  espLoaders: string[];
  windowsBootFiles: boolean;
  fstab?: { spec: string; mountPoint: string }[];
}

async function look(src: BlockSource, p: Partition): Promise<Looked> {
  const slice = new SliceSource(src, p.start, p.size, `${src.path}:${p.number}`);
  const id = await detectFilesystem(slice);
  const out: Looked = { p, id, espLoaders: [], windowsBootFiles: false };
  try {
    const files = await openVolumeFiles(slice, id.type);
    if (!files) return out;
    const os = await detectOs(files);
    if (os) out.os = os;
    out.espLoaders = (await espBootEntries(files).catch(() => [])).map((e) => e.path);
    out.windowsBootFiles = !!((await files.stat('/bootmgr')) && (await files.stat('/Boot/BCD')));
    if (os?.os === 'linux') {
      const fstab = await files.readFile('/etc/fstab').catch(() => undefined);
      if (fstab) out.fstab = parseFstab(fstab.toString('utf8'));
    }
  } catch (e) {
    if (!isRescueError(e)) throw e;
  }
  return out;
}

function describe(l: Looked): string {
  const label = l.id.label ? ` "${l.id.label}"` : '';
  return `partition ${l.p.number} (${l.id.type}${label})`;
}

/** Does an fstab spec (UUID=…, LABEL=…, PARTUUID=…, /dev/disk/by-uuid/…) name this partition? */
function specMatches(spec: string, l: Looked): boolean {
  const [k, v] = spec.includes('=')
    ? [spec.slice(0, spec.indexOf('=')).toUpperCase(), spec.slice(spec.indexOf('=') + 1)]
    : ['', spec];
  const eq = (a?: string, b?: string) =>
    !!a && !!b && a.toLowerCase() === b.replace(/^"|"$/g, '').toLowerCase();
  if (k === 'UUID') return eq(l.id.uuid, v);
  if (k === 'LABEL') return l.id.label === v.replace(/^"|"$/g, '');
  if (k === 'PARTUUID') return eq(l.p.uuid, v);
  if (k === 'PARTLABEL') return l.p.name === v;
  if (v.startsWith('/dev/disk/by-uuid/')) return eq(l.id.uuid, v.slice(18));
  if (v.startsWith('/dev/disk/by-label/')) return l.id.label === v.slice(19);
  if (v.startsWith('/dev/disk/by-partuuid/')) return eq(l.p.uuid, v.slice(22));
  return false;
}

export async function findSystemPartitions(
  src: BlockSource,
  table: PartitionTable,
): Promise<SystemPartitions> {
  const looked: Looked[] = [];
  for (const p of table.partitions) {
    if (p.kind === 'extended') continue;
    looked.push(await look(src, p));
  }
  const take = new Map<number, string>();
  const systems: SystemPartitions['systems'] = [];
  for (const l of looked) {
    if (l.os) {
      systems.push({ os: l.os.os, name: l.os.name, partition: l.p.number });
      take.set(l.p.number, `${describe(l)}: ${l.os.name}${l.os.os === 'linux' ? ' (root filesystem)' : ''}`);
    }
  }
  if (systems.length === 0) {
    throw new RescueError(
      'E_NO_SYSTEM_FOUND',
      `No installed Windows or Linux was found on ${src.path}`,
      'Back up the whole disk (rescue backup disk) or the partitions you need (rescue backup partition).',
      { partitions: looked.map((l) => ({ number: l.p.number, fs: l.id.type })) },
    );
  }
  const hasWindows = systems.some((s) => s.os === 'windows');
  const hasLinux = systems.some((s) => s.os === 'linux');
  const type = (l: Looked) => l.p.type.toUpperCase();
  for (const l of looked) {
    if (take.has(l.p.number)) continue;
    if (type(l) === GPT_TYPES.esp || l.p.type === 'ef' || l.espLoaders.length > 0) {
      if (l.espLoaders.length > 0 || type(l) === GPT_TYPES.esp) {
        take.set(
          l.p.number,
          `${describe(l)}: EFI system partition${l.espLoaders.length ? ` with ${l.espLoaders.join(', ')}` : ''}`,
        );
      }
    } else if (hasWindows && type(l) === GPT_TYPES.msr) {
      take.set(l.p.number, `${describe(l)}: Microsoft reserved partition`);
    } else if (hasWindows && (type(l) === GPT_TYPES.winRecovery || l.p.type === '27')) {
      take.set(l.p.number, `${describe(l)}: Windows recovery partition`);
    } else if (hasWindows && l.windowsBootFiles) {
      take.set(l.p.number, `${describe(l)}: Windows boot partition ("System Reserved": bootmgr, Boot\\BCD)`);
    } else if (hasLinux && (type(l) === GPT_TYPES.biosBoot || type(l) === GPT_TYPES.xbootldr)) {
      take.set(
        l.p.number,
        `${describe(l)}: ${type(l) === GPT_TYPES.biosBoot ? 'BIOS boot partition (GRUB core image)' : 'extended boot loader partition'}`,
      );
    } else if (table.kind === 'mbr' && l.p.bootable && l.id.type !== 'unknown') {
      take.set(l.p.number, `${describe(l)}: the active (boot) partition`);
    }
  }
  for (const root of looked.filter((l) => l.fstab)) {
    for (const entry of root.fstab ?? []) {
      if (!LINUX_BOOT_MOUNTS.has(entry.mountPoint)) continue;
      const l = looked.find((x) => specMatches(entry.spec, x));
      if (l && !take.has(l.p.number))
        take.set(
          l.p.number,
          `${describe(l)}: mounted at ${entry.mountPoint} by ${describe(root)}'s /etc/fstab`,
        );
    }
  }
  const partitions = [...take.keys()].sort((a, b) => a - b);
  return { partitions, explanation: partitions.map((n) => take.get(n)!), systems };
}
