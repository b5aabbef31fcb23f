/**
 * The hybrid ISO: boots BIOS (GRUB El Torito; GRUB's hybrid MBR when written to a stick) and UEFI
 * (an appended EFI system partition, also the El Torito EFI image) — under Secure Boot through
 * Debian's signed shim → signed GRUB → signed kernel. The same file works burnt to a CD and written
 * raw to a USB stick.
 *
 * ISO layout:
 *   .disk/info                  what Debian's signed GRUB looks for to find the ISO's files
 *   rescue/id-<build>           this build's marker (GRUB and the initrd look for exactly this one)
 *   rescue/root.sqfs            the rescue root
 *   rescue/manifest.txt         every input of the build
 *   boot/vmlinuz, boot/initrd.img, boot/grub/grub.cfg, boot/grub/i386-pc/…
 *   EFI/boot/bootx64.efi (shim), grubx64.efi, mmx64.efi
 *   boot/netboot/shimx64.efi, grubx64.efi   shim and Debian's signed network GRUB, for PXE clients
 *                               with Secure Boot (`rescue media pxe` takes them out; docs/pxe.md)
 */
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RescueError } from '../rescue/engine/errors.ts';

const run = promisify(execFile);

export interface BootFiles {
  /** A folder with the boot packages unpacked (shim, signed GRUB, grub-pc-bin, grub-common). */
  dir: string;
}

/** The menu. Serial console too: servers and VMs show it there; harmless where there is none. */
export function grubConfig(id: string, timeout: number, release: string): string {
  const base = `rescue.id=${id} console=ttyS0,115200 console=tty0`;
  const entry = (title: string, args: string) =>
    `menuentry "${title}" {\n  linux /boot/vmlinuz ${base} ${args}\n  initrd /boot/initrd.img\n}\n`;
  return [
    '# Rescue boot menu. Options after "linux": docs/boot.md.',
    `search --no-floppy --file --set=root /rescue/id-${id}`,
    'set prefix=($root)/boot/grub',
    `set timeout=${timeout}`,
    'set default=0',
    'serial --unit=0 --speed=115200',
    'terminal_input console serial',
    'terminal_output console serial',
    `echo "Rescue ${release}"`,
    entry(`Rescue ${release}`, 'quiet'),
    entry('Rescue - text mode (no kiosk display)', 'quiet rescue.nokiosk'),
    entry('Rescue - copy to memory first (the stick can be unplugged)', 'quiet rescue.toram'),
    entry('Rescue - show every boot message', ''),
    'if [ "$grub_platform" = "efi" ]; then',
    '  menuentry "Firmware settings" { fwsetup }',
    'fi',
    '',
  ].join('\n');
}

async function tool(cmd: string, args: string[], what: string): Promise<void> {
  await run(cmd, args, { maxBuffer: 64 << 20 }).catch((e: { stderr?: string; code?: string }) => {
    throw new RescueError(
      'E_ISO_BUILD',
      `${what} failed (${cmd}): ${
        e.code === 'ENOENT'
          ? 'not installed'
          : String(e.stderr ?? e)
              .trim()
              .split('\n')
              .slice(-3)
              .join(' ')
      }`,
      e.code === 'ENOENT'
        ? `Install the Debian package that provides ${cmd} (scripts/host-setup.sh does).`
        : 'See the message; the work folder is kept for a look.',
    );
  });
}

