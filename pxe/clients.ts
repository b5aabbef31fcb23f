/**
 * Every machine the PXE server has seen, by MAC address, with how far its boot got — DHCP → TFTP →
 * HTTP → rescue up → job — and a trace of what it was answered, so an admin can tell why a machine
 * did not boot ("arch 7 (UEFI x64) → snponly.efi (TFTP)", then nothing: the firmware did not fetch it).
 */
import { promises as fsp } from 'node:fs';

export type Stage = 'dhcp' | 'tftp' | 'http' | 'rescue' | 'job';
const ORDER: Stage[] = ['dhcp', 'tftp', 'http', 'rescue', 'job'];

export interface PxeClient {
  mac: string;
  arch?: number;
  firmware?: string;
  uuid?: string;
  ip?: string;
  stage: Stage;
  /** The last thing that went wrong for this machine, in words. */
  problem?: string;
  /** Where the booted rescue system answers (its own UI). */
  rescueUrl?: string;
  job?: { id?: string; kind?: string; state?: string; percent?: number };
  firstSeen: string;
  lastSeen: string;
  trace: { at: string; text: string }[];
}

const TRACE_LIMIT = 40;
const MAX_CLIENTS = 2000;

function firmwareOf(arch: number | undefined): string {
  if (arch === undefined || arch === 0) return 'BIOS';
  if (arch === 6) return 'UEFI IA32';
  if (arch === 7 || arch === 9) return 'UEFI x64';
  if (arch === 11) return 'UEFI ARM64';
  return `arch ${arch}`;
}

/** The MAC the kernel's neighbour table holds for `ip` (who fetched a file over TFTP or HTTP). */
export async function macFromNeighbours(ip: string, table = '/proc/net/arp'): Promise<string | undefined> {
  const text = await fsp.readFile(table, 'utf8').catch(() => '');
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[0] === ip && f[3] && f[3] !== '00:00:00:00:00:00') return f[3].toLowerCase();
  }
  return undefined;
}

export class ClientTracker {
  private readonly byMac = new Map<string, PxeClient>();
  private readonly macByIp = new Map<string, string>();
  private readonly now: () => Date;
  private readonly neighbours: (ip: string) => Promise<string | undefined>;

  constructor(o: { now?: () => Date; neighbours?: (ip: string) => Promise<string | undefined> } = {}) {
    this.now = o.now ?? (() => new Date());
    this.neighbours = o.neighbours ?? macFromNeighbours;
  }

  private client(mac: string): PxeClient {
    const key = mac.toLowerCase();
    let c = this.byMac.get(key);
    if (!c) {
      const at = this.now().toISOString();
      c = { mac: key, stage: 'dhcp', firstSeen: at, lastSeen: at, trace: [] };
      this.byMac.set(key, c);
      // A long-running server on a big LAN: the machines seen longest ago are forgotten first.
      if (this.byMac.size > MAX_CLIENTS) {
        const oldest = [...this.byMac.values()].sort((a, b) => a.lastSeen.localeCompare(b.lastSeen))[0];
        this.byMac.delete(oldest.mac);
      }
    }
    return c;
  }

  private note(c: PxeClient, text: string, stage?: Stage): void {
    const at = this.now().toISOString();
    c.lastSeen = at;
    c.trace.push({ at, text });
    if (c.trace.length > TRACE_LIMIT) c.trace.splice(0, c.trace.length - TRACE_LIMIT);
    if (stage && ORDER.indexOf(stage) > ORDER.indexOf(c.stage)) c.stage = stage;
  }

