/**
 * The backup and clone wizards in a real browser against the real server and engine: an encrypted
 * backup (checked afterwards with the CLI and its password), a disk clone onto a blank disk (files
 * compared through the real drivers, fsck), a backup cancelled from the progress screen (no file
 * left), a mounted disk offered as a target (refused, with the reason), and an engine refusal shown
 * with its remedy. Screenshots of every step in .screenshots/.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extfs, GPT_TYPE, ntfsfs } from '../../rescue/cli/lab.ts';
import { launchBrowser, shot } from '../fixtures/browser.ts';
import { rescue } from '../fixtures/cli.ts';
import { LoopLab } from '../fixtures/devices.ts';
import { filesOf, inspectDiskFiles, makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';
import { type ApiClient, startApi } from '../fixtures/server.ts';

const MiB = 1024 * 1024;
const PLAN = {
  file: 'workstation.img',
  description: 'GPT: ext4 + NTFS',
  size: 160 * MiB,
  sfdisk: [
    'label: gpt',
    `start=1MiB, size=80MiB, type=${GPT_TYPE.linux}, name="root"`,
    `type=${GPT_TYPE.basicData}, name="data"`,
  ].join('\n'),
  volumes: [extfs('ext4', 'root', 12 * MiB), ntfsfs('Data', 6 * MiB)],
};

let dir: string;
let source: string;
let blank: string;
let tiny: string;
let big: string;
let backups: string;
let api: ApiClient;
let browser: Browser;
let page: Page;
let original: Awaited<ReturnType<typeof inspectDiskFiles>>;
const lab = new LoopLab();
let mountedDev: string;

/** A fresh wizard: through the home screen, so the hash really changes (a new wizard each time). */
async function open(p: Page, hash: string) {
  await p.goto(`${api.base}/#/`);
  await p.getByRole('heading', { name: 'What do you want to do?' }).waitFor();
  await p.goto(`${api.base}/${hash}`);
}

