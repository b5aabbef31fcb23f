/**
 * Growing and shrinking filesystems in place, for restore/clone to a disk of another size
 * (`--fill`, `--shrink`), and fixing the fields inside a filesystem that record where its partition
 * starts.
 *
 *  - ext2/3/4: the filesystem's own tools. e2fsck -f -y first (it repairs what it can; exit ≥ 4 is
 *    refused), resize2fs to an exact block count (never -M: the caller chooses the size), then
 *    e2fsck -f -n must be clean and dumpe2fs must report the new block count.
 *  - NTFS: ntfsresize (its --info runs its own consistency check; a volume scheduled for chkdsk or
 *    hibernated is refused), a --no-action dry run, then the real run. ntfsresize does not write the
 *    backup boot sector at the new end ("the scheduled chkdsk will fix it"), so we do. It leaves the
 *    volume marked for chkdsk on purpose: Windows checks it once at the next boot. Verified with
 *    `ntfsresize --info --force` (consistency check + cluster accounting; --force only because of
 *    that deliberate dirty mark) and by reading the backup boot sector back.
 *  - FAT12/16/32: our own resizer (fs-fat-resize.ts explains why not fatresize), bracketed by
 *    fsck.fat: -n first, -a (repair) then -n again when the first check finds problems, -n after.
 *
 * A byte range that is not a whole file (a partition inside a disk image or a disk) is given to the
 * tools as a loop device that is detached afterwards, also on errors and aborts.
 */
import { FileSource, SliceSource } from '../devices/source.ts';
import { RescueError } from '../errors.ts';
import type { FatLayout } from '../filesystems/fat-bpb.ts';
import { checkNtfsBootSector } from '../filesystems/ntfs-boot.ts';
import type { FsIdentity } from '../filesystems/types.ts';
import {
  FAT_TYPE_CLUSTERS,
  fatUsage,
  maximumTotalSectors,
  minimumTotalSectors,
  readFatVolume,
  resizeFat,
} from './fs-fat-resize.ts';
import { setExfatPartitionStart, setFatPartitionStart, setNtfsPartitionStart } from './fs-partition-start.ts';
import { runTool, type ToolResult, tail, withDevice } from './fs-tool.ts';

/** A byte range of a regular file or block device that holds one filesystem at its first byte. */
export interface FsTarget {
  path: string;
  offset: number;
  size: number;
}

export interface ResizeSupport {
  grow: boolean;
  shrink: boolean;
  /** why not, in words */
  why?: string;
}

const MiB = 1024 * 1024;

/**
 * Safety margin added to a tool's minimum: 16 MiB (at most an eighth of the filesystem, so that
 * floppy-sized FAT volumes can still shrink) plus 1 % of the minimum. resize2fs -P is an estimate
 * that e2fsprogs itself calls approximate, and a volume filled to its last cluster cannot even grow
 * its own metadata (ext journal and inode tables, NTFS $MFT/$LogFile, a FAT directory): the first
 * boot of the restored system would fail to write. The 1 % keeps large volumes breathing; the
 * caller may of course give more.
 */
export const RESIZE_MARGIN = {
  FIXED_BYTES: 16 * MiB,
  MAX_FIXED_FRACTION_OF_SIZE: 1 / 8,
  FRACTION: 0.01,
} as const;

export function safetyMargin(minimumBytes: number, filesystemBytes: number): number {
  const fixed = Math.min(
    RESIZE_MARGIN.FIXED_BYTES,
    Math.floor(filesystemBytes * RESIZE_MARGIN.MAX_FIXED_FRACTION_OF_SIZE),
  );
  return fixed + Math.ceil(minimumBytes * RESIZE_MARGIN.FRACTION);
}

function roundUpMiB(n: number): number {
  return Math.ceil(n / MiB) * MiB;
}

function fsName(fs: FsIdentity | undefined): string {
  if (!fs) return 'the filesystem';
  const label = fs.label ? ` "${fs.label}"` : '';
  const type = fs.type === 'vfat' ? (fs.version ?? 'FAT') : fs.type === 'ntfs' ? 'NTFS' : fs.type;
  return `${type}${label}`;
}

