/**
 * The rescue root: the .debs unpacked (no maintainer scripts: nothing here needs them but what
 * `configure` does by hand), trimmed of what a rescue system never uses, our boot scripts and the
 * `rescue` binary added.
 */
import { execFile } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { RescueError } from '../rescue/engine/errors.ts';
import { type Deb, LEFT_OUT } from './packages.ts';

const run = promisify(execFile);

/** Kernel module folders (under kernel/) a rescue system never needs: sound, cameras, radios, … */
const MODULES_LEFT_OUT = [
  'sound',
  'drivers/media',
  'drivers/infiniband',
  'drivers/iio',
  'drivers/staging',
  'drivers/comedi',
  'drivers/isdn',
  'drivers/bluetooth',
  'drivers/net/wireless',
  'drivers/net/wwan',
  'drivers/net/can',
  'drivers/net/ethernet/mellanox',
  'drivers/net/ethernet/chelsio',
  'drivers/net/ethernet/qlogic',
  'drivers/net/ethernet/cavium',
  'drivers/net/ethernet/huawei',
  'drivers/net/ethernet/sfc',
  'drivers/net/ethernet/netronome',
  'drivers/net/ethernet/emulex',
  'drivers/net/ethernet/brocade',
  'drivers/net/ethernet/pensando',
  'drivers/net/ethernet/intel/ice',
  'drivers/net/ethernet/intel/i40e',
  'drivers/net/ethernet/intel/iavf',
  'drivers/net/ethernet/intel/ixgbe',
  'drivers/net/ethernet/intel/ixgbevf',
  'drivers/net/ethernet/broadcom/bnxt',
  'drivers/gpu/drm/amd',
  'drivers/gpu/drm/radeon',
  'drivers/target',
  'drivers/mtd',
  'drivers/w1',
  'drivers/hwmon',
  'drivers/watchdog',
  'drivers/gnss',
  'drivers/misc',
  'drivers/scsi/lpfc',
  'drivers/scsi/qla2xxx',
  'drivers/scsi/qla4xxx',
  'drivers/scsi/bfa',
  'drivers/scsi/be2iscsi',
  'drivers/scsi/fcoe',
  'drivers/scsi/bnx2fc',
  'drivers/scsi/qedf',
  'drivers/scsi/qedi',
  'drivers/scsi/csiostor',
  'drivers/scsi/cxgbi',
  'net/wireless',
  'net/mac80211',
  'net/bluetooth',
  'net/netfilter',
  'net/ipv4/netfilter',
  'net/ipv6/netfilter',
  'net/bridge/netfilter',
  'net/sched',
  'net/openvswitch',
  'net/sunrpc',
  'net/ceph',
  'net/rxrpc',
  'net/nfc',
  'net/mpls',
  'net/batman-adv',
  'net/6lowpan',
  'net/ieee802154',
  'net/mac802154',
  'fs/nfs',
  'fs/nfsd',
  'fs/ocfs2',
  'fs/gfs2',
  'fs/ceph',
  'fs/afs',
  'fs/coda',
  'fs/ubifs',
  'fs/jffs2',
  'fs/orangefs',
  'fs/dlm',
];

/** Whole folders of /usr/share and friends that nothing on the rescue system reads. */
const FILES_LEFT_OUT = [
  'usr/share/doc',
  'usr/share/man',
  'usr/share/info',
  'usr/share/locale',
  'usr/share/lintian',
  'usr/share/bug',
  'usr/share/bash-completion',
  'usr/share/zsh',
  'usr/share/gtk-doc',
  'usr/share/help',
  'usr/share/gdb',
  'usr/share/apport',
  'usr/share/initramfs-tools',
  'usr/share/pkgconfig',
  'usr/include',
  'usr/lib/x86_64-linux-gnu/pkgconfig',
  'usr/lib/x86_64-linux-gnu/gstreamer1.0',
  'usr/lib/x86_64-linux-gnu/gstreamer-1.0',
  'usr/share/gstreamer-1.0',
  'etc/kernel',
  'etc/initramfs-tools',
  'var/cache',
  'var/lib/dpkg',
];

export interface RootOptions {
  debs: Deb[];
  root: string;
  /** The files of iso-builder/files/root (our init scripts and settings). */
  overlay: string;
  /** The built rescue binary and its rescue-lib folder (build/sea.ts). */
  binary: string;
  release: string;
  log: (line: string) => void;
}

export interface RootResult {
  kernelVersion: string;
  /** The kernel, taken out of the root (it is loaded by the boot loader, not from the root). */
  vmlinuz: string;
}

async function unpack(deb: Deb, root: string): Promise<void> {
  // tar --keep-directory-symlink: the packages still ship /bin, /lib …, which are links into /usr here.
  await run(
    'sh',
    ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2"', 'sh', deb.file, root],
    {
      maxBuffer: 16 << 20,
    },
  ).catch((e: { stderr?: string }) => {
    throw new RescueError(
      'E_ISO_BUILD',
      `unpacking ${deb.name} ${deb.version} failed: ${String(e.stderr ?? e).trim()}`,
      'Remove the package cache folder (it may hold a damaged download) and build again.',
    );
  });
}

/** Runs `fn` over `items`, `width` at a time. */
async function inParallel<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

function busyboxApplets(root: string): Promise<string[]> {
  return run(join(root, 'usr/bin/busybox'), ['--list-full']).then((r) =>
    r.stdout.split('\n').filter(Boolean),
  );
}