async function next(p: Page, label = 'Next') {
  await p.getByRole('button', { name: label }).click();
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-ui-wiz-');
  source = await makeDisk(PLAN, dir);
  original = await inspectDiskFiles(source);
  blank = join(dir, 'blank.img');
  await sparseFile(blank, 160 * MiB);
  tiny = join(dir, 'tiny.img');
  await sparseFile(tiny, 8 * MiB);
  big = join(dir, 'big.img');
  await sparseFile(big, 384 * MiB);
  await run('sh', ['-c', `head -c ${300 * MiB} /dev/urandom | dd of=${big} bs=4M conv=notrunc status=none`]);
  backups = join(dir, 'backups');
  await fsp.mkdir(backups);
  // A disk with a mounted filesystem: offered, but refused as a target.
  const backing = join(dir, 'mounted.img');
  await sparseFile(backing, 64 * MiB);
  await run('sfdisk', ['-q', backing], { input: 'label: dos\nstart=1MiB, type=83\n' });
  mountedDev = await lab.attach(backing, 1);
  await run('mkfs.ext4', ['-q', '-F', `${mountedDev}p1`]);
  await lab.mount(`${mountedDev}p1`, join(dir, 'mnt'));
  api = await startApi({ extraDisks: [source, blank, tiny, big, mountedDev], imageFolders: [backups] });
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await api?.close();
  await lab.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('the backup wizard', () => {
  it('makes an encrypted, checked backup; the CLI checks it with the password', async () => {
    await open(page, '#/backup');
    await page.getByRole('heading', { name: 'What should be backed up?' }).waitFor();
    await shot(page, 'backup', '1-what');
    await next(page);
    await page.getByRole('radio', { name: /workstation\.img/ }).check();
    await shot(page, 'backup', '2-from');
    await next(page);
    await page.getByLabel(/^Folder/).fill(backups);
    await page.getByLabel('Name of the backup').fill('workstation');
    await shot(page, 'backup', '3-where');
    await next(page);
    await page.getByLabel(/Encrypt with a password/).check();
    await page.getByLabel('Password', { exact: true }).fill('ui secret 1');
    await page.getByLabel('The same password again').fill('ui secret 2');
    await page.getByText('The two passwords differ.').waitFor();
    expect(await page.getByRole('button', { name: 'Next' }).isDisabled()).toBe(true);
    await page.getByLabel('The same password again').fill('ui secret 1');
    await page.getByLabel('Comment').fill('made in the browser');
    await shot(page, 'backup', '4-options');
    await next(page);
    await page.getByText('compression normal, encrypted, checked afterwards').waitFor();
    await shot(page, 'backup', '5-summary');
    await next(page, 'Start the backup');
    await page.getByRole('heading', { name: 'Backup finished' }).waitFor({ timeout: 120_000 });
    await shot(page, 'backup', '6-finished');
    const image = join(backups, 'workstation', 'workstation.rimg');
    await fsp.writeFile(join(dir, 'pw'), 'ui secret 1\n');
    const check = await rescue(['check', image, '--password-file', join(dir, 'pw')]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    const info = JSON.parse(
      (await rescue(['info', image, '--json', '--password-file', join(dir, 'pw')])).stdout,
    );
    expect(info).toMatchObject({ comment: 'made in the browser', options: { encrypted: true } });
  });

  it('cancel on the progress screen stops the backup and leaves no file', async () => {
    await open(page, '#/backup');
    await page.getByRole('heading', { name: 'What should be backed up?' }).waitFor();
    await next(page);
    await page.getByRole('radio', { name: /big\.img/ }).check();
    await next(page);
    await page.getByLabel(/^Folder/).fill(backups);
    await page.getByLabel('Name of the backup').fill('big');
    await next(page);
    await page.getByRole('radio', { name: /High/ }).check();
    await next(page);
    await next(page, 'Start the backup');
    await page.getByRole('button', { name: 'Cancel…' }).click();
    await shot(page, 'backup', '7-cancel-question');
    await page.getByRole('button', { name: 'Yes, cancel' }).click();
    await page.getByRole('heading', { name: 'Backup cancelled' }).waitFor({ timeout: 60_000 });
    await shot(page, 'backup', '8-cancelled');
    expect(await fsp.readdir(join(backups, 'big')).catch(() => [])).toEqual([]);
  });
});

describe('the clone wizard', () => {
  it('offers a mounted disk only as refused, with the reason; clones onto the blank disk: same files, fsck clean', async () => {
    await open(page, '#/clone');
    await page.getByRole('heading', { name: 'What should be cloned?' }).waitFor();
    await shot(page, 'clone', '1-what');
    await next(page);
    await page.getByRole('radio', { name: /workstation\.img/ }).check();
    await shot(page, 'clone', '2-from');
    await next(page);
    await page.getByRole('heading', { name: 'Copy to which disk?' }).waitFor();
    const mounted = page.getByRole('radio', { name: new RegExp(mountedDev.replace(/\//g, '\\/')) });
    expect(await mounted.isDisabled()).toBe(true);
    await page
      .getByText(/In use: .*mounted/)
      .first()
      .waitFor();
    expect(await page.getByRole('radio', { name: /workstation\.img/ }).isDisabled()).toBe(true);
    await page.getByRole('radio', { name: /blank\.img/ }).check();
    await shot(page, 'clone', '3-to');
    await next(page);
    await shot(page, 'clone', '4-options');
    await next(page);
    await page.getByLabel(/Type blank\.img to confirm/).fill('blank.img');
    await shot(page, 'clone', '5-confirm');
    await page.getByRole('button', { name: 'Overwrite blank.img' }).click();
    await page.getByRole('heading', { name: 'Clone finished' }).waitFor({ timeout: 120_000 });
    await shot(page, 'clone', '6-finished');
    expect(filesOf(await inspectDiskFiles(blank))).toEqual(filesOf(original));
  });

  it("an engine refusal is shown with the engine's message and remedy; nothing is written", async () => {
    await open(page, '#/clone');
    await page.getByRole('heading', { name: 'What should be cloned?' }).waitFor();
    await next(page);
    await page.getByRole('radio', { name: /workstation\.img/ }).check();
    await next(page);
    await page.getByRole('radio', { name: /tiny\.img/ }).check();
    await next(page);
    await next(page);
    await page.getByLabel(/Type tiny\.img to confirm/).fill('tiny.img');
    await page.getByRole('button', { name: 'Overwrite tiny.img' }).click();
    await page.getByRole('heading', { name: 'Clone failed' }).waitFor({ timeout: 60_000 });
    const alert = page.getByRole('alert');
    await alert.getByText('What to do:').waitFor();
    expect(await alert.textContent()).toMatch(/\[E_[A-Z_]+\]/);
    await shot(page, 'clone', '7-refused');
    const head = await fsp.readFile(tiny);
    expect(head.subarray(0, 1024 * 1024).every((b) => b === 0)).toBe(true);
  });
});

describe('tools', () => {
  it('checks a backup (with its password) and says it is intact', async () => {
    await open(page, '#/tools');
    await page.getByRole('heading', { name: 'Tools' }).waitFor();
    await page.getByRole('radio', { name: /workstation\.rimg/ }).check();
    await page.getByLabel('Password').fill('ui secret 1');
    await shot(page, 'tools', '1-check');
    await page.getByRole('button', { name: 'Check the backup' }).click();
    await page.getByText('The backup is intact: every point can be restored.').waitFor({ timeout: 60_000 });
    await shot(page, 'tools', '2-checked');
  });

  it('the log lists every job and filters by result', async () => {
    await open(page, '#/tools');
    await page.getByRole('tab', { name: 'Logs' }).click();
    const rows = page.locator('table.logs tbody tr');
    await expect.poll(() => rows.count()).toBeGreaterThanOrEqual(5);
    await page.getByLabel('Result').selectOption('failed');
    await expect.poll(() => rows.count()).toBe(1);
    expect(await rows.first().textContent()).toMatch(/Clone .*tiny\.img.*failed — E_TARGET_TOO_SMALL/);
    await page.getByLabel('Result').selectOption('cancelled');
    await expect.poll(() => rows.count()).toBe(1);
    await shot(page, 'tools', '3-logs-cancelled');
  });
});

describe('merge', () => {
  it('merges a full backup and an incremental into a new full backup that checks clean', async () => {
    const chainDir = join(dir, 'chain');
    await fsp.mkdir(chainDir);
    const full = await rescue(['backup', 'disk', source, '--to', chainDir, '--name', 'ws', '--yes']);
    expect(full.code, full.stderr).toBe(0);
    const inc = await rescue(['backup', 'incremental', join(chainDir, 'ws', 'ws.rimg'), '--yes']);
    expect(inc.code, inc.stderr).toBe(0);
    const out = join(dir, 'merged');
    await fsp.mkdir(out);
    await open(page, '#/tools');
    await page.getByRole('tab', { name: 'Merge backups' }).click();
    await page.getByLabel('Look in another folder').fill(chainDir);
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('radio', { name: /ws\.rimg.*2 point/ }).check();
    await page.getByLabel('Folder for the merged image').fill(out);
    await shot(page, 'tools', '4-merge');
    await page.getByRole('button', { name: 'Merge', exact: true }).click();
    await page.getByRole('heading', { name: 'Merge finished' }).waitFor({ timeout: 60_000 });
    await shot(page, 'tools', '5-merged');
    const merged = join(out, 'ws-merged.rimg');
    expect((await rescue(['check', merged])).code).toBe(0);
    const info = JSON.parse((await rescue(['info', merged, '--json'])).stdout);
    expect(info.point.type).toBe('full');
  });
});

describe('touch', () => {
  it('the clone wizard works by tapping (a touch screen, 1024×768)', async () => {
    const blank2 = join(dir, 'blank-touch.img');
    await sparseFile(blank2, 160 * MiB);
    const srv = await startApi({ extraDisks: [source, blank2] });
    const ctx = await browser.newContext({ viewport: { width: 1024, height: 768 }, hasTouch: true });
    const t = await ctx.newPage();
    try {
      await t.goto(`${srv.base}/#/clone`);
      await t.getByRole('heading', { name: 'What should be cloned?' }).waitFor();
      await t.getByRole('button', { name: 'Next' }).tap();
      await t
        .getByText(/workstation\.img/)
        .first()
        .tap();
      await t.getByRole('button', { name: 'Next' }).tap();
      await t
        .getByText(/blank-touch\.img/)
        .first()
        .tap();
      expect(await t.getByRole('radio', { name: /blank-touch\.img/ }).isChecked()).toBe(true);
      await t.getByRole('button', { name: 'Next' }).tap();
      await t.getByRole('button', { name: 'Next' }).tap();
      await t.getByLabel(/Type blank-touch\.img to confirm/).tap();
      await t.keyboard.type('blank-touch.img');
      await t.getByRole('button', { name: 'Overwrite blank-touch.img' }).tap();
      await t.getByRole('heading', { name: 'Clone finished' }).waitFor({ timeout: 90_000 });
      await shot(t, 'clone', '8-touch-finished');
      expect(filesOf(await inspectDiskFiles(blank2))).toEqual(filesOf(original));
    } finally {
      await ctx.close();
      await srv.close();
    }
  });
});
