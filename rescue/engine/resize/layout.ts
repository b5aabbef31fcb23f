/**
 * Edit partitions (manual 5.7): where each partition of a disk image goes on a target disk and how
 * large it becomes there. Pure — no I/O: restore and clone call it before the first byte is
 * written, so every refusal (does not fit, shrink impossible, bad manual layout) comes up front.
 *
 * Modes:
 *  - copy: same positions and sizes; a target smaller than the source is fine while every
 *    filesystem still fits (only the last partition may be shortened, down to its filesystem);
 *  - fill: the space left at the end of the target is added to every partition whose filesystem
 *    can grow, in proportion to its size; the others keep theirs;
 *  - shrink: when the copy does not fit, partitions are packed together and the shrinkable ones
 *    get smaller in proportion, never below their filesystem's minimum;
 *  - layout: sizes (and optionally starts) given by hand, `parseLayoutSpec`.
 * `align` puts every start on a 1 MiB boundary and makes sizes whole MiB where the filesystem allows.
 *
 * One solver serves all four: each partition gets a lower and an upper bound and a weight; the
 * partitions between two fixed points (a fixed start, the end of the usable area) share the space
 * as x = clamp(k·weight, lower, upper) with the largest k that fits. Gaps between partitions are
 * kept as the source had them (packed together in shrink mode), so `copy` reproduces the source
 * table exactly.
 */
import { RescueError } from '../errors.ts';
import type { FsIdentity } from '../filesystems/types.ts';
import type { ManifestRegion } from '../image/types.ts';
import { randomGuid } from '../partitions/guid.ts';
import type { Partition, PartitionTable } from '../partitions/types.ts';

export const MiB = 1024 * 1024;
/** An MBR describes at most 2^32 sectors. */
const MBR_MAX_SECTORS = 2 ** 32;
const GPT_ENTRY_SIZE = 128;
const GPT_ENTRY_COUNT = 128;
/** GPT BIOS boot partition: GRUB's boot.img holds the sector number of the core.img inside it. */
const BIOS_BOOT_TYPE = '21686148-6449-6E6F-744E-656564454649';

export type EditMode = 'copy' | 'fill' | 'shrink' | 'layout';

/** The "Edit partitions" choices of a disk restore or clone. */
export interface EditOptions {
  mode: EditMode;
  /** Manual layout for mode 'layout' (see parseLayoutSpec). */
  layout?: string;
  /** Starts on 1 MiB boundaries, sizes in whole MiB where the filesystem allows (SSD alignment). */
  align?: boolean;
  /** New GPT disk and partition GUIDs, new MBR disk signature. */
  newIds?: boolean;
  /** Folder for the temporary copies of filesystems being shrunk (default: the system's temp folder). */
  scratch?: string;
}

/** What fs-resize's resizeSupport() says about a filesystem. */
export interface ResizeAbility {
  grow: boolean;
  shrink: boolean;
  why?: string;
}

export interface LayoutInput {
  /**
   * The table as it would be copied: kind and sector size of the target, positions of the source
   * (a system image: only its partitions; `--table mbr`: already converted).
   */
  table: PartitionTable;
  /** The disk's regions; partitions are matched to them by start. */
  regions: readonly ManifestRegion[];
  targetSize: number;
  edit: EditOptions;
  /** Whether a filesystem can grow / shrink (fs-resize's resizeSupport). */
  support: (fs: FsIdentity | undefined) => ResizeAbility;
  /** Smallest size in bytes each filesystem can be shrunk to, by partition number; others are not shrunk. */
  minimums?: ReadonlyMap<number, number>;
  /** Largest size in bytes a filesystem can grow to without changing its format (FAT16 clusters …), by partition number. */
  maximums?: ReadonlyMap<number, number>;
  /** The minimums are lower estimates (a preview or an early refusal): messages say "at least". */
  estimated?: boolean;
  sectorBySector?: boolean;
  /** Names the target in messages. */
  target?: string;
  /** New identifiers (tests pass deterministic ones). */
  ids?: { guid(): string; signature(): string };
}

export type PlannedAction = 'none' | 'grow' | 'shrink' | 'move';

export interface PlannedPartition {
  /** Number in the new table (the same as in the given table). */
  partition: number;
  kind: Partition['kind'];
  /** The region holding its data; undefined for a partition the image holds nothing of. */
  regionId?: number;
  fsType?: string;
  label?: string;
  oldStart: number;
  oldSize: number;
  newStart: number;
  newSize: number;
  /** Bytes the filesystem spans now (in the image). */
  oldFsSize: number;
  /** Bytes the filesystem will span on the target. */
  fsSize: number;
  action: PlannedAction;
  /** Why the partition keeps its size in fill/shrink mode, in words. */
  keptBecause?: string;
}

