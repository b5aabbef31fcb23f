/**
 * HTTP boot: the iPXE menu script and the files it loads (kernel, initrd, the rescue root as a second
 * initrd, an optional custom image), served with Range support, plus the check-in of booted rescue
 * systems (`POST /pxe/hello`) and the clients list for the dashboard (`GET /api/pxe/clients`, behind
 * the server's pairing like every /api route).
 *
 * The menu: the rescue environment (default), this computer's own disk, and a custom image file
 * (the manual's option 3) when one was given: an .iso is SAN-booted by iPXE, an .efi / .kpxe / .ipxe
 * is chained.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { Readable } from 'node:stream';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, Hono } from 'hono';
import { RescueError } from '../rescue/engine/errors.ts';
import type { ClientTracker } from './clients.ts';
import { confine } from './confine.ts';

export interface BootFiles {
  dir: string;
  /** The build id of the rescue system in `dir` (from its boot.ipxe). */
  id: string;
}

export interface HttpBootOptions {
  files: BootFiles;
  tracker: ClientTracker;
  /** What a client is told to use as this server's base URL (http://IP[:port]/). */
  baseUrl: string;
  /** TFTP server address, for the TFTP-only variant of the script (?via=tftp). */
  tftpHost: string;
  /** A custom boot image offered as the third menu entry. */
  custom?: string;
  /** Menu timeout; 0 boots the default entry without a menu. */
  menuSeconds: number;
  /** The entry started when nobody chooses: the rescue system (default), the local disk, or the custom image. */
  menuDefault?: 'rescue' | 'local' | 'custom';
  /** Extra kernel arguments for the rescue environment (console=, rescue.nokiosk, …). */
  kernelArgs?: string;
  /**
   * Backup folders shared read-only with the machines on this network at /pxe/images/NAME/…, so a
   * network-booted rescue system lists and restores them over HTTP. Readable by every machine on
   * the network, like the boot files: encrypt backups that others there must not read.
   */
  images?: string[];
  /** The server state for the dashboard. */
  status: () => Record<string, unknown>;
}

const FILES = ['vmlinuz', 'initrd.img', 'rescue-root.cpio'];

export async function readBootFiles(dir: string): Promise<BootFiles> {
  const missing: string[] = [];
  for (const f of [...FILES, 'boot.ipxe']) {
    const st = await fsp.stat(join(dir, f)).catch(() => undefined);
    if (!st?.isFile()) missing.push(f);
  }
  if (missing.length > 0)
    throw new RescueError(
      'E_PXE_NO_BOOT_FILES',
      `${dir} does not hold the network-boot files (missing: ${missing.join(', ')})`,
      `Make them with \`rescue media pxe --out ${dir}\` (from a checkout, or --iso FILE from a built ISO).`,
    );
  const script = await fsp.readFile(join(dir, 'boot.ipxe'), 'utf8');
  const id = /rescue\.id=(\S+)/.exec(script)?.[1];
  if (!id)
    throw new RescueError(
      'E_PXE_NO_BOOT_FILES',
      `${dir}/boot.ipxe names no rescue build (rescue.id=)`,
      `Make the folder again with \`rescue media pxe --out ${dir}\`.`,
    );
  return { dir, id };
}

/** The iPXE script: a menu, or straight to the rescue environment. `via` picks HTTP or TFTP for the big files. */
export function menuScript(o: HttpBootOptions, mac: string | undefined, via: 'http' | 'tftp'): string {
  const base = via === 'tftp' ? `tftp://${o.tftpHost}/` : `${o.baseUrl}pxe/files/`;
  const serverArg = `rescue.server=${o.baseUrl}`;
  const macArg = mac ? ` rescue.mac=${mac}` : '';
  const lines = ['#!ipxe', `# Rescue network boot (build ${o.files.id}), served by ${o.baseUrl}`];
  const custom = o.custom ? basename(o.custom) : undefined;
  // The entry taken when nobody chooses (or without a menu); a custom default needs a custom image.
  const def = o.menuDefault === 'custom' && !custom ? 'rescue' : (o.menuDefault ?? 'rescue');
  if (o.menuSeconds > 0) {
    lines.push(
      `menu Rescue - network boot || goto ${def}`,
      `item rescue Rescue environment (restore, clone, back up) || goto ${def}`,
      `item local Boot this computer from its own disk || goto ${def}`,
    );
    if (custom) lines.push(`item custom Custom image: ${custom} || goto ${def}`);
    lines.push(
      `choose --default ${def} --timeout ${o.menuSeconds * 1000} target && goto \${target} || goto ${def}`,
    );
  } else lines.push(`goto ${def}`);
  lines.push(
    ':rescue',
    'echo Loading the rescue environment...',
    `kernel ${base}vmlinuz initrd=initrd.img initrd=rescue-root.cpio rescue.id=${o.files.id} ${serverArg}${macArg} ${o.kernelArgs ?? 'console=ttyS0,115200 console=tty0 quiet'} || goto failed`,
    `initrd ${base}initrd.img || goto failed`,
    `initrd ${base}rescue-root.cpio || goto failed`,
    'boot || goto failed',
    ':local',
    'echo Booting from the local disk...',
    // UEFI: leave iPXE and let the firmware try its next boot entry; BIOS: the first hard disk.
    `iseq \${platform} efi && exit 1 ||`,
    'sanboot --no-describe --drive 0x80 || goto failed',
  );
  if (custom) {
    const url = `${o.baseUrl}pxe/files/${encodeURIComponent(custom)}`;
    const ext = extname(custom).toLowerCase();
    lines.push(':custom', `echo Loading ${custom}...`);
    if (ext === '.iso' || ext === '.img') lines.push(`sanboot --no-describe ${url} || goto failed`);
    else lines.push(`chain ${url} || goto failed`);
  }
  lines.push(
    ':failed',
    'echo Network boot failed; the menu comes back in 10 seconds.',
    'sleep 10',
    'goto rescue',
    '',
  );
  return lines.join('\n');
}

