/**
 * Which operating system a volume holds, from the files that make it one: Windows by its registry
 * SYSTEM hive and kernel, Linux by /etc/os-release (and its fstab, which names the other
 * partitions it mounts — /boot, /boot/efi — by UUID, LABEL or PARTUUID). Also the EFI boot
 * loaders on an EFI system partition. A system backup uses these to know which partitions a
 * Windows or Linux installation needs to boot.
 */
import { isRescueError } from '../../errors.ts';
import type { VolumeFiles } from './index.ts';

export interface OsInstall {
  os: 'windows' | 'linux';
  /** "Windows", "Debian GNU/Linux 12 (bookworm)" */
  name: string;
  /** The partition id the caller gave. */
  volume: string;
  details: Record<string, string>;
}

/** Small text files only: os-release, fstab and friends are a few KiB. */
const TEXT_LIMIT = 256 * 1024;
/** Directory entries looked at under \EFI (a real ESP has a few dozen). */
const MAX_ESP_ENTRIES = 2000;

/** Absent, not a file, or too large to be what we look for: all mean "no such file" here. */
const ABSENT_CODES = ['E_FILE_NOT_FOUND', 'E_NOT_A_FILE', 'E_NOT_A_DIRECTORY', 'E_FILE_TOO_LARGE'];

async function readText(files: VolumeFiles, path: string): Promise<string | undefined> {
  try {
    return (await files.readFile(path, { maxBytes: TEXT_LIMIT })).toString('utf8');
  } catch (e) {
    if (isRescueError(e) && ABSENT_CODES.includes(e.code)) return undefined;
    throw e;
  }
}

async function isFile(files: VolumeFiles, path: string): Promise<boolean> {
  return (await files.stat(path))?.type === 'file';
}

async function isDir(files: VolumeFiles, path: string): Promise<boolean> {
  return (await files.stat(path))?.type === 'dir';
}

async function listDir(files: VolumeFiles, path: string): Promise<string[]> {
  try {
    return await files.readdir(path);
  } catch (e) {
    if (isRescueError(e) && ABSENT_CODES.includes(e.code)) return [];
    throw e;
  }
}