export interface LayoutPlan {
  mode: EditMode;
  align: boolean;
  table: PartitionTable;
  partitions: PlannedPartition[];
  /** Sentences for the plan shown to the person (kept sizes, unused space, boot loaders …). */
  notes: string[];
  /** Old → new identifiers when new ones were asked for. */
  ids?: { disk: { old?: string; new: string }; partitions: { number: number; old?: string; new: string }[] };
  /** The usable byte range of the target for this table. */
  usable: { start: number; end: number };
  /** Set when the copy did not fit and the plan had to change sizes or positions (shrink). */
  shrunk: boolean;
}

// ---------------------------------------------------------------------------------------------
// Manual layout spec

export interface LayoutSpecEntry {
  partition: number;
  size: number | 'fill' | 'min' | 'keep';
  start?: number;
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  s: 512,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: MiB,
  mib: MiB,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

function layoutInvalid(message: string, details?: Record<string, unknown>): RescueError {
  return new RescueError(
    'E_LAYOUT_INVALID',
    message,
    'Write the layout as N=SIZE[@START],… with N a partition number of the image, SIZE like 20G, 512M, ' +
      'fill, min or keep, and START where it begins (e.g. 2=20G,3=fill or 3=8G@30G); see docs/cli.md.',
    details,
  );
}

function parseBytes(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)([a-zA-Z]*)$/.exec(text.trim());
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw layoutInvalid(`${what}: "${text}" is not a size (examples: 20G, 512M)`);
  const n = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n)) throw layoutInvalid(`${what}: "${text}" is too large`);
  return n;
}

/**
 * "2=20G,3=fill,5=8G@30G": by partition number, a size (K/M/G/T binary, KB/MB/GB/TB decimal,
 * S sectors of 512 bytes, plain bytes), `fill` (share what is left), `min` (as small as the
 * filesystem allows) or `keep`, optionally `@START` where it begins. Partitions not named keep
 * their size; their order never changes.
 */