/** What we can do with this filesystem (by fs.type/version; no I/O). */
export function resizeSupport(fs: FsIdentity | undefined): ResizeSupport {
  const no = (why: string): ResizeSupport => ({ grow: false, shrink: false, why });
  if (!fs) return no('the filesystem is unknown: it is copied sector by sector and keeps its size');
  switch (fs.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4': {
      const features = (fs.version ?? '').split(/\s+/);
      if (features.includes('bigalloc')) {
        return no(
          'resize2fs refuses ext4 with bigalloc ("has not been fully tested") and its minimum estimate is wrong for it',
        );
      }
      return { grow: true, shrink: true };
    }
    case 'ntfs': {
      if (fs.state?.hibernated === true) {
        return no(
          'Windows is hibernated on this NTFS volume (or Fast Startup saved it): boot Windows and shut it down fully, or resizing would destroy the saved session',
        );
      }
      if (fs.state?.dirty === true) {
        return no(
          'the NTFS volume is marked for a check (chkdsk): ntfsresize refuses it; run chkdsk /f in Windows first',
        );
      }
      return { grow: true, shrink: true };
    }
    case 'vfat': {
      const v = fs.version;
      if (v === 'FAT12' || v === 'FAT16') {
        const type = v === 'FAT12' ? 12 : 16;
        const max = FAT_TYPE_CLUSTERS[type].max;
        const limit = fs.blockSize
          ? ` (about ${Math.floor((max * fs.blockSize) / MiB)} MiB with its ${fs.blockSize}-byte clusters)`
          : '';
        return {
          grow: true,
          shrink: true,
          why: `${v} can only grow up to ${max} clusters${limit}: beyond that it would have to become ${type === 12 ? 'FAT16' : 'FAT32'}; maximumSize() gives the exact limit`,
        };
      }
      if (v === 'FAT32') {
        return {
          grow: true,
          shrink: true,
          why: "FAT32 cannot shrink below 65525 clusters (Microsoft's type rule; minimumSize() accounts for it)",
        };
      }
      return no(`unknown FAT variant ${v ?? '(none)'}`);
    }
    case 'exfat':
      return no(
        'no Debian tool resizes exFAT (exfatprogs has none) and rescue does not implement it yet: it keeps its size',
      );
    case 'swap':
      return no(
        'swap holds no files: re-create it with mkswap at the new size instead (keep its UUID with -U)',
      );
    case 'swsuspend':
      return no('this swap holds a hibernation image: resume and shut down that system first');
    case 'crypto_LUKS':
      return no(
        'LUKS is encrypted: its contents cannot be resized without the key (cryptsetup resize after unlocking)',
      );
    case 'BitLocker':
      return no('BitLocker is encrypted: resize it from Windows (Disk Management) or decrypt it first');
    case 'LVM2_member':
      return no('an LVM physical volume holds logical volumes: resize with pvresize/lvresize, not here');
    case 'linux_raid_member':
      return no('an md RAID member: the array, not the member, would be resized (mdadm --grow)');
    case 'jbd':
      return no('an external ext journal device has no files to move');
    default:
      return no(`${fs.type} filesystems are not resized by rescue`);
  }
}

function unsupported(fs: FsIdentity | undefined, what: string): RescueError {
  const s = resizeSupport(fs);
  return new RescueError(
    'E_RESIZE_UNSUPPORTED',
    `${fsName(fs)} cannot be ${what}: ${s.why ?? 'not supported'}`,
    'Keep the partition at least as large as the filesystem, or convert the filesystem yourself.',
  );
}

function toolFailed(tool: string, fs: FsIdentity, what: string, r: ToolResult): RescueError {
  return new RescueError(
    'E_RESIZE_FAILED',
    `${tool} failed ${what} ${fsName(fs)} (exit ${r.code}):\n${tail(r.lines)}`,
    `Read ${tool}'s message above. A size below minimumSize() is refused; otherwise check the filesystem by hand (e2fsck, chkdsk, fsck.fat) and keep the original size.`,
    { tool, exitCode: r.code },
  );
}

function beyondPartition(fs: FsIdentity, span: number, t: FsTarget): RescueError {
  return new RescueError(
    'E_FS_BEYOND_PARTITION',
    `${fsName(fs)} spans ${span} bytes but the range on ${t.path} has only ${t.size}`,
    'Give the whole range the filesystem occupies now (shrink it there first, then shrink its partition).',
  );
}

/* ------------------------------------------------------------------ ext2/3/4 */

