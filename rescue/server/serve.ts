/**
 * Starts the API (and, later, the UI) on an address: 127.0.0.1:8080 by default. Listening anywhere
 * else turns pairing on for every host but this one; the PIN is in the result for the caller to
 * show (the kiosk screen, `rescue serve`'s output).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { createAdaptorServer } from '@hono/node-server';
import { RescueError } from '../engine/errors.ts';
import { type AppOptions, createApp } from './app.ts';
import { AttachedDisks } from './attached.ts';
import { JobManager } from './jobs.ts';
import { Locations } from './locations.ts';
import { isLoopback, Pairing } from './pairing.ts';
import { startReporting } from './report.ts';

export interface ServeOptions {
  tool: string;
  port?: number;
  listen?: string;
  extraDisks?: string[];
  imageFolders?: string[];
  /** Search only these disks for backups when asked to look on attached disks (default: all). */
  attachedDisks?: string[];
  /** Offer restart and shut down (only on the rescue system itself). */
  power?: boolean;
  /** Folder for the job history (the log view). */
  stateDir?: string;
  /** Told when too many wrong PINs made the PIN change. */
  onPinChange?: (pin: string) => void;
  /** Network-booted: report to this PXE server (rescue.server= on the kernel command line). */
  reportTo?: { server: string; mac?: string };
  /** More routes (see AppOptions.extensions). */
  extensions?: AppOptions['extensions'];
}

export interface RunningServer {
  url: string;
  address: string;
  port: number;
  pin: string;
  /** The addresses other computers use (this machine's addresses when listening on all of them). */
  lanUrls: string[];
  /** Whether hosts other than this one can reach it (and must pair). */
  remote: boolean;
  jobs: JobManager;
  pairing: Pairing;
  close(): Promise<void>;
}

export const DEFAULT_PORT = 8080;
export const DEFAULT_LISTEN = '127.0.0.1';

/** Where other computers reach a server bound to `addr`: its own address, or every LAN address of this machine. */
function lanUrls(addr: AddressInfo): string[] {
  const port = addr.port === 80 ? '' : `:${addr.port}`;
  const url = (ip: string, v6: boolean) => `http://${v6 ? `[${ip}]` : ip}${port}/`;
  if (isLoopback(addr.address)) return [];
  if (addr.address !== '0.0.0.0' && addr.address !== '::') return [url(addr.address, addr.family === 'IPv6')];
  return Object.values(networkInterfaces())
    .flat()
    .filter((i) => i && !i.internal && i.family === 'IPv4')
    .map((i) => url(i!.address, false));
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const jobs = new JobManager({ stateDir: o.stateDir });
  const pairing = new Pairing({ onPinChange: o.onPinChange });
  const locations = new Locations({ stateDir: o.stateDir });
  const attached = new AttachedDisks(o.attachedDisks);
  const listen = o.listen ?? DEFAULT_LISTEN;
  let remote: (() => string) | null = null;
  const app = createApp({
    locations,
    attached,
    power: o.power,
    remoteAccess: () => (remote ? { url: remote(), pin: pairing.pin } : null),
    tool: o.tool,
    jobs,
    pairing,
    extraDisks: o.extraDisks,
    imageFolders: o.imageFolders,
    extensions: o.extensions,
  });

  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new RescueError(
          'E_LISTEN',
          `Cannot listen on ${listen} port ${o.port ?? DEFAULT_PORT}: ${e.code === 'EADDRINUSE' ? 'another program uses that port' : e.code === 'EADDRNOTAVAIL' ? 'this machine has no such address' : e.message}`,
          e.code === 'EADDRINUSE'
            ? 'Stop the other program or choose another port with --port.'
            : 'Give an address of this machine with --listen (0.0.0.0 for all), or a port you may use.',
        ),
      ),
    );
    server.listen(o.port ?? DEFAULT_PORT, listen, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const lan = lanUrls(addr);
  // Asked anew each time: on the rescue system the DHCP lease may arrive after the server started.
  if (!isLoopback(addr.address)) remote = () => lanUrls(addr)[0] ?? `http://${host}:${addr.port}/`;
  const stopReporting = o.reportTo
    ? startReporting({
        server: o.reportTo.server,
        mac: o.reportTo.mac,
        ownUrl: () => lanUrls(addr)[0],
        jobs,
        onError: (m) => process.stderr.write(`rescue: ${m}\n`),
      })
    : undefined;
  return {
    url: `http://${host}:${addr.port}/`,
    lanUrls: lan,
    address: addr.address,
    port: addr.port,
    get pin() {
      return pairing.pin;
    },
    remote: !isLoopback(addr.address),
    jobs,
    pairing,
    async close() {
      stopReporting?.();
      await jobs.close();
      await locations.close();
      await attached.close();
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