/**
 * The config of Debian's signed network GRUB (the Secure Boot path: shim → GRUB → signed kernel):
 * the same choices as the iPXE menu. That GRUB has TFTP but no HTTP built in (and under Secure Boot
 * loads no modules), so the files come over TFTP. It asks for `/grub/grub.cfg` (other GRUB builds
 * try `grub.cfg-01-<mac>` first); the MAC comes from GRUB's own variable when the name lacks it.
 */
/** GRUB's variable holding the MAC of the interface it booted from. */
const GRUB_MAC = `\${net_default_mac}`;

export function grubNetConfig(o: HttpBootOptions, mac: string | undefined): string {
  const ip = new URL(o.baseUrl).hostname;
  const dev = `(tftp,${ip})/`;
  const args = `rescue.id=${o.files.id} rescue.server=${o.baseUrl} rescue.mac=${mac ?? GRUB_MAC} ${o.kernelArgs ?? 'console=ttyS0,115200 console=tty0 quiet'}`;
  return [
    `# Rescue network boot (build ${o.files.id}), served by ${o.baseUrl}`,
    `set timeout=${o.menuSeconds}`,
    `set default=${o.menuDefault === 'local' ? 1 : 0}`,
    "menuentry 'Rescue environment (restore, clone, back up)' {",
    "  echo 'Loading the rescue environment...'",
    `  linux ${dev}vmlinuz ${args}`,
    `  initrd ${dev}initrd.img ${dev}rescue-root.cpio`,
    '}',
    "menuentry 'Boot this computer from its own disk' {",
    '  exit 1',
    '}',
    '',
  ].join('\n');
}

function clientIp(c: Context): string {
  try {
    return (getConnInfo(c).remote.address ?? '').replace(/^::ffff:/, '');
  } catch {
    return '';
  }
}

function validMac(m: string | undefined): string | undefined {
  return m && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(m) ? m.toLowerCase() : undefined;
}

/**
 * A file answered whole or by one byte range (RFC 9110), HEAD included. `onSent` hears when a body
 * has been read out to the end (sent), with its size and how long it took.
 */
export async function sendFile(
  c: Context,
  path: string,
  onSent?: (bytes: number, ms: number) => void,
): Promise<Response> {
  const st = await fsp.stat(path).catch(() => undefined);
  if (!st?.isFile()) return c.text('not found\n', 404);
  const size = st.size;
  const headers: Record<string, string> = {
    'accept-ranges': 'bytes',
    'content-type': 'application/octet-stream',
    'last-modified': st.mtime.toUTCString(),
    'cache-control': 'no-cache',
  };
  let start = 0;
  let end = size - 1;
  let status: 200 | 206 = 200;
  const range = c.req.header('range');
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (!m || (m[1] === '' && m[2] === '')) {
      return new Response(null, { status: 416, headers: { 'content-range': `bytes */${size}` } });
    }
    if (m[1] === '') {
      start = Math.max(0, size - Number(m[2]));
    } else {
      start = Number(m[1]);
      if (m[2] !== '') end = Math.min(end, Number(m[2]));
    }
    if (start >= size || start > end)
      return new Response(null, { status: 416, headers: { 'content-range': `bytes */${size}` } });
    status = 206;
    headers['content-range'] = `bytes ${start}-${end}/${size}`;
  }
  headers['content-length'] = String(end - start + 1);
  if (c.req.method === 'HEAD' || end < start) return new Response(null, { status, headers });
  const started = Date.now();
  const file = createReadStream(path, { start, end, highWaterMark: 1 << 20 });
  if (onSent) file.once('end', () => onSent(end - start + 1, Date.now() - started));
  return new Response(Readable.toWeb(file) as ReadableStream, { status, headers });
}

