/**
 * `rescue media usb`: the ISO written raw onto a USB stick, then read back and compared.
 *
 * Before anything is written the stick is described (model, serial, size, transport) and checked:
 * a whole disk, not in use (never relaxed), big enough, and removable or on USB unless forced — a
 * fixed disk is far more likely a mistake than a rescue stick. The device is opened exclusively
 * (O_EXCL), so a mount that appears meanwhile makes the write fail instead of corrupting it.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { assertNotInUse, type BlockDevice, deviceUsage } from '../rescue/engine/devices/discovery.ts';
import { RescueError } from '../rescue/engine/errors.ts';

const run = promisify(execFile);
const CHUNK = 4 << 20;

export interface UsbProgress {
  phase: 'write' | 'verify';
  done: number;
  total: number;
  /** Bytes per second in this phase so far. */
  rate: number;
}

export interface UsbTarget {
  device: BlockDevice;
  /** "SanDisk Ultra (serial 4C53…), 14.9 GiB, USB, removable" */
  description: string;
}

function gib(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : `${(n / (1 << 20)).toFixed(0)} MiB`;
}

/** Checks that `iso` is an ISO 9660 image (a "CD001" volume descriptor at sector 16). */
export async function assertIso(iso: string): Promise<number> {
  const st = await stat(iso).catch(() => {
    throw new RescueError(
      'E_MEDIA_NOT_ISO',
      `${iso} does not exist`,
      'Build one first: rescue media iso --out FILE.',
    );
  });
  const fh = await open(iso, 'r');
  try {
    const b = Buffer.alloc(6);
    await fh.read(b, 0, 6, 16 * 2048);
    if (!st.isFile() || b.toString('latin1', 1, 6) !== 'CD001')
      throw new RescueError(
        'E_MEDIA_NOT_ISO',
        `${iso} is not an ISO image (no ISO 9660 volume descriptor)`,
        'Give the .iso file that rescue media iso wrote.',
      );
  } finally {
    await fh.close();
  }
  return st.size;
}

/** What the stick is, and every reason not to write to it. */
export async function checkUsbTarget(
  devicePath: string,
  isoBytes: number,
  force: boolean,
): Promise<UsbTarget> {
  const usage = await deviceUsage(devicePath);
  if (usage.kind !== 'disk' || !usage.disk)
    throw new RescueError(
      'E_MEDIA_NOT_DISK',
      `${devicePath} is ${usage.kind === 'partition' ? 'a partition' : 'not a disk'}: the ISO goes onto the whole stick`,
      `Give the stick itself (for example /dev/sdb, not /dev/sdb1); rescue list shows the disks.`,
    );
  const d = usage.disk;
  const name = [d.vendor, d.model].filter(Boolean).join(' ') || d.name;
  const description = `${name}${d.serial ? ` (serial ${d.serial})` : ''}, ${gib(d.size)}, ${d.transport}${d.removable ? ', removable' : ''}`;
  await assertNotInUse(devicePath);
  if (d.readOnly)
    throw new RescueError(
      'E_MEDIA_READ_ONLY',
      `${devicePath} (${description}) is read-only`,
      'Slide the write-protect switch of the stick off, or use another one.',
    );
  if (d.size < isoBytes)
    throw new RescueError(
      'E_MEDIA_TOO_SMALL',
      `${devicePath} (${description}) is smaller than the ISO (${gib(isoBytes)})`,
      'Use a bigger stick.',
    );
  if (!d.removable && d.transport !== 'usb' && !force)
    throw new RescueError(
      'E_MEDIA_NOT_REMOVABLE',
      `${devicePath} (${description}) is a fixed disk, not a removable USB stick`,
      'Check that this is the right disk; if it is, add --force.',
    );
  return { device: d, description };
}

async function hashFile(
  path: string,
  bytes: number,
  onChunk?: (done: number) => void,
  signal?: AbortSignal,
): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let pos = 0; pos < bytes; ) {
      signal?.throwIfAborted();
      const want = Math.min(CHUNK, bytes - pos);
      const { bytesRead } = await fh.read(buf, 0, want, pos);
      if (bytesRead !== want)
        throw new RescueError(
          'E_MEDIA_VERIFY',
          `${path} ended after ${pos + bytesRead} of ${bytes} bytes`,
          'Write the stick again, or use another one.',
        );
      h.update(buf.subarray(0, want));
      pos += want;
      onChunk?.(pos);
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

export interface UsbWriteResult {
  bytes: number;
  sha256: string;
  writeSeconds: number;
  verifySeconds: number;
}

/** Writes `iso` to the (already checked) device, then reads it back through a flushed cache. */
export async function writeIso(o: {
  iso: string;
  device: string;
  signal?: AbortSignal;
  onProgress?: (p: UsbProgress) => void;
}): Promise<UsbWriteResult> {
  const total = await assertIso(o.iso);
  const src = await open(o.iso, 'r');
  const t0 = Date.now();
  const h = createHash('sha256');
  let dst: Awaited<ReturnType<typeof open>>;
  try {
    dst = await open(o.device, constants.O_WRONLY | constants.O_EXCL);
  } catch (e) {
    await src.close();
    throw new RescueError(
      'E_DEVICE_IN_USE',
      `${o.device} cannot be opened for writing alone (${(e as NodeJS.ErrnoException).code}): something uses it`,
      'Unmount it and close the programs that use it, then try again.',
    );
  }
  try {
    const buf = Buffer.alloc(CHUNK);
    for (let pos = 0; pos < total; ) {
      o.signal?.throwIfAborted();
      const want = Math.min(CHUNK, total - pos);
      const { bytesRead } = await src.read(buf, 0, want, pos);
      if (bytesRead !== want)
        throw new RescueError('E_MEDIA_NOT_ISO', `${o.iso} changed while it was written`, 'Write it again.');
      h.update(buf.subarray(0, want));
      // Whole 4 KiB blocks for the device (an ISO is a multiple of 2 KiB): the tail padded with zeros.
      const len = Math.ceil(want / 4096) * 4096;
      buf.fill(0, want, len);
      await dst.write(buf, 0, len, pos);
      pos += want;
      o.onProgress?.({
        phase: 'write',
        done: pos,
        total,
        rate: pos / Math.max(0.001, (Date.now() - t0) / 1000),
      });
    }
    await dst.sync();
  } finally {
    await dst.close();
    await src.close();
  }
  const writeSeconds = (Date.now() - t0) / 1000;
  const sha256 = h.digest('hex');
  // Read back what the stick holds, not what the kernel still caches.
  await run('blockdev', ['--flushbufs', o.device]).catch(() => {});
  const t1 = Date.now();
  const back = await hashFile(
    o.device,
    total,
    (done) =>
      o.onProgress?.({
        phase: 'verify',
        done,
        total,
        rate: done / Math.max(0.001, (Date.now() - t1) / 1000),
      }),
    o.signal,
  );
  if (back !== sha256)
    throw new RescueError(
      'E_MEDIA_VERIFY',
      `${o.device} does not hold what was written (read back sha256 ${back.slice(0, 16)}…, written ${sha256.slice(0, 16)}…)`,
      'The stick may be failing or fake (smaller than it claims): use another one.',
    );
  // Let the kernel see the new partition table (the EFI partition), so the stick can be looked at.
  await run('blockdev', ['--rereadpt', o.device]).catch(() => {});
  return { bytes: total, sha256, writeSeconds, verifySeconds: (Date.now() - t1) / 1000 };
}
