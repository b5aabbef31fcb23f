/**
 * The DHCP side of the PXE server, on one interface: port 67 (bound to the interface, so it neither
 * hears nor answers other networks) and the PXE boot-server port 4011. Packets are decoded by the
 * pure codec and answered by the pure decide(); this file owns only sockets, the lease table calls
 * and the rules about which requests are ours. Malformed packets are logged and dropped.
 *
 * Another DHCP server on the same network shows itself two ways: clients REQUEST an address naming
 * it as their server (option 54), and it OFFERs to the probe this server sends at start.
 */
import { randomInt } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { portError, udpOnInterface } from '../net/udp.ts';
import {
  BOOTREPLY,
  BOOTREQUEST,
  DhcpDecodeError,
  type DhcpPacket,
  decodeDhcp,
  encodeDhcp,
  MESSAGE,
  macOf,
  messageType,
  OPT,
  option,
} from './codec.ts';
import { type BootPlan, type Decision, decide, type Lease, nak } from './decide.ts';
import { type LeaseTable, prefixToMask } from './leases.ts';

export interface DhcpServerOptions {
  interface: string;
  serverIp: string;
  prefix: number;
  /** This interface's own MAC: its own probe packets are not served. */
  serverMac?: string;
  mode: 'proxy' | 'full';
  plan: BootPlan;
  leases?: LeaseTable;
  router?: string;
  dns?: string[];
  /** Ports, for tests; 67 and 4011 normally. */
  port?: number;
  proxyPort?: number;
  clientPort?: number;
  onDecision?: (d: Decision, o: { via: string; ip?: string; problem?: string }) => void;
  onLog?: (line: string) => void;
  /** A DHCP server other than this one was seen (address of that server, how). */
  onOtherServer?: (ip: string, how: string) => void;
}

function ipOf(d: Uint8Array | undefined): string | undefined {
  return d && d.length === 4 ? `${d[0]}.${d[1]}.${d[2]}.${d[3]}` : undefined;
}

export class DhcpServer {
  private readonly o: DhcpServerOptions;
  private main?: Socket;
  private proxy?: Socket;
  private readonly others = new Set<string>();
  private malformed = 0;
  private stopProbing?: () => void;

  constructor(o: DhcpServerOptions) {
    this.o = o;
  }

  /** Ends a running probeOtherServers() now. */
  stopProbe(): void {
    this.stopProbing?.();
  }

  /** DHCP servers other than this one seen so far. */
  otherServers(): string[] {
    return [...this.others];
  }

  async start(): Promise<void> {
    // Not shared: a second DHCP server on this interface (or on all interfaces) makes this fail with
    // EADDRINUSE; servers bound to other interfaces do not conflict.
    this.main = await udpOnInterface({
      interface: this.o.interface,
      port: this.o.port ?? 67,
      broadcast: true,
      reuseAddr: false,
    });
    this.main.on('message', (m, r) =>
      this.receive(m, r, 'dhcp').catch((e) => this.log(`error: ${e.message}`)),
    );
    this.main.on('error', (e) => this.log(`port ${this.o.port ?? 67}: ${e.message}`));
    const proxy = createSocket({ type: 'udp4' });
    await new Promise<void>((resolve, reject) => {
      proxy.once('error', reject);
      proxy.bind(this.o.proxyPort ?? 4011, this.o.serverIp, () => {
        proxy.off('error', reject);
        resolve();
      });
    }).catch(async (e: NodeJS.ErrnoException) => {
      await this.close();
      throw portError(e, this.o.proxyPort ?? 4011, this.o.interface);
    });
    this.proxy = proxy;
    proxy.on('message', (m, r) => this.receive(m, r, 'pxe').catch((e) => this.log(`error: ${e.message}`)));
    proxy.on('error', (e) => this.log(`port ${this.o.proxyPort ?? 4011}: ${e.message}`));
  }

  async close(): Promise<void> {
    for (const s of [this.main, this.proxy]) if (s) await new Promise<void>((r) => s.close(() => r()));
    this.main = undefined;
    this.proxy = undefined;
  }

  private log(line: string): void {
    this.o.onLog?.(line);
  }

