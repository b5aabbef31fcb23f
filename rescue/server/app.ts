/**
 * The HTTP API over the engine (hono): disks, images, jobs with live progress (server-sent
 * events), pairing for hosts other than this one. docs/api.md lists every route.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { getConnInfo } from '@hono/node-server/conninfo';
import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { streamSSE } from 'hono/streaming';
import { isRescueError, RescueError } from '../engine/errors.ts';
import type { AttachedDisks } from './attached.ts';
import { DiskList } from './disks.ts';
import { imageInfo, listImages } from './images.ts';
import { jobFromRequest } from './job-specs.ts';
import { badRequest, type JobManager, type JobUpdate } from './jobs.ts';
import type { Locations } from './locations.ts';
import { CSRF_HEADER, isLoopback, type Pairing, SESSION_COOKIE } from './pairing.ts';
import { uiAssets } from './ui-assets.ts';

export interface AppOptions {
  tool: string;
  jobs: JobManager;
  pairing: Pairing;
  /** Image files shown as disks beside the machine's block devices (labs, tests). */
  extraDisks?: string[];
  /** Folders searched for backup images. */
  imageFolders?: string[];
  locations: Locations;
  attached: AttachedDisks;
  /** Restart and shut down are offered (the rescue system itself, `rescue serve --power`). */
  power?: boolean;
  /** When other computers can connect: the address to give them and the PIN (shown on the local screen only). */
  remoteAccess?: () => { url: string; pin: string } | null;
  /**
   * More routes, added after the API's own (which keep precedence): the PXE server's boot routes.
   * Routes under /api/ are behind pairing like the rest of the API.
   */
  extensions?: Array<(app: Hono) => void>;
}

type Env = { Variables: { csrf: string; local: boolean } };

const STATUS: Record<string, 400 | 404 | 409 | 422> = {
  E_POWER_DISABLED: 409,
  E_JOBS_RUNNING: 409,
  E_BAD_REQUEST: 400,
  E_SHARE_INVALID: 400,
  E_LOCATION_NOT_FOUND: 404,
  E_CONFIRMATION_REQUIRED: 400,
  E_JOB_NOT_FOUND: 404,
};

function remoteAddress(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? '';
  } catch {
    return '';
  }
}

function problem(c: Context, e: RescueError, status: 400 | 401 | 403 | 404 | 409 | 422 | 429) {
  return c.json(
    { error: { code: e.code, message: e.message, remedy: e.remedy, details: e.details ?? null } },
    status,
  );
}

function fail(c: Context, status: 401 | 403 | 429, code: string, message: string, remedy: string) {
  return c.json({ error: { code, message, remedy, details: null } }, status);
}

