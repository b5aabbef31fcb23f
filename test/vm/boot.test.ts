/**
 * The rescue ISO in qemu (TCG unless a KVM probe boot works): SeaBIOS from CD with the kiosk on the screen, a real restore through
 * the API onto a blank NVMe disk that then boots by itself under OVMF, UEFI, UEFI Secure Boot with
 * Microsoft's keys, a USB stick written by `rescue media usb` under BIOS and UEFI, and the PXE files
 * booted as kernel + initrds without any medium.
 *
 * Figures (boot times, memory) are printed as "vm-figure" lines for the closing note.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rescue } from '../fixtures/cli.ts';
import { LoopLab } from '../fixtures/devices.ts';
import { bootableDisk, diskWithFolder, MARKER, testIso, VM_CACHE } from './fixtures.ts';
import { type Firmware, kvmWorks, Vm, type VmOptions } from './qemu.ts';

const run = promisify(execFile);
const SHOTS = join(import.meta.dirname, '../../.screenshots');
const figure = (what: string, value: string) => process.stdout.write(`vm-figure: ${what}: ${value}\n`);

/** A paired API client, as another computer on the LAN would be (the host is not loopback to the VM). */
class Remote {
  private cookie = '';
  private csrf = '';
  private readonly base: string;

  constructor(base: string) {
    this.base = base;
  }

  private headers(): Record<string, string> {
    return {
      'content-type': 'application/json',
      origin: this.base,
      cookie: this.cookie,
      'x-rescue-csrf': this.csrf,
    };
  }

  async pair(pin: string): Promise<void> {
    const r = await fetch(`${this.base}/api/pair`, {
      method: 'POST',
      headers: this.headers(),
      body: JSON.stringify({ pin }),
    });
    expect(r.status).toBe(200);
    this.cookie = (r.headers.get('set-cookie') ?? '').split(';')[0];
    this.csrf = ((await r.json()) as { csrf: string }).csrf;
  }

  async get<T>(path: string): Promise<T> {
    const r = await fetch(`${this.base}${path}`, { headers: this.headers() });
    if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  }

