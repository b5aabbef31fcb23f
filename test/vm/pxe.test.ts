/**
 * Network boot end to end: `rescue pxe serve` on a boot LAN of namespaces (test/fixtures/pxe-net.ts)
 * and qemu machines with no disk at all —
 *
 * 1. SeaBIOS with the NIC's iPXE ROM, proxy DHCP beside a plain dnsmasq acting as the router's DHCP
 *    server: iPXE gets its address from dnsmasq and the boot script URL from us, loads the menu,
 *    kernel, initrd and rescue root over HTTP; the rescue system comes up and reports in.
 * 2. OVMF with its own PXE (the NIC's ROM left out), full DHCP: the firmware asks as arch 7, gets
 *    snponly.efi over TFTP, which (as iPXE) gets the script over HTTP, and so on.
 *
 * In both, the clients page must show the machine at stage "rescue" with its trace, and the booted
 * rescue system's /api/health must answer from the LAN. qemu runs under TCG here.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BackgroundProcess,
  type BootLan,
  background,
  makeBootLan,
  pairedCurl,
  pxeServe,
  ROUTER_IP,
} from '../fixtures/pxe-net.ts';
import { testIso, testPxeFiles, VM_CACHE } from './fixtures.ts';
import { Vm } from './qemu.ts';

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
  const vms: Vm[] = [];
  const log = (l: string) => process.stdout.write(`${l}\n`);

  beforeAll(async () => {
    mkdirSync(dir, { recursive: true });
    const built = await testIso(log);
    files = await testPxeFiles(built.iso);
    lan = await makeBootLan('pxv');
  }, 900_000);

  afterAll(async () => {
    for (const vm of vms) await vm.stop();
    await lan?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Boots a diskless VM on the LAN and waits until the clients page shows it at stage "rescue". */
  async function bootOverNetwork(
    firmware: 'bios' | 'uefi',
    mac: string,
    server: BackgroundProcess & { pin: string },
    romfile?: string,
  ): Promise<{ client: ClientView; seconds: number; vm: Vm }> {
    const vm = new Vm({
      firmware,
      vga: 'none',
      memoryMiB: 1536,
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

  async function healthFromLan(url: string): Promise<unknown> {
    const r = await lan.exec(lan.server, 'curl', ['-sf', '--max-time', '10', `${url}api/health`]);
    return JSON.parse(r.stdout);
  }

  it('SeaBIOS + the NIC’s iPXE, proxy DHCP beside the router’s dnsmasq: menu, HTTP boot, rescue reports in', async () => {
    const router = background(lan.router, 'dnsmasq', [
      '--no-daemon',
      '--conf-file=/dev/null',
      '--port=0',
      '--interface=eth0',
      '--bind-interfaces',
      '--dhcp-range=192.0.2.150,192.0.2.160,255.255.255.0,1h',
      `--dhcp-leasefile=${join(dir, 'dnsmasq.leases')}`,
    ]);
    await router.waitFor(/DHCP, IP range/);
    const server = await pxeServe(lan, [
      '--boot-files',
      files,
      '--state',
      join(dir, 'state-bios'),
      '--menu',
      '2',
      '--kernel-args',
      'console=ttyS0,115200 quiet rescue.nokiosk',
    ]);
    try {
      const mac = '52:54:00:00:07:01';
      const { client, seconds, vm } = await bootOverNetwork('bios', mac, server);
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
      await vm.stop();
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
});
