/**
 * The edit-partitions planner on random tables (fast-check) and on hand-made cases. The strongest
 * oracle is independent of the planner: every plan is serialised by the partition-table writer
 * (which refuses overlaps and partitions outside the disk) and read back by the table reader.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRescueError, type RescueError } from '../../rescue/engine/errors.ts';
import type { FsIdentity, FsType } from '../../rescue/engine/filesystems/types.ts';
import type { ManifestRegion } from '../../rescue/engine/image/types.ts';
import { readPartitionTable } from '../../rescue/engine/partitions/table.ts';
import type { Partition, PartitionTable } from '../../rescue/engine/partitions/types.ts';
import { serializePartitionTable } from '../../rescue/engine/partitions/write.ts';
import {
  describePlan,
  type EditOptions,
  type LayoutInput,
  type LayoutPlan,
  MiB,
  parseLayoutSpec,
  planLayout,
  type ResizeAbility,
  usableRange,
} from '../../rescue/engine/resize/layout.ts';
import { SparseMemorySource } from '../fixtures/partitions.ts';

const GPT_LINUX = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const GPT_SWAP = '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F';

/** What fs-resize promises, as a table: ext and NTFS both ways, FAT both ways, the rest neither. */
function support(fs: FsIdentity | undefined): ResizeAbility {
  switch (fs?.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
    case 'ntfs':
    case 'vfat':
      return { grow: true, shrink: true };
    case 'exfat':
      return { grow: false, shrink: false, why: 'exFAT cannot be resized' };
    default:
      return { grow: false, shrink: false, why: `${fs?.type ?? 'no filesystem'} cannot be resized` };
  }
}

let guidCounter = 0;
const ids = {
  guid: () => `00000000-0000-4000-8000-${(++guidCounter).toString(16).padStart(12, '0')}`.toUpperCase(),
  signature: () => (0x10000000 + ++guidCounter).toString(16),
};

interface Disk {
  table: PartitionTable;
  regions: ManifestRegion[];
  size: number;
  minimums: Map<number, number>;
}

const FS_TYPES: FsType[] = ['ext4', 'ntfs', 'vfat', 'exfat', 'swap', 'unknown'];

