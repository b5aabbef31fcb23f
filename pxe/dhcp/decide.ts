/**
 * What the PXE server answers a DHCP request, as a pure function: the reply packet (or none) and a
 * trace of why, in words an admin can read on the clients page ("arch 7 (UEFI x64) → snponly.efi").
 *
 * - Proxy mode (default) answers PXE clients only and hands out no address (yiaddr 0.0.0.0): the
 *   network's own DHCP server gives the address, we give the boot file.
 * - Full mode also leases an address (given by the caller, which owns the lease table).
 * - The boot file follows the client architecture (option 93, RFC 4578): BIOS → undionly.kpxe,
 *   x64 UEFI (7, and 9 which some firmware sends for the same) → snponly.efi. A client that already
 *   runs iPXE (user class "iPXE" or option 175) gets the HTTP URL of the boot script instead, which
 *   breaks the chainload loop.
 * - The client's UUID (option 97) is echoed, as PXE firmware expects.
 */
import {
  BOOTREPLY,
  BOOTREQUEST,
  clientArchitectures,
  clientUuid,
  type DhcpOption,
  type DhcpPacket,
  encodeSubOptions,
  ipBytes,
  isIpxe,
  isPxeClient,
  MESSAGE,
  macOf,
  messageType,
  OPT,
  option,
} from './codec.ts';

export interface BootPlan {
  /** This server's address on the boot network (DHCP server id, TFTP and HTTP server). */
  serverIp: string;
  /** TFTP file names. */
  bios: string;
  uefi: string;
  /** What iPXE loads next: http://serverIp/boot.ipxe */
  ipxeScriptUrl: string;
}

export interface Lease {
  ip: string;
  mask: string;
  router?: string;
  dns?: string[];
  seconds: number;
}

export interface ClientFacts {
  mac: string;
  arch?: number;
  uuid?: string;
  ipxe: boolean;
  pxe: boolean;
}

export interface Decision {
  client: ClientFacts;
  reply?: DhcpPacket;
  bootFile?: string;
  trace: string[];
}

const ARCH_NAMES: Record<number, string> = {
  0: 'BIOS',
  6: 'UEFI IA32',
  7: 'UEFI x64',
  9: 'UEFI x64 (EBC id)',
  10: 'UEFI ARM32',
  11: 'UEFI ARM64',
  16: 'UEFI x64 HTTP boot',
};

export function archName(arch: number | undefined): string {
  if (arch === undefined) return 'no architecture given (taken as BIOS)';
  return `arch ${arch} (${ARCH_NAMES[arch] ?? 'unknown'})`;
}

