/**
 * The demo lab: a few disk-image files that look like the disks people bring to a rescue tool —
 * an old BIOS/MBR PC disk with logical partitions, a UEFI/GPT dual-boot disk with Windows and
 * Linux partitions and an encrypted volume, a USB stick, and a floppy. Built with the real mkfs
 * tools on sparse files and filled with a few files, so every module of the engine has something
 * real to read.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RescueError } from '../engine/errors.ts';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const LAB_VERSION = '2';

async function sh(cmd: string, args: string[], input?: string): Promise<void> {
  try {
    if (input !== undefined) {
      await new Promise<void>((resolve, reject) => {
        const child = execFile(cmd, args, (err) => (err ? reject(err) : resolve()));
        child.stdin?.end(input);
      });
    } else {
      await execFileP(cmd, args, { maxBuffer: 64 * MiB });
    }
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new RescueError(
      'E_LAB_TOOL',
      `Building the demo lab failed: ${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' ')}`,
      'Run as root on Debian; `sh scripts/host-setup.sh` installs the tools the lab needs.',
    );
  }
}

async function sparse(path: string, size: number): Promise<void> {
  const h = await fsp.open(path, 'w');
  await h.truncate(size);
  await h.close();
}

/** Copies a filesystem image into a disk image at `offset`, skipping zero blocks so both stay sparse. */
async function place(fsImage: string, disk: string, offset: number): Promise<void> {
  const src = await fsp.open(fsImage, 'r');
  const dst = await fsp.open(disk, 'r+');
  try {
    const buf = Buffer.alloc(MiB);
    for (let pos = 0; ; pos += MiB) {
      const { bytesRead } = await src.read(buf, 0, MiB, pos);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      if (chunk.some((b) => b !== 0)) await dst.write(chunk, 0, bytesRead, offset + pos);
    }
  } finally {
    await src.close();
    await dst.close();
  }
  await fsp.rm(fsImage);
}

/** Partition offsets and sizes in bytes as sfdisk laid them out (so the lab never assumes alignment rules). */
async function layoutOf(disk: string): Promise<{ start: number; size: number }[]> {
  const { stdout } = await execFileP('sfdisk', ['--json', disk]);
  const t = JSON.parse(stdout) as {
    partitiontable: { sectorsize?: number; partitions: { start: number; size: number }[] };
  };
  const ss = t.partitiontable.sectorsize ?? 512;
  return t.partitiontable.partitions.map((p) => ({ start: p.start * ss, size: p.size * ss }));
}

/** A small tree of files: a text file and a pseudo-random blob (incompressible, like photos). */
async function sampleFiles(dir: string, title: string, blobBytes: number): Promise<void> {
  await fsp.mkdir(join(dir, 'Documents'), { recursive: true });
  await fsp.writeFile(join(dir, 'README.txt'), `${title}\nThis volume is part of the Rescue demo lab.\n`);
  const blob = Buffer.alloc(blobBytes);
  let x = title.length * 2654435761;
  for (let i = 0; i + 4 <= blobBytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    blob.writeUInt32LE(x >>> 0, i);
  }
  await fsp.writeFile(join(dir, 'Documents', 'photo.raw'), blob);
  for (let i = 0; i < 5; i++)
    await fsp.writeFile(join(dir, 'Documents', `note-${i}.txt`), `note ${i} of ${title}\n`.repeat(200));
}

async function withFuse(
  mountCmd: string[],
  image: string,
  work: string,
  fill: (dir: string) => Promise<void>,
): Promise<void> {
  const mnt = join(work, 'mnt');
  await fsp.mkdir(mnt, { recursive: true });
  await sh(mountCmd[0], [...mountCmd.slice(1), image, mnt]);
  try {
    await fill(mnt);
  } finally {
    await sh('fusermount', ['-u', mnt]).catch(() => sh('umount', [mnt]));
  }
}