export function parseLayoutSpec(spec: string): LayoutSpecEntry[] {
  const out: LayoutSpecEntry[] = [];
  const items = spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (items.length === 0) throw layoutInvalid('the layout is empty');
  if (items.length > 256) throw layoutInvalid('the layout names more than 256 partitions');
  for (const item of items) {
    const m = /^(\d{1,4})\s*=\s*([^@\s]+)\s*(?:@\s*(\S+))?$/.exec(item);
    if (!m) throw layoutInvalid(`"${item}" is not N=SIZE or N=SIZE@START`);
    const partition = Number(m[1]);
    if (partition < 1) throw layoutInvalid(`"${item}": partitions are numbered from 1`);
    if (out.some((e) => e.partition === partition))
      throw layoutInvalid(`partition ${partition} is named twice in the layout`);
    const word = m[2].toLowerCase();
    const size =
      word === 'fill' || word === 'min' || word === 'keep'
        ? word
        : parseBytes(m[2], `partition ${partition}'s size`);
    if (size === 0) throw layoutInvalid(`partition ${partition}: a size of 0`);
    const entry: LayoutSpecEntry = { partition, size };
    if (m[3] !== undefined) entry.start = parseBytes(m[3], `partition ${partition}'s start`);
    out.push(entry);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Geometry

export function alignUp(n: number, unit: number): number {
  return Math.ceil(n / unit) * unit;
}
export function alignDown(n: number, unit: number): number {
  return Math.floor(n / unit) * unit;
}

/** The byte range partitions may occupy on a target of `targetSize` for this table. */
export function usableRange(table: PartitionTable, targetSize: number): { start: number; end: number } {
  const ss = table.sectorSize;
  const sectors = Math.floor(targetSize / ss);
  if (table.kind === 'gpt') {
    const maxNumber = table.partitions.reduce((m, p) => Math.max(m, p.number), 0);
    const entryCount = Math.max(table.gpt?.entryCount ?? GPT_ENTRY_COUNT, maxNumber);
    const entrySize = table.gpt?.entrySize ?? GPT_ENTRY_SIZE;
    const arraySectors = Math.ceil((entryCount * entrySize) / ss);
    const first = table.gpt?.firstUsableLba ?? 2 + arraySectors;
    // Backup header in the last sector, its entry array just before it.
    return { start: first * ss, end: Math.max(0, sectors - 1 - arraySectors) * ss };
  }
  return { start: ss, end: Math.min(sectors, MBR_MAX_SECTORS) * ss };
}

/** Bytes the filesystem of a region spans (all of the region when it is copied whole). */
export function fsSpan(r: ManifestRegion, sectorBySector: boolean): number {
  if (sectorBySector || r.usedMethod !== 'allocation' || !r.fs?.size) return r.size;
  return Math.min(r.size, r.fs.size);
}

export function formatSize(n: number): string {
  const abs = Math.abs(n);
  if (abs >= 1024 ** 4) return `${(n / 1024 ** 4).toFixed(2)} TiB`;
  if (abs >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (abs >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (abs >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

// ---------------------------------------------------------------------------------------------
// The planner

interface Item {
  p: Partition;
  region?: ManifestRegion;
  logical: boolean;
  /** Bytes the filesystem spans now, sector-rounded. */
  need: number;
  /** Size kept by copy (need-safe and unit-rounded). */
  keep: number;
  ability: ResizeAbility;
  /** Measured minimum when shrinkable (≤ need), unit-rounded up. */
  min?: number;
  /** Largest the filesystem can grow to (sector-rounded down), when limited. */
  max?: number;
  /** Source gap before the partition (from the previous partition's end, or from 0). */
  gap: number;
  /** Source distance from the EBR to a logical partition. */
  ebrGap: number;
}

interface Bounds {
  lower: number;
  upper: number;
  weight: number;
  fixedStart?: number;
}

interface Placement {
  start: number;
  size: number;
  ebr?: number;
}

/** Raised by the solver when a segment cannot hold its lower bounds; each mode words it. */
class NoFit {
  readonly missing: number;
  constructor(missing: number) {
    this.missing = missing;
  }
}

function internal(message: string): RescueError {
  return new RescueError('E_INTERNAL', `layout planner: ${message}`, 'This is a bug; please report it.');
}

export function planLayout(input: LayoutInput): LayoutPlan {
  const { table, edit } = input;
  const sbs = !!input.sectorBySector;
  if (table.kind === 'none') throw internal('a disk without a partition table has no layout to plan');
  const ss = table.sectorSize;
  const align = !!edit.align;
  const unit = align ? Math.max(MiB, ss) : ss;
  const usable = usableRange(table, input.targetSize);
  const notes: string[] = [];
  const items = buildItems(input, unit);
  const packed = { value: false };

  const solve = (bounds: Bounds[], isPacked: boolean) => place(items, bounds, usable, unit, ss, isPacked);
  const fixed = (it: Item): Bounds => ({ lower: it.keep, upper: it.keep, weight: it.keep });

  let placed: Placement[] | undefined;
  let copyMissing = 0;
  const tryCopy = (): Placement[] | undefined => {
    const all = items.map(fixed);
    try {
      return solve(all, false);
    } catch (e) {
      if (!(e instanceof NoFit)) throw e;
    }
    // Only the last partition may be shortened, and only as far as its filesystem allows.
    const last = items.length - 1;
    if (last >= 0 && items[last].region) {
      all[last] = { ...all[last], lower: alignUp(items[last].need, unit) };
      if (all[last].lower > all[last].upper) all[last].lower = all[last].upper;
    }
    try {
      const p = solve(all, false);
      if (p[last].size < items[last].keep) {
        notes.push(
          `partition ${items[last].p.number} was shortened to ${formatSize(p[last].size)} to fit the target; its filesystem (${formatSize(items[last].need)}) still fits`,
        );
      }
      return p;
    } catch (e) {
      if (!(e instanceof NoFit)) throw e;
      copyMissing = e.missing;
      return undefined;
    }
  };

  if (edit.mode === 'copy') {
    placed = tryCopy();
    if (!placed) throw copyTooSmall(input, copyMissing);
  } else if (edit.mode === 'fill') {
    placed = tryCopy();
    if (!placed) throw copyTooSmall(input, copyMissing);
    const copySized = placed.every((p, i) => p.size === items[i].keep);
    if (copySized) {
      const bounds = items.map((it): Bounds => {
        const why = growBlocker(it, sbs);
        if (why) return fixed(it);
        const upper =
          it.max === undefined ? Number.POSITIVE_INFINITY : Math.max(it.keep, alignDown(it.max, unit));
        return { lower: it.keep, upper, weight: it.keep };
      });
      placed = solve(bounds, false);
      for (const it of items) {
        const why = growBlocker(it, sbs);
        if (why) notes.push(`partition ${it.p.number} keeps its size: ${why}`);
      }
      if (!items.some((it) => !growBlocker(it, sbs)))
        notes.push('no partition here can grow: the added space stays unallocated');
    } else {
      notes.push('the target is smaller than the source: there is no unused space to add');
    }
  } else if (edit.mode === 'shrink') {
    placed = tryCopy();
    if (placed) {
      notes.push('the disk fits without shrinking: partitions are copied as they are');
    } else {
      const bounds = items.map((it): Bounds => {
        if (it.min !== undefined && it.min < it.keep)
          return { lower: it.min, upper: it.keep, weight: it.keep };
        // A partition larger than its filesystem can be shortened without touching the filesystem.
        const need = alignUp(it.need, unit);
        if (it.region && need < it.keep) return { lower: need, upper: it.keep, weight: it.keep };
        return fixed(it);
      });
      try {
        placed = solve(bounds, true);
      } catch (e) {
        if (!(e instanceof NoFit)) throw e;
        throw shrinkDoesNotFit(input, items, e.missing, sbs);
      }
      packed.value = true;
      for (const [i, it] of items.entries()) {
        if (bounds[i].lower === bounds[i].upper && placed[i].size === it.keep)
          notes.push(`partition ${it.p.number} keeps its size: ${shrinkBlocker(it, sbs, !!input.estimated)}`);
      }
    }
  } else {
    placed = planManual(input, items, unit, usable, solve);
  }

  return finish(input, items, placed, usable, unit, notes, packed.value);
}

function buildItems(input: LayoutInput, unit: number): Item[] {
  const { table } = input;
  const ss = table.sectorSize;
  const sbs = !!input.sectorBySector;
  const parts = table.partitions.filter((p) => p.kind !== 'extended').sort((a, b) => a.start - b.start);
  const items: Item[] = [];
  let prevEnd = 0;
  for (const p of parts) {
    if (p.start % ss !== 0 || p.size % ss !== 0 || p.size <= 0 || p.start < 0) {
      throw new RescueError(
        'E_TABLE_INVALID',
        `partition ${p.number} (${p.start} + ${p.size} bytes) is not in whole ${ss}-byte sectors`,
        'The image records a partition table that cannot be laid out anew; restore without editing partitions.',
      );
    }
    const region = input.regions.find((r) => r.kind === 'partition' && r.start === p.start);
    const need = region ? Math.min(p.size, alignUp(fsSpan(region, sbs), ss)) : p.size;
    const keep = alignDown(p.size, unit) >= need ? alignDown(p.size, unit) : alignUp(need, unit);
    const ability: ResizeAbility =
      !region || sbs || region.usedMethod !== 'allocation' || !region.fs
        ? {
            grow: false,
            shrink: false,
            why: !region
              ? 'the image holds nothing of it'
              : sbs
                ? 'copied sector by sector'
                : `it is copied sector by sector (${region.reason ?? 'no filesystem that can be read'})`,
          }
        : input.support(region.fs);
    let min: number | undefined;
    const measured = input.minimums?.get(p.number);
    if (ability.shrink && measured !== undefined && Number.isFinite(measured) && measured >= 0) {
      const m = alignUp(Math.max(measured, ss), unit);
      if (m < alignUp(need, unit)) min = m;
    }
    const limit = input.maximums?.get(p.number);
    const max = limit !== undefined && ability.grow ? alignDown(limit, ss) : undefined;
    const logical = p.kind === 'logical';
    const ebrGap = logical && p.ebrStart !== undefined && p.ebrStart < p.start ? p.start - p.ebrStart : ss;
    const gap = Math.max(p.start - prevEnd, logical ? ebrGap : 0);
    items.push({ p, region, logical, need, keep, ability, min, max, gap, ebrGap });
    prevEnd = Math.max(prevEnd, p.start + p.size);
  }
  return items;
}

function growBlocker(it: Item, sbs: boolean): string | undefined {
  if (!it.region) return 'the image holds nothing of it';
  if (sbs) return 'it is copied sector by sector';
  if (!it.ability.grow)
    return it.ability.why ?? `its filesystem (${it.region.fs?.type ?? 'unknown'}) cannot be grown`;
  return undefined;
}

function shrinkBlocker(it: Item, sbs: boolean, estimated: boolean): string {
  if (!it.region) return 'the image holds nothing of it';
  if (sbs) return 'it is copied sector by sector';
  if (!it.ability.shrink)
    return it.ability.why ?? `its filesystem (${it.region.fs?.type ?? 'unknown'}) cannot be shrunk`;
  if (it.min === undefined)
    return estimated ? 'its filesystem is (nearly) full' : 'its filesystem cannot get any smaller';
  return 'it is already as small as its filesystem allows';
}

/**
 * Positions for sizes chosen by `bounds`: segment by segment (a segment ends before the next fixed
 * start, or at the end of the usable range), the flexible partitions share what the fixed ones and
 * the gaps leave. Throws NoFit with the bytes missing when the lower bounds do not fit.
 */
function place(
  items: Item[],
  bounds: Bounds[],
  usable: { start: number; end: number },
  unit: number,
  ss: number,
  packed: boolean,
): Placement[] {
  const n = items.length;
  const sizes = new Array<number>(n).fill(0);
  // Overhead before each partition (from the previous end), constant because every start and
  // size is a multiple of `unit`: the first one starts where the source's first did (the boot
  // loader area before it is copied as it was), or at a fixed start.
  const lead = (i: number): number => {
    const room = items[i].logical ? (packed ? Math.max(items[i].ebrGap, unit) : items[i].ebrGap) : 0;
    return alignUp(packed ? room : Math.max(items[i].gap, room), unit);
  };
  const firstStart = n > 0 ? alignUp(Math.max(items[0].p.start, usable.start), unit) : 0;
  let segFrom = 0;
  while (segFrom < n) {
    let segTo = segFrom + 1;
    while (segTo < n && bounds[segTo].fixedStart === undefined) segTo++;
    const start =
      segFrom === 0 && bounds[0].fixedStart === undefined ? firstStart : bounds[segFrom].fixedStart!;
    let limit: number;
    if (segTo < n) {
      const next = items[segTo];
      const room = next.logical ? (packed ? Math.max(next.ebrGap, unit) : next.ebrGap) : 0;
      limit = bounds[segTo].fixedStart! - room;
    } else {
      limit = usable.end;
    }
    let overhead = 0;
    for (let i = segFrom + 1; i < segTo; i++) overhead += lead(i);
    const space = limit - start - overhead;
    const seg = bounds.slice(segFrom, segTo);
    const lower = seg.reduce((s, b) => s + b.lower, 0);
    if (lower > space) throw new NoFit(lower - space);
    const got = share(seg, space, unit);
    for (let i = segFrom; i < segTo; i++) sizes[i] = got[i - segFrom];
    segFrom = segTo;
  }
  const out: Placement[] = [];
  let prevEnd = 0;
  for (let i = 0; i < n; i++) {
    const fixedStart = bounds[i].fixedStart;
    const start = i === 0 && fixedStart === undefined ? firstStart : (fixedStart ?? prevEnd + lead(i));
    const pl: Placement = { start, size: sizes[i] };
    if (items[i].logical) {
      const ebr = Math.max(prevEnd, start - items[i].ebrGap, ss);
      if (ebr >= start) throw new NoFit(ss);
      pl.ebr = ebr;
    }
    out.push(pl);
    prevEnd = start + sizes[i];
  }
  return out;
}

/**
 * Sizes x_i = clamp(k·w_i, lower_i, upper_i), with the largest k for which they fit into `space`.
 * A size the planner chooses (strictly between its bounds) is a whole number of MiB even without
 * --align, so an aligned source stays aligned; what rounding leaves goes, a MiB at a time, to the
 * ones that lost most.
 */
function share(bounds: Bounds[], space: number, sectorOrAlign: number): number[] {
  const unit = Math.max(sectorOrAlign, MiB);
  const at = (k: number) => bounds.map((b) => Math.min(b.upper, Math.max(b.lower, k * b.weight)));
  const total = (k: number) => at(k).reduce((s, x) => s + x, 0);
  const flexible = bounds.some((b) => b.upper > b.lower);
  if (!flexible) return bounds.map((b) => b.lower);
  let lo = 0;
  let hi = 1;
  // Grow hi until it overfills or every size reaches its upper bound.
  for (let i = 0; i < 64 && total(hi) < space && bounds.some((b) => b.upper > hi * b.weight); i++) hi *= 2;
  if (total(hi) <= space) {
    lo = hi;
  } else {
    for (let i = 0; i < 100; i++) {
      const mid = (lo + hi) / 2;
      if (total(mid) <= space) lo = mid;
      else hi = mid;
    }
  }
  const ideal = at(lo);
  const sizes = ideal.map((x, i) => {
    const b = bounds[i];
    if (x >= b.upper) return b.upper;
    if (x <= b.lower) return b.lower;
    return Math.max(b.lower, alignDown(x, unit));
  });
  let left = Math.floor((space - sizes.reduce((s, x) => s + x, 0)) / unit);
  const order = sizes
    .map((x, i) => ({ i, loss: ideal[i] - x }))
    .filter(({ i }) => sizes[i] + unit <= bounds[i].upper && bounds[i].upper > bounds[i].lower)
    .sort((a, b) => b.loss - a.loss);
  // Infinite upper bounds (fill): hand every remaining unit out; finite ones: one each by loss.
  for (let round = 0; left > 0 && order.length > 0 && round < 2; round++) {
    for (const { i } of order) {
      if (left <= 0) break;
      if (sizes[i] + unit > bounds[i].upper) continue;
      if (round === 0 || bounds[i].upper === Number.POSITIVE_INFINITY) {
        const take = round === 0 ? 1 : left;
        sizes[i] += take * unit;
        left -= take;
      }
    }
  }
  return sizes;
}

function planManual(
  input: LayoutInput,
  items: Item[],
  unit: number,
  usable: { start: number; end: number },
  solve: (b: Bounds[], packed: boolean) => Placement[],
): Placement[] {
  const spec = parseLayoutSpec(input.edit.layout ?? '');
  const ss = input.table.sectorSize;
  const byNumber = new Map(items.map((it) => [it.p.number, it]));
  for (const e of spec) {
    if (!byNumber.has(e.partition)) {
      const ext = input.table.partitions.find((p) => p.number === e.partition && p.kind === 'extended');
      throw layoutInvalid(
        ext
          ? `partition ${e.partition} is the extended container; it follows its logical partitions by itself`
          : `the image has no partition ${e.partition} (it has: ${items.map((it) => it.p.number).join(', ')})`,
      );
    }
  }
  const bounds = items.map((it): Bounds => {
    const e = spec.find((x) => x.partition === it.p.number);
    const floor = it.min ?? alignUp(it.need, unit);
    const b: Bounds = { lower: it.keep, upper: it.keep, weight: it.keep };
    if (e?.start !== undefined) {
      if (e.start % unit !== 0) {
        throw layoutInvalid(
          `partition ${it.p.number} cannot start at ${e.start}: starts must be multiples of ${unit === ss ? `the ${ss}-byte sector` : '1 MiB (--align)'}`,
        );
      }
      if (e.start < usable.start || e.start >= usable.end) {
        throw layoutInvalid(
          `partition ${it.p.number} cannot start at ${formatSize(e.start)}: partitions lie between ${formatSize(usable.start)} and ${formatSize(usable.end)} of this target`,
        );
      }
      b.fixedStart = e.start;
    }
    if (!e || e.size === 'keep') return b;
    if (e.size === 'min') return { ...b, lower: floor, upper: floor };
    if (e.size === 'fill') {
      const upper =
        it.max === undefined ? Number.POSITIVE_INFINITY : Math.max(floor, alignDown(it.max, unit));
      return { ...b, lower: floor, upper, weight: it.p.size };
    }
    const asked = alignUp(e.size, ss);
    if (asked < floor) throw layoutTooSmall(input, it, asked, floor, !!input.sectorBySector);
    const size = alignDown(asked, unit) >= floor ? alignDown(asked, unit) : alignUp(asked, unit);
    return { ...b, lower: size, upper: size };
  });
  // Starts must keep the partitions' order.
  let lastFixed = -1;
  for (const [i, b] of bounds.entries()) {
    if (b.fixedStart === undefined) continue;
    if (b.fixedStart <= lastFixed) {
      throw layoutInvalid(
        `partition ${items[i].p.number} would start before a partition that comes before it; partitions keep their order`,
      );
    }
    lastFixed = b.fixedStart;
  }
  try {
    return solve(bounds, false);
  } catch (e) {
    if (!(e instanceof NoFit)) throw e;
    throw layoutInvalid(
      `the layout does not fit ${input.target ?? 'the target'}: ${formatSize(e.missing)} (${e.missing} bytes) too much, or partitions overlap a start given with @`,
      { missing: e.missing },
    );
  }
}

function layoutTooSmall(
  input: LayoutInput,
  it: Item,
  asked: number,
  floor: number,
  sbs: boolean,
): RescueError {
  const fs = it.region?.fs?.type ?? 'unknown';
  const why =
    it.min !== undefined
      ? `its ${fs} filesystem cannot be shrunk below ${formatSize(floor)}`
      : `it holds ${formatSize(it.need)} that cannot be shrunk (${shrinkBlocker(it, sbs, !!input.estimated)})`;
  return new RescueError(
    'E_LAYOUT_TOO_SMALL',
    `partition ${it.p.number} cannot be ${formatSize(asked)}: ${why}`,
    `Give partition ${it.p.number} at least ${formatSize(floor)} (or "min").`,
    { partition: it.p.number, asked, minimum: floor },
  );
}

function copyTooSmall(input: LayoutInput, missing: number): RescueError {
  const need = input.targetSize + missing;
  return new RescueError(
    'E_TARGET_TOO_SMALL',
    `${input.target ?? 'the target'} has ${input.targetSize} bytes; this disk image needs ${need} (${formatSize(missing)} more) to be copied without resizing`,
    'Choose a larger target, or add --shrink to make the filesystems smaller when their data fits.',
    { have: input.targetSize, need },
  );
}

function shrinkDoesNotFit(input: LayoutInput, items: Item[], missing: number, sbs: boolean): RescueError {
  const fixedOnes = items
    .filter((it) => it.min === undefined)
    .map((it) => `${it.p.number} (${formatSize(it.keep)}: ${shrinkBlocker(it, sbs, !!input.estimated)})`);
  const atLeast = input.estimated ? 'at least ' : '';
  return new RescueError(
    'E_SHRINK_DOES_NOT_FIT',
    `The data does not fit on ${input.target ?? 'the target'} even with every filesystem shrunk to its minimum: ` +
      `${atLeast}${missing} bytes (${formatSize(missing)}) are missing` +
      (fixedOnes.length ? `; partitions that keep their size: ${fixedOnes.join(', ')}` : ''),
    `Choose a target at least ${formatSize(input.targetSize + missing)} large, or delete data from the source and back it up again.`,
    { missing, have: input.targetSize, need: input.targetSize + missing, estimated: !!input.estimated },
  );
}

function finish(
  input: LayoutInput,
  items: Item[],
  placed: Placement[],
  usable: { start: number; end: number },
  unit: number,
  notes: string[],
  shrunk: boolean,
): LayoutPlan {
  const { table, edit } = input;
  const ss = table.sectorSize;
  const sbs = !!input.sectorBySector;
  const planned: PlannedPartition[] = [];
  const newParts: Partition[] = [];
  for (const [i, it] of items.entries()) {
    const pl = placed[i];
    const oldFsSize = it.need;
    let fsSize = Math.min(oldFsSize, pl.size);
    const growAsked = edit.mode === 'fill' || edit.mode === 'layout';
    if (pl.size > oldFsSize && growAsked && !growBlocker(it, sbs)) {
      fsSize = Math.max(oldFsSize, Math.min(pl.size, it.max ?? pl.size));
      if (fsSize < pl.size && pl.size > it.keep) {
        notes.push(
          `partition ${it.p.number}'s ${it.region?.fs?.type ?? ''} filesystem can grow only to ${formatSize(fsSize)} without changing its format; the rest of the partition stays unused`,
        );
      }
    }
    if (pl.size > oldFsSize && edit.mode === 'layout' && growBlocker(it, sbs) && pl.size > it.keep) {
      notes.push(
        `partition ${it.p.number} grows to ${formatSize(pl.size)} but keeps a ${formatSize(oldFsSize)} filesystem: ${growBlocker(it, sbs)}`,
      );
    }
    if (fsSize < oldFsSize && (it.min === undefined || fsSize < it.min))
      throw internal(`partition ${it.p.number} would be cut below what its filesystem needs`);
    const action: PlannedAction =
      fsSize > oldFsSize ? 'grow' : fsSize < oldFsSize ? 'shrink' : pl.start !== it.p.start ? 'move' : 'none';
    planned.push({
      partition: it.p.number,
      kind: it.p.kind,
      regionId: it.region?.id,
      fsType: it.region?.fs?.type,
      label: it.region?.fs?.label,
      oldStart: it.p.start,
      oldSize: it.p.size,
      newStart: pl.start,
      newSize: pl.size,
      oldFsSize,
      fsSize,
      action,
    });
    const np: Partition = { ...it.p, start: pl.start, size: pl.size };
    if (it.logical) np.ebrStart = pl.ebr;
    newParts.push(np);
    if (pl.start !== it.p.start && it.p.type.toUpperCase() === BIOS_BOOT_TYPE) {
      notes.push(
        `partition ${it.p.number} (BIOS boot) moved: GRUB's boot sector points at its old position; run grub-install on the restored disk`,
      );
    }
  }
  if (table.kind === 'mbr' && planned.some((p) => p.fsType === 'ntfs' && p.newStart !== p.oldStart)) {
    notes.push(
      'an NTFS partition moved on an MBR disk: Windows names such partitions by disk signature and offset, so a Windows on it may need its boot repaired (`bcdboot C:\\Windows` from a repair prompt)',
    );
  }
  // The extended container follows its logical partitions: from the first EBR to the last end.
  const ext = table.partitions.find((p) => p.kind === 'extended');
  if (ext) {
    const logicals = newParts.filter((p) => p.kind === 'logical');
    if (logicals.length > 0) {
      const start = Math.min(...logicals.map((p) => p.ebrStart ?? p.start - ss));
      let end = Math.max(...logicals.map((p) => p.start + p.size));
      if (edit.mode === 'copy' && ext.start + ext.size > end) {
        // Copy keeps the space the source had free inside the container, as far as the disk allows.
        const nextStart = Math.min(usable.end, ...newParts.filter((p) => p.start >= end).map((p) => p.start));
        end = Math.max(end, Math.min(ext.start + ext.size, nextStart));
      }
      newParts.push({ ...ext, start, size: end - start });
    } else if (
      edit.mode === 'copy' &&
      ext.start + ext.size <= usable.end &&
      !newParts.some((p) => p.start < ext.start + ext.size && ext.start < p.start + p.size)
    ) {
      newParts.push({ ...ext });
    } else {
      notes.push(`the empty extended partition ${ext.number} is not recreated`);
    }
  }
  newParts.sort((a, b) => a.number - b.number);
  const newTable: PartitionTable = { ...table, partitions: newParts, findings: [] };
  let ids: LayoutPlan['ids'];
  if (edit.newIds) {
    const gen = input.ids ?? { guid: randomGuid, signature: randomSignature };
    if (table.kind === 'gpt') {
      newTable.diskId = gen.guid();
      const partIds: { number: number; old?: string; new: string }[] = [];
      newTable.partitions = newTable.partitions.map((p) => {
        const id = gen.guid();
        partIds.push({ number: p.number, old: p.uuid, new: id });
        return { ...p, uuid: id };
      });
      ids = { disk: { old: table.diskId, new: newTable.diskId }, partitions: partIds };
    } else {
      let sig = gen.signature();
      for (let i = 0; i < 8 && (sig === table.diskId || /^0+$/.test(sig)); i++) sig = gen.signature();
      newTable.diskId = sig;
      ids = { disk: { old: table.diskId, new: sig }, partitions: [] };
    }
  }
  if (table.kind === 'mbr' && input.targetSize > MBR_MAX_SECTORS * ss && edit.mode === 'fill') {
    notes.push(
      `an MBR disk can use only the first ${formatSize(MBR_MAX_SECTORS * ss)} of this target; restore as GPT to use all of it`,
    );
  }
  const plan: LayoutPlan = {
    mode: edit.mode,
    align: !!edit.align,
    table: newTable,
    partitions: planned,
    notes,
    ids,
    usable,
    shrunk,
  };
  checkPlan(plan, unit);
  return plan;
}

function randomSignature(): string {
  return randomGuid().replaceAll('-', '').slice(0, 8).toLowerCase();
}

/** The promises every plan keeps; a violation is a bug of the planner, never written to a disk. */
export function checkPlan(plan: LayoutPlan, unit: number): void {
  const ss = plan.table.sectorSize;
  const spans = plan.table.partitions
    .filter((p) => p.kind !== 'extended')
    .flatMap((p) => [
      { what: `partition ${p.number}`, start: p.start, end: p.start + p.size },
      ...(p.kind === 'logical' && p.ebrStart !== undefined
        ? [{ what: `EBR of ${p.number}`, start: p.ebrStart, end: p.ebrStart + ss }]
        : []),
    ])
    .sort((a, b) => a.start - b.start);
  for (const [i, s] of spans.entries()) {
    if (s.start < plan.usable.start || s.end > plan.usable.end)
      throw internal(`${s.what} lies outside the usable range`);
    if (i > 0 && s.start < spans[i - 1].end) throw internal(`${s.what} overlaps ${spans[i - 1].what}`);
  }
  for (const p of plan.table.partitions) {
    if (p.start % ss !== 0 || p.size % ss !== 0 || p.size <= 0)
      throw internal(`partition ${p.number} is not in whole sectors`);
  }
  for (const pp of plan.partitions) {
    if (plan.align && pp.newStart % unit !== 0) throw internal(`partition ${pp.partition} is not aligned`);
    if (pp.fsSize > pp.newSize) throw internal(`partition ${pp.partition} is smaller than its filesystem`);
  }
  const ext = plan.table.partitions.find((p) => p.kind === 'extended');
  for (const p of plan.table.partitions.filter((x) => x.kind === 'logical')) {
    if (!ext || p.ebrStart === undefined || p.ebrStart < ext.start || p.start + p.size > ext.start + ext.size)
      throw internal(`logical partition ${p.number} is not inside its extended partition`);
  }
}

// ---------------------------------------------------------------------------------------------
// Words

/** One line per partition and the notes: what the person confirms before anything is written. */
export function describePlan(plan: LayoutPlan, opts: { estimated?: boolean } = {}): string[] {
  const lines: string[] = [];
  for (const p of plan.partitions) {
    const what = `partition ${p.partition}${p.fsType ? ` (${p.fsType}${p.label ? ` "${p.label}"` : ''})` : ''}`;
    const size =
      p.newSize === p.oldSize
        ? `${formatSize(p.newSize)}`
        : `${formatSize(p.oldSize)} → ${opts.estimated && p.action === 'shrink' ? '≈ ' : ''}${formatSize(p.newSize)}`;
    const parts = [`${what}: ${size}`];
    if (p.action === 'grow') parts.push(`filesystem grown to ${formatSize(p.fsSize)}`);
    if (p.action === 'shrink')
      parts.push(`filesystem shrunk from ${formatSize(p.oldFsSize)} to ${formatSize(p.fsSize)}`);
    if (p.newStart !== p.oldStart)
      parts.push(`moved from ${formatSize(p.oldStart)} to ${formatSize(p.newStart)}`);
    if (parts.length === 1 && p.newSize === p.oldSize) parts.push('unchanged');
    lines.push(parts.join(', '));
  }
  if (plan.ids) {
    lines.push(
      plan.table.kind === 'gpt'
        ? `new disk GUID ${plan.ids.disk.new} and new partition GUIDs`
        : `new disk signature ${plan.ids.disk.new} (was ${plan.ids.disk.old ?? 'none'})`,
    );
  }
  lines.push(...plan.notes);
  return lines;
}

/**
 * What new identifiers do to the systems on the disk, in words (the restore's warnings).
 * Filesystem UUIDs never change: only the table's identifiers are new.
 */
export function newIdsWarnings(kind: PartitionTable['kind']): string[] {
  if (kind === 'gpt') {
    return [
      'new disk and partition GUIDs: Windows boot entries (BCD) name the partition GUIDs, so a cloned Windows may need its boot repaired (`bcdboot C:\\Windows` from a repair prompt) unless it boots as the only disk; UEFI firmware boot entries (NVRAM) name the EFI system partition by its GUID, so add one for the new disk (efibootmgr, or the firmware menu); Linux /etc/fstab and kernel command lines that use PARTUUID= must be updated, while UUID= and LABEL= entries keep working (filesystem UUIDs are unchanged)',
    ];
  }
  return [
    'new disk signature: Windows boot entries (BCD) and drive letters name an MBR disk by its signature and the partitions by their offsets, so a cloned Windows may need its boot repaired (`bcdboot C:\\Windows` from a repair prompt) unless it boots as the only disk; Linux /etc/fstab entries by PARTUUID= (which contains the signature) must be updated, UUID= and LABEL= keep working (filesystem UUIDs are unchanged)',
  ];
}