function u32(n: number): Uint8Array {
  return Uint8Array.of((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

export function decide(req: DhcpPacket, plan: BootPlan, mode: 'proxy' | 'full', lease?: Lease): Decision {
  const client: ClientFacts = {
    mac: macOf(req),
    arch: clientArchitectures(req)[0],
    uuid: clientUuid(req),
    ipxe: isIpxe(req),
    pxe: isPxeClient(req),
  };
  const trace: string[] = [];
  const out = (why: string): Decision => ({ client, trace: [...trace, why] });
  if (req.op !== BOOTREQUEST) return out('not a request: ignored');
  const type = messageType(req);
  if (type !== MESSAGE.DISCOVER && type !== MESSAGE.REQUEST)
    return out(`message type ${type ?? 'missing'}: nothing to answer`);
  if (!client.pxe && mode === 'proxy') return out('not a PXE client: left to the network’s DHCP server');
  if (mode === 'full' && !lease) return out('no free address in the range: not answered');

  let bootFile: string | undefined;
  if (client.pxe) {
    trace.push(archName(client.arch));
    if (client.ipxe) {
      bootFile = plan.ipxeScriptUrl;
      trace.push(`iPXE → ${plan.ipxeScriptUrl}`);
    } else if (client.arch === undefined || client.arch === 0) {
      bootFile = plan.bios;
      trace.push(`${plan.bios} (TFTP)`);
    } else if (client.arch === 7 || client.arch === 9) {
      bootFile = plan.uefi;
      trace.push(`${plan.uefi} (TFTP)`);
    } else if (mode === 'proxy') {
      return out('no boot file for this architecture: not answered');
    } else trace.push('no boot file for this architecture: address only');
  }

  const options: DhcpOption[] = [
    { code: OPT.MESSAGE_TYPE, data: Uint8Array.of(type === MESSAGE.DISCOVER ? MESSAGE.OFFER : MESSAGE.ACK) },
    { code: OPT.SERVER_ID, data: ipBytes(plan.serverIp) },
  ];
  if (lease) {
    options.push({ code: OPT.LEASE_TIME, data: u32(lease.seconds) });
    options.push({ code: OPT.SUBNET_MASK, data: ipBytes(lease.mask) });
    if (lease.router) options.push({ code: OPT.ROUTER, data: ipBytes(lease.router) });
    if (lease.dns?.length)
      options.push({ code: OPT.DNS, data: Uint8Array.from(lease.dns.flatMap((d) => [...ipBytes(d)])) });
  }
  if (client.pxe) {
    options.push({ code: OPT.VENDOR_CLASS, data: Uint8Array.from(Buffer.from('PXEClient')) });
    // PXE discovery control 8: boot from the file named in this offer, no boot-server discovery.
    options.push({ code: OPT.VENDOR_SPECIFIC, data: encodeSubOptions([[6, Uint8Array.of(8)]]) });
    const uuid = option(req, OPT.CLIENT_UUID);
    if (uuid) options.push({ code: OPT.CLIENT_UUID, data: uuid });
    if (bootFile) {
      options.push({ code: OPT.TFTP_SERVER, data: Uint8Array.from(Buffer.from(plan.serverIp)) });
      options.push({ code: OPT.BOOTFILE, data: Uint8Array.from(Buffer.from(bootFile)) });
    }
    // iPXE's "no-pxedhcp" (175.176): this offer has it all, so iPXE need not wait ~10 s for a
    // ProxyDHCP offer that will never come.
    if (mode === 'full' && client.ipxe)
      options.push({ code: OPT.IPXE, data: encodeSubOptions([[176, Uint8Array.of(1)]]) });
  }
  const reply = replyTo(req, {
    flags: req.flags,
    ciaddr: type === MESSAGE.REQUEST ? req.ciaddr : '0.0.0.0',
    yiaddr: lease ? lease.ip : '0.0.0.0',
    siaddr: client.pxe ? plan.serverIp : '0.0.0.0',
    // BIOS PXE ROMs read the `file` field; long URLs only fit option 67.
    file: bootFile && Buffer.byteLength(bootFile) <= 127 ? bootFile : '',
    options,
  });
  trace.push(
    `${type === MESSAGE.DISCOVER ? 'OFFER' : 'ACK'}${lease ? ` ${lease.ip}` : ' (proxy, no address)'}`,
  );
  return { client, reply, bootFile, trace };
}

/** A reply to `req`: its transaction, hardware address and relay kept, the rest as given. */
function replyTo(
  req: DhcpPacket,
  f: Pick<DhcpPacket, 'flags' | 'ciaddr' | 'yiaddr' | 'siaddr' | 'file' | 'options'>,
): DhcpPacket {
  return {
    op: BOOTREPLY,
    htype: req.htype,
    hlen: req.hlen,
    hops: 0,
    xid: req.xid,
    secs: 0,
    giaddr: req.giaddr,
    chaddr: req.chaddr,
    sname: '',
    ...f,
  };
}

/** A DHCPNAK for a REQUEST of an address that is not the client's (broadcast: it has no address). */
export function nak(req: DhcpPacket, serverIp: string): DhcpPacket {
  return replyTo(req, {
    flags: req.flags | 0x8000,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    file: '',
    options: [
      { code: OPT.MESSAGE_TYPE, data: Uint8Array.of(MESSAGE.NAK) },
      { code: OPT.SERVER_ID, data: ipBytes(serverIp) },
    ],
  });
}