/** A random GPT or MBR disk (with logical partitions sometimes), its regions and minimums. */
const diskArb: fc.Arbitrary<Disk> = fc
  .record({
    gpt: fc.boolean(),
    ss: fc.constantFrom(512, 4096),
    firstSectors: fc.constantFrom(34, 63, 2048, 4096),
    parts: fc.array(
      fc.record({
        sizeSectors: fc.integer({ min: 64, max: 300_000 }),
        gap: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5000 })),
        ebrGap: fc.constantFrom(1, 63, 2048),
        fsType: fc.constantFrom(...FS_TYPES),
        fsFraction: fc.oneof(fc.constant(1), fc.double({ min: 0.3, max: 1, noNaN: true })),
        minFraction: fc.double({ min: 0.01, max: 1.2, noNaN: true }),
        allocation: fc.boolean(),
      }),
      { minLength: 1, maxLength: 7 },
    ),
    primariesBeforeExtended: fc.integer({ min: 0, max: 3 }),
    slack: fc.integer({ min: 0, max: 100_000 }),
  })
  .map((g) => {
    const ss = g.ss;
    const sectorBytes = (n: number) => n * ss;
    const table: PartitionTable = {
      kind: g.gpt ? 'gpt' : 'mbr',
      sectorSize: ss,
      diskId: g.gpt ? ids.guid() : '1234abcd',
      partitions: [],
      findings: [],
    };
    const regions: ManifestRegion[] = [];
    const minimums = new Map<number, number>();
    const firstUsable = g.gpt ? (ss === 512 ? 34 : 6) : 1;
    let cursor = Math.max(g.firstSectors, firstUsable);
    const useLogicals = !g.gpt && g.parts.length > Math.min(4, g.primariesBeforeExtended + 1);
    const primaryCount = useLogicals ? Math.min(g.primariesBeforeExtended, 3) : g.parts.length;
    let extended: Partition | undefined;
    let logicalNo = 5;
    for (const [i, gp] of g.parts.entries()) {
      const logical = !g.gpt && useLogicals && i >= primaryCount;
      if (logical && !extended) {
        extended = {
          number: primaryCount + 1,
          start: sectorBytes(cursor + gp.gap),
          size: 0,
          type: '5',
          typeName: 'Extended',
          kind: 'extended',
        };
        cursor += gp.gap;
      }
      let start = cursor + (logical ? 0 : gp.gap);
      let ebrStart: number | undefined;
      if (logical) {
        ebrStart =
          extended!.start === sectorBytes(cursor) && logicalNo === 5 ? extended!.start : sectorBytes(start);
        if (logicalNo !== 5) ebrStart = sectorBytes(cursor + gp.gap);
        start = ebrStart / ss + gp.ebrGap;
      }
      const number = g.gpt ? i + 1 : logical ? logicalNo++ : i + 1;
      const p: Partition = {
        number,
        start: sectorBytes(start),
        size: sectorBytes(gp.sizeSectors),
        type: g.gpt ? (gp.fsType === 'swap' ? GPT_SWAP : GPT_LINUX) : gp.fsType === 'swap' ? '82' : '83',
        typeName: '',
        kind: g.gpt ? 'gpt' : logical ? 'logical' : 'primary',
        ...(g.gpt ? { uuid: ids.guid(), name: `p${number}` } : {}),
        ...(logical ? { ebrStart } : {}),
      };
      table.partitions.push(p);
      cursor = start + gp.sizeSectors;
      const fsSize = Math.max(ss, Math.floor((p.size * gp.fsFraction) / ss) * ss);
      const allocation = gp.allocation && gp.fsType !== 'unknown';
      regions.push({
        id: i + 1,
        kind: 'partition',
        start: p.start,
        size: p.size,
        partition: number,
        fs: { type: gp.fsType, size: fsSize, label: `L${number}` },
        usedMethod: allocation ? 'allocation' : 'sector-by-sector',
        usedBytes: allocation ? Math.floor(fsSize / 3) : p.size,
      });
      if (allocation && support({ type: gp.fsType }).shrink)
        minimums.set(number, Math.max(ss, Math.floor(fsSize * gp.minFraction)));
    }
    if (extended) {
      extended.size = sectorBytes(cursor) - extended.start;
      table.partitions.push(extended);
    }
    const tail = g.gpt ? (ss === 512 ? 33 : 5) : 0;
    const size = sectorBytes(cursor + tail + g.slack);
    if (g.gpt) {
      table.gpt = {
        firstUsableLba: firstUsable,
        lastUsableLba: size / ss - tail - 1,
        entriesLba: 2,
        entryCount: 128,
        entrySize: 128,
        backupHeaderLba: size / ss - 1,
      };
    }
    table.partitions.sort((a, b) => a.number - b.number);
    return { table, regions, size, minimums };
  });

const editArb = (disk: Disk): fc.Arbitrary<EditOptions> =>
  fc.oneof(
    fc.record({ mode: fc.constantFrom('copy', 'fill', 'shrink'), align: fc.boolean(), newIds: fc.boolean() }),
    fc
      .array(
        fc.record({
          which: fc.nat(),
          size: fc.oneof(
            fc.constantFrom('fill', 'min', 'keep'),
            fc.integer({ min: 1, max: 400 }).map((m) => `${m}M`),
          ),
        }),
        { minLength: 1, maxLength: 4 },
      )
      .map((entries) => {
        const numbers = disk.table.partitions.filter((p) => p.kind !== 'extended').map((p) => p.number);
        const seen = new Set<number>();
        const spec = entries
          .map((e) => ({ n: numbers[e.which % numbers.length], size: e.size }))
          .filter((e) => {
            if (seen.has(e.n)) return false;
            seen.add(e.n);
            return true;
          })
          .map((e) => `${e.n}=${e.size}`)
          .join(',');
        return { mode: 'layout' as const, layout: spec, align: entries.length % 2 === 0 };
      }),
  );

const EXPECTED_REFUSALS = [
  'E_TARGET_TOO_SMALL',
  'E_SHRINK_DOES_NOT_FIT',
  'E_LAYOUT_INVALID',
  'E_LAYOUT_TOO_SMALL',
];

function input(disk: Disk, targetSize: number, edit: EditOptions): LayoutInput {
  return {
    table: structuredClone(disk.table),
    regions: disk.regions,
    targetSize,
    edit,
    support,
    minimums: disk.minimums,
    ids,
    target: 'target.img',
  };
}

