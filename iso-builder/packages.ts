/**
 * What goes into the rescue system, as Debian packages, and how they are fetched.
 *
 * The set is resolved by the host's apt against an empty package database (so it is exactly the
 * closure of what is listed here, nothing the host happens to have), downloaded into a cache that
 * later builds reuse, and recorded in a manifest: name, version, architecture and sha256 of every
 * .deb, so a build can be repeated from the same inputs.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RescueError } from '../rescue/engine/errors.ts';

const run = promisify(execFile);

/** Listed by role; their dependencies come along. */
export const ROOT_PACKAGES = [
  // The kernel (Debian's, signed for Secure Boot) and the free firmware.
  'linux-image-amd64',
  'firmware-linux-free',
  // A small userland: busybox is the shell, init, DHCP client and everyday tools.
  'busybox-static',
  'kmod',
  'udev',
  // What the engine calls: partitioning, filesystems, resizing, checking, volumes, shares.
  'util-linux',
  'mount',
  'fdisk',
  'gdisk',
  'e2fsprogs',
  'ntfs-3g',
  'dosfstools',
  'exfatprogs',
  'exfat-fuse',
  'fuse3',
  'btrfs-progs',
  'xfsprogs',
  'lvm2',
  'cryptsetup-bin',
  'cifs-utils',
  // The engine's hot-plug watcher (ffi-rs → libudev) and Node's C++ runtime.
  'libudev1',
  'libstdc++6',
  // The kiosk: cage (a Wayland kiosk compositor) showing cog (WPE WebKit), software-rendered;
  // seatd hands the screen and input to cage, which refuses to run as root.
  'cage',
  'cog',
  'seatd',
  'xwayland', // cage 0.1.4 will not start without it, though our UI never uses X
  'libgl1-mesa-dri',
  'libglib2.0-bin', // glib-compile-schemas: WebKit's processes abort without compiled GSettings schemas
  'fonts-dejavu-core',
  'xkb-data',
] as const;

/**
 * Pulled in by dependencies but never used on a system that has no package manager, no systemd
 * and no interpreters: left out of the root (their files would only take space).
 */
export const LEFT_OUT = new Set([
  'adduser',
  'debconf',
  'dpkg',
  'initramfs-tools',
  'initramfs-tools-core',
  'iso-codes',
  'klibc-utils',
  'libklibc',
  'linux-base',
  'passwd',
  'perl',
  'perl-base',
  'perl-modules-5.36',
  'libperl5.36',
  'systemd',
  'systemd-sysv',
  'systemd-timesyncd',
  'dbus',
  'dbus-bin',
  'dbus-daemon',
  'dbus-system-bus-common',
  'dbus-session-bus-common',
  'dbus-user-session',
  'libpam-systemd',
  'sensible-utils',
  'ucf',
  'libgstreamer-plugins-bad1.0-0',
]);

/** The boot loaders: not installed into the root, their files are placed on the ISO. */
export const BOOT_PACKAGES = [
  'shim-signed',
  'shim-helpers-amd64-signed',
  'grub-efi-amd64-signed',
  'grub-pc-bin',
  'grub-efi-amd64-bin',
  'grub-common',
] as const;

export interface Deb {
  name: string;
  version: string;
  arch: string;
  file: string;
  sha256?: string;
}

function aptOptions(cache: string, state: string): string[] {
  return [
    '-o',
    `Dir::State::status=${join(state, 'status')}`,
    '-o',
    `Dir::Cache::archives=${cache}/`,
    '-o',
    'Debug::NoLocking=1',
    '-o',
    'APT::Install-Recommends=false',
    '-o',
    'APT::Sandbox::User=root',
  ];
}

function debFileName(name: string, version: string, arch: string): string {
  return `${name}_${version.replace(/:/g, '%3a')}_${arch}.deb`;
}

