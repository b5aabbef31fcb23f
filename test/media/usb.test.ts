/**
 * `rescue media usb` on real loop devices: a real ISO (made by xorriso) is written and read back,
 * `cmp` is the oracle; the refusals (fixed disk without --force, partition, in use, too small, not an
 * ISO, no confirmation) leave the target untouched.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rescue } from '../fixtures/cli.ts';
import { LoopLab, partitionedImage } from '../fixtures/devices.ts';
import { sha256 } from '../fixtures/lab.ts';

const run = promisify(execFile);

describe('rescue media usb', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rescue-usb-'));
  const lab = new LoopLab();
  const iso = join(dir, 'small.iso');

  beforeAll(async () => {
    const content = join(dir, 'content');
    mkdirSync(join(content, 'rescue'), { recursive: true });
    // Incompressible data, so a half-written stick cannot pass by accident.
    writeFileSync(
      join(content, 'rescue/data.bin'),
      Buffer.from(Array.from({ length: 3 << 20 }, (_, i) => (i * 7919) % 251)),
    );
    writeFileSync(join(content, 'README'), 'a small ISO for the USB writer test\n');
    await run('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-V', 'USBTEST', '-o', iso, content]);
  });

  afterAll(async () => {
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  async function stick(name: string, mib: number): Promise<string> {
    const img = join(dir, name);
    writeFileSync(img, '');
    await run('truncate', ['-s', `${mib}M`, img]);
    // Something to overwrite: the old contents must not survive where the ISO goes.
    await run('dd', [
      'if=/dev/urandom',
      `of=${img}`,
      'bs=1M',
      `count=${Math.min(4, mib)}`,
      'conv=notrunc',
      'status=none',
    ]);
    return lab.attach(img, 0);
  }

  it('refuses a fixed disk without --force and leaves it untouched', async () => {
    const dev = await stick('fixed.img', 16);
    const before = sha256(readFileSync(dev));
    const r = await rescue(['media', 'usb', '--device', dev, '--iso', iso, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[E_MEDIA_NOT_REMOVABLE]');
    expect(r.stderr).toContain('add --force');
    expect(sha256(readFileSync(dev))).toBe(before);
  });

  it('writes with --force, reads back, and the device holds exactly the ISO', async () => {
    const dev = await stick('forced.img', 16);
    const r = await rescue(['media', 'usb', '--device', dev, '--iso', iso, '--force', '--yes']);
    expect(r.stderr + r.stdout).not.toContain('internal error');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('written and read back identical');
    expect(r.stderr).toMatch(/Writing small\.iso .* to \/dev\/loop\d+: .*16\.0 MiB|Writing small\.iso/);
    const { size } = await import('node:fs').then((f) => f.statSync(iso));
    // Oracle: cmp of the ISO against the device's first bytes.
    await run('cmp', ['-n', String(size), iso, dev]);
    // The stick is a real ISO 9660 filesystem now: blkid says so.
    const { stdout } = await run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev]);
    expect(stdout.trim()).toBe('iso9660');
  });

  it('without --yes and without a terminal it asks for confirmation and writes nothing', async () => {
    const dev = await stick('unconfirmed.img', 16);
    const before = sha256(readFileSync(dev));
    const r = await rescue(['media', 'usb', '--device', dev, '--iso', iso, '--force']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[E_CONFIRMATION_REQUIRED]');
    expect(r.stderr).toContain('Everything on this stick is lost');
    expect(sha256(readFileSync(dev))).toBe(before);
  });

  it('refuses a stick smaller than the ISO, a partition, a disk in use, and a file that is no ISO', async () => {
    const tiny = await stick('tiny.img', 2);
    let r = await rescue(['media', 'usb', '--device', tiny, '--iso', iso, '--force', '--yes']);
    expect(r.stderr).toContain('[E_MEDIA_TOO_SMALL]');

    const img = await partitionedImage(join(dir, 'parted.img'), 32, [20]);
    const dev = await lab.attach(img, 1);
    r = await rescue(['media', 'usb', '--device', `${dev}p1`, '--iso', iso, '--force', '--yes']);
    expect(r.stderr).toContain('[E_MEDIA_NOT_DISK]');

    await run('mkfs.ext4', ['-q', `${dev}p1`]);
    await lab.mount(`${dev}p1`, join(dir, 'mnt'));
    r = await rescue(['media', 'usb', '--device', dev, '--iso', iso, '--force', '--yes']);
    expect(r.stderr).toContain('[E_DEVICE_IN_USE]');
    await lab.umount(join(dir, 'mnt'));

    writeFileSync(join(dir, 'not.iso'), Buffer.alloc(1 << 20, 1));
    r = await rescue(['media', 'usb', '--device', dev, '--iso', join(dir, 'not.iso'), '--force', '--yes']);
    expect(r.stderr).toContain('[E_MEDIA_NOT_ISO]');
    for (const res of [r]) expect(res.code).toBe(1);
  });
});
