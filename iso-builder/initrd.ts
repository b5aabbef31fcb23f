/**
 * The small initrd: busybox, the drivers needed to reach the boot medium (CD, USB, SATA, NVMe,
 * virtio, SD) and to mount the root (loop, squashfs, overlay, iso9660), and iso-builder/files/initrd/init.
 * A cpio (newc) archive compressed with zstd, which Debian's kernel unpacks itself.
 */
import { execFile } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Module folders (under kernel/) copied whole; their dependencies follow from modules.dep. */
const MODULE_TREES = [
  'drivers/ata',
  'drivers/cdrom',
  'drivers/scsi/sd_mod.ko',
  'drivers/scsi/sr_mod.ko',
  'drivers/scsi/virtio_scsi.ko',
  'drivers/scsi/vmw_pvscsi.ko',
  'drivers/scsi/hv_storvsc.ko',
  'drivers/scsi/scsi_mod.ko',
  'drivers/scsi/scsi_common.ko',
  'drivers/nvme',
  'drivers/block/loop.ko',
  'drivers/block/virtio_blk.ko',
  'drivers/virtio',
  'drivers/usb/host',
  'drivers/usb/storage',
  'drivers/usb/core',
  'drivers/usb/common',
  'drivers/mmc',
  'drivers/pci/controller/vmd.ko',
  'fs/isofs',
  'fs/squashfs',
  'fs/overlayfs',
];

/** "kernel/a.ko: kernel/b.ko kernel/c.ko" → map of every module to what it needs. */
function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    deps.set(
      line.slice(0, i),
      line
        .slice(i + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
  }
  return deps;
}

export async function buildInitrd(o: {
  root: string;
  kernelVersion: string;
  init: string;
  work: string;
  out: string;
}): Promise<void> {
  const dir = join(o.work, 'initrd');
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['bin', 'dev', 'proc', 'sys', 'run', 'tmp']) mkdirSync(join(dir, d), { recursive: true });
  copyFileSync(join(o.root, 'usr/bin/busybox'), join(dir, 'bin/busybox'));
  chmodSync(join(dir, 'bin/busybox'), 0o755);
  const { stdout } = await run(join(dir, 'bin/busybox'), ['--list']);
  for (const applet of stdout.split('\n').filter(Boolean))
    if (applet !== 'busybox') symlinkSync('busybox', join(dir, 'bin', applet));
  cpSync(o.init, join(dir, 'init'));
  chmodSync(join(dir, 'init'), 0o755);

  // Modules: the listed trees plus everything they depend on, then their own modules.dep.
  const from = join(o.root, 'usr/lib/modules', o.kernelVersion);
  const to = join(dir, 'lib/modules', o.kernelVersion);
  const deps = parseModulesDep(readFileSync(join(from, 'modules.dep'), 'utf8'));
  const wanted = new Set<string>();
  const add = (m: string) => {
    if (wanted.has(m)) return;
    wanted.add(m);
    for (const d of deps.get(m) ?? []) add(d);
  };
  for (const t of MODULE_TREES)
    for (const m of deps.keys()) if (m === `kernel/${t}` || m.startsWith(`kernel/${t}/`)) add(m);
  for (const m of wanted) {
    mkdirSync(dirname(join(to, m)), { recursive: true });
    copyFileSync(join(from, m), join(to, m));
  }
  for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo'])
    if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
  await run('depmod', ['-a', '-b', dir, o.kernelVersion]);
  symlinkSync('bin', join(dir, 'sbin'));

  await packCpio(dir, o.out);
}

/** A directory as a zstd-compressed newc cpio (the kernel's initramfs format), root-owned. */
export async function packCpio(dir: string, out: string, compress = true): Promise<void> {
  const pipeline = compress
    ? 'cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet | zstd -q -19 -T0 > "$2"'
    : 'cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet > "$2"';
  await run('sh', ['-c', pipeline, 'sh', dir, out], { maxBuffer: 16 << 20 });
  // Boot loaders and `cat` may put another archive right after this one: the kernel finds the next
  // one only at a 4-byte boundary (zeros between archives are skipped).
  const size = statSync(out).size;
  if (size % 4 !== 0) appendFileSync(out, Buffer.alloc(4 - (size % 4)));
}