/** Debian's usual users and groups, as udev rules and the tools expect them. */
const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  // The kiosk display runs as this user (cage refuses root; seatd lends it the screen and input).
  'kiosk:x:900:900:kiosk display:/run/kiosk:/usr/sbin/nologin',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
  '',
].join('\n');
const GROUPS = [
  'root:x:0:',
  'tty:x:5:',
  'disk:x:6:',
  'lp:x:7:',
  'kmem:x:15:',
  'dialout:x:20:',
  'cdrom:x:24:',
  'floppy:x:25:',
  'tape:x:26:',
  'audio:x:29:',
  'video:x:44:',
  'utmp:x:43:',
  'plugdev:x:46:',
  'input:x:101:',
  'sgx:x:102:',
  'kvm:x:103:',
  'render:x:104:',
  'kiosk:x:900:',
  'nogroup:x:65534:',
];

export async function assembleRoot(o: RootOptions): Promise<RootResult> {
  const { root, log } = o;
  rmSync(root, { recursive: true, force: true });
  for (const d of [
    'usr/bin',
    'usr/sbin',
    'usr/lib',
    'usr/lib64',
    'etc',
    'root',
    'tmp',
    'run',
    'var',
    'proc',
    'sys',
    'dev',
    'mnt',
    'media',
  ])
    mkdirSync(join(root, d), { recursive: true });
  for (const [link, to] of [
    ['bin', 'usr/bin'],
    ['sbin', 'usr/sbin'],
    ['lib', 'usr/lib'],
    ['lib64', 'usr/lib64'],
  ])
    symlinkSync(to, join(root, link));
  const debs = o.debs.filter((d) => !LEFT_OUT.has(d.name));
  log(`unpacking ${debs.length} packages (${o.debs.length - debs.length} left out: never used here)`);
  await inParallel(debs, 4, (d) => unpack(d, root));

  // The kernel: its version, the image out of the root, the modules trimmed.
  const modulesDir = join(root, 'usr/lib/modules');
  const versions = existsSync(modulesDir) ? readdirSync(modulesDir) : [];
  if (versions.length !== 1)
    throw new RescueError(
      'E_ISO_BUILD',
      `expected one kernel in the root, found ${versions.length}`,
      'This is a bug in the package list.',
    );
  const kernelVersion = versions[0];
  const vmlinuz = join(dirname(root), `vmlinuz-${kernelVersion}`);
  renameSync(join(root, 'boot', `vmlinuz-${kernelVersion}`), vmlinuz);
  rmSync(join(root, 'boot'), { recursive: true, force: true });
  for (const m of MODULES_LEFT_OUT)
    rmSync(join(modulesDir, kernelVersion, 'kernel', m), { recursive: true, force: true });
  for (const f of FILES_LEFT_OUT) rmSync(join(root, f), { recursive: true, force: true });
  await run('depmod', ['-a', '-b', root, kernelVersion]);

  // busybox for every command the packages do not bring (init, sh, udhcpc, wget, …).
  const own = new Set<string>();
  for (const applet of await busyboxApplets(root)) {
    const path = join(root, applet);
    let present = false;
    try {
      lstatSync(path);
      present = true;
    } catch {
      // not there
    }
    if (present) continue;
    mkdirSync(dirname(path), { recursive: true });
    symlinkSync('/usr/bin/busybox', path);
    own.add(applet);
  }
  if (!own.has('sbin/init') && !existsSync(join(root, 'sbin/init')))
    throw new RescueError('E_ISO_BUILD', 'busybox gave no init', 'This is a bug in the package list.');

  // Settings that maintainer scripts would have made.
  writeFileSync(join(root, 'etc/passwd'), PASSWD);
  writeFileSync(
    join(root, 'etc/shadow'),
    'root:*:20000:0:99999:7:::\nkiosk:!:20000:0:99999:7:::\nnobody:*:20000:0:99999:7:::\n',
    { mode: 0o600 },
  );
  writeFileSync(join(root, 'etc/group'), `${GROUPS.join('\n')}\n`);
  writeFileSync(join(root, 'etc/hostname'), 'rescue\n');
  writeFileSync(join(root, 'etc/hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\trescue\n::1\tlocalhost\n');
  writeFileSync(join(root, 'etc/fstab'), '');
  writeFileSync(join(root, 'etc/resolv.conf'), '');
  writeFileSync(
    join(root, 'etc/os-release'),
    `PRETTY_NAME="Rescue ${o.release}"\nNAME="Rescue"\nID=rescue\nID_LIKE=debian\nVERSION="${o.release}"\n`,
  );
  writeFileSync(join(root, 'etc/rescue-release'), `${o.release}\n`);
  mkdirSync(join(root, 'etc/udev'), { recursive: true });
  await run('ldconfig', ['-r', root]);
  // WebKit's processes abort when GSettings has no compiled schemas.
  const schemas = join(root, 'usr/share/glib-2.0/schemas');
  if (existsSync(schemas))
    await run('chroot', [root, '/usr/bin/glib-compile-schemas', '/usr/share/glib-2.0/schemas']);

  // Our boot scripts, then the binary.
  cpSync(o.overlay, root, { recursive: true });
  const lib = join(root, 'usr/lib/rescue');
  mkdirSync(lib, { recursive: true });
  cpSync(o.binary, join(lib, 'rescue'));
  chmodSync(join(lib, 'rescue'), 0o755);
  const rescueLib = join(dirname(o.binary), 'rescue-lib');
  if (existsSync(rescueLib)) cpSync(rescueLib, join(lib, 'rescue-lib'), { recursive: true });
  rmSync(join(root, 'usr/bin/rescue'), { force: true });
  symlinkSync(relative(join(root, 'usr/bin'), join(lib, 'rescue')), join(root, 'usr/bin/rescue'));
  return { kernelVersion, vmlinuz };
}
