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
const LAB_VERSION = '1';

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

/** Builds the lab in `dir` unless a complete one is already there. Returns its disks. */
export async function buildLab(dir: string, log: (line: string) => void = () => {}): Promise<LabDisk[]> {
  const disks: LabDisk[] = [
    {
      path: join(dir, 'bios-mbr.img'),
      description: 'old BIOS PC: MBR, FAT16 boot, extended with ext4 + swap + ext2 logicals',
    },
    {
      path: join(dir, 'uefi-gpt.img'),
      description: 'UEFI dual boot: GPT, ESP (FAT32), MSR, NTFS Windows, ext4 Linux, LUKS vault',
    },
    { path: join(dir, 'usb-stick.img'), description: 'USB stick: MBR with one exFAT partition' },
    { path: join(dir, 'floppy.img'), description: 'floppy: FAT12 without a partition table' },
  ];
  const marker = join(dir, '.complete');
  if ((await fsp.readFile(marker, 'utf8').catch(() => '')) === LAB_VERSION) return disks;

  await fsp.mkdir(dir, { recursive: true });
  const work = await fsp.mkdtemp(join(dir, '.work-'));
  try {
    log('building bios-mbr.img (MBR with logical partitions) …');
    {
      const disk = disks[0].path;
      await sparse(disk, 400 * MiB);
      await sh(
        'sfdisk',
        ['--quiet', disk],
        'label: dos\nlabel-id: 0x1ea5e0a1\nstart=1MiB, size=64MiB, type=e, bootable\nstart=65MiB, type=5\nsize=192MiB, type=83\nsize=48MiB, type=82\ntype=83\n',
      );
      // sfdisk lists p1, the extended container p2, then logicals p5, p6, p7.
      const [p1, , p5, p6, p7] = await layoutOf(disk);
      const f1 = join(work, 'p1');
      await fatVolume(f1, p1.size, 16, 'BOOT', work, 2 * MiB);
      await place(f1, disk, p1.start);
      const f5 = join(work, 'p5');
      await extVolume(f5, p5.size, 'ext4', 'data', work, 24 * MiB);
      await place(f5, disk, p5.start);
      const f6 = join(work, 'p6');
      await sparse(f6, p6.size);
      await sh('mkswap', ['-L', 'swap0', f6]);
      await place(f6, disk, p6.start);
      const f7 = join(work, 'p7');
      await extVolume(f7, p7.size, 'ext2', 'old', work, 4 * MiB);
      await place(f7, disk, p7.start);
    }
    log('building uefi-gpt.img (GPT: ESP, MSR, NTFS, ext4, LUKS) …');
    {
      const disk = disks[1].path;
      await sparse(disk, 1024 * MiB);
      await sh(
        'sfdisk',
        ['--quiet', disk],
        [
          'label: gpt',
          'start=1MiB, size=100MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"',
          'size=16MiB, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, name="Microsoft reserved partition"',
          'size=400MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Basic data partition"',
          'size=300MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="linux"',
          'type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="vault"',
          '',
        ].join('\n'),
      );
      const [esp, , win, lin, vault] = await layoutOf(disk);
      const fEsp = join(work, 'esp');
      await fatVolume(fEsp, esp.size, 32, 'EFI', work, 1 * MiB);
      await place(fEsp, disk, esp.start);
      const fWin = join(work, 'win');
      await ntfsVolume(fWin, win.size, 'Windows', work, 32 * MiB);
      await place(fWin, disk, win.start);
      const fLin = join(work, 'lin');
      await extVolume(fLin, lin.size, 'ext4', 'linux', work, 16 * MiB);
      await place(fLin, disk, lin.start);
      const fVault = join(work, 'vault');
      await sparse(fVault, vault.size);
      await sh(
        'cryptsetup',
        [
          'luksFormat',
          '-q',
          '--type',
          'luks2',
          '--pbkdf',
          'pbkdf2',
          '--pbkdf-force-iterations',
          '1000',
          '--label',
          'vault',
          fVault,
          '-',
        ],
        'demo-password',
      );
      await place(fVault, disk, vault.start);
    }
    log('building usb-stick.img (exFAT) …');
    {
      const disk = disks[2].path;
      await sparse(disk, 128 * MiB);
      await sh('sfdisk', ['--quiet', disk], 'label: dos\nstart=1MiB, type=7\n');
      const [stick] = await layoutOf(disk);
      const f1 = join(work, 'stick');
      await exfatVolume(f1, stick.size, 'STICK', work, 8 * MiB);
      await place(f1, disk, stick.start);
    }
    log('building floppy.img (FAT12, no partition table) …');
    await fatVolume(disks[3].path, 1440 * 1024, 12, 'FLOPPY', work, 256 * 1024);
    await fsp.writeFile(marker, LAB_VERSION);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
  return disks;
}