interface ExtFacts {
  blockSize: number;
  blockCount: number;
  features: string[];
}

async function dumpe2fs(dev: string, fs: FsIdentity, signal?: AbortSignal): Promise<ExtFacts> {
  const r = await runTool('dumpe2fs', ['-h', dev], { signal });
  const field = (name: string) => {
    const line = r.lines.find((l) => l.startsWith(`${name}:`));
    return line?.slice(name.length + 1).trim();
  };
  const blockSize = Number(field('Block size'));
  const blockCount = Number(field('Block count'));
  if (
    r.code !== 0 ||
    !Number.isSafeInteger(blockSize) ||
    !Number.isSafeInteger(blockCount) ||
    blockSize <= 0
  ) {
    throw toolFailed('dumpe2fs', fs, 'to read the superblock of', r);
  }
  return { blockSize, blockCount, features: (field('Filesystem features') ?? '').split(/\s+/) };
}

/** e2fsck exit codes: 0 clean, 1 errors corrected, 2 corrected (reboot if mounted), 4 left uncorrected, 8 operational error. */
const E2FSCK_OK_MAX = 2;

async function e2fsckRepair(dev: string, fs: FsIdentity, opts: ResizeOptions): Promise<void> {
  const r = await runTool('e2fsck', ['-f', '-y', dev], opts);
  if (r.code <= E2FSCK_OK_MAX) {
    if (r.code > 0) opts.log?.(`e2fsck repaired ${fsName(fs)} before resizing it`);
    return;
  }
  if (r.code === 4 || r.code === 8 || r.code === 12) {
    throw new RescueError(
      'E_RESIZE_UNCLEAN',
      `e2fsck could not repair ${fsName(fs)} (exit ${r.code}); it is not resized:\n${tail(r.lines)}`,
      'Repair the filesystem by hand (e2fsck -f, with a backup superblock if it asks for one) and try again; without resizing, keep a partition at least as large as the filesystem.',
      { exitCode: r.code },
    );
  }
  throw toolFailed('e2fsck', fs, 'to check', r);
}

async function extMinimum(t: FsTarget, fs: FsIdentity, signal?: AbortSignal): Promise<number> {
  return withDevice(t, { acceptsFile: true, signal }, async (dev) => {
    const facts = await dumpe2fs(dev, fs, signal);
    // -f: resize2fs -P refuses a filesystem that was not unmounted cleanly ("Please run e2fsck -f
    // first"), although it only reads. Images of running systems are often like that; the resize
    // itself repairs first and re-checks the minimum.
    const r = await runTool('resize2fs', ['-f', '-P', dev], { signal });
    const m = r.lines.map((l) => /Estimated minimum size of the filesystem:\s*(\d+)/.exec(l)).find(Boolean);
    if (r.code !== 0 || !m) throw toolFailed('resize2fs -P', fs, 'to estimate the minimum of', r);
    const span = facts.blockCount * facts.blockSize;
    const min = Number(m[1]) * facts.blockSize;
    return Math.min(span, roundUpMiB(min + safetyMargin(min, span)));
  });
}

async function extResize(t: FsTarget, fs: FsIdentity, newSize: number, opts: ResizeOptions): Promise<void> {
  // Always a device: resize2fs truncates (or extends) a regular file to the new size, and the
  // range must stay what the caller gave.
  await withDevice(t, { acceptsFile: false, log: opts.log, signal: opts.signal }, async (dev) => {
    const before = await dumpe2fs(dev, fs, opts.signal);
    if (before.features.includes('bigalloc')) throw unsupported({ ...fs, version: 'bigalloc' }, 'resized');
    const span = before.blockCount * before.blockSize;
    if (span > t.size) throw beyondPartition(fs, span, t);
    await e2fsckRepair(dev, fs, opts);
    const blocks = Math.floor(newSize / before.blockSize);
    if (blocks !== before.blockCount) {
      // An explicit block count (no unit = filesystem blocks): never -M, the caller chose the size.
      const r = await runTool('resize2fs', [dev, String(blocks)], opts);
      if (r.code !== 0)
        throw toolFailed('resize2fs', fs, `to resize to ${blocks * before.blockSize} bytes`, r);
    }
    const check = await runTool('e2fsck', ['-f', '-n', dev], opts);
    if (check.code !== 0) throw toolFailed('e2fsck -f -n', fs, 'on the resized', check);
    const after = await dumpe2fs(dev, fs, opts.signal);
    if (after.blockCount !== blocks) {
      throw new RescueError(
        'E_RESIZE_FAILED',
        `resize2fs left ${fsName(fs)} at ${after.blockCount} blocks instead of ${blocks}`,
        'Check the filesystem by hand (e2fsck -f) and keep its partition at least that large.',
      );
    }
  });
}

