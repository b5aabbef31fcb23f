/**
 * Images on a network share: a real Samba server (smbd on 127.0.0.1) serves a share that needs a
 * user and password. Through the UI's network-location flow the restore wizard opens it and
 * restores an image from it (target checked by the oracles), and the backup wizard writes a new
 * backup onto it (checked with the CLI on the server's side of the share). A wrong password is
 * refused with its own error. This machine's kernel has no CIFS client, so the share is mounted in
 * user space (smbnetfs); on the rescue system the kernel's mount.cifs does the same.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extfs, GPT_TYPE } from '../../rescue/cli/lab.ts';
import { kernelHasCifs } from '../../rescue/engine/shares/smb.ts';
import { launchBrowser, shot } from '../fixtures/browser.ts';
import { rescue } from '../fixtures/cli.ts';
import { filesOf, inspectDiskFiles, makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, sparseFile } from '../fixtures/lab.ts';
import { type Samba, startSamba } from '../fixtures/samba.ts';
import { type ApiClient, startApi } from '../fixtures/server.ts';

const MiB = 1024 * 1024;
const PASSWORD = 'share pass 1';
const PLAN = {
  file: 'laptop.img',
  description: 'GPT: ext4',
  size: 96 * MiB,
  sfdisk: ['label: gpt', `start=1MiB, type=${GPT_TYPE.linux}, name="root"`].join('\n'),
  volumes: [extfs('ext4', 'root', 10 * MiB)],
};

let dir: string;
let shareDir: string;
let source: string;
let target: string;
let samba: Samba;
let api: ApiClient;
let browser: Browser;
let page: Page;
let original: Awaited<ReturnType<typeof inspectDiskFiles>>;

beforeAll(async () => {
  dir = await makeTempDir('rescue-ui-share-');
  source = await makeDisk(PLAN, dir);
  original = await inspectDiskFiles(source);
  shareDir = join(dir, 'share');
  await fsp.mkdir(shareDir);
  const r = await rescue(['backup', 'disk', source, '--to', shareDir, '--name', 'laptop', '--yes']);
  expect(r.code, r.stderr).toBe(0);
  samba = await startSamba(join(dir, 'samba'), [{ name: 'backups', path: shareDir, guest: false }], PASSWORD);
  target = join(dir, 'target.img');
  await sparseFile(target, 96 * MiB);
  api = await startApi({ extraDisks: [source, target], stateDir: join(dir, 'state') });
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await api?.close();
  await samba?.stop();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('a network share', () => {
  it('a wrong password is refused with E_SHARE_LOGIN; the saved location never shows its password', async () => {
    const add = await api.post('/api/locations', {
      host: '127.0.0.1',
      share: 'backups',
      username: 'root',
      password: 'wrong',
    });
    expect(add.status).toBe(201);
    expect(JSON.stringify(add.body)).not.toContain('wrong');
    const open = await api.post(`/api/locations/${add.body.location.id}/open`);
    expect(open.status).toBe(422);
    expect(open.body.error.code).toBe('E_SHARE_LOGIN');
    await api.post(`/api/locations/${add.body.location.id}/delete`);
    const saved = await fsp.readFile(join(dir, 'state', 'locations.json'), 'utf8');
    expect(JSON.parse(saved)).toEqual([]);
  });

  it('the restore wizard opens the share and restores an image from it', async () => {
    expect(await kernelHasCifs()).toBe(false); // else this test would exercise mount.cifs instead
    await page.goto(`${api.base}/#/restore`);
    await page.getByRole('heading', { name: 'Which backup?' }).waitFor();
    await page.getByRole('button', { name: 'Add a network location…' }).click();
    await page.getByLabel('Computer (name or IP address)').fill('127.0.0.1');
    await page.getByLabel('Share', { exact: true }).fill('backups');
    await page.getByLabel('User name').fill('root');
    await page.getByLabel('Password').fill(PASSWORD);
    await shot(page, 'share', '1-add-location');
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByRole('radio', { name: /laptop\.rimg/ }).check({ timeout: 60_000 });
    await page.getByText(/free of/).waitFor();
    await shot(page, 'share', '2-opened');
    await page.getByRole('button', { name: 'Next' }).click();
    await expect
      .poll(() => page.getByRole('radio', { name: /full backup \(point 1\)/ }).isChecked())
      .toBe(true);
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('radio', { name: /target\.img/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByLabel(/Type target\.img to confirm/).fill('target.img');
    await page.getByRole('button', { name: 'Overwrite target.img' }).click();
    await page.getByRole('heading', { name: 'Restore finished' }).waitFor({ timeout: 120_000 });
    await shot(page, 'share', '3-restored');
    expect(filesOf(await inspectDiskFiles(target))).toEqual(filesOf(original));
  });

  it('the backup wizard writes a new backup onto the share', async () => {
    await page.goto(`${api.base}/#/`);
    await page.goto(`${api.base}/#/backup`);
    await page.getByRole('heading', { name: 'What should be backed up?' }).waitFor();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('radio', { name: /laptop\.img/ }).check();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('button', { name: 'Open' }).click();
    await expect.poll(() => page.getByLabel(/^Folder/).inputValue()).toMatch(/backups$/);
    await page.getByLabel('Name of the backup').fill('laptop-again');
    await shot(page, 'share', '4-backup-destination');
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByRole('button', { name: 'Start the backup' }).click();
    await page.getByRole('heading', { name: 'Backup finished' }).waitFor({ timeout: 120_000 });
    const onServer = join(shareDir, 'laptop-again', 'laptop-again.rimg');
    expect((await rescue(['check', onServer])).code).toBe(0);
  });
});