export function httpBootRoutes(app: Hono, o: HttpBootOptions): void {
  app.get('/pxe/boot.ipxe', async (c) => {
    const mac = validMac(c.req.query('mac'));
    const via = c.req.query('via') === 'tftp' ? 'tftp' : 'http';
    await o.tracker.http({ ip: clientIp(c), mac, path: '/pxe/boot.ipxe', status: 200 });
    c.header('content-type', 'text/plain; charset=utf-8');
    c.header('cache-control', 'no-store');
    return c.body(menuScript(o, mac, via));
  });

  const file = async (c: Context) => {
    const name = c.req.param('name') ?? ''; // hono has decoded it
    let path: string | undefined;
    if (FILES.includes(name)) path = join(o.files.dir, name);
    else if (o.custom && name === basename(o.custom)) path = o.custom;
    const ip = clientIp(c);
    const res = path
      ? await sendFile(
          c,
          path,
          (bytes, ms) => void o.tracker.sent({ ip, path: `/pxe/files/${name}`, bytes, ms }),
        )
      : c.text('not found\n', 404);
    if (c.req.method === 'GET')
      await o.tracker.http({
        ip,
        path: `/pxe/files/${name}`,
        status: res.status,
        bytes: Number(res.headers.get('content-length') ?? 0),
      });
    return res;
  };
  app.on(['GET', 'HEAD'], '/pxe/files/:name', file);

  // A booted rescue system checks in: with its MAC (from the kernel command line) and its own URL.
  app.post('/pxe/hello', async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as Record<string, unknown>;
    const job = body.job && typeof body.job === 'object' ? (body.job as Record<string, unknown>) : undefined;
    await o.tracker.hello({
      ip: clientIp(c),
      mac: validMac(typeof body.mac === 'string' ? body.mac : undefined),
      url: typeof body.url === 'string' && /^https?:\/\//.test(body.url) ? body.url.slice(0, 200) : undefined,
      job: job
        ? {
            id: typeof job.id === 'string' ? job.id.slice(0, 64) : undefined,
            kind: typeof job.kind === 'string' ? job.kind.slice(0, 32) : undefined,
            state: typeof job.state === 'string' ? job.state.slice(0, 32) : undefined,
            percent: typeof job.percent === 'number' ? Math.max(0, Math.min(100, job.percent)) : undefined,
          }
        : undefined,
    });
    return c.json({ ok: true });
  });

  imageRoutes(app, o.images ?? []);

  app.get('/api/pxe/clients', (c) => c.json({ server: o.status(), clients: o.tracker.list() }));
}

/** Each shared folder under a name of its own: its base name, numbered when two are alike. */
export function shareNames(folders: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of folders) {
    const base = basename(f.replace(/\/+$/, '')) || 'images';
    let name = base;
    for (let n = 2; out.has(name); n++) name = `${base}-${n}`;
    out.set(name, f);
  }
  return out;
}

export function imageRoutes(app: Hono, folders: string[]): void {
  const shares = shareNames(folders);
  app.get('/pxe/images/', (c) =>
    c.json({ entries: [...shares.keys()].map((name) => ({ name, type: 'dir' })) }),
  );
  app.on(['GET', 'HEAD'], '/pxe/images/:share/*', async (c) => {
    // From the path as sent, segment by segment: an encoded "/" inside a name is no separator.
    const raw = new URL(c.req.url).pathname.split('/').slice(4);
    let parts: string[];
    try {
      parts = raw.map((p) => decodeURIComponent(p));
    } catch {
      return c.text('bad path\n', 400);
    }
    if (parts.some((p) => p.includes('/') || p.includes('\0'))) return c.text('not found\n', 404);
    const root = shares.get(c.req.param('share'));
    // "." can only come encoded (the URL parser folds plain ones): refused like "..".
    const found =
      root && !parts.includes('.') ? await confine(root, parts.join('/')).catch(() => undefined) : undefined;
    const path = found && 'real' in found ? found.real : undefined;
    const st = path ? await fsp.stat(path).catch(() => undefined) : undefined;
    if (!path || !st) return c.text('not found\n', 404);
    if (st.isDirectory()) {
      if (c.req.method === 'HEAD') return c.body(null, 200);
      const entries = await fsp.readdir(path, { withFileTypes: true });
      return c.json({
        entries: entries
          .filter((e) => !e.name.startsWith('.') && (e.isFile() || e.isDirectory()))
          .map((e) => ({ name: e.name, type: e.isDirectory() ? 'dir' : 'file' })),
      });
    }
    return sendFile(c, path);
  });
}
