/**
 * What the VM tests boot: our ISO (built once per checkout state), and a small bootable Linux disk
 * to back up, restore inside the rescue VM, and boot again.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildRescueIso } from '../../iso-builder/build.ts';
import { packCpio } from '../../iso-builder/initrd.ts';
import { pxeFromIso } from '../../iso-builder/pxe.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
export const VM_CACHE = join(ROOT, '.cache', 'vm');

/** The marker the test disk's init prints on the serial console once it has booted. */
export const MARKER = 'RESCUE-TEST-DISK-BOOTED';

async function checkoutState(): Promise<string> {
  const git = async (args: string[]) => (await run('git', args, { cwd: ROOT, maxBuffer: 64 << 20 })).stdout;
  return createHash('sha256')
    .update(await git(['rev-parse', 'HEAD']))
    .update(await git(['status', '--porcelain']))
    .update(await git(['diff', 'HEAD']))
    .digest('hex')
    .slice(0, 16);
}

/**
 * The ISO of this checkout: RESCUE_TEST_ISO if set, else built (zstd, 1 s menu) into .cache/vm and
 * reused while the checkout is unchanged.
 */
export async function testIso(
  log: (l: string) => void,
): Promise<{ iso: string; seconds?: number; bytes: number }> {
  if (process.env.RESCUE_TEST_ISO) return { iso: process.env.RESCUE_TEST_ISO, bytes: 0 };
  mkdirSync(VM_CACHE, { recursive: true });
  const iso = join(VM_CACHE, 'rescue.iso');
  const stamp = join(VM_CACHE, 'rescue.iso.stamp');
  const state = await checkoutState();
  // Several VM test files ask at once: one builds, the others wait for it.
  return withLock(join(VM_CACHE, 'rescue.iso.lock'), async () => {
    if (existsSync(iso) && existsSync(stamp) && readFileSync(stamp, 'utf8') === state)
      return { iso, bytes: statSync(iso).size };
    rmSync(stamp, { force: true });
    const r = await buildRescueIso({ out: iso, compression: 'zstd', timeout: 1, log });
    writeFileSync(stamp, state);
    return { iso, seconds: r.seconds.total, bytes: r.bytes };
  });
}

/** Runs `fn` holding a lock file (its holder's pid inside; a dead holder's lock is taken over). */
async function withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      const holder = Number(readFileSync(path, 'utf8') || '0');
      let alive = false;
      try {
        if (holder > 0) {
          process.kill(holder, 0);
          alive = true;
        }
      } catch {
        alive = false;
      }
      if (!alive) rmSync(path, { force: true });
      else await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(path, { force: true });
  }
}

/** `rescue media pxe` output for `iso`, made once per ISO into .cache/vm. */
export async function testPxeFiles(iso: string): Promise<string> {
  const out = join(VM_CACHE, 'pxe');
  const stamp = join(out, '.iso-stamp');
  const st = statSync(iso);
  const want = `${iso} ${st.size} ${st.mtimeMs}`;
  return withLock(join(VM_CACHE, 'pxe.lock'), async () => {
    if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return out;
    rmSync(out, { recursive: true, force: true });
    await pxeFromIso(iso, out);
    writeFileSync(stamp, want);
    return out;
  });
}

export async function extractFromIso(iso: string, from: string, to: string): Promise<void> {
  await run('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract', from, to]);
}

/**
 * A 128 MiB GPT disk that boots under UEFI: an EFI system partition with GRUB (made by grub-mkimage
 * from Debian's grub-efi-amd64-bin), the rescue ISO's kernel and a tiny initramfs whose init prints
 * MARKER and the size of a file on partition 2 on the serial console, then powers off; partition 2
 * is ext4 with some files. Built without mounting anything (mtools, mkfs.ext4 -d).
 */
