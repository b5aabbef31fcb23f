/**
 * rescue pxe serve --interface IF [--full-dhcp --range A-B] [--images DIR] [--boot-files DIR]
 *                  [--port P] [--custom FILE] [--menu S] [--router IP] [--dns IP]… [--state DIR]
 *                  [--menu-default rescue|local|custom] [--transfer http|tftp] [--secure-boot] [--kernel-args TEXT] [--lease-time S] [--probe-seconds S]
 *
 * Network boot for a LAN: DHCP (proxy beside the network's own server by default; a full DHCP
 * server with --full-dhcp), TFTP for the iPXE loaders, HTTP for the boot menu, kernel and rescue
 * root, and the rescue web UI with a PXE clients page — all on the one interface given.
 */
import { join, resolve } from 'node:path';
import { readBootFiles } from '../../../pxe/http.ts';
import { pingProbe } from '../../../pxe/net/ping.ts';
import { PxeService } from '../../../pxe/service.ts';
import { startServer } from '../../server/serve.ts';
import { parseCommand } from '../args.ts';
import { UsageError } from '../output.ts';
import { TOOL } from '../version.ts';

const OPTIONS = {
  interface: { type: 'string' },
  'full-dhcp': { type: 'boolean' },
  range: { type: 'string' },
  router: { type: 'string' },
  dns: { type: 'string', multiple: true },
  'lease-time': { type: 'string' },
  images: { type: 'string', multiple: true },
  'boot-files': { type: 'string' },
  custom: { type: 'string' },
  transfer: { type: 'string' },
  'secure-boot': { type: 'boolean' },
  menu: { type: 'string' },
  'menu-default': { type: 'string' },
  'kernel-args': { type: 'string' },
  port: { type: 'string' },
  state: { type: 'string' },
  'probe-seconds': { type: 'string' },
} as const;

export const DEFAULT_STATE = '/var/lib/rescue';

function number(text: string | undefined, what: string, max: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) > max) throw new UsageError(`${what} takes a number (0-${max})`);
  return Number(text);
}

function ipv4(text: string | undefined, what: string): string | undefined {
  if (text === undefined) return undefined;
  if (
    !/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(text) ||
    text.split('.').some((p) => Number(p) > 255)
  )
    throw new UsageError(`${what} takes an IPv4 address, not "${text}"`);
  return text;
}

export async function pxeCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'serve')
    throw new UsageError(sub ? `unknown pxe command "${sub}"` : 'rescue pxe serve --interface IF …');
  const { values: v, positionals } = parseCommand(rest, OPTIONS);
  if (positionals.length > 0) throw new UsageError(`rescue pxe serve takes no ${positionals[0]}`);
  if (!v.interface)
    throw new UsageError('--interface IF is required: the network the clients are on (see `ip addr`)');
  if (v.range && !v['full-dhcp'])
    throw new UsageError('--range goes with --full-dhcp (proxy DHCP hands out no addresses)');
  if (v['full-dhcp'] && !v.range) throw new UsageError('--full-dhcp needs --range FIRST-LAST');
  const port = number(v.port, '--port', 65535) ?? 80;
  const state = resolve(v.state ?? DEFAULT_STATE);
  const files = await readBootFiles(resolve(v['boot-files'] ?? join(state, 'pxe')));
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const service = new PxeService({
    interface: v.interface,
    files,
    mode: v['full-dhcp'] ? 'full' : 'proxy',
    range: v.range,
    leaseFile: join(state, `pxe-leases-${v.interface}.json`),
    leaseSeconds: number(v['lease-time'], '--lease-time', 7 * 86400),
    router: ipv4(v.router, '--router'),
    dns: v.dns?.map((d) => ipv4(d, '--dns') as string),
    httpPort: port,
    custom: v.custom ? resolve(v.custom) : undefined,
    images: v.images?.map((d) => resolve(d)),
    transfer: transferOption(v.transfer),
    secureBoot: v['secure-boot'],
    menuSeconds: number(v.menu, '--menu', 600),
    menuDefault: menuDefaultOption(v['menu-default'], v.custom),
    kernelArgs: v['kernel-args'],
    probeSeconds: number(v['probe-seconds'], '--probe-seconds', 30),
    probe: pingProbe(v.interface, () =>
      out('WARNING: no `ping` here: addresses are offered without a conflict check'),
    ),
    log: (line) => out(`${new Date().toISOString().slice(11, 19)} ${line}`),
  });
  await service.start();
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer({
      tool: TOOL,
      port,
      listen: service.address,
      imageFolders: v.images,
      stateDir: state,
      extensions: [service.routes()],
      onPinChange: (pin) => out(`Too many wrong PINs: the pairing PIN is now ${pin}`),
    });
  } catch (e) {
    await service.close();
    throw e;
  }
  const st = service.status();
  out(
    `PXE server on ${st.interface} (${st.ip}/${st.prefix}): ${st.mode === 'full' ? `full DHCP, addresses ${st.range}` : 'proxy DHCP (the network’s DHCP server gives the addresses)'}`,
  );
  out(`Boot menu: ${service.baseUrl}pxe/boot.ipxe  (rescue build ${files.id})`);
  out(`Clients page: ${service.baseUrl}#/pxe`);
  if (v.images?.length)
    out(
      `Backups shared with the booted machines: ${v.images.join(', ')} at ${service.baseUrl}pxe/images/ (readable by every machine on ${v.interface}; encrypted backups stay unreadable without their password)`,
    );
  out(`Pairing PIN for other computers: ${server.pin}`);
  await new Promise<void>((resolveWait) => {
    if (signal.aborted) resolveWait();
    signal.addEventListener('abort', () => resolveWait(), { once: true });
  });
  out('Stopping the PXE server…');
  await server.close();
  await service.close();
  return 0;
}

function transferOption(text: string | undefined): 'http' | 'tftp' | undefined {
  if (text === undefined || text === 'http' || text === 'tftp') return text;
  throw new UsageError(`--transfer takes http or tftp, not "${text}"`);
}

function menuDefaultOption(
  text: string | undefined,
  custom: string | undefined,
): 'rescue' | 'local' | 'custom' | undefined {
  if (text === undefined) return undefined;
  if (text !== 'rescue' && text !== 'local' && text !== 'custom')
    throw new UsageError(`--menu-default takes rescue, local or custom, not "${text}"`);
  if (text === 'custom' && !custom) throw new UsageError('--menu-default custom needs --custom FILE');
  return text;
}
