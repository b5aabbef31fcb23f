/**
 * Finding installed operating systems on real images: a Windows tree on NTFS (ntfs-3g), a Linux
 * root on ext4 (mke2fs -d) whose fstab names an ESP on FAT32 (mtools) by the UUID blkid reports
 * for it, and the ESP's boot loaders. The filesystem type comes from detectFilesystem, as a caller
 * would get it.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../rescue/engine/devices/source.ts';
import { detectFilesystem } from '../../rescue/engine/filesystems/detect.ts';
import { openVolumeFiles, type VolumeFiles } from '../../rescue/engine/filesystems/files/index.ts';
import {
  detectOs,
  espBootEntries,
  parseFstab,
  parseOsRelease,
} from '../../rescue/engine/filesystems/files/os-detect.ts';
import { mkfsFat, mtools } from '../fixtures/fat.ts';
import { blkidExport, makeTempDir, pseudoRandomBytes, run, sparseFile } from '../fixtures/lab.ts';
import { makeNtfs, withNtfsMount } from '../fixtures/ntfs.ts';

const MiB = 1024 * 1024;
let dir: string;
const opened: FileSource[] = [];

async function openAny(image: string): Promise<VolumeFiles> {
  const src = await FileSource.open(image);
  opened.push(src);
  const id = await detectFilesystem(src);
  const files = await openVolumeFiles(src, id.type);
  if (!files) throw new Error(`no file reader for ${id.type}`);
  return files;
}

async function writeTree(root: string, entries: Record<string, string | Buffer>): Promise<void> {
  for (const [rel, data] of Object.entries(entries)) {
    await fsp.mkdir(join(root, rel, '..'), { recursive: true });
    await fsp.writeFile(join(root, rel), data);
  }
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-files-os-');
});
afterAll(async () => {
  for (const s of opened) await s.close();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

describe('parseFstab / parseOsRelease', () => {
  it('reads tags, device paths, octal escapes, comments and missing fields', () => {
    const text = [
      '# /etc/fstab: static file system information.',
      '#',
      '# <file system> <mount point>   <type>  <options>       <dump>  <pass>',
      'UUID=0b4d5c3e-1f1a-4a4e-9d6f-6c1e0e2d9a11 /               ext4    errors=remount-ro 0       1',
      '# /boot/efi was on /dev/sda1 during installation',
      'UUID=7A3B-1C2D  /boot/efi       vfat    umask=0077      0       1',
      'LABEL="boot"\t/boot\text2\tdefaults\t0\t2',
      'PARTUUID=12345678-02 none swap sw 0 0',
      '/dev/disk/by-uuid/aaaa-bbbb /srv/My\\040Data xfs noatime,nofail',
      '/dev/sdb1 /mnt/usb',
      '   ',
      'tmpfs /tmp tmpfs defaults 0 0',
    ].join('\n');
    const e = parseFstab(text);
    expect(e.map((x) => x.mountPoint)).toEqual([
      '/',
      '/boot/efi',
      '/boot',
      'none',
      '/srv/My Data',
      '/mnt/usb',
      '/tmp',
    ]);
    expect(e[0]).toEqual({
      spec: 'UUID=0b4d5c3e-1f1a-4a4e-9d6f-6c1e0e2d9a11',
      source: { kind: 'UUID', value: '0b4d5c3e-1f1a-4a4e-9d6f-6c1e0e2d9a11' },
      mountPoint: '/',
      type: 'ext4',
      options: ['errors=remount-ro'],
      dump: 0,
      pass: 1,
    });
    expect(e[2].source).toEqual({ kind: 'LABEL', value: 'boot' });
    expect(e[3]).toMatchObject({ source: { kind: 'PARTUUID', value: '12345678-02' }, type: 'swap' });
    expect(e[4]).toMatchObject({
      source: { kind: 'UUID', value: 'aaaa-bbbb' },
      options: ['noatime', 'nofail'],
    });
    expect(e[5]).toMatchObject({
      source: { kind: 'path', value: '/dev/sdb1' },
      type: 'auto',
      options: ['defaults'],
    });
    expect(e[6].source.kind).toBe('other');
  });

  it('reads os-release quoting', () => {
    const r = parseOsRelease(
      'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME=\'Debian GNU/Linux\'\nVERSION_ID="12"\nID=debian\n# c\nX="a \\"q\\" \\$b"\nbad line\n',
    );
    expect(r).toEqual({
      PRETTY_NAME: 'Debian GNU/Linux 12 (bookworm)',
      NAME: 'Debian GNU/Linux',
      VERSION_ID: '12',
      ID: 'debian',
      X: 'a "q" $b',
    });
  });
});

describe('detectOs and espBootEntries on real images', () => {
  let espUuid = '';
  let esp: string;

  beforeAll(async () => {
    esp = join(dir, 'esp.img');
    await mkfsFat(esp, { sizeBytes: 64 * MiB, fatBits: 32, sectorsPerCluster: 1, label: 'ESP' });
    const src = join(dir, 'esp-src');
    await writeTree(src, {
      'EFI/Microsoft/Boot/bootmgfw.efi': pseudoRandomBytes(30_000, 1),
      'EFI/Microsoft/Boot/BCD': pseudoRandomBytes(8192, 2),
      'EFI/Microsoft/Recovery/BCD': pseudoRandomBytes(8192, 3),
      'EFI/debian/grubx64.efi': pseudoRandomBytes(20_000, 4),
      'EFI/debian/shimx64.efi': pseudoRandomBytes(20_000, 5),
      'EFI/debian/grub.cfg': 'configfile $prefix/grub.cfg\n',
      'EFI/BOOT/BOOTX64.EFI': pseudoRandomBytes(20_000, 6),
    });
    await mtools('mcopy', ['-s', '-i', esp, join(src, 'EFI'), '::/']);
    espUuid = (await blkidExport(esp)).UUID;
    expect(espUuid).toMatch(/^[0-9A-F]{4}-[0-9A-F]{4}$/);
  });

  it('Windows on NTFS: SYSTEM hive and ntoskrnl.exe, found whatever their case', async () => {
    const image = join(dir, 'windows.img');
    await makeNtfs(image, { size: 32 * MiB, clusterSize: 4096 });
    await withNtfsMount(image, join(dir, 'mnt'), async (m) => {
      await writeTree(m, {
        'Windows/System32/config/SYSTEM': pseudoRandomBytes(64 * 1024, 7),
        'Windows/System32/config/SOFTWARE': pseudoRandomBytes(64 * 1024, 8),
        'Windows/System32/ntoskrnl.exe': pseudoRandomBytes(100_000, 9),
        'Windows/SysWOW64/kernel32.dll': pseudoRandomBytes(1000, 10),
        'Users/Public/desktop.ini': 'x',
      });
    });
    const found = await detectOs(await openAny(image));
    expect(found).toEqual({
      os: 'windows',
      name: 'Windows',
      details: { systemRoot: '\\Windows', architecture: '64-bit' },
    });

    // A bare volume with the kernel but no registry is not an installation.
    const partial = join(dir, 'partial.img');
    await makeNtfs(partial, { size: 16 * MiB, clusterSize: 4096 });
    await withNtfsMount(partial, join(dir, 'mnt'), (m) =>
      writeTree(m, { 'windows/system32/NTOSKRNL.EXE': 'k', bootmgr: 'b', 'Boot/BCD': 'bcd' }),
    );
    expect(await detectOs(await openAny(partial))).toBeUndefined();
    await withNtfsMount(partial, join(dir, 'mnt'), (m) =>
      writeTree(m, { 'windows/system32/CONFIG/system': 'hive' }),
    );
    expect(await detectOs(await openAny(partial))).toEqual({
      os: 'windows',
      name: 'Windows',
      details: { systemRoot: '\\Windows', architecture: '32-bit', bootmgr: '\\bootmgr', bcd: '\\Boot\\BCD' },
    });
  });

  it('Linux on ext4: os-release through its symlink, fstab naming the ESP by the UUID blkid reports', async () => {
    const src = join(dir, 'linux-src');
    await writeTree(src, {
      'usr/lib/os-release':
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
      'etc/fstab': [
        '# /etc/fstab',
        'UUID=0b4d5c3e-1f1a-4a4e-9d6f-6c1e0e2d9a11 / ext4 errors=remount-ro 0 1',
        'UUID=5e1c0d7a-aaaa-bbbb-cccc-0123456789ab /boot ext4 defaults 0 2',
        `UUID=${espUuid} /boot/efi vfat umask=0077 0 1`,
        'UUID=9d0c3b2a-1111-2222-3333-444455556666 none swap sw 0 0',
        '',
      ].join('\n'),
      'etc/passwd': 'root:x:0:0:root:/root:/bin/bash\n',
      'boot/vmlinuz-6.1.0-18-amd64': pseudoRandomBytes(5000, 11),
      'boot/initrd.img-6.1.0-18-amd64': pseudoRandomBytes(5000, 12),
      'boot/grub/grub.cfg': 'menuentry "Debian" {}\n',
    });
    await fsp.symlink('../usr/lib/os-release', join(src, 'etc/os-release'));
    const image = join(dir, 'linux.img');
    await sparseFile(image, 32 * MiB);
    await run('mkfs.ext4', ['-q', '-F', '-d', src, image]);
    const files = await openAny(image);
    const found = await detectOs(files);
    expect(found).toEqual({
      os: 'linux',
      name: 'Debian GNU/Linux 12 (bookworm)',
      details: {
        osRelease: '/etc/os-release',
        ID: 'debian',
        VERSION_ID: '12',
        VERSION_CODENAME: 'bookworm',
        'fstab:/': 'UUID=0b4d5c3e-1f1a-4a4e-9d6f-6c1e0e2d9a11',
        'fstab:/boot': 'UUID=5e1c0d7a-aaaa-bbbb-cccc-0123456789ab',
        'fstab:/boot/efi': `UUID=${espUuid}`,
        'fstab:swap:UUID=9d0c3b2a-1111-2222-3333-444455556666': 'UUID=9d0c3b2a-1111-2222-3333-444455556666',
        kernels: 'vmlinuz-6.1.0-18-amd64',
        grubConfig: '/boot/grub/grub.cfg',
      },
    });
    // The caller's step: the fstab entry for /boot/efi names the ESP image by its filesystem UUID.
    const efi = parseFstab((await files.readFile('/etc/fstab')).toString()).find(
      (e) => e.mountPoint === '/boot/efi',
    );
    const espSrc = await FileSource.open(esp);
    opened.push(espSrc);
    expect(efi?.source).toEqual({ kind: 'UUID', value: (await detectFilesystem(espSrc)).uuid });

    // Older systems without os-release.
    const old = join(dir, 'old-src');
    await writeTree(old, { 'etc/debian_version': '9.13\n', 'etc/fstab': '/dev/sda1 / ext4 defaults 0 1\n' });
    const oldImage = join(dir, 'old.img');
    await sparseFile(oldImage, 16 * MiB);
    await run('mkfs.ext4', ['-q', '-F', '-d', old, oldImage]);
    expect(await detectOs(await openAny(oldImage))).toEqual({
      os: 'linux',
      name: 'Debian GNU/Linux 9.13',
      details: { 'fstab:/': '/dev/sda1' },
    });
    // An empty filesystem is no operating system.
    const empty = join(dir, 'empty.img');
    await sparseFile(empty, 16 * MiB);
    await run('mkfs.ext4', ['-q', '-F', empty]);
    expect(await detectOs(await openAny(empty))).toBeUndefined();
  });

  it('EFI system partition on FAT32: the loaders under \\EFI, and no OS of its own', async () => {
    const files = await openAny(esp);
    const entries = await espBootEntries(files);
    expect(entries.sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: '/EFI/BOOT/BOOTX64.EFI', vendor: 'BOOT', kind: 'fallback' },
      { path: '/EFI/debian/grubx64.efi', vendor: 'debian', kind: 'linux' },
      { path: '/EFI/debian/shimx64.efi', vendor: 'debian', kind: 'linux' },
      { path: '/EFI/Microsoft/Boot/bootmgfw.efi', vendor: 'Microsoft', kind: 'windows' },
    ]);
    expect(await detectOs(files)).toBeUndefined();
    // Every loader it lists can be read back as written.
    for (const e of entries) expect((await files.readFile(e.path)).length).toBeGreaterThan(1000);
    const noEsp = join(dir, 'plain-fat.img');
    await mkfsFat(noEsp, { sizeBytes: 8 * MiB, fatBits: 12, sectorsPerCluster: 4 });
    expect(await espBootEntries(await openAny(noEsp))).toEqual([]);
  });
});