export async function buildIso(o: {
  stage: string;
  work: string;
  boot: BootFiles;
  vmlinuz: string;
  initrd: string;
  squashfs: string;
  manifest: string;
  id: string;
  release: string;
  timeout: number;
  out: string;
  volid?: string;
}): Promise<void> {
  const { stage, boot } = o;
  rmSync(stage, { recursive: true, force: true });
  for (const d of ['.disk', 'rescue', 'boot/grub/i386-pc', 'EFI/boot'])
    mkdirSync(join(stage, d), { recursive: true });
  writeFileSync(join(stage, '.disk/info'), `Rescue ${o.release}\n`);
  writeFileSync(join(stage, `rescue/id-${o.id}`), `${o.release}\n`);
  copyFileSync(o.manifest, join(stage, 'rescue/manifest.txt'));
  // Moved in, not copied: the squashfs is most of the ISO (the stage is in the same work folder).
  renameSync(o.squashfs, join(stage, 'rescue/root.sqfs'));
  copyFileSync(o.vmlinuz, join(stage, 'boot/vmlinuz'));
  copyFileSync(o.initrd, join(stage, 'boot/initrd.img'));
  writeFileSync(join(stage, 'boot/grub/grub.cfg'), grubConfig(o.id, o.timeout, o.release));

  // UEFI: shim (signed by Microsoft's UEFI CA) → Debian's signed GRUB for CDs → the signed kernel.
  const shim = join(boot.dir, 'usr/lib/shim/shimx64.efi.signed');
  const mok = join(boot.dir, 'usr/lib/shim/mmx64.efi.signed');
  const grubEfi = join(boot.dir, 'usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed');
  copyFileSync(shim, join(stage, 'EFI/boot/bootx64.efi'));
  copyFileSync(grubEfi, join(stage, 'EFI/boot/grubx64.efi'));
  copyFileSync(mok, join(stage, 'EFI/boot/mmx64.efi'));
  // For network boot under Secure Boot: the same shim, and the signed GRUB built for the network.
  mkdirSync(join(stage, 'boot/netboot'), { recursive: true });
  copyFileSync(shim, join(stage, 'boot/netboot/shimx64.efi'));
  copyFileSync(
    join(boot.dir, 'usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed'),
    join(stage, 'boot/netboot/grubx64.efi'),
  );
  const efiImg = join(o.work, 'efi.img');
  rmSync(efiImg, { force: true });
  await tool('mkfs.vfat', ['-C', '-n', 'RESCUE-EFI', efiImg, '8192'], 'making the EFI system partition');
  await tool('mmd', ['-i', efiImg, '::/EFI', '::/EFI/boot'], 'making the EFI folders');
  await tool(
    'mcopy',
    [
      '-i',
      efiImg,
      join(stage, 'EFI/boot/bootx64.efi'),
      join(stage, 'EFI/boot/grubx64.efi'),
      join(stage, 'EFI/boot/mmx64.efi'),
      '::/EFI/boot/',
    ],
    'copying the EFI boot loaders',
  );

  // BIOS: GRUB's El Torito core with a small config that finds this build's files.
  const pc = join(boot.dir, 'usr/lib/grub/i386-pc');
  cpSync(pc, join(stage, 'boot/grub/i386-pc'), {
    recursive: true,
    filter: (src) => statSync(src).isDirectory() || /\.(mod|lst)$/.test(src),
  });
  const embedded = join(o.work, 'grub-bios.cfg');
  writeFileSync(
    embedded,
    `search --no-floppy --file --set=root /rescue/id-${o.id}\nset prefix=($root)/boot/grub\nconfigfile ($root)/boot/grub/grub.cfg\n`,
  );
  const core = join(o.work, 'core.img');
  await tool(
    join(boot.dir, 'usr/bin/grub-mkimage'),
    [
      '-d',
      pc,
      '-O',
      'i386-pc-eltorito',
      '-p',
      '/boot/grub',
      '-c',
      embedded,
      '-o',
      core,
      'biosdisk',
      'iso9660',
      'part_msdos',
      'part_gpt',
      'search',
      'search_fs_file',
      'configfile',
      'normal',
      'linux',
      'echo',
      'test',
      'serial',
      'terminal',
    ],
    'making the BIOS boot image',
  );
  copyFileSync(core, join(stage, 'boot/grub/i386-pc/eltorito.img'));

  rmSync(o.out, { force: true });
  await tool(
    'xorriso',
    [
      '-as',
      'mkisofs',
      '-quiet',
      '-iso-level',
      '3',
      '-full-iso9660-filenames',
      '-joliet',
      '-joliet-long',
      '-rational-rock',
      '-volid',
      o.volid ?? 'RESCUE',
      '--grub2-mbr',
      join(pc, 'boot_hybrid.img'),
      '-partition_offset',
      '16',
      '--mbr-force-bootable',
      '-append_partition',
      '2',
      '0xef',
      efiImg,
      '-appended_part_as_gpt',
      '-iso_mbr_part_type',
      '0x00',
      '-c',
      'boot/grub/boot.cat',
      '-b',
      'boot/grub/i386-pc/eltorito.img',
      '-no-emul-boot',
      '-boot-load-size',
      '4',
      '-boot-info-table',
      '--grub2-boot-info',
      '-eltorito-alt-boot',
      '-e',
      '--interval:appended_partition_2:all::',
      '-no-emul-boot',
      '-o',
      o.out,
      stage,
    ],
    'writing the ISO',
  );
}
