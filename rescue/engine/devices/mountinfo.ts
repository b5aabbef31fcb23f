/**
 * Pure parsers for the kernel's /proc text about mounts. The kernel escapes space, tab, newline and
 * backslash in paths as three-digit octal (\040, \011, \012, \134) so that fields stay
 * whitespace-separated; we undo that after splitting.
 */

/** One line of /proc/<pid>/mountinfo (see proc(5)). */
export interface MountEntry {
  mountId: number;
  parentId: number;
  /** st_dev of the mounted filesystem; for block-device filesystems the device itself (btrfs: anonymous 0:N). */
  major: number;
  minor: number;
  /** The directory inside the filesystem that is mounted here (not "/" for bind mounts of a subtree). */
  root: string;
  mountPoint: string;
  /** Per-mount options (ro/rw, nosuid, relatime …). */
  options: string[];
  /** shared:N, master:N, propagate_from:N, unbindable. */
  optionalFields: string[];
  fsType: string;
  /** What was mounted: a device path, or anything the filesystem accepts ("tmpfs", "server:/export"). */
  source: string;
  /** Options of the filesystem instance (superblock), shared by all its mounts. */
  superOptions: string[];
  /** The mount is read-only (the per-mount flag; a superblock "ro" counts too). */
  readOnly: boolean;
}

/** Undoes the kernel's octal escapes (\040 → space). Other backslashes stay as they are. */
export function unescapeProcField(field: string): string {
  return field.replace(/\\([0-3][0-7]{2})/g, (_, oct: string) =>
    String.fromCharCode(Number.parseInt(oct, 8)),
  );
}

const MIN_FIELDS_BEFORE_SEPARATOR = 6;

/**
 * Parses /proc/self/mountinfo. Lines that do not have the documented shape are skipped rather than
 * guessed at: the caller treats an unknown device as "not known to be mounted" and the exclusive-open
 * check in discovery is the backstop.
 */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', MIN_FIELDS_BEFORE_SEPARATOR);
    if (sep < 0 || f.length < sep + 3) continue;
    const mountId = Number(f[0]);
    const parentId = Number(f[1]);
    const dev = /^(\d+):(\d+)$/.exec(f[2]);
    if (!Number.isInteger(mountId) || !Number.isInteger(parentId) || !dev) continue;
    const options = f[5].split(',').filter((o) => o !== '');
    // Super options may be absent on very old kernels; the field after the source is optional here.
    const superOptions = (f[sep + 3] ?? '').split(',').filter((o) => o !== '');
    out.push({
      mountId,
      parentId,
      major: Number(dev[1]),
      minor: Number(dev[2]),
      root: unescapeProcField(f[3]),
      mountPoint: unescapeProcField(f[4]),
      options,
      optionalFields: f.slice(6, sep),
      fsType: unescapeProcField(f[sep + 1]),
      source: unescapeProcField(f[sep + 2]),
      superOptions,
      readOnly: options.includes('ro') || superOptions.includes('ro'),
    });
  }
  return out;
}

/** One active swap area from /proc/swaps. */
export interface SwapEntry {
  /** The device or file, as the kernel names it (unescaped); may end in " (deleted)" for a removed file. */
  path: string;
  /** "partition" (any block device) or "file". */
  type: string;
  size: number;
  used: number;
  priority: number;
}

const KIB = 1024;

/**
 * Parses /proc/swaps: a header line, then "Filename Type Size Used Priority" with sizes in KiB.
 * The file name is escaped like mountinfo paths, so splitting on whitespace is safe.
 */
export function parseProcSwaps(text: string): SwapEntry[] {
  const out: SwapEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || f[0] === 'Filename') continue;
    // A deleted swap file is shown as "/path\040(deleted)"; the escapes keep it one field.
    const [size, used, priority] = [Number(f[2]), Number(f[3]), Number(f[4])];
    if (!Number.isInteger(size) || !Number.isInteger(used) || !Number.isInteger(priority)) continue;
    out.push({ path: unescapeProcField(f[0]), type: f[1], size: size * KIB, used: used * KIB, priority });
  }
  return out;
}
