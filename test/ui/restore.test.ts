/**
 * The restore wizard in a real browser (Debian's Chromium) against the real server and engine: an
 * encrypted backup of a GPT disk (ext4 + NTFS) restored onto a blank disk-image file by clicking
 * and typing only. The target is then checked by the independent oracles (mounted through the
 * real drivers, fsck). Every step is screenshotted at 1024×768 (and the home screen at 1920×1080).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extfs, GPT_TYPE, ntfsfs } from '../../rescue/cli/lab.ts';
import { launchBrowser, shot } from '../fixtures/browser.ts';
import { imagePath, rescue } from '../fixtures/cli.ts';
import { LoopLab } from '../fixtures/devices.ts';
import { filesOf, inspectDiskFiles, makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';
import { type ApiClient, startApi } from '../fixtures/server.ts';

const MiB = 1024 * 1024;
const PASSWORD = 'wizard secret';

const PLAN = {
  file: 'office-pc.img',
  description: 'GPT: ext4 + NTFS',
  size: 200 * MiB,
  sfdisk: [
    'label: gpt',
    `start=1MiB, size=96MiB, type=${GPT_TYPE.linux}, name="root"`,
    `type=${GPT_TYPE.basicData}, name="data"`,
  ].join('\n'),
  volumes: [extfs('ext4', 'root', 16 * MiB), ntfsfs('Data', 8 * MiB)],
};

let dir: string;
let source: string;
let target: string;
let images: string;
let api: ApiClient;
let browser: Browser;
let page: Page;
let original: Awaited<ReturnType<typeof inspectDiskFiles>>;

beforeAll(async () => {
  dir = await makeTempDir('rescue-ui-');
  source = await makeDisk(PLAN, dir);
  original = await inspectDiskFiles(source);
  images = join(dir, 'backups');
  await fsp.mkdir(images);
  await fsp.writeFile(join(dir, 'pw'), `${PASSWORD}\n`);
  const r = await rescue([
    'backup',
    'disk',
    source,
    '--to',
    images,
    '--name',
    'office-pc',
    '--password-file',
    join(dir, 'pw'),
    '--yes',
  ]);
  expect(r.code, r.stderr).toBe(0);
  expect(imagePath(r)).toBe(join(images, 'office-pc', 'office-pc.rimg'));
  target = join(dir, 'new-disk.img');
  await sparseFile(target, 200 * MiB);
  api = await startApi({ extraDisks: [target], imageFolders: [images] });
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await api?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('the restore wizard', () => {
  it('restores an encrypted backup onto a blank disk: same files, fsck clean', async () => {
    await page.goto(`${api.base}/`);
    await page.getByRole('heading', { name: 'What do you want to do?' }).waitFor();
    await page.getByText('new-disk.img').first().waitFor();
    await shot(page, 'restore', '0-home');

    await page
      .getByRole('link', { name: /^Restore/ })
      .first()
      .click();
    await page.getByRole('heading', { name: 'Which backup?' }).waitFor();
    await page.getByRole('radio', { name: /office-pc\.rimg/ }).check();
    await shot(page, 'restore', '1-backup');
    await page.getByRole('button', { name: 'Next' }).click();

    await page.getByRole('heading', { name: 'Which moment?' }).waitFor();
    await page.getByLabel('Password').fill('not it');
    await page.getByRole('button', { name: 'Open' }).click();
    await page.getByRole('alert').getByText('E_WRONG_PASSWORD').waitFor();
    await shot(page, 'restore', '2-wrong-password');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Open' }).click();
    await expect
      .poll(() => page.getByRole('radio', { name: /full backup \(point 1\)/ }).isChecked())
      .toBe(true);
    await shot(page, 'restore', '2-point');
    await page.getByRole('button', { name: 'Next' }).click();

    await page.getByRole('heading', { name: 'What should be restored?' }).waitFor();
    expect(await page.getByRole('radio', { name: /The whole disk/ }).isChecked()).toBe(true);
    await shot(page, 'restore', '3-what');
    await page.getByRole('button', { name: 'Next' }).click();

    await page.getByRole('heading', { name: 'Where to?' }).waitFor();
    await page.getByRole('radio', { name: /new-disk\.img/ }).check();
    await shot(page, 'restore', '4-where');
    await page.getByRole('button', { name: 'Next' }).click();

    await page.getByRole('heading', { name: 'How?' }).waitFor();
    await shot(page, 'restore', '5-options');
    await page.getByRole('button', { name: 'Next' }).click();

    await page.getByRole('heading', { name: 'Check and confirm' }).waitFor();
    const go = page.getByRole('button', { name: 'Overwrite new-disk.img' });
    expect(await go.isDisabled()).toBe(true);
    await page.getByLabel(/Type new-disk\.img to confirm/).fill('new-disk');
    expect(await go.isDisabled()).toBe(true);
    await page.getByLabel(/Type new-disk\.img to confirm/).fill('new-disk.img');
    await shot(page, 'restore', '6-confirm');
    await go.click();

    await page.getByRole('heading', { name: 'Restore finished' }).waitFor({ timeout: 120_000 });
    await shot(page, 'restore', '7-finished');
    expect(await page.getByText('The disk has been restored').isVisible()).toBe(true);
    expect(filesOf(await inspectDiskFiles(target))).toEqual(filesOf(original));
  });

  it('reads at 1920×1080 too', async () => {
    const wide = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
    await wide.goto(`${api.base}/`);
    await wide.getByRole('heading', { name: 'Disks' }).waitFor();
    await shot(wide, 'restore', '8-home-1080p');
    await wide.close();
  });
});

/**
 * What the kernel, the processes and the server say about a detached loop device whose card stayed
 * on the screen: a detach is deferred while anyone holds the device open.
 */