async function fatVolume(
  path: string,
  size: number,
  bits: 12 | 16 | 32,
  label: string,
  work: string,
  blob: number,
): Promise<void> {
  await sparse(path, size);
  await sh('mkfs.vfat', ['-F', String(bits), '-n', label, path]);
  const src = join(work, `files-${label}`);
  await sampleFiles(src, `FAT${bits} volume ${label}`, blob);
  await sh('mcopy', ['-s', '-i', path, join(src, 'README.txt'), join(src, 'Documents'), '::']);
}

async function extVolume(
  path: string,
  size: number,
  type: 'ext2' | 'ext4',
  label: string,
  work: string,
  blob: number,
): Promise<void> {
  const src = join(work, `files-${label}`);
  await sampleFiles(src, `${type} volume ${label}`, blob);
  await sparse(path, size);
  await sh(`mkfs.${type}`, ['-q', '-F', '-L', label, '-d', src, path]);
}

async function ntfsVolume(
  path: string,
  size: number,
  label: string,
  work: string,
  blob: number,
): Promise<void> {
  await sparse(path, size);
  await sh('mkntfs', ['-F', '-Q', '-q', '-L', label, path]);
  await withFuse(['ntfs-3g'], path, work, (mnt) => sampleFiles(mnt, `NTFS volume ${label}`, blob));
}

async function exfatVolume(
  path: string,
  size: number,
  label: string,
  work: string,
  blob: number,
): Promise<void> {
  await sparse(path, size);
  await sh('mkfs.exfat', ['-L', label, path]);
  // exfat-fuse run as root insists on a block device ("Block device required"): go through a loop device.
  const { stdout } = await execFileP('losetup', ['--find', '--show', path]);
  const loop = stdout.trim();
  try {
    await withFuse(['mount.exfat-fuse'], loop, work, (mnt) =>
      sampleFiles(mnt, `exFAT volume ${label}`, blob),
    );
  } finally {
    await sh('losetup', ['-d', loop]);
  }
}

export interface LabDisk {
  path: string;
  description: string;
}

/** Makes a volume of `size` bytes in the file `path`. */
export type VolumeMaker = (path: string, size: number, work: string) => Promise<void>;

export interface LabDiskPlan {
  file: string;
  description: string;
  size: number;
  /** sfdisk script; absent for a disk that is one filesystem without a table. */
  sfdisk?: string;
  /** One maker per entry of `sfdisk --json`'s partition list (undefined: leave it empty). */
  volumes: (VolumeMaker | undefined)[];
}

export const fat =
  (bits: 12 | 16 | 32, label: string, blob: number): VolumeMaker =>
  (p, size, work) =>
    fatVolume(p, size, bits, label, work, blob);
export const extfs =
  (type: 'ext2' | 'ext4', label: string, blob: number): VolumeMaker =>
  (p, size, work) =>
    extVolume(p, size, type, label, work, blob);
export const ntfsfs =
  (label: string, blob: number): VolumeMaker =>
  (p, size, work) =>
    ntfsVolume(p, size, label, work, blob);
export const exfatfs =
  (label: string, blob: number): VolumeMaker =>
  (p, size, work) =>
    exfatVolume(p, size, label, work, blob);
export const swapArea =
  (label: string): VolumeMaker =>
  async (p, size) => {
    await sparse(p, size);
    await sh('mkswap', ['-L', label, p]);
  };
export const luksVolume =
  (label: string): VolumeMaker =>
  async (p, size) => {
    await sparse(p, size);
    // Cheap key derivation: this is a demo container, not a place for secrets.
    const args = [
      'luksFormat',
      '-q',
      '--type',
      'luks2',
      '--pbkdf',
      'pbkdf2',
      '--pbkdf-force-iterations',
      '1000',
    ];
    await sh('cryptsetup', [...args, '--label', label, p, '-'], 'demo-password');
  };

export const GPT_TYPE = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  msr: 'E3C9E316-0B5C-4DB8-817D-F92DF00215AE',
  basicData: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  linux: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;

