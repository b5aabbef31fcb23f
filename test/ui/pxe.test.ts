/**
 * The "Network boot" page in a real browser on another computer: `rescue pxe serve` (full DHCP) in
 * the boot LAN's server namespace, two client machines made of real clients in the client
 * namespace — one gets its address (udhcpc), fetches the boot menu and kernel over HTTP and reports
 * in as a rescue system running a restore; the other gets an address and asks TFTP for a file that
 * is not there — and Chromium in the client namespace, paired with the PIN.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, shot } from '../fixtures/browser.ts';
import { makeTempDir } from '../fixtures/lab.ts';
import { chromiumInNamespace } from '../fixtures/netns.ts';
import {
  type BackgroundProcess,
  type BootLan,
  fakeBootFiles,
  makeBootLan,
  PXE_SERVER_IP,
  pxeServe,
} from '../fixtures/pxe-net.ts';

let dir: string;
let lan: BootLan;
let server: BackgroundProcess & { pin: string };
let browser: Browser;

beforeAll(async () => {
  dir = await makeTempDir('rescue-ui-pxe-');
  const files = await fakeBootFiles(join(dir, 'boot'));
  lan = await makeBootLan('pxu');
  server = await pxeServe(lan, [
    '--full-dhcp',
    '--range',
    '192.0.2.100-192.0.2.110',
    '--boot-files',
    files,
    '--state',
    join(dir, 'state'),
    '--probe-seconds',
    '1',
  ]);
  const script = join(dir, 'udhcpc.sh');
  // This script configures the address it was given, as a real client would.
  await fsp.writeFile(
    script,
    '#!/bin/sh\n[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"\nexit 0\n',
    {
      mode: 0o755,
    },
  );
  for (const dev of ['eth0', 'eth1'])
    await lan.exec(lan.client, 'busybox', [
      'udhcpc',
      '-i',
      dev,
      '-f',
      '-q',
      '-n',
      '-t',
      '3',
      '-T',
      '2',
      '-s',
      script,
    ]);
  const mac0 = await lan.clientMac('eth0');
  const curl = (...a: string[]) => lan.exec(lan.client, 'curl', ['-sS', '--fail', ...a]);
  await curl('--interface', 'eth0', '-o', '/dev/null', `http://${PXE_SERVER_IP}/pxe/boot.ipxe?mac=${mac0}`);
  await curl('--interface', 'eth0', '-o', '/dev/null', `http://${PXE_SERVER_IP}/pxe/files/vmlinuz`);
  await curl(
    '--interface',
    'eth0',
    '-H',
    'content-type: application/json',
    '-d',
    JSON.stringify({
      mac: mac0,
      url: 'http://192.0.2.100/',
      job: { id: 'j1', kind: 'restore', state: 'running', percent: 40 },
    }),
    `http://${PXE_SERVER_IP}/pxe/hello`,
  );
  await lan.exec(
    lan.client,
    'curl',
    ['-s', '--interface', 'eth1', '-o', '/dev/null', `tftp://${PXE_SERVER_IP}/nosuch.efi`],
    {
      allowFail: true,
    },
  );
  browser = await launchBrowser(await chromiumInNamespace(dir, lan.client));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await lan?.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('the Network boot page', () => {
  it('shows every machine with how far it got, its problem and its trace', async () => {
    const page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
    await page.goto(`http://${PXE_SERVER_IP}/`);
    await page.getByLabel('PIN').fill(server.pin);
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByRole('link', { name: 'Network boot' }).click();
    await page.getByRole('heading', { name: 'Network boot' }).waitFor();
    await page.getByText('This server hands out addresses 192.0.2.100-192.0.2.110 (full DHCP).').waitFor();
    const mac0 = await lan.clientMac('eth0');
    const mac1 = await lan.clientMac('eth1');
    const first = page.getByRole('region', { name: `Computer ${mac0}` });
    await first.waitFor();
    await expect.poll(() => first.locator('li[aria-current="step"]').textContent()).toBe('Job');
    expect(await first.textContent()).toContain('restore running 40 %');
    expect(await first.getByRole('link', { name: 'Open its rescue screen' }).getAttribute('href')).toBe(
      'http://192.0.2.100/',
    );
    // Plain DHCP clients (udhcpc), not PXE firmware: no firmware is claimed for them.
    expect(await first.locator('.disk-title').textContent()).not.toMatch(/BIOS|UEFI/);
    const second = page.getByRole('region', { name: `Computer ${mac1}` });
    expect(await second.locator('li[aria-current="step"]').textContent()).toBe('DHCP');
    expect(await second.locator('.warn').textContent()).toMatch(/TFTP nosuch\.efi: "nosuch\.efi" not found/);
    await first.getByText(/What happened/).click();
    const trace = await first.locator('.log').textContent();
    expect(trace).toMatch(/DHCP: OFFER 192\.0\.2\.10\d/);
    expect(trace).toContain('HTTP /pxe/boot.ipxe');
    expect(trace).toMatch(/HTTP \/pxe\/files\/vmlinuz: sent 300000 bytes in \d+\.\d s/);
    expect(trace).toContain('job restore running');
    await shot(page, 'pxe', '1-clients');
  });
});
