import type { MountEntry } from './mountinfo.ts';
import { devKey, devNodeOf, parseDevNumber, readSysDir, readSysString } from './sysfs.ts';

/**
 * What holds a block device: mounts, active swap, and the kernel's holders/ links (device-mapper
 * and md stack on top of partitions and disks and keep them open). The words built here end up in
 * refusals shown to people ("held by LVM volume vg-root, which is mounted at /"), so they name the
 * thing a person knows, not the kernel's dm-3.
 */

export type HolderKind = 'dm-crypt' | 'lvm' | 'dm' | 'md' | 'other';

export interface Holder {
  /** Kernel name of the holding device: dm-0, md127. */
  name: string;
  /** /dev node of the holding device. */
  path: string;
  kind: HolderKind;
  /** Kernel name of the device it holds (a disk or one of its partitions). */
  holds: string;
  /** device-mapper name (/dev/mapper/<mapName>): vg-root, luks-…; undefined for md and others. */
  mapName: string | undefined;
  /** device-mapper uuid (CRYPT-LUKS2-…, LVM-…) or the md array's RAID level (raid1). */
  detail: string | undefined;
  /** Why the holder itself is in use (its mounts, swap, its own holders), transitively. */
  inUseReasons: string[];
}

export interface Mount {
  mountPoint: string;
  fsType: string;
  /** What the mount table says was mounted (/dev/sda1, /dev/mapper/vg-root …). */
  source: string;
  readOnly: boolean;
  /** Per-mount options as listed in mountinfo (rw, relatime, …). */
  options: string[];
}

/** Everything that holds one block device, and the verdict. */
export interface Usage {
  mounts: Mount[];
  /** The device is an active swap area. */
  swap: boolean;
  holders: Holder[];
  inUse: boolean;
  inUseReasons: string[];
}

/** dm uuids start with the name of the target's owner: cryptsetup writes CRYPT-, LVM writes LVM-. */
export function classifyDmUuid(uuid: string | undefined): 'dm-crypt' | 'lvm' | 'dm' {
  if (uuid?.startsWith('CRYPT-')) return 'dm-crypt';
  if (uuid?.startsWith('LVM-')) return 'lvm';
  return 'dm';
}

/** "held by LVM volume vg-root", "held by md127 (RAID1)", followed by what holds the holder. */
export function describeHolder(h: Holder): string {
  let base: string;
  switch (h.kind) {
    case 'md': {
      const level = h.detail?.startsWith('raid') ? h.detail.slice(4) : '';
      base = `held by ${h.name} (RAID${level})`;
      break;
    }
    case 'lvm':
      base = `held by LVM volume ${h.mapName ?? h.name}`;
      break;
    case 'dm-crypt':
      base = `held by dm-crypt mapping ${h.mapName ?? h.name}`;
      break;
    case 'dm':
      base = h.mapName ? `held by device-mapper ${h.mapName} (${h.name})` : `held by device-mapper ${h.name}`;
      break;
    default:
      base = `held by ${h.name}`;
  }
  return h.inUseReasons.length > 0 ? `${base}, which is ${h.inUseReasons.join('; ')}` : base;
}

/** The mount and swap tables, indexed by major:minor, that usage is judged against. */
export interface UsageTables {
  sysRoot: string;
  mountsByDev: ReadonlyMap<string, readonly MountEntry[]>;
  swapDevs: ReadonlySet<string>;
}

/** Stacks deeper than this are not real (LUKS on LVM on md on partitions is 3); it also stops cycles. */
const MAX_HOLDER_DEPTH = 16;

function toMount(e: MountEntry): Mount {
  return {
    mountPoint: e.mountPoint,
    fsType: e.fsType,
    source: e.source,
    readOnly: e.readOnly,
    options: e.options,
  };
}

/**
 * Usage of the block device whose sysfs directory is `sysDir` (the disk's /sys/block/X or the
 * partition's /sys/block/X/Y) and whose number is `dev` ("8:1").
 */
export async function usageOf(
  tables: UsageTables,
  name: string,
  sysDir: string,
  dev: string,
  depth = 0,
  seen: ReadonlySet<string> = new Set(),
): Promise<Usage> {
  const mounts = (tables.mountsByDev.get(dev) ?? []).map(toMount);
  const swap = tables.swapDevs.has(dev);
  const holders: Holder[] = [];
  if (depth < MAX_HOLDER_DEPTH) {
    const nextSeen = new Set(seen).add(name);
    for (const holderName of (await readSysDir(`${sysDir}/holders`)).sort()) {
      if (nextSeen.has(holderName)) continue;
      holders.push(await describeHolderDevice(tables, holderName, name, depth + 1, nextSeen));
    }
  }
  const inUseReasons = [
    ...mounts.map((m) => `mounted at ${m.mountPoint}`),
    ...(swap ? ['active swap'] : []),
    ...holders.map(describeHolder),
  ];
  return { mounts, swap, holders, inUse: inUseReasons.length > 0, inUseReasons };
}

async function describeHolderDevice(
  tables: UsageTables,
  holderName: string,
  holds: string,
  depth: number,
  seen: ReadonlySet<string>,
): Promise<Holder> {
  // Holders are whole block devices (dm-N, mdN), so they live directly under /sys/class/block.
  const dir = `${tables.sysRoot}/class/block/${holderName}`;
  const uuid = await readSysString(`${dir}/dm/uuid`);
  const dmName = await readSysString(`${dir}/dm/name`);
  const isDm = uuid !== undefined || dmName !== undefined;
  const mdLevel = await readSysString(`${dir}/md/level`);
  const isMd = mdLevel !== undefined || /^md\d+$/.test(holderName);
  const kind: HolderKind = isDm ? classifyDmUuid(uuid) : isMd ? 'md' : 'other';
  const devText = await readSysString(`${dir}/dev`);
  const num = devText === undefined ? undefined : parseDevNumber(devText);
  const own = num
    ? await usageOf(tables, holderName, dir, devKey(num.major, num.minor), depth, seen)
    : { inUseReasons: [] as string[] };
  return {
    name: holderName,
    path: devNodeOf(holderName),
    kind,
    holds,
    mapName: isDm && dmName ? dmName : undefined,
    detail: isDm ? uuid || undefined : mdLevel || undefined,
    inUseReasons: own.inUseReasons,
  };
}
