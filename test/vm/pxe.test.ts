/**
 * Network boot end to end: `rescue pxe serve` on a boot LAN of namespaces (test/fixtures/pxe-net.ts)
 * and qemu machines with no disk at all —
 *
 * 1. SeaBIOS with the NIC's iPXE ROM, proxy DHCP beside a plain dnsmasq acting as the router's DHCP
 *    server: iPXE gets its address from dnsmasq and the boot script URL from us, loads the menu,
 *    kernel, initrd and rescue root over HTTP; the rescue system comes up and reports in.
 * 2. OVMF with its own PXE (the NIC's ROM left out), full DHCP: the firmware asks as arch 7, gets
 *    snponly.efi over TFTP, which (as iPXE) gets the script over HTTP, and so on.
 * 3. OVMF with Secure Boot on (Microsoft's keys), `--secure-boot`: Microsoft-signed shim over TFTP →
 *    Debian-signed network GRUB → its config made by the server → the signed kernel and initrds over
 *    TFTP (that GRUB has no HTTP).
 * 4. The other menu entries, taken as the default, under SeaBIOS: "boot this computer's disk" (iPXE
 *    hands over to the disk, which holds our hybrid ISO: its system starts from that disk), and a
 *    custom image — our own ISO — SAN-booted by iPXE over HTTP (its GRUB and kernel start, reading
 *    the ISO by byte ranges).
 *
 * In 1-3, the clients page must show the machine at stage "rescue" with its trace, and the booted
 * rescue system's /api/health must answer from the LAN. In the first, the machine also has a blank
 * disk, and a backup the PXE server shares (`--images`) is restored onto it over HTTP through the
 * booted system's API; the disk must then equal the same restore done on the host. qemu runs under
 * TCG here.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { extfs, GPT_TYPE } from '../../rescue/cli/lab.ts';
import { imagePath, rescue } from '../fixtures/cli.ts';
import { makeDisk } from '../fixtures/disks.ts';
import { sha256, sparseFile } from '../fixtures/lab.ts';
import {
  type BackgroundProcess,
  type BootLan,
  makeBootLan,
  PXE_SERVER_IP,
  pairedCurl,
  pxeServe,
  ROUTER_IP,
  routerDhcp,
} from '../fixtures/pxe-net.ts';
import { testIso, testPxeFiles, VM_CACHE } from './fixtures.ts';
import { Vm, type VmOptions } from './qemu.ts';

const figure = (what: string, value: string) => process.stdout.write(`vm-figure: ${what}: ${value}\n`);

interface ClientView {
  mac: string;
  stage: string;
  firmware?: string;
  ip?: string;
  rescueUrl?: string;
  problem?: string;
  trace: { text: string }[];
}

describe.sequential('network boot with rescue pxe serve, qemu clients without disks', () => {
  const dir = join(VM_CACHE, `pxe-run-${process.pid}`);
  let lan: BootLan;
  let files: string;
  let iso: string;
  let shared: string;
  let expected: string;
  const vms: Vm[] = [];
  const log = (l: string) => process.stdout.write(`${l}\n`);

  beforeAll(async () => {
    mkdirSync(dir, { recursive: true });
    const built = await testIso(log);
    iso = built.iso;
    files = await testPxeFiles(built.iso);
    lan = await makeBootLan('pxv');
    mkdirSync(join(dir, 'shared'), { recursive: true });
    const disk = await makeDisk(
      {
        file: 'office.img',
        description: 'GPT: ext4',
        size: 64 * 1024 * 1024,
        sfdisk: ['label: gpt', `start=1MiB, type=${GPT_TYPE.linux}, name="data"`].join('\n'),
        volumes: [extfs('ext4', 'data', 8 * 1024 * 1024)],
      },
      dir,
    );
    const r = await rescue([
      'backup',
      'disk',
      disk,
      '--to',
      join(dir, 'shared'),
      '--name',
      'office',
      '--yes',
    ]);
    expect(r.code, r.stderr).toBe(0);
    shared = imagePath(r);
    const local = join(dir, 'restored-on-host.img');
    expect((await rescue(['restore', shared, '--to', local, '--yes'])).code).toBe(0);
    expected = sha256(readFileSync(local));
  }, 900_000);

  /** Each test's machines are stopped when it ends, passed or not (the next one needs the tap). */
  afterEach(async () => {
    for (const vm of vms.splice(0)) await vm.stop();
  });

  afterAll(async () => {
    await lan?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Boots a diskless VM on the LAN and waits until the clients page shows it at stage "rescue". */
  async function bootOverNetwork(
    firmware: 'bios' | 'uefi' | 'secureboot',
    mac: string,
    server: BackgroundProcess & { pin: string },
    romfile?: string,
    disks: VmOptions['disks'] = [],
  ): Promise<{ client: ClientView; seconds: number; vm: Vm }> {
    const vm = new Vm({
      firmware,
      vga: 'none',
      memoryMiB: 1536,
      disks,
      tap: { netns: lan.client, ifname: 'tap0', mac, romfile, boot: true },
      log: process.env.RESCUE_VM_DEBUG ? log : undefined,
    });
    vms.push(vm);
    const t0 = Date.now();
    await vm.start();
    const get = await pairedCurl(lan, dir, server.pin);
    let last: ClientView | undefined;
    while (Date.now() - t0 < 600_000) {
      const body = (await get('/api/pxe/clients')) as { clients: ClientView[] };
      last = body.clients.find((c) => c.mac === mac);
      if (last && (last.stage === 'rescue' || last.stage === 'job')) {
        return { client: last, seconds: (Date.now() - t0) / 1000, vm };
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
    throw new Error(
      `the machine never reported in; the clients page says ${JSON.stringify(last)}\nserver:\n${server.output()}\nserial:\n${vm.console.slice(-3000)}`,
    );
  }

  /** The booted rescue system's API from the PXE server's host, paired with the PIN its console shows. */
  async function rescueApi(base: string, pin: string) {
    const jar = join(dir, `jar-${pin}`);
    const json = (args: string[]) =>
      lan.exec(lan.server, 'curl', ['-s', '-b', jar, '-c', jar, ...args]).then((r) => JSON.parse(r.stdout));
    const paired = await json([
      '-H',
      'content-type: application/json',
      '-d',
      JSON.stringify({ pin }),
      `${base}api/pair`,
    ]);
    expect(paired.paired).toBe(true);
    return {
      get: (path: string) => json([`${base}${path}`]),
      post: (path: string, body: unknown) =>
        json([
          '-H',
          'content-type: application/json',
          '-H',
          `x-rescue-csrf: ${paired.csrf}`,
          '-d',
          JSON.stringify(body),
          `${base}${path}`,
        ]),
    };
  }

  async function healthFromLan(url: string): Promise<unknown> {
    const r = await lan.exec(lan.server, 'curl', ['-sf', '--max-time', '10', `${url}api/health`]);
    return JSON.parse(r.stdout);
  }

  it('SeaBIOS + the NIC’s iPXE, proxy DHCP beside the router’s dnsmasq: menu, HTTP boot, rescue reports in', async () => {
    const router = await routerDhcp(lan, join(dir, 'dnsmasq.leases'));
    const server = await pxeServe(lan, [
      '--boot-files',
      files,
      '--state',
      join(dir, 'state-bios'),
      '--images',
      join(dir, 'shared'),
      '--menu',
      '2',
      '--kernel-args',
      'console=ttyS0,115200 quiet rescue.nokiosk',
    ]);
    try {
      const mac = '52:54:00:00:07:01';
      const blank = join(dir, 'blank.img');
      await sparseFile(blank, 64 * 1024 * 1024);
      const { client, seconds, vm } = await bootOverNetwork('bios', mac, server, undefined, [
        { file: blank, bus: 'virtio' },
      ]);
      figure(
        'PXE boot, SeaBIOS iPXE ROM, proxy DHCP, HTTP: qemu start → rescue reported in (tcg)',
        `${seconds.toFixed(1)} s`,
      );
      const trace = client.trace.map((t) => t.text).join('\n');
      expect(trace).toMatch(
        /DHCP \(iPXE\): .*iPXE → http:\/\/192\.0\.2\.1\/pxe\/boot\.ipxe\?mac=\$\{mac\}.*OFFER \(proxy, no address\)/,
      );
      expect(trace).toContain('HTTP /pxe/boot.ipxe');
      expect(trace).toMatch(/HTTP \/pxe\/files\/rescue-root\.cpio \(\d+ bytes\)/);
      expect(trace).toContain('rescue system up at http://192.0.2.15');
      expect(client.ip).toMatch(/^192\.0\.2\.1(5\d|60)$/); // the router's address, not ours
      expect(client.rescueUrl).toBe(`http://${client.ip}/`);
      expect(client.problem).toBeUndefined();
      expect(await healthFromLan(client.rescueUrl!)).toMatchObject({ ok: true });
      expect(server.output()).toContain(`the network's DHCP server is ${ROUTER_IP}`);

      // The backup the PXE server shares, restored over HTTP onto the machine's blank disk.
      const pin = (await vm.waitForSerial(/PIN (\d{6})/, 60_000))[1];
      const api = await rescueApi(client.rescueUrl!, pin);
      const { chains } = await api.get('api/images');
      const image = `http://${PXE_SERVER_IP}/pxe/images/shared/${shared.slice(join(dir, 'shared').length + 1)}`;
      expect(chains.map((c: { points: { path: string }[] }) => c.points[0].path)).toEqual([image]);
      const started = await api.post('api/jobs', {
        kind: 'restore',
        image,
        target: '/dev/vda',
        confirm: 'vda',
      });
      expect(started.job?.id, JSON.stringify(started)).toBeTruthy();
      let job = started.job;
      const until = Date.now() + 300_000;
      while (!['done', 'failed', 'cancelled'].includes(job.state) && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 1000));
        job = (await api.get(`api/jobs/${job.id}`)).job;
      }
      expect(job.error ?? null).toBeNull();
      expect(job.state).toBe('done');
      // The PXE server's page follows the job (reported by the machine itself).
      const get = await pairedCurl(lan, dir, server.pin);
      await expect
        .poll(
          async () =>
            ((await get('/api/pxe/clients')) as { clients: ClientView[] }).clients.find((c) => c.mac === mac)
              ?.stage,
          {
            timeout: 20_000,
          },
        )
        .toBe('job');
      await vm.stop();
      expect(sha256(readFileSync(blank))).toBe(expected);
    } finally {
      await server.stop();
      await router.stop();
    }
  }, 900_000);

  it('OVMF’s own PXE, full DHCP: arch 7 → snponly.efi over TFTP → iPXE → HTTP → rescue reports in', async () => {
    const server = await pxeServe(lan, [
      '--full-dhcp',
      '--range',
      '192.0.2.100-192.0.2.120',
      '--boot-files',
      files,
      '--state',
      join(dir, 'state-uefi'),
      '--menu',
      '0',
      '--kernel-args',
      'console=ttyS0,115200 quiet rescue.nokiosk',
    ]);
    try {
      const mac = '52:54:00:00:07:02';
      const { client, seconds } = await bootOverNetwork('uefi', mac, server, '');
      figure(
        'PXE boot, OVMF PXE → snponly.efi, full DHCP, HTTP: qemu start → rescue reported in (tcg)',
        `${seconds.toFixed(1)} s`,
      );
      const trace = client.trace.map((t) => t.text).join('\n');
      expect(client.firmware).toBe('UEFI x64');
      expect(trace).toMatch(/DHCP: arch 7 \(UEFI x64\) → snponly\.efi \(TFTP\) → OFFER 192\.0\.2\.1\d\d/);
      expect(trace).toMatch(/TFTP snponly\.efi: sent \d+ bytes/);
      expect(trace).toMatch(/DHCP \(iPXE\): .*iPXE → http:/);
      expect(trace).toMatch(/HTTP \/pxe\/files\/vmlinuz/);
      expect(client.ip).toMatch(/^192\.0\.2\.1[0-2]\d$/);
      expect(client.problem).toBeUndefined();
      expect(await healthFromLan(client.rescueUrl!)).toMatchObject({ ok: true });
    } finally {
      await server.stop();
    }
  }, 900_000);

  it('OVMF with Secure Boot, --secure-boot: shim → signed network GRUB → signed kernel, rescue reports in', async () => {
    const server = await pxeServe(lan, [
      '--full-dhcp',
      '--range',
      '192.0.2.100-192.0.2.120',
      '--secure-boot',
      '--boot-files',
      files,
      '--state',
      join(dir, 'state-sb'),
      '--menu',
      '0',
      '--kernel-args',
      'console=ttyS0,115200 quiet rescue.nokiosk',
    ]);
    try {
      const mac = '52:54:00:00:07:03';
      const { client, seconds, vm } = await bootOverNetwork('secureboot', mac, server, '');
      figure(
        'PXE boot, OVMF Secure Boot: shim → network GRUB → kernel over TFTP: qemu start → rescue reported in (tcg)',
        `${seconds.toFixed(1)} s`,
      );
      const trace = client.trace.map((t) => t.text).join('\n');
      expect(trace).toMatch(/DHCP: arch 7 \(UEFI x64\) → shimx64\.efi \(TFTP\) → OFFER 192\.0\.2\.1\d\d/);
      expect(trace).toMatch(/TFTP \/?grubx64\.efi: sent \d+ bytes/);
      expect(trace).toMatch(/TFTP \/grub\/grub\.cfg: sent \d+ bytes/);
      expect(trace).toMatch(/TFTP \/?rescue-root\.cpio: sent \d+ bytes/);
      expect(client.problem).toBeUndefined();
      // The count alone on its line: the console banner ("Rescue ready …") may print in between.
      const count = (await vm.sh('dmesg | grep -c "Secure boot enabled"')).out
        .split('\n')
        .map((l) => l.trim());
      expect(count.filter((l) => /^\d+$/.test(l))).toEqual(['1']);
      expect((await vm.sh('cat /proc/cmdline')).out).toContain(`rescue.mac=${mac}`);
    } finally {
      await server.stop();
    }
  }, 900_000);

  it('the menu’s other entries: this computer’s disk, and a custom ISO SAN-booted over HTTP (SeaBIOS)', async () => {
    const server = await pxeServe(lan, [
      '--full-dhcp',
      '--range',
      '192.0.2.100-192.0.2.120',
      '--boot-files',
      files,
      '--state',
      join(dir, 'state-menu'),
      '--menu',
      '1',
      '--menu-default',
      'local',
      '--probe-seconds',
      '0',
    ]);
    try {
      // The machine's own disk: our hybrid ISO written to it (a disk that boots by BIOS, as a stick does).
      const vm = new Vm({
        firmware: 'bios',
        vga: 'none',
        disks: [{ file: iso, bus: 'virtio', snapshot: true, bootindex: 1 }],
        tap: { netns: lan.client, ifname: 'tap0', mac: '52:54:00:00:07:04', boot: true },
      });
      vms.push(vm);
      const t0 = Date.now();
      await vm.start();
      // iPXE's `sanboot --drive 0x80` hands over to the disk: its GRUB and kernel run, and the initrd
      // finds its files on that disk.
      await vm.waitForSerial(/rescue: rescue medium: \/dev\/vda/, 300_000);
      figure(
        'PXE menu → this computer’s disk (SeaBIOS, sanboot --drive 0x80): qemu start → disk’s system running (tcg)',
        `${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
      const get = await pairedCurl(lan, dir, server.pin);
      const c = ((await get('/api/pxe/clients')) as { clients: ClientView[] }).clients.find(
        (x) => x.mac === '52:54:00:00:07:04',
      );
      const trace = c!.trace.map((t) => t.text).join('\n');
      expect(trace).toContain('HTTP /pxe/boot.ipxe');
      expect(trace).not.toContain('vmlinuz');
      await vm.stop();
    } finally {
      await server.stop();
    }

    const custom = await pxeServe(lan, [
      '--boot-files',
      files,
      '--full-dhcp',
      '--range',
      '192.0.2.100-192.0.2.120',
      '--state',
      join(dir, 'state-custom'),
      '--custom',
      iso,
      '--menu',
      '1',
      '--menu-default',
      'custom',
      '--probe-seconds',
      '0',
    ]);
    try {
      const vm = new Vm({
        firmware: 'bios',
        vga: 'none',
        memoryMiB: 1024,
        tap: { netns: lan.client, ifname: 'tap0', mac: '52:54:00:00:07:05', boot: true },
      });
      vms.push(vm);
      const t0 = Date.now();
      await vm.start();
      // The ISO's own GRUB and kernel run; its initrd then looks for its medium (a SAN-booted CD is
      // gone once Linux runs, so it does not find it — the ISO was never meant to run this way).
      await vm.waitForSerial(/rescue: looking for the rescue medium/, 300_000);
      figure(
        'PXE menu → custom ISO SAN-booted over HTTP (SeaBIOS): qemu start → its initrd runs (tcg)',
        `${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
      expect(custom.output()).not.toContain('WARNING');
    } finally {
      await custom.stop();
    }
  }, 900_000);
});