const PLAN: LabDiskPlan[] = [
  {
    file: 'bios-mbr.img',
    description: 'old BIOS PC: MBR, FAT16 boot, extended with ext4 + swap + ext2 logicals',
    size: 400 * MiB,
    sfdisk: [
      'label: dos',
      'label-id: 0x1ea5e0a1',
      'start=1MiB, size=64MiB, type=e, bootable',
      'start=65MiB, type=5',
      'size=192MiB, type=83',
      'size=48MiB, type=82',
      'type=83',
    ].join('\n'),
    // sfdisk lists p1, the extended container p2, then the logicals p5, p6, p7.
    volumes: [
      fat(16, 'BOOT', 2 * MiB),
      undefined,
      extfs('ext4', 'data', 24 * MiB),
      swapArea('swap0'),
      extfs('ext2', 'old', 4 * MiB),
    ],
  },
  {
    file: 'uefi-gpt.img',
    description: 'UEFI dual boot: GPT, ESP (FAT32), MSR, NTFS Windows, ext4 Linux, LUKS vault',
    size: 1024 * MiB,
    sfdisk: [
      'label: gpt',
      'label-id: 5E5C0E00-D15C-4B00-8000-0000000000A1',
      `start=1MiB, size=100MiB, type=${GPT_TYPE.esp}, name="EFI system partition"`,
      `size=16MiB, type=${GPT_TYPE.msr}, name="Microsoft reserved partition"`,
      `size=400MiB, type=${GPT_TYPE.basicData}, name="Basic data partition"`,
      `size=300MiB, type=${GPT_TYPE.linux}, name="linux"`,
      `type=${GPT_TYPE.linux}, name="vault"`,
    ].join('\n'),
    volumes: [
      fat(32, 'EFI', 1 * MiB),
      undefined,
      ntfsfs('Windows', 32 * MiB),
      extfs('ext4', 'linux', 16 * MiB),
      luksVolume('vault'),
    ],
  },
  {
    file: 'usb-stick.img',
    description: 'USB stick: MBR with one exFAT partition',
    size: 128 * MiB,
    sfdisk: 'label: dos\nlabel-id: 0x57c1c0de\nstart=1MiB, type=7',
    volumes: [exfatfs('STICK', 8 * MiB)],
  },
  {
    file: 'floppy.img',
    description: 'floppy: FAT12 without a partition table',
    size: 1440 * 1024,
    volumes: [fat(12, 'FLOPPY', 256 * 1024)],
  },
];

export async function buildDisk(plan: LabDiskPlan, disk: string, work: string): Promise<void> {
  if (!plan.sfdisk) {
    await plan.volumes[0]?.(disk, plan.size, work);
    return;
  }
  await sparse(disk, plan.size);
  await sh('sfdisk', ['--quiet', disk], `${plan.sfdisk}\n`);
  const parts = await layoutOf(disk);
  for (const [i, make] of plan.volumes.entries()) {
    if (!make) continue;
    const volume = join(work, `volume-${i}`);
    await make(volume, parts[i].size, work);
    await place(volume, disk, parts[i].start);
  }
}

/** Builds the lab in `dir` unless a complete one is already there. Returns its disks. */
export async function buildLab(dir: string, log: (line: string) => void = () => {}): Promise<LabDisk[]> {
  const disks = PLAN.map((p) => ({ path: join(dir, p.file), description: p.description }));
  const marker = join(dir, '.complete');
  if ((await fsp.readFile(marker, 'utf8').catch(() => '')) === LAB_VERSION) return disks;

  await fsp.mkdir(dir, { recursive: true });
  const work = await fsp.mkdtemp(join(dir, '.work-'));
  try {
    for (const [i, plan] of PLAN.entries()) {
      log(`building ${plan.file} (${plan.description}) …`);
      await buildDisk(plan, disks[i].path, work);
    }
    await fsp.writeFile(marker, LAB_VERSION);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
  return disks;
}