/* ------------------------------------------------------------------ NTFS */

/** Why ntfsresize refused, when it is the volume's state rather than the request. */
function ntfsUncleanReason(lines: readonly string[]): string | undefined {
  const text = lines.join('\n');
  if (/hibernat|Metadata kept in Windows cache|unclean file system|Fast Restart/i.test(text)) {
    return 'Windows is hibernated on it or Fast Startup left it in use: boot Windows and shut it down fully (or disable Fast Startup), then try again';
  }
  if (/scheduled for check|is marked dirty|chkdsk/i.test(text)) {
    return 'it is marked for a check (chkdsk): run chkdsk /f in Windows, then try again';
  }
  if (/inconsistent|Filesystem check failed|Cluster accounting failed|corrupt/i.test(text)) {
    return 'ntfsresize found it inconsistent: run chkdsk /f in Windows, then try again';
  }
  return undefined;
}

interface NtfsInfo {
  minimum: number;
  volumeSize: number;
}

async function ntfsInfo(
  dev: string,
  fs: FsIdentity,
  opts: ResizeOptions & { force?: boolean },
): Promise<NtfsInfo> {
  const args = ['--info', '--no-progress-bar', ...(opts.force ? ['--force'] : []), dev];
  const r = await runTool('ntfsresize', args, opts);
  const num = (re: RegExp) => {
    for (const l of r.lines) {
      const m = re.exec(l);
      if (m) return Number(m[1]);
    }
    return undefined;
  };
  const minimum = num(/You might resize at (\d+) bytes/);
  const volumeSize = num(/Current volume size\s*:\s*(\d+) bytes/);
  if (r.code !== 0 || minimum === undefined || volumeSize === undefined) {
    const why = ntfsUncleanReason(r.lines);
    if (why) {
      throw new RescueError(
        'E_RESIZE_UNCLEAN',
        `ntfsresize refuses ${fsName(fs)}: ${why}.\n${tail(r.lines, 4)}`,
        'ntfsfix is no substitute for chkdsk: let Windows check the volume (chkdsk /f) and shut down fully.',
      );
    }
    throw toolFailed('ntfsresize --info', fs, 'to check', r);
  }
  return { minimum, volumeSize };
}

interface NtfsGeometry {
  bytesPerSector: number;
  clusterSize: number;
  totalSectors: number;
  /** The volume plus its backup boot sector. */
  span: number;
}

async function ntfsGeometry(path: string, offset: number, size: number): Promise<NtfsGeometry> {
  const file = await FileSource.open(path);
  try {
    const src = new SliceSource(file, offset, size);
    const check = checkNtfsBootSector(await src.read(0, 512));
    if (!check.ok) {
      throw new RescueError(
        'E_METADATA_CORRUPT',
        `NTFS boot sector on ${path} at ${offset}: ${check.why}`,
        'Run chkdsk /f in Windows or take a sector-by-sector copy.',
      );
    }
    const b = check.boot;
    return {
      bytesPerSector: b.bytesPerSector,
      clusterSize: b.clusterSize,
      totalSectors: b.totalSectors,
      span: (b.totalSectors + 1) * b.bytesPerSector,
    };
  } finally {
    await file.close();
  }
}

async function ntfsMinimum(t: FsTarget, fs: FsIdentity, signal?: AbortSignal): Promise<number> {
  const geo = await ntfsGeometry(t.path, t.offset, t.size);
  return withDevice(t, { acceptsFile: true, signal }, async (dev) => {
    const info = await ntfsInfo(dev, fs, { signal });
    return Math.min(geo.span, roundUpMiB(info.minimum + safetyMargin(info.minimum, geo.span)));
  });
}

