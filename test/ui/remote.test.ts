/**
 * Another computer on the network, in a real browser: `rescue serve --listen` runs in one network
 * namespace, Chromium in another. The page asks for the PIN; a wrong one is refused with the
 * server's message, the right one — read off the rescue system's own screen (a browser on its
 * loopback), which also shows the LAN address — pairs, and the home screen shows the server's disks.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, shot } from '../fixtures/browser.ts';
import { makeTempDir, sparseFile } from '../fixtures/lab.ts';
import {
  chromiumInNamespace,
  makeTestNet,
  SERVER_IP,
  type ServeProcess,
  serveInNamespace,
  type TestNet,
} from '../fixtures/netns.ts';

let dir: string;
let net: TestNet;
let server: ServeProcess;
let browser: Browser;
let local: Browser;
let disk: string;

beforeAll(async () => {
  dir = await makeTempDir('rescue-ui-remote-');
  disk = join(dir, 'server-disk.img');
  await sparseFile(disk, 64 * 1024 * 1024);
  net = await makeTestNet(`u${process.pid % 100000}`);
  server = await serveInNamespace(net.serverNs, ['--listen', '0.0.0.0', '--disk', disk]);
  browser = await launchBrowser(await chromiumInNamespace(dir, net.clientNs));
  local = await launchBrowser(await chromiumInNamespace(dir, net.serverNs));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await local?.close();
  await server?.stop();
  await net?.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('a browser on another computer', () => {
  it('must pair with the PIN first; then it sees the rescue system', async () => {
    const page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
    await page.goto(`http://${SERVER_IP}:8080/`);
    await page.getByRole('heading', { name: 'Connect to this rescue system' }).waitFor();
    expect(await page.getByRole('navigation').count()).toBe(0);
    await shot(page, 'remote', '1-pair');
    const wrong = server.pin === '000000' ? '111111' : '000000';
    await page.getByLabel('PIN').fill(wrong);
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByRole('alert').getByText('E_PAIRING_PIN').waitFor();
    await shot(page, 'remote', '2-wrong-pin');
    // The rescue system's own screen (loopback) shows the address and the PIN.
    const screen = await local.newPage({ viewport: { width: 1024, height: 768 } });
    await screen.goto('http://127.0.0.1:8080/');
    await screen.getByText(`http://${SERVER_IP}:8080/`).waitFor();
    const shown = (await screen.locator('.remote-bar strong').textContent())!.trim();
    expect(shown).toBe(server.pin);
    await shot(screen, 'remote', '0-local-screen');
    await page.getByLabel('PIN').fill(shown);
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByRole('heading', { name: 'What do you want to do?' }).waitFor();
    await page.getByText('server-disk.img').first().waitFor();
    await shot(page, 'remote', '3-paired');
    // The session survives a reload (cookie), without the PIN.
    await page.reload();
    await page.getByRole('heading', { name: 'What do you want to do?' }).waitFor();
  });
});