function tryPlan(inp: LayoutInput): LayoutPlan | RescueError {
  try {
    return planLayout(inp);
  } catch (e) {
    if (isRescueError(e)) return e;
    throw e;
  }
}

/** Writes the plan's table with the real writer into a sparse disk and reads it back. */
async function roundTrip(plan: LayoutPlan, targetSize: number): Promise<PartitionTable> {
  const writes = serializePartitionTable(plan.table, targetSize);
  const regions = new Map<number, Buffer>();
  for (const w of writes) regions.set(w.offset, Buffer.from(w.bytes));
  const src = new SparseMemorySource(targetSize, regions, plan.table.sectorSize);
  return readPartitionTable(src, { sectorSize: plan.table.sectorSize });
}

function checkInvariants(disk: Disk, inp: LayoutInput, plan: LayoutPlan): void {
  const ss = disk.table.sectorSize;
  const usable = usableRange(disk.table, inp.targetSize);
  const data = plan.table.partitions.filter((p) => p.kind !== 'extended').sort((a, b) => a.start - b.start);
  expect(data.length).toBe(disk.table.partitions.filter((p) => p.kind !== 'extended').length);
  for (const [i, p] of data.entries()) {
    expect(p.start % ss).toBe(0);
    expect(p.size % ss).toBe(0);
    expect(p.start).toBeGreaterThanOrEqual(usable.start);
    expect(p.start + p.size).toBeLessThanOrEqual(usable.end);
    if (i > 0) expect(p.start).toBeGreaterThanOrEqual(data[i - 1].start + data[i - 1].size);
    if (p.kind === 'logical') {
      expect(p.ebrStart).toBeDefined();
      expect(p.ebrStart!).toBeLessThan(p.start);
      if (i > 0) expect(p.ebrStart!).toBeGreaterThanOrEqual(data[i - 1].start + data[i - 1].size);
    }
  }
  for (const pp of plan.partitions) {
    const region = disk.regions.find((r) => r.partition === pp.partition)!;
    const fsNow =
      region.usedMethod === 'allocation'
        ? Math.min(region.size, Math.ceil(region.fs!.size! / ss) * ss)
        : region.size;
    expect(pp.oldFsSize).toBe(fsNow);
    // Never smaller than the filesystem that goes in it; never below the filesystem's minimum.
    expect(pp.newSize).toBeGreaterThanOrEqual(pp.fsSize);
    if (pp.action === 'shrink') {
      expect(support(region.fs).shrink).toBe(true);
      expect(pp.fsSize).toBeGreaterThanOrEqual(disk.minimums.get(pp.partition)!);
      expect(pp.fsSize).toBeLessThan(fsNow);
    } else if (pp.action === 'grow') {
      expect(support(region.fs).grow).toBe(true);
      expect(['fill', 'layout']).toContain(inp.edit.mode);
      expect(pp.fsSize).toBe(pp.newSize);
    } else {
      expect(pp.fsSize).toBe(fsNow);
    }
    if (inp.edit.align) {
      expect(pp.newStart % MiB).toBe(0);
      expect(pp.newSize % MiB).toBe(0);
    }
    const p = plan.table.partitions.find((x) => x.number === pp.partition)!;
    expect([p.start, p.size]).toEqual([pp.newStart, pp.newSize]);
  }
  if (inp.edit.newIds) {
    expect(plan.table.diskId).not.toBe(disk.table.diskId);
    if (plan.table.kind === 'gpt') {
      const old = new Set(disk.table.partitions.map((p) => p.uuid));
      for (const p of plan.table.partitions) expect(old.has(p.uuid)).toBe(false);
    }
  } else {
    expect(plan.table.diskId).toBe(disk.table.diskId);
  }
}