/** Writes the backup boot sector (a copy of sector 0) after the volume and checks it reads back equal. */
async function writeNtfsBackupBoot(dev: string, fs: FsIdentity): Promise<void> {
  const src = await FileSource.open(dev, { writable: true });
  try {
    const head = await src.read(0, 512);
    const check = checkNtfsBootSector(head);
    if (!check.ok)
      throw new RescueError(
        'E_RESIZE_FAILED',
        `After ntfsresize the boot sector of ${fsName(fs)} is invalid: ${check.why}`,
        'Restore the filesystem again without resizing.',
      );
    const bps = check.boot.bytesPerSector;
    const at = check.boot.totalSectors * bps;
    if (at + bps > src.size) {
      throw new RescueError(
        'E_RESIZE_FAILED',
        `After ntfsresize ${fsName(fs)} leaves no room for its backup boot sector`,
        'Give the filesystem one more sector; this is a bug if newSize was respected.',
      );
    }
    const primary = await src.read(0, bps);
    await src.write(at, primary);
    await src.sync();
    if (!(await src.read(at, bps)).equals(primary)) {
      throw new RescueError(
        'E_RESIZE_FAILED',
        `The backup boot sector of ${fsName(fs)} did not read back`,
        'The target may be failing.',
      );
    }
  } finally {
    await src.close();
  }
}

async function ntfsResize(t: FsTarget, fs: FsIdentity, newSize: number, opts: ResizeOptions): Promise<void> {
  const geo = await ntfsGeometry(t.path, t.offset, t.size);
  // The volume must fit; its backup boot sector is rewritten inside newSize afterwards.
  if (geo.totalSectors * geo.bytesPerSector > t.size) throw beyondPartition(fs, geo.span, t);
  // ntfsresize: clusters = (bytes − one sector for the backup boot sector) / cluster size.
  const newClusters = Math.floor((newSize - geo.bytesPerSector) / geo.clusterSize);
  const spc = geo.clusterSize / geo.bytesPerSector;
  const expectedSectors = newClusters * spc;
  const resizing = newClusters !== Math.floor(geo.totalSectors / spc);
  await withDevice(t, { acceptsFile: true, log: opts.log, signal: opts.signal }, async (dev) => {
    const info = await ntfsInfo(dev, fs, opts);
    if (resizing) {
      if (newSize < info.minimum) {
        throw new RescueError(
          'E_RESIZE_FAILED',
          `${fsName(fs)} cannot shrink to ${newSize} bytes: ntfsresize's minimum is ${info.minimum} bytes`,
          'Choose at least minimumSize(); the filesystem was not changed.',
          { minimum: info.minimum },
        );
      }
      const size = ['--no-progress-bar', '--size', String(newSize), dev];
      const dry = await runTool('ntfsresize', ['--no-action', ...size], opts);
      if (dry.code !== 0)
        throw toolFailed('ntfsresize --no-action', fs, `to plan resizing to ${newSize} bytes of`, dry);
      // Answers ntfsresize's "Are you sure you want to proceed (y/[n])?"; --force is not used because
      // it would also skip the refusal of volumes scheduled for chkdsk.
      const r = await runTool('ntfsresize', size, { ...opts, input: 'y\n' });
      if (r.code !== 0 || !r.lines.some((l) => l.includes('Successfully resized NTFS'))) {
        throw toolFailed('ntfsresize', fs, `to resize to ${newSize} bytes`, r);
      }
    }
    await writeNtfsBackupBoot(dev, fs);
    const after = await ntfsGeometry(dev, 0, t.size);
    if (resizing && after.totalSectors !== expectedSectors) {
      throw new RescueError(
        'E_RESIZE_FAILED',
        `ntfsresize left ${fsName(fs)} at ${after.totalSectors} sectors instead of ${expectedSectors}`,
        'Check the volume with chkdsk /f and keep its partition at least that large.',
      );
    }
    // Its own consistency check and cluster accounting over the result; --force only because
    // ntfsresize marked the volume for chkdsk on purpose.
    await ntfsInfo(dev, fs, { ...opts, force: true });
  });
}

/* ------------------------------------------------------------------ FAT */

async function fsckFat(dev: string, args: string[], opts: ResizeOptions): Promise<ToolResult> {
  return runTool('fsck.fat', [...args, dev], opts);
}

