/**
 * The web API against the real engine on disk-image files: backup (encrypted), restore and clone
 * jobs followed through server-sent events, the restored and cloned disks checked by the
 * independent oracles (mounted through the real drivers, fsck), typed confirmation, refusals
 * (mounted target, target holding the image), cancel mid-job, and the queue that never lets two
 * jobs write one disk.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extfs, GPT_TYPE, ntfsfs } from '../../rescue/cli/lab.ts';
import { rescue } from '../fixtures/cli.ts';
import { LoopLab } from '../fixtures/devices.ts';
import { filesOf, inspectDiskFiles, makeDisk } from '../fixtures/disks.ts';
import { makeTempDir, run, sparseFile } from '../fixtures/lab.ts';
import { type ApiClient, followEvents, type Json, startApi } from '../fixtures/server.ts';

const MiB = 1024 * 1024;

const PLAN = {
  file: 'pc.img',
  description: 'GPT: ext4 + NTFS',
  size: 200 * MiB,
  sfdisk: [
    'label: gpt',
    `start=1MiB, size=96MiB, type=${GPT_TYPE.linux}, name="root"`,
    `type=${GPT_TYPE.basicData}, name="data"`,
  ].join('\n'),
  volumes: [extfs('ext4', 'root', 24 * MiB), ntfsfs('Data', 12 * MiB)],
};

let dir: string;
let disk: string;
let images: string;
let api: ApiClient;
let original: Awaited<ReturnType<typeof inspectDiskFiles>>;
let image: string;
const PASSWORD = 'api secret';

beforeAll(async () => {
  dir = await makeTempDir('rescue-api-');
  disk = await makeDisk(PLAN, dir);
  images = join(dir, 'images');
  await fsp.mkdir(images);
  original = await inspectDiskFiles(disk);
  api = await startApi({ extraDisks: [disk], imageFolders: [images], stateDir: join(dir, 'state') });
}, 120_000);

afterAll(async () => {
  await api?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('the API', () => {
  it('answers /api/health with JSON; the local client gets a CSRF token without pairing', async () => {
    const h = await api.get('/api/health');
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({ ok: true, tool: 'rescue test' });
    const s = await api.get('/api/session');
    expect(s.body).toMatchObject({ local: true, paired: true });
    expect(s.body.csrf).toMatch(/^[\w-]{20,}$/);
  });

  it('lists the disk with its partitions, filesystems and labels', async () => {
    const r = await api.get('/api/disks');
    expect(r.status).toBe(200);
    const d = r.body.disks.find((x: Json) => x.path === disk);
    expect(d).toMatchObject({ kind: 'image', size: 200 * MiB, table: 'gpt' });
    expect(d.partitions.map((p: Json) => [p.number, p.fs?.type, p.fs?.label])).toEqual([
      [1, 'ext4', 'root'],
      [2, 'ntfs', 'Data'],
    ]);
    expect(d.partitions[0].fs.usedBytes).toBeGreaterThan(20 * MiB);
  });

  it('refuses state-changing requests without the CSRF token, and bodies with unknown fields', async () => {
    const noToken = await api.post('/api/jobs', { kind: 'check', image: 'x' }, { 'x-rescue-csrf': '' });
    expect(noToken.status).toBe(403);
    expect(noToken.body.error.code).toBe('E_CSRF');
    const crossSite = await api.post(
      '/api/jobs',
      { kind: 'check', image: 'x' },
      { origin: 'http://evil.example' },
    );
    expect(crossSite.status).toBe(403);
    const missing = await api.get('/api/jobs/no-such-job');
    expect(missing.status).toBe(404);
    expect(missing.body.error).toMatchObject({ code: 'E_JOB_NOT_FOUND', details: null });
    expect((await api.post('/api/jobs/no-such-job/cancel')).status).toBe(404);
    const typo = await api.post('/api/jobs', { kind: 'check', image: 'x', pasword: 'p' });
    expect(typo.status).toBe(400);
    expect(typo.body.error).toMatchObject({ code: 'E_BAD_REQUEST', message: 'unknown field "pasword"' });
  });
});

describe('power', () => {
  it('restart and shut down are refused unless the server was started with --power', async () => {
    expect((await api.get('/api/session')).body.power).toBe(false);
    const r = await api.post('/api/power', { action: 'reboot' });
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('E_POWER_DISABLED');
    expect((await api.post('/api/power', { action: 'explode' })).status).toBe(400);
  });
});

describe('jobs', () => {
  it('an encrypted backup runs with live progress; the image is listed and checks clean', async () => {
    const { job, events } = await api.runJob({
      kind: 'backup',
      type: 'disk',
      sources: [{ path: disk }],
      destination: images,
      name: 'pc',
      password: PASSWORD,
      comment: 'from the API',
    });
    expect(job.state, JSON.stringify(job.error)).toBe('done');
    image = (job.result as Json).firstFile;
    expect(image).toBe(join(images, 'pc', 'pc.rimg'));
    expect(events.some((e) => e.event === 'progress' && e.data.bytesDone > 0)).toBe(true);
    expect(events.at(-1)).toMatchObject({ event: 'job', data: { state: 'done' } });
    // The password is not kept in what the API shows.
    expect(JSON.stringify(job)).not.toContain(PASSWORD);
    const list = await api.get('/api/images');
    expect(list.body.chains).toHaveLength(1);
    expect(list.body.chains[0].points[0]).toMatchObject({ path: image, type: 'full', encrypted: true });
    await fsp.writeFile(join(dir, 'pw'), `${PASSWORD}\n`);
    expect((await rescue(['check', image, '--password-file', join(dir, 'pw')])).code).toBe(0);
  });

  it('a restore needs the typed name of the target; then the target holds the same files, fsck clean', async () => {
    const target = join(dir, 'restored.img');
    const spec = { kind: 'restore', image, password: PASSWORD, target };
    const unconfirmed = await api.post('/api/jobs', spec);
    expect(unconfirmed.status).toBe(400);
    expect(unconfirmed.body.error).toMatchObject({
      code: 'E_CONFIRMATION_REQUIRED',
      details: { expected: 'restored.img' },
    });
    await expect(fsp.stat(target)).rejects.toThrow();
    const { job } = await api.runJob({ ...spec, confirm: 'restored.img' });
    expect(job.state, JSON.stringify(job.error)).toBe('done');
    expect(filesOf(await inspectDiskFiles(target))).toEqual(filesOf(original));
  });

  it('a wrong password fails the job with the engine error and its remedy', async () => {
    const { job } = await api.runJob({
      kind: 'restore',
      image,
      password: 'nope',
      target: join(dir, 'never.img'),
      confirm: 'never.img',
    });
    expect(job.state).toBe('failed');
    expect(job.error).toMatchObject({ code: 'E_WRONG_PASSWORD' });
    expect(job.error!.remedy.length).toBeGreaterThan(10);
    await expect(fsp.stat(join(dir, 'never.img'))).rejects.toThrow();
  });

  it('a clone copies the disk (verified); the history lists finished jobs with their results', async () => {
    const target = join(dir, 'clone.img');
    await sparseFile(target, 200 * MiB);
    const { job } = await api.runJob({
      kind: 'clone',
      type: 'disk',
      source: disk,
      target,
      confirm: 'clone.img',
    });
    expect(job.state, JSON.stringify(job.error)).toBe('done');
    expect((job.result as Json).verifiedBytes).toBeGreaterThan(0);
    expect(filesOf(await inspectDiskFiles(target))).toEqual(filesOf(original));
    const h = await api.get('/api/jobs/history');
    const kinds = h.body.jobs.map((j: Json) => `${j.kind}:${j.state}`);
    expect(kinds).toEqual(
      expect.arrayContaining(['backup:done', 'restore:done', 'restore:failed', 'clone:done']),
    );
    const saved = await fsp.readFile(join(dir, 'state', 'jobs.jsonl'), 'utf8');
    expect(saved).not.toContain(PASSWORD);
  });

  it('cancel mid-job stops it and leaves no image behind', async () => {
    const big = join(dir, 'big.img');
    await sparseFile(big, 512 * MiB);
    // Incompressible data at level high keeps the job busy long enough to be cancelled.
    await run('sh', [
      '-c',
      `head -c ${400 * MiB} /dev/urandom | dd of=${big} bs=4M conv=notrunc status=none`,
    ]);
    const started = await api.post('/api/jobs', {
      kind: 'backup',
      type: 'disk',
      sources: [{ path: big }],
      destination: images,
      name: 'big',
      compression: 'high',
      sectorBySector: true,
    });
    expect(started.status).toBe(202);
    const id = started.body.job.id;
    let cancelled = false;
    const events = await followEvents(api.base, id, (e) => {
      if (!cancelled && e.event === 'progress' && e.data.bytesDone > 0) {
        cancelled = true;
        void api.post(`/api/jobs/${id}/cancel`);
      }
    });
    expect(cancelled).toBe(true);
    expect(events.at(-1)).toMatchObject({ event: 'job', data: { state: 'cancelled' } });
    const left = await fsp.readdir(join(images, 'big')).catch(() => []);
    expect(left).toEqual([]);
    await fsp.rm(big);
  }, 120_000);

  it('two jobs writing one disk never run at once: the second waits for the first', async () => {
    const target = join(dir, 'queued.img');
    const spec = { kind: 'restore', image, password: PASSWORD, target, confirm: 'queued.img' };
    const a = await api.post('/api/jobs', spec);
    const b = await api.post('/api/jobs', spec);
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(b.body.job.state).toBe('queued');
    expect(b.body.job.waitingFor).toEqual([a.body.job.id]);
    const [ja, jb] = await Promise.all([
      api.server.jobs.settled(a.body.job.id),
      api.server.jobs.settled(b.body.job.id),
    ]);
    expect(ja!.state).toBe('done');
    expect(jb!.state).toBe('done');
    expect(jb!.started! >= ja!.finished!).toBe(true);
    expect(filesOf(await inspectDiskFiles(target))).toEqual(filesOf(original));
  });
});

describe('refusals', () => {
  const lab = new LoopLab();
  afterAll(async () => {
    await lab.cleanup();
  });

  it('a target with a mounted filesystem, and the disk that holds the image, are refused; nothing is written', async () => {
    const backing = join(dir, 'device.img');
    await sparseFile(backing, 256 * MiB);
    await run('sfdisk', ['-q', backing], { input: 'label: dos\nstart=1MiB, type=83\n' });
    const dev = await lab.attach(backing, 1);
    await run('mkfs.ext4', ['-q', '-F', `${dev}p1`]);
    const mnt = join(dir, 'device-mnt');
    await lab.mount(`${dev}p1`, mnt);
    const name = dev.split('/').pop()!;
    const a = await api.runJob({ kind: 'restore', image, password: PASSWORD, target: dev, confirm: name });
    expect(a.job.state).toBe('failed');
    expect(a.job.error).toMatchObject({ code: 'E_DEVICE_IN_USE' });
    expect(a.job.error!.message).toContain(mnt);
    // The image on that disk (mounted read-only), restored onto the disk itself.
    await fsp.mkdir(join(mnt, 'held'));
    await fsp.copyFile(image, join(mnt, 'held', 'pc.rimg'));
    await lab.umount(mnt);
    await lab.mount(`${dev}p1`, mnt, ['-o', 'ro']);
    const b = await api.runJob({
      kind: 'restore',
      image: join(mnt, 'held', 'pc.rimg'),
      password: PASSWORD,
      target: dev,
      confirm: name,
    });
    expect(b.job.state).toBe('failed');
    expect(b.job.error).toMatchObject({ code: 'E_TARGET_HOLDS_IMAGE' });
    const fsck = await run('fsck.ext4', ['-fn', `${dev}p1`], { allowFail: true });
    expect(fsck.code).toBe(0);
  });
});
