/**
 * What backup and clone know of a source disk: the refusal of sources mounted read-write, the
 * facts the manifest records (model, serial, transport), and the manifest's description of a disk.
 */
import { promises as fsp } from 'node:fs';
import { deviceUsage } from '../devices/discovery.ts';
import type { FileSource } from '../devices/source.ts';
import { RescueError } from '../errors.ts';
import { encodeUsedMap } from '../image/index.ts';
import type { PartitionTable } from '../partitions/types.ts';
import type { PlannedRegion } from './regions.ts';

export interface BackupSourceSpec {
  /** Block device or image file. */
  path: string;
  /** Partition numbers (partition backups); undefined = the whole disk. */
  partitions?: number[];
}

export interface SourceFacts {
  kind: 'device' | 'image';
  model?: string;
  serial?: string;
  transport?: string;
}

/**
 * What the manifest records of a source (model, serial, transport), and the refusal of sources
 * whose filesystems are mounted read-write: the copy would be torn.
 */
export async function examineSource(
  path: string,
  partitions: number[] | undefined,
  allowMounted: boolean,
): Promise<{ problems: string[]; facts: SourceFacts }> {
  const st = await fsp.stat(path);
  const usage = await deviceUsage(path, { exclusiveCheck: false });
  const problems: string[] = [];
  if (!st.isBlockDevice()) {
    // An image file is live while a loop device over it is mounted: its filesystem may change.
    const live = usage.inUseReasons.filter((r) => /mounted/.test(r));
    problems.push(...live.map((r) => `${path} is ${r}`));
  }
  const consider = (
    what: string,
    u: { mounts: { mountPoint: string; readOnly: boolean }[]; swap: boolean },
  ) => {
    for (const m of u.mounts)
      if (!m.readOnly) problems.push(`${what} is mounted read-write at ${m.mountPoint}`);
  };
  if (usage.kind === 'disk' && usage.disk) {
    consider(path, usage.disk);
    for (const p of usage.disk.partitions) {
      if (!partitions || partitions.includes(p.number)) consider(p.path, p);
    }
  } else {
    consider(path, usage);
  }
  if (problems.length > 0 && !allowMounted) {
    throw new RescueError(
      'E_SOURCE_MOUNTED',
      `Cannot back up ${path} consistently: ${problems.join('; ')}`,
      'Unmount it (or remount it read-only) first — from the rescue system nothing needs to be mounted. ' +
        'To take the risk of a torn copy anyway, pass --allow-mounted.',
      { problems },
    );
  }
  const device = usage.disk;
  const facts: SourceFacts = device
    ? { kind: 'device', model: device.model, serial: device.serial, transport: device.transport }
    : { kind: 'image' };
  return { problems, facts };
}

export interface SourceDisk {
  index: number;
  spec: BackupSourceSpec;
  src: FileSource;
  table: PartitionTable;
  regions: PlannedRegion[];
  facts: SourceFacts;
}

export function manifestDisk(d: SourceDisk) {
  return {
    index: d.index,
    source: {
      path: d.spec.path,
      kind: d.facts.kind,
      model: d.facts.model,
      serial: d.facts.serial,
      size: d.src.size,
      sectorSize: d.table.sectorSize,
      physicalSectorSize: d.src.physicalSectorSize,
      transport: d.facts.transport,
    },
    table: d.table,
    regions: d.regions.map((r) => ({
      id: r.id,
      kind: r.kind,
      start: r.start,
      size: r.size,
      ...(r.partition !== undefined ? { partition: r.partition } : {}),
      ...(r.fs ? { fs: r.fs } : {}),
      usedMethod: r.usedMethod,
      reason: r.reason ?? null,
      usedBytes: r.usedBytes,
      usedMap: encodeUsedMap(r.extents),
    })),
  };
}
