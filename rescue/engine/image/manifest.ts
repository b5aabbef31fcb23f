/**
 * Shape checks of the manifest JSON. The reader trusts nothing it parsed: every field the engine
 * uses is checked here, and the regions' used maps are decoded into lookup structures once.
 */
import { type Extent, totalBytes } from '../filesystems/extents.ts';
import {
  COMPRESSION_LEVEL,
  MAX_COMMENT_CHARS,
  type Manifest,
  type ManifestRegion,
  POINT_TYPES,
} from './types.ts';
import { decodeUsedMap, UsedLayout } from './used-map.ts';

const HEX_ID = /^[0-9a-f]{32}$/;
const KINDS = ['disk', 'partition', 'system'];
const MAX_U32 = 0xffffffff;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** The first thing wrong with a manifest, in words, or null. */
export function manifestProblem(m: unknown): string | null {
  if (!isObj(m)) return 'not a JSON object';
  if (m.format !== 1) return `format ${String(m.format)}`;
  for (const k of ['tool', 'created', 'name', 'comment'] as const)
    if (typeof m[k] !== 'string') return `${k} is not text`;
  if ([...(m.comment as string)].length > MAX_COMMENT_CHARS)
    return `the comment is longer than ${MAX_COMMENT_CHARS} characters`;
  if (!KINDS.includes(m.kind as string)) return `kind "${String(m.kind)}"`;
  const p = m.point;
  if (!isObj(p)) return 'point missing';
  if (typeof p.id !== 'string' || !HEX_ID.test(p.id)) return 'point.id';
  if (!POINT_TYPES.includes(p.type as never)) return 'point.type';
  if (!(p.parent === null || (typeof p.parent === 'string' && HEX_ID.test(p.parent)))) return 'point.parent';
  if (typeof p.chain !== 'string' || !HEX_ID.test(p.chain)) return 'point.chain';
  if (!isCount(p.sequence) || p.sequence < 1) return 'point.sequence';
  const o = m.options;
  if (!isObj(o)) return 'options missing';
  if (!(typeof o.compression === 'string' && o.compression in COMPRESSION_LEVEL))
    return 'options.compression';
  if (!isCount(o.level)) return 'options.level';
  if (typeof o.encrypted !== 'boolean') return 'options.encrypted';
  if (typeof o.sectorBySector !== 'boolean') return 'options.sectorBySector';
  if (!(o.split === null || (isCount(o.split) && o.split > 0))) return 'options.split';
  if (!isCount(o.window) || o.window === 0) return 'options.window';
  if (!Array.isArray(m.disks)) return 'disks is not a list';
  const ids = new Set<number>();
  for (const [i, d] of m.disks.entries()) {
    if (!isObj(d)) return `disk ${i} is not an object`;
    if (!isCount(d.index)) return `disk ${i}: index`;
    if (!isObj(d.source)) return `disk ${i}: source`;
    const s = d.source;
    if (typeof s.path !== 'string' || !isCount(s.size) || !isCount(s.sectorSize)) return `disk ${i}: source`;
    if (!(d.table === null || isObj(d.table))) return `disk ${i}: table`;
    if (isObj(d.table) && !Array.isArray(d.table.partitions)) return `disk ${i}: table.partitions`;
    if (!Array.isArray(d.regions)) return `disk ${i}: regions is not a list`;
    for (const [j, r] of d.regions.entries()) {
      if (!isObj(r)) return `disk ${i} region ${j} is not an object`;
      if (!isCount(r.id) || r.id >= MAX_U32) return `disk ${i} region ${j}: id`;
      if (ids.has(r.id)) return `region id ${r.id} appears twice`;
      ids.add(r.id);
      if (typeof r.kind !== 'string') return `region ${r.id}: kind`;
      if (!isCount(r.start) || !isCount(r.size)) return `region ${r.id}: start/size`;
      if (!isCount(r.start + r.size)) return `region ${r.id}: start+size`;
      if (r.usedMap !== undefined && typeof r.usedMap !== 'string') return `region ${r.id}: usedMap`;
      if (r.usedBytes !== undefined && !isCount(r.usedBytes)) return `region ${r.id}: usedBytes`;
    }
  }
  const st = m.stats;
  if (!isObj(st)) return 'stats missing';
  for (const k of ['usedBytes', 'storedBytes', 'chunks'] as const) if (!isCount(st[k])) return `stats.${k}`;
  if (typeof st.seconds !== 'number' || !(st.seconds >= 0)) return 'stats.seconds';
  return null;
}

/** A region with its used map decoded. */
export interface RegionInfo {
  region: ManifestRegion;
  diskIndex: number;
  layout: UsedLayout;
  usedBytes: number;
}

/** Decodes every region's used map (validating it) into lookup structures, by region id. */
export function regionInfos(m: Manifest, image: string): Map<number, RegionInfo> {
  const out = new Map<number, RegionInfo>();
  for (const d of m.disks) {
    for (const r of d.regions) {
      let layout: UsedLayout;
      let usedBytes: number;
      if (r.usedMap === undefined) {
        layout = UsedLayout.whole(r.size);
        usedBytes = r.size;
      } else {
        const extents: Extent[] = decodeUsedMap(r.usedMap, r.size, image);
        layout = new UsedLayout(extents, r.size);
        usedBytes = totalBytes(extents);
      }
      out.set(r.id, { region: r, diskIndex: d.index, layout, usedBytes });
    }
  }
  return out;
}