  private other(ip: string, how: string): void {
    if (ip === this.o.serverIp || ip === '0.0.0.0') return;
    const fresh = !this.others.has(ip);
    this.others.add(ip);
    if (fresh) this.o.onOtherServer?.(ip, how);
  }

  private lease(ip: string): Lease {
    return {
      ip,
      mask: prefixToMask(this.o.prefix),
      router: this.o.router,
      dns: this.o.dns,
      seconds: this.o.leases?.leaseSeconds ?? 3600,
    };
  }

  private async receive(msg: Buffer, from: RemoteInfo, via: 'dhcp' | 'pxe'): Promise<void> {
    let req: DhcpPacket;
    try {
      req = decodeDhcp(msg);
    } catch (e) {
      if (!(e instanceof DhcpDecodeError)) throw e;
      // Logged: the first 20, then every 100th (a flood of garbage must not flood the log).
      if (this.malformed++ < 20 || this.malformed % 100 === 0)
        this.log(`malformed DHCP packet from ${from.address}:${from.port} ignored (${e.message})`);
      return;
    }
    if (req.op !== BOOTREQUEST) return;
    const mac = macOf(req);
    if (this.o.serverMac && mac === this.o.serverMac.toLowerCase()) return; // our own probe
    const type = messageType(req);
    const serverId = ipOf(option(req, OPT.SERVER_ID));
    if (serverId && serverId !== this.o.serverIp && via === 'dhcp') {
      // The client took another server's offer: that server exists, and this request is not ours.
      this.other(serverId, `a client (${mac}) asked it for an address`);
      if (this.o.mode === 'full' && type === MESSAGE.REQUEST) {
        const l = this.o.leases?.leaseOf(mac);
        if (l?.state === 'offered') await this.o.leases?.release(mac, l.ip);
      }
      return;
    }
    if (this.o.mode === 'full' && via === 'dhcp') return this.full(req, from, type, mac);
    // Proxy mode, and anything on port 4011: PXE boot information only, no address. On port 67 a
    // REQUEST is answered only when it names this server (one without a server id is a client
    // confirming the address the network's DHCP server gave it).
    if (via === 'dhcp' && type === MESSAGE.REQUEST && serverId !== this.o.serverIp) return;
    const d = decide(req, this.o.plan, 'proxy');
    this.o.onDecision?.(d, { via });
    if (!d.reply) return;
    await this.send(d.reply, req, from, via);
  }

  private async full(
    req: DhcpPacket,
    from: RemoteInfo,
    type: number | undefined,
    mac: string,
  ): Promise<void> {
    const leases = this.o.leases;
    if (!leases) return;
    const requested = ipOf(option(req, OPT.REQUESTED_IP));
    if (type === MESSAGE.DISCOVER) {
      const ip = await leases.offer(mac, requested);
      const d = decide(req, this.o.plan, 'full', ip ? this.lease(ip) : undefined);
      this.o.onDecision?.(d, { via: 'dhcp', ip, problem: ip ? undefined : 'no free address in the range' });
      if (d.reply) await this.send(d.reply, req, from, 'dhcp');
      return;
    }
    if (type === MESSAGE.REQUEST) {
      const ip = requested ?? (req.ciaddr !== '0.0.0.0' ? req.ciaddr : undefined);
      const known = leases.leaseOf(mac);
      if (!ip) return;
      // INIT-REBOOT / RENEW without a server id: answer only for addresses of this range (RFC 2131 4.3.2).
      if (!known && !leases.inRange(ip)) return;
      const bound = await leases.bind(mac, ip, hostnameOf(req));
      if (!bound) {
        const trace = [`REQUEST ${ip}: not this client's address → NAK`];
        this.o.onDecision?.(
          { client: { mac, ipxe: false, pxe: false }, trace },
          { via: 'dhcp', problem: `asked for ${ip}, which is not free` },
        );
        await this.send(nak(req, this.o.serverIp), req, from, 'dhcp');
        return;
      }
      const d = decide(req, this.o.plan, 'full', this.lease(bound.ip));
      this.o.onDecision?.(d, { via: 'dhcp', ip: bound.ip });
      if (d.reply) await this.send(d.reply, req, from, 'dhcp');
      return;
    }
    if (type === MESSAGE.RELEASE) await leases.release(mac, req.ciaddr);
    else if (type === MESSAGE.DECLINE && requested) {
      await leases.decline(mac, requested);
      this.log(`${mac} declined ${requested}: another machine uses it; set aside for 10 minutes`);
    }
  }

