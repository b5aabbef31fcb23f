/**
 * The qemu harness: one VM with our ISO (or a disk to boot), SeaBIOS / OVMF / OVMF Secure Boot,
 * disks on virtio / SATA / NVMe, port 80 forwarded to a free port on 127.0.0.1, the serial console
 * on a socket (read and typed into), QMP for screendumps and power-off.
 *
 * TCG by default: nested KVM on these machines hangs in the mode switch (DESIGN.md). KVM is used
 * only where `kvmWorks()` booted a tiny kernel with it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Firmware = 'bios' | 'uefi' | 'secureboot';

export interface VmDisk {
  file: string;
  bus: 'virtio' | 'sata' | 'nvme';
  format?: 'raw' | 'qcow2';
  /** A copy-on-write snapshot: writes are thrown away. */
  snapshot?: boolean;
  /** Its place in the firmware's boot order (after a network boot, say). */
  bootindex?: number;
}

export interface VmOptions {
  firmware: Firmware;
  iso?: string;
  disks?: VmDisk[];
  memoryMiB?: number;
  cpus?: number;
  /** Boot from the disk rather than the CD. */
  bootDisk?: boolean;
  /** A raw image plugged in as a USB stick (usb-storage on xHCI), booted from. */
  usbStick?: string;
  /** Direct kernel boot (as a network boot hands over kernel and initrd). */
  kernel?: { vmlinuz: string; initrd: string; append: string };
  /** Forward this guest TCP port to a free loopback port (default 80). */
  guestPort?: number;
  accel?: 'tcg' | 'kvm';
  /** Graphics card: std (bochs-drm), virtio (virtio-gpu), or none (serial only). */
  vga?: 'std' | 'virtio' | 'none';
  log?: (line: string) => void;
  /**
   * A NIC on a tap device in a network namespace the test made (qemu then runs in that namespace)
   * instead of user-mode networking with the port forward; `boot` puts it first in the boot order
   * (network boot). `romfile: ''` leaves the NIC without its iPXE ROM (OVMF then uses its own
   * virtio-net driver and PXE).
   */
  tap?: { netns: string; ifname: string; mac?: string; romfile?: string; boot?: boolean };
}