/** Origin, when a browser sends one, must be this server (a cross-site page posting here is refused). */
function sameOrigin(c: Context): boolean {
  const origin = c.req.header('origin');
  if (!origin) return true;
  try {
    return new URL(origin).host === c.req.header('host');
  } catch {
    return false;
  }
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function createApp(o: AppOptions): Hono<Env> {
  const app = new Hono<Env>();

  app.onError((e, c) => {
    if (isRescueError(e)) return problem(c, e, STATUS[e.code] ?? 422);
    return c.json(
      {
        error: {
          code: 'E_INTERNAL',
          message: `internal error: ${(e as Error).message}`,
          remedy: 'This is a bug: report it with the server output.',
          details: null,
        },
      },
      500,
    );
  });

  // The UI itself needs no pairing: it shows the pairing screen to a computer that must pair.
  const page =
    (type: string, pick: (a: Awaited<ReturnType<typeof uiAssets>>) => string) => async (c: Context) => {
      const assets = await uiAssets();
      c.header('content-type', type);
      c.header('cache-control', 'no-store');
      c.header('x-content-type-options', 'nosniff');
      c.header('content-security-policy', "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
      return c.body(pick(assets));
    };
  app.get(
    '/',
    page('text/html; charset=utf-8', (a) => a.html),
  );
  app.get(
    '/ui/app.js',
    page('text/javascript; charset=utf-8', (a) => a.js),
  );
  app.get(
    '/ui/app.css',
    page('text/css; charset=utf-8', (a) => a.css),
  );

  app.get('/api/health', (c) => c.json({ ok: true, tool: o.tool, time: new Date().toISOString() }));

  /** Who am I: loopback, paired (with the CSRF token to send back) or not paired yet. */
  app.get('/api/session', (c) => {
    if (isLoopback(remoteAddress(c)))
      return c.json({
        local: true,
        paired: true,
        csrf: o.pairing.localCsrf,
        remote: o.remoteAccess?.() ?? null,
        power: !!o.power,
      });
    const s = o.pairing.session(getCookie(c, SESSION_COOKIE));
    return c.json(
      s
        ? { local: false, paired: true, csrf: s.csrf, power: !!o.power }
        : { local: false, paired: false, csrf: null },
    );
  });

  app.post('/api/pair', async (c) => {
    if (!sameOrigin(c))
      return fail(c, 403, 'E_CSRF', 'This request came from another site', 'Open the rescue page itself.');
    const body = (await c.req.json().catch(() => ({}))) as { pin?: unknown };
    const out = o.pairing.pair(remoteAddress(c), body.pin);
    if (!out.ok) {
      if (out.retryAfterSeconds) c.header('Retry-After', String(out.retryAfterSeconds));
      return fail(
        c,
        out.status,
        out.code,
        out.message,
        out.status === 429
          ? 'Wait, then type the PIN shown on the rescue screen.'
          : 'Type the 6-digit PIN shown on the rescue screen (and by rescue serve).',
      );
    }
    setCookie(c, SESSION_COOKIE, out.session.token, { httpOnly: true, sameSite: 'Strict', path: '/' });
    return c.json({ paired: true, csrf: out.session.csrf });
  });

  app.post('/api/logout', (c) => {
    o.pairing.forget(getCookie(c, SESSION_COOKIE));
    deleteCookie(c, SESSION_COOKIE, { path: '/' });
    return c.json({ paired: false });
  });

  const guard: MiddlewareHandler<Env> = async (c, next) => {
    const local = isLoopback(remoteAddress(c));
    let csrf = o.pairing.localCsrf;
    if (!local) {
      const s = o.pairing.session(getCookie(c, SESSION_COOKIE));
      if (!s)
        return fail(
          c,
          401,
          'E_NOT_PAIRED',
          'This computer is not paired with the rescue system',
          'Type the PIN shown on the rescue screen to pair (POST /api/pair).',
        );
      csrf = s.csrf;
    }
    if (UNSAFE.has(c.req.method)) {
      if (!sameOrigin(c) || !o.pairing.csrfMatches(csrf, c.req.header(CSRF_HEADER)))
        return fail(
          c,
          403,
          'E_CSRF',
          `A state-changing request without the session's ${CSRF_HEADER} header`,
          'Reload the page (it fetches the token from GET /api/session).',
        );
    }
    c.set('local', local);
    c.set('csrf', csrf);
    await next();
  };
  app.use('/api/*', guard);

  const diskList = new DiskList(o.extraDisks);
  const attached = o.attached;
  app.get('/api/disks', async (c) => c.json({ disks: await diskList.disks() }));

  app.get('/api/images', async (c) => {
    const extra = c.req.queries('folder') ?? [];
    return c.json(await listImages([...(o.imageFolders ?? []), ...extra]));
  });

  /** Mounts the attached disks' partitions read-only, one by one, and lists the backups on them. */
  app.post('/api/images/attached', async (c) => c.json(await attached.scan(await diskList.disks())));

  app.post('/api/images/info', async (c) => {
    const body = (await c.req.json().catch(() => null)) as {
      path?: unknown;
      password?: unknown;
      point?: unknown;
    } | null;
    if (!body || typeof body.path !== 'string' || body.path === '')
      throw badRequest('"path" must be the image file');
    if (body.password !== undefined && typeof body.password !== 'string')
      throw badRequest('"password" must be a string');
    const point = body.point;
    if (point !== undefined && point !== 'latest' && !(Number.isSafeInteger(point) && (point as number) >= 1))
      throw badRequest('"point" must be a point number or "latest"');
    return c.json(
      await imageInfo(body.path, body.password as string | undefined, point as number | 'latest' | undefined),
    );
  });

  app.get('/api/locations', async (c) => c.json({ locations: await o.locations.all() }));

  app.post('/api/locations', async (c) => {
    const b = (await c.req.json().catch(() => null)) as Record<string, unknown> | null;
    if (!b) throw badRequest('the body is not JSON');
    for (const k of Object.keys(b))
      if (!['name', 'host', 'share', 'folder', 'username', 'password', 'domain'].includes(k))
        throw badRequest(`unknown field "${k}"`);
    for (const k of ['host', 'share'])
      if (typeof b[k] !== 'string' || b[k] === '') throw badRequest(`"${k}" must be a non-empty string`);
    for (const k of ['name', 'folder', 'username', 'password', 'domain'])
      if (b[k] !== undefined && typeof b[k] !== 'string') throw badRequest(`"${k}" must be a string`);
    const location = await o.locations.add(b as unknown as Parameters<Locations['add']>[0]);
    return c.json({ location }, 201);
  });

  app.post('/api/locations/:id/open', async (c) => c.json(await o.locations.open(c.req.param('id'))));

  app.post('/api/locations/:id/delete', async (c) => {
    await o.locations.remove(c.req.param('id'));
    return c.json({ deleted: true });
  });

  /** Restart or shut down the rescue system once its work is done (the wizards' last step). */
  app.post('/api/power', async (c) => {
    const body = (await c.req.json().catch(() => null)) as { action?: unknown } | null;
    const action = body?.action;
    if (action !== 'reboot' && action !== 'poweroff') throw badRequest('"action" must be reboot or poweroff');
    if (!o.power)
      throw new RescueError(
        'E_POWER_DISABLED',
        'Restarting or shutting down is offered only on the rescue system itself',
        'Restart or shut the computer down yourself (this server was not started with --power).',
      );
    const busy = o.jobs.list().filter((j) => j.state === 'running' || j.state === 'queued');
    if (busy.length > 0)
      throw new RescueError(
        'E_JOBS_RUNNING',
        `${busy.length} job(s) are still running: ${busy.map((j) => j.summary).join('; ')}`,
        'Wait for them to finish or cancel them first.',
      );
    // After the answer has left: systemd where it runs, else the plain commands (busybox).
    setTimeout(() => {
      const systemd = existsSync('/run/systemd/system');
      execFile(systemd ? 'systemctl' : action, systemd ? [action] : [], () => {});
    }, 500).unref();
    return c.json({ action }, 202);
  });

  app.get('/api/jobs', (c) => c.json({ jobs: o.jobs.list() }));
  app.get('/api/jobs/history', async (c) => c.json({ jobs: await o.jobs.history() }));

  app.post('/api/jobs', async (c) => {
    const body = await c.req.json().catch(() => {
      throw badRequest('the body is not JSON');
    });
    const job = await o.jobs.submit(jobFromRequest(body, o.tool));
    return c.json({ job }, 202);
  });

  app.get('/api/jobs/:id', (c) => {
    const job = o.jobs.get(c.req.param('id'));
    if (!job) throw jobNotFound(c.req.param('id'));
    return c.json({ job });
  });

  app.post('/api/jobs/:id/cancel', (c) => {
    const job = o.jobs.cancel(c.req.param('id'));
    if (!job) throw jobNotFound(c.req.param('id'));
    return c.json({ job });
  });

  /** Live updates of one job (its state first, then progress, log lines, state changes). */
  app.get('/api/jobs/:id/events', (c) => {
    const id = c.req.param('id');
    if (!o.jobs.get(id)) throw jobNotFound(id);
    return streamUpdates(c, o.jobs, (u) => ('id' in u ? u.id : u.job.id) === id, id);
  });

  /** Live updates of every job. */
  app.get('/api/events', (c) => streamUpdates(c, o.jobs, () => true));

  for (const extend of o.extensions ?? []) extend(app as unknown as Hono);
  return app;
}

/** Answered 404 by onError (the status table), like every other refusal. */
function jobNotFound(id: string): RescueError {
  return new RescueError('E_JOB_NOT_FOUND', `There is no job ${id}`, 'List the jobs with GET /api/jobs.');
}

function streamUpdates(c: Context, jobs: JobManager, wanted: (u: JobUpdate) => boolean, jobId?: string) {
  return streamSSE(c, async (stream) => {
    const queue: JobUpdate[] = [];
    let wake: (() => void) | undefined;
    const off = jobs.subscribe((u) => {
      if (!wanted(u)) return;
      queue.push(u);
      wake?.();
    });
    // Subscribed first, then the snapshot: no update can fall between the two.
    const first = jobId === undefined ? undefined : jobs.get(jobId);
    let closed = false;
    stream.onAbort(() => {
      closed = true;
      wake?.();
    });
    try {
      if (first) await stream.writeSSE({ event: 'job', data: JSON.stringify(first) });
      // A one-job stream ends with the job; the all-jobs stream runs until the client leaves.
      let ended = first ? !['queued', 'running'].includes(first.state) : false;
      while (!closed && !ended) {
        if (queue.length === 0) {
          await new Promise<void>((r) => {
            wake = r;
            // A comment line every 15 s keeps proxies from timing the stream out.
            setTimeout(r, 15_000).unref();
          });
          wake = undefined;
          if (queue.length === 0 && !closed) await stream.write(': keep-alive\n\n');
          continue;
        }
        const u = queue.shift()!;
        const data =
          u.type === 'job'
            ? u.job
            : u.type === 'progress'
              ? { id: u.id, ...u.progress }
              : { id: u.id, ...u.line };
        await stream.writeSSE({ event: u.type, data: JSON.stringify(data) });
        if (first && u.type === 'job' && !['queued', 'running'].includes(u.job.state)) ended = true;
      }
    } finally {
      off();
    }
  });
}