async function fatResize(t: FsTarget, fs: FsIdentity, newSize: number, opts: ResizeOptions): Promise<void> {
  // Sizes the FAT type cannot reach are refused before anything (a repair included) touches the volume.
  const layout = await fatLayoutOf(t);
  const max = maximumTotalSectors(layout) * layout.bytesPerSector;
  if (Math.floor(newSize / layout.bytesPerSector) * layout.bytesPerSector > max) {
    throw new RescueError(
      'E_RESIZE_UNSUPPORTED',
      `${fsName(fs)} cannot grow to ${newSize} bytes: its FAT type allows at most ${max} bytes with its cluster size`,
      `Choose at most ${max} bytes for this filesystem, or re-create it as FAT32.`,
      { maximum: max },
    );
  }
  await withDevice(t, { acceptsFile: true, log: opts.log, signal: opts.signal }, async (dev) => {
    const first = await fsckFat(dev, ['-n'], opts);
    if (first.code !== 0) {
      // Like e2fsck -y for ext: repair (a dirty bit after a crash is the usual finding), then it must be clean.
      opts.log?.(`fsck.fat found problems on ${fsName(fs)}; repairing with fsck.fat -a`);
      const repair = await fsckFat(dev, ['-a', '-w'], opts);
      const again = await fsckFat(dev, ['-n'], opts);
      if (again.code !== 0) {
        throw new RescueError(
          'E_RESIZE_UNCLEAN',
          `fsck.fat could not repair ${fsName(fs)}; it is not resized:\n${tail(again.lines.length ? again.lines : repair.lines)}`,
          'Repair it by hand (fsck.fat -r, or chkdsk /f in Windows) and try again.',
        );
      }
    }
    const src = await FileSource.open(dev, { writable: true });
    try {
      await resizeFat(src, newSize, opts);
    } finally {
      await src.close();
    }
    const after = await fsckFat(dev, ['-n'], opts);
    if (after.code !== 0) throw toolFailed('fsck.fat -n', fs, 'on the resized', after);
  });
}

async function fatLayoutOf(t: FsTarget): Promise<FatLayout> {
  const file = await FileSource.open(t.path);
  try {
    return (await readFatVolume(new SliceSource(file, t.offset, t.size))).layout;
  } finally {
    await file.close();
  }
}

async function fatMinimumSize(t: FsTarget): Promise<number> {
  const file = await FileSource.open(t.path);
  try {
    const { layout, used } = await fatUsage(new SliceSource(file, t.offset, t.size));
    const exact = minimumTotalSectors(layout, used) * layout.bytesPerSector;
    const margin = Math.ceil(safetyMargin(exact, layout.volumeBytes) / layout.clusterBytes);
    const withMargin = minimumTotalSectors(layout, used, margin) * layout.bytesPerSector;
    return Math.min(layout.volumeBytes, roundUpMiB(withMargin));
  } finally {
    await file.close();
  }
}

/* ------------------------------------------------------------------ public API */

export interface ResizeOptions {
  signal?: AbortSignal;
  log?: (line: string) => void;
}

function checkSupported(fs: FsIdentity): void {
  const s = resizeSupport(fs);
  if (!s.grow && !s.shrink) throw unsupported(fs, 'resized');
}

/**
 * Smallest size in bytes the filesystem can be shrunk to, asked of its own tool (resize2fs -P,
 * ntfsresize --info; for FAT our exact count of used clusters and the type's cluster minimum),
 * plus safetyMargin() of it, rounded up to a whole MiB — but never more than the filesystem spans
 * now (it always fits its own size).
 */
export async function minimumSize(
  t: FsTarget,
  fs: FsIdentity,
  opts: { signal?: AbortSignal } = {},
): Promise<number> {
  checkSupported(fs);
  switch (fs.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return extMinimum(t, fs, opts.signal);
    case 'ntfs':
      return ntfsMinimum(t, fs, opts.signal);
    case 'vfat':
      return fatMinimumSize(t);
    default:
      throw unsupported(fs, 'resized');
  }
}

/**
 * Largest size in bytes the filesystem can grow to without changing its type or format (FAT12/16
 * cluster limits, 32-bit ext block numbers, NTFS's 2^32 − 1 clusters). Number.MAX_SAFE_INTEGER
 * when no such limit applies.
 */
