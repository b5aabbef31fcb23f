/**
 * The PXE server on one interface: DHCP (proxy by default, full on request), TFTP for the iPXE
 * loaders (and the TFTP-only boot variant), and the HTTP boot routes that the caller mounts on its
 * web server. The whole chain a client walks:
 *
 *   firmware DHCP (PXEClient, arch) → undionly.kpxe / snponly.efi over TFTP → iPXE DHCP (user class
 *   iPXE) → http://server/pxe/boot.ipxe → kernel + initrd + rescue root over HTTP → the rescue
 *   system checks in at /pxe/hello.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Hono } from 'hono';
import { RescueError } from '../rescue/engine/errors.ts';
import { ClientTracker } from './clients.ts';
import type { BootPlan } from './dhcp/decide.ts';
import { LeaseTable } from './dhcp/leases.ts';
import { DhcpServer } from './dhcp/server.ts';
import { type BootFiles, grubNetConfig, type HttpBootOptions, httpBootRoutes } from './http.ts';
import { type InterfaceFacts, interfaceFacts } from './net/iface.ts';
import { portError } from './net/udp.ts';
import { TftpServer } from './tftp/server.ts';

/** Where Debian's `ipxe` package puts its loaders. */
export const IPXE_DIR = '/usr/lib/ipxe';
const LOADERS = { bios: 'undionly.kpxe', uefi: 'snponly.efi' } as const;
/** The Secure Boot chain, as `rescue media pxe` names it: shim first, the GRUB it loads second. */
const SIGNED = ['shimx64.efi', 'grubx64.efi'];
/** What network GRUB asks for: grub.cfg in its prefix folder, first with the MAC (grub.cfg-01-aa-bb-…). */
const GRUB_CFG = /(?:^|\/)grub\.cfg(?:-01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2}))?$/i;

export interface PxeServiceOptions {
  interface: string;
  files: BootFiles;
  mode: 'proxy' | 'full';
  /** Full mode: "A-B". */
  range?: string;
  /** Full mode: where leases are kept. */
  leaseFile?: string;
  leaseSeconds?: number;
  /** Full mode: the router and DNS servers handed to clients (none by default: an isolated boot LAN). */
  router?: string;
  dns?: string[];
  /** The HTTP port the caller's web server listens on (the base URL clients are given). */
  httpPort: number;
  custom?: string;
  /**
   * UEFI clients get Microsoft-signed shim → Debian-signed network GRUB → the signed kernel (boots
   * with Secure Boot on) instead of iPXE. Needs shimx64.efi and grubx64.efi in the boot files.
   */
  secureBoot?: boolean;
  /** Backup folders shared read-only with the booted machines (/pxe/images/). */
  images?: string[];
  /** How iPXE fetches the kernel and initrds: HTTP (default) or TFTP (networks that pass only TFTP; the benchmark). */
  transfer?: 'http' | 'tftp';
  menuSeconds?: number;
  menuDefault?: 'rescue' | 'local' | 'custom';
  kernelArgs?: string;
  /** Ports, for tests. */
  dhcpPort?: number;
  proxyPort?: number;
  tftpPort?: number;
  /** Seconds to listen for another DHCP server at start (0: do not probe). */
  probeSeconds?: number;
  /** Folder of the iPXE loaders (default: the boot-files folder, else /usr/lib/ipxe). */
  loaderDir?: string;
  /** Resolves true when a machine answers at ip (the full-mode conflict check). */
  probe?: (ip: string) => Promise<boolean>;
  log?: (line: string) => void;
}

export interface PxeStatus {
  interface: string;
  ip: string;
  prefix: number;
  mode: 'proxy' | 'full';
  range?: string;
  baseUrl: string;
  build: string;
  otherDhcpServers: string[];
  warnings: string[];
}

export class PxeService {
  readonly tracker = new ClientTracker();
  private readonly o: PxeServiceOptions;
  private dhcp?: DhcpServer;
  private tftp?: TftpServer;
  private facts?: InterfaceFacts;
  private readonly warnings: string[] = [];
  private probing?: Promise<void>;