export const OVMF = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  secureCode: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd',
  /** Microsoft's keys enrolled: only Microsoft-signed loaders (shim) start. */
  secureVars: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
};

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function connectWhenReady(path: string, timeoutMs = 10_000): Promise<Socket> {
  const until = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', (e) => {
        if (Date.now() > until) reject(e);
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

export class Vm {
  readonly dir: string;
  port = 0;
  serialText = '';
  private proc?: ChildProcess;
  private serial?: Socket;
  private qmp?: Socket;
  private qmpBuf = '';
  private qmpWaiters: ((msg: Record<string, unknown>) => void)[] = [];
  private exited?: Promise<number | null>;
  readonly startedAt = Date.now();

  readonly o: VmOptions;

  constructor(o: VmOptions) {
    this.o = o;
    this.dir = mkdtempSync(join(tmpdir(), 'rescue-vm-'));
  }

  async start(): Promise<void> {
    const o = this.o;
    this.port = await freePort();
    const args = [
      '-accel',
      o.accel === 'kvm' ? 'kvm' : 'tcg,thread=multi',
      '-machine',
      'q35',
      '-m',
      String(o.memoryMiB ?? 1024),
      '-smp',
      String(o.cpus ?? 2),
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-vga',
      o.vga ?? 'std',
      '-serial',
      `unix:${join(this.dir, 'serial.sock')},server=on,wait=on`,
      '-qmp',
      `unix:${join(this.dir, 'qmp.sock')},server=on,wait=off`,
      ...(o.tap
        ? [
            '-netdev',
            `tap,id=n0,ifname=${o.tap.ifname},script=no,downscript=no`,
            '-device',
            `virtio-net-pci,netdev=n0${o.tap.mac ? `,mac=${o.tap.mac}` : ''}${o.tap.romfile !== undefined ? `,romfile=${o.tap.romfile}` : ''}${o.tap.boot ? ',bootindex=0' : ''}`,
          ]
        : [
            '-netdev',
            `user,id=n0,hostfwd=tcp:127.0.0.1:${this.port}-:${o.guestPort ?? 80}`,
            '-device',
            'virtio-net-pci,netdev=n0',
          ]),
      '-device',
      'qemu-xhci',
      '-device',
      'usb-kbd',
      '-device',
      'usb-tablet',
    ];
    if (o.firmware !== 'bios') {
      const vars = join(this.dir, 'vars.fd');
      copyFileSync(o.firmware === 'secureboot' ? OVMF.secureVars : OVMF.vars, vars);
      if (o.firmware === 'secureboot') args.push('-global', 'driver=cfi.pflash01,property=secure,value=on');
      args.push(
        '-drive',
        `if=pflash,format=raw,unit=0,readonly=on,file=${o.firmware === 'secureboot' ? OVMF.secureCode : OVMF.code}`,
        '-drive',
        `if=pflash,format=raw,unit=1,file=${vars}`,
      );
      if (o.firmware === 'secureboot') args.push('-machine', 'smm=on');
    }
    let sata = 0;
    args.push('-device', 'ahci,id=ahci');
    if (o.iso) {
      args.push('-drive', `if=none,id=cd,media=cdrom,readonly=on,file=${o.iso}`);
      args.push('-device', `ide-cd,bus=ahci.${sata++},drive=cd${o.bootDisk ? '' : ',bootindex=0'}`);
    }
    (o.disks ?? []).forEach((d, i) => {
      const id = `d${i}`;
      args.push(
        '-drive',
        `if=none,id=${id},format=${d.format ?? 'raw'},file=${d.file}${d.snapshot ? ',snapshot=on' : ''}`,
      );
      const boot =
        d.bootindex !== undefined ? `,bootindex=${d.bootindex}` : o.bootDisk && i === 0 ? ',bootindex=0' : '';
      if (d.bus === 'virtio') args.push('-device', `virtio-blk-pci,drive=${id}${boot}`);
      else if (d.bus === 'nvme') args.push('-device', `nvme,drive=${id},serial=RESCUE${i}${boot}`);
      else args.push('-device', `ide-hd,bus=ahci.${sata++},drive=${id}${boot}`);
    });
    if (o.usbStick)
      args.push(
        '-drive',
        `if=none,id=stick,format=raw,file=${o.usbStick}`,
        '-device',
        'usb-storage,drive=stick,removable=on,bootindex=0',
      );
    if (o.kernel)
      args.push('-kernel', o.kernel.vmlinuz, '-initrd', o.kernel.initrd, '-append', o.kernel.append);
    this.o.log?.(`qemu-system-x86_64 ${args.join(' ')}`);
    const [cmd, ...pre] = o.tap
      ? ['nsenter', `--net=/run/netns/${o.tap.netns}`, '--', 'qemu-system-x86_64']
      : ['qemu-system-x86_64'];
    const proc = spawn(cmd, [...pre, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
    this.exited.then((code) => {
      if (code) this.o.log?.(`qemu exited ${code}: ${stderr.trim()}`);
    });
    this.serial = await connectWhenReady(join(this.dir, 'serial.sock'));
    this.serial.on('data', (d: Buffer) => {
      this.serialText += d.toString('latin1');
    });
    this.serial.on('error', () => {});
    this.qmp = await connectWhenReady(join(this.dir, 'qmp.sock'));
    this.qmp.on('error', () => {});
    this.qmp.on('data', (d: Buffer) => {
      this.qmpBuf += d.toString();
      for (let i = this.qmpBuf.indexOf('\n'); i >= 0; i = this.qmpBuf.indexOf('\n')) {
        const line = this.qmpBuf.slice(0, i);
        this.qmpBuf = this.qmpBuf.slice(i + 1);
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('return' in msg || 'error' in msg) this.qmpWaiters.shift()?.(msg);
      }
    });
    await this.command('qmp_capabilities');
  }

  /** A QMP command; rejects with qemu's error. */
  command(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.qmpWaiters.push((msg) => {
        if (msg.error) reject(new Error(`${execute}: ${JSON.stringify(msg.error)}`));
        else resolve(msg.return);
      });
      this.qmp?.write(`${JSON.stringify({ execute, arguments: args })}\n`);
    });
  }

  /** The screen as a PNG file. */
  async screendump(file: string): Promise<void> {
    await this.command('screendump', { filename: file, format: 'png' });
  }

  /** Serial output, escape sequences removed. */
  get console(): string {
    return this.serialText.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
  }

  async waitForSerial(re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.console);
      if (m) return m;
      if (this.proc?.exitCode !== null && this.proc?.exitCode !== undefined)
        throw new Error(
          `qemu exited (${this.proc.exitCode}) before ${re} appeared; serial:\n${this.console.slice(-3000)}`,
        );
      if (Date.now() > until)
        throw new Error(
          `${re} did not appear in ${timeoutMs / 1000} s; serial:\n${this.console.slice(-3000)}`,
        );
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  type(text: string): void {
    this.serial?.write(text);
  }

  private shellCount = 0;

  /**
   * Runs a command in the rescue system's serial shell (activated with Enter on first use) and
   * returns its output and exit status.
   */
  async sh(cmd: string, timeoutMs = 30_000): Promise<{ out: string; code: number }> {
    if (this.shellCount === 0) {
      await this.waitForSerial(/Please press Enter to activate this console/, timeoutMs);
      this.type('\n');
      await this.waitForSerial(/built-in shell \(ash\)/, timeoutMs);
    }
    const tag = `__RESCUE_END_${++this.shellCount}__`;
    const from = this.console.length;
    this.type(`${cmd}; echo ${tag}$?\n`);
    const until = Date.now() + timeoutMs;
    const re = new RegExp(`\n${tag}(\\d+)`);
    for (;;) {
      const text = this.console.slice(from);
      const m = re.exec(text);
      if (m) {
        const start = text.indexOf('\n') + 1;
        return { out: text.slice(start, m.index + 1), code: Number(m[1]) };
      }
      if (Date.now() > until)
        throw new Error(`"${cmd}" did not finish in ${timeoutMs / 1000} s:\n${text.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** GET on the forwarded port until it answers 200, returns seconds since start. */
  async waitForHttp(path: string, timeoutMs: number): Promise<number> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        const r = await fetch(`http://127.0.0.1:${this.port}${path}`, { signal: AbortSignal.timeout(3000) });
        if (r.ok) return (Date.now() - this.startedAt) / 1000;
      } catch {
        // not yet
      }
      if (this.proc?.exitCode !== null && this.proc?.exitCode !== undefined)
        throw new Error(`qemu exited (${this.proc.exitCode}); serial:\n${this.console.slice(-3000)}`);
      if (Date.now() > until)
        throw new Error(
          `${path} did not answer in ${timeoutMs / 1000} s; serial:\n${this.console.slice(-3000)}`,
        );
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Resolves with qemu's exit code when the guest powers itself off. */
  waitForExit(timeoutMs: number): Promise<number | null> {
    return Promise.race([
      this.exited ?? Promise.resolve(null),
      new Promise<number | null>((_, reject) =>
        setTimeout(
          () => reject(new Error(`the VM did not power off in ${timeoutMs / 1000} s`)),
          timeoutMs,
        ).unref(),
      ),
    ]);
  }

  async stop(): Promise<void> {
    if (this.proc && this.proc.exitCode === null) {
      await this.command('quit').catch(() => {});
      await Promise.race([this.exited, new Promise((r) => setTimeout(r, 3000))]);
      if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
    }
    this.serial?.destroy();
    this.qmp?.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Whether KVM boots Linux on this machine: a tiny kernel + initrd that prints `marker` and powers
 * off must do so within 20 s. Nested KVM here hangs in the mode switch (DESIGN.md), so the answer
 * decides, per run, whether the VM tests may use it.
 */
export async function kvmWorks(
  kernel: { vmlinuz: string; initrd: string },
  marker: string,
): Promise<boolean> {
  if (!existsSync('/dev/kvm')) return false;
  const vm = new Vm({
    firmware: 'bios',
    accel: 'kvm',
    vga: 'none',
    kernel: { ...kernel, append: 'console=ttyS0,115200 quiet panic=-1' },
  });
  try {
    await vm.start();
    await vm.waitForSerial(new RegExp(marker), 20_000);
    return true;
  } catch {
    return false;
  } finally {
    await vm.stop();
  }
}
