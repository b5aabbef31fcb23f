/**
 * The address pool of full-DHCP mode: a range on the boot network, leases kept in a JSON file (so a
 * restarted server gives every machine the address it had), and a conflict check before an address
 * is offered — a machine with a static address inside the range answers the probe (ping) and its
 * address is set aside, as dnsmasq and ISC dhcpd do.
 */
import { promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import { RescueError } from '../../rescue/engine/errors.ts';

export interface LeaseEntry {
  mac: string;
  ip: string;
  /** Epoch milliseconds; an offered but not yet requested address holds for a minute. */
  expires: number;
  state: 'offered' | 'bound';
  hostname?: string;
}

export interface Subnet {
  /** This server's own address on the boot network (never handed out). */
  serverIp: string;
  prefix: number;
}

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255))
    throw new RescueError(
      'E_PXE_RANGE',
      `"${ip}" is not an IPv4 address`,
      'Write addresses as 192.168.1.100.',
    );
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function prefixToMask(prefix: number): string {
  return intToIp(prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);
}

/** The addresses of "A-B" that can be leased on `subnet`: inside it, not its network/broadcast address, not the server. */
export function parseRange(text: string, subnet: Subnet): { first: number; last: number; size: number } {
  const m = /^\s*([\d.]+)\s*-\s*([\d.]+)\s*$/.exec(text);
  if (!m)
    throw new RescueError(
      'E_PXE_RANGE',
      `--range "${text}" is not a range`,
      'Give the first and last address, e.g. --range 192.168.1.100-192.168.1.150.',
    );
  const first = ipToInt(m[1]);
  const last = ipToInt(m[2]);
  if (last < first)
    throw new RescueError(
      'E_PXE_RANGE',
      `--range ${text}: the last address comes before the first`,
      'Swap them.',
    );
  const mask = subnet.prefix === 0 ? 0 : (0xffffffff << (32 - subnet.prefix)) >>> 0;
  const net = (ipToInt(subnet.serverIp) & mask) >>> 0;
  const broadcast = (net | (~mask >>> 0)) >>> 0;
  if ((first & mask) >>> 0 !== net || (last & mask) >>> 0 !== net)
    throw new RescueError(
      'E_PXE_RANGE',
      `--range ${text} is not inside this interface's network ${intToIp(net)}/${subnet.prefix}`,
      `Pick addresses between ${intToIp(net + 1)} and ${intToIp(broadcast - 1)}.`,
    );
  if (first === net || last === broadcast)
    throw new RescueError(
      'E_PXE_RANGE',
      `--range ${text} includes the network or broadcast address`,
      `Pick addresses between ${intToIp(net + 1)} and ${intToIp(broadcast - 1)}.`,
    );
  const server = ipToInt(subnet.serverIp);
  const size = last - first + 1 - (server >= first && server <= last ? 1 : 0);
  if (size < 1)
    throw new RescueError(
      'E_PXE_RANGE',
      `--range ${text} holds no address but this server's own`,
      'Widen the range.',
    );
  return { first, last, size };
}

export interface LeaseTableOptions {
  range: string;
  subnet: Subnet;
  /** Where leases are kept across restarts. */
  file: string;
  leaseSeconds?: number;
  /** Resolves true when something already answers at `ip` (real one: ping). */
  probe: (ip: string) => Promise<boolean>;
  now?: () => number;
}

const OFFER_HOLD_MS = 60_000;
/** How long an address found in use (probe answered, or a client declined it) is left alone. */
const IN_USE_HOLD_MS = 10 * 60_000;

export class LeaseTable {
  private readonly o: LeaseTableOptions;
  private readonly first: number;
  private readonly last: number;
  readonly leaseSeconds: number;
  private readonly byMac = new Map<string, LeaseEntry>();
  private readonly inUse = new Map<string, number>();
  private saving: Promise<void> = Promise.resolve();