/**
 * os-release(5): KEY=value lines, values optionally in single or double quotes (with \" \\ \$ \`
 * escapes inside double quotes); comments and blank lines ignored.
 */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$/.exec(line);
    if (!m) continue;
    let v = m[2];
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"'))
      v = v.slice(1, -1).replace(/\\([\\"$`])/g, '$1');
    else if (v.length >= 2 && v.startsWith("'") && v.endsWith("'")) v = v.slice(1, -1);
    out[m[1]] = v;
  }
  return out;
}

export interface FstabEntry {
  /** The first field as written: UUID=…, LABEL=…, PARTUUID=…, PARTLABEL=…, /dev/… */
  spec: string;
  /** What the spec designates, with /dev/disk/by-uuid/… and friends folded into their tags. */
  source: { kind: 'UUID' | 'LABEL' | 'PARTUUID' | 'PARTLABEL' | 'ID' | 'path' | 'other'; value: string };
  mountPoint: string;
  type: string;
  options: string[];
  dump: number;
  pass: number;
}

/** fstab(5) escapes blanks and backslashes as octal: \040 is a space. */
function unescapeFstab(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

const BY_DIR: Record<string, FstabEntry['source']['kind']> = {
  'by-uuid': 'UUID',
  'by-label': 'LABEL',
  'by-partuuid': 'PARTUUID',
  'by-partlabel': 'PARTLABEL',
  'by-id': 'ID',
};

function sourceOf(spec: string): FstabEntry['source'] {
  const tag = /^(UUID|LABEL|PARTUUID|PARTLABEL|ID)=(.*)$/i.exec(spec);
  if (tag) {
    const value = tag[2].replace(/^"(.*)"$/, '$1');
    return { kind: tag[1].toUpperCase() as FstabEntry['source']['kind'], value };
  }
  const by = /^\/dev\/disk\/(by-[a-z]+)\/(.+)$/.exec(spec);
  if (by && BY_DIR[by[1]]) return { kind: BY_DIR[by[1]], value: by[2] };
  if (spec.startsWith('/')) return { kind: 'path', value: spec };
  return { kind: 'other', value: spec };
}

/** Parses /etc/fstab: one entry per non-comment line with at least a spec and a mount point. */
export function parseFstab(text: string): FstabEntry[] {
  const out: FstabEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const f = line.split(/\s+/).map(unescapeFstab);
    if (f.length < 2) continue;
    out.push({
      spec: f[0],
      source: sourceOf(f[0]),
      mountPoint: f[1],
      type: f[2] ?? 'auto',
      options: (f[3] ?? 'defaults').split(','),
      dump: Number.parseInt(f[4] ?? '0', 10) || 0,
      pass: Number.parseInt(f[5] ?? '0', 10) || 0,
    });
  }
  return out;
}

async function detectWindows(files: VolumeFiles): Promise<Omit<OsInstall, 'volume'> | undefined> {
  if (!(await isFile(files, '/Windows/System32/config/SYSTEM'))) return undefined;
  if (!(await isFile(files, '/Windows/System32/ntoskrnl.exe'))) return undefined;
  const details: Record<string, string> = { systemRoot: '\\Windows' };
  details.architecture = (await isDir(files, '/Windows/SysWOW64')) ? '64-bit' : '32-bit';
  // Boot files on the same volume: BIOS installs without a System Reserved partition keep them here.
  if (await isFile(files, '/bootmgr')) details.bootmgr = '\\bootmgr';
  if (await isFile(files, '/Boot/BCD')) details.bcd = '\\Boot\\BCD';
  return { os: 'windows', name: 'Windows', details };
}

async function detectLinux(files: VolumeFiles): Promise<Omit<OsInstall, 'volume'> | undefined> {
  const details: Record<string, string> = {};
  let name: string | undefined;
  for (const path of ['/etc/os-release', '/usr/lib/os-release']) {
    const text = await readText(files, path);
    if (text === undefined) continue;
    const rel = parseOsRelease(text);
    details.osRelease = path;
    for (const k of ['ID', 'ID_LIKE', 'VERSION_ID', 'VERSION_CODENAME']) if (rel[k]) details[k] = rel[k];
    name = rel.PRETTY_NAME || [rel.NAME, rel.VERSION].filter(Boolean).join(' ') || 'Linux';
    break;
  }
  if (name === undefined) {
    // Distributions older than os-release (2012) still have these.
    const redhat = await readText(files, '/etc/redhat-release');
    const debian = await readText(files, '/etc/debian_version');
    if (redhat?.trim()) name = redhat.trim().split('\n')[0];
    else if (debian?.trim()) name = `Debian GNU/Linux ${debian.trim().split('\n')[0]}`;
  }
  const fstabText = await readText(files, '/etc/fstab');
  if (name === undefined) {
    const hasInit = (await isFile(files, '/etc/passwd')) && fstabText !== undefined;
    if (!hasInit) return undefined;
    name = 'Linux';
  }
  if (fstabText !== undefined) {
    for (const e of parseFstab(fstabText)) {
      if (e.mountPoint.startsWith('/') && e.type !== 'swap') details[`fstab:${e.mountPoint}`] = e.spec;
      else if (e.type === 'swap') details[`fstab:swap:${e.spec}`] = e.spec;
    }
  }
  const kernels = (await listDir(files, '/boot'))
    .filter((n) => /^(vmlinuz|vmlinux|bzImage|kernel)/.test(n))
    .sort();
  if (kernels.length > 0) details.kernels = kernels.join(' ');
  for (const cfg of ['/boot/grub/grub.cfg', '/boot/grub2/grub.cfg']) {
    if (await isFile(files, cfg)) {
      details.grubConfig = cfg;
      break;
    }
  }
  return { os: 'linux', name, details };
}

/**
 * Windows when \Windows\System32\config\SYSTEM and ntoskrnl.exe exist; Linux when os-release (or
 * an older release file, or fstab with passwd) does; undefined otherwise. Throws RescueError when
 * the filesystem is damaged along the way.
 */
export async function detectOs(files: VolumeFiles): Promise<Omit<OsInstall, 'volume'> | undefined> {
  return (await detectWindows(files)) ?? (await detectLinux(files));
}

export interface EspBootEntry {
  /** '/'-separated, with the names as stored: "/EFI/Microsoft/Boot/bootmgfw.efi". */
  path: string;
  /** The directory under \EFI ("Microsoft", "debian", "BOOT"). */
  vendor: string;
  /** A guess from vendor and file name; 'fallback' is \EFI\BOOT, what firmware runs without a boot entry. */
  kind: 'windows' | 'linux' | 'fallback' | 'other';
}

const LINUX_VENDORS = new Set([
  'debian',
  'ubuntu',
  'fedora',
  'redhat',
  'centos',
  'rocky',
  'almalinux',
  'opensuse',
  'sles',
  'suse',
  'arch',
  'gentoo',
  'linuxmint',
  'manjaro',
  'pop',
  'neon',
  'kali',
  'elementary',
  'void',
  'nixos',
  'systemd',
  'linux',
  'grub',
]);

function kindOf(vendor: string, file: string): EspBootEntry['kind'] {
  const v = vendor.toLowerCase();
  if (v === 'microsoft') return 'windows';
  if (v === 'boot') return 'fallback';
  if (LINUX_VENDORS.has(v) || /^(grub|shim|systemd-boot)/i.test(file)) return 'linux';
  return 'other';
}

/**
 * EFI executables on an EFI system partition: \EFI\<vendor>\*.efi and one directory deeper
 * (\EFI\Microsoft\Boot\bootmgfw.efi). Empty when there is no \EFI directory.
 */
export async function espBootEntries(files: VolumeFiles): Promise<EspBootEntry[]> {
  const efiName = (await listDir(files, '/')).find((n) => n.toUpperCase() === 'EFI');
  if (!efiName || !(await isDir(files, `/${efiName}`))) return [];
  const out: EspBootEntry[] = [];
  let budget = MAX_ESP_ENTRIES;
  const scan = async (dir: string, vendor: string, depth: number): Promise<void> => {
    for (const name of await listDir(files, dir)) {
      if (--budget < 0) return;
      const path = `${dir}/${name}`;
      const st = await files.stat(path);
      if (st?.type === 'file' && /\.efi$/i.test(name)) out.push({ path, vendor, kind: kindOf(vendor, name) });
      else if (st?.type === 'dir' && depth > 0) await scan(path, vendor, depth - 1);
    }
  };
  for (const vendor of await listDir(files, `/${efiName}`)) {
    if (--budget < 0) break;
    const dir = `/${efiName}/${vendor}`;
    if (await isDir(files, dir)) await scan(dir, vendor, 1);
  }
  return out;
}