  constructor(o: PxeServiceOptions) {
    this.o = o;
  }

  private log(line: string): void {
    this.o.log?.(line);
  }

  get baseUrl(): string {
    const ip = this.facts?.ip ?? '0.0.0.0';
    return `http://${ip}${this.o.httpPort === 80 ? '' : `:${this.o.httpPort}`}/`;
  }

  get address(): string {
    return this.facts?.ip ?? '0.0.0.0';
  }

  status(): PxeStatus {
    return {
      interface: this.o.interface,
      ip: this.facts?.ip ?? '',
      prefix: this.facts?.prefix ?? 0,
      mode: this.o.mode,
      range: this.o.range,
      baseUrl: this.baseUrl,
      build: this.o.files.id,
      otherDhcpServers: this.dhcp?.otherServers() ?? [],
      warnings: [...this.warnings],
    };
  }

  private loaders(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of Object.values(LOADERS)) {
      const dirs = [this.o.loaderDir, this.o.files.dir, IPXE_DIR].filter((d): d is string => !!d);
      const found = dirs.map((d) => join(d, name)).find((p) => existsSync(p));
      if (found) out[name] = found;
    }
    return out;
  }

  async start(): Promise<void> {
    const facts = await interfaceFacts(this.o.interface);
    this.facts = facts;
    const loaders = this.loaders();
    if (Object.keys(loaders).length === 0)
      throw new RescueError(
        'E_PXE_NO_LOADER',
        `No iPXE boot loader found (${LOADERS.bios}, ${LOADERS.uefi} in ${this.o.files.dir} or ${IPXE_DIR})`,
        'Install Debian\'s "ipxe" package (apt-get install ipxe).',
      );
    for (const [kind, name] of Object.entries(LOADERS))
      if (!loaders[name] && !(kind === 'uefi' && this.o.secureBoot))
        this.warn(`${name} is missing: ${kind === 'bios' ? 'BIOS' : 'UEFI'} clients cannot boot`);
    if (this.o.secureBoot) {
      const missing = SIGNED.filter((f) => !existsSync(join(this.o.files.dir, f)));
      if (missing.length > 0)
        throw new RescueError(
          'E_PXE_NO_LOADER',
          `--secure-boot needs ${missing.join(' and ')} in ${this.o.files.dir}`,
          'Make the boot files again with `rescue media pxe` from an ISO built by this version (it carries the signed shim and network GRUB).',
        );
    }
    let leases: LeaseTable | undefined;
    if (this.o.mode === 'full') {
      if (!this.o.range)
        throw new RescueError(
          'E_PXE_RANGE',
          'Full DHCP needs the addresses to hand out',
          'Give --range FIRST-LAST, e.g. --range 192.168.50.100-192.168.50.199.',
        );
      leases = new LeaseTable({
        range: this.o.range,
        subnet: { serverIp: facts.ip, prefix: facts.prefix },
        file: this.o.leaseFile ?? join('/var/lib/rescue', `pxe-leases-${this.o.interface}.json`),
        leaseSeconds: this.o.leaseSeconds,
        probe: this.o.probe ?? (async () => false),
      });
      await leases.load();
    }
    const plan: BootPlan = {
      serverIp: facts.ip,
      bios: LOADERS.bios,
      uefi: this.o.secureBoot ? SIGNED[0] : LOADERS.uefi,
      // iPXE expands ${mac} in the file name it is given: the script learns which machine asks.
      ipxeScriptUrl: `${this.baseUrl}pxe/boot.ipxe?${this.o.transfer === 'tftp' ? 'via=tftp&' : ''}mac=\${mac}`,
    };
    const tftp = new TftpServer({
      root: this.o.files.dir,
      files: loaders,
      address: facts.ip,
      port: this.o.tftpPort ?? 69,
      maxBlksize: Math.max(512, facts.mtu - 32),
      generated: this.o.secureBoot
        ? (name) => {
            const m = GRUB_CFG.exec(name);
            if (!m) return undefined;
            const mac = m[1]?.replaceAll('-', ':').toLowerCase();
            return Buffer.from(grubNetConfig(this.httpOptions(), mac));
          }
        : undefined,
      onEvent: (e) => {
        const ip = e.client.split(':')[0];
        void this.tracker.tftp({
          ip,
          file: e.file,
          type: e.type,
          bytes: e.bytes,
          ms: e.ms,
          reason: e.reason,
        });
        if (e.type === 'error') this.log(`TFTP ${e.client} ${e.file}: ${e.reason}`);
      },
    });
    const dhcp = new DhcpServer({
      interface: facts.name,
      serverIp: facts.ip,
      prefix: facts.prefix,
      serverMac: facts.mac,
      mode: this.o.mode,
      plan,
      leases,
      router: this.o.router,
      dns: this.o.dns,
      port: this.o.dhcpPort,
      proxyPort: this.o.proxyPort,
      onDecision: (d, x) => {
        this.tracker.dhcp({ ...d.client, ip: x.ip, trace: d.trace, problem: x.problem });
        this.log(`DHCP ${d.client.mac}${d.client.ipxe ? ' (iPXE)' : ''}: ${d.trace.join(' → ')}`);
      },
      onLog: (l) => this.log(`DHCP: ${l}`),
      onOtherServer: (ip, how) => {
        if (this.o.mode === 'full')
          this.warn(
            `another DHCP server answers on ${facts.name} at ${ip} (${how}): clients may take their address from it — stop it, or run without --full-dhcp`,
          );
        else
          this.log(
            `the network's DHCP server is ${ip} (${how}); it gives the addresses, this server the boot files`,
          );
      },
    });
    try {
      await dhcp.start();
      this.dhcp = dhcp;
      await tftp.start().catch((e: NodeJS.ErrnoException) => {
        throw e instanceof RescueError ? e : portError(e, this.o.tftpPort ?? 69, facts.name);
      });
      this.tftp = tftp;
    } catch (e) {
      await this.close();
      throw e;
    }
    // Ask whether another DHCP server answers, in the background: a router's server may ping an
    // address for seconds before it offers it. Its answer (or silence) shows up in the log.
    const seconds = this.o.probeSeconds ?? 10;
    if (seconds > 0)
      this.probing = dhcp.probeOtherServers(seconds * 1000).then((found) => {
        if (found === undefined)
          this.log(`could not probe for other DHCP servers (port 68 in use on ${facts.name})`);
        else if (found.length === 0 && this.o.mode === 'proxy' && this.dhcp)
          this.warn(
            `no DHCP server answered on ${facts.name} within ${seconds} s: in proxy mode clients get their address from the network's DHCP server — start with --full-dhcp --range A-B if this network has none`,
          );
      });
  }

  private warn(text: string): void {
    if (this.warnings.includes(text)) return;
    this.warnings.push(text);
    this.log(`WARNING: ${text}`);
  }

  private httpOptions(): HttpBootOptions {
    if (!this.facts) throw new Error('PxeService used before start()');
    const tftpPort = this.o.tftpPort ?? 69;
    return {
      files: this.o.files,
      tracker: this.tracker,
      baseUrl: this.baseUrl,
      tftpHost: `${this.facts.ip}${tftpPort === 69 ? '' : `:${tftpPort}`}`,
      custom: this.o.custom,
      images: this.o.images,
      menuSeconds: this.o.menuSeconds ?? 5,
      menuDefault: this.o.menuDefault,
      kernelArgs: this.o.kernelArgs,
      status: () => ({ ...this.status() }),
    };
  }

  /** Mounts the HTTP boot routes (public /pxe/*, paired /api/pxe/clients) on the caller's web app; after start(). */
  routes(): (app: Hono) => void {
    const options = this.httpOptions();
    return (app) => httpBootRoutes(app, options);
  }

  async close(): Promise<void> {
    const dhcp = this.dhcp;
    this.dhcp = undefined;
    dhcp?.stopProbe();
    await this.probing;
    await dhcp?.close();
    await this.tftp?.close();
    this.tftp = undefined;
  }
}
