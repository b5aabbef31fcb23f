/**
 * `rescue media pxe`: what a network boot needs, taken out of a built ISO (so PXE and the stick boot
 * exactly the same system): the kernel, the initrd, the rescue root wrapped as a second initrd
 * (a plain cpio holding rescue/root.sqfs, which the initrd finds in memory), and an iPXE script.
 */
import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RescueError } from '../rescue/engine/errors.ts';
import { packCpio } from './initrd.ts';
import { assertIso } from './usb.ts';

const run = promisify(execFile);

export interface PxeFiles {
  dir: string;
  id: string;
  release: string;
  files: Record<string, number>;
}

/** The iPXE script; relative names are fetched from where the script came from. */
export function ipxeScript(id: string, release: string): string {
  return [
    '#!ipxe',
    `# Rescue ${release} (build ${id}): kernel, initrd and the rescue root, all from this folder.`,
    `echo Loading Rescue ${release}...`,
    `kernel vmlinuz initrd=initrd.img initrd=rescue-root.cpio rescue.id=${id} console=ttyS0,115200 console=tty0 quiet \${rescue-args}`,
    'initrd initrd.img',
    'initrd rescue-root.cpio',
    'boot',
    '',
  ].join('\n');
}

export async function pxeFromIso(iso: string, out: string): Promise<PxeFiles> {
  await assertIso(iso);
  mkdirSync(out, { recursive: true });
  const tmp = join(out, `.extract-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'rescue'), { recursive: true });
  try {
    await run('xorriso', [
      '-osirrox',
      'on',
      '-indev',
      iso,
      '-extract',
      '/boot/vmlinuz',
      join(out, 'vmlinuz'),
      '-extract',
      '/boot/initrd.img',
      join(out, 'initrd.img'),
      '-extract',
      '/rescue',
      join(tmp, 'rescue'),
    ]).catch((e: { stderr?: string }) => {
      throw new RescueError(
        'E_MEDIA_NOT_ISO',
        `${iso} does not hold a rescue system (${String(e.stderr ?? e)
          .trim()
          .split('\n')
          .pop()})`,
        'Give an ISO made by rescue media iso.',
      );
    });
    const marker = readdirSync(join(tmp, 'rescue')).find((f) => f.startsWith('id-'));
    if (!marker)
      throw new RescueError(
        'E_MEDIA_NOT_ISO',
        `${iso} has no rescue build marker`,
        'Give an ISO made by rescue media iso.',
      );
    const id = marker.slice(3);
    const release = readFileSync(join(tmp, 'rescue', marker), 'utf8').trim();
    // The second initrd: just rescue/root.sqfs (and the marker), uncompressed — squashfs already is.
    const cpioDir = join(tmp, 'cpio');
    mkdirSync(join(cpioDir, 'rescue'), { recursive: true });
    for (const f of ['root.sqfs', marker]) renameSync(join(tmp, 'rescue', f), join(cpioDir, 'rescue', f));
    await packCpio(cpioDir, join(out, 'rescue-root.cpio'), false);
    renameSync(join(tmp, 'rescue', 'manifest.txt'), join(out, 'manifest.txt'));
    writeFileSync(join(out, 'boot.ipxe'), ipxeScript(id, release));
    const names = ['vmlinuz', 'initrd.img', 'rescue-root.cpio', 'boot.ipxe', 'manifest.txt'];
    // Secure Boot network boot: Microsoft-signed shim → Debian-signed network GRUB (in ISOs made
    // since they carry boot/netboot; older ones simply lack it).
    await run('xorriso', [
      '-osirrox',
      'on',
      '-indev',
      iso,
      '-extract',
      '/boot/netboot',
      join(tmp, 'netboot'),
    ]).catch(() => undefined);
    for (const f of ['shimx64.efi', 'grubx64.efi']) {
      if (!existsSync(join(tmp, 'netboot', f))) continue;
      renameSync(join(tmp, 'netboot', f), join(out, f));
      names.push(f);
    }
    const files: Record<string, number> = {};
    for (const f of names) files[f] = statSync(join(out, f)).size;
    return { dir: out, id, release, files };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