/** The closure of `packages` as apt resolves it against an empty system. */
async function resolveClosure(packages: readonly string[], cache: string, state: string): Promise<Deb[]> {
  const { stdout } = await run('apt-get', ['-s', 'install', ...aptOptions(cache, state), ...packages], {
    maxBuffer: 64 << 20,
  });
  const debs: Deb[] = [];
  for (const line of stdout.split('\n')) {
    // "Inst libc6 (2.36-9+deb12u14 Debian-Security:12.0/stable-security [amd64])"
    const m = /^Inst (\S+) \((\S+) .*\[([a-z0-9]+)\]\)/.exec(line);
    if (m)
      debs.push({ name: m[1], version: m[2], arch: m[3], file: join(cache, debFileName(m[1], m[2], m[3])) });
  }
  return debs;
}

/** sha256 of a whole file, hex (the manifest's entries and the binary's). */
export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Resolves and downloads `packages` into `cache` (reusing what is there). Runs `apt-get update`
 * once when the host's package lists do not know a package.
 */
export async function fetchPackages(
  packages: readonly string[],
  cache: string,
  log: (line: string) => void,
): Promise<Deb[]> {
  const state = join(cache, '.apt-state');
  mkdirSync(join(cache, 'partial'), { recursive: true });
  mkdirSync(state, { recursive: true });
  writeFileSync(join(state, 'status'), '');
  let debs: Deb[];
  try {
    debs = await resolveClosure(packages, cache, state);
  } catch (e) {
    log('apt does not know every package yet: apt-get update');
    await run('apt-get', ['update', '-qq']).catch((u: { stderr?: string }) => {
      throw new RescueError(
        'E_ISO_PACKAGES',
        `apt-get update failed: ${String(u.stderr ?? u)
          .trim()
          .split('\n')
          .pop()}`,
        "Check that this machine reaches Debian's package mirror (see /etc/apt/sources.list).",
      );
    });
    try {
      debs = await resolveClosure(packages, cache, state);
    } catch (e2) {
      const msg = String((e2 as { stderr?: string }).stderr ?? e).trim();
      throw new RescueError(
        'E_ISO_PACKAGES',
        `apt cannot resolve the rescue system's packages: ${msg.split('\n').slice(-3).join(' ')}`,
        'The builder needs Debian 12 (bookworm) package lists with the main component.',
      );
    }
  }
  const missing = debs.filter((d) => !existsSync(d.file));
  if (missing.length > 0) {
    log(`downloading ${missing.length} of ${debs.length} packages into ${cache}`);
    try {
      await run(
        'apt-get',
        ['install', '-y', '-qq', '--download-only', ...aptOptions(cache, state), ...packages],
        {
          maxBuffer: 64 << 20,
        },
      );
    } catch (e) {
      const msg = String((e as { stderr?: string }).stderr ?? e).trim();
      throw new RescueError(
        'E_ISO_PACKAGES',
        `downloading the rescue system's packages failed: ${msg.split('\n').slice(-2).join(' ')}`,
        "Check the connection to Debian's package mirror and the free space of the cache folder.",
      );
    }
  }
  for (const d of debs) {
    if (!existsSync(d.file))
      throw new RescueError(
        'E_ISO_PACKAGES',
        `apt did not leave ${d.name} ${d.version} in the cache (${d.file})`,
        'Remove the cache folder and build again.',
      );
    d.sha256 = await fileSha256(d.file);
  }
  return debs;
}

/** The manifest: one line per input, sorted, plus the tools that shaped the output. */
export function manifestText(sections: Record<string, Deb[]>, extra: string[]): string {
  const lines = ['# rescue ISO manifest: every input of this build', ...extra.map((l) => `# ${l}`)];
  for (const [section, debs] of Object.entries(sections)) {
    lines.push(`[${section}]`);
    for (const d of [...debs].sort((a, b) => a.name.localeCompare(b.name)))
      lines.push(`${d.name} ${d.version} ${d.arch} sha256:${d.sha256}`);
  }
  return `${lines.join('\n')}\n`;
}