export async function bootableDisk(dir: string, iso: string): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const kernel = join(dir, 'vmlinuz');
  const rescueInitrd = join(dir, 'rescue-initrd.img');
  await extractFromIso(iso, '/boot/vmlinuz', kernel);
  await extractFromIso(iso, '/boot/initrd.img', rescueInitrd);

  // The tiny initramfs: busybox (from the rescue initrd) and an init that reports and powers off.
  const tiny = join(dir, 'tiny');
  rmSync(tiny, { recursive: true, force: true });
  mkdirSync(join(tiny, 'bin'), { recursive: true });
  await run('sh', ['-c', 'cd "$1" && zstd -dc "$2" | cpio -i --quiet bin/busybox', 'sh', tiny, rescueInitrd]);
  for (const d of ['proc', 'sys', 'dev', 'mnt']) mkdirSync(join(tiny, d));
  writeFileSync(
    join(tiny, 'init'),
    [
      '#!/bin/busybox sh',
      '/bin/busybox mount -t proc proc /proc',
      '/bin/busybox mount -t devtmpfs dev /dev',
      `echo "${MARKER} cmdline=[$(/bin/busybox cat /proc/cmdline)]" > /dev/ttyS0`,
      '/bin/busybox poweroff -f',
      '',
    ].join('\n'),
  );
  chmodSync(join(tiny, 'init'), 0o755);
  const initrd = join(dir, 'initrd.img');
  await packCpio(tiny, initrd);

  // GRUB for UEFI with its config built in: find this disk's ESP, load kernel + initrd, serial console.
  const grubDir = join(dir, 'grub');
  const cache = join(ROOT, '.cache', 'iso-debs');
  const deb = (
    await run('sh', ['-c', 'ls "$1"/grub-efi-amd64-bin_*.deb "$1"/grub-common_*.deb', 'sh', cache])
  ).stdout
    .trim()
    .split('\n');
  for (const d of deb) await run('dpkg-deb', ['-x', d, grubDir]);
  const cfg = join(dir, 'grub-embedded.cfg');
  writeFileSync(
    cfg,
    [
      'serial --unit=0 --speed=115200',
      'terminal_output serial',
      'search --no-floppy --file --set=root /rescue-test-disk',
      'linux /vmlinuz console=ttyS0,115200 quiet panic=-1',
      'initrd /initrd.img',
      'boot',
      '',
    ].join('\n'),
  );
  const efi = join(dir, 'BOOTX64.EFI');
  await run(join(grubDir, 'usr/bin/grub-mkimage'), [
    '-d',
    join(grubDir, 'usr/lib/grub/x86_64-efi'),
    '-O',
    'x86_64-efi',
    '-p',
    '/EFI/BOOT',
    '-c',
    cfg,
    '-o',
    efi,
    'part_gpt',
    'fat',
    'search',
    'search_fs_file',
    'linux',
    'serial',
    'terminal',
    'normal',
    'echo',
  ]);

  // The ESP (FAT32, 48 MiB) and the data partition (ext4, 70 MiB), then the disk around them.
  const esp = join(dir, 'esp.img');
  rmSync(esp, { force: true });
  await run('mkfs.vfat', ['-C', '-F', '32', '-n', 'TESTESP', esp, String(48 * 1024)]);
  await run('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT']);
  await run('mcopy', ['-i', esp, efi, '::/EFI/BOOT/BOOTX64.EFI']);
  await run('mcopy', ['-i', esp, kernel, '::/vmlinuz']);
  await run('mcopy', ['-i', esp, initrd, '::/initrd.img']);
  writeFileSync(join(dir, 'rescue-test-disk'), 'this disk boots the VM test marker\n');
  await run('mcopy', ['-i', esp, join(dir, 'rescue-test-disk'), '::/rescue-test-disk']);

  const data = join(dir, 'data');
  mkdirSync(data, { recursive: true });
  for (let i = 0; i < 20; i++)
    writeFileSync(
      join(data, `file-${i}.bin`),
      createHash('sha512').update(`block ${i}`).digest().toString('hex').repeat(2000),
    );
  const ext = join(dir, 'data.img');
  rmSync(ext, { force: true });
  await run('mkfs.ext4', ['-q', '-F', '-L', 'testdata', '-d', data, ext, '70M']);

  const disk = join(dir, 'bootable.img');
  rmSync(disk, { force: true });
  await run('truncate', ['-s', '128M', disk]);
  const table = join(dir, 'table.sfdisk');
  writeFileSync(
    table,
    'label: gpt\n' +
      'start=2048, size=98304, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI"\n' +
      'start=100352, size=143360, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data"\n',
  );
  await run('sh', ['-c', 'sfdisk -q "$1" < "$2"', 'sh', disk, table]);
  await run('dd', [`if=${esp}`, `of=${disk}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
  await run('dd', [`if=${ext}`, `of=${disk}`, 'bs=1M', 'seek=49', 'conv=notrunc,sparse', 'status=none']);
  return disk;
}

/** An MBR disk with one ext4 partition holding `folder` (the backups the rescue VM finds attached). */
export async function diskWithFolder(path: string, folder: string, mib: number): Promise<string> {
  const part = `${path}.part`;
  rmSync(part, { force: true });
  await run('mkfs.ext4', ['-q', '-F', '-L', 'backups', '-d', folder, part, `${mib - 2}M`]);
  rmSync(path, { force: true });
  await run('truncate', ['-s', `${mib}M`, path]);
  await run('sh', ['-c', 'printf "label: dos\\nstart=2048, type=83\\n" | sfdisk -q "$1"', 'sh', path]);
  await run('dd', [`if=${part}`, `of=${path}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
  rmSync(part, { force: true });
  return path;
}