  /**
   * Where a reply goes (RFC 2131 4.1): through a relay to its giaddr; port 4011 requests back to
   * their sender; a client that has an address (renewing) to that address; everyone else by
   * broadcast on the interface (they have no address yet).
   */
  private async send(
    reply: DhcpPacket,
    req: DhcpPacket,
    from: RemoteInfo,
    via: 'dhcp' | 'pxe',
  ): Promise<void> {
    const bytes = encodeDhcp(reply);
    let sock = this.main;
    let host = '255.255.255.255';
    let port = this.o.clientPort ?? 68;
    if (via === 'pxe') {
      sock = this.proxy;
      host = from.address;
      port = from.port;
    } else if (req.giaddr !== '0.0.0.0') {
      host = req.giaddr;
      port = this.o.port ?? 67;
    } else if (req.ciaddr !== '0.0.0.0' && messageType(reply) !== MESSAGE.NAK) host = req.ciaddr;
    if (!sock) return;
    await new Promise<void>((resolve) =>
      sock.send(bytes, port, host, (e) => {
        if (e) this.log(`sending to ${host}:${port} failed: ${e.message}`);
        resolve();
      }),
    );
  }

  /**
   * Asks the network whether another DHCP server answers: a DISCOVER from this interface's MAC (which
   * this server ignores), OFFERs collected for `ms`. Resolves with the servers that answered, or
   * undefined when port 68 could not be had (a DHCP client of this machine holds it).
   */
  async probeOtherServers(ms = 2000): Promise<string[] | undefined> {
    if (!this.o.serverMac) return undefined;
    let sock: Socket;
    try {
      sock = await udpOnInterface({
        interface: this.o.interface,
        port: this.o.clientPort ?? 68,
        broadcast: true,
      });
    } catch {
      return undefined;
    }
    const xid = randomInt(0x7fffffff);
    const chaddr = new Uint8Array(16);
    chaddr.set(this.o.serverMac.split(':').map((h) => Number.parseInt(h, 16)));
    const discover: DhcpPacket = {
      op: BOOTREQUEST,
      htype: 1,
      hlen: 6,
      hops: 0,
      xid,
      secs: 0,
      flags: 0x8000,
      ciaddr: '0.0.0.0',
      yiaddr: '0.0.0.0',
      siaddr: '0.0.0.0',
      giaddr: '0.0.0.0',
      chaddr,
      sname: '',
      file: '',
      options: [
        { code: OPT.MESSAGE_TYPE, data: Uint8Array.of(MESSAGE.DISCOVER) },
        { code: OPT.PARAMETER_LIST, data: Uint8Array.of(1, 3, 6) },
      ],
    };
    const found = new Set<string>();
    sock.on('message', (m) => {
      try {
        const p = decodeDhcp(m);
        if (p.op !== BOOTREPLY || p.xid !== xid || messageType(p) !== MESSAGE.OFFER) return;
        const id = ipOf(option(p, OPT.SERVER_ID)) ?? p.siaddr;
        if (id && id !== this.o.serverIp) {
          found.add(id);
          this.other(id, 'it answered this server’s probe');
        }
      } catch {
        // not a DHCP packet
      }
    });
    await new Promise<void>((r) =>
      sock.send(encodeDhcp(discover), this.o.port ?? 67, '255.255.255.255', () => r()),
    );
    await new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.stopProbing = () => {
        clearTimeout(t);
        r();
      };
    });
    this.stopProbing = undefined;
    await new Promise<void>((r) => sock.close(() => r()));
    return [...found];
  }
}

function hostnameOf(req: DhcpPacket): string | undefined {
  const d = option(req, OPT.HOSTNAME);
  if (!d) return undefined;
  const s = Buffer.from(d)
    .toString('latin1')
    .replace(/[^\w.-]/g, '');
  return s || undefined;
}