  async post<T>(path: string, body: unknown): Promise<{ status: number; body: T }> {
    const r = await fetch(`${this.base}${path}`, {
      method: 'POST',
      headers: this.headers(),
      body: JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as T };
  }
}

describe.sequential('the rescue ISO in qemu', () => {
  const dir = join(VM_CACHE, `run-${process.pid}`);
  const lab = new LoopLab();
  let iso = '';
  let original = '';
  let accel: 'kvm' | 'tcg' = 'tcg';
  const vms: Vm[] = [];
  const log = (l: string) => process.stdout.write(`${l}\n`);

  async function boot(o: Omit<VmOptions, 'log'>): Promise<Vm> {
    const vm = new Vm({ accel, ...o, log: process.env.RESCUE_VM_DEBUG ? log : undefined });
    vms.push(vm);
    await vm.start();
    return vm;
  }

  beforeAll(async () => {
    mkdirSync(dir, { recursive: true });
    mkdirSync(SHOTS, { recursive: true });
    const built = await testIso(log);
    iso = built.iso;
    if (built.seconds)
      figure('ISO build (zstd)', `${built.seconds.toFixed(0)} s, ${(built.bytes / 1e6).toFixed(1)} MB`);
    // The system to rescue later; its kernel + tiny initrd also probe whether KVM works here.
    original = await bootableDisk(join(dir, 'source'), iso);
    const kernel = { vmlinuz: join(dir, 'source/vmlinuz'), initrd: join(dir, 'source/initrd.img') };
    accel = (await kvmWorks(kernel, MARKER)) ? 'kvm' : 'tcg';
    figure('accelerator (KVM only if a probe boot succeeds)', accel);
  }, 900_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('SeaBIOS from CD: the API answers, the console shows the address and PIN, the kiosk draws our UI in 1 GiB', async () => {
    const vm = await boot({ firmware: 'bios', iso, vga: 'virtio', memoryMiB: 1024 });
    const ready = await vm.waitForHttp('/api/health', 240_000);
    figure(`SeaBIOS CD: qemu start → API ready (${accel})`, `${ready.toFixed(1)} s`);
    const banner = await vm.waitForSerial(
      /Rescue ready\. Other computers open: (http:\/\/10\.0\.2\.15\/)\s+PIN (\d{6})/,
      60_000,
    );
    expect(banner[1]).toBe('http://10.0.2.15/');
    // The kiosk: cog reports the page loaded; the screen then shows the UI, not a console.
    const until = Date.now() + 240_000;
    let kioskLog = '';
    while (Date.now() < until) {
      kioskLog = (await vm.sh('cat /run/rescue/kiosk.log 2>/dev/null')).out;
      if (/<http:\/\/127\.0\.0\.1\/> Loaded successfully/.test(kioskLog)) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    expect(kioskLog).toMatch(/<http:\/\/127\.0\.0\.1\/> Loaded successfully/);
    expect(kioskLog).not.toMatch(/Page load error|No GSettings schemas/);
    figure(
      `SeaBIOS CD: qemu start → kiosk page loaded (${accel})`,
      `${((Date.now() - vm.startedAt) / 1000).toFixed(1)} s`,
    );
    // Drawn: the screen holds the UI (a PNG of it is > 20 KB; a console, a blank or a half-drawn
    // screen compresses to a few KB). Under load the first frame can take a while after the load.
    const shot = join(SHOTS, 'vm-kiosk-bios.png');
    let drawn = 0;
    for (const stop = Date.now() + 120_000; Date.now() < stop; ) {
      await vm.screendump(shot);
      if (statSync(shot).size > 20_000) {
        drawn = (Date.now() - vm.startedAt) / 1000;
        break;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    expect(drawn, 'the kiosk never drew the UI (see .screenshots/vm-kiosk-bios.png)').toBeGreaterThan(0);
    figure(`SeaBIOS CD: qemu start → kiosk drawn (${accel})`, `${drawn.toFixed(1)} s`);
    await new Promise((r) => setTimeout(r, 5000)); // the picture to keep: with the disk list in
    await vm.screendump(shot);
    const mem = (await vm.sh("free -m | awk '/Mem:/ {print $3}'")).out.trim();
    figure('memory used with the kiosk up (of 1 GiB)', `${mem} MiB`);
    const ps = (await vm.sh('ps | grep -v grep | grep "cage -d"')).out;
    expect(ps).toMatch(/\d+ kiosk +cage -d/); // the compositor runs as the kiosk user, not root
    await vm.stop();
  }, 600_000);

  it('restores a backup found on an attached disk onto a blank NVMe disk through the API; the restored disk boots under UEFI', async () => {
    // The system to rescue (a bootable disk), backed up by the CLI onto a disk the VM gets attached.
    const backups = join(dir, 'backups');
    mkdirSync(backups, { recursive: true });
    const b = await rescue(['backup', 'disk', original, '--to', backups, '--name', 'testdisk', '--yes']);
    expect(b.stderr).not.toContain('internal error');
    expect(b.code).toBe(0);
    const imagesDisk = await diskWithFolder(join(dir, 'images.img'), backups, 96);
    const target = join(dir, 'target.img');
    rmSync(target, { force: true });
    await run('truncate', ['-s', '128M', target]);
    const blank = join(dir, 'blank-virtio.img');
    await run('truncate', ['-s', '64M', blank]);

    const vm = await boot({
      firmware: 'bios',
      iso,
      vga: 'none',
      disks: [
        { file: imagesDisk, bus: 'sata' },
        { file: blank, bus: 'virtio' },
        { file: target, bus: 'nvme' },
      ],
    });
    await vm.waitForHttp('/api/health', 240_000);
    const pin = (await vm.waitForSerial(/PIN (\d{6})/, 60_000))[1];
    const api = new Remote(`http://127.0.0.1:${vm.port}`);
    const refused = await api.post<{ error: { code: string } }>('/api/images/attached', {});
    expect(refused.status).toBe(401);
    await api.pair(pin);

    const found = (
      await api.post<{ chains: { disk: string; points: { path: string }[] }[] }>('/api/images/attached', {})
    ).body;
    expect(found.chains).toHaveLength(1);
    const image = found.chains[0].points[0].path;
    const { disks } = await api.get<{ disks: { path: string; size: number; model?: string }[] }>(
      '/api/disks',
    );
    const nvme = disks.find((d) => d.path.startsWith('/dev/nvme'));
    // Every bus the harness offers is seen: the SATA disk with the backups, a blank virtio disk.
    expect(disks.map((d) => d.path)).toEqual(expect.arrayContaining(['/dev/sda', '/dev/vda']));
    expect(found.chains[0].disk).toBe('/dev/sda');
    // The rescue system's own root image is not offered as a disk.
    expect(disks.filter((d) => d.path.startsWith('/dev/loop'))).toEqual([]);
    expect(nvme?.size).toBe(128 << 20);
    const submitted = await api.post<{ job: { id: string } }>('/api/jobs', {
      kind: 'restore',
      image,
      target: nvme!.path,
      confirm: nvme!.path.split('/').pop(),
    });
    expect(submitted.status).toBe(202);
    let job: { state: string; error?: unknown } = { state: 'queued' };
    const until = Date.now() + 300_000;
    while (!['done', 'failed', 'cancelled'].includes(job.state) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 1000));
      job = (await api.get<{ job: typeof job }>(`/api/jobs/${submitted.body.job.id}`)).job;
    }
    expect(job.error ?? null).toBeNull();
    expect(job.state).toBe('done');
    const off = await api.post<{ action: string }>('/api/power', { action: 'poweroff' });
    expect(off.status).toBe(202);
    expect(await vm.waitForExit(120_000)).toBe(0);

    // Oracle 1: the restored data partition is a clean ext4 with the same files.
    const part = join(dir, 'restored-p2.img');
    await run('dd', [`if=${target}`, `of=${part}`, 'bs=1M', 'skip=49', 'count=70', 'status=none']);
    await run('e2fsck', ['-fn', part]);
    const cat = async (img: string, f: string) =>
      (await run('debugfs', ['-R', `cat /${f}`, img], { maxBuffer: 1 << 26 })).stdout;
    const origPart = join(dir, 'original-p2.img');
    await run('dd', [`if=${original}`, `of=${origPart}`, 'bs=1M', 'skip=49', 'count=70', 'status=none']);
    for (const f of ['file-0.bin', 'file-19.bin']) expect(await cat(part, f)).toBe(await cat(origPart, f));
    // Oracle 2: the restored disk boots on its own (UEFI: GRUB → kernel → the marker).
    const restored = await boot({
      firmware: 'uefi',
      disks: [{ file: target, bus: 'nvme' }],
      bootDisk: true,
      vga: 'none',
    });
    await restored.waitForSerial(new RegExp(MARKER), 240_000);
    figure(
      `restored disk: OVMF → marker (${accel})`,
      `${((Date.now() - restored.startedAt) / 1000).toFixed(1)} s`,
    );
  }, 900_000);

  async function bootsTo(firmware: Firmware, label: string, extra: Partial<VmOptions> = {}): Promise<Vm> {
    const vm = await boot({ firmware, vga: 'none', ...extra });
    const ready = await vm.waitForHttp('/api/health', 300_000);
    figure(`${label}: qemu start → API ready (${accel})`, `${ready.toFixed(1)} s`);
    return vm;
  }

  it('UEFI (OVMF) from CD', async () => {
    const vm = await bootsTo('uefi', 'OVMF CD', { iso });
    expect((await vm.sh('ls /sys/firmware/efi >/dev/null && echo efi')).out).toContain('efi');
    await vm.stop();
  }, 600_000);

  it('UEFI Secure Boot with Microsoft keys: shim → signed GRUB → signed kernel, and the kernel says Secure Boot is on', async () => {
    const vm = await bootsTo('secureboot', 'OVMF Secure Boot CD', { iso });
    const dmesg = (await vm.sh('dmesg | grep -i "secure boot"')).out;
    expect(dmesg).toMatch(/Secure boot enabled/i);
    await vm.stop();
  }, 600_000);

  it('a USB stick written by rescue media usb boots under SeaBIOS and under UEFI', async () => {
    const stickFile = join(dir, 'stick.img');
    rmSync(stickFile, { force: true });
    await run('truncate', ['-s', '512M', stickFile]);
    const dev = await lab.attach(stickFile, 0);
    const w = await rescue(['media', 'usb', '--device', dev, '--iso', iso, '--force', '--yes']);
    expect(w.stderr).not.toContain('internal error');
    expect(w.code).toBe(0);
    await lab.detach(dev);
    for (const fw of ['bios', 'uefi'] as const) {
      const vm = await bootsTo(fw, `USB stick ${fw}`, { usbStick: stickFile });
      const medium = (await vm.sh('grep " /run/boot/medium " /proc/mounts')).out;
      expect(medium).toMatch(/^\/dev\/sd[a-z] /); // the stick (usb-storage), not a CD
      await vm.stop();
    }
  }, 900_000);

  it('the PXE files boot with no medium at all: kernel + initrd + the root as a second initrd', async () => {
    const pxe = join(dir, 'pxe');
    const r = await rescue(['media', 'pxe', '--iso', iso, '--out', pxe]);
    expect(r.stderr).not.toContain('internal error');
    expect(r.code).toBe(0);
    const script = readFileSync(join(pxe, 'boot.ipxe'), 'utf8');
    expect(script).toMatch(/^#!ipxe/);
    const id = /rescue\.id=([0-9a-f]+)/.exec(script)![1];
    // qemu's -initrd takes one file; the kernel unpacks concatenated archives just like iPXE's two.
    const both = join(dir, 'both.initrd');
    writeFileSync(
      both,
      Buffer.concat([readFileSync(join(pxe, 'initrd.img')), readFileSync(join(pxe, 'rescue-root.cpio'))]),
    );
    const vm = await boot({
      firmware: 'bios',
      vga: 'none',
      kernel: {
        vmlinuz: join(pxe, 'vmlinuz'),
        initrd: both,
        append: `rescue.id=${id} console=ttyS0,115200 quiet`,
      },
    });
    const ready = await vm.waitForHttp('/api/health', 300_000);
    figure(`direct kernel + initrds (PXE files): qemu start → API ready (${accel})`, `${ready.toFixed(1)} s`);
    expect((await vm.sh('grep -c " /run/boot/medium " /proc/mounts')).out.trim()).toBe('0');
    await vm.stop();
  }, 600_000);
});