  /** A DHCP exchange: what was asked and answered. A firmware DHCP (not iPXE) starts a new boot. */
  dhcp(o: {
    mac: string;
    arch?: number;
    uuid?: string;
    ipxe: boolean;
    /** Asked as a PXE client (vendor class PXEClient): firmware, or iPXE. */
    pxe?: boolean;
    ip?: string;
    trace: string[];
    problem?: string;
  }): void {
    const c = this.client(o.mac);
    // PXE firmware asking again means the machine is booting again (the booted rescue system's own
    // DHCP client, renewing its lease, is not PXE and changes nothing).
    if (o.pxe && !o.ipxe && ORDER.indexOf(c.stage) > ORDER.indexOf('tftp')) {
      c.stage = 'dhcp'; // booting again
      delete c.job;
      delete c.rescueUrl;
    }
    if (o.arch !== undefined) {
      c.arch = o.arch;
      c.firmware = firmwareOf(o.arch);
    } else if (!c.firmware && o.pxe && !o.ipxe) c.firmware = firmwareOf(undefined);
    if (o.uuid) c.uuid = o.uuid;
    if (o.ip) this.learnIp(c, o.ip);
    if (o.problem) c.problem = o.problem;
    else delete c.problem;
    this.note(c, `DHCP${o.ipxe ? ' (iPXE)' : ''}: ${o.trace.join(' → ')}`, 'dhcp');
  }

  private learnIp(c: PxeClient, ip: string): void {
    c.ip = ip;
    this.macByIp.set(ip, c.mac);
  }

  private async byIp(ip: string, mac?: string): Promise<PxeClient> {
    const known = mac ?? this.macByIp.get(ip) ?? (await this.neighbours(ip));
    const c = this.client(known ?? `ip:${ip}`);
    this.learnIp(c, ip);
    return c;
  }

  async tftp(o: {
    ip: string;
    file: string;
    type: 'start' | 'done' | 'error';
    bytes?: number;
    ms?: number;
    reason?: string;
  }): Promise<void> {
    const c = await this.byIp(o.ip);
    if (o.type === 'start') this.note(c, `TFTP ${o.file}: sending`, 'tftp');
    else if (o.type === 'done') {
      delete c.problem;
      this.note(
        c,
        `TFTP ${o.file}: sent ${o.bytes ?? 0} bytes in ${((o.ms ?? 0) / 1000).toFixed(1)} s`,
        'tftp',
      );
    } else if (/\(code 8\)/.test(o.reason ?? ''))
      // RFC 2347 option refusal: UEFI firmware asks for the size first, then ends the transfer.
      this.note(c, `TFTP ${o.file}: size asked, transfer ended by the client (as UEFI firmware does)`);
    else {
      c.problem = `TFTP ${o.file}: ${o.reason ?? 'failed'}`;
      this.note(c, c.problem);
    }
  }

  async http(o: { ip: string; mac?: string; path: string; status: number; bytes?: number }): Promise<void> {
    const c = await this.byIp(o.ip, o.mac?.toLowerCase());
    if (o.status >= 400) {
      c.problem = `HTTP ${o.path}: ${o.status}`;
      this.note(c, c.problem);
    } else this.note(c, `HTTP ${o.path}${o.bytes !== undefined ? ` (${o.bytes} bytes)` : ''}`, 'http');
  }

  /** An HTTP download finished: the whole answer was handed to the network. */
  async sent(o: { ip: string; path: string; bytes: number; ms: number }): Promise<void> {
    const c = await this.byIp(o.ip);
    this.note(c, `HTTP ${o.path}: sent ${o.bytes} bytes in ${(o.ms / 1000).toFixed(1)} s`, 'http');
  }

  /** The booted rescue system reporting in (its startup, then its jobs). */
  async hello(o: {
    ip: string;
    mac?: string;
    url?: string;
    job?: { id?: string; kind?: string; state?: string; percent?: number };
  }): Promise<void> {
    const c = await this.byIp(o.ip, o.mac?.toLowerCase());
    if (o.url) c.rescueUrl = o.url;
    delete c.problem;
    const first = ORDER.indexOf(c.stage) < ORDER.indexOf('rescue');
    if (o.job) {
      const changed = c.job?.id !== o.job.id || c.job?.state !== o.job.state;
      c.job = o.job;
      if (changed)
        this.note(c, `job ${o.job.kind ?? ''} ${o.job.state ?? ''}`.replace(/\s+/g, ' ').trim(), 'job');
      else c.lastSeen = this.now().toISOString();
    } else if (first) this.note(c, `rescue system up${o.url ? ` at ${o.url}` : ''}`, 'rescue');
    else c.lastSeen = this.now().toISOString();
  }

  list(): PxeClient[] {
    return [...this.byMac.values()].sort((a, b) => b.lastSeen.localeCompare(a.lastSeen));
  }
}
