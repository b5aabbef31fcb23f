/**
 * rescue serve [--port P] [--listen ADDR] [--images DIR]… [--disk FILE]… [--state DIR] [--power]
 *              [--report-to URL [--report-mac MAC]]
 *
 * The web API (and UI) on 127.0.0.1:8080 by default. With --listen beyond loopback other hosts
 * must pair with the PIN printed here. Runs until Ctrl-C, which cancels running jobs cleanly.
 */
import { startServer } from '../../server/serve.ts';
import { parseCommand } from '../args.ts';
import { UsageError } from '../output.ts';
import { TOOL } from '../version.ts';

const OPTIONS = {
  port: { type: 'string' },
  listen: { type: 'string' },
  images: { type: 'string', multiple: true },
  disk: { type: 'string', multiple: true },
  state: { type: 'string' },
  power: { type: 'boolean' },
  'report-to': { type: 'string' },
  'report-mac': { type: 'string' },
} as const;

export async function serveCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const { values: v, positionals } = parseCommand(argv, OPTIONS);
  if (positionals.length > 0) throw new UsageError(`rescue serve takes no ${positionals[0]}`);
  let port: number | undefined;
  if (v.port !== undefined) {
    if (!/^\d+$/.test(v.port) || Number(v.port) > 65535)
      throw new UsageError('--port takes a port number (0-65535)');
    port = Number(v.port);
  }
  const server = await startServer({
    tool: TOOL,
    port,
    listen: v.listen,
    imageFolders: v.images,
    extraDisks: v.disk,
    stateDir: v.state,
    power: v.power,
    reportTo: v['report-to'] ? { server: reportUrl(v['report-to']), mac: v['report-mac'] } : undefined,
    onPinChange: (pin) => process.stdout.write(`Too many wrong PINs: the pairing PIN is now ${pin}\n`),
  });
  process.stdout.write(`Rescue is listening on ${server.url}\n`);
  if (server.remote) {
    for (const u of server.lanUrls) process.stdout.write(`Other computers open ${u}\n`);
    process.stdout.write(`Pairing PIN for other computers: ${server.pin}\n`);
  } else process.stdout.write('Only this computer can connect (use --listen 0.0.0.0 for the network).\n');
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener('abort', () => resolve(), { once: true });
  });
  process.stdout.write('Stopping: cancelling running jobs…\n');
  await server.close();
  return 0;
}

function reportUrl(text: string): string {
  try {
    const u = new URL(text);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
    return u.toString();
  } catch {
    throw new UsageError(`--report-to takes the PXE server's URL (http://ADDRESS/), not "${text}"`);
  }
}