describe('layout planner: properties', () => {
  it('every plan is writable, read back identical, inside the disk, non-overlapping, aligned when asked; refusals are the documented ones', async () => {
    await fc.assert(
      fc.asyncProperty(
        diskArb.chain((disk) =>
          fc.tuple(fc.constant(disk), editArb(disk), fc.double({ min: 0.15, max: 3, noNaN: true })),
        ),
        async ([disk, edit, factor]) => {
          const ss = disk.table.sectorSize;
          const targetSize = Math.max(64 * ss, Math.floor((disk.size * factor) / ss) * ss);
          const inp = input(disk, targetSize, edit);
          const plan = tryPlan(inp);
          if (isRescueError(plan)) {
            expect(EXPECTED_REFUSALS, plan.message).toContain(plan.code);
            return;
          }
          checkInvariants(disk, inp, plan);
          const back = await roundTrip(plan, targetSize);
          const want = plan.table.partitions
            .map((p) => ({ number: p.number, start: p.start, size: p.size, kind: p.kind }))
            .sort((a, b) => a.number - b.number);
          expect(
            back.partitions.map((p) => ({ number: p.number, start: p.start, size: p.size, kind: p.kind })),
          ).toEqual(want);
          expect(back.findings.filter((f) => f.severity === 'error')).toEqual([]);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('copy onto a disk of the same size reproduces the table exactly', () => {
    fc.assert(
      fc.property(diskArb, (disk) => {
        const plan = planLayout(input(disk, disk.size, { mode: 'copy' }));
        expect(plan.table.partitions).toEqual(disk.table.partitions);
        expect(plan.partitions.every((p) => p.action === 'none')).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('"missing" is exact: a target that many bytes larger fits, one sector less does not', () => {
    fc.assert(
      fc.property(
        diskArb,
        fc.constantFrom<EditOptions['mode']>('copy', 'shrink'),
        fc.boolean(),
        fc.double({ min: 0.1, max: 0.95, noNaN: true }),
        (disk, mode, align, factor) => {
          const ss = disk.table.sectorSize;
          const targetSize = Math.max(64 * ss, Math.floor((disk.size * factor) / ss) * ss);
          const edit: EditOptions = { mode, align };
          const r = tryPlan(input(disk, targetSize, edit));
          if (!isRescueError(r)) return;
          expect(r.code).toBe(mode === 'copy' ? 'E_TARGET_TOO_SMALL' : 'E_SHRINK_DOES_NOT_FIT');
          const need = (r.details as { need: number }).need;
          expect(need).toBeGreaterThan(targetSize);
          if (mode === 'shrink') expect((r.details as { missing: number }).missing).toBe(need - targetSize);
          expect(isRescueError(tryPlan(input(disk, need, edit)))).toBe(false);
          expect(isRescueError(tryPlan(input(disk, need - ss, edit)))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('fill never makes a partition smaller than copy does and leaves less than one unit per partition unused', () => {
    fc.assert(
      fc.property(
        diskArb,
        fc.double({ min: 1, max: 3, noNaN: true }),
        fc.boolean(),
        (disk, factor, align) => {
          const ss = disk.table.sectorSize;
          const targetSize = Math.floor((disk.size * factor) / ss) * ss;
          const copy = tryPlan(input(disk, targetSize, { mode: 'copy', align }));
          const fill = tryPlan(input(disk, targetSize, { mode: 'fill', align }));
          // Alignment may need more room than the source had; then both refuse alike.
          if (isRescueError(copy) || isRescueError(fill)) {
            expect(align).toBe(true);
            expect(isRescueError(copy) && isRescueError(fill) && copy.code === fill.code).toBe(true);
            return;
          }
          for (const [i, p] of fill.partitions.entries()) {
            expect(p.newSize).toBeGreaterThanOrEqual(copy.partitions[i].newSize);
            if (p.newSize > copy.partitions[i].newSize) expect(p.action).toBe('grow');
          }
          const growable = fill.partitions.filter((p) => {
            const r = disk.regions.find((x) => x.partition === p.partition)!;
            return r.usedMethod === 'allocation' && support(r.fs).grow;
          });
          if (growable.length > 0) {
            const end = Math.max(...fill.partitions.map((p) => p.newStart + p.newSize));
            // Sizes the planner chooses are whole MiB, aligned or not.
            expect(fill.usable.end - end).toBeLessThan(MiB * (fill.partitions.length + 1));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('shrink keeps the order of the partitions and never grows one', () => {
    fc.assert(
      fc.property(diskArb, fc.double({ min: 0.2, max: 1, noNaN: true }), (disk, factor) => {
        const ss = disk.table.sectorSize;
        const targetSize = Math.max(64 * ss, Math.floor((disk.size * factor) / ss) * ss);
        const plan = tryPlan(input(disk, targetSize, { mode: 'shrink' }));
        if (isRescueError(plan)) return;
        const byOld = [...plan.partitions].sort((a, b) => a.oldStart - b.oldStart);
        const byNew = [...plan.partitions].sort((a, b) => a.newStart - b.newStart);
        expect(byNew.map((p) => p.partition)).toEqual(byOld.map((p) => p.partition));
        for (const p of plan.partitions) expect(p.newSize).toBeLessThanOrEqual(p.oldSize);
      }),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------------------------------------

function gptDisk(parts: { mib: number; fs: FsType; fsMib?: number; min?: number }[], gapMib = 0): Disk {
  let start = MiB;
  const table: PartitionTable = {
    kind: 'gpt',
    sectorSize: 512,
    diskId: ids.guid(),
    partitions: [],
    findings: [],
  };
  const regions: ManifestRegion[] = [];
  const minimums = new Map<number, number>();
  for (const [i, p] of parts.entries()) {
    const size = p.mib * MiB;
    table.partitions.push({
      number: i + 1,
      start,
      size,
      type: GPT_LINUX,
      typeName: '',
      kind: 'gpt',
      uuid: ids.guid(),
      name: '',
    });
    regions.push({
      id: i + 1,
      kind: 'partition',
      start,
      size,
      partition: i + 1,
      fs: { type: p.fs, size: (p.fsMib ?? p.mib) * MiB },
      usedMethod: p.fs === 'unknown' ? 'sector-by-sector' : 'allocation',
      usedBytes: size / 4,
    });
    if (p.min !== undefined) minimums.set(i + 1, p.min * MiB);
    start += size + gapMib * MiB;
  }
  return { table, regions, size: start + MiB, minimums };
}

describe('layout planner: cases', () => {
  it('fill spreads the new space over ext4 and NTFS in proportion; swap and exFAT keep their size and the plan says why', () => {
    const disk = gptDisk([
      { mib: 100, fs: 'vfat' },
      { mib: 200, fs: 'ext4', fsMib: 150 },
      { mib: 64, fs: 'swap' },
      { mib: 300, fs: 'ntfs' },
      { mib: 50, fs: 'exfat' },
    ]);
    const target = disk.size + 716 * MiB;
    const plan = planLayout(input(disk, target, { mode: 'fill', align: true }));
    const got = plan.partitions.map((p) => [p.partition, p.newSize / MiB, p.action]);
    // 716 whole MiB (the GPT tail takes part of the 717th) over 100 + 200 + 300 MiB: 1/6, 2/6,
    // 3/6 is 119.3, 238.7, 358; the MiB rounding leaves goes to partition 2, which lost most.
    expect(got).toEqual([
      [1, 100 + 119, 'grow'],
      [2, 200 + 239, 'grow'],
      [3, 64, 'move'],
      [4, 300 + 358, 'grow'],
      [5, 50, 'move'],
    ]);
    expect(plan.partitions[1].fsSize).toBe(439 * MiB);
    expect(plan.notes.join('\n')).toMatch(/partition 3 keeps its size: swap cannot be resized/);
    expect(plan.notes.join('\n')).toMatch(/partition 5 keeps its size: exFAT cannot be resized/);
    const lines = describePlan(plan);
    expect(lines[1]).toBe(
      'partition 2 (ext4): 200.0 MiB → 439.0 MiB, filesystem grown to 439.0 MiB, moved from 101.0 MiB to 220.0 MiB',
    );
    expect(lines[2]).toBe('partition 3 (swap): 64.0 MiB, moved from 301.0 MiB to 659.0 MiB');
  });

  it('shrink: proportional, never below a minimum, partitions moved down, and the missing bytes when even minimums do not fit', () => {
    const disk = gptDisk(
      [
        { mib: 100, fs: 'vfat', min: 10 },
        { mib: 400, fs: 'ext4', min: 300 },
        { mib: 16, fs: 'unknown' },
        { mib: 484, fs: 'ntfs', min: 50 },
      ],
      1,
    );
    // 1 MiB lead + 1000 MiB of partitions + 3 MiB of gaps + 1 MiB tail; target: 500 MiB.
    const plan = planLayout(input(disk, 500 * MiB, { mode: 'shrink', align: true }));
    const sizes = plan.partitions.map((p) => p.newSize / MiB);
    expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(498);
    expect(sizes[1]).toBeGreaterThanOrEqual(300);
    expect(sizes[2]).toBe(16);
    expect(plan.partitions.map((p) => p.action)).toEqual(['shrink', 'shrink', 'move', 'shrink']);
    // ext4 hits its minimum; FAT and NTFS share the rest in proportion to 100 : 484.
    expect(sizes[1]).toBe(300);
    expect(Math.abs(sizes[3] / sizes[0] - 4.84)).toBeLessThan(0.1);
    // Packed: each partition starts where the previous ended.
    for (let i = 1; i < plan.partitions.length; i++)
      expect(plan.partitions[i].newStart).toBe(
        plan.partitions[i - 1].newStart + plan.partitions[i - 1].newSize,
      );
    expect(plan.notes.join('\n')).toMatch(/partition 3 keeps its size/);

    // Minimums 10 + 300 + 50, 16 fixed, 1 MiB before and 33 sectors after: 377 MiB + 33 sectors.
    const refused = tryPlan(input(disk, 300 * MiB, { mode: 'shrink', align: true })) as RescueError;
    expect(refused.code).toBe('E_SHRINK_DOES_NOT_FIT');
    const missing = 377 * MiB + 33 * 512 - 300 * MiB;
    expect(refused.details).toMatchObject({ missing, need: 300 * MiB + missing });
    expect(refused.message).toContain(`${missing} bytes (77.0 MiB) are missing`);
    expect(refused.message).toMatch(
      /partitions that keep their size: 3 \(16\.0 MiB: it is copied sector by sector/,
    );
  });

  it('shrink is a copy when the disk fits as it is', () => {
    const disk = gptDisk([{ mib: 100, fs: 'ext4', min: 10 }]);
    const plan = planLayout(input(disk, disk.size, { mode: 'shrink' }));
    expect(plan.partitions[0].action).toBe('none');
    expect(plan.notes).toContain('the disk fits without shrinking: partitions are copied as they are');
  });

  it('copy shortens only the last partition, and only down to its filesystem', () => {
    const disk = gptDisk([
      { mib: 100, fs: 'ext4' },
      { mib: 200, fs: 'ntfs', fsMib: 120 },
    ]);
    const plan = planLayout(input(disk, 250 * MiB, { mode: 'copy' }));
    expect(plan.partitions.map((p) => p.action)).toEqual(['none', 'none']);
    // 250 MiB less 101 MiB before it and the GPT's 33 sectors after it, in whole MiB.
    expect(plan.partitions[1].newSize).toBe(148 * MiB);
    const refused = tryPlan(input(disk, 200 * MiB, { mode: 'copy' })) as RescueError;
    expect(refused.code).toBe('E_TARGET_TOO_SMALL');
    expect(refused.remedy).toMatch(/--shrink/);
    expect(refused.details).toMatchObject({ need: 221 * MiB + 33 * 512 });
  });

  it('align moves partitions that started at sector 63 to whole MiB (MBR with logicals)', () => {
    const ss = 512;
    const p = (
      number: number,
      start: number,
      size: number,
      kind: Partition['kind'],
      extra = {},
    ): Partition => ({
      number,
      start: start * ss,
      size: size * ss,
      type: kind === 'extended' ? '5' : '83',
      typeName: '',
      kind,
      ...extra,
    });
    const table: PartitionTable = {
      kind: 'mbr',
      sectorSize: ss,
      diskId: 'cafe0001',
      findings: [],
      partitions: [
        p(1, 63, 100_000, 'primary'),
        p(2, 100_063, 300_000, 'extended'),
        p(5, 100_126, 99_000, 'logical', { ebrStart: 100_063 * ss }),
        p(6, 199_189, 100_000, 'logical', { ebrStart: 199_126 * ss }),
      ],
    };
    const regions: ManifestRegion[] = table.partitions
      .filter((x) => x.kind !== 'extended')
      .map((x, i) => ({
        id: i + 1,
        kind: 'partition',
        start: x.start,
        size: x.size,
        partition: x.number,
        fs: { type: 'ext4', size: x.size - 2 * MiB },
        usedMethod: 'allocation',
        usedBytes: MiB,
      }));
    const disk: Disk = { table, regions, size: 400_063 * ss, minimums: new Map() };
    const plan = planLayout(input(disk, 400_063 * ss, { mode: 'copy', align: true }));
    for (const x of plan.table.partitions.filter((y) => y.kind !== 'extended')) expect(x.start % MiB).toBe(0);
    expect(plan.partitions.map((x) => x.action)).toEqual(['move', 'move', 'move']);
    const ext = plan.table.partitions.find((x) => x.kind === 'extended')!;
    expect(ext.start).toBe(plan.table.partitions.find((x) => x.number === 5)!.ebrStart);
  });

  it('manual layout: sizes, fill, min and @start honoured; bad ones refused with the reason', () => {
    const disk = gptDisk([
      { mib: 100, fs: 'vfat', min: 20 },
      { mib: 200, fs: 'ext4', min: 40 },
      { mib: 300, fs: 'ntfs', min: 60 },
      { mib: 64, fs: 'swap' },
    ]);
    const target = 2048 * MiB;
    const plan = planLayout(
      input(disk, target, { mode: 'layout', layout: '1=min, 2=500M, 3=fill, 4=keep@1900M', align: true }),
    );
    const got = plan.partitions.map((p) => [p.newStart / MiB, p.newSize / MiB, p.action]);
    expect(got).toEqual([
      [1, 20, 'shrink'],
      [21, 500, 'grow'],
      [521, 1900 - 521, 'grow'],
      [1900, 64, 'move'],
    ]);
    const refuse = (layout: string) =>
      tryPlan(input(disk, target, { mode: 'layout', layout })) as RescueError;
    expect(refuse('2=30M').code).toBe('E_LAYOUT_TOO_SMALL');
    expect(refuse('2=30M').message).toMatch(/cannot be shrunk below 40\.0 MiB/);
    expect(refuse('4=10M').message).toMatch(
      /partition 4 cannot be 10\.0 MiB: it holds 64\.0 MiB that cannot be shrunk/,
    );
    expect(refuse('9=10M').message).toMatch(/no partition 9 \(it has: 1, 2, 3, 4\)/);
    expect(refuse('2=2000M').code).toBe('E_LAYOUT_INVALID');
    expect(refuse('2=2000M').message).toMatch(/does not fit/);
    expect(refuse('2=10X').message).toMatch(/not a size/);
    expect(refuse('3=keep@10M,2=keep@500M').message).toMatch(/keep their order/);
    expect(refuse('2=keep@50M').message).toMatch(/does not fit|overlap/);
  });

  it('new ids: every GPT GUID and the MBR signature change, and nothing else', () => {
    const disk = gptDisk([
      { mib: 10, fs: 'ext4' },
      { mib: 10, fs: 'ntfs' },
    ]);
    const plan = planLayout({ ...input(disk, disk.size, { mode: 'copy', newIds: true }), ids: undefined });
    expect(plan.table.diskId).not.toBe(disk.table.diskId);
    expect(plan.table.diskId).toMatch(/^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-/);
    expect(plan.ids?.partitions.map((p) => p.old)).toEqual(disk.table.partitions.map((p) => p.uuid));
    expect(new Set(plan.table.partitions.map((p) => p.uuid)).size).toBe(2);
    expect(plan.table.partitions.map((p) => [p.start, p.size])).toEqual(
      disk.table.partitions.map((p) => [p.start, p.size]),
    );
  });

  it('parses layout specs', () => {
    expect(parseLayoutSpec('2=20G,3=fill')).toEqual([
      { partition: 2, size: 20 * 1024 ** 3 },
      { partition: 3, size: 'fill' },
    ]);
    expect(parseLayoutSpec(' 1 = 512MB @ 1M , 5=min,6=keep,7=2048s')).toEqual([
      { partition: 1, size: 512_000_000, start: MiB },
      { partition: 5, size: 'min' },
      { partition: 6, size: 'keep' },
      { partition: 7, size: MiB },
    ]);
    for (const bad of ['', '2', '2=', '=3G', '2=3Q', '0=1G', '2=1G,2=2G', '2=0', '2=1G@x'])
      expect(() => parseLayoutSpec(bad), bad).toThrow(expect.objectContaining({ code: 'E_LAYOUT_INVALID' }));
  });
});