  constructor(o: LeaseTableOptions) {
    this.o = o;
    const r = parseRange(o.range, o.subnet);
    this.first = r.first;
    this.last = r.last;
    this.leaseSeconds = o.leaseSeconds ?? 3600;
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Reads the lease file; leases outside the range (it changed) are dropped. */
  async load(): Promise<void> {
    const text = await fsp.readFile(this.o.file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '[]';
      throw e;
    });
    let list: LeaseEntry[];
    try {
      list = JSON.parse(text) as LeaseEntry[];
      if (!Array.isArray(list)) throw new Error('not a list');
    } catch (e) {
      throw new RescueError(
        'E_PXE_LEASES',
        `The lease file ${this.o.file} is damaged (${(e as Error).message})`,
        'Move it away; the server starts with no leases (clients then renew).',
      );
    }
    for (const l of list) {
      if (typeof l?.mac !== 'string' || typeof l?.ip !== 'string' || l.state !== 'bound') continue;
      if (!this.inRange(l.ip)) continue;
      this.byMac.set(l.mac, {
        mac: l.mac,
        ip: l.ip,
        expires: Number(l.expires) || 0,
        state: 'bound',
        hostname: l.hostname,
      });
    }
  }

  list(): LeaseEntry[] {
    return [...this.byMac.values()].sort((a, b) => ipToInt(a.ip) - ipToInt(b.ip));
  }

  leaseOf(mac: string): LeaseEntry | undefined {
    return this.byMac.get(mac);
  }

  inRange(ip: string): boolean {
    let n: number;
    try {
      n = ipToInt(ip);
    } catch {
      return false;
    }
    return n >= this.first && n <= this.last && ip !== this.o.subnet.serverIp;
  }

  private holder(ip: string): LeaseEntry | undefined {
    for (const l of this.byMac.values()) if (l.ip === ip) return l;
    return undefined;
  }

  private free(ip: string, mac: string): boolean {
    if (!this.inRange(ip)) return false;
    const until = this.inUse.get(ip);
    if (until !== undefined && until > this.now()) return false;
    const h = this.holder(ip);
    return !h || h.mac === mac || h.expires < this.now();
  }

  /**
   * The address to offer `mac`: the one it has, the one it asks for if free, else the lowest free
   * address that nothing answers at. undefined when the pool is exhausted.
   */
  async offer(mac: string, requested?: string): Promise<string | undefined> {
    const own = this.byMac.get(mac);
    if (own && this.inRange(own.ip) && this.free(own.ip, mac)) {
      own.expires = Math.max(own.expires, this.now() + OFFER_HOLD_MS);
      return own.ip;
    }
    const first = this.first;
    const last = this.last;
    const order = function* () {
      if (requested) yield requested;
      for (let n = first; n <= last; n++) yield intToIp(n);
    };
    for (const ip of order()) {
      if (!this.free(ip, mac)) continue;
      if (await this.o.probe(ip)) {
        this.inUse.set(ip, this.now() + IN_USE_HOLD_MS);
        continue;
      }
      // The probe took time: another client may have been offered this address meanwhile.
      if (!this.free(ip, mac)) continue;
      this.byMac.set(mac, { mac, ip, expires: this.now() + OFFER_HOLD_MS, state: 'offered' });
      return ip;
    }
    return undefined;
  }

  /** A REQUEST for `ip`: binds the lease when the address is this client's to take, else undefined (NAK). */
  async bind(mac: string, ip: string, hostname?: string): Promise<LeaseEntry | undefined> {
    if (!this.free(ip, mac)) return undefined;
    const l: LeaseEntry = { mac, ip, expires: this.now() + this.leaseSeconds * 1000, state: 'bound' };
    if (hostname) l.hostname = hostname;
    this.byMac.set(mac, l);
    await this.save();
    return l;
  }

  /** DHCPRELEASE. */
  async release(mac: string, ip: string): Promise<void> {
    const l = this.byMac.get(mac);
    if (l && l.ip === ip) {
      this.byMac.delete(mac);
      await this.save();
    }
  }

  /** DHCPDECLINE: the client found the address in use (its own ARP check). */
  async decline(mac: string, ip: string): Promise<void> {
    this.inUse.set(ip, this.now() + IN_USE_HOLD_MS);
    const l = this.byMac.get(mac);
    if (l && l.ip === ip) {
      this.byMac.delete(mac);
      await this.save();
    }
  }

  private save(): Promise<void> {
    const write = async () => {
      const bound = this.list().filter((l) => l.state === 'bound');
      await fsp.mkdir(dirname(this.o.file), { recursive: true });
      const tmp = `${this.o.file}.tmp`;
      await fsp.writeFile(tmp, `${JSON.stringify(bound, null, 1)}\n`);
      await fsp.rename(tmp, this.o.file);
    };
    this.saving = this.saving.then(write, write);
    return this.saving;
  }
}