async function whyStillShown(dev: string, client: ApiClient): Promise<string> {
  const name = dev.replace('/dev/', '');
  const size = await fsp.readFile(`/sys/block/${name}/size`, 'utf8').catch((e) => String(e));
  const backing = await fsp.readFile(`/sys/block/${name}/loop/backing_file`, 'utf8').catch(() => '(none)');
  const holders: string[] = [];
  for (const pid of await fsp.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    for (const fd of await fsp.readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const target = await fsp.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (target === dev) {
        const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        holders.push(`${pid} fd ${fd}: ${cmd.replaceAll('\0', ' ').slice(0, 200)}`);
      }
    }
  }
  // A disk list that never comes back would leave the screen as it was: wait 10 s at most.
  const listed = await Promise.race([
    client
      .get('/api/disks')
      .then(
        (r) =>
          `${r.status} ${(r.body?.disks ?? []).map((d: { path: string; size: number }) => `${d.path}:${d.size}`).join(' ')}`,
      ),
    new Promise<string>((resolve) => setTimeout(() => resolve('no answer within 10 s'), 10_000)),
  ]).catch((e) => String(e));
  return [
    `sysfs size of ${dev}: ${size.trim()} sectors, backing file: ${backing.trim()}`,
    `processes holding ${dev} open: ${holders.length > 0 ? holders.join('; ') : 'none'}`,
    `GET /api/disks now: ${listed}`,
  ].join('\n');
}