export async function maximumSize(
  t: FsTarget,
  fs: FsIdentity,
  opts: { signal?: AbortSignal } = {},
): Promise<number> {
  checkSupported(fs);
  switch (fs.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return withDevice(t, { acceptsFile: true, signal: opts.signal }, async (dev) => {
        const f = await dumpe2fs(dev, fs, opts.signal);
        return f.features.includes('64bit') ? Number.MAX_SAFE_INTEGER : (2 ** 32 - 1) * f.blockSize;
      });
    case 'ntfs': {
      const geo = await ntfsGeometry(t.path, t.offset, t.size);
      return Math.min(Number.MAX_SAFE_INTEGER, (2 ** 32 - 1) * geo.clusterSize + geo.bytesPerSector);
    }
    case 'vfat': {
      const layout = await fatLayoutOf(t);
      return maximumTotalSectors(layout) * layout.bytesPerSector;
    }
    default:
      throw unsupported(fs, 'resized');
  }
}

/**
 * Grows or shrinks the filesystem in place to newSize bytes (newSize ≤ t.size; t must hold the
 * whole filesystem as it is now). Checks it first (a filesystem with errors the check cannot repair
 * is refused with E_RESIZE_UNCLEAN), resizes, checks it again (must be clean), and throws
 * RescueError 'E_RESIZE_FAILED' with the tool's last output lines on failure. The result is rounded
 * down to the filesystem's unit (ext block, NTFS cluster plus the backup boot sector, FAT sector).
 */
export async function resizeFilesystem(
  t: FsTarget,
  fs: FsIdentity,
  newSize: number,
  opts: ResizeOptions = {},
): Promise<void> {
  if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize > t.size) {
    throw new RescueError(
      'E_BAD_RANGE',
      `Cannot resize ${fsName(fs)} to ${newSize} bytes inside a range of ${t.size}`,
      'This is a bug in the caller; please report it.',
    );
  }
  if (opts.signal?.aborted)
    throw new RescueError(
      'E_CANCELLED',
      `Resizing ${fsName(fs)} was cancelled`,
      'Run it again when you want to.',
    );
  checkSupported(fs);
  opts.log?.(`resizing ${fsName(fs)} on ${t.path} at ${t.offset} to ${newSize} bytes`);
  switch (fs.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return extResize(t, fs, newSize, opts);
    case 'ntfs':
      return ntfsResize(t, fs, newSize, opts);
    case 'vfat':
      return fatResize(t, fs, newSize, opts);
    default:
      throw unsupported(fs, 'resized');
  }
}

/**
 * After a partition moved: fields inside the filesystem that record the partition's start
 * ("hidden sectors" of the NTFS boot sector AND of its backup boot sector at the volume's end;
 * FAT12/16/32 BPB hidden sectors, FAT32's backup boot sector too; exFAT's PartitionOffset +
 * boot-region checksum). No-op for ext and others. startBytes is the partition's new start on its
 * disk. A start beyond the 32-bit hidden-sectors field (2 TiB with 512-byte sectors) leaves the
 * field as it is and says so through `log`.
 */
export async function setPartitionStart(
  t: FsTarget,
  fs: FsIdentity,
  startBytes: number,
  sectorSize: number,
  opts: { log?: (line: string) => void } = {},
): Promise<void> {
  if (fs.type !== 'ntfs' && fs.type !== 'vfat' && fs.type !== 'exfat') return;
  if (
    !Number.isSafeInteger(startBytes) ||
    startBytes < 0 ||
    !(sectorSize >= 512 && sectorSize <= 4096 && (sectorSize & (sectorSize - 1)) === 0) ||
    startBytes % sectorSize !== 0
  ) {
    throw new RescueError(
      'E_BAD_RANGE',
      `Partition start ${startBytes} is not a whole number of ${sectorSize}-byte sectors`,
      'This is a bug in the caller; please report it.',
    );
  }
  const startSector = startBytes / sectorSize;
  const file = await FileSource.open(t.path, { writable: true });
  try {
    const src = new SliceSource(file, t.offset, t.size);
    const res =
      fs.type === 'ntfs'
        ? await setNtfsPartitionStart(src, startSector)
        : fs.type === 'vfat'
          ? await setFatPartitionStart(src, startSector)
          : await setExfatPartitionStart(src, startSector);
    await file.sync();
    for (const c of res.changed)
      opts.log?.(`${fsName(fs)}: partition start ${startSector} written to the ${c}`);
    for (const s of res.skipped) opts.log?.(`${fsName(fs)}: partition start not written: ${s}`);
  } finally {
    await file.close();
  }
}
