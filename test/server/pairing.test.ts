/**
 * Remote access: `rescue serve --listen` in one network namespace, reached with curl from another
 * (TEST-NET-1 over a veth pair, both made by the test). Un-paired requests are refused, a wrong PIN
 * is refused and rate-limited, the right PIN (read from the server's output) gives a session cookie
 * that works — and still needs the CSRF token for anything that changes state. The pairing rules
 * themselves are unit-tested with a clock.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Pairing } from '../../rescue/server/pairing.ts';
import { makeTempDir, run } from '../fixtures/lab.ts';
import {
  inNetns,
  makeTestNet,
  SERVER_IP,
  type ServeProcess,
  serveInNamespace,
  type TestNet,
} from '../fixtures/netns.ts';

let dir: string;
let net: TestNet;
let server: ServeProcess;
let pin = '';
const url = `http://${SERVER_IP}:8080`;

/** curl in the client namespace: status, headers and body. */
async function curl(
  path: string,
  opts: { method?: string; body?: unknown; headers?: Record<string, string> } = {},
) {
  const [cmd, ...pre] = inNetns(net.clientNs);
  const args = [...pre, 'curl', '-s', '-m', '20', '-D', '-', '-b', join(dir, 'jar'), '-c', join(dir, 'jar')];
  if (opts.method) args.push('-X', opts.method);
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
  if (opts.body !== undefined)
    args.push('-H', 'content-type: application/json', '--data', JSON.stringify(opts.body));
  args.push(url + path);
  const r = await run(cmd, args);
  const [head, ...rest] = r.stdout.split('\r\n\r\n');
  const status = Number(head.split(' ')[1]);
  const text = rest.join('\r\n\r\n');
  return { status, head, body: text ? JSON.parse(text) : null };
}

beforeAll(async () => {
  dir = await makeTempDir('rescue-pair-');
  net = await makeTestNet(`r${process.pid % 100000}`);
  server = await serveInNamespace(net.serverNs, ['--listen', SERVER_IP]);
  pin = server.pin;
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await net?.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('a computer on the network', () => {
  it('reaches /api/health, but nothing else until it pairs', async () => {
    expect(server.output()).toContain(`Rescue is listening on ${url}/`);
    const h = await curl('/api/health');
    expect(h.status).toBe(200);
    expect(h.body.ok).toBe(true);
    const s = await curl('/api/session');
    expect(s.body).toEqual({ local: false, paired: false, csrf: null });
    for (const path of ['/api/disks', '/api/jobs', '/api/images']) {
      const r = await curl(path);
      expect(r.status, path).toBe(401);
      expect(r.body.error.code).toBe('E_NOT_PAIRED');
    }
    const post = await curl('/api/jobs', { method: 'POST', body: { kind: 'check', image: '/x' } });
    expect(post.status).toBe(401);
  });

  it('a wrong PIN is refused; the right one pairs; the session still needs the CSRF token to change anything', async () => {
    const wrongPin = pin === '000000' ? '111111' : '000000';
    const wrong = await curl('/api/pair', { method: 'POST', body: { pin: wrongPin } });
    expect(wrong.status).toBe(403);
    expect(wrong.body.error.code).toBe('E_PAIRING_PIN');
    const ok = await curl('/api/pair', { method: 'POST', body: { pin: pin } });
    expect(ok.status).toBe(200);
    expect(ok.head).toMatch(/set-cookie: rescue_session=[\w-]+;.*HttpOnly/i);
    expect(ok.head).toMatch(/SameSite=Strict/i);
    const csrf = ok.body.csrf as string;
    expect((await curl('/api/session')).body).toEqual({ local: false, paired: true, csrf, power: false });
    const disks = await curl('/api/disks');
    expect(disks.status).toBe(200);
    expect(Array.isArray(disks.body.disks)).toBe(true);
    const noToken = await curl('/api/jobs', {
      method: 'POST',
      body: { kind: 'check', image: '/nowhere.rimg' },
    });
    expect(noToken.status).toBe(403);
    expect(noToken.body.error.code).toBe('E_CSRF');
    const withToken = await curl('/api/jobs', {
      method: 'POST',
      body: { kind: 'check', image: '/nowhere.rimg' },
      headers: { 'x-rescue-csrf': csrf },
    });
    expect(withToken.status).toBe(202);
    let job = withToken.body.job;
    for (let i = 0; i < 100 && ['queued', 'running'].includes(job.state); i++) {
      await new Promise((r) => setTimeout(r, 100));
      job = (await curl(`/api/jobs/${job.id}`)).body.job;
    }
    expect(job.state).toBe('failed');
    expect(job.error.code).toBe('E_IMAGE_NOT_FOUND');
    // Logging out ends the session.
    expect((await curl('/api/logout', { method: 'POST' })).status).toBe(200);
    expect((await curl('/api/disks')).status).toBe(401);
  });

  it('PIN guessing is rate-limited per address', async () => {
    const wrongPin = pin === '000000' ? '111111' : '000000';
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++)
      statuses.push((await curl('/api/pair', { method: 'POST', body: { pin: wrongPin } })).status);
    // The successful pairing before cleared this address's failures: five are allowed, then 429.
    expect(statuses).toEqual([403, 403, 403, 403, 403, 429]);
    const locked = await curl('/api/pair', { method: 'POST', body: { pin: pin } });
    expect(locked.status).toBe(429);
    expect(locked.head).toMatch(/retry-after: \d+/i);
  });
});

describe('pairing rules', () => {
  it('5 failures per address per 5 minutes; 20 failures in all change the PIN', () => {
    let now = 1_000_000;
    const changes: string[] = [];
    const p = new Pairing({ pin: '123456', now: () => now, onPinChange: (pin) => changes.push(pin) });
    for (let i = 0; i < 5; i++)
      expect(p.pair('10.0.0.1', '000000')).toMatchObject({ ok: false, status: 403 });
    expect(p.pair('10.0.0.1', '123456')).toMatchObject({ ok: false, status: 429 });
    now += 5 * 60 * 1000 + 1;
    const ok = p.pair('10.0.0.1', '123456');
    expect(ok.ok).toBe(true);
    if (ok.ok) expect(p.session(ok.session.token)?.address).toBe('10.0.0.1');
    for (let i = 0; i < 20; i++) p.pair(`10.0.1.${i}`, '000000');
    expect(changes).toHaveLength(1);
    expect(p.pin).toBe(changes[0]);
    expect(p.pin).toMatch(/^\d{6}$/);
    // Not a 6-digit string: refused like a wrong PIN, never a crash.
    expect(p.pair('10.0.0.9', { pin: 1 })).toMatchObject({ ok: false, status: 403 });
    // Sessions expire after 12 hours.
    now += 12 * 60 * 60 * 1000 + 1;
    if (ok.ok) expect(p.session(ok.session.token)).toBeUndefined();
  });
});