describe('the home screen', () => {
  const lab = new LoopLab();
  afterAll(async () => {
    await lab.cleanup();
  });

  it('follows a disk being plugged in and out without a reload', async () => {
    const usb = join(dir, 'usb-stick.img');
    await sparseFile(usb, 45 * MiB);
    await page.goto(`${api.base}/#/`);
    await page.getByRole('heading', { name: 'Disks' }).waitFor();
    const dev = await lab.attach(usb, 0);
    // The card of this stick, by name and by a size no other test's disk has (45 MiB): tests running
    // beside this one get the same loop device numbers for their own disks (32 MiB ones among them).
    const card = page.locator('.disk', { hasText: dev }).filter({ hasText: '47.2 MB' });
    await card.first().waitFor({ timeout: 15_000 });
    await shot(page, 'restore', '9-plugged-in');
    await lab.detach(dev);
    try {
      await card.first().waitFor({ state: 'detached', timeout: 30_000 });
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${await whyStillShown(dev, api)}`);
    }
  });

  it('the restore wizard works by keyboard alone', async () => {
    const target2 = join(dir, 'keyboard.img');
    await sparseFile(target2, 200 * MiB);
    const kb = await startApi({ extraDisks: [target2], imageFolders: [images] });
    const p = await browser.newPage({ viewport: { width: 1024, height: 768 } });
    try {
      await p.goto(`${kb.base}/#/restore`);
      await p.getByRole('heading', { name: 'Which backup?' }).waitFor();
      // Tab to the first backup, Space selects it; Tab onwards to Next, Enter.
      const tabTo = async (accessibleName: RegExp) => {
        for (let i = 0; i < 40; i++) {
          await p.keyboard.press('Tab');
          // A string, evaluated in the page (this file is type-checked without the DOM's types).
          const name = (await p.evaluate(
            `(() => { const el = document.activeElement; return el ? el.tagName + ':' + (el.closest('label')?.textContent ?? el.textContent ?? '') : ''; })()`,
          )) as string;
          if (accessibleName.test(name)) return;
        }
        throw new Error(`Tab never reached ${accessibleName}`);
      };
      // Tab only once what it tabs to is on the screen (the lists load after the heading).
      await p.getByRole('radio', { name: /office-pc\.rimg/ }).waitFor();
      await tabTo(/^INPUT:.*office-pc\.rimg/);
      await p.keyboard.press('Space');
      await tabTo(/^BUTTON:Next/);
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'Which moment?' }).waitFor();
      await tabTo(/^INPUT:/); // the password field
      await p.keyboard.type(PASSWORD);
      await p.keyboard.press('Enter');
      await expect.poll(() => p.getByRole('radio', { name: /full backup/ }).isChecked()).toBe(true);
      await tabTo(/^BUTTON:Next/);
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'What should be restored?' }).waitFor();
      await tabTo(/^BUTTON:Next/);
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'Where to?' }).waitFor();
      await p.getByRole('radio', { name: /keyboard\.img/ }).waitFor();
      await tabTo(/^INPUT:.*keyboard\.img/);
      await p.keyboard.press('Space');
      await tabTo(/^BUTTON:Next/);
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'How?' }).waitFor();
      await tabTo(/^BUTTON:Next/);
      await p.keyboard.press('Enter');
      await p.getByRole('heading', { name: 'Check and confirm' }).waitFor();
      await tabTo(/^INPUT:/);
      await p.keyboard.type('keyboard.img');
      await p.keyboard.press('Enter');
      const outcome = p.getByRole('heading', { name: /^Restore (finished|failed|cancelled)$/ });
      await outcome.waitFor({ timeout: 90_000 }).catch(async (e) => {
        await shot(p, 'restore', '10-keyboard-stuck');
        throw e;
      });
      await shot(p, 'restore', '10-keyboard-finished');
      const alert = (await p.getByRole('alert').count())
        ? await p.getByRole('alert').first().textContent()
        : '';
      expect(await outcome.textContent(), alert ?? '').toBe('Restore finished');
      expect(filesOf(await inspectDiskFiles(target2))).toEqual(filesOf(original));
    } finally {
      await p.close();
      await kb.close();
    }
  });

  it('finds a backup on an attached disk (mounted read-only) and restores it; that disk is not offered as the target', async () => {
    const usb = join(dir, 'backup-stick.img');
    await sparseFile(usb, 160 * MiB);
    await run('sfdisk', ['-q', usb], { input: 'label: gpt\nstart=1MiB, type=linux\n' });
    const dev = await lab.attach(usb, 1);
    await run('mkfs.ext4', ['-q', '-F', '-L', 'STICK', `${dev}p1`]);
    const mnt = join(dir, 'stick-mnt');
    await lab.mount(`${dev}p1`, mnt);
    await run('cp', ['-a', join(images, 'office-pc'), mnt]);
    await lab.umount(mnt);
    const target3 = join(dir, 'from-stick.img');
    await sparseFile(target3, 200 * MiB);
    // Only the stick is searched: the other test files' loop devices are not ours to mount.
    const srv = await startApi({ extraDisks: [target3], attachedDisks: [dev] });
    const p = await browser.newPage({ viewport: { width: 1024, height: 768 } });
    try {
      await p.goto(`${srv.base}/#/restore`);
      await p.getByRole('heading', { name: 'Which backup?' }).waitFor();
      await p.getByRole('button', { name: /Look on attached disks/ }).click();
      await p.getByText('1 backup found on attached disks.').waitFor({ timeout: 60_000 });
      await p.getByRole('radio', { name: new RegExp(`office-pc\\.rimg on ${dev} partition 1`) }).check();
      await shot(p, 'restore', '11-attached-found');
      await p.getByRole('button', { name: 'Next' }).click();
      await p.getByLabel('Password').fill(PASSWORD);
      await p.getByRole('button', { name: 'Open' }).click();
      await expect.poll(() => p.getByRole('radio', { name: /full backup/ }).isChecked()).toBe(true);
      await p.getByRole('button', { name: 'Next' }).click();
      await p.getByRole('button', { name: 'Next' }).click();
      await p.getByRole('heading', { name: 'Where to?' }).waitFor();
      // The stick now holds a (read-only) mounted filesystem with the image: refused as a target.
      await expect.poll(() => p.getByRole('radio', { name: new RegExp(dev) }).isDisabled()).toBe(true);
      await p.getByRole('radio', { name: /from-stick\.img/ }).check();
      await p.getByRole('button', { name: 'Next' }).click();
      await p.getByRole('button', { name: 'Next' }).click();
      await p.getByLabel(/Type from-stick\.img to confirm/).fill('from-stick.img');
      await p.getByRole('button', { name: 'Overwrite from-stick.img' }).click();
      await p.getByRole('heading', { name: 'Restore finished' }).waitFor({ timeout: 90_000 });
      expect(filesOf(await inspectDiskFiles(target3))).toEqual(filesOf(original));
    } finally {
      await p.close();
      await srv.close();
    }
    // The server unmounted what it mounted.
    expect(await fsp.readFile('/proc/self/mountinfo', 'utf8')).not.toContain(`${dev}p1`);
  });
});
